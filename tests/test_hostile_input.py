"""The hostile-input corpus through HTTP (issue #9): every case of tests/hostile is posted to each endpoint
that reads credentials — POST /api/v1/verify (file upload and raw body), the /verify page, and
POST /api/v1/awards/evaluate — and must get a 4xx with a message or a 200 report with verified false,
never a 5xx, never a hang, never a stored row, never a connection off this machine.

Network cases (did:web keys and status lists on internal addresses, redirects to them) use a stub
resolver; the only server they reach is a loopback one that a "public" name is steered to."""

from __future__ import annotations

import functools
import html
import io
import json
import signal
import socket
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from issuer import fetch, multikey, proofs, status
from issuer.db import get_session
from issuer.models import AuditEntry, Award, AwardApplication, Credential, Notification, StatusEntry
from tests import hostile
from tests.hostile import REJECT, UNVERIFIED, Case
from tests.test_awards import AI_CERTIFICATE, LEARNER, issue_badges
from tests.test_fetch import make_tls, redirect, send_json, serve, stub_resolver
from tests.test_verify import unsigned_credential

SECONDS = 20  # per request: a hang fails the test instead of the run
PUBLIC_IP = "93.184.215.14"
INTERNAL = {"loopback": "127.0.0.1", "metadata": "169.254.169.254", "private-10": "10.1.2.3",
            "private-192": "192.168.1.1", "multicast": "224.0.0.1", "unspecified": "0.0.0.0",
            "mapped-v6": "::ffff:127.0.0.1", "loopback-other": "127.5.6.7", "link-local": "169.254.1.1",
            "private-172": "172.16.0.1", "shared-100": "100.64.0.1", "loopback-v6": "::1",
            "link-local-v6": "fe80::1", "unique-local-v6": "fd00::1", "multicast-v6": "ff02::1"}
COUNTED = (Credential, Award, AuditEntry, AwardApplication, Notification, StatusEntry)


@contextmanager
def deadline(seconds: int = SECONDS):
    def expired(signum, frame):
        raise TimeoutError(f"request still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Names resolve only through the stub; a connection anywhere but loopback fails the test."""
    attempts: list = []
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({f"{k}.test": [v] for k, v in INTERNAL.items()}))
    real_connect = socket.socket.connect

    def guarded(sock, address):
        attempts.append(address)
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to connect outside the machine: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def counts(app) -> dict[str, int]:
    with app.app_context():
        session = get_session()
        found = {model.__name__: session.scalar(select(func.count()).select_from(model)) for model in COUNTED}
        session.rollback()
        return found


def timed(call):
    start = time.perf_counter()
    with deadline():
        response = call()
    assert time.perf_counter() - start < SECONDS
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    return response


def api_upload(client, case: Case):
    return timed(lambda: client.post("/api/v1/verify", data={"file": hostile.as_upload(case)},
                                     content_type="multipart/form-data"))


def api_body(client, case: Case):
    return timed(lambda: client.post("/api/v1/verify", data=case.data, content_type=case.mimetype))


def page(client, case: Case):
    return timed(lambda: client.post("/verify", data={"file": hostile.as_upload(case)},
                                     content_type="multipart/form-data"))


def evaluate(client, case: Case):
    return timed(lambda: client.post("/api/v1/awards/evaluate", content_type="multipart/form-data",
                                     data={"email": LEARNER, "target": "Certificate",
                                           "credentials": hostile.as_upload(case)}))


def check_api(response, case: Case) -> None:
    body = response.get_json()
    if case.expect == REJECT:
        assert 400 <= response.status_code < 500, (case.name, response.status_code, body)
        assert response.mimetype == "application/problem+json"
        assert body["detail"] and "Traceback" not in body["detail"]
        assert case.message.lower() in body["detail"].lower(), (case.name, body["detail"])
    else:
        assert response.status_code == 200, (case.name, response.status_code, body)
        assert body["verified"] is False, (case.name, body)
        if case.message:
            failed = " ".join(c["detail"] or "" for c in body["checks"] if c["ok"] is False)
            assert case.message.lower() in failed.lower(), (case.name, failed)


