"""Stacked awards: verify the badges a learner submits, run the rules, sign the Certificate or Diploma.

The rules themselves are pure (`stacking.py`); this module turns submitted badges into the engine's
`Badge` values (verifying each, reading its credits, theme, area and QF level, checking our own against
the catalogue), and turns an eligible decision into a signed award held by the database so that no
badge is counted twice in one pathway.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import credentials as docs
from . import mail, qr, revocation, stacking, vcjwt
from .issuing import IssuerContext, new_public_id, serialise, sign
from .models import Achievement, AuditEntry, Award, AwardBadge, Credential, utcnow
from .verify import Verifier

LEVEL_TYPES = {"Certificate": "Certificate", "Diploma": "Diploma"}


class AwardError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Submitted:
    """One submitted badge: the credential JSON or a VC-JWT, and the sha256 of it as submitted."""

    credential: dict | None
    jwt: str | None
    digest: str | None = None  # given when the badge arrived as a file

    @classmethod
    def of(cls, item: Any, *, digest: str | None = None) -> Submitted:
        """``digest`` overrides the computed one when the badge arrived as a file: then the sha256 of the
        file's bytes as uploaded (a baked image, say) is what anyone holding the file can recompute."""
        if isinstance(item, str):
            return cls(None, item.strip(), digest)
        if isinstance(item, dict):
            return cls(item, None, digest)
        raise AwardError("each entry of credentials must be a credential object or a VC-JWT string")

    @functools.cached_property
    def sha256(self) -> str:
        """Computed when an award cites the badge (its evidence), not for every evaluation."""
        if self.digest is not None:
            return self.digest
        if self.jwt is not None:
            return hashlib.sha256(self.jwt.encode("utf-8")).hexdigest()
        # A JSON object inside a JSON request has no bytes of its own: digest its canonical JSON text
        # (sorted keys, no spaces), which anyone can recompute from the badge file.
        text = json.dumps(self.credential, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Application:
    """Who applies (an email, or the DID proven by a presentation), their badges, and the question."""

    email: str | None
    items: list[Submitted]
    target: Any = None
    as_of: date | None = None
    presentation: dict | None = None
    holder: str | None = None
    programme: str | None = None


def parse_application(body: Any, *, max_badges: int, allow_as_of: bool) -> Application:
    if not isinstance(body, dict):
        raise AwardError("the request body must be a JSON object")
    allowed = {"recipient", "credentials", "target", "programme"} | ({"as_of"} if allow_as_of else set())
    unknown = set(body) - allowed
    if unknown:
        raise AwardError(f"unknown field(s): {', '.join(sorted(unknown))}")
    recipient = body.get("recipient")
    email = presentation = None
    if isinstance(recipient, dict) and set(recipient) == {"email"} and isinstance(recipient["email"], str):
        email = docs.normalise_email(recipient["email"])
        if "@" not in email:
            raise AwardError("recipient.email must be an email address")
    elif isinstance(recipient, dict) and set(recipient) == {"presentation"}:
        presentation = recipient["presentation"]
        if not isinstance(presentation, dict):
            raise AwardError("recipient.presentation must be a verifiable presentation (a JSON object)")
    else:
        raise AwardError("recipient must be {\"email\": ...} (the email the badges were issued to) or "
                         "{\"presentation\": ...} (a presentation signed by the badges' holder DID)")
    items = body.get("credentials", [])
    if not isinstance(items, list) or (not items and presentation is None):
        raise AwardError("credentials must be a non-empty list of badges (JSON objects or VC-JWT strings)")
    in_presentation = presentation.get("verifiableCredential", []) if presentation else []
    count = len(items) + (len(in_presentation) if isinstance(in_presentation, list) else 1)
    if count > max_badges:
        raise AwardError(f"{count} badges submitted; at most {max_badges} per application", 413)
    as_of = None
    if body.get("as_of") is not None:
        try:
            as_of = date.fromisoformat(str(body["as_of"]))
        except ValueError:
            raise AwardError(f"as_of {body['as_of']!r} is not a date (YYYY-MM-DD)") from None
    programme = body.get("programme")
    if programme is not None and (not isinstance(programme, str) or not programme.strip()):
        raise AwardError("programme must be the code of a parent programme")
    if programme is not None and body.get("target") is not None:
        raise AwardError("give a target award or a programme, not both")
    return Application(email, [Submitted.of(item) for item in items], body.get("target"), as_of, presentation,
                       programme=programme.strip() if programme else None)


def prove_holder(app: Application, *, resolver, challenges, store, domain: str) -> None:
    """Check the presentation (signature, holder, single-use challenge) and add its badges."""
    from .presentations import PresentationError, verify_presentation

    if app.presentation is None:
        return
    try:
        presented = verify_presentation(app.presentation, resolver=resolver, challenges=challenges, store=store,
                                        domain=domain)
    except PresentationError as exc:
        raise AwardError(f"the presentation does not prove who applies: {exc}", 422) from None
    app.holder = presented.holder
    app.items.extend(Submitted.of(item) for item in presented.credentials)
    if not app.items:
        raise AwardError("the presentation carries no badges and none were sent beside it")


# --- from submitted badges to the engine's values ---------------------------------------------------------

def _award_date(credential: dict) -> date | None:
    for field in ("awardedDate", "validFrom", "issuanceDate"):
        value = credential.get(field)
        if value:
            try:
                return docs.parse_datetime(value, field).date()
            except ValueError:
                return None
    return None


def _catalogue_problem(profile: dict, entry: dict | None) -> str | None:
    """Our own badges must say what our catalogue says about their microcredential."""
    if entry is None:
        return f"achievement {profile.get('code')!r} is not in this issuer's catalogue"
    expected = {"credits": entry["credits"], "theme": entry["theme"]["code"], "area": entry["area"],
                "qf_level": entry["qf_level"]}
    for name, value in expected.items():
        if profile.get(name) != value:
            return f"{name} {profile.get(name)!r} does not match the catalogue ({value!r})"
    return None


@dataclass
class Evaluated:
    badges: list[stacking.Badge]
    submitted: dict[str, Submitted]  # badge id -> what was submitted
    themes: dict[str, dict[str, str]]


def evaluate_badges(session: Session, ctx: IssuerContext, verifier: Verifier, app: Application, *,
                    trusted: frozenset[str]) -> Evaluated:
    catalogue = {row.code: row.entry for row in session.scalars(select(Achievement))}
    themes = {e["theme"]["code"]: {"en": e["theme"]["en"], "zh-Hant": e["theme"]["zh-Hant"]}
              for e in catalogue.values()}
    badges: list[stacking.Badge] = []
    submitted: dict[str, Submitted] = {}
    for index, item in enumerate(app.items):
        if item.jwt is not None:
            result = verifier.verify_jwt(item.jwt, recipient_email=app.email)
        else:
            result = verifier.verify_credential(item.credential, recipient_email=app.email)
        credential = result.credential or {}
        profile = docs.read_profile(credential) if credential else {}
        subjects = credential.get("credentialSubject")
        subject_ids = {s.get("id") for s in (subjects if isinstance(subjects, list) else [subjects])
                       if isinstance(s, dict)}
        badge_id = profile.get("credential_id") or f"submitted-{index + 1}"
        if badge_id in submitted:
            badge_id = f"{badge_id}#{index + 1}"
        issuer = profile.get("issuer_id")
        problem = None
        recipient = result.check("recipient")
        if app.email and recipient is not None and recipient.ok is False:
            # Never the address itself: this reason is shown on pages and in API answers.
            problem = "issued to someone else: it was not issued to the email address given"
        elif app.holder and app.holder not in subject_ids:
            problem = "issued to someone else: its credentialSubject.id is not the presentation's holder"
        elif not result.verified:
            problem = "does not verify: " + "; ".join(result.errors[:2])
        elif issuer != ctx.did and issuer not in trusted:
            problem = f"issuer {issuer} is not this school or a trusted partner"
        elif issuer == ctx.did:
            problem = _catalogue_problem(profile, catalogue.get(profile.get("code") or ""))
        theme = profile.get("theme")
        if theme and theme not in themes and profile.get("theme_name"):
            themes[theme] = {"en": profile["theme_name"], "zh-Hant": profile["theme_name"]}
        badges.append(stacking.Badge(
            id=badge_id,
            name=profile.get("name") or credential.get("name") or badge_id,
            achievement=f"{issuer}|{profile.get('code') or profile.get('achievement_id')}",
            code=profile.get("code"),
            credits=profile.get("credits"),
            theme=theme,
            theme_name=themes.get(theme) if theme else None,
            area=profile.get("area"),
            qf_level=profile.get("qf_level"),
            awarded=_award_date(credential) or date.min,
            problem=problem or (None if _award_date(credential) else "has no award date"),
        ))
        submitted[badge_id] = item
    # Which pathways already counted each badge: one query for the whole application, not one a badge.
    used: dict[str, set[str]] = {}
    ids = [badge.id for badge in badges]
    for start in range(0, len(ids), 500):  # bounded IN lists
        for badge_id, pathway in session.execute(select(AwardBadge.badge_id, AwardBadge.pathway)
                                                 .where(AwardBadge.badge_id.in_(ids[start:start + 500]))):
            used.setdefault(badge_id, set()).add(pathway)
    badges = [dataclasses.replace(badge, used_in=frozenset(used.get(badge.id, ()))) for badge in badges]
    return Evaluated(badges, submitted, themes)


def decide(evaluated: Evaluated, rules: stacking.RuleSet, app: Application) -> stacking.Decision:
    target = stacking.parse_target(app.target, rules, evaluated.themes) if app.target else None
    if app.programme is not None:
        rules.programme(app.programme)  # RulesError naming the code when there is no such programme
    return stacking.evaluate(evaluated.badges, rules=rules, as_of=app.as_of or utcnow().date(), target=target,
                             programme=app.programme)


# --- the award credential ---------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def award_achievement(ctx: IssuerContext, rules: stacking.RuleSet, award: dict) -> dict:
    """The Achievement of an award title at a QF level: one stable id per title and level."""
    if award["level"].startswith(stacking.PROGRAMME_PREFIX):
        return programme_achievement(ctx, rules, award)
    level = rules.level(award["level"])
    slug = _slug(f"{award['level']}-{award['area']}-{award.get('theme') or 'none'}-qf{award['qf_level']}")
    achievement_id = f"{ctx.base_url}/awards/achievements/{slug}"
    title = award["title"]
    area_text = "professional" if award["area"] == "professional" else "any"
    theme_text = ""
    if award.get("theme"):
        theme_en = (award.get("theme_name") or {}).get("en", award["theme"])
        theme_text = f", at least {level.focus_credits} of them in {theme_en} ({area_text} area)"
    criteria = (f"At least {level.credits} credits from verified microcredential badges awarded within "
                f"{rules.validity_years} years of the application{theme_text}, with at least "
                f"{level.focus_credits} credits at QF level {award['qf_level']} or above. Each achievement "
                "counts once, and a badge counts toward at most one award of each level.")
    document = {
        "id": achievement_id,
        "type": ["Achievement"],
        "achievementType": LEVEL_TYPES.get(award["level"], "Certificate"),
        "name": title["en"],
        "description": f"{title['en']} ({title['zh-Hant']}), a stacked award of {ctx.profile['name']}.",
        "criteria": {"narrative": criteria},
        "creditsAvailable": level.credits,
        "inLanguage": "en",
        "tag": [f"area:{award['area']}", f"qf:{award['qf_level']}"]
        + ([f"theme:{award['theme']}"] if award.get("theme") else []),
        "alignment": [{
            "type": ["Alignment"],
            "targetName": f"Hong Kong Qualifications Framework Level {award['qf_level']}",
            "targetUrl": "https://www.hkqf.gov.hk/",
            "targetFramework": "Hong Kong Qualifications Framework",
            "targetCode": f"QF{award['qf_level']}",
            "targetType": "ext:QFLevel",
        }],
        "related": [{"id": f"{achievement_id}?lang=zh-Hant", "type": ["Related"], "inLanguage": "zh-Hant",
                     "name": title["zh-Hant"]}],
        "resultDescription": [{"id": f"{achievement_id}#qf", "type": ["ResultDescription"],
                               "name": "QF level", "resultType": "ext:QFLevel"}],
        "creator": dict(ctx.profile),
    }
    if award.get("theme_name"):
        document["fieldOfStudy"] = award["theme_name"]["en"]
    return document


def programme_achievement(ctx: IssuerContext, rules: stacking.RuleSet, award: dict) -> dict:
    """A parent programme's award: its own name, its eligible microcredentials and credit requirement."""
    programme = rules.programme(award["level"][len(stacking.PROGRAMME_PREFIX):])
    achievement_id = f"{ctx.base_url}/awards/achievements/{_slug('programme-' + programme.code)}"
    courses = ", ".join(sorted(programme.eligible))
    return {
        "id": achievement_id,
        "type": ["Achievement"],
        "achievementType": "Certificate",
        "name": programme.name["en"],
        "description": f"{programme.name['en']} ({programme.name['zh-Hant']}), a programme of "
                       f"{ctx.profile['name']}.",
        "criteria": {"narrative": f"At least {programme.credits} credits from these microcredentials, awarded "
                                  f"within {rules.validity_years} years of the application: {courses}. A badge "
                                  "counted here counts toward no Certificate or Diploma, and the reverse."},
        "creditsAvailable": programme.credits,
        "humanCode": programme.code,
        "inLanguage": "en",
        "tag": [f"programme:{programme.code}"],
        "related": [{"id": f"{achievement_id}?lang=zh-Hant", "type": ["Related"], "inLanguage": "zh-Hant",
                     "name": programme.name["zh-Hant"]}],
        "creator": dict(ctx.profile),
    }


def _sri(hex_digest: str) -> str:
    return "sha256-" + base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def award_document(ctx: IssuerContext, rules: stacking.RuleSet, report: dict, evaluated: Evaluated,
                   app: Application, public_id: str, now: datetime, credential_status: dict | None = None) -> dict:
    award = report["award"]
    achievement = award_achievement(ctx, rules, award)
    by_id = {b["id"]: b for b in report["badges"]}
    evidence = []
    for badge_id in award["counted"]:
        badge = by_id[badge_id]
        evidence.append({
            "id": badge_id,
            "type": ["Evidence"],
            "name": badge["name"],
            "description": f"{badge['credits']:g} credits, awarded {badge['awarded']}; sha256 of the badge "
                           f"as submitted: {evaluated.submitted[badge_id].sha256}",
            "genre": "MicroCredential",
            "digestSRI": _sri(evaluated.submitted[badge_id].sha256),
        })
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return docs.credential_document(
        credential_id=ctx.credential_url(public_id),
        issuer_profile=ctx.profile,
        achievement=achievement,
        recipient_email=app.email,
        recipient_did=app.holder,
        salt=docs.new_salt(),
        valid_from=stamp,
        result=[{"type": ["Result"], "resultDescription": f"{achievement['id']}#qf",
                 "value": f"QF{award['qf_level']}"}] if award.get("qf_level") else None,
        evidence=evidence,
        credits=award["credits"],
        credential_status=credential_status,
    )


@dataclass
class ClaimOutcome:
    award: Award | None
    created: bool
    report: dict


def claim(session: Session, ctx: IssuerContext, rules: stacking.RuleSet, verifier: Verifier, app: Application,
          *, trusted: frozenset[str], actor: str, now: datetime | None = None) -> ClaimOutcome:
    """Evaluate and, when eligible, sign and store the award; the same badges again return it (200)."""
    evaluated = evaluate_badges(session, ctx, verifier, app, trusted=trusted)
    decision = decide(evaluated, rules, app)
    report = decision.to_json()
    verified_ids = {b.id for b in evaluated.badges if b.problem is None}
    mine = Award.recipient_email == app.email if app.email else Award.recipient_did == app.holder
    existing = [a for a in session.scalars(select(Award).where(mine))
                if {ab.badge_id for ab in session.scalars(select(AwardBadge).where(AwardBadge.award_id == a.id))}
                <= verified_ids]
    # Only awards of the kind asked for answer a repeated claim: a programme's for that programme, the
    # target level's when a target is named, otherwise the Certificates and Diplomas.
    if app.programme is not None:
        existing = [a for a in existing if a.level == stacking.PROGRAMME_PREFIX + app.programme]
    else:
        existing = [a for a in existing if not a.level.startswith(stacking.PROGRAMME_PREFIX)]
        if app.target:
            wanted = stacking.parse_target(app.target, rules, evaluated.themes).level
            existing = [a for a in existing if a.level == wanted]
    rank = {level.name: i for i, level in enumerate(rules.levels)}
    best_existing = max(existing, key=lambda a: rank.get(a.level, -1), default=None)
    new_is_better = decision.eligible and (
        best_existing is None or rank.get(report["award"]["level"], -1) > rank.get(best_existing.level, -1))
    if not new_is_better:
        if best_existing is not None:
            return ClaimOutcome(best_existing, False, best_existing.report)
        return ClaimOutcome(None, False, report)

    now = (now or utcnow()).replace(microsecond=0)
    public_id = new_public_id()
    # The first write of the transaction (revocation.allocate rolls back and redraws on a clash).
    entry = revocation.allocate(session, ctx.base_url, "award", public_id)
    unsigned = award_document(ctx, rules, report, evaluated, app, public_id, now, entry)
    signed = sign(ctx, unsigned, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    token = None
    if app.holder:
        key = ctx.keyring.current(ctx.jwt_algorithm)
        token = vcjwt.sign_vc_jwt(unsigned, key, f"{ctx.did}#{key.kid}")
    text = serialise(signed)
    award = report["award"]
    row = Award(id=public_id, credential_url=ctx.credential_url(public_id), recipient_email=app.email,
                recipient_did=app.holder, jwt=token,
                level=award["level"], pathway=award["level"], title_en=award["title"]["en"],
                achievement_id=signed["credentialSubject"]["achievement"]["id"], credits=award["credits"],
                qf_level=award["qf_level"] or 0, report=report, document=text,
                document_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), issued_by=actor, created_at=now)
    qr.attach(row)  # as for a badge: drawn once, stored with the award
    session.add(row)
    session.flush()
    by_id = {b["id"]: b for b in report["badges"]}
    for badge_id in award["counted"]:
        session.add(AwardBadge(award_id=public_id, badge_id=badge_id, pathway=row.pathway,
                               credits=by_id[badge_id]["credits"], sha256=evaluated.submitted[badge_id].sha256))
    session.add(AuditEntry(actor=actor, action="award.issue", subject=row.credential_url,
                           detail={"title": row.title_en, "credits": row.credits, "counted": award["counted"]}))
    mail.enqueue_issued(session, row, ctx)  # the learner's email: stored with the award, sent after the commit
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AwardError("a badge of this application was counted by another award at the same moment; "
                         "apply again", 409) from None
    return ClaimOutcome(row, True, report)


def issued_badges_of(session: Session, email: str) -> list[Submitted]:
    """Every badge this issuer issued to a learner, as submissions (for `issuer award check`)."""
    rows = session.scalars(select(Credential).where(Credential.recipient_email == docs.normalise_email(email)))
    return [Submitted.of(json.loads(row.document)) for row in rows]


class DatabaseChallengeStore:
    """Single use of presentation challenges, held by the database (so it holds across processes)."""

    def __init__(self, session: Session):
        self.session = session

    def consume(self, challenge: str, expires: datetime) -> bool:
        from sqlalchemy import delete

        from .models import UsedChallenge

        self.session.execute(delete(UsedChallenge).where(UsedChallenge.expires_at < utcnow()))
        self.session.add(UsedChallenge(challenge=challenge, expires_at=expires))
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            return False
        return True
