"""Find the public key behind a proof's verification method, and the keys an issuer publishes.

Forms understood (the union of what DI 1.0 / CID 1.0 define and what 1EdTech's validator accepts):

* ``did:key:z…`` (Ed25519 or P-256) — the key is the identifier; its controller is the did:key.
* ``did:web:…#frag`` — the DID document is fetched (guarded, see fetch.py) and the method must be both
  in it and listed under ``assertionMethod``.
* ``https://…#z6Mk…`` — the 1EdTech validator's pattern: the key is read from the fragment and the
  controller is the URL before ``#``. Nothing is fetched, so this only *claims* a controller; the result
  says so (``source == "fragment"``) for the verifier to warn about.
* any other ``https://`` URL — a controller document (method found in ``verificationMethod``) or a key
  document (``controller`` + ``publicKeyMultibase``/``publicKeyJwk``).

Documents the caller already holds (our own did.json, jwks.json) are passed as ``local_documents`` and
consulted before any network access, so our own badges verify offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from issuer import multikey
from issuer.fetch import FetchError, FetchPolicy, fetch_json
from issuer.keys import PublicKey, public_key_from_jwk

# The verification method types whose key material we can read.
MULTIBASE_TYPES = frozenset({"Multikey", "Ed25519VerificationKey2020"})
JWK_TYPES = frozenset({"JsonWebKey", "JsonWebKey2020"})


class KeyResolutionError(Exception):
    """A verification method could not be turned into a trustworthy public key; the message says why."""


@dataclass(frozen=True)
class ResolvedKey:
    """A public key and who controls it. ``source`` says how we learnt it (did:key, did:web, fragment,
    document): only a key read from a document the controller publishes is *confirmed* by it."""

    id: str
    controller: str
    public_key: PublicKey
    type: str
    source: str = "document"

    @property
    def confirmed_by_controller(self) -> bool:
        """False for a key taken from the method URL itself: anyone can write such a URL."""
        return self.source != "fragment"


Fetcher = Callable[[str], dict]


class KeyResolver:
    """Resolves verification methods; caches each fetched document for the life of the instance.

    The cache never expires: so that a removed (compromised) key is noticed, use one resolver per
    verification run or request, not one per process. ``max_cached`` bounds its size either way.
    """

    def __init__(self, local_documents: dict[str, dict] | None = None, *, policy: FetchPolicy | None = None,
                 fetch: Fetcher | None = None, max_cached: int = 64) -> None:
        self.local_documents = {_strip_fragment(k): v for k, v in (local_documents or {}).items()}
        self.policy = policy or FetchPolicy()
        self._fetch = fetch or (lambda url: fetch_json(url, policy=self.policy))
        self._cache: dict[str, dict] = {}
        self.max_cached = max_cached
        # did:web methods already resolved by this resolver (it lives for one request or run, like _cache):
        # a 60-badge application names the same key 120 times.
        self._resolved: dict[str, ResolvedKey] = {}

    # -- public API -------------------------------------------------------------------------------------
    def resolve(self, verification_method: str) -> ResolvedKey:
        """The key and controller of ``verification_method``, or KeyResolutionError saying why not."""
        if not isinstance(verification_method, str) or not verification_method:
            raise KeyResolutionError("verification method must be a non-empty string")
        if verification_method.startswith("did:key:"):
            return _resolve_did_key(verification_method)
        if verification_method.startswith("did:web:"):
            return self._resolve_did_web(verification_method)
        scheme = urlsplit(verification_method).scheme.lower()
        if scheme in ("https", "http"):
            fragment_key = _fragment_key(verification_method)
            if fragment_key is not None:
                return fragment_key
            return self._resolve_url(verification_method)
        if verification_method.startswith("did:"):
            method = verification_method.split(":", 2)[1]
            raise KeyResolutionError(f"unsupported DID method did:{method} (only did:key and did:web)")
        raise KeyResolutionError(f"unsupported verification method {verification_method!r}")

    def document(self, identifier: str) -> dict:
        """The document for a DID or URL: local first, then the (cached) guarded fetch."""
        key = _strip_fragment(identifier)
        if key in self.local_documents:
            return self.local_documents[key]
        url = key
        if key.startswith("did:web:"):
            url = _did_web_url(key)
            if url in self.local_documents:
                return self.local_documents[url]
        elif urlsplit(key).scheme.lower() not in ("https", "http"):
            raise KeyResolutionError(f"cannot fetch a document for {identifier!r}")
        if url not in self._cache:
            try:
                document = self._fetch(url)
            except FetchError as exc:
                raise KeyResolutionError(f"cannot fetch {url}: {exc}") from None
            while len(self._cache) >= self.max_cached:
                self._cache.pop(next(iter(self._cache)))
                self._resolved.clear()  # a method remembered from the evicted document goes with it
            self._cache[url] = document
        return self._cache[url]

    def assertion_keys(self, controller: str) -> list[ResolvedKey]:
        """Every key ``controller`` publishes for making assertions (its assertionMethod entries).

        Used to decide whether a key seen in a JWT header is one the issuer actually published.
        """
        if controller.startswith("did:key:"):
            return [_resolve_did_key(controller)]
        document = self.document(controller)
        keys = []
        for entry in _as_list(document.get("assertionMethod")):
            method_id = entry.get("id") if isinstance(entry, dict) else entry
            if not isinstance(method_id, str):
                continue
            try:
                method = _find_method(document, controller, _absolute(method_id, controller))
                keys.append(_key_from_method(method, controller, "document"))
            except KeyResolutionError:
                continue  # a method we cannot read is simply not a match
        return keys

    def jwks_keys(self, issuer_id: str) -> list[dict]:
        """The JWK Set an issuer publishes at https://{authority}/.well-known/jwks.json (OB-IMPL)."""
        url = jwks_url(issuer_id)
        document = self.document(url)
        keys = document.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise KeyResolutionError(f"{url} is not a JWK Set (no 'keys' array of objects)")
        return keys

    # -- method forms -----------------------------------------------------------------------------------
    def _resolve_did_web(self, verification_method: str) -> ResolvedKey:
        known = self._resolved.get(verification_method)
        if known is not None:
            return known
        key = self._resolve_did_web_afresh(verification_method)
        if len(self._resolved) < self.max_cached:
            self._resolved[verification_method] = key
        return key

    def _resolve_did_web_afresh(self, verification_method: str) -> ResolvedKey:
        did, _, fragment = verification_method.partition("#")
        if not fragment:
            raise KeyResolutionError(f"{verification_method} names no key: a did:web method needs a "
                                     "#fragment")
        document = self.document(did)
        if document.get("id") != did:
            raise KeyResolutionError(f"DID document id {document.get('id')!r} does not match {did}")
        method = _find_method(document, did, verification_method)
        _require_assertion_method(document, did, verification_method)
        return self._confirmed(_key_from_method(method, did, "did:web"), did)

    def _resolve_url(self, verification_method: str) -> ResolvedKey:
        base = _strip_fragment(verification_method)
        document = self.document(verification_method)
        if document.get("id") not in (None, verification_method, base):
            raise KeyResolutionError(f"document at {base} has id {document.get('id')!r}, "
                                     f"not {verification_method}")
        if "verificationMethod" in document:  # a controller document
            method = _find_method(document, base, verification_method)
            if "assertionMethod" in document:
                _require_assertion_method(document, base, verification_method)
            return self._confirmed(_key_from_method(method, base, "document"), base)
        if not isinstance(document.get("controller"), str):
            raise KeyResolutionError(f"key document at {base} names no controller")
        key = _key_from_method({**document, "id": verification_method}, document["controller"], "document")
        return self._confirmed(key, base)

    def _confirmed(self, key: ResolvedKey, publisher: str) -> ResolvedKey:
        """A document may name any controller for a key; believe it only when the controller is on the
        publisher's own origin or the controller's own document lists the key under assertionMethod."""
        origin = _origin(publisher)
        if key.controller == publisher or (origin is not None and _origin(key.controller) == origin):
            return key
        try:
            _require_assertion_method(self.document(key.controller), key.controller, key.id)
        except KeyResolutionError as exc:
            raise KeyResolutionError(
                f"{key.id} is published at {publisher} but names controller {key.controller}, "
                f"which does not confirm it: {exc}") from None
        return key


