"""Data Integrity proofs: the official vectors byte for byte, the 1EdTech fixtures, tampering, errors."""

from __future__ import annotations

import copy
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from issuer import jsonld
from issuer.multikey import b58btc_decode, ed25519_from_multibase, ed25519_to_multibase
from issuer.proofs import ProofError, create_eddsa_rdfc_2022, proofs_of, verify_proof

EXAMPLES_V2 = "https://www.w3.org/ns/credentials/examples/v2"
VC2 = "https://www.w3.org/ns/credentials/v2"
OB303 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
W3C = "vectors/w3c-vc-di-eddsa/"
FIXTURES = "examples/ob_v3p0/1edtech-validator-fixtures/"
ED25519_SECRET_HEADER = b"\x80\x26"  # multicodec ed25519-priv


@pytest.fixture(scope="module")
def official_loader(load_standard):
    """Bundled contexts plus the one the official vectors need that we do not ship (examples/v2)."""
    return jsonld.make_loader(
        {
            EXAMPLES_V2: load_standard("contexts/w3c/credentials-examples-v2.jsonld"),
        }
    )


def secret_key_from_multibase(value: str) -> Ed25519PrivateKey:
    raw = b58btc_decode(value)
    assert raw[:2] == ED25519_SECRET_HEADER
    return Ed25519PrivateKey.from_private_bytes(raw[2:34])  # seed (some encodings append the public key)


def key_of(verification_method: str) -> Ed25519PublicKey:
    """The key named by `<controller>#<publicKeyMultibase>` or `did:key:<publicKeyMultibase>`."""
    if "#" in verification_method:
        return ed25519_from_multibase(verification_method.rsplit("#", 1)[1])
    return ed25519_from_multibase(verification_method.removeprefix("did:key:"))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
VM = "https://issuer.example/issuers/1#" + ed25519_to_multibase(KEY.public_key())


def ob_credential() -> dict:
    return {
        "@context": [VC2, OB303],
        "id": "urn:uuid:6b1e2c4e-0f4f-4a57-9e2b-8f1d3c1a0001",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {
            "id": "https://issuer.example/issuers/1",
            "type": ["Profile"],
            "name": "香港大學專業進修學院 HKU SPACE",
            "url": "https://issuer.example",
        },
        "validFrom": "2025-03-01T00:00:00Z",
        "validUntil": "2030-03-01T00:00:00Z",
        "name": "Data Analytics 數據分析 🎓",
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [
                {
                    "type": "IdentityObject",
                    "hashed": True,
                    "identityType": "emailAddress",
                    "identityHash": "sha256$" + "ab" * 32,
                    "salt": "s4lt\u0007",
                }
            ],
            "creditsEarned": 3.5,
            "achievement": {
                "id": "https://issuer.example/achievements/da101",
                "type": ["Achievement"],
                "achievementType": "MicroCredential",
                "name": "DA101",
                "description": "e\u0301 مرحبا",
                "criteria": {"narrative": "Completed all units\nwith ≥ 70%."},
                "inLanguage": "zh-Hant",
            },
        },
    }


# --- official vectors ---------------------------------------------------------------------------


def test_w3c_eddsa_rdfc_2022_vector_is_reproduced_byte_for_byte(load_standard, official_loader):
    secret = secret_key_from_multibase(load_standard(W3C + "keyPair.json")["privateKeyMultibase"])
    assert (
        ed25519_to_multibase(secret.public_key()) == load_standard(W3C + "keyPair.json")["publicKeyMultibase"]
    )
    unsigned = load_standard(W3C + "unsigned.json")
    config = load_standard(W3C + "eddsa-rdfc-2022/proofConfigDataInt.json")

    canon_doc = jsonld.canonize(unsigned, official_loader)
    canon_proof = jsonld.canonize(config, official_loader)
    assert canon_doc == load_standard(W3C + "eddsa-rdfc-2022/canonDocDataInt.txt")
    assert canon_proof == load_standard(W3C + "eddsa-rdfc-2022/proofCanonDataInt.txt")
    assert sha256_hex(canon_doc) == load_standard(W3C + "eddsa-rdfc-2022/docHashDataInt.txt").strip()
    assert sha256_hex(canon_proof) == load_standard(W3C + "eddsa-rdfc-2022/proofHashDataInt.txt").strip()
    assert (
        sha256_hex(canon_proof) + sha256_hex(canon_doc)
        == load_standard(W3C + "eddsa-rdfc-2022/combinedHashDataInt.txt").strip()
    )

    signed = create_eddsa_rdfc_2022(
        unsigned, secret, config["verificationMethod"], created=config["created"], loader=official_loader
    )
    assert signed == load_standard(W3C + "eddsa-rdfc-2022/signedDataInt.json")
    proof_value = signed["proof"]["proofValue"]
    assert proof_value == load_standard(W3C + "eddsa-rdfc-2022/sigBTC58DataInt.txt").strip()
    assert (
        b58btc_decode(proof_value).hex() == load_standard(W3C + "eddsa-rdfc-2022/sigHexDataInt.txt").strip()
    )
    verify_proof(signed, signed["proof"], secret.public_key(), official_loader)


