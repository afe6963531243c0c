"""The staff console's core (issue #8): accounts and roles, passwords (argon2) and TOTP codes (pyotp),
changing them and password reset links (signed, no table), the sign-in throttle, and cohort jobs run by a
background thread per process (cancellable between chunks).

No Flask request in here: the console's views (`web/console/`) and the `issuer staff` / `issuer console`
commands call these functions, as the JSON API calls `issuing` and `revocation`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import Flask
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from . import issuing
from .credentials import normalise_email
from .models import (
    Achievement,
    AuditEntry,
    AwardApplication,
    ConsoleJob,
    ConsoleJobRow,
    StaffAccount,
    StaffSignInFailure,
    utcnow,
)

log = logging.getLogger(__name__)

# --- roles and what each may do -----------------------------------------------------------------------

ROLES = ("registrar", "catalogue_editor", "auditor", "administrator")

# permission → the roles that hold it. Every console view names one permission; the table is the policy.
PERMISSIONS: dict[str, frozenset[str]] = {
    "console.view": frozenset(ROLES),
    "catalogue.view": frozenset(ROLES),
    "catalogue.edit": frozenset({"catalogue_editor", "administrator"}),
    "learners.view": frozenset({"registrar", "auditor", "administrator"}),
    "credential.issue": frozenset({"registrar", "administrator"}),
    "cohort.cancel": frozenset({"registrar", "administrator"}),
    "credential.revoke": frozenset({"registrar", "administrator"}),
    "credential.resend": frozenset({"registrar", "administrator"}),
    "applications.view": frozenset({"registrar", "auditor", "administrator"}),
    "award.check": frozenset({"registrar", "administrator"}),
    "audit.view": frozenset({"registrar", "auditor", "administrator"}),
    "accounts.manage": frozenset({"administrator"}),
    "keys.view": frozenset({"auditor", "administrator"}),
    "keys.rotate": frozenset({"administrator"}),
    "tokens.manage": frozenset({"administrator"}),
}


class StaffError(ValueError):
    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def parse_roles(value: str | Iterable[str]) -> list[str]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    items = [i.strip().replace("-", "_") for i in items if i.strip()]
    unknown = sorted(set(items) - set(ROLES))
    if unknown:
        raise StaffError(f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}", field="role")
    if not items:
        raise StaffError("an account needs at least one role", field="role")
    return sorted(set(items), key=ROLES.index)


def roles_of(account: StaffAccount) -> frozenset[str]:
    return frozenset(account.roles.split())


def may(roles: Iterable[str], permission: str) -> bool:
    return bool(PERMISSIONS[permission] & frozenset(roles))


def actor_of(account: StaffAccount) -> str:
    return f"staff:{account.email}"


# --- passwords and TOTP -------------------------------------------------------------------------------

_hasher = PasswordHasher()  # argon2id with the library's current parameters
MIN_PASSWORD = 12
# A hash to verify against when the account does not exist, so that time does not tell which emails do.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise StaffError(f"a password needs at least {MIN_PASSWORD} characters", field="password")
    return _hasher.hash(password)


def check_password(account: StaffAccount | None, password: str) -> bool:
    stored = account.password_hash if account is not None and account.password_hash else None
    try:
        ok = _hasher.verify(stored or _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if stored is None:
        return False
    if _hasher.check_needs_rehash(stored):
        account.password_hash = _hasher.hash(password)
    return ok


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(account: StaffAccount, issuer_name: str) -> str:
    return pyotp.TOTP(account.totp_secret).provisioning_uri(name=account.email, issuer_name=issuer_name)


def check_totp(account: StaffAccount, code: str, now: datetime | None = None) -> bool:
    """A current code (one step of clock drift either way), good once: its time step is remembered."""
    if not account.totp_secret:
        return False
    code = (code or "").replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return False
    totp = pyotp.TOTP(account.totp_secret)
    moment = now or utcnow()
    step = int(moment.timestamp()) // totp.interval
    for candidate in (step - 1, step, step + 1):
        if secrets.compare_digest(totp.generate_otp(candidate), code):
            if account.totp_last_step is not None and candidate <= account.totp_last_step:
                return False  # replayed
            account.totp_last_step = candidate
            return True
    return False


def needs_totp(account: StaffAccount) -> bool:
    return bool(account.totp_secret) or "administrator" in roles_of(account)


MAX_PASSWORD = 1024  # argon2 takes any length; this only bounds the work one request can ask for


def check_new_password(account: StaffAccount, password: str, again: str) -> None:
    """The rules for a password a person chooses: typed the same twice, long enough, not the email."""
    password = password or ""
    if password != (again or ""):
        raise StaffError("the two new passwords are not the same", field="again")
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"a password needs at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise StaffError(f"a password may have at most {MAX_PASSWORD} characters", field="password")
    lowered = password.lower()
    local_part = account.email.split("@", 1)[0]
    if account.email in lowered or (len(local_part) >= 4 and local_part in lowered):
        raise StaffError("the password must not contain your email address or its name part", field="password")


def _set_password(account: StaffAccount, password: str) -> None:
    account.password_hash = _hasher.hash(password)
    account.session_version += 1  # every other open session of this account ends


def reauthenticate(session: Session, account: StaffAccount, password: str, address: str | None, *,
                   action: str, limits: Throttle | None = None) -> None:
    """The signed-in person types their current password again before changing how they sign in. A wrong
    one counts as a failed sign-in (the same throttle), so a borrowed session cannot be used to guess it;
    the refusal is audited as `<action>.refused` (committed)."""
    if not account.password_hash:
        raise StaffError("this account signs in with single sign-on; its password is the school's", 409)
    limits = limits or Throttle()  # (defined below, with the sign-in it belongs to)
    if throttled(session, account.email, address, limits):
        raise StaffError("too many wrong passwords: wait 15 minutes and try again", 429, field="current")
    if not check_password(account, password):
        record_failure(session, account.email, address, limits=limits)
        session.add(AuditEntry(actor=actor_of(account), action=f"{action}.refused", subject=account.email,
                               detail={"why": "wrong current password"}))
        session.commit()
        raise StaffError("the current password is not right", 401, field="current")


def change_password(session: Session, account: StaffAccount, current: str, new: str, again: str,
                    address: str | None, limits: Throttle | None = None) -> None:
    """A signed-in local account changes its own password (current password, new one twice). Commits."""
    reauthenticate(session, account, current, address, action="staff.password_change", limits=limits)
    check_new_password(account, new, again)
    if check_password(account, new):
        raise StaffError("the new password is the current one", field="password")
    _set_password(account, new)
    session.add(AuditEntry(actor=actor_of(account), action="staff.password_change", subject=account.email,
                           detail=None))
    session.commit()


def _code_step(secret: str, code: str, now: datetime | None = None) -> int | None:
    """The time step whose code this is (one step of clock drift either way), or None."""
    code = (code or "").replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    step = int((now or utcnow()).timestamp()) // totp.interval
    for candidate in (step - 1, step, step + 1):
        if secrets.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def enrol_totp(session: Session, account: StaffAccount, secret: str, code: str, *, actor: str,
               now: datetime | None = None) -> None:
    """Save a new TOTP secret (first one or a replacement) once a current code from it proves the app has
    it. That code is spent: it cannot also sign in. Not committed."""
    step = _code_step(secret, code, now)
    if step is None:
        raise StaffError("the code does not match: check the app's clock and type the code shown now", field="code")
    replaced = bool(account.totp_secret)
    account.totp_secret, account.totp_last_step = secret, step
    account.session_version += 1  # sessions opened with the old authenticator end
    session.add(AuditEntry(actor=actor, action="staff.totp_setup", subject=account.email,
                           detail={"replaced": replaced}))


# --- accounts -----------------------------------------------------------------------------------------

def find_account(session: Session, email: str) -> StaffAccount | None:
    return session.scalars(select(StaffAccount).where(StaffAccount.email == normalise_email(email))).first()


def create_account(session: Session, *, email: str, roles: str | Iterable[str], name: str | None = None,
                   password: str | None = None, totp: bool | None = None, source: str = "local",
                   actor: str) -> StaffAccount:
    """A new account. Local accounts get a password; administrators (and anyone asking) a TOTP secret.
    An account without a password can only sign in with single sign-on. Not committed."""
    email = normalise_email((email or "").strip())
    if not issuing.EMAIL_RE.match(email):
        raise StaffError("an email address is required", field="email")
    if find_account(session, email) is not None:
        raise StaffError(f"an account for {email} already exists", 409, field="email")
    chosen = parse_roles(roles)
    account = StaffAccount(email=email, name=(name or "").strip() or None, roles=" ".join(chosen),
                           password_hash=hash_password(password) if password else None, active=True,
                           session_version=1, source=source, created_at=utcnow())
    if password and (totp or "administrator" in chosen):
        account.totp_secret = new_totp_secret()
    session.add(account)
    session.flush()
    session.add(AuditEntry(actor=actor, action="staff.create", subject=email,
                           detail={"roles": chosen, "source": source, "password": bool(password),
                                   "totp": bool(account.totp_secret)}))
    return account


def set_roles(session: Session, account: StaffAccount, roles: str | Iterable[str], *, actor: str) -> None:
    chosen = parse_roles(roles)
    account.roles = " ".join(chosen)
    account.session_version += 1  # signed-in sessions pick up the change by signing in again
    session.add(AuditEntry(actor=actor, action="staff.roles", subject=account.email, detail={"roles": chosen}))


def deactivate(session: Session, account: StaffAccount, *, actor: str) -> None:
    account.active = False
    account.session_version += 1
    session.add(AuditEntry(actor=actor, action="staff.deactivate", subject=account.email, detail=None))


# --- password reset links -----------------------------------------------------------------------------
# No table: the link carries a signed, timed token naming the account and a digest of its password hash
# as it was when the link was made. Setting any password changes the hash, so the link (and any other
# link made before) stops working once used, or once the password changes another way.

RESET_HOURS = 24
_RESET_SALT = "issuer.staff.password-reset"


def _hash_digest(account: StaffAccount) -> str:
    return hashlib.sha256((account.password_hash or "").encode()).hexdigest()[:32]


def _reset_serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=_RESET_SALT)


def make_reset_token(session: Session, account: StaffAccount, secret_key: str, *, actor: str) -> str:
    """A reset token for a local account, good for RESET_HOURS and for one password. Not committed."""
    if not account.password_hash:
        raise StaffError(f"{account.email} signs in with single sign-on only; it has no password to reset", 409)
    if not account.active:
        raise StaffError(f"the account {account.email} is deactivated", 409)
    token = _reset_serializer(secret_key).dumps({"id": account.id, "h": _hash_digest(account)})
    session.add(AuditEntry(actor=actor, action="staff.reset_link", subject=account.email,
                           detail={"expires_in_hours": RESET_HOURS}))
    return token


def account_for_reset(session: Session, token: str, secret_key: str,
                      max_age: timedelta = timedelta(hours=RESET_HOURS)) -> StaffAccount:
    """The account a reset token is for, or StaffError (410 when it is expired or spent)."""
    serializer = _reset_serializer(secret_key)
    try:
        data = serializer.loads(token, max_age=int(max_age.total_seconds()))
    except SignatureExpired:
        raise StaffError("this reset link has expired: ask an administrator for a new one", 410) from None
    except BadSignature:
        raise StaffError("this is not a valid reset link", 404) from None
    account = session.get(StaffAccount, data.get("id")) if isinstance(data, dict) else None
    if account is None or not account.active or not account.password_hash:
        raise StaffError("this reset link is for an account that can no longer use it", 410)
    if not secrets.compare_digest(_hash_digest(account), str(data.get("h"))):
        raise StaffError("this reset link was already used, or the password changed since it was made: "
                         "ask an administrator for a new one", 410)
    return account


def reset_password(session: Session, token: str, secret_key: str, new: str, again: str, *,
                   totp_secret: str | None = None, code: str | None = None) -> StaffAccount:
    """Set a new password through a reset link. An account that needs TOTP keeps its secret; one that
    needs TOTP and has none (a local account made administrator later) must enrol one here, with
    `totp_secret` and a current `code` from it. Commits."""
    account = account_for_reset(session, token, secret_key)
    check_new_password(account, new, again)
    actor = f"reset-link:{account.email}"
    if needs_totp(account) and not account.totp_secret:
        if not totp_secret:
            raise StaffError("an administrator needs an authenticator app: set it up on this page", field="code")
        enrol_totp(session, account, totp_secret, code or "", actor=actor)
    _set_password(account, new)
    clear_failures(session, account.email)
    session.add(AuditEntry(actor=actor, action="staff.password_reset", subject=account.email,
                           detail={"totp": bool(account.totp_secret)}))
    session.commit()
    return account


# --- single sign-on: claims to an account -------------------------------------------------------------

def parse_role_map(text: str | None) -> dict[str, list[str]]:
    """"registrars=registrar, cat-editors=catalogue_editor" → {group: [roles]}."""
    mapping: dict[str, list[str]] = {}
    for item in (text or "").replace(";", ",").split(","):
        if "=" not in item:
            continue
        group, role = (part.strip() for part in item.split("=", 1))
        if group and role:
            mapping.setdefault(group, []).extend(parse_roles(role))
    return mapping


def roles_from_claims(claims: dict, claim_name: str, role_map: dict[str, list[str]]) -> list[str]:
    value = claims.get(claim_name)
    groups = [value] if isinstance(value, str) else [g for g in (value or []) if isinstance(g, str)]
    found = {role for group in groups for role in role_map.get(group, [])}
    return [r for r in ROLES if r in found]


def account_for_claims(session: Session, claims: dict, *, claim_name: str,
                       role_map: dict[str, list[str]]) -> StaffAccount:
    """The staff account an identity provider's user is: the account with that email, or a new one when
    the user's groups map to console roles (their roles follow the groups at every sign-in)."""
    email = claims.get("email")
    if not isinstance(email, str) or not issuing.EMAIL_RE.match(email.strip()):
        raise StaffError("the identity provider gave no email address", 403)
    if claims.get("email_verified") is False:
        raise StaffError("the identity provider has not verified this email address", 403)
    mapped = roles_from_claims(claims, claim_name, role_map)
    account = find_account(session, email)
    if account is None:
        if not mapped:
            raise StaffError(f"{email} has no staff account and no group that gives a console role", 403)
        account = create_account(session, email=email, roles=mapped, name=claims.get("name"), source="oidc",
                                 actor="oidc")
    elif mapped and account.source == "oidc" and set(mapped) != set(roles_of(account)):
        set_roles(session, account, mapped, actor="oidc")
    if not account.active:
        raise StaffError(f"the staff account {account.email} is deactivated", 403)
    return account


