"""The audit log is a hash chain (issue #9, item 6): every entry is chained where it is stored, by the ORM
hook or the bulk path, in one line even with writers in several processes, and `issuer audit verify`
finds an edited, deleted, inserted or cut-off entry."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from datetime import UTC
from types import SimpleNamespace

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, text

from issuer import audit, cohort
from issuer.db import MIGRATIONS, get_session, make_engine, migrate
from issuer.identity import get_context
from issuer.models import AuditChainHead, AuditEntry
from issuer.revocation import revoke

from .test_cohort import cohort_rows


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def rows(app):
    with app.extensions["issuer.engine"].connect() as conn:
        return [SimpleNamespace(**row._mapping)
                for row in conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.seq))]


def replaced(row, **changes):
    return SimpleNamespace(**{**vars(row), **changes})


def sql(app, statement, **params):
    with app.extensions["issuer.engine"].begin() as conn:
        conn.execute(text(statement), params)


def issue(client, token, n):
    for i in range(n):
        response = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                               json={"achievement": "AI-101", "recipient": {"email": f"l{i}@example.com"},
                                     "awarded_on": "2025-01-10"})
        assert response.status_code == 201, response.get_json()


def expected_hash(row, prev):
    """The documented format, written out here independently of audit.py."""
    at = row.at.replace(tzinfo=UTC) if row.at.tzinfo is None else row.at.astimezone(UTC)
    record = [row.seq, at.isoformat(timespec="microseconds"), row.actor, row.action, row.subject, row.detail, prev]
    data = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hashlib.sha256(data).hexdigest()


def test_every_entry_is_chained_in_the_documented_format_and_verify_says_intact(app, client, issue_token):
    issue(client, issue_token, 3)
    chain = rows(app)
    assert len(chain) >= 5  # init's key.publish and catalogue.load, then three credential.issue
    prev = "0" * 64
    for n, row in enumerate(chain, start=1):
        assert row.seq == n and row.prev_hash == prev
        assert row.entry_hash == expected_hash(row, prev)
        prev = row.entry_hash
    with app.app_context():
        head = get_session().get(AuditChainHead, 1)
        assert (head.seq, head.hash) == (len(chain), prev)
    result = run(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"{len(chain)} entries, chain intact" in result.output and prev in result.output
    assert run(app, "audit", "verify", "--expect", f"2:{chain[1].entry_hash}").exit_code == 0


def test_entries_held_back_by_a_flush_are_chained_at_commit_and_a_rollback_leaves_no_trace(app):
    before = len(rows(app))
    with app.app_context():
        session = get_session()
        session.add(AuditEntry(actor="test", action="first", subject="a", detail={"n": 1, 2: ("x",)}))
        session.flush()  # held back: the head is not locked while the transaction goes on
        session.add(AuditEntry(actor="test", action="second", subject=None, detail=None))
        session.commit()
        session.add(AuditEntry(actor="test", action="rolled.back", subject=None, detail=None))
        session.flush()
        session.rollback()
        session.add(AuditEntry(actor="test", action="third", subject=None, detail=None))
        session.commit()
    chain = rows(app)
    assert [r.action for r in chain[before:]] == ["first", "second", "third"]
    assert [r.seq for r in chain] == list(range(1, len(chain) + 1))
    assert chain[before].detail == {"n": 1, "2": ["x"]}  # hashed as stored and read back
    assert run(app, "audit", "verify").exit_code == 0


def test_a_detail_edited_with_raw_sql_is_detected(app, client, issue_token):
    issue(client, issue_token, 2)
    target = rows(app)[2]
    sql(app, "UPDATE audit_log SET detail = :detail WHERE seq = :seq", detail=json.dumps({"sha256": "0" * 64}),
        seq=target.seq)
    result = run(app, "audit", "verify")
    assert result.exit_code == 1
    assert f"broken at entry {target.seq}" in result.output and "was edited" in result.output


def test_an_edit_with_its_own_hash_recomputed_breaks_the_next_link(app, client, issue_token):
    issue(client, issue_token, 2)
    target = rows(app)[1]
    forged = replaced(target, actor="someone else")
    sql(app, "UPDATE audit_log SET actor = :actor, entry_hash = :hash WHERE seq = :seq", actor=forged.actor,
        hash=expected_hash(forged, target.prev_hash), seq=target.seq)
    result = run(app, "audit", "verify")
    assert result.exit_code == 1
    assert f"broken at entry {target.seq + 1}" in result.output and "does not link" in result.output


def test_a_deleted_middle_entry_is_detected(app, client, issue_token):
    issue(client, issue_token, 3)
    middle = rows(app)[3].seq
    sql(app, "DELETE FROM audit_log WHERE seq = :seq", seq=middle)
    result = run(app, "audit", "verify")
    assert result.exit_code == 1
    assert f"entry {middle} missing (deleted)" in result.output


def test_deleting_the_newest_entries_is_detected_by_the_head(app, client, issue_token):
    issue(client, issue_token, 3)
    last = rows(app)[-1].seq
    sql(app, "DELETE FROM audit_log WHERE seq >= :seq", seq=last - 1)
    result = run(app, "audit", "verify")
    assert result.exit_code == 1
    assert f"entries {last - 1} to {last} missing: the newest entries were deleted" in result.output


def test_an_entry_inserted_behind_the_heads_back_is_detected(app, client, issue_token):
    issue(client, issue_token, 1)
    last = rows(app)[-1]
    forged = replaced(last, seq=last.seq + 1, action="credential.issue", subject="http://x/forged",
                           detail={"forged": True})
    sql(app, "INSERT INTO audit_log (at, actor, action, subject, detail, seq, prev_hash, entry_hash) "
             "VALUES (:at, :actor, :action, :subject, :detail, :seq, :prev, :hash)",
        at=last.at, actor=last.actor, action=forged.action, subject=forged.subject,
        detail=json.dumps(forged.detail), seq=forged.seq, prev=last.entry_hash,
        hash=expected_hash(forged, last.entry_hash))
    result = run(app, "audit", "verify")
    assert result.exit_code == 1
    assert "added outside the chain" in result.output


def test_a_rewritten_chain_passes_alone_but_not_against_a_hash_written_down_earlier(app, client, issue_token):
    issue(client, issue_token, 2)
    chain = rows(app)
    recorded = f"{chain[-1].seq}:{chain[-1].entry_hash}"
    # Someone with write access edits entry 2 and recomputes every later hash and the head.
    prev = chain[0].entry_hash
    for row in chain[1:]:
        row = replaced(row, actor="rewritten") if row.seq == 2 else row
        own = expected_hash(row, prev)
        sql(app, "UPDATE audit_log SET actor = :actor, prev_hash = :prev, entry_hash = :own WHERE seq = :seq",
            actor=row.actor, prev=prev, own=own, seq=row.seq)
        prev = own
    sql(app, "UPDATE audit_chain_head SET hash = :hash", hash=prev)
    assert run(app, "audit", "verify").exit_code == 0
    result = run(app, "audit", "verify", "--expect", recorded)
    assert result.exit_code == 1 and "not the entry recorded earlier" in result.output


def test_bulk_cohort_entries_are_chained_one_lock_per_chunk(app, tmp_path):
    with app.app_context():
        ctx = get_context()
        make_session = app.extensions["issuer.sessionmaker"]
        lines = list(enumerate(({"email": r[0], "name": r[1], "achievement": r[2], "award_date": r[3],
                                 "grade": r[4]} for r in cohort_rows(app, 230)), start=2))
        counts = cohort.issue_cohort(make_session, ctx, lines, actor="test", chunk_size=50)
    assert counts.issued == 230
    chain = rows(app)
    assert sum(r.action == "credential.issue" for r in chain) == 230
    result = run(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"{len(chain)} entries, chain intact" in result.output


def test_revocation_with_award_follow_up_is_chained(app, client, issue_token):
    issue(client, issue_token, 1)
    with app.app_context():
        session = get_session()
        from issuer.models import Credential

        row = session.scalars(select(Credential)).first()
        revoke(session, app.extensions["issuer.rules"], row.id, reason="test", category="other", actor="t")
    assert rows(app)[-1].action == "credential.revoke"
    assert run(app, "audit", "verify").exit_code == 0


def test_the_migration_chains_entries_written_before_it(tmp_path):
    base = os.environ.get("ISSUER_TEST_DATABASE_URL")
    if base:
        from .conftest import _database_url

        url, (admin, schema) = _database_url(tmp_path)
    else:
        url, admin = f"sqlite:///{tmp_path / 'old.sqlite'}", None
    engine = make_engine(url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0007")
            for n in range(7):
                connection.execute(text("INSERT INTO audit_log (at, actor, action, subject, detail) VALUES "
                                        "(:at, 'old', 'old.action', :subject, :detail)"),
                                   {"at": f"2025-0{n + 1}-01 10:00:00.12345{n}", "subject": f"s{n}",
                                    "detail": json.dumps({"n": n, "é": "ü"})})
        migrate(engine)
        with engine.connect() as conn:
            report = audit.verify(conn)
            seqs = conn.execute(select(AuditEntry.id, AuditEntry.seq).order_by(AuditEntry.id)).all()
        assert report.ok and report.entries == 7, report.summary()
        assert [s for _, s in seqs] == list(range(1, 8))
    finally:
        engine.dispose()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


# --- several processes writing at once -----------------------------------------------------------------

def _writer(url: str, worker: int, transactions: int, ready, start) -> None:
    from sqlalchemy.orm import sessionmaker

    import issuer.models  # noqa: F401  (the hooks)

    engine = make_engine(url)
    make_session = sessionmaker(engine)
    ready.put(worker)
    start.wait()
    for n in range(transactions):
        with make_session() as session:
            if n % 5 == 4:  # now and then a bulk insert, as cohort.py does
                values = [{"at": issuer.models.utcnow(), "actor": f"w{worker}", "action": "bulk",
                           "subject": f"{worker}-{n}-{k}", "detail": {"k": k}} for k in range(10)]
                audit.chain_rows(session, values)
                session.execute(AuditEntry.__table__.insert(), values)
            else:
                for k in range(1 + n % 3):
                    session.add(AuditEntry(actor=f"w{worker}", action="orm", subject=f"{worker}-{n}-{k}",
                                           detail={"k": k}))
                session.flush()
            session.commit()
        # Let the others in: a writer in a tight loop would take SQLite's lock again before a waiting
        # process's busy handler wakes up, and the run would not interleave at all.
        time.sleep(0.005)
    engine.dispose()


def test_concurrent_writers_in_four_processes_make_one_unbroken_chain(app):
    url = app.config["ISSUER_DATABASE_URL"]
    before = len(rows(app))
    app.extensions["issuer.engine"].dispose()
    context = multiprocessing.get_context("spawn")
    ready, start = context.Queue(), context.Event()
    transactions = 40
    workers = [context.Process(target=_writer, args=(url, w, transactions, ready, start)) for w in range(4)]
    for process in workers:
        process.start()
    for _ in workers:
        ready.get(timeout=60)
    start.set()
    for process in workers:
        process.join(timeout=240)
        assert process.exitcode == 0
    per_worker = sum(10 if n % 5 == 4 else 1 + n % 3 for n in range(transactions))
    chain = rows(app)
    assert len(chain) == before + 4 * per_worker
    seqs = [r.seq for r in chain]
    assert len(set(seqs)) == len(seqs) == seqs[-1]  # no sequence repeated, none skipped
    with app.extensions["issuer.engine"].connect() as conn:
        report = audit.verify(conn)
        assert conn.execute(select(func.count()).select_from(AuditEntry.__table__)).scalar() == len(chain)
    assert report.ok, report.summary()
    # The workers really interleaved: the chain switches writer many times.
    writers = [r.actor for r in chain[before:]]
    assert sum(a != b for a, b in zip(writers, writers[1:], strict=False)) > 8
