"""Languages of the pages for people: English and Traditional Chinese (Hong Kong usage), from gettext catalogues.

The reader's language comes from `?lang=` (the visible switch, remembered in a cookie), else the cookie, else
`Accept-Language`; English when nothing matches, so that clients which send no preference get English.
"""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, request
from flask_babel import Babel
from markupsafe import Markup

from .config import PROJECT_ROOT

# The public tags (BCP 47, used in `lang` attributes, `?lang=` and the cookie) and their gettext locales.
LANGUAGES = {"en": "en", "zh-Hant": "zh_Hant"}
DEFAULT = "en"
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
# Each language named in itself, so a reader who cannot read the page can still find theirs.
SWITCH_LABELS = {"en": "English", "zh-Hant": "繁體中文"}
# Chinese tags that mean Traditional script; Simplified-script tags (zh-CN, zh-Hans, zh-SG) fall through.
TRADITIONAL = ("zh", "zh-hant", "zh-hk", "zh-tw", "zh-mo")


def _from_tag(tag: str | None) -> str | None:
    """The language we serve for one tag, or None when we have no edition for it."""
    if not tag:
        return None
    lowered = tag.strip().replace("_", "-").lower()
    if lowered == "en" or lowered.startswith("en-"):
        return "en"
    if lowered in TRADITIONAL or lowered.startswith("zh-hant-"):
        return "zh-Hant"
    return None


def _asked() -> str | None:
    """A valid `?lang=` on this request: the switch, which wins over everything else."""
    value = request.args.get("lang")
    return value if value in LANGUAGES else None


def current_language() -> str:
    """The public tag of this request's language: switch, then cookie, then Accept-Language, then English."""
    if not request:
        return DEFAULT
    chosen = _asked() or (request.cookies.get(COOKIE) if request.cookies.get(COOKIE) in LANGUAGES else None)
    if chosen:
        return chosen
    # Werkzeug keeps Accept-Language sorted by quality, best first.
    for tag, quality in request.accept_languages:
        if quality > 0 and (language := _from_tag(tag)):
            return language
    return DEFAULT


def select_locale() -> str:
    """Flask-Babel's locale selector: gettext's name for the chosen language."""
    return LANGUAGES[current_language()]


def switch_links() -> list[dict[str, Any]]:
    """The switch: this same page (path and query kept) once per language."""
    here = current_language()
    links = []
    for tag, label in SWITCH_LABELS.items():
        query = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"] + [("lang", tag)]
        links.append({"lang": tag, "label": label, "url": f"{request.path}?{urlencode(query)}", "current": tag == here})
    return links


def in_language(value: Any) -> Any:
    """A bilingual mapping ({"en": …, "zh-Hant": …}) read in the page's language, English when that is missing."""
    if isinstance(value, dict):
        return value.get(current_language()) or value.get(DEFAULT)
    return value


def nfc(value: Any) -> Any:
    """Every text a template writes is NFC: composed and decomposed forms must not look alike but differ."""
    if isinstance(value, Markup):
        return Markup(unicodedata.normalize("NFC", value))
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    return value


def _remember(response: Response) -> Response:
    """Pages vary by language; a switch on an HTML page is remembered for the next page."""
    if response.mimetype == "text/html":
        response.vary.update(("Accept-Language", "Cookie"))
        asked = _asked()
        if asked and request.cookies.get(COOKIE) != asked:
            response.set_cookie(COOKIE, asked, max_age=COOKIE_MAX_AGE, samesite="Lax", httponly=True)
    return response


def init_app(app: Flask) -> None:
    """Catalogues from the project's translations/ folder (beside templates/), selector, template helpers."""
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(PROJECT_ROOT / "translations"))
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    Babel(app, locale_selector=select_locale)
    app.jinja_env.finalize = nfc
    app.jinja_env.globals.update(current_language=current_language, language_switch=switch_links,
                                 in_language=in_language)
    app.after_request(_remember)
