"""The verification pipeline and submission parsing: official fixtures, our own signed badges, tampering,
VC-JWT key provenance, validity windows, recipients, and hostile input that must never raise."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from issuer import multikey, proofs, vcjwt
from issuer.credentials import hash_identity, normalise_email
from issuer.fetch import FetchError
from issuer.formats import MAX_BYTES, FormatError, Submission, parse_submission
from issuer.keys import SigningKey, did_document, jwks
from issuer.resolve import KeyResolver
from issuer.verify import CHECK_NAMES, Check, Verifier, all_passed

FIXTURES = "examples/ob_v3p0/1edtech-validator-fixtures"
# The fixtures are frozen data signed in 2010-2024; two of them expire on 2030-01-01. Verifying them "as
# of" a fixed date keeps these tests about signatures and rules, not about the year they run in.
FIXTURE_NOW = datetime(2024, 6, 1, tzinfo=UTC)
OB_CONTEXT = ["https://www.w3.org/ns/credentials/v2",
              "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"]
ISSUER_DID = "did:web:badges.example.edu"
EMAIL = "Learner.One@Example.edu"
SALT = "8f1c0a5d2b7e4f3a"


# complete.json carries a 1EdTechRevocationList status; the status check fails closed when the list
# cannot be read, so the offline verifier serves it one that lists nothing.
COMPLETE_REVOCATION_LIST = "https://1edtech.edu/credentials/3732/revocations"


def no_network(url: str) -> dict:
    raise FetchError(f"{url}: no network in tests")


class OfflineStatusLists:
    """Status documents from memory; anything else is unreachable."""

    def __init__(self, documents: dict[str, dict]) -> None:
        self.documents = documents

    def get(self, url: str) -> dict:
        if url not in self.documents:
            raise FetchError(f"{url}: no network in tests")
        return self.documents[url]


OFFICIAL_STATUS_LISTS = OfflineStatusLists(
    {COMPLETE_REVOCATION_LIST: {"id": COMPLETE_REVOCATION_LIST, "revokedCredential": []}})


def offline_verifier(local: dict[str, dict] | None = None, *, now: datetime = FIXTURE_NOW,
                     loader=None) -> Verifier:
    return Verifier(KeyResolver(local, fetch=no_network), now=lambda: now, loader=loader,
                    status_lists=OFFICIAL_STATUS_LISTS)


def checks(result) -> dict[str, bool | None]:
    return {c.name: c.ok for c in result.checks}


# --- official 1EdTech fixtures ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["simple.json", "simple-did-web-method.json", "simple-multiple-proofs.json",
                                  "simple-eddsa-2022.json", "complete.json", "endorsement-valid.json"])
def test_official_signed_fixtures_verify_offline(load_standard, name: str) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/{name}"))
    assert result.verified, result.errors
    assert checks(result)["proof"] is True and checks(result)["key_provenance"] is True
    assert [c.name for c in result.checks] == list(CHECK_NAMES)


def test_simple_fixture_verifies_with_the_real_clock(load_standard) -> None:
    """simple.json has no validUntil, so the real clock is safe here (and proves the default works)."""
    verifier = Verifier(KeyResolver(fetch=no_network))
    result = verifier.verify_credential(load_standard(f"{FIXTURES}/simple.json"))
    assert result.verified, result.errors


def test_endorsement_credential_gets_a_structure_check_not_the_achievement_schema(load_standard) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/endorsement-valid.json"))
    assert "EndorsementCredential" in result.check("schema").detail
    assert "does not apply" in result.check("schema").detail


def test_vcdm_1_1_fixture_verifies_with_the_bundled_unversioned_context(load_standard) -> None:
    """simple_v1.json uses the unversioned OB context (3.0.0), which we bundle for early OB 3.0 badges."""
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple_v1.json"))
    assert result.verified, result.errors
    assert "Ed25519Signature2020" in result.check("proof").detail
    assert result.summary["issuanceDate"] == "2010-01-01T00:00:00Z"


def test_multiple_proofs_warn_about_the_unknown_type_and_pass_on_the_valid_one(load_standard) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple-multiple-proofs.json"))
    assert result.verified
    assert any("SomeProofType" in w and "ignored" in w for w in result.warnings)


def test_fragment_keys_verify_with_a_warning_that_the_issuer_did_not_confirm_them(load_standard) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple.json"))
    assert any("read from the method URL itself" in w for w in result.warnings)


def test_did_key_fixture_verifies_with_a_warning_that_its_issuer_id_publishes_no_keys(load_standard) -> None:
    """Decision: its issuer is a urn:uuid, which can publish no key, so (as 1EdTech's validator does) a
    did:key proof is accepted, with a warning that only a trust list can make such an issuer trusted."""
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple-did-key-method.json"))
    assert checks(result)["proof"] is True
    assert checks(result)["key_provenance"] is True
    assert any("cannot be dereferenced" in w and "trust list" in w for w in result.warnings)
    assert result.verified


def test_a_did_key_cannot_sign_for_an_issuer_that_publishes_keys(load_standard) -> None:
    """An https or did issuer can publish its keys, so someone else's did:key never speaks for it."""
    doc = load_standard(f"{FIXTURES}/simple.json")
    doc.pop("proof")
    private = ed25519.Ed25519PrivateKey.generate()
    did = multikey.did_key(private.public_key())
    signed = proofs.create_eddsa_rdfc_2022(doc, private, f"{did}#{did[len('did:key:'):]}")
    result = offline_verifier().verify_credential(signed)
    assert checks(result)["proof"] is True
    assert checks(result)["key_provenance"] is False
    assert f"is not the issuer {doc['issuer']['id']}" in result.check("key_provenance").detail
    assert not result.verified


def test_expired_fixture_fails_only_the_validity_window_with_the_dates(load_standard) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple-err-expired.json"))
    assert not result.verified
    assert checks(result)["proof"] is True and checks(result)["validity_window"] is False
    assert "expired: validUntil 2010-01-01T00:00:00Z" in result.check("validity_window").detail
    assert result.errors == [f"validity_window: {result.check('validity_window').detail}"]


def test_bad_proof_value_fixture_fails_the_proof(load_standard) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple-err-proof-value.json"))
    assert not result.verified
    assert checks(result)["proof"] is False and checks(result)["key_provenance"] is None
    assert "signature does not match" in result.check("proof").detail


def test_only_the_first_few_proofs_of_a_huge_proof_set_are_examined(load_standard) -> None:
    doc = load_standard(f"{FIXTURES}/simple.json")
    doc["proof"] = [{"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022",
                     "proofPurpose": "assertionMethod", "verificationMethod": f"did:web:host{i}.example#k",
                     "proofValue": "z1"} for i in range(50)]
    fetched: list[str] = []

    def count(url: str) -> dict:
        fetched.append(url)
        raise FetchError("no network in tests")

    result = Verifier(KeyResolver(fetch=count), now=lambda: FIXTURE_NOW).verify_credential(doc)
    assert not result.verified and len(fetched) == 8
    assert "only the first 8 of 50 proofs were examined" in result.warnings


def test_credential_without_proof_fails(load_standard) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/simple-noproof.json"))
    assert not result.verified
    assert result.check("proof").detail == "the credential has no proof"


def test_credential_status_is_checked_and_fails_closed_without_a_status_source(load_standard) -> None:
    """Issue #5 changed this: a status entry is no longer "not checked" but read, or the badge fails."""
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/complete.json"))
    status = result.check("status")
    assert status.ok is True and "not listed in the 1EdTech revocation list" in status.detail
    assert result.verified
    without_source = Verifier(KeyResolver(fetch=no_network), now=lambda: FIXTURE_NOW)
    result = without_source.verify_credential(load_standard(f"{FIXTURES}/complete.json"))
    assert result.check("status").ok is False and "no status list source" in result.check("status").detail
    assert not result.verified


@pytest.mark.parametrize(("email", "ok"), [("  Student@1EdTech.edu ", True), ("somebody@gmail.com", True),
                                           ("student@1edtech.org", False)])
def test_plain_text_recipient_identifiers_are_compared_normalised(load_standard, email: str,
                                                                  ok: bool) -> None:
    result = offline_verifier().verify_credential(load_standard(f"{FIXTURES}/complete.json"),
                                                  recipient_email=email)
    assert result.check("recipient").ok is ok
    assert result.verified is ok


def test_unknown_context_is_named_in_the_jsonld_check(load_standard) -> None:
    doc = load_standard(f"{FIXTURES}/simple.json")
    doc["@context"] = [*doc["@context"], "https://contexts.example/unknown.json"]
    result = offline_verifier().verify_credential(doc)
    assert result.check("jsonld").ok is False
    assert "unknown context https://contexts.example/unknown.json" in result.check("jsonld").detail


def test_simple_jwt_fixture_without_any_key_reference_fails_the_proof(load_standard) -> None:
    result = offline_verifier().verify_jwt(load_standard(f"{FIXTURES}/simple.jwt"))
    assert result.format == "vc-jwt" and not result.verified
    assert "names no key" in result.check("proof").detail
    assert result.summary["issuer"]["id"] == "https://example.edu/issuers/565049"


# --- our own badges -----------------------------------------------------------------------------------

def unsigned_credential(issuer_id: str, *, valid_from: str = "2024-01-15T09:00:00Z",
                        valid_until: str | None = None, subject_id: str | None = None) -> dict:
    subject = {
        "type": ["AchievementSubject"],
        "identifier": [{"type": "IdentityObject", "identityHash": hash_identity(normalise_email(EMAIL), SALT),
                        "identityType": "emailAddress", "hashed": True, "salt": SALT}],
        "achievement": {
            "id": "https://badges.example.edu/achievements/data-101",
            "type": ["Achievement"],
            "achievementType": "Competency",
            "name": "數據分析基礎 Data Analysis 101",
            "description": "Completed the 30-hour microcredential.",
            "criteria": {"narrative": "Pass the final assessment."},
        },
    }
    if subject_id:
        subject["id"] = subject_id
    doc = {
        "@context": OB_CONTEXT,
        "id": "urn:uuid:0b3f1c1e-6a52-4a8e-9d4e-0c1f2a3b4c5d",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": "Data Analysis 101",
        "issuer": {"id": issuer_id, "type": ["Profile"], "name": "School of Continuing Studies"},
        "validFrom": valid_from,
        "credentialSubject": subject,
    }
    if valid_until:
        doc["validUntil"] = valid_until
    return doc


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey.generate("Ed25519")


@pytest.fixture(scope="module")
def did_key_badge() -> dict:
    private = ed25519.Ed25519PrivateKey.generate()
    did = multikey.did_key(private.public_key())
    value = did[len("did:key:"):]
    return proofs.create_eddsa_rdfc_2022(unsigned_credential(did), private, f"{did}#{value}",
                                         created="2024-01-15T09:00:00Z")


@pytest.fixture(scope="module")
def did_web_badge(ed_key) -> dict:
    return proofs.create_eddsa_rdfc_2022(unsigned_credential(ISSUER_DID), ed_key.private_key,
                                         f"{ISSUER_DID}#{ed_key.kid}", created="2024-01-15T09:00:00Z")


def test_our_did_key_badge_verifies_and_matches_its_recipient(did_key_badge) -> None:
    result = offline_verifier().verify_credential(did_key_badge, recipient_email="  learner.one@example.EDU")
    assert result.verified, result.errors
    assert all(c.ok is True for c in result.checks if c.name != "status")
    assert result.check("recipient").detail == "the email matches the credential's hashed email identifier"


def test_our_did_web_badge_verifies_offline_from_the_local_did_document(did_web_badge, ed_key) -> None:
    verifier = offline_verifier({ISSUER_DID: did_document(ISSUER_DID, [ed_key])})
    result = verifier.verify_credential(did_web_badge)
    assert result.verified, result.errors
    assert result.warnings == []  # a did:web key is confirmed by the issuer's own document


def test_our_did_web_badge_fails_once_its_key_is_removed_from_the_did_document(did_web_badge, ed_key) -> None:
    """A compromised key is deleted from the DID document; its badges must stop verifying."""
    replacement = SigningKey.generate("Ed25519")
    verifier = offline_verifier({ISSUER_DID: did_document(ISSUER_DID, [replacement])})
    result = verifier.verify_credential(did_web_badge)
    assert not result.verified
    assert "not found" in result.check("proof").detail


def test_recipient_mismatch_fails_only_the_recipient_check(did_key_badge) -> None:
    result = offline_verifier().verify_credential(did_key_badge, recipient_email="someone.else@example.edu")
    assert not result.verified
    assert [c.name for c in result.checks if c.ok is False] == ["recipient"]


@pytest.mark.parametrize(("identity_hash", "email", "ok"), [
    ("md5$" + hashlib.md5(b"learner@example.edu" + SALT.encode()).hexdigest(), "Learner@Example.edu", True),
    ("SHA256$" + hash_identity("learner@example.edu", SALT)[7:].upper(), "learner@example.edu", True),
    ("sha512$00", "learner@example.edu", False),
])
def test_recipient_hashes_in_md5_or_upper_case_are_understood(identity_hash: str, email: str,
                                                              ok: bool) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    did = multikey.did_key(private.public_key())
    doc = unsigned_credential(did)
    doc["credentialSubject"]["identifier"][0]["identityHash"] = identity_hash
    signed = proofs.create_eddsa_rdfc_2022(doc, private, f"{did}#{did[8:]}")
    assert offline_verifier().verify_credential(signed, recipient_email=email).check("recipient").ok is ok


def test_recipient_is_not_checked_without_an_email(did_key_badge) -> None:
    result = offline_verifier().verify_credential(did_key_badge)
    assert result.check("recipient").ok is None and result.verified


@pytest.mark.parametrize(
    ("now", "message"),
    [(datetime(2024, 1, 15, 8, 59, 59, tzinfo=UTC), "not yet valid: validFrom 2024-01-15T09:00:00Z"),
     (datetime(2025, 1, 15, 9, 0, 1, tzinfo=UTC), "expired: validUntil 2025-01-15T09:00:00Z")],
)
def test_validity_window_is_enforced_with_the_dates_in_the_detail(now: datetime, message: str) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    did = multikey.did_key(private.public_key())
    doc = proofs.create_eddsa_rdfc_2022(unsigned_credential(did, valid_until="2025-01-15T09:00:00Z"), private,
                                        f"{did}#{did[8:]}")
    result = offline_verifier(now=now).verify_credential(doc)
    assert not result.verified
    assert checks(result)["proof"] is True and checks(result)["validity_window"] is False
    assert result.check("validity_window").detail.startswith(message)
    inside = offline_verifier(now=datetime(2024, 7, 1, tzinfo=UTC)).verify_credential(doc)
    assert inside.verified, inside.errors


def test_changing_any_single_byte_of_a_signed_badge_makes_it_fail(did_key_badge) -> None:
    """Flip the low bit of every byte of the serialised badge; every variant that still parses as a
    credential must fail verification (any change to what is shown must break what is signed)."""
    text = json.dumps(did_key_badge, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    verifier = offline_verifier()
    assert verifier.verify_submission(parse_submission(text)).verified
    tried = 0
    for position in range(len(text)):
        mutated = text[:position] + bytes([text[position] ^ 1]) + text[position + 1:]
        try:
            submission = parse_submission(mutated)
        except FormatError:
            continue
        tried += 1
        result = verifier.verify_submission(submission)
        assert not result.verified, f"byte {position} ({text[position:position + 1]!r}) flipped, verified"
    assert tried > len(text) // 2  # most flips leave valid JSON: the test really exercises the verifier


def test_changing_any_single_value_of_a_signed_badge_makes_it_fail(did_key_badge) -> None:
    """Every leaf value (strings, numbers, booleans) replaced by a near-identical one."""
    verifier = offline_verifier()

    def leaves(node, path=()):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from leaves(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from leaves(value, (*path, index))
        else:
            yield path, node

    paths = list(leaves(did_key_badge))
    assert len(paths) > 20
    for path, value in paths:
        doc = copy.deepcopy(did_key_badge)
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = (value + " ") if isinstance(value, str) else (not value if isinstance(value, bool)
                                                                        else value + 1)
        assert not verifier.verify_credential(doc).verified, f"changing {path} still verified"


# --- VC-JWT -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return SigningKey.generate("ES256")


def jwt_credential() -> dict:
    holder = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    return unsigned_credential(ISSUER_DID, subject_id=holder)


def test_jwt_with_a_kid_in_the_issuers_did_document_verifies(es_key) -> None:
    token = vcjwt.sign_vc_jwt(jwt_credential(), es_key, f"{ISSUER_DID}#{es_key.kid}")
    result = offline_verifier({ISSUER_DID: did_document(ISSUER_DID, [es_key])}).verify_jwt(
        token, recipient_email=EMAIL)
    assert result.format == "vc-jwt"
    assert result.verified, result.errors
    expected = f"kid {ISSUER_DID}#{es_key.kid} is published by the issuer {ISSUER_DID}"
    assert result.check("key_provenance").detail == expected
    assert result.credential["iss"] == ISSUER_DID
    assert result.summary["recipient"]["hashed"] is True


def jwk_header_token(key: SigningKey) -> str:
    """A VC-JWT that carries its key in the header (jwk) instead of naming it (kid)."""
    credential = jwt_credential()
    payload = {**credential, **vcjwt.jwt_claims(credential)}
    jwk = {k: v for k, v in key.public_jwk().items() if k in ("kty", "crv", "x", "y")}
    return pyjwt.encode(payload, key.private_key, algorithm="ES256", headers={"jwk": jwk, "typ": "JWT"})


def test_jwt_with_a_header_jwk_the_issuer_does_not_publish_fails_provenance(es_key) -> None:
    stranger = SigningKey.generate("ES256")
    local = {ISSUER_DID: did_document(ISSUER_DID, [es_key]),
             "https://badges.example.edu/.well-known/jwks.json": jwks([es_key])}
    result = offline_verifier(local).verify_jwt(jwk_header_token(stranger))
    assert result.check("proof").ok is True  # the signature itself is fine ...
    assert result.check("key_provenance").ok is False  # ... but anyone can make such a token
    assert result.check("key_provenance").detail.startswith("key not published by the issuer")
    assert not result.verified


def test_jwt_with_a_header_jwk_found_in_the_issuers_jwk_set_passes_provenance(es_key) -> None:
    local = {ISSUER_DID: did_document(ISSUER_DID, []),
             "https://badges.example.edu/.well-known/jwks.json": jwks([es_key])}
    result = offline_verifier(local).verify_jwt(jwk_header_token(es_key))
    assert result.verified, result.errors


def test_jwt_provenance_failure_is_reported_even_when_the_issuer_documents_are_unreachable(es_key) -> None:
    result = offline_verifier().verify_jwt(jwk_header_token(es_key))
    assert result.check("key_provenance").ok is False
    assert "no network in tests" in result.check("key_provenance").detail


def test_jwt_with_a_tampered_payload_fails_the_proof(es_key) -> None:
    token = vcjwt.sign_vc_jwt(jwt_credential(), es_key, f"{ISSUER_DID}#{es_key.kid}")
    header, payload, signature = token.split(".")
    claims = json.loads(pyjwt.utils.base64url_decode(payload))
    claims["name"] = "Data Analysis 102"
    forged = ".".join([header, pyjwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), signature])
    result = offline_verifier({ISSUER_DID: did_document(ISSUER_DID, [es_key])}).verify_jwt(forged)
    assert not result.verified
    assert result.check("proof").ok is False and "signature" in result.check("proof").detail


def test_jwt_kid_of_a_key_the_issuer_removed_fails(es_key) -> None:
    token = vcjwt.sign_vc_jwt(jwt_credential(), es_key, f"{ISSUER_DID}#{es_key.kid}")
    rotated_away = did_document(ISSUER_DID, [SigningKey.generate("ES256")])
    result = offline_verifier({ISSUER_DID: rotated_away}).verify_jwt(token)
    assert not result.verified and "cannot dereference kid" in result.check("proof").detail


# --- submissions ------------------------------------------------------------------------------------------

def test_submissions_are_dispatched_by_format(did_key_badge, es_key) -> None:
    verifier = offline_verifier({ISSUER_DID: did_document(ISSUER_DID, [es_key])})
    token = vcjwt.sign_vc_jwt(jwt_credential(), es_key, f"{ISSUER_DID}#{es_key.kid}")
    submission = parse_submission(token + "\n", "text/plain", "badge.jwt")
    assert verifier.verify_submission(submission).format == "vc-jwt"
    assert verifier.verify_submission(parse_submission(json.dumps(did_key_badge))).verified


def test_json_submission_is_parsed() -> None:
    assert parse_submission(b'\xef\xbb\xbf {"a": [1, {"b": null}]}\n', "application/json", "x.json") == \
        Submission("json-ld", credential={"a": [1, {"b": None}]})


def test_jws_submission_is_detected() -> None:
    token = pyjwt.encode({"iss": "x"}, "secret-key-for-a-format-test-only", algorithm="HS256")
    assert parse_submission(token.encode()) == Submission("vc-jwt", jwt=token)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"  \n ", "empty"),
        (b"\xef\xbb\xbf ", "empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be an object"),
        (b'"just a string"', "must be an object"),
        (b'{"a": 1, "a": 2}', "duplicate member name 'a'"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": ', "not valid JSON"),
        (b"hello world", "neither JSON nor a compact JWS"),
        (b"aGVsbG8.d29ybGQ.c2ln", "header is not base64url JSON"),
        (b"eyJmb28iOjF9.e30.c2ln", "header has no alg"),
        (b"[" * 65 + b"]" * 65, r"nested too deep \(65 levels"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "baked PNG badge: PNG is truncated"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "carries no Open Badges"),
        ("{\"a\": \"\udc80\"}", "not UTF-8"),
    ],
)
def test_unreadable_submissions_are_refused_with_the_problem_named(data, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_submission(data, None, None)


def test_nesting_at_the_limit_is_accepted_and_brackets_inside_strings_do_not_count() -> None:
    deep = '{"a":' * 63 + '{"s": "' + "[" * 70 + '"}' + "}" * 63
    assert parse_submission(deep).format == "json-ld"


def test_oversized_submission_is_refused() -> None:
    with pytest.raises(FormatError, match="too large"):
        parse_submission(b'{"a": "' + b"x" * MAX_BYTES + b'"}')


# --- never raise, safe defaults -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "doc",
    [None, [], "text", {}, {"proof": 5}, {"@context": 5, "proof": {"type": "DataIntegrityProof"}},
     {"@context": OB_CONTEXT, "issuer": {"id": 3}, "credentialSubject": [], "validFrom": "yesterday",
      "proof": [{"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022", "verificationMethod": 7}]},
     {"@context": OB_CONTEXT, "type": "VerifiableCredential", "issuer": "did:key:zzz",
      "credentialSubject": {"identifier": "x"}, "proof": [None, {"type": "Ed25519Signature2020"}]}],
)
def test_garbage_credentials_never_raise_and_never_verify(doc) -> None:
    result = offline_verifier().verify_credential(doc, recipient_email="a@b.c")
    assert not result.verified
    assert [c.name for c in result.checks] == list(CHECK_NAMES)
    json.dumps(result.to_json())


