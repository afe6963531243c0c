"""API bearer tokens: shown once when created, stored as sha256, compared by hash lookup.

Scopes: `issue` (issue badges, offers, emails), `revoke`, `catalogue` (add achievements), `keys` (rotate the
signing keys) and `admin`, which means every scope and is the only one that may manage tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ApiToken, AuditEntry, utcnow

SCOPES = ("issue", "revoke", "catalogue", "keys", "admin")
PREFIX = "obi_"
# A busy token records its last use at most this often, so that reads do not each become a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Caller:
    """Who made an API call: the token's id and name, for the audit log."""

    token_id: int
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> list[str]:
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    unknown = sorted(set(items) - set(SCOPES))
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(unknown)}; known scopes: {', '.join(SCOPES)}")
    if not items:
        raise TokenError("a token needs at least one scope")
    return sorted(set(items), key=SCOPES.index)


def create_token(session: Session, name: str, scopes: str | list[str]) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the secret, which is never stored and cannot be shown again."""
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=_digest(secret), scopes=" ".join(parse_scopes(scopes)))
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, presented: str) -> Caller | None:
    """The caller behind a presented token, or None if it is unknown or revoked."""
    digest = _digest(presented)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    # The lookup is by digest; the constant-time compare guards against a partial-index collision.
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    last = _aware(row.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION or now < last:
        row.last_used_at = now
    return Caller(row.id, row.name, frozenset(row.scopes.split()))


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def allows(scopes: frozenset[str] | set[str], scope: str) -> bool:
    """`admin` means every scope."""
    return scope in scopes or "admin" in scopes


def token_view(row: ApiToken) -> dict:
    """What may be shown about a token: never its secret or its hash."""

    def iso(value: datetime | None) -> str | None:
        value = _aware(value)
        return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None

    return {"id": row.id, "name": row.name, "scopes": row.scopes.split(), "created": iso(row.created_at),
            "last_used": iso(row.last_used_at), "revoked": iso(row.revoked_at)}


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


class UnknownToken(TokenError):
    pass


def revoke_token(session: Session, token_id: int, *, actor: str) -> ApiToken:
    """Revoke one token (at once, for every instance: each request looks its token up in the database).
    Revoking a revoked token changes nothing and writes no second audit entry."""
    # An id past the column's range is no token (the database would refuse the query itself).
    row = session.get(ApiToken, token_id) if 0 < token_id < 2**31 else None
    if row is None:
        raise UnknownToken(f"there is no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(AuditEntry(actor=actor, action="token.revoke", subject=row.name, detail={"id": row.id}))
    session.flush()
    return row


def revoke_tokens_named(session: Session, name: str) -> int:
    rows = session.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)
