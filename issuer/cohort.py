"""A cohort from CSV in bulk (issue #7): `issuer issue-batch`, 100,000 badges in a minute.

The per-row path (`issuing.issue_rows`, used by the staff console) spends one transaction, one lookup,
one status-index draw and two QR drawings on each badge. Here the same badges are made in chunks:

* The parent reads the CSV as a stream and plans each chunk: rows parsed and validated (a bad row is an
  error in the report, never a stop), the chunk's learner + achievement + date keys looked up in one query
  (rows already issued are reported "already issued" and not signed again), a public id and a random
  status index drawn for every new row (unique within the run, checked against the indexes the list
  already holds in the database).
* Worker processes (spawned, `--workers`, default the number of CPUs) hold the issuer context, keys loaded
  once each, and build, sign (eddsa-rdfc-2022, plus the VC-JWT for a recipient with a DID) and serialise a
  chunk's documents. With one worker (or a file of one chunk) the parent signs them itself.
* The parent stores each chunk, in file order, in ONE transaction of bulk inserts: credentials, status
  entries, one audit entry per badge, one outbox row per badge. The keys are looked up again inside that
  transaction, so a badge stored meanwhile (an earlier chunk repeating a row, the console, the API) is
  reported "already issued" rather than stored twice; the database's unique keys stay the last word. On
  an IntegrityError the chunk is rolled back, its remaining rows get fresh status indexes and are signed
  again, and it is retried; after a few failed attempts its rows go through the per-row path.
* QR codes are not drawn (about 9 ms a badge, more than everything else together): `qr_png`/`qr_svg` stay
  NULL and `qr.ensure` draws and stores them on the first request for them (public.py `_qr_codes`).
* A crash loses at most the chunks in flight; a rerun finds every committed row by its key and skips it.
  Memory is bounded: a few chunks in flight, the report written as it goes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import islice
from typing import Any

from sqlalchemy import JSON, Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit as audit_chain
from . import issuing, revocation, status
from .catalogue import CatalogueError
from .issuing import IssueError, IssuerContext, IssueRequest, RowResult
from .models import Achievement, AuditEntry, Credential, Notification, StatusEntry, StatusList, utcnow

CHUNK_ROWS = 1000
MAX_ATTEMPTS = 5  # a chunk whose transaction fails this often goes through the per-row path
# The settings a worker needs to load the same issuer context as the parent (identity.load_context).
CONTEXT_SETTINGS = ("ISSUER_BASE_URL", "ISSUER_NAME", "ISSUER_URL", "ISSUER_EMAIL", "ISSUER_KEY_DIR",
                    "ISSUER_KEY_PASSPHRASE", "ISSUER_JWT_ALGORITHM")

Key = tuple[str, str, date]  # recipient email, achievement code, award date: the idempotency key


# --- signing: the same in a worker process and in the parent ------------------------------------------------

@dataclass
class Signer:
    """Builds and signs badges; the achievement documents are built once per achievement."""

    ctx: IssuerContext
    entries: dict[str, dict]  # achievement code -> catalogue entry, as loaded at the start of the run
    _documents: dict[str, dict] = field(default_factory=dict)
    _texts: dict[str, tuple[dict, str]] = field(default_factory=dict)

    def achievement(self, code: str) -> dict:
        document = self._documents.get(code)
        if document is None:
            document = issuing.achievement_document(self.ctx, Achievement(code=code, entry=self.entries[code]))
            self._documents[code] = document
        return document

    def sign(self, items: list[tuple[str, IssueRequest, dict]], now: datetime) -> list[tuple[str, str, str | None]]:
        """(public id, request, credentialStatus) → (stored text, its sha256, VC-JWT or None), in order."""
        out = []
        for public_id, req, entry in items:
            signed, token = issuing.build_signed(self.ctx, None, req, public_id, now, entry,
                                                 achievement=self.achievement(req.achievement))
            text = self.serialise(req.achievement, signed)
            out.append((text, hashlib.sha256(text.encode("utf-8")).hexdigest(), token))
        return out


    def serialise(self, code: str, signed: dict) -> str:
        """`issuing.serialise(signed)`, byte for byte, in about half the time: the embedded achievement
        (two thirds of a badge, the same in every badge of it) is serialised once per achievement and its
        text spliced in. json's indented output is pure Python; the splice is exact because the achievement
        always sits at the same depth and JSON text holds no raw newline inside a string."""
        subject = signed.get("credentialSubject")
        achievement = subject.get("achievement") if isinstance(subject, dict) else None
        if not isinstance(achievement, dict):
            return issuing.serialise(signed)
        cached = self._texts.get(code)
        if cached is None or cached[0] != achievement:
            # Nested at depth 2 (document > credentialSubject > achievement): 4 more spaces a line.
            cached = (achievement, issuing.serialise(achievement).replace("\n", "\n    "))
            self._texts[code] = cached
        text = issuing.serialise({**signed, "credentialSubject": {**subject, "achievement": _SPLICE}})
        head, found, tail = text.partition(f'"{_SPLICE}"')
        return head + cached[1] + tail if found else issuing.serialise(signed)


_SPLICE = "cohort-splice-" + secrets.token_hex(16)  # a string no document holds
_WORKER: Signer | None = None


def _start_worker(settings: dict | None, entries: dict[str, dict], ctx: IssuerContext | None = None) -> None:
    """Pool initializer: the issuer context for the worker's life (a forked worker has the parent's, keys
    loaded; a spawned one loads the keys once, from the same settings)."""
    global _WORKER
    if ctx is None:
        from .identity import load_context

        ctx = load_context(settings)
    _WORKER = Signer(ctx, entries)


def _sign_in_worker(items: list[tuple[str, IssueRequest, dict]], now: datetime) -> list[tuple[str, str, str | None]]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.sign(items, now)


# --- status indexes ---------------------------------------------------------------------------------------

class StatusIndexes:
    """Random free indexes of the open status list, drawn in the parent for whole chunks.

    The indexes the list holds are loaded once (a bitmap of its size) and every index drawn in this run is
    marked, so indexes are unique within a chunk and the run; the database's unique key still decides
    against other processes (a clash rolls the chunk back and `refresh` reloads the bitmap). The list is
    closed once it is ``revocation.FULL_AT`` used, as `revocation.allocate` does, and the next one opened."""

    def __init__(self, make_session: Callable[[], Session], base_url: str, purpose: str = revocation.PURPOSE,
                 rng: Any = secrets) -> None:
        self.make_session, self.base_url, self.purpose, self.rng = make_session, base_url, purpose, rng
        self.list_id: str | None = None
        self.size = 0
        self.used = 0
        self.taken = bytearray()

    def _open(self) -> None:
        with self.make_session() as session:
            row = revocation._open_list(session, self.purpose)
            self.list_id, self.size = row.id, row.size
            session.commit()
        self._load()

    def _load(self) -> None:
        with self.make_session() as session:
            indexes = session.scalars(select(StatusEntry.list_index).where(StatusEntry.list_id == self.list_id)).all()
        self.taken = bytearray(self.size)
        for index in indexes:
            self.taken[index] = 1
        self.used = len(indexes)

    def refresh(self) -> None:
        """Reload what the database holds (after a clash with another process)."""
        if self.list_id is not None:
            taken = self.taken
            self._load()
            # Keep what this run drew too: rows of chunks still in flight hold those indexes.
            self.taken = bytearray(a | b for a, b in zip(self.taken, taken, strict=True))
            self.used = sum(self.taken)

    def _close(self) -> None:
        with self.make_session() as session:
            session.execute(update(StatusList).where(StatusList.id == self.list_id).values(full=True))
            session.commit()
        self.list_id = None

    def draw(self, count: int) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        while len(out) < count:
            if self.list_id is None:
                self._open()
            if self.used >= self.size * revocation.FULL_AT:
                self._close()
                continue
            index = self.rng.randbelow(self.size)
            if self.taken[index]:
                continue
            self.taken[index] = 1
            self.used += 1
            out.append((self.list_id, index))
        return out

    def entry(self, list_id: str, index: int) -> dict:
        return status.status_entry(revocation.list_url(self.base_url, list_id), index, self.purpose)


# --- a chunk ----------------------------------------------------------------------------------------------

@dataclass
class Row:
    line: int
    req: IssueRequest | None = None
    key: Key | None = None
    result: RowResult | None = None  # decided at planning (an error, or already issued)
    public_id: str | None = None  # a new badge to sign and store
    slot: tuple[str, int] | None = None  # (status list id, index)
    duplicate_of: int | None = None  # the same award on an earlier line still in flight


@dataclass
class Chunk:
    rows: list[Row]
    now: datetime
    signed: Future | list | None = None

    def to_sign(self) -> list[Row]:
        return [r for r in self.rows if r.public_id is not None and r.result is None]


def _existing(session: Session, keys: Iterable[Key]) -> dict[Key, tuple[str, str]]:
    """The badges already stored for these keys, in one query: key → (public id, URL)."""
    wanted = set(keys)
    found: dict[Key, tuple[str, str]] = {}
    emails = sorted({k[0] for k in wanted})
    for start in range(0, len(emails), 2000):
        rows = session.execute(select(
            Credential.recipient_email, Credential.achievement_code, Credential.awarded_on, Credential.id,
            Credential.credential_url).where(Credential.recipient_email.in_(emails[start:start + 2000])))
        for email, code, awarded, public_id, url in rows:
            key = (email, code, awarded)
            if key in wanted:
                found[key] = (public_id, url)
    return found


@dataclass
class Counts:
    issued: int = 0
    already: int = 0
    errors: int = 0

    def add(self, results: Iterable[RowResult]) -> None:
        for r in results:
            if r.status == "issued":
                self.issued += 1
            elif r.status == "already issued":
                self.already += 1
            else:
                self.errors += 1


class CohortRun:
    """One run of `issue_cohort`: the catalogue snapshot, the status indexes and the chunks in flight."""

    def __init__(self, make_session: Callable[[], Session], ctx: IssuerContext, *, actor: str,
                 rng: Any = secrets) -> None:
        self.make_session, self.ctx, self.actor = make_session, ctx, actor
        with make_session() as session:
            achievements = session.scalars(select(Achievement)).all()
            self.entries = {a.code: a.entry for a in achievements}
            self.retired = {a.code for a in achievements if a.retired}
        self.broken: dict[str, str] = {}
        for code, entry in self.entries.items():
            try:
                issuing.microcredential(Achievement(code=code, entry=entry))
            except CatalogueError as exc:
                self.broken[code] = str(exc)
        self.signer = Signer(ctx, self.entries)
        self.indexes = StatusIndexes(make_session, ctx.base_url, rng=rng)
        self.in_flight: dict[Key, int] = {}  # keys of rows planned but not yet stored → their line

    # planning, in the parent --------------------------------------------------------------------------

    def plan(self, lines: list[tuple[int, dict]]) -> Chunk:
        now = utcnow().replace(microsecond=0)
        rows: list[Row] = []
        first: dict[Key, Row] = {}
        for line, raw in lines:
            row = Row(line)
            rows.append(row)
            try:
                req = issuing.csv_row_request(raw)
                self._check_achievement(req.achievement)
            except (IssueError, CatalogueError) as exc:
                row.result = RowResult(line, "error", str(exc))
                continue
            row.req = req
            row.key = (req.email, req.achievement, req.awarded_on or now.date())
            if row.key in first:  # the same award twice in this chunk: the first one is issued
                row.duplicate_of = first[row.key].line
            elif row.key in self.in_flight:  # ... or in a chunk planned before, not stored yet
                row.duplicate_of = self.in_flight[row.key]
            else:
                first[row.key] = row
        with self.make_session() as session:
            found = _existing(session, first)
        new = []
        for key, row in first.items():
            if key in found:
                public_id, url = found[key]
                row.result = RowResult(row.line, "already issued", public_id, url)
            else:
                new.append(row)
                self.in_flight[key] = row.line
        for row, slot in zip(new, self.indexes.draw(len(new)), strict=True):
            row.public_id, row.slot = issuing.new_public_id(), slot
        return Chunk(rows, now)

    def _check_achievement(self, code: str) -> None:
        # The messages of issuing.issue, so the report reads the same on both paths.
        if code not in self.entries:
            raise IssueError(f"unknown achievement {code!r}; see GET /api/v1/achievements", "achievement", 404)
        if code in self.retired:
            raise IssueError(f"achievement {code!r} is retired and no longer issued", "achievement", 409)
        if code in self.broken:
            raise CatalogueError(self.broken[code])

    def items(self, chunk: Chunk) -> list[tuple[str, IssueRequest, dict]]:
        return [(r.public_id, r.req, self.indexes.entry(*r.slot)) for r in chunk.to_sign()]

    # storing, in the parent ---------------------------------------------------------------------------

    def store(self, chunk: Chunk) -> list[RowResult]:
        """Store a planned and signed chunk in one transaction; the rows' results in line order."""
        signed = chunk.signed.result() if isinstance(chunk.signed, Future) else chunk.signed
        if signed is None:
            signed = self.signer.sign(self.items(chunk), chunk.now)
        chunk.signed = None
        todo = chunk.to_sign()
        by_row = dict(zip(map(id, todo), signed, strict=True))
        stored = None
        for _ in range(MAX_ATTEMPTS):
            try:
                stored = self._write(chunk, todo, by_row)
                break
            except IntegrityError:
                # A clash with another process (a status index, or the same award stored meanwhile): the
                # chunk was rolled back; redraw the indexes of the rows still to store, sign them again.
                self.indexes.refresh()
                with self.make_session() as session:
                    found = _existing(session, [r.key for r in todo])
                todo = [r for r in todo if r.key not in found]
                for row, slot in zip(todo, self.indexes.draw(len(todo)), strict=True):
                    row.slot = slot
                by_row = dict(zip(map(id, todo), self.signer.sign(self.items_of(todo), chunk.now), strict=True))
        if stored is None:
            stored = self._one_by_one(chunk, chunk.to_sign())
        for row in chunk.rows:
            if row.key is not None and self.in_flight.get(row.key) == row.line:
                del self.in_flight[row.key]
        return self._results(chunk, stored)

    def items_of(self, rows: list[Row]) -> list[tuple[str, IssueRequest, dict]]:
        return [(r.public_id, r.req, self.indexes.entry(*r.slot)) for r in rows]

    def _write(self, chunk: Chunk, todo: list[Row], by_row: dict) -> dict[Key, tuple[str, str, bool]]:
        now, actor, ctx = chunk.now, self.actor, self.ctx
        with self.make_session() as session:
            keys = {r.key for r in chunk.rows if r.key is not None and r.result is None}
            found = _existing(session, keys)
            stored: dict[Key, tuple[str, str, bool]] = {k: (*v, False) for k, v in found.items()}
            credentials, entries, audit, outbox = [], [], [], []
            for row in todo:
                if row.key in found:
                    continue
                req, (text, digest, token) = row.req, by_row[id(row)]
                url = ctx.credential_url(row.public_id)
                awarded = row.key[2]
                credentials.append({
                    "id": row.public_id, "credential_url": url, "achievement_code": req.achievement,
                    "recipient_email": req.email, "recipient_name": req.name, "recipient_did": req.did,
                    "awarded_on": awarded, "document": text, "document_sha256": digest, "jwt": token,
                    "idempotency_key": None, "request_digest": req.digest(), "issued_by": actor,
                    "created_at": now, "qr_png": None, "qr_svg": None})
                entries.append({"list_id": row.slot[0], "list_index": row.slot[1], "credential_kind": "badge",
                                "credential_id": row.public_id, "revoked_at": None})
                audit.append({"at": now, "actor": actor, "action": "credential.issue", "subject": url,
                              "detail": {"achievement": req.achievement, "awarded_on": awarded.isoformat(),
                                         "sha256": digest, "jwt": token is not None}})
                # As mail.enqueue_issued: the row only; the message is rendered when it is delivered.
                outbox.append({"id": str(uuid.uuid4()), "kind": "badge_issued", "credential_id": row.public_id,
                               "to_address": req.email, "subject": "", "body_text": "", "body_html": "",
                               "status": "pending", "attempts": 0, "last_error": None, "next_attempt_at": now,
                               "created_at": now, "sent_at": None})
                stored[row.key] = (row.public_id, url, True)
            if credentials:
                copy = session.get_bind().dialect.driver == "psycopg"
                for model, values in ((StatusEntry, entries), (Credential, credentials), (AuditEntry, audit),
                                      (Notification, outbox)):
                    if model is AuditEntry:  # chained here: the head is locked from now to the commit
                        audit_chain.chain_rows(session, values)
                    if copy:
                        _copy(session, model.__table__, values)
                    else:
                        session.execute(insert(model.__table__), values)
            session.commit()
        return stored

    def _one_by_one(self, chunk: Chunk, todo: list[Row]) -> dict[Key, tuple[str, str, bool]]:
        """The last resort for a chunk that kept failing: the per-row path, each row its own transaction."""
        stored = {}
        for row in todo:
            session = self.make_session()
            try:
                outcome = issuing.issue(session, self.ctx, row.req, actor=self.actor, now=chunk.now)
                stored[row.key] = (outcome.credential.id, outcome.credential.credential_url, outcome.created)
            finally:
                session.close()
        return stored

    def _results(self, chunk: Chunk, stored: dict[Key, tuple[str, str, bool]]) -> list[RowResult]:
        results = []
        for row in chunk.rows:
            if row.result is not None:
                results.append(row.result)
            elif row.key in stored:
                public_id, url, created = stored[row.key]
                created = created and row.duplicate_of is None
                results.append(RowResult(row.line, "issued" if created else "already issued", public_id, url))
            else:
                results.append(RowResult(row.line, "error", f"the same award is on line {row.duplicate_of}, "
                                                            "which was not issued; run the file again"))
        return results


