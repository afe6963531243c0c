"""OpenID for Verifiable Credential Issuance 1.0, pre-authorized code flow: offers, codes, PINs, access
tokens, c_nonces and key proofs. No Flask here: the blueprint (`web/oid4vci.py`) passes in the session,
the issuer context, the server secret and the request's values.

The flow, and what each step stores:

1. **Offer** (`create_offer`): a `WalletOffer` row (kind "oid4vci", state "offered") for one badge or award.
   The pre-authorized code is never stored: it is an HMAC of the offer id under the server secret, so the
   offer document can be served again (`offer_document`) while the row keeps only its sha256. The
   optional 6-digit PIN (`tx_code`) is shown once; the row keeps an HMAC of it (a plain hash of six digits
   would be reversed in a second).
2. **Token** (`redeem_code`): the code and PIN are checked, then one conditional UPDATE moves the offer
   from "offered" to "token_issued" and records the sha256 of a fresh access token: of two concurrent
   requests only one changes a row. Five wrong PINs and the offer is "expired" for good.
3. **Nonce** (`new_nonce`): a `WalletNonce` row with the sha256 of a random c_nonce, good once, 5 minutes.
4. **Credential** (`issue_credential`): the bearer token names the offer; the key proof JWT is checked
   (`check_proof`); its c_nonce is used up (conditional UPDATE); the offer moves to "delivered"
   (conditional UPDATE: one credential per offer) and `wallets.deliver` signs the copy bound to the
   holder's DID.

Errors are `OAuthError`s carrying the RFC 6749 §5.2 / RFC 6750 §3.1 / OID4VCI §8.3.1.2 error code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import multikey, vcjwt, wallets
from .credentials import CREDENTIAL_CONTEXT, CREDENTIAL_TYPE
from .issuing import IssuerContext
from .keys import JWS_ALG, PublicKey, algorithm_of, b64url, b64url_decode, jwk_members, public_key_from_jwk
from .models import AuditEntry, Award, Credential, WalletNonce, WalletOffer, utcnow

KIND = "oid4vci"
PRE_AUTHORIZED_GRANT = "urn:ietf:params:oauth:grant-type:pre-authorized_code"
PROOF_TYP = "openid4vci-proof+jwt"
PROOF_ALGS = ("EdDSA", "ES256")
# credential_configuration_id → format (wallets.deliver's `fmt`)
CONFIGURATIONS = {"OpenBadgeCredential_ldp_vc": "ldp_vc", "OpenBadgeCredential_jwt_vc_json": "jwt_vc_json"}
BINDING_METHODS = ["did:key", "did:jwk", "jwk"]

OFFER_LIFETIME = 600  # seconds, the default; a caller may choose within the bounds below
MIN_OFFER_LIFETIME, MAX_OFFER_LIFETIME = 60, 3600
TOKEN_LIFETIME = 600
NONCE_LIFETIME = 300
PROOF_CLOCK_SKEW = 300  # a key proof's iat must be within this many seconds of now
PIN_LENGTH = 6
MAX_PIN_FAILURES = 5
MAX_PROOF_LENGTH = 16_384  # a key proof is a few hundred bytes; a did:jwk kid adds a little


class OAuthError(Exception):
    """An error answered as `{"error", "error_description"}`; 401s also carry a WWW-Authenticate challenge."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def to_json(self) -> dict:
        return {"error": self.error, "error_description": self.description}

    @property
    def headers(self) -> dict[str, str]:
        if self.status != 401:
            return {}
        text = self.description.replace("\\", "").replace('"', "'")
        return {"WWW-Authenticate": f'Bearer error="{self.error}", error_description="{text}"'}


class OfferError(ValueError):
    """An offer option out of range; `field` names it."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def clock() -> datetime:
    """Now, in UTC. Tests move time by replacing this (every function here also takes `now`)."""
    return utcnow()


def _now(now: datetime | None) -> datetime:
    return _aware(now or clock())


def _aware(value: datetime) -> datetime:
    # SQLite gives back naive datetimes; every value we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _mac(secret: bytes, *parts: str) -> bytes:
    return hmac.new(secret, "\x00".join(parts).encode("utf-8"), hashlib.sha256).digest()


def pre_authorized_code(secret: bytes, offer_id: str) -> str:
    """The offer's pre-authorized code: recomputed from the offer id and the server secret, never stored."""
    return b64url(_mac(secret, "oid4vci pre-authorized_code", offer_id))


