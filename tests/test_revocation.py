"""Revocation (issue #5): status entries on new credentials, the signed status lists, revoking through the
API and the command line, and awards that follow their badges."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from issuer import issuing, proofs, revocation, status
from issuer.db import get_session
from issuer.identity import get_context
from issuer.models import AuditEntry, Award, AwardBadge, Credential, StatusEntry
from tests.test_awards import AI_CERTIFICATE, LEARNER, auth, issue_badges, stored


def _list_path(credential: dict) -> str:
    return urlsplit(credential["credentialStatus"]["statusListCredential"]).path


def _verify(client, credential: dict) -> dict:
    return client.post("/api/v1/verify", data=json.dumps(credential), content_type="application/json").get_json()


def _revoke(client, token, credential_id: str, reason: str = "issued to the wrong learner",
            category: str | None = "issued in error"):
    body = {"reason": reason, **({"category": category} if category else {})}
    return client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=auth(token), json=body)


def _bits(client, path: str) -> status.Bitstring:
    document = client.get(path).get_json()
    return status.Bitstring.decode(status.list_subject(document)["encodedList"])


def test_an_issued_badge_carries_one_revocation_entry_with_a_string_index(app, client, issue_token):
    (issued,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    entry = issued["credential"]["credentialStatus"]
    assert entry["type"] == "BitstringStatusListEntry" and entry["statusPurpose"] == "revocation"
    assert isinstance(entry["statusListIndex"], str) and entry["statusListIndex"].isdigit()
    assert entry["statusListCredential"].startswith("http://127.0.0.1:5000/status/")
    assert entry["id"] == f"{entry['statusListCredential']}#{entry['statusListIndex']}"
    with app.app_context():
        row = get_session().scalars(select(StatusEntry).where(StatusEntry.credential_id == issued["id"])).one()
        assert (row.list_index, row.credential_kind) == (int(entry["statusListIndex"]), "badge")


def test_the_published_list_is_signed_by_the_issuer_and_holds_131072_clear_bits(app, client, issue_token):
    (issued,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    response = client.get(_list_path(issued["credential"]))
    assert response.status_code == 200
    assert response.headers["ETag"] and "max-age" in response.headers["Cache-Control"]
    document = response.get_json()
    assert document["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    assert document["id"] == issued["credential"]["credentialStatus"]["statusListCredential"]
    assert document["validFrom"] < document["validUntil"]
    assert document["credentialSubject"]["ttl"] > 0
    with app.app_context():
        ctx = get_context()
        assert document["issuer"] == ctx.did
        assert document["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
        proofs.verify_proof(document, document["proof"], ctx.keyring.current("Ed25519").private_key.public_key())
    bits = _bits(client, _list_path(issued["credential"]))
    assert len(bits) == status.MIN_ENTRIES and list(bits.ones()) == []


def test_a_revoked_badge_fails_our_verifier_while_another_on_its_list_still_verifies(client, issue_token,
                                                                                   make_token):
    revoked, kept = issue_badges(client, issue_token, AI_CERTIFICATE[:2])
    assert _list_path(revoked["credential"]) == _list_path(kept["credential"])
    assert _verify(client, revoked["credential"])["verified"] is True
    answer = _revoke(client, make_token("revoke"), revoked["id"])
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["revoked"] is True and answer.get_json()["category"] == "issued in error"
    result = _verify(client, revoked["credential"])
    assert result["verified"] is False
    assert any("revoked" in error for error in result["errors"]), result
    assert _verify(client, kept["credential"])["verified"] is True
    assert list(_bits(client, _list_path(revoked["credential"])).ones()) == [
        int(revoked["credential"]["credentialStatus"]["statusListIndex"])]


def test_revoking_twice_answers_with_the_first_revocation_and_audits_once(app, client, issue_token, make_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    token = make_token("revoke", name="registrar")
    first = _revoke(client, token, badge["id"], reason="copied coursework", category="misconduct")
    again = _revoke(client, token, badge["id"], reason="a different story", category="other")
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert first.get_json()["reason"] == "copied coursework" and first.get_json()["revoked_at"]
    with app.app_context():
        entries = get_session().scalars(select(AuditEntry).where(AuditEntry.action == "credential.revoke")).all()
        assert len(entries) == 1
        assert "registrar" in entries[0].actor
        assert entries[0].detail["reason"] == "copied coursework" and entries[0].detail["category"] == "misconduct"


def test_revoking_needs_a_token_with_the_revoke_scope(client, issue_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    assert _revoke(client, issue_token, badge["id"]).status_code == 403
    anonymous = client.post(f"/api/v1/credentials/{badge['id']}/revoke", json={"reason": "x"})
    assert anonymous.status_code == 401
    assert _verify(client, badge["credential"])["verified"] is True


@pytest.mark.parametrize("body, status_code, field", [
    ({}, 400, "reason"),
    ({"reason": "  "}, 400, "reason"),
    ({"reason": "x", "category": "boredom"}, 400, "category"),
    ({"reason": "x", "colour": "red"}, 400, "colour"),
])
def test_a_revocation_without_a_reason_or_with_an_unknown_category_is_refused(client, issue_token, make_token,
                                                                              body, status_code, field):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    response = client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth(make_token("revoke")),
                           json=body)
    assert response.status_code == status_code
    assert response.get_json()["field"] == field


def test_revoking_an_unknown_credential_is_404_and_an_unknown_list_too(client, make_token):
    assert _revoke(client, make_token("revoke"), "no-such-badge").status_code == 404
    assert client.get("/status/no-such-list").status_code == 404


def test_the_etag_holds_until_a_revocation_changes_the_list(client, issue_token, make_token):
    badge, _ = issue_badges(client, issue_token, AI_CERTIFICATE[:2])
    path = _list_path(badge["credential"])
    first = client.get(path)
    second = client.get(path)
    assert first.headers["ETag"] == second.headers["ETag"] and first.data == second.data
    assert client.get(path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    _revoke(client, make_token("revoke"), badge["id"])
    third = client.get(path)
    assert third.status_code == 200 and third.headers["ETag"] != first.headers["ETag"]


def test_a_revocation_committed_while_the_list_is_rebuilt_is_published_next(app, client, issue_token,
                                                                           monkeypatch):
    early, late = issue_badges(client, issue_token, AI_CERTIFICATE[:2])
    path = _list_path(early["credential"])
    real_sign = issuing.sign
    calls = []

    def sign_while_someone_revokes(ctx, unsigned, created):
        calls.append(1)
        if len(calls) == 1:  # the list's entries are read; now a revocation lands before we store it
            session = app.extensions["issuer.sessionmaker"]()
            try:
                revocation.revoke(session, app.extensions["issuer.rules"], late["id"], reason="late",
                                  category="other", actor="test")
            finally:
                session.close()
        return real_sign(ctx, unsigned, created)

    monkeypatch.setattr(issuing, "sign", sign_while_someone_revokes)
    during = client.get(path)
    after = client.get(path)
    late_index = int(late["credential"]["credentialStatus"]["statusListIndex"])
    assert late_index not in set(status.Bitstring.decode(
        status.list_subject(during.get_json())["encodedList"]).ones())
    assert late_index in set(status.Bitstring.decode(status.list_subject(after.get_json())["encodedList"]).ones())
    assert after.headers["ETag"] != during.headers["ETag"]


def test_revocations_interleaved_with_issuance_are_all_in_the_published_list(client, issue_token, make_token):
    """Issue, revoke some, fetch the list (so it is rebuilt between changes), issue more…: the final list
    has exactly the revoked badges' bits set."""
    revoke_token = make_token("revoke")
    issued, revoked = [], []
    path = None
    for round_ in range(6):
        for badge in issue_badges(client, issue_token, AI_CERTIFICATE[:3], email=f"round-{round_}@example.com"):
            issued.append(badge)
            path = path or _list_path(badge["credential"])
            assert _list_path(badge["credential"]) == path  # one list: every index is checked below
        # revoke the newest badge and, every other round, an older one still unrevoked
        targets = [issued[-1]] + ([issued[round_]] if round_ % 2 and issued[round_] not in revoked else [])
        for badge in targets:
            assert _revoke(client, revoke_token, badge["id"]).status_code == 200
            revoked.append(badge)
            assert client.get(path).status_code == 200  # a rebuild between revocations
        assert set(_bits(client, path).ones()) == {
            int(b["credential"]["credentialStatus"]["statusListIndex"]) for b in revoked}
    bits = status.Bitstring.decode(status.list_subject(client.get(path).get_json())["encodedList"])
    expected = {int(b["credential"]["credentialStatus"]["statusListIndex"]) for b in revoked}
    assert len(expected) == len(revoked) >= 6 and len(issued) == 18
    assert set(bits.ones()) == expected
    for badge in issued:
        assert bits.get(int(badge["credential"]["credentialStatus"]["statusListIndex"])) is (badge in revoked)


