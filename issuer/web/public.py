"""Public pages and documents: the credential, the achievement, the issuer. No token needed."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .. import i18n, issuing, qr
from ..credentials import read_profile
from ..db import get_session
from ..identity import get_context, get_verifier
from ..models import Achievement, Award, Credential, StatusList, utcnow
from .security import csp_nonce

bp = Blueprint("public", __name__)
# Every page for people is rendered in the reader's language: set that up once, with the public pages.

JSON_TYPES = ["application/vc+ld+json", "application/ld+json", "application/json", "application/vc"]


def negotiate() -> str:
    """The JSON type the client asked for, or text/html for a browser (which ranks text/html highest)."""
    best = request.accept_mimetypes.best_match([*JSON_TYPES, "text/html"], default="text/html")
    if request.accept_mimetypes[best] < request.accept_mimetypes["text/html"]:
        return "text/html"
    return best


def credential_row(public_id: str) -> Credential | Award:
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
    row = credential_row(public_id)
    kind = negotiate()
    if kind != "text/html":
        return _stored(row, kind)
    response = Response(_page_html(row), mimetype="text/html")
    # Same URL as the JSON, and the verdict is computed afresh each time: caches must ask again.
    response.headers["Vary"] = "Accept"
    response.headers["Cache-Control"] = "no-cache"
    return response


# --- the public credential page ------------------------------------------------------------------------

LINKEDIN_ADD = "https://www.linkedin.com/profile/add"

# The checks an employer reads, in the order they matter to them, labelled in the reader's language. The
# verifier's recipient check is left out: it needs the learner's email, which a public page never has.
PAGE_CHECKS = {
    "proof": _l("Signature (proof)"),
    "key_provenance": _l("Issuer and signing key"),
    "validity_window": _l("Validity dates"),
    "status": _l("Revocation status"),
    "schema": _l("Open Badges 3.0 format"),
    "jsonld": _l("Linked-data terms"),
}
# The state names stay English in data-state (machines and tests read them); the page shows these words.
CHECK_STATES = {True: "passed", False: "failed", None: "not checked"}
STATE_WORDS = {"passed": _l("passed"), "failed": _l("failed"), "not checked": _l("not checked")}


def _stored_document(row: Credential | Award) -> dict | None:
    """The stored JSON, or None when the stored text is not a JSON object (the page must still render)."""
    try:
        document = json.loads(row.document)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _web_url(value: Any) -> str | None:
    """Only http(s) URLs become links or images: ids from other issuers' badges could be anything."""
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    return None


def _zh_name(achievement: Mapping[str, Any]) -> str | None:
    related = achievement.get("related")
    for item in related if isinstance(related, list) else []:
        if isinstance(item, Mapping) and item.get("inLanguage") == "zh-Hant" and isinstance(item.get("name"), str):
            return item["name"]
    return None


def _award_day(document: Mapping[str, Any]) -> date | None:
    text = document.get("awardedDate") or document.get("validFrom") or document.get("issuanceDate")
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def linkedin_url(*, name: str, organization: str, awarded: date | None, cert_url: str, cert_id: str) -> str:
    """LinkedIn's add-to-profile link: the learner lands on a form already filled with this credential."""
    params = {"startTask": "CERTIFICATION_NAME", "name": name, "organizationName": organization}
    if awarded is not None:
        params |= {"issueYear": str(awarded.year), "issueMonth": str(awarded.month)}
    params |= {"certUrl": cert_url, "certId": cert_id}
    return f"{LINKEDIN_ADD}?{urlencode(params, quote_via=quote, safe='')}"


# The verdict a page shows, per application and process, for PAGE_VERDICT_TTL seconds: keyed by the stored
# text's SHA-256, the row's revocation time and the version of every status list the credential points at
# (a revocation bumps that version in its own transaction), so a changed document or a revocation is shown
# at the very next view; only the clock-bound parts (validity dates, a key or list changing otherwise) may
# be up to PAGE_VERDICT_TTL old, and the page says when it was checked. Issue #7, docs/scaling.md.
PAGE_VERDICT_TTL = 30.0
PAGE_VERDICT_ENTRIES = 2048


