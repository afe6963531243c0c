"""JSON-LD for Data Integrity: bundled contexts, an allowlisting loader, RDFC-1.0 and a "safe mode" check.

Why each piece exists:

* A signature covers what the contexts make of a document, so the contexts are pinned files shipped
  with the code (`contexts/`, sha256 in `contexts/MANIFEST.json`); the loader serves only those and
  never touches the network, so no credential can make us fetch a URL or change meaning under us.
* pyld 3.3 escapes only backslash, quote, tab, newline and carriage return in N-Quads literals.
  RDFC-1.0 also wants `\\b`, `\\f` and four-hex-digit `\\u` escapes for the other C0 controls and U+007F, and blank-node
  labels are chosen by hashing those N-Quads lines, so the escaping is corrected where pyld hashes
  (first-degree hashing) and where it writes the result, not by patching the output afterwards.
* Digital Bazaar's verifiers run JSON-LD in "safe mode": a term the contexts do not define, or an IRI
  that ends up relative, is an error there, while pyld silently drops it (so it would not be signed).
  `check_safe` rejects those documents before we sign them or accept their signature.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cachetools import LRUCache
from frozendict import frozendict
from pyld import jsonld as pyld
from pyld.canon import URDNA2015
from pyld.context_resolver import ContextResolver
from pyld.resolved_context import ResolvedContext

CONTEXTS_DIR = Path(__file__).resolve().parent / "contexts"
MANIFEST_NAME = "MANIFEST.json"

Loader = Callable[..., dict]

# The same test jsonld.js and pyld use to decide that an IRI is absolute (and so survives toRDF).
_ABSOLUTE_IRI = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*|_):[^\s]*$")
# Undefined terms expand against this @vocab during the safety check, which makes them visible.
_UNDEFINED = "urn:x-ob3-issuer:undefined-term:"
_KEYWORD_SHAPE = re.compile(r"^@[A-Za-z]+$")
_KEYWORDS = frozenset(
    """
    @base @container @context @direction @graph @id @import @included @index @json @language @list @nest
    @none @prefix @propagate @protected @reverse @set @type @value @version @vocab
    """.split()
)

# Work limits for canonicalisation (RDFC-1.0 asks implementations to guard against "poison" datasets
# whose blank nodes cannot be told apart cheaply; a learner-submitted credential must not hang us).
MAX_N_DEGREE_CALLS = 5_000
MAX_RELATED_GROUP = 8


class UnknownContextError(pyld.JsonLdError):
    """A document names a context URL that is not bundled (remote contexts are never fetched)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"context not allowed: {url}",
            "jsonld.LoadDocumentError",
            {"url": url},
            code="loading document failed",
        )
        self.url = url

    def __str__(self) -> str:
        return self.args[0]


class ContextIntegrityError(RuntimeError):
    """A bundled context file does not match its pinned sha256: refuse to use any of them."""


class JsonLdSafetyError(ValueError):
    """Expansion would drop or relativise part of the document; other verifiers reject it outright."""

    def __init__(self, message: str, *, term: str | None = None) -> None:
        super().__init__(message)
        self.term = term


class CanonicalizationError(ValueError):
    """The dataset is too costly to canonicalise (a "poison" graph)."""


# --- bundled contexts and the loader -------------------------------------------------------------


