"""Build unsigned Open Badges 3.0 documents (Achievement, AchievementCredential) and read them back.

Pure functions: no Flask, no database, no clock. Every property used here is defined by the two contexts
we put in `@context` (VCDM 2.0 and OB 3.0.3), because JSON-LD "safe mode" verifiers reject a credential
with an undefined term. Where OB 3.0 has no property for something stacking needs (theme, area, contact
hours, language of delivery) it goes into `Achievement.tag` as `key:value`; the full mapping is in
docs/credential-profile.md and `read_profile` is its inverse.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

from .catalogue import Microcredential, is_chinese

VC_V2_CONTEXT = "https://www.w3.org/ns/credentials/v2"
VC_V1_CONTEXT = "https://www.w3.org/2018/credentials/v1"
OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
CREDENTIAL_CONTEXT = (VC_V2_CONTEXT, OB_CONTEXT)
CREDENTIAL_TYPE = ("VerifiableCredential", "OpenBadgeCredential")

LANGUAGES = ("en", "zh-Hant")
DEFAULT_LANGUAGE = "en"

QF_FRAMEWORK = "Hong Kong Qualifications Framework"
QF_TARGET_TYPE = "ext:QFLevel"
QF_TARGET_URL = "https://www.hkqf.gov.hk/"
CEF_IDENTIFIER_TYPE = "ext:CEFCourseCode"
GRADE_FRAGMENT = "grade"

TAG_THEME = "theme"
TAG_AREA = "area"
TAG_QF = "qf"
TAG_CONTACT_HOURS = "contact-hours"
TAG_DELIVERY = "delivery"

_TEXT = {
    "en": {
        "qf_name": "Hong Kong Qualifications Framework Level {level}",
        "criteria_summary": "{hours} contact hours; {credits} credits at QF Level {level}.",
        "grade": "Grade",
        "caption": "Badge for {name}",
    },
    "zh-Hant": {
        "qf_name": "香港資歷架構第{level}級",
        "criteria_summary": "課堂時數{hours}小時；資歷架構第{level}級，{credits}學分。",
        "grade": "成績",
        "caption": "「{name}」徽章",
    },
}


class BadgeProfile(TypedDict):
    """What stacking needs from a badge; a field is None when the badge does not say."""

    credential_id: str | None
    issuer_id: str | None
    valid_from: str | None
    achievement_id: str | None
    achievement_type: str | None
    code: str | None
    name: str | None
    language: str | None
    credits: float | None
    credits_available: float | None
    theme: str | None
    theme_name: str | None
    area: str | None
    qf_level: int | None
    contact_hours: float | None
    delivery_languages: list[str]
    cef_code: str | None
    result: list[str]


# --- recipients ------------------------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """Trim, NFC-normalise and lower-case, so the hash a verifier recomputes matches what we issued."""
    return unicodedata.normalize("NFC", email.strip()).lower()


def new_salt() -> str:
    """A fresh random salt per credential, so equal emails give unrelated hashes across badges."""
    return secrets.token_hex(16)


def hash_identity(value: str, salt: str) -> str:
    """OB 3.0 IdentityHash: 'sha256$' + hex SHA-256 of the UTF-8 value with the salt appended."""
    digest = hashlib.sha256((value + salt).encode("utf-8")).hexdigest()
    return f"sha256${digest}"


def email_identity(email: str, salt: str) -> dict[str, Any]:
    """The IdentityObject for a hashed email address."""
    return {
        "type": "IdentityObject",
        "identityHash": hash_identity(normalise_email(email), salt),
        "identityType": "emailAddress",
        "hashed": True,
        "salt": salt,
    }


def identity_matches(identity: Mapping[str, Any], value: str) -> bool:
    """Whether an IdentityObject names `value` (an email is normalised the way we hash it).

    Accepts sha256 and md5 hashes with hex in either case, and unhashed identities, as OB 3.0 allows.
    """
    if identity.get("identityType") == "emailAddress":
        value = normalise_email(value)
    stated = identity.get("identityHash")
    if not isinstance(stated, str):
        return False
    if identity.get("hashed") is not True:
        return secrets.compare_digest(stated.encode("utf-8"), value.encode("utf-8"))
    algorithm, _, digest = stated.partition("$")
    hasher = {"sha256": hashlib.sha256, "md5": hashlib.md5}.get(algorithm.lower())
    if hasher is None:
        return False
    salt = identity.get("salt") or ""
    expected = hasher((value + salt).encode("utf-8")).hexdigest()
    return secrets.compare_digest(expected, digest.lower())


# --- dates -----------------------------------------------------------------------------------------


def parse_datetime(value: Any, name: str = "date-time") -> datetime:
    """An XML Schema / ISO 8601 date-time that must carry a time zone (OB's DateTimeZ)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date-time string")
    text = value.strip()
    text = text[:-1] + "Z" if text.endswith("z") else text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a valid date-time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} {value!r} has no timezone")
    return moment