def test_a_fresh_list_is_valid_for_a_verifier_whose_clock_lags_a_little(app, client, issue_token):
    """Our verifier fixes "now" before it asks for the list, so a list built just after (across a second
    boundary) must not be "not valid yet"; a lagging clock elsewhere is the same case."""
    from datetime import timedelta

    from issuer.identity import get_verifier

    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    with app.test_request_context():
        verifier = get_verifier()
        verifier.now = lambda: issuing.utcnow() - timedelta(seconds=30)
        result = verifier.verify_credential(badge["credential"])
    assert result.check("status").ok is True, result.check("status")


def test_a_badge_issued_before_revocation_existed_keeps_verifying(app, client):
    from issuer.models import Achievement

    with app.app_context():
        ctx = get_context()
        row = get_session().get(Achievement, "AI-101")
        request = issuing.IssueRequest(achievement="AI-101", email=LEARNER)
        old, _ = issuing.build_signed(ctx, row, request, "old-badge", issuing.utcnow().replace(microsecond=0))
    assert "credentialStatus" not in old
    result = _verify(client, old)
    assert result["verified"] is True, result


def test_the_cli_revokes_a_badge_once_and_says_so_again(app, client, issue_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    runner = app.test_cli_runner()
    first = runner.invoke(args=["revoke", badge["id"], "--reason", "duplicate", "--category", "issued in error"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("revoked: ")
    again = runner.invoke(args=["revoke", badge["id"], "--reason", "duplicate"])
    assert again.exit_code == 0 and again.output.startswith("already revoked: ")
    assert _verify(client, badge["credential"])["verified"] is False


def test_a_new_list_is_started_before_the_current_one_fills(app, monkeypatch):
    monkeypatch.setattr(revocation, "LIST_SIZE", 16)  # allocation only: publishing needs 131072
    with app.app_context():
        session = get_session()
        for n in range(20):
            revocation.allocate(session, "http://127.0.0.1:5000", "badge", f"b{n}")
            session.commit()
        per_list = session.execute(select(StatusEntry.list_id, func.count()).group_by(StatusEntry.list_id)).all()
    counts = sorted((count for _, count in per_list), reverse=True)
    assert len(counts) == 2 and sum(counts) == 20
    assert counts[0] <= 15  # the first list closed at 90% of 16 (earlier only if 50 draws in a row clash)


# --- awards follow their badges ---------------------------------------------------------------------------

def _claim(client, badges):
    response = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": badges})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_award_carries_a_status_entry_and_verifies_until_revoked(client, issue_token, make_token):
    award = _claim(client, stored(client, issue_badges(client, issue_token, AI_CERTIFICATE)))
    assert award["credential"]["credentialStatus"]["statusListIndex"].isdigit()
    assert _verify(client, award["credential"])["verified"] is True
    assert _revoke(client, make_token("revoke"), award["id"]).status_code == 200
    assert _verify(client, award["credential"])["verified"] is False


def test_revoking_a_counted_badge_revokes_a_certificate_that_drops_below_30_credits(app, client, issue_token,
                                                                                   make_token):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    award = _claim(client, badges)
    counted = award["report"]["award"]["counted"]
    assert award["report"]["award"]["credits"] == 30
    badge_id = counted[0].rsplit("/", 1)[1]
    answer = _revoke(client, make_token("revoke"), badge_id).get_json()
    (affected,) = answer["awards"]
    assert affected["id"] == award["id"] and affected["outcome"] == "revoked"
    assert affected["reason"] == f"a counted badge was revoked: {counted[0]}"
    assert _verify(client, award["credential"])["verified"] is False
    with app.app_context():
        row = get_session().get(Award, award["id"])
        assert row.revoked_at is not None and row.revocation_reason == affected["reason"]


def test_a_qf5_certificate_whose_remaining_badges_reach_only_qf4_is_revoked(client, issue_token, make_token):
    """A real case of an award counting more than 30 credits (rule 9 prefers QF 5 to fewer credits): after
    the revocation 30 credits remain, but at QF 4, so the award as signed (QF 5) no longer holds."""
    courses = [("AI-101", "2025-01-10"), ("AI-201", "2025-01-10"), ("AI-203", "2025-01-10"),
               ("WPS-202", "2025-01-10"), ("DA-301", "2025-01-10")]
    issued = issue_badges(client, issue_token, courses)
    award = _claim(client, stored(client, issued))
    assert (award["report"]["award"]["credits"], award["report"]["award"]["qf_level"]) == (39, 5)
    wps = next(b for b, (code, _) in zip(issued, courses, strict=True) if code == "WPS-202")
    (affected,) = _revoke(client, make_token("revoke"), wps["id"]).get_json()["awards"]
    assert affected["outcome"] == "revoked"


def test_an_award_that_still_holds_without_the_revoked_badge_is_kept_and_the_check_recorded(
        app, client, issue_token, make_token):
    """No award of the default rules counts a badge it can spare (the engine counts a least set for the
    QF level it reaches), so this award is made to count a sixth badge as one issued under other rules
    might: losing that badge leaves the 30 credits at QF 4 it states."""
    issued = issue_badges(client, issue_token, AI_CERTIFICATE)
    award = _claim(client, stored(client, issued))
    counted = set(award["report"]["award"]["counted"])
    (spare,) = [b for b in issued if b["url"] not in counted]
    with app.app_context():
        session = get_session()
        session.add(AwardBadge(award_id=award["id"], badge_id=spare["url"], pathway="Certificate", credits=6,
                               sha256="0" * 64))
        session.commit()
    answer = _revoke(client, make_token("revoke"), spare["id"]).get_json()
    (affected,) = answer["awards"]
    assert affected["outcome"] == "kept" and affected["credits"] == 30
    assert _verify(client, award["credential"])["verified"] is True
    with app.app_context():
        checks = get_session().scalars(select(AuditEntry).where(AuditEntry.action == "award.reevaluate")).all()
        assert [c.subject for c in checks] == [award["url"]] and checks[0].detail["holds"] is True


# --- unique indexes under concurrent issuance ---------------------------------------------------------------

PER_PROCESS = 1000
PROCESSES = 2


def _issue_many(url: str, base_url: str, worker: int, count: int) -> int:
    """One service process: allocate ``count`` entries, each in its own committed transaction, as
    issuing does (the signing between allocation and commit adds nothing to the race)."""
    from sqlalchemy.orm import sessionmaker

    from issuer.db import make_engine

    engine = make_engine(url)
    make_session = sessionmaker(engine, expire_on_commit=False)
    try:
        for n in range(count):
            session = make_session()
            try:
                revocation.allocate(session, base_url, "badge", f"w{worker}-{n}")
                session.commit()
            finally:
                session.close()
    finally:
        engine.dispose()
    return count


def test_indexes_stay_unique_when_two_processes_issue_2000_badges_at_once(app):
    url = app.config["ISSUER_DATABASE_URL"]
    started = time.monotonic()
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(PROCESSES) as pool:
        jobs = [pool.apply_async(_issue_many, (url, "http://127.0.0.1:5000", w, PER_PROCESS))
                for w in range(PROCESSES)]
        assert [job.get(timeout=60) for job in jobs] == [PER_PROCESS] * PROCESSES
    assert time.monotonic() - started < 60
    with app.app_context():
        session = get_session()
        total = session.scalar(select(func.count()).select_from(StatusEntry))
        distinct = session.scalar(select(func.count()).select_from(
            select(StatusEntry.list_id, StatusEntry.list_index).distinct().subquery()))
        assert total == distinct == PER_PROCESS * PROCESSES
        assert session.scalar(select(func.max(StatusEntry.list_index))) < status.MIN_ENTRIES


def _issue_signed(config: dict, worker: int, count: int) -> list[str]:
    """One service process issuing real badges (sign, store, commit); returns their status list entry ids."""
    from issuer import create_app

    app = create_app({"TESTING": True, **config})
    out = []
    with app.app_context():
        ctx = get_context()
        for n in range(count):
            session = app.extensions["issuer.sessionmaker"]()
            try:
                request = issuing.parse_request({"achievement": "AI-101",
                                                 "recipient": {"email": f"w{worker}-{n}@example.com"}})
                outcome = issuing.issue(session, ctx, request, actor=f"worker-{worker}")
                out.append(json.loads(outcome.credential.document)["credentialStatus"]["id"])
            finally:
                session.close()
        app.extensions["issuer.engine"].dispose()
    return out


def _issue_concurrently(app, processes: int, per_process: int, timeout: float) -> list[str]:
    """``processes`` service processes (spawned, each with its own app and engine) issuing ``per_process``
    real badges each at the same time; the status entry ids of all the badges issued."""
    config = {name: app.config[name] for name in ("ISSUER_DATABASE_URL", "ISSUER_KEY_DIR", "ISSUER_BASE_URL",
                                                  "ISSUER_KEY_PASSPHRASE")}
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        jobs = [pool.apply_async(_issue_signed, (config, w, per_process)) for w in range(processes)]
        return [entry for job in jobs for entry in job.get(timeout=timeout)]


def _assert_one_distinct_entry_per_badge(app, entries: list[str], total: int) -> None:
    """Every badge issued carries a distinct (list, index), and the database holds exactly one status
    entry per badge, the one its signed document names."""
    assert len(entries) == len(set(entries)) == total
    with app.app_context():
        session = get_session()
        rows = session.execute(select(StatusEntry.list_id, StatusEntry.list_index, StatusEntry.credential_id,
                                      StatusEntry.credential_kind)).all()
        assert len(rows) == total
        assert len({(row.list_id, row.list_index) for row in rows}) == total, "a repeated index"
        assert {row.credential_kind for row in rows} == {"badge"}
        credential_ids = session.scalars(select(Credential.id)).all()
        assert len(credential_ids) == total
        assert sorted(row.credential_id for row in rows) == sorted(credential_ids)  # exactly one each
        named = {f"{revocation.list_url('http://127.0.0.1:5000', row.list_id)}#{row.list_index}" for row in rows}
        assert named == set(entries)


def test_badges_signed_by_two_processes_at_once_carry_distinct_entries(app):
    entries = _issue_concurrently(app, 2, 100, timeout=60)
    _assert_one_distinct_entry_per_badge(app, entries, 200)


# Issue #5 asks for at least 10,000 badges, and that is the default. A badge costs about 20 ms of CPU to
# issue (QR code ~45 %, RDFC signing ~30 %): on a 2-core machine 4 processes issue 100-120 a second, so the
# 10,000 take about 90 s of the PostgreSQL run. ISSUER_TEST_CONCURRENT_BADGES sets another number.
CONCURRENT_PROCESSES = 4
CONCURRENT_PER_PROCESS = int(os.environ.get("ISSUER_TEST_CONCURRENT_BADGES", "10000")) // CONCURRENT_PROCESSES


@pytest.mark.skipif(not os.environ.get("ISSUER_TEST_DATABASE_URL"), reason="needs PostgreSQL "
                    "(ISSUER_TEST_DATABASE_URL): SQLite serialises writers, so concurrency there is the "
                    "200-badge test above")
def test_thousands_of_badges_issued_by_four_processes_at_once_on_postgresql_never_share_an_index(app):
    """Issue #5: concurrent issuance from several processes on PostgreSQL (through issuing.issue: allocated,
    signed, stored, committed) yields no repeated index. See CONCURRENT_PER_PROCESS for the number."""
    total = CONCURRENT_PROCESSES * CONCURRENT_PER_PROCESS
    started = time.monotonic()
    entries = _issue_concurrently(app, CONCURRENT_PROCESSES, CONCURRENT_PER_PROCESS,
                                  timeout=max(85, total / 30))
    elapsed = time.monotonic() - started
    print(f"{total} badges from {CONCURRENT_PROCESSES} processes in {elapsed:.1f} s")
    _assert_one_distinct_entry_per_badge(app, entries, total)


@pytest.mark.skipif(not os.environ.get("ISSUER_TEST_DATABASE_URL"), reason="needs PostgreSQL "
                    "(ISSUER_TEST_DATABASE_URL); the SQLite run is the test above")
def test_the_database_refuses_a_second_entry_at_the_same_index(app):
    from sqlalchemy.exc import IntegrityError

    with app.app_context():
        session = get_session()
        revocation.allocate(session, "http://127.0.0.1:5000", "badge", "first")
        session.commit()
        taken = session.scalars(select(StatusEntry)).one()
        session.add(StatusEntry(list_id=taken.list_id, list_index=taken.list_index, credential_kind="badge",
                                credential_id="second"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_the_public_page_shows_a_revoked_badge_with_date_and_category_in_both_languages(client, make_token):
    token = make_token("issue revoke")
    code = client.get("/api/v1/achievements").get_json()["achievements"][0]["code"]
    issued = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                         json={"achievement": code, "recipient": {"email": "page@example.com"}}).get_json()
    page = client.get(f"/credentials/{issued['id']}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Revoked on" not in page
    revoked = client.post(f"/api/v1/credentials/{issued['id']}/revoke", headers={"Authorization": f"Bearer {token}"},
                          json={"reason": "entered for the wrong learner", "category": "issued in error"})
    assert revoked.status_code == 200, revoked.get_json()
    page = client.get(f"/credentials/{issued['id']}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Revoked on " in page and "issued in error" in page
    chinese = client.get(f"/credentials/{issued['id']}?lang=zh-Hant",
                         headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "撤銷" in chinese and "錯誤發出" in chinese
