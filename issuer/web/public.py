"""Public pages and documents: the credential, the achievement, the issuer. No token needed."""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, jsonify, render_template, request

from .. import issuing
from ..db import get_session
from ..identity import get_context
from ..models import Achievement, Award, Credential

bp = Blueprint("public", __name__)

JSON_TYPES = ["application/vc+ld+json", "application/ld+json", "application/json", "application/vc"]


def _negotiate() -> str:
    """The JSON type the client asked for, or text/html for a browser (which ranks text/html highest)."""
    best = request.accept_mimetypes.best_match([*JSON_TYPES, "text/html"], default="text/html")
    if request.accept_mimetypes[best] < request.accept_mimetypes["text/html"]:
        return "text/html"
    return best


def _credential(public_id: str) -> Credential | Award:
    """A badge or a stacked award: both are credentials served from the same URL space."""
    session = get_session()
    row = session.get(Credential, public_id) or session.get(Award, public_id)
    if row is None:
        abort(404, description=f"no credential with id {public_id}")
    return row


def _stored(row: Credential, mimetype: str) -> Response:
    # The stored text exactly as signed: never re-serialised on the way out.
    return Response(row.document.encode("utf-8"), mimetype=mimetype, headers={"Vary": "Accept"})


@bp.get("/")
def index():
    rows = get_session().query(Achievement).order_by(Achievement.code).all()
    return render_template("index.html", ctx=get_context(), achievements=rows)


@bp.get("/credentials/<public_id>")
def credential(public_id: str):
    row = _credential(public_id)
    kind = _negotiate()
    if kind != "text/html":
        return _stored(row, kind)
    document = json.loads(row.document)
    return render_template("credential.html", row=row, doc=document, ctx=get_context())


@bp.get("/credentials/<public_id>.json")
def credential_json(public_id: str):
    return _stored(_credential(public_id), "application/vc+ld+json")


@bp.get("/credentials/<public_id>.jwt")
def credential_jwt(public_id: str):
    row = _credential(public_id)
    if not row.jwt:
        abort(404, description="no VC-JWT: JWTs are issued only to recipients with a DID")
    return Response(row.jwt, mimetype="text/plain")


def _achievement(code: str) -> Achievement:
    row = get_session().get(Achievement, code)
    if row is None:
        abort(404, description=f"no achievement with code {code}")
    return row


def _language() -> str:
    """The edition asked for with `?lang=` (the `related` ids of our Achievements use it)."""
    language = request.args.get("lang", "en")
    if language not in issuing.LANGUAGES:
        abort(404, description=f"no {language!r} edition; editions: {', '.join(issuing.LANGUAGES)}")
    return language


@bp.get("/achievements/<code>")
def achievement(code: str):
    row = _achievement(code)
    document = issuing.achievement_document(get_context(), row, _language())
    kind = _negotiate()
    if kind != "text/html":
        response = jsonify(document)
        response.mimetype = "application/ld+json" if kind == "application/vc+ld+json" else kind
        response.headers["Vary"] = "Accept"
        return response
    return render_template("achievement.html", row=row, entry=row.entry, doc=document, ctx=get_context())


@bp.get("/achievements/<code>.json")
def achievement_json(code: str):
    return jsonify(issuing.achievement_document(get_context(), _achievement(code), _language()))


@bp.get("/achievements/<code>/image.png")
def achievement_png(code: str):
    row = _achievement(code)
    return Response(row.image_png, mimetype="image/png", headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/achievements/<code>/image.svg")
def achievement_svg(code: str):
    row = _achievement(code)
    return Response(row.image_svg, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/awards/achievements/<slug>")
def award_achievement(slug: str):
    """The Achievement of a stacked award title, rebuilt from an award that uses it."""
    ctx = get_context()
    achievement_id = f"{ctx.base_url}/awards/achievements/{slug}"
    row = get_session().query(Award).filter(Award.achievement_id == achievement_id).first()
    if row is None:
        abort(404, description=f"no award has been issued with the achievement {slug}")
    return jsonify(json.loads(row.document)["credentialSubject"]["achievement"])
