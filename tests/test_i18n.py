"""English and Traditional Chinese pages: the language chosen, the switch, the catalogues, labels and alt text."""

from __future__ import annotations

import io
import json
import re
import unicodedata
from gettext import GNUTranslations
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import render_template_string

from issuer import i18n
from tests.test_awards import AI_CERTIFICATE, issue_badges, stored
from tests.test_pages import HTML, issue_one

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "translations" / "zh_Hant" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
ZH = {"Accept-Language": "zh-HK,zh;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}


def catalogue():
    with PO.open("rb") as f:
        return read_po(f)


ENGLISH_MSGIDS = {m.id for m in catalogue() if m.id and isinstance(m.id, str)}


class Page(HTMLParser):
    """The page's lang, its visible text nodes, images and form fields with their labels."""

    def __init__(self, text: str):
        super().__init__()
        self.lang = None
        self.texts: list[str] = []
        self.images: list[dict] = []
        self.fields: list[dict] = []
        self.labelled: set[str] = set()
        self._skip = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "img":
            self.images.append(a)
        elif tag in ("input", "textarea", "select") and a.get("type") not in ("hidden", "submit", "button"):
            self.fields.append(a)
        elif tag == "label" and a.get("for"):
            self.labelled.add(a["for"])
        elif tag in ("style", "script"):
            self._skip += 1
        for name in ("alt", "aria-label"):
            if a.get(name):
                self.texts.append(a[name].strip())

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(data.strip())


@pytest.fixture
def pages(client, issue_token) -> dict[str, tuple[str, str]]:
    """Every page for people: path, its key English words and their Chinese."""
    badge = issue_one(client, issue_token)
    return {
        "/": ("Browse the catalogue", "瀏覽課程目錄"),
        "/catalogue": ("Filter", "篩選"),
        "/achievements/AI-101": ("Criteria", "評核準則"),
        f"/credentials/{badge['id']}": ("Add to LinkedIn profile", "加到 LinkedIn 個人檔案"),
        "/verify": ("Verify a badge", "驗證徽章"),
        "/awards/apply": ("Apply for a Certificate or Diploma", "申請證書或文憑"),
        "/no/such/page": ("Not Found", "找不到頁面"),
    }


def get(client, path: str, headers: dict):
    return client.get(path, headers={**HTML, **headers})


def test_a_hong_kong_browser_gets_the_chinese_page_marked_zh_hant(client):
    text = get(client, "/", ZH).get_data(as_text=True)
    assert Page(text).lang == "zh-Hant"
    assert "瀏覽課程目錄" in text and "Browse the catalogue" not in text


def test_an_english_browser_and_a_client_without_preference_get_english(client):
    for headers in (EN, {}):
        text = get(client, "/", headers).get_data(as_text=True)
        assert Page(text).lang == "en"
        assert "Browse the catalogue" in text and "瀏覽課程目錄" not in text


@pytest.mark.parametrize(("header", "language"), [
    ("zh", "zh-Hant"), ("zh-HK", "zh-Hant"), ("zh-TW", "zh-Hant"), ("zh-Hant", "zh-Hant"), ("zh-Hant-HK", "zh-Hant"),
    ("en-US", "en"), ("fr, zh-HK;q=0.5", "zh-Hant"), ("zh-CN", "en"), ("de", "en"), ("en;q=0.9, zh-HK", "zh-Hant"),
])
def test_accept_language_picks_the_first_language_we_have(app, header, language):
    with app.test_request_context("/", headers={"Accept-Language": header}):
        assert i18n.current_language() == language


def test_the_switch_sets_a_cookie_that_wins_over_accept_language(client):
    switched = get(client, "/verify?lang=zh-Hant", EN)
    assert Page(switched.get_data(as_text=True)).lang == "zh-Hant"
    assert "lang=zh-Hant" in switched.headers["Set-Cookie"]
    later = get(client, "/catalogue", EN).get_data(as_text=True)  # the cookie, not the header, decides
    assert Page(later).lang == "zh-Hant" and "篩選" in later
    back = get(client, "/catalogue?lang=en", ZH).get_data(as_text=True)
    assert Page(back).lang == "en" and "Filter" in back


def test_an_unknown_lang_value_is_ignored(client):
    response = get(client, "/?lang=xx", ZH)
    assert Page(response.get_data(as_text=True)).lang == "zh-Hant"
    assert "Set-Cookie" not in response.headers


def test_every_page_shows_a_visible_switch_to_the_same_page(client):
    page = get(client, "/catalogue?theme=artificial-intelligence", EN).get_data(as_text=True)
    assert re.search(r'<a href="/catalogue\?theme=artificial-intelligence&amp;lang=zh-Hant" lang="zh-Hant"', page)
    assert ">繁體中文</a>" in page and ">English</a>" in page


def test_pages_vary_on_accept_language(client):
    assert "Accept-Language" in get(client, "/", EN).headers["Vary"]


@pytest.mark.parametrize("language", ["en", "zh-Hant"])
def test_every_page_renders_in_the_language_with_alt_text_and_labels(client, pages, language):
    for path, (english, chinese) in pages.items():
        response = get(client, path, ZH if language == "zh-Hant" else EN)
        assert response.status_code == (404 if path == "/no/such/page" else 200), path
        text = response.get_data(as_text=True)
        page = Page(text)
        assert page.lang == language, path
        assert (chinese if language == "zh-Hant" else english) in text, path
        assert all(image.get("alt", "").strip() for image in page.images), path
        for field in page.fields:
            assert field.get("id") in page.labelled, (path, field)
        if language == "zh-Hant":
            left = [t for t in page.texts if t in ENGLISH_MSGIDS]
            assert not left, (path, left)


def test_the_verify_page_explains_checks_in_chinese(client, issue_token):
    (badge,) = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE[:1]))
    tampered = json.dumps(badge, ensure_ascii=False).replace('"creditsEarned": 6', '"creditsEarned": 9')
    page = client.post("/verify?lang=zh-Hant", data={"credential": tampered}).get_data(as_text=True)
    assert "<strong>簽署</strong>: 未通過。" in page
    assert "頒發機構的數碼簽署與內容相符" in page
    good = client.post("/verify?lang=zh-Hant", data={"file": (io.BytesIO(json.dumps(badge).encode()), "b.json")},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert "真確：此徽章通過驗證" in good


def test_the_credential_page_puts_the_chinese_name_first_in_chinese(client, issue_token):
    badge = issue_one(client, issue_token)
    text = get(client, f"/credentials/{badge['id']}", ZH).get_data(as_text=True)
    h1 = re.search(r"<h1>(.*?)</h1>", text, re.S).group(1)
    assert not h1.startswith("<span") and '<span class="other" lang="en">' in h1
    assert 'data-state="passed"' in text and "通過" in text  # states stay machine-readable, words translated


def test_everything_a_template_writes_is_nfc(app):
    decomposed = "Cafe\u0301 陳大文"
    with app.test_request_context("/"):
        assert render_template_string("{{ name }}", name=decomposed) == unicodedata.normalize("NFC", decomposed)


def test_the_committed_mo_is_the_compiled_po():
    compiled = io.BytesIO()
    write_mo(compiled, catalogue())
    compiled.seek(0)
    with MO.open("rb") as f:
        assert GNUTranslations(f)._catalog == GNUTranslations(compiled)._catalog


def test_every_marked_string_is_translated_with_its_placeholders_in_nfc():
    keywords = {**DEFAULT_KEYWORDS, "_l": None}
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    marked = {found[2] for found in extract_from_dir(str(ROOT), method_map, options_map, keywords=keywords)}
    po = catalogue()
    translated = {m.id: m.string for m in po if m.id and "fuzzy" not in m.flags}
    assert marked == set(translated)
    for msgid, msgstr in translated.items():
        assert msgstr and msgstr != msgid, msgid
        assert unicodedata.is_normalized("NFC", msgstr), msgid
        assert sorted(re.findall(r"%\(\w+\)s", msgid)) == sorted(re.findall(r"%\(\w+\)s", msgstr)), msgid
