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


def test_row_ids_past_the_column_range_are_404_not_server_errors(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    assert sign_in(client, admin).status_code == 302
    huge = "9" * 30
    assert client.get(f"/console/applications/{huge}").status_code == 404
    for path in (f"/console/tokens/{huge}/revoke", f"/console/accounts/{huge}/deactivate",
                 f"/console/accounts/{huge}/reset-link", "/console/accounts/0/deactivate"):
        assert post(client, path, page="/console/accounts").status_code == 404, path


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


# --- your own account: changing the password, setting up the authenticator app ---------------------------

NEW_PASSWORD = "a much longer new passphrase"


def test_a_local_account_changes_its_password_and_its_other_sessions_end(app, client, registrar):
    other = app.test_client()
    assert sign_in(other, registrar).status_code == 302
    page = "/console/account/password"
    wrong = post(client, page, {"current": "not my password at all", "password": NEW_PASSWORD,
                                "again": NEW_PASSWORD}, page=page)
    assert wrong.status_code == 401 and "current password is not right" in wrong.get_data(as_text=True)
    for form, why in [({"password": NEW_PASSWORD, "again": NEW_PASSWORD + "x"}, "not the same"),
                      ({"password": "short", "again": "short"}, "at least 12 characters"),
                      ({"password": "registrar@school.example!", "again": "registrar@school.example!"},
                       "must not contain your email"),
                      ({"password": "my registrar pass", "again": "my registrar pass"}, "must not contain")]:
        refused = post(client, page, {"current": PASSWORD, **form}, page=page)
        assert refused.status_code == 400 and why in refused.get_data(as_text=True), why
    assert sign_in(app.test_client(), registrar).status_code == 302  # nothing changed so far
    done = post(client, page, {"current": PASSWORD, "password": NEW_PASSWORD, "again": NEW_PASSWORD}, page=page)
    assert done.status_code == 302
    assert client.get("/console/learners").status_code == 200  # this session goes on
    assert other.get("/console/learners").status_code == 302  # the other one ended
    assert sign_in(app.test_client(), registrar).status_code == 401  # the old password no longer works
    assert sign_in(app.test_client(), registrar, password=NEW_PASSWORD).status_code == 302
    with app.app_context():
        stored = get_session().get(StaffAccount, registrar.id).password_hash
    assert stored.startswith("$argon2id$") and NEW_PASSWORD not in stored
    assert [e.subject for e in audit(app, "staff.password_change")] == ["registrar@school.example"]
    assert len(audit(app, "staff.password_change.refused")) == 1


def test_guessing_the_current_password_in_a_session_is_throttled_like_signing_in(app, client, registrar):
    page = "/console/account/password"
    form = {"password": NEW_PASSWORD, "again": NEW_PASSWORD}
    for _ in range(4):  # the fixture's sign-in did not fail; five failures in all hold the account back
        assert post(client, page, {"current": "a wrong guess here", **form}, page=page).status_code == 401
    assert post(client, page, {"current": "another wrong guess", **form}, page=page).status_code == 401
    held = post(client, page, {"current": PASSWORD, **form}, page=page)
    assert held.status_code == 429
    assert sign_in(app.test_client(), registrar).status_code == 429  # the sign-in throttle counted them


def test_an_account_from_single_sign_on_has_no_password_to_change(app, client):
    with app.app_context():
        session = get_session()
        account = staff.create_account(session, email="sso@school.example", roles="registrar", source="oidc",
                                       actor="test")
        session.commit()
    # Sign the account in the way the SSO callback does.
    with client.session_transaction() as cookie:
        cookie["staff"] = {"id": account.id, "v": 1, "at": time.time(), "seen": time.time()}
    page = client.get("/console/account/password").get_data(as_text=True)
    assert 'id="sso-only"' in page and 'id="change-password"' not in page
    refused = post(client, "/console/account/password", {"current": "", "password": NEW_PASSWORD,
                                                         "again": NEW_PASSWORD}, page="/console/account/password")
    assert refused.status_code == 409
    assert 'id="confirm-totp"' not in client.get("/console/account/totp").get_data(as_text=True)
    assert post(client, "/console/account/totp", {"code": "123456", "current": ""},
                page="/console/account/totp").status_code == 409


def _pending_secret(client) -> str:
    html = client.get("/console/account/totp").get_data(as_text=True)
    assert 'src="data:image/svg+xml' in html  # the QR code, drawn in the page
    import html as markup

    import segno

    secret = re.search(r'data-secret="([A-Z2-7]+)"', html).group(1)
    uri = markup.unescape(re.search(r'id="totp-uri" href="([^"]+)"', html).group(1))
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == secret and parsed.issuer and parsed.name.endswith("@school.example")
    qr = markup.unescape(re.search(r'id="totp-qr" src="([^"]+)"', html).group(1))
    assert qr == segno.make_qr(uri, error="m").svg_data_uri(scale=5, border=4)  # the QR code is that URI
    return secret


def test_a_registrar_sets_up_totp_only_with_a_current_code_and_the_password(app, client, registrar):
    secret = _pending_secret(client)
    assert _pending_secret(client) == secret  # a reload shows the same secret until it is confirmed
    page = "/console/account/totp"
    now = pyotp.TOTP(secret).now()
    wrong_code = post(client, page, {"code": "000000" if now != "000000" else "111111", "current": PASSWORD},
                      page=page)
    assert wrong_code.status_code == 400 and "code does not match" in wrong_code.get_data(as_text=True)
    other_app_code = pyotp.TOTP(pyotp.random_base32()).now()
    if other_app_code != now:
        assert post(client, page, {"code": other_app_code, "current": PASSWORD}, page=page).status_code == 400
    wrong_password = post(client, page, {"code": now, "current": "not the password, sorry"}, page=page)
    assert wrong_password.status_code == 401
    with app.app_context():
        assert get_session().get(StaffAccount, registrar.id).totp_secret is None  # nothing saved on a refusal
    assert not audit(app, "staff.totp_setup")
    done = post(client, page, {"code": now, "current": PASSWORD}, page=page)
    assert done.status_code == 302
    with app.app_context():
        assert get_session().get(StaffAccount, registrar.id).totp_secret == secret
    assert client.get("/console/learners").status_code == 200  # still signed in
    fresh = app.test_client()
    form = {"csrf_token": token_of(fresh), "email": registrar.email, "password": PASSWORD}
    assert fresh.post("/console/sign-in", data=form).status_code == 401  # a code is now needed
    registrar.totp_secret = secret
    assert sign_in(fresh, registrar, code=now).status_code == 401  # the confirming code is spent
    assert sign_in(fresh, registrar, code=code_for(registrar, 1)).status_code == 302
    assert [e.detail for e in audit(app, "staff.totp_setup")] == [{"replaced": False}]


def test_an_administrator_replaces_the_authenticator_app_and_the_old_one_stops_working(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    old_secret = admin.totp_secret
    assert sign_in(client, admin).status_code == 302
    new_secret = _pending_secret(client)
    assert new_secret != old_secret
    assert post(client, "/console/account/totp", {"code": pyotp.TOTP(new_secret).now(), "current": PASSWORD},
                page="/console/account/totp").status_code == 302
    fresh = app.test_client()
    assert sign_in(fresh, admin, code=code_for(admin, 1)).status_code == 401  # the old app's code
    admin.totp_secret = new_secret
    assert sign_in(fresh, admin, code=code_for(admin, 1)).status_code == 302
    assert [e.detail for e in audit(app, "staff.totp_setup")] == [{"replaced": True}]


def test_the_new_account_forms_need_their_csrf_token(app, client, registrar):
    for path in ("/console/account/password", "/console/account/totp", "/console/cohorts/x/cancel"):
        response = client.post(path, data={"current": PASSWORD, "password": NEW_PASSWORD, "again": NEW_PASSWORD})
        assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True), path
    assert not audit(app, "staff.password_change")


# --- password reset links ------------------------------------------------------------------------------

def _reset_path(html: str) -> str:
    link = re.search(r'id="reset-link" value="([^"]+)"', html).group(1)
    assert link.startswith("http://127.0.0.1:5000/console/reset/")
    return urlsplit(link).path


def test_an_administrator_makes_a_reset_link_that_works_once(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    user = make_staff(app, "forgetful@school.example", "registrar")
    assert sign_in(client, admin).status_code == 302
    made = post(client, f"/console/accounts/{user.id}/reset-link", page="/console/accounts")
    assert made.status_code == 200
    path = _reset_path(made.get_data(as_text=True))
    assert path.rsplit("/", 1)[1] not in client.get("/console/accounts").get_data(as_text=True)  # shown once
    learner = app.test_client()  # the person with the link is not signed in
    page = learner.get(path)
    assert page.status_code == 200 and "forgetful@school.example" in page.get_data(as_text=True)
    mismatch = post(learner, path, {"password": NEW_PASSWORD, "again": "something else entirely"}, page=path)
    assert mismatch.status_code == 400
    short = post(learner, path, {"password": "tiny", "again": "tiny"}, page=path)
    assert short.status_code == 400
    assert sign_in(app.test_client(), user).status_code == 302  # the refusals changed nothing
    done = post(learner, path, {"password": NEW_PASSWORD, "again": NEW_PASSWORD}, page=path)
    assert done.status_code == 302 and done.headers["Location"].endswith("/console/sign-in")
    assert sign_in(app.test_client(), user, password=NEW_PASSWORD).status_code == 302
    assert sign_in(app.test_client(), user).status_code == 401
    reused = learner.get(path)
    assert reused.status_code == 410 and "already used" in reused.get_data(as_text=True)
    again = learner.post(path, data={"csrf_token": token_of(learner, "/console/sign-in"),
                                     "password": "yet another passphrase", "again": "yet another passphrase"})
    assert again.status_code == 410
    assert sign_in(app.test_client(), user, password=NEW_PASSWORD).status_code == 302
    assert [e.subject for e in audit(app, "staff.reset_link")] == [user.email]
    assert audit(app, "staff.reset_link")[0].actor == "staff:admin@school.example"
    assert [e.subject for e in audit(app, "staff.password_reset")] == [user.email]


def test_a_reset_link_expires_after_24_hours_and_a_forged_one_is_refused(app, client, monkeypatch):
    import itsdangerous.timed

    user = make_staff(app, "late@school.example", "registrar")
    real = itsdangerous.timed.TimestampSigner.get_timestamp
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                        lambda self: int(time.time()) - 24 * 3600 - 60)
    with app.app_context():
        from issuer.web.console import secret_key

        old = staff.make_reset_token(get_session(), get_session().get(StaffAccount, user.id), secret_key(app),
                                     actor="test")
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", real)
    expired = client.get(f"/console/reset/{old}")
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    forged = client.get(f"/console/reset/{old[:-3]}abc")
    assert forged.status_code == 404 and "not a valid reset link" in forged.get_data(as_text=True)
    posted = post(client, f"/console/reset/{old}", {"password": NEW_PASSWORD, "again": NEW_PASSWORD},
                  page="/console/sign-in")
    assert posted.status_code == 410
    assert sign_in(app.test_client(), user).status_code == 302


def test_a_reset_link_stops_working_once_the_password_changes_another_way(app, client):
    user = make_staff(app, "changer@school.example", "registrar")
    result = app.test_cli_runner().invoke(args=["staff", "reset-link", "--email", "Changer@School.example"])
    assert result.exit_code == 0, result.output
    path = urlsplit(re.search(r"http://\S+/console/reset/\S+", result.output).group(0)).path
    assert client.get(path).status_code == 200
    assert sign_in(client, user).status_code == 302
    assert post(client, "/console/account/password", {"current": PASSWORD, "password": NEW_PASSWORD,
                                                      "again": NEW_PASSWORD},
                page="/console/account/password").status_code == 302
    assert app.test_client().get(path).status_code == 410
    missing = app.test_cli_runner().invoke(args=["staff", "reset-link", "--email", "nobody@school.example"])
    assert missing.exit_code != 0 and "no staff account" in missing.output


def test_only_administrators_make_reset_links_and_only_for_local_accounts(app, client):
    user = make_staff(app, "someone@school.example", "registrar")
    sso_only = make_staff(app, "sso.only@school.example", "registrar", password=None)
    for role in ("registrar", "auditor", "catalogue_editor"):
        account = make_staff(app, f"{role}.x@school.example", role)
        other = app.test_client()
        assert sign_in(other, account).status_code == 302
        assert post(other, f"/console/accounts/{user.id}/reset-link").status_code == 403, role
    admin = make_staff(app, "admin@school.example", "administrator")
    assert sign_in(client, admin).status_code == 302
    refused = post(client, f"/console/accounts/{sso_only.id}/reset-link", page="/console/accounts")
    assert refused.status_code == 409 and "single sign-on" in refused.get_data(as_text=True)
    cli = app.test_cli_runner().invoke(args=["staff", "reset-link", "--email", sso_only.email])
    assert cli.exit_code != 0 and "single sign-on" in cli.output
    assert not audit(app, "staff.reset_link")


def test_resetting_an_administrator_keeps_totp_and_one_without_totp_must_enrol(app, client):
    admin = make_staff(app, "admin@school.example", "administrator")
    with app.app_context():
        session = get_session()
        from issuer.web.console import secret_key

        kept = staff.make_reset_token(session, session.get(StaffAccount, admin.id), secret_key(app), actor="test")
        promoted = staff.create_account(session, email="promoted@school.example", roles="registrar",
                                        password=PASSWORD, actor="test")
        staff.set_roles(session, promoted, "administrator", actor="test")  # an administrator without TOTP
        enrol = staff.make_reset_token(session, promoted, secret_key(app), actor="test")
        session.commit()
        promoted_id = promoted.id
    path = f"/console/reset/{kept}"
    assert "stays as it is" in client.get(path).get_data(as_text=True)
    assert post(client, path, {"password": NEW_PASSWORD, "again": NEW_PASSWORD}, page=path).status_code == 302
    fresh = app.test_client()
    form = {"csrf_token": token_of(fresh), "email": admin.email, "password": NEW_PASSWORD}
    assert fresh.post("/console/sign-in", data=form).status_code == 401  # still needs the code
    assert sign_in(fresh, admin, password=NEW_PASSWORD).status_code == 302

    learner = app.test_client()
    path = f"/console/reset/{enrol}"
    html = learner.get(path).get_data(as_text=True)
    secret = re.search(r'data-secret="([A-Z2-7]+)"', html).group(1)
    no_code = post(learner, path, {"password": NEW_PASSWORD, "again": NEW_PASSWORD}, page=path)
    assert no_code.status_code == 400 and "code does not match" in no_code.get_data(as_text=True)
    code = pyotp.TOTP(secret).now()
    assert post(learner, path, {"password": NEW_PASSWORD, "again": NEW_PASSWORD, "code": code},
                page=path).status_code == 302
    with app.app_context():
        row = get_session().get(StaffAccount, promoted_id)
        assert row.totp_secret == secret
    row.totp_secret = secret
    assert sign_in(app.test_client(), row, password=NEW_PASSWORD, code=code_for(row, 1)).status_code == 302


# --- cancelling a cohort -------------------------------------------------------------------------------

def _cohort(app, rows: int, *, start: bool = True) -> str:
    data = "email,achievement,award_date\n" + "".join(f"c{i:03d}@example.com,AI-101,2024-05-01\n"
                                                      for i in range(rows))
    with app.app_context():
        session = get_session()
        job = staff.create_job(session, data.encode(), "cancel.csv", actor="staff:registrar@school.example")
        if start:
            staff.start_job(session, job, actor="staff:registrar@school.example")
        return job.id


def _results(client, job_id: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(client.get(f"/console/cohorts/{job_id}/results.csv")
                                           .get_data(as_text=True))))


