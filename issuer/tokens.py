"""API bearer tokens: shown once when created, stored as sha256, compared by hash lookup."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ApiToken, utcnow

SCOPES = ("issue", "revoke", "admin")
PREFIX = "obi_"


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
    row.last_used_at = utcnow()
    return Caller(row.id, row.name, frozenset(row.scopes.split()))


def revoke_tokens_named(session: Session, name: str) -> int:
    rows = session.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)