def pin_digest(secret: bytes, offer_id: str, pin: str) -> str:
    return _mac(secret, "oid4vci tx_code", offer_id, pin).hex()


# --- metadata ------------------------------------------------------------------------------------------

DISPLAY_COLOURS = {"background_color": "#123456", "text_color": "#FFFFFF"}


def _credential_display(ctx: IssuerContext) -> list[dict]:
    logo = f"{ctx.base_url}/issuer/image.png"
    return [
        {"name": "Open Badge", "locale": "en",
         "description": f"A digital badge (Open Badges 3.0) from {ctx.profile['name']}",
         "logo": {"uri": logo, "alt_text": f"{ctx.profile['name']} logo"}, **DISPLAY_COLOURS},
        {"name": "開放數碼徽章", "locale": "zh-Hant",
         "description": f"{ctx.profile['name']} 頒發的數碼徽章（Open Badges 3.0）",
         "logo": {"uri": logo, "alt_text": f"{ctx.profile['name']} 標誌"}, **DISPLAY_COLOURS},
    ]


def endpoints(base_url: str) -> dict[str, str]:
    return {"credential_endpoint": f"{base_url}/oid4vci/credential",
            "nonce_endpoint": f"{base_url}/oid4vci/nonce",
            "token_endpoint": f"{base_url}/oid4vci/token"}


def issuer_metadata(ctx: IssuerContext) -> dict:
    """Credential Issuer Metadata (OID4VCI 1.0 §12.2). Every configuration carries `credential_metadata`:
    oid4vc-ts treats an issuer without it as draft 14 (docs/standards.md §f.1)."""
    urls = endpoints(ctx.base_url)
    proof_types = {"jwt": {"proof_signing_alg_values_supported": list(PROOF_ALGS)}}
    display = _credential_display(ctx)
    common = {"cryptographic_binding_methods_supported": list(BINDING_METHODS),
              "proof_types_supported": proof_types, "credential_metadata": {"display": display}}
    return {
        "credential_issuer": ctx.base_url,
        "credential_endpoint": urls["credential_endpoint"],
        "nonce_endpoint": urls["nonce_endpoint"],
        "display": [{"name": ctx.profile["name"], "locale": locale,
                     "logo": {"uri": f"{ctx.base_url}/issuer/image.png", "alt_text": alt}}
                    for locale, alt in (("en", f"{ctx.profile['name']} logo"),
                                        ("zh-Hant", f"{ctx.profile['name']} 標誌"))],
        "credential_configurations_supported": {
            "OpenBadgeCredential_ldp_vc": {
                "format": "ldp_vc",
                "credential_definition": {"@context": list(CREDENTIAL_CONTEXT), "type": list(CREDENTIAL_TYPE)},
                "credential_signing_alg_values_supported": ["eddsa-rdfc-2022"],
                **common,
            },
            "OpenBadgeCredential_jwt_vc_json": {
                "format": "jwt_vc_json",
                "credential_definition": {"type": list(CREDENTIAL_TYPE)},
                "credential_signing_alg_values_supported": [ctx.jwt_algorithm],
                **common,
            },
        },
    }


def authorization_server_metadata(base_url: str) -> dict:
    """RFC 8414 metadata of the authorization server, which is the credential issuer itself."""
    return {
        "issuer": base_url,
        "token_endpoint": endpoints(base_url)["token_endpoint"],
        "grant_types_supported": [PRE_AUTHORIZED_GRANT],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "pre-authorized_grant_anonymous_access_supported": True,
    }


# --- offers --------------------------------------------------------------------------------------------

@dataclass
class NewOffer:
    row: WalletOffer
    configuration_ids: list[str]
    tx_code: str | None  # shown once, to the one who asked for the offer


