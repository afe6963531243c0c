"""A fast path from JSON-LD to RDFC-1.0 canonical N-Quads, for the document shapes we sign and verify.

Signing a badge spent nearly all its time in pyld expanding the same two contexts again for every
document. Here the contexts are processed once, by pyld itself (so the term definitions, type-scoped
and property-scoped contexts and `@protected` rules are pyld's own), and cached as transitions between
processed contexts. A document is then walked directly, following the control flow of pyld's
expansion (`_expand`, `_expand_object`, `_expand_value`) and of its toRDF (node map, lists, named
graphs), emitting quads without building the expanded form.

The walk only covers what it fully models and declines everything else (`canonical_hash` returns
None, `explain` says why), so that the general path in `jsonld.py` runs instead. It declines:

* a context that is not a bundled URL (inline objects, unknown or remote URLs, a loader that is not a
  `jsonld.ContextLoader`), or one whose processing fails;
* any key that is not a term of the active context (so nothing can be silently dropped), any
  `@`-key but `@context`, term aliases of keywords other than `@id` and `@type`, reverse terms,
  `@nest`, `@included`, `@graph` at the top, value objects, `@set`/`@list` objects, `@json`,
  language-tagged strings or a default language, `@index`/`@id`/`@type`/`@language` containers;
* an IRI that is relative, that a prefix term would rewrite, that N-Quads cannot carry as is, or that
  the safety check's sentinel vocabulary would produce; a type that is not a term;
* a number whose canonical form could be in doubt (non-finite, |n| >= 10^21, an `xsd:double` term),
  a number or boolean on an `@id`/`@vocab` term, a plain value inside a graph container, nested arrays;
* anything that would make pyld's dataset hold the same quad twice (values that pyld keeps apart but
  that give the same literal, two empty lists of one node, an `rdf:type` property beside `@type`),
  and a blank node linked to itself (pyld counts that quad twice when it hashes the node).

Whatever the walk accepts, the general path accepts too (it is the same contexts, and every term
was defined) and gives the same dataset; tests/test_fastld.py checks this over a generated corpus
against pyld and pyoxigraph. Blank nodes are then labelled by RDFC-1.0: when every blank node has a
distinct first-degree hash the labels follow from those hashes alone (the algorithm issues them in
hash order and never reaches the n-degree step), otherwise the dataset goes to `jsonld`'s RDFC-1.0
implementation.
"""

from __future__ import annotations

import hashlib
import math
import re
import weakref
from typing import Any

from pyld.jsonld import JsonLdError

from issuer import jsonld

XSD = "http://www.w3.org/2001/XMLSchema#"
XSD_STRING = XSD + "string"
XSD_BOOLEAN = XSD + "boolean"
XSD_INTEGER = XSD + "integer"
XSD_DOUBLE = XSD + "double"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDF_TYPE = f"<{RDF}type>"
RDF_FIRST = f"<{RDF}first>"
RDF_REST = f"<{RDF}rest>"
RDF_NIL = f"<{RDF}nil>"

# An absolute IRI that pyld keeps, that the safety check accepts, and that N-Quads writes unescaped.
_IRI = re.compile(r'^[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>"{}|^`\\\x00-\x20\x7f-\x9f]*$')
# A blank node identifier in the document (pyld relabels it; the safety check wants no whitespace).
_BLANK = re.compile(r"^_:[A-Za-z0-9_.\-]+$")
_MAX_CONTEXTS = 4096  # contexts processed per loader before the cache starts over
_MAX_PLANS = 20_000  # node shapes remembered per loader before the cache starts over

_MISSING = object()
_PLAIN, _IRIREF, _VOCAB, _TYPED = range(4)
_REF = ("ref",)  # what a quad whose object is a node came from (pyld merges equal node references)
_TYPE = ("type",)  # ... and a quad made from @type (pyld keeps it apart from an rdf:type property)


class Decline(Exception):
    """The fast path does not fully model this document; the general path must handle it."""


# --- processed contexts --------------------------------------------------------------------------------


