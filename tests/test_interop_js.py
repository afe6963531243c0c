"""Interoperability: credentials signed by our `eddsa-rdfc-2022` code verify with an implementation we did
not write — Digital Bazaar's JavaScript stack (@digitalbazaar/vc with DataIntegrityProof and the
eddsa-rdfc-2022 cryptosuite) — and a changed byte fails there too.

The JavaScript side is tests/interop/verify.mjs, with packages pinned in tests/interop/package-lock.json.
These tests skip when `node` or tests/interop/node_modules is missing; `npm ci --prefix tests/interop`
installs the packages (make test does this).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from issuer import create_app, proofs, status
from issuer.keys import SigningKey, did_document
from issuer.multikey import did_web_from_url, ed25519_to_multibase

INTEROP = Path(__file__).resolve().parent / "interop"
VERIFY_SCRIPT = INTEROP / "verify.mjs"
NODE_TIMEOUT = 120

BASE_URL = "http://127.0.0.1:5000"
VC_V2 = "https://www.w3.org/ns/credentials/v2"
OB_V3P0 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
SCHOOL = "HKU SPACE 香港大學專業進修學院"
CONTROL_CHARACTERS = "start\u0001 delete\u007f backspace\b formfeed\f tab\t newline\n quote\" backslash\\ end"


class JsVerifier:
    """Runs tests/interop/verify.mjs on a credential (as a dict or as the exact bytes to verify)."""

    def __init__(self, node: str, tmp_dir: Path):
        self.node = node
        self.tmp_dir = tmp_dir
        self.runs = 0

    def run(self, credential: dict | bytes, documents: dict[str, Any]) -> tuple[int, dict]:
        self.runs += 1
        credential_file = self.tmp_dir / f"credential-{self.runs}.json"
        documents_file = self.tmp_dir / f"documents-{self.runs}.json"
        if isinstance(credential, (bytes, bytearray)):
            credential_file.write_bytes(credential)
        else:
            credential_file.write_text(json.dumps(credential, ensure_ascii=False, indent=2), encoding="utf-8")
        documents_file.write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
        completed = subprocess.run(
            [self.node, VERIFY_SCRIPT.name, str(credential_file), str(documents_file)],
            cwd=INTEROP, capture_output=True, text=True, encoding="utf-8", timeout=NODE_TIMEOUT,
        )
        try:
            result = json.loads(completed.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            pytest.fail(f"verify.mjs printed no JSON result (exit {completed.returncode}):\n"
                        f"stdout: {completed.stdout}\nstderr: {completed.stderr}")
        return completed.returncode, result

    def assert_verified(self, credential: dict | bytes, documents: dict[str, Any]) -> None:
        code, result = self.run(credential, documents)
        assert code == 0 and result == {"verified": True, "error": None}, (
            f"Digital Bazaar's verifier rejected our credential (exit {code}): {result.get('error')}")

    def assert_rejected(self, credential: dict | bytes, documents: dict[str, Any]) -> str:
        code, result = self.run(credential, documents)
        assert code == 1 and result["verified"] is False, f"expected rejection, got exit {code}: {result}"
        assert result["error"], "a rejection should say why"
        return result["error"]


@pytest.fixture(scope="module")
def js(tmp_path_factory) -> JsVerifier:
    reason = "run `npm ci --prefix tests/interop` (make test does this)"
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not installed; install Node.js 18 or newer, then {reason}")
    if not (INTEROP / "node_modules" / "@digitalbazaar" / "vc").is_dir():
        pytest.skip(f"tests/interop/node_modules is missing: {reason}")
    return JsVerifier(node, tmp_path_factory.mktemp("interop-js"))


# --- building and signing with our own modules ------------------------------------------------------

@pytest.fixture(scope="module")
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def did() -> str:
    value = did_web_from_url(BASE_URL)
    assert value == "did:web:127.0.0.1%3A5000"
    return value


@pytest.fixture(scope="module")
def verification_method(did, private_key) -> str:
    return f"{did}#{ed25519_to_multibase(private_key.public_key())}"


@pytest.fixture(scope="module")
def documents(did, private_key, verification_method) -> dict[str, Any]:
    """What verify.mjs may load besides the bundled contexts: our DID document, under the DID."""
    document = did_document(did, [SigningKey.from_private_key(private_key)])
    listed = [m["id"] for m in document["verificationMethod"]]
    assert verification_method in listed and verification_method in document["assertionMethod"]
    return {did: document}


def ob_credential(did: str, *, description: str = "A short course in data literacy.",
                  credits: float = 6) -> dict[str, Any]:
    """An OB 3.0 OpenBadgeCredential shaped like the ones we issue."""
    salt = "5a1f0c8e9b2d4e6f8a0b1c2d3e4f5a6b"
    email = "learner@example.com"
    achievement_name = "數據素養基礎 Data Literacy Foundations 🎓"
    return {
        "@context": [VC_V2, OB_V3P0],
        "id": f"{BASE_URL}/credentials/3f2a9c1e-7b4d-4e8a-9c0f-1d2e3f4a5b6c",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": achievement_name,
        "description": description,
        "issuer": {
            "id": did,
            "type": ["Profile"],
            "name": SCHOOL,
            "url": "https://www.hkuspace.hku.hk/",
        },
        "validFrom": "2025-01-15T08:30:00Z",
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [{
                "type": "IdentityObject",
                "hashed": True,
                "identityHash": "sha256$" + hashlib.sha256((email + salt).encode("utf-8")).hexdigest(),
                "identityType": "emailAddress",
                "salt": salt,
            }],
            "achievement": {
                "id": f"{BASE_URL}/achievements/DL101",
                "type": ["Achievement"],
                "achievementType": "MicroCredential",
                "name": achievement_name,
                "description": description,
                "criteria": {"narrative": "完成全部單元並通過評核。Complete every unit and pass the assessment."},
                "creditsAvailable": credits,
            },
            "creditsEarned": credits,
        },
    }


def sign(document: dict, private_key: Ed25519PrivateKey, verification_method: str) -> dict:
    signed = proofs.create_eddsa_rdfc_2022(document, private_key, verification_method,
                                           created="2025-01-15T08:30:00Z")
    assert signed["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    return signed


@pytest.fixture(scope="module")
def signed(did, private_key, verification_method) -> dict:
    return sign(ob_credential(did), private_key, verification_method)


# --- our signatures verify there ----------------------------------------------------------------------

def test_credential_signed_by_us_verifies_in_js(js, signed, documents):
    js.assert_verified(signed, documents)


def test_control_characters_verify_in_js(js, did, private_key, verification_method, documents):
    """RDFC-1.0 escapes control characters as \\uXXXX (and \\b, \\f, \\t, \\n, \\r by name): both sides
    must canonicalise such strings to the same bytes, or the signature would not verify."""
    credential = ob_credential(did, description=CONTROL_CHARACTERS)
    js.assert_verified(sign(credential, private_key, verification_method), documents)


def test_fractional_credits_verify_in_js(js, did, private_key, verification_method, documents):
    """creditsAvailable is xsd:float in the OB context: a fractional JSON number becomes a canonical
    xsd:double lexical form ("7.5E0"), which both implementations must write alike."""
    credential = ob_credential(did, credits=7.5)
    js.assert_verified(sign(credential, private_key, verification_method), documents)


def test_compact_serialisation_verifies_in_js(js, signed, documents):
    """The signature covers the canonical form, not the JSON text: whitespace and escaping don't matter."""
    compact = json.dumps(signed, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    js.assert_verified(compact, documents)


# --- a changed byte fails there ---------------------------------------------------------------------

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _change_one_character(text: str) -> str:
    """`text` with its last character swapped for another base58btc character."""
    last = text[-1]
    replacement = next(c for c in BASE58_ALPHABET if c != last)
    return text[:-1] + replacement


def _tamper_name(credential: dict) -> None:
    achievement = credential["credentialSubject"]["achievement"]
    achievement["name"] = achievement["name"].replace("數據", "數劇")


def _tamper_valid_from(credential: dict) -> None:
    credential["validFrom"] = credential["validFrom"].replace("08:30:00", "08:31:00")


def _tamper_proof_value(credential: dict) -> None:
    credential["proof"]["proofValue"] = _change_one_character(credential["proof"]["proofValue"])


@pytest.mark.parametrize("tamper", [_tamper_name, _tamper_valid_from, _tamper_proof_value],
                         ids=["achievement-name", "validFrom", "proofValue"])
def test_tampered_credential_fails_in_js(js, signed, documents, tamper):
    credential = copy.deepcopy(signed)
    tamper(credential)
    assert credential != signed
    error = js.assert_rejected(credential, documents)
    assert "signature" in error.lower(), error


def test_other_key_fails_in_js(js, did, signed):
    """A DID document that lists a different key under the same id must not verify the credential."""
    other = Ed25519PrivateKey.generate()
    document = {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "verificationMethod": [{
            "id": signed["proof"]["verificationMethod"], "type": "Multikey", "controller": did,
            "publicKeyMultibase": ed25519_to_multibase(other.public_key()),
        }],
        "assertionMethod": [signed["proof"]["verificationMethod"]],
    }
    error = js.assert_rejected(signed, {did: document})
    assert "signature" in error.lower(), error


def test_js_loader_is_strict(js, signed):
    """Without our DID document the JavaScript verifier must refuse, not fetch anything."""
    error = js.assert_rejected(signed, {})
    assert "refused to load" in error, error


# --- end to end: what the service serves verifies there ----------------------------------------------

@pytest.fixture(scope="module")
def service(js, tmp_path_factory):
    """The application after `issuer init` (temporary SQLite database and key folder), a test client and
    the admin token that `init` printed."""
    home = tmp_path_factory.mktemp("interop-service")
    with pytest.MonkeyPatch.context() as env:
        for name in ("ISSUER_BASE_URL", "ISSUER_URL", "ISSUER_DATABASE_URL", "ISSUER_KEY_DIR"):
            env.delenv(name, raising=False)
        app = create_app({
            "ISSUER_BASE_URL": BASE_URL,
            "ISSUER_DATABASE_URL": f"sqlite:///{home / 'issuer.sqlite'}",
            "ISSUER_KEY_DIR": str(home / "keys"),
            "TESTING": True,
        })
        init = app.test_cli_runner().invoke(args=["init"])
    assert init.exit_code == 0, init.output
    printed = re.search(r"Admin API token[^:]*:\s*(\S+)", init.output)
    assert printed, f"`issuer init` printed no admin token:\n{init.output}"
    return app.test_client(), printed.group(1)


ISSUE_REQUESTS = {
    "plain": {"recipient": {"email": "learner@example.com", "name": "陳大文"}},
    "full": {
        "recipient": {"email": "Learner.Two@Example.com", "name": "李小明", "did": "did:example:learner-two"},
        "awarded_on": "2024-12-20",
        "result": "A-",
        "evidence": [{"id": "https://portfolio.example.com/projects/1", "name": "期末專題 Final project",
                      "narrative": "Built a dashboard of 香港 open data 📊."}],
    },
}


@pytest.mark.parametrize("request_name", list(ISSUE_REQUESTS))
def test_served_credential_verifies_in_js(js, service, request_name):
    """Issue through POST /api/v1/credentials, then verify the exact bytes served at
    /credentials/<id>.json against the DID document served at /.well-known/did.json."""
    client, token = service
    code = client.get("/api/v1/achievements").get_json()["achievements"][0]["code"]
    body = {"achievement": code, **ISSUE_REQUESTS[request_name]}
    issued = client.post("/api/v1/credentials", json=body, headers={"Authorization": f"Bearer {token}"})
    assert issued.status_code == 201, issued.get_data(as_text=True)

    served = client.get(urlsplit(issued.get_json()["url"]).path + ".json")
    assert served.status_code == 200
    did_response = client.get("/.well-known/did.json")
    assert did_response.status_code == 200
    did_doc = json.loads(did_response.get_data())
    credential = json.loads(served.get_data())
    assert credential["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    assert credential["proof"]["verificationMethod"].startswith(did_doc["id"] + "#")

    documents = {did_doc["id"]: did_doc, **status_documents(client, credential)}
    js.assert_verified(served.get_data(), documents)

    changed = copy.deepcopy(credential)
    changed["credentialSubject"]["achievement"]["name"] += "!"
    error = js.assert_rejected(changed, documents)
    assert "signature" in error.lower(), error


def test_a_stacked_award_verifies_in_js(js, service):
    """Issue five badges, claim the Certificate they earn, and verify the served award bytes in JS."""
    client, token = service
    email = "stacker@example.com"
    badges = []
    for code in ("AI-101", "AI-102", "AI-201", "AI-202", "AI-203"):
        issued = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                             json={"achievement": code, "recipient": {"email": email}, "awarded_on": "2025-05-01"})
        assert issued.status_code == 201, issued.get_data(as_text=True)
        badges.append(json.loads(client.get(urlsplit(issued.get_json()["url"]).path + ".json").get_data()))
    claimed = client.post("/api/v1/awards", json={"recipient": {"email": email}, "credentials": badges})
    assert claimed.status_code == 201, claimed.get_data(as_text=True)
    served = client.get(urlsplit(claimed.get_json()["url"]).path + ".json")
    did_doc = json.loads(client.get("/.well-known/did.json").get_data())
    assert json.loads(served.get_data())["credentialSubject"]["achievement"]["achievementType"] == "Certificate"
    js.assert_verified(served.get_data(), {did_doc["id"]: did_doc,
                                           **status_documents(client, json.loads(served.get_data()))})


def test_a_revoked_badge_fails_in_js_while_another_on_its_list_passes(js, service):
    """Issue #5's "independent verifier": verify.mjs checks status with Digital Bazaar's
    @digitalbazaar/vc-bitstring-status-list, fed the /status/<id> document the service serves."""
    client, token = service
    headers = {"Authorization": f"Bearer {token}"}
    code = client.get("/api/v1/achievements").get_json()["achievements"][0]["code"]
    issued = [client.post("/api/v1/credentials", headers=headers,
                          json={"achievement": code, "recipient": {"email": f"js-revoke-{n}@example.com"}})
              for n in range(2)]
    assert all(r.status_code == 201 for r in issued)
    revoked, kept = (r.get_json()["credential"] for r in issued)
    assert revoked["credentialStatus"]["statusListCredential"] == kept["credentialStatus"]["statusListCredential"]
    answer = client.post(f"/api/v1/credentials/{issued[0].get_json()['id']}/revoke", headers=headers,
                         json={"reason": "issued to the wrong learner", "category": "issued in error"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    did_doc = json.loads(client.get("/.well-known/did.json").get_data())
    documents = {did_doc["id"]: did_doc, **status_documents(client, revoked)}
    error = js.assert_rejected(revoked, documents)
    assert "status: revocation" in error, error
    js.assert_verified(kept, documents)

    # the status work is the library's: a list whose revoked bit was cleared after signing does not verify
    url = revoked["credentialStatus"]["statusListCredential"]
    tampered = copy.deepcopy(documents)
    tampered[url]["credentialSubject"]["encodedList"] = status.Bitstring(status.MIN_ENTRIES).encode()
    error = js.assert_rejected(revoked, tampered)
    assert "BitstringStatusListCredential\" not verified" in error, error


def status_documents(client, credential: dict) -> dict[str, Any]:
    """The status list a credential points to, as the service serves it, keyed by its URL."""
    url = credential["credentialStatus"]["statusListCredential"]
    served = client.get(urlsplit(url).path)
    assert served.status_code == 200
    return {url: json.loads(served.get_data())}
