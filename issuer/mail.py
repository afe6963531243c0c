"""Email to learners when a badge or an award is issued: a transactional outbox and its delivery.

Why it is shaped this way:

* ``enqueue_issued`` adds a ``Notification`` row in the issuing transaction, so a stored credential always
  has its message and an issuance that fails or rolls back has none. Nothing is sent there.
* ``deliver_pending`` sends what is due, outside any issuing transaction. A message is claimed first by a
  conditional UPDATE (``status`` pending, or a lapsed ``sending`` claim, and due) whose row count says who
  won, so two workers, threads or processes never send the same message; the claim is committed before
  the SMTP conversation, so no database lock is held while a mail server is slow. A claim lapses after
  ``CLAIM_FOR`` (a worker that died mid-send): delivery is at least once, never lost.
* A failure is retried with exponential backoff and, after ``ISSUER_MAIL_MAX_ATTEMPTS`` attempts (or a
  permanent 5xx refusal of the recipient), the message is ``failed``: listed for staff by the API and
  ``issuer mail list``, and put back by a retry.
* Without ``ISSUER_SMTP_URL`` (a development instance) each message is written as an ``.eml`` file to the
  outbox folder instead, and counts as sent.
* A web process runs one daemon thread that delivers: started by its first request, woken after every
  commit that queued a message, and waking by itself every ``POLL_SECONDS`` for retries. Under TESTING it
  starts only when ``ISSUER_MAIL_THREAD`` is true. Command-line issuance only queues: a running server or
  ``issuer mail send`` delivers.
* The learner's address is personal data: it is written to the message and the database, never to a log
  line or a stored error (those name the notification id, and errors are scrubbed of anything
  address-shaped). Staff see it masked, ``l***@example.com``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import smtplib
import ssl
import tempfile
import threading
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, has_app_context, has_request_context, render_template
from flask_babel import force_locale
from markupsafe import Markup
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from . import i18n
from .models import Achievement, AuditEntry, Award, Credential, Notification, utcnow

logger = logging.getLogger(__name__)

KINDS = ("badge_issued", "award_issued")
STATUSES = ("pending", "sending", "sent", "failed")
CLAIM_FOR = timedelta(minutes=10)  # a claimed message is offered again when its worker fell silent this long
FIRST_RETRY = timedelta(minutes=1)  # then 2, 4, 8 … minutes
LONGEST_RETRY = timedelta(hours=1)
POLL_SECONDS = 30.0
BATCH = 50
SEPARATOR = "-" * 40

# name → (default, parser). Read by `setting`: the application's config, then the environment, then this.
SCHEMES = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}
ADDRESS_SHAPED = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


class MailError(ValueError):
    """A request about a notification that cannot be done; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class MailConfigError(ValueError):
    """ISSUER_SMTP_URL or another mail setting is unusable (the message never names its secrets)."""


def setting(app: Flask, name: str) -> Any:
    """A mail setting, ``ISSUER_<name>``, loaded with the others by config.py (defaults < instance config <
    environment < overrides)."""
    return app.config.get(f"ISSUER_{name}")


def mask(address: str) -> str:
    """What staff see of an address: its first character and its domain (``l***@example.com``)."""
    local, _, domain = (address or "").rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def scrub(text: Any, address: str | None = None) -> str:
    """Error text safe to log or store: the address (and anything shaped like one) replaced, length bounded."""
    text = str(text)
    if address:
        text = re.sub(re.escape(address), "<recipient>", text, flags=re.IGNORECASE)
    text = ADDRESS_SHAPED.sub("<address>", text)
    return " ".join(text.split())[:1000]


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; every one we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


# --- the message ------------------------------------------------------------------------------------------

@dataclass
class Rendered:
    subject: str
    text: str
    html: str


def _names(session: Session, row: Credential | Award) -> dict[str, str]:
    """The achievement's or the award's name in each language (English when a Chinese one is missing)."""
    if isinstance(row, Award):
        title = ((row.report or {}).get("award") or {}).get("title") or {}
        english = title.get("en") or row.title_en
        return {"en": english, "zh-Hant": title.get("zh-Hant") or english}
    achievement = session.get(Achievement, row.achievement_code)
    name = (achievement.entry.get("name") if achievement else None) or row.achievement_code
    if isinstance(name, str):
        return {"en": name, "zh-Hant": name}
    return {"en": name.get("en") or row.achievement_code, "zh-Hant": name.get("zh-Hant") or name.get("en")}