def check_page(response, case: Case) -> None:
    page_text = response.get_data(as_text=True)
    assert "Traceback" not in page_text
    if case.expect == REJECT:
        assert response.status_code == 400, (case.name, response.status_code)
        assert case.message.lower() in html.unescape(page_text).lower(), (case.name, "message not shown")
    else:
        assert response.status_code == 200, (case.name, response.status_code)
        assert 'data-verified="true"' not in page_text


def check_evaluate(response, case: Case) -> None:
    body = response.get_json()
    if case.expect == REJECT:
        assert 400 <= response.status_code < 500, (case.name, response.status_code, body)
        assert body["detail"] and case.message.lower() in body["detail"].lower(), (case.name, body["detail"])
    else:
        assert response.status_code == 200, (case.name, response.status_code, body)
        assert body.get("eligible") is not True, body


def run_everywhere(app, client, case: Case, *, raw_body: bool = True, awards: bool = True) -> None:
    before = counts(app)
    check_api(api_upload(client, case), case)
    if raw_body:
        check_api(api_body(client, case), case)
    check_page(page(client, case), case)
    if awards:
        check_evaluate(evaluate(client, case), case)
    assert counts(app) == before, f"{case.name} stored something"


@pytest.fixture
def issued(client, issue_token) -> str:
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    return client.get(f"/credentials/{badge['id']}.json").get_data(as_text=True)


# --- static corpus: no credential of ours needed ----------------------------------------------------------

STATIC = hostile.json_cases() + hostile.svg_cases() + hostile.pdf_cases()


@pytest.mark.parametrize("case", STATIC, ids=[c.name for c in STATIC])
def test_static_hostile_inputs_are_refused_everywhere(app, client, case):
    run_everywhere(app, client, case)


def test_a_body_over_the_request_limit_is_413_with_a_message(app, client):
    before = counts(app)
    big = b'{"a": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    for response in (timed(lambda: client.post("/api/v1/verify", data=big, content_type="application/json")),
                     timed(lambda: client.post("/api/v1/verify", content_type="multipart/form-data",
                                               data={"file": (io.BytesIO(big), "big.json")}))):
        assert response.status_code == 413
        assert response.get_json()["detail"]
    assert timed(lambda: client.post("/verify", content_type="multipart/form-data",
                                     data={"file": (io.BytesIO(big), "big.json")})).status_code == 413
    assert counts(app) == before


# --- variations on one of our credentials ----------------------------------------------------------------

def test_jsonld_context_attacks_are_reported_not_verified(app, client, issued):
    for case in hostile.jsonld_cases(json.loads(issued)):
        run_everywhere(app, client, case)


def test_a_bom_is_tolerated_in_a_file_and_refused_in_a_json_body(app, client, issued):
    case = hostile.bom_prefixed(json.loads(issued))
    before = counts(app)
    check_api(api_upload(client, case), case)
    check_page(page(client, case), case)
    check_evaluate(evaluate(client, case), case)
    refused = api_body(client, case)
    assert refused.status_code == 400 and "BOM" in refused.get_json()["detail"]
    assert counts(app) == before


def test_the_unaltered_credential_verifies_so_the_corpus_tests_something(client, issued):
    body = api_body(client, Case("ok", issued.encode(), "badge.json", "application/json", UNVERIFIED)).get_json()
    assert body["verified"] is True, body


def _issuer_key(client) -> tuple[str, bytes]:
    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization

    (jwk, *_) = client.get("/.well-known/jwks.json").get_json()["keys"]
    public = pyjwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk)) if jwk["kty"] == "EC" else \
        pyjwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return jwk["kid"], pem


def test_jwt_attacks_are_reported_not_verified(app, client, issued, no_network):
    kid, pem = _issuer_key(client)
    for case in hostile.jwt_cases(json.loads(issued), kid, pem):
        run_everywhere(app, client, case)
    assert no_network == []


