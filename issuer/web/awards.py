"""Award applications: learners submit their badges; the service explains the decision and signs it.

Badges come as a JSON body (``credentials``: objects and VC-JWT strings) or as ``multipart/form-data``
with one file per badge in the field ``credentials``: JSON, JWT, or a baked PNG or SVG. Both end in the
same parsed application; a file's recorded digest is the sha256 of its bytes as uploaded.
"""

from __future__ import annotations

import hashlib
import json

from flask import Blueprint, current_app, jsonify, request

from .. import awards
from ..db import get_session
from ..formats import FormatError, loads_strict, parse_submission
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
        if request.mimetype == "multipart/form-data":
            body, badges = form_application(max_badges=rules.max_badges)
            application = awards.parse_application(body, max_badges=rules.max_badges, allow_as_of=allow_as_of)
            application.items = badges
        else:
            application = awards.parse_application(json_body(), max_badges=rules.max_badges,
                                                   allow_as_of=allow_as_of)
        awards.prove_holder(application, resolver=get_verifier().resolver, challenges=challenge_issuer(),
                            store=_Unspent() if allow_as_of else awards.DatabaseChallengeStore(get_session()),
                            domain=ctx.base_url)
    except awards.AwardError as exc:
        raise ApiError(exc.status, str(exc)) from None
    return application


FORM_FIELDS = ("email", "presentation", "target", "programme", "as_of")


def learner_actor(email: str | None, holder: str | None = None) -> str:
    """Who applied, for the audit log: a masked address (staff see l***@example.com elsewhere too), or the DID."""
    from ..mail import mask

    return f"learner:{mask(email)}" if email else f"learner:{holder}"


def form_application(*, max_badges: int) -> tuple[dict, list[awards.Submitted]]:
    """A multipart application as the equivalent JSON body, with the sha256 of each badge as sent.

    Fields: ``email`` or ``presentation`` (JSON text), ``target``, ``programme``, ``as_of``, and any number
    of ``credentials`` (files, or text fields holding a JSON credential or a JWT).
    """
    names = (set(request.form) - set(FORM_FIELDS) - {"credentials"}) | (set(request.files) - {"credentials"})
    # A file part may come without a name (werkzeug keys it None), which cannot be sorted with the others.
    unknown = sorted("(a part without a name)" if name is None else name for name in names)
    if unknown:
        raise ApiError(400, f"unknown form field(s): {', '.join(unknown)}; badges go in the field credentials")
    body: dict = {}
    email, presentation = request.form.get("email"), request.form.get("presentation")
    if email is not None and presentation is not None:
        raise ApiError(400, "give the form field email or presentation, not both")
    if email is not None:
        body["recipient"] = {"email": email}
    elif presentation is not None:
        try:
            body["recipient"] = {"presentation": loads_strict(presentation)}
        except ValueError as exc:  # also a duplicate member name or absurd nesting (FormatError)
            raise ApiError(400, f"the form field presentation must be a JSON verifiable presentation ({exc})",
                           field="presentation") from None
    else:
        raise ApiError(400, "give the form field email (the address the badges were issued to) or "
                            "presentation (a presentation signed by the badges' holder)")
    for name in ("target", "programme", "as_of"):
        value = request.form.get(name)
        if value is not None and value.strip():
            body[name] = _target(value) if name == "target" else value
    badges = uploaded_badges(max_badges=max_badges)
    body["credentials"] = [badge.credential if badge.jwt is None else badge.jwt for badge in badges]
    return body, badges


def uploaded_badges(*, max_badges: int) -> list[awards.Submitted]:
    """The badges of a multipart form (files, or text fields, named credentials), each with the sha256 of
    its bytes as sent: a baked image's digest is what anyone holding the file can recompute."""
    uploads = [(f.read(), f.mimetype, f.filename or "upload") for f in request.files.getlist("credentials")
               if f and f.filename]
    uploads += [(text.encode("utf-8"), None, "text field") for text in request.form.getlist("credentials")]
    if len(uploads) > max_badges:
        raise awards.AwardError(f"{len(uploads)} badges submitted; at most {max_badges} per application", 413)
    badges = []
    for data, mimetype, name in uploads:
        try:
            submission = parse_submission(data, mimetype, name)
        except FormatError as exc:
            raise awards.AwardError(f"credentials {name!r}: {exc}") from None
        item = submission.jwt if submission.format == "vc-jwt" else submission.credential
        badges.append(awards.Submitted.of(item, digest=hashlib.sha256(data).hexdigest()))
    return badges


def _target(value: str) -> object:
    """A target as text is a title; one written as a JSON object is {"level", "area", "theme"}."""
    if value.lstrip().startswith("{"):
        try:
            return loads_strict(value)
        except ValueError as exc:
            raise ApiError(400, f"the form field target is neither an award title nor a JSON object ({exc})",
                           field="target") from None
    return value


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
                               actor=learner_actor(application.email, application.holder))
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
