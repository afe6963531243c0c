"""Revocation (issue #5): status list entries for new credentials, the signed lists, and revoking.

The format is pure (status.py); this module is the storage around it. Why it is shaped this way:

* An index is drawn at random and the database's unique key (list, index) decides: on a clash the
  transaction is rolled back and another index drawn. So allocation must be the first write of its
  transaction (issuing and claiming call it before anything else is added).
* A list stops taking new entries when it is ``FULL_AT`` used, so random draws keep finding free
  indexes quickly, and a new list is started by the next allocation.
* The signed list is cached in the database with the version it was built from. A revocation bumps the
  version in its own transaction; a build reads the version *before* the revoked entries, so whatever
  it publishes includes every revocation up to that version, and a later one makes the cache stale.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import credentials as docs
from . import stacking, status
from .models import Achievement, AuditEntry, Award, AwardBadge, Credential, StatusEntry, StatusList, WalletCopy, utcnow

PURPOSE = "revocation"
LIST_SIZE = status.MIN_ENTRIES
FULL_AT = 0.9
MAX_DRAWS = 50
VALID_FOR = timedelta(minutes=10)  # validUntil of a published list: verifiers re-fetch soon
REBUILD_AFTER = timedelta(minutes=5)  # an unchanged list is re-signed before its validUntil comes close
TTL_MS = 5 * 60 * 1000
# validFrom is set this much before the build: a verifier whose clock lags a little, or that fixed its
# "now" before asking for the list (ours does), must not find a fresh list "not valid yet".
CLOCK_SKEW = timedelta(minutes=1)
CATEGORIES = ("issued in error", "misconduct", "other")


class RevocationError(ValueError):
    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def list_url(base_url: str, list_id: str) -> str:
    return f"{base_url}/status/{list_id}"


# --- allocation -------------------------------------------------------------------------------------------

def _open_list(session: Session, purpose: str) -> StatusList:
    """The oldest list still taking entries, or a new one (two processes may each start one: harmless)."""
    row = session.scalars(select(StatusList).where(StatusList.purpose == purpose, StatusList.full.is_(False))
                          .order_by(StatusList.created_at, StatusList.id).limit(1)).first()
    if row is None:
        row = StatusList(id=secrets.token_urlsafe(16), purpose=purpose, size=LIST_SIZE, full=False, version=0,
                         created_at=utcnow())
        session.add(row)
        session.flush()
    return row


def allocate(session: Session, base_url: str, kind: str, credential_id: str,
             purpose: str = PURPOSE) -> dict:
    """Reserve a random free index for a credential about to be signed; returns its credentialStatus.

    Must be the first write of the session's transaction: a clash on the unique key rolls it back.
    A list on which ``MAX_DRAWS`` draws in a row clash is closed (it is as good as full) and the next
    list tried, so allocation never fails for want of an index."""
    clashes: dict[str, int] = {}
    for _ in range(3 * MAX_DRAWS):  # bounded: a clash that is not about the index must not loop forever
        lst = _open_list(session, purpose)
        list_id, size = lst.id, lst.size
        index = status.random_index(size, frozenset())
        session.add(StatusEntry(list_id=list_id, list_index=index, credential_kind=kind,
                                credential_id=credential_id))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()  # the index was taken (perhaps by another process): draw again
            clashes[list_id] = clashes.get(list_id, 0) + 1
            if clashes[list_id] >= MAX_DRAWS:
                _close(session, list_id)
            continue
        used = session.scalar(select(func.count()).select_from(StatusEntry).where(StatusEntry.list_id == list_id))
        if used >= size * FULL_AT:
            _close(session, list_id)
        return status.status_entry(list_url(base_url, list_id), index, purpose)
    raise RuntimeError(f"could not store a status entry for {credential_id!r} (it may already have one)")


def _close(session: Session, list_id: str) -> None:
    session.execute(update(StatusList).where(StatusList.id == list_id).values(full=True))


# --- the published list -----------------------------------------------------------------------------------

@dataclass
class Published:
    document: str
    etag: str
    built_at: datetime


def published(session: Session, ctx: Any, list_id: str, now: datetime | None = None) -> Published | None:
    """The signed list credential for ``list_id`` (None if there is no such list), rebuilt only when a
    revocation changed the list or the cached one is getting old. Commits its cache update."""
    from .issuing import serialise, sign

    now = (now or utcnow()).replace(microsecond=0)
    # The usual case first, in one light query (no ORM object): the stored build is current.
    current = session.execute(select(StatusList.document, StatusList.etag, StatusList.built_at,
                                     StatusList.version, StatusList.built_version)
                              .where(StatusList.id == list_id)).first()
    if current is None:
        return None
    if (current.document is not None and current.built_version == current.version
            and current.built_at is not None and _aware(current.built_at) + REBUILD_AFTER > now):
        return Published(current.document, current.etag or "", current.built_at)
    row = session.execute(select(StatusList).where(StatusList.id == list_id)
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    if row is None:
        return None
    if (row.document is not None and row.built_version == row.version and row.built_at is not None
            and _aware(row.built_at) + REBUILD_AFTER > now):
        return Published(row.document, row.etag or "", row.built_at)
    version = row.version  # read before the entries: the build then holds every revocation up to it
    revoked = session.scalars(select(StatusEntry.list_index).where(
        StatusEntry.list_id == list_id, StatusEntry.revoked_at.is_not(None))).all()
    bits = status.Bitstring(row.size)
    for index in revoked:
        bits.set(index)
    url = list_url(ctx.base_url, list_id)
    unsigned = status.list_credential(list_url=url, issuer=ctx.did, bits=bits, valid_from=now - CLOCK_SKEW,
                                      valid_until=now + VALID_FOR, ttl_ms=TTL_MS, purpose=row.purpose)
    text = serialise(sign(ctx, unsigned, now.strftime("%Y-%m-%dT%H:%M:%SZ")))
    etag = '"' + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + '"'
    # Never replace a build of a newer version with this one.
    session.execute(update(StatusList).where(
        StatusList.id == list_id,
        or_(StatusList.built_version.is_(None), StatusList.built_version <= version),
    ).values(document=text, etag=etag, built_version=version, built_at=now))
    session.commit()
    return Published(text, etag, now)


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Our own lists as parsed JSON, per process, keyed by list URL and held with the ETag of the text they were
# parsed from: a list is still read from the database on every verification (so a revocation is seen at
# once), only the parsing of an unchanged text is saved. The documents are shared: never mutate them.
_PARSED: dict[str, tuple[str, dict]] = {}
_PARSED_MAX = 1024
# Built once: constructing the statement on every verification cost more than running it.
_FRESHNESS = select(StatusList.etag, StatusList.built_at, StatusList.version,
                    StatusList.built_version).where(StatusList.id == bindparam("list_id"))


def local_lists(make_session: Any, ctx: Any) -> Any:
    """For FetchingStatusLists(local=...): our own lists from the database, in a session of their own."""
    prefix = f"{ctx.base_url}/status/"

    engine = getattr(make_session, "kw", {}).get("bind")

    def current_parse(url: str, list_id: str) -> dict | None:
        """The parsed document when the stored build is current and already parsed here: one light
        query on a bare connection (no ORM session), the same freshness rule as published()."""
        cached = _PARSED.get(url)
        if cached is None or engine is None:
            return None
        with engine.connect() as connection:
            row = connection.execute(_FRESHNESS, {"list_id": list_id}).first()
        if (row is not None and row.etag == cached[0] and row.built_version == row.version
                and row.built_at is not None and _aware(row.built_at) + REBUILD_AFTER > utcnow()):
            return cached[1]
        return None

    def get(url: str) -> dict | None:
        if not url.startswith(prefix):
            return None
        list_id = url[len(prefix):]
        hit = current_parse(url, list_id)
        if hit is not None:
            return hit
        session = make_session()
        try:
            found = published(session, ctx, list_id)
        finally:
            session.close()
        if found is None:
            raise LookupError(f"this issuer has no status list {list_id!r}")
        cached = _PARSED.get(url)
        if cached is not None and found.etag and cached[0] == found.etag:
            return cached[1]
        document = json.loads(found.document)
        if found.etag:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[url] = (found.etag, document)
        return document

    return get


# --- revoking ---------------------------------------------------------------------------------------------

@dataclass
class RevokeOutcome:
    created: bool
    revocation: dict
    awards: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**self.revocation, "awards": self.awards}


def _find(session: Session, credential_id: str) -> Credential | Award | None:
    """The badge or award by public id; a wallet copy's public id or urn:uuid names its original (they
    share one status entry, so revoking the copy is revoking the original)."""
    found = session.get(Credential, credential_id) or session.get(Award, credential_id)
    if found is None:
        copy = session.get(WalletCopy, credential_id) or session.scalars(
            select(WalletCopy).where(WalletCopy.credential_id == credential_id)).first()
        if copy is not None:
            found = session.get(Credential, copy.original_id) or session.get(Award, copy.original_id)
    return found


def revocation_of(row: Credential | Award) -> dict:
    return {"id": row.id, "url": row.credential_url, "kind": "badge" if isinstance(row, Credential) else "award",
            "revoked": row.revoked_at is not None,
            "revoked_at": docs.datetime_z(_aware(row.revoked_at)) if row.revoked_at else None,
            "reason": row.revocation_reason, "category": row.revocation_category,
            "revoked_by": row.revoked_by}


def _mark(session: Session, row: Credential | Award, *, reason: str, category: str, actor: str,
          now: datetime) -> bool:
    """Set the revocation on the row and its status entry, and bump the list's version; False when
    the credential carries no status entry (issued before revocation existed: nothing to publish)."""
    row.revoked_at, row.revocation_reason, row.revocation_category, row.revoked_by = now, reason, category, actor
    entry = session.scalars(select(StatusEntry).where(StatusEntry.credential_id == row.id)).first()
    if entry is None:
        return False
    entry.revoked_at = now
    session.execute(update(StatusList).where(StatusList.id == entry.list_id)
                    .values(version=StatusList.version + 1))
    return True


def revoke(session: Session, rules: stacking.RuleSet, credential_id: str, *, reason: Any, category: Any,
           actor: str, now: datetime | None = None) -> RevokeOutcome:
    """Revoke a badge or award (permanently), then re-check every award that counted it. Commits.
    A second call answers with the first revocation and what it did to the awards."""
    row = _find(session, credential_id)
    if row is None:
        raise RevocationError(f"no badge or award {credential_id!r} was issued here", 404)
    if row.revoked_at is not None:
        return _repeated(session, row)
    if not isinstance(reason, str) or not reason.strip():
        raise RevocationError("reason (why the credential is revoked) is required", field="reason")
    if len(reason) > 2000:
        raise RevocationError("reason is longer than 2000 characters", field="reason")
    category = "other" if category is None else category
    if category not in CATEGORIES:
        raise RevocationError(f"category must be one of: {', '.join(CATEGORIES)}", field="category")
    now = (now or utcnow()).replace(microsecond=0)
    # Two requests for one revocation at once (a double click, a client's retry) may both have found it
    # not revoked: this conditional update lets exactly one of them revoke (the load run, bench/load.py,
    # found two audit entries on PostgreSQL without it); the other answers as a repeated call.
    kind = type(row)
    claimed = session.execute(update(kind).where(kind.id == row.id, kind.revoked_at.is_(None))
                              .values(revoked_at=now)).rowcount
    if not claimed:
        session.rollback()
        session.refresh(row)
        return _repeated(session, row)
    published_status = _mark(session, row, reason=reason.strip(), category=category, actor=actor, now=now)
    affected = _follow(session, rules, row, actor=actor, now=now) if isinstance(row, Credential) else []
    action = "credential.revoke" if isinstance(row, Credential) else "award.revoke"
    session.add(AuditEntry(actor=actor, action=action, subject=row.credential_url,
                           detail={"reason": row.revocation_reason, "category": category,
                                   "status_published": published_status, "awards": affected}))
    session.commit()
    return RevokeOutcome(True, revocation_of(row), affected)


def _repeated(session: Session, row: Credential | Award) -> RevokeOutcome:
    """The answer to a revocation asked again: the first one, and what it did to the awards."""
    first = session.scalars(select(AuditEntry).where(
        AuditEntry.subject == row.credential_url, AuditEntry.action.in_(("credential.revoke", "award.revoke")))
        .order_by(AuditEntry.id).limit(1)).first()
    return RevokeOutcome(False, revocation_of(row), list((first.detail or {}).get("awards", [])) if first else [])


# --- awards follow their badges ---------------------------------------------------------------------------

def _follow(session: Session, rules: stacking.RuleSet, badge: Credential, *, actor: str,
            now: datetime) -> list[dict]:
    """Re-evaluate each unrevoked award that counted ``badge`` over its remaining counted badges only
    (no other badge of the learner is swapped in); revoke the award when it no longer holds."""
    results = []
    for award, decision, holds in awards_without(session, rules, badge):
        outcome = {"id": award.id, "url": award.credential_url, "title": award.title_en}
        if holds:
            outcome.update(outcome="kept", credits=decision.award["credits"])
            session.add(AuditEntry(actor=actor, action="award.reevaluate", subject=award.credential_url,
                                   detail={"because": badge.credential_url, "holds": True,
                                           "credits": decision.award["credits"],
                                           "counted": decision.award["counted"]}))
        else:
            reason = f"a counted badge was revoked: {badge.credential_url}"
            _mark(session, award, reason=reason, category="other", actor=actor, now=now)
            outcome.update(outcome="revoked", reason=reason, next=decision.next)
            session.add(AuditEntry(actor=actor, action="award.revoke", subject=award.credential_url,
                                   detail={"reason": reason, "category": "other", "because": badge.credential_url}))
        results.append(outcome)
    return results


def awards_without(session: Session, rules: stacking.RuleSet,
                   badge: Credential) -> list[tuple[Award, stacking.Decision, bool]]:
    """Each unrevoked award that counted ``badge``, re-evaluated over its other counted badges:
    (award, decision, whether it still holds). Changes nothing; revoking and the console's warning
    before a revocation both ask this."""
    award_ids = session.scalars(select(AwardBadge.award_id).where(AwardBadge.badge_id == badge.credential_url)
                                .distinct()).all()
    found = []
    for award_id in sorted(award_ids):
        award = session.get(Award, award_id)
        if award is None or award.revoked_at is not None:
            continue
        decision = reevaluate(session, rules, award, without=badge.credential_url)
        found.append((award, decision, still_holds(award, decision)))
    return found


def still_holds(award: Award, decision: stacking.Decision) -> bool:
    """The award as signed still holds: the same level and title, at a QF level no lower than the one
    its result states (a Certificate that claims QF 5 is not kept by badges that reach only QF 4)."""
    found = decision.award
    if not decision.eligible or found is None or found["level"] != award.level:
        return False
    if award.level.startswith(stacking.PROGRAMME_PREFIX):
        return True
    issued = (award.report or {}).get("award") or {}
    return found.get("title") == issued.get("title") and (found.get("qf_level") or 0) >= award.qf_level


def reevaluate(session: Session, rules: stacking.RuleSet, award: Award, *, without: str) -> stacking.Decision:
    """The rules of #3 over the award's counted badges minus ``without`` (and any revoked since), as on
    the day the award was issued, for the same level (and title) only."""
    rows = {b["id"]: b for b in (award.report or {}).get("badges", [])}
    themes = {e["theme"]["code"]: {"en": e["theme"]["en"], "zh-Hant": e["theme"]["zh-Hant"]}
              for e in session.scalars(select(Achievement.entry))}
    badges = []
    for counted in session.scalars(select(AwardBadge).where(AwardBadge.award_id == award.id)
                                   .order_by(AwardBadge.id)):
        if counted.badge_id == without:
            continue
        badges.append(_stored_badge(session, counted, rows.get(counted.badge_id, {}), award, themes))
    issued_on = _aware(award.created_at).date()
    if award.level.startswith(stacking.PROGRAMME_PREFIX):
        return stacking.evaluate(badges, rules=rules, as_of=issued_on,
                                 programme=award.level[len(stacking.PROGRAMME_PREFIX):])
    summary = (award.report or {}).get("award") or {}
    target = stacking.Target(award.level, summary.get("area"), summary.get("theme"))
    return stacking.evaluate(badges, rules=rules, as_of=issued_on, target=target)


def _stored_badge(session: Session, counted: AwardBadge, row: dict, award: Award,
                  themes: dict[str, dict[str, str]]) -> stacking.Badge:
    """A stacking.Badge for a badge the award counted: from our stored document when it is ours,
    otherwise from the award's report (what was read when the badge was verified for the claim)."""
    ours = session.scalars(select(Credential).where(Credential.credential_url == counted.badge_id)).first()
    profile = docs.read_profile(json.loads(ours.document)) if ours is not None else None
    other_uses = session.scalars(select(AwardBadge.pathway).where(
        AwardBadge.badge_id == counted.badge_id, AwardBadge.award_id != award.id)).all()
    theme = profile.get("theme") if profile else row.get("theme")
    awarded = row.get("awarded")
    problem = None
    if ours is not None and ours.revoked_at is not None:
        problem = "revoked"
    return stacking.Badge(
        id=counted.badge_id,
        name=(profile.get("name") if profile else None) or row.get("name") or counted.badge_id,
        # the claim already counted each achievement once, so the badge id is identity enough
        achievement=counted.badge_id,
        code=profile.get("code") if profile else None,
        credits=counted.credits,
        theme=theme,
        theme_name=themes.get(theme) if theme else None,
        area=profile.get("area") if profile else row.get("area"),
        qf_level=profile.get("qf_level") if profile else row.get("qf_level"),
        awarded=datetime.fromisoformat(awarded).date() if isinstance(awarded, str) else _aware(award.created_at).date(),
        problem=problem,
        used_in=frozenset(other_uses),
    )
