"""Benchmarks for issues #2 and #7, in one run: sign and verify one badge in each proof format (for Data
Integrity also the fast JSON-LD path against both pyld paths, bench/fastld.py), and issuance throughput
through HTTP with gunicorn on 127.0.0.1. Prints a Markdown table for bench/RESULTS.md.

    .venv/bin/python bench/run.py [--rounds 300] [--http-requests 400] [--no-http]

Traffic goes to loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from pyld import jsonld as pyld

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fastld as fastld_bench  # bench/fastld.py
from timing import median_ms as _median_ms

from issuer import credentials as docs
from issuer import jsonld, proofs, vcjwt
from issuer.catalogue import DEMO_CATALOGUE, load_catalogue
from issuer.keys import KeyRing
from issuer.multikey import did_key


def median_ms(fn, rounds: int) -> float:
    # Signing warms pyld's context caches: give it up to 20 untimed calls first.
    return _median_ms(fn, rounds, warmup=min(20, rounds))


def sample_credential(did: str) -> dict:
    mc = load_catalogue(DEMO_CATALOGUE)[0]
    achievement = docs.achievement_document(mc, "http://127.0.0.1:5000/achievements/" + mc.code,
                                            image_url="http://127.0.0.1:5000/achievements/x/image.png")
    profile = {"id": did, "type": ["Profile"], "name": "香港示範專業進修學院 Demo School", "url": "http://127.0.0.1:5000"}
    return docs.credential_document(
        credential_id="http://127.0.0.1:5000/credentials/bench", issuer_profile=profile, achievement=achievement,
        recipient_email="learner@example.com", salt=docs.new_salt(),
        recipient_did="did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        valid_from="2026-11-25T00:00:00Z", awarded_date=None)


def proof_figures(rounds: int) -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        ring = KeyRing.create(Path(tmp), None, algorithms=("Ed25519", "ES256", "RS256"))
        ed = ring.current("Ed25519")
        did = did_key(ed.public_key)
        unsigned = sample_credential(did)
        method = f"{did}#{ed.kid}"
        signed = proofs.create_eddsa_rdfc_2022(unsigned, ed.private_key, method)
        def plain_pyld_sign() -> bytes:
            """The reference path: stock pyld normalisation of document and proof configuration."""
            options = {"algorithm": "URDNA2015", "format": "application/n-quads",
                       "documentLoader": jsonld.document_loader}
            config = {"@context": unsigned["@context"], **{k: v for k, v in signed["proof"].items()
                                                           if k != "proofValue"}}
            data = b"".join(hashlib.sha256(pyld.normalize(d, dict(options)).encode()).digest()
                            for d in (config, unsigned))
            return ed.private_key.sign(data)

        rows = fastld_bench.figures(unsigned, ed.private_key, method, rounds)
        rows += [
            ("Data Integrity sign, plain pyld path (reference)", median_ms(plain_pyld_sign, rounds), ""),
            ("Data Integrity eddsa-rdfc-2022: sign", median_ms(
                lambda: proofs.create_eddsa_rdfc_2022(unsigned, ed.private_key, method), rounds), "≤ 3 ms"),
            ("Data Integrity eddsa-rdfc-2022: verify", median_ms(
                lambda: proofs.verify_proof(signed, signed["proof"], ed.public_key), rounds), ""),
        ]
        for alg in ("ES256", "RS256"):
            key = ring.current(alg)
            token = vcjwt.sign_vc_jwt(unsigned, key, f"{did}#{key.kid}")
            rows.append((f"VC-JWT {alg}: sign", median_ms(
                lambda key=key: vcjwt.sign_vc_jwt(unsigned, key, f"{did}#{key.kid}"), rounds),
                "≤ 0.2 ms" if alg == "ES256" else ""))
            rows.append((f"VC-JWT {alg}: verify", median_ms(
                lambda key=key, token=token: vcjwt.verify_vc_jwt(token, key.public_key), rounds), ""))
        return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_figures(requests_total: int, concurrency: int) -> list[tuple[str, float, str]]:
    """Issue badges through gunicorn (2 workers) on loopback; report badges per second and latency."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "ISSUER_DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite", "ISSUER_KEY_DIR": f"{tmp}/keys",
               "ISSUER_BASE_URL": f"http://127.0.0.1:{port}", "ISSUER_OUTBOX_DIR": f"{tmp}/outbox"}
        env.pop("ISSUER_KEY_PASSPHRASE", None)
        env["ISSUER_DEVELOPMENT"] = "1"  # plaintext throwaway keys: only a development instance starts
        issuer_bin = str(Path(sys.executable).parent / "issuer")
        out = subprocess.run([issuer_bin, "init"], env=env, capture_output=True, text=True, check=True).stdout
        token = next(line for line in out.splitlines() if "Admin API token" in line).rsplit(": ", 1)[1]
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
             "--log-level", "warning", "issuer:create_app()"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while time.time() < deadline:
                if server.poll() is not None:
                    raise RuntimeError(f"gunicorn exited with status {server.returncode}")
                try:
                    code = requests.get(f"{base}/api/v1/achievements", timeout=1).json()["achievements"][0]["code"]
                    break
                except (requests.ConnectionError, KeyError, ValueError):
                    time.sleep(0.2)
            else:
                raise RuntimeError("gunicorn did not start within 30 s")
            headers = {"Authorization": f"Bearer {token}"}
            local = threading.local()

            def one(i: int) -> float:
                session = getattr(local, "session", None) or requests.Session()
                local.session = session
                body = {"achievement": code, "recipient": {"email": f"bench{i}@example.com"}}
                start = time.perf_counter()
                r = session.post(f"{base}/api/v1/credentials", json=body, headers=headers, timeout=30)
                if r.status_code != 201:
                    raise RuntimeError(f"issue failed: {r.status_code} {r.text[:200]}")
                return time.perf_counter() - start

            for i in range(10):
                one(-1 - i)
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                latencies = list(pool.map(one, range(requests_total)))
            elapsed = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=10)
    return [
        (f"HTTP issuance, gunicorn 2 workers, SQLite, {concurrency} clients: badges/s",
         requests_total / elapsed, ""),
        ("HTTP issuance: median latency (ms)", statistics.median(latencies) * 1000, ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--http-requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-http", action="store_true", help="only the proof figures")
    args = parser.parse_args()
    rows = proof_figures(args.rounds)
    if not args.no_http:
        rows += http_figures(args.http_requests, args.concurrency)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.rounds} rounds per proof figure (medians), {0 if args.no_http else args.http_requests} HTTP requests")
    print()
    print("| measure | median | goal |")
    print("|---|---|---|")
    for name, value, goal in rows:
        unit = "×" if "÷" in name else "" if "badges/s" in name or "(ms)" in name else " ms"
        print(f"| {name} | {value:.3f}{unit} | {goal} |")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "last-run.json").write_text(json.dumps({name: value for name, value, _ in rows}, indent=1))


if __name__ == "__main__":
    main()
