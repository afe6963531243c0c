"""VC-JWT per Open Badges 3.0: what we sign has OB's exact header and claims, what we verify must carry a
valid signature from the right kind of key and claims that agree with the credential, and 1EdTech's own
JWT fixtures verify."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import struct
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization

from issuer.keys import SigningKey, b64url
from issuer.vcjwt import (
    JwtError,
    check_header,
    credential_from_payload,
    key_from_header,
    parse_compact,
    sign_vc_jwt,
    strip_registered_claims,
    verify_vc_jwt,
)
from tests.corpus import data_analysis_badge

FIXTURES = "examples/ob_v3p0/1edtech-validator-fixtures"
ISSUER = "did:web:badges.example.edu"
HOLDER = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
DUPLICATE_MEMBERS = b'{"a": 1, "a": 2}'
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_credential(**changes: Any) -> dict[str, Any]:
    credential = data_analysis_badge(ISSUER, HOLDER)
    credential.update(changes)
    return credential


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, SigningKey]:
    return {"ES256": SigningKey.generate("ES256"), "RS256": SigningKey.generate("RS256", rsa_bits=2048),
            "EdDSA": SigningKey.generate("Ed25519")}


@pytest.fixture
def es256(signing_keys: dict[str, SigningKey]) -> SigningKey:
    return signing_keys["ES256"]


def raw_segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode independently of the module under test, so a shared bug cannot hide."""
    header, payload, _ = token.split(".")
    def decode(segment: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    return decode(header), decode(payload)


def sign_raw(header: dict[str, Any], payload: dict[str, Any], key: SigningKey) -> str:
    """A JWT with any header and payload, for building tokens our signer would never produce."""
    body = json.dumps(payload).encode()
    return pyjwt.PyJWS().encode(body, key.private_key, algorithm=header["alg"],
                                headers={k: v for k, v in header.items() if k != "alg"})


# -- signing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_sign_then_verify_returns_the_credential(alg: str, signing_keys: dict[str, SigningKey]) -> None:
    key = signing_keys[alg]
    credential = make_credential()
    token = sign_vc_jwt(credential, key, f"{ISSUER}#{key.kid}")
    verified = verify_vc_jwt(token, key.public_key)
    assert strip_registered_claims(verified) == credential
    assert raw_segments(token)[0]["alg"] == alg


def test_header_is_exactly_alg_kid_typ(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256, f"{ISSUER}#{es256.kid}")
    header, _ = raw_segments(token)
    assert header == {"alg": "ES256", "kid": f"{ISSUER}#{es256.kid}", "typ": "JWT"}
    assert check_header(header) == []


def test_kid_defaults_to_the_key_id(es256: SigningKey) -> None:
    assert raw_segments(sign_vc_jwt(make_credential(), es256))[0]["kid"] == es256.kid


def test_payload_is_the_credential_plus_ob_claims(es256: SigningKey) -> None:
    credential = make_credential(validUntil="2030-06-01T09:30:00Z")
    _, payload = raw_segments(sign_vc_jwt(credential, es256))
    claims = {k: payload.pop(k) for k in ("iss", "jti", "nbf", "sub", "exp")}
    assert payload == credential
    assert claims == {"iss": ISSUER, "jti": credential["id"], "nbf": 1748770200, "sub": HOLDER,
                      "exp": 1906536600}


def test_exp_is_absent_without_valid_until(es256: SigningKey) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(), es256))
    assert "exp" not in payload


def test_issuer_given_as_a_plain_uri_becomes_iss(es256: SigningKey) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(issuer=ISSUER), es256))
    assert payload["iss"] == ISSUER


def test_nbf_rounds_fractional_and_offset_times_to_the_utc_second(es256: SigningKey) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(validFrom="2025-06-01T17:30:00.75+08:00"), es256))
    assert payload["nbf"] == 1748770200


def test_non_ascii_text_is_signed_as_utf8(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256)
    body = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert "資料分析入門".encode() in body


def test_recipient_without_id_cannot_get_a_jwt(es256: SigningKey) -> None:
    credential = make_credential()
    del credential["credentialSubject"]["id"]
    with pytest.raises(JwtError, match="recipient DID"):
        sign_vc_jwt(credential, es256)


@pytest.mark.parametrize("field, message", [("validFrom", "validFrom"), ("id", "jti"), ("issuer", "iss")])
def test_credential_missing_a_claim_source_cannot_be_signed(es256: SigningKey, field: str,
                                                            message: str) -> None:
    credential = make_credential()
    del credential[field]
    with pytest.raises(JwtError, match=message):
        sign_vc_jwt(credential, es256)