def test_baked_png_attacks_are_refused(app, client, issued):
    for case in hostile.png_cases(issued):
        run_everywhere(app, client, case)


# --- keys and status lists on internal addresses ---------------------------------------------------------

def _did_web_variant(issued: str, host: str) -> Case:
    doc = json.loads(issued)
    did = f"did:web:{host}"
    doc["issuer"]["id"] = did
    doc["proof"]["verificationMethod"] = f"{did}#key-1"
    return Case(f"did-web-{host}", json.dumps(doc).encode(), "badge.json", "application/json", UNVERIFIED)


@pytest.mark.parametrize("name", list(INTERNAL))
def test_did_web_keys_on_internal_addresses_are_never_fetched(app, client, issued, no_network, name):
    run_everywhere(app, client, _did_web_variant(issued, f"{name}.test"), awards=False)
    body = api_body(client, _did_web_variant(issued, f"{name}.test")).get_json()
    proof = next(c for c in body["checks"] if c["name"] == "proof")
    assert "refused" in proof["detail"] or "not public" in proof["detail"], proof
    assert no_network == []


@pytest.mark.parametrize("literal", ["169.254.169.254", "127.0.0.1%3A5000", "10.0.0.1", "%5B%3A%3A1%5D"])
def test_did_web_with_an_internal_ip_literal_is_never_fetched(app, client, issued, no_network, literal):
    run_everywhere(app, client, _did_web_variant(issued, literal), awards=False)
    assert no_network == []


def signed_with_status(list_url: str) -> tuple[dict, object, str]:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    did = multikey.did_key(private.public_key())
    method = f"{did}#{did[len('did:key:'):]}"
    doc = unsigned_credential(did)
    doc["credentialStatus"] = status.status_entry(list_url, 7)
    return proofs.create_eddsa_rdfc_2022(doc, private, method, created="2024-01-15T09:00:00Z"), private, method


@pytest.mark.parametrize("name", list(INTERNAL))
def test_status_lists_on_internal_addresses_are_never_fetched(app, client, no_network, name):
    credential, _, _ = signed_with_status(f"https://{name}.test/status/1")
    case = Case(f"status-{name}", json.dumps(credential).encode(), "badge.json", "application/json", UNVERIFIED)
    run_everywhere(app, client, case, awards=False)
    body = api_body(client, case).get_json()
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["proof"]["ok"] is True  # so the status list really was about to be fetched
    assert checks["status"]["ok"] is False and "refused" in checks["status"]["detail"], checks["status"]
    assert no_network == []


@contextmanager
def public_name_served_locally(monkeypatch, tmp_path, routes, host="public.test"):
    """``host`` resolves to a public address; its connections are steered to a loopback HTTPS server with a
    certificate for ``host`` that the verifier's fetch policy is made to trust."""
    server_tls, client_tls = make_tls(host, tmp_path)
    with serve(routes, tls=server_tls) as server:
        port = server.server_address[1]
        monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({
            host: [PUBLIC_IP], **{f"{k}.test": [v] for k, v in INTERNAL.items()}}))
        monkeypatch.setattr(fetch, "FetchPolicy", functools.partial(fetch.FetchPolicy, ssl_context=client_tls))
        real = fetch.create_connection

        def steer(address, timeout=None, *args, **kwargs):
            assert address[0] == PUBLIC_IP, f"connection to an unvetted address {address}"
            return real(("127.0.0.1", port), timeout)

        monkeypatch.setattr(fetch, "create_connection", steer)
        yield f"{host}:{port}"


@pytest.mark.parametrize("location", ["https://metadata.test/latest/meta-data", "https://169.254.169.254/x",
                                      "https://private-10.test/did.json", "https://[::ffff:127.0.0.1]/x",
                                      "http://public.test/downgraded", "file:///etc/passwd"])
