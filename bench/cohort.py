"""Benchmark for issue #7, goal 2: a cohort of 100,000 badges from a CSV through the real command,
`issuer issue-batch`, on SQLite and on PostgreSQL, with one worker (the single-process baseline) and with
the default number of workers. Prints wall time, badges/s and peak memory, then checks what was stored.

    flock /tmp/bench.lock .venv/bin/python bench/cohort.py [--rows 100000] [--db sqlite,postgresql]
                                                           [--workers 1,default] [--pg URL] [--keep]
    flock /tmp/bench.lock .venv/bin/python bench/cohort.py --per-row 3000   # the per-row path, for comparison

Each run gets a fresh `issuer init` in a temporary folder (keys, SQLite file, outbox) or a fresh
PostgreSQL schema, dropped afterwards. Memory is the peak of the summed RSS, and of the summed PSS (shared
pages divided among the processes sharing them: what the tree really holds), of the command and every
process it started, sampled from /proc every 50 ms, and the largest single process's peak RSS (getrusage
of the children); a PostgreSQL server's own memory is not counted. CPU time is user + system of the
command and its workers: on a shared machine it is the steadier figure (the load average before each
run is printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from issuer.catalogue import DEMO_CATALOGUE, load_catalogue  # noqa: E402

ISSUER = ROOT / ".venv" / "bin" / "issuer"
PG_DEFAULT = "postgresql+psycopg://root@127.0.0.1:5432/test"
GRADES = ("A", "A-", "B+", "B", "", "Pass")


def write_cohort(path: Path, rows: int) -> None:
    """learner-N@example.com, the demo catalogue's achievements in turn, award dates over a year."""
    codes = [mc.code for mc in load_catalogue(DEMO_CATALOGUE)]
    start = date(2025, 1, 6)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "achievement", "award_date", "grade"])
        for n in range(rows):
            writer.writerow([f"learner-{n}@example.com", f"Learner {n}", codes[n % len(codes)],
                             (start + timedelta(days=n % 365)).isoformat(), GRADES[n % len(GRADES)]])


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_command(args: list[str], env: dict) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak summed RSS and peak summed PSS in MB of the process tree, result)."""
    peak = peak_pss = 0
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        while not done.is_set():
            pids = _tree(process.pid)
            peak = max(peak, sum(_rss_kb(p) for p in pids))
            peak_pss = max(peak_pss, sum(_pss_kb(p) for p in pids))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    return wall, peak / 1024, peak_pss / 1024, subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def verify_run(env: dict, rows: int, url: str) -> dict:
    """Counts of what was stored, and 20 random badges through the app's own verifier."""
    for name in ("ISSUER_DATABASE_URL", "ISSUER_KEY_DIR", "ISSUER_OUTBOX_DIR"):
        os.environ[name] = env[name]
    from issuer import create_app
    from issuer.db import get_session
    from issuer.formats import parse_submission
    from issuer.identity import get_verifier
    from issuer.models import AuditEntry, Credential, Notification, StatusEntry

    app = create_app({"TESTING": True})
    checks: dict = {}
    with app.app_context():
        session = get_session()
        checks["credentials"] = session.scalar(select(func.count()).select_from(Credential))
        checks["distinct status (list, index)"] = session.scalar(select(func.count()).select_from(
            select(StatusEntry.list_id, StatusEntry.list_index).distinct().subquery()))
        checks["audit credential.issue"] = session.scalar(select(func.count()).select_from(AuditEntry)
                                                          .where(AuditEntry.action == "credential.issue"))
        checks["outbox rows"] = session.scalar(select(func.count()).select_from(Notification))
        checks["distinct awards"] = session.scalar(select(func.count()).select_from(select(
            Credential.recipient_email, Credential.achievement_code, Credential.awarded_on).distinct().subquery()))
        checks["QR codes drawn"] = session.scalar(select(func.count()).select_from(Credential)
                                                  .where(Credential.qr_png.is_not(None)))
        ids = session.scalars(select(Credential.id)).all()
        picked = random.Random(7).sample(ids, min(20, len(ids)))
        verifier = get_verifier()
        verified = 0
        for public_id in picked:
            row = session.get(Credential, public_id)
            submission = parse_submission(row.document.encode("utf-8"), None, "badge.json")
            verified += bool(verifier.verify_submission(submission, recipient_email=row.recipient_email).verified)
        checks["spot-checked badges verified"] = f"{verified}/{len(picked)}"
    app.extensions["issuer.engine"].dispose()
    ok = all(checks[k] == rows for k in ("credentials", "distinct status (list, index)", "audit credential.issue",
                                         "outbox rows", "distinct awards"))
    checks["ok"] = ok and verified == len(picked)
    return checks