@pytest.mark.parametrize("token", ["", "a.b.c", "e30.e30.e30", b"\xff\xff", 42, None,
                                   "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."])
def test_garbage_jwts_never_raise_and_never_verify(token) -> None:
    result = offline_verifier().verify_jwt(token)
    assert not result.verified and result.format == "vc-jwt"


def test_no_checks_or_only_skipped_checks_do_not_verify() -> None:
    assert not all_passed([])
    assert not all_passed([Check("status", None, "not checked")])
    assert all_passed([Check("proof", True, ""), Check("status", None, "")])
    assert not all_passed([Check("proof", True, ""), Check("schema", False, "")])
    assert not Check("proof", None, "") and not Check("proof", False, "") and Check("proof", True, "")


def test_report_json_summarises_the_credential(did_key_badge) -> None:
    report = offline_verifier().verify_credential(did_key_badge).to_json()
    assert set(report) == {"verified", "format", "checks", "errors", "warnings", "credential"}
    assert report["checks"][0] == {"name": "schema", "ok": True,
                                   "detail": "valid against the OB 3.0 AchievementCredential schema"}
    summary = report["credential"]
    assert summary["issuer"] == {"id": did_key_badge["issuer"]["id"], "name": "School of Continuing Studies"}
    assert summary["achievement"] == {"id": "https://badges.example.edu/achievements/data-101",
                                      "name": "數據分析基礎 Data Analysis 101", "achievementType": "Competency"}
    assert summary["recipient"] == {"id": None, "identityType": "emailAddress", "hashed": True}
    assert summary["validFrom"] == "2024-01-15T09:00:00Z"
    assert "proof" not in summary and SALT not in json.dumps(summary)
