"""The issuer's identity documents: did:web DID document, JWKS, and the OB issuer Profile."""

from __future__ import annotations

import io
from functools import lru_cache

from flask import Blueprint, Response, jsonify, render_template

from ..db import get_session
from ..identity import get_context
from ..keys import did_document, jwks
from ..models import Achievement
from .public import negotiate

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/did.json")
def did_json():
    ctx = get_context()
    response = jsonify(did_document(ctx.did, ctx.keyring.all()))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/jwks.json")
def jwks_json():
    response = jsonify(jwks(get_context().keyring.all()))
    response.mimetype = "application/jwk-set+json"
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/issuer")
def profile():
    """The issuer's OB Profile: JSON-LD for machines, a page for people (same URL, by Accept)."""
    ctx = get_context()
    if negotiate() == "text/html":
        courses = get_session().query(Achievement).filter(Achievement.retired.is_(False)).count()
        response = Response(render_template("issuer.html", ctx=ctx, profile=ctx.profile, keys=ctx.keyring.all(),
                                             courses=courses), mimetype="text/html")
    else:
        response = jsonify({"@context": ["https://www.w3.org/ns/credentials/v2",
                                         "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"],
                            **ctx.profile})
        response.mimetype = "application/ld+json"
    response.headers["Vary"] = "Accept"
    return response


@lru_cache(maxsize=1)
def _logo() -> bytes:
    """A plain generated logo for the issuer Profile's image (a school replaces it via ISSUER_* settings)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (256, 256), (18, 52, 86))
    draw = ImageDraw.Draw(image)
    draw.ellipse((28, 28, 228, 228), outline=(236, 196, 64), width=10)
    draw.text((96, 118), "ISSUER", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


@bp.get("/issuer/image.png")
def logo():
    return Response(_logo(), mimetype="image/png", headers={"Cache-Control": "public, max-age=86400"})
