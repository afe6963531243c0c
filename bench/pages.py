"""Benchmark for issue #4: server time of the public pages (goal: the credential page under 20 ms median).

    .venv/bin/python bench/pages.py [--rounds 200]

Server time is measured in-process through the WSGI test client: routing, database reads, the verifier
run on the stored credential (the page shows a fresh verdict each time), template rendering. No sockets,
so the figure is the server's share of a page view. SQLite in a temporary folder, the demo catalogue.
Also reported: the PDF parchment made for the first time and served again from the cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import median_ms  # noqa: E402

from issuer import create_app  # noqa: E402
from issuer.db import get_session  # noqa: E402
from issuer.tokens import create_token  # noqa: E402

EMAIL = "bench-learner@example.com"
CERTIFICATE = [("AI-101", "2024-01-10"), ("AI-102", "2024-03-10"), ("AI-201", "2024-06-10"),
               ("AI-202", "2024-09-10"), ("AI-203", "2025-01-10")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"TESTING": True, "ISSUER_DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite",
                          "ISSUER_KEY_DIR": f"{tmp}/keys", "ISSUER_KEY_PASSPHRASE": None,
                          # one client address for every round: measure the pages, not the rate limiter
                          "ISSUER_RATE_LIMITS": "off"})
        app.instance_path = f"{tmp}/instance"
        assert app.test_cli_runner().invoke(args=["init", "--no-token"]).exit_code == 0
        client = app.test_client()
        with app.app_context():
            session = get_session()
            _, token = create_token(session, "bench", "issue")
            session.commit()
        badges = []
        for code, day in CERTIFICATE:
            response = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                                   json={"achievement": code, "awarded_on": day,
                                         "recipient": {"email": EMAIL, "name": "陳大文 Chan Tai Man"}})
            badges.append(response.get_json())
        award = client.post("/api/v1/awards", json={
            "recipient": {"email": EMAIL},
            "credentials": [json.loads(client.get(f"/credentials/{b['id']}.json").data) for b in badges]}).get_json()
        pages = {
            "credential page, badge (en)": f"/credentials/{badges[0]['id']}",
            "credential page, badge (zh-Hant)": f"/credentials/{badges[0]['id']}?lang=zh-Hant",
            "credential page, Certificate": f"/credentials/{award['id']}",
            "achievement page": "/achievements/AI-101",
            "catalogue": "/catalogue",
            "home": "/",
            "verify page (form)": "/verify",
            "apply page (form)": "/awards/apply",
        }
        print(f"{'page':40} {'median ms':>10}")
        for name, url in pages.items():
            def get(url=url):
                response = client.get(url, headers={"Accept": "text/html"})
                assert response.status_code == 200, (url, response.status_code)
            print(f"{name:40} {median_ms(get, args.rounds, warmup=3):10.2f}")
        pdf_url = f"/credentials/{badges[1]['id']}.pdf"
        start = time.perf_counter()
        assert client.get(pdf_url).status_code == 200
        first = (time.perf_counter() - start) * 1000
        cached = median_ms(lambda: client.get(pdf_url), args.rounds, warmup=0)
        print(f"{'PDF parchment, first request':40} {first:10.2f}")
        print(f"{'PDF parchment, cached':40} {cached:10.2f}")


if __name__ == "__main__":
    main()
