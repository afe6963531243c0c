"""VC-JWT as Open Badges 3.0 defines it ("JSON Web Token Proof Format").

OB 3.0 differs from W3C VC-JOSE-COSE on purpose, and we follow OB because certification tests OB:
the header is only `alg`, `kid` (or `jwk`) and `typ: "JWT"`; the payload is the credential JSON itself
plus `iss`, `jti`, `nbf`, `sub` and, iff the credential has `validUntil`, `exp`. Verification also accepts
the VCDM 1.1 form (credential inside a `vc` claim), which displayers must still handle.

Signature checks go through pyjwt; time-window checks do not happen here: the verifier reports an expired
or not-yet-valid badge as its own finding, so `exp`/`nbf` are returned, never raised.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from issuer.credentials import parse_datetime
from issuer.keys import JWS_ALG, PublicKey, SigningKey, algorithm_of, public_key_from_jwk

SUPPORTED_ALGS: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
OB_HEADER_MEMBERS = frozenset({"alg", "kid", "jwk", "typ"})
VCDM1_CONTEXT = "https://www.w3.org/2018/credentials/v1"
VCDM2_CONTEXT = "https://www.w3.org/ns/credentials/v2"
MIN_RSA_BITS = 2048
# JWT registered claims a signer adds on top of the credential (RFC 7519 §4.1).
REGISTERED_CLAIMS = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti")

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_JWS = jwt.PyJWS()


class JwtError(Exception):
    """A VC-JWT that cannot be signed, parsed or verified; the message says which rule failed."""


# -- small helpers ------------------------------------------------------------------------------------

def issuer_id(credential: dict[str, Any]) -> str | None:
    """`issuer` is either a URI or a Profile object with an `id`."""
    issuer = credential.get("issuer")
    if isinstance(issuer, str):
        return issuer
    if isinstance(issuer, dict) and isinstance(issuer.get("id"), str):
        return issuer["id"]
    return None


def _subjects(credential: dict[str, Any]) -> list[dict[str, Any]]:
    subject = credential.get("credentialSubject")
    if isinstance(subject, dict):
        return [subject]
    if isinstance(subject, list):
        return [s for s in subject if isinstance(s, dict)]
    return []


def to_numeric_date(value: Any, field: str) -> int:
    """RFC 7519 NumericDate (whole seconds, rounded down) of an XML Schema dateTime with a timezone."""
    try:
        moment = parse_datetime(value, field)
    except ValueError as exc:
        raise JwtError(str(exc)) from None
    return math.floor(moment.timestamp())


def from_numeric_date(value: float) -> str:
    moment = datetime.fromtimestamp(value, UTC)
    if moment.microsecond:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _numeric_claim(payload: dict[str, Any], name: str) -> int | float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise JwtError(f"{name} claim must be a NumericDate (seconds since 1970), not {value!r}")
    return value


def _b64url_decode_strict(segment: str, what: str) -> bytes:
    """Decode base64url, refusing padding, stray characters and non-canonical trailing bits, so exactly
    one text encodes each byte string (no malleable tokens)."""
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise JwtError(f"JWT {what} is not valid base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"JWT {what} is not valid base64url: {exc}") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise JwtError(f"JWT {what} is not canonical base64url (non-zero padding bits)")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member name {name!r}")
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise JwtError(f"JWT {what} is not UTF-8") from exc
    except ValueError as exc:
        raise JwtError(f"JWT {what} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise JwtError(f"JWT {what} is JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise JwtError(f"JWT {what} must be a JSON object, not {type(value).__name__}")
    return value


# -- signing ------------------------------------------------------------------------------------------

def jwt_claims(credential: dict[str, Any]) -> dict[str, Any]:
    """The registered claims OB 3.0 requires, taken from the credential they describe."""
    iss = issuer_id(credential)
    if not iss:
        raise JwtError("credential has no issuer id for the iss claim")
    jti = credential.get("id")
    if not isinstance(jti, str) or not jti:
        raise JwtError("credential has no id for the jti claim")
    subjects = _subjects(credential)
    if len(subjects) != 1:
        raise JwtError("credential must have exactly one credentialSubject object for the sub claim")
    sub = subjects[0].get("id")
    if not isinstance(sub, str) or not sub:
        raise JwtError("credentialSubject has no id: a VC-JWT needs a recipient DID for the sub claim; "
                       "issue identifier-only badges with a Data Integrity proof instead")
    if "validFrom" not in credential:
        raise JwtError("credential has no validFrom for the nbf claim")
    nbf = to_numeric_date(credential["validFrom"], "validFrom")
    claims: dict[str, Any] = {"iss": iss, "jti": jti, "nbf": nbf, "sub": sub}
    if "validUntil" in credential:
        claims["exp"] = to_numeric_date(credential["validUntil"], "validUntil")
    return claims


def sign_vc_jwt(credential: dict[str, Any], key: SigningKey, kid: str | None = None) -> str:
    """Compact JWS whose payload is the credential plus its OB claims; the header is exactly
    {alg, kid, typ: "JWT"} because OB forbids any other header member.

    `kid` should dereference to the key (a DID URL or a JWKS member id); it defaults to the key's own id.
    The algorithm follows the key: ES256 (P-256, our default JWT key), RS256 or EdDSA.
    """
    if key.private_key is None:
        raise JwtError(f"key {key.kid} has no private half to sign with")
    if not isinstance(credential, dict):
        raise JwtError("credential must be a JSON object")
    payload = {**credential, **jwt_claims(credential)}
    # UTF-8 rather than \u escapes: smaller tokens for the zh-Hant text, same JSON value.
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    try:
        return _JWS.encode(body, key.private_key, algorithm=key.jws_alg, headers={"kid": kid or key.kid})
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise JwtError(f"cannot sign with key {key.kid}: {exc}") from exc


# -- parsing and verification ---------------------------------------------------------------------------

def parse_compact(token: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, without checking the signature (for routing and display)."""
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise JwtError("a compact JWT is ASCII text") from exc
    if not isinstance(token, str):
        raise JwtError("a compact JWT must be a string")
    parts = token.strip().split(".")
    if len(parts) == 5:
        raise JwtError("token has 5 segments (an encrypted JWE); only signed compact JWS is supported")
    if len(parts) != 3:
        raise JwtError(f"a compact JWS has 3 dot-separated segments, this token has {len(parts)}")
    if not parts[0] or not parts[1]:
        raise JwtError("JWT header and payload must not be empty")
    header = _json_object(_b64url_decode_strict(parts[0], "header"), "header")
    payload = _json_object(_b64url_decode_strict(parts[1], "payload"), "payload")
    _b64url_decode_strict(parts[2], "signature")
    return header, payload