def test_a_did_document_redirecting_to_an_internal_address_is_refused(app, client, issued, monkeypatch,
                                                                     tmp_path, location):
    with public_name_served_locally(monkeypatch, tmp_path, {"/.well-known/did.json": redirect(location)}) as host:
        case = _did_web_variant(issued, host.replace(":", "%3A"))
        run_everywhere(app, client, case, awards=False)
        body = api_body(client, case).get_json()
    proof = next(c for c in body["checks"] if c["name"] == "proof")
    assert proof["ok"] is False and "refus" in proof["detail"], proof


def test_a_status_list_that_is_a_gzip_bomb_fails_fast_and_closed(app, client, monkeypatch, tmp_path):
    routes = {}
    with public_name_served_locally(monkeypatch, tmp_path, routes) as host:
        list_url = f"https://{host}/status/1"
        credential, private, method = signed_with_status(list_url)
        bits = status.Bitstring()
        doc = status.list_credential(list_url=list_url, issuer=credential["issuer"]["id"], bits=bits,
                                     valid_from="2024-01-01T00:00:00Z", valid_until=None, ttl_ms=None)
        doc["credentialSubject"]["encodedList"] = hostile.gzip_bomb_list()
        signed_list = proofs.create_eddsa_rdfc_2022(doc, private, method, created="2024-01-15T09:00:00Z")
        assert len(json.dumps(signed_list)) < 256 * 1024  # small enough to pass the fetch limit
        routes["/status/1"] = lambda handler: send_json(handler, signed_list)
        case = Case("status-gzip-bomb", json.dumps(credential).encode(), "badge.json", "application/json",
                    UNVERIFIED, "expands beyond")
        start = time.perf_counter()
        run_everywhere(app, client, case, awards=False)
        assert time.perf_counter() - start < 10


# --- slow servers, endless bodies and redirects, end to end ------------------------------------------------

FETCH_TIMEOUT = 1.0  # ISSUER_FETCH_TIMEOUT for these tests, so that a hang shows as a slow test, not a stuck one


def _silent(handler):
    time.sleep(3 * FETCH_TIMEOUT)


