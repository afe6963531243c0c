"""Benchmark for issue #7, goal 3: verification and credential pages through HTTP, against concurrency.

    .venv/bin/python bench/http_load.py [--levels 1,2,4,8,16,32,64] [--duration 5] [--workers 2]
                                        [--worker-class gthread --threads 4] [--badges 50]
                                        [--endpoints di,jwt,page] [--tree PATH] [--markdown]

Starts the production server (`gunicorn 'issuer:create_app()'`) on a free 127.0.0.1 port with a fresh
SQLite database (or `--database-url` for PostgreSQL), issues `--badges` Data Integrity badges and as many
with a recipient DID (so a VC-JWT exists), then drives `wrk` on the same machine, `--duration` seconds at
each concurrency level (connections), against:

- `di`: `POST /api/v1/verify` with a Data Integrity badge (JSON body),
- `jwt`: `POST /api/v1/verify` with a VC-JWT (text/plain body),
- `page`: `GET /credentials/<id>` as a browser asks for it (HTML: the page runs the verifier).

Requests rotate over the issued badges, so no figure rests on one document. Every response is checked
(status 200 and a positive verdict: `"verified":true` or the page's "passed" verdict); any other answer is
counted and reported. wrk's own CPU time is reported per level, to show the load generator is not what
limits the figure. `--tree PATH` runs the server from another copy of the project (e.g. the previous
commit, `git archive HEAD | tar -x -C /tmp/base`), for a baseline measured in the same run.

wrk comes from Debian (`apt-get install wrk`); the script installs it when missing and it is root, or
says how. Traffic goes to loopback only; every level is bounded in time (duration + 10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

# One wrk script for every endpoint: it reads its requests (method, path, content type, body: one per line,
# tab-separated) from the file named by its first argument, cycles through them, and counts every answer
# that is not a 200 carrying the expected text (its second argument).
WRK_SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  bad, n, reqs, expect = 0, 0, {}, args[2]
  for line in io.lines(args[1]) do
    local method, path, ctype, body = line:match("^(%u+)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if ctype ~= "" then headers["Content-Type"] = ctype end
    if method == "GET" then headers["Accept"] = "text/html" end
    if body == "" then body = nil end
    reqs[#reqs + 1] = wrk.format(method, path, headers, body)
  end
end
function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, expect, 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"bad":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, b,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

EXPECT = {"di": '"verified":true', "jwt": '"verified":true', "page": 'class="verdict passed"'}
TITLES = {"di": "POST /api/v1/verify, Data Integrity badge", "jwt": "POST /api/v1/verify, VC-JWT badge",
          "page": "GET /credentials/<id> (HTML page)"}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing the Debian package (apt-get install wrk) ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if not found:
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL)
            found = shutil.which("wrk")
    if not found:
        sys.exit("this benchmark needs wrk, the HTTP load generator: install it with `apt-get install wrk` "
                 "(Debian/Ubuntu) or `brew install wrk` (macOS), then run it again")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn serving the app from ``tree`` (this project by default) with a fresh database."""

    def __init__(self, tmp: Path, *, tree: Path, workers: int, worker_class: str, threads: int,
                 database_url: str | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ISSUER_DATABASE_URL": database_url or f"sqlite:///{tmp}/bench.sqlite",
                    "ISSUER_KEY_DIR": f"{tmp}/keys", "ISSUER_BASE_URL": self.base,
                    "ISSUER_OUTBOX_DIR": f"{tmp}/outbox", "ISSUER_SECRET_KEY": "bench-" + tmp.name,
                    "PYTHONPATH": str(tree)}
        self.env.pop("ISSUER_KEY_PASSPHRASE", None)
        self.env["ISSUER_DEVELOPMENT"] = "1"  # plaintext throwaway keys: only a development instance starts
        # Every load client comes from 127.0.0.1: the per-address limits would measure the limiter, not the
        # service (bench/scaleout.py starts its instances through this class too).
        self.env["ISSUER_RATE_LIMITS"] = "off"
        self.tree = tree
        self.command = [str(Path(sys.executable).parent / "gunicorn"), "-w", str(workers), "-k", worker_class,
                        "--threads", str(threads), "-b", f"127.0.0.1:{self.port}", "--backlog", "2048",
                        "--log-level", "warning", "issuer:create_app()"]
        self.process: subprocess.Popen | None = None

    def init(self) -> str:
        out = subprocess.run([str(Path(sys.executable).parent / "issuer"), "init"], env=self.env, cwd=self.tree,
                             capture_output=True, text=True, check=True).stdout
        return next(line for line in out.splitlines() if "Admin API token" in line).rsplit(": ", 1)[1]

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.tree, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with status {self.process.returncode}")
            try:
                if requests.get(f"{self.base}/api/v1/achievements", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not start within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def issue_badges(base: str, token: str, count: int) -> tuple[list[dict], list[dict]]:
    """``count`` Data Integrity badges (email only) and ``count`` with a recipient DID (so with a VC-JWT)."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    codes = [a["code"] for a in session.get(f"{base}/api/v1/achievements", timeout=10).json()["achievements"]]
    plain, with_did = [], []
    for i in range(count):
        for target, recipient in ((plain, {"email": f"di{i}@example.com"}),
                                  (with_did, {"email": f"jwt{i}@example.com", "did": DID})):
            r = session.post(f"{base}/api/v1/credentials", headers=headers, timeout=30,
                             json={"achievement": codes[i % len(codes)], "recipient": recipient})
            r.raise_for_status()
            target.append(r.json())
    return plain, with_did


def request_lines(kind: str, plain: list[dict], with_did: list[dict]) -> list[str]:
    if kind == "di":
        return ["\t".join(("POST", "/api/v1/verify", "application/json",
                           json.dumps(b["credential"], ensure_ascii=False, separators=(",", ":"))))
                for b in plain]
    if kind == "jwt":
        return ["\t".join(("POST", "/api/v1/verify", "text/plain", b["jwt"])) for b in with_did]
    return ["\t".join(("GET", f"/credentials/{b['id']}", "", "")) for b in plain]


def server_cpu(master: int) -> float:
    """CPU seconds used so far by the gunicorn master and its workers (Linux /proc; 0 elsewhere)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat.parent.name) == master or int(fields[1]) == master:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(wrk: str, base: str, script: Path, lines: Path, expect: str, connections: int,
            duration: float, master: int) -> dict:
    threads = 1 if connections == 1 else 2
    server_before = server_cpu(master)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
                          "--timeout", "5s", "-s", str(script), base + "/", "--", str(lines), expect],
                         capture_output=True, text=True, timeout=duration + 10).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_used = server_cpu(master) - server_before
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    found = json.loads(line[len("WRKJSON "):])
    seconds = found["duration_us"] / 1e6
    found["rps"] = found["requests"] / seconds
    found["wrk_cpu"] = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / seconds
    found["server_ms"] = server_used * 1000 / max(found["requests"], 1)
    found["failed"] = found["bad"] + found["connect"] + found["read"] + found["write"] + found["timeout"]
    return found