def _copy(session: Session, table: Table, rows: list[dict]) -> None:
    """Bulk insert on PostgreSQL (psycopg 3) by COPY, in the session's transaction: psycopg's executemany
    sends one INSERT per row, and the server's work per statement was most of a chunk's time there. JSON
    columns are written as json.dumps text, as SQLAlchemy's JSON type binds them; a unique key violated
    raises SQLAlchemy's IntegrityError, as an INSERT would."""
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    columns = list(rows[0])
    as_json = [isinstance(table.c[name].type, JSON) for name in columns]
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    cursor = session.connection().connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([json.dumps(row[c]) if j and row[c] is not None else row[c]
                                for c, j in zip(columns, as_json, strict=True)])
    except dialect.loaded_dbapi.IntegrityError as exc:
        raise IntegrityError(statement, None, exc) from exc
    finally:
        cursor.close()


def _chunks(rows: Iterable[tuple[int, dict]], size: int) -> Iterator[list[tuple[int, dict]]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _pool(make_session: Callable[[], Session], ctx: IssuerContext, workers: int, settings: dict | None,
          entries: dict[str, dict], start_method: str | None) -> ProcessPoolExecutor:
    """Worker processes: forked where the platform can (they share the parent's loaded modules and keys,
    so they start at once and add little memory), else spawned (each imports the issuer and loads the
    keys from `settings`). Before forking, the engine's pooled connections are closed, so no database
    connection is ever shared with a worker (workers never touch the database)."""
    import multiprocessing

    method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    if method == "fork":
        bind = getattr(make_session, "kw", {}).get("bind")
        if bind is not None:
            bind.dispose()
        initargs: tuple = (None, entries, ctx)
    else:
        if settings is None:
            raise ValueError("settings are needed to spawn worker processes")
        initargs = ({k: settings.get(k) for k in CONTEXT_SETTINGS}, entries)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_start_worker, initargs=initargs)


