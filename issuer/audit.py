"""The audit log as a hash chain (issue #9): every entry carries a sequence number, the hash of the entry
before it and its own hash, and one chain-head row holds the last sequence number and hash.

An entry's hash is the sha256 of one canonical JSON array (no spaces, keys sorted, ASCII only):

    [seq, at, actor, action, subject, detail, prev_hash]

with ``at`` in UTC as ISO 8601 with microseconds ("2026-11-25T18:31:45.123456+00:00"). The first entry's
``prev_hash`` is 64 zeros. Changing any entry changes its hash and breaks the link from the next one;
deleting one leaves a gap in the sequence; cutting off the newest leaves the head pointing past the end.

Chaining happens in one place, so no caller has to remember it:

* ORM writers just ``session.add(AuditEntry(...))``. The session hooks below hold new entries back until
  the commit, flush everything else first, then lock the head and chain the entries. The head is thus
  the last lock a transaction takes and is held only for its commit: writers in several processes form
  one line, and never wait on each other in a circle (no deadlocks with rows they also update).
* Bulk writers (cohort.py) call `chain_rows` on their row dicts just before inserting them.

The head is locked with ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite a no-op UPDATE first takes the
database's write lock (waiting like any other writer), so the head read after it is the newest.

A chain proves the log was not edited by someone who did not also recompute every later hash and the
head; `verify` prints the head's hash so it can be written down elsewhere, and ``--expect SEQ:HASH``
checks that an entry recorded earlier is still the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import event, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .models import AuditChainHead, AuditEntry, utcnow

GENESIS = "0" * 64
_HEAD = AuditChainHead.__table__
_LOG = AuditEntry.__table__
_HELD = "issuer.audit.held"  # session.info: entries added in this transaction, not yet chained
_CHAINING = "issuer.audit.chaining"  # session.info: the commit's last flush, which chains them


# --- the hash -------------------------------------------------------------------------------------------

def utc(at: datetime) -> datetime:
    """The stored time in UTC (a naive time, as SQLite gives it back, is UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def body(at: datetime, actor: str | None, action: str | None, subject: str | None, detail) -> str:
    """The middle of the canonical array (everything but seq and prev_hash): made before the head is
    locked, so the locked part is only the concatenation and sha256."""
    return _json([utc(at).isoformat(timespec="microseconds"), actor, action, subject, detail])[1:-1]


def link(seq: int, body_text: str, prev_hash: str) -> str:
    """The entry's hash: sha256 of the canonical [seq, at, actor, action, subject, detail, prev_hash]."""
    return hashlib.sha256(f'[{int(seq)},{body_text},"{prev_hash}"]'.encode("ascii")).hexdigest()


def canonical(seq: int, at: datetime, actor, action, subject, detail, prev_hash: str) -> bytes:
    """The hashed bytes, written out in full (what `link` computes from a prepared body)."""
    return _json([seq, utc(at).isoformat(timespec="microseconds"), actor, action, subject, detail,
                  prev_hash]).encode("ascii")


# --- the head -------------------------------------------------------------------------------------------

def _lock_head(conn: Connection) -> tuple[int, str]:
    if conn.dialect.name == "sqlite":
        conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq))
    row = conn.execute(select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()).first()
    if row is None:
        raise RuntimeError("the audit chain head is missing: upgrade the database (`issuer init`)")
    return int(row.seq), row.hash


def _advance(conn: Connection, seq: int, hash_: str) -> None:
    conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(seq=seq, hash=hash_))


def chain_rows(session: Session, rows: list[dict]) -> None:
    """Bulk writers: fill ``seq``, ``prev_hash`` and ``entry_hash`` of each audit row dict (keys at,
    actor, action, subject, detail; detail JSON-native with string keys), in list order, and move the
    head. Call it just before inserting the rows, in the same transaction: the head stays locked until
    that transaction ends. One lock for the whole list."""
    if not rows:
        return
    bodies = []
    for row in rows:
        row["at"] = utc(row["at"])
        bodies.append(body(row["at"], row["actor"], row["action"], row.get("subject"), row.get("detail")))
    conn = session.connection()
    seq, prev = _lock_head(conn)
    for row, text in zip(rows, bodies, strict=True):
        seq += 1
        row["seq"], row["prev_hash"] = seq, prev
        row["entry_hash"] = prev = link(seq, text, prev)
    _advance(conn, seq, prev)


def _chain_entries(session: Session, entries: list[AuditEntry]) -> None:
    bodies = []
    for entry in entries:
        entry.at = utc(entry.at or utcnow())
        if entry.detail is not None:  # stored as read back: tuples become lists, keys strings
            entry.detail = json.loads(json.dumps(entry.detail))
        bodies.append(body(entry.at, entry.actor, entry.action, entry.subject, entry.detail))
    conn = session.connection()
    seq, prev = _lock_head(conn)
    for entry, text in zip(entries, bodies, strict=True):
        seq += 1
        entry.seq, entry.prev_hash = seq, prev
        entry.entry_hash = prev = link(seq, text, prev)
    _advance(conn, seq, prev)


