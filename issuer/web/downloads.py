"""Baked badge downloads: the badge image with the learner's signed credential inside it.

`/credentials/<id>.png` and `.svg` bake the stored credential text exactly as signed (never re-serialised)
into the achievement's badge image, so a wallet or verifier that unbakes the file reads the same bytes
`/credentials/<id>.json` serves.

A stacked award has no catalogue image of its own. A Certificate or Diploma is drawn by `issuer.images`
from its title, theme, credits and QF level, as a microcredential's badge is; a programme award has no
QF level, so it gets a plain disc with its title rather than a picture that would print a wrong level.

Baking costs a CRC over the image and, for awards, drawing it; the result is kept in an in-process LRU
keyed by the public id and the sha256 of the document and of the stored image. Each worker process holds
its own copy, which is acceptable: stored documents never change, and a changed image changes the key.
"""

from __future__ import annotations

import hashlib
import io
import threading
import unicodedata
from xml.sax.saxutils import escape

from cachetools import LRUCache
from flask import Blueprint, Response, abort, current_app, request
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from PIL import Image, ImageDraw

from .. import baking, images, parchment
from ..catalogue import Localised, Microcredential, Theme, validate_catalogue
from ..credentials import read_profile
from ..db import get_session
from ..identity import get_context
from ..images import SIZE
from ..models import Achievement, Award, AwardBadge, Credential
from .public import _award_day, _qr_codes, _stored_document, _zh_name, credential_row

bp = Blueprint("downloads", __name__)

_CACHE: LRUCache[tuple[str, str, str, str], bytes] = LRUCache(maxsize=256)
_LOCK = threading.Lock()

_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}


def _stored_image(row: Credential | Award, kind: str) -> bytes | str | None:
    """A badge's achievement image as stored; None for awards (and for achievements without one)."""
    if not isinstance(row, Credential):
        return None
    achievement = get_session().get(Achievement, row.achievement_code)
    if achievement is None:
        return None
    return achievement.image_png if kind == "png" else achievement.image_svg


def baked(row: Credential | Award, kind: str) -> bytes:
    """The baked image for a credential or award row, baked once and then served from the cache."""
    document = row.document
    image = _stored_image(row, kind)
    image_digest = "drawn" if image is None else hashlib.sha256(
        image if isinstance(image, bytes) else image.encode("utf-8")).hexdigest()
    key = (kind, row.id, hashlib.sha256(document.encode("utf-8")).hexdigest(), image_digest)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    if image is None:
        image = _draw(row, kind)
    if kind == "png":
        result = baking.bake_png(image, document)
    else:
        result = baking.bake_svg(image, document, jwt=False).encode("utf-8")
    with _LOCK:
        _CACHE[key] = result
    return result


def award_badge(row: Award) -> Microcredential | None:
    """A Certificate or Diploma described as a catalogue entry, so `issuer.images` can draw its badge;
    None for a programme award, which has no QF level to print."""
    award = (row.report or {}).get("award") or {}
    if not award.get("qf_level"):
        return None
    title = award.get("title") or {}
    name = Localised(title.get("en") or row.title_en, title.get("zh-Hant") or row.title_en)
    theme_name = award.get("theme_name") or {}
    theme = Theme(award.get("theme") or row.level,
                  Localised(theme_name.get("en") or row.level, theme_name.get("zh-Hant") or row.level))
    return Microcredential(code=row.level.upper(), name=name, description=name, criteria=name,
                           credits=row.credits, contact_hours=0, theme=theme, area=award.get("area") or "general",
                           qf_level=int(award["qf_level"]), language=("en", "zh-Hant"))


def _draw(row: Credential | Award, kind: str) -> bytes | str:
    """An image for a row without a stored one: the award's badge, or the catalogue entry's."""
    if isinstance(row, Award):
        mc = award_badge(row)
        if mc is None:
            return _plain_png(row) if kind == "png" else _plain_svg(row)
    else:
        entry = get_session().get(Achievement, row.achievement_code).entry
        (mc,) = validate_catalogue({"microcredentials": [entry]})
    return images.badge_png(mc) if kind == "png" else images.badge_svg(mc)


def _titles(row: Award) -> tuple[str, str]:
    title = ((row.report or {}).get("award") or {}).get("title") or {}
    return (unicodedata.normalize("NFC", title.get("en") or row.title_en),
            unicodedata.normalize("NFC", title.get("zh-Hant") or row.title_en))


