"""An Open Badges 3.0 issuer for microcredentials: `create_app()` builds the Flask application."""

from __future__ import annotations

from flask import Flask


def create_app(test_config: dict | None = None, *, command_line: bool = False) -> Flask:
    """The application. As a service (gunicorn 'issuer:create_app()') it first checks the signing keys
    and refuses to start when they are unsafe; the `issuer` command builds it with command_line=True
    so that `issuer keys ...` can still repair them (and `issuer serve` runs the same check itself)."""
    from . import config, db, i18n
    from .cli import register_commands
    from .stacking import DEFAULT_RULES_PATH, load_rules
    from .web import api, awards, downloads, errors, oid4vci, pages, public, status, vcapi, wellknown

    app = Flask(__name__, instance_relative_config=True, template_folder=str(config.PROJECT_ROOT / "templates"))
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    config.load(app, test_config)
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    # A malformed rule file stops start-up here, with an error that names the field.
    app.extensions["issuer.rules"] = load_rules(app.config["ISSUER_RULES_FILE"] or DEFAULT_RULES_PATH)
    db.init_app(app)
    errors.init_app(app)
    i18n.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(awards.bp)
    app.register_blueprint(public.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(vcapi.bp)
    app.register_blueprint(oid4vci.bp)
    from .web import console, security

    console.init_app(app)  # the staff console under /console (issue #8)
    security.init_app(app)  # security headers on every response (issue #9)
    from .web import limits

    limits.init_app(app)  # rate limits on the public endpoints, once every view is registered (issue #9)
    register_commands(app)
    if not command_line:
        check_keys(app)
    return app


def check_keys(app: Flask) -> None:
    """Start-up check of the key directory (issue #9): in production, refuse plaintext keys, keys others
    can read or write, and a key ring that cannot be loaded; in development, warn about permissions."""
    from pathlib import Path

    from .keys import KeyLoadError, KeyStorageError, check_key_storage

    development = bool(app.config["ISSUER_DEVELOPMENT"])
    for warning in check_key_storage(Path(app.config["ISSUER_KEY_DIR"]), development=development):
        app.logger.warning("signing keys: %s", warning)
    if not development:
        from .identity import get_context

        try:
            get_context(app)  # decrypt now: a wrong passphrase stops the start, not the first request
        except KeyLoadError as exc:
            raise KeyStorageError(f"the issuer will not start: {exc}") from None
