"""The VC API (W3C VCALM): issue any well-formed credential as this issuer, verify credentials and
presentations from anyone, and run the VC API exchange the Learner Credential Wallet (LCW) uses.

Why it is shaped this way:

* **Issuing** signs *generic* credentials (the W3C test suites send VC 2.0 examples and, for the eddsa
  suite, VCDM 1.1 ones), not only Open Badges, but only as this service's issuer, and only after the same
  JSON-LD safe-mode check our badges go through: a term the contexts do not define would be shown but not
  signed. Nothing is stored except an audit entry and, when asked for, a status list entry.
* **Verifying** reuses `verify.Verifier` (proof, key provenance, status, JSON-LD) and replaces the two
  checks that are Open Badges rules rather than VC rules: the structure check (a VC needs no subject id,
  and `validFrom` is optional in VCDM 2.0) and the validity window. No trust list: a credential signed by
  anyone's did:key verifies when its proof, key and status do.
* **Presentations** prove control of a DID: one proof, purpose `authentication`, the expected challenge
  and domain, a key its controller lists for authentication, and the stated `holder` (when there is one)
  is that controller. Ed25519Signature2020 (what LCW signs with) and eddsa-rdfc-2022 are accepted.
* **Exchanges** are `WalletOffer` rows of kind "vcapi": a random challenge, ten minutes by default, and a
  single conditional update of `state` from "offered" to "delivered", so a presentation replayed, or two
  racing, cannot both get a copy.

Pure apart from `issue`, `create_exchange` and `complete_exchange`, which take the session.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import update
from sqlalchemy.orm import Session

from . import jsonld, proofs, revocation, status, vcjwt, wallets
from .credentials import parse_datetime
from .issuing import IssuerContext, serialise
from .models import AuditEntry, Award, Credential, WalletOffer, utcnow
from .multikey import did_key
from .presentations import PresentationError, _require_authentication
from .resolve import KeyResolutionError, KeyResolver
from .verify import Check, Verifier, all_passed

VC_V1 = "https://www.w3.org/2018/credentials/v1"
VC_V2 = "https://www.w3.org/ns/credentials/v2"
DI_V1 = "https://w3id.org/security/data-integrity/v1"
DI_V2 = "https://w3id.org/security/data-integrity/v2"
STATUS_V1 = "https://www.w3.org/ns/credentials/status/v1"
VERIFIABLE_CREDENTIAL = "VerifiableCredential"
VERIFIABLE_PRESENTATION = "VerifiablePresentation"
ENVELOPED_CREDENTIAL = "EnvelopedVerifiableCredential"
JWT_DATA_URL = "data:application/vc+jwt,"
AUTHENTICATION = "authentication"
OB_TYPES = frozenset({"OpenBadgeCredential", "AchievementCredential"})

# Problem types (RFC 9457 objects in `problemDetails`): VCDM 2.0 §7.1, Data Integrity, Bitstring Status List.
_VCDM = "https://www.w3.org/TR/vc-data-model#"
_SECURITY = "https://w3id.org/security#"
PARSING_ERROR = (_VCDM + "PARSING_ERROR", -64)
CRYPTOGRAPHIC_SECURITY_ERROR = (_VCDM + "CRYPTOGRAPHIC_SECURITY_ERROR", -65)
MALFORMED_VALUE_ERROR = (_VCDM + "MALFORMED_VALUE_ERROR", -66)
RANGE_ERROR = (_VCDM + "RANGE_ERROR", -67)
PROOF_VERIFICATION_ERROR = (_SECURITY + "PROOF_VERIFICATION_ERROR", None)
INVALID_CHALLENGE_ERROR = (_SECURITY + "INVALID_CHALLENGE_ERROR", None)
INVALID_DOMAIN_ERROR = (_SECURITY + "INVALID_DOMAIN_ERROR", None)
PROBLEM_OF_CHECK = {
    "structure": MALFORMED_VALUE_ERROR,
    "schema": MALFORMED_VALUE_ERROR,
    "jsonld": PARSING_ERROR,
    "proof": PROOF_VERIFICATION_ERROR,
    "proof_chain": PROOF_VERIFICATION_ERROR,
    "key_provenance": CRYPTOGRAPHIC_SECURITY_ERROR,
    "validity_window": RANGE_ERROR,
    "challenge": INVALID_CHALLENGE_ERROR,
    "domain": INVALID_DOMAIN_ERROR,
    "holder": CRYPTOGRAPHIC_SECURITY_ERROR,
}

# An absolute URI (scheme ":" then no white space): what VCDM 2.0 calls a URL for ids and types.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")
# XML Schema dateTimeStamp: a dateTime with a mandatory time zone (VCDM 2.0 validFrom / validUntil).
_DATETIME_STAMP = re.compile(
    r"^-?\d{4,}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    r"(Z|z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))$")
# The typed objects of VCDM 2.0 §4.5 "Types": each value MUST have a type.
_TYPED = ("credentialStatus", "credentialSchema", "refreshService", "termsOfUse", "evidence")
ISSUE_OPTIONS = frozenset({"credentialStatus", "credentialId"})
STATUS_OPTION_FIELDS = frozenset({"type", "statusPurpose"})
VERIFY_OPTIONS = frozenset({"checks"})
PRESENTATION_OPTIONS = frozenset({"checks", "challenge", "domain"})
MAX_CREDENTIALS_IN_PRESENTATION = 16

EXCHANGE_TTL = timedelta(minutes=10)
MIN_EXCHANGE_TTL = timedelta(minutes=1)
MAX_EXCHANGE_TTL = timedelta(days=1)
ACCEPTED_CRYPTOSUITES = ("eddsa-rdfc-2022", "Ed25519Signature2020")
LCW_LINK = "https://lcw.app/mobile"


class VcApiError(ValueError):
    """A request the VC API refuses before verifying anything; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400, field: str | None = None,
                 problems: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.problems = problems or []


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- contexts beyond the bundled ones ----------------------------------------------------------------

