"""The issuer's signing keys: on disk (PKCS8 PEM, 0600, encrypted with the passphrase), in memory (a key
ring of current and retired keys), and as published documents (DID document, JWKS).

Retired keys stay in the ring and in the published documents so that badges signed before a rotation keep
verifying; only deleting a key (e.g. after a compromise) makes its badges stop verifying.

Layout of the key directory::

    keyring.json                 {"version": 1, "keys": [{kid, algorithm, file, created, status}, ...]}
    <algorithm>-<kid>.pem        one PKCS8 private key per entry

Every file is written to a temporary file created 0600 with O_EXCL, fsynced, then moved into place with
os.replace, so a crash leaves either the old or the new keyring, never a half-written one, and a private
key is never readable by others, not even for a moment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from issuer import multikey

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

ALGORITHMS: tuple[str, ...] = ("Ed25519", "ES256", "RS256")
# JWS "alg" for each key algorithm (RFC 8037 names Ed25519 signatures "EdDSA").
JWS_ALG: dict[str, str] = {"Ed25519": "EdDSA", "ES256": "ES256", "RS256": "RS256"}
RSA_SIZES = (2048, 3072)
DEFAULT_RSA_BITS = 3072  # badges are long-lived; 3072 bits is the NIST size for use beyond 2030
KEYRING_FILE = "keyring.json"
KEYRING_VERSION = 1

DID_DOCUMENT_CONTEXT = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/multikey/v1",
    "https://w3id.org/security/jwk/v1",
]


class KeyLoadError(KeyError):
    """The key ring or a key file cannot be read (missing, corrupt, wrong or missing passphrase)."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0]) if self.args else "key ring cannot be loaded"


def b64url(data: bytes) -> str:
    """base64url without padding, as JOSE uses everywhere."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError("base64url value must be a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid base64url: {exc}") from exc


def _uint(value: int, length: int | None = None) -> str:
    """JWK big-endian unsigned integer (fixed length for EC coordinates, minimal for RSA)."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def algorithm_of(public_key: PublicKey) -> str:
    """Our algorithm name for a public key, refusing the curves and types we never sign with."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ValueError(f"unsupported EC curve {public_key.curve.name} (only P-256)")
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    raise ValueError(f"unsupported key type {type(public_key).__name__}")


def jwk_members(public_key: PublicKey) -> dict[str, str]:
    """The required public JWK members (RFC 7517/7518/8037), which are also the thumbprint input."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url(multikey.ed25519_raw(public_key))}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        algorithm_of(public_key)  # P-256 only
        numbers = public_key.public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _uint(numbers.x, 32), "y": _uint(numbers.y, 32)}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}
    raise ValueError(f"unsupported key type {type(public_key).__name__}")


_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members only, sorted, no whitespace, base64url."""
    names = _THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if names is None:
        raise ValueError(f"no thumbprint for JWK key type {jwk.get('kty')!r}")
    try:
        canonical = json.dumps({n: jwk[n] for n in names}, separators=(",", ":"), sort_keys=True)
    except KeyError as exc:
        raise ValueError(f"JWK lacks required member {exc.args[0]!r}") from exc
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def public_key_from_jwk(jwk: dict[str, Any]) -> PublicKey:
    """A cryptography public key from a public JWK; refuses private members so a secret is never trusted
    as (or leaked through) a published key."""
    if not isinstance(jwk, dict):
        raise ValueError("a JWK must be a JSON object")
    private = [m for m in _PRIVATE_JWK_MEMBERS if m in jwk]
    if private:
        raise ValueError(f"JWK carries private or symmetric key material ({', '.join(private)}); refused")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        if kty == "EC" and crv == "P-256":
            x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
            if len(x) != 32 or len(y) != 32:
                raise ValueError("P-256 coordinates must be 32 bytes each")
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            return numbers.public_key()  # raises ValueError when the point is not on the curve
        if kty == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
    except KeyError as exc:
        raise ValueError(f"JWK lacks required member {exc.args[0]!r}") from exc
    raise ValueError(f"unsupported JWK (kty={kty!r}, crv={crv!r}); expected OKP Ed25519, EC P-256 or RSA")


def compute_kid(public_key: PublicKey) -> str:
    """Stable key id: the Multikey value for Ed25519 (what Data Integrity proofs reference), the RFC 7638
    thumbprint otherwise (what JWKS consumers expect)."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return multikey.ed25519_to_multibase(public_key)
    return jwk_thumbprint(jwk_members(public_key))


