"""Baked downloads and baked uploads through HTTP: /credentials/<id>.png and .svg carry the stored credential
byte for byte and verify when uploaded; the official baked fixtures verify; learners apply for an award by
uploading baked images (multipart)."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest

from issuer.baking import PNG_SIGNATURE, unbake_png, unbake_svg
from tests.test_awards import AI_CERTIFICATE, LEARNER, issue_badges

FIXTURES = "examples/ob_v3p0/1edtech-validator-fixtures"


def upload(client, data: bytes, name: str, email: str | None = None) -> dict:
    query = f"?recipient_email={email}" if email else ""
    response = client.post(f"/api/v1/verify{query}", data={"file": (io.BytesIO(data), name)},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("name", ["simple-json.png", "simple-json.svg"])
def test_official_baked_json_fixtures_verify_as_uploads(client, standards, name):
    """simple.json's baked twins have no validUntil and a key in the method URL: no clock or network needed."""
    result = upload(client, (standards / FIXTURES / name).read_bytes(), name)
    assert result["verified"] is True, result
    assert result["format"] == "json-ld"


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_a_downloaded_baked_badge_holds_the_stored_credential_byte_for_byte_and_verifies(
        client, issue_token, kind):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    stored = client.get(f"/credentials/{badge['id']}.json").data.decode("utf-8")
    response = client.get(f"/credentials/{badge['id']}.{kind}")
    assert response.status_code == 200
    assert response.mimetype == {"png": "image/png", "svg": "image/svg+xml"}[kind]
    assert response.headers["Content-Disposition"] == f'attachment; filename="badge-{badge["id"]}.{kind}"'
    found = unbake_png(response.data) if kind == "png" else unbake_svg(response.data)
    assert found.kind == "ob3" and found.payload == stored
    result = upload(client, response.data, f"badge.{kind}", email=LEARNER)
    assert result["verified"] is True, result
    assert {c["name"]: c["ok"] for c in result["checks"]}["recipient"] is True


def test_the_baked_png_is_the_achievement_image_plus_one_chunk(client, issue_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    original = client.get(f"/achievements/{AI_CERTIFICATE[0][0]}/image.png").data
    baked = client.get(f"/credentials/{badge['id']}.png").data
    ihdr_end = len(PNG_SIGNATURE) + 25
    assert baked[:ihdr_end] == original[:ihdr_end]
    length = int.from_bytes(baked[ihdr_end : ihdr_end + 4], "big")
    assert baked[ihdr_end + 4 : ihdr_end + 8] == b"iTXt"
    assert baked[ihdr_end + 12 + length :] == original[ihdr_end:]


def test_a_second_download_is_the_same_bytes_and_a_matching_etag_gets_304(client, issue_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    first = client.get(f"/credentials/{badge['id']}.svg")
    second = client.get(f"/credentials/{badge['id']}.svg")
    assert first.data == second.data
    assert first.headers["ETag"]
    again = client.get(f"/credentials/{badge['id']}.svg", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_unknown_ids_are_404(client, kind):
    assert client.get(f"/credentials/no-such-badge.{kind}").status_code == 404


def baked_badges(client, issued: list[dict], kind: str = "png") -> list[bytes]:
    return [client.get(f"/credentials/{badge['id']}.{kind}").data for badge in issued]


def test_a_learner_claims_a_certificate_by_uploading_baked_pngs(client, issue_token):
    images = baked_badges(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    files = [(io.BytesIO(data), f"badge-{i}.png") for i, data in enumerate(images)]
    response = client.post("/api/v1/awards", data={"email": LEARNER, "credentials": files},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["report"]["award"]["level"] == "Certificate"
    digests = {"sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode() for data in images}
    evidence = body["credential"]["evidence"]
    assert len(evidence) == 4 and {e["digestSRI"] for e in evidence} <= digests

    # the award downloads baked too, and that download verifies
    for kind in ("png", "svg"):
        award_image = client.get(f"/credentials/{body['id']}.{kind}")
        assert award_image.status_code == 200
        payload = (unbake_png if kind == "png" else unbake_svg)(award_image.data).payload
        assert payload == client.get(f"/credentials/{body['id']}.json").data.decode("utf-8")
        assert upload(client, award_image.data, f"award.{kind}", email=LEARNER)["verified"] is True


def test_evaluate_accepts_mixed_files_and_form_fields(client, issue_token):
    issued = issue_badges(client, issue_token, AI_CERTIFICATE)
    svgs = baked_badges(client, issued[:2], "svg")
    jsons = [client.get(f"/credentials/{badge['id']}.json").data for badge in issued[2:4]]
    png = baked_badges(client, issued[4:])[0]
    files = [(io.BytesIO(svgs[0]), "a.svg"), (io.BytesIO(svgs[1]), "b.svg"), (io.BytesIO(jsons[0]), "c.json"),
             (io.BytesIO(jsons[1]), "d.json"), (io.BytesIO(png), "e.png")]
    response = client.post("/api/v1/awards/evaluate", content_type="multipart/form-data", data={
        "email": LEARNER, "credentials": files, "target": "Certificate", "as_of": "2025-06-01"})
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["eligible"] is True and report["award"]["level"] == "Certificate"


@pytest.mark.parametrize(("data", "message"), [
    ({"credentials": [(io.BytesIO(b"{}"), "a.json")]}, "email"),
    ({"email": LEARNER, "badges": [(io.BytesIO(b"{}"), "a.json")]}, "unknown form field"),
    ({"email": LEARNER, "credentials": [(io.BytesIO(PNG_SIGNATURE + b"\x00"), "broken.png")]},
     "'broken.png': cannot read the baked PNG badge"),
    ({"presentation": "{not json", "credentials": [(io.BytesIO(b"{}"), "a.json")]}, "presentation must be a JSON"),
    ({"email": LEARNER, "presentation": "{}", "credentials": [(io.BytesIO(b"{}"), "a.json")]}, "not both"),
])
def test_bad_multipart_applications_are_400_with_the_problem_named(client, data, message):
    response = client.post("/api/v1/awards", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert message in response.get_json()["detail"]


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_a_programme_award_without_a_qf_level_gets_a_plain_picture_with_its_title(app, kind):
    from issuer.models import Award
    from issuer.web.downloads import award_badge, baked

    title = {"en": "Programme in Data Science", "zh-Hant": "數據科學課程"}
    row = Award(id=f"programme-{kind}", level="programme:DS", title_en=title["en"], credits=12.0, qf_level=0,
                report={"award": {"title": title, "qf_level": None}}, document='{"id": "urn:x"}')
    assert award_badge(row) is None
    with app.app_context():
        image = baked(row, kind)
    if kind == "png":
        assert unbake_png(image).payload == '{"id": "urn:x"}'
    else:
        assert unbake_svg(image).payload == '{"id": "urn:x"}'
        assert "數據科學課程" in image.decode("utf-8") and "QF" not in image.decode("utf-8")
