"""Verifiable presentations: how a learner proves, with a DID they control, that the badges are theirs.

The service hands out a challenge; the learner's wallet (or our CLI) signs a VerifiablePresentation over
the badges with `eddsa-rdfc-2022`, proofPurpose `authentication`, that challenge and the service's
domain. The proof's `challenge` and `domain` are proof options, so they are inside the signed proof
configuration: a presentation made for one request or one site cannot be used for another.

Challenges are self-authenticating (random bytes and an expiry, MACed with a server secret), so issuing
one needs no storage; only *using* one is recorded, through a tiny `ChallengeStore`, so each works once.
Pure apart from that injected store: no Flask, no database, no network beyond the given resolver.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from issuer.jsonld import Loader
from issuer.proofs import (
    DATA_INTEGRITY_PROOF,
    EDDSA_RDFC_2022,
    ProofError,
    create_eddsa_rdfc_2022,
    proofs_of,
    verify_proof,
)
from issuer.resolve import KeyResolutionError, KeyResolver, ResolvedKey

VC_V2_CONTEXT = "https://www.w3.org/ns/credentials/v2"
VC_V1_CONTEXT = "https://www.w3.org/2018/credentials/v1"
VERIFIABLE_PRESENTATION = "VerifiablePresentation"
ENVELOPED_CREDENTIAL = "EnvelopedVerifiableCredential"
JWT_DATA_URL_PREFIX = "data:application/vc+jwt,"
AUTHENTICATION = "authentication"

_NONCE_BYTES = 16
_EXPIRY_BYTES = 8
_MAC_BYTES = 32
_TOKEN_BYTES = _NONCE_BYTES + _EXPIRY_BYTES + _MAC_BYTES
# Separates these MACs from anything else the same secret might ever authenticate.
_MAC_LABEL = b"ob3-issuer presentation challenge v1\x00"
_MIN_SECRET_BYTES = 16
_COMPACT_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class PresentationError(Exception):
    """A presentation (or its challenge) is not acceptable; the message says which check failed."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- challenges ------------------------------------------------------------------------------------


class ChallengeStore(Protocol):
    """Remembers used challenges, so a signed presentation cannot be replayed.

    `expires` is when the challenge stops being valid anyway: a store may forget it after that.
    """

    def consume(self, challenge: str, expires: datetime) -> bool:
        """True the first time `challenge` is seen, False every time after."""
        ...


class MemoryChallengeStore:
    """An in-process ChallengeStore for tests and single-process tools (forgets on restart)."""

    def __init__(self, *, now: Callable[[], datetime] = _utc_now) -> None:
        self._now = now
        self._used: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def consume(self, challenge: str, expires: datetime) -> bool:
        """True the first time; expired entries are dropped since the issuer refuses them anyway."""
        with self._lock:
            now = self._now()
            self._used = {c: e for c, e in self._used.items() if e > now}
            if challenge in self._used:
                return False
            self._used[challenge] = expires
            return True


class ChallengeIssuer:
    """Issues and checks challenges without storing them: each carries its expiry and an HMAC-SHA256
    (keyed with `secret`) over its random bytes, its expiry and the domain it was issued for."""

    def __init__(self, secret: bytes, *, ttl_seconds: int = 600, now: Callable[[], datetime] = _utc_now) -> None:
        if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"the challenge secret must be at least {_MIN_SECRET_BYTES} bytes")
        if not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be a positive integer")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._now = now

    def _mac(self, nonce: bytes, expiry: bytes, domain: str) -> bytes:
        message = _MAC_LABEL + nonce + expiry + domain.encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _timestamp(self) -> int:
        now = self._now()
        if now.tzinfo is None:  # a naive clock is taken to be UTC, never local time
            now = now.replace(tzinfo=UTC)
        return int(now.timestamp())

    def issue(self, domain: str) -> dict:
        """A fresh challenge for `domain`: {"challenge", "domain", "expires"} to hand to the holder."""
        _require_domain(domain)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        expires_at = self._timestamp() + self.ttl_seconds
        expiry = expires_at.to_bytes(_EXPIRY_BYTES, "big")
        challenge = _b64url(nonce + expiry + self._mac(nonce, expiry, domain))
        return {"challenge": challenge, "domain": domain, "expires": _iso(datetime.fromtimestamp(expires_at, UTC))}

    def check(self, challenge: str, domain: str) -> None:
        """Raise PresentationError unless this service issued `challenge` for `domain` and it has not
        expired. Whether it was already used is the store's business (see verify_presentation)."""
        self.expiry(challenge, domain)

    def expiry(self, challenge: str, domain: str) -> datetime:
        """Like `check`, returning when the challenge expires (what a ChallengeStore needs)."""
        _require_domain(domain)
        if not isinstance(challenge, str) or not challenge:
            raise PresentationError("challenge must be a non-empty string")
        try:
            raw = base64.urlsafe_b64decode(challenge + "=" * (-len(challenge) % 4))
        except (binascii.Error, ValueError):
            raise PresentationError("challenge is not base64url: it was not issued by this service") from None
        # Exactly one spelling per challenge, so the store cannot be dodged by re-encoding the same bytes.
        if len(raw) != _TOKEN_BYTES or _b64url(raw) != challenge:
            raise PresentationError("challenge is malformed: it was not issued by this service")
        nonce = raw[:_NONCE_BYTES]
        expiry = raw[_NONCE_BYTES:_NONCE_BYTES + _EXPIRY_BYTES]
        if not hmac.compare_digest(raw[_NONCE_BYTES + _EXPIRY_BYTES:], self._mac(nonce, expiry, domain)):
            raise PresentationError(
                f"challenge was not issued by this service for domain {domain!r} (forged, altered, "
                "or issued for another domain)")
        expires_at = int.from_bytes(expiry, "big")
        expires = datetime.fromtimestamp(expires_at, UTC)
        if self._timestamp() >= expires_at:
            raise PresentationError(f"challenge expired at {_iso(expires)}; ask for a new one")
        return expires