class _Loader:
    """The processed contexts reachable from one loader. It holds the loader weakly (its processed
    contexts are kept in a WeakKeyDictionary keyed by the loader)."""

    def __init__(self, loader: jsonld.ContextLoader) -> None:
        self._loader = weakref.ref(loader)
        self.count = 0
        self.plans = 0
        self.contexts: dict[int, _Context] = {}
        options = self.options()
        initial = jsonld._PROCESSOR._get_initial_context(options)
        # As jsonld.safe_expand: the sentinel @vocab first, then the document's contexts.
        sentinel = jsonld._PROCESSOR.process_context(initial, {"@vocab": jsonld._UNDEFINED}, options)
        self.root = self.wrap(sentinel)

    def options(self) -> dict:
        """The options pyld's expansion gets in `jsonld.safe_expand`."""
        return {**jsonld._pyld_options(self._loader()), "isFrame": False, "keepFreeFloatingNodes": False,
                "extractAllScripts": False, "processingMode": "json-ld-1.1"}

    def wrap(self, raw: dict) -> _Context:
        """One _Context per processed pyld context (it holds `raw`, so the id stays unique)."""
        ctx = self.contexts.get(id(raw))
        if ctx is None:
            ctx = self.contexts[id(raw)] = _Context(self, raw)
        return ctx

    def process(self, raw: dict, local: Any, *, propagate: bool = True, override_protected: bool = False) -> _Context:
        self.count += 1
        if self.count > _MAX_CONTEXTS:
            raise Decline("too many distinct contexts (cache full)")
        try:
            processed = jsonld._PROCESSOR._process_context(
                raw, local, self.options(), override_protected=override_protected, propagate=propagate
            )
        except JsonLdError as exc:
            raise Decline(f"context processing failed: {exc}") from None
        return self.wrap(processed)


_LOADERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _loader_state(loader: Any) -> _Loader:
    loader = loader or jsonld.document_loader
    if not isinstance(loader, jsonld.ContextLoader):
        raise Decline("the document loader is not a jsonld.ContextLoader")
    state = _LOADERS.get(loader)
    if state is None or state.count > _MAX_CONTEXTS or state.plans >= _MAX_PLANS:
        state = _LOADERS[loader] = _Loader(loader)
    return state


class _Term:
    """One term of one processed context, compiled for the walk (its meaning as a property)."""

    __slots__ = ("key", "kind", "pred", "is_list", "is_graph", "context", "term_ctx", "mode", "suffix", "datatype",
                 "plans", "_children")

    def __init__(self, context: _Context, key: str) -> None:
        self.key = key
        self.context = context
        self.plans: dict = {}
        self._children: dict[bool, _Context] = {}
        self.mode: int | None = None
        mapping = context.mappings.get(key, _MISSING)
        if key.startswith("@"):
            raise Decline(f"keyword {key!r} as a key")
        if mapping is _MISSING or mapping is None:
            raise Decline(f"term {key!r} is not defined by the contexts")
        iri = mapping["@id"]
        self.kind = "prop"
        if iri in ("@id", "@type"):
            self.kind = iri
            return
        if iri.startswith("@"):
            raise Decline(f"term {key!r} is an alias of {iri}")
        if mapping.get("reverse"):
            raise Decline(f"reverse term {key!r}")
        if "@language" in mapping or "@direction" in mapping:
            raise Decline(f"term {key!r} has a language or direction")
        container = frozenset(mapping.get("@container") or ())
        if container not in (frozenset(), {"@set"}, {"@list"}, {"@graph"}, {"@graph", "@set"}):
            raise Decline(f"term {key!r} has container {sorted(container)}")
        if mapping.get("@type") == "@json":
            raise Decline(f"term {key!r} is a JSON literal")
        self.is_list = "@list" in container
        self.is_graph = "@graph" in container
        self.pred = _predicate(iri, key)
        # pyld's `term_ctx`: the context the value is expanded with (a property-scoped context applied).
        scoped = mapping.get("@context", _MISSING)
        if scoped is _MISSING:
            self.term_ctx = context
        else:
            self.term_ctx = context.process(scoped, propagate=True, override_protected=True)
            inner = self.term_ctx.mappings.get(key)
            if inner and (inner.get("reverse") or ("@list" in (inner.get("@container") or ())) != self.is_list):
                raise Decline(f"term {key!r} changes meaning in its own scoped context")

    def prepare_scalar(self) -> int:
        """How a scalar value is read (pyld `_expand_value` under `term_ctx`): sets `mode` to _PLAIN,
        _IRIREF (@id), _VOCAB (@vocab) or _TYPED (`datatype`, written with `suffix`)."""
        ctx = self.term_ctx
        if "@language" in ctx.raw or "@direction" in ctx.raw:
            raise Decline("a default language or direction is active")
        mapping = ctx.mappings.get(self.key)
        coerce = None
        if mapping is None:
            if self.key in ctx.mappings:
                raise Decline(f"term {self.key!r} is nulled by its scoped context")
        else:
            if mapping["@id"].startswith("@"):
                raise Decline(f"term {self.key!r} is a keyword alias in its scoped context")
            if "@language" in mapping or "@direction" in mapping:
                raise Decline(f"term {self.key!r} has a language or direction")
            coerce = mapping.get("@type")
        self.datatype = None
        self.suffix = ""
        if coerce is None:
            self.mode = _PLAIN
        elif coerce == "@id":
            self.mode = _IRIREF
        elif coerce == "@vocab":
            self.mode = _VOCAB
        elif coerce.startswith("@") or coerce == XSD_DOUBLE:
            raise Decline(f"term {self.key!r} is typed {coerce}")
        else:
            self.mode = _TYPED
            self.datatype = _datatype(coerce)
            self.suffix = "" if coerce == XSD_STRING else f"^^<{coerce}>"
        return self.mode

    def child(self, revert: bool) -> _Context:
        """The context a node object under this property starts from (pyld `_expand`, before any
        embedded or type-scoped context): the type-scoped context reverted unless the node is a bare
        reference, then the property-scoped context applied again."""
        ctx = self._children.get(revert)
        if ctx is None:
            start = self.term_ctx
            mapping = start.mappings.get(self.key)
            scoped = mapping.get("@context") if mapping else None
            ctx = start.previous if revert and start.previous is not None else start
            if scoped is not None:
                ctx = ctx.process(scoped, override_protected=True)
            self._children[revert] = ctx
        return ctx


