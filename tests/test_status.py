"""Bitstring Status Lists (issue #5): the bitstring format, list credentials, and the verifier's status
check, which must fail closed: every way a list can be unusable makes the badge unverified, with the
Bitstring Status List error that says why. Lists are served by a loopback HTTP server only."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from issuer import multikey, proofs, status
from issuer.fetch import FetchError, FetchPolicy
from issuer.resolve import KeyResolver, ResolvedKey
from issuer.status import MIN_ENTRIES, Bitstring, StatusError
from issuer.verify import Check, FetchingStatusLists, Verifier, _State, check_status

BSL_FIXTURES = "examples/ob_v3p0/1edtech-validator-fixtures/bitstring-status-list"
COMPLETE = "examples/ob_v3p0/1edtech-validator-fixtures/complete.json"
COMPLETE_LIST = "https://1edtech.edu/credentials/3732/revocations"
OB_CONTEXT = ["https://www.w3.org/ns/credentials/v2",
              "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"]
NOW = datetime(2025, 6, 1, tzinfo=UTC)
LOOPBACK = FetchPolicy(allow_http=True, allow_private=True, timeout=2.0)
INDEX = 94_567


def no_network(url: str) -> dict:
    raise FetchError(f"{url}: no network in tests")


class Static:
    """A status source answering from a dict, counting look-ups."""

    def __init__(self, documents: dict[str, dict]) -> None:
        self.documents = documents
        self.calls: list[str] = []

    def get(self, url: str) -> dict:
        self.calls.append(url)
        if url not in self.documents:
            raise FetchError(f"{url} answered HTTP 404")
        return self.documents[url]


# --- keys, badges and lists ---------------------------------------------------------------------------

class Signer:
    """An issuer identified by a did:key, which needs no network to resolve."""

    def __init__(self) -> None:
        self.private = ed25519.Ed25519PrivateKey.generate()
        self.did = multikey.did_key(self.private.public_key())
        self.method = f"{self.did}#{self.did[len('did:key:'):]}"

    def sign(self, document: dict) -> dict:
        return proofs.create_eddsa_rdfc_2022(document, self.private, self.method,
                                             created="2025-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def issuer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def stranger() -> Signer:
    return Signer()


def badge(issuer: Signer, entry: dict | None) -> dict:
    document = {
        "@context": OB_CONTEXT,
        "id": "urn:uuid:6c1e3a52-0d4f-4b7e-9a0c-2f8d5b1e7a93",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": "Statistics 201",
        "issuer": {"id": issuer.did, "type": ["Profile"], "name": "School of Continuing Studies"},
        "validFrom": "2025-02-01T00:00:00Z",
        "credentialSubject": {
            "id": "did:example:learner-42",
            "type": ["AchievementSubject"],
            "achievement": {
                "id": "https://badges.example.edu/achievements/stats-201",
                "type": ["Achievement"],
                "name": "Statistics 201",
                "description": "Completed the statistics microcredential.",
                "criteria": {"narrative": "Pass the final assessment."},
            },
        },
    }
    if entry is not None:
        document["credentialStatus"] = entry
    return issuer.sign(document)


def signed_list(signer: Signer, url: str, *, set_bits: tuple[int, ...] = (), size: int = MIN_ENTRIES,
                purpose: str = "revocation", issuer_id: str | None = None,
                valid_until: str = "2025-12-31T00:00:00Z") -> dict:
    bits = Bitstring(size)
    for index in set_bits:
        bits.set(index)
    unsigned = status.list_credential(list_url=url, issuer=issuer_id or signer.did, bits=bits,
                                      valid_from="2025-01-01T00:00:00Z", valid_until=valid_until,
                                      ttl_ms=300_000, purpose=purpose, min_entries=0)
    return signer.sign(unsigned)


def official_testlist(load_standard) -> dict:
    """1EdTech's status list credential (the file has no extension, so it loads as text)."""
    return json.loads(load_standard(f"{BSL_FIXTURES}/testlist"))


def verifier(source=None) -> Verifier:
    return Verifier(KeyResolver(fetch=no_network), now=lambda: NOW, status_lists=source)


# --- a loopback server for status lists ------------------------------------------------------------------

class ListServer:
    """Serves JSON documents by path on 127.0.0.1; everything else is a 404."""

    def __init__(self) -> None:
        self.documents: dict[str, dict] = {}
        self.hits: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits.append(self.path)
                document = owner.documents.get(self.path)
                body = json.dumps(document).encode() if document is not None else b"{}"
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/vc+ld+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def publish(self, path: str, document: dict) -> str:
        self.documents[path] = document
        return self.url(path)


