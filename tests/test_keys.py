"""The key ring: keys on disk stay private and encrypted, survive reloads and rotations, and every key ever
used to sign stays published so old badges keep verifying."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from issuer import keys as keys_module
from issuer import multikey
from issuer.keys import (
    KEYRING_FILE,
    KeyLoadError,
    KeyRing,
    SigningKey,
    did_document,
    jwk_thumbprint,
    jwks,
    public_key_from_jwk,
)

PASS = "correct horse battery staple"
DID = "did:web:badges.example.edu"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.create(tmp_path / "keys", PASS)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_makes_one_current_key_per_default_algorithm(ring: KeyRing) -> None:
    assert sorted(k.algorithm for k in ring.all()) == ["ES256", "Ed25519"]
    assert all(k.status == "current" for k in ring.all())
    assert isinstance(ring.current("Ed25519").private_key, ed25519.Ed25519PrivateKey)
    assert isinstance(ring.current("ES256").private_key, ec.EllipticCurvePrivateKey)


def test_key_files_and_keyring_are_owner_only(ring: KeyRing) -> None:
    files = sorted(ring.key_dir.iterdir())
    assert [p.name for p in files if p.suffix == ".pem"]  # there are key files to check
    for path in files:
        assert _mode(path) == 0o600, path.name


def test_files_are_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ring = KeyRing.create(tmp_path / "keys", PASS, algorithms=("Ed25519",))
    finally:
        os.umask(old)
    assert {_mode(p) for p in ring.key_dir.iterdir()} == {0o600}


def test_passphrase_encrypts_pem_files(ring: KeyRing) -> None:
    for path in ring.key_dir.glob("*.pem"):
        text = path.read_text()
        assert "BEGIN ENCRYPTED PRIVATE KEY" in text
        assert "BEGIN PRIVATE KEY" not in text


def test_no_passphrase_writes_plain_pkcs8(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys", None)
    for path in ring.key_dir.glob("*.pem"):
        assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert {k.kid for k in KeyRing.load(ring.key_dir, None).all()} == {k.kid for k in ring.all()}


def test_empty_passphrase_is_refused_rather_than_silently_unencrypted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        KeyRing.create(tmp_path / "keys", "")


def test_keyring_json_records_kid_algorithm_file_created_status(ring: KeyRing) -> None:
    index = json.loads((ring.key_dir / KEYRING_FILE).read_text())
    entry = next(e for e in index["keys"] if e["algorithm"] == "ES256")
    assert entry["kid"] == ring.current("ES256").kid
    assert (ring.key_dir / entry["file"]).is_file()
    assert entry["status"] == "current" and entry["created"].endswith("Z")


def test_load_restores_the_same_keys(ring: KeyRing) -> None:
    loaded = KeyRing.load(ring.key_dir, PASS)
    assert [(k.kid, k.algorithm, k.created, k.status) for k in loaded.all()] == \
        [(k.kid, k.algorithm, k.created, k.status) for k in ring.all()]
    message = b"same key, same signature check"
    signature = loaded.current("Ed25519").private_key.sign(message)
    ring.current("Ed25519").public_key.verify(signature, message)  # raises if the key differs


def test_load_with_wrong_passphrase_fails_clearly(ring: KeyRing) -> None:
    with pytest.raises(KeyLoadError, match="wrong passphrase") as info:
        KeyRing.load(ring.key_dir, "not the passphrase")
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("cannot decrypt key file")  # a sentence, not a repr()


def test_load_without_passphrase_for_encrypted_keys_says_so(ring: KeyRing) -> None:
    with pytest.raises(KeyLoadError, match="encrypted but no passphrase"):
        KeyRing.load(ring.key_dir, None)


def test_load_with_passphrase_for_plain_keys_is_flagged(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys", None)
    with pytest.raises(KeyLoadError, match="not encrypted"):
        KeyRing.load(ring.key_dir, PASS)


def test_load_of_missing_keyring_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="no key ring at"):
        KeyRing.load(tmp_path / "nowhere", PASS)


def test_load_detects_a_swapped_key_file(ring: KeyRing) -> None:
    index_path = ring.key_dir / KEYRING_FILE
    index = json.loads(index_path.read_text())
    files = [e["file"] for e in index["keys"]]
    index["keys"][0]["file"], index["keys"][1]["file"] = files[1], files[0]
    index_path.write_text(json.dumps(index))
    with pytest.raises(KeyLoadError, match="does not hold key"):
        KeyRing.load(ring.key_dir, PASS)


def test_load_refuses_file_names_outside_the_key_directory(ring: KeyRing) -> None:
    index_path = ring.key_dir / KEYRING_FILE
    index = json.loads(index_path.read_text())
    index["keys"][0]["file"] = "../elsewhere.pem"
    index_path.write_text(json.dumps(index))
    with pytest.raises(KeyLoadError, match="outside the key directory"):
        KeyRing.load(ring.key_dir, PASS)


def test_create_refuses_to_overwrite_an_existing_ring(ring: KeyRing) -> None:
    with pytest.raises(FileExistsError):
        KeyRing.create(ring.key_dir, PASS)


def test_rotate_retires_the_old_key_and_persists_both(ring: KeyRing) -> None:
    old = ring.current("ES256")
    new = ring.rotate("ES256")
    assert new.kid != old.kid
    assert ring.current("ES256") is new
    assert old.status == "retired" and ring.find(old.kid) is old
    loaded = KeyRing.load(ring.key_dir, PASS)
    assert loaded.current("ES256").kid == new.kid
    assert loaded.find(old.kid).status == "retired"
    assert loaded.find(old.kid).private_key is not None
    assert _mode(ring.key_dir / f"es256-{new.kid}.pem") == 0o600


def test_rotated_key_stays_in_did_document_and_jwks(ring: KeyRing) -> None:
    old_ed, old_ec = ring.current("Ed25519"), ring.current("ES256")
    ring.rotate("Ed25519")
    ring.rotate("ES256")
    doc = did_document(DID, ring.all())
    ids = [m["id"] for m in doc["verificationMethod"]]
    assert f"{DID}#{old_ed.kid}" in ids and f"{DID}#{old_ec.kid}" in ids
    assert doc["assertionMethod"] == ids and len(ids) == 4
    assert {old_ed.kid, old_ec.kid} <= {k["kid"] for k in jwks(ring.all())["keys"]}


def test_failed_keyring_write_leaves_the_previous_ring_intact(ring: KeyRing,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = (ring.key_dir / KEYRING_FILE).read_bytes()
    old = ring.current("ES256")
    real_replace = os.replace

    def crash_on_keyring(src, dst):  # the key file lands, then the "crash" hits the index rename
        if Path(dst).name == KEYRING_FILE:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(keys_module.os, "replace", crash_on_keyring)
    with pytest.raises(OSError, match="simulated crash"):
        ring.rotate("ES256")
    monkeypatch.undo()
    assert (ring.key_dir / KEYRING_FILE).read_bytes() == before
    assert not [p for p in ring.key_dir.iterdir() if p.name.endswith(".tmp")]
    assert ring.current("ES256") is old and old.status == "current"
    assert len(list(ring.key_dir.glob("*.pem"))) == 2  # the orphaned new key file was removed
    assert KeyRing.load(ring.key_dir, PASS).current("ES256").kid == old.kid


def test_add_algorithm_rs256_gives_a_persistent_rsa_key(ring: KeyRing) -> None:
    key = ring.add_algorithm("RS256", rsa_bits=2048)
    assert isinstance(key.private_key, rsa.RSAPrivateKey) and key.public_key.key_size == 2048
    assert KeyRing.load(ring.key_dir, PASS).current("RS256").kid == key.kid
    with pytest.raises(ValueError, match="already has"):
        ring.add_algorithm("RS256", rsa_bits=2048)


def test_rsa_sizes_other_than_2048_or_3072_are_refused(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="2048"):
        ring.add_algorithm("RS256", rsa_bits=1024)


def test_ed25519_kid_is_its_multikey_value(ring: KeyRing) -> None:
    key = ring.current("Ed25519")
    assert key.kid.startswith("z6Mk") and key.kid == key.public_multibase()
    decoded = multikey.ed25519_from_multibase(key.kid)
    assert multikey.ed25519_raw(decoded) == multikey.ed25519_raw(key.public_key)


def test_p256_kid_is_the_rfc7638_thumbprint_and_multibase_is_available(ring: KeyRing) -> None:
    key = ring.current("ES256")
    assert key.kid == jwk_thumbprint(key.public_jwk())
    assert key.public_multibase().startswith("zDn")  # compressed P-256 Multikey


def test_thumbprint_matches_the_rfc7638_example() -> None:
    # RFC 7638 section 3.1 example key and its published thumbprint.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
             "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvz"
             "qY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6W"
             "eZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    expected = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert jwk_thumbprint(jwk) == expected
    assert SigningKey.from_public_key(public_key_from_jwk(jwk)).kid == expected


@pytest.mark.parametrize("algorithm, members", [
    ("Ed25519", {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"}),
    ("ES256", {"kty": "EC", "crv": "P-256", "alg": "ES256"}),
    ("RS256", {"kty": "RSA", "alg": "RS256", "e": "AQAB"}),
])
def test_public_jwk_has_kid_alg_use_and_no_private_part(algorithm: str, members: dict[str, str]) -> None:
    key = SigningKey.generate(algorithm, rsa_bits=2048)
    jwk = key.public_jwk()
    assert members.items() <= jwk.items()
    assert jwk["kid"] == key.kid and jwk["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
    assert SigningKey.from_public_key(public_key_from_jwk(jwk)).kid == key.kid  # round-trips


def test_rsa_has_no_multikey_form() -> None:
    with pytest.raises(ValueError, match="RSA"):
        SigningKey.generate("RS256", rsa_bits=2048).public_multibase()


def test_public_key_from_jwk_refuses_private_material() -> None:
    jwk = SigningKey.generate("ES256").public_jwk() | {"d": "c2VjcmV0"}
    with pytest.raises(ValueError, match="private"):
        public_key_from_jwk(jwk)


def test_did_document_uses_multikey_for_ed25519_and_jsonwebkey_otherwise(ring: KeyRing) -> None:
    ring.add_algorithm("RS256", rsa_bits=2048)
    doc = did_document(DID, ring.all())
    assert doc["@context"] == ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1",
                               "https://w3id.org/security/jwk/v1"]
    assert doc["id"] == DID
    by_type: dict[str, list[dict]] = {}
    for method in doc["verificationMethod"]:
        assert method["controller"] == DID
        by_type.setdefault(method["type"], []).append(method)
    (ed,) = by_type["Multikey"]
    assert ed["id"] == f"{DID}#{ring.current('Ed25519').kid}"
    assert ed["publicKeyMultibase"] == ring.current("Ed25519").kid
    assert {m["publicKeyJwk"]["kty"] for m in by_type["JsonWebKey"]} == {"EC", "RSA"}
    for method in by_type["JsonWebKey"]:
        assert method["id"] == f"{DID}#{method['publicKeyJwk']['kid']}"
        assert "d" not in method["publicKeyJwk"]


def test_find_accepts_a_bare_kid_or_a_did_url(ring: KeyRing) -> None:
    key = ring.current("ES256")
    assert ring.find(key.kid) is key
    assert ring.find(f"{DID}#{key.kid}") is key
    assert ring.find("unknown") is None


def test_current_for_an_absent_algorithm_is_a_key_error(ring: KeyRing) -> None:
    with pytest.raises(KeyError, match="RS256"):
        ring.current("RS256")