def test_a_registrar_cancels_a_running_cohort_and_what_was_issued_stays_valid(app, client, registrar,
                                                                             monkeypatch):
    from issuer import issuing

    job_id = _cohort(app, 60)
    confirm = client.get(f"/console/cohorts/{job_id}/cancel")
    assert confirm.status_code == 200 and "stay issued and valid" in confirm.get_data(as_text=True)
    real = issuing.issue_rows
    chunks = []

    def issue_then_cancel(*args, **kwargs):
        # The registrar confirms while the first chunk is being issued.
        results = real(*args, **kwargs)
        chunks.append(len(results))
        if len(chunks) == 1:
            page = f"/console/cohorts/{job_id}/cancel"
            assert post(client, page, page=page).status_code == 302
        return results

    monkeypatch.setattr(issuing, "issue_rows", issue_then_cancel)
    with app.app_context():
        make_session = app.extensions["issuer.sessionmaker"]
        assert staff._claim(make_session, "test") == job_id
        from issuer.identity import get_context

        staff.run_job(make_session, get_context(), job_id)
    assert chunks == [staff.CHUNK]  # it stopped at the next chunk
    progress = client.get(f"/console/cohorts/{job_id}/progress.json").get_json()
    assert progress["status"] == "cancelled" and progress["done"] and progress["issued"] == staff.CHUNK
    rows = _results(client, job_id)
    assert len(rows) == 60
    assert [r["status"] for r in rows] == ["issued"] * staff.CHUNK + ["not issued (cancelled)"] * (60 - staff.CHUNK)
    with app.app_context():
        badges = get_session().scalars(select(Credential)).all()
        assert len(badges) == staff.CHUNK and all(b.revoked_at is None for b in badges)
    page = client.get(f"/credentials/{badges[0].id}").get_data(as_text=True)
    assert 'class="verdict passed"' in page
    job_page = client.get(f"/console/cohorts/{job_id}").get_data(as_text=True)
    assert 'data-status="cancelled"' in job_page and 'id="cancel"' not in job_page
    assert [e.subject for e in audit(app, "cohort.cancel")] == [job_id] and not audit(app, "cohort.done")
    again = post(client, f"/console/cohorts/{job_id}/cancel", page=f"/console/cohorts/{job_id}")
    assert again.status_code == 409


