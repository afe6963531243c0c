"""The `issuer` command: cohorts from CSV, verify, keys, tokens, backup, and the audit trail."""

from __future__ import annotations

import base64
import csv
import json
import os
import stat

import pytest
from sqlalchemy import select

from issuer.db import get_session
from issuer.models import AuditEntry, Credential


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def codes(app):
    from issuer.models import Achievement

    with app.app_context():
        return [row.code for row in get_session().scalars(select(Achievement).order_by(Achievement.code))]


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "achievement", "award_date", "grade"])
        writer.writerows(rows)
    return path


def test_issue_batch_reports_each_row_and_a_rerun_issues_nothing_twice(app, tmp_path):
    a, b = codes(app)[:2]
    path = write_csv(tmp_path / "cohort.csv", [
        ["one@example.com", "陳大文", a, "2025-06-30", "A"],
        ["two@example.com", "Li Siu Ming", a, "2025-06-30", ""],
        ["bad-email", "Nobody", a, "2025-06-30", ""],
        ["three@example.com", "Wong", "NO-SUCH", "2025-06-30", ""],
        ["one@example.com", "陳大文", b, "2025-07-01", "B+"],
        ["one@example.com", "陳大文", a, "2025-06-30", "A"],  # the same award twice in one file
    ])
    first = run(app, "issue-batch", str(path))
    assert first.exit_code == 2, first.output  # errors present
    assert "3 issued, 1 already issued, 2 errors" in first.output
    report = list(csv.DictReader((tmp_path / "cohort.report.csv").open(encoding="utf-8")))
    assert [r["status"] for r in report] == ["issued", "issued", "error", "error", "issued", "already issued"]
    assert "email" in report[2]["detail"] and "NO-SUCH" in report[3]["detail"]

    again = run(app, "issue-batch", str(path))
    assert "0 issued, 4 already issued, 2 errors" in again.output
    with app.app_context():
        assert get_session().query(Credential).count() == 3


def test_issue_batch_refuses_a_file_without_the_needed_columns(app, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("who,what\nx,y\n", encoding="utf-8")
    result = run(app, "issue-batch", str(path))
    assert result.exit_code != 0
    assert "email" in result.output and "achievement" in result.output


def test_issue_then_verify_a_file_and_a_tampered_copy(app, tmp_path):
    code = codes(app)[0]
    result = run(app, "issue", "--achievement", code, "--email", "cli@example.com", "--name", "CLI Learner")
    assert result.exit_code == 0, result.output
    url = result.output.strip().split(": ", 1)[1]
    public_id = url.rsplit("/", 1)[1]
    with app.app_context():
        text = get_session().get(Credential, public_id).document
    good = tmp_path / "badge.json"
    good.write_text(text, encoding="utf-8")
    verified = run(app, "verify", str(good), "--email", "CLI@example.com")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["verified"] is True
    bad = tmp_path / "tampered.json"
    bad.write_text(text.replace("CLI", "CLl") if "CLI" in text else text.replace('"name": "', '"name": "x', 1),
                   encoding="utf-8")
    assert run(app, "verify", str(bad)).exit_code == 1


def test_rotated_keys_stay_published_and_old_badges_keep_verifying(app, client, tmp_path):
    code = codes(app)[0]
    run(app, "issue", "--achievement", code, "--email", "old@example.com")
    with app.app_context():
        old = get_session().scalars(select(Credential)).first().document
    before = {m["id"] for m in client.get("/.well-known/did.json").get_json()["verificationMethod"]}
    rotated = run(app, "keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    listing = run(app, "keys", "list").output
    assert listing.count("retired") == 2 and listing.count("current") == 2
    after = {m["id"] for m in client.get("/.well-known/did.json").get_json()["verificationMethod"]}
    assert before < after
    result = client.post("/api/v1/verify", data=old, content_type="application/json").get_json()
    assert result["verified"] is True, result
    run(app, "issue", "--achievement", code, "--email", "new@example.com")
    with app.app_context():
        docs = [json.loads(r.document) for r in get_session().scalars(select(Credential))]
    methods = {d["proof"]["verificationMethod"] for d in docs}
    assert len(methods) == 2 and methods <= after


def test_key_files_are_private(app):
    key_dir = app.config["ISSUER_KEY_DIR"]
    files = [f for f in os.listdir(key_dir)]
    assert files
    for name in files:
        mode = stat.S_IMODE(os.stat(os.path.join(key_dir, name)).st_mode)
        assert mode & 0o077 == 0, f"{name} is readable by others: {oct(mode)}"


def test_token_create_prints_a_working_token_once_and_checks_scopes(app, client):
    result = run(app, "token", "create", "--scopes", "issue", "--name", "registry")
    assert result.exit_code == 0
    token = result.output.strip()
    assert client.post("/api/v1/credentials", json={}, headers={"Authorization": f"Bearer {token}"}).status_code == 400
    bad = run(app, "token", "create", "--scopes", "everything")
    assert bad.exit_code != 0 and "unknown scope" in bad.output


def test_init_prints_a_token_and_urls_and_keeps_existing_data(app, client):
    code = codes(app)[0]
    run(app, "issue", "--achievement", code, "--email", "keep@example.com")
    result = run(app, "init")
    assert result.exit_code == 0, result.output
    assert "Admin API token" in result.output and "/.well-known/did.json" in result.output
    token = [line for line in result.output.splitlines() if "Admin API token" in line][0].split(": ")[-1]
    ok = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                     json={"achievement": code, "recipient": {"email": "x@example.com"}})
    assert ok.status_code == 201
    with app.app_context():
        assert get_session().query(Credential).count() == 2


def test_backup_copies_database_and_keys(app, tmp_path):
    code = codes(app)[0]
    run(app, "issue", "--achievement", code, "--email", "b@example.com")
    dest = tmp_path / "backup"
    result = run(app, "backup", str(dest))
    assert result.exit_code == 0, result.output
    dump = json.loads((dest / "database.json").read_text(encoding="utf-8"))
    assert len(dump["tables"]["credentials"]) == 1
    assert (dest / "keys" / "keyring.json").exists()
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert "database.json" in manifest["files"]
    assert run(app, "backup", str(dest)).exit_code != 0  # never overwrites a backup


def test_the_audit_log_records_issuing_and_cannot_be_rewritten(app):
    code = codes(app)[0]
    run(app, "issue", "--achievement", code, "--email", "audit@example.com")
    with app.app_context():
        session = get_session()
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "credential.issue")).all()
        assert len(entries) == 1 and entries[0].actor.startswith("cli")
        entries[0].actor = "someone else"
        with pytest.raises(PermissionError):
            session.commit()
        session.rollback()
        session.delete(entries[0])
        with pytest.raises(PermissionError):
            session.commit()