def _require_domain(domain: Any) -> None:
    if not isinstance(domain, str) or not domain:
        raise PresentationError("domain must be a non-empty string")


# --- verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresentedHolder:
    """Who proved control of their DID, and the credentials they presented (not yet verified).

    `credentials` holds JSON credentials as objects and JWT credentials as compact JWT strings.
    """

    holder: str
    credentials: list[dict | str]


def verify_presentation(
    vp: dict,
    *,
    resolver: KeyResolver,
    challenges: ChallengeIssuer,
    store: ChallengeStore,
    domain: str,
    loader: Loader | None = None,
) -> PresentedHolder:
    """Check that `vp` was signed by its holder's DID for this service and this request; use it up.

    Order: structure → challenge and domain → signature → the key belongs to the holder → the challenge
    is consumed (last, so a presentation that fails does not burn the learner's challenge).
    The credentials are returned unverified: the caller verifies each and matches it to the holder.
    """
    _require_domain(domain)
    holder, credentials, proof = _read_structure(vp)

    if proof["domain"] != domain:
        raise PresentationError(f"proof domain {proof['domain']!r} is not this service's domain {domain!r}")
    expires = challenges.expiry(proof["challenge"], domain)

    key = _resolve(resolver, proof["verificationMethod"])
    if not isinstance(key.public_key, Ed25519PublicKey):
        raise PresentationError(f"{key.id} is not an Ed25519 key, which eddsa-rdfc-2022 needs")
    try:
        verify_proof(vp, proof, key.public_key, loader, expected_purpose=AUTHENTICATION)
    except ProofError as exc:
        raise PresentationError(f"presentation proof does not verify: {exc}") from None

    if not key.confirmed_by_controller or key.controller != holder:
        raise PresentationError(
            f"presentation is signed with {key.id}, controlled by {key.controller}, not by the holder {holder}")
    _require_authentication(resolver, key)

    if not store.consume(proof["challenge"], expires):
        raise PresentationError("challenge already used: ask for a new one")
    return PresentedHolder(holder, credentials)


def _read_structure(vp: Any) -> tuple[str, list[dict | str], dict]:
    """The holder, the credentials and the one proof, or PresentationError naming what is wrong."""
    if not isinstance(vp, dict):
        raise PresentationError("presentation must be a JSON object")
    contexts = _as_list(vp.get("@context"))
    if not contexts or contexts[0] not in (VC_V2_CONTEXT, VC_V1_CONTEXT):
        raise PresentationError(f"presentation @context must start with {VC_V2_CONTEXT} (or {VC_V1_CONTEXT})")
    if VERIFIABLE_PRESENTATION not in _as_list(vp.get("type")):
        raise PresentationError(f"presentation type must include {VERIFIABLE_PRESENTATION!r}")

    holder = vp.get("holder")
    if isinstance(holder, dict):
        holder = holder.get("id")
    if not isinstance(holder, str) or not holder.startswith("did:"):
        raise PresentationError("presentation holder must be a DID")

    if "verifiableCredential" not in vp:
        raise PresentationError("presentation carries no verifiableCredential")
    entries = _as_list(vp["verifiableCredential"])
    if not entries:
        raise PresentationError("presentation carries no verifiableCredential")
    credentials = [_credential_entry(entry, i) for i, entry in enumerate(entries)]

    proofs = proofs_of(vp)
    if not proofs:
        raise PresentationError("presentation has no proof")
    if len(proofs) != 1:
        raise PresentationError(f"presentation has {len(proofs)} proofs; expected exactly one")
    proof = proofs[0]
    if not isinstance(proof, dict):
        raise PresentationError("presentation proof must be a JSON object")
    if proof.get("type") != DATA_INTEGRITY_PROOF or proof.get("cryptosuite") != EDDSA_RDFC_2022:
        raise PresentationError(
            f"presentation proof must be a {DATA_INTEGRITY_PROOF} with cryptosuite {EDDSA_RDFC_2022}, "
            f"not {proof.get('type')!r} / {proof.get('cryptosuite')!r}")
    if proof.get("proofPurpose") != AUTHENTICATION:
        raise PresentationError(f"proofPurpose is {proof.get('proofPurpose')!r}; a presentation proves "
                                f"{AUTHENTICATION!r}")
    for option in ("challenge", "domain", "verificationMethod"):
        if not isinstance(proof.get(option), str) or not proof[option]:
            raise PresentationError(f"presentation proof has no {option}")
    return holder, credentials, proof