class _VerdictCache:
    def __init__(self, size: int = PAGE_VERDICT_ENTRIES) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> dict | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._entries[key]
                return None
            return hit[1]

    def put(self, key: tuple, verdict: dict) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + PAGE_VERDICT_TTL, verdict)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _verdict_key(row: Credential | Award, document: dict | None) -> tuple | None:
    """What the verdict depends on besides the clock, or None when it cannot be told cheaply (a status
    entry that is not one of our lists: then the verifier runs every time)."""
    prefix = f"{get_context().base_url}/status/"
    list_ids = []
    entries = document.get("credentialStatus") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else [entries] if entries is not None else []:
        url = entry.get("statusListCredential") if isinstance(entry, Mapping) else None
        if not isinstance(url, str) or not url.startswith(prefix):
            return None
        list_ids.append(url[len(prefix):].split("#", 1)[0])
    versions: tuple = ()
    if list_ids:
        found = dict(get_session().execute(
            select(StatusList.id, StatusList.version).where(StatusList.id.in_(list_ids))).all())
        versions = tuple((list_id, found.get(list_id)) for list_id in list_ids)
    digest = hashlib.sha256(row.document.encode("utf-8")).hexdigest()
    revoked = row.revoked_at.isoformat() if row.revoked_at else None
    return type(row).__name__, row.id, digest, revoked, versions


