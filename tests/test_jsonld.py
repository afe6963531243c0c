"""Bundled contexts, the allowlisting loader, RDFC-1.0 canonical N-Quads and the safe-mode check."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import socket

import pytest
from pyld import jsonld as pyld

from issuer import jsonld
from issuer.jsonld import (
    CanonicalizationError,
    ContextIntegrityError,
    JsonLdSafetyError,
    UnknownContextError,
)

pyoxigraph = pytest.importorskip("pyoxigraph", reason="pyoxigraph is the second RDFC-1.0 implementation")

EXAMPLES_V2 = "https://www.w3.org/ns/credentials/examples/v2"
OB_UNVERSIONED = "https://purl.imsglobal.org/spec/ob/v3p0/context.json"
VC2 = "https://www.w3.org/ns/credentials/v2"
OB303 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
OB_EXT = "https://purl.imsglobal.org/spec/ob/v3p0/extensions.json"

OB_CTX = "https://purl.imsglobal.org/spec/ob/v3p0/context-"
# Bundled URL -> the official copy under ../shared/standards.
OFFICIAL_COPIES = {
    VC2: "contexts/w3c/credentials-v2.jsonld",
    OB303: "contexts/1edtech/ob-v3p0-context-3.0.3.json",
    OB_CTX + "3.0.2.json": "contexts/1edtech/ob-v3p0-context-3.0.2.json",
    OB_CTX + "3.0.1.json": "contexts/1edtech/ob-v3p0-context-3.0.1.json",
    OB_EXT: "contexts/1edtech/ob-v3p0-extensions.json",
    "https://w3id.org/security/data-integrity/v2": "contexts/w3c/data-integrity-v2.jsonld",
    "https://w3id.org/security/multikey/v1": "contexts/w3c/multikey-v1.jsonld",
    "https://purl.imsglobal.org/spec/clr/v2p0/context-2.0.1.json": (
        "contexts/1edtech/clr-v2p0-context-2.0.1.json"
    ),
    "https://www.w3.org/ns/did/v1": "contexts/w3c/did-v1.jsonld",
    "https://w3id.org/security/suites/ed25519-2020/v1": "contexts/w3c-ccg/ed25519-signature-2020-v1.jsonld",
    "https://www.w3.org/2018/credentials/v1": "contexts/w3c/credentials-v1.jsonld",
    "https://w3id.org/security/data-integrity/v1": "contexts/w3c/data-integrity-v1.jsonld",
    "https://www.w3.org/ns/credentials/status/v1": "contexts/w3c/bitstring-status-list-v1.jsonld",
    OB_UNVERSIONED: "contexts/1edtech/ob-v3p0-context.json",
}

SPEC_EXAMPLES = [
    "achievementAlignmentCase.json",
    "achievementAlignmentCe.json",
    "basicOpenBadgeCredential.json",
    "endorsement.json",
    "fullOpenBadge.json",
    "skillAssertionCase.json",
    "skillAssertionCtdl.json",
]
VALIDATOR_FIXTURES = [
    "simple.json",
    "simple_v1.json",
    "simple-did-key-method.json",
    "simple-did-web-method.json",
    "simple-eddsa-2022.json",
    "simple-err-expired.json",
    "simple-err-proof-value.json",
    "simple-noproof.json",
    "simple-multiple-proofs.json",
    "complete.json",
    "endorsement-valid.json",
    "credential-status-revoked.json",
    "bitstring-status-list/credential-status-revoked.json",
]


@pytest.fixture(scope="module")
def official_loader(load_standard):
    """Bundled contexts plus the one the official examples need that we do not ship."""
    return jsonld.make_loader(
        {
            EXAMPLES_V2: load_standard("contexts/w3c/credentials-examples-v2.jsonld"),
        }
    )


def ob_credential(**extra) -> dict:
    doc = {
        "@context": [VC2, OB303],
        "id": "urn:uuid:2f4b5c1e-5a8e-4f6a-9d0e-3c2b1a000001",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {"id": "https://issuer.example/issuers/1", "type": ["Profile"], "name": "School"},
        "validFrom": "2025-01-01T00:00:00Z",
        "name": "Badge",
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "achievement": {
                "id": "https://issuer.example/achievements/1",
                "type": ["Achievement"],
                "name": "Course",
                "description": "A course",
                "criteria": {"narrative": "Passed"},
            },
        },
    }
    doc.update(extra)
    return doc


# --- bundled contexts and the loader ------------------------------------------------------------


def test_every_bundled_context_matches_its_pinned_sha256():
    manifest = json.loads((jsonld.CONTEXTS_DIR / jsonld.MANIFEST_NAME).read_text(encoding="utf-8"))
    assert set(manifest) == set(OFFICIAL_COPIES)
    for url, entry in manifest.items():
        data = (jsonld.CONTEXTS_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], url
        assert entry["package"].startswith(("pypi:", "npm:")) and entry["path"]
    assert set(jsonld.bundled_contexts()) == set(manifest)


def test_bundled_contexts_mean_the_same_as_the_official_copies(standards):
    for url, relative in OFFICIAL_COPIES.items():
        official = standards / relative
        if official.exists():
            assert jsonld.bundled_contexts()[url] == json.loads(official.read_text(encoding="utf-8")), url


def test_a_tampered_bundled_context_is_refused(tmp_path, monkeypatch):
    for path in jsonld.CONTEXTS_DIR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    target = tmp_path / "credentials-v2.json"
    target.write_bytes(target.read_bytes().replace(b'"name"', b'"nome"', 1))
    monkeypatch.setattr(jsonld, "CONTEXTS_DIR", tmp_path)
    jsonld.bundled_contexts.cache_clear()
    try:
        with pytest.raises(ContextIntegrityError, match="credentials-v2.json"):
            jsonld.bundled_contexts()
        with pytest.raises(ContextIntegrityError):
            jsonld.ContextLoader()(VC2)
    finally:
        jsonld.bundled_contexts.cache_clear()


def test_loader_returns_a_static_remote_document_that_pyld_may_cache():
    remote = jsonld.document_loader(VC2)
    assert remote["contextUrl"] is None
    assert remote["documentUrl"] == VC2
    assert remote["tag"] == "static"
    assert "@context" in remote["document"]
    remote["document"]["@context"]["mutated"] = True
    assert "mutated" not in jsonld.document_loader(VC2)["document"]["@context"]


def test_loader_refuses_a_url_that_is_not_bundled():
    with pytest.raises(UnknownContextError, match="context not allowed: https://evil.example/ctx") as info:
        jsonld.document_loader("https://evil.example/ctx", {})
    assert isinstance(info.value, pyld.JsonLdError)
    assert info.value.url == "https://evil.example/ctx"


def test_canonize_refuses_a_document_naming_an_unknown_context():
    doc = ob_credential()
    doc["@context"] = [VC2, "https://purl.imsglobal.org/spec/ob/v3p0/context-9.9.9.json"]
    with pytest.raises(UnknownContextError, match="context not allowed: .*context-9.9.9.json"):
        jsonld.canonize(doc)
    with pytest.raises(UnknownContextError):
        jsonld.check_safe(doc)


def test_loader_never_opens_a_network_connection(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert "Profile" in jsonld.canonize(ob_credential())
    with pytest.raises(UnknownContextError):
        jsonld.canonize({"@context": "https://example.com/remote-context", "name": "x"})


def test_a_context_added_to_one_loader_is_not_served_by_another(load_standard):
    doc = load_standard("vectors/w3c-vc-di-eddsa/unsigned.json")
    with_examples = jsonld.make_loader(
        {EXAMPLES_V2: load_standard("contexts/w3c/credentials-examples-v2.jsonld")}
    )
    assert "alumniOf" in jsonld.canonize(doc, with_examples)
    with pytest.raises(UnknownContextError, match=EXAMPLES_V2):
        jsonld.canonize(doc)  # pyld's shared context cache must not leak the extra context


def test_make_loader_refuses_to_replace_a_bundled_context():
    loader = jsonld.make_loader({VC2: {"@context": {"name": "https://evil.example/name"}}})
    with pytest.raises(ValueError, match="refusing to replace"):
        loader(VC2)


# --- RDFC-1.0 escaping and canonical form -------------------------------------------------------


def test_escape_literal_uses_the_rdfc_forms_for_every_control_character():
    named = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    for code in [*range(0x20), 0x7F]:
        char = chr(code)
        assert jsonld.escape_literal(char) == named.get(char, f"\\u{code:04X}")
    assert jsonld.escape_literal('say "hi" \\ ok') == 'say \\"hi\\" \\\\ ok'
    untouched = "\u0080\u009f\u2028\u2029 中文 😀 é \u202e\u05d0 \U0010ffff ~"
    assert jsonld.escape_literal(untouched) == untouched


def test_canonize_writes_control_characters_as_rdfc_escapes():
    doc = {
        "@context": {"p": "http://example.org/p"},
        "@id": "http://example.org/s",
        "p": "a\bb\fc\x00d\x1fe\x7ff",
    }
    assert (
        jsonld.canonize(doc)
        == '<http://example.org/s> <http://example.org/p> "a\\bb\\fc\\u0000d\\u001Fe\\u007Ff" .\n'
    )


def test_blank_node_labels_follow_the_hash_of_the_escaped_lines():
    # Two blank nodes that differ only by a control character: which one is _:c14n0 depends on the
    # hash of the escaped line. pyld's stock escaping hashes the raw characters and labels these two
    # the other way round, so fixing the escapes in its output afterwards would give a wrong result.
    doc = {"@context": {"p": "http://example.org/p"}, "@graph": [{"p": "\x01"}, {"p": "\x7f"}]}
    assert jsonld.canonize(doc) == (
        '_:c14n0 <http://example.org/p> "\\u007F" .\n_:c14n1 <http://example.org/p> "\\u0001" .\n'
    )
    assert jsonld.canonize(doc) == _oxigraph_canonical(jsonld.to_dataset(doc))


def test_canonize_reproduces_the_official_canonical_documents(load_standard, official_loader):
    pairs = [
        (
            "vectors/w3c-vc-di-eddsa/unsigned.json",
            "vectors/w3c-vc-di-eddsa/eddsa-rdfc-2022/canonDocDataInt.txt",
        ),
        (
            "vectors/w3c-vc-di-eddsa/eddsa-rdfc-2022/proofConfigDataInt.json",
            "vectors/w3c-vc-di-eddsa/eddsa-rdfc-2022/proofCanonDataInt.txt",
        ),
        (
            "vectors/w3c-vc-di-eddsa/Ed25519Signature2020/proofConfigEdSig.json",
            "vectors/w3c-vc-di-eddsa/Ed25519Signature2020/proofCanonEdSig.txt",
        ),
    ]
    for source, expected in pairs:
        assert jsonld.canonize(load_standard(source), official_loader) == load_standard(expected), source
    vector = load_standard("vectors/1edtech-ob-v3p0/obv3p0/vector.json")
    assert jsonld.canonize(vector["unsignedCredential"]) == load_standard(
        "vectors/1edtech-ob-v3p0/obv3p0/document-canon.txt"
    )


def test_canonize_refuses_a_poison_dataset_quickly():
    nodes = [f"_:n{i}" for i in range(12)]
    doc = {
        "@context": {"p": {"@id": "http://example.org/p", "@type": "@id"}},
        "@graph": [{"@id": n, "p": [m for m in nodes if m != n]} for n in nodes],
    }
    with pytest.raises(CanonicalizationError, match="too costly"):
        jsonld.canonize(doc)


# --- differential test against pyoxigraph -------------------------------------------------------

RDF_LANGSTRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"


def _ox_term(component: dict):
    if component["type"] == "IRI":
        return pyoxigraph.NamedNode(component["value"])
    if component["type"] == "blank node":
        return pyoxigraph.BlankNode(component["value"][2:])
    if component["datatype"] == RDF_LANGSTRING:
        return pyoxigraph.Literal(component["value"], language=component["language"])
    return pyoxigraph.Literal(component["value"], datatype=pyoxigraph.NamedNode(component["datatype"]))


def _oxigraph_canonical(dataset: dict) -> str:
    """Canonical N-Quads by pyoxigraph, fed the dataset as terms (no N-Quads text of ours involved)."""
    quads = []
    for graph_name, triples in dataset.items():
        if graph_name == "@default":
            graph = pyoxigraph.DefaultGraph()
        elif graph_name.startswith("_:"):
            graph = pyoxigraph.BlankNode(graph_name[2:])
        else:
            graph = pyoxigraph.NamedNode(graph_name)
        for t in triples:
            quads.append(
                pyoxigraph.Quad(
                    _ox_term(t["subject"]), _ox_term(t["predicate"]), _ox_term(t["object"]), graph
                )
            )
    ds = pyoxigraph.Dataset(quads)
    ds.canonicalize(pyoxigraph.CanonicalizationAlgorithm.RDFC_1_0)
    text = pyoxigraph.serialize(ds, format=pyoxigraph.RdfFormat.N_QUADS).decode("utf-8")
    return "".join(sorted(line + "\n" for line in text.split("\n") if line))  # not splitlines(): U+2028


NASTY = [
    *(chr(c) for c in range(0x20)),
    "\x7f",
    "\x80",
    "\x9f",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\\",
    '"',
    "\\u0041",
    "香港大學專業進修學院",
    "微證書",
    "繁體中文",
    "😀",
    "👩‍🎓",
    "🇭🇰",
    "e\u0301",
    "Z\u0351\u0337\u0322a\u0489lgo",
    "\u202eRTL override\u202c",
    "مرحبا",
    "שלום",
    "\u200f",
    "\u200d",
    "\U0001d54f",
    "\uff01",
    "\ufffd",
    " ",
    "",
]


def _nasty_text(rng: random.Random) -> str:
    parts = [
        rng.choice(NASTY) if rng.random() < 0.7 else rng.choice(["Badge", "課程", "a b", "x"])
        for _ in range(rng.randint(1, 6))
    ]
    return "".join(parts)


def _generic_doc(rng: random.Random) -> dict:
    ctx = {
        "@vocab": "http://example.org/vocab#",
        "knows": {"@id": "http://example.org/vocab#knows"},
        "tags": {"@id": "http://example.org/vocab#tags", "@container": "@list"},
        "label": {"@id": "http://example.org/vocab#label", "@language": "zh-hant"},
        "when": {
            "@id": "http://example.org/vocab#when",
            "@type": "http://www.w3.org/2001/XMLSchema#dateTime",
        },
    }

    def node(depth: int) -> dict:
        out: dict = {"name": _nasty_text(rng)}
        if rng.random() < 0.3:
            out["@id"] = f"http://example.org/n/{rng.randint(0, 5)}"
        if rng.random() < 0.4:
            out["label"] = _nasty_text(rng)
        if rng.random() < 0.3:
            out["score"] = rng.choice([1, 2.5, -0.0001, 10**21, True, False])
        if rng.random() < 0.3:
            out["tags"] = [_nasty_text(rng) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.2:
            out["when"] = "2025-01-01T00:00:00Z"
        if rng.random() < 0.3:
            out["note"] = {"@value": _nasty_text(rng), "@language": rng.choice(["en", "zh-hant", "ar"])}
        if depth < 3:
            # siblings that differ only in their literals: their labels depend on those literals' hashes
            out["knows"] = [node(depth + 1) for _ in range(rng.randint(0, 3))]
        return out

    doc: dict = {"@context": ctx, **node(0)}
    if rng.random() < 0.3:
        doc["@graph"] = [node(2) for _ in range(rng.randint(1, 3))]
        doc["@id"] = rng.choice(["_:g", "http://example.org/graph"])
    return doc


def _ob_doc(rng: random.Random) -> dict:
    doc = ob_credential(name=_nasty_text(rng), description=_nasty_text(rng))
    subject = doc["credentialSubject"]
    subject["identifier"] = [
        {
            "type": "IdentityObject",
            "hashed": True,
            "identityType": "emailAddress",
            "identityHash": "sha256$"
            + hashlib.sha256(_nasty_text(rng).encode("utf-8", "surrogatepass")).hexdigest(),
            "salt": _nasty_text(rng),
        }
        for _ in range(rng.randint(1, 3))
    ]
    subject["achievement"]["criteria"]["narrative"] = _nasty_text(rng)
    subject["achievement"]["alignment"] = [
        {"type": ["Alignment"], "targetName": _nasty_text(rng), "targetUrl": f"https://example.org/t/{i}"}
        for i in range(rng.randint(0, 3))
    ]
    subject["result"] = [{"type": ["Result"], "value": _nasty_text(rng)} for _ in range(rng.randint(0, 2))]
    subject["creditsEarned"] = rng.choice([1, 2.5, 30.0])
    doc["evidence"] = [
        {"type": ["Evidence"], "narrative": _nasty_text(rng), "name": _nasty_text(rng)}
        for _ in range(rng.randint(0, 2))
    ]
    return doc


@pytest.mark.parametrize("seed", range(4))
def test_canonize_agrees_with_pyoxigraph_on_nasty_documents(seed):
    rng = random.Random(seed)
    documents = [_generic_doc(rng) for _ in range(60)] + [_ob_doc(rng) for _ in range(40)]
    for doc in documents:
        ours = jsonld.canonize(doc)
        assert ours == _oxigraph_canonical(jsonld.to_dataset(doc)), json.dumps(doc, ensure_ascii=True)[:300]


_NO_CONTROLS = {code: "?" for code in [*range(0x20), 0x7F]}


def _without_controls(node):
    if isinstance(node, dict):
        return {k: _without_controls(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_controls(v) for v in node]
    return node.translate(_NO_CONTROLS) if isinstance(node, str) else node


def test_canonize_matches_stock_pyld_when_no_control_characters_are_involved():
    rng = random.Random(99)
    for _ in range(50):
        doc = _without_controls(_ob_doc(rng))
        stock = pyld.normalize(
            copy.deepcopy(doc),
            {
                "algorithm": "URDNA2015",
                "format": "application/n-quads",
                **jsonld.document_loader.pyld_options(),
            },
        )
        assert jsonld.canonize(doc) == stock


# --- safe mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPEC_EXAMPLES)
def test_check_safe_accepts_the_official_spec_examples(name, load_standard, official_loader):
    jsonld.check_safe(load_standard(f"examples/ob_v3p0/spec/{name}"), official_loader)


@pytest.mark.parametrize("name", VALIDATOR_FIXTURES)
def test_check_safe_accepts_the_official_validator_fixtures(name, load_standard, official_loader):
    doc = load_standard(f"examples/ob_v3p0/1edtech-validator-fixtures/{name}")
    unsecured = {k: v for k, v in doc.items() if k != "proof"}  # proofs are checked as proof configurations
    jsonld.check_safe(unsecured, official_loader)
    assert jsonld.canonize(
        jsonld.safe_expand(unsecured, official_loader), official_loader
    ) == jsonld.canonize(unsecured, official_loader)


def test_check_safe_accepts_the_clr_fixture(load_standard):
    doc = load_standard("examples/clr_v2p0/1edtech-validator-fixtures/simple.json")
    jsonld.check_safe({k: v for k, v in doc.items() if k != "proof"})


def test_check_safe_rejects_an_undefined_top_level_term():
    doc = ob_credential(favouriteColour="blue")
    canonical_without = jsonld.canonize(ob_credential())
    assert jsonld.canonize(doc) == canonical_without  # pyld silently drops it: it would not be signed
    with pytest.raises(JsonLdSafetyError, match="favouriteColour") as info:
        jsonld.check_safe(doc)
    assert info.value.term == "favouriteColour"


def test_check_safe_rejects_an_undefined_nested_term():
    doc = ob_credential()
    doc["credentialSubject"]["achievement"]["criteria"]["grade"] = "A+"
    with pytest.raises(JsonLdSafetyError, match="'grade'"):
        jsonld.check_safe(doc)


def test_check_safe_rejects_an_undefined_type_name():
    doc = ob_credential(type=["VerifiableCredential", "OpenBadgeCredential", "FancyBadge"])
    with pytest.raises(JsonLdSafetyError, match="type 'FancyBadge'") as info:
        jsonld.check_safe(doc)
    assert info.value.term == "FancyBadge"


def test_check_safe_needs_the_extensions_context_for_1edtech_type_names():
    schema = [
        {
            "id": "https://purl.imsglobal.org/spec/ob/v3p0/schema/json/ob_v3p0_achievementcredential_schema.json",
            "type": "1EdTechJsonSchemaValidator2019",
        }
    ]
    with pytest.raises(JsonLdSafetyError, match="1EdTechJsonSchemaValidator2019"):
        jsonld.check_safe(ob_credential(credentialSchema=schema))
    jsonld.check_safe(ob_credential(credentialSchema=schema, **{"@context": [VC2, OB303, OB_EXT]}))


def test_check_safe_rejects_a_relative_id():
    with pytest.raises(JsonLdSafetyError, match="relative IRI"):
        jsonld.check_safe(ob_credential(id="credentials/3527"))


def test_check_safe_rejects_keys_shaped_like_keywords():
    doc = ob_credential()
    doc["issuer"]["@foo"] = "bar"
    with pytest.raises(JsonLdSafetyError, match="'@foo'"):
        jsonld.check_safe(doc)


def test_check_safe_accepts_terms_under_a_context_vocab():
    doc = ob_credential(favouriteColour="blue")
    doc["@context"] = [*doc["@context"], {"@vocab": "https://issuer.example/terms#"}]
    jsonld.check_safe(doc)
    assert "https://issuer.example/terms#favouriteColour" in jsonld.canonize(doc)


def test_the_scoped_context_cache_changes_no_expansion(official_loader, load_standard):
    """Our processor reuses the clone a type-scoped context starts from; pyld's own must agree exactly,
    for every spec example and validator fixture, expanded repeatedly so the cache is warm."""
    from issuer.catalogue import DEMO_CATALOGUE, load_catalogue
    from issuer.credentials import achievement_document, credential_document

    documents = [load_standard(f"examples/ob_v3p0/spec/{name}") for name in SPEC_EXAMPLES]
    documents += [load_standard(f"examples/ob_v3p0/1edtech-validator-fixtures/{n}") for n in VALIDATOR_FIXTURES]
    for mc in load_catalogue(DEMO_CATALOGUE)[:4]:
        achievement = achievement_document(mc, f"https://example.edu/a/{mc.code}",
                                           image_url="https://example.edu/i.png")
        documents.append(credential_document(
            credential_id="urn:uuid:4f1c1e0a-0c7a-4c57-9d1e-7f1f4c1f7a10",
            issuer_profile={"id": "did:web:example.edu", "type": ["Profile"], "name": "School"},
            achievement=achievement, recipient_email="a@example.edu", salt="s",
            valid_from="2026-01-01T00:00:00Z", result="A"))
    for _ in range(3):
        for doc in documents:
            options = jsonld._pyld_options(official_loader)
            ours = jsonld._PROCESSOR.expand(copy.deepcopy(doc), dict(options))
            plain = pyld.JsonLdProcessor().expand(copy.deepcopy(doc), dict(jsonld._pyld_options(official_loader)))
            assert ours == plain


def test_a_bare_value_inside_a_graph_is_refused_because_it_would_not_be_signed():
    presentation = {"@context": [VC2], "type": ["VerifiablePresentation"],
                    "verifiableCredential": ["eyJhbGciOiJFUzI1NiJ9.e30.c2ln"]}
    assert "eyJhbGci" not in jsonld.canonize(presentation)
    with pytest.raises(JsonLdSafetyError, match="plain value inside a graph"):
        jsonld.check_safe(presentation)
