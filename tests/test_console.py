"""The staff console (issue #8) through Flask's test client: sign-in both ways (a local account with
argon2 and TOTP; single sign-on with a real OpenID Connect provider on 127.0.0.1), CSRF, throttling,
session expiry, the role table in the pages and in the JSON behind them, and every action."""

from __future__ import annotations

import csv
import io
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import requests
from sqlalchemy import select

from issuer import staff
from issuer.db import get_session
from issuer.models import (
    ApiToken,
    AuditEntry,
    AwardApplication,
    ConsoleJob,
    ConsoleJobRow,
    Credential,
    Notification,
    StaffAccount,
)

PASSWORD = "correct horse battery staple"


def make_staff(app, email: str, roles, *, password: str | None = PASSWORD, totp: bool = False) -> StaffAccount:
    with app.app_context():
        session = get_session()
        account = staff.create_account(session, email=email, roles=roles, password=password, totp=totp,
                                       actor="test")
        session.commit()
        return account


def token_of(client, path: str = "/console/sign-in") -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def code_for(account: StaffAccount, offset: int = 0) -> str:
    totp = pyotp.TOTP(account.totp_secret)
    return totp.at(time.time() + offset * totp.interval)


def sign_in(client, account: StaffAccount, *, password: str = PASSWORD, code: str | None = None):
    form = {"csrf_token": token_of(client), "email": account.email, "password": password}
    if account.totp_secret:
        form["code"] = code or code_for(account)
    return client.post("/console/sign-in", data=form)


def post(client, path: str, data: dict | None = None, *, page: str = "/console/", **kwargs):
    return client.post(path, data={"csrf_token": token_of(client, page), **(data or {})}, **kwargs)


@pytest.fixture
def registrar(app, client):
    account = make_staff(app, "registrar@school.example", "registrar")
    assert sign_in(client, account).status_code == 302
    return account


def audit(app, action: str) -> list[AuditEntry]:
    with app.app_context():
        return get_session().scalars(select(AuditEntry).where(AuditEntry.action == action)
                                     .order_by(AuditEntry.id)).all()


# --- accounts and signing in ----------------------------------------------------------------------------

def test_staff_create_prints_the_totp_uri_for_an_administrator_and_lists_accounts(app, monkeypatch):
    monkeypatch.setenv("ISSUER_STAFF_PASSWORD", PASSWORD)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["staff", "create", "--email", "Admin@School.example", "--role", "administrator"])
    assert result.exit_code == 0, result.output
    uri = re.search(r"otpauth://totp/\S+", result.output).group(0)
    with app.app_context():
        row = get_session().scalars(select(StaffAccount)).one()
        assert row.email == "admin@school.example" and row.roles == "administrator"
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        assert parse_qs(urlsplit(uri).query)["secret"] == [row.totp_secret]
    listed = runner.invoke(args=["staff", "list"])
    assert "admin@school.example" in listed.output and "password+totp" in listed.output
    again = runner.invoke(args=["staff", "create", "--email", "admin@school.example", "--role", "auditor"])
    assert again.exit_code != 0 and "already exists" in again.output
    bad = runner.invoke(args=["staff", "create", "--email", "x@school.example", "--role", "janitor"])
    assert bad.exit_code != 0 and "unknown role" in bad.output


