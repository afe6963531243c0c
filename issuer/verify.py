"""The verification pipeline: a submitted credential goes through small, separate checks, each returning
a `Check` that is falsy on failure and says why (the sigstore-python `verify/policy.py` pattern).

Order (OB 3.0 "Verification" plus the implementation guide's key-provenance advice):
schema → jsonld → proof → key_provenance → validity_window → recipient → status.

Safe by default: a check that could not run is ``ok=None`` and only counts as "not checked"; the result
is verified only if every check that ran passed *and* at least one ran. Nothing here raises on bad input:
every error becomes a failed check with a clear detail.

The status check fails closed (issue #5): a status entry whose list cannot be fetched, does not verify,
is too short or is for another purpose makes the credential unverified, never "not revoked".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from issuer import fastld, jsonld, proofs, schema, status, vcjwt
from issuer.credentials import hash_identity, normalise_email, parse_datetime
from issuer.fetch import FetchPolicy, fetch_json
from issuer.formats import Submission
from issuer.keys import PublicKey, public_key_from_jwk
from issuer.resolve import KeyResolutionError, KeyResolver, ResolvedKey
from issuer.status import STATUS_RETRIEVAL_ERROR, STATUS_VERIFICATION_ERROR, StatusError

VC_V1_CONTEXT = "https://www.w3.org/2018/credentials/v1"
VC_V2_CONTEXT = "https://www.w3.org/ns/credentials/v2"
SUPPORTED_DI = {
    ("DataIntegrityProof", proofs.EDDSA_RDFC_2022),
    ("DataIntegrityProof", proofs.EDDSA_2022),
    (proofs.ED25519_SIGNATURE_2020, None),
}
# A proof set larger than this is not a real badge; each proof may cost a fetch, so stop early.
MAX_PROOFS = 8
CHECK_NAMES = ("schema", "jsonld", "proof", "key_provenance", "validity_window", "recipient", "status")
# OB allows one credentialStatus; a few more are read (each may cost a fetch), beyond that is not a badge.
MAX_STATUS_ENTRIES = 4
BITSTRING_ENTRY_TYPES = frozenset({status.BITSTRING_ENTRY, status.STATUS_LIST_2021_ENTRY})
REVOCATION_LIST_1EDTECH = "1EdTechRevocationList"


class StatusListSource(Protocol):
    """Where status documents come from (a status list credential, or a 1EdTech revocation list):
    ``get(url)`` returns the document or raises. The verifier checks what it gets; the source only
    decides where to look (our database, the network) and how long to keep it."""

    def get(self, url: str) -> dict: ...


@dataclass
class Check:
    """One finding. ``ok`` is True (passed), False (failed) or None (not checked)."""

    name: str
    ok: bool | None
    detail: str

    def __bool__(self) -> bool:
        return self.ok is True

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class VerificationResult:
    verified: bool
    format: str
    checks: list[Check]
    errors: list[str]
    warnings: list[str]
    credential: dict | None
    summary: dict

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_json(self) -> dict:
        """The report as JSON: the credential is summarised, never echoed whole."""
        return {
            "verified": self.verified,
            "format": self.format,
            "checks": [c.to_json() for c in self.checks],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "credential": self.summary,
        }


def all_passed(checks: list[Check]) -> bool:
    """Every check that ran passed, and at least one ran (an empty or all-skipped list is not proof)."""
    ran = [c for c in checks if c.ok is not None]
    return bool(ran) and all(c.ok is True for c in ran)


@dataclass
class _State:
    """What the checks share: the input, the dependencies and what earlier checks established."""

    format: str
    credential: dict | None
    resolver: KeyResolver
    now: datetime
    loader: Any
    recipient_email: str | None = None
    token: str | None = None
    header: dict | None = None
    payload: dict | None = None
    verified_keys: list[ResolvedKey] = field(default_factory=list)
    jwt_key: PublicKey | None = None
    warnings: list[str] = field(default_factory=list)
    status_lists: StatusListSource | None = None
    # SHA-256 of the fast path's canonical form of the credential without its proofs, from check_jsonld:
    # the proof check hashes that same document (for the proof's own contexts), so it is done once.
    unproven_hash: bytes | None = None

    @property
    def issuer_id(self) -> str | None:
        return vcjwt.issuer_id(self.credential) if isinstance(self.credential, dict) else None


CheckFn = Callable[[_State], Check]


class Verifier:
    """Verifies credentials with the given key resolver; ``now`` and ``loader`` are injectable so
    tests (and re-verification "as of" a date) need no clock or network. ``status_lists`` supplies
    status list documents; without it, a credential that has a status entry cannot verify."""

    def __init__(self, resolver: KeyResolver | None = None, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), loader: Any = None,
                 status_lists: StatusListSource | None = None) -> None:
        self.resolver = resolver or KeyResolver()
        self.now = now
        self.loader = loader
        self.status_lists = status_lists

    def verify_submission(self, submission: Submission,
                          recipient_email: str | None = None) -> VerificationResult:
        if submission.format == "vc-jwt" and submission.jwt is not None:
            return self.verify_jwt(submission.jwt, recipient_email=recipient_email)
        return self.verify_credential(submission.credential, recipient_email=recipient_email)

    def verify_credential(self, doc: Any, *, recipient_email: str | None = None) -> VerificationResult:
        """A JSON-LD credential with embedded Data Integrity proof(s)."""
        state = self._state("json-ld", doc, recipient_email)
        if not isinstance(doc, dict):
            return _unreadable(state, "the credential is not a JSON object")
        return _run(state, DATA_INTEGRITY_CHECKS)

    def verify_jwt(self, token: Any, *, recipient_email: str | None = None) -> VerificationResult:
        """A VC-JWT (compact JWS) per OB 3.0, or the VCDM 1.1 `vc`-claim form."""
        state = self._state("vc-jwt", None, recipient_email)
        try:
            state.header, state.payload = vcjwt.parse_compact(token)
        except vcjwt.JwtError as exc:
            return _unreadable(state, f"cannot decode the JWT: {exc}")
        except Exception as exc:  # never raise on bad input
            return _unreadable(state, f"cannot decode the JWT: {type(exc).__name__}: {exc}")
        state.token = token.decode("ascii") if isinstance(token, bytes) else str(token).strip()
        state.credential = _unverified_credential(state.payload)
        return _run(state, VC_JWT_CHECKS)

    def _state(self, fmt: str, doc: Any, recipient_email: str | None) -> _State:
        try:
            now = self.now()
        except Exception:  # a broken clock must not be mistaken for a valid date
            now = datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return _State(fmt, doc if isinstance(doc, dict) else None, self.resolver, now, self.loader,
                      recipient_email=recipient_email, status_lists=self.status_lists)


def _run(state: _State, checks: tuple[tuple[str, CheckFn], ...]) -> VerificationResult:
    results = []
    for name, fn in checks:
        try:
            results.append(fn(state))
        except Exception as exc:  # a bug or a surprise in one check fails that check, loudly
            results.append(Check(name, False, f"check could not complete: {type(exc).__name__}: {exc}"))
    return _result(state, results)


def _unreadable(state: _State, reason: str) -> VerificationResult:
    checks = [Check(CHECK_NAMES[0], False, reason)]
    checks += [Check(name, None, "not checked: nothing readable to check") for name in CHECK_NAMES[1:]]
    return _result(state, checks)


def _result(state: _State, checks: list[Check]) -> VerificationResult:
    errors = [f"{c.name}: {c.detail}" for c in checks if c.ok is False]
    return VerificationResult(
        verified=all_passed(checks),
        format=state.format,
        checks=checks,
        errors=errors,
        warnings=list(dict.fromkeys(state.warnings)),
        credential=state.credential,
        summary=summarize(state.credential),
    )


# -- schema -----------------------------------------------------------------------------------------------

def check_schema(state: _State) -> Check:
    """Our OB 3.0 AchievementCredential schema (VCDM 2.0 and 1.1 forms); for other credential types
    (e.g. EndorsementCredential), which that schema does not describe, the basic VC structure and OB's
    "subject has an id or an identifier" rule."""
    doc = _without_jwt_claims(state)
    if not isinstance(doc, dict):
        return Check("schema", False, "the credential is not a JSON object")
    structure = _structure_problems(doc)
    if structure:
        return Check("schema", False, "; ".join(structure))
    types = _as_list(doc.get("type"))
    if not {"OpenBadgeCredential", "AchievementCredential"} & set(types):
        kinds = ", ".join(t for t in types if t != "VerifiableCredential") or "VerifiableCredential"
        return Check("schema", True, f"{kinds}: basic structure is valid "
                                     "(the OB 3.0 AchievementCredential schema does not apply)")
    problems = schema.validate_credential(doc)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        return Check("schema", False, f"{len(problems)} schema error(s): {shown}")
    return Check("schema", True, "valid against the OB 3.0 AchievementCredential schema")


def _structure_problems(doc: dict) -> list[str]:
    """The rules every OB credential (achievement or endorsement, VCDM 2.0 or 1.1) must meet."""
    problems = []
    first = _first_context(doc)
    if first not in (VC_V1_CONTEXT, VC_V2_CONTEXT):
        problems.append(f"the first @context must be {VC_V2_CONTEXT} (or {VC_V1_CONTEXT} for VCDM 1.1)")
    if "VerifiableCredential" not in _as_list(doc.get("type")):
        problems.append("type must include VerifiableCredential")
    if not vcjwt.issuer_id(doc):
        problems.append("issuer must be a URI or an object with an id")
    subjects = _subjects(doc)
    if not subjects:
        problems.append("credentialSubject must be an object")
    elif not all("id" in s or "identifier" in s for s in subjects):
        problems.append("credentialSubject must have an id or an identifier")
    start = "issuanceDate" if first == VC_V1_CONTEXT else "validFrom"
    if start not in doc:
        problems.append(f"the credential must have {start}")
    return problems


# -- JSON-LD safety -------------------------------------------------------------------------------------

def check_jsonld(state: _State) -> Check:
    """The signature covers what the contexts make of the document: unknown contexts and terms that
    expansion would drop are rejected (as safe-mode JSON-LD verifiers do). The proofs are left out:
    each supported proof gets the same treatment while it is verified, and an unknown proof type is
    only ignored, never trusted."""
    doc = _without_jwt_claims(state)
    if not isinstance(doc, dict):
        return Check("jsonld", False, "the credential is not a JSON object")
    unproven = {k: v for k, v in doc.items() if k != "proof"}
    # A document the fast path accepts has only defined terms and absolute IRIs from bundled contexts, so
    # it passes the check below (tests/test_fastld.py asserts this over its corpus): skip pyld's expansion.
    digest = fastld.canonical_hash(unproven, state.loader)
    if digest is not None:
        if doc is state.credential:
            state.unproven_hash = digest
        return Check("jsonld", True, "every term and type is defined by known contexts")
    try:
        jsonld.check_safe(unproven, state.loader)
    except jsonld.UnknownContextError as exc:
        return Check("jsonld", False, f"unknown context {exc.url}: only the bundled, pinned contexts are "
                                      "accepted (remote contexts are never fetched)")
    except jsonld.JsonLdSafetyError as exc:
        return Check("jsonld", False, str(exc))
    except Exception as exc:  # pyld's errors for malformed JSON-LD
        return Check("jsonld", False, f"not valid JSON-LD: {_short(exc)}")
    return Check("jsonld", True, "every term and type is defined by known contexts")


# -- proofs ---------------------------------------------------------------------------------------------

def check_di_proof(state: _State) -> Check:
    """Any one valid proof is enough (OB 3.0); unsupported proofs are ignored with a warning."""
    doc = state.credential
    found = proofs.proofs_of(doc)
    if not found:
        return Check("proof", False, "the credential has no proof")
    failures: list[str] = []
    verified: list[str] = []
    if len(found) > MAX_PROOFS:
        state.warnings.append(f"only the first {MAX_PROOFS} of {len(found)} proofs were examined")
    for index, proof in enumerate(found[:MAX_PROOFS], start=1):
        label = _proof_label(index, proof)
        if not isinstance(proof, dict):
            failures.append(f"{label}: not a JSON object")
            continue
        if (proof.get("type"), proof.get("cryptosuite") if proof.get("type") == "DataIntegrityProof"
                else None) not in SUPPORTED_DI:
            state.warnings.append(f"{label} is not a supported proof type and was ignored")
            continue
        key, failure = _verify_one_proof(state, doc, proof, label)
        if key is None:
            failures.append(failure)
            continue
        state.verified_keys.append(key)
        verified.append(f"{label} verified with {key.id}")
    if not verified:
        if not failures:
            return Check("proof", False, "no supported proof (expected DataIntegrityProof eddsa-rdfc-2022, "
                                         "eddsa-2022 or Ed25519Signature2020)")
        return Check("proof", False, "; ".join(failures))
    state.warnings.extend(f"{f} (another proof verified)" for f in failures)
    return Check("proof", True, "; ".join(verified))


def _verify_one_proof(state: _State, doc: dict, proof: Any, label: str, *,
                      remember: bool = False) -> tuple[ResolvedKey | None, str]:
    """Resolve one Data Integrity proof's key and check the proof: (key, "") or (None, why not).

    With ``remember`` (status lists: one list serves thousands of credentials) a proof that verified is
    remembered by (digest of the document and proof, the key's bytes); the key is still resolved afresh
    each time, so a key that is no longer the issuer's is noticed, and a changed list is another digest."""
    try:
        key = state.resolver.resolve(proof.get("verificationMethod") if isinstance(proof, dict) else None)
        if not isinstance(key.public_key, Ed25519PublicKey):
            raise proofs.ProofError(f"{key.id} is not an Ed25519 key")
        if remember and state.loader is None:
            raw = key.public_key.public_bytes_raw()
            # The very object verified before (our list sources hand out one parsed document per list
            # version): no need even to digest it again.
            if _VERIFIED_PROOFS.seen_object(doc, proof, raw):
                return key, ""
            memo = _proof_memo_key(doc, proof, key.public_key)
        else:
            memo = None
        if memo is None or not _VERIFIED_PROOFS.seen(memo):
            proofs.verify_proof(doc, proof, key.public_key, state.loader,
                                document_hash=state.unproven_hash if doc is state.credential else None)
            if memo is not None:
                _VERIFIED_PROOFS.add(memo)
        if memo is not None:
            _VERIFIED_PROOFS.add_object(doc, proof, raw)
    except (KeyResolutionError, proofs.ProofError) as exc:
        return None, f"{label}: {exc}"
    except Exception as exc:  # a surprise in one proof fails that proof, not the whole check
        return None, f"{label}: {type(exc).__name__}: {_short(exc)}"
    return key, ""


class _VerifiedProofs:
    """A bounded, thread-safe set of proofs known to verify (see _verify_one_proof)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        # id(document) -> (document, proof, key bytes). The entry holds the objects themselves, so an id
        # is never reused while its entry lives; shared list documents are never mutated.
        self._objects: OrderedDict[int, tuple[dict, Any, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def seen_object(self, doc: dict, proof: Any, key: bytes) -> bool:
        with self._lock:
            hit = self._objects.get(id(doc))
            return hit is not None and hit[0] is doc and hit[1] is proof and hit[2] == key

    def add_object(self, doc: dict, proof: Any, key: bytes) -> None:
        with self._lock:
            self._objects[id(doc)] = (doc, proof, key)
            while len(self._objects) > 64:
                self._objects.popitem(last=False)

    def seen(self, key: bytes) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
            return False

    def add(self, key: bytes) -> None:
        with self._lock:
            self._seen[key] = None
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._objects.clear()


_VERIFIED_PROOFS = _VerifiedProofs()


def _proof_memo_key(doc: dict, proof: Any, key: Ed25519PublicKey) -> bytes | None:
    """SHA-256 over the whole document, the proof in question and the raw public key (None if the
    document is not plain JSON)."""
    try:
        text = json.dumps([doc, proof], sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode("utf-8") + b"\0" + key.public_bytes_raw()).digest()


def check_jwt_proof(state: _State) -> Check:
    """The JWS signature, with the key from the header (kid dereferenced, or jwk), and the OB claim
    consistency (iss/jti/sub/nbf/exp agree with the credential)."""
    state.warnings.extend(f"JWT {p}" for p in vcjwt.check_header(state.header))
    try:
        key = _jwt_key(state)
        credential = vcjwt.verify_vc_jwt(state.token, key, parsed=(state.header, state.payload))
    except (vcjwt.JwtError, KeyResolutionError) as exc:
        return Check("proof", False, str(exc))
    state.jwt_key = key
    state.credential = credential
    return Check("proof", True, f"JWS ({state.header.get('alg')}) verified with {_key_source(state.header)}")


def _jwt_key(state: _State) -> PublicKey:
    """The key the header points at: kid dereferenced (DID URL / URL), a bare kid looked up in the
    issuer's JWK Set, or the embedded jwk."""
    header = state.header
    kid = header.get("kid")
    if isinstance(kid, str) and kid:
        if ":" in kid:
            try:
                resolved = state.resolver.resolve(kid)
            except KeyResolutionError as exc:
                if "jwk" not in header:
                    raise KeyResolutionError(f"cannot dereference kid {kid}: {exc}") from None
            else:
                state.verified_keys.append(resolved)
                return resolved.public_key
        elif "jwk" not in header and state.issuer_id:
            for entry in state.resolver.jwks_keys(state.issuer_id):
                if entry.get("kid") == kid:
                    return _jwk_key(entry)
            raise KeyResolutionError(f"kid {kid!r} is not in the issuer's JWK Set")
    key = vcjwt.key_from_header(header)
    if key is None:
        raise vcjwt.JwtError("JWT header names no key (neither kid nor jwk)")
    return key


def _key_source(header: dict) -> str:
    kid = header.get("kid")
    return f"kid {kid}" if kid else "the header jwk"


# -- key provenance ------------------------------------------------------------------------------------

def check_di_key_provenance(state: _State) -> Check:
    """The verification method's controller must be the issuer (OB implementation guide, DI 1.0):
    a valid signature by someone else's key says nothing about the issuer."""
    if not state.verified_keys:
        return Check("key_provenance", None, "not checked: no proof verified")
    issuer = state.issuer_id
    if not issuer:
        return Check("key_provenance", False, "the credential names no issuer id")
    for key in state.verified_keys:
        if key.controller == issuer:
            if not key.confirmed_by_controller:
                state.warnings.append(
                    f"the key of {key.id} was read from the method URL itself, not from a document the "
                    "issuer publishes; it shows only which issuer the proof claims (1EdTech validator rule)")
            return Check("key_provenance", True, f"{key.id} is controlled by the issuer {issuer}")
    if not issuer.startswith(("did:", "http://", "https://")):
        # An issuer id such as urn:uuid can publish no key at all, so no key can be shown to be its own.
        # Like 1EdTech's validator, accept a self-certifying did:key then, and say plainly what that means.
        for key in state.verified_keys:
            if key.controller.startswith("did:key:"):
                state.warnings.append(
                    f"the issuer id {issuer} cannot be dereferenced, so nothing ties it to a key; the proof was "
                    f"made with the self-certifying key {key.controller}: trust this issuer only via a trust list")
                return Check("key_provenance", True,
                             f"{key.id} is a did:key; the issuer {issuer} publishes no keys to compare with")
    controllers = ", ".join(sorted({k.controller for k in state.verified_keys}))
    return Check("key_provenance", False, f"key controller {controllers} is not the issuer {issuer}")


def check_jwt_key_provenance(state: _State) -> Check:
    """The JWT key must be one the issuer publishes: a kid its DID document lists for assertions, or a
    member of its JWK Set at https://{authority}/.well-known/jwks.json (OB implementation guide)."""
    if state.jwt_key is None:
        return Check("key_provenance", None, "not checked: the JWT signature did not verify")
    issuer = state.issuer_id
    if not issuer:
        return Check("key_provenance", False, "the credential names no issuer id")
    for resolved in state.verified_keys:
        if resolved.controller == issuer and resolved.confirmed_by_controller \
                and _same_key(resolved.public_key, state.jwt_key):
            return Check("key_provenance", True, f"kid {resolved.id} is published by the issuer {issuer}")
    where, problems = _published_by(state, issuer, state.jwt_key)
    if where:
        return Check("key_provenance", True, f"the key is published by the issuer in {where}")
    detail = f"key not published by the issuer {issuer}"
    return Check("key_provenance", False, detail + (f" ({'; '.join(problems)})" if problems else ""))


def _published_by(state: _State, issuer: str, key: PublicKey) -> tuple[str | None, list[str]]:
    """Where the issuer publishes ``key`` (its DID document, its JWK Set), with the lookup problems."""
    problems: list[str] = []
    if issuer.startswith("did:"):
        try:
            if any(_same_key(k.public_key, key) for k in state.resolver.assertion_keys(issuer)):
                return f"the DID document of {issuer}", problems
            problems.append(f"not among the assertion keys of {issuer}")
        except KeyResolutionError as exc:
            problems.append(str(exc))
    if issuer.startswith(("did:web:", "https://", "http://")):
        try:
            for entry in state.resolver.jwks_keys(issuer):
                if entry.get("iss") not in (None, issuer):
                    continue  # a JWK that names another issuer vouches for nobody else
                try:
                    if _same_key(_jwk_key(entry), key):
                        return "its JWK Set", problems
                except KeyResolutionError:
                    continue
            problems.append("not in its JWK Set")
        except KeyResolutionError as exc:
            problems.append(str(exc))
    return None, problems


# -- validity window ------------------------------------------------------------------------------------

def check_validity_window(state: _State) -> Check:
    """validFrom/validUntil (VCDM 2.0) or issuanceDate/expirationDate (VCDM 1.1) against now."""
    doc = state.credential
    if not isinstance(doc, dict):
        return Check("validity_window", False, "no credential to read dates from")
    start_field = "validFrom" if "validFrom" in doc else "issuanceDate"
    end_field = "validUntil" if "validUntil" in doc else "expirationDate"
    now_text = _format(state.now)
    if start_field not in doc:
        return Check("validity_window", False, "the credential has no validFrom (or issuanceDate)")
    try:
        start = parse_datetime(doc[start_field], start_field)
        end = parse_datetime(doc[end_field], end_field) if end_field in doc else None
    except ValueError as exc:
        return Check("validity_window", False, str(exc))
    if state.now < start:
        return Check("validity_window", False,
                     f"not yet valid: {start_field} {doc[start_field]} is after now ({now_text})")
    if end is not None and state.now > end:
        return Check("validity_window", False,
                     f"expired: {end_field} {doc[end_field]} is before now ({now_text})")
    until = f" until {doc[end_field]}" if end is not None else " with no expiry"
    return Check("validity_window", True, f"valid from {doc[start_field]}{until} (now {now_text})")




def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- recipient ------------------------------------------------------------------------------------------

def check_recipient(state: _State) -> Check:
    """Only when the submitter says whose badge it is: the email, normalised as we hash it, must match an
    emailAddress identifier (hashed with that identifier's salt, or in plain text)."""
    if state.recipient_email is None:
        return Check("recipient", None, "not checked: no recipient email given")
    if not isinstance(state.recipient_email, str) or "@" not in state.recipient_email:
        return Check("recipient", False, "the given recipient email is not an email address")
    identities = [i for s in _subjects(state.credential) for i in _as_list(s.get("identifier"))
                  if isinstance(i, dict) and i.get("identityType") == "emailAddress"]
    if not identities:
        return Check("recipient", False, "the credential has no email identifier to compare with")
    normalised = normalise_email(state.recipient_email)
    # Also the email as typed (trimmed): other issuers may hash it without lower-casing.
    candidates = list(dict.fromkeys([normalised, state.recipient_email.strip()]))
    for identity in identities:
        if _identity_matches(identity, candidates):
            how = "hashed" if identity.get("hashed") is True else "plain-text"
            return Check("recipient", True, f"the email matches the credential's {how} email identifier")
    return Check("recipient", False,
                 f"the email does not match the credential's {len(identities)} email identifier(s)")


def _identity_matches(identity: dict, candidates: list[str]) -> bool:
    stated = identity.get("identityHash")
    if not isinstance(stated, str):
        return False
    if identity.get("hashed") is not True:
        plain = normalise_email(stated).encode()
        return any(hmac.compare_digest(plain, c.lower().encode()) for c in candidates)
    salt = identity.get("salt") if isinstance(identity.get("salt"), str) else ""
    algorithm, _, digest = stated.strip().lower().partition("$")
    if algorithm == "sha256":
        computed = [hash_identity(c, salt).partition("$")[2] for c in candidates]
    elif algorithm == "md5":  # OB 3.0 still allows md5 identity hashes
        computed = [hashlib.md5((c + salt).encode("utf-8")).hexdigest() for c in candidates]
    else:
        return False
    return any(hmac.compare_digest(value.encode(), digest.encode()) for value in computed)


# -- status ---------------------------------------------------------------------------------------------

def check_status(state: _State) -> Check:
    """Revocation, failing closed: only a verified list that shows the entry clear passes.

    A credential without credentialStatus passes: its issuer gave itself no way to revoke it, so there
    is nothing to look up (the detail says so). Status is followed only once a proof has verified, so
    a forged credential cannot make us fetch URLs it chose.
    """
    doc = state.credential
    if not isinstance(doc, dict):
        return Check("status", None, "not checked: no credential")
    entries = _as_list(doc.get("credentialStatus"))
    if not entries:
        return Check("status", True, "the credential has no status entry: its issuer cannot revoke it")
    if not _proof_verified(state):
        return Check("status", None, "not checked: no proof verified, so the status entry is not followed")
    if state.status_lists is None:
        return Check("status", False, "status could not be checked: no status list source is configured "
                                      "(failing closed)")
    if len(entries) > MAX_STATUS_ENTRIES:
        return Check("status", False, f"{len(entries)} credentialStatus entries; at most "
                                      f"{MAX_STATUS_ENTRIES} are read (OB allows one)")
    findings = [_entry_status(state, entry) for entry in entries]
    failed = [detail for ok, detail in findings if not ok]
    if failed:
        return Check("status", False, "; ".join(failed))
    return Check("status", True, "; ".join(detail for _, detail in findings))


def _proof_verified(state: _State) -> bool:
    return state.jwt_key is not None if state.format == "vc-jwt" else bool(state.verified_keys)


def _entry_status(state: _State, entry: Any) -> tuple[bool, str]:
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind in BITSTRING_ENTRY_TYPES:
        return _bitstring_status(state, entry)
    if kind == REVOCATION_LIST_1EDTECH:
        return _revocation_list_status(state, entry)
    return False, (f"unsupported credentialStatus type {kind!r}: whether it was revoked cannot be told "
                   "(failing closed)")


def _bitstring_status(state: _State, raw: dict) -> tuple[bool, str]:
    """BSL "Validate Algorithm": retrieve, verify (proof, issuer, window), purpose, expand, length, range."""
    try:
        entry = status.parse_entry(raw)
    except StatusError as exc:
        return False, str(exc)
    state.warnings.extend(entry.warnings)
    url = entry.list_url
    try:
        list_doc = state.status_lists.get(url)
    except Exception as exc:  # any failure of the source is a retrieval failure
        return False, (f"{STATUS_RETRIEVAL_ERROR}: cannot retrieve the status list {url}: {_short(exc)} "
                       "(failing closed)")
    try:
        _verify_status_list(state, list_doc)
        value = status.read_status(entry, list_doc)
    except StatusError as exc:
        return False, f"{exc} (status list {url})"
    where = f"entry {entry.index} of {url}"
    listed_id = list_doc.get("id")
    same_list = isinstance(listed_id, str) and listed_id.split("#", 1)[0] == url.split("#", 1)[0]
    if not same_list:
        # Another list of the same issuer could be served in its place: believe it when it says
        # "set" (that can only make us stricter), never when it says "clear".
        if value == 0:
            return False, (f"{STATUS_VERIFICATION_ERROR}: the list fetched from {url} has id "
                           f"{listed_id!r}, so it may be another list of the issuer")
        state.warnings.append(f"the status list fetched from {url} has id {listed_id!r}; its set bit "
                              "was honoured anyway")
    if value == 0:
        return True, f"not {_purpose_state(entry.purpose)}: {where} is clear (status list verified)"
    if entry.purpose in ("revocation", "suspension"):
        return False, f"{_purpose_state(entry.purpose)} ({where} is set)"
    state.warnings.append(f"status {value:#x} for purpose {entry.purpose!r} at {where}")
    return True, f"{where} holds status {value:#x} for purpose {entry.purpose!r}, which does not invalidate"


def _purpose_state(purpose: str) -> str:
    return {"revocation": "revoked", "suspension": "suspended"}.get(purpose, f"flagged for {purpose}")


def _verify_status_list(state: _State, list_doc: Any) -> None:
    """The list must be a status list credential of the credential's own issuer, signed by a key of that
    issuer, and valid now; anything else is STATUS_VERIFICATION_ERROR."""
    status.list_subject(list_doc)
    list_issuer = vcjwt.issuer_id(list_doc)
    if list_issuer != state.issuer_id:
        raise StatusError(STATUS_VERIFICATION_ERROR, f"the status list is issued by {list_issuer!r}, not "
                                                     f"by the credential's issuer {state.issuer_id!r}")
    found = proofs.proofs_of(list_doc)
    if not found:
        raise StatusError(STATUS_VERIFICATION_ERROR, "the status list credential is not signed")
    failures = []
    for index, proof in enumerate(found[:MAX_PROOFS], start=1):
        label = _proof_label(index, proof)
        key, failure = _verify_one_proof(state, list_doc, proof, label, remember=True)
        if key is None:
            failures.append(failure)
            continue
        if key.controller == list_issuer or _signed_the_credential(state, key.public_key):
            break
        failures.append(f"{label}: key controller {key.controller} is not the issuer {list_issuer}")
    else:
        shown = "; ".join(failures) or "no proof"
        raise StatusError(STATUS_VERIFICATION_ERROR, f"the status list's proof does not verify: {shown}")
    status.check_list_window(list_doc, state.now)


def _signed_the_credential(state: _State, key: PublicKey) -> bool:
    """The very key that signed the credential also vouches for its list (the case of an issuer id,
    such as urn:uuid, that publishes no keys to compare a controller with)."""
    known = [k.public_key for k in state.verified_keys]
    if state.jwt_key is not None:
        known.append(state.jwt_key)
    return any(_same_key(key, other) for other in known)


def _revocation_list_status(state: _State, entry: dict) -> tuple[bool, str]:
    """1EdTech Revocation List: the credential's id among revokedCredential[] (``revoked`` defaults to
    true). Unlike 1EdTech's validator, which only warns, an unreachable list fails the check."""
    url = entry.get("id")
    credential_id = state.credential.get("id")
    if not isinstance(url, str) or not url:
        return False, "the 1EdTechRevocationList status has no list URL (id)"
    if not isinstance(credential_id, str) or not credential_id:
        return False, "the credential has no id to look up in its 1EdTech revocation list"
    try:
        document = state.status_lists.get(url)
    except Exception as exc:
        return False, (f"{STATUS_RETRIEVAL_ERROR}: cannot retrieve the 1EdTech revocation list {url}: "
                       f"{_short(exc)} (we fail closed; the 1EdTech validator only warns)")
    listed = document.get("revokedCredential") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        return False, f"{url} is not a 1EdTech revocation list (no revokedCredential array)"
    for item in listed:
        if isinstance(item, dict) and item.get("id") == credential_id and item.get("revoked", True) is not False:
            reason = item.get("revocationReason")
            because = f": {reason}" if isinstance(reason, str) and reason else ""
            return False, f"revoked (listed in the 1EdTech revocation list {url}{because})"
    return True, f"not revoked: not listed in the 1EdTech revocation list {url} (an unsigned list)"


class FetchingStatusLists:
    """A StatusListSource: our own lists from ``local`` (the database: always current, never cached),
    others fetched under ``policy`` (the key-fetch limits: HTTPS, public addresses, small bodies).

    Fetched documents are cached until the earliest of validUntil, ``ttl`` (ms, from the list) or
    ``default_ttl``, and never beyond ``max_age``: a list is a hint of how long it stays current, and a
    far-off validUntil must not hide new revocations for months. Failures are not cached. One instance
    may serve many verifications and threads.
    """

    def __init__(self, policy: FetchPolicy | None = None, *, fetch: Callable[..., dict] = fetch_json,
                 local: Callable[[str], dict | None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 default_ttl: timedelta = timedelta(minutes=5), max_age: timedelta = timedelta(days=1),
                 max_cached: int = 256, local_reuse: float = 0.0) -> None:
        self.policy = policy or FetchPolicy()
        # Seconds for which this instance reuses a list it read from ``local`` (0: read every time). The
        # app's verifiers live for one request or command (identity.get_verifier), so a batch of badges
        # (an award application: 60 badges, mostly on one list) reads each list once, as one snapshot.
        self.local_reuse = local_reuse
        self._local_seen: dict[str, tuple[float, dict]] = {}
        self._fetch = fetch
        self.local = local
        self._now = now
        self.default_ttl = default_ttl
        self.max_age = max_age
        self.max_cached = max_cached
        self._cache: OrderedDict[str, tuple[datetime, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> dict:
        key = url.split("#", 1)[0]
        if self.local is not None:
            seen = self._local_seen.get(key) if self.local_reuse > 0 else None
            if seen is not None and seen[0] > time.monotonic():
                return seen[1]
            document = self.local(key)
            if document is not None:
                if self.local_reuse > 0:
                    self._local_seen[key] = (time.monotonic() + self.local_reuse, document)
                return document
        now = self._now()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
            self._cache.pop(key, None)
        document = self._fetch(key, policy=self.policy)
        expires = self._expiry(document, now)
        if expires > now:
            with self._lock:
                self._cache[key] = (expires, document)
                while len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)
        return document

    def _expiry(self, document: Any, now: datetime) -> datetime:
        """When a fetched document stops being reused: min(now + ttl, validUntil, now + max_age)."""
        ttl = self.default_ttl
        subject = document.get("credentialSubject") if isinstance(document, dict) else None
        declared = subject.get("ttl") if isinstance(subject, dict) else None
        if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 0:
            ttl = timedelta(milliseconds=declared)
        expires = now + min(ttl, self.max_age)
        until = document.get("validUntil") if isinstance(document, dict) else None
        if until is not None:
            try:
                expires = min(expires, parse_datetime(until, "validUntil"))
            except ValueError:
                return now  # an unreadable date: do not keep it
        return expires


DATA_INTEGRITY_CHECKS: tuple[tuple[str, CheckFn], ...] = (
    ("schema", check_schema),
    ("jsonld", check_jsonld),
    ("proof", check_di_proof),
    ("key_provenance", check_di_key_provenance),
    ("validity_window", check_validity_window),
    ("recipient", check_recipient),
    ("status", check_status),
)
VC_JWT_CHECKS: tuple[tuple[str, CheckFn], ...] = (
    ("schema", check_schema),
    ("jsonld", check_jsonld),
    ("proof", check_jwt_proof),
    ("key_provenance", check_jwt_key_provenance),
    ("validity_window", check_validity_window),
    ("recipient", check_recipient),
    ("status", check_status),
)
assert tuple(n for n, _ in DATA_INTEGRITY_CHECKS) == tuple(n for n, _ in VC_JWT_CHECKS) == CHECK_NAMES


# -- summary and helpers --------------------------------------------------------------------------------

def summarize(credential: Any) -> dict:
    """What a displayer shows: ids, names, dates, and how the recipient is identified (never the email)."""
    if not isinstance(credential, dict):
        return {}
    issuer = credential.get("issuer")
    issuer_obj = issuer if isinstance(issuer, dict) else {}
    subjects = _subjects(credential)
    subject = subjects[0] if subjects else {}
    achievement = subject.get("achievement") if isinstance(subject.get("achievement"), dict) else {}
    identifiers = [i for i in _as_list(subject.get("identifier")) if isinstance(i, dict)]
    summary: dict[str, Any] = {
        "id": credential.get("id"),
        "type": credential.get("type"),
        "issuer": {"id": vcjwt.issuer_id(credential), "name": issuer_obj.get("name")},
        "name": credential.get("name"),
        "achievement": {k: achievement.get(k) for k in ("id", "name", "achievementType")},
        "recipient": {
            "id": subject.get("id"),
            "identityType": identifiers[0].get("identityType") if identifiers else None,
            "hashed": identifiers[0].get("hashed") if identifiers else None,
        },
    }
    for name in ("validFrom", "validUntil", "issuanceDate", "expirationDate"):
        if name in credential:
            summary[name] = credential[name]
    return summary


def _unverified_credential(payload: dict) -> dict:
    """The credential a JWT carries, for the checks that run before (and whatever) the signature says."""
    try:
        return vcjwt.credential_from_payload(payload)
    except Exception:
        vc = payload.get("vc")
        return vc if isinstance(vc, dict) else payload


def _without_jwt_claims(state: _State) -> Any:
    if state.format == "vc-jwt" and isinstance(state.credential, dict):
        return vcjwt.strip_registered_claims(state.credential)
    return state.credential


def _jwk_key(entry: Any) -> PublicKey:
    try:
        return public_key_from_jwk(entry)
    except ValueError as exc:
        raise KeyResolutionError(f"unusable JWK: {exc}") from None


def _same_key(a: PublicKey, b: PublicKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return a.public_bytes(*spki) == b.public_bytes(*spki)
    except (ValueError, TypeError, AttributeError):
        return False


def _proof_label(index: int, proof: Any) -> str:
    if not isinstance(proof, dict):
        return f"proof {index}"
    kind = proof.get("type")
    suite = proof.get("cryptosuite")
    return f"proof {index} ({kind}{'/' + str(suite) if suite else ''})"


def _subjects(doc: Any) -> list[dict]:
    if not isinstance(doc, dict):
        return []
    return [s for s in _as_list(doc.get("credentialSubject")) if isinstance(s, dict)]


def _first_context(doc: dict) -> Any:
    context = doc.get("@context")
    return context[0] if isinstance(context, list) and context else context


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"