def test_1edtech_ob_vector_is_reproduced_byte_for_byte(load_standard):
    vector = load_standard("vectors/1edtech-ob-v3p0/obv3p0/vector.json")
    secret = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["privateKeyHex"])[:32])
    assert (
        secret_key_from_multibase(vector["secretKeyMultibase"]).private_bytes_raw()
        == secret.private_bytes_raw()
    )
    assert ed25519_to_multibase(secret.public_key()) == vector["publicKeyMultibase"]
    options = vector["proofOptions"]

    canon_doc = jsonld.canonize(vector["unsignedCredential"])
    canon_proof = jsonld.canonize({"@context": vector["unsignedCredential"]["@context"], **options})
    assert canon_doc == load_standard("vectors/1edtech-ob-v3p0/obv3p0/document-canon.txt")
    assert canon_proof == load_standard("vectors/1edtech-ob-v3p0/obv3p0/proof-canon.txt")
    assert sha256_hex(canon_doc) == vector["documentHashHex"]
    assert sha256_hex(canon_proof) == vector["proofHashHex"]
    assert sha256_hex(canon_proof) + sha256_hex(canon_doc) == vector["dataToSignHex"]

    signed = create_eddsa_rdfc_2022(
        vector["unsignedCredential"],
        secret,
        options["verificationMethod"],
        created=options["created"],
        proof_purpose=options["proofPurpose"],
    )
    assert signed == vector["signedCredential"]
    assert b58btc_decode(signed["proof"]["proofValue"]).hex() == vector["signatureHex"]
    assert signed["proof"]["proofValue"] == vector["proofValue"]


def test_w3c_ed25519signature2020_vector_verifies(load_standard, official_loader):
    signed = load_standard(W3C + "Ed25519Signature2020/signedEdSig.json")
    public = ed25519_from_multibase(load_standard(W3C + "keyPair.json")["publicKeyMultibase"])
    verify_proof(signed, signed["proof"], public, official_loader)
    # Its proof configuration is the proof without proofValue, read with the document's @context.
    config = {k: v for k, v in signed["proof"].items() if k != "proofValue"} | {
        "@context": signed["@context"]
    }
    assert config == load_standard(W3C + "Ed25519Signature2020/proofConfigEdSig.json")
    canon_proof = jsonld.canonize(config, official_loader)
    assert canon_proof == load_standard(W3C + "Ed25519Signature2020/proofCanonEdSig.txt")
    assert sha256_hex(canon_proof) == load_standard(W3C + "Ed25519Signature2020/proofHashEdSig.txt").strip()
    assert (
        b58btc_decode(signed["proof"]["proofValue"]).hex()
        == load_standard(W3C + "Ed25519Signature2020/sigHexEdSig.txt").strip()
    )


def test_ed25519signature2020_needs_its_suite_context(load_standard, official_loader):
    signed = load_standard(W3C + "Ed25519Signature2020/signedEdSig.json")
    signed["@context"] = signed["@context"][:2]
    with pytest.raises(ProofError, match="ed25519-2020/v1"):
        verify_proof(signed, signed["proof"], KEY.public_key(), official_loader)


