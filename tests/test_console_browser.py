"""The staff console in a real browser (Debian's Chromium through Playwright) against the application on
127.0.0.1, with a real OpenID Connect provider (oidc-provider-mock) on 127.0.0.1 and axe-core on every
page. Without Chromium or axe-core these tests skip; under CI=true they fail (tests/browser_support.py).

The journey of issue #8: a registrar who has never seen the console signs in with the school's identity
provider, adds a course, issues a 2,000-row cohort from a spreadsheet while looking at other pages,
revokes one badge and finds the audit entries for all of it; an administrator signs in with a password
and a TOTP code; an auditor is refused what the role may not do."""

from __future__ import annotations

import csv
import io
import threading
import time

import pyotp
import pytest

from issuer import staff
from issuer.db import get_session
from tests.browser_support import (
    assert_accessible,
    chromium,
    only_local,
    screenshot,
    start_live_server,
)

PASSWORD = "correct horse battery staple"
COHORT = 2000


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def provider():
    from oidc_provider_mock import User
    from oidc_provider_mock import app as provider_app
    from werkzeug.serving import make_server

    users = [User(sub="new.registrar", claims={"email": "new.registrar@school.example", "name": "Wong Siu Ming",
                                               "groups": ["registry-staff", "course-editors"]})]
    server = make_server("127.0.0.1", 0, provider_app(user_claims=users, require_nonce=True), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(browser, provider, tmp_path_factory):
    server, stop = start_live_server(tmp_path_factory.mktemp("console"))
    server.app.config.update(ISSUER_OIDC_ISSUER=provider, ISSUER_OIDC_CLIENT_ID="staff-console",
                             ISSUER_OIDC_CLIENT_SECRET="not-a-real-secret",
                             ISSUER_OIDC_ROLE_MAP="registry-staff=registrar, course-editors=catalogue_editor")
    yield server
    stop()


@pytest.fixture
def page(browser, live):
    context = browser.new_context(locale="en-GB", accept_downloads=True, viewport={"width": 1100, "height": 800})
    context.set_default_timeout(15_000)
    blocked: list[str] = []
    context.route("**/*", only_local(blocked))
    tab = context.new_page()
    tab.blocked = blocked
    yield tab
    context.close()


def make_staff(live, email: str, roles) -> staff.StaffAccount:
    with live.app.app_context():
        session = get_session()
        account = staff.create_account(session, email=email, roles=roles, password=PASSWORD, actor="test")
        session.commit()
        return account


def local_sign_in(page, live, account, code: str | None = None) -> None:
    page.goto(f"{live.url}/console/")
    assert "/console/sign-in" in page.url
    page.keyboard.press("Tab")  # the keyboard reaches the form; focus is visible there (base.html's outline)
    page.fill("#email", account.email)
    page.fill("#password", PASSWORD)
    if code:
        page.fill("#code", code)
    with page.expect_navigation():
        page.locator("#local-sign-in").click()


def link(page, name: str):
    with page.expect_navigation():
        page.get_by_role("link", name=name, exact=True).first.click()


def cohort_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "achievement", "award_date", "grade"])
    for i in range(COHORT - 4):
        writer.writerow([f"learner{i:04d}@example.com", f"Learner {i}", "NEW-101", "2024-06-01", "A"])
    writer.writerow(["learner0000@example.com", "Learner 0", "NEW-101", "2024-06-01", "A"])  # twice in the file
    writer.writerow(["learner0001@example.com", "Learner 1", "NEW-101", "2024-06-01", "A"])
    writer.writerow(["late@example.com", "Late", "GONE-999", "2024-06-01", ""])  # no such course
    writer.writerow(["not-an-email", "Typo", "NEW-101", "2024-06-01", ""])
    return out.getvalue().encode()


