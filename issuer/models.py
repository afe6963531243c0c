"""The registry's tables. Alembic migrations in `issuer/migrations/` create them; never `create_all`."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Issuer(Base):
    """The school as an issuer: its did:web identity and the OB Profile shown in every badge."""

    __tablename__ = "issuers"
    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # the did:web
    name: Mapped[str] = mapped_column(String(300))
    url: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(300))
    image_url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PublicKey(Base):
    """Public part of every signing key, current or retired: what did.json and jwks.json publish."""

    __tablename__ = "public_keys"
    kid: Mapped[str] = mapped_column(String(200), primary_key=True)
    issuer_id: Mapped[str] = mapped_column(ForeignKey("issuers.id"))
    algorithm: Mapped[str] = mapped_column(String(20))
    public_jwk: Mapped[dict] = mapped_column(JSON)
    public_multibase: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="current")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Achievement(Base):
    """A microcredential of the catalogue. `entry` is the validated catalogue entry as loaded."""

    __tablename__ = "achievements"
    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    entry: Mapped[dict] = mapped_column(JSON)
    image_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    image_svg: Mapped[str | None] = mapped_column(Text)
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Credential(Base):
    """An issued badge. `document` is the signed JSON exactly as served; it is never rebuilt or re-signed."""

    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("recipient_email", "achievement_code", "awarded_on", name="uq_credential_award"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # unguessable public id
    credential_url: Mapped[str] = mapped_column(String(500), unique=True)
    achievement_code: Mapped[str] = mapped_column(ForeignKey("achievements.code"))
    recipient_email: Mapped[str] = mapped_column(String(320), index=True)
    recipient_name: Mapped[str | None] = mapped_column(String(300))
    recipient_did: Mapped[str | None] = mapped_column(String(500))
    awarded_on: Mapped[date] = mapped_column(Date)
    document: Mapped[str] = mapped_column(Text)
    document_sha256: Mapped[str] = mapped_column(String(64))
    jwt: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    issued_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The QR codes of credential_url, drawn once when stored (qr.py); None only for rows from before them.
    qr_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    qr_svg: Mapped[str | None] = mapped_column(Text)
    # Revocation (issue #5): permanent once set; the public page shows the date and the category.
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revocation_reason: Mapped[str | None] = mapped_column(Text)
    revocation_category: Mapped[str | None] = mapped_column(String(40))
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class ApiToken(Base):
    """A bearer token. Only its sha256 is stored; the token itself is shown once, when created."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Append-only log of who did what. Rows are never updated or deleted (enforced below)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[dict | None] = mapped_column(JSON)
    # The hash chain (issue #9, audit.py fills these when the entry is stored; nobody sets them by hand):
    # seq numbers entries 1, 2, 3... in chain order; entry_hash covers this entry and prev_hash, the hash
    # of the entry before it, so an edited, inserted or deleted entry breaks every link after it.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The one row saying where the audit chain ends (its last seq and hash). Writers lock it, so
    entries from concurrent transactions form one line, and it shows when the newest entries are cut off."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_chain_head_one_row"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _audit_is_append_only(mapper, connection, target) -> None:
    raise PermissionError("the audit log is append-only")


