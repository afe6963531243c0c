"""Holder-bound copies (issue #6): a badge re-signed for a wallet's DID verifies, in our verifier and in
Digital Bazaar's; it shares the original's status entry, so revoking either revokes both; bad holders and
revoked originals are refused and nothing is stored."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from issuer import vcjwt, wallets
from issuer.db import get_session
from issuer.identity import get_context, get_verifier
from issuer.models import AuditEntry, Credential, WalletCopy
from issuer.multikey import did_key
from tests.test_awards import AI_CERTIFICATE, LEARNER, auth, issue_badges, stored
from tests.test_interop_js import js, status_documents  # noqa: F401 (the js fixture)

HOLDER = did_key(Ed25519PrivateKey.generate().public_key())


def issue_one(client, token):
    (badge,) = issue_badges(client, token, AI_CERTIFICATE[:1])
    return badge


def make_copy(app, public_id, fmt="ldp_vc", holder=HOLDER):
    with app.app_context():
        session = get_session()
        row = wallets.deliver(session, get_context(), wallets.original_row(session, public_id), holder,
                              fmt=fmt, channel="oid4vci")
        session.commit()
        return row.id, row.credential_id, wallets.delivered(row)


def verdict(app, delivered, fmt="ldp_vc"):
    with app.app_context():
        verifier = get_verifier()
        if fmt == "ldp_vc":
            return verifier.verify_credential(delivered, recipient_email=LEARNER)
        return verifier.verify_jwt(delivered, recipient_email=LEARNER)


def checks(result):
    return {c.name: c.ok for c in result.checks}


def test_a_data_integrity_copy_is_bound_to_the_holder_and_verifies(app, client, issue_token):
    badge = issue_one(client, issue_token)
    original = json.loads(client.get(f"/credentials/{badge['id']}.json").data)
    _, copy_id, copy = make_copy(app, badge["id"])
    assert copy["id"] == copy_id and copy_id.startswith("urn:uuid:") and copy_id != original["id"]
    assert copy["credentialSubject"]["id"] == HOLDER
    # everything the original signed stays, proof apart
    for name in ("issuer", "validFrom", "credentialStatus", "@context", "type"):
        assert copy[name] == original[name]
    assert copy["credentialSubject"]["identifier"] == original["credentialSubject"]["identifier"]
    assert copy["credentialSubject"]["achievement"] == original["credentialSubject"]["achievement"]
    assert copy["proof"]["proofValue"] != original["proof"]["proofValue"]
    result = verdict(app, copy)
    assert result.verified, result.checks
    assert checks(result)["recipient"] is True


def test_a_jwt_copy_has_the_holder_as_sub_and_verifies(app, client, issue_token):
    badge = issue_one(client, issue_token)
    _, copy_id, token = make_copy(app, badge["id"], fmt="jwt_vc_json")
    header, payload = vcjwt.parse_compact(token)
    assert payload["sub"] == HOLDER and payload["jti"] == copy_id
    assert payload["credentialSubject"]["id"] == HOLDER
    result = verdict(app, token, "jwt_vc_json")
    assert result.verified, result.checks


def test_the_copy_is_recorded_and_audited(app, client, issue_token):
    badge = issue_one(client, issue_token)
    public_id, copy_id, _ = make_copy(app, badge["id"])
    with app.app_context():
        session = get_session()
        row = session.get(WalletCopy, public_id)
        assert (row.original_id, row.original_kind, row.holder_did, row.format) == (
            badge["id"], "badge", HOLDER, "ldp_vc")
        assert [c.id for c in wallets.copies_of(session, badge["id"])] == [public_id]
        audit = session.query(AuditEntry).filter(AuditEntry.action == "credential.wallet_copy").one()
        assert audit.detail["copy"] == copy_id


def test_revoking_the_original_revokes_the_copy(app, client, issue_token, make_token):
    badge = issue_one(client, issue_token)
    _, _, copy = make_copy(app, badge["id"])
    response = client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth(make_token("revoke")),
                           json={"reason": "misconduct found", "category": "misconduct"})
    assert response.status_code == 200, response.get_json()
    result = verdict(app, copy)
    assert result.verified is False and checks(result)["status"] is False


def test_revoking_the_copy_by_its_id_revokes_the_original(app, client, issue_token, make_token):
    badge = issue_one(client, issue_token)
    public_id, _, _ = make_copy(app, badge["id"])
    response = client.post(f"/api/v1/credentials/{public_id}/revoke", headers=auth(make_token("revoke")),
                           json={"reason": "issued in error", "category": "issued in error"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["id"] == badge["id"]  # the answer names the original that was revoked
    with app.app_context():
        assert get_session().get(Credential, badge["id"]).revoked_at is not None
    original = json.loads(client.get(f"/credentials/{badge['id']}.json").data)
    assert verdict(app, original).verified is False


def test_an_award_can_be_bound_too(app, client, issue_token):
    issued = issue_badges(client, issue_token, AI_CERTIFICATE)
    award = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER},
                                                "credentials": stored(client, issued)}).get_json()
    _, _, copy = make_copy(app, award["id"])
    assert copy["credentialSubject"]["id"] == HOLDER
    assert verdict(app, copy).verified


@pytest.mark.parametrize("holder", ["", "not a did", "did:key:", "did:key:z6Mk#frag", "did:KEY:abc",
                                    "did:key:" + "z" * 3000, None, 42])
def test_a_holder_that_is_not_a_did_is_refused_and_nothing_stored(app, client, issue_token, holder):
    badge = issue_one(client, issue_token)
    with app.app_context():
        session = get_session()
        with pytest.raises(wallets.WalletError, match="DID"):
            wallets.deliver(session, get_context(), wallets.original_row(session, badge["id"]), holder,
                            fmt="ldp_vc", channel="oid4vci")
        session.rollback()
        assert session.query(WalletCopy).count() == 0


def test_a_revoked_badge_is_not_delivered(app, client, issue_token, make_token):
    badge = issue_one(client, issue_token)
    client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth(make_token("revoke")),
                json={"reason": "issued in error", "category": "issued in error"})
    with app.app_context():
        session = get_session()
        with pytest.raises(wallets.WalletError, match="revoked"):
            wallets.deliver(session, get_context(), wallets.original_row(session, badge["id"]), HOLDER,
                            fmt="ldp_vc", channel="vcapi")


def test_a_copy_verifies_in_digital_bazaars_verifier(js, app, client, issue_token):  # noqa: F811
    badge = issue_one(client, issue_token)
    _, _, copy = make_copy(app, badge["id"])
    did_doc = json.loads(client.get("/.well-known/did.json").data)
    documents = {did_doc["id"]: did_doc, **status_documents(client, copy)}
    js.assert_verified(copy, documents)
    tampered = {**copy, "credentialSubject": {**copy["credentialSubject"], "id": "did:example:someone-else"}}
    js.assert_rejected(tampered, documents)