def test_the_suite_runs_on_the_database_it_was_asked_for(app):
    """CI runs the suite twice; this pins that the second run really is on PostgreSQL."""
    wanted = "postgresql" if os.environ.get("ISSUER_TEST_DATABASE_URL") else "sqlite"
    assert app.extensions["issuer.engine"].dialect.name == wanted


def test_switching_to_rs256_adds_a_key_and_issues_rs256_jwts(app, client, issue_token):
    app.config["ISSUER_JWT_ALGORITHM"] = "RS256"
    result = run(app, "init", "--no-token")
    assert result.exit_code == 0 and "added a RS256 key" in result.output, result.output
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    body = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {issue_token}"},
                       json={"achievement": codes(app)[0], "recipient": {"email": "rs@example.com", "did": did}})
    token = body.get_json()["jwt"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "RS256"
    result = client.post("/api/v1/verify", data=token, content_type="text/plain").get_json()
    assert result["verified"] is True, result


def test_with_a_passphrase_keys_are_encrypted_at_rest_and_signing_works(tmp_path):
    from issuer import create_app

    app = create_app({"TESTING": True, "ISSUER_DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite'}",
                      "ISSUER_KEY_DIR": str(tmp_path / "keys"), "ISSUER_KEY_PASSPHRASE": "correct horse battery"})
    assert run(app, "init", "--no-token").exit_code == 0
    pems = list((tmp_path / "keys").glob("*.pem"))
    assert pems and all(b"ENCRYPTED PRIVATE KEY" in p.read_bytes() for p in pems)
    result = run(app, "issue", "--achievement", codes(app)[0], "--email", "p@example.com")
    assert result.exit_code == 0, result.output
    app.config["ISSUER_KEY_PASSPHRASE"] = "wrong"
    from issuer.identity import reset_context

    reset_context(app)
    failed = run(app, "keys", "list")
    assert failed.exit_code != 0
    app.extensions["issuer.engine"].dispose()