def test_a_cohort_not_yet_started_by_a_worker_is_cancelled_at_once_and_never_runs(app, client, registrar):
    job_id = _cohort(app, 5)
    # (The CSRF token from the home page: opening the cohort's page would start a worker for it.)
    assert post(client, f"/console/cohorts/{job_id}/cancel").status_code == 302
    with app.app_context():
        make_session = app.extensions["issuer.sessionmaker"]
        assert staff._claim(make_session, "test") is None  # no worker takes it
        assert get_session().scalars(select(Credential)).first() is None
    assert {r["status"] for r in _results(client, job_id)} == {"not issued (cancelled)"}
    finished = _cohort(app, 2)
    with app.app_context():
        from issuer.identity import get_context

        make_session = app.extensions["issuer.sessionmaker"]
        assert staff._claim(make_session, "test") == finished
        staff.run_job(make_session, get_context(), finished)
    assert post(client, f"/console/cohorts/{finished}/cancel",
                page=f"/console/cohorts/{finished}").status_code == 409  # a finished cohort stays finished
    assert post(client, "/console/cohorts/nope/cancel").status_code == 404


def test_an_auditor_cannot_cancel_a_cohort(app, client):
    job_id = _cohort(app, 3)
    auditor = make_staff(app, "auditor@school.example", "auditor")
    assert sign_in(client, auditor).status_code == 302
    assert client.get(f"/console/cohorts/{job_id}/cancel").status_code == 403
    assert post(client, f"/console/cohorts/{job_id}/cancel").status_code == 403
    assert 'id="cancel"' not in client.get(f"/console/cohorts/{job_id}").get_data(as_text=True)
    with app.app_context():
        assert get_session().get(ConsoleJob, job_id).status in ("queued", "running", "done")
    assert not audit(app, "cohort.cancel")