def test_a_new_registrar_signs_in_with_the_school_account_and_does_the_whole_job(page, live, tmp_path):
    started = time.time()
    # Single sign-on: the provider's own page, then back into the console, a registrar and course editor.
    page.goto(f"{live.url}/console/")
    assert_accessible(page, "console-sign-in")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in with the school's account").click()
    assert page.url.startswith(live.app.config["ISSUER_OIDC_ISSUER"])
    with page.expect_navigation(url=f"{live.url}/console/"):
        page.locator('button[name="sub"][value="new.registrar"]').click()
    assert "new.registrar@school.example" in page.locator("main").inner_text()
    assert_accessible(page, "console-home")
    screenshot(page, "console-home")

    # Add a course: both languages side by side, the badge drawn live beside the form.
    link(page, "Add a microcredential to the catalogue")
    fields = {"#code": "NEW-101", "#name_en": "Service Design Sprint", "#description_en": "Design a service.",
              "#criteria_en": "Deliver the sprint.", "#theme_en": "Design", "#name_zh": "服務設計衝刺",
              "#description_zh": "設計一項服務。", "#criteria_zh": "完成衝刺。", "#theme_zh": "設計",
              "#credits": "6", "#contact_hours": "30", "#qf_level": "4", "#theme_code": "design"}
    for selector, value in fields.items():
        page.fill(selector, value)
    page.locator("#preview").wait_for(state="visible")
    assert page.locator("#preview").get_attribute("src").startswith("blob:")
    assert_accessible(page, "console-course-form")
    screenshot(page, "console-course-form")
    with page.expect_navigation():
        page.locator("#save").click()
    assert "Saved NEW-101" in page.locator(".flash").inner_text()
    assert page.locator('tr[data-code="NEW-101"]').count() == 1
    assert_accessible(page, "console-catalogue")

    # A cohort from a spreadsheet: the rows and their problems first, then issuing in the background.
    link(page, "Issue a cohort")
    path = tmp_path / "cohort.csv"
    path.write_bytes(cohort_csv())
    page.set_input_files("#file", str(path))
    with page.expect_navigation():
        page.locator("#upload").click()
    assert f"{COHORT} rows; 2 with problems" in page.locator("main").inner_text()
    assert "unknown achievement 'GONE-999'" in page.locator("#rows").inner_text()
    assert_accessible(page, "console-cohort-preview")
    screenshot(page, "console-cohort-preview")
    with page.expect_navigation():
        page.locator("#start").click()
    job_url = page.url
    assert page.locator("#progress").is_visible()
    # The registrar looks elsewhere while it runs: leaving the page does not stop the job.
    link(page, "Audit log")
    link(page, "Catalogue")
    page.goto(job_url)
    # Polled from the test (the page's CSP refuses the eval that wait_for_function would need).
    deadline = time.monotonic() + 90
    while page.locator("#job-status").get_attribute("data-status") != "done":
        assert time.monotonic() < deadline, "the cohort did not finish within 90 s"
        time.sleep(0.25)
    counts = page.locator("#counts").inner_text()
    assert f"{COHORT} of {COHORT} done: {COHORT - 4} issued, 2 already issued, 2 errors." == counts
    assert_accessible(page, "console-cohort-done")
    screenshot(page, "console-cohort-done")
    with page.expect_download() as download:
        page.locator("#results").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert len(rows) == COHORT
    by_status: dict[str, list[dict]] = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert {k: len(v) for k, v in by_status.items()} == {"issued": COHORT - 4, "already issued": 2, "error": 2}
    assert [r["line"] for r in by_status["already issued"]] == [str(COHORT - 2), str(COHORT - 1)]
    assert all(r["credential_url"].startswith(f"{live.url}/credentials/") for r in by_status["issued"])

    # Revoke one badge: find the learner, see the consequences, confirm with a reason.
    link(page, "Learners")
    page.fill("#q", "Learner 42")
    with page.expect_navigation():
        page.locator("#find").click()
    link(page, "learner0042@example.com")
    assert_accessible(page, "console-learner")
    badge_id = page.locator("#badges tr[data-code='NEW-101']").get_attribute("data-id")
    with page.expect_navigation():
        page.locator("#badges").get_by_role("link", name="Revoke NEW-101 2024-06-01").click()
    assert "No award counts this badge" in page.locator("#affected").inner_text()
    assert_accessible(page, "console-revoke")
    page.select_option("#category", "issued in error")
    page.fill("#reason", "Learner 42 did not finish the sprint")
    with page.expect_navigation():
        page.locator("#confirm-revoke").click()
    assert "revoked on" in page.locator(f"#badges tr[data-id='{badge_id}']").inner_text()
    public = live.http.get(f"{live.url}/credentials/{badge_id}", headers={"Accept": "text/html"}, timeout=30)
    assert "Revoked on" in public.text

    # The audit entries for all of it, filtered by the person.
    link(page, "Audit log")
    page.fill("#actor", "new.registrar@school.example")
    with page.expect_navigation():
        page.locator("#filter").click()
    shown = page.locator("#entries tr[data-action]").evaluate_all("rows => rows.map(r => r.dataset.action)")
    assert len(shown) == 200 and shown[0] == "credential.revoke"  # newest first, the page holds 200
    with page.expect_download() as download:
        page.locator("#export").click()  # the export holds every entry that matches
    exported = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert {"staff.sign_in", "catalogue.create", "cohort.start", "credential.issue", "credential.revoke"} \
        <= {r["action"] for r in exported}
    assert sum(r["action"] == "credential.issue" for r in exported) == COHORT - 4
    page.select_option("#action", "credential.revoke")
    with page.expect_navigation():
        page.locator("#filter").click()
    assert page.locator("#entries tr[data-action]").count() == 1
    assert "Learner 42 did not finish" in page.locator("#entries").inner_text()
    assert_accessible(page, "console-audit")
    screenshot(page, "console-audit")
    # Only the test provider's own page asks for an outside stylesheet (blocked); the console asks for nothing.
    assert all(url.endswith("pico.min.css") for url in page.blocked), page.blocked
    assert time.time() - started < 75