def test_an_administrator_needs_a_current_totp_code_and_each_code_works_once(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    assert admin.totp_secret
    no_code = client.post("/console/sign-in", data={"csrf_token": token_of(client), "email": admin.email,
                                                     "password": PASSWORD})
    assert no_code.status_code == 401
    wrong = sign_in(client, admin, code="000000" if code_for(admin) != "000000" else "111111")
    assert wrong.status_code == 401
    code = code_for(admin)
    ok = sign_in(client, admin, code=code)
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/console/")
    assert client.get("/console/accounts").status_code == 200
    client.post("/console/sign-out", data={"csrf_token": token_of(client, "/console/")})
    assert client.get("/console/accounts").status_code == 302  # signed out
    replay = sign_in(client, admin, code=code)
    assert replay.status_code == 401  # the same code again is refused
    methods = [e.detail for e in audit(app, "staff.sign_in")]
    assert methods == [{"method": "password+totp"}]


def test_wrong_passwords_are_throttled_per_account_even_with_the_right_one_after(app, client):
    account = make_staff(app, "reg@school.example", "registrar")
    for _ in range(5):
        assert sign_in(client, account, password="not the password at all").status_code == 401
    refused = sign_in(client, account)
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.get_data(as_text=True)
    assert audit(app, "staff.sign_in.throttled")
    # Another account from another address is not held back by them.
    other = make_staff(app, "other@school.example", "auditor")
    fresh = app.test_client()
    response = fresh.post("/console/sign-in", data={"csrf_token": token_of(fresh), "email": other.email,
                                                     "password": PASSWORD},
                          environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 302


def test_every_form_needs_its_csrf_token(app, client, registrar):
    response = client.post("/console/issue", data={"achievement": "AI-101", "email": "a@example.com"})
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    forged = client.post("/console/sign-in", data={"email": registrar.email, "password": PASSWORD,
                                                    "csrf_token": "forged"})
    assert forged.status_code == 400
    with app.app_context():
        assert get_session().scalars(select(Credential)).first() is None


def test_a_session_ends_when_idle_and_when_the_account_is_deactivated(app, client, registrar, monkeypatch):
    assert client.get("/console/learners").status_code == 200
    import issuer.web.console as console

    later = time.time() + 31 * 60
    monkeypatch.setattr(console.time, "time", lambda: later)
    expired = client.get("/console/learners")
    assert expired.status_code == 302 and "/console/sign-in" in expired.headers["Location"]
    monkeypatch.undo()
    assert sign_in(client, registrar).status_code == 302
    assert client.get("/console/learners").status_code == 200
    with app.app_context():
        session = get_session()
        staff.deactivate(session, session.get(StaffAccount, registrar.id), actor="test")
        session.commit()
    assert client.get("/console/learners").status_code == 302
    assert sign_in(client, registrar).status_code == 401


def test_the_sign_in_page_only_redirects_inside_the_console(app, client):
    account = make_staff(app, "reg@school.example", "registrar")
    form = {"csrf_token": token_of(client), "email": account.email, "password": PASSWORD,
            "next": "https://evil.example/"}
    response = client.post("/console/sign-in", data=form)
    assert response.headers["Location"] == "/console/"


# --- roles: refused in the pages and in the JSON behind them ---------------------------------------------

@pytest.mark.parametrize(("role", "method", "path", "allowed"), [
    ("auditor", "POST", "/console/issue", False),
    ("auditor", "POST", "/console/cohorts", False),
    ("auditor", "GET", "/console/audit", True),
    ("auditor", "GET", "/console/keys", True),
    ("auditor", "GET", "/console/keys/rotate", False),
    ("auditor", "POST", "/console/catalogue/new", False),
    ("catalogue_editor", "GET", "/console/catalogue/new", True),
    ("catalogue_editor", "GET", "/console/issue", False),
    ("catalogue_editor", "GET", "/console/learners", False),
    ("catalogue_editor", "GET", "/console/audit.csv", False),
    ("registrar", "GET", "/console/issue", True),
    ("registrar", "GET", "/console/catalogue/new", False),
    ("registrar", "GET", "/console/accounts", False),
    ("registrar", "POST", "/console/tokens", False),
    ("registrar", "POST", "/console/keys/rotate", False),
    ("administrator", "GET", "/console/accounts", True),
])
def test_each_role_is_refused_what_it_may_not_do(app, client, role, method, path, allowed):
    account = make_staff(app, f"{role}@school.example", role)
    assert sign_in(client, account).status_code == 302
    response = client.get(path) if method == "GET" else post(client, path, {"name": "x", "scope": "issue"})
    if allowed:
        assert response.status_code == 200, (role, path, response.status_code)
    else:
        assert response.status_code == 403, (role, path, response.status_code)
    assert staff.may({role}, "console.view")


def test_signed_out_pages_redirect_and_posts_and_json_get_401(app, client):
    page = client.get("/console/audit?action=credential.issue")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/console/sign-in?next=/console/audit")
    assert client.get("/console/cohorts/x/progress.json").status_code == 401
    assert post(client, "/console/issue", {"achievement": "AI-101"}, page="/console/sign-in").status_code == 401


def test_the_permission_table_is_the_policy():
    assert staff.may({"registrar"}, "credential.revoke") and not staff.may({"registrar"}, "tokens.manage")
    assert not staff.may({"auditor"}, "credential.issue") and staff.may({"auditor"}, "audit.view")
    assert staff.may({"registrar", "catalogue_editor"}, "catalogue.edit")
    assert all(staff.may({"administrator"}, p) for p in staff.PERMISSIONS)


# --- catalogue --------------------------------------------------------------------------------------------

COURSE = {
    "code": "DS-301", "name_en": "Data Storytelling", "name_zh": "數據敘事",
    "description_en": "Telling stories with data.", "description_zh": "用數據講故事。",
    "criteria_en": "Pass the project.", "criteria_zh": "通過專題。", "credits": "6", "contact_hours": "30",
    "theme_code": "data-analytics", "theme_en": "Data Analytics", "theme_zh": "數據分析", "theme_colour": "",
    "area": "professional", "qf_level": "4", "language": "en, yue", "cef_code": "",
}


def test_an_editor_adds_edits_previews_and_retires_a_course_and_issued_badges_stay_valid(app, client):
    editor = make_staff(app, "editor@school.example", ["catalogue_editor", "registrar"])
    assert sign_in(client, editor).status_code == 302
    bad = post(client, "/console/catalogue/new", {**COURSE, "qf_level": "9"}, page="/console/catalogue/new")
    assert bad.status_code == 422 and "qf_level" in bad.get_data(as_text=True)
    preview = client.get("/console/catalogue/preview.svg", query_string=COURSE)
    assert preview.status_code == 200 and preview.mimetype == "image/svg+xml" and b"<svg" in preview.data
    assert client.get("/console/catalogue/preview.svg", query_string={**COURSE, "credits": ""}).status_code == 422
    created = post(client, "/console/catalogue/new", COURSE, page="/console/catalogue/new")
    assert created.status_code == 302
    listed = client.get("/console/catalogue?q=storytelling").get_data(as_text=True)
    assert "DS-301" in listed and "AI-101" not in listed
    assert "DS-301" in client.get("/console/catalogue?qf=4&area=professional").get_data(as_text=True)
    assert "DS-301" not in client.get("/console/catalogue?theme=artificial-intelligence").get_data(as_text=True)
    edited = post(client, "/console/catalogue/DS-301/edit", {**COURSE, "name_en": "Data Storytelling II"},
                  page="/console/catalogue/DS-301/edit")
    assert edited.status_code == 302
    api = client.get("/api/v1/achievements").get_json()["achievements"]
    assert next(a for a in api if a["code"] == "DS-301")["name"] == {"en": "Data Storytelling II",
                                                                      "zh-Hant": "數據敘事"}
    issued = post(client, "/console/issue", {"achievement": "DS-301", "email": "learner@example.com"},
                  page="/console/issue")
    assert issued.status_code == 302
    assert post(client, "/console/catalogue/DS-301/retire", {"retired": "1"}).status_code == 302
    again = post(client, "/console/issue", {"achievement": "DS-301", "email": "second@example.com"},
                 page="/console/issue")
    assert again.status_code == 400 and "retired" in again.get_data(as_text=True)
    with app.app_context():
        badge = get_session().scalars(select(Credential).where(Credential.achievement_code == "DS-301")).one()
    page = client.get(f"/credentials/{badge.id}").get_data(as_text=True)
    assert 'class="verdict passed"' in page  # the retired course's badge still verifies
    assert [e.subject for e in audit(app, "catalogue.create")] == ["DS-301"]
    assert [e.subject for e in audit(app, "catalogue.retire")] == ["DS-301"]


# --- issuing, revoking, resending ------------------------------------------------------------------------

def test_a_registrar_issues_revokes_with_confirmation_and_resends(app, client, registrar):
    response = post(client, "/console/issue", {"achievement": "AI-101", "email": "Chan@Example.com",
                                               "name": "Chan Tai Man", "awarded_on": "2024-03-10"},
                    page="/console/issue")
    assert response.status_code == 302
    with app.app_context():
        badge = get_session().scalars(select(Credential)).one()
    assert badge.issued_by == "staff:registrar@school.example" and badge.recipient_email == "chan@example.com"
    found = client.get("/console/learners?q=tai man").get_data(as_text=True)
    assert "chan@example.com" in found
    learner = client.get("/console/learners/view?email=chan@example.com").get_data(as_text=True)
    assert f"/credentials/{badge.id}.pdf" in learner and "valid" in learner
    confirm = client.get(f"/console/credentials/{badge.id}/revoke")
    assert confirm.status_code == 200 and "No award counts this badge" in confirm.get_data(as_text=True)
    with app.app_context():
        assert get_session().get(Credential, badge.id).revoked_at is None  # nothing happens before confirming
    missing = post(client, f"/console/credentials/{badge.id}/revoke", {"reason": " "},
                   page=f"/console/credentials/{badge.id}/revoke")
    assert missing.status_code == 400
    done = post(client, f"/console/credentials/{badge.id}/revoke",
                {"reason": "issued to the wrong class", "category": "issued in error"},
                page=f"/console/credentials/{badge.id}/revoke")
    assert done.status_code == 302
    status = client.get(f"/credentials/{badge.id}").get_data(as_text=True)
    assert "Revoked on" in status
    before = _notes(app, badge.id)
    assert post(client, f"/console/credentials/{badge.id}/resend").status_code == 302
    assert _notes(app, badge.id) == before + 1
    assert [e.actor for e in audit(app, "credential.revoke")] == ["staff:registrar@school.example"]
    assert [e.subject for e in audit(app, "credential.resend")] == [badge.credential_url]


def _notes(app, credential_id: str) -> int:
    with app.app_context():
        return len(get_session().scalars(select(Notification).where(
            Notification.credential_id == credential_id)).all())


def wait_done(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = client.get(f"/console/cohorts/{job_id}/progress.json").get_json()
        if progress["done"]:
            return progress
        time.sleep(0.2)
    raise AssertionError(f"cohort {job_id} did not finish: {progress}")


def test_a_cohort_is_previewed_with_its_problems_then_issued_in_the_background(app, client, registrar):
    lines = ["email,name,achievement,award_date,grade", "a@example.com,A,AI-101,2024-01-05,A",
             "not-an-email,B,AI-101,2024-01-05,", "c@example.com,C,NOPE-1,2024-01-05,",
             "d@example.com,D,AI-102,2024-01-06,B"]
    upload = post(client, "/console/cohorts", {"file": (io.BytesIO("\n".join(lines).encode()), "class.csv")},
                  page="/console/cohorts", content_type="multipart/form-data")
    assert upload.status_code == 302
    job_id = upload.headers["Location"].rsplit("/", 1)[1]
    preview = client.get(f"/console/cohorts/{job_id}").get_data(as_text=True)
    assert "2 with problems" in preview and "unknown achievement" in preview and "recipient.email" in preview
    with app.app_context():
        assert get_session().scalars(select(Credential)).first() is None  # nothing issued by the preview
    assert post(client, f"/console/cohorts/{job_id}/start", page=f"/console/cohorts/{job_id}").status_code == 302
    progress = wait_done(client, job_id)
    assert (progress["issued"], progress["already_issued"], progress["errors"]) == (2, 0, 2)
    results = list(csv.DictReader(io.StringIO(client.get(f"/console/cohorts/{job_id}/results.csv")
                                              .get_data(as_text=True))))
    assert [(r["line"], r["status"]) for r in results] == [("2", "issued"), ("3", "error"), ("4", "error"),
                                                          ("5", "issued")]
    assert results[0]["credential_url"].startswith("http://127.0.0.1:5000/credentials/")
    again = post(client, f"/console/cohorts/{job_id}/start", page=f"/console/cohorts/{job_id}")
    assert again.status_code == 409
    # The same file again: nothing is issued twice.
    second = post(client, "/console/cohorts", {"file": (io.BytesIO("\n".join(lines).encode()), "class.csv")},
                  page="/console/cohorts", content_type="multipart/form-data")
    second_id = second.headers["Location"].rsplit("/", 1)[1]
    post(client, f"/console/cohorts/{second_id}/start", page=f"/console/cohorts/{second_id}")
    assert wait_done(client, second_id)["already_issued"] == 2
    assert [e.subject for e in audit(app, "cohort.done")] == [job_id, second_id]


def test_a_cohort_left_running_by_a_restart_is_resumed(app):
    with app.app_context():
        session = get_session()
        data = b"email,achievement\nr1@example.com,AI-101\nr2@example.com,AI-101\n"
        job = staff.create_job(session, data, "restart.csv", actor="staff:registrar@school.example")
        staff.start_job(session, job, actor="staff:registrar@school.example")
        # A worker took it, then the process died: status running, heartbeat stale.
        job.status = "running"
        from datetime import timedelta

        from issuer.models import utcnow
        job.heartbeat_at = utcnow() - timedelta(minutes=5)
        session.commit()
        job_id = job.id
    result = app.test_cli_runner().invoke(args=["console", "resume"])
    assert result.exit_code == 0 and "1 cohort job(s)" in result.output
    with app.app_context():
        session = get_session()
        job = session.get(ConsoleJob, job_id)
        assert (job.status, job.issued) == ("done", 2)
        assert {r.status for r in session.scalars(select(ConsoleJobRow).where(ConsoleJobRow.job_id == job_id))} \
            == {"issued"}


def test_a_cohort_file_that_is_not_a_cohort_is_refused_before_anything(app, client, registrar):
    response = post(client, "/console/cohorts", {"file": (io.BytesIO(b"name,grade\nA,B\n"), "x.csv")},
                    page="/console/cohorts", content_type="multipart/form-data")
    assert response.status_code == 400 and "lacks the column" in response.get_data(as_text=True)
    latin = post(client, "/console/cohorts", {"file": (io.BytesIO("email,achievement\né,x\n".encode("latin-1")),
                                                       "x.csv")}, page="/console/cohorts",
                 content_type="multipart/form-data")
    assert latin.status_code == 400 and "UTF-8" in latin.get_data(as_text=True)


# --- applications, award check, audit ---------------------------------------------------------------------

def test_applications_from_the_apply_page_are_listed_with_their_decision(app, client, registrar):
    refused = client.post("/awards/apply", data={"email": "learner@example.com", "action": "evaluate"})
    assert refused.status_code == 400
    with app.app_context():
        row = get_session().scalars(select(AwardApplication)).one()
        assert row.email == "learner@example.com" and row.error and not row.eligible
    page = client.get("/console/applications").get_data(as_text=True)
    assert "learner@example.com" in page
    detail = client.get(f"/console/applications/{row.id}").get_data(as_text=True)
    assert row.error in detail
    post(client, "/console/issue", {"achievement": "AI-101", "email": "learner@example.com"}, page="/console/issue")
    check = post(client, "/console/learners/check", {"email": "learner@example.com"},
                 page="/console/learners/check?email=learner@example.com")
    text = check.get_data(as_text=True)
    assert check.status_code == 200 and "Not eligible" in text and "counted" in text
    assert [e.subject for e in audit(app, "award.check")] == ["learner@example.com"]


def test_the_audit_log_filters_by_person_action_and_date_and_exports_csv(app, client, registrar):
    post(client, "/console/issue", {"achievement": "AI-101", "email": "x@example.com"}, page="/console/issue")
    page = client.get("/console/audit?actor=registrar@&action=credential.issue").get_data(as_text=True)
    assert page.count('data-action="credential.issue"') == 1 and 'data-action="staff.sign_in"' not in page
    exported = client.get("/console/audit.csv?actor=registrar@")
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert {r["action"] for r in rows} == {"credential.issue", "staff.sign_in"}
    assert all(r["actor"] == "staff:registrar@school.example" for r in rows)
    future = client.get("/console/audit.csv?from=2999-01-01").get_data(as_text=True).strip().splitlines()
    assert len(future) == 1  # the header only
    assert client.get("/console/audit?from=yesterday").status_code == 400


# --- keys and tokens ------------------------------------------------------------------------------------

def test_an_administrator_rotates_keys_after_confirming_and_manages_tokens(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    assert sign_in(client, admin).status_code == 302
    before = client.get("/console/keys").get_data(as_text=True).count('data-status="current"')
    unconfirmed = post(client, "/console/keys/rotate", {"algorithm": "Ed25519"}, page="/console/keys/rotate")
    assert unconfirmed.status_code == 302
    assert client.get("/console/keys").get_data(as_text=True).count('data-status="retired"') == 0
    assert post(client, "/console/keys/rotate", {"algorithm": "Ed25519", "confirm": "yes"},
                page="/console/keys/rotate").status_code == 302
    keys_page = client.get("/console/keys").get_data(as_text=True)
    assert keys_page.count('data-status="retired"') == 1 and keys_page.count('data-status="current"') == before
    did = client.get("/.well-known/did.json").get_json()
    assert len(did["verificationMethod"]) == before + 1
    created = post(client, "/console/tokens", {"name": "registry sync", "scope": ["issue", "revoke"]},
                   page="/console/keys")
    secret = re.search(r'id="secret" value="([^"]+)"', created.get_data(as_text=True)).group(1)
    assert secret.startswith("obi_")
    assert secret not in client.get("/console/keys").get_data(as_text=True)  # shown once
    used = client.post("/api/v1/credentials", json={"achievement": "AI-101", "recipient": {"email": "t@example.com"}},
                       headers={"Authorization": f"Bearer {secret}"})
    assert used.status_code == 201
    assert "never" not in client.get("/console/keys").get_data(as_text=True).split("registry sync")[1][:200]
    with app.app_context():
        token_id = get_session().scalars(select(ApiToken).where(ApiToken.name == "registry sync")).one().id
    assert post(client, f"/console/tokens/{token_id}/revoke", page="/console/keys").status_code == 302
    body = {"achievement": "AI-101", "recipient": {"email": "u@example.com"}}
    refused = client.post("/api/v1/credentials", json=body, headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    assert [e.action for e in audit(app, "token.revoke")] == ["token.revoke"]
    assert audit(app, "key.rotate")[0].actor == "staff:admin@school.example"


def test_an_administrator_creates_and_deactivates_accounts(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    assert sign_in(client, admin).status_code == 302
    created = post(client, "/console/accounts", {"email": "aud@school.example", "role": "auditor",
                                                 "password": PASSWORD, "totp": "1"}, page="/console/accounts")
    assert created.status_code == 200 and "otpauth://totp/" in created.get_data(as_text=True)
    short = post(client, "/console/accounts", {"email": "s@school.example", "role": "auditor", "password": "short"},
                 page="/console/accounts")
    assert short.status_code == 400
    with app.app_context():
        auditor = get_session().scalars(select(StaffAccount).where(StaffAccount.email == "aud@school.example")).one()
    assert post(client, f"/console/accounts/{auditor.id}/deactivate", page="/console/accounts").status_code == 302
    assert post(client, f"/console/accounts/{admin.id}/deactivate", page="/console/accounts").status_code == 409
    other = app.test_client()
    assert sign_in(other, auditor).status_code == 401


# --- single sign-on against a real OpenID Connect provider -----------------------------------------------

@pytest.fixture
def provider():
    """oidc-provider-mock served on 127.0.0.1 (not localhost: nothing but 127.0.0.1 is asked)."""
    from oidc_provider_mock import User
    from oidc_provider_mock import app as provider_app
    from werkzeug.serving import make_server

    users = [User(sub="reg-1", claims={"email": "sso.registrar@school.example", "groups": ["registrars", "editors"]}),
             User(sub="nobody", claims={"email": "nobody@school.example", "groups": ["students"]})]
    server = make_server("127.0.0.1", 0, provider_app(user_claims=users, require_nonce=True), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def sso(client, provider: str, sub: str):
    started = post(client, "/console/sso", page="/console/sign-in")
    assert started.status_code == 302 and started.headers["Location"].startswith(provider)
    http = requests.Session()
    http.trust_env = False
    answer = http.post(started.headers["Location"], data={"sub": sub}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text[:300]
    back = urlsplit(answer.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def test_single_sign_on_maps_groups_to_roles_and_refuses_others(app, client, provider):
    app.config.update(ISSUER_OIDC_ISSUER=provider, ISSUER_OIDC_CLIENT_ID="console", ISSUER_OIDC_CLIENT_SECRET="s",
                      ISSUER_OIDC_ROLE_MAP="registrars=registrar, editors=catalogue_editor")
    assert "Sign in with the school" in client.get("/console/sign-in").get_data(as_text=True)
    refused = sso(client, provider, "nobody")
    assert refused.status_code == 403 and "no group that gives a console role" in refused.get_data(as_text=True)
    assert client.get("/console/issue").status_code == 302
    signed_in = sso(client, provider, "reg-1")
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/console/"
    assert client.get("/console/issue").status_code == 200
    assert client.get("/console/catalogue/new").status_code == 200
    assert client.get("/console/accounts").status_code == 403
    with app.app_context():
        account = staff.find_account(get_session(), "sso.registrar@school.example")
        assert account.source == "oidc" and account.password_hash is None
        assert staff.roles_of(account) == {"registrar", "catalogue_editor"}
    assert [e.detail["method"] for e in audit(app, "staff.sign_in")] == ["oidc"]
    # A local sign-in is impossible for an account made by single sign-on.
    assert sign_in(app.test_client(), account, password="").status_code == 401