def create_offer(session: Session, original: Credential | Award, *, secret: bytes, created_by: str,
                 tx_code: bool = True, expires_in: int = OFFER_LIFETIME, fmt: str | None = None,
                 now: datetime | None = None) -> NewOffer:
    """A new offer of `original` (the caller commits). Raises wallets.WalletError for a revoked original
    and OfferError for an option out of range."""
    now = _now(now).replace(microsecond=0)
    if original.revoked_at is not None:
        raise wallets.WalletError("this credential has been revoked and cannot be offered to a wallet")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) \
            or not MIN_OFFER_LIFETIME <= expires_in <= MAX_OFFER_LIFETIME:
        raise OfferError(f"expires_in must be a whole number of seconds from {MIN_OFFER_LIFETIME} "
                         f"to {MAX_OFFER_LIFETIME}", "expires_in")
    if fmt is not None and fmt not in wallets.FORMATS:
        raise OfferError(f"format must be one of {', '.join(wallets.FORMATS)} (or null for both)", "format")
    configuration_ids = [cid for cid, f in CONFIGURATIONS.items() if fmt is None or f == fmt]
    offer_id = secrets.token_urlsafe(16)
    pin = f"{secrets.randbelow(10 ** PIN_LENGTH):0{PIN_LENGTH}d}" if tx_code else None
    row = WalletOffer(id=offer_id, kind=KIND, original_id=original.id, state="offered",
                      code_hash=_sha256(pre_authorized_code(secret, offer_id)),
                      tx_code_hash=pin_digest(secret, offer_id, pin) if pin else None, tx_code_failures=0,
                      format=fmt, created_by=created_by[:200], created_at=now,
                      expires_at=now + timedelta(seconds=expires_in))
    session.add(row)
    session.add(AuditEntry(actor=created_by[:200], action="oid4vci.offer", subject=original.credential_url,
                           detail={"offer": offer_id, "configurations": configuration_ids,
                                   "tx_code": pin is not None, "expires_at": row.expires_at.isoformat()}))
    return NewOffer(row, configuration_ids, pin)


def open_offers(session: Session, original_id: str, now: datetime | None = None) -> int:
    """How many OID4VCI offers of `original_id` can still be redeemed."""
    return wallets.open_offers(session, original_id, KIND, _now(now))


email_matches = wallets.email_matches


def offered_configurations(row: WalletOffer) -> list[str]:
    """The configuration ids an offer names: both formats, or the one it was restricted to."""
    return [cid for cid, fmt in CONFIGURATIONS.items() if row.format is None or fmt == row.format]


def live_offer(session: Session, offer_id: str, now: datetime | None = None) -> WalletOffer | None:
    """An offer whose code can still be redeemed, or None (unknown, used, locked or expired)."""
    row = session.get(WalletOffer, offer_id)
    if row is None or row.kind != KIND or row.state != "offered" or _aware(row.expires_at) <= _now(now):
        return None
    return row


def offer_document(row: WalletOffer, *, credential_issuer: str, secret: bytes,
                   configuration_ids: list[str]) -> dict:
    """The Credential Offer (OID4VCI 1.0 §4.1.1) served at the offer's credential_offer_uri."""
    grant: dict[str, Any] = {"pre-authorized_code": pre_authorized_code(secret, row.id)}
    if row.tx_code_hash:
        grant["tx_code"] = {"input_mode": "numeric", "length": PIN_LENGTH,
                            "description": "Enter the 6-digit PIN you were given with this offer."}
    return {"credential_issuer": credential_issuer, "credential_configuration_ids": configuration_ids,
            "grants": {PRE_AUTHORIZED_GRANT: grant}}


def offer_uri(base_url: str, offer_id: str) -> str:
    return f"{base_url}/oid4vci/offers/{offer_id}"


def offer_link(credential_offer_uri: str) -> str:
    return "openid-credential-offer://?credential_offer_uri=" + quote(credential_offer_uri, safe="")


# --- token endpoint ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AccessToken:
    access_token: str
    expires_in: int

    def to_json(self) -> dict:
        return {"access_token": self.access_token, "token_type": "Bearer", "expires_in": self.expires_in}