def measure(label: str, args, tree: Path, wrk: str) -> dict[str, list[tuple[int, dict]]]:
    results: dict[str, list[tuple[int, dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="http-load-") as tmpname:
        tmp = Path(tmpname)
        server = Server(tmp, tree=tree, workers=args.workers, worker_class=args.worker_class,
                        threads=args.threads, database_url=args.database_url)
        token = server.init()
        try:
            server.start()
            plain, with_did = issue_badges(server.base, token, args.badges)
            script = tmp / "load.lua"
            script.write_text(WRK_SCRIPT)
            for kind in args.endpoints:
                lines = tmp / f"{kind}.txt"
                lines.write_text("\n".join(request_lines(kind, plain, with_did)) + "\n", encoding="utf-8")
                run_wrk(wrk, server.base, script, lines, EXPECT[kind], 2, 1.0, server.process.pid)  # warm every worker
                rows = results.setdefault(kind, [])
                for level in args.levels:
                    found = run_wrk(wrk, server.base, script, lines, EXPECT[kind], level, args.duration,
                                    server.process.pid)
                    rows.append((level, found))
                    print(f"[{label}] {kind:4} c={level:<3} {found['rps']:8.1f} req/s  "
                          f"p50 {found['p50'] / 1000:7.2f} ms  p99 {found['p99'] / 1000:7.2f} ms  "
                          f"failed {found['failed']}  server CPU {found['server_ms']:.2f} ms/req  "
                          f"wrk CPU {found['wrk_cpu'] * 100:4.1f}%", file=sys.stderr, flush=True)
        finally:
            server.stop()
    return results


def table(title: str, rows: list[tuple[int, dict]], baseline: list[tuple[int, dict]] | None) -> str:
    head = "| connections | requests/s | p50 ms | p99 ms | failed | server CPU ms/request | wrk CPU |"
    rule = "|---|---|---|---|---|---|---|"
    if baseline:
        head += " baseline requests/s | baseline p50 ms | baseline p99 ms |"
        rule += "---|---|---|"
    out = [f"{title}", "", head, rule]
    base = dict(baseline or [])
    for level, r in rows:
        line = (f"| {level} | {r['rps']:.0f} | {r['p50'] / 1000:.1f} | {r['p99'] / 1000:.1f} | {r['failed']} | "
                f"{r['server_ms']:.2f} | {r['wrk_cpu'] * 100:.0f}% |")
        if baseline and level in base:
            b = base[level]
            line += f" {b['rps']:.0f} | {b['p50'] / 1000:.1f} | {b['p99'] / 1000:.1f} |"
        out.append(line)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8,16,32,64",
                        type=lambda s: [int(x) for x in s.split(",") if x.strip()])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level (default 5)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread", choices=("sync", "gthread"))
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--badges", type=int, default=50, help="distinct badges of each kind to rotate over")
    parser.add_argument("--endpoints", default="di,jwt,page", type=lambda s: [x for x in s.split(",") if x])
    parser.add_argument("--database-url", help="e.g. postgresql+psycopg://root@127.0.0.1:5432/test "
                                               "(an empty database: it is initialised)")
    parser.add_argument("--tree", type=Path, help="also measure the server run from this copy of the project, "
                                                  "as the baseline")
    args = parser.parse_args()
    if args.duration <= 0 or args.duration > 60 or not args.levels or max(args.levels) > 1024:
        parser.error("keep it bounded: 0 < duration <= 60 s, at most 1,024 connections")
    for kind in args.endpoints:
        if kind not in EXPECT:
            parser.error(f"unknown endpoint {kind!r}: choose from di, jwt, page")
    wrk = ensure_wrk()
    baseline = measure("baseline", args, args.tree.resolve(), wrk) if args.tree else None
    results = measure("this tree", args, ROOT, wrk)
    config = (f"gunicorn {args.workers} {args.worker_class} workers"
              + (f" × {args.threads} threads" if args.worker_class == "gthread" else "")
              + f", {'PostgreSQL' if args.database_url else 'SQLite'}, wrk on the same machine, "
              f"{args.duration:g} s per level, {args.badges} distinct badges per endpoint")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {config}")
    for kind in args.endpoints:
        print()
        print(table(f"**{TITLES[kind]}**", results[kind], baseline[kind] if baseline else None))
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "http-load.json").write_text(json.dumps({"config": config, "results": results,
                                                    "baseline": baseline}, indent=1))


if __name__ == "__main__":
    main()