# --- the sign-in throttle -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Throttle:
    per_account: int = 5  # failures per account within the window
    per_address: int = 20  # failures per client address within the window
    window: timedelta = timedelta(minutes=15)


def _keys(email: str, address: str | None) -> tuple[str, str]:
    return f"email:{normalise_email((email or '').strip())}", f"ip:{address or '-'}"


def throttled(session: Session, email: str, address: str | None, limits: Throttle = Throttle(),
              now: datetime | None = None) -> bool:
    """True when this account or this address failed too often lately: refuse without checking."""
    since = (now or utcnow()) - limits.window
    by_email, by_ip = _keys(email, address)
    counts = dict(session.execute(select(StaffSignInFailure.key, func.count()).where(
        StaffSignInFailure.key.in_((by_email, by_ip)), StaffSignInFailure.at >= since)
        .group_by(StaffSignInFailure.key)).all())
    return counts.get(by_email, 0) >= limits.per_account or counts.get(by_ip, 0) >= limits.per_address


def record_failure(session: Session, email: str, address: str | None, now: datetime | None = None,
                   limits: Throttle = Throttle()) -> None:
    now = now or utcnow()
    session.execute(delete(StaffSignInFailure).where(StaffSignInFailure.at < now - 2 * limits.window))
    for key in _keys(email, address):
        session.add(StaffSignInFailure(key=key, at=now))