VALID_FIXTURES = [
    "simple.json",
    "simple-did-key-method.json",
    "simple-did-web-method.json",
    "complete.json",
    "simple_v1.json",
    "simple-eddsa-2022.json",
    "endorsement-valid.json",
    "simple-multiple-proofs.json",
]


@pytest.mark.parametrize("name", VALID_FIXTURES)
def test_1edtech_signed_fixtures_verify(name, load_standard, official_loader):
    doc = load_standard(FIXTURES + name)
    verifiable = [
        p for p in proofs_of(doc) if p.get("type") in ("DataIntegrityProof", "Ed25519Signature2020")
    ]
    assert verifiable
    for proof in verifiable:
        verify_proof(doc, proof, key_of(proof["verificationMethod"]), official_loader)


def test_1edtech_fixture_with_a_bad_proof_value_fails(load_standard):
    doc = load_standard(FIXTURES + "simple-err-proof-value.json")
    (proof,) = proofs_of(doc)
    with pytest.raises(ProofError, match="signature does not match"):
        verify_proof(doc, proof, key_of(proof["verificationMethod"]))


def test_a_proof_of_an_unknown_type_is_refused(load_standard):
    doc = load_standard(FIXTURES + "simple-multiple-proofs.json")
    unknown = next(p for p in proofs_of(doc) if p["type"] == "SomeProofType")
    with pytest.raises(ProofError, match="unsupported proof type 'SomeProofType'"):
        verify_proof(doc, unknown, KEY.public_key())


# --- create and verify --------------------------------------------------------------------------


def test_created_proof_has_the_eddsa_rdfc_2022_shape_and_verifies():
    doc = ob_credential()
    before = copy.deepcopy(doc)
    signed = create_eddsa_rdfc_2022(doc, KEY, VM)
    assert doc == before  # the input is not modified
    proof = signed["proof"]
    assert list(proof) == [
        "type",
        "cryptosuite",
        "created",
        "verificationMethod",
        "proofPurpose",
        "proofValue",
    ]
    assert (proof["type"], proof["cryptosuite"], proof["proofPurpose"]) == (
        "DataIntegrityProof",
        "eddsa-rdfc-2022",
        "assertionMethod",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", proof["created"])
    assert proof["proofValue"].startswith("z") and len(b58btc_decode(proof["proofValue"])) == 64
    assert {k: v for k, v in signed.items() if k != "proof"} == doc
    verify_proof(signed, proof, KEY.public_key())


def test_verification_with_another_key_fails():
    signed = create_eddsa_rdfc_2022(ob_credential(), KEY, VM)
    with pytest.raises(ProofError, match="signature does not match"):
        verify_proof(signed, signed["proof"], Ed25519PrivateKey.generate().public_key())


def test_signing_again_builds_a_proof_set_whose_proofs_each_verify():
    other = Ed25519PrivateKey.generate()
    once = create_eddsa_rdfc_2022(ob_credential(), KEY, VM, created="2025-03-01T00:00:00Z")
    twice = create_eddsa_rdfc_2022(once, other, "did:key:" + ed25519_to_multibase(other.public_key()))
    assert isinstance(twice["proof"], list) and len(twice["proof"]) == 2
    assert twice["proof"][0] == once["proof"]
    verify_proof(twice, twice["proof"][0], KEY.public_key())
    verify_proof(twice, twice["proof"][1], other.public_key())


def test_signing_refuses_a_term_the_contexts_do_not_define():
    doc = ob_credential()
    doc["credentialSubject"]["grade"] = "A"
    with pytest.raises(ProofError, match="document: term 'grade' is not defined"):
        create_eddsa_rdfc_2022(doc, KEY, VM)


def test_signing_refuses_an_unknown_context():
    doc = ob_credential()
    doc["@context"] = [VC2, "https://example.com/my-context.json"]
    with pytest.raises(ProofError, match="context not allowed: https://example.com/my-context.json"):
        create_eddsa_rdfc_2022(doc, KEY, VM)


def test_signing_refuses_an_unknown_proof_purpose():
    with pytest.raises(ProofError, match="proof configuration: .*madeUpPurpose"):
        create_eddsa_rdfc_2022(ob_credential(), KEY, VM, proof_purpose="madeUpPurpose")


def test_signing_refuses_a_created_that_is_not_a_datetime():
    with pytest.raises(ProofError, match="XML Schema dateTime"):
        create_eddsa_rdfc_2022(ob_credential(), KEY, VM, created="2025-03-01")


def test_unpaired_surrogates_are_a_proof_error_not_a_crash():
    doc = ob_credential()
    doc["name"] = "bad \ud800 text"
    with pytest.raises(ProofError, match="unpaired surrogate"):
        create_eddsa_rdfc_2022(doc, KEY, VM)


def test_verification_refuses_an_added_undefined_term_although_the_signature_still_matches():
    signed = create_eddsa_rdfc_2022(ob_credential(), KEY, VM)
    tampered = copy.deepcopy(signed)
    tampered["credentialSubject"]["achievement"]["level"] = "Distinction"
    def strip(d):
        return {k: v for k, v in d.items() if k != "proof"}

    assert jsonld.canonize(strip(tampered)) == jsonld.canonize(strip(signed))  # dropped, so unsigned
    with pytest.raises(ProofError, match="'level' is not defined"):
        verify_proof(tampered, tampered["proof"], KEY.public_key())


def test_proof_context_must_lead_the_document_context():
    signed = create_eddsa_rdfc_2022(ob_credential(), KEY, VM)
    consistent = copy.deepcopy(signed)
    consistent["proof"]["@context"] = signed["@context"]
    verify_proof(consistent, consistent["proof"], KEY.public_key())
    inconsistent = copy.deepcopy(signed)
    inconsistent["proof"]["@context"] = [VC2, "https://w3id.org/security/data-integrity/v2"]
    with pytest.raises(ProofError, match="proof @context is not the leading part"):
        verify_proof(inconsistent, inconsistent["proof"], KEY.public_key())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cryptosuite": "eddsa-jcs-2022"}, "unsupported cryptosuite 'eddsa-jcs-2022'"),
        ({"type": "Ed25519Signature2018"}, "unsupported proof type"),
        ({"proofPurpose": "authentication"}, "expected 'assertionMethod'"),
        ({"proofValue": "z3yMgbRZE9"}, "an Ed25519 signature has 64"),
        ({"proofValue": "u" + "A" * 86}, "base58btc"),
        ({"created": "yesterday"}, "XML Schema dateTime"),
        ({"verificationMethod": None}, "proof has no verificationMethod"),
    ],
)
def test_malformed_proofs_are_refused_with_a_reason(change, message):
    signed = create_eddsa_rdfc_2022(ob_credential(), KEY, VM)
    proof = {**signed["proof"], **change}
    with pytest.raises(ProofError, match=message):
        verify_proof(signed, proof, KEY.public_key())