# --- the session hooks: every AuditEntry added through the ORM is chained at commit ---------------------

@event.listens_for(Session, "before_flush")
def _hold_or_chain(session: Session, _flush_context, _instances) -> None:
    new = [obj for obj in session.new if isinstance(obj, AuditEntry)]
    if not new:
        return
    new.sort(key=lambda obj: inspect(obj).insert_order)
    if session.info.get(_CHAINING):
        _chain_entries(session, new)
        return
    # An earlier flush in the transaction (autoflush, an explicit flush): keep the entries for the commit,
    # so the head is not locked while the transaction goes on to take other locks.
    for obj in new:
        session.expunge(obj)
    session.info.setdefault(_HELD, []).extend(new)


@event.listens_for(Session, "before_commit")
def _chain_at_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # the outermost commit chains
    if not session.info.get(_HELD) and not any(isinstance(obj, AuditEntry) for obj in session.new):
        return
    session.flush()  # everything else first: its row locks are taken before the head's
    session.add_all(session.info.pop(_HELD, []))
    session.info[_CHAINING] = True
    try:
        session.flush()
    finally:
        session.info.pop(_CHAINING, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_held(session: Session, transaction) -> None:
    if transaction.parent is None:  # rolled back or closed: the held entries go with the transaction
        session.info.pop(_HELD, None)


# --- verification ----------------------------------------------------------------------------------------

@dataclass
class ChainReport:
    entries: int
    ok: bool
    problem: str | None = None
    seq: int | None = None  # where the first problem is
    head_seq: int | None = None
    head_hash: str | None = None

    def summary(self) -> str:
        if self.ok:
            return (f"{self.entries} entries, chain intact; head {self.head_seq} sha256 {self.head_hash}")
        return f"audit chain broken at entry {self.seq}: {self.problem}"


def _entries(conn: Connection, page: int = 5000) -> Iterator:
    columns = (_LOG.c.id, _LOG.c.seq, _LOG.c.at, _LOG.c.actor, _LOG.c.action, _LOG.c.subject, _LOG.c.detail,
               _LOG.c.prev_hash, _LOG.c.entry_hash)
    last = 0
    while True:
        rows = conn.execute(select(*columns).where(_LOG.c.seq > last).order_by(_LOG.c.seq).limit(page)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify(conn: Connection, expect: dict[int, str] | None = None) -> ChainReport:
    """Walk the chain from entry 1: the first edited, inserted, deleted or cut-off entry, or intact.
    ``expect`` maps sequence numbers to hashes written down earlier (``issuer audit verify --expect``)."""
    expect = dict(expect or {})
    head = conn.execute(select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)).first()
    if head is None:
        return ChainReport(0, False, "the chain head row is missing", 0)
    unchained = conn.execute(select(_LOG.c.id).where(_LOG.c.seq.is_(None)).limit(1)).first()
    if unchained is not None:
        return ChainReport(0, False, f"entry id {unchained.id} has no place in the chain (inserted outside it)",
                           None, head.seq, head.hash)
    want, prev, count = 1, GENESIS, 0

    def broken(problem: str, seq: int) -> ChainReport:
        return ChainReport(count, False, problem, seq, head.seq, head.hash)

    for row in _entries(conn):
        if row.seq != want:
            missing = f"entry {want}" if row.seq == want + 1 else f"entries {want} to {row.seq - 1}"
            return broken(f"{missing} missing (deleted); the next is entry {row.seq} (id {row.id})", want)
        if row.prev_hash != prev:
            return broken(f"entry {row.seq} (id {row.id}) does not link to entry {row.seq - 1}: an entry "
                          "was edited, deleted or inserted there and the chain renumbered", row.seq)
        computed = link(row.seq, body(row.at, row.actor, row.action, row.subject, row.detail), prev)
        if computed != row.entry_hash:
            return broken(f"entry {row.seq} (id {row.id}, {row.action}) was edited: its content no longer "
                          "matches its hash", row.seq)
        if row.seq in expect and expect.pop(row.seq) != row.entry_hash:
            return broken(f"entry {row.seq} (id {row.id}) is not the entry recorded earlier: its hash "
                          "differs from the one expected", row.seq)
        prev, want, count = row.entry_hash, want + 1, count + 1
    last = want - 1
    if expect:
        seq = min(expect)
        return broken(f"entry {seq}, recorded earlier, is no longer in the log", seq)
    if head.seq > last:
        missing = f"entry {last + 1}" if head.seq == last + 1 else f"entries {last + 1} to {head.seq}"
        return broken(f"{missing} missing: the newest entries were deleted (the head records {head.seq})",
                      last + 1)
    if head.seq < last:
        return broken(f"entries after {head.seq} were added outside the chain (the head records {head.seq}, "
                      f"the log goes to {last})", head.seq + 1)
    if head.hash != prev:
        return broken(f"entry {last} is not the one the head records: it was replaced", last)
    return ChainReport(count, True, None, None, head.seq, head.hash)