def test_valid_from_without_timezone_is_refused(es256: SigningKey) -> None:
    with pytest.raises(JwtError, match="timezone"):
        sign_vc_jwt(make_credential(validFrom="2025-06-01T09:30:00"), es256)


def test_public_only_key_cannot_sign(es256: SigningKey) -> None:
    with pytest.raises(JwtError, match="no private half"):
        sign_vc_jwt(make_credential(), SigningKey.from_public_key(es256.public_key))


# -- verification: signatures and algorithms -------------------------------------------------------------

def test_tampering_with_any_character_fails_verification(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256)
    verify_vc_jwt(token, es256.public_key)
    for position, char in enumerate(token):
        if char == ".":
            continue
        # Move to the other half of the alphabet: flips the top bit of this 6-bit group, which is always
        # a data bit, so the decoded bytes really change.
        replacement = B64URL_ALPHABET[(B64URL_ALPHABET.index(char) + 32) % 64]
        tampered = token[:position] + replacement + token[position + 1:]
        with pytest.raises(JwtError):
            verify_vc_jwt(tampered, es256.public_key)


def test_non_canonical_signature_encoding_is_refused(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256)
    last = token[-1]  # 64-byte signature: the last character carries 2 data bits and 4 padding bits
    sibling = B64URL_ALPHABET[B64URL_ALPHABET.index(last) ^ 1]
    with pytest.raises(JwtError, match="canonical"):
        verify_vc_jwt(token[:-1] + sibling, es256.public_key)


def test_wrong_key_fails_verification(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256)
    with pytest.raises(JwtError, match="signature does not verify"):
        verify_vc_jwt(token, SigningKey.generate("ES256").public_key)


def test_alg_none_is_refused_even_if_allowed(es256: SigningKey) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(), es256))
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{none_header}.{b64url(json.dumps(payload).encode())}."
    with pytest.raises(JwtError, match="none"):
        verify_vc_jwt(unsigned, es256.public_key)
    with pytest.raises(JwtError, match="none"):
        verify_vc_jwt(unsigned, es256.public_key, allowed_algs=("ES256", "none"))


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_hs256_signed_with_the_public_key_is_refused(alg: str, signing_keys: dict[str, SigningKey]) -> None:
    # The classic key-confusion attack: HMAC keyed with the verifier's public key bytes.
    key = signing_keys[alg]
    public_pem = key.public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    _, payload = raw_segments(sign_vc_jwt(make_credential(), key))
    hs_header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{hs_header}.{b64url(json.dumps(payload).encode())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(JwtError, match="HS256"):
        verify_vc_jwt(f"{signing_input}.{b64url(mac)}", key.public_key)
    with pytest.raises(JwtError, match="HS256"):
        verify_vc_jwt(f"{signing_input}.{b64url(mac)}", key.public_key, allowed_algs=("HS256",))


@pytest.mark.parametrize("signer, verifier", [("ES256", "RS256"), ("RS256", "ES256"), ("EdDSA", "ES256")])
def test_alg_must_match_the_verification_key_type(signer: str, verifier: str,
                                                  signing_keys: dict[str, SigningKey]) -> None:
    token = sign_vc_jwt(make_credential(), signing_keys[signer])
    with pytest.raises(JwtError, match="does not match"):
        verify_vc_jwt(token, signing_keys[verifier].public_key)


def test_allowed_algs_narrows_what_is_accepted(signing_keys: dict[str, SigningKey]) -> None:
    token = sign_vc_jwt(make_credential(), signing_keys["EdDSA"])
    with pytest.raises(JwtError, match="not allowed"):
        verify_vc_jwt(token, signing_keys["EdDSA"].public_key, allowed_algs=("ES256", "RS256"))


def test_critical_header_extensions_are_refused(es256: SigningKey) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(), es256))
    token = sign_raw({"alg": "ES256", "typ": "JWT", "crit": ["exp"], "exp": 1}, payload, es256)
    with pytest.raises(JwtError):
        verify_vc_jwt(token, es256.public_key)


def test_verify_accepts_a_signing_key_object(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256)
    assert verify_vc_jwt(token, es256)["jti"] == make_credential()["id"]


# -- verification: claims ------------------------------------------------------------------------------

def test_expired_and_future_tokens_verify_and_report_their_window(es256: SigningKey) -> None:
    expired = make_credential(validFrom="2001-01-01T00:00:00Z", validUntil="2002-01-01T00:00:00Z")
    assert verify_vc_jwt(sign_vc_jwt(expired, es256), es256.public_key)["exp"] == 1009843200
    future = make_credential(validFrom="2999-01-01T00:00:00Z")
    assert verify_vc_jwt(sign_vc_jwt(future, es256), es256.public_key)["nbf"] == 32472144000


