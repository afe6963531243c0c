"""The pages for people: verify a badge, apply for an award, browse the catalogue."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

from tests.test_awards import AI_CERTIFICATE, LEARNER, issue_badges, stored


def test_the_verify_page_says_genuine_for_a_good_badge_and_explains_a_tampered_one(client, issue_token):
    assert "<label for=\"file\">" in client.get("/verify").get_data(as_text=True)
    (badge,) = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE[:1]))
    text = json.dumps(badge, ensure_ascii=False).encode("utf-8")
    good = client.post("/verify", data={"file": (io.BytesIO(text), "badge.json")},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert "Genuine" in good and "Signature</strong>:" in good
    tampered = text.replace(b'"creditsEarned": 6', b'"creditsEarned": 9')
    assert tampered != text
    bad = client.post("/verify", data={"credential": tampered.decode("utf-8")}).get_data(as_text=True)
    assert "Not verified" in bad and "<strong>Signature</strong>: failed." in bad


def test_the_verify_page_asks_for_something_to_verify(client):
    response = client.post("/verify", data={})
    assert response.status_code == 400
    assert "paste a credential or choose a file" in response.get_data(as_text=True)


def test_a_learner_checks_and_claims_a_certificate_on_the_apply_page(client, issue_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    files = [(io.BytesIO(json.dumps(b).encode()), f"badge{i}.json") for i, b in enumerate(badges)]
    checked = client.post("/awards/apply", data={"email": LEARNER, "action": "evaluate", "credentials": files},
                          content_type="multipart/form-data").get_data(as_text=True)
    assert "You qualify for: Certificate in Professional Practice (Artificial Intelligence)" in checked
    assert "not needed for this award" in checked
    files = [(io.BytesIO(json.dumps(b).encode()), f"badge{i}.json") for i, b in enumerate(badges)]
    uploaded = {b["id"]: json.dumps(b).encode() for b in badges}
    files = [(io.BytesIO(data), f"badge{i}.json") for i, data in enumerate(uploaded.values())]
    claimed = client.post("/awards/apply", data={"email": LEARNER, "action": "claim", "credentials": files},
                          content_type="multipart/form-data").get_data(as_text=True)
    assert "Your award:" in claimed and "/credentials/" in claimed
    award_url = re.search(r'href="(http://[^"]+/credentials/[^"./]+)"', claimed).group(1)
    award = json.loads(client.get(award_url + ".json").data)
    for evidence in award["evidence"]:  # the digest of each file as uploaded
        digest = hashlib.sha256(uploaded[evidence["id"]]).digest()
        assert evidence["digestSRI"] == "sha256-" + base64.b64encode(digest).decode()


def test_the_apply_page_explains_what_is_missing(client, issue_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE[:2]))
    files = [(io.BytesIO(json.dumps(b).encode()), f"badge{i}.json") for i, b in enumerate(badges)]
    page = client.post("/awards/apply", data={"email": LEARNER, "action": "evaluate", "credentials": files},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert "Not yet eligible" in page and "more credits" in page


def test_the_catalogue_filters_by_theme_area_and_level(client):
    everything = client.get("/catalogue").get_data(as_text=True)
    assert "AI-101" in everything and "TEA-101" in everything
    ai = client.get("/catalogue?theme=artificial-intelligence").get_data(as_text=True)
    assert "AI-101" in ai and "TEA-101" not in ai
    general = client.get("/catalogue?area=general").get_data(as_text=True)
    assert "TEA-101" in general and "AI-101" not in general
    level5 = client.get("/catalogue?qf=5").get_data(as_text=True)
    assert "AI-203" in level5 and "AI-101" not in level5
