"""OpenID for Verifiable Credential Issuance 1.0, pre-authorized code flow (issue #6).

A small wallet written here (Ed25519 did:key, P-256 jwk and did:jwk keys) runs the whole flow against the
application: the offer, the metadata, the token, the nonce and the credential endpoints, in both request
shapes (1.0 `proofs` and draft-15 `proof`) and both formats. The credential it receives verifies with our
verifier, is bound to its DID, and fails once the original is revoked. Every refusal carries the right
OAuth 2.0 / OID4VCI error code.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from issuer import oid4vci, vcjwt
from issuer.db import get_session
from issuer.identity import get_verifier
from issuer.keys import jwk_members
from issuer.models import AuditEntry, WalletCopy, WalletNonce, WalletOffer, utcnow
from issuer.multikey import did_key
from tests.browser_support import start_live_server
from tests.test_awards import AI_CERTIFICATE, LEARNER, auth, issue_badges, stored

BASE = "http://127.0.0.1:5000"
LDP = "OpenBadgeCredential_ldp_vc"
JWT = "OpenBadgeCredential_jwt_vc_json"
PRE_AUTH = "urn:ietf:params:oauth:grant-type:pre-authorized_code"


# --- a wallet, written here -----------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Wallet:
    """A holder key and how the wallet names it in a key proof: `did:key` (a kid), `jwk` (the key in the
    header) or `did:jwk` (a kid)."""

    def __init__(self, method: str = "did:key", curve: str = "Ed25519"):
        self.method = method
        self.key = Ed25519PrivateKey.generate() if curve == "Ed25519" else ec.generate_private_key(ec.SECP256R1())
        self.alg = "EdDSA" if curve == "Ed25519" else "ES256"
        public = self.key.public_key()
        members = jwk_members(public)
        if method == "did:key":
            self.did = did_key(public)
            self.header = {"kid": f"{self.did}#{self.did[len('did:key:'):]}"}
        elif method == "did:jwk":
            self.did = "did:jwk:" + b64url(json.dumps(members).encode())
            self.header = {"kid": f"{self.did}#0"}
        else:
            self.did = "did:jwk:" + b64url(json.dumps(members, sort_keys=True, separators=(",", ":")).encode())
            self.header = {"jwk": members}

    def proof(self, nonce: str | None, *, aud: str = BASE, iat: float | None = None, typ="openid4vci-proof+jwt",
              header: dict | None = None, key=None, alg: str | None = None) -> str:
        payload = {"aud": aud, "iat": int(utcnow().timestamp()) if iat is None else iat}
        if nonce is not None:
            payload["nonce"] = nonce
        headers = {**self.header, "typ": typ, **(header or {})}
        return jwt.PyJWS().encode(json.dumps(payload).encode(), key or self.key, algorithm=alg or self.alg,
                                  headers=headers)


def unsigned_proof(header: dict, payload: dict) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


# --- the flow, step by step -------------------------------------------------------------------------------

def path(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE):]


def issue_one(client, token) -> str:
    return issue_badges(client, token, AI_CERTIFICATE[:1])[0]["id"]


def make_offer(client, token, credential_id, **body):
    response = client.post(f"/api/v1/credentials/{credential_id}/offer", headers=auth(token), json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def read_offer(client, made):
    link = urlsplit(made["offer_link"])
    assert link.scheme == "openid-credential-offer"
    (uri,) = parse_qs(link.query)["credential_offer_uri"]
    assert uri == made["credential_offer_uri"]
    response = client.get(path(uri))
    assert response.status_code == 200
    assert response.mimetype == "application/json" and response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def code_of(offer_document) -> str:
    return offer_document["grants"][PRE_AUTH]["pre-authorized_code"]


def ask_token(client, code, pin=None, **extra):
    form = {"grant_type": PRE_AUTH, "pre-authorized_code": code, **({"tx_code": pin} if pin is not None else {}),
            **extra}
    return client.post("/oid4vci/token", data=form)


def access_token(client, made) -> str:
    response = ask_token(client, code_of(read_offer(client, made)), made.get("tx_code"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def nonce(client) -> str:
    response = client.post("/oid4vci/nonce")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    return response.get_json()["c_nonce"]


def ask_credential(client, access, proof, configuration=LDP, shape="proofs"):
    body = {"credential_configuration_id": configuration}
    if shape == "proofs":
        body["proofs"] = {"jwt": [proof]}
    elif shape == "proof":
        body["proof"] = {"proof_type": "jwt", "jwt": proof}
    return client.post("/oid4vci/credential", json=body, headers=auth(access))


def ready(client, issue_token, *, offer_body=None, credential_id=None):
    """An issued badge, an offer for it and the access token for that offer."""
    credential_id = credential_id or issue_one(client, issue_token)
    made = make_offer(client, issue_token, credential_id, **(offer_body or {}))
    return credential_id, made, access_token(client, made)


def error(response, status, code):
    assert response.status_code == status, (response.status_code, response.get_json())
    body = response.get_json()
    assert body["error"] == code, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    return body


def verdict(app, delivered):
    with app.app_context():
        verifier = get_verifier()
        if isinstance(delivered, str):
            return verifier.verify_jwt(delivered, recipient_email=LEARNER)
        return verifier.verify_credential(delivered, recipient_email=LEARNER)


@pytest.fixture
def clock(monkeypatch):
    """Move the OID4VCI core's clock: `clock.advance(seconds)`."""

    class Clock:
        offset = timedelta()

        def advance(self, seconds: float) -> None:
            self.offset += timedelta(seconds=seconds)

    moved = Clock()
    monkeypatch.setattr(oid4vci, "clock", lambda: utcnow() + moved.offset)
    return moved