def _predicate(iri: str, key: str) -> str:
    if iri.startswith(jsonld._UNDEFINED) or not _IRI.match(iri):
        raise Decline(f"term {key!r} maps to {iri!r}, not an absolute IRI")
    return f"<{iri}>"


def _datatype(iri: str) -> str:
    if not _IRI.match(iri) or iri.startswith(jsonld._UNDEFINED):
        raise Decline(f"datatype {iri!r} is not an absolute IRI")
    return iri


class _Context:
    """A processed pyld active context, with its compiled terms and its transitions, each made once."""

    __slots__ = ("loader", "raw", "mappings", "prefixes", "terms", "types", "embedded", "typed", "plans", "_previous")

    def __init__(self, loader: _Loader, raw: dict) -> None:
        self.loader = loader
        self.raw = raw
        self.mappings = raw["mappings"]
        self.prefixes = frozenset(k for k, m in self.mappings.items() if m and m.get("_prefix"))
        self.terms: dict[str, _Term | str] = {}
        self.types: dict[str, str] = {}
        self.embedded: dict[Any, _Context] = {}
        self.typed: dict[tuple, _Context] = {}
        self.plans: dict = {}  # for a top-level node read with this context
        self._previous: Any = _MISSING

    @property
    def previous(self) -> _Context | None:
        if self._previous is _MISSING:
            previous = self.raw.get("previousContext")
            self._previous = None if previous is None else self.loader.wrap(previous)
        return self._previous

    def process(self, local: Any, *, propagate: bool = True, override_protected: bool = False) -> _Context:
        return self.loader.process(self.raw, local, propagate=propagate, override_protected=override_protected)

    def term(self, key: str) -> _Term:
        term = self.terms.get(key)
        if term is None:
            try:
                term = _Term(self, key)
            except Decline as exc:
                term = str(exc)  # the reason, remembered (a new exception each time: no growing traceback)
            self.terms[key] = term
        if type(term) is str:
            raise Decline(term)
        return term

    def alias(self, key: str) -> str | None:
        """"@id" or "@type" when `key` is an alias of that keyword here, else None."""
        mapping = self.mappings.get(key)
        if mapping:
            iri = mapping["@id"]
            if iri in ("@id", "@type"):
                return iri
            if iri == "@value":
                raise Decline(f"value object ({key!r} is @value)")
        return None

    def type_iri(self, name: str) -> str:
        iri = self.types.get(name)
        if iri is None:
            mapping = self.mappings.get(name)
            if not mapping:
                raise Decline(f"type {name!r} is not a term of the contexts")
            iri = _predicate(mapping["@id"], name)
            self.types[name] = iri
        return iri

    def with_context(self, value: Any) -> _Context:
        """The context after a node's own (embedded) @context: bundled URLs only."""
        key = value if isinstance(value, str) else tuple(value) if isinstance(value, list) else None
        if not key or not all(isinstance(url, str) for url in (key if isinstance(key, tuple) else (key,))):
            raise Decline("@context is not a URL or a list of URLs")
        ctx = self.embedded.get(key)
        if ctx is None:
            ctx = self.embedded[key] = self.process(value)
        return ctx

    def with_types(self, names: tuple) -> _Context:
        """pyld `_prepare_nested_context`: each type's scoped context, in sorted order, not propagated;
        the type terms are looked up here (the context before any of them)."""
        ctx = self.typed.get(names)
        if ctx is None:
            ctx = self
            for name in names:
                mapping = self.mappings.get(name)
                scoped = mapping.get("@context") if mapping else None
                if scoped is not None and scoped is not False:
                    ctx = ctx.process(scoped, propagate=False)
            self.typed[names] = ctx
        return ctx