# --- tampering ----------------------------------------------------------------------------------


def _mutations(node, path=()):
    """(path, replacement) for one changed character of every key and every leaf value."""
    if isinstance(node, dict):
        for key, value in node.items():
            flipped = key[:-1] + ("x" if key[-1] != "x" else "y")
            yield path + (("rename", key),), flipped
            yield from _mutations(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mutations(value, path + (i,))
    elif isinstance(node, str):
        for pos in sorted({0, len(node) // 2, len(node) - 1}):
            if node:
                char = "x" if node[pos] != "x" else "y"
                yield path, node[:pos] + char + node[pos + 1 :]
    elif isinstance(node, bool):
        yield path, not node
    elif isinstance(node, (int, float)):
        yield path, node + 1


def _apply(doc: dict, path: tuple, replacement):
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if isinstance(last, tuple):  # rename a key, keeping its value
        _, key = last
        parent[replacement] = parent.pop(key)
    else:
        parent[last] = replacement
    return doc


def test_any_single_changed_character_breaks_verification():
    signed = create_eddsa_rdfc_2022(ob_credential(), KEY, VM)
    verify_proof(signed, signed["proof"], KEY.public_key())
    tried = set()
    for path, replacement in _mutations(signed):
        tampered = _apply(signed, path, replacement)
        tried.add(path[0][1] if isinstance(path[0], tuple) else path[0])
        with pytest.raises(ProofError):
            verify_proof(
                tampered, proofs_of(tampered)[0] if proofs_of(tampered) else signed["proof"], KEY.public_key()
            )
    assert tried == set(signed)  # every top-level field was tampered with
