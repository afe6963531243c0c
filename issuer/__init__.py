"""An Open Badges 3.0 issuer for microcredentials: `create_app()` builds the Flask application."""

from __future__ import annotations

from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
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
    register_commands(app)
    return app
