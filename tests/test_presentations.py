"""Verifiable presentations: challenges, holder binding, replay, tampering; did:key holders only need no network."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from issuer.multikey import did_key
from issuer.presentations import (
    JWT_DATA_URL_PREFIX,
    VC_V1_CONTEXT,
    VC_V2_CONTEXT,
    ChallengeIssuer,
    MemoryChallengeStore,
    PresentationError,
    create_presentation,
    verify_presentation,
)
from issuer.proofs import ProofError, create_eddsa_rdfc_2022
from issuer.resolve import KeyResolver

OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
DI_V2_CONTEXT = "https://w3id.org/security/data-integrity/v2"
DOMAIN = "issuer.example"
SECRET = b"s" * 32
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
JWT_A = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJhIn0.c2lnLWE"
JWT_B = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJiIn0.c2lnLWI"


class Clock:
    """A settable clock, injected as `now` so expiry is tested without sleeping."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


class Party:
    """A did:key identity: its DID, its verification method and its private key."""

    def __init__(self, seed: int) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        self.did = did_key(self.key.public_key())
        self.vm = f"{self.did}#{self.did.removeprefix('did:key:')}"


LEARNER = Party(1)
STRANGER = Party(2)
ISSUER = Party(3)


def badge(name: str) -> dict:
    """A small OB 3.0 credential issued (and signed) to the learner's DID."""
    unsigned = {
        "@context": [VC_V2_CONTEXT, OB_CONTEXT],
        "id": f"urn:example:badge:{name}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {"id": ISSUER.did, "type": ["Profile"], "name": "Test issuer"},
        "validFrom": "2026-01-01T00:00:00Z",
        "name": name,
        "credentialSubject": {
            "id": LEARNER.did,
            "type": ["AchievementSubject"],
            "achievement": {
                "id": f"https://issuer.example/achievements/{name}",
                "type": ["Achievement"],
                "name": name,
                "description": "A test achievement",
                "criteria": {"narrative": "Pass"},
            },
        },
    }
    return create_eddsa_rdfc_2022(unsigned, ISSUER.key, ISSUER.vm, created="2026-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def badges() -> list[dict]:
    return [badge("da101"), badge("ai201")]


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def challenges(clock: Clock) -> ChallengeIssuer:
    return ChallengeIssuer(SECRET, ttl_seconds=600, now=clock)


@pytest.fixture
def store(clock: Clock) -> MemoryChallengeStore:
    return MemoryChallengeStore(now=clock)


def present(credentials, challenge: str, *, signer: Party = LEARNER, holder: str | None = None,
            domain: str = DOMAIN) -> dict:
    return create_presentation(credentials, holder=holder or LEARNER.did, private_key=signer.key,
                               verification_method=signer.vm, challenge=challenge, domain=domain)


def verify(vp: dict, challenges: ChallengeIssuer, store: MemoryChallengeStore, *, domain: str = DOMAIN,
           resolver: KeyResolver | None = None):
    return verify_presentation(vp, resolver=resolver or KeyResolver(), challenges=challenges, store=store,
                               domain=domain)


# --- challenges ----------------------------------------------------------------------------------------


def test_issued_challenge_names_its_domain_and_expiry_and_checks(challenges):
    issued = challenges.issue(DOMAIN)
    assert issued["domain"] == DOMAIN
    assert issued["expires"] == "2026-03-01T09:10:00Z"
    assert challenges.check(issued["challenge"], DOMAIN) is None
    assert challenges.issue(DOMAIN)["challenge"] != issued["challenge"]


def test_challenge_for_another_domain_is_refused(challenges):
    challenge = challenges.issue("other.example")["challenge"]
    with pytest.raises(PresentationError, match="not issued by this service for domain"):
        challenges.check(challenge, DOMAIN)


@pytest.mark.parametrize("alter", [
    lambda c: c[:10] + ("A" if c[10] != "A" else "B") + c[11:],  # a changed byte
    lambda c: c[:-4],  # truncated
    lambda c: c + "AAAA",  # extended
    lambda c: "not base64!",
    lambda c: c + "==",  # another spelling of the same bytes
])
def test_altered_or_forged_challenge_is_refused(challenges, alter):
    challenge = challenges.issue(DOMAIN)["challenge"]
    with pytest.raises(PresentationError, match="not issued by this service"):
        challenges.check(alter(challenge), DOMAIN)


def test_challenge_made_with_another_secret_is_refused(clock):
    forged = ChallengeIssuer(b"x" * 32, now=clock).issue(DOMAIN)["challenge"]
    with pytest.raises(PresentationError, match="not issued by this service"):
        ChallengeIssuer(SECRET, now=clock).check(forged, DOMAIN)


def test_challenge_expires_after_its_ttl(challenges, clock):
    challenge = challenges.issue(DOMAIN)["challenge"]
    clock.moment = START + timedelta(seconds=599)
    challenges.check(challenge, DOMAIN)
    clock.moment = START + timedelta(seconds=600)
    with pytest.raises(PresentationError, match="expired at 2026-03-01T09:10:00Z"):
        challenges.check(challenge, DOMAIN)


def test_short_secret_is_rejected():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        ChallengeIssuer(b"short")


def test_memory_store_accepts_once_and_forgets_expired(clock):
    store = MemoryChallengeStore(now=clock)
    expires = START + timedelta(minutes=10)
    assert store.consume("c1", expires) is True
    assert store.consume("c1", expires) is False
    clock.moment = expires
    assert store.consume("c2", expires + timedelta(minutes=10)) is True
    assert "c1" not in store._used


# --- verify_presentation -------------------------------------------------------------------------------


def test_did_key_holder_roundtrip_returns_holder_and_credentials_unchanged(badges, challenges, store):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    assert vp["proof"]["proofPurpose"] == "authentication"
    assert vp["proof"]["domain"] == DOMAIN

    presented = verify(vp, challenges, store)

    assert presented.holder == LEARNER.did
    assert presented.credentials == badges
    assert all(c["credentialSubject"]["id"] == presented.holder for c in presented.credentials)


def test_single_credential_object_is_returned_as_a_list(badges, challenges, store):
    unsigned = {"@context": [VC_V2_CONTEXT], "type": ["VerifiablePresentation"], "holder": LEARNER.did,
                "verifiableCredential": badges[0]}
    vp = create_eddsa_rdfc_2022(unsigned, LEARNER.key, LEARNER.vm, proof_purpose="authentication",
                                extra={"challenge": challenges.issue(DOMAIN)["challenge"], "domain": DOMAIN})
    assert verify(vp, challenges, store).credentials == [badges[0]]


def test_vcdm_1_1_presentation_is_accepted(challenges, store):
    credential = create_eddsa_rdfc_2022(
        {"@context": [VC_V1_CONTEXT, DI_V2_CONTEXT], "type": ["VerifiableCredential"], "issuer": ISSUER.did,
         "issuanceDate": "2026-01-01T00:00:00Z", "credentialSubject": {"id": LEARNER.did}},
        ISSUER.key, ISSUER.vm)
    unsigned = {
        "@context": [VC_V1_CONTEXT, DI_V2_CONTEXT],
        "type": ["VerifiablePresentation"],
        "holder": {"id": LEARNER.did},
        "verifiableCredential": [credential],
    }
    challenge = challenges.issue(DOMAIN)["challenge"]
    vp = create_eddsa_rdfc_2022(unsigned, LEARNER.key, LEARNER.vm, proof_purpose="authentication",
                                extra={"challenge": challenge, "domain": DOMAIN})
    presented = verify(vp, challenges, store)
    assert (presented.holder, presented.credentials) == (LEARNER.did, [credential])


def test_presentation_for_another_domain_is_refused(badges, challenges, store):
    vp = present(badges, challenges.issue("other.example")["challenge"], domain="other.example")
    with pytest.raises(PresentationError, match="proof domain 'other.example' is not"):
        verify(vp, challenges, store)


def test_domain_in_proof_must_be_the_one_the_challenge_was_issued_for(badges, challenges, store):
    vp = present(badges, challenges.issue("other.example")["challenge"], domain=DOMAIN)
    with pytest.raises(PresentationError, match="not issued by this service for domain"):
        verify(vp, challenges, store)


def test_altered_challenge_in_presentation_is_refused(badges, challenges, store):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    c = vp["proof"]["challenge"]
    vp["proof"]["challenge"] = c[:5] + ("A" if c[5] != "A" else "B") + c[6:]
    with pytest.raises(PresentationError, match="not issued by this service"):
        verify(vp, challenges, store)


def test_swapping_in_another_valid_challenge_breaks_the_signature(badges, challenges, store):
    """challenge and domain are proof options, so the signature covers them."""
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    vp["proof"]["challenge"] = challenges.issue(DOMAIN)["challenge"]
    with pytest.raises(PresentationError, match="signature does not match"):
        verify(vp, challenges, store)


def test_expired_challenge_is_refused(badges, challenges, store, clock):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    clock.moment = START + timedelta(minutes=11)
    with pytest.raises(PresentationError, match="expired"):
        verify(vp, challenges, store)


def test_replayed_presentation_is_refused(badges, challenges, store):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    verify(vp, challenges, store)
    with pytest.raises(PresentationError, match="challenge already used"):
        verify(copy.deepcopy(vp), challenges, store)


def test_failed_presentation_does_not_use_up_the_challenge(badges, challenges, store):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    tampered = copy.deepcopy(vp)
    tampered["verifiableCredential"] = tampered["verifiableCredential"][:1]
    with pytest.raises(PresentationError):
        verify(tampered, challenges, store)
    assert verify(vp, challenges, store).holder == LEARNER.did


def test_signature_by_a_key_the_holder_does_not_control_is_refused(badges, challenges, store):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"], signer=STRANGER, holder=LEARNER.did)
    with pytest.raises(PresentationError, match=f"controlled by {STRANGER.did}, not by the holder"):
        verify(vp, challenges, store)


@pytest.mark.parametrize("tamper", [
    lambda vp: vp["verifiableCredential"].pop(),
    lambda vp: vp["verifiableCredential"].append(badge("extra")),
    lambda vp: vp["verifiableCredential"][0].update(name="Something else"),
    lambda vp: vp.update(holder=STRANGER.did),
])
def test_presentation_changed_after_signing_is_refused(badges, challenges, store, tamper):
    vp = present(copy.deepcopy(badges), challenges.issue(DOMAIN)["challenge"])
    tamper(vp)
    with pytest.raises(PresentationError):
        verify(vp, challenges, store)


def test_presentation_without_proof_is_refused(badges, challenges, store):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    del vp["proof"]
    with pytest.raises(PresentationError, match="has no proof"):
        verify(vp, challenges, store)


def test_assertion_method_proof_is_refused(badges, challenges, store):
    unsigned = {"@context": [VC_V2_CONTEXT], "type": ["VerifiablePresentation"], "holder": LEARNER.did,
                "verifiableCredential": badges}
    vp = create_eddsa_rdfc_2022(unsigned, LEARNER.key, LEARNER.vm, proof_purpose="assertionMethod",
                                extra={"challenge": challenges.issue(DOMAIN)["challenge"], "domain": DOMAIN})
    with pytest.raises(PresentationError, match="proofPurpose is 'assertionMethod'"):
        verify(vp, challenges, store)


@pytest.mark.parametrize(("change", "message"), [
    (lambda vp: vp.update({"@context": ["https://example.org/ctx"]}), "@context must start with"),
    (lambda vp: vp.update(type=["VerifiableCredential"]), "type must include"),
    (lambda vp: vp.update(holder="https://learner.example"), "holder must be a DID"),
    (lambda vp: vp.pop("verifiableCredential"), "no verifiableCredential"),
    (lambda vp: vp["proof"].pop("challenge"), "proof has no challenge"),
    (lambda vp: vp["proof"].pop("domain"), "proof has no domain"),
    (lambda vp: vp["proof"].update(cryptosuite="ecdsa-rdfc-2019"), "cryptosuite eddsa-rdfc-2022"),
    (lambda vp: vp.update(proof=[vp["proof"], vp["proof"]]), "expected exactly one"),
])
def test_malformed_presentation_is_refused_with_a_reason(badges, challenges, store, change, message):
    vp = present(badges, challenges.issue(DOMAIN)["challenge"])
    change(vp)
    with pytest.raises(PresentationError, match=message):
        verify(vp, challenges, store)


def test_jwt_string_and_enveloped_jwt_are_returned_as_compact_jwts(badges, challenges, store):
    enveloped = {"@context": VC_V2_CONTEXT, "type": "EnvelopedVerifiableCredential",
                 "id": JWT_DATA_URL_PREFIX + JWT_B}
    vp = present([JWT_A, enveloped, badges[0]], challenges.issue(DOMAIN)["challenge"])
    assert vp["verifiableCredential"][0]["id"] == JWT_DATA_URL_PREFIX + JWT_A  # wrapped, so it is signed

    assert verify(vp, challenges, store).credentials == [JWT_A, JWT_B, badges[0]]


def test_swapping_an_enveloped_jwt_breaks_the_signature(challenges, store):
    vp = present([JWT_A], challenges.issue(DOMAIN)["challenge"])
    vp["verifiableCredential"][0]["id"] = JWT_DATA_URL_PREFIX + JWT_B
    with pytest.raises(PresentationError, match="signature does not match"):
        verify(vp, challenges, store)


def test_bare_jwt_string_is_refused_because_the_proof_does_not_cover_it(challenges, store):
    unsigned = {"@context": [VC_V2_CONTEXT], "type": ["VerifiablePresentation"], "holder": LEARNER.did,
                "verifiableCredential": [JWT_A]}
    # Why: JSON-LD drops the bare string, so a proof would not cover it; we refuse to sign such a VP...
    with pytest.raises(ProofError, match="plain value inside a graph"):
        create_eddsa_rdfc_2022(unsigned, LEARNER.key, LEARNER.vm, proof_purpose="authentication",
                               extra={"challenge": challenges.issue(DOMAIN)["challenge"], "domain": DOMAIN})
    # ...and refuse one that someone else signed (or edited after signing) to carry one.
    vp = {**present([JWT_A], challenges.issue(DOMAIN)["challenge"]), "verifiableCredential": [JWT_B]}
    with pytest.raises(PresentationError, match="bare string, which a Data Integrity proof does not sign"):
        verify(vp, challenges, store)


def test_enveloped_entry_must_hold_a_jwt_data_url(challenges, store):
    bad = {"@context": VC_V2_CONTEXT, "type": "EnvelopedVerifiableCredential", "id": "https://x.example/vc"}
    vp = present([bad], challenges.issue(DOMAIN)["challenge"])
    with pytest.raises(PresentationError, match="not a data:application/vc\\+jwt, URL"):
        verify(vp, challenges, store)


# --- did:web holders (documents supplied locally: no network) ---------------------------------------


def did_web_resolver(*, authentication: bool) -> tuple[str, str, KeyResolver]:
    did = "did:web:learner.example"
    vm = f"{did}#key-1"
    method = {"id": vm, "type": "Multikey", "controller": did,
              "publicKeyMultibase": LEARNER.did.removeprefix("did:key:")}
    document = {"@context": ["https://www.w3.org/ns/did/v1"], "id": did, "verificationMethod": [method],
                "assertionMethod": [vm], "authentication": ["#key-1"] if authentication else []}
    return did, vm, KeyResolver({did: document}, fetch=lambda url: pytest.fail(f"fetched {url}"))


def test_did_web_holder_with_an_authentication_key_is_accepted(challenges, store):
    did, vm, resolver = did_web_resolver(authentication=True)
    vp = create_presentation([JWT_A], holder=did, private_key=LEARNER.key, verification_method=vm,
                             challenge=challenges.issue(DOMAIN)["challenge"], domain=DOMAIN)
    assert verify(vp, challenges, store, resolver=resolver).holder == did


def test_did_web_key_not_listed_for_authentication_is_refused(challenges, store):
    did, vm, resolver = did_web_resolver(authentication=False)
    vp = create_presentation([JWT_A], holder=did, private_key=LEARNER.key, verification_method=vm,
                             challenge=challenges.issue(DOMAIN)["challenge"], domain=DOMAIN)
    with pytest.raises(PresentationError, match="not listed under authentication"):
        verify(vp, challenges, store, resolver=resolver)


# --- proofs.py: the `extra` proof options -----------------------------------------------------------


def test_extra_proof_options_cannot_replace_the_core_fields():
    doc = {"@context": [VC_V2_CONTEXT], "type": ["VerifiablePresentation"], "holder": LEARNER.did}
    with pytest.raises(ProofError, match="may not set proofPurpose"):
        create_eddsa_rdfc_2022(doc, LEARNER.key, LEARNER.vm, extra={"proofPurpose": "authentication"})
