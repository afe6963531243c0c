"""Data Integrity: create `eddsa-rdfc-2022`; verify it and the legacy `eddsa-2022` and `Ed25519Signature2020`.

All three sign the same thing (W3C vc-di-eddsa): SHA-256 of the canonical proof configuration followed by
SHA-256 of the canonical document without its proofs, signed with pure Ed25519. They differ only in how
the proof is labelled and which context defines its terms. Pure functions: no key lookup, no I/O; the
caller resolves the verification method to a public key (see `resolve.py` / `verify.py`).

Both documents are put through the JSON-LD safety check before hashing: a term the contexts do not
define is dropped by canonicalisation, so it would be displayed but not signed. We refuse to sign such a
document and refuse to accept a signature over one. For `eddsa-rdfc-2022`, `fastld` computes the same
hash without pyld's expansion for the documents it can show pass that check (issue #7).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyld.jsonld import JsonLdError

from issuer import fastld, jsonld
from issuer.jsonld import CanonicalizationError, JsonLdSafetyError, Loader
from issuer.multikey import MultikeyError, b58btc_decode, b58btc_encode

DATA_INTEGRITY_PROOF = "DataIntegrityProof"
EDDSA_RDFC_2022 = "eddsa-rdfc-2022"
EDDSA_2022 = "eddsa-2022"  # the pre-REC name of the same algorithm
ED25519_SIGNATURE_2020 = "Ed25519Signature2020"
ED25519_2020_CONTEXT = "https://w3id.org/security/suites/ed25519-2020/v1"

# XML Schema dateTime; `created` must be one (vc-di-eddsa "Proof Configuration").
_XSD_DATETIME = re.compile(
    r"^-?\d{4,}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    r"(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))?$"
)


class ProofError(Exception):
    """A proof cannot be created or does not verify; the message says which step failed and why."""


def proofs_of(document: dict) -> list[dict]:
    """The document's proofs as a list (`proof` may be absent, one object, or a proof set)."""
    proof = document.get("proof")
    if proof is None:
        return []
    return list(proof) if isinstance(proof, list) else [proof]


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _context_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _canonical_hash(doc: dict, what: str, loader: Loader | None, fast: bool = False) -> bytes:
    """SHA-256 of the RDFC-1.0 form of `doc`, after the safety check (one expansion serves both).

    With `fast`, fastld answers when it accepts the document: it declines whatever it cannot show
    the general path below would accept and canonicalise the same way (tests/test_fastld.py).
    """
    if fast:
        digest = fastld.canonical_hash(doc, loader)
        if digest is not None:
            return digest
    try:
        expanded = jsonld.safe_expand(doc, loader)
        canonical = jsonld.canonize_dataset(jsonld.dataset_from_expanded(expanded))
        return hashlib.sha256(canonical.encode("utf-8")).digest()
    except (JsonLdSafetyError, CanonicalizationError) as exc:
        raise ProofError(f"{what}: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise ProofError(f"{what}: text is not valid Unicode (unpaired surrogate)") from exc
    except JsonLdError as exc:  # includes UnknownContextError, whose message names the URL
        detail = str(exc) if isinstance(exc, jsonld.UnknownContextError) else "not valid JSON-LD"
        raise ProofError(f"{what}: {detail}") from exc


def _hash_data(unsecured: dict, proof_config: dict, loader: Loader | None, *, fast: bool = False) -> bytes:
    # The proof configuration's hash comes first (vc-di-eddsa "Hashing").
    return _canonical_hash(proof_config, "proof configuration", loader, fast) + _canonical_hash(
        unsecured, "document", loader, fast
    )


def _without_proofs(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "proof"}


def create_eddsa_rdfc_2022(
    document: dict,
    private_key: Ed25519PrivateKey,
    verification_method: str,
    *,
    created: str | None = None,
    proof_purpose: str = "assertionMethod",
    loader: Loader | None = None,
    extra: dict | None = None,
) -> dict:
    """A copy of `document` with a new `eddsa-rdfc-2022` DataIntegrityProof added.

    Existing proofs are kept and the new one joins them as a proof set (it does not sign them).
    `extra` adds proof options (e.g. `challenge` and `domain` for a presentation); they are part of the
    proof configuration, so the signature covers them. They may not replace the fields set here.
    """
    if not isinstance(document, dict) or "@context" not in document:
        raise ProofError("document must be a JSON-LD object with an @context")
    if not isinstance(verification_method, str) or not verification_method:
        raise ProofError("verification_method must be a non-empty URL string")
    created = created or _utc_now()
    if not _XSD_DATETIME.match(created):
        raise ProofError(f"created {created!r} is not an XML Schema dateTime")

    unsecured = _without_proofs(document)
    proof: dict[str, Any] = {
        "type": DATA_INTEGRITY_PROOF,
        "cryptosuite": EDDSA_RDFC_2022,
        "created": created,
        "verificationMethod": verification_method,
        "proofPurpose": proof_purpose,
    }
    if extra:
        clash = sorted(set(extra) & {*proof, "proofValue", "@context"})
        if clash:
            raise ProofError(f"extra proof options may not set {', '.join(clash)}")
        proof.update(extra)
    config = {"@context": document["@context"], **proof}
    signature = private_key.sign(_hash_data(unsecured, config, loader, fast=True))
    proof["proofValue"] = b58btc_encode(signature)

    existing = proofs_of(document)
    return {**unsecured, "proof": [*existing, proof] if existing else proof}


def _check_proof_shape(proof: dict) -> str:
    """Which suite the proof claims to use; rejects anything this module cannot verify."""
    kind = proof.get("type")
    if kind == DATA_INTEGRITY_PROOF:
        suite = proof.get("cryptosuite")
        if suite not in (EDDSA_RDFC_2022, EDDSA_2022):
            raise ProofError(f"unsupported cryptosuite {suite!r} (expected {EDDSA_RDFC_2022})")
        return suite
    if kind == ED25519_SIGNATURE_2020:
        return ED25519_SIGNATURE_2020
    raise ProofError(f"unsupported proof type {kind!r}")


def _proof_context(document: dict, proof: dict) -> list:
    """The @context the proof configuration (and, with a proof @context, the document) is read with."""
    doc_context = _context_list(document.get("@context"))
    if "@context" not in proof:
        return doc_context
    proof_context = _context_list(proof["@context"])
    # vc-di-eddsa "Verify Proof": the document's @context must start with the proof's, in order.
    if doc_context[: len(proof_context)] != proof_context:
        raise ProofError("proof @context is not the leading part of the document's @context")
    return proof_context


def verify_proof(
    document: dict,
    proof: dict,
    public_key: Ed25519PublicKey,
    loader: Loader | None = None,
    *,
    expected_purpose: str | None = "assertionMethod",
    document_hash: bytes | None = None,
) -> None:
    """Check one Data Integrity proof of a secured document; raises ProofError unless it is valid.

    `document` is the whole secured document (all its proofs are left out of the document hash);
    `public_key` is the key the caller found for `proof["verificationMethod"]`. `document_hash`, when
    the caller already has it, is `fastld.canonical_hash` of the document without its proofs; it is used
    for an eddsa-rdfc-2022 proof whose @context is the document's own.
    """
    if not isinstance(document, dict) or "@context" not in document:
        raise ProofError("document must be a JSON-LD object with an @context")
    if not isinstance(proof, dict):
        raise ProofError("proof must be a JSON object")
    suite = _check_proof_shape(proof)
    for field in ("verificationMethod", "proofPurpose", "proofValue"):
        if not isinstance(proof.get(field), str) or not proof[field]:
            raise ProofError(f"proof has no {field}")
    if "created" in proof and not (
        isinstance(proof["created"], str) and _XSD_DATETIME.match(proof["created"])
    ):
        raise ProofError(f"proof created {proof['created']!r} is not an XML Schema dateTime")
    if expected_purpose is not None and proof["proofPurpose"] != expected_purpose:
        raise ProofError(f"proofPurpose is {proof['proofPurpose']!r}, expected {expected_purpose!r}")
    try:
        signature = b58btc_decode(proof["proofValue"])
    except MultikeyError as exc:
        raise ProofError(f"proofValue: {exc}") from exc
    if len(signature) != 64:
        raise ProofError(f"proofValue holds {len(signature)} bytes, an Ed25519 signature has 64")

    context = _proof_context(document, proof)
    if suite == ED25519_SIGNATURE_2020 and ED25519_2020_CONTEXT not in context:
        raise ProofError(f"an Ed25519Signature2020 proof needs the {ED25519_2020_CONTEXT} context")
    unsecured = {**_without_proofs(document), "@context": context}
    config = {k: v for k, v in proof.items() if k != "proofValue"}
    config["@context"] = context

    fast = suite == EDDSA_RDFC_2022
    if fast and document_hash is not None and context == _context_list(document["@context"]):
        data = _canonical_hash(config, "proof configuration", loader, fast) + document_hash
    else:
        data = _hash_data(unsecured, config, loader, fast=fast)
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        raise ProofError("signature does not match the document and proof configuration") from None