def _verdict(row: Credential | Award, document: dict | None) -> dict:
    """Our verifier on the stored document: run now, or within PAGE_VERDICT_TTL seconds for the very same
    stored text, revocation state and status-list versions."""
    cache = current_app.extensions.setdefault("issuer.page_verdicts", _VerdictCache())
    key = _verdict_key(row, document)
    found = cache.get(key) if key is not None else None
    if found is not None:
        return found
    checked_at = utcnow().replace(microsecond=0)
    verifier = get_verifier()
    verifier.now = lambda: checked_at  # the time shown is the time the validity dates were checked against
    result = verifier.verify_credential(document)
    found = {"verified": result.verified, "warnings": list(result.warnings),
             "checks": {check.name: (check.ok, check.detail) for check in result.checks},
             "checked_at": checked_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if key is not None:
        cache.put(key, found)
    return found


# The rendered page is reused like its verdict, for the same verdict key, language and query string (the
# language switch's links repeat the query). Rendering is most of a page's cost. It is rendered with a
# placeholder nonce, replaced by the response's own fresh nonce each time it is served.
PAGE_HTML_ENTRIES = 512  # about 25 KB each
_NONCE_PLACEHOLDER = "nonce-" + secrets.token_urlsafe(24)


def _page_html(row: Credential | Award) -> str:
    key = _verdict_key(row, _stored_document(row))
    page_key = (key, i18n.current_language(), request.query_string) if key is not None else None
    cache = current_app.extensions.setdefault("issuer.page_html", _VerdictCache(PAGE_HTML_ENTRIES))
    html = cache.get(page_key) if page_key is not None else None
    if html is None:
        g._csp_nonce = _NONCE_PLACEHOLDER
        try:
            html = render_template("credential.html", row=row, page=credential_page(row), ctx=get_context())
        finally:
            g.pop("_csp_nonce", None)
        if page_key is not None:
            cache.put(page_key, html)
    return html.replace(_NONCE_PLACEHOLDER, csp_nonce())


def _verification(row: Credential | Award, document: dict | None) -> dict:
    """The verdict, labelled in the reader's language: the page shows its work rather than asking for trust."""
    verdict = _verdict(row, document)
    by_name = verdict["checks"]
    checks = [{"name": name, "label": str(label), "state": CHECK_STATES[by_name[name][0]],
               "state_words": str(STATE_WORDS[CHECK_STATES[by_name[name][0]]]), "detail": by_name[name][1]}
              for name, label in PAGE_CHECKS.items() if name in by_name]
    return {"verified": verdict["verified"], "checks": checks, "warnings": list(verdict["warnings"]),
            "checked_at": verdict["checked_at"]}


def credential_page(row: Credential | Award) -> dict:
    """What the page shows, read from the stored document so that a badge and an award render alike."""
    ctx = get_context()
    stored = _stored_document(row)
    document = stored or {}
    subjects = document.get("credentialSubject")
    subject = next((s for s in (subjects if isinstance(subjects, list) else [subjects])
                    if isinstance(s, Mapping) and isinstance(s.get("achievement"), Mapping)), {})
    achievement = subject.get("achievement", {})
    issuer = document.get("issuer")
    issuer_name = issuer.get("name") if isinstance(issuer, Mapping) else None
    image = achievement.get("image")
    image_url = _web_url(image.get("id") if isinstance(image, Mapping) else image)
    name = achievement.get("name") if isinstance(achievement.get("name"), str) else _("Credential")
    profile = read_profile(document)
    awarded = _award_day(document)
    evidence = [{"url": _web_url(e.get("id")), "name": e.get("name") or e.get("id") or "evidence",
                 "description": e.get("description")}
                for e in document.get("evidence") or [] if isinstance(e, Mapping)]
    if isinstance(row, Credential):
        shown_image = url_for("public.achievement_svg", code=row.achievement_code)
    else:
        shown_image = image_url
    organization = issuer_name or ctx.profile["name"]
    return {
        "name": name,
        "name_zh": _zh_name(achievement),
        "issuer_name": organization,
        "recipient_name": getattr(row, "recipient_name", None),
        "awarded": awarded.isoformat() if awarded else None,
        "valid_from": document.get("validFrom"),
        "valid_until": document.get("validUntil"),
        "image": shown_image,
        # The picture shown, described in the reader's language.
        "image_alt": _("Badge for %(name)s", name=(i18n.current_language() == "zh-Hant" and _zh_name(achievement))
                       or name),
        "og_image": image_url or (ctx.profile.get("image") or {}).get("id"),
        "description": (_("%(name)s, awarded by %(issuer)s on %(date)s. An Open Badges 3.0 credential.",
                          name=name, issuer=organization, date=awarded.isoformat()) if awarded else
                        _("%(name)s, awarded by %(issuer)s. An Open Badges 3.0 credential.",
                          name=name, issuer=organization)),
        "profile": profile,
        "is_award": isinstance(row, Award),
        "evidence": evidence,
        "verification": _verification(row, stored),
        "linkedin": linkedin_url(name=name, organization=organization, awarded=awarded,
                                 cert_url=row.credential_url, cert_id=row.id),
    }


@bp.get("/credentials/<public_id>.json")
def credential_json(public_id: str):
    return _stored(credential_row(public_id), "application/vc+ld+json")


@bp.get("/credentials/<public_id>.jwt")
def credential_jwt(public_id: str):
    row = credential_row(public_id)
    if not row.jwt:
        abort(404, description="no VC-JWT: JWTs are issued only to recipients with a DID")
    return Response(row.jwt, mimetype="text/plain")


# --- QR codes: drawn once and stored; rows from before they were kept get theirs on first request -------

QR_CACHE = "public, max-age=31536000, immutable"  # a QR code depends only on the credential's URL


def _qr_codes(row: Credential | Award) -> tuple[bytes, str]:
    if qr.ensure(row):
        png, svg = row.qr_png, row.qr_svg
        session = get_session()
        try:
            session.commit()
        except SQLAlchemyError:
            # Not stored this time (say, a locked SQLite file): serve what was drawn, store it next time.
            session.rollback()
            current_app.logger.warning("could not store the QR codes of %s", row.id, exc_info=True)
        return png, svg
    return row.qr_png, row.qr_svg


def _image(body: bytes, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype, headers={"Cache-Control": QR_CACHE})
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/credentials/<public_id>/qr.png")
def credential_qr_png(public_id: str):
    png, _ = _qr_codes(credential_row(public_id))
    return _image(png, "image/png")


@bp.get("/credentials/<public_id>/qr.svg")
def credential_qr_svg(public_id: str):
    _, svg = _qr_codes(credential_row(public_id))
    return _image(svg.encode("utf-8"), "image/svg+xml")


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
    kind = negotiate()
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