def test_an_administrator_signs_in_with_a_totp_code_rotates_keys_and_makes_a_token(page, live):
    admin = make_staff(live, "admin@school.example", "administrator")
    local_sign_in(page, live, admin)  # no code: refused
    assert page.locator("#sign-in-error").is_visible()
    assert_accessible(page, "console-sign-in-error")
    local_sign_in(page, live, admin, pyotp.TOTP(admin.totp_secret).now())
    assert page.url == f"{live.url}/console/"

    link(page, "Keys and tokens")
    current = page.locator('#keys tr[data-status="current"]').count()
    link(page, "Rotate the keys")
    assert_accessible(page, "console-rotate")
    page.check("#confirm")
    with page.expect_navigation():
        page.locator("#rotate-confirm").click()
    assert page.locator('#keys tr[data-status="retired"]').count() == current
    page.fill("#token-name", "student records")
    page.check("#scope-issue")
    with page.expect_navigation():
        page.locator("#create-token").click()
    secret = page.locator("#secret").input_value()
    assert secret.startswith("obi_")
    assert_accessible(page, "console-token-created")
    link(page, "Back to keys and tokens")
    assert secret not in page.content()
    assert page.locator('#tokens tr[data-name="student records"]').count() == 1

    # The same pages in Traditional Chinese, still accessible.
    page.goto(f"{live.url}/console/keys?lang=zh-Hant")
    assert page.locator("html").get_attribute("lang") == "zh-Hant"
    assert_accessible(page, "console-keys-zh-Hant")
    screenshot(page, "console-keys-zh-Hant")
    page.goto(f"{live.url}/console/accounts?lang=zh-Hant")
    assert_accessible(page, "console-accounts-zh-Hant")


def test_an_auditor_reads_but_is_refused_in_the_pages_and_in_the_requests_behind_them(page, live):
    auditor = make_staff(live, "auditor@school.example", "auditor")
    local_sign_in(page, live, auditor)
    nav = page.locator("nav.console").inner_text()
    assert "Audit log" in nav and "Issue a badge" not in nav and "Staff accounts" not in nav
    response = page.goto(f"{live.url}/console/issue")
    assert response.status == 403
    assert_accessible(page, "console-forbidden")
    page.goto(f"{live.url}/console/audit")
    token = page.locator('input[name="csrf_token"]').first.input_value()
    status = page.evaluate("""async (token) => {
      const body = new URLSearchParams({csrf_token: token, achievement: "AI-101", email: "x@example.com"});
      return (await fetch("/console/issue", {method: "POST", body})).status; }""", token)
    assert status == 403
    rotate = page.evaluate("""async (token) => {
      const body = new URLSearchParams({csrf_token: token, confirm: "yes"});
      return (await fetch("/console/keys/rotate", {method: "POST", body})).status; }""", token)
    assert rotate == 403
    assert page.locator("#entries").count() == 1


