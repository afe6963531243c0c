"""Benchmarks for issues #3 and #7: server time to evaluate an application of 60 badges, beyond verifying
them (issue #3), and end to end (issue #7, goal 4: at most 30 ms).

    .venv/bin/python bench/stacking.py [--badges 60] [--rounds 30]

Issues the badges through the app (SQLite in a temporary folder), verifies them once, then times the
evaluation with those verification results replayed, so the figure is everything the server does
besides checking signatures: reading each badge's profile, the catalogue and pathway look-ups, the rules
engine and the report. The full evaluation (with verification) is printed beside it.

End to end (issue #7): the application as JSON posted to `POST /api/v1/awards/evaluate` through the WSGI
test client (no sockets): reading the body, parsing, verifying every badge, the rules, the JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import median_ms  # noqa: E402

from issuer import awards, create_app  # noqa: E402
from issuer.db import get_session  # noqa: E402
from issuer.identity import get_context, get_verifier  # noqa: E402
from issuer.tokens import create_token  # noqa: E402


class ReplayVerifier:
    """Answers with results computed earlier, so timing leaves signature checks out."""

    def __init__(self, verifier, items):
        self.results = {}
        for item in items:
            key = item.jwt or id(item.credential)
            self.results[key] = (verifier.verify_jwt(item.jwt, recipient_email=EMAIL) if item.jwt
                                 else verifier.verify_credential(item.credential, recipient_email=EMAIL))

    def verify_credential(self, doc, *, recipient_email=None):
        return self.results[id(doc)]

    def verify_jwt(self, token, *, recipient_email=None):
        return self.results[token]


EMAIL = "bench-learner@example.com"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--badges", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"TESTING": True, "ISSUER_DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite",
                          "ISSUER_KEY_DIR": f"{tmp}/keys", "ISSUER_KEY_PASSPHRASE": None,
                          # one client address for every round: measure the pages, not the rate limiter
                          "ISSUER_RATE_LIMITS": "off"})
        assert app.test_cli_runner().invoke(args=["init", "--no-token"]).exit_code == 0
        client = app.test_client()
        with app.app_context():
            session = get_session()
            _, token = create_token(session, "bench", "issue")
            session.commit()
        codes = [a["code"] for a in client.get("/api/v1/achievements").get_json()["achievements"]]
        badges = []
        for i in range(args.badges):
            day = date(2023, 1, 1) + timedelta(days=7 * i)
            issued = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                                 json={"achievement": codes[i % len(codes)], "recipient": {"email": EMAIL},
                                       "awarded_on": day.isoformat()}).get_json()
            badges.append(issued["credential"])
        with app.app_context():
            session = get_session()
            application = awards.parse_application({"recipient": {"email": EMAIL}, "credentials": badges},
                                                   max_badges=200, allow_as_of=False)
            rules = app.extensions["issuer.rules"]
            ctx, verifier = get_context(), get_verifier()
            replay = ReplayVerifier(verifier, application.items)

            def evaluate(with_verifier):
                evaluated = awards.evaluate_badges(session, ctx, with_verifier, application, trusted=frozenset())
                return awards.decide(evaluated, rules, application)

            decision = evaluate(replay)
            beyond = median_ms(lambda: evaluate(replay), args.rounds)
            full = median_ms(lambda: evaluate(verifier), max(3, args.rounds // 10))
            evaluated = awards.evaluate_badges(session, ctx, replay, application, trusted=frozenset())
            from issuer import stacking

            engine = median_ms(lambda: stacking.evaluate(evaluated.badges, rules=rules,
                                                         as_of=date.today()), args.rounds)
        body = json.dumps({"recipient": {"email": EMAIL}, "credentials": badges}).encode("utf-8")

        def post() -> None:
            response = client.post("/api/v1/awards/evaluate", data=body, content_type="application/json")
            assert response.status_code == 200, response.get_data(as_text=True)[:300]

        post()
        report = client.post("/api/v1/awards/evaluate", data=body, content_type="application/json").get_json()
        counted = len((report.get("award") or {}).get("counted", []))
        end_to_end = median_ms(post, args.rounds, warmup=3)
    award = decision.to_json()["award"]
    print(f"{args.badges} badges; award: {award['title']['en'] if award else None}")
    print()
    print("| measure | median | goal |")
    print("|---|---|---|")
    print(f"| evaluate {args.badges} badges, server time beyond signature checks | {beyond:.1f} ms | < 50 ms |")
    print(f"| of which the rules engine (stacking.evaluate) | {engine:.1f} ms | |")
    print(f"| evaluate {args.badges} badges including verification | {full:.1f} ms | |")
    print(f"| end to end: POST /api/v1/awards/evaluate with {args.badges} badges ({len(body) // 1024} KiB; "
          f"award counts {counted}) | {end_to_end:.1f} ms | ≤ 30 ms |")


if __name__ == "__main__":
    main()