def jwks_url(issuer_id: str) -> str:
    """https://{authority of the issuer id}/.well-known/jwks.json, for https and did:web issuers."""
    if issuer_id.startswith("did:web:"):
        host = unquote(issuer_id[len("did:web:"):].split(":", 1)[0].split("#", 1)[0])
    else:
        parts = urlsplit(issuer_id)
        if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
            raise KeyResolutionError(f"issuer {issuer_id!r} has no web authority to publish a JWK Set")
        host = parts.netloc.rsplit("@", 1)[-1]
    if not host or "/" in host:
        raise KeyResolutionError(f"issuer {issuer_id!r} has no valid host")
    return f"https://{host}/.well-known/jwks.json"


def _did_web_url(did: str) -> str:
    try:
        return multikey.did_web_to_url(did)
    except ValueError as exc:
        raise KeyResolutionError(f"invalid did:web {did!r}: {exc}") from None


def _resolve_did_key(verification_method: str) -> ResolvedKey:
    did, _, fragment = verification_method.partition("#")
    value = did[len("did:key:"):]
    if fragment and fragment != value:
        raise KeyResolutionError(f"did:key fragment {fragment!r} does not match the key {value!r}")
    try:
        public_key = multikey.public_key_from_multibase(value)
    except multikey.MultikeyError as exc:
        raise KeyResolutionError(f"invalid did:key {did!r}: {exc}") from None
    return ResolvedKey(f"{did}#{value}", did, public_key, "Multikey", "did:key")


