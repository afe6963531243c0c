"""Benchmark for issue #7, goal 5: two service instances against one PostgreSQL issue a cohort together.

    .venv/bin/python bench/scaleout.py [--cohort 2000] [--workers 1] [--clients 4]
                                       [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]

One PostgreSQL database, a fresh schema in it (dropped at the end), `issuer init` once (one key folder and
one ISSUER_SECRET_KEY shared by every instance, as docs/scaling.md describes). Then

  (a) ONE gunicorn instance issues a cohort of `--cohort` badges (`POST /api/v1/credentials`, distinct
      learners, `--clients` concurrent clients);
  (b) TWO gunicorn instances, on two ports, issue another cohort of the same size together, half each,
      `--clients` concurrent clients per instance; besides, `--contested` learners are sent to BOTH
      instances at the same moment (the same learner, achievement and date): exactly one badge each.

Each instance has `--workers` sync workers (default 1, so on this 2-core machine one instance can use one
core and two instances two: the figure says how well a second instance adds capacity; the load generator
shares the same cores). Afterwards the database is checked: every badge there exactly once (no duplicate
(learner, achievement, date), none lost), every status entry at a distinct (list, index).

Loopback only; bounded: the cohort size is capped and every request has a 60 s timeout.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import ROOT, Server  # noqa: E402  (bench/http_load.py)

DAY = "2026-09-01"


def schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def issue_all(targets: list[tuple[str, str]], token: str, clients: int) -> tuple[float, list[float], list[str]]:
    """POST every (base URL, email) in ``targets`` with ``clients`` threads per distinct base URL."""
    bases = sorted({base for base, _ in targets})
    local = threading.local()
    errors: list[str] = []

    def one(target: tuple[str, str]) -> float:
        base, email = target
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        try:
            r = session.post(f"{base}/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                             json={"achievement": "AI-101", "recipient": {"email": email}, "awarded_on": DAY},
                             timeout=60)
            if r.status_code not in (200, 201):
                errors.append(f"{email}: {r.status_code} {r.text[:200]}")
        except requests.RequestException as exc:
            errors.append(f"{email}: {exc}")
        return time.perf_counter() - start

    # Interleave the instances so that each has its share of work all along.
    by_base = {base: [t for t in targets if t[0] == base] for base in bases}
    ordered = [t for group in zip(*by_base.values(), strict=False) for t in group]
    placed = set(ordered)
    ordered += [t for t in targets if t not in placed]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients * len(bases)) as pool:
        latencies = list(pool.map(one, ordered))
    return time.perf_counter() - start, latencies, errors


def check(url: str, prefix: str, expected: int) -> dict:
    """What the database holds for the learners whose email starts with ``prefix``."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        q = conn.execute
        rows = q("SELECT count(*), count(DISTINCT (recipient_email, achievement_code, awarded_on)) "
                 "FROM credentials WHERE recipient_email LIKE %s", (prefix + "%",)).fetchone()
        entries = q("SELECT count(*), count(DISTINCT (e.list_id, e.list_index)) FROM status_entries e "
                    "JOIN credentials c ON c.id = e.credential_id WHERE c.recipient_email LIKE %s",
                    (prefix + "%",)).fetchone()
        all_entries = q("SELECT count(*), count(DISTINCT (list_id, list_index)) FROM status_entries").fetchone()
    return {"expected": expected, "badges": rows[0], "distinct": rows[1], "lost": expected - rows[1],
            "duplicates": rows[0] - rows[1], "entries": entries[0], "entries_distinct": entries[1],
            "all_entries_distinct": all_entries[0] == all_entries[1]}


