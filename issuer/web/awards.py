"""Award applications: learners submit their badges; the service explains the decision and signs it."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify

from .. import awards
from ..db import get_session
from ..identity import challenge_issuer, get_context, get_verifier
from ..stacking import RulesError
from .api import json_body
from .errors import ApiError

bp = Blueprint("awards", __name__, url_prefix="/api/v1/awards")


def trusted_issuers() -> frozenset[str]:
    return frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"])


class _Unspent:
    """Evaluating has no side effects, so it checks a presentation's challenge without using it up."""

    def consume(self, challenge, expires) -> bool:
        return True


def _application(allow_as_of: bool) -> awards.Application:
    """The parsed application; a presentation is checked here (a claim uses its challenge up)."""
    rules = current_app.extensions["issuer.rules"]
    ctx = get_context()
    try:
        application = awards.parse_application(json_body(), max_badges=rules.max_badges, allow_as_of=allow_as_of)
        awards.prove_holder(application, resolver=get_verifier().resolver, challenges=challenge_issuer(),
                            store=_Unspent() if allow_as_of else awards.DatabaseChallengeStore(get_session()),
                            domain=ctx.base_url)
    except awards.AwardError as exc:
        raise ApiError(exc.status, str(exc)) from None
    return application


@bp.post("/challenge")
def challenge():
    """A single-use challenge (10 minutes) for the presentation that proves who applies."""
    return jsonify(challenge_issuer().issue(get_context().base_url))


@bp.post("/evaluate")
def evaluate():
    """What the rules decide for these badges; nothing is stored or signed."""
    application = _application(allow_as_of=True)
    evaluated = awards.evaluate_badges(get_session(), get_context(), get_verifier(), application,
                                       trusted=trusted_issuers())
    try:
        decision = awards.decide(evaluated, current_app.extensions["issuer.rules"], application)
    except RulesError as exc:
        raise ApiError(400, str(exc), field="target") from None
    return jsonify(decision.to_json())


@bp.post("")
def claim():
    """Claim the award: 201 with the signed award, 200 when already issued, 422 when not eligible."""
    application = _application(allow_as_of=False)
    session = get_session()
    try:
        outcome = awards.claim(session, get_context(), current_app.extensions["issuer.rules"], get_verifier(),
                               application, trusted=trusted_issuers(),
                               actor=f"learner:{application.email or application.holder}")
    except RulesError as exc:
        raise ApiError(400, str(exc), field="target") from None
    except awards.AwardError as exc:
        raise ApiError(exc.status, str(exc)) from None
    if outcome.award is None:
        response = jsonify({"report": outcome.report})
        response.status_code = 422
        return response
    row = outcome.award
    body = {"id": row.id, "url": row.credential_url, "report": outcome.report,
            "credential": json.loads(row.document)}
    response = jsonify(body)
    response.status_code = 201 if outcome.created else 200
    response.headers["Location"] = row.credential_url
    return response