# --- the walk ---------------------------------------------------------------------------------------

# RDFC-1.0 literal escapes, as `jsonld.escape_literal` writes them; a regular expression finds the few
# characters that need one (str.translate looks every character up in a dict, 10 µs for a paragraph).
_ESCAPES = {chr(code): text for code, text in jsonld._LITERAL_ESCAPES.items()}
_ESCAPE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
_UNESCAPE = re.compile(r'\\(u[0-9A-F]{4}|[btnfr"\\])')
_UNESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def _double(value: float) -> str:
    # pyld's canonical xsd:double form (jsonld.js writes the same): 16 significant digits.
    return re.sub(r"(\d)0*E\+?(-)?0*(\d)", r"\1E\2\3", f"{value:1.15E}")


def _escape(value: str) -> str:
    """`jsonld.escape_literal`, the same text, faster."""
    return _ESCAPE.sub(_escape_match, value)


def _escape_match(match: re.Match) -> str:
    return _ESCAPES[match[0]]


def _text(value: str) -> str:
    """A literal's quoted lexical form, escaped as RDFC-1.0 writes it (`jsonld.escape_literal`). Most
    text needs no escape: no quote, no backslash, nothing unprintable (which covers the controls)."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return f'"{_escape(value)}"'


def _typed(lexical: str, datatype: str) -> str:
    """A literal whose lexical form needs no escape (a number, a boolean), with its datatype."""
    return f'"{lexical}"' if datatype == XSD_STRING else f'"{lexical}"^^<{datatype}>'


def _component(term: str) -> dict:
    """pyld's dict form of one N-Quads term written by the walk."""
    if term[0] == "<":
        return {"type": "IRI", "value": term[1:-1]}
    if term[0] == "_":
        return {"type": "blank node", "value": term}
    datatype = XSD_STRING
    end = len(term) - 1
    if term[-1] == ">":  # "..."^^<datatype>: the lexical form holds no bare quote, the IRI none at all
        end = term.rfind('"^^<')
        datatype = term[end + 4 : -1]
    value = _UNESCAPE.sub(lambda m: _UNESCAPES.get(m[1]) or chr(int(m[1][1:], 16)), term[1:end])
    return {"type": "literal", "value": value, "datatype": datatype}


def _string_mode(term: _Term) -> int | None:
    """_PLAIN or _TYPED when a string value of `term` is a literal the walk writes inline, else None."""
    if term.is_list or term.is_graph:
        return None
    if term.mode is None:
        try:
            term.prepare_scalar()
        except Decline:
            return None  # only a scalar value is refused (by `scalar`); a node object is fine
    return term.mode if term.mode in (_PLAIN, _TYPED) else None