def phase(name: str, servers: list[Server], token: str, cohort: int, clients: int, url: str,
          contested: int) -> dict:
    tag = f"{name}-{secrets.token_hex(3)}"
    targets = [(servers[i % len(servers)].base, f"{tag}-{i}@example.com") for i in range(cohort)]
    elapsed, latencies, errors = issue_all(targets, token, clients)
    result = {"elapsed": elapsed, "rate": cohort / elapsed, "p50": statistics.median(latencies) * 1000,
              "p99": statistics.quantiles(latencies, n=100)[98] * 1000, "errors": errors,
              **check(url, tag + "-", cohort)}
    if contested and len(servers) > 1:
        # The same learners sent to both instances at once: the unique key must leave exactly one badge.
        race = f"{tag}-race"
        pairs = [(s.base, f"{race}-{i}@example.com") for i in range(contested) for s in servers]
        _, _, race_errors = issue_all(pairs, token, clients)
        found = check(url, race + "-", contested)
        result["contested"] = {"sent": len(pairs), "errors": race_errors, **found}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=int, default=2000, help="badges per phase (default 2,000)")
    parser.add_argument("--workers", type=int, default=1, help="sync workers per instance (default 1)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients per instance (default 4)")
    parser.add_argument("--contested", type=int, default=100,
                        help="learners sent to both instances at once in phase (b) (default 100)")
    parser.add_argument("--database-url", default=os.environ.get(
        "ISSUER_BENCH_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"))
    args = parser.parse_args()
    if not 10 <= args.cohort <= 20000:
        parser.error("keep it bounded: 10 <= cohort <= 20,000")
    schema = f"scaleout_{secrets.token_hex(4)}"
    admin_url = args.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = schema_url(args.database_url, schema)
    results = {}
    cpu_before = os.times()
    try:
        with tempfile.TemporaryDirectory(prefix="scaleout-") as tmpname:
            tmp = Path(tmpname)
            def make() -> Server:
                server = Server(tmp, tree=ROOT, workers=args.workers, worker_class="sync", threads=1,
                                database_url=url)
                if results.get("public") is not None:  # one public address (behind a proxy) for all
                    server.env["ISSUER_BASE_URL"] = results["public"]
                return server

            first = make()
            results["public"] = first.base
            token = first.init()  # once: the schema, the keys (shared folder), the catalogue, a token
            for name, count in (("a", 1), ("b", 2)):
                servers = [first] + [make() for _ in range(count - 1)]
                try:
                    for server in servers:
                        server.start()
                    issue_all([(s.base, f"warm-{name}-{i}-{s.port}@example.com") for s in servers
                               for i in range(5)], token, 1)
                    results[name] = phase(name, servers, token, args.cohort, args.clients, url,
                                          args.contested)
                finally:
                    for server in servers:
                        server.stop()
                a = results[name]
                print(f"({name}) {count} instance(s): {a['rate']:.1f} badges/s, p50 {a['p50']:.1f} ms, "
                      f"p99 {a['p99']:.1f} ms, lost {a['lost']}, duplicates {a['duplicates']}, "
                      f"errors {len(a['errors'])}", file=sys.stderr, flush=True)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    cpu = os.times()
    client_cpu = (cpu.user - cpu_before.user) + (cpu.system - cpu_before.system)
    a, b = results["a"], results["b"]
    ratio = b["rate"] / a["rate"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"PostgreSQL, {args.workers} sync worker(s) per instance, {args.clients} clients per instance, "
          f"cohort {args.cohort} per phase; load generator CPU {client_cpu:.1f} s in all")
    print()
    print("| measure | (a) one instance | (b) two instances | goal |")
    print("|---|---|---|---|")
    print(f"| badges/s | {a['rate']:.1f} | {b['rate']:.1f} | |")
    print(f"| (b) ÷ (a) | | {ratio:.2f}× | 2× within 20% (1.6–2.4×) {'✔' if 1.6 <= ratio <= 2.4 else '✘'} |")
    print(f"| latency p50 / p99 ms | {a['p50']:.1f} / {a['p99']:.1f} | {b['p50']:.1f} / {b['p99']:.1f} | |")
    for key, label in (("badges", "badges in the database"), ("lost", "lost"), ("duplicates", "duplicates"),
                       ("entries_distinct", "distinct status entries")):
        print(f"| {label} | {a[key]} of {a['expected']} | {b[key]} of {b['expected']} | |"
              if key in ("badges", "entries_distinct") else f"| {label} | {a[key]} | {b[key]} | 0 |")
    print(f"| request errors | {len(a['errors'])} | {len(b['errors'])} | 0 |")
    if "contested" in b:
        c = b["contested"]
        print(f"| contested learners (sent to both at once) | | {c['sent']} requests → {c['badges']} badges for "
              f"{c['expected']} learners, {c['duplicates']} duplicates, {len(c['errors'])} errors | one each |")
    print(f"| every status entry at a distinct (list, index) | {a['all_entries_distinct']} | "
          f"{b['all_entries_distinct']} | |")
    for err in (a["errors"] + b["errors"])[:5]:
        print("error:", err)


if __name__ == "__main__":
    main()
