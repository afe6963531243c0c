"""docs/keys.md, followed step by step on production instances (no TESTING, no ISSUER_DEVELOPMENT):
issue badges, rotate, old badges still verify, export, import into a fresh instance, a compromise of the
current key, withdraw it, its badges (and a forgery made with it) stop verifying, re-issue, revoke.

Runs on SQLite, or on PostgreSQL when ISSUER_TEST_DATABASE_URL is set (like every app test)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tests.conftest import _database_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = PROJECT_ROOT / "docs" / "keys.md"
BASE_URL = "http://127.0.0.1:5000"


class Instance:
    """One installation: its own key directory and passphrase; a database of its own unless given one.
    `cli` is the `issuer` command; `service()` is what gunicorn starts (with the start-up key check)."""

    def __init__(self, home: Path, passphrase: str, database: tuple | None = None) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.owns_database = database is None
        self.url, self.cleanup = database or _database_url(home)
        self.config = {
            "ISSUER_DATABASE_URL": self.url, "ISSUER_KEY_DIR": str(home / "keys"), "ISSUER_BASE_URL": BASE_URL,
            "ISSUER_KEY_PASSPHRASE": passphrase, "ISSUER_DEVELOPMENT": False, "ISSUER_MAIL_THREAD": False,
            "ISSUER_OUTBOX_DIR": str(home / "outbox"), "ISSUER_RATE_LIMITS": "off",
        }
        self.apps: list = []
        self.command_app = self._make(command_line=True)

    def _make(self, **kwargs):
        from issuer import create_app

        app = create_app(dict(self.config), **kwargs)
        app.instance_path = str(self.home / "instance")
        self.apps.append(app)
        return app

    def cli(self, *args: str):
        from issuer.identity import reset_context

        reset_context(self.command_app)  # every `issuer` command is a new process
        return self.command_app.test_cli_runner().invoke(args=list(args))

    def service(self):
        """A (re)started service: loads and checks the keys as gunicorn's create_app() does."""
        return self._make().test_client()

    def token(self, scopes: str) -> str:
        from issuer.db import get_session
        from issuer.tokens import create_token

        with self.command_app.app_context():
            session = get_session()
            _, secret = create_token(session, "runbook", scopes)
            session.commit()
        return secret

    def audit_actions(self) -> list[str]:
        from issuer.db import get_session
        from issuer.models import AuditEntry

        with self.command_app.app_context():
            return list(get_session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)))

    def close(self) -> None:
        for app in self.apps:
            app.extensions["issuer.engine"].dispose()
        if self.owns_database and self.cleanup:
            admin, schema = self.cleanup
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


@pytest.fixture
def instances(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("ISSUER_") and n != "ISSUER_TEST_DATABASE_URL"]:
        monkeypatch.delenv(name)
    made: list[Instance] = []

    def make(name: str, passphrase: str, database: tuple | None = None) -> Instance:
        instance = Instance(tmp_path / name, passphrase, database)
        made.append(instance)
        return instance

    yield make
    for instance in reversed(made):  # an instance sharing another's database closes first
        instance.close()


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def issue(client, token: str, email: str, code: str) -> dict:
    answer = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                         json={"achievement": code, "recipient": {"email": email, "name": "Chan Tai Man"}})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    return {"id": body["id"], "text": client.get(f"/credentials/{body['id']}.json").data}


def verified(client, document: bytes) -> bool:
    result = client.post("/api/v1/verify", data=document, content_type="application/json").get_json()
    return result["verified"] is True


def signer(document: bytes) -> str:
    return json.loads(document)["proof"]["verificationMethod"].rsplit("#", 1)[-1]


def published_kids(client) -> set[str]:
    return {m["id"].rsplit("#", 1)[-1] for m in client.get("/.well-known/did.json").get_json()["verificationMethod"]}


def test_the_runbook_commands_are_the_ones_this_test_runs() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for command in ("issuer keys rotate --algorithm", "issuer keys export --out", "issuer keys import FILE",
                    "issuer init", "issuer keys withdraw KID --reason", "issuer keys reissue --signed-by KID",
                    "issuer revoke ID --reason", "ISSUER_DEVELOPMENT=1", "issuer keys encrypt"):
        assert command in runbook, command


