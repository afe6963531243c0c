"""Load run for issue #9, item 7: many clients issue, verify, read and revoke at once; then nothing may be lost.

    .venv/bin/python bench/load.py [--clients 50] [--seconds 60] [--workers 4] [--worker-class gthread]
                                   [--threads 4] [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]
                                   [--sqlite] [--json PATH]

Starts the production server (`gunicorn 'issuer:create_app()'`, started by bench/http_load.py's `Server`) on
a free 127.0.0.1 port against a fresh PostgreSQL schema (dropped at the end; `--sqlite` uses a temporary
SQLite file instead), runs `issuer init` and `issuer token create --scopes issue,revoke`, then lets
`--clients` threads, each with its own HTTP session, pick one of these at random for `--seconds` seconds:

- `issue`: `POST /api/v1/credentials` with an Idempotency-Key, half of them to a recipient DID (so the badge
  also has a VC-JWT); some are sent again afterwards (`issue-replay`: 200 and the same badge) and some twice
  at the same moment from two connections (`issue-contested`: one 201, one 200, the same badge);
- `verify-json` / `verify-jwt`: `POST /api/v1/verify` with a badge as JSON or as its VC-JWT (verified);
- `page`: `GET /credentials/<id>` as a browser asks for it (the page's verdict: passed);
- `status`: `GET /status/<list>`, the signed status list;
- `revoke`: `POST /api/v1/credentials/<id>/revoke` of a badge set aside for it when it was issued; some
  are sent twice at the same moment (`revoke-contested`: one revocation, one audit entry);
- `verify-revoked`: `POST /api/v1/verify` with a revoked badge (not verified, the status check failed).

Every status code is counted per kind. Afterwards the run checks, and prints ✔ or ✘ for each:
no 5xx and no failed connection; every answer as expected; every badge a client saw is in the database
and served byte for byte as stored; no duplicate (one row per Idempotency-Key, no row no client saw); no
status index given twice; every revocation set in the signed status list fetched over HTTP (its proof
checked with the key from did.json, then decoded) and no other bit set; the audit log holds exactly one
`credential.issue` per badge and one `credential.revoke` per revocation, and nothing else was added.
The exit status is 1 when any check fails.

The service runs with ISSUER_DEVELOPMENT=1 (the run's throwaway keys are plaintext in a temporary folder)
and ISSUER_RATE_LIMITS=off: this run measures capacity and correctness under concurrency; all clients
come from one loopback address, which the public endpoints' rate limits would rightly throttle as one
abusive client. Traffic goes to 127.0.0.1 only; every request has a 60 s timeout and the run is bounded
(at most 500 clients, 600 s).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import DID, ROOT, Server, server_cpu  # noqa: E402  (bench/http_load.py)
from scaleout import schema_url  # noqa: E402  (bench/scaleout.py)

DEFAULT_DATABASE_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"

# What a client does, and how often (relative weights). A kind that has nothing to work on yet (no badge
# to verify, none set aside for revocation) issues a badge instead.
WEIGHTS = {"issue": 4, "verify-json": 3, "verify-jwt": 2, "page": 2, "status": 1, "revoke": 1,
           "verify-revoked": 1}
REVOKE_SHARE = 0.2  # of the badges issued, set aside to be revoked
REPLAY_SHARE = 0.1  # of the issue requests, sent again afterwards with the same Idempotency-Key
CONTESTED_SHARE = 0.05  # of the issue requests and of the revocations, sent twice at the same moment (--contested)
TIMEOUT = 60

# Settings of the service under load; see the module's docstring for why.
SERVICE_ENV = {"ISSUER_DEVELOPMENT": "1", "ISSUER_RATE_LIMITS": "off"}


# --- what the clients saw ---------------------------------------------------------------------------

@dataclass
class Badge:
    id: str
    idempotency_key: str
    credential: dict
    jwt: str | None

    @property
    def status_entry(self) -> dict:
        return self.credential.get("credentialStatus") or {}


@dataclass
class Pool:
    """Badges the clients were answered with, shared between the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: dict[str, Badge] = field(default_factory=dict)
    by_key: dict[str, set[str]] = field(default_factory=dict)  # Idempotency-Key → badge ids answered
    kept: list[Badge] = field(default_factory=list)  # never revoked: must verify
    to_revoke: list[Badge] = field(default_factory=list)
    revoked: dict[str, Badge] = field(default_factory=dict)
    lists: set[str] = field(default_factory=set)  # status list URLs

    def add(self, body: dict, key: str, *, set_aside: bool = False) -> Badge:
        badge = Badge(body["id"], key, body["credential"], body.get("jwt"))
        with self.lock:
            self.by_key.setdefault(key, set()).add(badge.id)
            if badge.id in self.issued:
                return self.issued[badge.id]
            self.issued[badge.id] = badge
            (self.to_revoke if set_aside else self.kept).append(badge)
            if badge.status_entry.get("statusListCredential"):
                self.lists.add(badge.status_entry["statusListCredential"])
        return badge

    def pick(self, rng: random.Random, which: str) -> Badge | None:
        with self.lock:
            if which == "kept":
                return rng.choice(self.kept) if self.kept else None
            if which == "kept-jwt":
                with_jwt = self.kept[-200:]  # recent ones: enough variety, no scan of the whole list
                with_jwt = [b for b in with_jwt if b.jwt]
                return rng.choice(with_jwt) if with_jwt else None
            if which == "revoked":
                return rng.choice(list(self.revoked.values())) if self.revoked else None
            if which == "to-revoke":
                return self.to_revoke.pop(rng.randrange(len(self.to_revoke))) if self.to_revoke else None
        raise ValueError(which)

    def mark_revoked(self, badge: Badge) -> None:
        with self.lock:
            self.revoked[badge.id] = badge