@pytest.fixture(scope="module")
def server() -> Iterator[ListServer]:
    srv = ListServer()
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(5)


def over_http() -> Verifier:
    return verifier(FetchingStatusLists(LOOPBACK, now=lambda: NOW))


# --- the bitstring ----------------------------------------------------------------------------------

def test_bit_zero_is_the_most_significant_bit_of_the_first_byte() -> None:
    bits = Bitstring(16)
    bits.set(0)
    bits.set(9)
    assert bytes(bits) == bytes([0x80, 0x40])
    assert bits.get(0) and bits.get(9) and not bits.get(1) and not bits.get(8)
    bits.set(0, False)
    assert bytes(bits) == bytes([0x00, 0x40])


def test_an_encoded_list_round_trips_every_set_bit() -> None:
    rng = random.Random(5)
    chosen = sorted(rng.sample(range(MIN_ENTRIES), 500))
    bits = Bitstring()
    for index in chosen:
        bits.set(index)
    encoded = bits.encode()
    assert encoded.startswith("u") and "=" not in encoded and "+" not in encoded and "/" not in encoded
    raw = gzip.decompress(base64.urlsafe_b64decode(encoded[1:] + "=" * (-len(encoded[1:]) % 4)))
    assert raw == bytes(bits)
    decoded = Bitstring.decode(encoded)
    assert decoded == bits and len(decoded) == MIN_ENTRIES
    assert list(decoded.ones()) == chosen


def test_encoding_depends_only_on_the_bits() -> None:
    """gzip would stamp the time into its header; an unchanged list must give the same document."""
    first = Bitstring()
    first.set(7)
    second = Bitstring()
    second.set(7)
    assert first.encode() == second.encode()


def test_the_official_testlist_has_131072_bits_and_only_bit_23_set(load_standard) -> None:
    bits = Bitstring.decode(official_testlist(load_standard)["credentialSubject"]["encodedList"])
    assert len(bits) == 131072
    assert list(bits.ones()) == [23]
    assert bits.get(23) and not bits.get(22) and not bits.get(24)


def test_a_gzip_bomb_fails_fast() -> None:
    bomb = "u" + base64.urlsafe_b64encode(gzip.compress(bytes(64 * 1024 * 1024), mtime=0)).decode().rstrip("=")
    assert len(bomb) < 100_000  # tiny on the wire, 64 MiB once expanded
    start = time.perf_counter()
    with pytest.raises(StatusError) as caught:
        Bitstring.decode(bomb)
    assert time.perf_counter() - start < 1.0
    assert caught.value.code == status.MALFORMED_VALUE_ERROR and "expands beyond" in caught.value.message


def test_many_small_gzip_members_cannot_add_up_past_the_cap() -> None:
    member = gzip.compress(bytes(1024), mtime=0)
    encoded = "u" + base64.urlsafe_b64encode(member * 9).decode().rstrip("=")
    assert len(Bitstring.decode(encoded, max_bytes=9 * 1024)) == 9 * 1024 * 8
    with pytest.raises(StatusError, match="expands beyond"):
        Bitstring.decode(encoded, max_bytes=8 * 1024)


@pytest.mark.parametrize("encoded", [
    None, 42, "", "u", "zH4sI", "u!!!!", "u" + base64.urlsafe_b64encode(b"not gzip at all").decode(),
    "u" + base64.urlsafe_b64encode(gzip.compress(bytes(2048))[:-12]).decode().rstrip("="),
])
def test_malformed_encoded_lists_are_malformed_value_errors(encoded) -> None:
    with pytest.raises(StatusError) as caught:
        Bitstring.decode(encoded)
    assert caught.value.code == status.MALFORMED_VALUE_ERROR


def test_bits_outside_the_string_are_refused() -> None:
    bits = Bitstring(8)
    for index in (-1, 8, True):
        with pytest.raises(IndexError):
            bits.get(index)


# --- indexes, entries, list credentials -------------------------------------------------------------

def test_random_index_never_returns_a_taken_index() -> None:
    taken = set(range(64)) - {37}
    rng = random.Random(3)
    assert {status.random_index(64, taken, rng, attempts=10_000) for _ in range(5)} == {37}
    assert status.random_index(64, lambda i: i != 12, rng, attempts=10_000) == 12


def test_random_index_is_spread_over_the_whole_list() -> None:
    drawn = [status.random_index(MIN_ENTRIES, set()) for _ in range(200)]
    assert len(set(drawn)) > 190 and max(drawn) > MIN_ENTRIES // 2 and min(drawn) < MIN_ENTRIES // 2


