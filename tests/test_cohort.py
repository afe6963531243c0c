"""Cohorts in bulk (issue #7): `issuer issue-batch` signs in worker processes and stores chunks in one
transaction each; the result must be what the per-row path stores, a rerun issues nothing twice, a crash
loses nothing and duplicates nothing, and bad rows are reported without stopping the good ones."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from issuer import cohort, issuing
from issuer.db import get_session
from issuer.identity import get_context, get_verifier
from issuer.models import Achievement, AuditEntry, Credential, Notification, StatusEntry

ISSUER = Path(sys.executable).with_name("issuer")


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def codes(app):
    with app.app_context():
        return list(get_session().scalars(select(Achievement.code).order_by(Achievement.code)))


HEADER = ["email", "name", "achievement", "award_date", "grade"]
DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def write_csv(path: Path, rows, header=HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cohort_rows(app, count: int, prefix: str = "learner"):
    catalogue = codes(app)
    return [[f"{prefix}-{n}@example.com", f"Learner {n}", catalogue[n % len(catalogue)],
             f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}", ("A", "", "B+")[n % 3]] for n in range(count)]


def report_of(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stored(app) -> dict:
    """Counts and integrity of what the registry holds."""
    with app.app_context():
        session = get_session()
        keys = session.execute(select(Credential.recipient_email, Credential.achievement_code,
                                      Credential.awarded_on)).all()
        slots = session.execute(select(StatusEntry.list_id, StatusEntry.list_index)).all()
        return {
            "credentials": len(keys), "distinct awards": len(set(keys)),
            "status entries": len(slots), "distinct slots": len(set(slots)),
            "audit": session.scalar(select(func.count()).select_from(AuditEntry)
                                    .where(AuditEntry.action == "credential.issue")),
            "outbox": session.scalar(select(func.count()).select_from(Notification)),
        }


def consistent(app, count: int) -> None:
    assert stored(app) == {"credentials": count, "distinct awards": count, "status entries": count,
                           "distinct slots": count, "audit": count, "outbox": count}


def bulk_actor(app) -> str:
    with app.app_context():
        return get_session().scalars(select(Credential.issued_by)).first()


def strip_variable(document: dict) -> dict:
    """A badge without what differs between two issuances of the same award: ids, salt, times, proof."""
    doc = json.loads(json.dumps(document))
    doc.pop("id")
    doc.pop("validFrom")
    doc["proof"] = sorted(doc["proof"])
    doc["credentialStatus"] = sorted(doc["credentialStatus"])
    for identity in doc["credentialSubject"]["identifier"]:
        identity.pop("identityHash")
        identity.pop("salt")
    return doc


def test_bulk_badges_equal_the_per_row_path_and_verify(app, client, tmp_path):
    rows = [[*row, DID if n % 10 == 3 else ""] for n, row in enumerate(cohort_rows(app, 240))]
    rows[5][1] = "陳大文"
    path = write_csv(tmp_path / "cohort.csv", rows, [*HEADER, "did"])
    result = run(app, "issue-batch", str(path), "--workers", "2", "--chunk-size", "50")
    assert result.exit_code == 0, result.output
    assert "240 issued, 0 already issued, 0 errors" in result.output
    report = report_of(tmp_path / "cohort.report.csv")
    assert [int(r["line"]) for r in report] == list(range(2, 242))
    assert {r["status"] for r in report} == {"issued"}
    consistent(app, 240)

    # The same awards through the per-row path (other learners, so both can be stored).
    with app.app_context():
        make_session = app.extensions["issuer.sessionmaker"]
        per_row = [[f"row-{r[0]}", *r[1:]] for r in rows[:30]]
        lines = [(i + 2, dict(zip([*HEADER, "did"], r, strict=True))) for i, r in enumerate(per_row)]
        results = issuing.issue_rows(make_session, get_context(), lines, actor=bulk_actor(app))
        assert {r.status for r in results} == {"issued"}
        session = get_session()
        verifier = get_verifier()
        for bulk_line, single in zip(report[:30], results, strict=True):
            bulk = session.get(Credential, bulk_line["detail"])
            one = session.get(Credential, single.detail)
            assert bulk.credential_url == bulk_line["credential_url"]
            bulk_doc, one_doc = json.loads(bulk.document), json.loads(one.document)
            assert strip_variable(bulk_doc) == strip_variable(one_doc)
            assert issuing.serialise(bulk_doc) == bulk.document  # the same stored text format
            for column in ("achievement_code", "recipient_name", "recipient_did", "awarded_on", "issued_by"):
                assert getattr(bulk, column) == getattr(one, column), column
            assert (bulk.jwt is None) == (one.jwt is None) == (bulk.recipient_did is None)
            if bulk.jwt:
                assert verifier.verify_jwt(bulk.jwt, recipient_email=bulk.recipient_email).verified
            entry = session.scalars(select(StatusEntry).where(StatusEntry.credential_id == bulk.id)).one()
            assert bulk_doc["credentialStatus"]["statusListIndex"] == str(entry.list_index)
            assert bulk_doc["credentialStatus"]["statusListCredential"].endswith(f"/status/{entry.list_id}")
            audits = {a.subject: a for a in session.scalars(select(AuditEntry).where(
                AuditEntry.subject.in_([bulk.credential_url, one.credential_url])))}
            assert audits[bulk.credential_url].detail.keys() == audits[one.credential_url].detail.keys()
            assert audits[bulk.credential_url].detail["sha256"] == bulk.document_sha256
            note = session.scalars(select(Notification).where(Notification.credential_id == bulk.id)).one()
            assert (note.kind, note.status, note.to_address) == ("badge_issued", "pending", bulk.recipient_email)
            verdict = verifier.verify_credential(bulk_doc, recipient_email=bulk.recipient_email)
            assert verdict.verified, verdict.to_json()
        # QR codes are left to the first request for them.
        first = session.get(Credential, report[0]["detail"])
        assert first.qr_png is None and first.qr_svg is None
    response = client.get(f"/credentials/{report[0]['detail']}/qr.png")
    assert response.status_code == 200 and response.data.startswith(b"\x89PNG")
    with app.app_context():
        assert get_session().get(Credential, report[0]["detail"]).qr_png == response.data


def test_a_rerun_issues_nothing_twice_and_duplicates_in_the_file_are_found(app, tmp_path):
    rows = cohort_rows(app, 25)
    rows.insert(20, list(rows[3]))  # the same award again, in a later chunk
    rows.insert(2, list(rows[1]))  # ... and in the same chunk
    path = write_csv(tmp_path / "cohort.csv", rows)
    first = run(app, "issue-batch", str(path), "--workers", "1", "--chunk-size", "7")
    assert first.exit_code == 0, first.output
    assert "25 issued, 2 already issued, 0 errors" in first.output
    report = report_of(tmp_path / "cohort.report.csv")
    assert report[2]["status"] == "already issued" and report[2]["detail"] == report[1]["detail"]
    assert report[21]["status"] == "already issued" and report[21]["detail"] == report[4]["detail"]
    consistent(app, 25)

    again = run(app, "issue-batch", str(path), "--chunk-size", "7")
    assert again.exit_code == 0, again.output
    assert "0 issued, 27 already issued, 0 errors" in again.output
    assert [r["detail"] for r in report_of(tmp_path / "cohort.report.csv")] == [r["detail"] for r in report]
    consistent(app, 25)


def test_bad_rows_are_reported_and_the_good_ones_issued(app, tmp_path):
    a, b = codes(app)[:2]
    with app.app_context():
        session = get_session()
        session.get(Achievement, b).retired = True
        session.commit()
    path = tmp_path / "mixed.csv"
    path.write_text(
        "email,name,achievement,award_date,grade\n"
        f"good-1@example.com,One,{a},2025-06-30,A\n"
        f"not-an-email,Two,{a},2025-06-30,\n"
        "good-3@example.com,Three,NO-SUCH,2025-06-30,\n"
        f"good-4@example.com,Four,{a},2025-13-45,\n"
        f"good-5@example.com,Five,{b},2025-06-30,\n"
        f"good-6@example.com,Six,{a},2025-06-30,A,extra\n"
        f"good-7@example.com,Seven,{a},,B\n", encoding="utf-8")
    result = run(app, "issue-batch", str(path), "--workers", "1", "--chunk-size", "3")
    assert result.exit_code == 2, result.output
    assert "2 issued, 0 already issued, 5 errors" in result.output
    report = report_of(tmp_path / "mixed.report.csv")
    assert [r["status"] for r in report] == ["issued", "error", "error", "error", "error", "error", "issued"]
    assert "email" in report[1]["detail"] and "NO-SUCH" in report[2]["detail"]
    assert "not a date" in report[3]["detail"] and "retired" in report[4]["detail"]
    assert "more cells" in report[5]["detail"]
    assert "line 3:" in result.output  # errors are also listed on stderr
    consistent(app, 2)


def test_a_status_index_taken_meanwhile_is_redrawn_and_the_badge_signed_again(app, tmp_path, monkeypatch):
    """Another process takes an index this chunk drew: the chunk rolls back, redraws, re-signs, stores."""
    original = cohort.CohortRun.plan
    taken = []

    def plan_then_clash(self, lines):
        chunk = original(self, lines)
        victim = chunk.to_sign()[0]
        with self.make_session() as session:
            session.add(StatusEntry(list_id=victim.slot[0], list_index=victim.slot[1], credential_kind="badge",
                                    credential_id=f"other-{len(taken)}"))
            session.commit()
        taken.append(victim.slot)
        return chunk

    monkeypatch.setattr(cohort.CohortRun, "plan", plan_then_clash)
    path = write_csv(tmp_path / "cohort.csv", cohort_rows(app, 12))
    result = run(app, "issue-batch", str(path), "--workers", "1", "--chunk-size", "5")
    assert result.exit_code == 0, result.output
    assert "12 issued" in result.output and len(taken) == 3
    with app.app_context():
        session = get_session()
        slots = session.execute(select(StatusEntry.list_id, StatusEntry.list_index)).all()
        assert len(slots) == len(set(slots)) == 15
        verifier = get_verifier()
        for row in session.scalars(select(Credential)):
            entry = session.scalars(select(StatusEntry).where(StatusEntry.credential_id == row.id)).one()
            assert (entry.list_id, entry.list_index) not in taken
            document = json.loads(row.document)
            assert document["credentialStatus"]["statusListIndex"] == str(entry.list_index)
            assert verifier.verify_credential(document, recipient_email=row.recipient_email).verified


def test_a_crash_mid_run_then_a_rerun_stores_every_row_once(app, tmp_path):
    """SIGKILL of `issuer issue-batch` (and its workers) after some chunks committed; the rerun finishes."""
    if not ISSUER.exists():
        pytest.skip(f"{ISSUER} not installed")
    total = 3000
    path = write_csv(tmp_path / "cohort.csv", cohort_rows(app, total))
    env = {**os.environ, "ISSUER_DATABASE_URL": app.config["ISSUER_DATABASE_URL"],
           "ISSUER_KEY_DIR": app.config["ISSUER_KEY_DIR"], "ISSUER_BASE_URL": app.config["ISSUER_BASE_URL"],
           "ISSUER_OUTBOX_DIR": str(tmp_path / "outbox"), "ISSUER_DEVELOPMENT": "1"}
    env.pop("ISSUER_KEY_PASSPHRASE", None)
    command = [str(ISSUER), "issue-batch", str(path), "--workers", "2", "--chunk-size", "100"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    engine = app.extensions["issuer.engine"]
    deadline = time.monotonic() + 120
    committed = 0
    try:
        while committed < 300 and process.poll() is None and time.monotonic() < deadline:
            with engine.connect() as conn:
                committed = conn.execute(select(func.count()).select_from(Credential.__table__)).scalar()
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the command and the workers it started
        process.communicate(timeout=60)
    first = stored(app)["credentials"]
    assert 0 < first < total, f"the run was not cut mid-way ({first} of {total} stored)"
    assert first % 100 == 0  # whole chunks only
    consistent(app, first)

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{total - first} issued, {first} already issued, 0 errors" in rerun.stdout
    report = report_of(tmp_path / "cohort.report.csv")
    assert Counter(r["status"] for r in report) == {"issued": total - first, "already issued": first}
    consistent(app, total)
    # The killed run's chunk in flight took its audit entries and its move of the chain head with it.
    chain = run(app, "audit", "verify")
    assert chain.exit_code == 0 and "chain intact" in chain.output, chain.output