def datetime_z(value: datetime | str) -> str:
    """DateTimeZ as we emit it, 'YYYY-MM-DDTHH:MM:SSZ' in UTC; a time without a zone is an error."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"date-time needs a time zone: {value.isoformat()}")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- achievement -----------------------------------------------------------------------------------


def edition_id(achievement_id: str, language: str) -> str:
    """The id of one language edition: the English edition is the plain id, others add `lang=`."""
    if language == DEFAULT_LANGUAGE:
        return achievement_id
    parts = urlsplit(achievement_id)
    query = f"{parts.query}&lang={language}" if parts.query else f"lang={language}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def profile_tags(mc: Microcredential) -> list[str]:
    """The `key:value` tags that carry what OB 3.0 has no property for (see credential-profile.md)."""
    tags = [
        f"{TAG_THEME}:{mc.theme.code}",
        f"{TAG_AREA}:{mc.area}",
        f"{TAG_QF}:{mc.qf_level}",
        f"{TAG_CONTACT_HOURS}:{_format_number(mc.contact_hours)}",
    ]
    tags += [f"{TAG_DELIVERY}:{language}" for language in mc.language]
    return tags


def achievement_document(
    mc: Microcredential,
    achievement_id: str,
    *,
    image_url: str,
    language: str = DEFAULT_LANGUAGE,
    issuer_profile: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OB 3.0 Achievement for one language edition of a microcredential.

    `achievement_id` is the English edition's id; the edition in `language` gets `edition_id(...)`,
    and every other edition is listed in `related` with its name, so both names stay machine-readable.
    """
    language = _edition_language(language)
    text = _TEXT[language]
    own_id = edition_id(achievement_id, language)
    name = mc.name.get(language)
    summary = text["criteria_summary"].format(
        hours=_format_number(mc.contact_hours), credits=_format_number(mc.credits), level=mc.qf_level
    )
    document: dict[str, Any] = {
        "id": own_id,
        "type": ["Achievement"],
        "achievementType": "MicroCredential",
        "name": name,
        "description": mc.description.get(language),
        "criteria": {"narrative": f"{mc.criteria.get(language).rstrip()}\n\n{summary}"},
        "image": {"id": image_url, "type": "Image", "caption": text["caption"].format(name=name)},
        "creditsAvailable": mc.credits,
        "humanCode": mc.code,
        "fieldOfStudy": mc.theme.name.get(language),
        "inLanguage": language,
        "tag": profile_tags(mc),
        "alignment": [
            {
                "type": ["Alignment"],
                "targetName": text["qf_name"].format(level=mc.qf_level),
                "targetUrl": QF_TARGET_URL,
                "targetFramework": QF_FRAMEWORK,
                "targetCode": f"QF{mc.qf_level}",
                "targetType": QF_TARGET_TYPE,
            }
        ],
        "otherIdentifier": (
            [{"type": "IdentifierEntry", "identifier": mc.cef_code, "identifierType": CEF_IDENTIFIER_TYPE}]
            if mc.cef_code
            else None
        ),
        "related": [
            {
                "id": edition_id(achievement_id, other),
                "type": ["Related"],
                "inLanguage": other,
                "name": mc.name.get(other),
            }
            for other in LANGUAGES
            if other != language
        ],
        "resultDescription": [
            {
                "id": f"{own_id}#{GRADE_FRAGMENT}",
                "type": ["ResultDescription"],
                "name": text["grade"],
                "resultType": "LetterGrade",
            }
        ],
        "creator": _profile(issuer_profile) if issuer_profile else None,
    }
    return _clean(document)


