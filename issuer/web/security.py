"""Security headers on every response (issue #9).

The policy allows scripts only from our own origin, plus the inline scripts written in our templates:
each literal ``<script>`` tag in a template's *source* gets a per-response nonce when the template is
compiled, so markup that reaches a page through a variable (autoescaped, and never part of the source)
can never carry the nonce. Headers that a view set itself (the baked SVG download's stricter policy,
the console's X-Frame-Options) are left as they are.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from jinja2.ext import Extension

_NONCE_ATTR = '<script nonce="{{ csp_nonce() }}">'
_BARE_SCRIPT = re.compile(r"<script>", re.IGNORECASE)

BASE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "script-src 'self'{nonce}; object-src 'none'; frame-ancestors 'none'; form-action 'self'{forms}; "
               "base-uri 'none'")
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
HSTS = "max-age=31536000; includeSubDomains"


class ScriptNonces(Extension):
    """Adds the response's nonce to every bare ``<script>`` tag of a template, at compile time."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _BARE_SCRIPT.sub(_NONCE_ATTR, source)


def csp_nonce() -> str:
    """The nonce of the current response, made on first use."""
    nonce = g.get("_csp_nonce")
    if nonce is None:
        nonce = g._csp_nonce = secrets.token_urlsafe(18)
    return nonce


def policy(nonce: str | None, form_origins: tuple[str, ...] = ()) -> str:
    forms = "".join(f" {origin}" for origin in form_origins)
    return BASE_POLICY.format(nonce=f" 'nonce-{nonce}'" if nonce else "", forms=forms)


def origin_of(url: object) -> str | None:
    """scheme://host[:port] of an http(s) URL, or None: nothing else may enter the policy."""
    try:
        parts = urlsplit(str(url or ""))
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def form_origins(app: Flask) -> tuple[str, ...]:
    """The console's single sign-on form posts to us and is redirected to the school's provider; browsers
    apply form-action to that redirect, so the provider's origin is allowed (when one is configured)."""
    cfg = app.config
    if not (cfg.get("ISSUER_OIDC_ISSUER") and cfg.get("ISSUER_OIDC_CLIENT_ID")):
        return ()
    origin = origin_of(cfg["ISSUER_OIDC_ISSUER"])
    return (origin,) if origin else ()


def _https(app: Flask) -> bool:
    return request.is_secure or str(app.config.get("ISSUER_BASE_URL") or "").startswith("https://")


def init_app(app: Flask) -> None:
    app.jinja_env.add_extension(ScriptNonces)
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        if "Content-Security-Policy" not in headers:
            headers["Content-Security-Policy"] = policy(g.get("_csp_nonce"), form_origins(app))
        for name, value in STATIC_HEADERS.items():
            headers.setdefault(name, value)
        if _https(app):
            headers.setdefault("Strict-Transport-Security", HSTS)
        return response
