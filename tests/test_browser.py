"""The pages for people in a real browser: headless Chromium (Debian's) driven by Playwright, against the
application served over HTTP on 127.0.0.1, with axe-core checking accessibility.

Every page is kept as a screenshot in tests/artifacts/screenshots/ and its axe-core report in
tests/artifacts/axe/. Nothing leaves the machine: every request not to 127.0.0.1 is aborted. Without
Chromium or axe-core these tests skip, saying why; under CI=true they fail instead (tests/browser_support.py).
"""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from PIL import Image

from issuer import baking
from tests.browser_support import (
    AXE_JS,
    assert_accessible,
    chromium,
    only_local,
    require,
    screenshot,
    start_live_server,
)
from tests.test_awards import AI_CERTIFICATE

HOLDER_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
CERTIFICATE_TITLE = "Certificate in Professional Practice (Artificial Intelligence)"


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def live(browser, tmp_path_factory):
    """The application on a free port of 127.0.0.1; its base URL (so every credential URL and QR code)
    points at that server."""
    server, stop = start_live_server(tmp_path_factory.mktemp("live"))
    yield server
    stop()


@pytest.fixture
def page(browser, live):
    """A fresh English-speaking browser context (no cookies) that may reach 127.0.0.1 only."""
    context = browser.new_context(locale="en-GB", accept_downloads=True,
                                  viewport={"width": 1024, "height": 768})
    context.set_default_timeout(15_000)
    blocked: list[str] = []
    context.route("**/*", only_local(blocked))
    tab = context.new_page()
    tab.blocked = blocked  # the tests assert that their page asked for nothing outside
    yield tab
    context.close()


@pytest.fixture
def axe():
    require(AXE_JS.exists(), f"axe-core not found at {AXE_JS}: npm ci --prefix tests/interop (run by `make test`)")


@pytest.fixture(scope="module")
def badge(live):
    """One badge, for the pages that only need to show one."""
    return live.issue("AI-101", "shown@example.com", did=HOLDER_DID, awarded_on="2024-03-10")


@pytest.fixture(scope="module")
def certificate_badges(live):
    """Badges enough for a Certificate in Professional Practice (Artificial Intelligence), all issued to one
    email: 36 credits in Artificial Intelligence, 30 of them at QF level 4 or above."""
    email = "certificate@example.com"
    return email, [live.issue(code, email, awarded_on=day) for code, day in AI_CERTIFICATE]


# --- helpers --------------------------------------------------------------------------------------------

def translated(live, msgid: str, language: str = "zh-Hant") -> str:
    """The page's words for a msgid in a language, from the project's own catalogue."""
    from flask_babel import gettext

    with live.app.test_request_context(f"/?lang={language}"):
        words = gettext(msgid)
    assert words != msgid, f"{msgid!r} has no {language} translation"
    return words


def names(live, code: str) -> dict[str, str]:
    return next(a["name"] for a in live.get("/api/v1/achievements").json()["achievements"] if a["code"] == code)


def lang_of(page) -> str:
    return page.locator("html").get_attribute("lang")


def headings(page, level: str) -> list[str]:
    return [text.strip() for text in page.locator(level).all_inner_texts()]


def submit(page, selector: str = "form button[type=submit]") -> None:
    with page.expect_navigation():
        page.locator(selector).click()