def test_a_registrar_signs_in_and_moves_around_with_the_keyboard_alone(page, live):
    """Issue #8 item 8: keyboard use. Sign in by typing and Enter only, then Tab through the console:
    every navigation link is reached in order, each with a visible focus indicator."""
    from tests.test_browser import tab_through, without_focus_indicator

    registrar = make_staff(live, "keyboard.registrar@school.example", "registrar")
    page.goto(f"{live.url}/console/sign-in")
    focused = tab_through(page)
    fields = [f["id"] for f in focused if f["tag"] in ("input", "button")]
    assert fields.index("email") < fields.index("password") < fields.index("local-sign-in"), fields
    assert not without_focus_indicator(focused), without_focus_indicator(focused)
    page.locator("#email").focus()
    page.keyboard.type(registrar.email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{live.url}/console/"
    focused = tab_through(page)
    reached = [f["href"] for f in focused if f["href"]]
    nav = page.locator("nav.console a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    first_seen = [href for n, href in enumerate(reached) if href in nav and href not in reached[:n]]
    assert nav and first_seen == nav, (reached, nav)  # every navigation link, in reading order
    assert not without_focus_indicator(focused), without_focus_indicator(focused)
    # Enter on a focused link follows it.
    page.locator("nav.console a").nth(1).focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.startswith(f"{live.url}/console/catalogue")


NEW_PASSWORD = "a much longer new passphrase"


def test_a_registrar_changes_the_password_and_sets_up_an_authenticator_app(page, live):
    """Task A of the console's follow-up: the person's own password, then an authenticator app confirmed
    with a current code; the next sign-in needs both. Typed with the keyboard, each page axe-clean."""
    registrar = make_staff(live, "careful.registrar@school.example", "registrar")
    local_sign_in(page, live, registrar)
    link(page, "Your account")
    assert_accessible(page, "console-account")
    page.locator("#current").focus()
    page.keyboard.type("this is not my password")
    page.keyboard.press("Tab")
    page.keyboard.type(NEW_PASSWORD)
    page.keyboard.press("Tab")  # the rules under the field are text, not a stop
    page.keyboard.type(NEW_PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "current password is not right" in page.locator("#password-error").inner_text()
    assert page.locator("#current").get_attribute("aria-invalid") == "true"
    assert_accessible(page, "console-account-error")
    page.fill("#current", PASSWORD)
    page.fill("#password", NEW_PASSWORD)
    page.fill("#again", NEW_PASSWORD)
    with page.expect_navigation():
        page.locator("#change-password").click()
    assert "Your password is changed" in page.locator(".flash").inner_text()

    link(page, "Set up an authenticator app")
    qr = page.locator("#totp-qr")
    assert qr.get_attribute("src").startswith("data:image/svg+xml")
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0")  # the QR code is drawn
    secret = page.locator("#totp-secret").get_attribute("data-secret")
    assert page.locator("#totp-secret").inner_text().replace(" ", "") == secret  # and readable as text
    assert_accessible(page, "console-totp-setup")
    screenshot(page, "console-totp-setup")
    totp = pyotp.TOTP(secret)
    page.fill("#code", "000000" if totp.now() != "000000" else "111111")
    page.fill("#current", NEW_PASSWORD)
    with page.expect_navigation():
        page.locator("#confirm-totp").click()
    assert "code does not match" in page.locator("#totp-error").inner_text()
    assert page.locator("#totp-secret").get_attribute("data-secret") == secret  # the same app entry still works
    page.fill("#code", totp.now())
    page.fill("#current", NEW_PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "authenticator app is set up" in page.locator(".flash").inner_text()
    assert "Replace the authenticator app" in page.locator("main").inner_text()

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    page.goto(f"{live.url}/console/")
    page.fill("#email", registrar.email)
    page.fill("#password", NEW_PASSWORD)
    with page.expect_navigation():
        page.locator("#local-sign-in").click()
    assert page.locator("#sign-in-error").is_visible()  # the password alone is no longer enough
    page.fill("#password", NEW_PASSWORD)
    page.fill("#code", totp.at(time.time() + totp.interval))
    with page.expect_navigation():
        page.locator("#local-sign-in").click()
    assert page.url == f"{live.url}/console/"


def test_a_registrar_cancels_a_running_cohort_from_its_page(page, live, tmp_path, monkeypatch):
    from issuer import issuing
    from issuer.models import ConsoleJobRow, Credential

    real = issuing.issue_rows

    def slowly(*args, **kwargs):  # a slow registry, so that the cohort is still running when cancelled
        results = real(*args, **kwargs)
        time.sleep(0.5)
        return results

    monkeypatch.setattr(issuing, "issue_rows", slowly)
    # One worker thread runs the cohorts one after another: let an earlier test's cohort finish first.
    deadline = time.monotonic() + 240
    while True:
        with live.app.app_context():
            if staff.pending_jobs(get_session()) == 0:
                break
        assert time.monotonic() < deadline, "an earlier cohort is still running"
        time.sleep(0.5)
    registrar = make_staff(live, "hasty.registrar@school.example", "registrar")
    local_sign_in(page, live, registrar)
    link(page, "Issue a cohort")
    path = tmp_path / "wrong-class.csv"
    path.write_text("email,name,achievement,award_date\n" + "".join(
        f"wrong{i:03d}@example.com,Wrong {i},AI-101,2024-07-01\n" for i in range(300)), encoding="utf-8")
    page.set_input_files("#file", str(path))
    with page.expect_navigation():
        page.locator("#upload").click()
    with page.expect_navigation():
        page.locator("#start").click()
    job_id = page.url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 30  # the page's own progress shows the first chunk issued
    while page.locator("#progress").evaluate("bar => bar.value") < staff.CHUNK:
        assert time.monotonic() < deadline, "the first chunk was not issued"
        time.sleep(0.1)
    with page.expect_navigation():
        page.locator("#cancel").click()
    assert "stay issued and valid" in page.locator("main").inner_text()
    assert_accessible(page, "console-cohort-cancel")
    screenshot(page, "console-cohort-cancel")
    with page.expect_navigation():
        page.locator("#confirm-cancel").click()
    assert "The cohort is cancelled" in page.locator(".flash").inner_text()
    assert page.locator("#job-status").get_attribute("data-status") == "cancelled"
    assert page.locator("#cancel").count() == 0
    assert_accessible(page, "console-cohort-cancelled")

    # The worker stops at the next chunk and marks the rows it never reached.
    deadline = time.monotonic() + 30
    while True:
        with live.app.app_context():
            pending = get_session().query(ConsoleJobRow).filter_by(job_id=job_id, status="pending").count()
        if pending == 0:
            break
        assert time.monotonic() < deadline, "the cancelled cohort's worker did not stop"
        time.sleep(0.2)
    page.reload()
    with page.expect_download() as download:
        page.locator("#results").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    statuses = [r["status"] for r in rows]
    issued = statuses.count("issued")
    assert len(rows) == 300 and statuses.count("not issued (cancelled)") == 300 - issued
    assert staff.CHUNK <= issued < 300 and issued % staff.CHUNK == 0
    assert statuses == ["issued"] * issued + ["not issued (cancelled)"] * (300 - issued)  # in file order
    with live.app.app_context():
        badges = get_session().query(Credential).filter(Credential.recipient_email.like("wrong%")).all()
        assert len(badges) == issued and all(b.revoked_at is None for b in badges)


def test_signing_out_of_single_sign_on_ends_the_session_at_the_provider_too(page, live):
    """Sign-out sends the browser to the provider's end_session_endpoint (through the console's
    form-action policy), and the provider sends it back to the console's sign-in page."""
    page.goto(f"{live.url}/console/sign-in")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in with the school's account").click()
    with page.expect_navigation(url=f"{live.url}/console/"):
        page.locator('button[name="sub"][value="new.registrar"]').click()
    provider = live.app.config["ISSUER_OIDC_ISSUER"]
    with page.expect_navigation(url=f"{provider}/oauth2/end_session**"):
        page.get_by_role("button", name="Sign out").click()
    assert "id_token_hint=" in page.url
    with page.expect_navigation(url=f"{live.url}/console/sign-in"):
        page.get_by_role("button", name="End session").click()
    page.goto(f"{live.url}/console/issue")
    assert "/console/sign-in" in page.url  # signed out here as well


def test_an_administrator_makes_a_reset_link_and_the_person_sets_a_new_password_with_it(page, live, browser):
    admin = make_staff(live, "reset.admin@school.example", "administrator")
    forgetful = make_staff(live, "forgetful@school.example", "catalogue_editor")
    local_sign_in(page, live, admin, pyotp.TOTP(admin.totp_secret).now())
    link(page, "Staff accounts")
    assert_accessible(page, "console-accounts-reset-buttons")
    with page.expect_navigation():
        page.get_by_role("button", name="Make a password reset link for forgetful@school.example").click()
    reset_url = page.locator("#reset-link").input_value()
    assert reset_url.startswith(f"{live.url}/console/reset/")
    assert_accessible(page, "console-reset-link")

    other = browser.new_context(locale="en-GB")  # the person's own browser, not signed in
    try:
        other.route("**/*", only_local([]))
        tab = other.new_page()
        tab.goto(reset_url)
        assert "forgetful@school.example" in tab.locator("main").inner_text()
        assert_accessible(tab, "console-reset")
        tab.fill("#password", NEW_PASSWORD)
        tab.fill("#again", NEW_PASSWORD)
        with tab.expect_navigation(url=f"{live.url}/console/sign-in"):
            tab.locator("#set-password").click()
        assert "Your new password is set" in tab.locator(".flash").inner_text()
        tab.fill("#email", forgetful.email)
        tab.fill("#password", NEW_PASSWORD)
        with tab.expect_navigation(url=f"{live.url}/console/"):
            tab.locator("#local-sign-in").click()
        response = tab.goto(reset_url)  # used: it works once
        assert response.status == 410 and tab.locator("#reset-invalid").is_visible()
        assert_accessible(tab, "console-reset-used")
    finally:
        other.close()
