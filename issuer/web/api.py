"""The JSON API under /api/v1: achievements, issuing, emails to learners, verifying."""

from __future__ import annotations

import json
from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request, url_for

from .. import issuing, mail, revocation
from ..catalogue import CatalogueError, validate_catalogue
from ..db import get_session
from ..formats import FormatError, loads_strict, parse_submission
from ..identity import get_context, get_verifier
from ..models import Achievement, AuditEntry, Credential
from ..tokens import TokenError, UnknownToken, allows, authenticate, create_token, list_tokens, revoke_token, token_view
from .errors import ApiError

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def require_scope(scope: str):
    """Bearer-token guard: 401 without a valid token, 403 when the token lacks the scope."""

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            challenge = {"WWW-Authenticate": 'Bearer realm="issuer"'}
            if not header.startswith("Bearer ") or not header[7:].strip():
                raise ApiError(401, "an API token is required: Authorization: Bearer <token>", headers=challenge)
            session = get_session()
            caller = authenticate(session, header[7:].strip())
            if caller is None:
                raise ApiError(401, "the API token is unknown or revoked", headers=challenge)
            session.commit()  # records last use (at most once a minute per token), refused or not
            if not allows(caller.scopes, scope):
                raise ApiError(403, f"this token lacks the '{scope}' scope")
            g.caller = caller
            return view(*args, **kwargs)

        return guarded

    return decorate


