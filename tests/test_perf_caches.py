"""Issue #7 performance work that must not change an answer: the compiled schema check agrees with
jsonschema, and the in-process caches of status lists and page verdicts never hide a revocation."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from issuer import schema
from issuer.catalogue import DEMO_CATALOGUE, load_catalogue
from issuer.credentials import achievement_document, credential_document

# --- the compiled schema check -------------------------------------------------------------------------

REPLACEMENTS: list[Any] = [None, True, False, 0, 1, 1.0, 2.5, -1, "", "x", "not a uri", "urn:x:y",
                           "2010-02-30T00:00:00Z", "2025-01-01T00:00:00Z", "2025-01-01", [], {}, ["x"],
                           [{}], {"id": "urn:x:y"}, {"type": "Image"}, "sha256$" + "ab" * 32]


def _badges() -> list[dict]:
    catalogue = load_catalogue(DEMO_CATALOGUE)
    issuer = {"id": "https://badges.example.edu.hk/issuers/1", "type": ["Profile"], "name": "School"}
    out = []
    for index, mc in enumerate(catalogue[:4]):
        achievement = achievement_document(mc, f"https://badges.example.edu.hk/achievements/{mc.code}",
                                           image_url="https://badges.example.edu.hk/a.png")
        doc = credential_document(
            credential_id=f"urn:uuid:9f1f0f2e-8d55-4c0b-a3a6-6f1c1f6ad00{index}", issuer_profile=issuer,
            achievement=achievement, recipient_email="learner@example.com", salt="f00d",
            recipient_did="did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK" if index % 2 else None,
            valid_from="2025-07-01T09:00:00+08:00", result="A" if index == 0 else None)
        doc["credentialStatus"] = {"id": "https://x.example/s#4", "type": "BitstringStatusListEntry",
                                   "statusPurpose": "revocation", "statusListIndex": "4",
                                   "statusListCredential": "https://x.example/s"}
        doc["proof"] = [{"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022",
                         "created": "2025-01-01T00:00:00Z", "proofPurpose": "assertionMethod",
                         "verificationMethod": "https://x.example/issuer#key", "proofValue": "z3abc"}]
        out.append(doc)
    return out


def _standard_examples() -> list[dict]:
    folder = Path(__file__).resolve().parents[2] / "shared" / "standards" / "examples"
    found = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and "credentialSubject" in doc:
            found.append(doc)
    return found


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _mutations(doc: dict) -> list[tuple[tuple, Any]]:
    """Every value replaced by each of REPLACEMENTS, every key and list item removed, every list grown."""
    return [(path, replacement) for path in _paths(doc) if path
            for replacement in [*REPLACEMENTS, "__delete__", "__grow__"]]


def _mutant(doc: dict, path: tuple, replacement: Any) -> dict:
    mutant = copy.deepcopy(doc)
    *parent_path, last = path
    parent = mutant
    for part in parent_path:
        parent = parent[part]
    if replacement == "__delete__":
        del parent[last]
    elif replacement == "__grow__":
        if isinstance(parent[last], list):
            parent[last].append(copy.deepcopy(parent[last][0]) if parent[last] else "x")
    else:
        parent[last] = copy.deepcopy(replacement)
    return mutant


def test_the_compiled_check_agrees_with_jsonschema_on_documents_and_their_mutations():
    fast = schema.fast_validator()
    assert fast is not None, "the compiler no longer covers the schema: jsonschema would run every time"
    reference = schema.validator().is_valid
    documents = _badges() + _standard_examples()
    rng = random.Random(7)
    checked = accepted = 0
    for index, doc in enumerate(documents):
        mutations = _mutations(doc)
        # A sample (jsonschema takes ~3 ms a document): a third of our first badge's, a few of the others'.
        mutants = [_mutant(doc, *m) for m in rng.sample(mutations, min(len(mutations), 800 if index == 0 else 40))]
        for candidate in [doc, *mutants]:
            expected = reference(candidate)
            assert fast(candidate) == expected, json.dumps(candidate)[:2000]
            checked += 1
            accepted += expected
    assert checked > 1500 and 0 < accepted < checked


@pytest.mark.parametrize("value, ok", [(True, True), (1, False), (1.0, False), ("true", False)])
def test_const_true_is_not_one(value, ok):
    doc = _badges()[0]
    doc["credentialSubject"]["identifier"][0]["hashed"] = value
    assert schema.fast_validator()(doc) is ok
    assert schema.validator().is_valid(doc) is ok


def test_errors_are_still_described_by_jsonschema():
    doc = _badges()[0]
    doc["validFrom"] = "2010-02-30T00:00:00Z"
    problems = schema.validate_credential(doc)
    assert problems and problems[0].startswith("$.validFrom: '2010-02-30T00:00:00Z' is not an RFC 3339")
    assert schema.validate_credential(_badges()[0]) == []


# --- status lists and page verdicts: a revocation is seen at once --------------------------------------

def _issue(client, token, email="cache@example.com", did=None) -> dict:
    recipient = {"email": email, **({"did": did} if did else {})}
    response = client.post("/api/v1/credentials", headers={"Authorization": f"Bearer {token}"},
                           json={"achievement": "AI-101", "recipient": recipient})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _verify(client, body: dict | str) -> dict:
    if isinstance(body, str):
        return client.post("/api/v1/verify", data=body, content_type="text/plain").get_json()
    return client.post("/api/v1/verify", data=json.dumps(body), content_type="application/json").get_json()


def _revoke(client, token, credential_id: str):
    response = client.post(f"/api/v1/credentials/{credential_id}/revoke",
                           headers={"Authorization": f"Bearer {token}"}, json={"reason": "issued in error"})
    assert response.status_code == 200, response.get_json()


def _status_check(report: dict) -> dict:
    return next(c for c in report["checks"] if c["name"] == "status")


def _page_verdict(client, credential_id: str) -> tuple[str, str]:
    text = client.get(f"/credentials/{credential_id}", headers={"Accept": "text/html"}).get_data(as_text=True)
    verdict = "passed" if 'class="verdict passed"' in text else "failed"
    checked = text.split("Checked by", 1)[1].split('<time datetime="', 1)[1].split('"', 1)[0]
    return verdict, checked


def test_a_revocation_is_seen_by_the_very_next_verification(client, make_token):
    token = make_token("issue revoke")
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    badge, other = _issue(client, token, did=did), _issue(client, token, "other@example.com")
    for _ in range(3):  # warm every cache: the parsed list, its verified proof, the decoded bits
        assert _verify(client, badge["credential"])["verified"]
        assert _verify(client, badge["jwt"])["verified"]
    _revoke(client, token, badge["id"])
    for report in (_verify(client, badge["credential"]), _verify(client, badge["jwt"])):
        assert not report["verified"]
        assert _status_check(report)["ok"] is False and "revoked" in _status_check(report)["detail"]
    assert _verify(client, other["credential"])["verified"]  # same list, another entry: still clear


def test_the_page_verdict_is_reused_but_a_revocation_shows_at_once(client, make_token):
    token = make_token("issue revoke")
    badge = _issue(client, token)
    first = _page_verdict(client, badge["id"])
    assert first[0] == "passed"
    assert _page_verdict(client, badge["id"]) == first  # reused: the same time of checking
    _revoke(client, token, badge["id"])
    verdict, _ = _page_verdict(client, badge["id"])
    assert verdict == "failed"


def test_the_page_verdict_expires(client, issue_token, monkeypatch):
    from datetime import UTC, datetime

    from issuer.web import public

    badge = _issue(client, issue_token)
    clock = [1000.0]
    monkeypatch.setattr(public.time, "monotonic", lambda: clock[0])
    verdict, checked = _page_verdict(client, badge["id"])
    monkeypatch.setattr(public, "utcnow", lambda: datetime(2099, 1, 1, tzinfo=UTC))
    clock[0] += public.PAGE_VERDICT_TTL - 1
    assert _page_verdict(client, badge["id"]) == (verdict, checked)  # still the verdict of then
    clock[0] += 2
    assert _page_verdict(client, badge["id"])[1] == "2099-01-01T00:00:00Z"  # checked afresh


def test_a_changed_stored_document_is_checked_afresh(app, client, issue_token):
    from issuer.db import get_session
    from issuer.models import Credential

    badge = _issue(client, issue_token)
    assert _page_verdict(client, badge["id"])[0] == "passed"
    with app.app_context():
        session = get_session()
        row = session.get(Credential, badge["id"])
        document = json.loads(row.document)
        document["credentialSubject"]["achievement"]["name"] = "Doctor of Everything"
        row.document = json.dumps(document)
        session.commit()
    assert _page_verdict(client, badge["id"])[0] == "failed"


def test_a_remembered_list_proof_does_not_cover_a_changed_list(app, client, issue_token):
    """The memo of verified list proofs is keyed by the whole document: flipping a bit of a list whose
    proof verified before makes the proof fail, not pass from memory."""
    from issuer import status
    from issuer.identity import get_verifier

    badge = _issue(client, issue_token)
    assert _verify(client, badge["credential"])["verified"]
    list_url = badge["credential"]["credentialStatus"]["statusListCredential"]
    listed = client.get(list_url.split("127.0.0.1:5000", 1)[1]).get_json()
    bits = status.Bitstring.decode(listed["credentialSubject"]["encodedList"])
    bits.set(int(badge["credential"]["credentialStatus"]["statusListIndex"]))
    forged = copy.deepcopy(listed)
    forged["credentialSubject"]["encodedList"] = bits.encode()
    with app.test_request_context():
        verifier = get_verifier()
        verifier.status_lists.local = lambda url: forged if url == list_url else None
        report = verifier.verify_credential(badge["credential"]).to_json()
    assert not report["verified"]
    assert "does not verify" in _status_check(report)["detail"]


def test_the_decoded_list_cache_answers_by_the_encoded_text():
    from issuer import status

    clear, one = status.Bitstring(status.MIN_ENTRIES), status.Bitstring(status.MIN_ENTRIES)
    one.set(5)
    entry = status.parse_entry({"id": "https://x.example/s#5", "type": "BitstringStatusListEntry",
                                "statusPurpose": "revocation", "statusListIndex": "5",
                                "statusListCredential": "https://x.example/s"})

    def listing(bits):
        return {"type": ["VerifiableCredential", "BitstringStatusListCredential"],
                "credentialSubject": {"type": "BitstringStatusList", "statusPurpose": "revocation",
                                      "encodedList": bits.encode()}}

    for _ in range(2):
        assert status.read_status(entry, listing(clear)) == 0
        assert status.read_status(entry, listing(one)) == 1


def _nonces(response) -> tuple[set[str], str]:
    import re

    text = response.get_data(as_text=True)
    header = response.headers["Content-Security-Policy"]
    return set(re.findall(r'<script nonce="([^"]+)"', text)), re.search(r"'nonce-([^']+)'", header).group(1)


def test_a_reused_page_carries_a_fresh_nonce_each_time(client, issue_token):
    """The rendered page is reused like its verdict; its scripts' nonce is the response's own each time."""
    from issuer.web import public

    badge = _issue(client, issue_token)
    seen = []
    for _ in range(3):
        response = client.get(f"/credentials/{badge['id']}", headers={"Accept": "text/html"})
        in_page, in_header = _nonces(response)
        assert in_page <= {in_header}  # any script of the page carries this response's nonce
        assert public._NONCE_PLACEHOLDER not in response.get_data(as_text=True)
        seen.append(in_header)
    assert len(set(seen)) == 3


def test_a_reused_page_is_kept_per_language(client, issue_token):
    badge = _issue(client, issue_token)
    english = client.get(f"/credentials/{badge['id']}", headers={"Accept": "text/html"}).get_data(as_text=True)
    chinese = client.get(f"/credentials/{badge['id']}?lang=zh-Hant",
                         headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'lang="en"' in english and 'lang="zh-Hant"' in chinese
    again = client.get(f"/credentials/{badge['id']}", headers={"Accept": "text/html",
                                                               "Accept-Language": "zh-HK"}).get_data(as_text=True)
    assert 'lang="zh-Hant"' in again