def test_a_full_list_gives_no_index() -> None:
    with pytest.raises(StatusError, match="taken"):
        status.random_index(8, set(range(8)))
    with pytest.raises(StatusError, match="nearly full"):
        status.random_index(8, lambda i: True, attempts=5)


def test_a_status_entry_has_a_string_index_and_an_id_that_is_not_the_list_url() -> None:
    entry = status.status_entry("https://badges.example.edu/status/1", 4711)
    assert entry == {"id": "https://badges.example.edu/status/1#4711", "type": "BitstringStatusListEntry",
                     "statusPurpose": "revocation", "statusListIndex": "4711",
                     "statusListCredential": "https://badges.example.edu/status/1"}
    with pytest.raises(ValueError):
        status.status_entry("https://badges.example.edu/status/1", -1)


def test_a_list_credential_uses_only_the_vc_2_context_and_refuses_short_lists(issuer) -> None:
    url = "https://badges.example.edu/status/1"
    doc = status.list_credential(list_url=url, issuer=issuer.did, bits=Bitstring(),
                                 valid_from=datetime(2025, 1, 1, tzinfo=UTC),
                                 valid_until=datetime(2025, 1, 2, tzinfo=UTC), ttl_ms=60_000)
    assert doc["@context"] == ["https://www.w3.org/ns/credentials/v2"]
    assert doc["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    assert doc["validFrom"] == "2025-01-01T00:00:00Z" and doc["validUntil"] == "2025-01-02T00:00:00Z"
    assert doc["credentialSubject"] | {"encodedList": None} == {
        "id": f"{url}#list", "type": "BitstringStatusList", "statusPurpose": "revocation",
        "encodedList": None, "ttl": 60_000}
    with pytest.raises(ValueError, match="at least 131072"):
        status.list_credential(list_url=url, issuer=issuer.did, bits=Bitstring(1024),
                               valid_from="2025-01-01T00:00:00Z", valid_until=None, ttl_ms=None)


def test_a_full_size_list_signs_and_its_proof_verifies(issuer) -> None:
    doc = signed_list(issuer, "https://badges.example.edu/status/1", set_bits=(0, 131071))
    proofs.verify_proof(doc, doc["proof"], issuer.private.public_key())
    assert list(Bitstring.decode(doc["credentialSubject"]["encodedList"]).ones()) == [0, 131071]


# --- the verifier against lists served over HTTP -----------------------------------------------------

def test_a_badge_whose_bit_is_clear_verifies(issuer, server) -> None:
    url = server.publish("/status/clear", signed_list(issuer, server.url("/status/clear"),
                                                      set_bits=(INDEX + 1,)))
    result = over_http().verify_credential(badge(issuer, status.status_entry(url, INDEX)))
    assert result.verified, result.errors
    assert result.check("status").detail.startswith(f"not revoked: entry {INDEX} of {url} is clear")


def test_a_badge_whose_bit_is_set_is_revoked(issuer, server) -> None:
    url = server.publish("/status/set", signed_list(issuer, server.url("/status/set"), set_bits=(INDEX,)))
    result = over_http().verify_credential(badge(issuer, status.status_entry(url, INDEX)))
    assert not result.verified
    assert result.check("status").ok is False
    assert result.check("status").detail == f"revoked (entry {INDEX} of {url} is set)"
    assert all(c.ok is not False for c in result.checks if c.name != "status")


def fail_closed_case(name: str, issuer: Signer, stranger: Signer, server: ListServer) -> tuple[str, int]:
    """Publish the broken list ``name`` describes; return its URL and the index the badge points at."""
    path = f"/status/{name}"
    url = server.url(path)
    if name == "unreachable":
        return url, INDEX  # nothing published: a 404
    if name == "unsigned":
        doc = signed_list(issuer, url)
        doc.pop("proof")
    elif name == "tampered":
        doc = signed_list(issuer, url, set_bits=(INDEX,))
        doc["credentialSubject"]["encodedList"] = Bitstring().encode()
    elif name == "short":
        doc = signed_list(issuer, url, size=1024)
    elif name == "wrong-purpose":
        doc = signed_list(issuer, url, purpose="suspension")
    elif name == "other-issuer":
        doc = signed_list(stranger, url)
    elif name == "other-issuer-same-name":
        doc = signed_list(stranger, url, issuer_id=issuer.did)
    elif name == "expired":
        doc = signed_list(issuer, url, valid_until="2025-05-01T00:00:00Z")
    elif name == "another-list":
        doc = signed_list(issuer, server.url("/status/elsewhere"))
    elif name == "out-of-range":
        server.publish(path, signed_list(issuer, url))
        return url, MIN_ENTRIES
    else:
        raise AssertionError(name)
    server.publish(path, doc)
    return url, INDEX


@pytest.mark.parametrize(("name", "code", "words"), [
    ("unreachable", "STATUS_RETRIEVAL_ERROR", "HTTP 404"),
    ("unsigned", "STATUS_VERIFICATION_ERROR", "is not signed"),
    ("tampered", "STATUS_VERIFICATION_ERROR", "signature does not match"),
    ("short", "STATUS_LIST_LENGTH_ERROR", "holds 1024 entries"),
    ("wrong-purpose", "STATUS_VERIFICATION_ERROR", "statusPurpose mismatch"),
    ("other-issuer", "STATUS_VERIFICATION_ERROR", "not by the credential's issuer"),
    ("other-issuer-same-name", "STATUS_VERIFICATION_ERROR", "is not the issuer"),
    ("expired", "STATUS_VERIFICATION_ERROR", "has expired"),
    ("another-list", "STATUS_VERIFICATION_ERROR", "may be another list"),
    ("out-of-range", "RANGE_ERROR", f"index {MIN_ENTRIES} is outside"),
])
def test_an_unusable_list_fails_closed_with_its_own_error(issuer, stranger, server, name, code,
                                                          words) -> None:
    url, index = fail_closed_case(name, issuer, stranger, server)
    result = over_http().verify_credential(badge(issuer, status.status_entry(url, index)))
    check = result.check("status")
    assert not result.verified and check.ok is False
    assert check.detail.startswith(f"{code}: ") and words in check.detail, check.detail
    assert all(c.ok is not False for c in result.checks if c.name != "status")


def test_a_status_entry_without_a_status_source_fails_closed(issuer) -> None:
    result = verifier(None).verify_credential(badge(issuer, status.status_entry("https://x.example/s", 1)))
    assert not result.verified
    assert result.check("status").detail == ("status could not be checked: no status list source is "
                                             "configured (failing closed)")


def test_a_badge_without_status_cannot_be_revoked_and_passes(issuer) -> None:
    result = verifier(None).verify_credential(badge(issuer, None))
    assert result.verified, result.errors
    assert result.check("status").detail == "the credential has no status entry: its issuer cannot revoke it"


def test_status_is_not_followed_for_a_badge_whose_proof_fails(issuer, server) -> None:
    url = server.url("/status/never-fetched")
    doc = badge(issuer, status.status_entry(url, INDEX))
    doc["name"] = "Forged"
    source = Static({})
    result = verifier(source).verify_credential(doc)
    assert not result.verified and result.check("status").ok is None
    assert source.calls == []


def status_of(issuer: Signer, entry: dict, source) -> Check:
    """The status check alone, as if the proof had verified: a credential with a status type our
    contexts do not define cannot be signed (safe-mode JSON-LD), yet other issuers' badges carry them."""
    document = badge(issuer, None) | {"credentialStatus": entry}
    key = ResolvedKey(issuer.method, issuer.did, issuer.private.public_key(), "Multikey", "did:key")
    state = _State("json-ld", document, KeyResolver(fetch=no_network), NOW, None,
                   verified_keys=[key], status_lists=source)
    return check_status(state)


def test_an_unknown_status_type_fails_closed(issuer) -> None:
    check = status_of(issuer, {"id": "https://x.example/status/1", "type": "CredentialStatusList2017"},
                      Static({}))
    assert check.ok is False
    assert "unsupported credentialStatus type 'CredentialStatusList2017'" in check.detail


def test_a_legacy_status_list_2021_entry_is_read_with_the_same_algorithm(issuer) -> None:
    url = "https://x.example/status/2021"
    entry = {**status.status_entry(url, INDEX), "type": "StatusList2021Entry"}
    check = status_of(issuer, entry, Static({url: signed_list(issuer, url, set_bits=(INDEX,))}))
    assert (check.ok, check.detail) == (False, f"revoked (entry {INDEX} of {url} is set)")


def test_a_malformed_index_is_a_malformed_value_error(issuer) -> None:
    entry = {**status.status_entry("https://x.example/status/1", 3), "statusListIndex": "3.0"}
    result = verifier(Static({})).verify_credential(badge(issuer, entry))
    assert result.check("status").detail.startswith("MALFORMED_VALUE_ERROR: statusListIndex '3.0'")


# --- the official 1EdTech fixtures ------------------------------------------------------------------

def test_the_official_revoked_fixture_is_revoked_by_bit_23(load_standard) -> None:
    credential = load_standard(f"{BSL_FIXTURES}/credential-status-revoked.json")
    url = credential["credentialStatus"]["statusListCredential"]
    source = Static({url: official_testlist(load_standard)})
    result = verifier(source).verify_credential(credential)
    assert not result.verified
    assert result.check("status").detail == f"revoked (entry 23 of {url} is set)"
    assert all(c.ok is not False for c in result.checks if c.name != "status")
    assert any("statusListIndex is the JSON number 23" in w for w in result.warnings)
    # The fixture list's id is not the URL it is published at: its set bit is honoured, with a warning.
    assert any("has id 'https://example.com/credentials/status/3'" in w for w in result.warnings)


def test_the_official_fixture_fails_closed_when_its_list_is_unreachable(load_standard) -> None:
    credential = load_standard(f"{BSL_FIXTURES}/credential-status-revoked.json")
    result = verifier(Static({})).verify_credential(credential)
    assert result.check("status").detail.startswith("STATUS_RETRIEVAL_ERROR: cannot retrieve the status list")


@pytest.mark.parametrize(("listed", "ok", "words"), [
    ([], True, "not revoked: not listed in the 1EdTech revocation list"),
    ([{"id": "http://1edtech.edu/credentials/3732", "revoked": False}], True, "not listed"),
    ([{"id": "http://1edtech.edu/credentials/3732"}], False, "revoked (listed in the 1EdTech"),
    ([{"id": "http://1edtech.edu/credentials/3732", "revoked": True, "revocationReason": "misconduct"}],
     False, "revocations: misconduct)"),
])
def test_a_1edtech_revocation_list_is_read_by_credential_id(load_standard, listed, ok, words) -> None:
    source = Static({COMPLETE_LIST: {"id": COMPLETE_LIST, "revokedCredential": listed}})
    result = verifier(source).verify_credential(load_standard(COMPLETE))
    assert result.check("status").ok is ok and words in result.check("status").detail
    assert result.verified is ok


def test_an_unreachable_1edtech_list_fails_closed_unlike_the_1edtech_validator(load_standard) -> None:
    result = verifier(Static({})).verify_credential(load_standard(COMPLETE))
    assert not result.verified
    assert "we fail closed; the 1EdTech validator only warns" in result.check("status").detail


# --- the fetching source and its cache -----------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_fetched_lists_are_cached_until_their_ttl(issuer) -> None:
    url = "https://x.example/status/ttl"
    document = signed_list(issuer, url)  # ttl 300000 ms
    fetched: list[str] = []

    def fetch(target: str, *, policy: FetchPolicy) -> dict:
        fetched.append(target)
        return document

    clock = Clock()
    source = FetchingStatusLists(LOOPBACK, fetch=fetch, now=clock)
    assert source.get(url) is document and source.get(url + "#list") is document
    clock.now += timedelta(minutes=4)
    source.get(url)
    assert fetched == [url]
    clock.now += timedelta(minutes=2)
    source.get(url)
    assert fetched == [url, url]


def test_a_cached_list_is_never_kept_past_its_valid_until(issuer) -> None:
    url = "https://x.example/status/until"
    document = signed_list(issuer, url, valid_until="2025-06-01T00:01:00Z")
    fetched: list[str] = []

    def fetch(target: str, *, policy: FetchPolicy) -> dict:
        fetched.append(target)
        return document

    clock = Clock()
    source = FetchingStatusLists(fetch=fetch, now=clock)
    source.get(url)
    clock.now += timedelta(minutes=2)  # within the ttl, past validUntil
    source.get(url)
    assert fetched == [url, url]


def test_local_lists_come_first_and_fetch_failures_propagate() -> None:
    ours = {"id": "https://badges.example.edu/status/1"}
    source = FetchingStatusLists(fetch=lambda url, policy: no_network(url),
                                 local=lambda url: ours if url.startswith("https://badges.example.edu/") else None)
    assert source.get("https://badges.example.edu/status/1") is ours
    with pytest.raises(FetchError):
        source.get("https://elsewhere.example/status/1")


def test_the_default_fetch_policy_refuses_a_loopback_list(issuer, server) -> None:
    """Status lists are fetched with the key-fetch limits: a badge cannot point us at our own network."""
    url = server.publish("/status/default-policy", signed_list(issuer, server.url("/status/default-policy")))
    result = verifier(FetchingStatusLists()).verify_credential(badge(issuer, status.status_entry(url, 1)))
    assert not result.verified
    assert "STATUS_RETRIEVAL_ERROR" in result.check("status").detail
    assert "refusing plain HTTP" in result.check("status").detail