# --- metadata ------------------------------------------------------------------------------------------

def test_issuer_metadata_lists_both_configurations_with_display_in_two_languages(client):
    response = client.get("/.well-known/openid-credential-issuer")
    assert response.status_code == 200 and response.mimetype == "application/json"
    metadata = response.get_json()
    assert metadata["credential_issuer"] == BASE
    assert metadata["credential_endpoint"] == f"{BASE}/oid4vci/credential"
    assert metadata["nonce_endpoint"] == f"{BASE}/oid4vci/nonce"
    assert {d["locale"] for d in metadata["display"]} == {"en", "zh-Hant"}
    configurations = metadata["credential_configurations_supported"]
    assert set(configurations) == {LDP, JWT}
    ldp, jwt_vc = configurations[LDP], configurations[JWT]
    assert ldp["format"] == "ldp_vc" and jwt_vc["format"] == "jwt_vc_json"
    assert ldp["credential_definition"] == {
        "@context": ["https://www.w3.org/ns/credentials/v2",
                     "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"],
        "type": ["VerifiableCredential", "OpenBadgeCredential"]}
    assert jwt_vc["credential_definition"] == {"type": ["VerifiableCredential", "OpenBadgeCredential"]}
    assert ldp["credential_signing_alg_values_supported"] == ["eddsa-rdfc-2022"]
    assert jwt_vc["credential_signing_alg_values_supported"] == ["ES256"]
    for configuration in configurations.values():
        assert configuration["cryptographic_binding_methods_supported"] == ["did:key", "did:jwk", "jwk"]
        assert configuration["proof_types_supported"] == {
            "jwt": {"proof_signing_alg_values_supported": ["EdDSA", "ES256"]}}
        display = configuration["credential_metadata"]["display"]
        assert {d["locale"] for d in display} == {"en", "zh-Hant"} and all(d["name"] for d in display)


def test_authorization_server_metadata_names_the_token_endpoint(client):
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["issuer"] == BASE
    assert metadata["token_endpoint"] == f"{BASE}/oid4vci/token"
    assert metadata["pre-authorized_grant_anonymous_access_supported"] is True
    assert PRE_AUTH in metadata["grant_types_supported"]


