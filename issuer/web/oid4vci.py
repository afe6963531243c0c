"""OpenID for Verifiable Credential Issuance 1.0 (pre-authorized code flow) over HTTP; the rules are in
`issuer/oid4vci.py`.

Staff make an offer with `POST /api/v1/credentials/<id>/offer` (scope "issue"), a learner with
`POST /credentials/<id>/wallet-offer` (confirming the email the badge was issued to); the wallet then reads
the offer, the metadata, and calls the token, nonce and credential endpoints. Everything a wallet receives that
holds a secret or is good once is `Cache-Control: no-store`.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, render_template, request

from .. import oid4vci, qr, wallets
from ..db import get_session
from ..formats import FormatError, loads_strict
from ..identity import challenge_secret, get_context
from .api import json_body, require_scope
from .errors import ApiError

bp = Blueprint("oid4vci", __name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
OFFER_FIELDS = ("tx_code", "expires_in", "format")
# Offers made from the public page that may be open at once for one credential: enough for a learner who
# tries twice, too few to be useful to anyone flooding the table (a small overshoot under a race is harmless).
MAX_OPEN_LEARNER_OFFERS = 3
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _json(body, status: int = 200, *, cache: dict | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    for name, value in (NO_STORE if cache is None else cache).items():
        response.headers[name] = value
    return response


@bp.errorhandler(oid4vci.OAuthError)
def _oauth_error(exc: oid4vci.OAuthError):
    return _json(exc.to_json(), exc.status, cache={**NO_STORE, **exc.headers})


# --- metadata ------------------------------------------------------------------------------------------

METADATA_CACHE = {"Cache-Control": "public, max-age=300"}


@bp.get("/.well-known/openid-credential-issuer")
def credential_issuer_metadata():
    return _json(oid4vci.issuer_metadata(get_context()), cache=METADATA_CACHE)


@bp.get("/.well-known/oauth-authorization-server")
def authorization_server_metadata():
    return _json(oid4vci.authorization_server_metadata(get_context().base_url), cache=METADATA_CACHE)


# --- offers --------------------------------------------------------------------------------------------

def _offer_options() -> dict:
    """The optional JSON body of an offer request, checked field by field."""
    if not request.get_data(cache=True):
        return {}
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object (or empty)")
    unknown = sorted(set(body) - set(OFFER_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}; known: {', '.join(OFFER_FIELDS)}",
                       field=unknown[0])
    options: dict = {}
    if body.get("tx_code") is not None:
        if not isinstance(body["tx_code"], bool):
            raise ApiError(400, "tx_code must be true or false", field="tx_code")
        options["tx_code"] = body["tx_code"]
    if body.get("expires_in") is not None:
        options["expires_in"] = body["expires_in"]
    if body.get("format") is not None:
        options["fmt"] = body["format"]
    return options


@bp.post("/api/v1/credentials/<credential_id>/offer")
@require_scope("issue")
def create_offer(credential_id: str):
    """201 with the offer's URI, its `openid-credential-offer://` link, the QR code's URL and, when the
    offer has one, its PIN (shown this once only)."""
    options = _offer_options()
    session = get_session()
    original = wallets.original_row(session, credential_id)
    if original is None:
        raise ApiError(404, f"no badge or award {credential_id!r} was issued here")
    return _offer_created(_create_offer(session, original, created_by=g.caller.actor, **options))


def _create_offer(session, original, **options) -> oid4vci.NewOffer:
    """A new offer, committed; a revoked original is a 409, an option out of range a 400."""
    try:
        new = oid4vci.create_offer(session, original, secret=challenge_secret(), **options)
    except wallets.WalletError as exc:
        session.rollback()
        raise ApiError(409, str(exc)) from None
    except oid4vci.OfferError as exc:
        session.rollback()
        raise ApiError(400, str(exc), field=exc.field) from None
    session.commit()
    return new


def _offer_created(new: oid4vci.NewOffer) -> Response:
    uri = oid4vci.offer_uri(get_context().base_url, new.row.id)
    body = {"offer_id": new.row.id, "credential_offer_uri": uri, "offer_link": oid4vci.offer_link(uri),
            "qr_svg_url": f"{uri}/qr.svg", "credential_configuration_ids": new.configuration_ids,
            "expires_at": new.row.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if new.tx_code is not None:
        body["tx_code"] = new.tx_code
    response = _json(body, 201)
    response.headers["Location"] = uri
    return response


@bp.post("/credentials/<credential_id>/wallet-offer")
def learner_offer(credential_id: str):
    """From the credential's public page, without a token: the learner confirms the email address the
    credential was issued to (form field or JSON `email`; optional `format`), so that someone who only has
    the public URL cannot bind the badge to their own DID. Always with a PIN, 10 minutes, at most
    MAX_OPEN_LEARNER_OFFERS open at once per credential. Answers JSON, as the staff endpoint does."""
    if request.mimetype in FORM_TYPES:
        body = request.form
    else:
        body = json_body()
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with email (and format)")
    fmt = body.get("format") or None
    session = get_session()
    original = wallets.original_row(session, credential_id)
    if original is None:
        raise ApiError(404, f"no credential with id {credential_id}")
    if not oid4vci.email_matches(body.get("email"), original.recipient_email):
        raise ApiError(403, "confirm the email address this credential was issued to", field="email")
    if oid4vci.open_offers(session, original.id) >= MAX_OPEN_LEARNER_OFFERS:
        raise ApiError(429, "too many wallet offers are open for this credential; use one, or wait for them "
                            "to expire (10 minutes)", headers={"Retry-After": str(oid4vci.OFFER_LIFETIME)})
    new = _create_offer(session, original, created_by="public:wallet-offer", tx_code=True, fmt=fmt)
    if request.mimetype in FORM_TYPES and \
            request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        # A browser posting the form on the credential's page: a page with the QR code, the link and the PIN.
        uri = oid4vci.offer_uri(get_context().base_url, new.row.id)
        page = render_template("wallet_offer.html", offer=new.row, link=oid4vci.offer_link(uri),
                               qr_url=f"{uri}/qr.svg", pin=new.tx_code, credential_url=original.credential_url)
        return Response(page, status=201, mimetype="text/html", headers=NO_STORE)
    return _offer_created(new)


def _live_offer(offer_id: str):
    row = oid4vci.live_offer(get_session(), offer_id)
    if row is None:
        raise ApiError(404, "no such offer, or it has been used or has expired")
    return row


@bp.get("/oid4vci/offers/<offer_id>")
def offer(offer_id: str):
    """The Credential Offer, served while its code can still be redeemed."""
    row = _live_offer(offer_id)
    document = oid4vci.offer_document(row, credential_issuer=get_context().base_url, secret=challenge_secret(),
                                      configuration_ids=oid4vci.offered_configurations(row))
    return _json(document)


@bp.get("/oid4vci/offers/<offer_id>/qr.svg")
def offer_qr(offer_id: str):
    """The QR code of the offer's `openid-credential-offer://` link (drawn per request: offers are few)."""
    row = _live_offer(offer_id)
    link = oid4vci.offer_link(oid4vci.offer_uri(get_context().base_url, row.id))
    return Response(qr.qr_svg(link), mimetype="image/svg+xml", headers=NO_STORE)


