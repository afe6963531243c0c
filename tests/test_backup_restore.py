"""`issuer backup` then `issuer restore` into a fresh instance with another database (issue #9, item 6):
every credential served byte for byte, every one verifying through the restored instance, the revoked one
still revoked, the audit chain intact; damaged backups and non-empty instances refused before any write."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, inspect, text

from .test_awards import AI_CERTIFICATE, HOLDER_DID, auth, issue_badges

PG = os.environ.get("ISSUER_TEST_DATABASE_URL")
SETTINGS = {"TESTING": True, "ISSUER_BASE_URL": "http://127.0.0.1:5000", "ISSUER_KEY_PASSPHRASE": None}


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


@pytest.fixture
def fresh(tmp_path):
    """Makes new, empty instances (no `issuer init`): a SQLite file, or a new PostgreSQL schema."""
    made = []

    def make(kind: str, name: str):
        from issuer import create_app

        folder = tmp_path / name
        if kind == "sqlite":
            url, cleanup = f"sqlite:///{folder / 'issuer.sqlite'}", None
        else:
            base = PG.replace("postgresql://", "postgresql+psycopg://", 1)
            schema = f"t_{uuid.uuid4().hex[:12]}"
            admin = create_engine(base)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url, cleanup = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}", (admin, schema)
        app = create_app({**SETTINGS, "ISSUER_DATABASE_URL": url, "ISSUER_KEY_DIR": str(folder / "keys")})
        app.instance_path = str(folder / "instance")
        made.append((app, cleanup))
        return app

    yield make
    for app, cleanup in made:
        app.extensions["issuer.engine"].dispose()
        if cleanup:
            admin, schema = cleanup
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def populate(app) -> dict:
    """Badges (one bound to a DID, so with a VC-JWT), an award built from five of them, one other badge
    revoked; returns the paths to compare and the documents to verify."""
    assert run(app, "init", "--no-token").exit_code == 0
    from issuer.db import get_session
    from issuer.tokens import create_token

    with app.app_context():
        session = get_session()
        _, token = create_token(session, "restore test", "issue revoke")
        session.commit()
    client = app.test_client()
    badges = issue_badges(client, token, AI_CERTIFICATE)
    badges += issue_badges(client, token, [("AI-301", "2025-03-10")], email="holder@example.com", did=HOLDER_DID)
    (revoked,) = issue_badges(client, token, [("WPS-201", "2025-10-10")], email="other@example.com")
    stored = [json.loads(client.get(f"/credentials/{b['id']}.json").data) for b in badges[:5]]
    award = client.post("/api/v1/awards", json={"recipient": {"email": "learner@example.com"}, "credentials": stored})
    assert award.status_code == 201, award.get_json()
    answer = client.post(f"/api/v1/credentials/{revoked['id']}/revoke", headers=auth(token),
                         json={"reason": "issued to the wrong learner", "category": "issued in error"})
    assert answer.status_code == 200, answer.get_json()
    award_path = urlsplit(award.headers["Location"]).path
    paths = [f"/credentials/{b['id']}{suffix}" for b in badges + [revoked] for suffix in (".json", "")]
    paths += [f"/credentials/{badges[-1]['id']}.jwt", award_path, award_path + ".json"]
    lists = {urlsplit(b["credential"]["credentialStatus"]["statusListCredential"]).path for b in badges}
    paths += sorted(lists)  # built and cached now, so the backup holds the signed list as served
    served = {}
    for path in paths:
        response = client.get(path, headers={"Accept": "application/json"})
        assert response.status_code == 200, (path, response.data[:300])
        served[path] = response.data
    return {"served": served, "good": [p for p in served if p.endswith((".json", ".jwt")) and revoked["id"] not in p],
            "revoked": f"/credentials/{revoked['id']}.json"}


def restore_and_compare(source, target, tmp_path):
    expected = populate(source)
    backup = tmp_path / "backup"
    result = run(source, "backup", str(backup))
    assert result.exit_code == 0, result.output
    result = run(target, "restore", str(backup))
    assert result.exit_code == 0, result.output
    assert "restored" in result.output

    client = target.test_client()
    for path, body in expected["served"].items():
        response = client.get(path, headers={"Accept": "application/json"})
        assert response.status_code == 200, path
        assert response.data == body, f"{path} is not served byte for byte after the restore"
    for path in expected["good"]:
        data = expected["served"][path]
        kind = "text/plain" if path.endswith(".jwt") else "application/json"
        report = client.post("/api/v1/verify", data=data, content_type=kind).get_json()
        assert report["verified"] is True, (path, report)
    report = client.post("/api/v1/verify", data=expected["served"][expected["revoked"]],
                         content_type="application/json").get_json()
    assert report["verified"] is False and any("revoked" in e for e in report["errors"]), report

    audit = run(target, "audit", "verify")
    assert audit.exit_code == 0 and "chain intact" in audit.output, audit.output
    assert run(source, "audit", "verify").output.split(";")[1] == audit.output.split(";")[1]  # same head

    # The restored instance carries on: new badges get fresh ids and status indexes, chained after the rest.
    from issuer.db import get_session
    from issuer.tokens import create_token

    with target.app_context():
        session = get_session()
        _, token = create_token(session, "after restore", "issue")
        session.commit()
    issue_badges(client, token, [("AI-302", "2025-06-10")], email="new@example.com")
    assert run(target, "audit", "verify").exit_code == 0


def source_kind() -> str:
    return "postgresql" if PG else "sqlite"


def test_backup_restores_into_a_fresh_instance_byte_for_byte(fresh, tmp_path):
    kind = source_kind()
    restore_and_compare(fresh(kind, "source"), fresh(kind, "target"), tmp_path)


@pytest.mark.skipif(not PG, reason="needs PostgreSQL (ISSUER_TEST_DATABASE_URL) for the other database kind")
@pytest.mark.parametrize("source,target", [("sqlite", "postgresql"), ("postgresql", "sqlite")])
def test_backup_restores_across_database_kinds(fresh, tmp_path, source, target):
    restore_and_compare(fresh(source, "source"), fresh(target, "target"), tmp_path)


def test_a_damaged_backup_is_refused_before_anything_is_written(fresh, tmp_path):
    source = fresh(source_kind(), "source")
    assert run(source, "init", "--no-token").exit_code == 0
    backup = tmp_path / "backup"
    assert run(source, "backup", str(backup)).exit_code == 0
    dump = backup / "database.json"
    dump.write_bytes(dump.read_bytes().replace(b"AI-101", b"AI-102", 1))
    target = fresh(source_kind(), "target")
    result = run(target, "restore", str(backup))
    assert result.exit_code != 0
    assert "database.json does not match its sha256 in MANIFEST.json" in result.output
    with target.extensions["issuer.engine"].connect() as conn:
        assert inspect(conn).get_table_names() == []
    assert not Path(target.config["ISSUER_KEY_DIR"]).exists()


def test_restore_refuses_an_instance_that_is_not_empty(fresh, tmp_path):
    source = fresh(source_kind(), "source")
    assert run(source, "init", "--no-token").exit_code == 0
    backup = tmp_path / "backup"
    assert run(source, "backup", str(backup)).exit_code == 0
    used = fresh(source_kind(), "used")
    assert run(used, "init", "--no-token").exit_code == 0
    result = run(used, "restore", str(backup))
    assert result.exit_code != 0 and "the database is not empty" in result.output

    keys_only = fresh(source_kind(), "keys-only")
    key_dir = Path(keys_only.config["ISSUER_KEY_DIR"])
    key_dir.mkdir(parents=True)
    (key_dir / "keyring.json").write_text("{}")
    result = run(keys_only, "restore", str(backup))
    assert result.exit_code != 0 and "key folder" in result.output and "not empty" in result.output
    with keys_only.extensions["issuer.engine"].connect() as conn:
        assert inspect(conn).get_table_names() == []
