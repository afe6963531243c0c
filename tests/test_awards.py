"""Stacking end to end through HTTP: issue a learner's badges, submit them, receive and verify the award."""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import pytest

from issuer.schema import validate_credential

LEARNER = "learner@example.com"
HOLDER_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
AI_CERTIFICATE = [("AI-101", "2024-01-10"), ("AI-102", "2024-03-10"), ("AI-201", "2024-06-10"),
                  ("AI-202", "2024-09-10"), ("AI-203", "2025-01-10")]  # 36 credits, 30 at QF4 or above
AI_MORE = [("AI-301", "2025-03-10"), ("AI-302", "2025-06-10"), ("AI-303", "2025-09-10"),
           ("WPS-201", "2025-10-10")]  # +33: 69 in all, 60 in artificial intelligence


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def issue_badges(client, token, courses, email=LEARNER, did=None):
    issued = []
    for code, day in courses:
        recipient = {"email": email, **({"did": did} if did else {})}
        response = client.post("/api/v1/credentials", headers=auth(token),
                               json={"achievement": code, "recipient": recipient, "awarded_on": day})
        assert response.status_code == 201, response.get_json()
        issued.append(response.get_json())
    return issued


def stored(client, issued):
    return [json.loads(client.get(f"/credentials/{b['id']}.json").data) for b in issued]


def test_a_learner_with_36_ai_credits_is_told_certificate_in_professional_practice(client, issue_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    report = client.post("/api/v1/awards/evaluate",
                         json={"recipient": {"email": LEARNER}, "credentials": badges}).get_json()
    assert report["eligible"] is True, report
    award = report["award"]
    assert award["level"] == "Certificate"
    assert award["title"] == {"en": "Certificate in Professional Practice (Artificial Intelligence)",
                              "zh-Hant": "專業實踐證書(人工智能)"}
    assert award["area"] == "professional" and award["qf_level"] == 4
    assert award["credits"] == 30 and len(award["counted"]) == 4
    assert {b["id"] for b in report["badges"]} == {b["id"] for b in badges}
    assert any("Diploma" in line or "credits" in line for line in report["next"])


def test_claiming_signs_an_award_that_verifies_and_a_second_claim_returns_it(client, issue_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    body = {"recipient": {"email": LEARNER}, "credentials": badges}
    first = client.post("/api/v1/awards", json=body)
    assert first.status_code == 201, first.get_json()
    award = first.get_json()["credential"]
    assert validate_credential(award) == []
    achievement = award["credentialSubject"]["achievement"]
    assert achievement["achievementType"] == "Certificate"
    assert achievement["creditsAvailable"] == 30
    assert award["credentialSubject"]["creditsEarned"] == 30
    assert award["credentialSubject"]["result"][0]["value"] == "QF4"
    counted = first.get_json()["report"]["award"]["counted"]
    assert [e["id"] for e in award["evidence"]] == counted
    by_id = {b["id"]: b for b in badges}
    for evidence in award["evidence"]:
        text = json.dumps(by_id[evidence["id"]], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        assert evidence["digestSRI"] == "sha256-" + base64.b64encode(digest).decode()

    served = client.get(first.headers["Location"] + ".json").data
    result = client.post("/api/v1/verify?recipient_email=" + LEARNER, data=served,
                         content_type="application/json").get_json()
    assert result["verified"] is True, result
    assert client.get(achievement["id"], headers={"Accept": "application/json"}).get_json()["id"] == achievement["id"]

    again = client.post("/api/v1/awards", json=body)
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]


def test_badges_of_a_certificate_stack_upward_into_a_diploma_but_not_into_a_second_certificate(
        client, issue_token):
    first = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    certificate = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": first})
    assert certificate.status_code == 201
    more = stored(client, issue_badges(client, issue_token, AI_MORE))
    # the certificate's badges can't make a second certificate, and what is left is too little
    leftovers = [b for b in first if b["id"] not in certificate.get_json()["report"]["award"]["counted"]]
    refused = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER},
                                                  "credentials": leftovers + more[:1],
                                                  "target": "Certificate"})
    assert refused.status_code == 422
    diploma = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": first + more})
    assert diploma.status_code == 201, diploma.get_json()
    report = diploma.get_json()["report"]
    assert report["award"]["level"] == "Diploma"
    assert report["award"]["title"]["en"] == "Diploma in Professional Practice (Artificial Intelligence)"
    assert set(certificate.get_json()["report"]["award"]["counted"]) <= set(report["award"]["counted"])