@dataclass
class SigningKey:
    """One issuer key; `private_key` is None for a key known only by its public half."""

    kid: str
    algorithm: str
    private_key: PrivateKey | None
    public_key: PublicKey
    created: str
    status: str = "current"

    @classmethod
    def generate(cls, algorithm: str, *, rsa_bits: int = DEFAULT_RSA_BITS) -> SigningKey:
        if algorithm == "Ed25519":
            private: PrivateKey = ed25519.Ed25519PrivateKey.generate()
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "RS256":
            if rsa_bits not in RSA_SIZES:
                raise ValueError(f"RSA keys must be one of {RSA_SIZES} bits, not {rsa_bits}")
            private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        else:
            raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
        return cls.from_private_key(private)

    @classmethod
    def from_private_key(cls, private_key: PrivateKey, *, created: str | None = None,
                         status: str = "current") -> SigningKey:
        public = private_key.public_key()
        return cls(compute_kid(public), algorithm_of(public), private_key, public, created or _now(), status)

    @classmethod
    def from_public_key(cls, public_key: PublicKey, *, created: str | None = None,
                        status: str = "current") -> SigningKey:
        return cls(compute_kid(public_key), algorithm_of(public_key), None, public_key, created or _now(),
                   status)

    @property
    def jws_alg(self) -> str:
        return JWS_ALG[self.algorithm]

    def public_jwk(self) -> dict[str, str]:
        """Public JWK with kid, alg and use so a JWKS consumer can pick the key without guessing."""
        return {**jwk_members(self.public_key), "kid": self.kid, "alg": self.jws_alg, "use": "sig"}

    def public_multibase(self) -> str:
        """Multikey `publicKeyMultibase` (Ed25519 and P-256 only; Multikey has no RSA encoding)."""
        if isinstance(self.public_key, ed25519.Ed25519PublicKey):
            return multikey.ed25519_to_multibase(self.public_key)
        if isinstance(self.public_key, ec.EllipticCurvePublicKey):
            return multikey.p256_to_multibase(self.public_key)
        raise ValueError("Multikey has no encoding for RSA keys; publish them as JWK")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 (never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask; make it exactly 0600
        with os.fdopen(fd, "wb") as fh:
            fd = -1  # now owned by fh
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class KeyRing:
    """The issuer's keys: one current key per algorithm, plus retired ones kept for verification."""

    def __init__(self, key_dir: Path, passphrase: str | None, keys: list[SigningKey],
                 files: dict[str, str]) -> None:
        self.key_dir = Path(key_dir)
        self._passphrase = passphrase
        self._keys = keys
        self._files = files

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, key_dir: Path, passphrase: str | None,
               algorithms: Iterable[str] = ("Ed25519", "ES256"), *,
               rsa_bits: int = DEFAULT_RSA_BITS) -> KeyRing:
        """Generate one current key per algorithm and write them; refuses to overwrite an existing ring."""
        _check_passphrase(passphrase)
        key_dir = Path(key_dir)
        algorithms = list(dict.fromkeys(algorithms))
        for algorithm in algorithms:
            if algorithm not in ALGORITHMS:
                raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
        if (key_dir / KEYRING_FILE).exists():
            raise FileExistsError(f"{key_dir / KEYRING_FILE} already exists; load it or rotate instead")
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ring = cls(key_dir, passphrase, [], {})
        for algorithm in algorithms:
            ring._write_key(SigningKey.generate(algorithm, rsa_bits=rsa_bits))
        ring._save()
        return ring

    @classmethod
    def load(cls, key_dir: Path, passphrase: str | None) -> KeyRing:
        """Read keyring.json and every key file; any problem is a KeyLoadError naming the file and cause."""
        key_dir = Path(key_dir)
        index_path = key_dir / KEYRING_FILE
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyLoadError(f"no key ring at {index_path}; create one first (issuer init)") from None
        except (OSError, ValueError) as exc:
            raise KeyLoadError(f"cannot read {index_path}: {exc}") from exc
        if not isinstance(index, dict) or index.get("version") != KEYRING_VERSION \
                or not isinstance(index.get("keys"), list):
            raise KeyLoadError(f"{index_path} is not a version-{KEYRING_VERSION} key ring")
        keys: list[SigningKey] = []
        files: dict[str, str] = {}
        for entry in index["keys"]:
            key, file_name = _load_entry(key_dir, entry, passphrase)
            keys.append(key)
            files[key.kid] = file_name
        ring = cls(key_dir, passphrase, keys, files)
        for algorithm in {k.algorithm for k in keys}:
            if sum(1 for k in keys if k.algorithm == algorithm and k.status == "current") > 1:
                raise KeyLoadError(f"{index_path} has more than one current {algorithm} key")
        return ring

    # -- queries --------------------------------------------------------------------------------------
    def current(self, algorithm: str) -> SigningKey:
        for key in self._keys:
            if key.algorithm == algorithm and key.status == "current":
                return key
        raise KeyError(f"no current {algorithm} key in the key ring")

    def all(self) -> list[SigningKey]:
        return list(self._keys)

    def find(self, kid: str) -> SigningKey | None:
        """Look a key up by kid; a DID URL or URL with the kid as its fragment also matches."""
        wanted = kid.rsplit("#", 1)[-1]
        return next((k for k in self._keys if k.kid == wanted), None)

    def algorithms(self) -> list[str]:
        return sorted({k.algorithm for k in self._keys if k.status == "current"})

    # -- changes --------------------------------------------------------------------------------------
    def rotate(self, algorithm: str, *, rsa_bits: int | None = None) -> SigningKey:
        """New current key for `algorithm`; the old one is retired but kept so its badges still verify."""
        old = self.current(algorithm)
        bits = rsa_bits or (old.public_key.key_size if isinstance(old.public_key, rsa.RSAPublicKey)
                            else DEFAULT_RSA_BITS)
        new = SigningKey.generate(algorithm, rsa_bits=bits)
        self._write_key(new)  # the key file lands first: a crash now leaves an unused file, not a gap
        old.status = "retired"
        try:
            self._save()
        except BaseException:
            old.status = "current"
            self._forget(new)
            raise
        return new

    def add_algorithm(self, algorithm: str, *, rsa_bits: int = DEFAULT_RSA_BITS) -> SigningKey:
        """Add a current key for an algorithm the ring lacks (e.g. RS256 for VC-JWT consumers)."""
        if any(k.algorithm == algorithm and k.status == "current" for k in self._keys):
            raise ValueError(f"the key ring already has a current {algorithm} key; rotate it instead")
        key = SigningKey.generate(algorithm, rsa_bits=rsa_bits)
        self._write_key(key)
        try:
            self._save()
        except BaseException:
            self._forget(key)
            raise
        return key

    # -- persistence ----------------------------------------------------------------------------------
    def _write_key(self, key: SigningKey) -> None:
        assert key.private_key is not None
        if self._passphrase:
            encryption: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(
                self._passphrase.encode("utf-8"))
        else:
            encryption = serialization.NoEncryption()
        pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            encryption)
        file_name = f"{key.algorithm.lower()}-{key.kid}.pem"
        write_private_file(self.key_dir / file_name, pem)
        self._keys.append(key)
        self._files[key.kid] = file_name

    def _forget(self, key: SigningKey) -> None:
        """Undo _write_key after the keyring could not be saved, so memory and disk agree again."""
        self._keys.remove(key)
        (self.key_dir / self._files.pop(key.kid)).unlink(missing_ok=True)

    def _save(self) -> None:
        index = {
            "version": KEYRING_VERSION,
            "keys": [
                {"kid": k.kid, "algorithm": k.algorithm, "file": self._files[k.kid], "created": k.created,
                 "status": k.status}
                for k in self._keys
            ],
        }
        write_private_file(self.key_dir / KEYRING_FILE, (json.dumps(index, indent=2) + "\n").encode("utf-8"))


