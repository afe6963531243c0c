"""Key resolution: did:key, did:web, fragment keys, https documents; local documents first, no network."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from issuer import fetch, multikey
from issuer.fetch import FetchError, FetchPolicy
from issuer.keys import SigningKey, did_document, jwks
from issuer.resolve import KeyResolutionError, KeyResolver, jwks_url
from tests.test_fetch import make_tls, no_outside_connections, send_json, serve, stub_resolver  # noqa: F401

DID = "did:web:badges.example.edu"


class NoNetwork:
    """A fetch stand-in that records URLs and serves only what the test put in ``documents``."""

    def __init__(self, documents: dict[str, dict] | None = None) -> None:
        self.documents = documents or {}
        self.calls: list[str] = []

    def __call__(self, url: str) -> dict:
        self.calls.append(url)
        if url in self.documents:
            return self.documents[url]
        raise FetchError(f"{url}: no network in tests")


def ed25519_key() -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PrivateKey.generate().public_key()


def same(a, b) -> bool:
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(*spki) == b.public_bytes(*spki)


# --- did:key ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [ed25519_key, lambda: ec.generate_private_key(ec.SECP256R1()).public_key()])
def test_did_key_resolves_offline_with_itself_as_controller(make) -> None:
    public = make()
    did = multikey.did_key(public)
    fetcher = NoNetwork()
    resolver = KeyResolver(fetch=fetcher)
    for method in (did, f"{did}#{did[len('did:key:'):]}"):
        key = resolver.resolve(method)
        assert key.controller == did
        assert key.id == f"{did}#{did[len('did:key:'):]}"
        assert same(key.public_key, public)
        assert key.source == "did:key" and key.confirmed_by_controller
    assert fetcher.calls == []


def test_did_key_with_a_foreign_fragment_is_refused() -> None:
    did = multikey.did_key(ed25519_key())
    other = multikey.ed25519_to_multibase(ed25519_key())
    with pytest.raises(KeyResolutionError, match="does not match"):
        KeyResolver().resolve(f"{did}#{other}")


@pytest.mark.parametrize("value", ["did:key:zNotBase58!!", "did:key:abc", "did:key:z6Mk"])
def test_malformed_did_key_is_refused(value: str) -> None:
    with pytest.raises(KeyResolutionError, match="invalid did:key"):
        KeyResolver().resolve(value)


# --- fragment keys (1EdTech validator pattern) ----------------------------------------------------------

def test_https_method_with_a_multikey_fragment_needs_no_fetch_and_is_marked_unconfirmed() -> None:
    public = ed25519_key()
    value = multikey.ed25519_to_multibase(public)
    fetcher = NoNetwork()
    key = KeyResolver(fetch=fetcher).resolve(f"https://example.com/issuers/876543#{value}")
    assert key.controller == "https://example.com/issuers/876543"
    assert same(key.public_key, public)
    assert key.source == "fragment" and not key.confirmed_by_controller
    assert fetcher.calls == []


# --- did:web -----------------------------------------------------------------------------------------

@pytest.fixture
def ring() -> list[SigningKey]:
    return [SigningKey.generate("Ed25519"), SigningKey.generate("ES256")]


def test_did_web_resolves_multikey_and_jsonwebkey_methods_from_a_local_document(ring) -> None:
    fetcher = NoNetwork()
    resolver = KeyResolver({DID: did_document(DID, ring)}, fetch=fetcher)
    for signing_key in ring:
        key = resolver.resolve(f"{DID}#{signing_key.kid}")
        assert key.controller == DID
        assert key.type == ("Multikey" if signing_key.algorithm == "Ed25519" else "JsonWebKey")
        assert same(key.public_key, signing_key.public_key)
    assert fetcher.calls == []


def test_did_web_document_is_fetched_from_the_did_web_url_once_and_cached(ring) -> None:
    fetcher = NoNetwork({"https://badges.example.edu/.well-known/did.json": did_document(DID, ring)})
    resolver = KeyResolver(fetch=fetcher)
    for signing_key in ring:
        resolver.resolve(f"{DID}#{signing_key.kid}")
    assert fetcher.calls == ["https://badges.example.edu/.well-known/did.json"]


def test_document_cache_is_bounded(ring) -> None:
    documents = {f"https://host{i}.example/.well-known/did.json":
                 did_document(f"did:web:host{i}.example", ring) for i in range(5)}
    fetcher = NoNetwork(documents)
    resolver = KeyResolver(fetch=fetcher, max_cached=2)
    for i in (0, 1, 2, 0):
        resolver.resolve(f"did:web:host{i}.example#{ring[0].kid}")
    assert len(fetcher.calls) == 4  # host0 was evicted by host2 and fetched again


def test_did_web_with_a_path_and_port_uses_the_did_web_document_location(ring) -> None:
    did = "did:web:badges.example.edu%3A8443:issuers:space"
    fetcher = NoNetwork({"https://badges.example.edu:8443/issuers/space/did.json": did_document(did, ring)})
    key = KeyResolver(fetch=fetcher).resolve(f"{did}#{ring[0].kid}")
    assert key.controller == did


def test_local_document_may_be_keyed_by_its_url(ring) -> None:
    resolver = KeyResolver({"https://badges.example.edu/.well-known/did.json": did_document(DID, ring)},
                           fetch=NoNetwork())
    assert resolver.resolve(f"{DID}#{ring[0].kid}").controller == DID


def legacy_document() -> tuple[dict, ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey]:
    """Relative ids, the 2020 key types and an assertionMethod entry embedded rather than referenced."""
    ed, p256 = ed25519_key(), ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = SigningKey.from_public_key(p256).public_jwk()
    document = {
        "id": DID,
        "verificationMethod": [
            {"id": "#ed", "type": "Ed25519VerificationKey2020", "controller": DID,
             "publicKeyMultibase": multikey.ed25519_to_multibase(ed)},
        ],
        "assertionMethod": [
            "#ed",
            {"id": f"{DID}#p256", "type": "JsonWebKey2020", "controller": DID, "publicKeyJwk": jwk},
        ],
    }
    return document, ed, p256


def test_relative_ids_legacy_types_and_embedded_methods_are_understood() -> None:
    document, ed, p256 = legacy_document()
    resolver = KeyResolver({DID: document}, fetch=NoNetwork())
    ed_key = resolver.resolve(f"{DID}#ed")
    assert ed_key.id == f"{DID}#ed" and ed_key.type == "Ed25519VerificationKey2020"
    assert same(ed_key.public_key, ed)
    assert same(resolver.resolve(f"{DID}#p256").public_key, p256)
    assert {k.id for k in resolver.assertion_keys(DID)} == {f"{DID}#ed", f"{DID}#p256"}


def test_did_web_method_not_listed_under_assertion_method_is_refused(ring) -> None:
    document = did_document(DID, ring)
    document["assertionMethod"] = document["assertionMethod"][:1]
    resolver = KeyResolver({DID: document}, fetch=NoNetwork())
    with pytest.raises(KeyResolutionError, match="not listed under assertionMethod"):
        resolver.resolve(f"{DID}#{ring[1].kid}")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (f"{DID}#missing", "not found"),
        (DID, "needs a #fragment"),
    ],
)
def test_did_web_method_problems_are_named(ring, method: str, message: str) -> None:
    resolver = KeyResolver({DID: did_document(DID, ring)}, fetch=NoNetwork())
    with pytest.raises(KeyResolutionError, match=message):
        resolver.resolve(method)


def test_did_document_with_another_id_is_refused(ring) -> None:
    resolver = KeyResolver({DID: did_document("did:web:elsewhere.example", ring)}, fetch=NoNetwork())
    with pytest.raises(KeyResolutionError, match="does not match"):
        resolver.resolve(f"{DID}#{ring[0].kid}")


def test_method_with_a_private_jwk_is_refused() -> None:
    private_jwk = {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}
    method = {"id": f"{DID}#k", "type": "JsonWebKey", "controller": DID, "publicKeyJwk": private_jwk}
    document = {"id": DID, "verificationMethod": [method], "assertionMethod": [f"{DID}#k"]}
    with pytest.raises(KeyResolutionError, match="private"):
        KeyResolver({DID: document}, fetch=NoNetwork()).resolve(f"{DID}#k")


def test_unreachable_did_document_is_a_resolution_error_with_the_reason() -> None:
    with pytest.raises(KeyResolutionError, match="no network in tests"):
        KeyResolver(fetch=NoNetwork()).resolve(f"{DID}#key-1")


def test_did_web_is_fetched_over_https_from_the_pinned_address(monkeypatch, tmp_path, ring,
                                                               no_outside_connections) -> None:  # noqa: F811
    """End to end through fetch.py: stub DNS, a real TLS server on loopback, certificate for the name."""
    server_tls, client_tls = make_tls("badges.test", tmp_path)
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"badges.test": ["127.0.0.1"]}))
    with serve({"/.well-known/did.json": lambda h: send_json(h, document)}, tls=server_tls) as server:
        did = f"did:web:badges.test%3A{server.server_address[1]}"
        document = did_document(did, ring)
        resolver = KeyResolver(policy=FetchPolicy(allow_private=True, ssl_context=client_tls, timeout=2.0))
        key = resolver.resolve(f"{did}#{ring[0].kid}")
    assert key.controller == did and same(key.public_key, ring[0].public_key)


def test_default_policy_refuses_did_web_on_a_private_address(monkeypatch,
                                                             no_outside_connections) -> None:  # noqa: F811
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"badges.test": ["10.0.0.7"]}))
    with pytest.raises(KeyResolutionError, match="private address"):
        KeyResolver().resolve("did:web:badges.test#key-1")
    assert no_outside_connections == []


# --- other https documents ----------------------------------------------------------------------------

def test_https_controller_document_is_searched_for_the_method(ring) -> None:
    issuer = "https://badges.example.edu/issuers/1"
    document = did_document(issuer, ring)
    fetcher = NoNetwork({issuer: document})
    key = KeyResolver(fetch=fetcher).resolve(f"{issuer}#{ring[1].kid}")
    assert key.controller == issuer and same(key.public_key, ring[1].public_key)
    assert fetcher.calls == [issuer]


def test_https_key_document_on_the_controllers_origin_gives_its_controller() -> None:
    public = ed25519_key()
    url = "https://badges.example.edu/keys/1"
    key_document = {"id": url, "type": "Multikey", "controller": "https://badges.example.edu/issuers/1",
                    "publicKeyMultibase": multikey.ed25519_to_multibase(public)}
    key = KeyResolver(fetch=NoNetwork({url: key_document})).resolve(url)
    assert key.controller == "https://badges.example.edu/issuers/1" and same(key.public_key, public)


def test_key_document_naming_a_controller_elsewhere_must_be_confirmed_by_it() -> None:
    public = ed25519_key()
    url = "https://attacker.example/key"
    victim = "https://badges.example.edu/issuers/1"
    key_document = {"id": url, "type": "Multikey", "controller": victim,
                    "publicKeyMultibase": multikey.ed25519_to_multibase(public)}
    victim_document = {"id": victim, "verificationMethod": [], "assertionMethod": []}
    resolver = KeyResolver(fetch=NoNetwork({url: key_document, victim: victim_document}))
    with pytest.raises(KeyResolutionError, match="does not confirm"):
        resolver.resolve(url)
    victim_document["assertionMethod"] = [url]
    confirmed = KeyResolver(fetch=NoNetwork({url: key_document, victim: victim_document})).resolve(url)
    assert confirmed.controller == victim


def test_document_served_under_another_id_is_refused() -> None:
    url = "https://attacker.example/doc"
    resolver = KeyResolver(fetch=NoNetwork({url: {"id": "https://badges.example.edu/issuers/1",
                                                  "verificationMethod": []}}))
    with pytest.raises(KeyResolutionError, match="has id"):
        resolver.resolve(f"{url}#key-1")


@pytest.mark.parametrize(("method", "message"),
                         [("did:example:123#k", "unsupported DID method did:example"),
                          ("urn:uuid:1234", "unsupported verification method"),
                          ("", "non-empty")])
def test_unsupported_methods_are_named(method: str, message: str) -> None:
    with pytest.raises(KeyResolutionError, match=message):
        KeyResolver(fetch=NoNetwork()).resolve(method)


# --- JWK Sets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://badges.example.edu/issuers/1", "https://badges.example.edu/.well-known/jwks.json"),
        ("did:web:badges.example.edu", "https://badges.example.edu/.well-known/jwks.json"),
        ("did:web:badges.example.edu%3A8443:issuers:x",
         "https://badges.example.edu:8443/.well-known/jwks.json"),
    ],
)
def test_jwks_url_is_at_the_issuers_authority(issuer: str, url: str) -> None:
    assert jwks_url(issuer) == url


def test_jwks_url_needs_a_web_issuer() -> None:
    with pytest.raises(KeyResolutionError, match="no web authority"):
        jwks_url("urn:uuid:6f2e33e5-7a29-4155-840a-59483ba10164")


def test_jwks_keys_come_from_a_local_document_before_any_fetch(ring) -> None:
    fetcher = NoNetwork()
    resolver = KeyResolver({"https://badges.example.edu/.well-known/jwks.json": jwks(ring)}, fetch=fetcher)
    listed = resolver.jwks_keys("https://badges.example.edu/issuers/1")
    assert [k["kid"] for k in listed] == [k.kid for k in ring]
    assert fetcher.calls == []


def test_something_that_is_not_a_jwk_set_is_refused() -> None:
    resolver = KeyResolver(fetch=NoNetwork({"https://badges.example.edu/.well-known/jwks.json": {"keys": 1}}))
    with pytest.raises(KeyResolutionError, match="not a JWK Set"):
        resolver.jwks_keys(DID)


def test_assertion_keys_of_a_did_key_is_the_key_itself() -> None:
    public = ed25519_key()
    did = multikey.did_key(public)
    [key] = KeyResolver(fetch=NoNetwork()).assertion_keys(did)
    assert same(key.public_key, public)
