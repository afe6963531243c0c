"""The issuer's signing keys: on disk (PKCS8 PEM, 0600, encrypted with the passphrase), in memory (a key
ring of current and retired keys), and as published documents (DID document, JWKS).

Retired keys stay in the ring and in the published documents so that badges signed before a rotation keep
verifying; only withdrawing a key after a compromise (`KeyRing.withdraw`) makes its badges stop verifying.

Layout of the key directory (docs/keys.md is the operator's runbook)::

    keyring.json                 {"version": 1, "keys": [{kid, algorithm, file, created, status}, ...],
                                  "withdrawn": [{kid, algorithm, withdrawn, reason}, ...]}  (when any)
    <algorithm>-<kid>[-<hex>].pem  one PKCS8 private key per entry (`encrypt` writes new names)

The service refuses to start in production on plaintext keys or loose permissions (`check_key_storage`);
`export_backup`/`read_backup`/`import_backup` are the encrypted backup of the whole ring.

Every file is written to a temporary file created 0600 with O_EXCL, fsynced, then moved into place with
os.replace, so a crash leaves either the old or the new keyring, never a half-written one, and a private
key is never readable by others, not even for a moment.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import secrets
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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

# `issuer keys export`: one JSON file, the ring sealed with AES-256-GCM under a scrypt-derived key.
BACKUP_FORMAT = "ob3-issuer-key-backup"
BACKUP_VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1  # about 128 MiB and a fraction of a second per guess
MIN_BACKUP_PASSPHRASE = 12
MAX_BACKUP_BYTES = 1024 * 1024  # a ring of hundreds of keys is far smaller

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
    members = tuple(jwk.get(m) for m in ("kty", "crv", "x", "y", "n", "e"))
    # Checking a P-256 point is on the curve costs more than the signature check it serves: the same few
    # keys sign every badge, so the key object (immutable) is kept for the same members.
    if all(m is None or (isinstance(m, str) and len(m) <= 1100) for m in members):
        return _jwk_public_key(*members)
    return _jwk_public_key.__wrapped__(*members)


@functools.lru_cache(maxsize=128)
def _jwk_public_key(kty: Any, crv: Any, x: Any, y: Any, n: Any, e: Any) -> PublicKey:
    jwk = {"x": x, "y": y, "n": n, "e": e}
    jwk = {k: v for k, v in jwk.items() if v is not None}
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
                 files: dict[str, str], withdrawn: list[dict[str, str]] | None = None) -> None:
        self.key_dir = Path(key_dir)
        self._passphrase = passphrase
        self._keys = keys
        self._files = files
        # Keys taken out after a compromise: kept by id only (no key material) so that no import of an
        # older backup can quietly publish them again.
        self._withdrawn = list(withdrawn or [])

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
        _make_key_dir(key_dir)
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
        withdrawn = index.get("withdrawn", [])
        if not isinstance(withdrawn, list) or not all(isinstance(w, dict) and isinstance(w.get("kid"), str)
                                                      for w in withdrawn):
            raise KeyLoadError(f"{index_path} has a malformed list of withdrawn keys")
        keys: list[SigningKey] = []
        files: dict[str, str] = {}
        for entry in index["keys"]:
            key, file_name = _load_entry(key_dir, entry, passphrase)
            keys.append(key)
            files[key.kid] = file_name
        ring = cls(key_dir, passphrase, keys, files, withdrawn)
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

    def withdrawn(self) -> list[dict[str, str]]:
        """Keys withdrawn after a compromise: kid, algorithm, when and why (no key material)."""
        return [dict(w) for w in self._withdrawn]

    @property
    def encrypted(self) -> bool:
        return bool(self._passphrase)

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

    def withdraw(self, kid: str, *, reason: str) -> SigningKey:
        """Take a compromised key out of the ring: it leaves the DID document and the JWKS, so everything
        it signed stops verifying, and its private file is deleted. The current key of an algorithm
        cannot be withdrawn: rotate first, so that there is always a key to sign with."""
        key = self.find(kid)
        if key is None:
            raise KeyError(f"no key {kid!r} in the key ring")
        if key.status == "current":
            raise ValueError(f"key {key.kid} is the current {key.algorithm} key; rotate it first "
                             f"(issuer keys rotate --algorithm {key.algorithm}), then withdraw it")
        record = {"kid": key.kid, "algorithm": key.algorithm, "withdrawn": _now(), "reason": reason}
        index = self._keys.index(key)
        file_name = self._files.pop(key.kid)
        self._keys.remove(key)
        self._withdrawn.append(record)
        try:
            self._save()
        except BaseException:
            self._keys.insert(index, key)
            self._files[key.kid] = file_name
            self._withdrawn.remove(record)
            raise
        # Deleted only once the saved ring no longer names it: a crash leaves an unused file, not a gap.
        (self.key_dir / file_name).unlink(missing_ok=True)
        _fsync_dir(self.key_dir)
        return key

    def encrypt(self, passphrase: str) -> None:
        """Rewrite every key file encrypted with `passphrase` (e.g. plaintext development keys that
        become production keys, or a new passphrase). New files first, then the ring names them, then
        the old files go: a crash leaves the old or the new ring whole."""
        _check_passphrase(passphrase)
        if not passphrase:
            raise ValueError("a passphrase is needed to encrypt the keys")
        old_files = dict(self._files)
        old_passphrase = self._passphrase
        self._passphrase = passphrase
        written: list[str] = []
        try:
            for key in self._keys:
                name = f"{key.algorithm.lower()}-{key.kid}-{secrets.token_hex(4)}.pem"
                write_private_file(self.key_dir / name, self._pem(key))
                written.append(name)
                self._files[key.kid] = name
            self._save()
        except BaseException:
            self._passphrase = old_passphrase
            self._files = old_files
            for name in written:
                (self.key_dir / name).unlink(missing_ok=True)
            raise
        for name in old_files.values():
            (self.key_dir / name).unlink(missing_ok=True)
        _fsync_dir(self.key_dir)

    # -- backup ---------------------------------------------------------------------------------------
    def export_backup(self, passphrase: str) -> bytes:
        """The whole ring (its index and every key, current and retired) as one file encrypted with
        `passphrase`: scrypt derives an AES-256-GCM key; the header is authenticated too."""
        if not passphrase or len(passphrase) < MIN_BACKUP_PASSPHRASE:
            raise ValueError(f"a backup passphrase must be at least {MIN_BACKUP_PASSPHRASE} characters")
        entries = self._index()
        pems = {}
        for key in self._keys:
            assert key.private_key is not None
            pems[key.kid] = key.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode("ascii")
        plaintext = json.dumps({"keyring": entries, "keys": pems}, separators=(",", ":")).encode("utf-8")
        header = {"format": BACKUP_FORMAT, "version": BACKUP_VERSION, "created": _now(),
                  "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                          "salt": b64url(secrets.token_bytes(16))},
                  "cipher": "AES-256-GCM", "nonce": b64url(secrets.token_bytes(12))}
        key = _backup_key(passphrase, header["kdf"])
        sealed = AESGCM(key).encrypt(b64url_decode(header["nonce"]), plaintext, _aad(header))
        return (json.dumps({**header, "ciphertext": b64url(sealed)}, indent=1) + "\n").encode("utf-8")

    # -- persistence ----------------------------------------------------------------------------------
    def _pem(self, key: SigningKey) -> bytes:
        assert key.private_key is not None
        if self._passphrase:
            encryption: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(
                self._passphrase.encode("utf-8"))
        else:
            encryption = serialization.NoEncryption()
        return key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             encryption)

    def _write_key(self, key: SigningKey) -> None:
        file_name = f"{key.algorithm.lower()}-{key.kid}.pem"
        write_private_file(self.key_dir / file_name, self._pem(key))
        self._keys.append(key)
        self._files[key.kid] = file_name

    def _forget(self, key: SigningKey) -> None:
        """Undo _write_key after the keyring could not be saved, so memory and disk agree again."""
        self._keys.remove(key)
        (self.key_dir / self._files.pop(key.kid)).unlink(missing_ok=True)

    def _index(self) -> dict[str, Any]:
        index: dict[str, Any] = {
            "version": KEYRING_VERSION,
            "keys": [
                {"kid": k.kid, "algorithm": k.algorithm, "file": self._files[k.kid], "created": k.created,
                 "status": k.status}
                for k in self._keys
            ],
        }
        if self._withdrawn:
            index["withdrawn"] = [dict(w) for w in self._withdrawn]
        return index

    def _save(self) -> None:
        write_private_file(self.key_dir / KEYRING_FILE,
                           (json.dumps(self._index(), indent=2) + "\n").encode("utf-8"))


def _check_passphrase(passphrase: str | None) -> None:
    if passphrase is not None and not passphrase:
        raise ValueError("the key passphrase must not be empty; pass None to store keys unencrypted")


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str)
                                              for f in ("kid", "algorithm", "file", "created", "status")):
        raise KeyLoadError(f"malformed key ring entry: {entry!r}")
    file_name = entry["file"]
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise KeyLoadError(f"key ring entry names a file outside the key directory: {file_name!r}")
    if entry["status"] not in ("current", "retired"):
        raise KeyLoadError(f"key {entry['kid']} has unknown status {entry['status']!r}")


def _load_entry(key_dir: Path, entry: Any, passphrase: str | None) -> tuple[SigningKey, str]:
    _check_entry(entry)
    file_name = entry["file"]
    path = key_dir / file_name
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    return _key_from_pem(pem, entry, passphrase, f"key file {path}"), file_name


def _key_from_pem(pem: bytes, entry: dict, passphrase: str | None, where: str) -> SigningKey:
    """The key an entry names, from its PEM; `where` names the PEM's origin in every error."""
    encrypted = is_encrypted_pem(pem)
    if encrypted and not passphrase:
        raise KeyLoadError(f"{where} is encrypted but no passphrase was given "
                           "(set ISSUER_KEY_PASSPHRASE)")
    if not encrypted and passphrase:
        raise KeyLoadError(f"a passphrase was given but {where} is not encrypted; "
                           "unset the passphrase or re-create the keys")
    try:
        private = serialization.load_pem_private_key(pem, password=passphrase.encode("utf-8")
                                                     if passphrase else None)
    except ValueError as exc:
        reason = "wrong passphrase" if encrypted else "corrupt key file"
        raise KeyLoadError(f"cannot decrypt {where}: {reason}") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"cannot load {where}: {exc}") from exc
    if not isinstance(private, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyLoadError(f"{where} holds an unsupported key type")
    try:
        key = SigningKey.from_private_key(private, created=entry["created"], status=entry["status"])
    except ValueError as exc:
        raise KeyLoadError(f"{where}: {exc}") from exc
    if key.kid != entry["kid"] or key.algorithm != entry["algorithm"]:
        raise KeyLoadError(f"{where} does not hold key {entry['kid']} ({entry['algorithm']}); "
                           "was it replaced?")
    return key


def is_encrypted_pem(pem: bytes) -> bool:
    return b"BEGIN ENCRYPTED PRIVATE KEY" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


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


# -- backup and restore --------------------------------------------------------------------------------

class BackupError(ValueError):
    """A key backup cannot be read or imported; nothing was written."""


def _aad(header: dict[str, Any]) -> bytes:
    """Every header member is authenticated, so nobody can weaken the KDF parameters unnoticed."""
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _backup_key(passphrase: str, kdf: dict[str, Any]) -> bytes:
    return Scrypt(salt=b64url_decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"],
                  p=kdf["p"]).derive(passphrase.encode("utf-8"))


@dataclass
class Backup:
    """A decrypted backup, checked: the ring's index and each key (private part included)."""

    index: dict[str, Any]
    keys: list[SigningKey]

    def kids(self) -> list[str]:
        return [k.kid for k in self.keys]


def read_backup(data: bytes, passphrase: str) -> Backup:
    """Decrypt and check a backup made by `KeyRing.export_backup`; BackupError says what is wrong."""
    if len(data) > MAX_BACKUP_BYTES:
        raise BackupError("this file is too large to be a key backup")
    try:
        envelope = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BackupError("this file is not a key backup (not JSON)") from None
    if not isinstance(envelope, dict) or envelope.get("format") != BACKUP_FORMAT:
        raise BackupError("this file is not a key backup made by `issuer keys export`")
    if envelope.get("version") != BACKUP_VERSION:
        raise BackupError(f"unsupported key backup version {envelope.get('version')!r}")
    kdf = envelope.get("kdf")
    # Bounds, so a hostile file cannot make us spend minutes or gigabytes on its KDF.
    if not (isinstance(kdf, dict) and kdf.get("name") == "scrypt"
            and all(isinstance(kdf.get(f), int) and not isinstance(kdf.get(f), bool) for f in ("n", "r", "p"))
            and 2**14 <= kdf["n"] <= 2**20 and kdf["n"] & (kdf["n"] - 1) == 0
            and 1 <= kdf["r"] <= 16 and 1 <= kdf["p"] <= 4 and isinstance(kdf.get("salt"), str)):
        raise BackupError("the key backup's key derivation parameters are missing or out of bounds")
    if envelope.get("cipher") != "AES-256-GCM" or not isinstance(envelope.get("nonce"), str) \
            or not isinstance(envelope.get("ciphertext"), str):
        raise BackupError("the key backup's cipher, nonce or ciphertext is missing")
    header = {k: v for k, v in envelope.items() if k != "ciphertext"}
    try:
        nonce, sealed = b64url_decode(envelope["nonce"]), b64url_decode(envelope["ciphertext"])
        key = _backup_key(passphrase, kdf)
    except ValueError as exc:
        raise BackupError(f"the key backup is damaged: {exc}") from None
    if len(nonce) != 12:
        raise BackupError("the key backup is damaged: bad nonce")
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, _aad(header))
    except InvalidTag:
        raise BackupError("wrong passphrase, or the key backup file was altered") from None
    try:
        content = json.loads(plaintext)
        index, pems = content["keyring"], content["keys"]
        if not isinstance(index, dict) or index.get("version") != KEYRING_VERSION \
                or not isinstance(index.get("keys"), list) or not isinstance(pems, dict):
            raise ValueError("unexpected layout")
        keys = []
        for entry in index["keys"]:
            _check_entry(entry)
            pem = pems.get(entry["kid"])
            if not isinstance(pem, str):
                raise ValueError(f"no private key for {entry['kid']}")
            keys.append(_key_from_pem(pem.encode("ascii"), entry, None, f"key {entry['kid']} of the backup"))
    except (KeyError, TypeError, ValueError, UnicodeEncodeError) as exc:
        raise BackupError(f"the key backup decrypted but its content is not a key ring: {exc}") from None
    for algorithm in {k.algorithm for k in keys}:
        if sum(1 for k in keys if k.algorithm == algorithm and k.status == "current") > 1:
            raise BackupError(f"the key backup has more than one current {algorithm} key")
    return Backup(index, keys)