class _Plan:
    """What a node of one shape needs, worked out once: the shape is the keys in order, the type
    names and the embedded @context, under one property (or at the top)."""

    __slots__ = ("ctx", "id_key", "type_iris", "type_tails", "properties")

    def __init__(self, ctx: _Context, id_key: str | None, type_iris: tuple, properties: tuple) -> None:
        self.ctx = ctx
        self.id_key = id_key
        self.type_iris = type_iris
        self.type_tails = tuple(f" {RDF_TYPE} {iri} .\n" for iri in type_iris)
        self.properties = properties


def _plan(start: _Context, element: dict, term: _Term | None) -> tuple[_Plan, bool]:
    """pyld `_expand` of an object up to `_expand_object`: which context each part is read with.
    Returns the plan and whether it depends only on the shape (else it is not cached)."""
    for key in element:
        if key[:1] == "@" and key != "@context":
            raise Decline(f"keyword {key!r} as a key")
    if term is None:
        ctx = start
    else:
        # Leave the type-scoped context unless the node is a bare reference ({"id": ...}).
        revert = True
        if start.previous is not None and len(element) <= 2 and "@context" not in element:
            for key in element:
                if start.alias(key) == "@id" and len(element) == 1:
                    revert = False
        ctx = term.child(revert)
    if "@context" in element:
        ctx = ctx.with_context(element["@context"])

    # The type key and the type-scoped contexts, looked up in the context before them.
    scoping = ctx
    type_key = None
    names: tuple = ()
    for key, value in element.items():
        if scoping.alias(key) == "@type":
            if type_key is not None:
                raise Decline("two keys for @type")
            type_key = key
            names = tuple(value) if isinstance(value, list) else (value,)
            if not all(isinstance(name, str) for name in names):
                raise Decline("a type that is not a string")
    if names:
        ctx = scoping.with_types(tuple(sorted(names)))
        first = ctx.mappings.get(names[0])
        if first and first["@id"].startswith("@"):
            raise Decline(f"type {names[0]!r} is a keyword alias")

    id_key = None
    properties = []
    for key in element:
        if key == "@context":
            continue
        item = ctx.term(key)
        if item.kind == "prop":
            mode = _string_mode(item)
            # the inline path's tail is prefix + the quoted text + suffix
            prefix = f" {item.pred} "
            suffix = None if mode is None else " .\n" if mode == _PLAIN else f"{item.suffix} .\n"
            properties.append((key, item, mode, prefix, suffix))
        elif item.kind == "@id":
            if id_key is not None:
                raise Decline("two keys for @id")
            id_key = key
        elif key != type_key:
            raise Decline(f"{key!r} is @type only after the type-scoped contexts")
    if type_key is not None and ctx.alias(type_key) != "@type":
        raise Decline(f"{type_key!r} is not @type after the type-scoped contexts")
    plan = _Plan(ctx, id_key, tuple(scoping.type_iri(name) for name in names), tuple(properties))
    return plan, type_key in (None, "type")