def check_header(header: dict[str, Any]) -> list[str]:
    """OB 3.0 header rules a verifier may report without rejecting: members other than alg/kid/jwk/typ,
    a typ other than "JWT", neither kid nor jwk."""
    problems = []
    extra = sorted(set(header) - OB_HEADER_MEMBERS)
    if extra:
        problems.append(f"header members not allowed by OB 3.0: {', '.join(extra)}")
    if "typ" in header and header["typ"] != "JWT":
        problems.append(f"header typ must be 'JWT', not {header['typ']!r}")
    if "kid" not in header and "jwk" not in header:
        problems.append("header names no key (neither kid nor jwk)")
    return problems


def key_from_header(header: dict[str, Any]) -> PublicKey | None:
    """The public key embedded as the `jwk` header member, or None when the header has none."""
    if "jwk" not in header:
        return None
    try:
        key = public_key_from_jwk(header["jwk"])
    except ValueError as exc:
        raise JwtError(f"header jwk refused: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise JwtError(f"header jwk is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits required")
    return key


def _as_public_key(key: Any) -> PublicKey:
    if isinstance(key, SigningKey):
        return key.public_key
    if isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return key.public_key()
    if isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return key
    raise JwtError(f"unsupported verification key type {type(key).__name__}")


def verify_vc_jwt(token: str | bytes, public_key: Any, *,
                  allowed_algs: tuple[str, ...] | list[str] = SUPPORTED_ALGS,
                  parsed: tuple[dict[str, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Verify the signature with `public_key` and return the credential, after checking that the JWT
    claims agree with it. `exp`/`nbf` are not compared with the clock (the caller reports that).

    The OB form returns the payload itself (claims included); the VCDM 1.1 form returns the `vc` claim
    with iss/jti/sub/nbf/exp merged in where the credential lacks them.
    """
    # `parsed`: what parse_compact already made of this very token (the verifier parses it first).
    header, payload = parsed if parsed is not None else parse_compact(token)
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JwtError("JWT header has no alg")
    if alg.lower() == "none":
        raise JwtError("unsigned JWT (alg 'none') refused")
    if alg not in SUPPORTED_ALGS:
        raise JwtError(f"JWT alg {alg!r} not supported; expected one of {', '.join(SUPPORTED_ALGS)}")
    if alg not in allowed_algs:
        raise JwtError(f"JWT alg {alg!r} is not allowed here ({', '.join(allowed_algs)})")
    if "crit" in header:
        raise JwtError("JWT header lists critical extensions (crit), which we do not understand")
    key = _as_public_key(public_key)
    try:
        key_alg = JWS_ALG[algorithm_of(key)]
    except ValueError as exc:
        raise JwtError(str(exc)) from exc
    if key_alg != alg:
        raise JwtError(f"JWT alg {alg} does not match the {key_alg} key it is verified with")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise JwtError(f"{key.key_size}-bit RSA key refused; at least {MIN_RSA_BITS} bits required")
    token_text = token.decode("ascii") if isinstance(token, bytes) else token
    # parse_compact has decoded all three segments strictly, so PyJWT's own segment decoding (a Python
    # loop over every character, most of a JWT verification's time) is not repeated: its algorithm
    # object checks the signature over the signing input exactly as received.
    signing_input, _, signature_text = token_text.strip().rpartition(".")
    signature = _b64url_decode_strict(signature_text, "signature")
    try:
        algorithm = _JWS.get_algorithm_by_name(alg)
        valid = algorithm.verify(signing_input.encode("ascii"), algorithm.prepare_key(key), signature)
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise JwtError(f"JWT rejected: {exc}") from exc
    if not valid:
        raise JwtError("JWT signature does not verify")
    return credential_from_payload(payload)


def credential_from_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The credential a (verified) JWT payload carries, with the OB claim-consistency checks applied."""
    if "vc" in payload:
        vc = payload["vc"]
        if not isinstance(vc, dict):
            raise JwtError("vc claim must be a JSON object")
        _check_context(vc, VCDM1_CONTEXT, "a vc claim is the VCDM 1.1 form")
        credential = _merge_vc_claims(vc, payload)
    else:
        _check_context(payload, VCDM2_CONTEXT, "a payload without a vc claim is the VCDM 2.0 (OB 3.0) form")
        credential = payload
    _check_consistency(payload, credential, legacy="vc" in payload)
    return credential


def _check_context(credential: dict[str, Any], expected: str, why: str) -> None:
    context = credential.get("@context")
    first = context[0] if isinstance(context, list) and context else context
    if first in (VCDM1_CONTEXT, VCDM2_CONTEXT) and first != expected:
        raise JwtError(f"first @context is {first}, but {why} ({expected})")


def _merge_vc_claims(vc: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """VCDM 1.1 JWTs may move properties into claims; put them back where the credential lacks them."""
    credential = dict(vc)
    if "issuer" not in credential and isinstance(payload.get("iss"), str):
        credential["issuer"] = payload["iss"]
    if "id" not in credential and isinstance(payload.get("jti"), str):
        credential["id"] = payload["jti"]
    if isinstance(payload.get("sub"), str) and isinstance(credential.get("credentialSubject"), dict) \
            and "id" not in credential["credentialSubject"]:
        credential["credentialSubject"] = {**credential["credentialSubject"], "id": payload["sub"]}
    nbf, exp = _numeric_claim(payload, "nbf"), _numeric_claim(payload, "exp")
    if nbf is not None and "issuanceDate" not in credential and "validFrom" not in credential:
        credential["issuanceDate"] = from_numeric_date(nbf)
    if exp is not None and "expirationDate" not in credential and "validUntil" not in credential:
        credential["expirationDate"] = from_numeric_date(exp)
    return credential


def _same_second(claim: float, value: Any, field: str) -> bool:
    return abs(claim - to_numeric_date(value, field)) < 1


def _check_consistency(payload: dict[str, Any], credential: dict[str, Any], *, legacy: bool) -> None:
    """OB 3.0 'Verify a Credential VC-JWT Signature' step 3: claims must say what the credential says."""
    iss = payload.get("iss")
    if not isinstance(iss, str):
        raise JwtError("JWT has no iss claim")
    if iss != issuer_id(credential):
        raise JwtError(f"iss {iss!r} does not match the credential issuer {issuer_id(credential)!r}")
    jti = payload.get("jti")
    if jti is not None and credential.get("id") is not None and jti != credential["id"]:
        raise JwtError(f"jti {jti!r} does not match the credential id {credential['id']!r}")
    sub = payload.get("sub")
    if sub is not None and sub not in [s.get("id") for s in _subjects(credential)]:
        raise JwtError(f"sub {sub!r} does not match credentialSubject.id")

    start_field = "validFrom" if "validFrom" in credential else "issuanceDate"
    nbf = _numeric_claim(payload, "nbf")
    if nbf is None:
        if not legacy:
            raise JwtError("JWT has no nbf claim (OB 3.0 requires it, equal to validFrom)")
    elif start_field not in credential:
        raise JwtError("JWT has nbf but the credential has no validFrom")
    elif not _same_second(nbf, credential[start_field], start_field):
        raise JwtError(f"nbf {nbf} does not match {start_field} {credential[start_field]!r}")

    end_field = "validUntil" if "validUntil" in credential else "expirationDate"
    exp = _numeric_claim(payload, "exp")
    if exp is None:
        if end_field in credential:
            raise JwtError(f"credential has {end_field} but the JWT has no exp claim")
    elif end_field not in credential:
        raise JwtError("JWT has exp but the credential has no validUntil")
    elif not _same_second(exp, credential[end_field], end_field):
        raise JwtError(f"exp {exp} does not match {end_field} {credential[end_field]!r}")


def strip_registered_claims(credential: dict[str, Any]) -> dict[str, Any]:
    """The credential without the JWT registered claims a signer added, e.g. to check a Data Integrity
    proof embedded in a JWT-wrapped credential (the proof was made before the claims existed)."""
    return {k: v for k, v in credential.items() if k not in REGISTERED_CLAIMS}