def save(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def verdict_heading(page) -> str:
    return page.locator("main h2").first.inner_text()


def decode_qr(png: bytes) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def pdf_credentials(pdf: bytes) -> list[dict]:
    """Every attachment of a PDF that is a JSON object."""
    from pypdf import PdfReader

    found = []
    for contents in PdfReader(io.BytesIO(pdf)).attachments.values():
        for data in contents:
            try:
                document = json.loads(data)
            except ValueError:
                continue
            if isinstance(document, dict):
                found.append(document)
    return found


# --- the credential page in each language ---------------------------------------------------------------

def test_the_credential_page_reads_in_english_and_switches_to_traditional_chinese(page, live, badge):
    name = names(live, "AI-101")
    page.goto(badge["url"])
    assert lang_of(page) == "en"
    assert page.locator("h1").inner_text().startswith(name["en"])
    assert {"Verification", "Downloads"} <= set(headings(page, "h2"))
    assert page.locator("#verdict").get_attribute("class") == "verdict passed"

    # The visible switch, named in its own language.
    switch = page.locator('nav.languages a[hreflang="zh-Hant"]')
    assert switch.inner_text() == "繁體中文" and switch.get_attribute("lang") == "zh-Hant"
    with page.expect_navigation():
        switch.click()
    assert urlsplit(page.url).query == "lang=zh-Hant"
    assert lang_of(page) == "zh-Hant"
    assert page.locator("h1").inner_text().startswith(name["zh-Hant"])  # the Chinese name first
    assert {translated(live, "Verification"), translated(live, "Downloads")} <= set(headings(page, "h2"))
    assert page.locator('nav.languages a[aria-current="true"]').get_attribute("hreflang") == "zh-Hant"
    screenshot(page, "credential-zh-Hant")

    # The choice is remembered for the next page, and the switch leads back.
    page.goto(badge["url"])
    assert lang_of(page) == "zh-Hant"
    with page.expect_navigation():
        page.locator('nav.languages a[hreflang="en"]').click()
    assert lang_of(page) == "en" and "Downloads" in headings(page, "h2")
    screenshot(page, "credential-en")

    # A new visitor sent straight to ?lang=zh-Hant.
    page.context.clear_cookies()
    page.goto(f"{badge['url']}?lang=zh-Hant")
    assert lang_of(page) == "zh-Hant" and translated(live, "Downloads") in headings(page, "h2")
    assert not page.blocked


# --- downloads ------------------------------------------------------------------------------------------

def _kind(href: str) -> str:
    path = urlsplit(href).path
    for suffix in ("/qr.png", "/qr.svg", ".json", ".jwt", ".png", ".svg", ".pdf"):
        if path.endswith(suffix):
            return suffix
    raise AssertionError(f"the downloads list has a link this test has no check for: {href}")


def check_download(kind: str, body: bytes, badge: dict, stored: str) -> None:
    """What arrived is what the link promises, and carries this credential."""
    if kind == ".json":
        assert body.decode("utf-8") == stored
    elif kind == ".jwt":
        token = body.decode("ascii").strip()
        assert token == badge["jwt"]
        parts = token.split(".")
        assert len(parts) == 3 and all(parts)
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        credential = payload.get("vc", payload)
        assert credential["id"] == badge["url"] and payload.get("jti", badge["url"]) == badge["url"]
    elif kind == ".png":
        baked = baking.unbake_png(body)
        assert baked.kind == "ob3" and baked.payload == stored.strip()
    elif kind == ".svg":
        baked = baking.unbake_svg(body)
        assert baked.kind == "ob3" and baked.payload == stored.strip()
    elif kind == "/qr.png":
        assert body.startswith(b"\x89PNG\r\n\x1a\n")
        assert decode_qr(body) == [badge["url"]]
    elif kind == "/qr.svg":
        assert ET.fromstring(body).tag == "{http://www.w3.org/2000/svg}svg"
    elif kind == ".pdf":
        assert body.startswith(b"%PDF-")
        assert json.loads(stored) in pdf_credentials(body), "no attachment of the PDF is this credential"


def check_linkedin(href: str, badge: dict) -> None:
    """LinkedIn is outside: the link is read, never followed."""
    assert href.startswith("https://www.linkedin.com/profile/add?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}
    assert params["name"] == badge["credential"]["credentialSubject"]["achievement"]["name"]
    assert params["organizationName"] == badge["credential"]["issuer"]["name"]
    assert params["certUrl"] == badge["url"]


@pytest.mark.parametrize("language", ["en", "zh-Hant"])
def test_every_download_on_the_credential_page_arrives_and_carries_the_credential(page, live, language):
    badge = live.issue("AI-101", f"downloads-{language}@example.com", did=HOLDER_DID, awarded_on="2024-03-10")
    stored = live.stored(badge["id"])
    page.goto(f"{badge['url']}?lang={language}")
    links = page.locator("ul.downloads a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    base = f"/credentials/{badge['id']}"
    for expected in (".json", ".jwt", ".png", ".svg", "/qr.png", "/qr.svg"):
        assert any(urlsplit(href).path == base + expected for href in hrefs), (expected, hrefs)
    assert any(href.startswith("https://www.linkedin.com/") for href in hrefs)

    checked = []
    for index, href in enumerate(hrefs):
        if href.startswith("https://www.linkedin.com/"):
            check_linkedin(href, badge)
            continue
        kind = _kind(href)
        with page.expect_download() as arrival:
            links.nth(index).click()
        download = arrival.value
        assert download.failure() is None, (href, download.failure())
        assert urlsplit(download.url).path == urlsplit(href).path
        suffix = {"/qr.png": "-qr.png", "/qr.svg": "-qr.svg"}.get(kind, kind)
        assert download.suggested_filename.endswith(suffix), (href, download.suggested_filename)
        check_download(kind, Path(download.path()).read_bytes(), badge, stored)
        checked.append(kind)
    assert len(checked) == len(hrefs) - 1
    assert page.url.startswith(badge["url"])  # still on the page: nothing navigated away
    assert not page.blocked


def test_the_pdf_download_carries_the_signed_credential_and_verifies_on_the_verify_page(page, live, tmp_path):
    badge = live.issue("AI-102", "pdf@example.com", awarded_on="2024-05-10")
    stored = live.stored(badge["id"])
    page.goto(badge["url"])
    link = page.locator(f'ul.downloads a[href$="/credentials/{badge["id"]}.pdf"]')
    assert link.count() == 1, "the credential page has no PDF download (/credentials/<id>.pdf)"
    with page.expect_download() as arrival:
        link.click()
    pdf = Path(arrival.value.path()).read_bytes()
    check_download(".pdf", pdf, badge, stored)

    page.goto(f"{live.url}/verify")
    page.set_input_files("#file", save(tmp_path, "badge.pdf", pdf))
    submit(page)
    assert "Genuine: this badge verifies" in verdict_heading(page)
    screenshot(page, "verify-pdf")


# --- the verify page ------------------------------------------------------------------------------------

def test_the_verify_page_verifies_a_good_badge_explains_a_tampered_one_and_reads_a_baked_png(page, live, tmp_path):
    badge = live.issue("AI-101", "verify@example.com", awarded_on="2024-03-10")
    stored = live.stored(badge["id"])
    page.goto(f"{live.url}/verify")
    assert page.locator("h1").inner_text() == "Verify a badge"
    screenshot(page, "verify")

    page.locator("#credential").fill(stored)
    submit(page)
    assert verdict_heading(page) == "✔ Genuine: this badge verifies"
    assert "failed." not in page.locator("main").inner_text()
    screenshot(page, "verify-genuine")

    document = json.loads(stored)
    name = document["credentialSubject"]["achievement"]["name"]
    document["credentialSubject"]["achievement"]["name"] = name[:-1] + ("X" if name[-1] != "X" else "Y")
    page.locator("#credential").fill(json.dumps(document, ensure_ascii=False, indent=2))
    submit(page)
    assert verdict_heading(page) == "✘ Not verified"
    signature = page.locator("li", has=page.locator("strong", has_text="Signature"))
    assert "Signature: failed." in signature.inner_text()
    assert "digital signature matches the content" in signature.inner_text()  # what the check means
    screenshot(page, "verify-tampered")

    page.set_input_files("#file", save(tmp_path, "badge.png", live.get(f"/credentials/{badge['id']}.png").content))
    submit(page)
    assert verdict_heading(page) == "✔ Genuine: this badge verifies"
    assert not page.blocked


# --- the apply page -------------------------------------------------------------------------------------

def test_a_learner_checks_and_claims_a_certificate_on_the_apply_page(page, live, certificate_badges, tmp_path):
    email, badges = certificate_badges
    files = [save(tmp_path, f"badge-{i}.json", live.stored(b["id"])) for i, b in enumerate(badges)]
    page.goto(f"{live.url}/awards/apply")
    screenshot(page, "apply")

    page.set_input_files("#credentials", files)
    page.locator("#email").fill(email)
    submit(page, 'button[name="action"][value="evaluate"]')
    assert verdict_heading(page).startswith(f"✔ You qualify for: {CERTIFICATE_TITLE}")
    assert page.locator("table tr").count() == len(badges) + 1
    screenshot(page, "apply-eligible")

    # The answer is a new page that never writes the learner's address back (issue #9): the email and the
    # files are given again.
    assert page.locator("#email").input_value() == ""
    assert email not in page.content()
    page.locator("#email").fill(email)
    page.set_input_files("#credentials", files)
    submit(page, 'button[name="action"][value="claim"]')
    award = page.locator("p", has_text="Your award:").locator("a").first
    href = award.get_attribute("href")
    assert href.startswith(f"{live.url}/credentials/")
    screenshot(page, "apply-claimed")

    with page.expect_navigation():
        award.click()
    assert page.url == href
    assert CERTIFICATE_TITLE in page.locator("h1").inner_text()
    assert page.locator("#verdict").get_attribute("class") == "verdict passed"
    assert page.locator('li[data-check="proof"]').get_attribute("data-state") == "passed"
    screenshot(page, "award")
    assert not page.blocked


# --- the keyboard ---------------------------------------------------------------------------------------

_FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const style = getComputedStyle(el);
  return {tag: el.tagName.toLowerCase(), id: el.id, href: el.getAttribute('href'), hreflang: el.hreflang,
          type: el.type || null, value: el.value === undefined ? null : String(el.value),
          inSwitch: !!el.closest('nav.languages'), inDownloads: !!el.closest('ul.downloads'),
          outline: style.outlineStyle === 'none' || parseFloat(style.outlineWidth) === 0 ? 'none'
                   : `${style.outlineStyle} ${style.outlineWidth} ${style.outlineColor}`,
          shadow: style.boxShadow};
}"""


def tab_through(page, limit: int = 80) -> list[dict]:
    """Press Tab from the top of the page until focus leaves it; every element focused on the way."""
    page.locator("body").evaluate("body => { window.scrollTo(0, 0); document.activeElement?.blur(); }")
    focused = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        element = page.evaluate(_FOCUSED)
        if element is None or (focused and element == focused[0]):
            break
        focused.append(element)
    return focused


def without_focus_indicator(focused: list[dict]) -> list[dict]:
    return [f for f in focused if f["outline"] == "none" and f["shadow"] in ("none", "")]


def test_the_keyboard_reaches_the_switch_the_main_links_and_every_download_with_a_visible_focus(page, live, badge):
    page.goto(f"{live.url}/")
    focused = tab_through(page)
    assert focused and focused[0]["inSwitch"], focused[:1]  # the switch comes first
    assert {f["hreflang"] for f in focused if f["inSwitch"]} == {"en", "zh-Hant"}
    reached = {f["href"] for f in focused}
    assert {"/catalogue", "/verify", "/awards/apply", "/achievements/AI-101"} <= reached
    assert not without_focus_indicator(focused), without_focus_indicator(focused)

    page.goto(badge["url"])
    focused = tab_through(page)
    downloads = [page.locator("ul.downloads a").nth(i).get_attribute("href")
                 for i in range(page.locator("ul.downloads a").count())]
    assert [f["href"] for f in focused if f["inDownloads"]] == downloads  # all of them, in reading order
    assert any(f["inSwitch"] for f in focused)
    assert not without_focus_indicator(focused), without_focus_indicator(focused)

    # Forms: every field and button in order, then a switch of language with Enter alone.
    page.goto(f"{live.url}/verify")
    focused = tab_through(page)
    fields = [f["id"] or f["type"] for f in focused if f["tag"] in ("input", "textarea", "button")]
    assert fields == ["file", "credential", "email", "submit"], fields
    assert not without_focus_indicator(focused), without_focus_indicator(focused)
    page.locator("body").evaluate("body => document.activeElement?.blur()")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.hreflang === 'zh-Hant'"):
            break
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert lang_of(page) == "zh-Hant"


# --- axe-core on every page -----------------------------------------------------------------------------

def _verify_with(page, live, text: str) -> None:
    page.goto(f"{live.url}/verify")
    page.locator("#credential").fill(text)
    submit(page)


def _apply_with(page, live, certificate_badges, tmp_path: Path) -> None:
    email, badges = certificate_badges
    page.goto(f"{live.url}/awards/apply")
    page.set_input_files("#credentials", [save(tmp_path, f"b{i}.json", live.stored(b["id"]))
                                          for i, b in enumerate(badges)])
    page.locator("#email").fill(email)
    submit(page, 'button[name="action"][value="evaluate"]')


def _tampered(live, badge) -> str:
    document = json.loads(live.stored(badge["id"]))
    document["credentialSubject"]["achievement"]["name"] += "!"
    return json.dumps(document)


PAGES = {
    "home": lambda page, live, **_: page.goto(f"{live.url}/"),
    "home-zh-Hant": lambda page, live, **_: page.goto(f"{live.url}/?lang=zh-Hant"),
    "catalogue": lambda page, live, **_: page.goto(f"{live.url}/catalogue"),
    "catalogue-filtered": lambda page, live, **_: page.goto(f"{live.url}/catalogue?theme=artificial-intelligence"),
    "achievement": lambda page, live, **_: page.goto(f"{live.url}/achievements/AI-101"),
    "issuer": lambda page, live, **_: page.goto(f"{live.url}/issuer"),
    "credential": lambda page, live, badge, **_: page.goto(badge["url"]),
    "credential-zh-Hant": lambda page, live, badge, **_: page.goto(f"{badge['url']}?lang=zh-Hant"),
    "verify": lambda page, live, **_: page.goto(f"{live.url}/verify"),
    "verify-result": lambda page, live, badge, **_: _verify_with(page, live, live.stored(badge["id"])),
    "verify-tampered": lambda page, live, badge, **_: _verify_with(page, live, _tampered(live, badge)),
    "verify-error": lambda page, live, **_: _verify_with(page, live, "not a badge"),
    "apply": lambda page, live, **_: page.goto(f"{live.url}/awards/apply"),
    "apply-report": lambda page, live, certificate_badges, tmp_path, **_: _apply_with(
        page, live, certificate_badges, tmp_path),
    "not-found": lambda page, live, **_: page.goto(f"{live.url}/no/such/page"),
}


@pytest.mark.parametrize("name", PAGES)
def test_axe_core_finds_no_serious_or_critical_violation(page, live, axe, badge, certificate_badges, tmp_path, name):
    response = PAGES[name](page, live, badge=badge, certificate_badges=certificate_badges, tmp_path=tmp_path)
    if response is not None:  # page.goto; a form submission has already been checked by its navigation
        assert response.status == (404 if name == "not-found" else 200), (name, response.status)
        assert response.headers.get("content-type", "").startswith("text/html"), (name, response.headers)
    screenshot(page, name)
    assert_accessible(page, name)
    assert not page.blocked