def _trickle(handler):
    """One byte at a time, each arriving well within any socket timeout: only a total deadline stops it."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(200):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.05)


def _endless(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    handler.wfile.write(b'{"padding": "')
    for _ in range(100_000):  # 400 MB: far past any limit, but the thread still ends
        handler.wfile.write(b"x" * 4096)


def _declared_huge(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(1024 * 1024 * 1024))
    handler.end_headers()


SLOW = {"silent": (_silent, "timed out"), "trickle": (_trickle, "timed out"),
        "endless": (_endless, "limit"), "declared-huge": (_declared_huge, "exceeds")}


def _fails_in_time(app, client, case: Case, check: str, reason: str, *, requests: int = 3) -> None:
    """Every endpoint answers within a couple of fetch timeouts, and the named check fails saying why."""
    app.config["ISSUER_FETCH_TIMEOUT"] = FETCH_TIMEOUT
    start = time.perf_counter()
    run_everywhere(app, client, case, awards=False)
    body = api_body(client, case).get_json()
    elapsed = time.perf_counter() - start
    assert elapsed < (requests + 1) * 3 * FETCH_TIMEOUT, f"{elapsed:.1f} s for {requests + 1} requests"
    found = {c["name"]: c for c in body["checks"]}[check]
    assert found["ok"] is False and reason in found["detail"], found


@pytest.mark.parametrize("behaviour", list(SLOW))
def test_a_slow_or_endless_did_web_server_fails_the_proof_in_bounded_time(app, client, issued, monkeypatch,
                                                                          tmp_path, behaviour):
    route, reason = SLOW[behaviour]
    with public_name_served_locally(monkeypatch, tmp_path, {"/.well-known/did.json": route}) as host:
        _fails_in_time(app, client, _did_web_variant(issued, host.replace(":", "%3A")), "proof", reason)


@pytest.mark.parametrize("behaviour", list(SLOW))
def test_a_slow_or_endless_status_list_server_fails_closed_in_bounded_time(app, client, monkeypatch, tmp_path,
                                                                           behaviour):
    route, reason = SLOW[behaviour]
    with public_name_served_locally(monkeypatch, tmp_path, {"/status/1": route}) as host:
        credential, _, _ = signed_with_status(f"https://{host}/status/1")
        case = Case(f"status-{behaviour}", json.dumps(credential).encode(), "badge.json", "application/json",
                    UNVERIFIED)
        _fails_in_time(app, client, case, "status", reason)


@pytest.mark.parametrize("location", ["https://metadata.test/status/1", "https://169.254.169.254/status/1",
                                      "https://private-172.test/s", "https://[fe80::1]/s",
                                      "https://multicast.test/s", "http://public.test/downgraded",
                                      "file:///etc/passwd"])
def test_a_status_list_redirecting_to_an_internal_address_is_refused(app, client, monkeypatch, tmp_path,
                                                                     no_network, location):
    with public_name_served_locally(monkeypatch, tmp_path, {"/status/1": redirect(location)}) as host:
        credential, _, _ = signed_with_status(f"https://{host}/status/1")
        case = Case("status-redirect", json.dumps(credential).encode(), "badge.json", "application/json",
                    UNVERIFIED)
        run_everywhere(app, client, case, awards=False)
        checks = {c["name"]: c for c in api_body(client, case).get_json()["checks"]}
    assert checks["proof"]["ok"] is True  # so the list really was fetched, and the redirect refused
    assert checks["status"]["ok"] is False and "refus" in checks["status"]["detail"], checks["status"]
    assert all(address[0] == "127.0.0.1" for address in no_network), no_network  # only the loopback server


@pytest.mark.parametrize("name", ["loopback", "metadata", "private-10", "link-local-v6"])
def test_a_jwt_whose_did_web_key_is_on_an_internal_address_is_never_fetched(app, client, issued, no_network,
                                                                            name):
    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    did = f"did:web:{name}.test"
    payload = {**json.loads(issued)}
    payload.pop("proof")
    payload["issuer"] = {**payload["issuer"], "id": did}
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    token = pyjwt.encode({**payload, "iss": did, "jti": payload["id"]}, key, algorithm="ES256",
                         headers={"kid": f"{did}#key-1", "typ": "JWT"})
    case = Case(f"jwt-did-web-{name}", token.encode(), "badge.jwt", "text/plain", UNVERIFIED, "refused")
    run_everywhere(app, client, case, awards=False)
    assert no_network == []


def test_an_award_application_of_badges_on_slow_servers_is_bounded_as_a_whole(app, client, issued, monkeypatch,
                                                                             tmp_path):
    """One slow server is one fetch timeout; twelve badges each naming a different path on it must not add up
    to twelve timeouts (or more): the request as a whole has a fetch budget."""
    app.config["ISSUER_FETCH_TIMEOUT"] = FETCH_TIMEOUT
    routes = {f"/b{i}/did.json": _silent for i in range(12)}
    with public_name_served_locally(monkeypatch, tmp_path, routes) as host:
        badges = [json.loads(_did_web_variant(issued, f"{host.replace(':', '%3A')}:b{i}").data) for i in range(12)]
        before = counts(app)
        start = time.perf_counter()
        response = timed(lambda: client.post("/api/v1/awards/evaluate",
                                             json={"recipient": {"email": LEARNER}, "credentials": badges}))
        elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["eligible"] is False
    assert counts(app) == before
    assert elapsed < 6 * FETCH_TIMEOUT, f"{elapsed:.1f} s"


def test_a_used_up_fetch_budget_refuses_further_fetches_without_connecting(no_network):
    budget = fetch.FetchBudget(1.0)
    budget.spend(1.0)
    with pytest.raises(fetch.FetchError, match="used up its 1 s"):
        fetch.fetch_json("https://public.test/.well-known/did.json", policy=fetch.FetchPolicy(budget=budget))
    assert no_network == []