def one_run(db: str, workers: str, csv_path: Path, rows: int, pg: str, keep: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"cohort-{db}-"))
    schema = None
    if db == "sqlite":
        url = f"sqlite:///{tmp / 'issuer.sqlite'}"
    else:
        schema = f"cohort_{uuid.uuid4().hex[:10]}"
        admin = create_engine(pg)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    env = {**os.environ, "ISSUER_DATABASE_URL": url, "ISSUER_KEY_DIR": str(tmp / "keys"),
           "ISSUER_OUTBOX_DIR": str(tmp / "outbox"), "ISSUER_BASE_URL": "http://127.0.0.1:5000",
           "ISSUER_DEVELOPMENT": "1"}
    try:
        init = subprocess.run([str(ISSUER), "init", "--no-token"], env=env, capture_output=True, text=True)
        if init.returncode:
            raise SystemExit(init.stdout + init.stderr)
        command = [str(ISSUER), "issue-batch", str(csv_path), "--report", str(tmp / "report.csv")]
        if workers != "default":
            command += ["--workers", workers]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        wall, peak_mb, pss_mb, result = run_command(command, env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        if result.returncode:
            raise SystemExit(f"issue-batch failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
        checks = verify_run(env, rows, url)
        return {"db": db, "workers": workers if workers != "default" else f"default ({os.cpu_count()})",
                "rows": rows, "wall_s": round(wall, 2), "badges_per_s": round(rows / wall),
                "cpu_s": round(cpu, 1), "load_before": round(load, 1),
                "peak_rss_tree_mb": round(peak_mb), "peak_pss_tree_mb": round(pss_mb),
                "largest_process_rss_mb": round(after.ru_maxrss / 1024),
                "output": result.stdout.strip().splitlines()[-1], "checks": checks}
    finally:
        if schema and not keep:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def per_row_rate(rows: int, csv_path: Path) -> dict:
    """The per-row path (`issuing.issue_rows`, what `issue-batch` ran before and the console still runs),
    in this process on a fresh SQLite database, for comparison: badges/s, extrapolated to 100,000."""
    tmp = Path(tempfile.mkdtemp(prefix="cohort-per-row-"))
    env = {**os.environ, "ISSUER_DATABASE_URL": f"sqlite:///{tmp / 'issuer.sqlite'}",
           "ISSUER_KEY_DIR": str(tmp / "keys"), "ISSUER_OUTBOX_DIR": str(tmp / "outbox"),
           "ISSUER_DEVELOPMENT": "1"}
    subprocess.run([str(ISSUER), "init", "--no-token"], env=env, capture_output=True, check=True)
    for name in ("ISSUER_DATABASE_URL", "ISSUER_KEY_DIR", "ISSUER_OUTBOX_DIR", "ISSUER_DEVELOPMENT"):
        os.environ[name] = env[name]
    from issuer import create_app, issuing
    from issuer.identity import get_context

    app = create_app()
    with app.app_context(), csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        lines = [(i + 2, row) for i, row in zip(range(rows), reader, strict=False)]
        started = time.perf_counter()
        results = issuing.issue_rows(app.extensions["issuer.sessionmaker"], get_context(), lines, actor="bench")
        wall = time.perf_counter() - started
    app.extensions["issuer.engine"].dispose()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    assert all(r.status == "issued" for r in results)
    return {"per_row_rows": rows, "wall_s": round(wall, 2), "badges_per_s": round(rows / wall),
            "extrapolated_100k_s": round(100_000 * wall / rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,default", help="comma-separated: numbers or 'default'")
    parser.add_argument("--pg", default=os.environ.get("ISSUER_BENCH_PG", PG_DEFAULT))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders and schemas")
    parser.add_argument("--per-row", type=int, default=0, metavar="N",
                        help="only time the per-row path (issuing.issue_rows) on N rows, SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cohort-csv-") as folder:
        csv_path = Path(folder) / "cohort.csv"
        write_cohort(csv_path, args.per_row or args.rows)
        if args.per_row:
            print(json.dumps(per_row_rate(args.per_row, csv_path)))
            return
        results = []
        for db in args.db.split(","):
            for workers in args.workers.split(","):
                result = one_run(db, workers, csv_path, args.rows, args.pg, args.keep)
                print(json.dumps(result, ensure_ascii=False), flush=True)
                results.append(result)
    print()
    print("| database | workers | rows | wall time | badges/s | CPU time | peak RSS, sum | peak PSS, sum "
          "| largest process | load before | checks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['db']} | {r['workers']} | {r['rows']:,} | {r['wall_s']:.1f} s | {r['badges_per_s']:,} | "
              f"{r['cpu_s']:.0f} s | {r['peak_rss_tree_mb']} MB | {r['peak_pss_tree_mb']} MB | "
              f"{r['largest_process_rss_mb']} MB | {r['load_before']} | "
              f"{'✔' if r['checks']['ok'] else '✘ ' + json.dumps(r['checks'])} |")


if __name__ == "__main__":
    main()