def _fragment_key(verification_method: str) -> ResolvedKey | None:
    base, _, fragment = verification_method.partition("#")
    if not fragment.startswith("z"):
        return None
    try:
        public_key = multikey.public_key_from_multibase(fragment)
    except (multikey.MultikeyError, ValueError):
        return None
    return ResolvedKey(verification_method, base, public_key, "Multikey", "fragment")


def _find_method(document: dict, controller: str, method_id: str) -> dict:
    """The method with ``method_id`` among verificationMethod and embedded assertionMethod entries."""
    candidates = _as_list(document.get("verificationMethod")) + [
        m for m in _as_list(document.get("assertionMethod")) if isinstance(m, dict)
    ]
    for method in candidates:
        if isinstance(method, dict) and isinstance(method.get("id"), str) \
                and _absolute(method["id"], controller) == method_id:
            return method
    raise KeyResolutionError(f"verification method {method_id} not found in the document of {controller}")


def _require_assertion_method(document: dict, controller: str, method_id: str) -> None:
    """DI 1.0: a key proves assertions only if its controller lists it under assertionMethod."""
    for entry in _as_list(document.get("assertionMethod")):
        entry_id = entry.get("id") if isinstance(entry, dict) else entry
        if isinstance(entry_id, str) and _absolute(entry_id, controller) == method_id:
            return
    raise KeyResolutionError(f"{method_id} is not listed under assertionMethod by {controller}")


def _key_from_method(method: dict, default_controller: str, source: str) -> ResolvedKey:
    method_type = method.get("type")
    controller = method.get("controller", default_controller)
    if not isinstance(controller, str):
        raise KeyResolutionError(f"verification method {method.get('id')} has an invalid controller")
    try:
        if "publicKeyMultibase" in method and (method_type in MULTIBASE_TYPES or method_type is None):
            public_key = multikey.public_key_from_multibase(method["publicKeyMultibase"])
        elif "publicKeyJwk" in method and (method_type in JWK_TYPES or method_type is None):
            public_key = public_key_from_jwk(method["publicKeyJwk"])
        else:
            raise KeyResolutionError(
                f"verification method {method.get('id')} of type {method_type!r} has no key we can read "
                "(expected Multikey/Ed25519VerificationKey2020 publicKeyMultibase or "
                "JsonWebKey publicKeyJwk)")
    except (multikey.MultikeyError, ValueError) as exc:
        raise KeyResolutionError(f"verification method {method.get('id')}: {exc}") from None
    method_id = _absolute(str(method.get("id", "")), default_controller)
    return ResolvedKey(method_id, controller, public_key, str(method_type or "Multikey"), source)


def _origin(identifier: str) -> str | None:
    """scheme://host[:port] of an http(s) URL or of a did:web's document URL; None for anything else."""
    if identifier.startswith("did:web:"):
        try:
            identifier = multikey.did_web_to_url(_strip_fragment(identifier))
        except ValueError:
            return None
    parts = urlsplit(identifier)
    if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _absolute(method_id: str, controller: str) -> str:
    return f"{_strip_fragment(controller)}{method_id}" if method_id.startswith("#") else method_id


def _strip_fragment(value: str) -> str:
    return value.split("#", 1)[0]


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