# --- the whole flow ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "curve", "configuration", "shape"), [
    ("did:key", "Ed25519", LDP, "proofs"),
    ("jwk", "P-256", JWT, "proof"),
    ("did:jwk", "P-256", LDP, "proof"),
    ("did:key", "P-256", JWT, "proofs"),
    ("jwk", "Ed25519", LDP, "proofs"),
])
def test_a_wallet_receives_a_badge_bound_to_its_did_that_verifies(app, client, issue_token, make_token, method,
                                                                  curve, configuration, shape):
    wallet = Wallet(method, curve)
    credential_id, made, access = ready(client, issue_token)
    assert made["tx_code"].isdigit() and len(made["tx_code"]) == 6  # a PIN unless asked otherwise
    response = ask_credential(client, access, wallet.proof(nonce(client)), configuration, shape)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    (item,) = response.get_json()["credentials"]
    delivered = item["credential"]
    if configuration == LDP:
        assert isinstance(delivered, dict)
        subject = delivered["credentialSubject"]
    else:
        assert isinstance(delivered, str)
        header, payload = vcjwt.parse_compact(delivered)
        assert payload["sub"] == wallet.did
        subject = payload["credentialSubject"]
    assert subject["id"] == wallet.did
    result = verdict(app, delivered)
    assert result.verified, result.checks

    with app.app_context():
        session = get_session()
        offer = session.get(WalletOffer, made["offer_id"])
        assert offer.state == "delivered" and offer.used_at is not None
        copy = session.query(WalletCopy).filter(WalletCopy.offer_id == made["offer_id"]).one()
        assert (copy.original_id, copy.holder_did, copy.channel) == (credential_id, wallet.did, "oid4vci")

    revoked = client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=auth(make_token("revoke")),
                          json={"reason": "issued in error", "category": "issued in error"})
    assert revoked.status_code == 200
    after = verdict(app, delivered)
    assert after.verified is False and {c.name: c.ok for c in after.checks}["status"] is False


def test_an_award_can_be_offered_too(app, client, issue_token):
    issued = issue_badges(client, issue_token, AI_CERTIFICATE)
    award = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER},
                                                "credentials": stored(client, issued)}).get_json()
    wallet = Wallet()
    _, _, access = ready(client, issue_token, credential_id=award["id"], offer_body={"tx_code": False})
    response = ask_credential(client, access, wallet.proof(nonce(client)))
    assert response.status_code == 200, response.get_json()
    delivered = response.get_json()["credentials"][0]["credential"]
    assert delivered["credentialSubject"]["id"] == wallet.did
    assert verdict(app, delivered).verified


def test_the_offer_document_link_and_qr_code(client, issue_token):
    credential_id = issue_one(client, issue_token)
    made = make_offer(client, issue_token, credential_id, tx_code=True, expires_in=120)
    assert set(made) == {"offer_id", "credential_offer_uri", "offer_link", "qr_svg_url", "tx_code",
                         "credential_configuration_ids", "expires_at"}
    assert made["credential_offer_uri"] == f"{BASE}/oid4vci/offers/{made['offer_id']}"
    assert made["offer_link"].startswith("openid-credential-offer://?credential_offer_uri=http%3A%2F%2F127.0.0.1")
    document = read_offer(client, made)
    assert document["credential_issuer"] == BASE
    assert document["credential_configuration_ids"] == [LDP, JWT]
    grant = document["grants"][PRE_AUTH]
    assert grant["tx_code"]["input_mode"] == "numeric" and grant["tx_code"]["length"] == 6
    assert grant["tx_code"]["description"]
    assert len(grant["pre-authorized_code"]) >= 43
    assert read_offer(client, made) == document  # served again, the same, while it is live
    qr = client.get(path(made["qr_svg_url"]))
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml" and b"<svg" in qr.data
    assert qr.headers["Cache-Control"] == "no-store"

    no_pin = make_offer(client, issue_token, credential_id, tx_code=False, format="jwt_vc_json")
    assert "tx_code" not in no_pin
    document = read_offer(client, no_pin)
    assert "tx_code" not in document["grants"][PRE_AUTH]
    assert document["credential_configuration_ids"] == [JWT]

    # once the code is redeemed the offer is gone
    ask_token(client, code_of(document))
    assert client.get(path(no_pin["credential_offer_uri"])).status_code == 404
    assert client.get(path(no_pin["qr_svg_url"])).status_code == 404
    assert client.get("/oid4vci/offers/nothing-here").status_code == 404


