"""The staff console under /console (issue #8): sign-in (single sign-on with the school's OpenID Connect
provider, or a local account with a password and a TOTP code), sessions, CSRF, and the permission guard.
The pages themselves are in `views.py`; the rules (roles, throttling, jobs) in `issuer/staff.py`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from functools import wraps
from pathlib import Path

from flask import Blueprint, Flask, abort, current_app, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFProtect

from ... import staff
from ...db import get_session
from ...models import AuditEntry, StaffAccount, utcnow

bp = Blueprint("console", __name__, url_prefix="/console")
csrf = CSRFProtect()


# --- the session cookie's key, made once per instance -------------------------------------------------

def secret_key(app: Flask) -> str:
    configured = app.config.get("ISSUER_SECRET_KEY") or app.config.get("SECRET_KEY")
    if configured:
        return configured
    path = Path(app.instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


class _LazyKeySessions(SecureCookieSessionInterface):
    """The signed-cookie session, keyed from the instance folder when no ISSUER_SECRET_KEY is set."""

    def get_signing_serializer(self, app):
        if not app.secret_key:
            app.secret_key = secret_key(app)
        return super().get_signing_serializer(app)


# --- who is signed in ---------------------------------------------------------------------------------

def current_account() -> StaffAccount | None:
    return g.get("staff_account")


def _load_account() -> None:
    """Find the signed-in account; end the session when it is idle too long, too old, or the account
    changed (deactivated, roles edited: `session_version` grew)."""
    g.staff_account = None
    info = session.get("staff")
    if not info:
        return
    now = time.time()
    idle = current_app.config["ISSUER_CONSOLE_IDLE_MINUTES"] * 60
    limit = current_app.config["ISSUER_CONSOLE_MAX_HOURS"] * 3600
    account = get_session().get(StaffAccount, info.get("id"))
    if (now - info.get("seen", 0) > idle or now - info.get("at", 0) > limit or account is None
            or not account.active or account.session_version != info.get("v")):
        session.pop("staff", None)
        g.session_expired = True
        return
    info["seen"] = now
    session["staff"] = info
    g.staff_account = account


def start_session(account: StaffAccount) -> None:
    session.clear()  # a new session identity at sign-in (no fixation)
    session.permanent = True
    session["staff"] = {"id": account.id, "v": account.session_version, "at": time.time(), "seen": time.time()}


def roles() -> frozenset[str]:
    account = current_account()
    return staff.roles_of(account) if account else frozenset()


def can(permission: str) -> bool:
    return staff.may(roles(), permission)


def require(permission: str):
    """The console's guard: sign-in first (a page redirects there, anything else gets 401), then the
    role table (403, for the page and for the JSON behind it alike)."""

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            if current_account() is None:
                if request.method == "GET" and not request.path.endswith((".json", ".csv")):
                    return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
                abort(401, "sign in to the staff console first")
            if not can(permission):
                abort(403, f"your role may not do this ({permission})")
            return view(*args, **kwargs)

        return guarded

    return decorate


def actor() -> str:
    return staff.actor_of(current_account())


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/console") and not value.startswith("//"):
        return value
    return url_for("console.home")


def client_address() -> str:
    return request.remote_addr or "-"


# --- single sign-on -----------------------------------------------------------------------------------

def oidc_configured() -> bool:
    cfg = current_app.config
    return bool(cfg.get("ISSUER_OIDC_ISSUER") and cfg.get("ISSUER_OIDC_CLIENT_ID"))


def oidc_client():
    """The authlib client for the configured provider (registered again when the settings change)."""
    from authlib.integrations.flask_client import OAuth

    app = current_app._get_current_object()
    oauth = app.extensions.get("issuer.oauth")
    if oauth is None:
        oauth = OAuth(app)
        app.extensions["issuer.oauth"] = oauth
    cfg = app.config
    issuer = cfg["ISSUER_OIDC_ISSUER"].rstrip("/")
    name = "school" + hashlib.sha256(f"{issuer} {cfg['ISSUER_OIDC_CLIENT_ID']}".encode()).hexdigest()[:12]
    client = oauth.create_client(name)
    if client is None:
        client = oauth.register(name, client_id=cfg["ISSUER_OIDC_CLIENT_ID"],
                                client_secret=cfg.get("ISSUER_OIDC_CLIENT_SECRET"),
                                server_metadata_url=f"{issuer}/.well-known/openid-configuration",
                                client_kwargs={"scope": "openid email profile"})
    return client


@bp.get("/sign-in")
def sign_in():
    if current_account() is not None:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("console/sign_in.html", oidc=oidc_configured(), next=request.args.get("next", ""),
                           expired=g.get("session_expired", False), error=None, email="")


@bp.post("/sign-in")
def sign_in_post():
    email = (request.form.get("email") or "").strip()
    try:
        account = staff.sign_in_local(get_session(), email, request.form.get("password") or "",
                                      request.form.get("code"), client_address())
    except staff.StaffError as exc:
        message = (_("Too many failed sign-ins. Wait 15 minutes and try again.") if exc.status == 429
                   else _("The email, password or code is not right."))
        return render_template("console/sign_in.html", oidc=oidc_configured(), next=request.form.get("next", ""),
                               expired=False, error=message, email=email), exc.status
    start_session(account)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/sso")
def sso_start():
    if not oidc_configured():
        abort(404, "single sign-on is not configured")
    session["sso_next"] = _safe_next(request.form.get("next"))
    return oidc_client().authorize_redirect(url_for("console.sso_callback", _external=True))


@bp.get("/sso/callback")
def sso_callback():
    if not oidc_configured():
        abort(404, "single sign-on is not configured")
    from authlib.integrations.base_client import OAuthError

    db = get_session()
    try:
        token = oidc_client().authorize_access_token()
        claims = dict(token.get("userinfo") or {})
        cfg = current_app.config
        account = staff.account_for_claims(db, claims, claim_name=cfg["ISSUER_OIDC_ROLE_CLAIM"],
                                           role_map=staff.parse_role_map(cfg["ISSUER_OIDC_ROLE_MAP"]))
    except (OAuthError, staff.StaffError) as exc:
        db.rollback()
        db.add(AuditEntry(actor=f"anonymous:{client_address()}", action="staff.sign_in.failed", subject=None,
                          detail={"method": "oidc", "error": str(exc)[:300]}))
        db.commit()
        return render_template("console/sign_in.html", oidc=True, next="", expired=False, email="",
                               error=_("Single sign-on did not give access to the console: %(why)s",
                                       why=str(exc))), 403
    account.last_sign_in_at = utcnow()
    db.add(AuditEntry(actor=staff.actor_of(account), action="staff.sign_in", subject=account.email,
                      detail={"method": "oidc", "roles": sorted(staff.roles_of(account))}))
    db.commit()
    target = session.get("sso_next")
    start_session(account)
    if token.get("id_token"):
        # Kept for signing out at the provider too (the id_token_hint of RP-initiated logout).
        session["oidc_id_token"] = token["id_token"]
    return redirect(_safe_next(target))


def end_session_url(id_token: str) -> str | None:
    """Where to send the browser to end the provider's session too (OpenID Connect RP-Initiated Logout):
    the provider's `end_session_endpoint` with `id_token_hint`, our `client_id` and the console's sign-in
    page as `post_logout_redirect_uri` (which the school registers with the provider). None when the
    provider does not offer it, its metadata cannot be read, or it is on another origin than the
    provider (the console's form-action policy would stop that redirect)."""
    from urllib.parse import urlencode

    from ..security import origin_of

    try:
        metadata = oidc_client().load_server_metadata()
    except Exception:  # the provider is down: signing out here must still work
        current_app.logger.warning("could not read the identity provider's metadata to sign out there")
        return None
    endpoint = metadata.get("end_session_endpoint") if isinstance(metadata, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        return None
    if origin_of(endpoint) != origin_of(current_app.config["ISSUER_OIDC_ISSUER"]):
        return None
    query = urlencode({"id_token_hint": id_token, "client_id": current_app.config["ISSUER_OIDC_CLIENT_ID"],
                       "post_logout_redirect_uri": url_for("console.sign_in", _external=True)})
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


@bp.post("/sign-out")
def sign_out():
    account = current_account()
    id_token = session.get("oidc_id_token")
    target = end_session_url(id_token) if account is not None and id_token and oidc_configured() else None
    if account is not None:
        db = get_session()
        db.add(AuditEntry(actor=staff.actor_of(account), action="staff.sign_out", subject=account.email,
                          detail={"at_provider": True} if target else None))
        db.commit()
    session.clear()
    return redirect(target or url_for("console.sign_in"))


# --- set-up -------------------------------------------------------------------------------------------

@bp.before_request
def _before():
    if request.method == "POST":
        csrf.protect()
    _load_account()
    from ...mail import ensure_worker

    ensure_worker(current_app._get_current_object())


@bp.after_request
def _no_store(response):
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@bp.app_context_processor
def _helpers():
    return {"console_account": current_account, "console_can": can}


def init_app(app: Flask) -> None:
    from datetime import timedelta

    from . import views  # noqa: F401  (the pages, registered on bp)

    app.session_interface = _LazyKeySessions()
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # only the console's forms; the API uses tokens
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the session is
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SECURE", app.config["ISSUER_BASE_URL"].startswith("https://"))
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(hours=app.config["ISSUER_CONSOLE_MAX_HOURS"]))
    csrf.init_app(app)
    app.register_blueprint(bp)