@pytest.mark.parametrize("claim, value, message", [
    ("iss", "https://impostor.example", "iss"),
    ("jti", "urn:uuid:00000000-0000-0000-0000-000000000000", "jti"),
    ("sub", "did:example:someone-else", "sub"),
    ("nbf", 1748770200 + 3600, "nbf"),
    ("exp", 1906536600 + 3600, "exp"),
])
def test_claims_that_disagree_with_the_credential_are_refused(es256: SigningKey, claim: str, value: Any,
                                                              message: str) -> None:
    credential = make_credential(validUntil="2030-06-01T09:30:00Z")
    _, payload = raw_segments(sign_vc_jwt(credential, es256))
    payload[claim] = value
    with pytest.raises(JwtError, match=message):
        verify_vc_jwt(sign_raw({"alg": "ES256", "typ": "JWT"}, payload, es256), es256.public_key)


@pytest.mark.parametrize("claim", ["iss", "nbf"])
def test_ob_form_requires_iss_and_nbf(es256: SigningKey, claim: str) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(), es256))
    del payload[claim]
    with pytest.raises(JwtError, match=claim):
        verify_vc_jwt(sign_raw({"alg": "ES256", "typ": "JWT"}, payload, es256), es256.public_key)


def test_valid_until_without_exp_is_refused(es256: SigningKey) -> None:
    _, payload = raw_segments(sign_vc_jwt(make_credential(validUntil="2030-06-01T09:30:00Z"), es256))
    del payload["exp"]
    with pytest.raises(JwtError, match="no exp"):
        verify_vc_jwt(sign_raw({"alg": "ES256", "typ": "JWT"}, payload, es256), es256.public_key)


def test_vcdm11_vc_claim_form_is_unwrapped_and_claims_merged(signing_keys: dict[str, SigningKey]) -> None:
    key = signing_keys["RS256"]
    vc = {
        "@context": ["https://www.w3.org/2018/credentials/v1",
                     "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"],
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "credentialSubject": {"type": ["AchievementSubject"]},
    }
    payload = {"vc": vc, "iss": ISSUER, "jti": "urn:uuid:1234", "sub": HOLDER, "nbf": 1262304000,
               "exp": 1893456000}
    token = sign_raw({"alg": "RS256", "typ": "JWT"}, payload, key)
    credential = verify_vc_jwt(token, key.public_key)
    assert credential["issuer"] == ISSUER
    assert credential["id"] == "urn:uuid:1234"
    assert credential["credentialSubject"] == {"type": ["AchievementSubject"], "id": HOLDER}
    assert credential["issuanceDate"] == "2010-01-01T00:00:00Z"
    assert credential["expirationDate"] == "2030-01-01T00:00:00Z"
    assert "vc" not in credential and "iss" not in credential


def test_vc_claim_with_a_vcdm2_context_is_refused(es256: SigningKey) -> None:
    payload = {"vc": make_credential(), "iss": ISSUER, "nbf": 1748770200}
    with pytest.raises(JwtError, match="VCDM 1.1"):
        verify_vc_jwt(sign_raw({"alg": "ES256", "typ": "JWT"}, payload, es256), es256.public_key)


def test_vcdm11_context_without_vc_claim_is_refused() -> None:
    payload = make_credential(iss=ISSUER, nbf=1748770200)
    payload["@context"] = ["https://www.w3.org/2018/credentials/v1"]
    with pytest.raises(JwtError, match="VCDM 2.0"):
        credential_from_payload(payload)


# -- parsing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token, message", [
    ("a.b", "3 dot-separated segments"),
    ("a.b.c.d", "3 dot-separated segments"),
    ("a.b.c.d.e", "JWE"),
    ("e30.e30.!!!", "base64url"),
    ("e3=.e30.", "base64url"),
    (f"{b64url(b'not json')}.e30.", "not valid JSON"),
    (f"{b64url(b'[1, 2]')}.e30.", "JSON object"),
    (f"e30.{b64url(b'42')}.", "JSON object"),
    (f"e30.{b64url(DUPLICATE_MEMBERS)}.", "duplicate"),
    (f"e30.{b64url(bytes([0xff, 0xfe]))}.", "UTF-8"),
    (".e30.", "must not be empty"),
])
def test_malformed_tokens_get_a_clear_error(token: str, message: str) -> None:
    with pytest.raises(JwtError, match=message):
        parse_compact(token)


def test_parse_compact_reads_header_and_payload_without_a_key(es256: SigningKey) -> None:
    token = sign_vc_jwt(make_credential(), es256)
    header, payload = parse_compact(token + "\n")
    assert header["alg"] == "ES256" and payload["sub"] == HOLDER