def _recipient_name(session: Session, row: Credential | Award) -> str | None:
    """The name the registry keeps: on a badge itself; for an award, on the learner's badges it counted."""
    if isinstance(row, Credential):
        return row.recipient_name
    counted = ((row.report or {}).get("award") or {}).get("counted") or []
    if not counted or not row.recipient_email:
        return None
    return session.scalars(
        select(Credential.recipient_name)
        .where(Credential.credential_url.in_(counted), Credential.recipient_email == row.recipient_email,
               Credential.recipient_name.is_not(None))
        .order_by(Credential.created_at.desc())).first()


def render(session: Session, row: Credential | Award, issuer_name: str) -> Rendered:
    """The bilingual message about one badge or award: English first, then Traditional Chinese, each part
    rendered from `templates/email/` with that language forced. Needs an application context."""
    kind = "award_issued" if isinstance(row, Award) else "badge_issued"
    names = _names(session, row)
    values = {"kind": kind, "recipient_name": _recipient_name(session, row), "issuer_name": issuer_name,
              "page_url": row.credential_url, "has_jwt": bool(row.jwt)}
    subjects, texts, sections = [], [], []
    for language, locale in i18n.LANGUAGES.items():
        with force_locale(locale):
            here = {**values, "lang": language, "name": names[language]}
            subjects.append(" ".join(render_template("email/subject.txt", **here).split()))
            texts.append(render_template("email/issued.txt", **here).strip())
            sections.append(Markup(render_template("email/issued.html", **here)))
    subject = " | ".join(subjects)
    html = render_template("email/message.html", subject=subject, sections=sections)
    return Rendered(_nfc(subject), _nfc(f"\n\n{SEPARATOR}\n\n".join(texts) + "\n"), _nfc(html))


def _fill(session: Session, note: Notification, issuer_name: str) -> None:
    row = session.get(Award if note.kind == "award_issued" else Credential, note.credential_id)
    if row is None:
        raise LookupError(f"{note.kind} {note.credential_id} is not in the registry")
    rendered = render(session, row, issuer_name)
    note.subject, note.body_text, note.body_html = rendered.subject, rendered.text, rendered.html


def enqueue_issued(session: Session, row: Credential | Award, ctx) -> Notification | None:
    """Queue the email about a badge or award being stored in this session's transaction (not committed
    here: the caller's commit stores both or neither). None when the learner has no email recorded.

    Only the row is written here; the message is rendered when it is delivered (`_fill`), outside the
    issuing transaction: rendering costs a few milliseconds that a cohort of 100,000 should not pay while
    holding the database's write lock, and queuing can then never make issuing fail."""
    if not row.recipient_email:
        return None
    now = utcnow()
    note = Notification(id=str(uuid.uuid4()), kind="award_issued" if isinstance(row, Award) else "badge_issued",
                        credential_id=row.id, to_address=row.recipient_email, subject="", body_text="",
                        body_html="", status="pending", attempts=0, next_attempt_at=now, created_at=now)
    session.add(note)
    if has_app_context():
        session.info[_WAKE] = current_app._get_current_object()
    return note


def message_for(app: Flask, note: Notification) -> EmailMessage:
    """The RFC 5322 message: plain text with an HTML alternative, a Message-ID made of the notification id
    (the same on every attempt, so a repeated delivery can be recognised)."""
    # 7bit: bodies go base64 or quoted-printable, fit for any server (8BITMIME or not).
    message = EmailMessage(policy=policy.SMTP.clone(cte_type="7bit"))
    if note.subject.isascii():
        message["Subject"] = note.subject
    else:
        # Encoded and folded here: the email package's own folding doubles the space before the first
        # encoded word ("… |  你的徽章"), which readers then show.
        message.set_raw("Subject", Header(note.subject, "utf-8", header_name="Subject").encode(linesep="\n"))
    message["From"] = sender(app)
    message["To"] = note.to_address
    message["Date"] = format_datetime(_aware(note.created_at) or utcnow())
    message["Message-ID"] = f"<{note.id}@{_host(app)}>"
    message["Content-Language"] = ", ".join(i18n.LANGUAGES)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(note.body_text)
    message.add_alternative(note.body_html, subtype="html")
    return message


def sender(app: Flask) -> str:
    return setting(app, "MAIL_FROM") or formataddr((app.config.get("ISSUER_NAME") or "Open Badges issuer",
                                                    "no-reply@localhost"))


def _host(app: Flask) -> str:
    return urlsplit(app.config.get("ISSUER_BASE_URL") or "").hostname or "localhost"