def clear_failures(session: Session, email: str) -> None:
    session.execute(delete(StaffSignInFailure).where(StaffSignInFailure.key == _keys(email, None)[0]))


def sign_in_local(session: Session, email: str, password: str, code: str | None, address: str | None,
                  limits: Throttle = Throttle()) -> StaffAccount:
    """Check a local sign-in; raises StaffError (429 when throttled) with one message for every failure,
    so the answer does not tell which part was wrong. Commits the failure or the success."""
    if throttled(session, email, address, limits):
        session.add(AuditEntry(actor=f"anonymous:{address}", action="staff.sign_in.throttled",
                               subject=normalise_email((email or '').strip()), detail=None))
        session.commit()
        raise StaffError("too many failed sign-ins: wait 15 minutes and try again", 429)
    account = find_account(session, email) if email else None
    ok = check_password(account, password)
    if ok and account is not None:
        ok = account.active and (not needs_totp(account) or check_totp(account, code or ""))
    if not ok or account is None:
        record_failure(session, email, address, limits=limits)
        session.add(AuditEntry(actor=f"anonymous:{address}", action="staff.sign_in.failed",
                               subject=normalise_email((email or '').strip()), detail={"method": "password"}))
        session.commit()
        raise StaffError("the email, password or code is not right", 401)
    clear_failures(session, email)
    account.last_sign_in_at = utcnow()
    session.add(AuditEntry(actor=actor_of(account), action="staff.sign_in", subject=account.email,
                           detail={"method": "password+totp" if needs_totp(account) else "password"}))
    session.commit()
    return account