def test_check_header_reports_ob_violations() -> None:
    problems = check_header({"alg": "ES256", "typ": "vc+jwt", "cty": "vc"})
    assert any("cty" in p for p in problems)
    assert any("typ" in p for p in problems)
    assert any("neither kid nor jwk" in p for p in problems)


# -- header jwk ----------------------------------------------------------------------------------------

def test_key_from_header_returns_the_embedded_public_key(es256: SigningKey) -> None:
    key = key_from_header({"alg": "ES256", "jwk": es256.public_jwk()})
    assert SigningKey.from_public_key(key).kid == es256.kid
    assert key_from_header({"alg": "ES256", "kid": "x"}) is None


def test_key_from_header_refuses_a_private_jwk(es256: SigningKey) -> None:
    numbers = es256.private_key.private_numbers()
    jwk = es256.public_jwk() | {"d": b64url(numbers.private_value.to_bytes(32, "big"))}
    with pytest.raises(JwtError, match="private"):
        key_from_header({"alg": "ES256", "jwk": jwk})


# -- 1EdTech validator fixtures ---------------------------------------------------------------------------

def png_itxt(data: bytes, keyword: bytes) -> str:
    """Text of the iTXt chunk with `keyword` (uncompressed, as OB baking requires)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"iTXt" and body.split(b"\x00", 1)[0] == keyword:
            _keyword, rest = body.split(b"\x00", 1)
            assert rest[0] == 0, "compressed iTXt"
            _language, _translated, text = rest[2:].split(b"\x00", 2)
            return text.decode("utf-8")
    raise AssertionError(f"no iTXt chunk {keyword!r}")


def _baked_jwt(standards: Path, name: str) -> str:
    path = standards / FIXTURES / name
    if name.endswith(".png"):
        return png_itxt(path.read_bytes(), b"openbadgecredential")
    match = re.search(r'<openbadges:credential\s+verify="([^"]+)"', path.read_text(encoding="utf-8"))
    assert match, "no <openbadges:credential verify=...> element"
    return match.group(1)


@pytest.mark.parametrize("name", ["simple-jwt.svg", "simple-jwt.png"])
def test_1edtech_baked_jwt_verifies_with_its_header_jwk(standards: Path, name: str) -> None:
    token = _baked_jwt(standards, name)
    header, _ = parse_compact(token)
    key = key_from_header(header)
    assert key is not None
    credential = verify_vc_jwt(token, key)
    assert credential["issuer"]["id"] == "https://1edtech.edu/issuers/565049"
    assert credential["validFrom"] == "2010-01-01T00:00:00Z"
    assert credential["credentialSubject"]["achievement"]["name"] == "Teamwork"


@pytest.mark.parametrize("name", ["simple-jwt.svg", "simple-jwt.png"])
def test_1edtech_baked_jwt_fails_when_its_payload_is_altered(standards: Path, name: str) -> None:
    token = _baked_jwt(standards, name)
    header_b64, _payload_b64, signature = token.split(".")
    _, payload = parse_compact(token)
    altered = copy.deepcopy(payload)
    altered["credentialSubject"]["achievement"]["name"] = "Leadership"
    forged = ".".join([header_b64, b64url(json.dumps(altered).encode()), signature])
    with pytest.raises(JwtError, match="signature"):
        verify_vc_jwt(forged, key_from_header(parse_compact(token)[0]))


def test_1edtech_simple_jwt_claims_match_its_vcdm11_credential(load_standard) -> None:
    header, payload = parse_compact(load_standard(f"{FIXTURES}/simple.jwt"))
    assert header == {"alg": "RS256", "typ": "JWT"}
    credential = credential_from_payload(payload)
    assert credential["id"] == payload["jti"] == "http://example.edu/credentials/3732"
    assert credential["issuer"]["id"] == payload["iss"]
    assert credential["issuanceDate"] == "2010-01-01T00:00:00Z"


def test_1edtech_simple_jwt_signature(standards: Path, load_standard) -> None:
    token = load_standard(f"{FIXTURES}/simple.jwt")
    header, _ = parse_compact(token)
    assert key_from_header(header) is None and "kid" not in header  # the fixture names no key
    # The only RSA keys the fixtures carry are the header jwks of the baked JWT images; try them.
    for name in ("simple-jwt.svg", "simple-jwt.png"):
        candidate = key_from_header(parse_compact(_baked_jwt(standards, name))[0])
        try:
            credential = verify_vc_jwt(token, candidate)
        except JwtError:
            continue
        assert credential["id"] == "http://example.edu/credentials/3732"
        return
    pytest.skip("simple.jwt's header is only {alg: RS256, typ: JWT}: it names no key (no kid, no jwk), and "
                "no key in the fixtures verifies it (tried the header jwk of simple-jwt.svg and "
                "simple-jwt.png); its public key is not obtainable offline, so its signature is not checked")
