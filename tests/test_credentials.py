"""Building Achievements and OpenBadgeCredentials from catalogue entries, and reading the stacking
profile (credits, theme, area, QF level…) back out of any OB 3.0 badge."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft201909Validator, FormatChecker

from issuer.catalogue import DEMO_CATALOGUE, Microcredential, load_catalogue
from issuer.credentials import (
    CEF_IDENTIFIER_TYPE,
    OB_CONTEXT,
    QF_TARGET_TYPE,
    VC_V2_CONTEXT,
    achievement_document,
    credential_document,
    datetime_z,
    edition_id,
    email_identity,
    hash_identity,
    identity_matches,
    new_salt,
    normalise_email,
    read_profile,
)
from issuer.schema import validate_credential

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BASE = "https://badges.example.edu.hk"
WALLET_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
ISSUER = {
    "id": f"{BASE}/issuers/1",
    "type": ["Profile"],
    "name": "Example School of Continuing Education",
    "url": "https://www.example.edu.hk/",
    "email": "registry@example.edu.hk",
    "image": f"{BASE}/logo.png",
}


@pytest.fixture(scope="module")
def demo() -> dict[str, Microcredential]:
    return {mc.code: mc for mc in load_catalogue(DEMO_CATALOGUE)}


def achievement_for(mc: Microcredential, language: str = "en") -> dict[str, Any]:
    return achievement_document(
        mc, f"{BASE}/achievements/{mc.code}", image_url=f"{BASE}/achievements/{mc.code}/image.svg",
        language=language, issuer_profile=ISSUER,
    )


def credential_for(mc: Microcredential, language: str = "en", **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "credential_id": "urn:uuid:0b6c3c5e-52b4-4d1e-9a53-0f8a3c7e2d11",
        "issuer_profile": ISSUER,
        "achievement": achievement_for(mc, language),
        "recipient_email": "Chan.TaiMan@Example.com",
        "salt": "0123456789abcdef0123456789abcdef",
        "valid_from": "2025-06-30T18:00:00+08:00",
    }
    arguments.update(overrides)
    return credential_document(**arguments)


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


@pytest.fixture(scope="module")
def official_validator(load_standard) -> Draft201909Validator:
    schema = load_standard("schemas/1edtech-ob-v3p0/achievementcredential.json")
    return Draft201909Validator(schema, format_checker=FormatChecker())


# --- recipient identity -------------------------------------------------------------------------


def test_email_is_trimmed_lower_cased_and_nfc_normalised():
    decomposed = unicodedata.normalize("NFD", "  José.Chan@Example.COM\n")
    assert normalise_email(decomposed) == unicodedata.normalize("NFC", "josé.chan@example.com")


def test_identity_hash_matches_the_ob_specification_example():
    assert hash_identity("a@example.com", "Kosher") == (
        "sha256$b5809d8a92f8858436d7e6b87c12ebc0ae1eac4baecc2c0b913aee2c922ef399"
    )


def test_identity_hash_appends_the_salt():
    expected = hashlib.sha256(b"someone@example.orgpepper").hexdigest()
    assert hash_identity("someone@example.org", "pepper") == f"sha256${expected}"


def test_salts_are_random_hex():
    salts = {new_salt() for _ in range(50)}
    assert len(salts) == 50
    assert all(re.fullmatch(r"[0-9a-f]{32}", salt) for salt in salts)


def test_email_identity_matches_the_same_address_however_it_is_typed():
    identity = email_identity("Chan.TaiMan@Example.com", "s4lt")
    assert identity == {
        "type": "IdentityObject",
        "identityHash": hash_identity("chan.taiman@example.com", "s4lt"),
        "identityType": "emailAddress",
        "hashed": True,
        "salt": "s4lt",
    }
    assert identity_matches(identity, "  CHAN.taiman@example.com ")
    assert not identity_matches(identity, "chan.taiman@example.org")


def test_identity_matching_accepts_upper_case_hex_md5_and_plain_identities():
    upper = {"type": "IdentityObject", "identityType": "emailAddress", "hashed": True, "salt": "x",
             "identityHash": "sha256$" + hashlib.sha256(b"a@b.cx").hexdigest().upper()}
    md5 = {"type": "IdentityObject", "identityType": "emailAddress", "hashed": True,
           "identityHash": "md5$" + hashlib.md5(b"a@b.c").hexdigest()}
    plain = {"type": "IdentityObject", "identityType": "emailAddress", "hashed": False,
             "identityHash": "a@b.c"}
    assert identity_matches(upper, "a@b.c")
    assert identity_matches(md5, "a@b.c")
    assert identity_matches(plain, "A@B.C")
    assert not identity_matches({**upper, "identityHash": "sha512$00"}, "a@b.c")


# --- dates --------------------------------------------------------------------------------------


def test_dates_are_written_in_utc_with_z():
    assert datetime_z("2025-06-30T18:00:00+08:00") == "2025-06-30T10:00:00Z"
    new_york = timezone(timedelta(hours=-5))
    assert datetime_z(datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=new_york)) == "2025-01-02T08:04:05Z"
    assert datetime_z("2025-06-30T10:00:00Z") == "2025-06-30T10:00:00Z"


@pytest.mark.parametrize("value", ["2025-06-30T10:00:00", datetime(2025, 6, 30, 10), "30/06/2025"])
def test_dates_without_a_time_zone_are_refused(value):
    with pytest.raises(ValueError):
        datetime_z(value)


# --- the achievement ----------------------------------------------------------------------------


def test_achievement_carries_the_stacking_facts(demo):
    mc = demo["AI-102"]
    achievement = achievement_for(mc)
    assert achievement["id"] == f"{BASE}/achievements/AI-102"
    assert achievement["type"] == ["Achievement"]
    assert achievement["achievementType"] == "MicroCredential"
    assert achievement["name"] == mc.name.en
    assert achievement["description"] == mc.description.en
    assert achievement["criteria"]["narrative"].startswith(mc.criteria.en)
    assert "30 contact hours; 6 credits at QF Level 4." in achievement["criteria"]["narrative"]
    assert achievement["creditsAvailable"] == 6
    assert achievement["humanCode"] == "AI-102"
    assert achievement["fieldOfStudy"] == "Artificial Intelligence"
    assert achievement["inLanguage"] == "en"
    assert achievement["tag"] == [
        "theme:artificial-intelligence", "area:professional", "qf:4", "contact-hours:30",
        "delivery:yue", "delivery:en",
    ]
    assert achievement["image"] == {
        "id": f"{BASE}/achievements/AI-102/image.svg", "type": "Image",
        "caption": f"Badge for {mc.name.en}",
    }
    assert achievement["creator"]["id"] == ISSUER["id"]


def test_achievement_aligns_to_the_hkqf_level(demo):
    [alignment] = achievement_for(demo["AI-301"])["alignment"]
    assert alignment == {
        "type": ["Alignment"],
        "targetName": "Hong Kong Qualifications Framework Level 5",
        "targetUrl": "https://www.hkqf.gov.hk/",
        "targetFramework": "Hong Kong Qualifications Framework",
        "targetCode": "QF5",
        "targetType": QF_TARGET_TYPE,
    }


def test_cef_code_is_an_other_identifier_only_when_present(demo):
    with_cef = achievement_for(demo["AI-101"])
    assert with_cef["otherIdentifier"] == [
        {"type": "IdentifierEntry", "identifier": "43C10101A", "identifierType": CEF_IDENTIFIER_TYPE}
    ]
    assert "otherIdentifier" not in achievement_for(demo["AI-202"])


def test_english_edition_points_at_the_chinese_edition_with_its_name(demo):
    mc = demo["WPS-101"]
    assert achievement_for(mc)["related"] == [
        {
            "id": f"{BASE}/achievements/WPS-101?lang=zh-Hant",
            "type": ["Related"],
            "inLanguage": "zh-Hant",
            "name": "職場心理學",
        }
    ]


def test_chinese_edition_is_written_in_chinese_and_points_back(demo):
    mc = demo["TEA-102"]
    achievement = achievement_for(mc, "zh-Hant")
    assert achievement["id"] == f"{BASE}/achievements/TEA-102?lang=zh-Hant"
    assert achievement["inLanguage"] == "zh-Hant"
    assert achievement["name"] == "品茗與茶葉鑑賞"
    assert achievement["fieldOfStudy"] == "中國茶文化"
    assert achievement["alignment"][0]["targetName"] == "香港資歷架構第3級"
    assert achievement["alignment"][0]["targetCode"] == "QF3"
    assert achievement["related"] == [
        {"id": f"{BASE}/achievements/TEA-102", "type": ["Related"], "inLanguage": "en",
         "name": "Tea Tasting and Appreciation"}
    ]
    assert achievement["tag"][:3] == ["theme:chinese-tea-culture", "area:general", "qf:3"]


def test_chinese_language_tags_select_the_chinese_edition(demo):
    assert achievement_for(demo["AI-101"], "zh-HK")["inLanguage"] == "zh-Hant"
    assert achievement_for(demo["AI-101"], "fr")["inLanguage"] == "en"


def test_edition_ids_keep_an_existing_query():
    assert edition_id("https://x.example/a?v=2", "zh-Hant") == "https://x.example/a?v=2&lang=zh-Hant"
    assert edition_id("https://x.example/a", "en") == "https://x.example/a"


def test_achievement_offers_a_grade_result_description(demo):
    [description] = achievement_for(demo["DA-201"])["resultDescription"]
    assert description == {
        "id": f"{BASE}/achievements/DA-201#grade", "type": ["ResultDescription"],
        "name": "Grade", "resultType": "LetterGrade",
    }


# --- the credential -----------------------------------------------------------------------------


def test_credential_has_the_ob3_envelope(demo):
    credential = credential_for(demo["AI-102"])
    assert credential["@context"] == [VC_V2_CONTEXT, OB_CONTEXT]
    assert credential["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert credential["id"] == "urn:uuid:0b6c3c5e-52b4-4d1e-9a53-0f8a3c7e2d11"
    assert credential["validFrom"] == "2025-06-30T10:00:00Z"
    assert credential["name"] == demo["AI-102"].name.en
    assert credential["image"]["id"].endswith("/AI-102/image.svg")
    assert credential["issuer"] == {**ISSUER, "image": {"id": f"{BASE}/logo.png", "type": "Image"}}


def test_credential_identifies_the_recipient_only_by_a_salted_hash(demo):
    credential = credential_for(demo["AI-102"], recipient_email=" Chan.TaiMan@Example.com ")
    subject = credential["credentialSubject"]
    assert "id" not in subject
    [identity] = subject["identifier"]
    salt = "0123456789abcdef0123456789abcdef"
    assert identity["identityHash"] == hash_identity("chan.taiman@example.com", salt)
    assert identity_matches(identity, "chan.taiman@example.com")
    assert "taiman" not in json.dumps(credential).lower()


def test_credential_binds_a_wallet_did_when_given(demo):
    credential = credential_for(demo["AI-102"], recipient_did=WALLET_DID)
    assert credential["credentialSubject"]["id"].startswith("did:key:z6Mk")
    assert credential["credentialSubject"]["identifier"]


def test_credits_earned_default_to_the_credits_available(demo):
    assert credential_for(demo["AI-201"])["credentialSubject"]["creditsEarned"] == 9
    assert credential_for(demo["AI-201"], credits=4.5)["credentialSubject"]["creditsEarned"] == 4.5


def test_awarded_date_only_appears_when_it_differs(demo):
    same = credential_for(demo["AI-101"], awarded_date="2025-06-30T10:00:00Z")
    assert "awardedDate" not in same
    reissued = credential_for(
        demo["AI-101"], valid_from="2026-01-05T00:00:00Z", awarded_date="2025-06-30T10:00:00Z"
    )
    assert reissued["awardedDate"] == "2025-06-30T10:00:00Z"
    assert reissued["validFrom"] == "2026-01-05T00:00:00Z"


def test_grade_is_a_result_linked_to_the_grade_description(demo):
    credential = credential_for(demo["AI-101"], result="A-")
    assert credential["credentialSubject"]["result"] == [
        {"type": ["Result"], "value": "A-", "resultDescription": f"{BASE}/achievements/AI-101#grade"}
    ]


def test_evidence_gets_the_evidence_type(demo):
    item = {"id": f"{BASE}/evidence/1", "name": "Project report"}
    credential = credential_for(demo["AI-101"], evidence=[item])
    assert credential["evidence"] == [{**item, "type": ["Evidence"]}]


def test_null_values_and_empty_arrays_are_omitted(demo):
    credential = credential_for(demo["AI-202"], evidence=[], result=None, recipient_did=None, credits=None)
    for value in walk(credential):
        assert value is not None
        if isinstance(value, (list, dict)):
            assert value, "empty array or object left in the credential"
    assert "evidence" not in credential and "result" not in credential["credentialSubject"]


def test_text_is_nfc_normalised(demo):
    decomposed = unicodedata.normalize("NFD", "Café Culture and Tea")
    mc = dataclasses.replace(demo["TEA-101"], name=dataclasses.replace(demo["TEA-101"].name, en=decomposed))
    credential = credential_for(mc, description=decomposed)
    text = json.dumps(credential, ensure_ascii=False)
    assert unicodedata.normalize("NFC", text) == text
    assert credential["description"] == unicodedata.normalize("NFC", decomposed)


def test_building_does_not_modify_the_inputs(demo):
    achievement = achievement_for(demo["AI-101"])
    issuer = copy.deepcopy(ISSUER)
    before = copy.deepcopy(achievement)
    credential_document(
        credential_id="urn:uuid:1", issuer_profile=issuer, achievement=achievement,
        recipient_email="a@b.c", salt="s", valid_from="2025-01-01T00:00:00Z", result="B",
    )
    assert achievement == before and issuer == ISSUER


def test_issuer_profile_without_id_is_refused(demo):
    with pytest.raises(ValueError, match="id"):
        credential_for(demo["AI-101"], issuer_profile={"name": "No id"})


# --- conformance: our schema, the official schema, JSON-LD terms --------------------------------


def full_credentials(demo: dict[str, Microcredential]) -> list[dict[str, Any]]:
    """One credential per demo entry and language, with every optional part filled in."""
    credentials = []
    for mc in demo.values():
        for language in ("en", "zh-Hant"):
            credentials.append(
                credential_for(
                    mc, language,
                    recipient_did=WALLET_DID,
                    awarded_date="2025-06-01T00:00:00Z",
                    valid_until="2030-06-30T00:00:00Z",
                    result="A",
                    evidence=[{"id": f"{BASE}/evidence/{mc.code}", "name": "Final project",
                               "narrative": "Marked by two assessors.", "genre": "Project"}],
                    credential_status={
                        "id": f"{BASE}/status/1#123", "type": "BitstringStatusListEntry",
                        "statusPurpose": "revocation", "statusListIndex": "123",
                        "statusListCredential": f"{BASE}/status/1",
                    },
                )
            )
    return credentials


def test_every_demo_credential_passes_our_schema(demo):
    for credential in full_credentials(demo):
        assert validate_credential(credential) == [], credential["credentialSubject"]["achievement"]["id"]


def test_every_demo_credential_passes_the_official_schema(demo, official_validator):
    for credential in full_credentials(demo):
        errors = [e.message for e in official_validator.iter_errors(credential)]
        assert errors == [], credential["credentialSubject"]["achievement"]["id"]


CONTEXT_FILES = {
    VC_V2_CONTEXT: "contexts/w3c/credentials-v2.jsonld",
    OB_CONTEXT: "contexts/1edtech/ob-v3p0-context-3.0.3.json",
}
SENTINEL_BASE = "https://undefined-term.invalid/"


def expand_offline(document: dict[str, Any], standards: Path) -> list[Any]:
    pyld = pytest.importorskip("pyld.jsonld")

    def loader(url: str, options: Any = None) -> dict[str, Any]:
        if url not in CONTEXT_FILES:
            raise AssertionError(f"unexpected context {url}")
        text = (standards / CONTEXT_FILES[url]).read_text(encoding="utf-8")
        return {"contextUrl": None, "documentUrl": url, "document": json.loads(text)}

    options = {"documentLoader": loader, "base": SENTINEL_BASE}
    expanded = pyld.expand(copy.deepcopy(document), options)
    compacted = pyld.compact(expanded, {"@context": document["@context"]}, options)
    return [expanded, compacted]


def single_valued(value: Any) -> Any:
    """Compaction turns one-element arrays into scalars; compare documents modulo that."""
    if isinstance(value, list):
        items = [single_valued(item) for item in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, dict):
        return {key: single_valued(item) for key, item in value.items()}
    return value


def test_every_term_is_defined_by_the_two_contexts(demo, standards):
    """What a JSON-LD safe-mode verifier checks: no property is dropped, no type becomes relative."""
    for credential in full_credentials(demo):
        expanded, compacted = expand_offline(credential, standards)
        compacted.pop("@context")
        original = {key: value for key, value in credential.items() if key != "@context"}
        assert single_valued(compacted) == single_valued(original)
        dumped = json.dumps(expanded)
        assert SENTINEL_BASE not in dumped


def test_every_demo_credential_passes_the_projects_safe_mode_check(demo):
    jsonld = pytest.importorskip("issuer.jsonld")
    for credential in full_credentials(demo):
        jsonld.check_safe(credential)


def test_the_term_check_catches_an_undefined_property(demo, standards):
    credential = credential_for(demo["AI-101"])
    credential["credentialSubject"]["achievement"]["contactHours"] = 30
    expanded, compacted = expand_offline(credential, standards)
    assert "contactHours" not in json.dumps(compacted)


# --- reading the profile back -------------------------------------------------------------------


def test_profile_round_trips_for_every_demo_entry(demo):
    for mc in demo.values():
        for language in ("en", "zh-Hant"):
            profile = read_profile(credential_for(mc, language, result="B+"))
            assert profile["code"] == mc.code
            assert profile["credits"] == mc.credits and profile["credits_available"] == mc.credits
            assert profile["theme"] == mc.theme.code
            assert profile["theme_name"] == mc.theme.name.get(language)
            assert profile["area"] == mc.area
            assert profile["qf_level"] == mc.qf_level
            assert profile["contact_hours"] == mc.contact_hours
            assert profile["delivery_languages"] == list(mc.language)
            assert profile["cef_code"] == mc.cef_code
            assert profile["language"] == language
            assert profile["achievement_type"] == "MicroCredential"
            assert profile["issuer_id"] == ISSUER["id"]
            assert profile["valid_from"] == "2025-06-30T10:00:00Z"
            assert profile["result"] == ["B+"]


def test_profile_prefers_credits_earned(demo):
    assert read_profile(credential_for(demo["AI-201"], credits=3))["credits"] == 3


def test_profile_reads_a_partner_badge_in_vcdm_1_1_jwt_form():
    partner = {
        "iss": "did:web:partner.example",
        "vc": {
            "@context": [
                "https://www.w3.org/2018/credentials/v1",
                "https://purl.imsglobal.org/spec/ob/v3p0/context.json",
            ],
            "id": "https://partner.example/credentials/9",
            "type": "OpenBadgeCredential",
            "issuer": "did:web:partner.example",
            "issuanceDate": "2024-03-01T00:00:00Z",
            "credentialSubject": [{
                "type": "AchievementSubject",
                "achievement": {
                    "id": "https://partner.example/achievements/ml",
                    "type": "Achievement",
                    "name": "Applied ML",
                    "creditsAvailable": "9",
                    "tag": ["Theme: Artificial-Intelligence", "AREA:professional", "machine learning"],
                    "alignment": {
                        "type": "Alignment", "targetName": "QF 4", "targetUrl": "https://x",
                        "targetFramework": "Hong Kong Qualifications Framework", "targetCode": "qf4",
                    },
                },
            }],
        },
    }
    profile = read_profile(partner)
    assert profile["credential_id"] == "https://partner.example/credentials/9"
    assert profile["issuer_id"] == "did:web:partner.example"
    assert profile["valid_from"] == "2024-03-01T00:00:00Z"
    assert profile["credits"] == 9.0
    assert profile["theme"] == "artificial-intelligence"
    assert profile["area"] == "professional"
    assert profile["qf_level"] == 4


def test_profile_falls_back_to_the_qf_tag():
    badge = {"credentialSubject": {"achievement": {"tag": ["qf:6"]}}}
    assert read_profile(badge)["qf_level"] == 6


def test_profile_leaves_unstated_facts_empty(load_standard):
    profile = read_profile(load_standard("examples/ob_v3p0/spec/basicOpenBadgeCredential.json"))
    assert profile["achievement_id"] is not None
    for key in ("credits", "credits_available", "theme", "area", "qf_level", "contact_hours", "cef_code"):
        assert profile[key] is None, key
    assert profile["delivery_languages"] == [] and profile["result"] == []


def test_profile_of_garbage_is_all_empty():
    profile = read_profile({"credentialSubject": "nope", "issuer": 7})
    assert profile["credits"] is None and profile["issuer_id"] is None and profile["achievement_id"] is None


# --- the documented example stays true ----------------------------------------------------------


def documented_example() -> dict[str, Any]:
    text = (PROJECT_ROOT / "docs" / "credential-profile.md").read_text(encoding="utf-8")
    section = text.split("## Example", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block, "docs/credential-profile.md lost its example credential"
    return json.loads(block.group(1))


def test_documented_example_is_a_valid_credential(official_validator):
    example = documented_example()
    assert validate_credential(example) == []
    assert [e.message for e in official_validator.iter_errors(example)] == []


def test_documented_example_matches_what_we_build(demo):
    example = documented_example()
    built = credential_for(
        demo["AI-102"], recipient_email="chan.taiman@example.com", salt="abc", result="A",
        credential_id="urn:uuid:2f0c6a0e-3c6b-4a7e-9d7e-1c1f6c1f0a11",
        valid_from="2025-06-30T10:00:00+08:00",
    )
    assert example["credentialSubject"]["identifier"] == built["credentialSubject"]["identifier"]
    built_achievement = built["credentialSubject"]["achievement"]
    example_achievement = example["credentialSubject"]["achievement"]
    keys = ("tag", "alignment", "otherIdentifier", "related", "resultDescription",
            "creditsAvailable", "humanCode")
    for key in keys:
        assert example_achievement[key] == built_achievement[key], key
    assert read_profile(example) == read_profile(built)
