"""The public credential page and its QR codes, through Flask's test client."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from PIL import Image

from issuer import qr
from issuer.db import get_session
from issuer.issuing import serialise
from issuer.models import Award, Credential
from tests.test_awards import AI_CERTIFICATE, LEARNER, issue_badges, stored

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
HOLDER_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


class Page(HTMLParser):
    """What a test reads from a page: meta tags, links, images and the verification checklist."""

    def __init__(self, text: str):
        super().__init__()
        self.meta: dict[str, str] = {}
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.checks: dict[str, str] = {}
        self.by_id: dict[str, dict[str, str]] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        if "id" in attributes:
            self.by_id[attributes["id"]] = attributes
        if tag == "meta" and "property" in attributes:
            self.meta[attributes["property"]] = attributes.get("content", "")
        elif tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "li" and "data-check" in attributes:
            self.checks[attributes["data-check"]] = attributes["data-state"]


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def issue_one(client, token, **recipient):
    body = {"achievement": "AI-101", "awarded_on": "2024-03-10",
            "recipient": {"email": "learner@example.com", "name": "Chan Tai Man", **recipient}}
    response = client.post("/api/v1/credentials", json=body, headers=auth(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def page_of(client, public_id) -> tuple[str, Page]:
    response = client.get(f"/credentials/{public_id}", headers=HTML)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    text = response.get_data(as_text=True)
    return text, Page(text)


def decode_qr(png: bytes) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def stored_row(app, model, public_id):
    with app.app_context():
        return get_session().get(model, public_id)


def update_row(app, model, public_id, **values):
    with app.app_context():
        session = get_session()
        row = session.get(model, public_id)
        for name, value in values.items():
            setattr(row, name, value)
        session.commit()


@pytest.fixture
def award(client, issue_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    response = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": badges})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# --- QR codes ----------------------------------------------------------------------------------------

def test_issuing_a_badge_stores_its_qr_codes_in_the_same_row(app, client, issue_token):
    badge = issue_one(client, issue_token)
    row = stored_row(app, Credential, badge["id"])
    assert row.qr_png is not None and row.qr_png.startswith(b"\x89PNG\r\n\x1a\n")
    assert row.qr_svg is not None and "<svg" in row.qr_svg
    assert row.qr_png == qr.qr_png(badge["url"]) and row.qr_svg == qr.qr_svg(badge["url"])


def test_claiming_an_award_stores_its_qr_codes_too(app, client, award):
    row = stored_row(app, Award, award["id"])
    assert row.qr_png is not None and row.qr_svg is not None
    assert decode_qr(row.qr_png) == [row.credential_url]


def test_qr_routes_serve_the_stored_bytes_cached_for_a_year(app, client, issue_token):
    badge = issue_one(client, issue_token)
    row = stored_row(app, Credential, badge["id"])
    png = client.get(f"/credentials/{badge['id']}/qr.png")
    svg = client.get(f"/credentials/{badge['id']}/qr.svg")
    assert png.status_code == svg.status_code == 200
    assert png.mimetype == "image/png" and png.data == row.qr_png
    assert svg.mimetype == "image/svg+xml" and svg.get_data(as_text=True) == row.qr_svg
    for response in (png, svg):
        cache = response.headers["Cache-Control"]
        assert "public" in cache and "max-age=31536000" in cache
    again = client.get(f"/credentials/{badge['id']}/qr.png", headers={"If-None-Match": png.headers["ETag"]})
    assert again.status_code == 304


def test_the_qr_png_decodes_to_the_credential_url(client, issue_token):
    badge = issue_one(client, issue_token)
    png = client.get(f"/credentials/{badge['id']}/qr.png").data
    assert decode_qr(png) == [badge["url"]]
    assert badge["url"] == badge["credential"]["id"]


def test_the_qr_svg_is_a_well_formed_scalable_svg_naming_the_url(client, issue_token):
    badge = issue_one(client, issue_token)
    root = ET.fromstring(client.get(f"/credentials/{badge['id']}/qr.svg").data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") and root.get("width") == root.get("height")
    assert root.find("{http://www.w3.org/2000/svg}title").text == f"QR code for {badge['url']}"
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


def test_qr_codes_are_the_same_bytes_every_time():
    url = "https://badges.example.edu.hk/credentials/AbCdEfGhIjKlMnOpQrStUv"
    assert qr.qr_png(url) == qr.qr_png(url)
    assert qr.qr_svg(url) == qr.qr_svg(url)
    assert decode_qr(qr.qr_png(url)) == [url]


def test_qr_of_an_unknown_credential_is_a_404(client):
    assert client.get("/credentials/no-such-id/qr.png").status_code == 404
    assert client.get("/credentials/no-such-id/qr.svg").status_code == 404


def test_a_row_stored_before_qr_codes_gets_them_on_first_request_and_keeps_them(
        app, client, issue_token, monkeypatch):
    badge = issue_one(client, issue_token)
    update_row(app, Credential, badge["id"], qr_png=None, qr_svg=None)
    first = client.get(f"/credentials/{badge['id']}/qr.png")
    assert decode_qr(first.data) == [badge["url"]]
    row = stored_row(app, Credential, badge["id"])
    assert row.qr_png == first.data and row.qr_svg is not None

    def never(url):
        raise AssertionError("a QR code was drawn again instead of served from the database")

    monkeypatch.setattr(qr, "_symbol", never)
    assert client.get(f"/credentials/{badge['id']}/qr.png").data == first.data
    assert client.get(f"/credentials/{badge['id']}/qr.svg").get_data(as_text=True) == row.qr_svg
    assert client.get(f"/credentials/{badge['id']}", headers=HTML).status_code == 200


# --- the page ----------------------------------------------------------------------------------------

def test_the_page_shows_the_badge_its_issuer_recipient_date_and_catalogue_facts(client, issue_token):
    badge = issue_one(client, issue_token)
    entry = next(a for a in client.get("/api/v1/achievements").get_json()["achievements"] if a["code"] == "AI-101")
    text, page = page_of(client, badge["id"])
    assert entry["name"]["en"] in text and entry["name"]["zh-Hant"] in text
    assert badge["credential"]["issuer"]["name"] in text
    assert "Chan Tai Man" in text
    assert "2024-03-10" in text
    assert entry["theme"]["en"] in text and entry["area"] in text
    assert f"<td>{entry['credits']:g}</td>" in text and f"<td>{entry['qf_level']}</td>" in text
    assert entry["cef_code"] and entry["cef_code"] in text
    badge_image = next(i for i in page.images if i["src"] == "/achievements/AI-101/image.svg")
    assert badge_image["alt"]
    assert all(image["alt"] for image in page.images)


def test_the_page_shows_the_verification_checklist_with_the_proof_passed(client, issue_token):
    badge = issue_one(client, issue_token)
    text, page = page_of(client, badge["id"])
    assert page.checks["proof"] == "passed"
    assert page.checks["key_provenance"] == "passed"
    assert page.checks["validity_window"] == "passed"
    assert page.checks["status"] in ("passed", "not checked")  # revocation checking comes with issue #5
    assert "recipient" not in page.checks
    assert "Verified" in text and "Not verified" not in text
    assert page.by_id["verdict"]["class"] == "verdict passed"
    assert "Checked by this issuer's verifier" in text and "(UTC)" in text


def test_a_tampered_stored_document_shows_the_failed_proof_check_not_an_error(app, client, issue_token):
    badge = issue_one(client, issue_token)
    document = json.loads(stored_row(app, Credential, badge["id"]).document)
    document["credentialSubject"]["achievement"]["name"] = "Doctor of Everything"
    update_row(app, Credential, badge["id"], document=serialise(document))
    text, page = page_of(client, badge["id"])
    assert page.checks["proof"] == "failed"
    assert "Not verified" in text and page.by_id["verdict"]["class"] == "verdict failed"


def test_an_unreadable_stored_document_still_renders_a_failed_checklist(app, client, issue_token):
    badge = issue_one(client, issue_token)
    update_row(app, Credential, badge["id"], document="{this is not JSON")
    text, page = page_of(client, badge["id"])
    assert page.checks["schema"] == "failed"
    assert page.checks["proof"] == "not checked"
    assert "Not verified" in text


def test_the_page_has_open_graph_tags_for_link_previews(client, issue_token):
    badge = issue_one(client, issue_token)
    _, page = page_of(client, badge["id"])
    achievement = badge["credential"]["credentialSubject"]["achievement"]
    assert page.meta["og:type"] == "website"
    assert page.meta["og:title"].startswith(achievement["name"])
    assert page.meta["og:url"] == badge["url"]
    assert page.meta["og:image"] == achievement["image"]["id"]
    assert page.meta["og:image"].endswith("/achievements/AI-101/image.png")
    assert achievement["name"] in page.meta["og:description"]


def test_the_linkedin_link_fills_in_the_certification(client, issue_token):
    badge = issue_one(client, issue_token)
    _, page = page_of(client, badge["id"])
    link = urlsplit(page.by_id["linkedin"]["href"])
    assert (link.scheme, link.netloc, link.path) == ("https", "www.linkedin.com", "/profile/add")
    params = {k: v[0] for k, v in parse_qs(link.query, strict_parsing=True).items()}
    assert params == {
        "startTask": "CERTIFICATION_NAME",
        "name": badge["credential"]["credentialSubject"]["achievement"]["name"],
        "organizationName": badge["credential"]["issuer"]["name"],
        "issueYear": "2024",
        "issueMonth": "3",
        "certUrl": badge["url"],
        "certId": badge["id"],
    }
    assert " " not in link.query and "/" not in link.query


def test_the_page_links_every_download_and_the_qr_with_its_url_as_text(client, issue_token):
    badge = issue_one(client, issue_token)
    text, page = page_of(client, badge["id"])
    base = f"/credentials/{badge['id']}"
    for href in (f"{base}.json", f"{base}.png", f"{base}.svg", f"{base}.pdf", f"{base}/qr.png", f"{base}/qr.svg"):
        assert href in page.links
    assert f"{base}.jwt" not in page.links  # no DID, so no VC-JWT was issued
    qr_image = next(i for i in page.images if i["src"] == f"{base}/qr.svg")
    assert badge["url"] in qr_image["alt"]
    assert f"<code>{badge['url']}</code>" in text


def test_a_badge_with_a_jwt_links_it(client, issue_token):
    badge = issue_one(client, issue_token, did=HOLDER_DID)
    _, page = page_of(client, badge["id"])
    assert f"/credentials/{badge['id']}.jwt" in page.links
    assert client.get(f"/credentials/{badge['id']}.jwt").get_data(as_text=True) == badge["jwt"]


def test_the_html_page_varies_on_accept_and_machines_still_get_the_stored_json(app, client, issue_token):
    badge = issue_one(client, issue_token)
    response = client.get(f"/credentials/{badge['id']}", headers=HTML)
    assert "Accept" in response.headers["Vary"]
    machine = client.get(f"/credentials/{badge['id']}", headers={"Accept": "application/vc+ld+json"})
    assert machine.get_data(as_text=True) == stored_row(app, Credential, badge["id"]).document


def test_an_award_page_lists_its_counted_badges_as_links_and_verifies(client, award):
    text, page = page_of(client, award["id"])
    counted = award["report"]["award"]["counted"]
    assert len(counted) == 4
    assert "Counted badges" in text
    for badge_id in counted:
        assert badge_id in page.links
    assert page.checks["proof"] == "passed"
    assert award["credential"]["credentialSubject"]["achievement"]["name"] in text
    assert "專業實踐證書" in text  # the award's zh-Hant title, from the achievement's `related`
    assert page.meta["og:url"] == award["credential"]["id"]
    assert page.meta["og:image"].endswith("/issuer/image.png")  # award achievements carry no image
    assert decode_qr(client.get(f"/credentials/{award['id']}/qr.png").data) == [award["credential"]["id"]]


def test_the_issuer_profile_is_a_page_for_people_and_json_ld_for_machines(client):
    page = client.get("/issuer", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "did:web:127.0.0.1%3A5000" in text and "/.well-known/did.json" in text and "/catalogue" in text
    assert "Accept" in page.headers["Vary"].split(", ")
    for accept in ("application/ld+json", "application/json", "*/*"):
        document = client.get("/issuer", headers={"Accept": accept})
        assert document.mimetype == "application/ld+json", accept
        assert document.get_json()["type"] == ["Profile"]
    chinese = client.get("/issuer?lang=zh-Hant", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'lang="zh-Hant"' in chinese


def test_the_page_offers_both_wallets_and_a_learner_gets_a_qr_code_and_pin(client, issue_token):
    badge = issue_one(client, issue_token)
    text, page = page_of(client, badge["id"])
    assert f'formaction="/credentials/{badge["id"]}/wallet-offer"' in text
    assert f'formaction="/credentials/{badge["id"]}/wallet-exchange"' in text
    assert '<label for="wallet-email">' in text
    wrong = client.post(f"/credentials/{badge['id']}/wallet-offer", data={"email": "someone@example.com"},
                        headers={"Accept": "text/html"})
    assert wrong.status_code == 403
    offered = client.post(f"/credentials/{badge['id']}/wallet-offer", data={"email": "learner@example.com"},
                          headers={"Accept": "text/html"})
    assert offered.status_code == 201 and offered.mimetype == "text/html"
    assert offered.headers["Cache-Control"] == "no-store"
    html = offered.get_data(as_text=True)
    pin = re.search(r'id="pin">(\d{6})<', html)
    assert pin, html
    assert "openid-credential-offer://?credential_offer_uri=" in html
    qr_url = re.search(r'<img src="([^"]+/qr\.svg)"', html).group(1)
    assert client.get(qr_url.replace("http://127.0.0.1:5000", "")).mimetype == "image/svg+xml"
    exchange = client.post(f"/credentials/{badge['id']}/wallet-exchange", data={"email": "learner@example.com"})
    assert exchange.status_code == 303 and "/exchanges/" in exchange.headers["Location"]


def test_a_revoked_badge_offers_no_wallet(client, issue_token, make_token):
    badge = issue_one(client, issue_token)
    client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth(make_token("revoke")),
                json={"reason": "issued in error", "category": "issued in error"})
    text, _ = page_of(client, badge["id"])
    assert "wallet-offer" not in text and "wallet-exchange" not in text
