"""The service end to end through Flask's test client: achievements, issuing, retrieval, verifying."""

from __future__ import annotations

import io
import json

import pytest

from issuer.schema import validate_credential

ISSUE = "/api/v1/credentials"


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def first_code(client) -> str:
    return client.get("/api/v1/achievements").get_json()["achievements"][0]["code"]


def issue(client, token, **overrides):
    body = {"achievement": first_code(client),
            "recipient": {"email": "Learner@Example.com ", "name": "Chan Tai Man"}}
    body.update(overrides)
    return client.post(ISSUE, json=body, headers=auth(token))


# --- achievements ------------------------------------------------------------------------------------

def test_demo_catalogue_is_listed_publicly_with_both_languages(client):
    achievements = client.get("/api/v1/achievements").get_json()["achievements"]
    assert len(achievements) >= 12
    assert len({a["theme"]["en"] for a in achievements}) >= 3
    assert {a["area"] for a in achievements} == {"professional", "general"}
    assert {3, 4, 5} <= {a["qf_level"] for a in achievements}
    assert {6, 9} <= {a["credits"] for a in achievements}
    assert all(a["name"]["en"] and a["name"]["zh-Hant"] for a in achievements)


def test_achievement_id_answers_json_for_machines_and_html_for_browsers(client):
    code = first_code(client)
    doc = client.get(f"/achievements/{code}", headers={"Accept": "application/json"}).get_json()
    assert doc["id"].endswith(f"/achievements/{code}")
    assert "Achievement" in doc["type"]
    page = client.get(f"/achievements/{code}", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.mimetype == "text/html"
    assert code in page.get_data(as_text=True)
    chinese = client.get(doc["related"][0]["id"], headers={"Accept": "application/json"}).get_json()
    assert chinese["inLanguage"] == "zh-Hant" and chinese["name"] == doc["related"][0]["name"]
    assert chinese["related"][0]["id"] == doc["id"]
    assert client.get(f"/achievements/{code}?lang=fr", headers={"Accept": "application/json"}).status_code == 404
    assert client.get(f"/achievements/{code}/image.png").data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in client.get(f"/achievements/{code}/image.svg").data


def new_entry(code="NEW-101"):
    return {
        "code": code,
        "name": {"en": "Prompt Engineering Basics", "zh-Hant": "提示工程基礎"},
        "description": {"en": "Writing prompts for language models.", "zh-Hant": "為語言模型撰寫提示。"},
        "criteria": {"en": "Complete all assignments.", "zh-Hant": "完成所有作業。"},
        "credits": 6, "contact_hours": 30,
        "theme": {"code": "artificial-intelligence", "en": "Artificial Intelligence", "zh-Hant": "人工智能"},
        "area": "professional", "qf_level": 4, "language": "en",
    }


def test_adding_an_achievement_needs_an_admin_token(client, make_token):
    assert client.post("/api/v1/achievements", json=new_entry()).status_code == 401
    assert client.post("/api/v1/achievements", json=new_entry(), headers=auth(make_token("issue"))).status_code == 403
    admin = make_token("admin")
    created = client.post("/api/v1/achievements", json=new_entry(), headers=auth(admin))
    assert created.status_code == 201, created.get_json()
    assert created.headers["Location"].endswith("/achievements/NEW-101")
    assert client.get("/achievements/NEW-101.json").get_json()["name"] == "Prompt Engineering Basics"
    again = client.post("/api/v1/achievements", json=new_entry(), headers=auth(admin))
    assert again.status_code == 409


def test_an_invalid_achievement_is_refused_naming_the_field(client, make_token):
    bad = new_entry("BAD-1")
    bad["credits"] = -3
    response = client.post("/api/v1/achievements", json=bad, headers=auth(make_token("admin")))
    assert response.status_code == 422
    assert "credits" in response.get_json()["detail"]
    assert client.get("/achievements/BAD-1").status_code == 404


# --- issuing -----------------------------------------------------------------------------------------

def test_issuing_returns_a_signed_badge_that_validates_and_is_served_byte_for_byte(client, issue_token):
    response = issue(client, issue_token)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == body["url"]
    credential = body["credential"]
    assert credential["id"] == body["url"]
    assert validate_credential(credential) == []
    assert credential["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    assert credential["issuer"]["id"].startswith("did:web:")
    assert credential["credentialSubject"]["achievement"]["achievementType"] == "MicroCredential"
    identifier = credential["credentialSubject"]["identifier"][0]
    assert identifier["hashed"] is True and "learner@example.com" not in json.dumps(credential).lower()
    assert "jwt" not in body  # no DID, no JWT

    stored = client.get(f"/credentials/{body['id']}.json")
    assert stored.mimetype == "application/vc+ld+json"
    for accept in ("application/vc+ld+json", "application/ld+json", "application/json"):
        negotiated = client.get(f"/credentials/{body['id']}", headers={"Accept": accept})
        assert negotiated.mimetype == accept
        assert negotiated.data == stored.data
    assert json.loads(stored.data) == credential
    page = client.get(f"/credentials/{body['id']}", headers={"Accept": "text/html"})
    assert page.mimetype == "text/html" and "Chan Tai Man" in page.get_data(as_text=True)
    assert client.get(f"/credentials/{body['id']}.jwt").status_code == 404


def test_recipients_with_a_did_also_get_a_vc_jwt(client, issue_token):
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    response = issue(client, issue_token, recipient={"email": "did@example.com", "did": did})
    assert response.status_code == 201
    body = response.get_json()
    assert body["credential"]["credentialSubject"]["id"] == did
    token = client.get(f"/credentials/{body['id']}.jwt")
    assert token.mimetype == "text/plain"
    assert token.get_data(as_text=True) == body["jwt"] and body["jwt"].count(".") == 2


def test_a_retry_returns_the_first_badge_never_a_second(client, issue_token):
    first = issue(client, issue_token, awarded_on="2024-03-01")
    again = issue(client, issue_token, awarded_on="2024-03-01")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert first.get_json()["credential"]["awardedDate"] == "2024-03-01T00:00:00Z"

    keyed = issue(client, issue_token, awarded_on="2024-04-01")
    headers = {**auth(issue_token), "Idempotency-Key": "retry-1"}
    body = {"achievement": first_code(client), "recipient": {"email": "k@example.com"}}
    one = client.post(ISSUE, json=body, headers=headers)
    two = client.post(ISSUE, json=body, headers=headers)
    assert (one.status_code, two.status_code) == (201, 200)
    assert one.get_json()["id"] == two.get_json()["id"] != keyed.get_json()["id"]
    conflict = client.post(ISSUE, json={**body, "result": "A"}, headers=headers)
    assert conflict.status_code == 409


@pytest.mark.parametrize("body, status, words", [
    ({"recipient": {"email": "a@example.com"}}, 400, "achievement"),
    ({"achievement": "NOPE-1", "recipient": {"email": "a@example.com"}}, 404, "unknown achievement"),
    ({"achievement": "@", "recipient": {"email": "not-an-email"}}, 400, "recipient.email"),
    ({"achievement": "@", "recipient": {"email": "a@example.com"}, "awarded_on": "2999-01-01"}, 400, "future"),
    ({"achievement": "@", "recipient": {"email": "a@example.com"}, "awarded_on": "yesterday"}, 400, "awarded_on"),
    ({"achievement": "@", "recipient": {"email": "a@example.com", "did": "not a did"}}, 400, "did"),
    ({"achievement": "@", "recipient": {"email": "a@example.com"}, "colour": "red"}, 400, "colour"),
    ({"achievement": "@", "recipient": "a@example.com"}, 400, "recipient"),
    ([1, 2], 400, "JSON object"),
])
def test_bad_issue_requests_get_a_4xx_naming_the_problem(client, issue_token, body, status, words):
    if isinstance(body, dict) and body.get("achievement") == "@":
        body["achievement"] = first_code(client)
    response = client.post(ISSUE, json=body, headers=auth(issue_token))
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert words in response.get_json()["detail"]


def test_malformed_bodies_and_tokens_are_4xx_never_500(client, issue_token, make_token):
    assert client.post(ISSUE, data="{", content_type="application/json", headers=auth(issue_token)).status_code == 400
    assert client.post(ISSUE, data=b"\xff\xfe", content_type="application/json",
                       headers=auth(issue_token)).status_code == 400
    assert client.post(ISSUE, data="x", content_type="text/plain", headers=auth(issue_token)).status_code == 415
    assert client.post(ISSUE, json={}).status_code == 401
    assert client.post(ISSUE, json={}, headers=auth("obi_wrong")).status_code == 401
    assert client.post(ISSUE, json={}, headers=auth(make_token("revoke"))).status_code == 403
    deep = "[" * 100000 + "]" * 100000
    assert client.post(ISSUE, data=deep, content_type="application/json",
                       headers=auth(issue_token)).status_code == 400
    assert client.get("/credentials/does-not-exist").status_code == 404


# --- identity and verification -----------------------------------------------------------------------

def test_did_document_and_jwks_publish_the_signing_keys(client, issue_token):
    did_doc = client.get("/.well-known/did.json").get_json()
    credential = issue(client, issue_token).get_json()["credential"]
    assert did_doc["id"] == credential["issuer"]["id"]
    method = credential["proof"]["verificationMethod"]
    assert method in [m["id"] for m in did_doc["verificationMethod"]]
    assert method in did_doc["assertionMethod"] or any(
        isinstance(m, dict) and m.get("id") == method for m in did_doc["assertionMethod"])
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.mimetype == "application/jwk-set+json"
    assert any(k.get("crv") == "P-256" for k in jwks.get_json()["keys"])


def test_an_issued_badge_verifies_and_any_tampering_fails(client, issue_token):
    body = issue(client, issue_token).get_json()
    stored = client.get(f"/credentials/{body['id']}.json").data
    result = client.post("/api/v1/verify", data=stored, content_type="application/json").get_json()
    assert result["verified"] is True, result
    assert result["format"] == "json-ld"
    assert {c["name"] for c in result["checks"]} >= {"proof", "schema"}

    with_email = client.post("/api/v1/verify?recipient_email=learner@example.com", data=stored,
                             content_type="application/json").get_json()
    assert with_email["verified"] is True
    wrong = client.post("/api/v1/verify?recipient_email=other@example.com", data=stored,
                        content_type="application/json").get_json()
    assert wrong["verified"] is False

    name = json.loads(stored)["name"].encode("utf-8")
    tampered = stored.replace(name, b"X" + name[1:], 1)
    assert tampered != stored
    result = client.post("/api/v1/verify", data=tampered, content_type="application/json").get_json()
    assert result["verified"] is False
    assert [c for c in result["checks"] if c["name"] == "proof"][0]["ok"] is False

    upload = client.post("/api/v1/verify", data={"file": (io.BytesIO(stored), "badge.json")},
                         content_type="multipart/form-data").get_json()
    assert upload["verified"] is True


def test_a_vc_jwt_verifies_as_text(client, issue_token):
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    body = issue(client, issue_token, recipient={"email": "j@example.com", "did": did}).get_json()
    result = client.post("/api/v1/verify", data=body["jwt"], content_type="text/plain").get_json()
    assert result["verified"] is True, result
    assert result["format"] == "vc-jwt"
    header, payload, signature = body["jwt"].split(".")
    broken = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    assert client.post("/api/v1/verify", data=broken, content_type="text/plain").get_json()["verified"] is False


def test_garbage_sent_to_verify_is_a_400(client):
    assert client.post("/api/v1/verify", data="hello", content_type="text/plain").status_code == 400
    assert client.post("/api/v1/verify", data="[1]", content_type="application/json").status_code == 400
    assert client.post("/api/v1/verify", data="", content_type="application/json").status_code == 400


@pytest.mark.parametrize("value, ok", [("2024-03-01", True), ("2024-03-01T10:00:00+08:00", True),
                                       ("2024-03-01garbage", False), ("20240301", False), ("2024-02-30", False)])
def test_award_dates_are_whole_iso_dates(client, issue_token, value, ok):
    response = issue(client, issue_token, awarded_on=value)
    assert (response.status_code == 201) is ok, response.get_json()