def _check_passphrase(passphrase: str | None) -> None:
    if passphrase is not None and not passphrase:
        raise ValueError("the key passphrase must not be empty; pass None to store keys unencrypted")


def _load_entry(key_dir: Path, entry: Any, passphrase: str | None) -> tuple[SigningKey, str]:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str)
                                              for f in ("kid", "algorithm", "file", "created", "status")):
        raise KeyLoadError(f"malformed key ring entry: {entry!r}")
    file_name = entry["file"]
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise KeyLoadError(f"key ring entry names a file outside the key directory: {file_name!r}")
    if entry["status"] not in ("current", "retired"):
        raise KeyLoadError(f"key {entry['kid']} has unknown status {entry['status']!r}")
    path = key_dir / file_name
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    encrypted = b"BEGIN ENCRYPTED PRIVATE KEY" in pem or b"Proc-Type: 4,ENCRYPTED" in pem
    if encrypted and not passphrase:
        raise KeyLoadError(f"key file {path} is encrypted but no passphrase was given "
                           "(set ISSUER_KEY_PASSPHRASE)")
    if not encrypted and passphrase:
        raise KeyLoadError(f"a passphrase was given but key file {path} is not encrypted; "
                           "unset the passphrase or re-create the keys")
    try:
        private = serialization.load_pem_private_key(pem, password=passphrase.encode("utf-8")
                                                     if passphrase else None)
    except ValueError as exc:
        reason = "wrong passphrase" if encrypted else "corrupt key file"
        raise KeyLoadError(f"cannot decrypt key file {path}: {reason}") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"cannot load key file {path}: {exc}") from exc
    if not isinstance(private, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyLoadError(f"key file {path} holds an unsupported key type")
    try:
        key = SigningKey.from_private_key(private, created=entry["created"], status=entry["status"])
    except ValueError as exc:
        raise KeyLoadError(f"key file {path}: {exc}") from exc
    if key.kid != entry["kid"] or key.algorithm != entry["algorithm"]:
        raise KeyLoadError(f"key file {path} does not hold key {entry['kid']} ({entry['algorithm']}); "
                           "was it replaced?")
    return key, file_name


def verification_method(did: str, key: SigningKey) -> dict[str, Any]:
    """One DID document entry: Ed25519 as Multikey (what eddsa-rdfc-2022 verifiers expect), P-256 and RSA
    as JsonWebKey (what JOSE verifiers expect)."""
    if key.algorithm == "Ed25519":
        return {"id": f"{did}#{key.kid}", "type": "Multikey", "controller": did,
                "publicKeyMultibase": key.public_multibase()}
    return {"id": f"{did}#{key.kid}", "type": "JsonWebKey", "controller": did,
            "publicKeyJwk": key.public_jwk()}


def did_document(did: str, keys: Iterable[SigningKey]) -> dict[str, Any]:
    """DID document listing every given key, current and retired, under verificationMethod and
    assertionMethod, so badges signed with a retired key keep verifying.

    The contexts are DID Core v1, Multikey v1 and JWK v1 (the last defines `JsonWebKey`/`publicKeyJwk`).
    We serve the document as plain JSON and never JSON-LD-process it ourselves; jwk/v1 is not among our
    bundled contexts, which only matters to a consumer that expands the document, and that consumer
    fetches the published context from w3id.org.
    """
    methods = [verification_method(did, k) for k in keys]
    return {
        "@context": list(DID_DOCUMENT_CONTEXT),
        "id": did,
        "verificationMethod": methods,
        "assertionMethod": [m["id"] for m in methods],
    }


def jwks(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """JWK Set (`/.well-known/jwks.json`) of every given key, current and retired."""
    return {"keys": [k.public_jwk() for k in keys]}
