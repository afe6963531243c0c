"""The fast JSON-LD path over the whole differential corpus (issue #7): accepted, declined, mismatches.

    .venv/bin/python bench/fastld_corpus.py [--count 10000] [--seed 2026]

Every document of tests/corpus.py is canonicalised by issuer/fastld.py; each one it accepts is compared
with pyld (`jsonld.canonize`, and the general path's safety check must pass) and with pyoxigraph (on
pyld's dataset and on the fast path's own), byte for byte (tests/corpus.py `compare`). Every declined
document is listed with the reason. Exits non-zero on any mismatch, or when one of our own documents
(built by credentials.py, awards.py, status.py or shaped as presentations.py builds them) is declined.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from issuer import fastld  # noqa: E402
from tests.corpus import ACCEPT, DECLINE, compare, corpus  # noqa: E402


def _general(reason: str) -> str:
    reason = re.sub(r"'[^']*'", "…", reason)
    reason = re.sub(r"-?\d[\d.e+]*", "…", reason)
    return re.sub(r"(quad|failed:) .*", r"\1 …", reason)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    start = time.perf_counter()
    counts: collections.Counter = collections.Counter()
    by_kind: collections.Counter = collections.Counter()
    declined: list[tuple[str, str]] = []
    problems: list[str] = []
    for case in corpus(args.count, args.seed):
        kind = re.sub(r"-\d+", "", case.name)  # badge, badge-proof, badge-variant, award, ...
        by_kind[kind] += 1
        why = fastld.explain(case.doc)
        if why is not None:
            counts["declined"] += 1
            declined.append((case.name, why))
            if case.expect == ACCEPT:
                problems.append(f"{case.name}: one of our own documents was declined: {why}")
            continue
        counts["accepted"] += 1
        if case.expect == DECLINE:
            problems.append(f"{case.name}: accepted, but it was made to be declined")
        try:
            problem = compare(case.doc)
        except Exception as exc:  # noqa: BLE001 - reported and counted
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            counts["mismatches"] += 1
            problems.append(f"{case.name}: {problem}")
    elapsed = time.perf_counter() - start

    print(f"corpus: {args.count} documents (seed {args.seed}): "
          + ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())))
    print(f"fast path accepted: {counts['accepted']}")
    print(f"fast path declined: {counts['declined']}")
    print(f"mismatches (must be 0): {counts['mismatches']}")
    print(f"({elapsed:.1f} s)")
    print()
    print("declined documents (the general path handles them):")
    for name, why in declined:
        print(f"  {name}: {why}")
    # the reasons without their particulars (the term, the number, the quad)
    reasons = collections.Counter(_general(why) for _, why in declined)
    print()
    print("declines by reason:")
    for reason, n in reasons.most_common():
        print(f"  {n:5}  {reason}")
    if problems:
        print()
        print("PROBLEMS:")
        for line in problems:
            print(f"  {line}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