class Award(Base):
    """A signed Certificate or Diploma (or programme award) built from a learner's counted badges."""

    __tablename__ = "awards"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # unguessable public id
    credential_url: Mapped[str] = mapped_column(String(500), unique=True)
    recipient_email: Mapped[str | None] = mapped_column(String(320), index=True)
    recipient_did: Mapped[str | None] = mapped_column(String(500), index=True)
    level: Mapped[str] = mapped_column(String(40))
    pathway: Mapped[str] = mapped_column(String(80))  # "Certificate", "Diploma" or "programme:<code>"
    title_en: Mapped[str] = mapped_column(String(300))
    achievement_id: Mapped[str] = mapped_column(String(500))
    credits: Mapped[float] = mapped_column()
    qf_level: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict] = mapped_column(JSON)
    document: Mapped[str] = mapped_column(Text)
    document_sha256: Mapped[str] = mapped_column(String(64))
    jwt: Mapped[str | None] = mapped_column(Text)
    issued_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    qr_png: Mapped[bytes | None] = mapped_column(LargeBinary)  # as on Credential
    qr_svg: Mapped[str | None] = mapped_column(Text)
    # Revocation (issue #5): permanent once set; the public page shows the date and the category.
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revocation_reason: Mapped[str | None] = mapped_column(Text)
    revocation_category: Mapped[str | None] = mapped_column(String(40))
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class AwardBadge(Base):
    """A badge counted by an award. The unique key is the rule "a badge counts toward at most one award
    of each pathway", held by the database even when two claims race."""

    __tablename__ = "award_badges"
    __table_args__ = (UniqueConstraint("badge_id", "pathway", name="uq_badge_pathway"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    award_id: Mapped[str] = mapped_column(ForeignKey("awards.id"), index=True)
    badge_id: Mapped[str] = mapped_column(String(500), index=True)  # the badge's credential id
    pathway: Mapped[str] = mapped_column(String(80))
    credits: Mapped[float] = mapped_column()
    sha256: Mapped[str] = mapped_column(String(64))


class UsedChallenge(Base):
    """Presentation challenges already used: the primary key makes each one single-use."""

    __tablename__ = "used_challenges"
    challenge: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class StatusList(Base):
    """A published Bitstring Status List. ``version`` grows with every revocation on the list (in the
    revoking transaction); the signed document is cached with the ``built_version`` it was built from,
    so it is rebuilt only when the list changed, and a revocation committed during a rebuild leaves
    ``version`` ahead of ``built_version`` and is picked up by the next request."""

    __tablename__ = "status_lists"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # random: the URL reveals no order
    purpose: Mapped[str] = mapped_column(String(20), default="revocation")
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    full: Mapped[bool] = mapped_column(Boolean, default=False)  # no new entries once mostly used
    version: Mapped[int] = mapped_column(Integer, default=0)
    built_version: Mapped[int | None] = mapped_column(Integer)
    document: Mapped[str | None] = mapped_column(Text)  # the signed list credential as served
    etag: Mapped[str | None] = mapped_column(String(80))
    built_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StatusEntry(Base):
    """One index of a status list, given to one badge or award. The unique key (list, index) is what
    makes an index never given twice, even when several processes issue at once."""

    __tablename__ = "status_entries"
    __table_args__ = (UniqueConstraint("list_id", "list_index", name="uq_status_list_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list_id: Mapped[str] = mapped_column(ForeignKey("status_lists.id"))
    list_index: Mapped[int] = mapped_column(Integer)
    credential_kind: Mapped[str] = mapped_column(String(10))  # "badge" or "award"
    credential_id: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """An email to a learner about a badge or award issued: the transactional outbox. The row is added in
    the issuing transaction, so a stored credential always has its message and a failed issuance none;
    delivery (`mail.py`) happens later, outside that transaction. ``next_attempt_at`` is when a pending
    message is due, or, while one is ``sending``, when its claim lapses and another worker may take it."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a uuid4
    kind: Mapped[str] = mapped_column(String(20))  # "badge_issued" or "award_issued"
    credential_id: Mapped[str] = mapped_column(String(64), index=True)  # public id of the badge or award
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- wallets (issue #6): holder-bound copies, offers and exchanges --------------------------------------


class WalletCopy(Base):
    """A badge or award re-signed for a wallet, bound to the holder's DID (`credentialSubject.id`). It keeps
    the original's `credentialStatus`, so revoking either revokes both; its own `id` is a urn:uuid."""

    __tablename__ = "wallet_copies"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # unguessable public id
    credential_id: Mapped[str] = mapped_column(String(100), unique=True)  # the copy's `id`: urn:uuid:...
    original_id: Mapped[str] = mapped_column(String(64), index=True)  # public id of the Credential or Award
    original_kind: Mapped[str] = mapped_column(String(10))  # "badge" or "award"
    holder_did: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(20))  # "ldp_vc" or "jwt_vc_json"
    document: Mapped[str] = mapped_column(Text)  # the signed JSON text, or the compact JWT
    channel: Mapped[str] = mapped_column(String(20))  # "oid4vci" or "vcapi"
    offer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WalletOffer(Base):
    """One offer of one badge or award to a wallet: an OID4VCI pre-authorized code (stored hashed, with its
    optional PIN and the access token it was exchanged for) or a VC API exchange (its challenge). Single
    use: every step moves `state` forward with a conditional update, so two requests cannot both win."""

    __tablename__ = "wallet_offers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # random; in the offer URI or exchange URL
    kind: Mapped[str] = mapped_column(String(10))  # "oid4vci" or "vcapi"
    original_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(20), default="offered")  # offered | token_issued | delivered | expired
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)  # sha256 of the pre-authorized code
    tx_code_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of the PIN, when one was asked
    tx_code_failures: Mapped[int] = mapped_column(Integer, default=0)
    access_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    format: Mapped[str | None] = mapped_column(String(20))  # OID4VCI: the one format offered, or None for both
    challenge: Mapped[str | None] = mapped_column(String(200))  # VC API exchanges: the DIDAuthentication challenge
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WalletNonce(Base):
    """An OID4VCI `c_nonce`: stored hashed, good once, until it expires."""

    __tablename__ = "wallet_nonces"
    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- the staff console (issue #8): accounts, sign-in throttling, cohort jobs, award applications ----------


class StaffAccount(Base):
    """A member of staff who may sign in to the console. ``roles`` is a space-separated set (staff.ROLES);
    a local account has an argon2 ``password_hash`` (and a TOTP secret, required for administrators); an
    account made for single sign-on has neither. ``session_version`` grows to end every open session."""

    __tablename__ = "staff_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    roles: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(Integer)  # a code is good once
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str] = mapped_column(String(20), default="local")  # "local", "oidc" or "cli"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StaffSignInFailure(Base):
    """One failed sign-in, by account email and by client address: the throttle counts recent rows."""

    __tablename__ = "staff_sign_in_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400), index=True)  # "email:<address>" or "ip:<address>"
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class ConsoleJob(Base):
    """A cohort uploaded in the console: ``preview`` until confirmed, then ``queued``, ``running`` (by the
    worker that holds a fresh ``heartbeat_at``) and ``done``. Each row's outcome is in ConsoleJobRow."""

    __tablename__ = "console_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="cohort")
    status: Mapped[str] = mapped_column(String(20), default="preview")
    filename: Mapped[str | None] = mapped_column(String(300))
    created_by: Mapped[str] = mapped_column(String(200))
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    issued: Mapped[int] = mapped_column(Integer, default=0)
    already: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleJobRow(Base):
    """One CSV row of a cohort: the cells as uploaded, the problem found in the preview, and the outcome
    (``pending``, then ``issued``, ``already issued`` or ``error``)."""

    __tablename__ = "console_job_rows"
    __table_args__ = (Index("ix_console_job_rows_job_status", "job_id", "status", "line"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("console_jobs.id"))
    line: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict] = mapped_column(JSON)
    problem: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    detail: Mapped[str | None] = mapped_column(Text)
    credential_url: Mapped[str | None] = mapped_column(String(500))


class AwardApplication(Base):
    """An application a learner made on the apply page (a check or a claim) and the decision report."""

    __tablename__ = "award_applications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    action: Mapped[str] = mapped_column(String(20))  # "evaluate" or "claim"
    target: Mapped[str | None] = mapped_column(String(300))
    eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    award_id: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# Registers the session hooks that chain every new AuditEntry (imported last: audit.py uses the classes above).
from . import audit as _audit  # noqa: E402,F401