def test_no_secret_is_stored_in_the_clear(app, client, issue_token):
    credential_id = issue_one(client, issue_token)
    made = make_offer(client, issue_token, credential_id)
    code = code_of(read_offer(client, made))
    access = access_token(client, made)
    c_nonce = nonce(client)
    with app.app_context():
        session = get_session()
        values = []
        for row in session.query(WalletOffer).all() + session.query(WalletNonce).all():
            values += [str(getattr(row, c.key)) for c in row.__table__.columns]
        for entry in session.query(AuditEntry).all():
            values.append(json.dumps(entry.detail))
    text = "\n".join(values)
    for secret in (code, made["tx_code"], access, c_nonce):
        assert secret not in text


def test_a_format_restricted_offer_refuses_the_other_format(client, issue_token):
    _, made, access = ready(client, issue_token, offer_body={"format": "ldp_vc"})
    assert made["credential_configuration_ids"] == [LDP]
    error(ask_credential(client, access, Wallet().proof(nonce(client)), JWT), 400, "invalid_credential_request")


# --- the staff API ------------------------------------------------------------------------------------------

def test_making_an_offer_needs_a_token_with_the_issue_scope(client, issue_token, make_token):
    credential_id = issue_one(client, issue_token)
    assert client.post(f"/api/v1/credentials/{credential_id}/offer").status_code == 401
    response = client.post(f"/api/v1/credentials/{credential_id}/offer", headers=auth(make_token("revoke")))
    assert response.status_code == 403
    assert client.post("/api/v1/credentials/unknown/offer", headers=auth(issue_token)).status_code == 404
    empty = client.post(f"/api/v1/credentials/{credential_id}/offer", headers=auth(issue_token))
    assert empty.status_code == 201 and empty.get_json()["tx_code"]


@pytest.mark.parametrize(("body", "field"), [
    ({"expires_in": 59}, "expires_in"), ({"expires_in": 3601}, "expires_in"), ({"expires_in": "600"}, "expires_in"),
    ({"tx_code": "yes"}, "tx_code"), ({"format": "mso_mdoc"}, "format"), ({"colour": "red"}, "colour"),
])
def test_bad_offer_options_are_refused(client, issue_token, body, field):
    credential_id = issue_one(client, issue_token)
    response = client.post(f"/api/v1/credentials/{credential_id}/offer", headers=auth(issue_token), json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field


def test_a_revoked_badge_cannot_be_offered(client, issue_token, make_token):
    credential_id = issue_one(client, issue_token)
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=auth(make_token("revoke")),
                json={"reason": "issued in error"})
    response = client.post(f"/api/v1/credentials/{credential_id}/offer", headers=auth(issue_token))
    assert response.status_code == 409 and "revoked" in response.get_json()["detail"]


# --- the learner's own offer, from the public page -------------------------------------------------------

def test_a_learner_who_confirms_the_email_gets_an_offer_with_a_pin(app, client, issue_token):
    credential_id = issue_one(client, issue_token)
    url = f"/credentials/{credential_id}/wallet-offer"
    refused = client.post(url, data={"email": "someone.else@example.com"})
    assert refused.status_code == 403 and refused.get_json()["field"] == "email"
    assert client.post(url, data={"email": ""}).status_code == 403
    assert client.post("/credentials/unknown/wallet-offer", data={"email": LEARNER}).status_code == 404

    response = client.post(url, data={"email": "  Learner@Example.COM "})  # a browser form, typed loosely
    assert response.status_code == 201, response.get_json()
    made = response.get_json()
    assert made["tx_code"].isdigit() and made["credential_configuration_ids"] == [LDP, JWT]
    assert response.headers["Cache-Control"] == "no-store"
    wallet = Wallet()
    access = access_token(client, made)
    delivered = ask_credential(client, access, wallet.proof(nonce(client))).get_json()["credentials"][0]
    assert delivered["credential"]["credentialSubject"]["id"] == wallet.did
    with app.app_context():
        assert get_session().get(WalletOffer, made["offer_id"]).created_by == "public:wallet-offer"

    as_json = client.post(url, json={"email": LEARNER, "format": "jwt_vc_json"})
    assert as_json.status_code == 201 and as_json.get_json()["credential_configuration_ids"] == [JWT]


