"""Issuing badges: validate a request, build and sign the credential, store it once, audit it.

The document building and signing are pure (credentials.py, proofs.py, vcjwt.py); this module is the
transaction around them: idempotency, the stored bytes, and the audit entry.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import credentials as docs
from . import mail, proofs, qr, revocation, vcjwt
from .catalogue import CatalogueError, Microcredential, validate_catalogue
from .images import badge_png, badge_svg
from .keys import KeyRing
from .models import Achievement, AuditEntry, Credential, Issuer, PublicKey, utcnow

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
DID_RE = re.compile(r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+(#[A-Za-z0-9._:%-]+)?$")


class IssueError(ValueError):
    """A request that cannot be issued; `field` names the offending input, `status` the HTTP status."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class IssuerContext:
    """What signing needs, loaded once per process: identity, profile and keys."""

    base_url: str
    did: str
    profile: dict
    keyring: KeyRing
    jwt_algorithm: str = "ES256"

    def achievement_url(self, code: str) -> str:
        return f"{self.base_url}/achievements/{code}"

    def credential_url(self, public_id: str) -> str:
        return f"{self.base_url}/credentials/{public_id}"


@dataclass
class IssueRequest:
    achievement: str
    email: str
    name: str | None = None
    did: str | None = None
    awarded_on: date | None = None
    result: str | None = None
    evidence: list[dict] = field(default_factory=list)

    def digest(self) -> str:
        body = {
            "achievement": self.achievement, "email": self.email, "name": self.name, "did": self.did,
            "awarded_on": self.awarded_on.isoformat() if self.awarded_on else None,
            "result": self.result, "evidence": self.evidence,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class IssueOutcome:
    credential: Credential
    created: bool



def new_public_id() -> str:
    """An unguessable id for a badge or award URL (128 bits, base64url). Never one that starts with "-",
    which a command line would read as an option (`issuer revoke ID`)."""
    while True:
        value = secrets.token_urlsafe(16)
        if not value.startswith("-"):
            return value

def _text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise IssueError(f"{name} must be a string", name)
    value = value.strip()
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IssueError(f"{name} holds an unpaired surrogate, which is not valid Unicode text", name) from None
    if len(value) > limit:
        raise IssueError(f"{name} is longer than {limit} characters", name)
    return value or None


def parse_award_date(value: Any, today: date | None = None) -> date | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise IssueError("awarded_on must be a date string YYYY-MM-DD", "awarded_on")
    text = value.strip()
    try:
        if not re.match(r"^\d{4}-\d{2}-\d{2}(T.+)?$", text):
            raise ValueError
        day = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
    except ValueError:
        raise IssueError(f"awarded_on {value!r} is not a date (YYYY-MM-DD)", "awarded_on") from None
    today = today or datetime.now(UTC).date()
    # One day of slack: a completion recorded in Hong Kong may still be "tomorrow" in UTC.
    if day > today + timedelta(days=1):
        raise IssueError(f"awarded_on {day} is in the future", "awarded_on")
    if day.year < 1990:
        raise IssueError(f"awarded_on {day} is before 1990", "awarded_on")
    return day


def _evidence(value: Any) -> list[dict]:
    if value in (None, [], ""):
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict):
            raise IssueError(f"evidence[{i}] must be a URL or an object", "evidence")
        unknown = set(item) - {"id", "url", "name", "narrative", "description"}
        if unknown:
            raise IssueError(f"evidence[{i}] has unknown field(s): {', '.join(sorted(unknown))}", "evidence")
        entry = {k: _text(item.get(k), f"evidence[{i}].{k}", 2000) for k in ("name", "narrative", "description")}
        url = _text(item.get("id") or item.get("url"), f"evidence[{i}].id", 2000)
        if url and not re.match(r"^(https?|urn|data):", url):
            raise IssueError(f"evidence[{i}].id must be an http(s), urn: or data: URI", "evidence")
        entry["id"] = url
        entry = {k: v for k, v in entry.items() if v}
        if not entry:
            raise IssueError(f"evidence[{i}] is empty", "evidence")
        out.append(entry)
    return out