# --- award applications (stored by the apply page) -----------------------------------------------------

def record_application(session: Session, *, email: str, action: str, target: str | None,
                       report: dict | None, award_id: str | None, error: str | None = None) -> None:
    session.add(AwardApplication(email=_storable(normalise_email(email or ""), 320), action=action,
                                 target=_storable(target, 300) or None,
                                 eligible=bool(report and report.get("eligible")), award_id=award_id,
                                 report=report, error=_storable(error, None), created_at=utcnow()))
    session.commit()


def _storable(text: str | None, limit: int | None) -> str | None:
    """What a learner typed, as the column can keep it: PostgreSQL refuses NUL characters and values
    longer than the column (SQLite keeps both), and the record of an application must never fail."""
    if text is None:
        return None
    text = text.replace("\x00", "")
    return text if limit is None else text[:limit]


# --- cohort jobs --------------------------------------------------------------------------------------

MAX_ROWS = 20000
CHUNK = 25  # rows issued between two saves of the results: the progress moves in steps this size
LEASE = timedelta(seconds=60)  # a running job whose heartbeat is older is taken over by another worker


def read_csv(data: bytes) -> list[tuple[int, dict]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StaffError("the file is not UTF-8 text; save the spreadsheet as CSV UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        issuing.check_csv_header(reader.fieldnames)
    except issuing.IssueError as exc:
        raise StaffError(str(exc)) from None
    except csv.Error as exc:
        raise StaffError(f"the file is not a readable CSV file: {exc}") from None
    try:
        rows = [(i + 2, {k: v for k, v in row.items()}) for i, row in enumerate(reader)]
    except csv.Error as exc:  # e.g. a cell over the csv module's field size limit
        raise StaffError(f"the file is not a readable CSV file: {exc}") from None
    if not rows:
        raise StaffError("the file has a header but no rows")
    if len(rows) > MAX_ROWS:
        raise StaffError(f"the file has {len(rows)} rows; at most {MAX_ROWS} at once")
    return rows


def row_problem(session_codes: dict[str, bool], raw: dict) -> str | None:
    """What would stop a row being issued, found before anything is issued."""
    try:
        req = issuing.csv_row_request(raw)
    except issuing.IssueError as exc:
        return str(exc)
    if req.achievement not in session_codes:
        return f"unknown achievement {req.achievement!r}"
    if session_codes[req.achievement]:
        return f"achievement {req.achievement!r} is retired and no longer issued"
    return None


def create_job(session: Session, data: bytes, filename: str | None, *, actor: str) -> ConsoleJob:
    """Store an uploaded cohort for preview: every row with the problem found in it. Commits."""
    rows = read_csv(data)
    codes = dict(session.execute(select(Achievement.code, Achievement.retired)).all())
    job = ConsoleJob(id=secrets.token_urlsafe(12), kind="cohort", status="preview", filename=filename,
                     created_by=actor, total=len(rows), created_at=utcnow())
    session.add(job)
    session.flush()
    for line, raw in rows:
        clean = {(k or "").strip(): v for k, v in raw.items()} if None not in raw else raw
        problem = row_problem(codes, raw) if None not in raw else "the row has more cells than the header"
        session.add(ConsoleJobRow(job_id=job.id, line=line, data=clean if None not in raw else {}, problem=problem,
                                  status="pending"))
    session.commit()
    return job


def start_job(session: Session, job: ConsoleJob, *, actor: str) -> None:
    if job.status != "preview":
        raise StaffError("this cohort was already started", 409)
    job.status = "queued"
    session.add(AuditEntry(actor=actor, action="cohort.start", subject=job.id,
                           detail={"rows": job.total, "file": job.filename}))
    session.commit()


CANCELLED = "not issued (cancelled)"  # the result of a row a cancelled cohort never reached


def cancel_job(session: Session, job: ConsoleJob, *, actor: str) -> int:
    """Stop a cohort: nothing more is issued after the chunk in hand (rows already issued stay issued
    and valid). A job no worker holds has its rows marked at once; a running one is stopped by its
    worker at the next chunk (`run_job`). Returns the rows marked now. Commits."""
    if job.status not in ("preview", "queued", "running"):
        raise StaffError(f"this cohort is {job.status}; only one waiting or issuing can be cancelled", 409)
    was = job.status
    # Conditional, so a worker finishing the job at this moment is not overruled.
    changed = session.execute(update(ConsoleJob).where(ConsoleJob.id == job.id, ConsoleJob.status == was)
                              .values(status="cancelled")).rowcount
    if changed != 1:
        session.rollback()
        raise StaffError("this cohort changed meanwhile (it may have finished): look again", 409)
    session.add(AuditEntry(actor=actor, action="cohort.cancel", subject=job.id,
                           detail={"was": was, "processed": job.processed, "issued": job.issued}))
    marked = 0 if was == "running" else _mark_cancelled(session, job.id)
    session.commit()
    session.refresh(job)
    return marked


def _mark_cancelled(session: Session, job_id: str) -> int:
    marked = session.execute(update(ConsoleJobRow).where(ConsoleJobRow.job_id == job_id,
                                                         ConsoleJobRow.status == "pending")
                             .values(status="cancelled", detail=CANCELLED)).rowcount
    session.execute(update(ConsoleJob).where(ConsoleJob.id == job_id).values(finished_at=utcnow()))
    return marked


def _claim(make_session, worker: str) -> str | None:
    """Take one queued job, or a running one whose worker stopped sending heartbeats (a restart)."""
    with make_session() as session:
        now = utcnow()
        candidates = session.scalars(select(ConsoleJob.id).where(or_(
            ConsoleJob.status == "queued",
            (ConsoleJob.status == "running") & (ConsoleJob.heartbeat_at < now - LEASE)))
            .order_by(ConsoleJob.created_at)).all()
        for job_id in candidates:
            taken = session.execute(update(ConsoleJob).where(ConsoleJob.id == job_id, or_(
                ConsoleJob.status == "queued",
                (ConsoleJob.status == "running") & (ConsoleJob.heartbeat_at < now - LEASE)))
                .values(status="running", heartbeat_at=now, started_at=func.coalesce(ConsoleJob.started_at, now)))
            session.commit()
            if taken.rowcount == 1:
                return job_id
    return None


def run_job(make_session, ctx, job_id: str, *, stop: threading.Event | None = None) -> None:
    """Issue a job's pending rows in chunks with issuing.issue_rows (each row its own transaction), saving
    each chunk's results and the heartbeat together. Re-running is safe: issue_rows finds what was issued."""
    while not (stop and stop.is_set()):
        with make_session() as session:
            job = session.get(ConsoleJob, job_id)
            if job.status == "cancelled":  # stopped from the console: the rows not reached issue nothing
                _mark_cancelled(session, job_id)
                session.commit()
                return
            pending = session.scalars(select(ConsoleJobRow).where(
                ConsoleJobRow.job_id == job_id, ConsoleJobRow.status == "pending")
                .order_by(ConsoleJobRow.line).limit(CHUNK)).all()
            if not pending:
                # Conditional: a cancel that came in meanwhile stays the job's last word.
                finished = session.execute(update(ConsoleJob).where(
                    ConsoleJob.id == job_id, ConsoleJob.status == "running")
                    .values(status="done", finished_at=utcnow())).rowcount
                if finished:
                    counts = {"issued": job.issued, "already issued": job.already, "error": job.errors}
                    session.add(AuditEntry(actor=job.created_by, action="cohort.done", subject=job.id,
                                           detail=counts))
                session.commit()
                return
            actor = job.created_by
            work = [(r.line, r.data) for r in pending if not r.problem]
            by_line = {r.line: r for r in pending}
        results = issuing.issue_rows(make_session, ctx, work, actor=actor) if work else []
        with make_session() as session:
            job = session.get(ConsoleJob, job_id)
            outcome = {r.line: r for r in results}
            for line, row in by_line.items():
                stored = session.get(ConsoleJobRow, row.id)
                result = outcome.get(line)
                if result is None:
                    stored.status, stored.detail = "error", row.problem
                else:
                    stored.status, stored.detail, stored.credential_url = (result.status, result.detail,
                                                                           result.credential_url)
                job.processed += 1
                if stored.status == "issued":
                    job.issued += 1
                elif stored.status == "already issued":
                    job.already += 1
                else:
                    job.errors += 1
            job.heartbeat_at = utcnow()
            session.commit()


def progress(job: ConsoleJob) -> dict:
    return {"id": job.id, "status": job.status, "total": job.total, "processed": job.processed,
            "issued": job.issued, "already_issued": job.already, "errors": job.errors,
            "done": job.status in ("done", "cancelled"), "cancelled": job.status == "cancelled"}


def results_csv(session: Session, job_id: str) -> str:
    job = session.get(ConsoleJob, job_id)
    stopped = job is not None and job.status == "cancelled"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "email", "achievement", "status", "detail", "credential_url"])
    for row in session.scalars(select(ConsoleJobRow).where(ConsoleJobRow.job_id == job_id)
                               .order_by(ConsoleJobRow.line)):
        cells = {issuing.CSV_ALIASES.get(k.strip().lower()): v for k, v in (row.data or {}).items() if k}
        status, detail = row.status, row.detail or row.problem or ""
        if status == "cancelled" or (stopped and status == "pending"):  # pending: its worker is gone
            status, detail = CANCELLED, "the cohort was cancelled before this row was issued"
        writer.writerow([row.line, cells.get("email") or "", cells.get("achievement") or "", status, detail,
                         row.credential_url or ""])
    return out.getvalue()