@functools.cache
def bundled_contexts() -> Mapping[str, dict]:
    """URL -> parsed context, read once per process; every file is checked against its pinned sha256."""
    manifest = json.loads((CONTEXTS_DIR / MANIFEST_NAME).read_text(encoding="utf-8"))
    documents: dict[str, dict] = {}
    for url, entry in manifest.items():
        data = (CONTEXTS_DIR / entry["file"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise ContextIntegrityError(
                f"bundled context {entry['file']} for {url} has sha256 {digest}, pinned {entry['sha256']}"
            )
        documents[url] = json.loads(data)
    return MappingProxyType(documents)


class ContextLoader:
    """A pyld document loader that serves a fixed set of context documents and nothing else.

    Each loader keeps its own cache of resolved contexts: pyld's default cache is process-wide and keyed
    by URL only, so a context allowed by one loader would otherwise leak into every other loader.
    """

    def __init__(self, extra: Mapping[str, dict] | None = None) -> None:
        self._extra = {url: copy.deepcopy(doc) for url, doc in (extra or {}).items()}
        self._documents: Mapping[str, dict] | None = None
        self.resolved_cache: LRUCache = LRUCache(maxsize=256)

    @property
    def documents(self) -> Mapping[str, dict]:
        if self._documents is None:
            bundled = bundled_contexts()
            for url, doc in self._extra.items():
                if url in bundled and bundled[url] != doc:
                    raise ValueError(f"refusing to replace the bundled context {url}")
            self._documents = MappingProxyType({**bundled, **self._extra})
        return self._documents

    def __call__(self, url: str, options: dict | None = None) -> dict:
        document = self.documents.get(url)
        if document is None:
            raise UnknownContextError(url)
        # pyld edits context documents in place while resolving them, so hand out a copy;
        # 'static' lets pyld cache the resolved context instead of asking again on every call.
        return {"contextUrl": None, "documentUrl": url, "document": copy.deepcopy(document), "tag": "static"}

    def pyld_options(self) -> dict[str, Any]:
        return {"documentLoader": self, "contextResolver": _Resolver(self.resolved_cache, self)}


class _Resolver(ContextResolver):
    """pyld's context resolver with a cheaper cache key for inline contexts.

    pyld keys every inline (for example type-scoped) context by its JCS serialisation, computed in pure
    Python on every node of every credential: a fifth of the signing time with the OB context's large
    class contexts. The key only has to be the same text for the same JSON value, and different text
    for different values; sorted-key `json.dumps` (C-accelerated) is both. Inline keys start with `{`,
    so they cannot collide with the context URLs pyld caches in the same map.
    """

    def resolve(self, active_ctx, context, base, cycles=None):
        if isinstance(context, (dict, frozendict)) and "@context" in context:
            context = context["@context"]
        resolved_all = []
        for ctx in context if isinstance(context, list) else [context]:
            if not isinstance(ctx, (dict, frozendict)):
                resolved_all.extend(super().resolve(active_ctx, ctx, base, cycles))
                continue
            key = json.dumps(ctx, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=dict)
            resolved = self._get(key)
            if not resolved:
                resolved = ResolvedContext(ctx)
                self._cache_resolved_context(key, resolved, "static")
            resolved_all.append(resolved)
        return resolved_all


document_loader = ContextLoader()
"""The default loader: the bundled contexts only."""


def make_loader(extra: Mapping[str, dict]) -> ContextLoader:
    """A loader serving the bundled contexts plus `extra` (URL -> context document)."""
    return ContextLoader(extra)


def _pyld_options(loader: Loader | None) -> dict[str, Any]:
    loader = loader or document_loader
    if isinstance(loader, ContextLoader):
        options = loader.pyld_options()
    else:
        # A foreign loader gets a private, per-call cache so nothing it returns outlives the call.
        options = {"documentLoader": loader, "contextResolver": ContextResolver(LRUCache(maxsize=64), loader)}
    # No base IRI: pyld would otherwise resolve relative IRIs against http://example.org/base/ and sign
    # triples that jsonld.js leaves out; kept relative, they are dropped by toRDF and caught by check_safe.
    options["base"] = None
    return options


class _Processor(pyld.JsonLdProcessor):
    """pyld's processor with one cache added: the child context a type-scoped context starts from.

    A type-scoped context does not propagate, so pyld first clones the active context (recording it as
    `previousContext`) and then processes the scoped context on that clone. The clone gets a new `_uuid`
    every time, and pyld's processed-context cache is keyed by that uuid, so the same OB class context
    was re-processed for every node of every credential (most of the cost of signing). Reusing one clone
    per parent context makes those lookups hit. The clone is never modified after it is made: pyld
    clones again before defining terms, so sharing it changes no result (the vectors and the pyoxigraph
    differential tests pin this).
    """

    _MAX_CLONES = 4096

    def __init__(self) -> None:
        super().__init__()
        self._non_propagating: dict[str, dict] = {}

    def _process_context(self, active_ctx, local_ctx, options, override_protected=False, propagate=True,
                         validate_scoped=True, cycles=None):
        if (not propagate and "_uuid" in active_ctx and not active_ctx.get("previousContext")
                and isinstance(local_ctx, dict) and "@propagate" not in local_ctx):
            child = self._non_propagating.get(active_ctx["_uuid"])
            if child is None:
                if len(self._non_propagating) >= self._MAX_CLONES:
                    self._non_propagating.clear()
                child = self._clone_active_context(active_ctx)
                child["previousContext"] = active_ctx
                self._non_propagating[active_ctx["_uuid"]] = child
            active_ctx = child
        return super()._process_context(active_ctx, local_ctx, options, override_protected, propagate,
                                         validate_scoped, cycles)


_PROCESSOR = _Processor()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _call_pyld(func: Callable[..., Any], doc: Any, options: dict[str, Any]) -> Any:
    """Run a pyld operation, surfacing a refused context as UnknownContextError (pyld wraps it deeply)."""
    try:
        return func(doc, options)
    except pyld.JsonLdError as exc:
        refused = next((c for c in _causes(exc) if isinstance(c, UnknownContextError)), None)
        if refused is not None:
            raise UnknownContextError(refused.url) from exc
        raise


# --- RDFC-1.0 ------------------------------------------------------------------------------------

_LITERAL_ESCAPES = {code: f"\\u{code:04X}" for code in [*range(0x20), 0x7F]}
_LITERAL_ESCAPES.update(
    {
        ord("\b"): "\\b",
        ord("\t"): "\\t",
        ord("\n"): "\\n",
        ord("\f"): "\\f",
        ord("\r"): "\\r",
        ord('"'): '\\"',
        ord("\\"): "\\\\",
    }
)

_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_RDF_LANGSTRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"


def escape_literal(value: str) -> str:
    """The lexical form of a literal as canonical N-Quads writes it (RDFC-1.0 / RDF N-Quads)."""
    return value.translate(_LITERAL_ESCAPES)


def _term(component: dict, blank: Callable[[str], str]) -> str:
    kind = component["type"]
    if kind == "IRI":
        return f"<{component['value']}>"
    if kind == "blank node":
        return blank(component["value"])
    text = f'"{escape_literal(component["value"])}"'
    datatype = component.get("datatype", _XSD_STRING)
    if datatype == _RDF_LANGSTRING:
        return f"{text}@{component['language']}" if component.get("language") else text
    return text if datatype == _XSD_STRING else f"{text}^^<{datatype}>"


def nquad(quad: dict, blank: Callable[[str], str] = lambda label: label) -> str:
    """One canonical N-Quads line for a pyld quad, blank node labels mapped through `blank`."""
    parts = [_term(quad["subject"], blank), _term(quad["predicate"], blank), _term(quad["object"], blank)]
    graph = quad.get("name")
    if graph is not None and graph.get("value") is not None:
        parts.append(_term(graph, blank))
    return " ".join(parts) + " .\n"


class _Rdfc10(URDNA2015):
    """pyld's URDNA2015 labelling with RDFC-1.0 escaping where lines are hashed, plus work limits."""

    def __init__(self) -> None:
        super().__init__()
        self._n_degree_calls = 0

    def hash_first_degree_quads(self, id_: str) -> str:
        info = self.blank_node_info[id_]
        if "hash" not in info:
            lines = sorted(nquad(q, lambda label: "_:a" if label == id_ else "_:z") for q in info["quads"])
            info["hash"] = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
        return info["hash"]

    def hash_n_degree_quads(self, id_: str, issuer: Any) -> dict:
        self._n_degree_calls += 1
        if self._n_degree_calls > MAX_N_DEGREE_CALLS:
            raise CanonicalizationError("dataset too costly to canonicalise (blank nodes too alike)")
        return super().hash_n_degree_quads(id_, issuer)

    def create_hash_to_related(self, id_: str, issuer: Any) -> dict:
        related = super().create_hash_to_related(id_, issuer)
        if any(len(group) > MAX_RELATED_GROUP for group in related.values()):
            raise CanonicalizationError("dataset too costly to canonicalise (too many alike blank nodes)")
        return related

    def canonical_nquads(self, dataset: dict) -> str:
        # Keep our own copy of every quad: pyld relabels its quads in place while it works.
        originals = []
        for graph_name, triples in dataset.items():
            graph = (
                None
                if graph_name == "@default"
                else {"type": "blank node" if graph_name.startswith("_:") else "IRI", "value": graph_name}
            )
            for t in triples:
                originals.append(
                    {
                        "subject": dict(t["subject"]),
                        "predicate": dict(t["predicate"]),
                        "object": dict(t["object"]),
                        "name": graph,
                    }
                )
        self.main(dataset, {"format": "application/n-quads"})  # runs the labelling; its text is discarded
        labels = self.canonical_issuer.existing
        return "".join(sorted({nquad(q, labels.__getitem__) for q in originals}))


def to_dataset(doc: Any, loader: Loader | None = None) -> dict:
    """The RDF dataset of a JSON-LD document (pyld's dict form), using only allowed contexts."""
    options = {**_pyld_options(loader), "produceGeneralizedRdf": False}
    return _call_pyld(_PROCESSOR.to_rdf, doc, options)


def dataset_from_expanded(expanded: list) -> dict:
    """The RDF dataset of an already expanded document: pyld's toRDF without its second expansion."""
    processor = pyld.JsonLdProcessor()
    issuer = pyld.IdentifierIssuer("_:b")
    node_map: dict[str, dict] = {"@default": {}}
    processor._create_node_map(expanded, node_map, "@default", issuer)
    options = {"produceGeneralizedRdf": False, "rdfDirection": None, "processingMode": "json-ld-1.1"}
    return {name: processor._graph_to_rdf(graph, issuer, options)
            for name, graph in sorted(node_map.items())
            if name == "@default" or pyld._is_absolute_iri(name)}


def canonize_dataset(dataset: dict) -> str:
    """RDFC-1.0 canonical N-Quads of a pyld dataset (consumed: pyld edits it while labelling)."""
    return _Rdfc10().canonical_nquads(dataset)


def canonize(doc: Any, loader: Loader | None = None) -> str:
    """RDFC-1.0 (URDNA2015) canonical N-Quads of a JSON-LD document, with the full literal escaping."""
    return canonize_dataset(to_dataset(doc, loader))


# --- safe mode -----------------------------------------------------------------------------------


def _reserved_keys(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Keys shaped like keywords that are not keywords: JSON-LD ignores them silently."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _reserved_keys(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "@context":
                continue
            if _KEYWORD_SHAPE.match(key) and key not in _KEYWORDS:
                yield key, path
            yield from _reserved_keys(value, f"{path}.{key}")


def _where(node: dict) -> str:
    if "@id" in node:
        return f"node {node['@id']}"
    types = node.get("@type")
    if types:
        names = [t.removeprefix(_UNDEFINED) for t in (types if isinstance(types, list) else [types])]
        return "node of type " + ", ".join(names)
    return "a node without id"


def _check_iri(iri: Any, what: str, node: dict) -> None:
    if not isinstance(iri, str):
        return
    if iri.startswith(_UNDEFINED):
        name = iri[len(_UNDEFINED) :]
        raise JsonLdSafetyError(
            f"{what} {name!r} is not defined by the document's contexts ({_where(node)})", term=name
        )
    if not _ABSOLUTE_IRI.match(iri):
        raise JsonLdSafetyError(f"{what} {iri!r} is a relative IRI ({_where(node)})", term=iri)


def _check_expanded(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _check_expanded(item)
        return
    if not isinstance(node, dict):
        return
    if "@value" in node:
        datatype = node.get("@type")
        if datatype not in (None, "@json"):
            _check_iri(datatype, "datatype", node)
        return
    for key, value in node.items():
        if key == "@id":
            _check_iri(value, "value" if len(node) == 1 else "@id", node)
        elif key == "@type":
            for name in value if isinstance(value, list) else [value]:
                _check_iri(name, "type", node)
        elif key == "@reverse":
            for prop, items in value.items():
                _check_iri(prop, "term", node)
                _check_expanded(items)
        elif key.startswith("@"):
            if key == "@graph":
                for item in value if isinstance(value, list) else [value]:
                    if not isinstance(item, dict) or "@value" in item or "@list" in item:
                        # toRDF drops a bare value in a graph: it would be shown but never signed
                        raise JsonLdSafetyError(f"a plain value inside a graph is not part of the signed data "
                                                f"({_where(node)})", term="@graph")
            if key in ("@graph", "@list", "@set", "@included"):
                _check_expanded(value)
        else:
            _check_iri(key, "term", node)
            _check_expanded(value)


def safe_expand(doc: dict, loader: Loader | None = None) -> list:
    """Expand `doc`, raising JsonLdSafetyError where safe-mode JSON-LD processors would refuse it.

    Undefined terms and type names are made visible by expanding under a sentinel `@vocab` placed
    before the document's own contexts (a context's own `@vocab` still wins, as it should). When the
    check passes no sentinel IRI is left, so the result is the document's ordinary expansion.
    """
    for key, path in _reserved_keys(doc, "$"):
        raise JsonLdSafetyError(f"{key!r} at {path} looks like a JSON-LD keyword but is not one", term=key)
    options = {**_pyld_options(loader), "expandContext": {"@vocab": _UNDEFINED}}
    expanded = _call_pyld(_PROCESSOR.expand, doc, options)
    _check_expanded(expanded)
    return expanded


def check_safe(doc: dict, loader: Loader | None = None) -> None:
    """Raise JsonLdSafetyError when expansion would drop a term or leave a relative IRI."""
    safe_expand(doc, loader)