def _plain_svg(row: Award) -> str:
    """A programme award's picture: its bilingual title on a disc."""
    en, zh = (escape(text) for text in _titles(row))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" '
            f'viewBox="0 0 {SIZE} {SIZE}" role="img" aria-labelledby="award-title">'
            f'<title id="award-title">{en} | {zh}</title>'
            '<circle cx="256" cy="256" r="240" fill="#1f4e79" stroke="#0f2740" stroke-width="10"/>'
            '<circle cx="256" cy="256" r="186" fill="#ffffff"/>'
            '<g text-anchor="middle" font-family="\'Noto Sans TC\', \'Noto Sans CJK TC\', sans-serif" '
            'fill="#1a1a1a">'
            f'<text x="256" y="240" font-size="22" font-weight="700" textLength="300" '
            f'lengthAdjust="spacingAndGlyphs">{en}</text>'
            f'<text x="256" y="280" font-size="22">{zh}</text></g></svg>')


def _plain_png(row: Award) -> bytes:
    """The PNG twin of `_plain_svg`, with Latin text only (the default font may lack CJK glyphs)."""
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((16, 16, SIZE - 16, SIZE - 16), fill="#1f4e79", outline="#0f2740", width=10)
    draw.ellipse((70, 70, SIZE - 70, SIZE - 70), fill="#ffffff")
    latin = "".join(ch for ch in unicodedata.normalize("NFKD", _titles(row)[0]) if " " <= ch <= "~")
    left, top, right, bottom = draw.textbbox((0, 0), latin[:40])
    draw.text(((SIZE - (right - left)) / 2 - left, (SIZE - (bottom - top)) / 2 - top), latin[:40], fill="#1a1a1a")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _download(public_id: str, kind: str) -> Response:
    row = credential_row(public_id)
    body = baked(row, kind)
    response = Response(body, mimetype=_TYPES[kind])
    response.headers["Content-Disposition"] = f'attachment; filename="badge-{row.id}.{kind}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    if kind == "svg":
        # Opened directly, an SVG is a document: it may draw itself and nothing else.
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    response.set_etag(hashlib.sha256(body).hexdigest())
    return response.make_conditional(request)


# --- PDF parchments -------------------------------------------------------------------------------------

# Printed in both languages on every parchment, whatever the reader's language: paper is passed around.
PDF_LABELS = {
    "badge": _l("Open Badge: a digital credential you can verify"),
    "award": _l("Stacked award: a digital credential you can verify"),
    "awarded_to": _l("Awarded to"),
    "awarded": _l("Awarded"),
    "valid_until": _l("Valid until"),
    "credits": _l("Credits"),
    "theme": _l("Theme"),
    "qf_level": _l("QF level"),
    "cef_code": _l("CEF course code"),
    "code": _l("Course code"),
    "counted": _l("Counted badges"),
    "qr": _l("Scan to check this credential online:"),
    "id": _l("Credential id"),
}


def _both(label, **values) -> str:
    """A label in English and in Traditional Chinese, joined; once when both read the same."""
    words = []
    for locale in ("en", "zh_Hant"):
        with force_locale(locale):
            text = str(label) % values if values else str(label)
        if text not in words:
            words.append(text)
    return " | ".join(words)


def _recipient_name(row: Credential | Award) -> str | None:
    """The name the registry recorded: the badge's own, or for an award the name on a badge it counted."""
    if isinstance(row, Credential):
        return row.recipient_name
    session = get_session()
    counted = [link.badge_id for link in session.query(AwardBadge).filter(AwardBadge.award_id == row.id)]
    if not counted:
        return None
    return session.query(Credential.recipient_name).filter(
        Credential.credential_url.in_(counted), Credential.recipient_name.isnot(None)).limit(1).scalar()