# --- the job worker: one thread per process, started on demand ----------------------------------------

_lock = threading.Lock()


class JobWorker:
    """Runs every claimable job, then ends; `ensure_job_worker` starts another when there is work again.
    A job survives the browser leaving (it runs here, not in the request) and a restart (its heartbeat
    goes stale and the next worker, or `issuer console resume`, takes it over)."""

    def __init__(self, app: Flask):
        self.app = app
        self.name = f"console-jobs-{secrets.token_hex(4)}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        from .identity import get_context

        try:
            with self.app.app_context():
                make_session = self.app.extensions["issuer.sessionmaker"]
                ctx = get_context()
                while not self.stop.is_set():
                    job_id = _claim(make_session, self.name)
                    if job_id is None:
                        return
                    run_job(make_session, ctx, job_id, stop=self.stop)
        except Exception:  # the job stays running with a stale heartbeat: the next worker resumes it
            log.exception("console job worker stopped")


def ensure_job_worker(app: Flask) -> JobWorker:
    with _lock:
        worker = app.extensions.get("issuer.console_worker")
        if worker is None or not worker.thread.is_alive():
            worker = JobWorker(app)
            app.extensions["issuer.console_worker"] = worker
            worker.thread.start()
        return worker


def resume_jobs(app: Flask) -> int:
    """Run every queued job and every running one whose worker stopped, here, to the end (for
    `issuer console resume`); returns how many were run. Jobs of a live worker are left to it."""
    from .identity import get_context

    make_session = app.extensions["issuer.sessionmaker"]
    count = 0
    while (job_id := _claim(make_session, "cli")) is not None:
        run_job(make_session, get_context(), job_id)
        count += 1
    return count


def pending_jobs(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ConsoleJob)
                          .where(ConsoleJob.status.in_(("queued", "running")))) or 0
