"""Public status lists (issue #5): `GET /status/<list-id>`, the signed BitstringStatusListCredential."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request

from ..db import get_session
from ..identity import get_context
from ..revocation import published

bp = Blueprint("status", __name__)


@bp.get("/status/<list_id>")
def status_list(list_id: str) -> Response:
    """Served from the database cache; a verifier may revalidate with If-None-Match. max-age stays
    short so a revocation reaches caches within a minute, well inside the list's validUntil."""
    if len(list_id) > 64:
        abort(404)
    found = published(get_session(), get_context(), list_id)
    if found is None:
        abort(404)
    headers = {"ETag": found.etag, "Cache-Control": "public, max-age=60"}
    if found.etag and found.etag in request.headers.get("If-None-Match", ""):
        return Response(status=304, headers=headers)
    return Response(found.document, mimetype="application/vc+ld+json", headers=headers)