# --- token, nonce, credential --------------------------------------------------------------------------

@bp.post("/oid4vci/token")
def token():
    if request.mimetype != "application/x-www-form-urlencoded":
        raise oid4vci.OAuthError("invalid_request",
                                 "send the token request as application/x-www-form-urlencoded")
    form: dict[str, str] = {}
    for name in request.form:
        values = request.form.getlist(name)
        if len(values) != 1:
            raise oid4vci.OAuthError("invalid_request", f"{name} is sent more than once")
        form[name] = values[0]
    issued = oid4vci.redeem_code(get_session(), form, secret=challenge_secret())
    return _json(issued.to_json())


@bp.post("/oid4vci/nonce")
def nonce():
    value, _ = oid4vci.new_nonce(get_session())
    return _json({"c_nonce": value})


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


@bp.post("/oid4vci/credential")
def credential():
    session = get_session()
    token_value = _bearer()
    oid4vci.bearer_offer(session, token_value)  # a bad token is a 401 whatever the body says
    if not request.mimetype or "json" not in request.mimetype:
        raise oid4vci.OAuthError("invalid_credential_request", "send the credential request as application/json")
    try:  # strict, like every JSON body: no duplicate names, no NaN, depth capped before parsing
        body = loads_strict(request.get_data(cache=True).decode("utf-8"))
    except FormatError as exc:
        raise oid4vci.OAuthError("invalid_credential_request", f"the credential request is refused: {exc}") from None
    except ValueError:
        raise oid4vci.OAuthError("invalid_credential_request", "the credential request is not valid JSON") from None
    issued = oid4vci.issue_credential(session, get_context(), token=token_value, body=body)
    return _json({"credentials": [{"credential": issued}]})