class _Walk:
    """One document turned into RDF quads of N-Quads terms, blank nodes labelled _:b<n> (the canonical
    labels are issued afterwards).

    Quads of the default graph whose object is not a blank node, the bulk of a credential, are kept
    per subject as the rest of their N-Quads line (`tails`: " <p> <o> .\n"); the others (a blank
    object, a named graph) as (s, p, o, g) tuples in `quads`, g being "" for the default graph. Each
    maps to what the quad was made from: pyld merges a quad made twice from equal values (the same
    node referenced twice, the same string twice) but keeps two values that compare different even
    when they give the same literal, and then its dataset holds the quad twice (we decline that)."""

    __slots__ = ("tails", "quads", "count", "labels", "loader")

    def __init__(self, loader: _Loader) -> None:
        self.tails: dict[str, dict[str, Any]] = {}
        self.quads: dict[tuple, Any] = {}
        self.count = 0
        self.labels: dict[str, str] = {}
        self.loader = loader

    def fresh(self) -> str:
        self.count += 1
        return f"_:b{self.count}"

    def emit(self, s: str, p: str, o: str, g: str, origin: Any) -> None:
        if g or o[0] == "_":
            first = self.quads.setdefault((s, p, o, g), origin)
            if s == o and o[0] == "_":
                raise Decline("a blank node linked to itself")
        else:
            tails = self.tails.get(s)
            if tails is None:
                tails = self.tails[s] = {}
            first = tails.setdefault(f" {p} {o} .\n", origin)
        if first is not origin and first != origin:
            raise Decline(f"two different values give the same quad {s} {p} {o}")

    def iri(self, ctx: _Context, value: Any) -> str:
        """pyld `_expand_iri` without vocab (an @id value), with no base IRI: absolute IRIs and blank
        node identifiers only."""
        if type(value) is not str:
            raise Decline("an @id that is not a string")
        if _IRI.match(value):
            if ctx.prefixes and value[: value.find(":")] in ctx.prefixes and not value.startswith(
                "//", value.find(":") + 1
            ):
                raise Decline(f"{value!r} is a compact IRI of a prefix term")
            return f"<{value}>"
        if _BLANK.match(value):
            label = self.labels.get(value)
            if label is None:
                label = self.labels[value] = self.fresh()
            return label
        raise Decline(f"{value!r} is not an absolute IRI")

    def vocab(self, ctx: _Context, value: str) -> str:
        """pyld `_expand_iri` with vocab (an @vocab-typed value): a term, else an absolute IRI."""
        mapping = ctx.mappings.get(value, _MISSING)
        if mapping is _MISSING:
            return self.iri(ctx, value)
        if mapping is None:
            raise Decline(f"{value!r} is a nulled term")
        return _predicate(mapping["@id"], value)

    def scalar(self, term: _Term, value: Any) -> tuple[str, Any]:
        """The RDF object of a scalar property value and what it came from (pyld `_expand_value`, then
        `_object_to_rdf`)."""
        mode = term.mode
        if mode is None:
            mode = term.prepare_scalar()
        kind = type(value)
        if kind is str:
            if mode == _PLAIN:
                return _text(value), value
            if mode == _TYPED:
                return _text(value) + term.suffix, (value, term.datatype)
            if mode == _IRIREF:
                return self.iri(term.term_ctx, value), _REF
            return self.vocab(term.term_ctx, value), _REF
        if mode == _IRIREF or mode == _VOCAB:
            raise Decline(f"a {kind.__name__} value of the @id/@vocab term {term.key!r}")
        datatype = term.datatype
        if kind is bool:
            return _typed("true" if value else "false", datatype or XSD_BOOLEAN), (True, value, datatype)
        if kind is int:
            if abs(value) >= 10**21:
                raise Decline(f"integer {value} is written as an xsd:double")
            return _typed(str(value), datatype or XSD_INTEGER), (False, value, datatype)
        if kind is float:
            if not math.isfinite(value) or abs(value) >= 1e21:
                raise Decline(f"number {value!r} has no certain canonical form")
            if value.is_integer():
                return _typed(str(int(value)), datatype or XSD_INTEGER), (False, value, datatype)
            return _typed(_double(value), datatype or XSD_DOUBLE), (False, value, datatype)
        raise Decline(f"a value of type {kind.__name__}")

    def node(self, start: _Context, element: dict, graph: str, term: _Term | None) -> str:
        """A node object (pyld `_expand` of an object, then its place in the node map); returns its
        subject. `start` is the context pyld passes in (the property's `term_ctx`, or the root)."""
        plans = start.plans if term is None else term.plans
        types = element.get("type")
        if type(types) is list:
            types = tuple(types)
        if "@context" in element:
            context = element["@context"]
            shape = (tuple(element), types, tuple(context) if type(context) is list else context)
        else:
            shape = (tuple(element), types)
        try:
            plan = plans.get(shape)
        except TypeError:  # an unhashable type name or context: never cached
            shape = plan = None
        if plan is None:
            plan, cacheable = _plan(start, element, term)
            if shape is not None and cacheable:
                self.loader.plans += 1
                plans[shape] = plan

        if plan.id_key is None:
            self.count += 1
            subject = f"_:b{self.count}"
        else:
            value = element[plan.id_key]
            if type(value) is str and not plan.ctx.prefixes and _IRI.match(value):
                subject = f"<{value}>"  # the common case of `iri`, inline
            else:
                subject = self.iri(plan.ctx, value)
        if graph:  # inside a named graph (a presentation's credentials): the general store
            for iri in plan.type_iris:
                self.emit(subject, RDF_TYPE, iri, graph, _TYPE)
            for key, item, *_ in plan.properties:
                value = element[key]
                if value is not None:
                    self.property(subject, item, value, graph)
            return subject

        tails = self.tails.get(subject)
        if tails is None:
            tails = self.tails[subject] = {}
        for tail in plan.type_tails:
            if tails.setdefault(tail, _TYPE) is not _TYPE:
                raise Decline(f"an rdf:type property beside @type ({tail.strip()})")
        setdefault = tails.setdefault
        for key, item, string_mode, prefix, suffix in plan.properties:
            value = element[key]
            if value is None:
                continue
            if string_mode is not None and type(value) is str:
                # the common case, inline: a string literal (what it came from: the string, or the
                # string and its datatype)
                if value.isprintable() and '"' not in value and "\\" not in value:
                    tail = f'{prefix}"{value}"{suffix}'
                else:
                    tail = f'{prefix}"{_escape(value)}"{suffix}'
                origin = value if string_mode == _PLAIN else (value, item.datatype)
                first = setdefault(tail, origin)
                if first is not origin and first != origin:
                    raise Decline(f"two different values give the same quad {subject}{tail.rstrip()}")
            else:
                self.property(subject, item, value, graph)
        return subject

    def property(self, subject: str, term: _Term, value: Any, graph: str) -> None:
        pred = term.pred
        if term.is_list:
            # pyld keeps every list of a node, even two empty ones (rdf:nil twice): a list's own origin
            # equals nothing else, so such a repeat declines
            head = self.list(term, value if type(value) is list else [value], graph)
            self.emit(subject, pred, head, graph, object())
            return
        for item in value if type(value) is list else (value,):
            kind = type(item)
            if kind is dict:
                if term.is_graph:
                    self.count += 1
                    name = f"_:b{self.count}"
                    self.emit(subject, pred, name, graph, _REF)
                    self.node(term.term_ctx, item, name, term)
                else:
                    self.emit(subject, pred, self.node(term.term_ctx, item, graph, term), graph, _REF)
            elif item is None:
                continue
            elif kind is list:
                raise Decline(f"an array inside an array ({term.key!r})")
            elif term.is_graph:
                raise Decline(f"a plain value inside a graph ({term.key!r})")
            else:
                obj, origin = self.scalar(term, item)
                self.emit(subject, pred, obj, graph, origin)

    def list(self, term: _Term, items: list, graph: str) -> str:
        objects = []
        for item in items:
            if item is None:
                continue
            if type(item) is dict:
                objects.append((self.node(term.term_ctx, item, graph, term), _REF))
            elif type(item) is list:
                raise Decline(f"a list inside a list ({term.key!r})")
            else:
                objects.append(self.scalar(term, item))
        if not objects:
            return RDF_NIL
        head = node = self.fresh()
        for i, (obj, origin) in enumerate(objects):
            rest = self.fresh() if i + 1 < len(objects) else RDF_NIL
            self.emit(node, RDF_FIRST, obj, graph, origin)
            self.emit(node, RDF_REST, rest, graph, _REF)
            node = rest
        return head

    # --- RDFC-1.0 ---

    def canonical(self) -> str:
        """RDFC-1.0 canonical N-Quads of the quads.

        When every blank node has its own first-degree hash, RDFC-1.0 issues the canonical labels in
        the order of those hashes and stops (its step 5); otherwise the full algorithm runs. The hash
        of a blank node covers its quads written with it as _:a and any other blank node as _:z."""
        out = []
        hash_lines: dict[str, list] = {}
        for s, tails in self.tails.items():
            if not tails:
                continue  # a node without such quads is not in the dataset through them
            if s[0] == "_":
                hash_lines[s] = ["_:a" + tail for tail in tails]
            else:
                out.extend([s + tail for tail in tails])
        for s, p, o, g in self.quads:
            sb = s[0] == "_"
            ob = o[0] == "_"
            if sb:
                line = f"_:a {p} {'_:z' if ob else o}"
                hash_lines.setdefault(s, []).append(f"{line} _:z .\n" if g else f"{line} .\n")
            if ob:
                line = f"{'_:z' if sb else s} {p} _:a"
                hash_lines.setdefault(o, []).append(f"{line} _:z .\n" if g else f"{line} .\n")
            if g:
                hash_lines.setdefault(g, []).append(f"{'_:z' if sb else s} {p} {'_:z' if ob else o} _:a .\n")
            if not (sb or ob or g):
                out.append(f"{s} {p} {o} .\n")
        if hash_lines:
            sha256 = hashlib.sha256
            hashes = {}
            for node, lines in hash_lines.items():
                lines.sort()
                hashes[sha256("".join(lines).encode("utf-8")).hexdigest()] = node
            if len(hashes) != len(hash_lines):
                return self._general_canonical()
            labels = {hashes[h]: f"_:c14n{i}" for i, h in enumerate(sorted(hashes))}
            for s, tails in self.tails.items():
                if s[0] == "_" and tails:
                    label = labels[s]
                    out.extend([label + tail for tail in tails])
            for s, p, o, g in self.quads:
                if s[0] == "_":
                    s = labels[s]
                if o[0] == "_":
                    o = labels[o]
                if g:
                    out.append(f"{s} {p} {o} {labels[g]} .\n")
                elif s[0] == "_" or o[0] == "_":
                    out.append(f"{s} {p} {o} .\n")
        out.sort()
        return "".join(out)

    def all_quads(self) -> list[tuple[str, str, str, str]]:
        """Every quad as (s, p, o, g)."""
        quads = list(self.quads)
        for s, tails in self.tails.items():
            for tail in tails:
                cut = tail.index(" ", 1)
                quads.append((s, tail[1:cut], tail[cut + 1 : -3], ""))
        return quads

    def _general_canonical(self) -> str:
        """Blank nodes that first-degree hashes do not tell apart: jsonld's full RDFC-1.0."""
        dataset: dict[str, list] = {}
        for s, p, o, g in self.all_quads():
            dataset.setdefault(g or "@default", []).append(
                {"subject": _component(s), "predicate": _component(p), "object": _component(o)}
            )
        try:
            return jsonld.canonize_dataset(dataset)
        except jsonld.CanonicalizationError as exc:
            raise Decline(str(exc)) from None