def test_learner_offers_are_capped_per_credential(client, issue_token, clock):
    credential_id = issue_one(client, issue_token)
    url = f"/credentials/{credential_id}/wallet-offer"
    for _ in range(3):
        assert client.post(url, data={"email": LEARNER}).status_code == 201
    capped = client.post(url, data={"email": LEARNER})
    assert capped.status_code == 429 and capped.headers["Retry-After"] == "600"
    clock.advance(601)  # the open ones expire, and the learner may ask again
    assert client.post(url, data={"email": LEARNER}).status_code == 201


def test_a_learner_cannot_offer_a_revoked_badge(client, issue_token, make_token):
    credential_id = issue_one(client, issue_token)
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=auth(make_token("revoke")),
                json={"reason": "issued in error"})
    assert client.post(f"/credentials/{credential_id}/wallet-offer", data={"email": LEARNER}).status_code == 409


def test_a_credential_issued_without_an_email_never_matches():
    assert oid4vci.email_matches(LEARNER, None) is False
    assert oid4vci.email_matches(None, LEARNER) is False
    assert oid4vci.email_matches("x" * 400, "x" * 400) is False


# --- token endpoint refusals -------------------------------------------------------------------------------

def test_a_code_is_good_once(client, issue_token):
    made = make_offer(client, issue_token, issue_one(client, issue_token))
    code = code_of(read_offer(client, made))
    first = ask_token(client, code, made["tx_code"])
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    body = first.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600 and len(body["access_token"]) >= 43
    error(ask_token(client, code, made["tx_code"]), 400, "invalid_grant")


def test_an_expired_code_is_refused(client, issue_token, clock):
    made = make_offer(client, issue_token, issue_one(client, issue_token), expires_in=60)
    code = code_of(read_offer(client, made))
    clock.advance(61)
    assert "expired" in error(ask_token(client, code, made["tx_code"]), 400, "invalid_grant")["error_description"]


def test_a_wrong_pin_is_counted_and_five_kill_the_offer(app, client, issue_token):
    made = make_offer(client, issue_token, issue_one(client, issue_token))
    code = code_of(read_offer(client, made))
    wrong = f"{(int(made['tx_code']) + 1) % 1_000_000:06d}"
    for attempt in range(1, 5):
        error(ask_token(client, code, wrong), 400, "invalid_grant")
        with app.app_context():
            assert get_session().get(WalletOffer, made["offer_id"]).tx_code_failures == attempt
    # the fourth failure left the offer alive: the right PIN would still work, but a fifth wrong one ends it
    error(ask_token(client, code, wrong), 400, "invalid_grant")
    with app.app_context():
        assert get_session().get(WalletOffer, made["offer_id"]).state == "expired"
    error(ask_token(client, code, made["tx_code"]), 400, "invalid_grant")
    assert client.get(path(made["credential_offer_uri"])).status_code == 404


def test_four_wrong_pins_then_the_right_one_still_work(client, issue_token):
    made = make_offer(client, issue_token, issue_one(client, issue_token))
    code = code_of(read_offer(client, made))
    for _ in range(4):
        error(ask_token(client, code, "000000" if made["tx_code"] != "000000" else "111111"), 400, "invalid_grant")
    assert ask_token(client, code, made["tx_code"]).status_code == 200


def test_pin_missing_or_unexpected_is_an_invalid_request(client, issue_token):
    credential_id = issue_one(client, issue_token)
    with_pin = make_offer(client, issue_token, credential_id)
    error(ask_token(client, code_of(read_offer(client, with_pin))), 400, "invalid_request")
    error(ask_token(client, code_of(read_offer(client, with_pin)), ""), 400, "invalid_request")
    without = make_offer(client, issue_token, credential_id, tx_code=False)
    error(ask_token(client, code_of(read_offer(client, without)), "123456"), 400, "invalid_request")


def test_malformed_token_requests(client, issue_token):
    made = make_offer(client, issue_token, issue_one(client, issue_token))
    code = code_of(read_offer(client, made))
    error(client.post("/oid4vci/token", data={"pre-authorized_code": code}), 400, "invalid_request")
    error(client.post("/oid4vci/token", data={"grant_type": "authorization_code", "code": code}),
          400, "unsupported_grant_type")
    error(client.post("/oid4vci/token", data={"grant_type": PRE_AUTH}), 400, "invalid_request")
    error(client.post("/oid4vci/token", json={"grant_type": PRE_AUTH, "pre-authorized_code": code}),
          400, "invalid_request")
    error(client.post("/oid4vci/token", data={"grant_type": PRE_AUTH, "pre-authorized_code": [code, code]}),
          400, "invalid_request")
    error(ask_token(client, "not-a-code", made["tx_code"]), 400, "invalid_grant")
    assert ask_token(client, code, made["tx_code"]).status_code == 200  # none of that used the code