# --- transports -------------------------------------------------------------------------------------------

class Outbox:
    """Development: every message becomes an .eml file in a folder (mode 0600: it holds an address)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def send(self, message: EmailMessage, note: Notification) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = (_aware(note.created_at) or utcnow()).strftime("%Y%m%dT%H%M%SZ")
        target = self.folder / f"{stamp}-{note.id}.eml"
        # An internationalised address needs SMTPUTF8 headers, as smtplib would send them.
        data = message.as_bytes(policy=message.policy.clone(utf8=not note.to_address.isascii()))
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        pass


class Smtp:
    """SMTP with one connection per delivery round, opened when the first message needs it."""

    def __init__(self, url: str, *, timeout: float, local_hostname: str):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise MailConfigError("ISSUER_SMTP_URL must start with smtp://, smtps:// or smtp+starttls://")
        try:
            port = parts.port
        except ValueError:
            raise MailConfigError("ISSUER_SMTP_URL has a port that is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise MailConfigError("ISSUER_SMTP_URL names no host")
        self.scheme, self.host, self.port = scheme, parts.hostname, port or SCHEMES[scheme]
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else ""
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.connection: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.scheme == "smtps":
            connection = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                          timeout=self.timeout, context=context)
        else:
            connection = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname,
                                      timeout=self.timeout)
        try:
            connection.ehlo()
            if self.scheme == "smtp+starttls":
                connection.starttls(context=context)
                connection.ehlo()
            if self.user:
                connection.login(self.user, self.password)
        except BaseException:
            connection.close()
            raise
        return connection

    def send(self, message: EmailMessage, note: Notification) -> None:
        if self.connection is None:
            self.connection = self._connect()
        try:
            self.connection.send_message(message)
        except smtplib.SMTPRecipientsRefused:
            raise  # the connection is still good for the next message
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()


def transport(app: Flask) -> Outbox | Smtp:
    url = setting(app, "SMTP_URL")
    if not url:
        folder = setting(app, "OUTBOX_DIR") or os.path.join(app.instance_path, "outbox")
        return Outbox(Path(folder))
    host = _host(app)
    try:
        ipaddress.ip_address(host)
        host = f"[{host}]"  # an address literal in EHLO
    except ValueError:
        pass
    return Smtp(url, timeout=float(setting(app, "SMTP_TIMEOUT")), local_hostname=host)


def _permanent(exc: BaseException) -> bool:
    """A 5xx refusal of the recipient: the address will not work later either."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    return False


def describe(exc: BaseException, address: str) -> str:
    """The stored and logged error: the kind of failure and the server's words, never the address."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = "; ".join(f"{code} {_decode(text)}" for code, text in exc.recipients.values())
        text = f"the mail server refused the recipient: {replies}"
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"{type(exc).__name__}: {exc.smtp_code} {_decode(exc.smtp_error)}"
    elif isinstance(exc, MailConfigError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return scrub(text, address)


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- delivery ---------------------------------------------------------------------------------------------

@dataclass
class Delivery:
    """What one call of `deliver_pending` did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def attempted(self) -> int:
        return self.sent + self.retrying + self.failed


