"""Holder-bound copies: a badge or award re-signed for the wallet that asked for it.

A wallet proves control of a DID (an OID4VCI key proof, or a VC API DIDAuthentication presentation). The
copy it receives is the stored credential with `credentialSubject.id` set to that DID, a new `id`
(`urn:uuid:`), and a fresh proof: Data Integrity `eddsa-rdfc-2022` (`ldp_vc`) or a VC-JWT whose `sub` is the
DID (`jwt_vc_json`). Everything else is kept as signed in the original, including the recipient's hashed
email identifier, the award date and `credentialStatus`: the copy shares the original's status entry, so
revoking either one revokes both.

Only `deliver` touches the database (it records the copy and its audit entry); the rest is pure.
"""

from __future__ import annotations

import copy
import hmac
import json
import re
import secrets
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import vcjwt
from .credentials import normalise_email
from .issuing import IssuerContext, serialise, sign
from .models import AuditEntry, Award, Credential, WalletCopy, WalletOffer, utcnow

FORMATS = ("ldp_vc", "jwt_vc_json")
CHANNELS = ("oid4vci", "vcapi")
# DID syntax (W3C DID Core §3.1), bounded: a method name and a method-specific id, no fragment or query.
_DID = re.compile(r"did:[a-z0-9]+:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2}|:)*[A-Za-z0-9._-]")
MAX_DID_LENGTH = 2000


class WalletError(ValueError):
    """The copy cannot be made; the message says why."""


def check_holder_did(value: Any) -> str:
    """A holder DID as the copy will carry it, or WalletError."""
    if not isinstance(value, str) or len(value) > MAX_DID_LENGTH or not _DID.fullmatch(value):
        raise WalletError("the holder must be identified by a DID (did:method:identifier, no fragment)")
    return value


def bound_document(original: dict, holder_did: str, copy_id: str) -> dict:
    """The unsigned copy: the original without its proof, with the holder's DID as the subject's id."""
    document = copy.deepcopy(original)
    document.pop("proof", None)
    document["id"] = copy_id
    subject = document.get("credentialSubject")
    if not isinstance(subject, dict):
        raise WalletError("only a credential with one credentialSubject object can be bound to a holder")
    document["credentialSubject"] = {"id": holder_did, **{k: v for k, v in subject.items() if k != "id"}}
    return document


def sign_copy(ctx: IssuerContext, unsigned: dict, fmt: str, now: datetime) -> str:
    """The signed copy as stored and delivered: JSON text for `ldp_vc`, a compact JWS for `jwt_vc_json`."""
    if fmt == "ldp_vc":
        return serialise(sign(ctx, unsigned, now.strftime("%Y-%m-%dT%H:%M:%SZ")))
    if fmt == "jwt_vc_json":
        key = ctx.keyring.current(ctx.jwt_algorithm)
        return vcjwt.sign_vc_jwt(unsigned, key, f"{ctx.did}#{key.kid}")
    raise WalletError(f"unsupported format {fmt!r}; supported: {', '.join(FORMATS)}")


def original_row(session: Session, public_id: str) -> Credential | Award | None:
    return session.get(Credential, public_id) or session.get(Award, public_id)


def deliver(session: Session, ctx: IssuerContext, original: Credential | Award, holder_did: str, *, fmt: str,
            channel: str, offer_id: str | None = None, now: datetime | None = None) -> WalletCopy:
    """Make, record and return the holder-bound copy of `original`. The caller commits.

    A revoked original is not delivered: a wallet must never receive a credential already known bad."""
    holder_did = check_holder_did(holder_did)
    if channel not in CHANNELS:
        raise WalletError(f"unknown channel {channel!r}")
    if original.revoked_at is not None:
        raise WalletError("this credential has been revoked and cannot be added to a wallet")
    now = (now or utcnow()).replace(microsecond=0)
    copy_id = f"urn:uuid:{uuid.uuid4()}"
    unsigned = bound_document(json.loads(original.document), holder_did, copy_id)
    row = WalletCopy(id=secrets.token_urlsafe(16), credential_id=copy_id, original_id=original.id,
                     original_kind="badge" if isinstance(original, Credential) else "award",
                     holder_did=holder_did, format=fmt, document=sign_copy(ctx, unsigned, fmt, now),
                     channel=channel, offer_id=offer_id, created_at=now)
    session.add(row)
    session.add(AuditEntry(actor=f"wallet:{channel}", action="credential.wallet_copy",
                           subject=original.credential_url,
                           detail={"copy": copy_id, "format": fmt, "holder": holder_did[:200], "offer": offer_id}))
    return row


def copies_of(session: Session, original_id: str) -> list[WalletCopy]:
    return list(session.scalars(select(WalletCopy).where(WalletCopy.original_id == original_id)
                                .order_by(WalletCopy.created_at)))


def delivered(row: WalletCopy) -> dict | str:
    """The copy as a wallet receives it: a JSON object (`ldp_vc`) or the JWT string (`jwt_vc_json`)."""
    return json.loads(row.document) if row.format == "ldp_vc" else row.document


# --- what both wallet channels ask of a learner asking from the public page ------------------------------


def email_matches(stated: Any, recorded: str | None) -> bool:
    """The email a learner typed against the one the credential was issued to, both normalised as they are
    hashed into the badge; constant time. A credential issued without an email never matches."""
    if not isinstance(stated, str) or not recorded or len(stated) > 320:
        return False
    return hmac.compare_digest(normalise_email(stated).encode("utf-8"), normalise_email(recorded).encode("utf-8"))


def open_offers(session: Session, original_id: str, kind: str, now: datetime) -> int:
    """How many offers of one kind for `original_id` can still be used (the cap on public-page offers)."""
    return session.scalar(select(func.count()).select_from(WalletOffer).where(
        WalletOffer.original_id == original_id, WalletOffer.kind == kind, WalletOffer.state == "offered",
        WalletOffer.expires_at > now)) or 0
