"""Multibase / Multikey encodings of public keys, and did:key identifiers.

A Multikey `publicKeyMultibase` is base58btc ('z' prefix) of a multicodec varint header followed by
the raw public key: 0xed 0x01 for Ed25519 (32 bytes), 0x80 0x24 for a compressed P-256 point.
"""

from __future__ import annotations

import functools

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ED25519_PUB_HEADER = b"\xed\x01"
P256_PUB_HEADER = b"\x80\x24"


class MultikeyError(ValueError):
    """A multibase or multikey value that cannot be decoded."""


def b58btc_encode(data: bytes) -> str:
    """Multibase base58btc: 'z' followed by the base58 (Bitcoin alphabet) text."""
    return "z" + base58.b58encode(data).decode("ascii")


def b58btc_decode(value: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("z"):
        raise MultikeyError("multibase value must be base58btc, starting with 'z'")
    try:
        return base58.b58decode(value[1:])
    except ValueError as exc:
        raise MultikeyError(f"invalid base58btc: {exc}") from exc


def ed25519_raw(public_key: ed25519.Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_to_multibase(public_key: ed25519.Ed25519PublicKey) -> str:
    return b58btc_encode(ED25519_PUB_HEADER + ed25519_raw(public_key))


def p256_to_multibase(public_key: ec.EllipticCurvePublicKey) -> str:
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    return b58btc_encode(P256_PUB_HEADER + point)


def public_key_from_multibase(value: str) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
    """Decode an Ed25519 or P-256 Multikey `publicKeyMultibase`."""
    if not isinstance(value, str):
        raise MultikeyError("publicKeyMultibase must be a string")
    # Real keys are 48-50 characters; a stranger's long text is decoded (and refused) without caching.
    return _decode_multikey(value) if len(value) <= 64 else _decode_multikey.__wrapped__(value)


# A key object is a pure function of its text and immutable: every verification of our badges names the
# same few keys, and base58 decoding them each time was a tenth of a badge's verification.
@functools.lru_cache(maxsize=256)
def _decode_multikey(value: str) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
    raw = b58btc_decode(value)
    if raw[:2] == ED25519_PUB_HEADER:
        if len(raw) != 34:
            raise MultikeyError("an Ed25519 multikey holds exactly 32 key bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw[2:])
    if raw[:2] == P256_PUB_HEADER:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw[2:])
        except ValueError as exc:
            raise MultikeyError(f"invalid P-256 point: {exc}") from exc
    raise MultikeyError("unsupported multikey type (only Ed25519 and P-256 are known)")


def ed25519_from_multibase(value: str) -> ed25519.Ed25519PublicKey:
    key = public_key_from_multibase(value)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise MultikeyError("expected an Ed25519 multikey")
    return key


def did_key(public_key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> str:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "did:key:" + ed25519_to_multibase(public_key)
    return "did:key:" + p256_to_multibase(public_key)


def did_web_from_url(base_url: str) -> str:
    """did:web identifier for a public base URL: host (port percent-encoded) then path segments."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if not parts.hostname:
        raise ValueError(f"public base URL has no host: {base_url!r}")
    host = parts.hostname
    if parts.port:
        host += "%3A" + str(parts.port)
    segments = [s for s in parts.path.split("/") if s]
    return ":".join(["did:web", host, *segments])


def did_web_to_url(did: str, *, scheme: str = "https") -> str:
    """URL of the DID document of a did:web identifier (the did:web method's 'Read' operation)."""
    from urllib.parse import unquote

    if not did.startswith("did:web:"):
        raise ValueError("not a did:web identifier")
    host, *segments = did[len("did:web:"):].split(":")
    host = unquote(host)
    if not host or "/" in host:
        raise ValueError("did:web has no valid host")
    path = "/".join(unquote(s) for s in segments)
    return f"{scheme}://{host}/{path}/did.json" if path else f"{scheme}://{host}/.well-known/did.json"