# --- credential ------------------------------------------------------------------------------------


def credential_document(
    *,
    credential_id: str,
    issuer_profile: Mapping[str, Any],
    achievement: Mapping[str, Any],
    recipient_email: str | None,
    salt: str,
    valid_from: datetime | str,
    awarded_date: datetime | str | None = None,
    valid_until: datetime | str | None = None,
    recipient_did: str | None = None,
    result: str | Sequence[Mapping[str, Any]] | None = None,
    evidence: Sequence[Mapping[str, Any]] | None = None,
    credits: float | None = None,
    image: Mapping[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
    credential_status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The unsigned OpenBadgeCredential awarding `achievement` to the holder of `recipient_email`.

    The recipient is identified only by a salted hash of the email (plus `credentialSubject.id` when a
    wallet DID is known); the plain name stays in our registry, out of a document the learner may
    share with anyone. `result` as a string is a grade, linked to the achievement's "Grade"
    ResultDescription; `credits` defaults to the achievement's `creditsAvailable`.
    """
    valid_from_z = datetime_z(valid_from)
    awarded_z = datetime_z(awarded_date) if awarded_date is not None else None
    subject: dict[str, Any] = {
        "id": recipient_did,
        "type": ["AchievementSubject"],
        "identifier": [email_identity(recipient_email, salt)] if recipient_email else None,
        "achievement": dict(achievement),
        "creditsEarned": credits if credits is not None else achievement.get("creditsAvailable"),
        "result": _results(result, achievement),
    }
    document: dict[str, Any] = {
        "@context": list(CREDENTIAL_CONTEXT),
        "id": credential_id,
        "type": list(CREDENTIAL_TYPE),
        "name": name or achievement.get("name"),
        "description": description or achievement.get("description"),
        "image": dict(image) if image else achievement.get("image"),
        "issuer": _profile(issuer_profile),
        "validFrom": valid_from_z,
        "validUntil": datetime_z(valid_until) if valid_until is not None else None,
        "awardedDate": awarded_z if awarded_z != valid_from_z else None,
        "credentialSubject": subject,
        "evidence": [_evidence(item) for item in evidence or ()],
        "credentialStatus": dict(credential_status) if credential_status else None,
    }
    return _clean(document)


def _results(result: str | Sequence[Mapping[str, Any]] | None, achievement: Mapping[str, Any]) -> list[Any]:
    if result is None or result == "":
        return []
    if isinstance(result, str):
        item: dict[str, Any] = {"type": ["Result"], "value": result}
        grade = _grade_description_id(achievement)
        if grade:
            item["resultDescription"] = grade
        return [item]
    return [dict(item) for item in result]


def _grade_description_id(achievement: Mapping[str, Any]) -> str | None:
    for description in _as_list(achievement.get("resultDescription")):
        if isinstance(description, Mapping) and str(description.get("id", "")).endswith(f"#{GRADE_FRAGMENT}"):
            return description["id"]
    return None


def _evidence(item: Mapping[str, Any]) -> dict[str, Any]:
    evidence = dict(item)
    types = _as_list(evidence.get("type"))
    evidence["type"] = types if "Evidence" in types else ["Evidence", *types]
    return evidence


def _profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """An OB Profile from caller data; `type` always contains "Profile", an image string becomes an Image."""
    if not profile.get("id"):
        raise ValueError("an issuer profile needs an id")
    result = dict(profile)
    types = _as_list(result.get("type"))
    result["type"] = types if "Profile" in types else ["Profile", *types]
    if isinstance(result.get("image"), str):
        result["image"] = {"id": result["image"], "type": "Image"}
    return result


# --- reading any OB 3.0 badge back -----------------------------------------------------------------


_QF_CODE = re.compile(r"^QF\s*([1-7])$", re.IGNORECASE)


def read_profile(credential: Mapping[str, Any]) -> BadgeProfile:
    """What stacking needs from any OB 3.0 credential (ours or a partner's that follows our profile).

    Tolerant of shapes other issuers produce: VCDM 1.1 (`issuanceDate`, a JWT `vc` claim), `type` as a
    bare string, a list of subjects, tags in any case. Absent facts come back as None, never guessed.
    """
    if isinstance(credential.get("vc"), Mapping):
        credential = credential["vc"]
    subject = _first_subject(credential.get("credentialSubject"))
    achievement = subject.get("achievement") if isinstance(subject.get("achievement"), Mapping) else {}
    tags = _parse_tags(achievement.get("tag"))
    credits_available = _float(achievement.get("creditsAvailable"))
    credits_earned = _float(subject.get("creditsEarned"))
    issuer = credential.get("issuer")
    return BadgeProfile(
        credential_id=_str(credential.get("id")),
        issuer_id=_str(issuer.get("id") if isinstance(issuer, Mapping) else issuer),
        valid_from=_str(credential.get("validFrom") or credential.get("issuanceDate")),
        achievement_id=_str(achievement.get("id")),
        achievement_type=_str(achievement.get("achievementType")),
        code=_str(achievement.get("humanCode")),
        name=_str(achievement.get("name")),
        language=_str(achievement.get("inLanguage")),
        credits=credits_earned if credits_earned is not None else credits_available,
        credits_available=credits_available,
        theme=_single(tags.get(TAG_THEME)),
        theme_name=_str(achievement.get("fieldOfStudy")),
        area=_single(tags.get(TAG_AREA)),
        qf_level=_qf_level(achievement, tags),
        contact_hours=_float(_single(tags.get(TAG_CONTACT_HOURS))),
        delivery_languages=tags.get(TAG_DELIVERY, []),
        cef_code=_cef_code(achievement),
        result=[
            str(item["value"])
            for item in _as_list(subject.get("result"))
            if isinstance(item, Mapping) and "value" in item
        ],
    )


def _first_subject(subject: Any) -> Mapping[str, Any]:
    for candidate in _as_list(subject):
        if isinstance(candidate, Mapping) and "achievement" in candidate:
            return candidate
    return {}


def _parse_tags(tags: Any) -> dict[str, list[str]]:
    """`key:value` tags by lower-cased key; keys we do not know are kept but ignored."""
    parsed: dict[str, list[str]] = {}
    for tag in _as_list(tags):
        if not isinstance(tag, str) or ":" not in tag:
            continue
        key, _, value = tag.partition(":")
        key, value = key.strip().lower(), value.strip()
        if value:
            parsed.setdefault(key, []).append(value.lower() if key in (TAG_THEME, TAG_AREA) else value)
    return parsed


def _qf_level(achievement: Mapping[str, Any], tags: Mapping[str, list[str]]) -> int | None:
    """From the QF alignment (preferred), else from the `qf:` tag."""
    for alignment in _as_list(achievement.get("alignment")):
        if not isinstance(alignment, Mapping):
            continue
        if alignment.get("targetType") != QF_TARGET_TYPE and alignment.get("targetFramework") != QF_FRAMEWORK:
            continue
        match = _QF_CODE.match(str(alignment.get("targetCode", "")).strip())
        if match:
            return int(match.group(1))
    tag = _single(tags.get(TAG_QF))
    if tag and tag.isdigit() and 1 <= int(tag) <= 7:
        return int(tag)
    return None


def _cef_code(achievement: Mapping[str, Any]) -> str | None:
    for entry in _as_list(achievement.get("otherIdentifier")):
        if isinstance(entry, Mapping) and entry.get("identifierType") == CEF_IDENTIFIER_TYPE:
            return _str(entry.get("identifier"))
    return None


# --- helpers ---------------------------------------------------------------------------------------


def _edition_language(language: str) -> str:
    if language in LANGUAGES:
        return language
    return "zh-Hant" if is_chinese(language) else DEFAULT_LANGUAGE


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _single(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _clean(value: Any) -> Any:
    """NFC-normalise strings and drop None values and empty lists/objects, as OB serialization requires."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, Mapping):
        cleaned = {key: _clean(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if not _is_empty(item)}
    if isinstance(value, (list, tuple)):
        cleaned_items = [_clean(item) for item in value]
        return [item for item in cleaned_items if not _is_empty(item)]
    return value


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (list, dict)) and not value)