def parse_request(body: Any) -> IssueRequest:
    """Validate an issue request body (the API's JSON or a CSV row turned into the same shape)."""
    if not isinstance(body, dict):
        raise IssueError("the request body must be a JSON object")
    unknown = set(body) - {"achievement", "recipient", "awarded_on", "result", "evidence"}
    if unknown:
        raise IssueError(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    code = body.get("achievement")
    if not isinstance(code, str) or not code.strip():
        raise IssueError("achievement (the microcredential code) is required", "achievement")
    recipient = body.get("recipient")
    if not isinstance(recipient, dict):
        raise IssueError("recipient must be an object with at least an email", "recipient")
    unknown = set(recipient) - {"email", "name", "did"}
    if unknown:
        raise IssueError(f"recipient has unknown field(s): {', '.join(sorted(unknown))}", "recipient")
    email = _text(recipient.get("email"), "recipient.email", 320)
    if not email or not EMAIL_RE.match(email):
        raise IssueError("recipient.email must be an email address", "recipient.email")
    did = _text(recipient.get("did"), "recipient.did", 500)
    if did and not DID_RE.match(did):
        raise IssueError("recipient.did must be a DID (did:method:identifier)", "recipient.did")
    result = body.get("result")
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        result = str(result)
    return IssueRequest(
        achievement=code.strip(),
        email=docs.normalise_email(email),
        name=_text(recipient.get("name"), "recipient.name", 300),
        did=did,
        awarded_on=parse_award_date(body.get("awarded_on")),
        result=_text(result, "result", 100),
        evidence=_evidence(body.get("evidence")),
    )


def microcredential(row: Achievement) -> Microcredential:
    return _microcredential(json.dumps(row.entry, sort_keys=True, ensure_ascii=False))


@lru_cache(maxsize=1024)
def _microcredential(entry_json: str) -> Microcredential:
    # Schema validation costs about a millisecond; entries change rarely, so each is validated once.
    return validate_catalogue({"microcredentials": [json.loads(entry_json)]})[0]


LANGUAGES = ("en", "zh-Hant")


def achievement_document(ctx: IssuerContext, row: Achievement, language: str = "en") -> dict:
    """The Achievement in one language edition (the other edition is listed in `related`)."""
    return docs.achievement_document(
        microcredential(row), ctx.achievement_url(row.code),
        image_url=ctx.achievement_url(row.code) + "/image.png", issuer_profile=ctx.profile, language=language,
    )


def _existing(session: Session, req: IssueRequest, idempotency_key: str | None) -> Credential | None:
    if idempotency_key:
        row = session.scalars(select(Credential).where(Credential.idempotency_key == idempotency_key)).first()
        if row is not None:
            if row.request_digest != req.digest():
                raise IssueError("this Idempotency-Key was already used for a different request",
                                 "Idempotency-Key", status=409)
            return row
    return session.scalars(select(Credential).where(
        Credential.recipient_email == req.email,
        Credential.achievement_code == req.achievement,
        Credential.awarded_on == (req.awarded_on or utcnow().date()),
    )).first()


def sign(ctx: IssuerContext, unsigned: dict, created: str) -> dict:
    key = ctx.keyring.current("Ed25519")
    return proofs.create_eddsa_rdfc_2022(unsigned, key.private_key, f"{ctx.did}#{key.kid}", created=created)


def build_signed(ctx: IssuerContext, achievement_row: Achievement | None, req: IssueRequest, public_id: str,
                 now: datetime, credential_status: dict | None = None, *,
                 achievement: dict | None = None) -> tuple[dict, str | None]:
    """The signed credential (and its VC-JWT when the recipient has a DID) for one award.

    `achievement`, when given, is `achievement_document(ctx, achievement_row)` built beforehand: a cohort
    (cohort.py) builds it once per achievement instead of once per badge; it is not modified here."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    awarded = req.awarded_on or now.date()
    if achievement is None:
        achievement = achievement_document(ctx, achievement_row)
    unsigned = docs.credential_document(
        credential_id=ctx.credential_url(public_id),
        issuer_profile=ctx.profile,
        achievement=achievement,
        recipient_email=req.email,
        salt=docs.new_salt(),
        recipient_did=req.did,
        valid_from=stamp,
        awarded_date=None if awarded == now.date() else f"{awarded.isoformat()}T00:00:00Z",
        result=req.result,
        evidence=req.evidence or None,
        credential_status=credential_status,
    )
    signed = sign(ctx, unsigned, stamp)
    token = None
    if req.did:
        key = ctx.keyring.current(ctx.jwt_algorithm)
        token = vcjwt.sign_vc_jwt(unsigned, key, f"{ctx.did}#{key.kid}")
    return signed, token


def serialise(document: dict) -> str:
    """The stored and served text of a credential. Chosen once, never regenerated."""
    return json.dumps(document, ensure_ascii=False, indent=2)


def issue(session: Session, ctx: IssuerContext, req: IssueRequest, *, actor: str,
          idempotency_key: str | None = None, now: datetime | None = None) -> IssueOutcome:
    """Issue one badge, or return the badge already issued for the same request. Commits."""
    existing = _existing(session, req, idempotency_key)
    if existing is not None:
        return IssueOutcome(existing, created=False)
    achievement_row = session.get(Achievement, req.achievement)
    if achievement_row is None:
        raise IssueError(f"unknown achievement {req.achievement!r}; see GET /api/v1/achievements",
                         "achievement", status=404)
    if achievement_row.retired:
        raise IssueError(f"achievement {req.achievement!r} is retired and no longer issued", "achievement",
                         status=409)
    now = (now or utcnow()).replace(microsecond=0)
    public_id = new_public_id()
    # The first write of the transaction (revocation.allocate rolls back and redraws on a clash).
    entry = revocation.allocate(session, ctx.base_url, "badge", public_id)
    signed, token = build_signed(ctx, achievement_row, req, public_id, now, entry)
    text = serialise(signed)
    row = Credential(
        id=public_id, credential_url=ctx.credential_url(public_id), achievement_code=req.achievement,
        recipient_email=req.email, recipient_name=req.name, recipient_did=req.did,
        awarded_on=req.awarded_on or now.date(), document=text,
        document_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), jwt=token,
        idempotency_key=idempotency_key, request_digest=req.digest(), issued_by=actor, created_at=now,
    )
    qr.attach(row)  # drawn once here, stored with the badge, served from the database ever after
    session.add(row)
    session.add(AuditEntry(actor=actor, action="credential.issue", subject=row.credential_url,
                           detail={"achievement": req.achievement, "awarded_on": row.awarded_on.isoformat(),
                                   "sha256": row.document_sha256, "jwt": token is not None}))
    mail.enqueue_issued(session, row, ctx)  # the learner's email: stored with the badge, sent after the commit
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request stored the same award first: answer with that one.
        session.rollback()
        existing = _existing(session, req, idempotency_key)
        if existing is None:
            raise
        return IssueOutcome(existing, created=False)
    return IssueOutcome(row, created=True)


# --- a cohort from CSV -------------------------------------------------------------------------------

CSV_ALIASES = {
    "email": "email", "recipient_email": "email",
    "name": "name", "recipient_name": "name",
    "achievement": "achievement", "achievement_code": "achievement", "code": "achievement",
    "award_date": "awarded_on", "awarded_on": "awarded_on", "date": "awarded_on",
    "grade": "result", "result": "result",
    "did": "did", "recipient_did": "did",
}


@dataclass
class RowResult:
    line: int
    status: str  # issued | already issued | error
    detail: str
    credential_url: str | None = None


def csv_row_request(row: dict[str, str]) -> IssueRequest:
    fields: dict[str, str] = {}
    for key, value in row.items():
        if key is None:
            raise IssueError("the row has more cells than the header")
        name = CSV_ALIASES.get(key.strip().lower())
        if name and value is not None and value.strip():
            fields[name] = value.strip()
    recipient = {k: fields[k] for k in ("email", "name", "did") if k in fields}
    body = {"achievement": fields.get("achievement"), "recipient": recipient}
    for k in ("awarded_on", "result"):
        if k in fields:
            body[k] = fields[k]
    return parse_request(body)


def check_csv_header(header: Iterable[str] | None) -> None:
    names = {CSV_ALIASES.get((h or "").strip().lower()) for h in (header or [])}
    missing = [n for n in ("email", "achievement") if n not in names]
    if missing:
        raise IssueError(f"the CSV header lacks the column(s): {', '.join(missing)} "
                         "(expected email, name, achievement, award_date, grade)")


def issue_rows(make_session: Callable[[], Session], ctx: IssuerContext, rows: Iterable[tuple[int, dict]],
               *, actor: str, on_row: Callable[[RowResult], None] | None = None) -> list[RowResult]:
    """Issue each row in its own transaction, so a bad row never stops or rolls back the others.

    Re-running the same file issues nothing twice: every row is looked up by learner + achievement +
    award date before anything is signed."""
    results = []
    for line, raw in rows:
        session = make_session()
        try:
            req = csv_row_request(raw)
            outcome = issue(session, ctx, req, actor=actor)
            result = RowResult(line, "issued" if outcome.created else "already issued",
                               outcome.credential.id, outcome.credential.credential_url)
        except (IssueError, CatalogueError) as exc:
            session.rollback()
            result = RowResult(line, "error", str(exc))
        finally:
            session.close()
        results.append(result)
        if on_row:
            on_row(result)
    return results


# --- catalogue and identity into the database ---------------------------------------------------------

def store_catalogue(session: Session, entries: list[Microcredential], raw_entries: list[dict],
                    *, actor: str) -> tuple[int, int]:
    """Insert or update achievements; returns (added, updated). Issued badges are never touched."""
    added = updated = 0
    for mc, raw in zip(entries, raw_entries, strict=True):
        row = session.get(Achievement, mc.code)
        if row is None:
            row = Achievement(code=mc.code, entry=raw)
            session.add(row)
            added += 1
        else:
            row.entry = raw
            row.updated_at = utcnow()
            updated += 1
        row.image_png = badge_png(mc)
        row.image_svg = badge_svg(mc)
        row.retired = False
    session.add(AuditEntry(actor=actor, action="catalogue.load", subject=None,
                           detail={"added": added, "updated": updated, "codes": [m.code for m in entries]}))
    return added, updated


def store_identity(session: Session, ctx: IssuerContext, *, actor: str) -> None:
    """Record the issuer and every public key (current and retired) in the registry."""
    issuer = session.get(Issuer, ctx.did)
    if issuer is None:
        issuer = Issuer(id=ctx.did, name=ctx.profile["name"], url=ctx.profile["url"])
        session.add(issuer)
    issuer.name = ctx.profile["name"]
    issuer.url = ctx.profile["url"]
    issuer.email = ctx.profile.get("email")
    issuer.image_url = (ctx.profile.get("image") or {}).get("id")
    session.flush()
    for key in ctx.keyring.all():
        row = session.get(PublicKey, key.kid)
        if row is None:
            session.add(PublicKey(kid=key.kid, issuer_id=ctx.did, algorithm=key.algorithm,
                                  public_jwk=key.public_jwk(),
                                  public_multibase=None if key.algorithm == "RS256" else key.public_multibase(),
                                  status=key.status))
            session.add(AuditEntry(actor=actor, action="key.publish", subject=key.kid,
                                   detail={"algorithm": key.algorithm, "status": key.status}))
        elif row.status != key.status:
            row.status = key.status
            row.retired_at = utcnow() if key.status == "retired" else None