def test_rotation_backup_restore_and_compromise_as_the_runbook_says(instances, tmp_path) -> None:
    from issuer import proofs

    # Setting up production: encrypted keys, then the service starts (it checks them first).
    a = instances("school", "instance A passphrase")
    ok(a.cli("init", "--no-token"))
    keys = Path(a.config["ISSUER_KEY_DIR"])
    assert all(b"ENCRYPTED PRIVATE KEY" in p.read_bytes() for p in keys.glob("*.pem"))
    service = a.service()
    token = a.token("issue revoke")
    code = json.loads(service.get("/api/v1/achievements").data)
    code = (code.get("achievements") if isinstance(code, dict) else code)[0]["code"]
    first = issue(service, token, "one@example.com", code)
    second = issue(service, token, "two@example.com", code)
    k1 = signer(first["text"])

    # Routine rotation: a new current key; the old one stays published, so old badges still verify.
    ok(a.cli("keys", "rotate"))
    service = a.service()  # restart after deploying the keys
    k2 = json.loads(service.get("/.well-known/did.json").data)["verificationMethod"][-1]["id"].rsplit("#", 1)[-1]
    assert k2 != k1 and {k1, k2} <= published_kids(service)
    assert verified(service, first["text"]) and verified(service, second["text"])
    third = issue(service, token, "three@example.com", code)
    assert signer(third["text"]) == k2

    # Backup: one encrypted file, 0600, behind a passphrase of its own.
    passfile = tmp_path / "backup-passphrase"
    passfile.write_text("the backup passphrase, kept offline\n")
    backup = tmp_path / "issuer-keys.backup"
    ok(a.cli("keys", "export", "--out", str(backup), "--passphrase-file", str(passfile)))
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in backup.read_bytes()
    refused = a.cli("keys", "export", "--out", str(backup), "--passphrase-file", str(passfile))
    assert refused.exit_code != 0 and "already exists" in refused.output

    # Restore into a fresh instance with a passphrase of its own; a wrong backup passphrase writes nothing.
    b = instances("new-server", "instance B passphrase")
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the backup passphrase\n")
    failed = b.cli("keys", "import", str(backup), "--passphrase-file", str(wrong))
    assert failed.exit_code != 0
    assert "wrong passphrase" in failed.output and "nothing was written" in failed.output
    b_keys = Path(b.config["ISSUER_KEY_DIR"])
    assert not b_keys.exists() or not list(b_keys.iterdir())
    assert "imported 4 keys" in ok(b.cli("keys", "import", str(backup), "--passphrase-file", str(passfile)))
    assert "already holds this key ring" in ok(b.cli("keys", "import", str(backup), "--passphrase-file",
                                                     str(passfile)))
    ok(b.cli("init", "--no-token"))
    b_service = b.service()
    assert b_service.get("/.well-known/did.json").get_json() == service.get("/.well-known/did.json").get_json()
    b_badge = issue(b_service, b.token("issue"), "four@example.com", code)
    assert signer(b_badge["text"]) == k2 and verified(b_service, b_badge["text"])
    assert all(b"ENCRYPTED PRIVATE KEY" in p.read_bytes() for p in b_keys.glob("*.pem"))
    # ... the keys are encrypted with B's passphrase, not A's: B's service refuses A's passphrase.
    from issuer import create_app
    from issuer.keys import KeyStorageError

    with pytest.raises(KeyStorageError, match="wrong passphrase"):
        create_app({**b.config, "ISSUER_KEY_PASSPHRASE": "instance A passphrase"})

    # A compromise of the current Ed25519 key k2: whoever holds it can sign "our" badges.
    from issuer.keys import KeyRing

    stolen = KeyRing.load(keys, "instance A passphrase").find(k2).private_key
    unsigned = json.loads(third["text"])
    del unsigned["proof"]
    unsigned["name"] = "Forged " + unsigned["name"]
    forged = proofs.create_eddsa_rdfc_2022(unsigned, stolen, f"{json.loads(third['text'])['issuer']['id']}#{k2}",
                                           created="2026-11-25T00:00:00Z")
    forged_text = json.dumps(forged).encode("utf-8")
    assert verified(service, forged_text)  # the danger
    during = issue(service, token, "unexpected@example.com", code)  # issued during the exposure

    # 1. Rotate the compromised key (withdrawing the current key is refused and says so).
    refused = a.cli("keys", "withdraw", k2, "--reason", "key file found on a stolen laptop", "--yes")
    assert refused.exit_code != 0 and "issuer keys rotate --algorithm Ed25519" in refused.output
    ok(a.cli("keys", "rotate", "--algorithm", "Ed25519"))

    # 2. Withdraw it: out of did.json and jwks.json, its private file deleted.
    out = ok(a.cli("keys", "withdraw", k2, "--reason", "key file found on a stolen laptop", "--yes"))
    assert "signed by it: 2 badges" in out and f"issuer keys reissue --signed-by {k2}" in out
    service = a.service()  # restart every instance
    assert k2 not in published_kids(service) and k1 in published_kids(service)
    assert k2 not in {k["kid"] for k in service.get("/.well-known/jwks.json").get_json()["keys"]}
    assert not list(keys.glob(f"*{k2}*.pem"))
    assert "withdrawn Ed25519" in ok(a.cli("keys", "list"))
    # ... nothing k2 signed verifies any more, the forgery included; k1's badges are unaffected.
    assert not verified(service, third["text"])
    assert not verified(service, forged_text)
    assert verified(service, first["text"]) and verified(service, second["text"])

    # 3. Re-issue what it signed: same id and URL, a proof by the new current key.
    assert "re-issued 2" in ok(a.cli("keys", "reissue", "--signed-by", k2))
    reissued = service.get(f"/credentials/{third['id']}.json").data
    k3 = signer(reissued)
    assert k3 not in (k1, k2) and verified(service, reissued)
    assert json.loads(reissued)["id"] == json.loads(third["text"])["id"]
    assert not verified(service, third["text"])  # the copy downloaded before stays dead

    # 4. Revoke what must be revoked (the badge issued during the exposure).
    ok(a.cli("revoke", during["id"], "--reason", "issued with the stolen key's access", "--category", "other"))
    assert not verified(service, service.get(f"/credentials/{during['id']}.json").data)

    # 6. A backup from before the compromise never brings k2 back: it was the backup's current key.
    again = instances("restore-after-compromise", "instance A passphrase", database=(a.url, a.cleanup))
    refused = again.cli("keys", "import", str(backup), "--passphrase-file", str(passfile))
    assert refused.exit_code != 0 and "withdrawn as compromised" in refused.output
    assert not (Path(again.config["ISSUER_KEY_DIR"]) / "keyring.json").exists()
    new_backup = tmp_path / "issuer-keys-after.backup"
    ok(a.cli("keys", "export", "--out", str(new_backup), "--passphrase-file", str(passfile)))
    ok(again.cli("keys", "import", str(new_backup), "--passphrase-file", str(passfile)))
    assert k2 not in published_kids(again.service())

    # Every step is in the audit log.
    actions = a.audit_actions()
    for action in ("key.rotate", "key.export", "key.withdraw", "credential.reissue", "credential.revoke"):
        assert action in actions, action
    assert "key.import" in b.audit_actions()
