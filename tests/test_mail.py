"""Emails to learners: queued with the credential, delivered later to a real SMTP server (aiosmtpd on
127.0.0.1) or written to the outbox folder, retried, listed for staff, never logging the address."""

from __future__ import annotations

import asyncio
import email
import json
import logging
import socket
import threading
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import func, select

from issuer import mail
from issuer.db import get_session
from issuer.models import AuditEntry, Award, Credential, Notification
from tests.test_awards import AI_CERTIFICATE, LEARNER, issue_badges, stored

# The test server asks for a password over plain SMTP on 127.0.0.1, which aiosmtpd warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

ISSUE = "/api/v1/credentials"
EMAIL = "learner@example.com"
SMTP_USER, SMTP_PASSWORD = "issuer", "p@ss word/1"
SMTP_PASSWORD_IN_URL = "p%40ss%20word%2F1"
AI_101 = ("Foundations of Artificial Intelligence for Business", "商業人工智能基礎")
AI_CERTIFICATE_TITLE = ("Certificate in Professional Practice (Artificial Intelligence)", "專業實踐證書(人工智能)")


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (when the socket is closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """The aiosmtpd handler: accepts (after `delay` seconds) or refuses recipients, keeps what it received."""

    def __init__(self):
        self.received: list[dict] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.delay = 0.0
        self.refuse = False
        self.url = ""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user {address}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "message": email.message_from_bytes(envelope.content, policy=policy.default)})
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)


@pytest.fixture(autouse=True)
def _mail_settings_from_the_tests_only(monkeypatch):
    for name in ("SMTP_URL", "SMTP_TIMEOUT", "MAIL_FROM", "OUTBOX_DIR", "MAIL_MAX_ATTEMPTS", "MAIL_THREAD"):
        monkeypatch.delenv(f"ISSUER_{name}", raising=False)


@pytest.fixture
def smtp_server():
    handler = Collector()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), auth_required=True,
                            auth_require_tls=False, authenticator=handler.authenticate)
    controller.start()
    handler.url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{controller.port}"
    yield handler
    controller.stop()


@pytest.fixture
def smtp_app(app, smtp_server):
    app.config["ISSUER_SMTP_URL"] = smtp_server.url
    yield app
    mail.stop_worker(app)


def issue(client, token, *, email_address=EMAIL, name="Chan Tai Man", code="AI-101", did=None, key=None, day=None):
    recipient = {"email": email_address, **({"name": name} if name else {}), **({"did": did} if did else {})}
    body = {"achievement": code, "recipient": recipient, **({"awarded_on": day} if day else {})}
    headers = {**auth(token), **({"Idempotency-Key": key} if key else {})}
    return client.post(ISSUE, json=body, headers=headers)


def notifications(app) -> list[Notification]:
    with app.app_context():
        return list(get_session().scalars(select(Notification).order_by(Notification.created_at, Notification.id)))


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parts(message) -> tuple[str, str]:
    return (message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content())


# --- queued with the credential -------------------------------------------------------------------------

def test_issuing_a_badge_queues_one_pending_message_and_sends_nothing_during_the_request(
        smtp_app, client, issue_token, smtp_server):
    response = issue(client, issue_token)
    assert response.status_code == 201, response.get_json()
    badge_id = response.get_json()["id"]
    assert smtp_server.received == []  # nothing was sent while answering
    assert mail.ensure_worker(smtp_app, start=False) is None  # and no thread under TESTING by default
    (note,) = notifications(smtp_app)
    assert (note.kind, note.credential_id, note.to_address) == ("badge_issued", badge_id, EMAIL)
    assert (note.status, note.attempts, note.last_error, note.sent_at) == ("pending", 0, None, None)
    assert note.subject == "" and note.body_text == ""  # rendered when delivered, outside the issuing transaction
    assert aware(note.next_attempt_at) <= datetime.now(UTC)


