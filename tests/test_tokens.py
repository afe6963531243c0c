"""Who may do what with an API token: scopes per action, token management, revocation, last use."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from issuer import create_app, tokens
from issuer.db import get_session
from issuer.models import ApiToken, AuditEntry

from .test_api import auth, issue


def token_rows(app) -> list[ApiToken]:
    with app.app_context():
        return get_session().scalars(select(ApiToken).order_by(ApiToken.id)).all()


def audit(app, action: str) -> list[AuditEntry]:
    with app.app_context():
        return get_session().scalars(select(AuditEntry).where(AuditEntry.action == action)
                                     .order_by(AuditEntry.id)).all()


# Each guarded action, called with a body that the view refuses *after* the token check, so that an allowed
# token gets a 4xx that is not 401/403 (or a 200 for a plain read) and nothing changes.
ACTIONS = {
    "issue": ("post", "/api/v1/credentials", {}),
    "revoke": ("post", "/api/v1/credentials/no-such-badge/revoke", {"reason": "x"}),
    "catalogue": ("post", "/api/v1/achievements", {"code": ""}),
    "keys": ("post", "/api/v1/keys/rotate", {"algorithms": ["no-such-algorithm"]}),
    "admin": ("get", "/api/v1/tokens", None),
}


def call(client, action: str, token: str | None):
    method, path, body = ACTIONS[action]
    headers = auth(token) if token else {}
    return getattr(client, method)(path, json=body, headers=headers) if body is not None else \
        getattr(client, method)(path, headers=headers)


def test_each_action_needs_its_own_scope_and_admin_means_every_scope(client, make_token):
    assert set(ACTIONS) == set(tokens.SCOPES)
    for scope in tokens.SCOPES:
        token = make_token(scope, name=f"only {scope}")
        for action in ACTIONS:
            status = call(client, action, token).status_code
            if scope in (action, "admin"):
                assert status not in (401, 403), (scope, action, status)
            else:
                assert status == 403, (scope, action, status)
                assert f"'{action}'" in call(client, action, token).get_json()["detail"]
    for action in ACTIONS:
        assert call(client, action, None).status_code == 401
        assert call(client, action, "obi_not-a-token").status_code == 401


def test_adding_an_achievement_takes_the_catalogue_scope(client, make_token):
    from .test_api import new_entry

    assert client.post("/api/v1/achievements", json=new_entry("CAT-1"),
                       headers=auth(make_token("keys"))).status_code == 403
    created = client.post("/api/v1/achievements", json=new_entry("CAT-1"), headers=auth(make_token("catalogue")))
    assert created.status_code == 201, created.get_json()


def test_rotating_keys_through_the_api_keeps_old_badges_valid_and_is_audited(app, client, make_token, issue_token):
    before = issue(client, issue_token).get_json()
    old_kids = {m["id"] for m in client.get("/.well-known/did.json").get_json()["verificationMethod"]}
    keys_token = make_token("keys", name="key rotation job")

    refused = client.post("/api/v1/keys/rotate", json={"algorithms": ["RS512"]}, headers=auth(keys_token))
    assert refused.status_code == 400 and "RS512" in refused.get_json()["detail"]
    assert client.post("/api/v1/keys/rotate", json={"colour": "red"}, headers=auth(keys_token)).status_code == 400
    assert not audit(app, "key.rotate")  # nothing changed on a bad input

    rotated = client.post("/api/v1/keys/rotate", json={"algorithms": ["Ed25519"]}, headers=auth(keys_token))
    assert rotated.status_code == 200, rotated.get_json()
    body = rotated.get_json()
    assert [k["algorithm"] for k in body["rotated"]] == ["Ed25519"]
    new_id = body["rotated"][0]["id"]
    published = {m["id"] for m in client.get("/.well-known/did.json").get_json()["verificationMethod"]}
    assert new_id in published and old_kids <= published  # the old keys stay published
    statuses = {k["id"]: k["status"] for k in body["keys"]}
    assert statuses[new_id] == "current" and list(statuses.values()).count("current") == len(old_kids)

    (entry,) = audit(app, "key.rotate")
    assert entry.actor.startswith("token:") and entry.actor.endswith(":key rotation job")
    assert entry.detail == {"algorithms": ["Ed25519"]}

    # The badge signed before still verifies; a new one is signed with the new key and verifies.
    assert client.post("/api/v1/verify", json=before["credential"]).get_json()["verified"] is True
    after = issue(client, issue_token, recipient={"email": "second@example.com"}).get_json()
    proofs = after["credential"]["proof"]
    assert new_id in [p["verificationMethod"] for p in (proofs if isinstance(proofs, list) else [proofs])]
    assert client.post("/api/v1/verify", json=after["credential"]).get_json()["verified"] is True

    # No body rotates every current key, like `issuer keys rotate` without --algorithm.
    everything = client.post("/api/v1/keys/rotate", headers=auth(keys_token))
    assert everything.status_code == 200
    assert len(everything.get_json()["rotated"]) == len(old_kids)


def test_the_command_line_rotation_is_the_same_core(app):
    result = app.test_cli_runner().invoke(args=["keys", "rotate", "--algorithm", "Ed25519"])
    assert result.exit_code == 0, result.output
    assert "new current Ed25519 key" in result.output
    (entry,) = audit(app, "key.rotate")
    assert entry.actor.startswith("cli") and entry.detail == {"algorithms": ["Ed25519"]}
    bad = app.test_cli_runner().invoke(args=["keys", "rotate", "--algorithm", "RS256"])
    assert bad.exit_code != 0 and "no current key to rotate for RS256" in bad.output


def test_administrators_list_create_and_revoke_tokens_and_never_see_a_secret(app, client, make_token):
    admin = make_token("admin", name="it office")
    issuer_token = make_token("issue", name="registry")
    assert client.get("/api/v1/tokens", headers=auth(issuer_token)).status_code == 403

    created = client.post("/api/v1/tokens", json={"name": "moodle sync", "scopes": ["issue", "revoke"]},
                          headers=auth(admin))
    assert created.status_code == 201, created.get_json()
    new = created.get_json()
    assert new["token"].startswith(tokens.PREFIX) and new["scopes"] == ["issue", "revoke"]
    assert created.headers["Cache-Control"] == "no-store"
    assert client.post("/api/v1/credentials", json={}, headers=auth(new["token"])).status_code == 400  # it works

    listing = client.get("/api/v1/tokens", headers=auth(admin))
    text = listing.get_data(as_text=True)
    rows = {row["name"]: row for row in listing.get_json()["tokens"]}
    assert set(rows) == {"it office", "registry", "moodle sync"}
    assert set(rows["moodle sync"]) == {"id", "name", "scopes", "created", "last_used", "revoked"}
    assert rows["moodle sync"]["last_used"] and rows["moodle sync"]["revoked"] is None
    assert rows["registry"]["last_used"] is not None  # it was refused a listing, but it was used
    for row in token_rows(app):
        assert row.token_hash not in text
    for secret in (admin, issuer_token, new["token"]):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text

    revoked = client.delete(f"/api/v1/tokens/{new['id']}", headers=auth(admin))
    assert revoked.status_code == 200 and revoked.get_json()["revoked"]
    refused = client.post("/api/v1/credentials", json={}, headers=auth(new["token"]))
    assert refused.status_code == 401 and "revoked" in refused.get_json()["detail"]
    assert client.delete(f"/api/v1/tokens/{new['id']}", headers=auth(admin)).status_code == 200  # idempotent
    assert client.delete("/api/v1/tokens/999999", headers=auth(admin)).status_code == 404
    assert [e.detail["id"] for e in audit(app, "token.revoke")] == [new["id"]]
    (made,) = audit(app, "token.create")
    assert made.subject == "moodle sync" and made.actor.endswith(":it office")


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "scopes": ["everything"]}, "scopes"),
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "x", "scopes": "issue"}, "scopes"),
    ({"name": " ", "scopes": ["issue"]}, "name"),
    ({"name": "x", "scopes": ["issue"], "expires": "never"}, "expires"),
])
def test_a_bad_token_request_is_refused_naming_the_field_and_stores_nothing(app, client, make_token, body, field):
    admin = make_token("admin")
    response = client.post("/api/v1/tokens", json=body, headers=auth(admin))
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.get_json()["field"] == field
    assert len(token_rows(app)) == 1 and not audit(app, "token.create")


def test_a_revoked_token_is_refused_at_once_by_every_instance(app, client, make_token):
    """Two instances on one database: revoking on one is seen by the other's next request (no cache)."""
    config = {key: app.config[key] for key in ("TESTING", "ISSUER_DATABASE_URL", "ISSUER_KEY_DIR",
                                               "ISSUER_BASE_URL", "ISSUER_KEY_PASSPHRASE")}
    other = create_app(config)
    other.instance_path = app.instance_path
    try:
        token = make_token("issue", name="shared")
        admin = make_token("admin")
        other_client = other.test_client()
        assert other_client.post("/api/v1/credentials", json={}, headers=auth(token)).status_code == 400
        (row,) = [r for r in token_rows(app) if r.name == "shared"]
        assert client.delete(f"/api/v1/tokens/{row.id}", headers=auth(admin)).status_code == 200
        assert other_client.post("/api/v1/credentials", json={}, headers=auth(token)).status_code == 401
    finally:
        other.extensions["issuer.engine"].dispose()