# --- signing out at the identity provider ----------------------------------------------------------------

def test_signing_out_of_a_single_sign_on_session_ends_it_at_the_provider_too(app, client, provider):
    import jwt

    app.config.update(ISSUER_OIDC_ISSUER=provider, ISSUER_OIDC_CLIENT_ID="console", ISSUER_OIDC_CLIENT_SECRET="s",
                      ISSUER_OIDC_ROLE_MAP="registrars=registrar")
    assert sso(client, provider, "reg-1").status_code == 302
    out = post(client, "/console/sign-out")
    assert out.status_code == 302
    target = urlsplit(out.headers["Location"])
    assert f"{target.scheme}://{target.netloc}" == provider and target.path == "/oauth2/end_session"
    query = parse_qs(target.query)
    assert query["post_logout_redirect_uri"] == ["http://localhost/console/sign-in"]
    assert query["client_id"] == ["console"]
    claims = jwt.decode(query["id_token_hint"][0], options={"verify_signature": False})
    assert claims["sub"] == "reg-1" and claims["aud"] in ("console", ["console"])
    assert client.get("/console/issue").status_code == 302  # signed out here at once
    assert audit(app, "staff.sign_out")[-1].detail == {"at_provider": True}
    # The provider ends its session and sends the browser back to the console's sign-in page.
    http = requests.Session()
    http.trust_env = False
    form = http.get(out.headers["Location"], timeout=10)
    assert form.status_code == 200
    back = http.post(f"{provider}/oauth2/end_session/confirm",
                     data={"redirect_uri": query["post_logout_redirect_uri"][0]}, allow_redirects=False, timeout=10)
    assert back.status_code == 302 and back.headers["Location"] == "http://localhost/console/sign-in"


def test_signing_out_stays_local_without_an_end_session_endpoint_or_for_a_local_account(app, client, provider,
                                                                                      monkeypatch):
    app.config.update(ISSUER_OIDC_ISSUER=provider, ISSUER_OIDC_CLIENT_ID="console", ISSUER_OIDC_CLIENT_SECRET="s",
                      ISSUER_OIDC_ROLE_MAP="registrars=registrar")
    local = make_staff(app, "local@school.example", "registrar")
    assert sign_in(client, local).status_code == 302
    out = post(client, "/console/sign-out")
    assert out.headers["Location"] == "/console/sign-in"
    from authlib.integrations.flask_client import FlaskOAuth2App

    real = FlaskOAuth2App.load_server_metadata

    def without_end_session(self):
        return {k: v for k, v in real(self).items() if k != "end_session_endpoint"}

    monkeypatch.setattr(FlaskOAuth2App, "load_server_metadata", without_end_session)
    assert sso(client, provider, "reg-1").status_code == 302
    out = post(client, "/console/sign-out")
    assert out.status_code == 302 and out.headers["Location"] == "/console/sign-in"
    assert client.get("/console/issue").status_code == 302
    assert audit(app, "staff.sign_out")[-1].detail is None
