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


# --- production mode: the start-up check of the key directory (issue #9 item 5) ------------------------

import shlex  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from issuer.keys import (  # noqa: E402
    BackupError,
    KeyStorageError,
    check_key_storage,
    import_backup,
    permission_problems,
    plaintext_key_files,
    read_backup,
)

BACKUP_PASS = "a backup passphrase for tests"


def _commands(message: str) -> list[str]:
    """The shell commands a message tells the operator to run (between backticks)."""
    return [part for i, part in enumerate(message.split("`")) if i % 2 == 1]


def test_production_refuses_plaintext_keys_naming_the_setting_and_the_fix(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys", None)
    assert len(plaintext_key_files(ring.key_dir)) == 2
    with pytest.raises(KeyStorageError) as refused:
        check_key_storage(ring.key_dir, development=False)
    message = str(refused.value)
    assert "not encrypted" in message and "ISSUER_KEY_PASSPHRASE" in message
    assert "issuer keys encrypt" in message and "ISSUER_DEVELOPMENT=1" in message
    assert check_key_storage(ring.key_dir, development=True) == []  # a development instance may


def test_production_accepts_encrypted_owner_only_keys(ring: KeyRing) -> None:
    assert plaintext_key_files(ring.key_dir) == []
    assert check_key_storage(ring.key_dir, development=False) == []


def test_production_refuses_a_missing_key_ring(tmp_path: Path) -> None:
    with pytest.raises(KeyStorageError, match="issuer init"):
        check_key_storage(tmp_path / "nothing-here", development=False)


def test_loose_permissions_are_refused_in_production_with_the_exact_chmod(ring: KeyRing) -> None:
    pem = next(ring.key_dir.glob("*.pem"))
    os.chmod(ring.key_dir, 0o777)
    os.chmod(pem, 0o644)
    with pytest.raises(KeyStorageError) as refused:
        check_key_storage(ring.key_dir, development=False)
    message = str(refused.value)
    assert "can be written by other users" in message and "can be read or written by other users" in message
    commands = _commands(message)
    assert f"chmod go-w {shlex.quote(str(ring.key_dir))}" in commands
    assert f"chmod 600 {shlex.quote(str(pem))}" in commands
    for command in commands:  # the commands given are exactly what fixes it
        subprocess.run(shlex.split(command), check=True)
    assert permission_problems(ring.key_dir) == []
    assert check_key_storage(ring.key_dir, development=False) == []


def test_loose_permissions_are_only_warned_about_in_development(ring: KeyRing) -> None:
    os.chmod(ring.key_dir / KEYRING_FILE, 0o640)
    warnings = check_key_storage(ring.key_dir, development=True)
    assert len(warnings) == 1 and f"chmod 600 {ring.key_dir / KEYRING_FILE}" in warnings[0]


def test_key_files_of_another_user_are_refused_with_the_chown(ring: KeyRing,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the issuer runs as another user: every file then belongs to "someone else".
    monkeypatch.setattr(keys_module.os, "geteuid", lambda: os.getuid() + 4242)
    problems = permission_problems(ring.key_dir)
    assert any("key directory" in p and "`chown " in p for p in problems)
    assert any("key files belong to another user" in p and "`chown " in p for p in problems)
    with pytest.raises(KeyStorageError, match="chown"):
        check_key_storage(ring.key_dir, development=False)


def test_creating_keys_in_a_group_writable_directory_tightens_it(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    os.chmod(key_dir, 0o775)
    KeyRing.create(key_dir, PASS, algorithms=("Ed25519",))
    assert _mode(key_dir) & 0o022 == 0
    assert permission_problems(key_dir) == []


def _service_config(tmp_path: Path, **extra) -> dict:
    return {"ISSUER_DATABASE_URL": f"sqlite:///{tmp_path / 'i.sqlite'}", "ISSUER_KEY_DIR": str(tmp_path / "keys"),
            "ISSUER_KEY_PASSPHRASE": None, "ISSUER_DEVELOPMENT": False, **extra}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ISSUER_DEVELOPMENT", "ISSUER_KEY_PASSPHRASE", "ISSUER_KEY_DIR", "ISSUER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_service_refuses_to_start_with_plaintext_keys_unless_development(tmp_path: Path, clean_env) -> None:
    from issuer import create_app

    KeyRing.create(tmp_path / "keys", None)
    with pytest.raises(KeyStorageError, match="ISSUER_DEVELOPMENT=1"):
        create_app(_service_config(tmp_path))
    app = create_app(_service_config(tmp_path, ISSUER_DEVELOPMENT=True))
    assert app.config["ISSUER_DEVELOPMENT"] is True
    app.extensions["issuer.engine"].dispose()
    testing = create_app(_service_config(tmp_path, TESTING=True))  # TESTING implies development
    assert testing.config["ISSUER_DEVELOPMENT"] is True
    testing.extensions["issuer.engine"].dispose()


def test_the_service_starts_with_encrypted_keys_and_refuses_a_wrong_passphrase(tmp_path: Path, clean_env) -> None:
    from issuer import create_app

    KeyRing.create(tmp_path / "keys", PASS)
    app = create_app(_service_config(tmp_path, ISSUER_KEY_PASSPHRASE=PASS))
    assert "issuer.context" in app.extensions  # the ring was decrypted at start
    app.extensions["issuer.engine"].dispose()
    with pytest.raises(KeyStorageError, match="wrong passphrase"):
        create_app(_service_config(tmp_path, ISSUER_KEY_PASSPHRASE="not the passphrase"))


def test_development_warns_about_loose_permissions_in_the_log(tmp_path: Path, clean_env,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from issuer import create_app

    KeyRing.create(tmp_path / "keys", None)
    os.chmod(tmp_path / "keys", 0o777)
    app = create_app(_service_config(tmp_path, ISSUER_DEVELOPMENT=True))
    app.extensions["issuer.engine"].dispose()
    assert any("can be written by other users" in r.getMessage() and "chmod go-w" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    with pytest.raises(KeyStorageError, match="chmod go-w"):  # the same in production stops the start
        create_app(_service_config(tmp_path))


def test_issuer_serve_refuses_plaintext_keys_in_production(tmp_path: Path, clean_env) -> None:
    from issuer import create_app

    app = create_app(_service_config(tmp_path), command_line=True)  # what the `issuer` command builds
    init = app.test_cli_runner().invoke(args=["init", "--no-token"])
    assert init.exit_code == 0, init.output
    assert "generated development keys" in init.output and "ISSUER_DEVELOPMENT=1" in init.output
    served = app.test_cli_runner().invoke(args=["serve", "--port", "1"])
    assert served.exit_code != 0
    assert "not encrypted" in served.output and "ISSUER_DEVELOPMENT=1" in served.output
    app.extensions["issuer.engine"].dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_refuses_plaintext_keys_in_production_and_serves_a_development_instance(tmp_path: Path) -> None:
    """The production server itself: `gunicorn 'issuer:create_app()'`, as docs/scaling.md runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update({"ISSUER_DATABASE_URL": f"sqlite:///{tmp_path / 'i.sqlite'}", "ISSUER_KEY_DIR": str(tmp_path / "keys"),
                "ISSUER_OUTBOX_DIR": str(tmp_path / "outbox"), "ISSUER_SECRET_KEY": "test-" + tmp_path.name,
                "ISSUER_RATE_LIMITS": "off"})
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "issuer"), "init", "--no-token"], env=env, check=True, capture_output=True)
    port = _free_port()
    command = [str(bin_dir / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "issuer:create_app()"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "not encrypted" in refused.stderr and "ISSUER_DEVELOPMENT=1" in refused.stderr
    server = subprocess.Popen(command, env={**env, "ISSUER_DEVELOPMENT": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, "gunicorn exited in development mode"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/did.json", timeout=5) as answer:
                    assert answer.status == 200 and json.load(answer)["verificationMethod"]
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer within 90 s"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_encrypt_turns_plaintext_keys_into_encrypted_ones(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys", None)
    ring.rotate("Ed25519")
    before = {k.kid: k.status for k in ring.all()}
    ring.encrypt(PASS)
    assert plaintext_key_files(ring.key_dir) == []
    assert len(list(ring.key_dir.glob("*.pem"))) == 3  # the plaintext files are gone
    loaded = KeyRing.load(ring.key_dir, PASS)
    assert {k.kid: k.status for k in loaded.all()} == before
    assert {_mode(p) for p in ring.key_dir.iterdir()} == {0o600}


# --- backup: export and import ---------------------------------------------------------------------------

def test_export_then_import_restores_every_key_reencrypted_with_the_new_passphrase(ring: KeyRing,
                                                                                  tmp_path: Path) -> None:
    ring.rotate("Ed25519")
    data = ring.export_backup(BACKUP_PASS)
    assert b"PRIVATE KEY" not in data and BACKUP_PASS.encode() not in data
    backup = read_backup(data, BACKUP_PASS)
    restored, written = import_backup(backup, tmp_path / "restored", "the new instance's passphrase")
    assert written
    assert [(k.kid, k.algorithm, k.status, k.created) for k in restored.all()] == \
           [(k.kid, k.algorithm, k.status, k.created) for k in ring.all()]
    loaded = KeyRing.load(tmp_path / "restored", "the new instance's passphrase")
    assert did_document(DID, loaded.all()) == did_document(DID, ring.all())
    message = b"signed before, verified after"
    new_key, old_key = loaded.current("Ed25519"), ring.current("Ed25519")
    old_key.public_key.verify(new_key.private_key.sign(message), message)  # the very same private key
    assert all(b"ENCRYPTED PRIVATE KEY" in p.read_bytes() for p in (tmp_path / "restored").glob("*.pem"))
    assert {_mode(p) for p in (tmp_path / "restored").iterdir()} == {0o600}


def test_a_wrong_backup_passphrase_is_refused_and_nothing_is_written(ring: KeyRing, tmp_path: Path) -> None:
    data = ring.export_backup(BACKUP_PASS)
    with pytest.raises(BackupError, match="wrong passphrase"):
        read_backup(data, "not the backup passphrase")
    assert not (tmp_path / "restored").exists()


def test_an_altered_backup_is_refused(ring: KeyRing) -> None:
    envelope = json.loads(ring.export_backup(BACKUP_PASS))
    weaker = {**envelope, "kdf": {**envelope["kdf"], "n": 2**14}}  # a lowered work factor is noticed
    with pytest.raises(BackupError, match="wrong passphrase, or the key backup file was altered"):
        read_backup(json.dumps(weaker).encode(), BACKUP_PASS)
    hostile = {**envelope, "kdf": {**envelope["kdf"], "n": 2**30}}  # nor can a file make us burn memory
    with pytest.raises(BackupError, match="out of bounds"):
        read_backup(json.dumps(hostile).encode(), BACKUP_PASS)
    with pytest.raises(BackupError, match="not a key backup"):
        read_backup(b"-----BEGIN PRIVATE KEY-----", BACKUP_PASS)


def test_a_short_backup_passphrase_is_refused(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="at least 12"):
        ring.export_backup("short")


def test_import_refuses_a_different_ring_and_accepts_the_same_one(ring: KeyRing, tmp_path: Path) -> None:
    backup = read_backup(ring.export_backup(BACKUP_PASS), BACKUP_PASS)
    other = KeyRing.create(tmp_path / "other", PASS)
    before = sorted((p.name, p.read_bytes()) for p in other.key_dir.iterdir())
    with pytest.raises(BackupError, match="different key ring"):
        import_backup(backup, other.key_dir, PASS)
    assert sorted((p.name, p.read_bytes()) for p in other.key_dir.iterdir()) == before
    same, written = import_backup(backup, ring.key_dir, PASS)
    assert not written and [k.kid for k in same.all()] == backup.kids()


def test_import_refuses_stray_key_files_without_a_keyring(ring: KeyRing, tmp_path: Path) -> None:
    backup = read_backup(ring.export_backup(BACKUP_PASS), BACKUP_PASS)
    target = tmp_path / "stray"
    target.mkdir()
    (target / "ed25519-left-over.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(BackupError, match="no keyring.json"):
        import_backup(backup, target, PASS)
    assert sorted(p.name for p in target.iterdir()) == ["ed25519-left-over.pem"]


# --- withdrawing a compromised key ----------------------------------------------------------------------

def test_withdraw_refuses_the_current_key(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="rotate it first"):
        ring.withdraw(ring.current("Ed25519").kid, reason="test")


def test_a_withdrawn_key_leaves_the_published_documents_and_the_disk(ring: KeyRing) -> None:
    old = ring.current("Ed25519")
    ring.rotate("Ed25519")
    old_file = ring.key_dir / f"ed25519-{old.kid}.pem"
    assert old_file.exists()
    ring.withdraw(f"{DID}#{old.kid}", reason="found in a leaked backup")
    assert not old_file.exists()
    assert f"{DID}#{old.kid}" not in [m["id"] for m in did_document(DID, ring.all())["verificationMethod"]]
    assert old.kid not in [k["kid"] for k in jwks(ring.all())["keys"]]
    loaded = KeyRing.load(ring.key_dir, PASS)
    assert loaded.find(old.kid) is None
    assert [w["kid"] for w in loaded.withdrawn()] == [old.kid]
    assert loaded.withdrawn()[0]["reason"] == "found in a leaked backup"


def test_an_old_backup_never_brings_a_withdrawn_key_back(ring: KeyRing, tmp_path: Path) -> None:
    old = ring.current("Ed25519")
    ring.rotate("Ed25519")
    backup = read_backup(ring.export_backup(BACKUP_PASS), BACKUP_PASS)  # taken before the compromise
    restored, _ = import_backup(backup, tmp_path / "restored", PASS, withdrawn={old.kid})
    assert restored.find(old.kid) is None and restored.current("Ed25519").kid == ring.current("Ed25519").kid
    assert [w["kid"] for w in KeyRing.load(tmp_path / "restored", PASS).withdrawn()] == [old.kid]
    current = ring.current("Ed25519").kid
    with pytest.raises(BackupError, match="withdrawn as compromised"):
        import_backup(backup, tmp_path / "again", PASS, withdrawn={current})
    assert not (tmp_path / "again" / KEYRING_FILE).exists()


# --- the `issuer keys` commands ---------------------------------------------------------------------------

def test_export_asks_for_the_passphrase_twice_and_import_once(tmp_path: Path, clean_env) -> None:
    from issuer import create_app

    source = create_app(_service_config(tmp_path / "a", ISSUER_KEY_PASSPHRASE=PASS), command_line=True)
    runner = source.test_cli_runner()
    assert runner.invoke(args=["init", "--no-token"]).exit_code == 0
    out = tmp_path / "keys.backup"
    short = runner.invoke(args=["keys", "export", "--out", str(out)], input="short\nshort\n")
    assert short.exit_code != 0 and "at least 12" in short.output and not out.exists()
    mismatch = runner.invoke(args=["keys", "export", "--out", str(out)],
                             input=f"{BACKUP_PASS}\nsomething else\n")
    assert mismatch.exit_code != 0 and not out.exists()
    typed = runner.invoke(args=["keys", "export", "--out", str(out)], input=f"{BACKUP_PASS}\n{BACKUP_PASS}\n")
    assert typed.exit_code == 0, typed.output
    assert BACKUP_PASS not in typed.output and _mode(out) == 0o600

    target = create_app(_service_config(tmp_path / "b", ISSUER_KEY_PASSPHRASE="another passphrase"),
                        command_line=True)
    wrong = target.test_cli_runner().invoke(args=["keys", "import", str(out)], input="not it at all\n")
    assert wrong.exit_code != 0 and "wrong passphrase" in wrong.output and "nothing was written" in wrong.output
    assert not (tmp_path / "b" / "keys" / KEYRING_FILE).exists()
    done = target.test_cli_runner().invoke(args=["keys", "import", str(out)], input=f"{BACKUP_PASS}\n")
    assert done.exit_code == 0, done.output
    assert "encrypted with ISSUER_KEY_PASSPHRASE" in done.output
    assert [k.kid for k in KeyRing.load(tmp_path / "b" / "keys", "another passphrase").all()] == \
           [k.kid for k in KeyRing.load(tmp_path / "a" / "keys", PASS).all()]
    for app in (source, target):
        app.extensions["issuer.engine"].dispose()


def test_keys_encrypt_makes_development_keys_fit_for_production(tmp_path: Path, clean_env) -> None:
    from issuer import create_app

    tool = create_app(_service_config(tmp_path), command_line=True)
    assert tool.test_cli_runner().invoke(args=["init", "--no-token"]).exit_code == 0
    with pytest.raises(KeyStorageError):
        create_app(_service_config(tmp_path))
    unset = tool.test_cli_runner().invoke(args=["keys", "encrypt"])
    assert unset.exit_code != 0 and "set ISSUER_KEY_PASSPHRASE" in unset.output
    tool.config["ISSUER_KEY_PASSPHRASE"] = PASS
    done = tool.test_cli_runner().invoke(args=["keys", "encrypt"])
    assert done.exit_code == 0, done.output
    again = tool.test_cli_runner().invoke(args=["keys", "encrypt"])
    assert again.exit_code != 0 and "already encrypted" in again.output
    service = create_app(_service_config(tmp_path, ISSUER_KEY_PASSPHRASE=PASS))  # now it starts
    assert service.test_client().get("/.well-known/did.json").status_code == 200
    for app in (tool, service):
        app.extensions["issuer.engine"].dispose()