def _single(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OAuthError("invalid_request", f"{name} must be a single text value")
    return value


def redeem_code(session: Session, form: Mapping[str, Any], *, secret: bytes,
                now: datetime | None = None) -> AccessToken:
    """The token endpoint: exchange a pre-authorized code (and its PIN) for an access token, once.
    Commits what it changes (the token, or a counted wrong PIN)."""
    now = _now(now)
    grant_type = _single(form, "grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != PRE_AUTHORIZED_GRANT:
        raise OAuthError("unsupported_grant_type", f"only the {PRE_AUTHORIZED_GRANT} grant is supported")
    code = _single(form, "pre-authorized_code")
    if not code:
        raise OAuthError("invalid_request", "pre-authorized_code is required")
    pin = _single(form, "tx_code")
    digest = _sha256(code)
    row = session.scalars(select(WalletOffer).where(WalletOffer.code_hash == digest)).first()
    if row is None or row.kind != KIND or not hmac.compare_digest(row.code_hash or "", digest):
        raise OAuthError("invalid_grant", "the pre-authorized code is unknown")
    if row.state != "offered":
        raise OAuthError("invalid_grant", "the pre-authorized code has already been used or is no longer valid")
    if _aware(row.expires_at) <= now:
        raise OAuthError("invalid_grant", "the pre-authorized code has expired")
    if row.tx_code_hash:
        if not pin:
            raise OAuthError("invalid_request", "this offer needs its PIN: send tx_code")
        if not hmac.compare_digest(pin_digest(secret, row.id, pin), row.tx_code_hash):
            _count_wrong_pin(session, row.id)
            raise OAuthError("invalid_grant", "the PIN (tx_code) is wrong")
    elif pin is not None:
        raise OAuthError("invalid_request", "this offer has no PIN: do not send tx_code")
    token = secrets.token_urlsafe(32)
    result = session.execute(
        update(WalletOffer)
        .where(WalletOffer.id == row.id, WalletOffer.state == "offered", WalletOffer.expires_at > now,
               WalletOffer.tx_code_failures < MAX_PIN_FAILURES)
        .values(state="token_issued", access_token_hash=_sha256(token),
                token_expires_at=now + timedelta(seconds=TOKEN_LIFETIME))
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        raise OAuthError("invalid_grant", "the pre-authorized code has already been used")
    session.commit()
    return AccessToken(token, TOKEN_LIFETIME)


def _count_wrong_pin(session: Session, offer_id: str) -> None:
    """One more wrong PIN; the fifth makes the offer void. Both are single atomic UPDATEs."""
    session.execute(update(WalletOffer)
                    .where(WalletOffer.id == offer_id, WalletOffer.state == "offered")
                    .values(tx_code_failures=WalletOffer.tx_code_failures + 1)
                    .execution_options(synchronize_session=False))
    session.execute(update(WalletOffer)
                    .where(WalletOffer.id == offer_id, WalletOffer.state == "offered",
                           WalletOffer.tx_code_failures >= MAX_PIN_FAILURES)
                    .values(state="expired")
                    .execution_options(synchronize_session=False))
    session.commit()


# --- nonces --------------------------------------------------------------------------------------------

def new_nonce(session: Session, now: datetime | None = None) -> tuple[str, int]:
    """A fresh c_nonce and its lifetime in seconds; expired nonces are cleared on the way. Commits."""
    now = _now(now)
    session.execute(delete(WalletNonce).where(WalletNonce.expires_at <= now)
                    .execution_options(synchronize_session=False))
    nonce = secrets.token_urlsafe(32)
    session.add(WalletNonce(nonce_hash=_sha256(nonce), expires_at=now + timedelta(seconds=NONCE_LIFETIME)))
    session.commit()
    return nonce, NONCE_LIFETIME


def consume_nonce(session: Session, nonce: str, now: datetime | None = None) -> bool:
    """Use a c_nonce up: True for exactly one caller while it is live and unused. Commits."""
    now = _now(now)
    result = session.execute(update(WalletNonce)
                             .where(WalletNonce.nonce_hash == _sha256(nonce), WalletNonce.used_at.is_(None),
                                    WalletNonce.expires_at > now)
                             .values(used_at=now)
                             .execution_options(synchronize_session=False))
    session.commit()
    return result.rowcount == 1


# --- key proofs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proof:
    """A key proof whose signature, audience and time checked out: who signed it, and its c_nonce."""

    holder_did: str
    nonce: str
    public_key: PublicKey


def did_jwk(public_key: PublicKey) -> str:
    """did:jwk of a public key: base64url of its JWK with the required members only, sorted, compact."""
    members = jwk_members(public_key)
    return "did:jwk:" + b64url(json.dumps(members, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _key_from_kid(kid: str) -> tuple[PublicKey, str]:
    """The key and holder DID a `kid` names: a did:key or did:jwk DID URL (nothing is fetched)."""
    did, _, fragment = kid.partition("#")
    if did.startswith("did:key:"):
        value = did[len("did:key:"):]
        if fragment and fragment != value:
            raise OAuthError("invalid_proof", "the did:key DID URL's fragment does not match its key")
        try:
            return multikey.public_key_from_multibase(value), did
        except (multikey.MultikeyError, ValueError) as exc:
            raise OAuthError("invalid_proof", f"kid is not a usable did:key: {exc}") from None
    if did.startswith("did:jwk:"):
        if fragment not in ("", "0"):
            raise OAuthError("invalid_proof", "a did:jwk DID URL names its key with the fragment #0")
        try:
            jwk = json.loads(b64url_decode(did[len("did:jwk:"):]).decode("utf-8"))
            return public_key_from_jwk(jwk), did
        except (ValueError, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_proof", f"kid is not a usable did:jwk: {exc}") from None
    raise OAuthError("invalid_proof", "kid must be a did:key or did:jwk DID URL (or send the key as jwk)")


def check_proof(token: Any, *, audience: str, now: datetime | None = None) -> Proof:
    """Check a `jwt` key proof (OID4VCI 1.0 Appendix F.1): typ, alg, key, signature, aud and iat. The
    c_nonce is only read here; the caller uses it up."""
    now = _now(now)
    if not isinstance(token, str) or not token or len(token) > MAX_PROOF_LENGTH:
        raise OAuthError("invalid_proof", "the jwt key proof must be a compact JWS")
    try:
        header, payload = vcjwt.parse_compact(token)
    except vcjwt.JwtError as exc:
        raise OAuthError("invalid_proof", f"the key proof is not a well-formed JWT: {exc}") from None
    if header.get("typ") != PROOF_TYP:
        raise OAuthError("invalid_proof", f"the key proof's typ must be {PROOF_TYP!r}")
    alg = header.get("alg")
    if alg not in PROOF_ALGS:
        raise OAuthError("invalid_proof", f"key proof alg {alg!r} refused; use one of {', '.join(PROOF_ALGS)}")
    if "crit" in header:
        raise OAuthError("invalid_proof", "the key proof lists critical header extensions we do not understand")
    named = [name for name in ("kid", "jwk", "x5c") if name in header]
    if len(named) != 1:
        raise OAuthError("invalid_proof", "the key proof's header must name its key with exactly one of kid or jwk")
    if "x5c" in header:
        raise OAuthError("invalid_proof", "x5c key proofs are not supported; use kid (did:key, did:jwk) or jwk")
    if "kid" in header:
        if not isinstance(header["kid"], str):
            raise OAuthError("invalid_proof", "kid must be a string")
        public_key, holder = _key_from_kid(header["kid"])
    else:
        try:
            public_key = public_key_from_jwk(header["jwk"])
        except ValueError as exc:
            raise OAuthError("invalid_proof", f"the jwk header is not a usable public key: {exc}") from None
    if not isinstance(public_key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise OAuthError("invalid_proof", "the proof key must be Ed25519 or P-256")
    try:
        key_alg = JWS_ALG[algorithm_of(public_key)]
    except ValueError as exc:
        raise OAuthError("invalid_proof", str(exc)) from None
    if key_alg != alg:
        raise OAuthError("invalid_proof", f"alg {alg} does not match the {key_alg} key named in the header")
    if "jwk" in header:
        holder = did_jwk(public_key)
    try:
        jwt.PyJWS().decode_complete(token, public_key, algorithms=[alg])
    except jwt.PyJWTError:
        raise OAuthError("invalid_proof", "the key proof's signature does not verify with the key it names") \
            from None
    aud = payload.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise OAuthError("invalid_proof", f"the key proof's aud must be the credential issuer {audience}")
    iat = payload.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, (int, float)):
        raise OAuthError("invalid_proof", "the key proof needs iat (seconds since 1970)")
    if abs(now.timestamp() - iat) > PROOF_CLOCK_SKEW:
        raise OAuthError("invalid_proof", f"the key proof's iat is more than {PROOF_CLOCK_SKEW} s from now")
    exp = payload.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp < now.timestamp() - PROOF_CLOCK_SKEW:
        raise OAuthError("invalid_proof", "the key proof has expired")
    nonce = payload.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise OAuthError("invalid_nonce", "the key proof carries no c_nonce: ask the nonce endpoint for one")
    try:
        holder = wallets.check_holder_did(holder)
    except wallets.WalletError as exc:
        raise OAuthError("invalid_proof", str(exc)) from None
    return Proof(holder, nonce, public_key)


# --- credential endpoint -------------------------------------------------------------------------------

def bearer_offer(session: Session, token: str | None, now: datetime | None = None) -> WalletOffer:
    """The offer an access token was issued for, while it may still fetch its credential."""
    if not token:
        raise OAuthError("invalid_token", "an access token is required: Authorization: Bearer <token>", 401)
    row = session.scalars(select(WalletOffer).where(WalletOffer.access_token_hash == _sha256(token))).first()
    if row is None or row.kind != KIND:
        raise OAuthError("invalid_token", "the access token is unknown", 401)
    if row.state != "token_issued":
        raise OAuthError("invalid_token", "the access token has already been used", 401)
    if row.token_expires_at is None or _aware(row.token_expires_at) <= _now(now):
        raise OAuthError("invalid_token", "the access token has expired", 401)
    return row


@dataclass(frozen=True)
class CredentialRequest:
    configuration_id: str
    proof_jwt: Any


def parse_credential_request(body: Any) -> CredentialRequest:
    """The configuration and the one jwt key proof of a request in the 1.0 shape (`proofs`) or the
    draft-15 shape (`proof`, as @sphereon/oid4vci-client sends it)."""
    if not isinstance(body, dict):
        raise OAuthError("invalid_credential_request", "the credential request must be a JSON object")
    if "credential_identifier" in body:
        raise OAuthError("invalid_credential_request",
                         "this issuer gives no credential identifiers; send credential_configuration_id")
    configuration_id = body.get("credential_configuration_id")
    if configuration_id is None and "format" in body:  # draft 14 and earlier name the format instead
        by_format = {fmt: cid for cid, fmt in CONFIGURATIONS.items()}
        configuration_id = by_format.get(body["format"]) if isinstance(body["format"], str) else None
        if configuration_id is None:
            raise OAuthError("unknown_credential_configuration", f"format {body['format']!r} is not offered")
    if not isinstance(configuration_id, str) or not configuration_id:
        raise OAuthError("invalid_credential_request", "credential_configuration_id is required")
    if configuration_id not in CONFIGURATIONS:
        raise OAuthError("unknown_credential_configuration",
                         f"unknown credential configuration {configuration_id[:100]!r}")
    if "proof" in body and "proofs" in body:
        raise OAuthError("invalid_credential_request", "send either proofs or proof, not both")
    if "proofs" in body:
        proofs = body["proofs"]
        if not isinstance(proofs, dict) or set(proofs) != {"jwt"}:
            raise OAuthError("invalid_proof", "proofs must be {\"jwt\": [<key proof>]}: only jwt proofs are supported")
        if not isinstance(proofs["jwt"], list) or len(proofs["jwt"]) != 1:
            raise OAuthError("invalid_credential_request", "send exactly one key proof: batch issuance is not offered")
        return CredentialRequest(configuration_id, proofs["jwt"][0])
    if "proof" in body:
        proof = body["proof"]
        if not isinstance(proof, dict) or proof.get("proof_type") != "jwt":
            raise OAuthError("invalid_proof", "proof must be {\"proof_type\": \"jwt\", \"jwt\": <key proof>}")
        return CredentialRequest(configuration_id, proof.get("jwt"))
    raise OAuthError("invalid_proof", "the credential request carries no key proof (proofs.jwt)")


def issue_credential(session: Session, ctx: IssuerContext, *, token: str | None, body: Any,
                     now: datetime | None = None) -> dict | str:
    """The credential endpoint: the holder-bound copy (a JSON object for ldp_vc, a JWT for jwt_vc_json).
    Commits: the used c_nonce at once, the delivery with the copy."""
    now = _now(now)
    offer = bearer_offer(session, token, now)
    request = parse_credential_request(body)
    if request.configuration_id not in offered_configurations(offer):
        raise OAuthError("invalid_credential_request",
                         f"credential configuration {request.configuration_id} was not part of this offer")
    proof = check_proof(request.proof_jwt, audience=ctx.base_url, now=now)
    if not consume_nonce(session, proof.nonce, now):
        raise OAuthError("invalid_nonce", "the c_nonce is unknown, used or expired: ask the nonce endpoint again")
    original = wallets.original_row(session, offer.original_id)
    if original is None or original.revoked_at is not None:
        raise OAuthError("credential_request_denied", "this credential has been revoked and cannot be issued")
    result = session.execute(update(WalletOffer)
                             .where(WalletOffer.id == offer.id, WalletOffer.state == "token_issued",
                                    WalletOffer.token_expires_at > now)
                             .values(state="delivered", used_at=now)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        raise OAuthError("invalid_token", "the access token has already been used", 401)
    try:
        copy = wallets.deliver(session, ctx, original, proof.holder_did, fmt=CONFIGURATIONS[request.configuration_id],
                               channel="oid4vci", offer_id=offer.id, now=now)
    except wallets.WalletError as exc:
        session.rollback()
        raise OAuthError("credential_request_denied", str(exc)) from None
    session.commit()
    return wallets.delivered(copy)