def import_backup(backup: Backup, key_dir: Path, passphrase: str | None, *,
                  withdrawn: Iterable[str] = ()) -> tuple[KeyRing, bool]:
    """Write a backup's ring into `key_dir`, each key encrypted with `passphrase` (the instance's).

    Returns (ring, written). An existing ring with the very same keys is left as it is (written is
    False); a different ring, or stray key files, are refused. Keys in `withdrawn` (compromised ones
    that this instance, or the backup itself, already withdrew) are never restored."""
    _check_passphrase(passphrase)
    key_dir = Path(key_dir)
    gone = set(withdrawn) | {w.get("kid") for w in backup.index.get("withdrawn", []) if isinstance(w, dict)}
    keys = [k for k in backup.keys if k.kid not in gone]
    for key in backup.keys:
        if key.kid in gone and key.status == "current":
            raise BackupError(f"the backup's current {key.algorithm} key {key.kid} was withdrawn as "
                              "compromised; import a backup taken after the rotation")
    if (key_dir / KEYRING_FILE).exists():
        try:
            existing = KeyRing.load(key_dir, passphrase)
        except KeyLoadError as exc:
            raise BackupError(f"{key_dir} already holds a key ring that cannot be read ({exc}); "
                              "import into an empty key directory") from None
        same = sorted((k.kid, k.status) for k in existing.all()) == sorted((k.kid, k.status) for k in keys)
        if same:
            return existing, False
        raise BackupError(f"{key_dir} already holds a different key ring; import into an empty key "
                          "directory (ISSUER_KEY_DIR) or move the existing ring away first")
    stray = sorted(p.name for p in key_dir.glob("*.pem")) if key_dir.is_dir() else []
    if stray:
        raise BackupError(f"{key_dir} has key files but no {KEYRING_FILE} ({', '.join(stray)}); "
                          "import into an empty key directory")
    _make_key_dir(key_dir)
    withdrawn_records = [dict(w) for w in backup.index.get("withdrawn", []) if isinstance(w, dict)]
    for kid in sorted(gone - {w.get("kid") for w in withdrawn_records}):
        match = next((k for k in backup.keys if k.kid == kid), None)
        if match is not None:
            withdrawn_records.append({"kid": kid, "algorithm": match.algorithm, "withdrawn": _now(),
                                      "reason": "withdrawn on this instance before the import"})
    ring = KeyRing(key_dir, passphrase, [], {}, withdrawn_records)
    try:
        for key in keys:
            ring._write_key(key)
        ring._save()
    except BaseException:
        for name in ring._files.values():
            (key_dir / name).unlink(missing_ok=True)
        raise
    return ring, True


