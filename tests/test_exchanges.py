"""VC API exchanges for the Learner Credential Wallet (issue #6): a single-use, ten-minute exchange whose
DIDAuthentication presentation (signed by the wallet's did:key, with our challenge and domain) earns a copy
of the badge bound to that DID.

End to end, the wallet is tests/interop/lcw_wallet.mjs, built on Digital Bazaar's libraries as LCW is
(`@digitalbazaar/vc` + `@digitalbazaar/ed25519-signature-2020`), talking HTTP to a live server on
127.0.0.1. The refusals (expired, replayed, wrong challenge or domain, someone else's key, unsigned) are
driven from Python with presentations signed by our own eddsa-rdfc-2022 code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from issuer import proofs
from issuer.db import get_session
from issuer.identity import get_verifier
from issuer.models import AuditEntry, Credential, WalletCopy, WalletOffer, utcnow
from issuer.multikey import did_key, ed25519_to_multibase
from tests.browser_support import start_live_server
from tests.test_awards import HOLDER_DID, LEARNER, auth, issue_badges

INTEROP = Path(__file__).resolve().parent / "interop"
WALLET_SCRIPT = INTEROP / "lcw_wallet.mjs"
NODE_TIMEOUT = 120
BASE = "http://127.0.0.1:5000"
VC_V2 = "https://www.w3.org/ns/credentials/v2"


class Wallet:
    """A holder's did:key, signing DIDAuthentication presentations with eddsa-rdfc-2022."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.did = did_key(self.key.public_key())
        self.method = f"{self.did}#{ed25519_to_multibase(self.key.public_key())}"

    def presentation(self, challenge: str | None, domain: str | None = BASE, *, holder: str | None = None,
                     signer: Wallet | None = None) -> dict:
        vp = {"@context": [VC_V2], "type": ["VerifiablePresentation"], "holder": holder or self.did}
        signer = signer or self
        options = {k: v for k, v in (("challenge", challenge), ("domain", domain)) if v is not None}
        return proofs.create_eddsa_rdfc_2022(vp, signer.key, signer.method, proof_purpose="authentication",
                                             extra=options)


def badge_id(client, token, did=None) -> str:
    (badge,) = issue_badges(client, token, [("AI-101", "2024-03-10")], did=did)
    return badge["id"]


def new_exchange(client, token, public_id, **body) -> dict:
    response = client.post(f"/api/v1/credentials/{public_id}/exchange", headers=auth(token), json=body or None)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def path_of(url: str) -> str:
    return urlsplit(url).path


def start(client, links) -> dict:
    response = client.post(path_of(links["exchange_url"]), json={})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["verifiablePresentationRequest"]


def present(client, links, vp):
    return client.post(path_of(links["exchange_url"]), json={"verifiablePresentation": vp})


def problem_types(body) -> set[str]:
    return {p["type"] for p in body.get("problemDetails", [])}


# --- creating an exchange ------------------------------------------------------------------------------

def test_a_staff_exchange_gives_the_urls_and_an_lcw_link(app, client, issue_token):
    public_id = badge_id(client, issue_token)
    links = new_exchange(client, issue_token, public_id)
    offer_id = links["exchange_url"].rsplit("/", 1)[1]
    assert links["exchange_url"] == f"{BASE}/exchanges/{offer_id}"
    assert links["interaction_url"] == f"{BASE}/exchanges/{offer_id}/interact?iuv=1"
    request = json.loads(parse_qs(urlsplit(links["lcw_link"]).query)["request"][0])
    assert links["lcw_link"].startswith("https://lcw.app/mobile?request=")
    assert request == {"credentialRequestOrigin": BASE, "protocols": {"vcapi": links["exchange_url"]}}
    with app.app_context():
        offer = get_session().get(WalletOffer, offer_id)
        assert (offer.kind, offer.state, offer.original_id) == ("vcapi", "offered", public_id)
        lifetime = offer.expires_at - offer.created_at
        assert lifetime == timedelta(minutes=10) and len(offer.challenge) >= 32
    assert links["expires_at"].endswith("Z")


def test_the_staff_exchange_needs_the_issue_scope_and_a_sane_lifetime(client, issue_token, make_token):
    public_id = badge_id(client, issue_token)
    assert client.post(f"/api/v1/credentials/{public_id}/exchange").status_code == 401
    assert client.post(f"/api/v1/credentials/{public_id}/exchange",
                       headers=auth(make_token("revoke"))).status_code == 403
    assert client.post("/api/v1/credentials/nope/exchange", headers=auth(issue_token)).status_code == 404
    for bad in (30, 10**6, "600", True):
        response = client.post(f"/api/v1/credentials/{public_id}/exchange", headers=auth(issue_token),
                               json={"expires_in": bad})
        assert response.status_code == 400, bad
    assert new_exchange(client, issue_token, public_id, expires_in=3600)