@dataclass
class Tally:
    """Every answer, per kind: status codes, latencies and what was not as expected."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: dict[str, Counter] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    unexpected: Counter = field(default_factory=Counter)
    transport: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int | None, seconds: float, problem: str | None = None) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            counts = self.statuses.setdefault(kind, Counter())
            counts[str(status) if status is not None else "no answer"] += 1
            if status is None:
                self.transport[kind] += 1
            elif problem:
                self.unexpected[kind] += 1
            if problem and len(self.samples) < 30:
                self.samples.append(f"{kind}: {problem}")

    def problem(self, kind: str, message: str) -> None:
        """Something wrong that no single answer shows (two answers that disagree)."""
        with self.lock:
            self.unexpected[kind] += 1
            if len(self.samples) < 30:
                self.samples.append(f"{kind}: {message}")

    def server_errors(self) -> int:
        return sum(n for counts in self.statuses.values() for code, n in counts.items()
                   if code.isdigit() and int(code) >= 500)


# --- the clients ------------------------------------------------------------------------------------

class Client:
    """One simulated caller: its own connection, its own random sequence, until the deadline."""

    def __init__(self, number: int, *, base: str, token: str, codes: list[str], run: str, pool: Pool,
                 tally: Tally, seed: str, contested: float = CONTESTED_SHARE) -> None:
        self.number, self.base, self.codes, self.run = number, base, codes, run
        self.contested = contested
        self.pool, self.tally = pool, tally
        self.rng = random.Random(f"{seed}-{number}")
        self.session = requests.Session()
        self.auth = {"Authorization": f"Bearer {token}"}
        self.sequence = 0

    def call(self, kind: str, method: str, path: str, session: requests.Session | None = None,
             **kwargs) -> tuple[requests.Response | None, float]:
        start = time.perf_counter()
        try:
            response = (session or self.session).request(method, self.base + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            elapsed = time.perf_counter() - start
            self.tally.record(kind, None, elapsed, f"{method} {path}: {type(exc).__name__}: {exc}"[:300])
            return None, elapsed
        return response, time.perf_counter() - start

    def expect(self, kind: str, response: requests.Response | None, elapsed: float, statuses: tuple[int, ...],
               check: Callable[[requests.Response], str | None] | None = None) -> bool:
        """Record the answer; True when it was one of ``statuses`` and passed ``check``."""
        if response is None:
            return False
        problem = None
        if response.status_code not in statuses:
            problem = f"{response.request.method} {urlsplit(response.url).path}: {response.status_code} " \
                      f"{response.text[:200]!r}"
        elif check is not None:
            problem = check(response)
        self.tally.record(kind, response.status_code, elapsed, problem)
        return problem is None

    # - issuing -

    def issue_body(self) -> tuple[str, dict]:
        self.sequence += 1
        key = f"{self.run}-{self.number}-{self.sequence}"
        recipient: dict = {"email": f"learner-{self.number}-{self.sequence}@load.example",
                           "name": f"Learner {self.number}-{self.sequence}"}
        if self.rng.random() < 0.5:
            recipient["did"] = DID  # the badge then also has a VC-JWT
        return key, {"achievement": self.codes[self.sequence % len(self.codes)], "recipient": recipient}

    def issue(self) -> None:
        key, body = self.issue_body()
        set_aside = self.rng.random() < REVOKE_SHARE
        if self.rng.random() < self.contested:
            return self.issue_contested(key, body, set_aside)
        headers = {**self.auth, "Idempotency-Key": key}
        response, elapsed = self.call("issue", "POST", "/api/v1/credentials", json=body, headers=headers)
        if not self.expect("issue", response, elapsed, (201,)):
            return
        badge = self.pool.add(response.json(), key, set_aside=set_aside)
        if self.rng.random() < REPLAY_SHARE:
            # A retry, as after a lost answer: the same badge again, and no second one.
            again, elapsed = self.call("issue-replay", "POST", "/api/v1/credentials", json=body, headers=headers)
            if self.expect("issue-replay", again, elapsed, (200,),
                           lambda r: None if r.json().get("id") == badge.id else
                           f"replay answered {r.json().get('id')!r}, the first answer was {badge.id!r}"):
                self.pool.add(again.json(), key)

    def issue_contested(self, key: str, body: dict, set_aside: bool) -> None:
        """The same request twice at the same moment on two connections: one 201 and one 200."""
        headers = {**self.auth, "Idempotency-Key": key}
        answers: list[tuple[requests.Response | None, float]] = [(None, 0.0), (None, 0.0)]
        gate = threading.Barrier(2, timeout=TIMEOUT)

        def send(slot: int, session: requests.Session) -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()
            answers[slot] = self.call("issue-contested", "POST", "/api/v1/credentials", session, json=body,
                                      headers=headers)

        with requests.Session() as second:
            other = threading.Thread(target=send, args=(1, second), daemon=True)
            other.start()
            send(0, self.session)
            other.join(TIMEOUT + 5)
        got = [(r, t) for r, t in answers if r is not None]
        for r, t in got:
            self.expect("issue-contested", r, t, (200, 201))
        codes = sorted(r.status_code for r, _ in got)
        ids = {r.json().get("id") for r, _ in got if r.status_code in (200, 201)}
        if len(got) == 2 and codes == [200, 201] and len(ids) == 1:
            for r, _ in sorted(got, key=lambda a: -a[0].status_code):  # the 201 first
                self.pool.add(r.json(), key, set_aside=set_aside)
        elif len(got) == 2:
            self.tally.problem("issue-contested", f"two identical requests got {codes} and {len(ids)} "
                                                  "badge(s); one 201 and one 200 for one badge expected")
        else:  # a failed connection is already counted; keep what was answered for the checks
            for r, _ in got:
                if r.status_code in (200, 201):
                    self.pool.add(r.json(), key, set_aside=set_aside)

    # - verifying and reading -

    def verify(self, kind: str, badge: Badge, *, revoked: bool) -> None:
        if kind == "verify-jwt":
            response, elapsed = self.call(kind, "POST", "/api/v1/verify", data=badge.jwt.encode(),
                                          headers={"Content-Type": "text/plain"})
        else:
            response, elapsed = self.call(kind, "POST", "/api/v1/verify", json=badge.credential)

        def verdict(r: requests.Response) -> str | None:
            report = r.json()
            if not revoked:
                return None if report.get("verified") is True else f"badge {badge.id} not verified: " \
                                                                   f"{report.get('errors')}"
            status = next((c for c in report.get("checks", []) if c.get("name") == "status"), {})
            if report.get("verified") is False and status.get("ok") is False:
                return None
            return f"revoked badge {badge.id}: verified={report.get('verified')}, status check {status}"

        self.expect(kind, response, elapsed, (200,), verdict)

    def page(self, badge: Badge) -> None:
        response, elapsed = self.call("page", "GET", f"/credentials/{badge.id}", headers={"Accept": "text/html"})
        self.expect("page", response, elapsed, (200,),
                    lambda r: None if 'class="verdict passed"' in r.text else f"page of {badge.id}: no passed verdict")

    def status_list(self) -> None:
        with self.pool.lock:
            lists = sorted(self.pool.lists)
        url = self.rng.choice(lists)
        response, elapsed = self.call("status", "GET", urlsplit(url).path)
        self.expect("status", response, elapsed, (200,),
                    lambda r: None if "BitstringStatusListCredential" in r.text else "not a status list credential")

    def revoke(self, badge: Badge) -> None:
        body = {"reason": "load run: issued to test revocation", "category": "issued in error"}
        path = f"/api/v1/credentials/{badge.id}/revoke"

        def ok(r: requests.Response) -> str | None:
            return None if r.json().get("revoked") is True else f"{badge.id} not revoked: {r.text[:200]}"

        if self.rng.random() < self.contested:
            # A double click: the same revocation twice at once must make one revocation, one audit entry.
            results: list = [None, None]
            gate = threading.Barrier(2, timeout=TIMEOUT)

            def send(slot: int, session: requests.Session) -> None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    gate.wait()
                results[slot] = self.call("revoke-contested", "POST", path, session, json=body, headers=self.auth)

            with requests.Session() as second:
                other = threading.Thread(target=send, args=(1, second), daemon=True)
                other.start()
                send(0, self.session)
                other.join(TIMEOUT + 5)
            passed = [self.expect("revoke-contested", r, t, (200,), ok) for r, t in (x for x in results if x)]
            if passed and all(passed):
                self.pool.mark_revoked(badge)
            return
        response, elapsed = self.call("revoke", "POST", path, json=body, headers=self.auth)
        if self.expect("revoke", response, elapsed, (200,), ok):
            self.pool.mark_revoked(badge)

    # - the loop -

    def step(self) -> None:
        kind = self.rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        if kind in ("verify-json", "page"):
            badge = self.pool.pick(self.rng, "kept")
            if badge is not None:
                return self.verify(kind, badge, revoked=False) if kind == "verify-json" else self.page(badge)
        elif kind == "verify-jwt":
            badge = self.pool.pick(self.rng, "kept-jwt")
            if badge is not None:
                return self.verify(kind, badge, revoked=False)
        elif kind == "verify-revoked":
            badge = self.pool.pick(self.rng, "revoked")
            if badge is not None:
                return self.verify(kind, badge, revoked=True)
        elif kind == "status":
            if self.pool.lists:
                return self.status_list()
        elif kind == "revoke":
            badge = self.pool.pick(self.rng, "to-revoke")
            if badge is not None:
                return self.revoke(badge)
        self.issue()

    def run_until(self, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                self.step()
        except Exception as exc:  # a bug in this script must show, not silently shrink the load
            self.tally.problem("client", f"client {self.number} stopped: {type(exc).__name__}: {exc}")
        finally:
            self.session.close()


# --- the checks afterwards ------------------------------------------------------------------------------

@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str


HttpGet = Callable[[str], tuple[int, bytes]]  # path → (status, body)


def requests_get(base: str) -> HttpGet:
    session = requests.Session()

    def get(path: str) -> tuple[int, bytes]:
        r = session.get(base + path, timeout=TIMEOUT)
        return r.status_code, r.content

    return get


def _path(url: str) -> str:
    return urlsplit(url).path


def check_run(get: HttpGet, engine, pool: Pool, tally: Tally, audit_before: int) -> list[Outcome]:
    """Compare what the clients were answered with what the database holds and the service serves."""
    from issuer import multikey, proofs
    from issuer import status as bsl

    out: list[Outcome] = []
    server_errors = tally.server_errors()
    out.append(Outcome("no 5xx", server_errors == 0, f"{server_errors} answers with a 5xx status"))
    failed = sum(tally.transport.values())
    out.append(Outcome("no failed connection or timeout", failed == 0,
                       f"{failed} requests got no answer" + (f" ({dict(tally.transport)})" if failed else "")))
    wrong = sum(tally.unexpected.values())
    out.append(Outcome("every answer as expected (status code, verdict, same badge on retries)", wrong == 0,
                       f"{wrong} unexpected" + (f": {dict(tally.unexpected)}" if wrong else "")))

    with engine.connect() as conn:
        stored = {row.id: row for row in conn.execute(text(
            "SELECT id, document_sha256, idempotency_key, revoked_at FROM credentials"))}
        entries = conn.execute(text(
            "SELECT credential_id, list_id, list_index, revoked_at FROM status_entries")).all()
        audit = conn.execute(text("SELECT action, subject FROM audit_log")).all()

    # Lost: every badge a client saw is stored and served byte for byte as stored.
    missing = [i for i in pool.issued if i not in stored]
    served_wrong: list[str] = []

    def served(badge: Badge) -> str | None:
        status, body = get(f"/credentials/{badge.id}.json")
        if status != 200:
            return f"{badge.id}: {status}"
        row = stored.get(badge.id)
        if row is not None and hashlib.sha256(body).hexdigest() != row.document_sha256:
            return f"{badge.id}: served bytes differ from the stored sha256"
        if json.loads(body) != badge.credential:
            return f"{badge.id}: served document differs from the one the client was given"
        return None

    with ThreadPoolExecutor(8) as workers:
        served_wrong = [p for p in workers.map(served, list(pool.issued.values())) if p]
    out.append(Outcome("no badge lost: every badge a client was given is stored and served as stored",
                       not missing and not served_wrong,
                       f"{len(pool.issued)} badges given; {len(missing)} missing from the database, "
                       f"{len(served_wrong)} not served as stored"
                       + (f" (e.g. {(missing + served_wrong)[0]})" if missing or served_wrong else "")))

    # Duplicates: one row per Idempotency-Key, one badge per key in every answer, no row nobody was given.
    keys = Counter(row.idempotency_key for row in stored.values() if row.idempotency_key)
    twice = [k for k, n in keys.items() if n > 1]
    split = [k for k, ids in pool.by_key.items() if len(ids) > 1]
    unseen = [i for i in stored if i not in pool.issued]
    out.append(Outcome("no duplicate: one badge per Idempotency-Key, and no badge no client was given",
                       not twice and not split and not unseen,
                       f"{len(stored)} rows, {len(keys)} distinct keys; {len(twice)} keys stored twice, "
                       f"{len(split)} keys answered with two badges, {len(unseen)} rows no client was given"))

    # Status indexes: never given twice; one per badge; each badge's credentialStatus is its stored entry.
    places = Counter((e.list_id, e.list_index) for e in entries)
    repeated = [p for p, n in places.items() if n > 1]
    per_badge = Counter(e.credential_id for e in entries)
    without = [i for i in stored if per_badge[i] != 1]
    entry_of = {e.credential_id: e for e in entries}
    mismatched = []
    for badge in pool.issued.values():
        e = entry_of.get(badge.id)
        s = badge.status_entry
        if e is None or not s or _path(s["statusListCredential"]).rsplit("/", 1)[-1] != e.list_id \
                or int(s["statusListIndex"]) != e.list_index:
            mismatched.append(badge.id)
    out.append(Outcome("no status index given twice; each badge's entry is its stored one",
                       not repeated and not without and not mismatched,
                       f"{len(entries)} entries at {len(places)} places; {len(repeated)} places repeated, "
                       f"{len(without)} badges without exactly one entry, {len(mismatched)} entries differ"))

    # Revocations: in the database, and set in the signed list fetched over HTTP; no other bit set.
    status, body = get("/.well-known/did.json")
    methods = {m["id"]: m for m in json.loads(body).get("verificationMethod", [])} if status == 200 else {}
    lists: dict[str, dict] = {}
    list_problems: list[str] = []
    for url in sorted(pool.lists):
        status, body = get(_path(url))
        if status != 200:
            list_problems.append(f"{url}: {status}")
            continue
        doc = json.loads(body)
        try:
            (proof,) = proofs.proofs_of(doc)
            key = multikey.ed25519_from_multibase(methods[proof["verificationMethod"]]["publicKeyMultibase"])
            proofs.verify_proof(doc, proof, key)
            bsl.check_list_window(doc, datetime.now(UTC))
        except (KeyError, ValueError, proofs.ProofError, bsl.StatusError) as exc:
            list_problems.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        lists[url] = doc
    not_set, set_wrongly = [], []
    for badge in pool.issued.values():
        doc = lists.get(badge.status_entry.get("statusListCredential"))
        if doc is None:
            continue
        bit = bsl.read_status(bsl.parse_entry(badge.status_entry), doc)
        if badge.id in pool.revoked and bit != 1:
            not_set.append(badge.id)
        elif badge.id not in pool.revoked and bit != 0:
            set_wrongly.append(badge.id)
    in_database = {i for i, row in stored.items() if row.revoked_at is not None}
    entry_revoked = {e.credential_id for e in entries if e.revoked_at is not None}
    db_differs = (in_database ^ set(pool.revoked)) | (entry_revoked ^ set(pool.revoked))
    out.append(Outcome("every revocation is in the signed status list served over HTTP, and no other",
                       not list_problems and not not_set and not set_wrongly and not db_differs,
                       f"{len(pool.revoked)} revoked, {len(lists)} of {len(pool.lists)} lists fetched and their "
                       f"proofs verified; {len(not_set)} revocations missing from a list, {len(set_wrongly)} bits "
                       f"set for badges not revoked, {len(db_differs)} differ from the database"
                       + (f"; {list_problems[0]}" if list_problems else "")))

    # Audit log: one entry per badge issued and per revocation, nothing else since the run began.
    urls = {row_id: f"/credentials/{row_id}" for row_id in stored}
    issues = Counter(_path(subject or "") for action, subject in audit if action == "credential.issue")
    revokes = Counter(_path(subject or "") for action, subject in audit if action == "credential.revoke")
    issue_wrong = sum(1 for i, p in urls.items() if issues[p] != 1) + sum(
        n for p, n in issues.items() if p not in set(urls.values()))
    revoke_wrong = sum(1 for i in in_database if revokes[urls[i]] != 1) + sum(
        n for p, n in revokes.items() if p.rsplit("/", 1)[-1] not in in_database)
    added = len(audit) - audit_before
    expected = len(stored) + len(in_database)
    out.append(Outcome("audit log: one credential.issue per badge, one credential.revoke per revocation, "
                       "nothing else", issue_wrong == 0 and revoke_wrong == 0 and added == expected,
                       f"{added} entries added for {len(stored)} badges + {len(in_database)} revocations; "
                       f"{issue_wrong} badges without exactly one issue entry, {revoke_wrong} revocations "
                       f"without exactly one revoke entry"))
    return out


# --- the service ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def fresh_database(database_url: str | None, tmp: Path) -> Iterator[str]:
    """A new PostgreSQL schema, dropped afterwards; or a new SQLite file in ``tmp`` when no URL is given."""
    if not database_url:
        yield f"sqlite:///{tmp}/load.sqlite"
        return
    import psycopg

    schema = f"load_{secrets.token_hex(4)}"
    admin = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(database_url, schema)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def cli(server: Server, *args: str) -> str:
    command = [str(Path(sys.executable).parent / "issuer"), *args]
    return subprocess.run(command, env=server.env, cwd=server.tree, capture_output=True, text=True, check=True,
                           timeout=120).stdout


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run(args: argparse.Namespace) -> dict:
    from issuer.db import make_engine

    with tempfile.TemporaryDirectory(prefix="load-") as tmpname:
        tmp = Path(tmpname)
        with fresh_database(None if args.sqlite else args.database_url, tmp) as url:
            server = Server(tmp, tree=args.tree, workers=args.workers, worker_class=args.worker_class,
                            threads=args.threads, database_url=url)
            server.env.update(SERVICE_ENV)
            server.init()
            token = cli(server, "token", "create", "--scopes", "issue,revoke", "--name", "load-run").strip()
            engine = make_engine(url)
            try:
                server.start()
                return drive(args, server, token, engine)
            finally:
                server.stop()
                engine.dispose()


def drive(args: argparse.Namespace, server: Server, token: str, engine) -> dict:
    codes = [a["code"] for a in requests.get(f"{server.base}/api/v1/achievements", timeout=TIMEOUT)
             .json()["achievements"] if not a["retired"]]
    with engine.connect() as conn:
        audit_before = conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
    pool, tally = Pool(), Tally()
    run_id = secrets.token_hex(3)
    clients = [Client(n, base=server.base, token=token, codes=codes, run=run_id, pool=pool, tally=tally,
                      seed=args.seed or run_id, contested=args.contested) for n in range(args.clients)]
    # A few badges before the clock starts, so that verifiers have something to verify from the first second.
    for n in range(min(args.clients, 10)):
        clients[n].issue()
    cpu_before, server_before, load_before = os.times(), server_cpu(server.process.pid), os.getloadavg()[0]
    start = time.monotonic()
    deadline = start + args.seconds
    threads = [threading.Thread(target=c.run_until, args=(deadline,), name=f"client-{c.number}", daemon=True)
               for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline + TIMEOUT + 10 - time.monotonic()))
    elapsed = time.monotonic() - start
    stuck = sum(t.is_alive() for t in threads)
    cpu = os.times()
    client_cpu = (cpu.user - cpu_before.user) + (cpu.system - cpu_before.system)
    # The gunicorn processes' CPU time per request: steadier than requests/s on a shared, busy machine.
    server_used = server_cpu(server.process.pid) - server_before
    load_after = os.getloadavg()[0]
    if stuck:
        tally.problem("client", f"{stuck} clients still waiting {TIMEOUT + 10} s after the deadline")
    outcomes = check_run(requests_get(server.base), engine, pool, tally, audit_before)
    kinds = {}
    for kind in sorted(tally.statuses):
        lat = tally.latencies.get(kind, [])
        kinds[kind] = {"requests": sum(tally.statuses[kind].values()), "per_second": len(lat) / elapsed,
                       "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
                       "statuses": dict(sorted(tally.statuses[kind].items())),
                       "unexpected": tally.unexpected[kind], "no_answer": tally.transport[kind]}
    every = [x for lat in tally.latencies.values() for x in lat]
    return {
        "config": {"clients": args.clients, "seconds": args.seconds, "workers": args.workers,
                   "worker_class": args.worker_class, "threads": args.threads,
                   "database": "SQLite" if args.sqlite else "PostgreSQL", "machine": platform.machine(),
                   "cores": os.cpu_count(), "python": platform.python_version()},
        "elapsed": elapsed, "client_cpu_s": client_cpu, "server_cpu_s": server_used,
        "load_average": [load_before, load_after], "kinds": kinds,
        "total": {"requests": len(every), "per_second": len(every) / elapsed,
                  "p50_ms": percentile(every, 50) * 1000, "p99_ms": percentile(every, 99) * 1000},
        "badges": len(pool.issued), "revoked": len(pool.revoked), "lists": len(pool.lists),
        "checks": [o.__dict__ for o in outcomes], "ok": all(o.ok for o in outcomes),
        "samples": tally.samples,
    }


def report(result: dict) -> str:
    c = result["config"]
    lines = [f"machine: {c['machine']}, {c['cores']} cores, Python {c['python']}; {c['database']}, gunicorn "
             f"{c['workers']} {c['worker_class']} workers"
             + (f" × {c['threads']} threads" if c["worker_class"] == "gthread" else "")
             + f"; {c['clients']} clients for {c['seconds']:g} s (ran {result['elapsed']:.1f} s); "
             f"load generator CPU {result['client_cpu_s']:.1f} s; gunicorn CPU {result['server_cpu_s']:.1f} s "
             f"({result['server_cpu_s'] * 1000 / max(result['total']['requests'], 1):.1f} ms a request); "
             f"load average {result['load_average'][0]:.1f} before, {result['load_average'][1]:.1f} after", "",
             "| kind | requests | requests/s | p50 ms | p99 ms | status codes | unexpected | no answer |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, k in result["kinds"].items():
        codes = ", ".join(f"{code}: {n}" for code, n in k["statuses"].items())
        lines.append(f"| {kind} | {k['requests']} | {k['per_second']:.1f} | {k['p50_ms']:.1f} | {k['p99_ms']:.1f} "
                     f"| {codes} | {k['unexpected']} | {k['no_answer']} |")
    t = result["total"]
    lines.append(f"| all | {t['requests']} | {t['per_second']:.1f} | {t['p50_ms']:.1f} | {t['p99_ms']:.1f} | | | |")
    lines += ["", f"{result['badges']} badges issued, {result['revoked']} revoked, {result['lists']} status list(s)",
              "", "| check | | |", "|---|---|---|"]
    lines += [f"| {o['name']} | {'✔' if o['ok'] else '✘'} | {o['detail']} |" for o in result["checks"]]
    lines += [f"sample: {s}" for s in result["samples"][:10]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they run (default 60)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--worker-class", default="gthread", choices=("sync", "gthread"),
                        help="default gthread, as docs/scaling.md recommends")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    parser.add_argument("--database-url", default=os.environ.get("ISSUER_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="PostgreSQL server to make a fresh schema in (default %(default)s)")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead of PostgreSQL")
    parser.add_argument("--contested", type=float, default=CONTESTED_SHARE,
                        help="share of issue requests and revocations sent twice at once (default %(default)s)")
    parser.add_argument("--seed", help="seed of the clients' random choices (default: a new one each run)")
    parser.add_argument("--json", type=Path, help="also write the figures and checks to this file")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="run the service (and the checks' imports) from this copy of the project")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 500 and 0 < args.seconds <= 600 and 1 <= args.workers <= 32
            and 1 <= args.threads <= 32 and 0 <= args.contested <= 1):
        parser.error("keep it bounded: 1-500 clients, at most 600 s, 1-32 workers and threads")
    args.tree = args.tree.resolve()
    sys.path.insert(0, str(args.tree))  # the checks read badges and lists with that tree's issuer package
    result = run(args)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
