"""What the browser tests (tests/test_browser.py) share: the live server, Chromium, axe-core and screenshots.

Chromium is Debian's (`scripts/install_browser.sh`, run by `make test`), driven by Playwright at
/usr/bin/chromium; Playwright's own browser downloads are never used. axe-core comes from npm
(`tests/interop/package.json`, installed by `make test` with `npm ci`). Where either is missing the browser
tests skip, saying why, except under CI=true, where they fail: CI must never pass without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.serving import make_server

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
AXE_JS = PROJECT_ROOT / "tests" / "interop" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
AXE_REPORTS = ARTIFACTS / "axe"

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = ("serious", "critical")


def require(ok: bool, reason: str) -> None:
    """Skip when something the browser tests need is missing; under CI=true fail instead."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def chromium():
    """Debian's Chromium under Playwright, for a test module (skips, or fails under CI=true, without it)."""
    require(CHROMIUM.exists(), f"{CHROMIUM} not found: install Debian's chromium (scripts/install_browser.sh, "
                               "run by `make test` as root)")
    require(AXE_JS.exists(), f"axe-core not found at {AXE_JS}: npm ci --prefix tests/interop")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --- the live server ------------------------------------------------------------------------------------

@dataclass
class LiveServer:
    """The application served over real HTTP on 127.0.0.1, with an issuing token for its API."""

    app: Any
    url: str
    token: str
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.trust_env = False  # never a proxy: everything stays on 127.0.0.1

    def issue(self, code: str, email: str, *, name: str | None = "Chan Tai Man", did: str | None = None,
              awarded_on: str | None = None) -> dict:
        """Issue one badge through the HTTP API: {"id", "url", "credential"[, "jwt"]}."""
        recipient = {"email": email, **({"name": name} if name else {}), **({"did": did} if did else {})}
        body: dict[str, Any] = {"achievement": code, "recipient": recipient}
        if awarded_on:
            body["awarded_on"] = awarded_on
        response = self.http.post(f"{self.url}/api/v1/credentials", json=body,
                                  headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, path: str) -> requests.Response:
        response = self.http.get(f"{self.url}{path}", timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return response

    def stored(self, public_id: str) -> str:
        """The credential's stored text exactly as served at /credentials/<id>.json."""
        return self.get(f"/credentials/{public_id}.json").text


class _Switch:
    """A WSGI callable that forwards to the application once it exists: the server must be listening
    (and so know its port) before the application is created with its base URL."""

    def __init__(self) -> None:
        self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def start_live_server(tmp: Path):
    """Create the application as tests/conftest.py's `app` fixture does (SQLite, or PostgreSQL when
    ISSUER_TEST_DATABASE_URL is set), serve it on a free port of 127.0.0.1 in a daemon thread and return
    (LiveServer, stop)."""
    from sqlalchemy import text

    from issuer import create_app
    from issuer.db import get_session
    from issuer.tokens import create_token
    from tests.conftest import _database_url

    switch = _Switch()
    server = make_server("127.0.0.1", 0, switch, threaded=True)
    base_url = f"http://127.0.0.1:{server.server_port}"
    url, cleanup = _database_url(tmp)
    app = create_app({
        "TESTING": True,
        "ISSUER_DATABASE_URL": url,
        "ISSUER_KEY_DIR": str(tmp / "keys"),
        "ISSUER_BASE_URL": base_url,
        "ISSUER_KEY_PASSPHRASE": None,
    })
    app.instance_path = str(tmp / "instance")
    result = app.test_cli_runner().invoke(args=["init", "--no-token"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        session = get_session()
        _, token = create_token(session, "browser tests", "issue")
        session.commit()
    switch.app = app
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        app.extensions["issuer.engine"].dispose()
        if cleanup:
            admin, schema = cleanup
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    return LiveServer(app=app, url=base_url, token=token), stop


def only_local(blocked: list[str]):
    """A page.route handler that lets requests to 127.0.0.1 through and aborts (and records) every other."""

    def handle(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("blockedbyclient")

    return handle


# --- artefacts and axe-core -----------------------------------------------------------------------------

def screenshot(page, name: str) -> Path:
    """The whole page as tests/artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


_AXE_RUN = """async (tags) => {
  const results = await axe.run(document, {runOnly: tags});
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target, html: n.html, summary: n.failureSummary})),
  }));
}"""


def axe_violations(page, name: str) -> list[dict]:
    """axe-core's violations on the page as it is now; all of them are written to
    tests/artifacts/axe/<name>.json, whatever their impact."""
    # Evaluated rather than added as a <script>: the pages' Content-Security-Policy refuses inline scripts.
    page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    violations = page.evaluate(_AXE_RUN, AXE_TAGS)
    AXE_REPORTS.mkdir(parents=True, exist_ok=True)
    (AXE_REPORTS / f"{name}.json").write_text(json.dumps(violations, indent=2, ensure_ascii=False),
                                              encoding="utf-8")
    return violations


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"]:
            lines.append(f"    {' '.join(map(str, node['target']))}: {node['html'][:200]}")
            lines.extend(f"      {line}" for line in (node["summary"] or "").splitlines())
    return "\n".join(lines)


def assert_accessible(page, name: str) -> None:
    """No serious or critical axe-core violation (WCAG 2.0/2.1 A and AA, and best practice); the lesser
    ones are reported as warnings."""
    violations = axe_violations(page, name)
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"axe-core on {name} ({page.url}):\n{describe(blocking)}"
    if violations:
        warnings.warn(f"axe-core on {name} ({page.url}), not blocking:\n{describe(violations)}", stacklevel=2)