def test_the_interaction_url_answers_json_and_html(client, issue_token):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    path = path_of(links["interaction_url"]) + "?iuv=1"
    as_json = client.get(path, headers={"Accept": "application/json"})
    assert as_json.status_code == 200
    assert as_json.get_json() == {"protocols": {"vcapi": links["exchange_url"]}}
    as_html = client.get(path, headers={"Accept": "text/html"})
    assert as_html.status_code == 200 and as_html.mimetype == "text/html"
    page = as_html.get_data(as_text=True)
    assert "Add this credential to a wallet" in page and links["lcw_link"].replace("&", "&amp;") in page
    qr = client.get(path_of(links["exchange_url"]) + "/qr.svg")
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml" and b"<svg" in qr.data
    assert client.get("/exchanges/nope/interact?iuv=1", headers={"Accept": "application/json"}).status_code == 404


def test_starting_the_exchange_asks_for_did_authentication(client, issue_token):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    vpr = start(client, links)
    (query,) = vpr["query"]
    assert query["type"] == "DIDAuthentication" and query["acceptedMethods"] == [{"method": "key"}]
    assert {"cryptosuite": "Ed25519Signature2020"} in query["acceptedCryptosuites"]
    assert {"cryptosuite": "eddsa-rdfc-2022"} in query["acceptedCryptosuites"]
    assert vpr["domain"] == BASE and vpr["challenge"]
    assert vpr["interact"]["service"] == [{"type": "UnmediatedHttpPresentationService2021",
                                           "serviceEndpoint": links["exchange_url"]}]
    assert start(client, links) == vpr  # asking again changes nothing


def test_no_exchange_for_a_revoked_credential(client, issue_token, make_token):
    public_id = badge_id(client, issue_token)
    client.post(f"/api/v1/credentials/{public_id}/revoke", headers=auth(make_token("revoke")),
                json={"reason": "issued in error"})
    response = client.post(f"/api/v1/credentials/{public_id}/exchange", headers=auth(issue_token))
    assert response.status_code == 409


# --- the learner's own link, from the public page ----------------------------------------------------

def test_the_learner_confirms_the_email_to_get_a_link(client, issue_token):
    public_id = badge_id(client, issue_token)
    url = f"/credentials/{public_id}/wallet-exchange"
    assert client.post(url, json={}).status_code == 403
    wrong = client.post(url, json={"email": "someone.else@example.com"})
    assert wrong.status_code == 403 and wrong.mimetype == "application/problem+json"
    ok = client.post(url, json={"email": "  " + LEARNER.upper()})
    assert ok.status_code == 201
    assert set(ok.get_json()) == {"exchange_url", "interaction_url", "lcw_link", "expires_at"}
    form = client.post(url, data={"email": LEARNER})
    assert form.status_code == 303 and "/interact?iuv=1" in form.headers["Location"]
    assert client.post("/credentials/nope/wallet-exchange", json={"email": LEARNER}).status_code == 404