def test_someone_elses_badges_and_tampered_badges_do_not_count(client, issue_token):
    mine = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE[:4]))
    theirs = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE[4:], email="other@example.com"))
    tampered = copy.deepcopy(mine[0])
    tampered["credentialSubject"]["creditsEarned"] = 60
    body = {"recipient": {"email": LEARNER}, "credentials": [tampered, *mine[1:], *theirs]}
    response = client.post("/api/v1/awards", json=body)
    assert response.status_code == 422
    report = response.get_json()["report"]
    reasons = {b["id"]: b["reason"] for b in report["badges"]}
    assert "someone else" in reasons[theirs[0]["id"]]
    assert "does not verify" in reasons[tampered["id"]]
    assert report["eligible"] is False and report["next"]


def test_badges_submitted_as_vc_jwts_count(client, issue_token):
    issued = issue_badges(client, issue_token, AI_CERTIFICATE, did=HOLDER_DID)
    jwts = [client.get(f"/credentials/{b['id']}.jwt").get_data(as_text=True) for b in issued]
    report = client.post("/api/v1/awards/evaluate",
                         json={"recipient": {"email": LEARNER}, "credentials": jwts}).get_json()
    assert report["eligible"] is True, report
    assert report["award"]["credits"] == 30


@pytest.mark.parametrize("body, status, words", [
    ({"credentials": []}, 400, "recipient"),
    ({"recipient": {"email": LEARNER}, "credentials": []}, 400, "non-empty"),
    ({"recipient": {"email": LEARNER}, "credentials": [1]}, 400, "credential object"),
    ({"recipient": {"email": LEARNER}, "credentials": ["x"] * 201}, 413, "at most 200"),
    ({"recipient": {"email": LEARNER}, "credentials": ["x"], "colour": 1}, 400, "colour"),
    ({"recipient": {"email": LEARNER}, "credentials": ["x"], "as_of": "soon"}, 400, "as_of"),
])
def test_bad_applications_get_a_clear_4xx(client, body, status, words):
    response = client.post("/api/v1/awards/evaluate", json=body)
    assert response.status_code == status
    assert words in response.get_json()["detail"]


def test_an_unknown_target_is_a_400_naming_it(client, issue_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE[:1]))
    response = client.post("/api/v1/awards/evaluate", json={"recipient": {"email": LEARNER}, "credentials": badges,
                                                            "target": "Doctorate in Astrology"})
    assert response.status_code == 400
    assert "Doctorate" in response.get_json()["detail"]


def test_award_check_tells_staff_who_could_apply(app, client, issue_token):
    issue_badges(client, issue_token, AI_CERTIFICATE)
    result = app.test_cli_runner().invoke(args=["award", "check", "--email", LEARNER])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["award"]["level"] == "Certificate"
    nobody = app.test_cli_runner().invoke(args=["award", "check", "--email", "nobody@example.com"])
    assert nobody.exit_code != 0 and "no badges" in nobody.output


def test_award_evaluate_and_claim_from_files(app, client, issue_token, tmp_path):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    files = []
    for i, badge in enumerate(badges):
        path = tmp_path / f"badge{i}.json"
        path.write_text(json.dumps(badge, ensure_ascii=False), encoding="utf-8")
        files.append(str(path))
    runner = app.test_cli_runner()
    evaluated = runner.invoke(args=["award", "evaluate", *files, "--email", LEARNER])
    assert evaluated.exit_code == 0, evaluated.output
    claimed = runner.invoke(args=["award", "claim", *files, "--email", LEARNER])
    assert claimed.exit_code == 0 and "issued: Certificate in Professional Practice" in claimed.output
    again = runner.invoke(args=["award", "claim", *files, "--email", LEARNER])
    assert "already issued" in again.output


def test_a_malformed_rule_file_stops_start_up_naming_the_field(tmp_path):
    from issuer import create_app
    from issuer.stacking import RulesError

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nvalidity_years: 5\nlevels:\n  Certificate:\n    credits: -1\n", encoding="utf-8")
    with pytest.raises(RulesError, match="credits"):
        create_app({"TESTING": True, "ISSUER_RULES_FILE": str(rules),
                    "ISSUER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}"})


