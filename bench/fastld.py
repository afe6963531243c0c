"""Issue #7, goal 1: Data Integrity sign and verify of one badge, the fast JSON-LD path against pyld, in one run.

    .venv/bin/python bench/fastld.py [--rounds 300]      (bench/run.py prints the same rows)

Three ways to the same signature, each timed on the badge of bench/run.py:
  fast         `proofs` as shipped: issuer/fastld.py canonicalises (the general path when it declines);
  cached pyld  `proofs` with the fast path switched off: our pyld path (safety check, context caches);
  plain pyld   stock `pyld.normalize` of the proof configuration and the document, no cache of ours.
The variants take turns in short blocks (one untimed call, then ten timed ones), so the machine's
changing load falls on all of them alike while each runs warm, as it does when a batch is signed; the
figures are medians. The last rows split the fast path into its parts (what is left to gain).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyld import jsonld as pyld

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from issuer import fastld, jsonld, proofs
from issuer.multikey import b58btc_decode, b58btc_encode

CREATED = "2026-11-25T00:00:00Z"


class _NoFastPath:
    """Stands in for issuer.fastld inside issuer.proofs: always declines, so the general path runs."""

    @staticmethod
    def canonical_hash(doc, loader=None):
        return None


def _general_path(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        proofs.fastld = _NoFastPath
        try:
            return fn()
        finally:
            proofs.fastld = fastld
    return run


def interleaved_medians(variants: dict[str, Callable[[], object]], rounds: int, block: int = 10,
                        warmup: int = 20) -> dict[str, float]:
    """Median milliseconds of each of `rounds` calls per variant. The variants take turns in blocks of
    `block` timed calls, each block after one untimed call (so each variant is timed warm)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(max(1, rounds // block)):
        for name, fn in variants.items():
            fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def figures(unsigned: dict, private_key, method: str, rounds: int) -> list[tuple[str, float, str]]:
    """(measure, value, goal) rows: ms per sign and verify on each path, the ratios, the fast path's parts."""
    public_key = private_key.public_key()
    signed = proofs.create_eddsa_rdfc_2022(unsigned, private_key, method, created=CREATED)
    proof = signed["proof"]
    config = {"@context": unsigned["@context"], **{k: v for k, v in proof.items() if k != "proofValue"}}
    declined = fastld.explain(unsigned) or fastld.explain(config)
    if declined is not None:
        raise SystemExit(f"the fast path declines the bench badge: {declined}")
    options = {"algorithm": "URDNA2015", "format": "application/n-quads", "documentLoader": jsonld.document_loader}

    def plain_hash() -> bytes:
        return b"".join(hashlib.sha256(pyld.normalize(doc, dict(options)).encode("utf-8")).digest()
                        for doc in (config, unsigned))

    def plain_sign() -> str:
        return b58btc_encode(private_key.sign(plain_hash()))

    def plain_verify() -> None:
        public_key.verify(b58btc_decode(proof["proofValue"]), plain_hash())

    def sign() -> dict:
        return proofs.create_eddsa_rdfc_2022(unsigned, private_key, method, created=CREATED)

    def verify() -> None:
        proofs.verify_proof(signed, proof, public_key)

    assert _general_path(sign)() == sign()
    assert plain_sign() == proof["proofValue"]
    m = interleaved_medians({
        "sign fast": sign, "sign cached": _general_path(sign), "sign plain": plain_sign,
        "verify fast": verify, "verify cached": _general_path(verify), "verify plain": plain_verify,
    }, rounds)
    data = plain_hash()
    value = proof["proofValue"]
    signature = b58btc_decode(value)
    parts = interleaved_medians({
        "doc": lambda: fastld.canonical_hash(unsigned), "config": lambda: fastld.canonical_hash(config),
        "ed sign": lambda: private_key.sign(data), "ed verify": lambda: public_key.verify(signature, data),
        "b58 encode": lambda: b58btc_encode(signature), "b58 decode": lambda: b58btc_decode(value),
    }, rounds * 4)
    ratio = "≥ 10×"
    return [
        ("DI sign, fast path (`proofs.create_eddsa_rdfc_2022`)", m["sign fast"], "≤ 0.25 ms"),
        ("DI sign, cached pyld path (our general path: safety check + context caches)", m["sign cached"], ""),
        ("DI sign, plain pyld path (stock `pyld.normalize`, no cache of ours)", m["sign plain"], ""),
        ("DI sign: plain pyld ÷ fast", m["sign plain"] / m["sign fast"], ratio),
        ("DI sign: cached pyld ÷ fast", m["sign cached"] / m["sign fast"], ""),
        ("DI verify, fast path (`proofs.verify_proof`, key known)", m["verify fast"], "≤ 0.25 ms"),
        ("DI verify, cached pyld path", m["verify cached"], ""),
        ("DI verify, plain pyld path", m["verify plain"], ""),
        ("DI verify: plain pyld ÷ fast", m["verify plain"] / m["verify fast"], ratio),
        ("DI verify: cached pyld ÷ fast", m["verify cached"] / m["verify fast"], ""),
        ("fast path part: canonical hash of the badge (`fastld.canonical_hash`)", parts["doc"], ""),
        ("fast path part: canonical hash of the proof configuration", parts["config"], ""),
        ("fast path part: Ed25519 sign (cryptography/OpenSSL)", parts["ed sign"], ""),
        ("fast path part: Ed25519 verify (cryptography/OpenSSL)", parts["ed verify"], ""),
        ("fast path part: base58btc encode of the signature (`multikey`)", parts["b58 encode"], ""),
        ("fast path part: base58btc decode of proofValue (`multikey`)", parts["b58 decode"], ""),
    ]


def print_rows(rows: list[tuple[str, float, str]]) -> None:
    print("| measure | median | goal |")
    print("|---|---|---|")
    for name, value, goal in rows:
        unit = "×" if "÷" in name else " ms"
        print(f"| {name} | {value:.3f}{unit} | {goal} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from run import sample_credential

    from issuer.keys import KeyRing
    from issuer.multikey import did_key

    with tempfile.TemporaryDirectory() as tmp:
        ed = KeyRing.create(Path(tmp), None, algorithms=("Ed25519",)).current("Ed25519")
        did = did_key(ed.public_key)
        rows = figures(sample_credential(did), ed.private_key, f"{did}#{ed.kid}", args.rounds)
    print(f"{args.rounds} calls per figure in interleaved blocks of 10 (medians; the parts: {args.rounds * 4})")
    print()
    print_rows(rows)


if __name__ == "__main__":
    main()