def test_last_use_is_written_at_most_once_a_minute(app, client, make_token, monkeypatch):
    token = make_token("issue", name="busy")
    updates = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE API_TOKENS"):
            updates.append(statement)

    engine = app.extensions["issuer.engine"]
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert client.post("/api/v1/credentials", json={}, headers=auth(token)).status_code == 400
        assert len(updates) == 1
        (row,) = token_rows(app)
        first = row.last_used_at

        later = tokens.utcnow() + timedelta(seconds=61)
        monkeypatch.setattr(tokens, "utcnow", lambda: later)
        client.post("/api/v1/credentials", json={}, headers=auth(token))
        client.post("/api/v1/credentials", json={}, headers=auth(token))
        assert len(updates) == 2
        (row,) = token_rows(app)
        assert tokens._aware(row.last_used_at) > tokens._aware(first)
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_only_the_hash_is_stored_looked_up_by_hash_and_compared_in_constant_time(app, client, make_token,
                                                                                 monkeypatch):
    token = make_token("issue")
    (row,) = token_rows(app)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.name, row.scopes, row.token_hash)
    compared = []
    real = tokens.hmac.compare_digest
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert client.post("/api/v1/credentials", json={}, headers=auth(token)).status_code == 400
    assert compared == [(row.token_hash, row.token_hash)]
    # A token one character off is unknown (its hash matches no row) and is never compared at all.
    assert client.post("/api/v1/credentials", json={}, headers=auth(token[:-1] + "x")).status_code == 401
    assert len(compared) == 1