def test_a_wallet_holder_applies_with_a_presentation_whose_challenge_is_single_use(client, issue_token):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from issuer.multikey import did_key
    from issuer.presentations import create_presentation

    key = ed25519.Ed25519PrivateKey.generate()
    holder = did_key(key.public_key())
    method = f"{holder}#{holder.removeprefix('did:key:')}"
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE, email="wallet@example.com",
                                         did=holder))
    challenge = client.post("/api/v1/awards/challenge").get_json()
    presentation = create_presentation(badges, holder=holder, private_key=key, verification_method=method,
                                       challenge=challenge["challenge"], domain=challenge["domain"])
    body = {"recipient": {"presentation": presentation}}
    evaluated = client.post("/api/v1/awards/evaluate", json=body)
    assert evaluated.status_code == 200 and evaluated.get_json()["eligible"] is True, evaluated.get_json()
    claimed = client.post("/api/v1/awards", json=body)
    assert claimed.status_code == 201, claimed.get_json()
    award = claimed.get_json()["credential"]
    assert award["credentialSubject"]["id"] == holder
    assert "identifier" not in award["credentialSubject"]
    assert client.get(claimed.headers["Location"] + ".jwt").status_code == 200
    replay = client.post("/api/v1/awards", json=body)
    assert replay.status_code == 422 and "already used" in replay.get_json()["detail"]

    stranger = ed25519.Ed25519PrivateKey.generate()
    other = did_key(stranger.public_key())
    fresh = client.post("/api/v1/awards/challenge").get_json()
    theirs = create_presentation(badges, holder=other, private_key=stranger,
                                 verification_method=f"{other}#{other.removeprefix('did:key:')}",
                                 challenge=fresh["challenge"], domain=fresh["domain"])
    report = client.post("/api/v1/awards/evaluate", json={"recipient": {"presentation": theirs}}).get_json()
    assert report["eligible"] is False
    assert all("someone else" in b["reason"] for b in report["badges"])


def test_a_parent_programme_award_and_its_badges_stay_out_of_certificates(tmp_path, client, issue_token, app):
    """Badges counted by a parent programme cannot count toward a Certificate, and the reverse."""
    from issuer.stacking import load_rules

    rules = tmp_path / "rules.yaml"
    default = (app.root_path + "/demo/rules.yaml")
    text = open(default, encoding="utf-8").read().replace("programmes: {}", """programmes:
  PC-AIB:
    name: {en: Professional Certificate in AI for Business, zh-Hant: 商業人工智能專業證書}
    credits: 12
    eligible: [AI-101, AI-102, AI-201]""")
    rules.write_text(text, encoding="utf-8")
    app.extensions["issuer.rules"] = load_rules(rules)
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    programme = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": badges,
                                                    "programme": "PC-AIB"})
    assert programme.status_code == 201, programme.get_json()
    award = programme.get_json()["credential"]
    assert award["credentialSubject"]["achievement"]["name"] == "Professional Certificate in AI for Business"
    counted = programme.get_json()["report"]["award"]["counted"]
    assert len(counted) == 2  # 12 credits from two 6-credit courses
    # what is left (24 credits) is too little for a Certificate, because the programme's badges are taken
    certificate = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": badges})
    assert certificate.status_code == 422
    reasons = {b["id"]: b["reason"] for b in certificate.get_json()["report"]["badges"]}
    assert all("programme" in reasons[i] for i in counted)
    unknown = client.post("/api/v1/awards/evaluate", json={"recipient": {"email": LEARNER}, "credentials": badges,
                                                           "programme": "NOPE"})
    assert unknown.status_code == 400 and "NOPE" in unknown.get_json()["detail"]


def test_a_revoked_badge_does_not_count_toward_an_award(client, make_token):
    token = make_token("issue revoke")
    badges = stored(client, issue_badges(client, token, AI_CERTIFICATE))
    revoked = client.post(f"/api/v1/credentials/{badges[4]['id'].rsplit('/', 1)[1]}/revoke",
                          headers=auth(token), json={"reason": "misconduct found", "category": "misconduct"})
    assert revoked.status_code == 200, revoked.get_json()
    report = client.post("/api/v1/awards/evaluate",
                         json={"recipient": {"email": LEARNER}, "credentials": badges}).get_json()
    reasons = {b["id"]: b["reason"] for b in report["badges"]}
    assert "revoked" in reasons[badges[4]["id"]]
    assert report["eligible"] is False  # 27 credits remain