def test_two_wallets_racing_for_one_code_get_one_token(app, issue_token):
    client = app.test_client()
    made = make_offer(client, issue_token, issue_one(client, issue_token))
    code = code_of(read_offer(client, made))
    barrier = threading.Barrier(4)
    statuses = []

    def race():
        own = app.test_client()
        barrier.wait()
        statuses.append(ask_token(own, code, made["tx_code"]).status_code)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200, 400, 400, 400]


# --- nonce refusals -----------------------------------------------------------------------------------------

def test_a_proof_without_a_nonce_is_refused(client, issue_token):
    _, _, access = ready(client, issue_token)
    error(ask_credential(client, access, Wallet().proof(None)), 400, "invalid_nonce")


def test_an_unknown_nonce_is_refused(client, issue_token):
    _, _, access = ready(client, issue_token)
    error(ask_credential(client, access, Wallet().proof("made-up-nonce")), 400, "invalid_nonce")


def test_a_stale_nonce_is_refused(client, issue_token, clock):
    _, _, access = ready(client, issue_token)
    c_nonce = nonce(client)
    clock.advance(301)  # the nonce lives 5 minutes, the access token 10
    wallet = Wallet()
    proof = wallet.proof(c_nonce, iat=int((utcnow() + clock.offset).timestamp()))
    error(ask_credential(client, access, proof), 400, "invalid_nonce")


def test_a_nonce_is_good_once(client, issue_token):
    wallet = Wallet()
    credential_id, _, first = ready(client, issue_token)
    c_nonce = nonce(client)
    assert ask_credential(client, first, wallet.proof(c_nonce)).status_code == 200
    _, _, second = ready(client, issue_token, credential_id=credential_id)
    error(ask_credential(client, second, wallet.proof(c_nonce)), 400, "invalid_nonce")
    assert ask_credential(client, second, wallet.proof(nonce(client))).status_code == 200


def test_a_refused_proof_does_not_use_up_the_nonce(client, issue_token):
    wallet = Wallet()
    _, _, access = ready(client, issue_token)
    c_nonce = nonce(client)
    error(ask_credential(client, access, wallet.proof(c_nonce, aud="https://elsewhere.example")), 400,
          "invalid_proof")
    assert ask_credential(client, access, wallet.proof(c_nonce)).status_code == 200


# --- key proof refusals ---------------------------------------------------------------------------------

def _other_key_proof(wallet, c_nonce):
    return wallet.proof(c_nonce, key=Ed25519PrivateKey.generate())


def _hs256_proof(wallet, c_nonce):
    return jwt.PyJWS().encode(json.dumps({"aud": BASE, "iat": int(utcnow().timestamp()), "nonce": c_nonce}).encode(),
                              b"a shared secret of 32 bytes or more!", algorithm="HS256",
                              headers={**wallet.header, "typ": "openid4vci-proof+jwt"})


def _none_proof(wallet, c_nonce):
    return unsigned_proof({**wallet.header, "typ": "openid4vci-proof+jwt", "alg": "none"},
                          {"aud": BASE, "iat": int(utcnow().timestamp()), "nonce": c_nonce})


def _kid_and_jwk(wallet, c_nonce):
    return wallet.proof(c_nonce, header={"jwk": jwk_members(wallet.key.public_key())})


def _did_web_kid(wallet, c_nonce):
    return wallet.proof(c_nonce, header={"kid": "did:web:example.com#key-1"})


def _wrong_did_key_fragment(wallet, c_nonce):
    other = did_key(Ed25519PrivateKey.generate().public_key())
    return wallet.proof(c_nonce, header={"kid": f"{wallet.did}#{other[len('did:key:'):]}"})


def _alg_mismatch(wallet, c_nonce):
    p256 = ec.generate_private_key(ec.SECP256R1())
    return wallet.proof(c_nonce, key=p256, alg="ES256")


