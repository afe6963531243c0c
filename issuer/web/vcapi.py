"""The VC API (VCALM) endpoints and the VC API exchanges the Learner Credential Wallet runs.

    POST /credentials/issue                       token with "issue": sign a credential as this issuer
    POST /credentials/verify                      anyone: verify a credential (200 verified, 400 not)
    POST /presentations/verify                    anyone: verify a presentation (200 verified, 400 not)
    POST /api/v1/credentials/<id>/exchange        token with "issue": a single-use wallet exchange
    POST /credentials/<id>/wallet-exchange        the learner (confirms the email): the same
    GET  /exchanges/<offer>/interact?iuv=1        JSON {"protocols": ...} or a page with the QR code
    GET  /exchanges/<offer>/qr.svg                the QR code of the LCW link
    POST /exchanges/<offer>                       {} → the DIDAuthentication request; a presentation → the copy

The core is `issuer/vcapi.py`; this module only reads requests and shapes responses.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, redirect, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from .. import qr, vcapi, wallets
from ..db import get_session
from ..identity import get_context, get_verifier
from ..models import Award, Credential, WalletOffer, utcnow
from .api import json_body, require_scope
from .errors import TITLES, ApiError

bp = Blueprint("vcapi", __name__)

TITLES_MORE = {410: "Gone", 429: "Too Many Requests"}
# A credential's public page lets anyone ask for a wallet link once they confirm the learner's email;
# this many unexpired, unused links per credential at most (the database counts, so every process agrees).
MAX_OPEN_PUBLIC_OFFERS = 5


@bp.errorhandler(vcapi.VcApiError)
def _vcapi_error(exc: vcapi.VcApiError):
    return _problem(exc.status, str(exc), field=exc.field, problems=exc.problems)


def _problem(status: int, detail: str, *, field: str | None = None, problems: list[dict] | None = None,
             headers: dict | None = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": TITLES.get(status) or TITLES_MORE.get(status, "Error"),
                            "status": status, "detail": detail}
    if field:
        body["field"] = field
    if problems:
        body["problemDetails"] = problems
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    response.headers.update(headers or {})
    return response


def _loader():
    """The bundled contexts, plus ISSUER_VCAPI_CONTEXTS (a pinned manifest) when configured: loaded once."""
    app = current_app
    if "issuer.vcapi.loader" not in app.extensions:
        path = app.config.get("ISSUER_VCAPI_CONTEXTS") or os.environ.get("ISSUER_VCAPI_CONTEXTS")
        app.extensions["issuer.vcapi.loader"] = vcapi.make_loader(path)
    return app.extensions["issuer.vcapi.loader"]


def _verifier():
    verifier = get_verifier()
    verifier.loader = _loader()
    return verifier


def _object_body() -> dict:
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _options(body: dict, allowed: frozenset[str]) -> dict:
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ApiError(400, "options must be a JSON object", field="options")
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ApiError(400, f"unsupported option(s): {', '.join(unknown)} (supported: {', '.join(sorted(allowed))})",
                       field=f"options.{unknown[0]}")
    vcapi.options_checks(options)  # accepted, and every check runs whatever it names
    return options


def _verdict(outcome: vcapi.Outcome) -> Response:
    response = jsonify(outcome.to_json())
    response.status_code = 200 if outcome.verified else 400
    return response


# --- the VC API --------------------------------------------------------------------------------------

@bp.post("/credentials/issue")
@require_scope("issue")
def issue():
    req = vcapi.parse_issue_request(json_body())
    signed = vcapi.issue(get_session(), get_context(), req, actor=g.caller.actor, loader=_loader())
    response = jsonify({"verifiableCredential": signed})
    response.status_code = 201
    return response


@bp.post("/credentials/verify")
def verify_credential():
    body = _object_body()
    unknown = sorted(set(body) - {"verifiableCredential", "options"})
    if unknown:
        raise ApiError(400, f"unknown request member(s): {', '.join(unknown)}", field=unknown[0])
    if "verifiableCredential" not in body:
        raise ApiError(400, "verifiableCredential is required", field="verifiableCredential")
    _options(body, vcapi.VERIFY_OPTIONS)
    return _verdict(vcapi.verify_credential(_verifier(), body["verifiableCredential"]))


@bp.post("/presentations/verify")
def verify_presentation():
    body = _object_body()
    unknown = sorted(set(body) - {"verifiablePresentation", "options"})
    if unknown:
        raise ApiError(400, f"unknown request member(s): {', '.join(unknown)}", field=unknown[0])
    if "verifiablePresentation" not in body:
        raise ApiError(400, "verifiablePresentation is required", field="verifiablePresentation")
    options = _options(body, vcapi.PRESENTATION_OPTIONS)
    for name in ("challenge", "domain"):
        if name in options and (not isinstance(options[name], str) or not options[name]):
            raise ApiError(400, f"options.{name} must be a non-empty string", field=f"options.{name}")
    verifier = _verifier()
    outcome = vcapi.verify_presentation(
        body["verifiablePresentation"], resolver=verifier.resolver, loader=verifier.loader,
        challenge=options.get("challenge"), domain=options.get("domain"),
        verify_embedded=lambda credential: vcapi.verify_credential(verifier, credential))
    return _verdict(outcome)


# --- exchanges for wallets -------------------------------------------------------------------------------

def _original(public_id: str) -> Credential | Award:
    session = get_session()
    row = session.get(Credential, public_id) or session.get(Award, public_id)
    if row is None:
        raise ApiError(404, f"no credential with id {public_id}")
    return row


def _created(offer: WalletOffer) -> Response:
    response = jsonify(vcapi.exchange_links(get_context().base_url, offer))
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/api/v1/credentials/<credential_id>/exchange")
@require_scope("issue")
def staff_exchange(credential_id: str):
    """A wallet exchange for a badge or award; optional body {"expires_in": seconds} (60 to 86400)."""
    body: Any = json_body() if request.get_data(cache=True) else {}
    if not isinstance(body, dict) or set(body) - {"expires_in"}:
        raise ApiError(400, 'the body is optional; when given, {"expires_in": seconds}')
    ttl = vcapi.EXCHANGE_TTL
    if "expires_in" in body:
        seconds = body["expires_in"]
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not (
                vcapi.MIN_EXCHANGE_TTL.total_seconds() <= seconds <= vcapi.MAX_EXCHANGE_TTL.total_seconds()):
            raise ApiError(400, "expires_in must be a whole number of seconds from 60 to 86400", field="expires_in")
        ttl = timedelta(seconds=seconds)
    session = get_session()
    offer = vcapi.create_exchange(session, _original(credential_id), actor=g.caller.actor, ttl=ttl)
    session.commit()
    return _created(offer)


@bp.post("/credentials/<credential_id>/wallet-exchange")
def learner_exchange(credential_id: str):
    """From the credential's public page: the learner confirms the email the badge was issued to (JSON
    {"email"} or a form field), so that someone who only knows the public URL cannot bind the badge to
    their own DID. A browser form is sent on to the interaction page; an API client gets JSON."""
    form = request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")
    body: Any = request.form if form else _object_body()
    row = _original(credential_id)
    if row.recipient_email is None and not row.recipient_did:
        raise ApiError(403, "this credential names no recipient to confirm; ask the issuer for a wallet link")
    if row.recipient_email is not None and not vcapi.email_matches(body.get("email"), row.recipient_email):
        raise ApiError(403, "confirm the email address this credential was issued to", field="email")
    session = get_session()
    now = utcnow()
    if vcapi.open_offers(session, row.id, now) >= MAX_OPEN_PUBLIC_OFFERS:
        return _problem(429, "too many wallet links are open for this credential; use one, or wait for them "
                             "to expire (10 minutes)", headers={"Retry-After": "600"})
    offer = vcapi.create_exchange(session, row, actor="public:wallet-exchange", now=now)
    session.commit()
    if form:
        return redirect(vcapi.exchange_links(get_context().base_url, offer)["interaction_url"], code=303)
    return _created(offer)


def _offer(offer_id: str) -> WalletOffer | None:
    try:
        return get_session().get(WalletOffer, offer_id)
    except SQLAlchemyError:
        return None


@bp.get("/exchanges/<offer_id>/interact")
def interact(offer_id: str):
    offer = _offer(offer_id)
    state = vcapi.offer_state(offer, utcnow())
    wants_json = request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"
    base = get_context().base_url
    if wants_json:
        vcapi.refuse_unless_open(offer, utcnow())
        response = jsonify({"protocols": {"vcapi": vcapi.exchange_url(base, offer.id)}})
        response.headers["Cache-Control"] = "no-store"
        return response
    if state == "missing":
        abort(404, description="there is no such exchange")
    links = vcapi.exchange_links(base, offer) if state == "offered" else None
    status = 200 if state == "offered" else 410
    original = wallets.original_row(get_session(), offer.original_id)
    html = render_template("exchange.html", state=state, links=links, offer=offer,
                           credential_url=original.credential_url if original else None)
    return html, status, {"Cache-Control": "no-store"}


@bp.get("/exchanges/<offer_id>/qr.svg")
def exchange_qr(offer_id: str):
    offer = vcapi.refuse_unless_open(_offer(offer_id), utcnow())
    svg = qr.qr_svg(vcapi.lcw_link(get_context().base_url, offer.id))
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})


@bp.post("/exchanges/<offer_id>")
def exchange(offer_id: str):
    """VC API exchange: `{}` starts it (the DIDAuthentication request); `{"verifiablePresentation"}`
    completes it with the holder-bound copy, once."""
    body = _object_body()
    session = get_session()
    ctx = get_context()
    if not body:
        offer = vcapi.refuse_unless_open(_offer(offer_id), utcnow())
        response = jsonify(vcapi.presentation_request(ctx.base_url, offer))
        response.headers["Cache-Control"] = "no-store"
        return response
    unknown = sorted(set(body) - {"verifiablePresentation"})
    if unknown:
        raise ApiError(400, f"unknown request member(s): {', '.join(unknown)}", field=unknown[0])
    answer = vcapi.complete_exchange(session, ctx, offer_id, body["verifiablePresentation"])
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response