def test_the_message_is_delivered_by_smtp_in_english_then_chinese_with_the_page_and_downloads(
        smtp_app, client, issue_token, smtp_server):
    issued = issue(client, issue_token, did="did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK").get_json()
    assert "jwt" in issued
    report = mail.deliver_pending(smtp_app)
    assert (report.sent, report.retrying, report.failed) == (1, 0, 0)
    assert smtp_server.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]  # user:pass from the URL
    (got,) = smtp_server.received
    message = got["message"]
    assert got["to"] == [EMAIL] and message["To"] == EMAIL
    assert message["Subject"] == f"Your badge: {AI_101[0]} | 你的徽章：{AI_101[1]}"
    (note,) = notifications(smtp_app)
    assert message["Message-ID"] == f"<{note.id}@127.0.0.1>"
    text, html = parts(message)
    page = issued["url"]
    assert page == f"http://127.0.0.1:5000/credentials/{issued['id']}"
    for body in (text, html):
        assert unicodedata.is_normalized("NFC", body)
        for suffix in ("", ".json", ".jwt", ".png", ".svg", ".pdf"):
            assert page + suffix in body, suffix
        assert AI_101[0] in body and AI_101[1] in body
    # English first, then Traditional Chinese.
    assert text.index("Dear Chan Tai Man,") < text.index("Chan Tai Man，你好：")
    assert text.index("Download your credential:") < text.index("下載你的憑證：")
    assert "內嵌憑證的徽章圖像（PNG）" in text and "憑證，VC-JWT（.jwt）" in text
    assert html.index('<div lang="en">') < html.index('<div lang="zh-Hant">')
    assert f'<a href="{page}.pdf">' in html and f'<a href="{page}.jwt">' in html
    with smtp_app.app_context():
        row = get_session().get(Notification, note.id)
        assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
        assert aware(row.sent_at) <= datetime.now(UTC)
    # Sent is sent: another round sends nothing.
    assert mail.deliver_pending(smtp_app).attempted == 0
    assert len(smtp_server.received) == 1


def test_a_badge_without_a_did_has_no_jwt_link(smtp_app, client, issue_token, smtp_server):
    issued = issue(client, issue_token).get_json()
    mail.deliver_pending(smtp_app)
    text, html = parts(smtp_server.received[0]["message"])
    assert issued["url"] + ".json" in text and issued["url"] + ".jwt" not in text + html


def test_issuing_the_same_badge_again_queues_no_second_message(smtp_app, client, issue_token):
    first = issue(client, issue_token, key="cohort-7")
    assert first.status_code == 201
    assert issue(client, issue_token, key="cohort-7").status_code == 200  # same Idempotency-Key
    assert issue(client, issue_token).status_code == 200  # same learner, achievement and day
    assert [n.credential_id for n in notifications(smtp_app)] == [first.get_json()["id"]]


def test_an_issuance_that_fails_before_its_commit_leaves_no_message(app, client, issue_token, monkeypatch):
    original = mail.enqueue_issued

    def queue_then_fail(session, row, ctx):
        original(session, row, ctx)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(mail, "enqueue_issued", queue_then_fail)
    assert issue(client, issue_token).status_code == 500
    with app.app_context():
        session = get_session()
        assert session.scalar(select(func.count()).select_from(Credential)) == 0
        assert session.scalar(select(func.count()).select_from(Notification)) == 0


def test_a_claimed_award_sends_an_award_email(smtp_app, client, issue_token, smtp_server):
    badges = stored(client, issue_badges(client, issue_token, AI_CERTIFICATE))
    claimed = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": badges})
    assert claimed.status_code == 201, claimed.get_json()
    award_id = claimed.get_json()["id"]
    queued = notifications(smtp_app)
    assert [n.kind for n in queued].count("badge_issued") == len(AI_CERTIFICATE)
    (award_note,) = [n for n in queued if n.kind == "award_issued"]
    assert award_note.credential_id == award_id
    assert client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": badges}
                       ).status_code == 200
    assert len(notifications(smtp_app)) == len(queued)  # claiming again sends nothing new

    assert mail.deliver_pending(smtp_app).sent == len(AI_CERTIFICATE) + 1
    (message,) = [r["message"] for r in smtp_server.received
                  if r["message"]["Message-ID"] == f"<{award_note.id}@127.0.0.1>"]
    assert message["Subject"] == f"Your award: {AI_CERTIFICATE_TITLE[0]} | 你的資歷：{AI_CERTIFICATE_TITLE[1]}"
    text, html = parts(message)
    page = claimed.get_json()["url"]
    assert "has issued you the award “Certificate in Professional Practice (Artificial Intelligence)”" in text
    assert "已向你頒發資歷「專業實踐證書(人工智能)」" in text
    assert page in text and page + ".pdf" in html