# -- the key directory at start-up -----------------------------------------------------------------------

class KeyStorageError(RuntimeError):
    """The key directory is not fit for production: the message says why and what to run."""


def _make_key_dir(key_dir: Path) -> None:
    """Create the key directory owner-only; an existing one loses group and world write access."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(key_dir.stat().st_mode)
    if mode & 0o022 and key_dir.stat().st_uid == os.geteuid():
        os.chmod(key_dir, mode & ~0o022)


def _key_files(key_dir: Path) -> list[Path]:
    """keyring.json and every private key file (temporary files are dot-files, never listed)."""
    return sorted(p for p in key_dir.iterdir()
                  if p.is_file() and not p.name.startswith(".") and (p.suffix == ".pem" or p.name == KEYRING_FILE))


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def permission_problems(key_dir: Path) -> list[str]:
    """What is wrong with the key directory's permissions and owners, each with the exact command that
    fixes it; empty when all is well."""
    key_dir = Path(key_dir)
    if not key_dir.is_dir():
        return []
    me = os.geteuid()
    problems: list[str] = []
    info = key_dir.stat()
    if info.st_uid != me:
        problems.append(f"the key directory {key_dir} belongs to {_user(info.st_uid)}, not to {_user(me)} "
                        f"who runs the issuer: run `chown {shlex.quote(_user(me))} {shlex.quote(str(key_dir))}`")
    if stat.S_IMODE(info.st_mode) & 0o022:
        problems.append(f"the key directory {key_dir} can be written by other users "
                        f"(mode {stat.S_IMODE(info.st_mode):o}): run `chmod go-w {shlex.quote(str(key_dir))}`")
    files = _key_files(key_dir)
    foreign = [p for p in files if p.stat().st_uid != me]
    if foreign:
        problems.append(f"key files belong to another user ({', '.join(p.name for p in foreign)}): run "
                        f"`chown {shlex.quote(_user(me))} {' '.join(shlex.quote(str(p)) for p in foreign)}`")
    exposed = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o077]
    if exposed:
        problems.append(f"key files can be read or written by other users ({', '.join(p.name for p in exposed)}): "
                        f"run `chmod 600 {' '.join(shlex.quote(str(p)) for p in exposed)}`")
    return problems


def plaintext_key_files(key_dir: Path) -> list[Path]:
    """Private key files stored without encryption."""
    key_dir = Path(key_dir)
    if not key_dir.is_dir():
        return []
    return [p for p in _key_files(key_dir) if p.suffix == ".pem" and not is_encrypted_pem(p.read_bytes())]


def check_key_storage(key_dir: Path, *, development: bool) -> list[str]:
    """The start-up check of the service. In production it raises KeyStorageError when a private key is
    stored unencrypted or the permissions let other users at the keys; in development it returns those
    permission problems as warnings (plaintext keys are what development instances use)."""
    key_dir = Path(key_dir)
    problems = permission_problems(key_dir)
    if development:
        return problems
    if not (key_dir / KEYRING_FILE).exists():
        raise KeyStorageError(f"no signing keys in {key_dir} (ISSUER_KEY_DIR): run `issuer init` with "
                              "ISSUER_KEY_PASSPHRASE set, or `issuer keys import BACKUP`")
    plain = plaintext_key_files(key_dir)
    if plain:
        problems.insert(0, f"private key files in {key_dir} are not encrypted ({', '.join(p.name for p in plain)}): "
                           "set ISSUER_KEY_PASSPHRASE and run `issuer keys encrypt`; if this is a development "
                           "instance, set ISSUER_DEVELOPMENT=1 instead")
    if problems:
        raise KeyStorageError("the issuer will not start in production mode:\n  - " + "\n  - ".join(problems))
    return []
