"""Configuration: defaults, then the instance folder's `config.py`, then `ISSUER_*` environment variables.

Every setting a school changes is an `ISSUER_*` variable so that a container or a systemd unit can set it
without editing files; the instance folder keeps the SQLite database and any local overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# name → (default, parser). Defaults that depend on the instance folder are filled in by `load`.
_SETTINGS: dict[str, tuple[object, type]] = {
    "BASE_URL": ("http://127.0.0.1:5000", str),
    "DATABASE_URL": (None, str),
    "KEY_DIR": (None, str),
    "KEY_PASSPHRASE": (None, str),
    # A development instance may keep its signing keys unencrypted (TESTING implies it). Without it the
    # service refuses to start with a plaintext key or keys that other users can read (keys.py).
    "DEVELOPMENT": (False, bool),
    "NAME": ("HKU SPACE Demo School of Professional and Continuing Education", str),
    "URL": (None, str),
    "EMAIL": ("registry@example.edu.hk", str),
    "JWT_ALGORITHM": ("ES256", str),
    # Development only: let the verifier fetch DID documents from loopback / private addresses over http.
    "ALLOW_PRIVATE_FETCH": (False, bool),
    "FETCH_TIMEOUT": (5.0, float),
    # Stacking: the rule file (default: the demo rules, HKU SPACE's scheme) and partner issuers whose
    # badges count, as a comma-separated list of DIDs.
    "RULES_FILE": (None, str),
    "TRUSTED_ISSUERS": ("", str),
    # Email to learners (mail.py): smtp://user:pass@host:port, smtps://… (TLS) or smtp+starttls://…; none
    # means a development instance writing each message to OUTBOX_DIR (default <instance>/outbox).
    "SMTP_URL": (None, str),
    "SMTP_TIMEOUT": (10.0, float),  # seconds, for connecting and for every reply
    "MAIL_FROM": (None, str),  # default: ISSUER_NAME <no-reply@localhost>
    "OUTBOX_DIR": (None, str),
    "MAIL_MAX_ATTEMPTS": (8, int),
    "MAIL_THREAD": (None, bool),  # default: on, except under TESTING
    # The staff console (issue #8): the session cookie's signing key (default: made once and kept in
    # <instance>/secret_key), session lifetimes, and single sign-on with the school's OpenID Connect
    # provider: users are matched by email to a staff account, or by the ROLE_CLAIM's groups through
    # ROLE_MAP ("registrars=registrar, editors=catalogue_editor, it-admins=administrator").
    "SECRET_KEY": (None, str),
    "CONSOLE_IDLE_MINUTES": (30, int),
    "CONSOLE_MAX_HOURS": (12, int),
    "OIDC_ISSUER": (None, str),
    "OIDC_CLIENT_ID": (None, str),
    "OIDC_CLIENT_SECRET": (None, str),
    "OIDC_ROLE_CLAIM": ("groups", str),
    "OIDC_ROLE_MAP": ("", str),
    # Rate limits on the public endpoints (web/limits.py): unset = the defaults there (none under TESTING),
    # "off", or "verify=120/minute;apply=20/minute;wallet=60/minute". The counters live in memory per
    # process, or in Redis (redis://127.0.0.1:6379/0) to share them between workers and instances.
    "RATE_LIMITS": (None, str),
    "RATELIMIT_STORAGE_URL": ("memory://", str),
}


def _parse(value: str, kind: type) -> object:
    if kind is bool:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return kind(value)


def load(app, overrides: dict | None = None) -> None:
    """Fill `app.config` with ISSUER_* settings: defaults < instance/config.py < environment < overrides
    (the overrides are what tests and `create_app(test_config)` pass)."""
    for name, (default, _) in _SETTINGS.items():
        app.config.setdefault(f"ISSUER_{name}", default)
    app.config.from_pyfile("config.py", silent=True)
    for name, (_, kind) in _SETTINGS.items():
        env = os.environ.get(f"ISSUER_{name}")
        if env is not None and env != "":
            app.config[f"ISSUER_{name}"] = _parse(env, kind)
    app.config.update(overrides or {})

    app.config["ISSUER_BASE_URL"] = app.config["ISSUER_BASE_URL"].rstrip("/")
    if not app.config["ISSUER_DATABASE_URL"]:
        app.config["ISSUER_DATABASE_URL"] = "sqlite:///" + str(Path(app.instance_path) / "issuer.sqlite")
    if not app.config["ISSUER_KEY_DIR"]:
        app.config["ISSUER_KEY_DIR"] = str(PROJECT_ROOT / "keys")
    if not app.config["ISSUER_URL"]:
        app.config["ISSUER_URL"] = app.config["ISSUER_BASE_URL"]
    trusted = app.config["ISSUER_TRUSTED_ISSUERS"]
    if isinstance(trusted, str):
        app.config["ISSUER_TRUSTED_ISSUERS"] = [d.strip() for d in trusted.split(",") if d.strip()]
    if app.config.get("TESTING"):
        app.config["ISSUER_DEVELOPMENT"] = True
    if app.config["ISSUER_JWT_ALGORITHM"] not in ("ES256", "RS256"):
        raise ValueError("ISSUER_JWT_ALGORITHM must be ES256 or RS256")