def test_a_learner_known_only_by_a_did_gets_no_message(app):
    with app.app_context():
        session = get_session()
        award = Award(id="did-only", credential_url="http://127.0.0.1:5000/credentials/did-only",
                      recipient_email=None, recipient_did="did:key:z6Mk", level="Certificate", pathway="Certificate",
                      title_en="x", achievement_id="x", credits=30, qf_level=4, report={}, document="{}",
                      document_sha256="0" * 64)
        assert mail.enqueue_issued(session, award, None) is None
        assert not any(isinstance(o, Notification) for o in session.new)


def test_names_are_escaped_in_html_and_every_text_is_nfc(smtp_app, client, issue_token):
    issue(client, issue_token, name="<b>Zoe\u0301</b> & Co")
    assert mail.deliver_pending(smtp_app).sent == 1
    (note,) = notifications(smtp_app)
    assert "&lt;b&gt;Zoé&lt;/b&gt; &amp; Co" in note.body_html and "<b>" not in note.body_html
    assert "Dear <b>Zoé</b> & Co," in note.body_text and "\u0301" not in note.body_text


# --- development: the outbox folder -----------------------------------------------------------------------

def test_without_smtp_a_development_instance_writes_each_message_to_the_outbox(app, client, issue_token):
    issued = issue(client, issue_token).get_json()
    assert mail.deliver_pending(app).sent == 1
    outbox = Path(app.instance_path) / "outbox"
    (file,) = outbox.glob("*.eml")
    message = email.message_from_bytes(file.read_bytes(), policy=policy.default)
    assert message["To"] == EMAIL and message["Subject"].startswith(f"Your badge: {AI_101[0]} | ")
    assert message["From"].endswith("<no-reply@localhost>")
    text, html = parts(message)
    assert issued["url"] + ".svg" in text and "你好" in text and '<div lang="zh-Hant">' in html
    (note,) = notifications(app)
    assert note.status == "sent" and note.id in file.name


def test_issuer_outbox_dir_moves_the_outbox(app, client, issue_token, tmp_path):
    app.config["ISSUER_OUTBOX_DIR"] = str(tmp_path / "mail")
    issue(client, issue_token)
    mail.deliver_pending(app)
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
    assert not (Path(app.instance_path) / "outbox").exists()


# --- failures: retried, then failed, visible to staff ------------------------------------------------------