def load_extra_contexts(manifest_path: str | Path) -> dict[str, dict]:
    """URL -> context from a manifest shaped like `issuer/contexts/MANIFEST.json` ({url: {"file", "sha256"}},
    files relative to the manifest). Each file must match its pinned sha256: an operator can add a
    context the W3C suites need (the examples context, which no registry package ships) without it
    ever being fetched, and without it changing under us."""
    path = Path(manifest_path)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: a context manifest is a JSON object {{url: {{file, sha256}}}}")
    documents: dict[str, dict] = {}
    for url, entry in manifest.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                or not isinstance(entry.get("sha256"), str):
            raise ValueError(f"{path}: the entry for {url} needs a file and a sha256")
        data = (path.parent / entry["file"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"].lower():
            raise ValueError(f"{path}: {entry['file']} for {url} has sha256 {digest}, pinned {entry['sha256']}")
        documents[url] = json.loads(data)
    return documents


def make_loader(manifest_path: str | Path | None) -> Any:
    """The bundled contexts, plus those of the optional manifest (never one that replaces a bundled one)."""
    if not manifest_path:
        return jsonld.document_loader
    return jsonld.make_loader(load_extra_contexts(manifest_path))


# --- the shape of a credential (VCDM 2.0, and 1.1 for what the eddsa suite sends) ---------------------

def _id_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, str) or not _URL.match(value):
        return f"{where} must be a single URL"
    return None


def _date_problem(doc: dict, name: str) -> str | None:
    value = doc.get(name)
    if not isinstance(value, str) or not _DATETIME_STAMP.match(value):
        return f"{name} must be an XML Schema dateTimeStamp (a date-time with a time zone)"
    try:
        parse_datetime(value, name)
    except ValueError as exc:
        return str(exc)
    return None


def version_of(doc: Any) -> int | None:
    """2 for VCDM 2.0, 1 for VCDM 1.1, None when the first context is neither."""
    contexts = _as_list(doc.get("@context")) if isinstance(doc, dict) else []
    first = contexts[0] if contexts else None
    return 2 if first == VC_V2 else 1 if first == VC_V1 else None


def credential_problems(doc: Any) -> list[str]:
    """What makes `doc` not a conforming credential (VCDM 2.0 §4, or 1.1 for a VCDM 1.1 credential),
    apart from the JSON-LD rules, which `jsonld.check_safe` enforces."""
    if not isinstance(doc, dict):
        return ["the credential must be a JSON object"]
    problems: list[str] = []
    if "@context" not in doc:
        problems.append("the credential has no @context")
    else:
        contexts = _as_list(doc["@context"])
        version = version_of(doc)
        if version is None:
            problems.append(f"the first @context must be {VC_V2} (or {VC_V1} for VCDM 1.1)")
        if any(not ((isinstance(c, str) and _URL.match(c)) or isinstance(c, dict)) for c in contexts[1:]):
            problems.append("every later @context item must be a URL or a context object")
    version = version_of(doc) or 2

    if "type" not in doc:
        problems.append("the credential has no type")
    elif not all(isinstance(t, str) and t for t in _as_list(doc["type"])):
        problems.append("type must be one or more strings")
    elif VERIFIABLE_CREDENTIAL not in _as_list(doc["type"]):
        problems.append(f"type must include {VERIFIABLE_CREDENTIAL}")

    if "id" in doc:
        problems.append(_id_problem(doc["id"], "id"))

    if "issuer" not in doc:
        problems.append("the credential has no issuer")
    elif isinstance(doc["issuer"], dict):
        problems.append(_id_problem(doc["issuer"].get("id"), "issuer.id"))
    else:
        problems.append(_id_problem(doc["issuer"], "issuer"))

    subjects = _as_list(doc.get("credentialSubject"))
    if "credentialSubject" not in doc or not subjects:
        problems.append("the credential has no credentialSubject")
    for i, subject in enumerate(subjects):
        where = "credentialSubject" if len(subjects) == 1 else f"credentialSubject[{i}]"
        if not isinstance(subject, dict):
            problems.append(f"{where} must be an object")
        elif not subject:
            problems.append(f"{where} makes no claim")
        elif "id" in subject:
            problems.append(_id_problem(subject["id"], f"{where}.id"))

    start, end = ("validFrom", "validUntil") if version == 2 else ("issuanceDate", "expirationDate")
    if version == 1 and start not in doc:
        problems.append("a VCDM 1.1 credential must have issuanceDate")
    for name in (start, end):
        if name in doc:
            problems.append(_date_problem(doc, name))
    if start in doc and end in doc and not _date_problem(doc, start) and not _date_problem(doc, end) \
            and parse_datetime(doc[start]) > parse_datetime(doc[end]):
        problems.append(f"{start} is later than {end}")

    for name in _TYPED:
        for i, item in enumerate(_as_list(doc.get(name))):
            where = name if not isinstance(doc.get(name), list) else f"{name}[{i}]"
            if not isinstance(item, dict):
                problems.append(f"{where} must be an object")
                continue
            if not _as_list(item.get("type")) or not all(isinstance(t, str) and t for t in _as_list(item["type"])):
                problems.append(f"{where} must have a type")
            if name == "credentialSchema" or "id" in item:
                problems.append(_id_problem(item.get("id"), f"{where}.id"))

    seen: set[str] = set()
    for i, item in enumerate(_as_list(doc.get("relatedResource"))):
        where = f"relatedResource[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        problems.append(_id_problem(item.get("id"), f"{where}.id"))
        if item.get("id") in seen:
            problems.append(f"{where}.id repeats another relatedResource")
        seen.add(str(item.get("id")))
        if not any(isinstance(item.get(k), str) and item[k] for k in ("digestSRI", "digestMultibase")):
            problems.append(f"{where} needs digestSRI or digestMultibase")
    return [p for p in problems if p]


def _proof_chain_problems(doc: dict) -> list[str]:
    """A `previousProof` must name a proof of the same set (Data Integrity "proof chains")."""
    found = [p for p in proofs.proofs_of(doc) if isinstance(p, dict)]
    ids = {p.get("id") for p in found if isinstance(p.get("id"), str)}
    problems = []
    for index, proof in enumerate(found, start=1):
        for ref in _as_list(proof.get("previousProof")):
            if not isinstance(ref, str) or ref not in ids:
                problems.append(f"proof {index} names a previousProof {ref!r} that is not in the proof set")
    return problems


# --- issuing ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssueRequest:
    credential: dict
    status_purpose: str | None = None
    credential_id: str | None = None


def parse_issue_request(body: Any) -> IssueRequest:
    """`{"credential": {...}, "options": {...}}`, or VcApiError naming what is wrong."""
    if not isinstance(body, dict):
        raise VcApiError("the request body must be a JSON object {\"credential\": ..., \"options\": ...}")
    unknown = sorted(set(body) - {"credential", "options"})
    if unknown:
        raise VcApiError(f"unknown request member(s): {', '.join(unknown)}", field=unknown[0])
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise VcApiError("credential must be a JSON object", field="credential")
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise VcApiError("options must be a JSON object", field="options")
    unknown = sorted(set(options) - ISSUE_OPTIONS)
    if unknown:
        raise VcApiError(f"unsupported option(s): {', '.join(unknown)} (supported: "
                         f"{', '.join(sorted(ISSUE_OPTIONS))})", field=f"options.{unknown[0]}")
    purpose = None
    if "credentialStatus" in options:
        wanted = options["credentialStatus"]
        if not isinstance(wanted, dict):
            raise VcApiError("options.credentialStatus must be an object", field="options.credentialStatus")
        unknown = sorted(set(wanted) - STATUS_OPTION_FIELDS)
        if unknown:
            raise VcApiError(f"options.credentialStatus has unsupported member(s): {', '.join(unknown)}",
                             field="options.credentialStatus")
        if wanted.get("type") != status.BITSTRING_ENTRY:
            raise VcApiError(f"options.credentialStatus.type must be {status.BITSTRING_ENTRY}",
                             field="options.credentialStatus.type")
        purpose = wanted.get("statusPurpose", revocation.PURPOSE)
        if purpose != revocation.PURPOSE:
            raise VcApiError(f"only statusPurpose {revocation.PURPOSE!r} is supported (credentials issued here "
                             "can be revoked, not suspended)", field="options.credentialStatus.statusPurpose")
    credential_id = options.get("credentialId")
    if credential_id is not None and (not isinstance(credential_id, str) or not _URL.match(credential_id)
                                      or len(credential_id) > 500):
        raise VcApiError("options.credentialId must be a URL", field="options.credentialId")
    return IssueRequest(credential, purpose, credential_id)


def prepare(ctx: IssuerContext, req: IssueRequest, now: datetime, loader: Any = None) -> dict:
    """The credential as it will be signed (issuer set or checked; for VCDM 1.1, issuanceDate and the
    contexts the proof and the status entry need), checked for structure and JSON-LD safety."""
    doc = copy.deepcopy(req.credential)
    if "issuer" not in doc:
        doc["issuer"] = ctx.did
    issuer = vcjwt.issuer_id(doc) if isinstance(doc.get("issuer"), (str, dict)) else None
    if issuer not in signing_methods(ctx):
        shown = issuer if issuer is not None else json.dumps(doc.get("issuer"))[:200]
        raise VcApiError(f"issuer {shown} is not this service's issuer {ctx.did} (nor its did:key "
                         f"{key_did(ctx)})", field="credential.issuer")
    if version_of(doc) == 1:
        doc.setdefault("issuanceDate", _stamp(now))
        contexts = _as_list(doc["@context"])
        # DataIntegrityProof is not a VCDM 1.1 term: like Digital Bazaar's signer, add its context.
        if DI_V1 not in contexts and DI_V2 not in contexts:
            contexts.append(DI_V2)
        if req.status_purpose and STATUS_V1 not in contexts:
            contexts.append(STATUS_V1)
        doc["@context"] = contexts
    if req.status_purpose and "credentialStatus" in doc:
        raise VcApiError("the credential already has a credentialStatus; options.credentialStatus would add "
                         "another", field="credential.credentialStatus")
    problems = credential_problems(doc)
    if problems:
        raise VcApiError("the credential is not well formed: " + "; ".join(problems), field="credential",
                         problems=[problem_of(Check("structure", False, p)) for p in problems])
    probe = doc
    if req.status_purpose:
        # The entry's shape (and so its terms) is known before an index is drawn: check it now.
        probe = {**doc, "credentialStatus": status.status_entry(revocation.list_url(ctx.base_url, "x"), 0,
                                                                req.status_purpose)}
    try:
        jsonld.check_safe({k: v for k, v in probe.items() if k != "proof"}, loader)
    except jsonld.UnknownContextError as exc:
        raise VcApiError(f"unknown context {exc.url}: only bundled, pinned contexts are accepted (remote "
                         "contexts are never fetched)", field="credential.@context") from None
    except jsonld.JsonLdSafetyError as exc:
        raise VcApiError(str(exc), field="credential") from None
    except Exception as exc:  # pyld's errors for malformed JSON-LD
        raise VcApiError(f"the credential is not valid JSON-LD: {str(exc)[:300]}", field="credential") from None
    return doc


def key_did(ctx: IssuerContext) -> str:
    """The current Ed25519 key as a did:key: a second name for this issuer that a verifier can resolve
    without the network (the W3C eddsa test suite dereferences keys only through did:key or https).
    It changes when the key is rotated; the did:web identity does not."""
    return did_key(ctx.keyring.current("Ed25519").public_key)


def signing_methods(ctx: IssuerContext) -> dict[str, str]:
    """The issuer ids the VC API signs as, each with the verification method it signs with."""
    key = ctx.keyring.current("Ed25519")
    as_key = key_did(ctx)
    return {ctx.did: f"{ctx.did}#{key.kid}", as_key: f"{as_key}#{as_key.removeprefix('did:key:')}"}


def sign(ctx: IssuerContext, unsigned: dict, now: datetime, loader: Any = None) -> dict:
    """eddsa-rdfc-2022 with the current key, as `issuing.sign`, with the VC API's context loader; the
    verification method is the did:web one, or the did:key one when the credential's issuer is the did:key."""
    key = ctx.keyring.current("Ed25519")
    method = signing_methods(ctx).get(vcjwt.issuer_id(unsigned) or ctx.did) or f"{ctx.did}#{key.kid}"
    return proofs.create_eddsa_rdfc_2022(unsigned, key.private_key, method, created=_stamp(now), loader=loader)


def issue(session: Session, ctx: IssuerContext, req: IssueRequest, *, actor: str, loader: Any = None,
          now: datetime | None = None) -> dict:
    """Sign one credential; store only a status entry (when asked for) and an audit entry. Commits."""
    now = (now or utcnow()).replace(microsecond=0)
    doc = prepare(ctx, req, now, loader)
    entry_key = None
    try:
        if req.status_purpose:
            # The first write of the transaction (revocation.allocate may roll back and draw again).
            entry_key = "vcapi:" + secrets.token_urlsafe(16)
            doc["credentialStatus"] = revocation.allocate(session, ctx.base_url, "vcapi", entry_key,
                                                          req.status_purpose)
        try:
            signed = sign(ctx, doc, now, loader)
        except proofs.ProofError as exc:
            raise VcApiError(f"cannot sign the credential: {exc}", field="credential") from None
        entry = doc.get("credentialStatus") if entry_key else None
        session.add(AuditEntry(actor=actor, action="vcapi.issue",
                               subject=doc["id"][:500] if isinstance(doc.get("id"), str) else None,
                               detail={"type": _as_list(doc.get("type"))[:10],
                                       "sha256": hashlib.sha256(serialise(signed).encode("utf-8")).hexdigest(),
                                       "status_entry": entry_key,
                                       "statusListCredential": entry and entry["statusListCredential"],
                                       "statusListIndex": entry and entry["statusListIndex"],
                                       "credentialId": req.credential_id}))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return signed


# --- verifying credentials -------------------------------------------------------------------------------

@dataclass
class Outcome:
    """A VC API verification result: the checks as run, and what a client reads from them."""

    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    credential: dict | None = None
    nested: list[tuple[str, Outcome]] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return all_passed(self.checks) and all(o.verified for _, o in self.nested)

    @property
    def errors(self) -> list[str]:
        own = [f"{c.name}: {c.detail}" for c in self.checks if c.ok is False]
        return own + [f"{where}: {e}" for where, o in self.nested for e in o.errors]

    def problem_details(self) -> list[dict]:
        own = [problem_of(c) for c in self.checks if c.ok is False]
        for where, inner in self.nested:
            for problem in inner.problem_details():
                own.append({**problem, "detail": f"{where}: {problem['detail']}"})
        return own

    def to_json(self) -> dict:
        return {
            "verified": self.verified,
            "checks": [c.name for c in self.checks if c.ok is True],
            "warnings": list(dict.fromkeys(self.warnings + [f"{w}: {x}" for w, o in self.nested for x in o.warnings])),
            "errors": self.errors,
            "problemDetails": self.problem_details(),
            "results": [c.to_json() for c in self.checks],
            **({"credentialResults": [{"credential": where, **inner.to_json()} for where, inner in self.nested]}
               if self.nested else {}),
        }


def problem_of(check: Check) -> dict:
    """One failed check as an RFC 9457 problem details object (VCDM 2.0 §7.1 style)."""
    kind, code = PROBLEM_OF_CHECK.get(check.name, (None, None))
    if check.name == "status":
        named = next((n for n in (status.STATUS_RETRIEVAL_ERROR, status.STATUS_VERIFICATION_ERROR,
                                  status.STATUS_LIST_LENGTH_ERROR, status.RANGE_ERROR,
                                  status.MALFORMED_VALUE_ERROR) if check.detail.startswith(n)), None)
        kind = status.ERROR_TYPE_BASE + named if named else "about:blank"
    problem: dict[str, Any] = {"type": kind or "about:blank", "title": f"{check.name} check failed",
                               "detail": check.detail}
    if code is not None:
        problem["code"] = code
    return problem


def _jwt_of(value: Any) -> str | None:
    """The compact JWT of a VC-JWT given as a string or as an EnvelopedVerifiableCredential."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict) and ENVELOPED_CREDENTIAL in _as_list(value.get("type")):
        data_url = value.get("id")
        if isinstance(data_url, str) and data_url.startswith(JWT_DATA_URL):
            return data_url[len(JWT_DATA_URL):]
        return ""
    return None


def validity_check(doc: Any, now: datetime) -> Check:
    """validFrom/validUntil (VCDM 2.0, both optional) or issuanceDate/expirationDate (1.1) against now."""
    if not isinstance(doc, dict):
        return Check("validity_window", None, "not checked: no credential")
    start, end = ("issuanceDate", "expirationDate") if version_of(doc) == 1 else ("validFrom", "validUntil")
    if start not in doc and end not in doc:
        return Check("validity_window", True, "no validity period is stated")
    try:
        begins = parse_datetime(doc[start], start) if start in doc else None
        ends = parse_datetime(doc[end], end) if end in doc else None
    except ValueError as exc:
        return Check("validity_window", False, str(exc))
    if begins and ends and begins > ends:
        return Check("validity_window", False, f"{start} {doc[start]} is later than {end} {doc[end]}")
    if begins and now < begins:
        return Check("validity_window", False, f"not yet valid: {start} {doc[start]} is after now ({_stamp(now)})")
    if ends and now > ends:
        return Check("validity_window", False, f"expired: {end} {doc[end]} is before now ({_stamp(now)})")
    return Check("validity_window", True, f"valid now ({_stamp(now)})")


def verify_credential(verifier: Verifier, value: Any) -> Outcome:
    """Verify a credential as the VC API does: a JSON credential with Data Integrity proof(s), a compact
    VC-JWT, or a VC-JWT in an EnvelopedVerifiableCredential data: URL. Anyone's keys; no trust list."""
    token = _jwt_of(value)
    if token is not None:
        result = verifier.verify_jwt(token)
        doc = vcjwt.strip_registered_claims(result.credential) if isinstance(result.credential, dict) else None
    else:
        result = verifier.verify_credential(value)
        doc = value if isinstance(value, dict) else None
    now = _aware(verifier.now())
    checks: list[Check] = []
    for check in result.checks:
        if check.name == "schema":
            problems = credential_problems(doc)
            checks.append(Check("structure", not problems, "; ".join(problems) or
                                "a well-formed verifiable credential"))
            # Only strings can name a type; anything else in the list (an object) names none.
            if isinstance(doc, dict) and OB_TYPES & {t for t in _as_list(doc.get("type")) if isinstance(t, str)}:
                checks.append(check)  # an Open Badge also meets the OB 3.0 schema
        elif check.name == "validity_window":
            checks.append(validity_check(doc, now))
        elif check.name == "recipient":
            continue  # an Open Badges question (whose email?) the VC API does not ask
        else:
            checks.append(check)
        if check.name == "proof" and isinstance(doc, dict) and token is None:
            chain = _proof_chain_problems(doc)
            if chain:
                checks.append(Check("proof_chain", False, "; ".join(chain)))
    return Outcome(checks, list(result.warnings), doc)


# --- presentations ---------------------------------------------------------------------------------------

@dataclass
class PresentationOutcome(Outcome):
    signer: str | None = None  # the DID (controller) whose key made the presentation's proof


def presentation_problems(vp: Any) -> list[str]:
    if not isinstance(vp, dict):
        return ["the presentation must be a JSON object"]
    problems = []
    contexts = _as_list(vp.get("@context"))
    if "@context" not in vp:
        problems.append("the presentation has no @context")
    elif not contexts or contexts[0] not in (VC_V2, VC_V1):
        problems.append(f"the first @context must be {VC_V2} (or {VC_V1})")
    if "type" not in vp:
        problems.append("the presentation has no type")
    elif VERIFIABLE_PRESENTATION not in _as_list(vp["type"]):
        problems.append(f"type must include {VERIFIABLE_PRESENTATION}")
    if "id" in vp:
        problems.append(_id_problem(vp["id"], "id"))
    if "holder" in vp:
        holder = vp["holder"]
        problems.append(_id_problem(holder.get("id") if isinstance(holder, dict) else holder, "holder"))
    entries = _as_list(vp.get("verifiableCredential"))
    if len(entries) > MAX_CREDENTIALS_IN_PRESENTATION:
        problems.append(f"more than {MAX_CREDENTIALS_IN_PRESENTATION} credentials in one presentation")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            # A bare string (a JWT, a URL) is not covered by a Data Integrity proof: it could be swapped.
            problems.append(f"verifiableCredential[{i}] must be a credential object (an enveloped one for a JWT)")
    return [p for p in problems if p]


def _holder_of(vp: dict) -> str | None:
    holder = vp.get("holder")
    return holder.get("id") if isinstance(holder, dict) else holder if isinstance(holder, str) else None


def verify_presentation(vp: Any, *, resolver: KeyResolver, loader: Any = None, challenge: str | None = None,
                        domain: str | None = None, did_key_only: bool = False,
                        verify_embedded: Callable[[Any], Outcome] | None = None,
                        now: datetime | None = None) -> PresentationOutcome:
    """Check a presentation's one `authentication` proof, its challenge and domain (when expected: then
    required), that its holder (when stated) controls the key, and, with `verify_embedded`, each
    credential it carries. No side effects: whoever calls decides what a verified one may use up."""
    now = _aware(now or datetime.now(UTC))
    checks: list[Check] = []
    outcome = PresentationOutcome(checks)
    problems = presentation_problems(vp)
    checks.append(Check("structure", not problems, "; ".join(problems) or "a well-formed verifiable presentation"))
    if problems:
        return outcome
    try:
        jsonld.check_safe({k: v for k, v in vp.items() if k != "proof"}, loader)
        checks.append(Check("jsonld", True, "every term and type is defined by known contexts"))
    except jsonld.UnknownContextError as exc:
        checks.append(Check("jsonld", False, f"unknown context {exc.url}: only bundled, pinned contexts are accepted"))
    except jsonld.JsonLdSafetyError as exc:
        checks.append(Check("jsonld", False, str(exc)))
    except Exception as exc:
        checks.append(Check("jsonld", False, f"not valid JSON-LD: {str(exc)[:300]}"))

    found = proofs.proofs_of(vp)
    proof = found[0] if len(found) == 1 and isinstance(found[0], dict) else None
    if proof is None:
        checks.append(Check("proof", False, "the presentation is not signed" if not found else
                            f"the presentation has {len(found)} proofs; one proof object is expected"))
        return outcome
    checks.append(_challenge_check(proof, challenge))
    checks.append(_domain_check(proof, domain))
    key, proof_check = _presentation_proof(vp, proof, resolver, loader, did_key_only, now)
    checks.append(proof_check)
    holder = _holder_of(vp)
    if key is not None:
        outcome.signer = key.controller
        if holder is None:
            checks.append(Check("holder", None, f"no holder stated; signed by {key.controller}"))
        elif key.controller == holder and key.confirmed_by_controller:
            checks.append(Check("holder", True, f"the holder {holder} signed it"))
        else:
            checks.append(Check("holder", False, f"signed with {key.id}, controlled by {key.controller}, "
                                                 f"not by the holder {holder}"))
    entries = _as_list(vp.get("verifiableCredential"))
    if entries and verify_embedded is None:
        outcome.warnings.append("the credentials in the presentation were not verified (not asked for)")
    for i, entry in enumerate(entries if verify_embedded else []):
        outcome.nested.append((f"verifiableCredential[{i}]", verify_embedded(entry)))
    return outcome


def _challenge_check(proof: dict, expected: str | None) -> Check:
    stated = proof.get("challenge")
    if expected is None:
        return Check("challenge", None, "not checked: no challenge expected")
    if not isinstance(stated, str) or not stated:
        return Check("challenge", False, "the proof has no challenge, and one is expected")
    if not hmac.compare_digest(stated.encode("utf-8"), expected.encode("utf-8")):
        return Check("challenge", False, "the proof's challenge is not the one expected")
    return Check("challenge", True, "the proof carries the expected challenge")


def _domain_check(proof: dict, expected: str | None) -> Check:
    stated = _as_list(proof.get("domain"))
    if expected is None:
        return Check("domain", None, "not checked: no domain expected")
    if not stated:
        return Check("domain", False, f"the proof has no domain, and {expected!r} is expected")
    if expected not in stated:
        shown = ", ".join(repr(s) for s in stated[:3])
        return Check("domain", False, f"the proof's domain {shown} is not {expected!r}")
    return Check("domain", True, f"the proof is for the domain {expected!r}")


def _presentation_proof(vp: dict, proof: dict, resolver: KeyResolver, loader: Any, did_key_only: bool,
                        now: datetime) -> tuple[Any, Check]:
    """The signature, its purpose, its expiry, and a key its controller lets authenticate."""
    if proof.get("proofPurpose") != AUTHENTICATION:
        return None, Check("proof", False, f"proofPurpose is {proof.get('proofPurpose')!r}; a presentation "
                                           f"proves {AUTHENTICATION!r}")
    method = proof.get("verificationMethod")
    if did_key_only and not (isinstance(method, str) and method.startswith("did:key:")):
        return None, Check("proof", False, "the presentation must be signed with a did:key (acceptedMethods: key)")
    if "expires" in proof:
        try:
            if parse_datetime(proof["expires"], "expires") < now:
                return None, Check("proof", False, f"the proof expired at {proof['expires']}")
        except ValueError as exc:
            return None, Check("proof", False, str(exc))
    try:
        key = resolver.resolve(method)
        if not isinstance(key.public_key, Ed25519PublicKey):
            raise proofs.ProofError(f"{key.id} is not an Ed25519 key")
        proofs.verify_proof(vp, proof, key.public_key, loader, expected_purpose=AUTHENTICATION)
        _require_authentication(resolver, key)
    except (KeyResolutionError, proofs.ProofError, PresentationError) as exc:
        return None, Check("proof", False, str(exc))
    except Exception as exc:  # a surprise in one proof fails it, never the request
        return None, Check("proof", False, f"{type(exc).__name__}: {str(exc)[:300]}")
    label = proof.get("cryptosuite") or proof.get("type")
    return key, Check("proof", True, f"{label} proof verified with {key.id}")


# --- exchanges (VC API, as the Learner Credential Wallet runs them) -------------------------------------

def exchange_url(base_url: str, offer_id: str) -> str:
    return f"{base_url}/exchanges/{offer_id}"


def lcw_link(base_url: str, offer_id: str) -> str:
    """LCW's deep link: `request=` a URL-encoded JSON naming our origin and the exchange (LCW reads
    `protocols.vcapi` only)."""
    request = {"credentialRequestOrigin": base_url, "protocols": {"vcapi": exchange_url(base_url, offer_id)}}
    return f"{LCW_LINK}?request=" + quote(json.dumps(request, separators=(",", ":")), safe="")


def exchange_links(base_url: str, offer: WalletOffer) -> dict:
    url = exchange_url(base_url, offer.id)
    return {"exchange_url": url, "interaction_url": f"{url}/interact?iuv=1",
            "lcw_link": lcw_link(base_url, offer.id), "expires_at": _stamp(_aware(offer.expires_at))}


def presentation_request(base_url: str, offer: WalletOffer) -> dict:
    """The DIDAuthentication request a wallet answers with a presentation signed by its did:key."""
    return {"verifiablePresentationRequest": {
        "query": [{"type": "DIDAuthentication", "acceptedMethods": [{"method": "key"}],
                   "acceptedCryptosuites": [{"cryptosuite": s} for s in ACCEPTED_CRYPTOSUITES]}],
        "challenge": offer.challenge,
        "domain": base_url,
        "interact": {"service": [{"type": "UnmediatedHttpPresentationService2021",
                                  "serviceEndpoint": exchange_url(base_url, offer.id)}]},
    }}


def open_offers(session: Session, original_id: str, now: datetime) -> int:
    return wallets.open_offers(session, original_id, "vcapi", now)


def create_exchange(session: Session, original: Credential | Award, *, actor: str,
                    ttl: timedelta = EXCHANGE_TTL, now: datetime | None = None) -> WalletOffer:
    """A new single-use exchange for `original`. The caller commits."""
    if original.revoked_at is not None:
        raise VcApiError("this credential has been revoked and cannot be added to a wallet", 409)
    now = (now or utcnow()).replace(microsecond=0)
    offer = WalletOffer(id=secrets.token_urlsafe(16), kind="vcapi", original_id=original.id, state="offered",
                        challenge=secrets.token_urlsafe(24), created_by=actor[:200], created_at=now,
                        expires_at=now + ttl, tx_code_failures=0)
    session.add(offer)
    session.add(AuditEntry(actor=actor[:200], action="wallet.exchange.create", subject=original.credential_url,
                           detail={"offer": offer.id, "expires_at": _stamp(offer.expires_at)}))
    return offer


def offer_state(offer: WalletOffer | None, now: datetime) -> str:
    """"missing", "delivered", "expired" or "offered"."""
    if offer is None or offer.kind != "vcapi":
        return "missing"
    if offer.state != "offered":
        return offer.state
    return "expired" if _aware(offer.expires_at) <= now else "offered"


def refuse_unless_open(offer: WalletOffer | None, now: datetime) -> WalletOffer:
    state = offer_state(offer, now)
    if state == "missing":
        raise VcApiError("there is no such exchange", 404)
    if state == "expired":
        raise VcApiError("this exchange has expired; ask for a new wallet link", 410)
    if state != "offered":
        raise VcApiError("this exchange is complete and cannot be used again; ask for a new wallet link", 409)
    return offer


def complete_exchange(session: Session, ctx: IssuerContext, offer_id: str, vp: Any, *,
                      now: datetime | None = None) -> dict:
    """Verify the wallet's DIDAuthentication presentation and deliver the holder-bound copy. Commits.

    The offer moves from "offered" to "delivered" with one conditional UPDATE in the delivering
    transaction, so of two presentations racing (or one replayed) exactly one gets a copy."""
    now = (now or utcnow()).replace(microsecond=0)
    offer = refuse_unless_open(session.get(WalletOffer, offer_id), now)
    # did:key only, so nothing is fetched for an unauthenticated request; the bundled contexts only.
    outcome = verify_presentation(vp, resolver=KeyResolver(), challenge=offer.challenge, domain=ctx.base_url,
                                  did_key_only=True, now=now)
    if not outcome.verified or outcome.signer is None:
        raise VcApiError("the presentation does not verify: " + "; ".join(outcome.errors or ["no proof"]),
                         problems=outcome.problem_details())
    original = wallets.original_row(session, offer.original_id)
    if original is None:
        raise VcApiError("the credential of this exchange no longer exists", 404)
    if original.recipient_did and original.recipient_did != outcome.signer:
        raise VcApiError(f"this credential was issued to {original.recipient_did}; sign the presentation with "
                         "that DID", 403)
    claimed = session.execute(update(WalletOffer).where(
        WalletOffer.id == offer.id, WalletOffer.kind == "vcapi", WalletOffer.state == "offered",
        WalletOffer.expires_at > now).values(state="delivered", used_at=now)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        session.rollback()
        session.expire_all()
        refuse_unless_open(session.get(WalletOffer, offer_id), now)
        raise VcApiError("this exchange is complete and cannot be used again", 409)
    try:
        row = wallets.deliver(session, ctx, original, outcome.signer, fmt="ldp_vc", channel="vcapi",
                              offer_id=offer.id, now=now)
        session.commit()
    except wallets.WalletError as exc:
        session.rollback()
        raise VcApiError(str(exc), 409) from None
    except BaseException:
        session.rollback()
        raise
    return {"verifiablePresentation": {"@context": [VC_V2], "type": [VERIFIABLE_PRESENTATION],
                                       "verifiableCredential": [wallets.delivered(row)]}}


email_matches = wallets.email_matches


def options_checks(options: Mapping[str, Any]) -> list[str]:
    checks = options.get("checks", [])
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise VcApiError("options.checks must be a list of strings", field="options.checks")
    return checks