def test_token_list_and_revoke_on_the_command_line(app, client, make_token):
    token = make_token("issue revoke", name="registry sync")
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["token", "list"])
    assert listed.exit_code == 0, listed.output
    (row,) = token_rows(app)
    line = listed.output.strip()
    assert line.split()[0] == str(row.id) and "registry sync" in line and "issue,revoke" in line
    assert "active" in line and "last used never" in line
    assert token not in listed.output and row.token_hash not in listed.output

    revoked = runner.invoke(args=["token", "revoke", str(row.id)])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert client.post("/api/v1/credentials", json={}, headers=auth(token)).status_code == 401
    assert "revoked 20" in runner.invoke(args=["token", "list"]).output
    unknown = runner.invoke(args=["token", "revoke", "424242"])
    assert unknown.exit_code != 0 and "there is no token 424242" in unknown.output
    assert [e.actor.startswith("cli") for e in audit(app, "token.revoke")] == [True]


def test_a_rotation_on_one_instance_is_used_by_every_instance_sharing_the_keys(app, client, make_token,
                                                                               issue_token):
    config = {key: app.config[key] for key in ("TESTING", "ISSUER_DATABASE_URL", "ISSUER_KEY_DIR",
                                               "ISSUER_BASE_URL", "ISSUER_KEY_PASSPHRASE")}
    other = create_app(config)
    other.instance_path = app.instance_path
    try:
        other_client = other.test_client()
        assert other_client.get("/.well-known/did.json").status_code == 200  # keys loaded there first
        rotated = client.post("/api/v1/keys/rotate", json={"algorithms": ["Ed25519"]},
                              headers=auth(make_token("keys")))
        new_id = rotated.get_json()["rotated"][0]["id"]
        published = {m["id"] for m in other_client.get("/.well-known/did.json").get_json()["verificationMethod"]}
        assert new_id in published
        badge = issue(other_client, issue_token, recipient={"email": "other@example.com"}).get_json()
        proofs = badge["credential"]["proof"]
        assert new_id in [p["verificationMethod"] for p in (proofs if isinstance(proofs, list) else [proofs])]
        assert client.post("/api/v1/verify", json=badge["credential"]).get_json()["verified"] is True
    finally:
        other.extensions["issuer.engine"].dispose()