@pytest.mark.parametrize("make_proof", [
    _other_key_proof,
    lambda w, n: w.proof(n, aud="https://another-issuer.example"),
    lambda w, n: w.proof(n, iat=int(utcnow().timestamp()) - 301),
    lambda w, n: w.proof(n, iat=int(utcnow().timestamp()) + 301),
    lambda w, n: w.proof(n, iat="yesterday"),
    lambda w, n: w.proof(n, typ="JWT"),
    _none_proof,
    _hs256_proof,
    _kid_and_jwk,
    _did_web_kid,
    _wrong_did_key_fragment,
    _alg_mismatch,
    lambda w, n: "not.a.jwt",
    lambda w, n: 42,
], ids=["another-key", "another-audience", "iat-too-old", "iat-in-future", "iat-not-number", "wrong-typ",
        "alg-none", "hs256", "kid-and-jwk", "did-web-kid", "did-key-fragment", "alg-key-mismatch", "garbage",
        "not-a-string"])
def test_a_bad_key_proof_is_invalid_proof(client, issue_token, make_proof):
    wallet = Wallet()
    _, made, access = ready(client, issue_token)
    error(ask_credential(client, access, make_proof(wallet, nonce(client))), 400, "invalid_proof")
    # nothing was delivered, and the offer can still deliver with a good proof
    assert ask_credential(client, access, wallet.proof(nonce(client))).status_code == 200


def test_a_request_without_proofs_is_invalid_proof(client, issue_token):
    _, _, access = ready(client, issue_token)
    response = client.post("/oid4vci/credential", json={"credential_configuration_id": LDP}, headers=auth(access))
    error(response, 400, "invalid_proof")
    response = client.post("/oid4vci/credential", headers=auth(access),
                           json={"credential_configuration_id": LDP, "proofs": {"di_vp": ["x"]}})
    error(response, 400, "invalid_proof")


# --- credential request refusals --------------------------------------------------------------------------

def test_an_unknown_configuration_is_refused(client, issue_token):
    _, _, access = ready(client, issue_token)
    error(ask_credential(client, access, Wallet().proof(nonce(client)), "UniversityDegree_mso_mdoc"),
          400, "unknown_credential_configuration")


@pytest.mark.parametrize("body", [
    {"proofs": {"jwt": ["x"]}},
    {"credential_configuration_id": LDP, "proofs": {"jwt": ["x", "y"]}},
    {"credential_configuration_id": LDP, "proofs": {"jwt": ["x"]}, "proof": {"proof_type": "jwt", "jwt": "x"}},
    {"credential_identifier": "abc", "proofs": {"jwt": ["x"]}},
    ["not", "an", "object"],
])
def test_malformed_credential_requests(client, issue_token, body):
    _, _, access = ready(client, issue_token)
    error(client.post("/oid4vci/credential", json=body, headers=auth(access)), 400, "invalid_credential_request")


def test_the_access_token_is_good_for_one_credential(client, issue_token):
    wallet = Wallet()
    _, _, access = ready(client, issue_token)
    assert ask_credential(client, access, wallet.proof(nonce(client))).status_code == 200
    response = ask_credential(client, access, wallet.proof(nonce(client)))
    error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_missing_unknown_and_expired_access_tokens(client, issue_token, clock):
    wallet = Wallet()
    _, _, access = ready(client, issue_token)
    body = {"credential_configuration_id": LDP, "proofs": {"jwt": [wallet.proof(nonce(client))]}}
    error(client.post("/oid4vci/credential", json=body), 401, "invalid_token")
    error(client.post("/oid4vci/credential", json=body, headers=auth("made-up")), 401, "invalid_token")
    error(client.post("/oid4vci/credential", json=body, headers={"Authorization": f"Basic {access}"}),
          401, "invalid_token")
    clock.advance(601)
    error(ask_credential(client, access, wallet.proof(nonce(client), iat=int((utcnow() + clock.offset).timestamp()))),
          401, "invalid_token")