def parchment_for(row: Credential | Award) -> parchment.Parchment:
    """The words and pictures of a row's parchment, read from the stored, signed document."""
    ctx = get_context()
    document = _stored_document(row) or {}
    subjects = document.get("credentialSubject")
    subject = next((s for s in (subjects if isinstance(subjects, list) else [subjects])
                    if isinstance(s, dict) and isinstance(s.get("achievement"), dict)), {})
    achievement = subject.get("achievement", {})
    profile = read_profile(document)
    awarded = _award_day(document)
    lines = []
    if awarded:
        lines.append(parchment.Line(_both(PDF_LABELS["awarded"]), awarded.isoformat()))
    if document.get("validUntil"):
        lines.append(parchment.Line(_both(PDF_LABELS["valid_until"]), str(document["validUntil"])[:10]))
    facts = [("credits", None if profile["credits"] is None else f"{profile['credits']:g}"),
             ("theme", profile["theme_name"] or profile["theme"]), ("qf_level", profile["qf_level"]),
             ("cef_code", profile["cef_code"]), ("code", profile["code"])]
    lines += [parchment.Line(_both(PDF_LABELS[key]), str(value)) for key, value in facts if value is not None]
    is_award = isinstance(row, Award)
    counted = [e.get("name") or e.get("id") for e in document.get("evidence") or []
               if isinstance(e, dict) and (e.get("name") or e.get("id"))] if is_award else []
    revoked = None
    if row.revoked_at is not None:
        revoked = _both(_l("Revoked on %(date)s"), date=row.revoked_at.strftime("%Y-%m-%d"))
    qr_png, _ = _qr_codes(row)
    badge_png = _stored_image(row, "png")
    name = achievement.get("name") if isinstance(achievement.get("name"), str) else row.id
    issuer = document.get("issuer")
    verify_url = f"{ctx.base_url}/verify"
    return parchment.Parchment(
        heading=_both(PDF_LABELS["award" if is_award else "badge"]),
        name_en=name, name_zh=_zh_name(achievement),
        issuer_name=(issuer.get("name") if isinstance(issuer, dict) else None) or ctx.profile["name"],
        awarded_to_label=_both(PDF_LABELS["awarded_to"]), recipient_name=_recipient_name(row),
        lines=lines, counted_label=_both(PDF_LABELS["counted"]), counted=[str(c) for c in counted],
        qr_png=qr_png, qr_caption=_both(PDF_LABELS["qr"]), page_url=row.credential_url,
        id_label=_both(PDF_LABELS["id"]), credential_id=str(document.get("id") or row.credential_url),
        verify_note=_both(_l("The signed credential is attached to this PDF as credential.json: upload the PDF "
                             "at %(url)s to check it."), url=verify_url),
        credential_json=row.document, credential_jwt=row.jwt,
        badge_png=badge_png if isinstance(badge_png, bytes) else _draw(row, "png"),
        revoked_notice=revoked, title=name)


def pdf(row: Credential | Award) -> bytes:
    """The parchment PDF, made once per stored document and revocation state, then served from the cache."""
    revoked = row.revoked_at.isoformat() if row.revoked_at else ""
    key = ("pdf", row.id, hashlib.sha256(row.document.encode("utf-8")).hexdigest(), revoked)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    page = parchment_for(row)
    try:
        body = parchment.render(page, parchment.font_dir(current_app.config.get("ISSUER_FONT_DIR")))
    except parchment.ParchmentError as exc:
        current_app.logger.error("cannot make the parchment of %s: %s", row.id, exc)
        abort(503, description=f"PDF parchments are unavailable on this server: {exc}")
    if page.missing:
        current_app.logger.warning("parchment %s: the font has no glyph for %s", row.id,
                                   " ".join(f"U+{ord(ch):04X}" for ch in sorted(page.missing)))
    with _LOCK:
        _CACHE[key] = body
    return body


@bp.get("/credentials/<public_id>.pdf")
def parchment_pdf(public_id: str) -> Response:
    """The printable parchment, bilingual, with the signed credential attached as credential.json."""
    row = credential_row(public_id)
    body = pdf(row)
    response = Response(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{row.id}.pdf"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.set_etag(hashlib.sha256(body).hexdigest())
    return response.make_conditional(request)


@bp.get("/credentials/<public_id>.png")
def baked_png(public_id: str) -> Response:
    """The badge image as a PNG, the signed credential in its openbadgecredential iTXt chunk."""
    return _download(public_id, "png")


@bp.get("/credentials/<public_id>.svg")
def baked_svg(public_id: str) -> Response:
    """The badge image as an SVG, the signed credential in <openbadges:credential>."""
    return _download(public_id, "svg")