def _credential_entry(entry: Any, index: int) -> dict | str:
    """A JSON credential as is, or the compact JWT inside an EnvelopedVerifiableCredential."""
    where = f"verifiableCredential[{index}]"
    if isinstance(entry, str):
        # Under the VCDM 2.0 context a bare string in verifiableCredential becomes a JSON-LD value that
        # canonicalisation drops, so a Data Integrity proof does not cover it: it could be swapped after
        # signing. Only the enveloped form (an IRI, hence signed) is accepted.
        raise PresentationError(
            f"{where} is a bare string, which a Data Integrity proof does not sign; wrap a JWT as "
            f'{{"@context": "{VC_V2_CONTEXT}", "type": "{ENVELOPED_CREDENTIAL}", '
            f'"id": "{JWT_DATA_URL_PREFIX}<jwt>"}}')
    if not isinstance(entry, dict):
        raise PresentationError(f"{where} must be a credential object")
    if ENVELOPED_CREDENTIAL in _as_list(entry.get("type")):
        data_url = entry.get("id")
        if not isinstance(data_url, str) or not data_url.startswith(JWT_DATA_URL_PREFIX):
            raise PresentationError(f"{where} is enveloped but its id is not a {JWT_DATA_URL_PREFIX} URL")
        token = data_url[len(JWT_DATA_URL_PREFIX):]
        if not _COMPACT_JWT.match(token):
            raise PresentationError(f"{where} does not hold a compact JWT")
        return token
    if "@context" not in entry:
        raise PresentationError(f"{where} has no @context")
    return entry


def _resolve(resolver: KeyResolver, verification_method: str) -> ResolvedKey:
    try:
        return resolver.resolve(verification_method)
    except KeyResolutionError as exc:
        raise PresentationError(f"cannot resolve the presentation's verification method: {exc}") from None


def _require_authentication(resolver: KeyResolver, key: ResolvedKey) -> None:
    """A key signs an `authentication` proof only if its controller lists it under authentication.

    A did:key's DID document always does; any other controller's document is read and checked.
    """
    if key.source == "did:key":
        return
    try:
        document = resolver.document(key.controller)
    except KeyResolutionError as exc:
        raise PresentationError(f"cannot read the holder's DID document: {exc}") from None
    base = key.controller.split("#", 1)[0]
    for entry in _as_list(document.get("authentication")):
        entry_id = entry.get("id") if isinstance(entry, dict) else entry
        if isinstance(entry_id, str) and (base + entry_id if entry_id.startswith("#") else entry_id) == key.id:
            return
    raise PresentationError(f"{key.id} is not listed under authentication by {key.controller}")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# --- creating ---------------------------------------------------------------------------------------


def create_presentation(
    credentials: dict | str | list[dict | str],
    *,
    holder: str,
    private_key: Ed25519PrivateKey,
    verification_method: str,
    challenge: str,
    domain: str,
    loader: Loader | None = None,
) -> dict:
    """A VCDM 2.0 presentation of `credentials`, signed by the holder for one challenge and domain.

    A JWT credential may be given as its compact string; it is put in an EnvelopedVerifiableCredential
    so that the signature covers it.
    """
    if not isinstance(holder, str) or not holder.startswith("did:"):
        raise PresentationError("holder must be a DID")
    if not isinstance(challenge, str) or not challenge:
        raise PresentationError("challenge must be a non-empty string")
    _require_domain(domain)
    entries = []
    for entry in _as_list(credentials):
        if isinstance(entry, str):
            if not _COMPACT_JWT.match(entry):
                raise PresentationError("a credential given as a string must be a compact JWT")
            entry = {"@context": VC_V2_CONTEXT, "type": ENVELOPED_CREDENTIAL, "id": JWT_DATA_URL_PREFIX + entry}
        entries.append(entry)
    if not entries:
        raise PresentationError("a presentation needs at least one credential")
    vp = {
        "@context": [VC_V2_CONTEXT],
        "type": [VERIFIABLE_PRESENTATION],
        "holder": holder,
        "verifiableCredential": entries,
    }
    try:
        return create_eddsa_rdfc_2022(vp, private_key, verification_method, proof_purpose=AUTHENTICATION,
                                      loader=loader, extra={"challenge": challenge, "domain": domain})
    except ProofError as exc:
        raise PresentationError(f"cannot sign the presentation: {exc}") from None