def test_open_learner_links_are_capped(app, client, issue_token):
    public_id = badge_id(client, issue_token)
    url = f"/credentials/{public_id}/wallet-exchange"
    for _ in range(5):
        assert client.post(url, json={"email": LEARNER}).status_code == 201
    capped = client.post(url, json={"email": LEARNER})
    assert capped.status_code == 429 and capped.headers["Retry-After"]
    with app.app_context():
        session = get_session()
        session.execute(update(WalletOffer).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert client.post(url, json={"email": LEARNER}).status_code == 201


# --- completing it -------------------------------------------------------------------------------------

def test_a_did_authentication_presentation_earns_a_copy_bound_to_the_did(app, client, issue_token):
    public_id = badge_id(client, issue_token)
    links = new_exchange(client, issue_token, public_id)
    vpr = start(client, links)
    wallet = Wallet()
    response = present(client, links, wallet.presentation(vpr["challenge"]))
    assert response.status_code == 200, response.get_json()
    vp = response.get_json()["verifiablePresentation"]
    assert vp["@context"] == [VC_V2] and vp["type"] == ["VerifiablePresentation"] and "proof" not in vp
    (copy,) = vp["verifiableCredential"]
    assert copy["credentialSubject"]["id"] == wallet.did and copy["id"].startswith("urn:uuid:")
    with app.app_context():
        result = get_verifier().verify_credential(copy, recipient_email=LEARNER)
        assert result.verified, result.checks
        session = get_session()
        offer_id = links["exchange_url"].rsplit("/", 1)[1]
        offer = session.get(WalletOffer, offer_id)
        assert offer.state == "delivered" and offer.used_at is not None
        row = session.scalars(select(WalletCopy).where(WalletCopy.offer_id == offer_id)).one()
        assert (row.holder_did, row.channel, row.format, row.original_id) == (
            wallet.did, "vcapi", "ldp_vc", public_id)
        assert session.scalars(select(AuditEntry).where(AuditEntry.action == "wallet.exchange.create")).first()


def test_a_replayed_presentation_is_refused(client, issue_token):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    vp = Wallet().presentation(start(client, links)["challenge"])
    assert present(client, links, vp).status_code == 200
    replay = present(client, links, vp)
    assert replay.status_code == 409 and replay.mimetype == "application/problem+json"
    assert "cannot be used again" in replay.get_json()["detail"]
    assert client.post(path_of(links["exchange_url"]), json={}).status_code == 409
    assert client.get(path_of(links["interaction_url"]) + "?iuv=1",
                      headers={"Accept": "application/json"}).status_code == 409
    assert client.get(path_of(links["interaction_url"]) + "?iuv=1").status_code == 410  # the page says so


def test_an_expired_exchange_is_refused(app, client, issue_token):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    vp = Wallet().presentation(start(client, links)["challenge"])
    with app.app_context():
        session = get_session()
        session.execute(update(WalletOffer).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    expired = present(client, links, vp)
    assert expired.status_code == 410 and "expired" in expired.get_json()["detail"]
    assert client.post(path_of(links["exchange_url"]), json={}).status_code == 410
    with app.app_context():
        assert get_session().scalars(select(WalletCopy)).all() == []


@pytest.mark.parametrize("kind", ["wrong challenge", "wrong domain", "no domain", "other signer", "unsigned",
                                  "assertion purpose"])
def test_a_presentation_that_does_not_prove_control_is_refused_and_the_exchange_stays_open(
        client, issue_token, kind):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    challenge = start(client, links)["challenge"]
    wallet = Wallet()
    if kind == "wrong challenge":
        vp, expected = wallet.presentation(challenge[::-1]), "INVALID_CHALLENGE_ERROR"
    elif kind == "wrong domain":
        vp, expected = wallet.presentation(challenge, "https://evil.example"), "INVALID_DOMAIN_ERROR"
    elif kind == "no domain":
        vp, expected = wallet.presentation(challenge, None), "INVALID_DOMAIN_ERROR"
    elif kind == "other signer":
        vp, expected = wallet.presentation(challenge, signer=Wallet()), "CRYPTOGRAPHIC_SECURITY_ERROR"
    elif kind == "unsigned":
        vp = {"@context": [VC_V2], "type": ["VerifiablePresentation"], "holder": wallet.did}
        expected = "PROOF_VERIFICATION_ERROR"
    else:
        vp = proofs.create_eddsa_rdfc_2022(
            {"@context": [VC_V2], "type": ["VerifiablePresentation"], "holder": wallet.did}, wallet.key,
            wallet.method, extra={"challenge": challenge, "domain": BASE})
        expected = "PROOF_VERIFICATION_ERROR"
    response = present(client, links, vp)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert any(t.endswith("#" + expected) for t in problem_types(body)), body
    # nothing was used up: the right presentation still works
    assert present(client, links, wallet.presentation(challenge)).status_code == 200


def test_a_presentation_signed_with_a_did_web_key_is_refused(client, issue_token):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    challenge = start(client, links)["challenge"]
    wallet = Wallet()
    vp = proofs.create_eddsa_rdfc_2022(
        {"@context": [VC_V2], "type": ["VerifiablePresentation"], "holder": "did:web:wallet.example"},
        wallet.key, "did:web:wallet.example#key-1", proof_purpose="authentication",
        extra={"challenge": challenge, "domain": BASE})
    response = present(client, links, vp)
    assert response.status_code == 400 and "did:key" in response.get_json()["detail"]


def test_a_badge_issued_to_a_did_goes_only_to_that_did(client, issue_token):
    public_id = badge_id(client, issue_token, did=HOLDER_DID)
    links = new_exchange(client, issue_token, public_id)
    response = present(client, links, Wallet().presentation(start(client, links)["challenge"]))
    assert response.status_code == 403 and HOLDER_DID in response.get_json()["detail"]


def test_malformed_exchange_requests(client, issue_token):
    links = new_exchange(client, issue_token, badge_id(client, issue_token))
    path = path_of(links["exchange_url"])
    assert client.post(path, json=[]).status_code == 400
    assert client.post(path, json={"verifiablePresentation": {}, "extra": 1}).status_code == 400
    assert client.post(path, data="{}", content_type="text/plain").status_code == 415
    assert client.post("/exchanges/nope", json={}).status_code == 404


# --- over HTTP: races, and the wallet built from Digital Bazaar's libraries -------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server, stop = start_live_server(tmp_path_factory.mktemp("exchanges"))
    yield server
    stop()


def live_exchange(live) -> dict:
    """A new badge (a new learner each time: the same award twice is the same badge) and its exchange."""
    badge = live.issue("AI-101", f"learner-{uuid.uuid4().hex[:8]}@example.com", awarded_on="2024-03-10")
    response = live.http.post(f"{live.url}/api/v1/credentials/{badge['id']}/exchange",
                              headers=auth(live.token), timeout=30)
    assert response.status_code == 201, response.text
    return response.json() | {"badge": badge}


def test_two_racing_presentations_get_one_copy(live):
    links = live_exchange(live)
    challenge = live.http.post(links["exchange_url"], json={}, timeout=30).json()[
        "verifiablePresentationRequest"]["challenge"]
    wallets = [Wallet() for _ in range(4)]
    presentations = [w.presentation(challenge, live.url) for w in wallets]
    barrier = threading.Barrier(len(presentations))
    statuses: list[int] = []

    def send(vp):
        barrier.wait(timeout=30)
        answer = live.http.post(links["exchange_url"], json={"verifiablePresentation": vp}, timeout=60)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=send, args=(vp,)) for vp in presentations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert sorted(statuses) == [200, 409, 409, 409], statuses
    with live.app.app_context():
        offer_id = links["exchange_url"].rsplit("/", 1)[1]
        assert len(get_session().scalars(select(WalletCopy).where(WalletCopy.offer_id == offer_id)).all()) == 1


@pytest.fixture(scope="module")
def node() -> str:
    reason = "run `npm ci --prefix tests/interop` (make test does this)"
    found = shutil.which("node")
    if found is None:
        pytest.skip(f"node is not installed; install Node.js 18 or newer, then {reason}")
    for package in ("@digitalbazaar/vc", "@digitalbazaar/ed25519-signature-2020",
                    "@digitalbazaar/ed25519-verification-key-2020"):
        if not (INTEROP / "node_modules" / package).is_dir():
            pytest.skip(f"tests/interop/node_modules lacks {package}: {reason}")
    return found


def run_wallet(node: str, link: str, *flags: str) -> dict:
    done = subprocess.run([node, WALLET_SCRIPT.name, link, *flags], cwd=INTEROP, capture_output=True, text=True,
                          encoding="utf-8", timeout=NODE_TIMEOUT)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"lcw_wallet.mjs printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    assert done.returncode == 0 and "error" not in result, result
    return result


def test_the_lcw_exchange_end_to_end_with_digital_bazaars_libraries(live, node):
    links = live_exchange(live)
    result = run_wallet(node, links["lcw_link"], "--replay")
    did = result["did"]
    assert did.startswith("did:key:z6Mk")
    # what the wallet signed: Ed25519Signature2020, as LCW does, for our challenge and domain
    proof = result["presentation"]["proof"]
    assert proof["type"] == "Ed25519Signature2020" and proof["proofPurpose"] == "authentication"
    assert proof["challenge"] == result["vpr"]["challenge"] and proof["domain"] == live.url
    assert result["status"] == 200, result["response"]
    (copy,) = result["response"]["verifiablePresentation"]["verifiableCredential"]
    assert copy["credentialSubject"]["id"] == did
    original = json.loads(live.stored(links["badge"]["id"]))
    assert copy["credentialSubject"]["achievement"] == original["credentialSubject"]["achievement"]
    assert copy["credentialStatus"] == original["credentialStatus"]
    with live.app.app_context():
        verdict = get_verifier().verify_credential(copy)
        assert verdict.verified, verdict.to_json()
        row = get_session().scalars(select(WalletCopy).where(WalletCopy.credential_id == copy["id"])).one()
        assert row.holder_did == did and row.channel == "vcapi"
        assert get_session().get(Credential, links["badge"]["id"]).revoked_at is None
    # the same presentation again: refused, with problem details
    assert result["replay"]["status"] == 409, result["replay"]
    assert result["replay"]["response"]["type"] == "about:blank"
    assert "cannot be used again" in result["replay"]["response"]["detail"]


def test_the_lcw_wallet_cannot_use_an_expired_exchange(live, node):
    links = live_exchange(live)
    with live.app.app_context():
        session = get_session()
        offer_id = links["exchange_url"].rsplit("/", 1)[1]
        session.execute(update(WalletOffer).where(WalletOffer.id == offer_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    result = run_wallet(node, links["lcw_link"])
    assert result["status"] == 410 and "expired" in result["response"]["detail"]