def backoff(attempts: int) -> timedelta:
    """Wait after the n-th failed attempt: 1, 2, 4 … minutes, at most an hour."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


def claim(session: Session, notification_id: str, now: datetime, max_attempts: int) -> bool:
    """Take one due message for this worker. The row count of the conditional UPDATE decides who won:
    PostgreSQL re-checks the condition on the row another transaction just changed, SQLite serialises
    writers. Commits."""
    result = session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.status.in_(("pending", "sending")),
               Notification.next_attempt_at <= now, Notification.attempts < max_attempts)
        .values(status="sending", attempts=Notification.attempts + 1, next_attempt_at=now + CLAIM_FOR)
        .execution_options(synchronize_session=False))
    session.commit()
    return result.rowcount == 1


def _give_up(session: Session, notification_id: str, seen_status: str, now: datetime, max_attempts: int) -> int:
    """A due message with no attempts left: its claim lapsed every time (the sending worker died), or it
    waits after ISSUER_MAIL_MAX_ATTEMPTS was lowered. It is failed, for staff to see. Commits."""
    values: dict[str, Any] = {"status": "failed"}
    if seen_status == "sending":
        values["last_error"] = "delivery was interrupted (the sending worker stopped) on every attempt"
    result = session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.status == seen_status,
               Notification.next_attempt_at <= now, Notification.attempts >= max_attempts)
        .values(**values).execution_options(synchronize_session=False))
    session.commit()
    if result.rowcount == 1:
        logger.warning("notification %s failed for good: no attempts left", notification_id)
    return result.rowcount


def _due(session: Session, now: datetime, count: int, skip: set[str]) -> list[tuple[str, str, int]]:
    """(id, status, attempts) of messages due now: pending ones, and claims that lapsed."""
    rows = session.execute(
        select(Notification.id, Notification.status, Notification.attempts)
        .where(Notification.status.in_(("pending", "sending")), Notification.next_attempt_at <= now)
        .order_by(Notification.next_attempt_at, Notification.created_at)
        .limit(count + len(skip))).all()
    session.commit()
    return [tuple(row) for row in rows if row[0] not in skip][:count]


def deliver_pending(app: Flask, *, limit: int | None = 100, now: datetime | None = None) -> Delivery:
    """Send every due message (at most ``limit``; None: all), each claimed first so that no other worker
    sends it too. Each is marked ``sent``, or rescheduled with backoff, or ``failed`` after its last attempt.
    ``now`` fixes the clock for the due check and the schedule (tests); it defaults to the time of each round."""
    report = Delivery()
    max_attempts = max(1, int(setting(app, "MAIL_MAX_ATTEMPTS")))
    with app.app_context():
        session = app.extensions["issuer.sessionmaker"]()
        try:
            sending = transport(app)
        except MailConfigError as exc:
            sending = _Broken(exc)
        try:
            seen: set[str] = set()
            while limit is None or report.attempted < limit:
                clock = now or utcnow()
                want = BATCH if limit is None else min(BATCH, limit - report.attempted)
                due = _due(session, clock, want, seen)
                if not due:
                    break
                seen.update(notification_id for notification_id, _, _ in due)
                for notification_id, status, attempts in due:
                    if attempts >= max_attempts:
                        report.failed += _give_up(session, notification_id, status, clock, max_attempts)
                    elif claim(session, notification_id, clock, max_attempts):
                        outcome, unreachable = _deliver_one(app, session, sending, notification_id, clock,
                                                            max_attempts)
                        setattr(report, outcome, getattr(report, outcome) + 1)
                        if unreachable:
                            # The server is down or the settings are wrong: the others wait for the next
                            # round rather than each spending a timeout on it now.
                            return report
        finally:
            sending.close()
            session.close()
    return report


class _Broken:
    """The transport when the mail settings are unusable: every message fails with the reason (retried)."""

    def __init__(self, error: MailConfigError):
        self.error = error

    def send(self, message: EmailMessage, note: Notification) -> None:
        raise self.error

    def close(self) -> None:
        pass


def _unreachable(exc: BaseException) -> bool:
    """A failure of the connection or the settings, not of this one message (smtplib's errors are OSErrors)."""
    per_message = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPNotSupportedError)
    return isinstance(exc, (OSError, MailConfigError)) and not isinstance(exc, per_message)


def _deliver_one(app: Flask, session: Session, sending, notification_id: str, clock: datetime,
                 max_attempts: int) -> tuple[str, bool]:
    """Send one claimed message and record the outcome: ("sent" | "retrying" | "failed", unreachable)."""
    note = session.execute(select(Notification).where(Notification.id == notification_id)
                           .execution_options(populate_existing=True)).scalar_one()
    session.commit()  # no transaction stays open while the mail server talks
    try:
        if not note.body_text:
            _fill(session, note, app.config.get("ISSUER_NAME") or "")
        sending.send(message_for(app, note), note)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried, never raised
        note.last_error = describe(exc, note.to_address)
        give_up = note.attempts >= max_attempts or _permanent(exc)
        note.status = "failed" if give_up else "pending"
        note.next_attempt_at = clock + backoff(note.attempts)
        session.commit()
        if give_up:
            logger.warning("notification %s failed for good after %d attempt(s): %s", note.id, note.attempts,
                           note.last_error)
            return "failed", _unreachable(exc)
        logger.warning("notification %s: attempt %d of %d failed, next at %s: %s", note.id, note.attempts,
                       max_attempts, note.next_attempt_at.isoformat(timespec="seconds"), note.last_error)
        return "retrying", _unreachable(exc)
    note.status = "sent"
    note.sent_at = utcnow()
    note.last_error = None
    session.commit()
    logger.info("notification %s sent (attempt %d)", note.id, note.attempts)
    return "sent", False