def json_body() -> object:
    """The request's JSON body, with a message that says what is wrong when it is not JSON."""
    if not request.mimetype or "json" not in request.mimetype:
        raise ApiError(415, "send the request body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "the request body is empty; a JSON object is expected")
    try:
        # Strict like a submitted credential: duplicate names could make what we check differ from
        # what another parser (or a signature) sees; depth is capped before parsing.
        return loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not valid UTF-8") from None
    except FormatError as exc:
        raise ApiError(400, f"the request body is refused: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}") from None
    except ValueError as exc:  # NaN, Infinity
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None


# --- achievements ------------------------------------------------------------------------------------

def achievement_summary(row: Achievement) -> dict:
    ctx = get_context()
    entry = row.entry
    return {
        "code": row.code,
        "id": ctx.achievement_url(row.code),
        "name": entry["name"],
        "credits": entry["credits"],
        "contact_hours": entry.get("contact_hours"),
        "theme": entry["theme"],
        "area": entry["area"],
        "qf_level": entry["qf_level"],
        "cef_code": entry.get("cef_code"),
        "language": entry.get("language"),
        "retired": row.retired,
        "image": ctx.achievement_url(row.code) + "/image.png",
    }


@bp.get("/achievements")
def list_achievements():
    rows = get_session().query(Achievement).order_by(Achievement.code).all()
    return jsonify({"achievements": [achievement_summary(r) for r in rows]})


@bp.post("/achievements")
@require_scope("catalogue")
def add_achievement():
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be one catalogue entry (a JSON object)")
    try:
        (mc,) = validate_catalogue({"microcredentials": [body]})
    except CatalogueError as exc:
        raise ApiError(422, str(exc)) from None
    session = get_session()
    if session.get(Achievement, mc.code) is not None:
        raise ApiError(409, f"achievement {mc.code} already exists", field="code")
    issuing.store_catalogue(session, [mc], [body], actor=g.caller.actor)
    session.commit()
    row = session.get(Achievement, mc.code)
    response = jsonify({**achievement_summary(row), "achievement": issuing.achievement_document(get_context(), row)})
    response.status_code = 201
    response.headers["Location"] = url_for("public.achievement", code=mc.code)
    return response


# --- keys and tokens ---------------------------------------------------------------------------------

@bp.post("/keys/rotate")
@require_scope("keys")
def rotate_keys():
    """New current keys (all, or `{"algorithms": [...]}`); the same core and audit entry as `issuer keys rotate`."""
    algorithms = None
    if request.get_data(cache=True):
        body = json_body()
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object, e.g. {\"algorithms\": [\"Ed25519\"]}")
        unknown = set(body) - {"algorithms"}
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        algorithms = body.get("algorithms")
        if algorithms is not None and (not isinstance(algorithms, list) or not algorithms
                                       or not all(isinstance(a, str) for a in algorithms)):
            raise ApiError(400, "algorithms must be a non-empty list of names such as \"Ed25519\" or \"ES256\"",
                           field="algorithms")
    from ..identity import rotate_keys as rotate

    try:
        new_keys = rotate(current_app._get_current_object(), algorithms, actor=g.caller.actor)
    except ValueError as exc:
        raise ApiError(400, str(exc), field="algorithms") from None
    ctx = get_context()
    return jsonify({"did": ctx.did,
                    "rotated": [{"algorithm": k.algorithm, "id": f"{ctx.did}#{k.kid}"} for k in new_keys],
                    "keys": [{"algorithm": k.algorithm, "id": f"{ctx.did}#{k.kid}", "status": k.status}
                             for k in ctx.keyring.all()]})


@bp.get("/tokens")
@require_scope("admin")
def tokens_list():
    return jsonify({"tokens": [token_view(row) for row in list_tokens(get_session())]})


@bp.post("/tokens")
@require_scope("admin")
def tokens_create():
    """A new token; its secret is in this response only (only its sha256 is stored)."""
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object with name and scopes")
    unknown = set(body) - {"name", "scopes"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    name, scopes = body.get("name", "api"), body.get("scopes")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not name.isprintable():
        raise ApiError(400, "name must be 1 to 200 printable characters", field="name")
    if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
        raise ApiError(400, "scopes must be a list, e.g. [\"issue\", \"revoke\"]", field="scopes")
    session = get_session()
    try:
        row, secret = create_token(session, name.strip(), scopes)
    except TokenError as exc:
        session.rollback()
        raise ApiError(400, str(exc), field="scopes") from None
    session.add(AuditEntry(actor=g.caller.actor, action="token.create", subject=row.name,
                           detail={"scopes": row.scopes, "id": row.id}))
    session.commit()
    response = jsonify({**token_view(row), "token": secret})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/tokens/<int:token_id>")
@require_scope("admin")
def tokens_revoke(token_id: int):
    session = get_session()
    try:
        row = revoke_token(session, token_id, actor=g.caller.actor)
    except UnknownToken as exc:
        session.rollback()
        raise ApiError(404, str(exc)) from None
    session.commit()
    return jsonify(token_view(row))


# --- issuing -----------------------------------------------------------------------------------------

def credential_response(row: Credential, status: int):
    body = {"id": row.id, "url": row.credential_url, "credential": json.loads(row.document)}
    if row.jwt:
        body["jwt"] = row.jwt
    response = jsonify(body)
    response.status_code = status
    response.headers["Location"] = row.credential_url
    return response


@bp.post("/credentials")
@require_scope("issue")
def issue_credential():
    body = json_body()
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        key = key.strip()
        if not key or len(key) > 200 or not key.isprintable():
            raise ApiError(400, "Idempotency-Key must be 1 to 200 printable characters", field="Idempotency-Key")
    session = get_session()
    try:
        req = issuing.parse_request(body)
        outcome = issuing.issue(session, get_context(), req, actor=g.caller.actor, idempotency_key=key)
    except issuing.IssueError as exc:
        session.rollback()
        raise ApiError(exc.status, str(exc), field=exc.field) from None
    return credential_response(outcome.credential, 201 if outcome.created else 200)


@bp.post("/credentials/<credential_id>/revoke")
@require_scope("revoke")
def revoke_credential(credential_id: str):
    """Revoke a badge or award; 200 with the revocation and the awards it affected (the same answer
    again for a repeated call: revocation is permanent and idempotent)."""
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object with reason (and category)")
    unknown = set(body) - {"reason", "category"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    session = get_session()
    try:
        outcome = revocation.revoke(session, current_app.extensions["issuer.rules"], credential_id,
                                    reason=body.get("reason"), category=body.get("category"), actor=g.caller.actor)
    except revocation.RevocationError as exc:
        session.rollback()
        raise ApiError(exc.status, str(exc), field=exc.field) from None
    return jsonify(outcome.to_json())


# --- emails to learners ----------------------------------------------------------------------------

@bp.before_app_request
def _start_mail_worker():
    """The process's mail delivery thread starts with its first request (never under TESTING unless
    ISSUER_MAIL_THREAD is set), so messages queued by the command line or before a restart go out too."""
    mail.ensure_worker(current_app._get_current_object())


@bp.get("/notifications")
@require_scope("issue")
def list_notifications():
    """The emails to learners, newest first: `?status=pending|sending|sent|failed`, `?credential_id=`,
    `?limit=` (1 to 1,000, default 100). Addresses are masked."""
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        raise ApiError(400, "limit must be a whole number from 1 to 1000", field="limit") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit must be a whole number from 1 to 1000", field="limit")
    try:
        rows = mail.list_notifications(get_session(), status=request.args.get("status"),
                                       credential_id=request.args.get("credential_id"), limit=limit)
    except mail.MailError as exc:
        raise ApiError(exc.status, str(exc), field="status") from None
    base = get_context().base_url
    return jsonify({"notifications": [mail.public_view(row, base) for row in rows]})


@bp.post("/notifications/<notification_id>/retry")
@require_scope("issue")
def retry_notification(notification_id: str):
    """Put a failed (or waiting) email back in the queue, due now with a fresh count of attempts."""
    session = get_session()
    try:
        row = mail.retry(session, notification_id, actor=g.caller.actor)
    except mail.MailError as exc:
        session.rollback()
        raise ApiError(exc.status, str(exc)) from None
    return jsonify(mail.public_view(row, get_context().base_url))


# --- verifying ---------------------------------------------------------------------------------------

@bp.post("/verify")
def verify():
    """Verify any credential: JSON body, a JWT as text/plain, or a file upload (field `file`)."""
    email = request.args.get("recipient_email") or request.form.get("recipient_email")
    if request.files:
        upload = request.files.get("file") or next(iter(request.files.values()))
        data, ctype, name = upload.read(), upload.mimetype, upload.filename
    else:
        data, ctype, name = request.get_data(cache=True), request.mimetype, None
        if request.mimetype and "json" in request.mimetype:
            wrapper = json_body()
            if isinstance(wrapper, dict) and "credential" in wrapper and "@context" not in wrapper:
                email = email or wrapper.get("recipient_email")
                inner = wrapper["credential"]
                data = inner if isinstance(inner, str) else json.dumps(inner, ensure_ascii=False)
    if email is not None and not isinstance(email, str):
        raise ApiError(400, "recipient_email must be a string", field="recipient_email")
    try:
        submission = parse_submission(data, ctype, name)
    except FormatError as exc:
        raise ApiError(400, str(exc)) from None
    result = get_verifier().verify_submission(submission, recipient_email=email)
    current_app.logger.info("verified %s: %s", result.format, result.verified)
    return jsonify(result.to_json())


# --- this API's description -------------------------------------------------------------------------

@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 document of the whole HTTP API (issuer/openapi.yaml), with this instance as server."""
    document = dict(_openapi())
    document["servers"] = [{"url": get_context().base_url}]
    return jsonify(document)


_OPENAPI: dict = {}


def _openapi() -> dict:
    # Parsed once per process: the file ships with the package and never changes while it runs.
    if not _OPENAPI:
        from importlib.resources import files

        import yaml

        _OPENAPI.update(yaml.safe_load(files("issuer").joinpath("openapi.yaml").read_text(encoding="utf-8")))
    return _OPENAPI
