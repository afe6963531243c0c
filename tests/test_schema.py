"""Our own OB 3.0 JSON Schema: accepts what the official schema accepts (and VCDM 1.1 badges), rejects
the documents that break the data model, and says where the problem is."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft201909Validator, FormatChecker

import issuer.schema as schema_module
from issuer.catalogue import DEMO_CATALOGUE, load_catalogue
from issuer.credentials import achievement_document, credential_document
from issuer.schema import (
    CREDENTIAL_SCHEMA,
    format_checker,
    is_valid_credential,
    json_path,
    validate_credential,
    validator,
)

EXAMPLES = "examples/ob_v3p0"


@pytest.fixture(scope="module")
def official(load_standard) -> Draft201909Validator:
    schema = load_standard("schemas/1edtech-ob-v3p0/achievementcredential.json")
    return Draft201909Validator(schema, format_checker=FormatChecker())


@pytest.fixture(scope="module")
def example_files(standards) -> list[Path]:
    files = sorted((standards / EXAMPLES).rglob("*.json"))
    assert len(files) >= 15
    return files


@pytest.fixture(scope="module")
def basic(load_standard) -> dict[str, Any]:
    return load_standard(f"{EXAMPLES}/spec/basicOpenBadgeCredential.json")


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    mc = load_catalogue(DEMO_CATALOGUE)[0]
    issuer = {"id": "https://badges.example.edu.hk/issuers/1", "type": ["Profile"], "name": "School"}
    achievement = achievement_document(
        mc, "https://badges.example.edu.hk/achievements/AI-101",
        image_url="https://badges.example.edu.hk/achievements/AI-101/image.png",
    )
    return credential_document(
        credential_id="urn:uuid:9f1f0f2e-8d55-4c0b-a3a6-6f1c1f6ad001", issuer_profile=issuer,
        achievement=achievement, recipient_email="learner@example.com", salt="f00d",
        valid_from="2025-07-01T09:00:00+08:00", result="A",
    )


# --- the schema itself --------------------------------------------------------------------------


def test_schema_is_our_own_valid_2020_12_schema(load_standard):
    schema = json.loads(CREDENTIAL_SCHEMA.read_text(encoding="utf-8"))
    official_schema = load_standard("schemas/1edtech-ob-v3p0/achievementcredential.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] != official_schema["$id"]
    assert set(schema["$defs"]) != set(official_schema["$defs"])


def test_validator_is_compiled_once():
    assert validator() is validator()


def test_date_time_format_is_really_checked():
    assert "date-time" in format_checker().checkers
    assert "date-time" in validator().format_checker.checkers


def test_date_time_is_checked_even_without_the_optional_validator(monkeypatch):
    class BareFormatChecker(FormatChecker):
        checkers = {k: v for k, v in FormatChecker.checkers.items() if k not in ("date-time", "date")}

    monkeypatch.setattr(schema_module, "FormatChecker", BareFormatChecker)
    checker = schema_module.format_checker()
    assert checker.conforms("2025-02-28T23:59:59+08:00", "date-time")
    assert not checker.conforms("2025-02-28T23:59:59", "date-time")
    assert not checker.conforms("2025-02-30T00:00:00Z", "date-time")
    assert not checker.conforms("1990-13-01", "date")


def test_json_paths_quote_keys_that_are_not_identifiers():
    path = ["credentialSubject", "identifier", 0, "salt"]
    assert json_path(path) == "$.credentialSubject.identifier[0].salt"
    assert json_path(["@context", 1]) == '$["@context"][1]'


# --- acceptance ---------------------------------------------------------------------------------


def test_our_credential_passes_ours_and_the_official_schema(ours, official):
    assert validate_credential(ours) == []
    assert list(official.iter_errors(ours)) == []


def test_everything_the_official_schema_accepts_ours_accepts(example_files, official):
    accepted = 0
    for path in example_files:
        document = json.loads(path.read_text(encoding="utf-8"))
        if official.is_valid(document):
            accepted += 1
            assert validate_credential(document) == [], path.name
    assert accepted >= 12


@pytest.mark.parametrize(
    "name", ["simple_v1.json", "simple-eddsa-2022.json", "credential-status-revoked.json"]
)
def test_vcdm_1_1_badges_are_accepted(load_standard, name):
    document = load_standard(f"{EXAMPLES}/1edtech-validator-fixtures/{name}")
    assert document["@context"][0] == "https://www.w3.org/2018/credentials/v1"
    assert validate_credential(document) == []


def test_a_single_proof_object_is_accepted(load_standard):
    document = load_standard(f"{EXAMPLES}/1edtech-validator-fixtures/simple-did-web-method.json")
    assert isinstance(document["proof"], dict)
    assert validate_credential(document) == []


@pytest.mark.parametrize(
    "name", ["spec/endorsement.json", "1edtech-validator-fixtures/endorsement-valid.json"]
)
def test_an_endorsement_credential_is_not_an_achievement_credential(load_standard, name):
    errors = validate_credential(load_standard(f"{EXAMPLES}/{name}"))
    assert any(error.startswith("$.type: ") for error in errors)


def test_a_badge_without_an_achievement_is_rejected(load_standard):
    errors = validate_credential(load_standard(f"{EXAMPLES}/1edtech-validator-fixtures/simple-noproof.json"))
    assert errors == ["$.credentialSubject: 'achievement' is a required property"]


# --- rejection ----------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]
HASH = "sha256$" + "ab" * 32


def set_identifier(**changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        identity = {"type": "IdentityObject", "hashed": True, "identityHash": HASH,
                    "identityType": "emailAddress", "salt": "x"}
        identity.update(changes)
        doc["credentialSubject"]["identifier"] = [{k: v for k, v in identity.items() if v is not None}]
    return mutate


STATUS = {"id": "https://x.example/s#4", "type": "BitstringStatusListEntry", "statusPurpose": "revocation",
          "statusListIndex": "4", "statusListCredential": "https://x.example/s"}
PROOF_WITHOUT_VALUE = {"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022",
                       "created": "2025-01-01T00:00:00Z", "proofPurpose": "assertionMethod",
                       "verificationMethod": "https://x.example/issuer#key"}


def achievement(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["credentialSubject"]["achievement"]


# case: (how to break the basic spec example, how our error message starts)
BROKEN: dict[str, tuple[Mutation, str]] = {
    "missing issuer": (
        lambda d: d.pop("issuer"),
        "$: 'issuer' is a required property"),
    "validFrom without a time zone": (
        lambda d: d.update(validFrom="2010-01-01T00:00:00"),
        "$.validFrom: '2010-01-01T00:00:00' is not an RFC 3339"),
    "validFrom on a day that does not exist": (
        lambda d: d.update(validFrom="2010-02-30T00:00:00Z"),
        "$.validFrom: '2010-02-30T00:00:00Z' is not an RFC 3339"),
    "IdentityObject with an extra field": (
        set_identifier(plaintext="learner@example.com"),
        "$.credentialSubject.identifier[0]: Additional properties"),
    "type without OpenBadgeCredential": (
        lambda d: d.update(type=["VerifiableCredential"]),
        "$.type: ['VerifiableCredential'] must contain"),
    "identityType 'email'": (
        set_identifier(identityType="email"),
        "$.credentialSubject.identifier[0].identityType: 'email' is neither"),
    "missing validFrom": (
        lambda d: d.pop("validFrom"),
        "$: 'validFrom' is a required property"),
    "wrong first context": (
        lambda d: d["@context"].__setitem__(0, "https://example.org/credentials"),
        '$["@context"][0]: '),
    "missing OB context": (
        lambda d: d.update({"@context": ["https://www.w3.org/ns/credentials/v2"]}),
        '$["@context"]: '),
    "achievement without criteria": (
        lambda d: achievement(d).pop("criteria"),
        "$.credentialSubject.achievement: 'criteria' is a required property"),
    "unknown achievementType": (
        lambda d: achievement(d).update(achievementType="Microcredential"),
        "$.credentialSubject.achievement.achievementType: 'Microcredential' is neither"),
    "achievement type without Achievement": (
        lambda d: achievement(d).update(type=["Badge"]),
        "$.credentialSubject.achievement.type: ['Badge'] must contain 'Achievement'"),
    "subject without id or identifier": (
        lambda d: d["credentialSubject"].pop("id"),
        "$.credentialSubject: needs at least one of 'id', 'identifier'"),
    "credentialStatus without id": (
        lambda d: d.update(credentialStatus={k: v for k, v in STATUS.items() if k != "id"}),
        "$.credentialStatus: 'id' is a required property"),
    "credentialStatus as an array": (
        lambda d: d.update(credentialStatus=[STATUS]),
        "$.credentialStatus: "),
    "DataIntegrityProof without proofValue": (
        lambda d: d.update(proof=[PROOF_WITHOUT_VALUE]),
        "$.proof[0]: 'proofValue' is a required property"),
    "issuer image as a string": (
        lambda d: d["issuer"].update(image="https://x.example/logo.png"),
        "$.issuer.image: "),
    "issuanceDate in a VCDM 2.0 credential": (
        lambda d: d.update(issuanceDate="2010-01-01T00:00:00Z"),
        "$.issuanceDate: not allowed here"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_documents_are_rejected_with_the_path(basic, case):
    mutate, expected = BROKEN[case]
    document = copy.deepcopy(basic)
    mutate(document)
    errors = validate_credential(document)
    assert errors, case
    assert any(error.startswith(expected) for error in errors), errors
    assert not is_valid_credential(document)


OFFICIAL_ALSO_REJECTS = [
    "missing issuer", "validFrom without a time zone", "validFrom on a day that does not exist",
    "IdentityObject with an extra field", "type without OpenBadgeCredential", "identityType 'email'",
    "missing validFrom", "wrong first context", "achievement without criteria", "credentialStatus without id",
]


@pytest.mark.parametrize("case", OFFICIAL_ALSO_REJECTS)
def test_the_official_schema_rejects_the_same_broken_documents(basic, official, case):
    document = copy.deepcopy(basic)
    BROKEN[case][0](document)
    assert not official.is_valid(document)


def test_a_hashed_identity_must_look_like_a_hash(basic):
    document = copy.deepcopy(basic)
    set_identifier(identityHash="learner@example.com")(document)
    errors = validate_credential(document)
    assert errors and errors[0].startswith("$.credentialSubject.identifier[0].identityHash: ")


def test_an_unhashed_identity_may_hold_plain_text(basic):
    document = copy.deepcopy(basic)
    set_identifier(identityHash="learner@example.com", hashed=False, salt=None)(document)
    assert validate_credential(document) == []


def test_a_numeric_status_list_index_is_tolerated_but_not_garbage(basic):
    for index, ok in (("4", True), (4, True), ("four", False), (-1, False)):
        document = copy.deepcopy(basic)
        document["credentialStatus"] = {**STATUS, "statusListIndex": index}
        assert (validate_credential(document) == []) is ok, index


def test_vcdm_1_1_badge_needs_an_issuance_date(load_standard):
    document = load_standard(f"{EXAMPLES}/1edtech-validator-fixtures/simple_v1.json")
    document.pop("issuanceDate")
    assert validate_credential(document) == ["$: 'issuanceDate' is a required property"]


@pytest.mark.parametrize("value", [None, [], "credential", 42])
def test_non_objects_are_reported_not_raised(value):
    errors = validate_credential(value)
    assert errors and errors[0].startswith("$: ")
