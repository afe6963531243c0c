"""Benchmark for issue #5: build and sign a 131,072-entry status list credential (goal: < 50 ms median).

    .venv/bin/python bench/status.py [--rounds 200] [--revoked 1310]

"Build" is what a rebuild does from the set of revoked indexes: a fresh bitstring, the bits set, GZIP +
base64url, the unsigned credential. "Sign" adds the eddsa-rdfc-2022 proof (JSON-LD canonicalisation of
a small document: the encoded list is one literal). Decode and verify are what a verifier pays per list.
Prints markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from timing import median_ms  # noqa: E402

from issuer import proofs, status  # noqa: E402

ISSUER = "did:web:badges.example.edu"
METHOD = f"{ISSUER}#key-1"
LIST_URL = "https://badges.example.edu/status/1"
GOAL_MS = 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--revoked", type=int, default=status.MIN_ENTRIES // 100,
                        help="how many indexes are set (default 1%% of the list)")
    args = parser.parse_args()

    key = Ed25519PrivateKey.generate()
    revoked = random.Random(5).sample(range(status.MIN_ENTRIES), args.revoked)

    def build() -> dict:
        bits = status.Bitstring(status.MIN_ENTRIES)
        for index in revoked:
            bits.set(index)
        return status.list_credential(list_url=LIST_URL, issuer=ISSUER, bits=bits,
                                      valid_from="2025-01-01T00:00:00Z", valid_until="2025-01-02T00:00:00Z",
                                      ttl_ms=300_000)

    def build_and_sign() -> dict:
        return proofs.create_eddsa_rdfc_2022(build(), key, METHOD, created="2025-01-01T00:00:00Z")

    signed = build_and_sign()
    encoded = signed["credentialSubject"]["encodedList"]
    assert sorted(status.Bitstring.decode(encoded).ones()) == sorted(revoked)

    rows = [
        ("build (bitstring, GZIP, base64url, credential)", median_ms(build, args.rounds), ""),
        ("build and sign (eddsa-rdfc-2022)", median_ms(build_and_sign, args.rounds), GOAL_MS),
        ("decode encodedList", median_ms(lambda: status.Bitstring.decode(encoded), args.rounds), ""),
        ("verify the list's proof (key known)",
         median_ms(lambda: proofs.verify_proof(signed, signed["proof"], key.public_key()), args.rounds), ""),
    ]
    print(f"131,072-entry list, {args.revoked} set, encodedList {len(encoded)} characters, "
          f"{args.rounds} rounds\n")
    print("| measure | median | goal (issue #5) |")
    print("|---|---|---|")
    for name, ms, goal in rows:
        verdict = f"< {goal:.0f} ms {'✔' if ms < goal else '✘'}" if goal else ""
        print(f"| status list: {name} | {ms:.3f} ms | {verdict} |")


if __name__ == "__main__":
    main()