def _walk(doc: Any, loader: Any) -> _Walk:
    if not isinstance(doc, dict) or "@context" not in doc:
        raise Decline("not a JSON-LD object with an @context")
    state = _loader_state(loader)
    walk = _Walk(state)
    try:
        walk.node(state.root, doc, "", None)
    except RecursionError:
        raise Decline("nested too deeply") from None
    return walk


def _canonize(doc: Any, loader: Any) -> str:
    return _walk(doc, loader).canonical()


def canonize(doc: Any, loader: Any = None) -> str | None:
    """RDFC-1.0 canonical N-Quads of `doc` (as `jsonld.canonize` writes them, after the safety check
    would pass), or None when the fast path does not cover the document."""
    try:
        return _canonize(doc, loader)
    except Decline:
        return None


def canonical_hash(doc: Any, loader: Any = None) -> bytes | None:
    """SHA-256 of `canonize(doc)`, or None when the fast path declines (the general path must run).

    Any unexpected failure declines too: the general path then runs and reports it as it always has
    (`canonize` and `explain` let such failures through, so the tests see them)."""
    try:
        return hashlib.sha256(_canonize(doc, loader).encode("utf-8")).digest()
    except Exception:  # noqa: BLE001 - Decline, UnicodeEncodeError (a lone surrogate) or anything else
        return None


def to_nquads(doc: Any, loader: Any = None) -> str | None:
    """The dataset the fast path makes of `doc`, as N-Quads with its own blank node labels (not
    canonical; for tests and debugging), or None when it declines."""
    try:
        quads = _walk(doc, loader).all_quads()
    except Decline:
        return None
    return "".join(f"{s} {p} {o} {g} .\n" if g else f"{s} {p} {o} .\n" for s, p, o, g in quads)


def explain(doc: Any, loader: Any = None) -> str | None:
    """Why the fast path declines `doc`, or None when it accepts it."""
    try:
        _canonize(doc, loader).encode("utf-8")
    except Decline as exc:
        return str(exc)
    except UnicodeEncodeError:
        return "text is not valid Unicode (unpaired surrogate)"
    return None


__all__ = ["Decline", "canonical_hash", "canonize", "explain", "to_nquads"]