def test_with_the_smtp_server_down_the_badge_is_issued_and_the_message_waits(app, client, issue_token):
    app.config["ISSUER_SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    response = issue(client, issue_token)
    assert response.status_code == 201
    report = mail.deliver_pending(app)
    assert (report.sent, report.retrying, report.failed) == (0, 1, 0)
    (note,) = notifications(app)
    assert (note.status, note.attempts) == ("pending", 1)
    assert note.last_error and "Connection" in note.last_error and EMAIL not in note.last_error
    assert aware(note.next_attempt_at) > datetime.now(UTC) + timedelta(seconds=50)  # a minute of backoff
    assert client.get(f"/credentials/{response.get_json()['id']}.json").status_code == 200
    assert mail.deliver_pending(app).attempted == 0  # not due again yet


def test_after_the_last_attempt_the_message_fails_is_listed_for_staff_and_can_be_retried(
        app, client, issue_token, make_token, smtp_server):
    app.config["ISSUER_SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    app.config["ISSUER_MAIL_MAX_ATTEMPTS"] = 3
    issue(client, issue_token)
    later = datetime.now(UTC)
    outcomes = []
    for _ in range(3):
        later += timedelta(hours=2)
        report = mail.deliver_pending(app, now=later)
        outcomes.append((report.retrying, report.failed))
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    (note,) = notifications(app)
    assert (note.status, note.attempts) == ("failed", 3)
    assert mail.deliver_pending(app, now=later + timedelta(days=1)).attempted == 0

    assert client.get("/api/v1/notifications?status=failed").status_code == 401
    assert client.get("/api/v1/notifications", headers=auth(make_token("revoke"))).status_code == 403
    bad = client.get("/api/v1/notifications?status=lost", headers=auth(issue_token))
    assert bad.status_code == 400 and bad.get_json()["field"] == "status"
    listed = client.get("/api/v1/notifications?status=failed", headers=auth(issue_token))
    assert listed.status_code == 200
    (item,) = listed.get_json()["notifications"]
    assert item["id"] == note.id and item["to"] == "l***@example.com" and item["attempts"] == 3
    assert item["kind"] == "badge_issued" and item["last_error"]
    assert EMAIL not in listed.get_data(as_text=True)
    assert client.get("/api/v1/notifications?status=pending", headers=auth(issue_token)).get_json() == {
        "notifications": []}

    retried = client.post(f"/api/v1/notifications/{note.id}/retry", headers=auth(issue_token))
    assert retried.status_code == 200, retried.get_json()
    assert (retried.get_json()["status"], retried.get_json()["attempts"]) == ("pending", 0)
    app.config["ISSUER_SMTP_URL"] = smtp_server.url  # the server is back
    assert mail.deliver_pending(app).sent == 1
    assert len(smtp_server.received) == 1
    again = client.post(f"/api/v1/notifications/{note.id}/retry", headers=auth(issue_token))
    assert again.status_code == 409 and "already sent" in again.get_json()["detail"]
    assert client.post("/api/v1/notifications/nope/retry", headers=auth(issue_token)).status_code == 404
    with app.app_context():
        audit = get_session().scalars(select(AuditEntry).where(AuditEntry.action == "notification.retry")).all()
        assert [a.subject for a in audit] == [note.id]


def test_a_recipient_the_server_refuses_for_good_fails_at_once_without_the_address_anywhere(
        smtp_app, client, issue_token, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    smtp_server.refuse = True
    address = "Private.Person@Example.org"
    issue(client, issue_token, email_address=address)
    assert mail.deliver_pending(smtp_app).failed == 1
    (note,) = notifications(smtp_app)
    assert note.status == "failed" and note.attempts == 1
    assert "550" in note.last_error and "private.person" not in note.last_error.lower()
    messages = [r.getMessage() for r in caplog.records if r.name == "issuer.mail"]
    assert any(note.id in m for m in messages)
    assert not any("private.person" in m.lower() for m in messages)


def test_no_log_record_ever_contains_the_learners_address(app, client, issue_token, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    address = "chan.taiman@example.net"
    app.config["ISSUER_SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"  # down first
    issue(client, issue_token, email_address=address)
    mail.deliver_pending(app)
    (note,) = notifications(app)
    app.config["ISSUER_SMTP_URL"] = smtp_server.url
    mail.deliver_pending(app, now=datetime.now(UTC) + timedelta(hours=1))
    assert notifications(app)[0].status == "sent"
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["mail", "list"])
    ours = [r for r in caplog.records if r.name == "issuer.mail"]
    assert len(ours) >= 2 and all(note.id in r.getMessage() for r in ours)  # the failure and the success
    # Every record of the issuer's process; aiosmtpd's own ("mail.log") is the mail server's, not ours.
    issuer_side = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name == "issuer.mail" for r in issuer_side)
    for record in issuer_side:
        text = record.getMessage() + (record.exc_text or "")
        assert "chan.taiman" not in text.lower(), record
    assert "chan.taiman" not in listed.output and note.id in listed.output


# --- two workers, the thread, the command line --------------------------------------------------------------

def test_a_message_is_claimed_by_one_worker_only(app, client, issue_token):
    issue(client, issue_token)
    (note,) = notifications(app)
    now = datetime.now(UTC)
    with app.app_context():
        first, second = (app.extensions["issuer.sessionmaker"]() for _ in range(2))
        assert mail.claim(first, note.id, now, 8) is True
        assert mail.claim(second, note.id, now, 8) is False
        # A claim whose worker fell silent lapses, and then one other worker may take it over.
        lapsed = now + mail.CLAIM_FOR + timedelta(seconds=1)
        assert mail.claim(second, note.id, lapsed, 8) is True
        assert mail.claim(first, note.id, lapsed, 8) is False
        first.close()
        second.close()
    assert notifications(app)[0].attempts == 2
    # Its worker died again; with no attempts left, the lapsed claim is failed rather than sent a third time.
    app.config["ISSUER_MAIL_MAX_ATTEMPTS"] = 2
    report = mail.deliver_pending(app, now=lapsed + mail.CLAIM_FOR + timedelta(seconds=1))
    assert (report.sent, report.failed) == (0, 1)
    row = notifications(app)[0]
    assert row.status == "failed" and "interrupted" in row.last_error and row.attempts == 2


def test_two_deliveries_at_once_never_send_the_same_message_twice(smtp_app, client, issue_token, smtp_server):
    for n in range(12):
        assert issue(client, issue_token, email_address=f"learner{n}@example.com").status_code == 201
    smtp_server.delay = 0.05
    start = threading.Barrier(2)
    reports = []

    def worker():
        start.wait()
        reports.append(mail.deliver_pending(smtp_app, limit=None))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [r["message"]["Message-ID"] for r in smtp_server.received]
    assert len(ids) == len(set(ids)) == 12
    assert sum(r.sent for r in reports) == 12 and sum(r.attempted for r in reports) == 12
    assert {n.status for n in notifications(smtp_app)} == {"sent"}
    assert sorted(r["to"][0] for r in smtp_server.received) == sorted(f"learner{n}@example.com" for n in range(12))


def test_the_delivery_thread_sends_after_the_response_without_holding_it_up(
        smtp_app, client, issue_token, smtp_server):
    smtp_app.config["ISSUER_MAIL_THREAD"] = True
    smtp_server.delay = 5.0  # the server takes five seconds to accept a message
    assert client.get("/api/v1/achievements").status_code == 200  # the first request starts the thread
    assert mail.ensure_worker(smtp_app, start=False) is not None
    started = time.monotonic()
    response = issue(client, issue_token)
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert elapsed < 4 and smtp_server.received == []  # answered before the server accepted anything
    deadline = time.monotonic() + 20
    while not smtp_server.received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(smtp_server.received) == 1
    assert smtp_server.received[0]["message"]["Subject"].startswith(f"Your badge: {AI_101[0]}")
    deadline = time.monotonic() + 10
    while notifications(smtp_app)[0].status != "sent" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notifications(smtp_app)[0].status == "sent"


def test_issuer_mail_commands_list_send_and_retry(app, client, issue_token):
    runner = app.test_cli_runner()
    issued = issue(client, issue_token).get_json()
    (note,) = notifications(app)
    listed = runner.invoke(args=["mail", "list"])
    assert listed.exit_code == 0
    assert note.id in listed.output and issued["id"] in listed.output and "pending" in listed.output
    assert "@" not in listed.output
    sent = runner.invoke(args=["mail", "send"])
    assert sent.exit_code == 0 and "1 sent" in sent.output
    assert note.id in runner.invoke(args=["mail", "list", "--status", "sent"]).output
    assert note.id not in runner.invoke(args=["mail", "list", "--status", "failed"]).output
    refused = runner.invoke(args=["mail", "retry", note.id])
    assert refused.exit_code != 0 and "already sent" in refused.output

    with app.app_context():
        session = get_session()
        row = session.get(Notification, note.id)
        row.status, row.attempts, row.last_error = "failed", 8, "earlier failure"
        session.commit()
    retried = runner.invoke(args=["mail", "retry", note.id])
    assert retried.exit_code == 0, retried.output
    row = notifications(app)[0]
    assert (row.status, row.attempts) == ("pending", 0) and aware(row.next_attempt_at) <= datetime.now(UTC)
    assert "1 sent" in runner.invoke(args=["mail", "send"]).output


def test_an_unusable_smtp_url_is_recorded_without_its_secrets(app, client, issue_token):
    app.config["ISSUER_SMTP_URL"] = "smtq://user:hunter2@mail.example"
    issue(client, issue_token)
    assert mail.deliver_pending(app).retrying == 1
    (note,) = notifications(app)
    assert "ISSUER_SMTP_URL must start with" in note.last_error and "hunter2" not in note.last_error


def test_backoff_doubles_from_a_minute_up_to_an_hour():
    assert [mail.backoff(n).total_seconds() for n in (1, 2, 3, 4, 7, 8, 20)] == [
        60, 120, 240, 480, 3600, 3600, 3600]
    assert mail.mask("learner@example.com") == "l***@example.com"


def test_the_json_listing_shapes_times_as_iso_strings(app, client, issue_token):
    issue(client, issue_token)
    item = client.get("/api/v1/notifications", headers=auth(issue_token)).get_json()["notifications"][0]
    assert datetime.fromisoformat(item["created_at"]).tzinfo is not None
    assert item["credential_url"].startswith("http://127.0.0.1:5000/credentials/")
    assert item["sent_at"] is None and item["next_attempt_at"]
    assert json.dumps(item).count("@") == 1  # only the masked address