def test_a_badge_revoked_after_the_offer_is_not_delivered(app, client, issue_token, make_token):
    credential_id, _, access = ready(client, issue_token)
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=auth(make_token("revoke")),
                json={"reason": "misconduct found", "category": "misconduct"})
    error(ask_credential(client, access, Wallet().proof(nonce(client))), 400, "credential_request_denied")
    with app.app_context():
        assert get_session().query(WalletCopy).count() == 0


# --- a client we did not write: oid4vc-ts (@openid4vc/openid4vci) over real HTTP ------------------------

INTEROP = Path(__file__).resolve().parent / "interop"
WALLET_SCRIPT = INTEROP / "oid4vci_wallet.mjs"


@pytest.fixture
def oid4vc_ts():
    """node, with tests/interop/node_modules holding @openid4vc/openid4vci (skips as test_interop_js does)."""
    reason = "run `npm ci --prefix tests/interop` (make test does this)"
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not installed; install Node.js 18 or newer, then {reason}")
    if not (INTEROP / "node_modules" / "@openid4vc" / "openid4vci").is_dir():
        pytest.skip(f"tests/interop/node_modules has no @openid4vc/openid4vci: {reason}")
    return node


@pytest.fixture
def live(tmp_path):
    server, stop = start_live_server(tmp_path)
    yield server
    stop()


def live_offer(server, credential_id, **body):
    response = server.http.post(f"{server.url}/api/v1/credentials/{credential_id}/offer", json=body,
                                headers={"Authorization": f"Bearer {server.token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def test_the_oid4vc_ts_wallet_library_receives_badges_that_verify(oid4vc_ts, live, tmp_path):
    badge = live.issue("AI-101", LEARNER)
    with_pin = live_offer(live, badge["id"])
    without_pin = live_offer(live, badge["id"], tx_code=False)
    jwt_only = live_offer(live, badge["id"], tx_code=False, format="jwt_vc_json")
    wrong = f"{(int(with_pin['tx_code']) + 1) % 1_000_000:06d}"
    scenarios = [
        {"name": "ed25519-did-key-ldp", "offer_link": with_pin["offer_link"], "tx_code": with_pin["tx_code"],
         "wrong_tx_code": wrong, "key": "did:key", "alg": "EdDSA", "configuration": LDP, "shape": "proofs",
         "twice": True},
        {"name": "p256-jwk-jwt-draft15", "offer_link": without_pin["offer_link"], "key": "jwk", "alg": "ES256",
         "configuration": JWT, "shape": "proof"},
        {"name": "p256-did-key-jwt", "offer_link": jwt_only["offer_link"], "key": "did:key", "alg": "ES256",
         "configuration": JWT, "shape": "proofs"},
    ]
    scenario_file = tmp_path / "scenarios.json"
    scenario_file.write_text(json.dumps(scenarios), encoding="utf-8")
    completed = subprocess.run([oid4vc_ts, WALLET_SCRIPT.name, str(scenario_file)], cwd=INTEROP,
                               capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert completed.returncode == 0, f"stdout: {completed.stdout}\nstderr: {completed.stderr}"
    results = {r["name"]: r for r in json.loads(completed.stdout.strip().splitlines()[-1])["results"]}

    for name, result in results.items():
        assert result["ok"], (name, result)
        assert result["draft"] == "V1", result  # credential_metadata makes the library speak 1.0
        delivered = result["credential"]
        holder = result["holder"]
        assert holder.startswith("did:jwk:" if "jwk" in name else "did:key:")
        if isinstance(delivered, str):
            assert vcjwt.parse_compact(delivered)[1]["sub"] == holder
            subject = vcjwt.parse_compact(delivered)[1]["credentialSubject"]
        else:
            subject = delivered["credentialSubject"]
        assert subject["id"] == holder
        assert verdict(live.app, delivered).verified, name
    assert results["p256-did-key-jwt"]["offered"] == [JWT]

    first = results["ed25519-did-key-ldp"]
    assert first["errors"]["wrong_tx_code"]["body"]["error"] == "invalid_grant", first["errors"]
    assert first["errors"]["twice"]["status"] == 401, first["errors"]
    with live.app.app_context():
        copies = get_session().query(WalletCopy).filter(WalletCopy.original_id == badge["id"]).all()
        assert sorted(c.holder_did for c in copies) == sorted(r["holder"] for r in results.values())