# --- staff: listing and retrying --------------------------------------------------------------------------

def list_notifications(session: Session, *, status: str | None = None, credential_id: str | None = None,
                       limit: int = 100) -> list[Notification]:
    if status is not None and status not in STATUSES:
        raise MailError(f"status must be one of {', '.join(STATUSES)}")
    query = select(Notification).order_by(Notification.created_at.desc(), Notification.id).limit(limit)
    if status is not None:
        query = query.where(Notification.status == status)
    if credential_id is not None:
        query = query.where(Notification.credential_id == credential_id)
    return list(session.scalars(query))


def public_view(note: Notification, base_url: str) -> dict:
    """What staff see of a message: everything but the address, which is masked."""

    def stamp(value: datetime | None) -> str | None:
        return _aware(value).isoformat(timespec="seconds") if value is not None else None

    return {
        "id": note.id, "kind": note.kind, "credential_id": note.credential_id,
        "credential_url": f"{base_url}/credentials/{note.credential_id}", "to": mask(note.to_address),
        "subject": note.subject, "status": note.status, "attempts": note.attempts, "last_error": note.last_error,
        "next_attempt_at": stamp(note.next_attempt_at) if note.status in ("pending", "sending") else None,
        "created_at": stamp(note.created_at), "sent_at": stamp(note.sent_at),
    }


def retry(session: Session, notification_id: str, *, actor: str, now: datetime | None = None) -> Notification:
    """Put a pending or failed message back in the queue, due now with a fresh count of attempts; audited.
    A message being sent right now, or already sent, is refused (409). Commits."""
    now = now or utcnow()
    note = session.get(Notification, notification_id)
    if note is None:
        raise MailError(f"no notification with id {notification_id}", 404)
    previous = {"status": note.status, "attempts": note.attempts}
    result = session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.status.in_(("pending", "failed")))
        .values(status="pending", attempts=0, next_attempt_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        session.refresh(note)
        if note.status == "sent":
            raise MailError(f"notification {notification_id} was already sent", 409)
        raise MailError(f"notification {notification_id} is being sent right now", 409)
    session.add(AuditEntry(actor=actor, action="notification.retry", subject=notification_id,
                           detail={"kind": note.kind, "credential_id": note.credential_id, **previous}))
    if has_app_context():
        session.info[_WAKE] = current_app._get_current_object()
    session.commit()
    session.refresh(note)
    return note


# --- the delivery thread ----------------------------------------------------------------------------------

_WAKE = "issuer.mail.wake"
_WORKER = "issuer.mail.worker"
_LOCK = threading.Lock()


class Worker:
    """One daemon thread per process (and application) that delivers, woken by `wake` or every POLL_SECONDS."""

    def __init__(self, app: Flask):
        self.app = app
        self.pid = os.getpid()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="issuer-mail", daemon=True)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive() and not self.stopping.is_set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wakeup.clear()
            try:
                deliver_pending(self.app, limit=None)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive a database hiccup
                logger.error("mail delivery round failed: %s", scrub(exc))
            self.wakeup.wait(POLL_SECONDS)

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.thread.join(timeout)


def thread_enabled(app: Flask) -> bool:
    chosen = setting(app, "MAIL_THREAD")
    return bool(chosen) if chosen is not None else not app.testing


def ensure_worker(app: Flask, *, start: bool = True) -> Worker | None:
    """This process's delivery thread for ``app``, started when allowed and ``start`` is true."""
    worker = app.extensions.get(_WORKER)
    if worker is not None and worker.alive():
        return worker
    if not start or not thread_enabled(app):
        return None
    with _LOCK:
        worker = app.extensions.get(_WORKER)
        if worker is None or not worker.alive():
            worker = Worker(app)
            app.extensions[_WORKER] = worker
            worker.thread.start()
    return worker


def wake(app: Flask) -> None:
    """Ask the delivery thread to look now. Starts it only while serving a request: a command-line
    process ends right after, and would cut a delivery short."""
    worker = ensure_worker(app, start=has_request_context())
    if worker is not None:
        worker.wakeup.set()


def stop_worker(app: Flask, timeout: float = 15.0) -> None:
    worker = app.extensions.pop(_WORKER, None)
    if worker is not None:
        worker.stop(timeout)


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    app = session.info.pop(_WAKE, None)
    if app is not None:
        wake(app)


@event.listens_for(Session, "after_rollback")
def _nothing_queued(session: Session) -> None:
    session.info.pop(_WAKE, None)