def issue_cohort(make_session: Callable[[], Session], ctx: IssuerContext, rows: Iterable[tuple[int, dict]], *,
                 actor: str, workers: int = 1, settings: dict | None = None, chunk_size: int = CHUNK_ROWS,
                 on_chunk: Callable[[list[RowResult]], None] | None = None, rng: Any = secrets,
                 start_method: str | None = None) -> Counts:
    """Issue `rows` ((line, CSV row) pairs, read lazily) in chunks; `on_chunk` gets each chunk's results
    in line order once the chunk is stored. With `workers` > 1, `settings` (the app's ISSUER_* config)
    lets spawned worker processes load the same issuer context; `start_method` is "fork" or "spawn"
    (default: fork where available)."""
    run = CohortRun(make_session, ctx, actor=actor, rng=rng)
    counts = Counts()
    pool = None
    if workers > 1:
        pool = _pool(make_session, ctx, workers, settings, run.entries, start_method)
    pending: deque[Chunk] = deque()
    limit = workers + 1  # chunks planned ahead: every worker busy while the parent stores one

    def finish(chunk: Chunk) -> None:
        results = run.store(chunk)
        counts.add(results)
        if on_chunk:
            on_chunk(results)

    try:
        for lines in _chunks(rows, chunk_size):
            chunk = run.plan(lines)
            items = run.items(chunk)
            if pool is not None and items:
                chunk.signed = pool.submit(_sign_in_worker, items, chunk.now)
            elif not items:
                chunk.signed = []
            pending.append(chunk)
            while len(pending) > (limit if pool is not None else 0):
                finish(pending.popleft())
        while pending:
            finish(pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return counts
