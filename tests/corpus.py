"""A seeded, deterministic corpus of the JSON-LD documents we sign and verify, for the fast JSON-LD path.

Used by tests/test_fastld.py (a slice of it in CI) and bench/fastld_corpus.py (all of it). Most
documents are built by our own code, so they have exactly the shapes we issue: badges from
`credentials.py` (every optional field present or absent, arrays of 0, 1 or many), Certificates,
Diplomas and programme awards from `awards.py`, status list credentials from `status.py`, holder
presentations shaped as `presentations.py` builds them, and the proof configuration of each. The
fast path must accept every one of those (`Case.ours`). The rest are the same documents as other
issuers or wallets might send them (other date-time forms, VCDM 1.1, the extensions context, OB
fields we never fill in) and a few that the fast path is expected to decline, so the bench can list
what it declines and why.

Text is drawn from Chinese, emoji, combining marks, right-to-left scripts, control characters and
strings that look like IRIs or keywords; numbers from integers, fractions, large and negative values.
"""

from __future__ import annotations

import copy
import hashlib
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from types import SimpleNamespace
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from issuer import awards, fastld, jsonld, proofs, stacking, status
from issuer import credentials as docs
from issuer.catalogue import Localised, Microcredential, Theme
from issuer.multikey import did_key

VC1 = "https://www.w3.org/2018/credentials/v1"
VC2 = "https://www.w3.org/ns/credentials/v2"
OB = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
OB_301 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.1.json"
OB_302 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.2.json"
OB_EXT = "https://purl.imsglobal.org/spec/ob/v3p0/extensions.json"
DI = "https://w3id.org/security/data-integrity/v2"

PIECES = [
    *(chr(c) for c in range(0x20)),
    "\x7f", "\x80", "\x9f", "\u2028", "\u2029", "\ufeff", "\\", '"', "\\u0041", "\\n", "'",
    "香港大學專業進修學院", "微證書", "繁體中文", "資歷架構第四級", "粵語",
    "😀", "👩\u200d🎓", "🇭🇰", "🎓", "\U0001d54f",
    "e\u0301", "Z\u0351\u0337\u0322a\u0489lgo", "n\u0303", "\u0041\u030a",
    "\u202eRTL override\u202c", "مرحبا", "שלום", "\u200f", "\u200e", "\u200d",
    "\uff01", "\ufffd", " ", "  ", "\t", "",
    "ob:foo", "did:x", "_:b0", "http:", "@id", "@context", "https://example.org/x", "urn:uuid:1", "xsd:string",
    "<http://x>", "_:c14n0", " .\n", "^^",
]
WORDS = ["Data Analytics", "Badge", "課程", "Python", "a b", "x", "Leadership", "數據分析", "Level 4"]
COMPACT_LOOKING = ["ob:foo", "did:x", "_:b0", "http:", "urn:x:y", "xsd:dateTime", "@type", "id", "type"]

DATE_FORMS = [
    "{d}T{t}Z", "{d}T{t}.5Z", "{d}T{t}.123456Z", "{d}T{t}+08:00", "{d}T{t}-05:30", "{d}T{t}.25+14:00",
    "{d}T{t}-12:00", "{d}T{t}+00:00", "{d}T{t}z",
]


ACCEPT, EITHER, DECLINE = "accept", "either", "decline"


@dataclass
class Case:
    """One document. `expect`: ACCEPT for what our own code builds (the fast path must take it),
    DECLINE for the variants made to be declined, EITHER for the other variants."""

    name: str
    doc: dict
    expect: str


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    # --- values ---

    def text(self, lo: int = 1, hi: int = 6) -> str:
        rng = self.rng
        parts = [rng.choice(PIECES) if rng.random() < 0.6 else rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        if rng.random() < 0.05:
            parts.append(rng.choice(COMPACT_LOOKING))
        return "".join(parts)

    def word(self) -> str:
        alphabet = string.ascii_letters + string.digits + "-_."
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 12)))

    def url(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.55:
            host = rng.choice(["example.edu", "127.0.0.1:5000", "issuer.example", "例子.測試", "a-b.c.d"])
            path = "/".join(self.word() for _ in range(rng.randint(0, 3)))
            query = f"?lang={rng.choice(['zh-Hant', 'en'])}" if rng.random() < 0.2 else ""
            fragment = f"#{self.word()}" if rng.random() < 0.2 else ""
            return f"{rng.choice(['https', 'http'])}://{host}/{path}{query}{fragment}"
        if choice < 0.7:
            return f"urn:uuid:{self.uuid()}"
        if choice < 0.8:
            return f"did:web:{rng.choice(['example.edu', '127.0.0.1%3A5000', 'school.example:issuers:1'])}"
        if choice < 0.9:
            return f"did:key:z6Mk{self.word()}"
        return rng.choice(["did:x", "ob:foo", "http:", "mailto:learner@example.edu", "tag:example.edu,2026:x",
                           "https://例子.測試/路徑/微證書", "data:text/plain,hi"])

    def base(self) -> str:
        """An http(s) URL without query or fragment, for our code to append paths and fragments to."""
        host = self.rng.choice(["example.edu", "127.0.0.1:5000", "issuer.example", "例子.測試", "a-b.c.d"])
        path = "".join("/" + self.word() for _ in range(self.rng.randint(0, 2)))
        return f"{self.rng.choice(['https', 'http'])}://{host}{path}"

    def uuid(self) -> str:
        digits = f"{self.rng.getrandbits(128):032x}"
        return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"

    def number(self) -> float | int:
        return self.rng.choice([0, 1, 2, 3, 3.5, 6, 7.5, 0.5, 1.25, 12, 30, 2.0, 0.1 + 0.2, 1 / 3, 100000, 123456789012,
                                1e20, 4.5e-7, 2 ** 53 + 1, 99.99])

    def moment(self) -> datetime:
        return datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=self.rng.randint(0, 8 * 365 * 86400))

    def date_form(self) -> str:
        moment = self.moment()
        return self.rng.choice(DATE_FORMS).format(d=moment.strftime("%Y-%m-%d"), t=moment.strftime("%H:%M:%S"))

    def some(self, make, lo: int = 0, hi: int = 3) -> list:
        return [make() for _ in range(self.rng.randint(lo, hi))]

    def maybe(self, value, p: float = 0.5):
        return value if self.rng.random() < p else None

    # --- building blocks made by our code ---

    def microcredential(self) -> Microcredential:
        rng = self.rng
        return Microcredential(
            code=f"{rng.choice(['AI', 'DA', 'HR', 'LG'])}-{rng.randint(100, 999)}",
            name=Localised(self.text(), self.text()),
            description=Localised(self.text(2, 10), self.text(2, 10)),
            criteria=Localised(self.text(1, 8), self.text(1, 8)),
            credits=rng.choice([1, 1.5, 2, 3, 3.5, 6, 7.5, 9, 12, 0.5, 0.25]),
            contact_hours=rng.choice([6, 7.5, 15, 30, 45, 12.25]),
            theme=Theme(self.word().lower(), Localised(self.text(), self.text())),
            area=rng.choice(["professional", "general"]),
            qf_level=rng.randint(1, 7),
            language=rng.choice([("en",), ("zh-Hant",), ("en", "zh-Hant"), ("yue", "en")]),
            cef_code=self.maybe(f"{rng.randint(10, 99)}C{rng.randint(10000, 99999)}A"),
        )

    def profile(self) -> dict:
        rng = self.rng
        profile = {"id": self.url(), "type": ["Profile"], "name": self.text()}
        if rng.random() < 0.8:
            profile["url"] = self.url()
        if rng.random() < 0.6:
            profile["image"] = rng.choice([self.url(), {"id": self.url(), "type": "Image", "caption": self.text()}])
        if rng.random() < 0.3:
            profile["email"] = f"{self.word()}@example.edu"
        if rng.random() < 0.15:
            profile["description"] = self.text()
        if rng.random() < 0.1:
            profile["address"] = {
                "type": ["Address"], "addressCountry": self.text(), "streetAddress": self.text(),
                "geo": {"type": "GeoCoordinates", "latitude": rng.choice([22.3193, -33.8688, 0, -90, 45.5]),
                        "longitude": rng.choice([114.1694, -151.2093, 180, -0.5])},
            }
        if rng.random() < 0.1:
            profile["otherIdentifier"] = [{"type": "IdentifierEntry", "identifier": self.word(),
                                           "identifierType": self.rng.choice(["sourcedId", "ext:x", "name"])}]
        return profile

    def evidence(self) -> dict:
        item = {key: self.text() for key in ("name", "narrative", "description", "genre", "audience")
                if self.rng.random() < 0.5}
        if self.rng.random() < 0.5:
            item["id"] = self.url()
        return item or {"name": self.text()}

    def result(self):
        rng = self.rng
        choice = rng.random()
        if choice < 0.3:
            return None
        if choice < 0.7:
            return rng.choice(["A", "B+", "Pass", "C-", self.text()])
        return [
            {key: value for key, value in {
                "type": ["Result"], "value": self.text(), "resultDescription": self.maybe(self.url()),
                "achievedLevel": self.maybe(self.url(), 0.3),
                "status": self.maybe(rng.choice(["Completed", "Enrolled"]), 0.3),
            }.items() if value is not None}
            for _ in range(rng.randint(0, 3))
        ]

    def status_entry(self) -> dict:
        return status.status_entry(f"{self.base()}/status/{self.word()}", self.rng.randint(0, 131071),
                                   self.rng.choice(["revocation", "suspension"]))

    def badge(self) -> dict:
        rng = self.rng
        mc = self.microcredential()
        base = self.base()
        issuer = self.profile()
        achievement = docs.achievement_document(
            mc, f"{base}/achievements/{mc.code}", image_url=f"{base}/achievements/{mc.code}/image.png",
            language=rng.choice(["en", "zh-Hant", "zh-HK"]), issuer_profile=self.maybe(issuer, 0.7))
        valid_from = self.moment()
        return docs.credential_document(
            credential_id=self.url(),
            issuer_profile=issuer,
            achievement=achievement,
            recipient_email=self.maybe(f"{self.word()}@例子.example", 0.9),
            salt=hashlib.sha256(str(rng.random()).encode()).hexdigest()[:32],
            valid_from=valid_from,
            awarded_date=self.maybe(valid_from - timedelta(days=rng.randint(0, 900))),
            valid_until=self.maybe(valid_from + timedelta(days=rng.randint(1, 3000)), 0.3),
            recipient_did=self.maybe(f"did:key:z6Mk{self.word()}", 0.4),
            result=self.result(),
            # twice the same evidence without an id: two blank nodes with the same first-degree hash
            evidence=[self.evidence() for _ in range(rng.choice([0, 0, 1, 2, 4]))] if rng.random() < 0.9
            else [{"name": self.text(), "narrative": self.text()}] * 2,
            credits=self.maybe(rng.choice([0, 1, 2.5, 3, 7.5, 0.75, 12]), 0.3),
            image=self.maybe({"id": self.url(), "type": "Image", "caption": self.text()}, 0.2),
            name=self.maybe(self.text(), 0.2),
            description=self.maybe(self.text(), 0.2),
            credential_status=self.maybe(self.status_entry(), 0.7),
        )

    def award(self) -> dict:
        rng = self.rng
        rules = stacking.default_rules()
        base = self.base()
        profile = self.profile()
        ctx = SimpleNamespace(base_url=base, profile=profile,
                              credential_url=lambda public_id: f"{base}/credentials/{public_id}")
        badges = [{"id": self.url(), "name": self.text(), "credits": rng.choice([3, 6, 7.5, 1.5, 9]),
                   "awarded": self.moment().date().isoformat()} for _ in range(rng.randint(1, 8))]
        submitted = {b["id"]: SimpleNamespace(sha256=hashlib.sha256(b["id"].encode()).hexdigest()) for b in badges}
        if rng.random() < 0.2:
            code = self.word()
            rules = stacking.RuleSet(
                levels=rules.levels, validity_years=rules.validity_years, professional_title=rules.professional_title,
                general_title=rules.general_title, max_badges=rules.max_badges,
                programmes=(stacking.Programme(code, {"en": self.text(), "zh-Hant": self.text()},
                                               frozenset(self.word() for _ in range(3)), 24),))
            level = stacking.PROGRAMME_PREFIX + code
        else:
            level = rng.choice(["Certificate", "Diploma"])
        theme = self.maybe(self.word().lower(), 0.6)
        award = {
            "level": level, "area": rng.choice(["professional", "general"]), "theme": theme,
            "theme_name": {"en": self.text(), "zh-Hant": self.text()} if theme else None,
            "qf_level": rng.choice([None, 3, 4, 5]), "title": {"en": self.text(), "zh-Hant": self.text()},
            "credits": sum(b["credits"] for b in badges), "counted": [b["id"] for b in badges],
        }
        report = {"award": award, "badges": badges}
        app = SimpleNamespace(email=self.maybe(f"{self.word()}@example.edu", 0.7), holder=None)
        if app.email is None:
            app.holder = f"did:key:z6Mk{self.word()}"
        salt = f"{rng.getrandbits(128):032x}"
        with mock.patch.object(docs, "new_salt", lambda: salt):  # the award's only random part
            return awards.award_document(ctx, rules, report, SimpleNamespace(submitted=submitted), app,
                                         self.word(), self.moment(), self.maybe(self.status_entry(), 0.7))

    def status_list(self) -> dict:
        return status.list_credential(
            list_url=f"{self.base()}/status/{self.word()}", issuer=self.url(),
            bits=_bits(self.rng.randint(0, 3)), valid_from=self.moment(), valid_until=self.maybe(self.moment()),
            ttl_ms=self.maybe(self.rng.choice([0, 300000, 86400000])),
            purpose=self.rng.choice(["revocation", "suspension"]))

    def proof_config(self, doc: dict, **extra) -> dict:
        config = {
            "@context": doc["@context"],
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-rdfc-2022",
            "created": self.rng.choice([self.moment().strftime("%Y-%m-%dT%H:%M:%SZ"), self.date_form()]),
            "verificationMethod": self.rng.choice([
                f"did:web:example.edu#z6Mk{self.word()}", f"did:key:z6Mk{self.word()}#key-1",
                f"https://issuer.example/issuers/1#z6Mk{self.word()}"]),
            "proofPurpose": extra.pop("proofPurpose", "assertionMethod"),
        }
        config.update(extra)
        return config

    def signed(self, doc: dict) -> dict:
        key = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        return proofs.create_eddsa_rdfc_2022(doc, key, did_key(key.public_key()) + "#k",
                                             created=self.moment().strftime("%Y-%m-%dT%H:%M:%SZ"))

    def presentation(self) -> tuple[dict, dict]:
        rng = self.rng
        entries = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.25:
                jwt = ".".join(self.word().replace(".", "") or "x" for _ in range(3))
                entries.append({"@context": VC2, "type": "EnvelopedVerifiableCredential",
                                "id": "data:application/vc+jwt," + jwt})
            else:
                entries.append(self.signed(self.badge()) if rng.random() < 0.7 else self.badge())
        holder = f"did:key:z6Mk{self.word()}"
        vp = {"@context": [VC2], "type": ["VerifiablePresentation"], "holder": holder, "verifiableCredential": entries}
        config = self.proof_config(vp, proofPurpose="authentication", challenge=self.word() + self.text(0, 1),
                                   domain=rng.choice(["https://issuer.example", "127.0.0.1:5000", self.url()]))
        return vp, config

    # --- what other issuers and wallets send ---

    def foreign(self, doc: dict) -> tuple[dict, str]:
        """A variant of one of our badges, and what the fast path is expected to do with it."""
        rng = self.rng
        doc = copy.deepcopy(doc)
        choice = rng.random()
        if choice < 0.35:
            for key in ("validFrom", "validUntil", "awardedDate"):
                if key in doc or rng.random() < 0.3:
                    doc[key] = self.date_form()
            return doc, EITHER
        if choice < 0.5:
            achievement = doc["credentialSubject"]["achievement"]
            achievement["version"] = self.text()
            achievement["specialization"] = self.text()
            achievement["resultDescription"] = [{
                "id": self.url(), "type": ["ResultDescription"], "name": self.text(), "resultType": "LetterGrade",
                "allowedValue": self.some(lambda: rng.choice(["A", "B", "C", self.text()]), 0, 4),
                "requiredValue": "C", "valueMin": "0", "valueMax": "100",
                "rubricCriterionLevel": [{"id": self.url(), "type": ["RubricCriterionLevel"], "level": self.text(),
                                          "points": str(rng.randint(-5, 100))}],
            }]
            doc["credentialSubject"]["activityStartDate"] = self.moment().date().isoformat()
            doc["credentialSubject"]["term"] = self.text()
            doc["credentialSubject"]["licenseNumber"] = self.word()
            return doc, EITHER
        if choice < 0.62:
            # VCDM 1.1; the older OB contexts lack terms our badges use (inLanguage, awardedDate)
            doc["@context"] = [VC1, OB] if rng.random() < 0.8 else [VC1, rng.choice([OB_301, OB_302])]
            doc["issuanceDate"] = doc.pop("validFrom")
            doc.pop("validUntil", None)
            doc.pop("credentialStatus", None)
            return doc, EITHER
        if choice < 0.72:
            doc["@context"] = [VC2, OB, OB_EXT]
            doc["credentialSchema"] = [{"id": self.url(), "type": "1EdTechJsonSchemaValidator2019"}]
            return doc, EITHER
        if choice < 0.76:
            # blank node identifiers, one of them shared by two nodes
            doc["credentialSubject"]["id"] = "_:learner"
            doc["evidence"] = [{"id": rng.choice(["_:e1", "_:e2"]), "type": ["Evidence"], "name": self.text()}
                               for _ in range(rng.randint(1, 3))]
            doc["credentialSubject"]["achievement"]["creator"] = {"id": "_:maker", "type": ["Profile"],
                                                                 "name": self.text()}
            return doc, EITHER
        if choice < 0.8:
            doc["credentialSubject"]["creditsEarned"] = rng.choice([10**21, 1e22, -1e21, 2.5, -7, 0.0, -0.0, 1e-300])
            return doc, EITHER
        # documents the fast path must decline (the general path refuses or handles them)
        decline = rng.choice([
            lambda d: d.__setitem__("favouriteColour", "blue"),
            lambda d: d["credentialSubject"]["achievement"].__setitem__("level", "A"),
            lambda d: d.__setitem__("@context", [*d["@context"], {"@vocab": "https://issuer.example/terms#"}]),
            lambda d: d.__setitem__("id", "credentials/3527"),
            lambda d: d.__setitem__("@id", d.get("id", "urn:x:1")),
            lambda d: d["issuer"].__setitem__("@foo", "bar"),
            lambda d: d.__setitem__("type", [*d["type"], "FancyBadge"]),
            lambda d: d["credentialSubject"].__setitem__("creditsEarned", [3, "3"]),
            lambda d: d["credentialSubject"].__setitem__("creditsEarned", float("nan")),
            lambda d: d.__setitem__("name", {"@value": "x", "@language": "en"}),
            lambda d: d.__setitem__("description", [["nested"]]),
        ])
        decline(doc)
        return doc, DECLINE


@cache
def _bits(seed: int) -> status.Bitstring:
    bits = status.Bitstring()
    rng = random.Random(seed)
    for _ in range(seed * 50):
        bits.set(rng.randrange(len(bits)), True)
    return bits


def corpus(count: int, seed: int = 2026) -> Iterator[Case]:
    """`count` documents (each proof configuration counts as one), the same for the same arguments."""
    gen = _Gen(seed)
    made = 0
    while made < count:
        gen.n += 1
        n = gen.n
        kind = gen.rng.random()
        if kind < 0.55:
            doc = gen.badge()
            cases = [Case(f"badge-{n}", doc, ACCEPT), Case(f"badge-{n}-proof", gen.proof_config(doc), ACCEPT)]
            if gen.rng.random() < 0.25:
                variant, expect = gen.foreign(doc)
                cases.append(Case(f"badge-{n}-variant", variant, expect))
        elif kind < 0.75:
            doc = gen.award()
            cases = [Case(f"award-{n}", doc, ACCEPT), Case(f"award-{n}-proof", gen.proof_config(doc), ACCEPT)]
        elif kind < 0.85:
            doc = gen.status_list()
            cases = [Case(f"status-list-{n}", doc, ACCEPT),
                     Case(f"status-list-{n}-proof", gen.proof_config(doc), ACCEPT)]
        else:
            vp, config = gen.presentation()
            cases = [Case(f"presentation-{n}", vp, ACCEPT), Case(f"presentation-{n}-proof", config, ACCEPT)]
        for case in cases[: count - made]:
            made += 1
            yield case


# --- comparing the fast path with pyld and pyoxigraph --------------------------------------------------


def oxigraph_canonical(nquads: str) -> str:
    """pyoxigraph's RDFC-1.0 of an N-Quads text (parsed by pyoxigraph: its own reading of the terms)."""
    import pyoxigraph

    dataset = pyoxigraph.Dataset(pyoxigraph.parse(nquads, format=pyoxigraph.RdfFormat.N_QUADS))
    dataset.canonicalize(pyoxigraph.CanonicalizationAlgorithm.RDFC_1_0)
    text = pyoxigraph.serialize(dataset, format=pyoxigraph.RdfFormat.N_QUADS).decode("utf-8")
    return "".join(sorted(line + "\n" for line in text.split("\n") if line))  # not splitlines(): U+2028


def pyld_nquads(doc: dict, loader=None) -> str:
    """pyld's dataset of `doc` as N-Quads (not canonical)."""
    lines = []
    for graph, triples in jsonld.to_dataset(doc, loader).items():
        name = None if graph == "@default" else {"type": "blank node" if graph.startswith("_:") else "IRI",
                                                 "value": graph}
        lines.extend(jsonld.nquad({**triple, "name": name}) for triple in triples)
    return "".join(lines)


def compare(doc: dict, loader=None, *, oxigraph: bool = True) -> str | None:
    """None when the fast path accepts `doc` and agrees with the others, else what is wrong.

    Agreeing means: its canonical N-Quads equal `jsonld.canonize` (pyld with the RDFC-1.0 escaping fix),
    the general path's safety check passes, pyoxigraph's RDFC-1.0 gives the same text from pyld's
    dataset and from the fast path's own dataset, and the hash is the SHA-256 of that text."""
    fast = fastld.canonize(doc, loader)
    if fast is None:
        return f"declined: {fastld.explain(doc, loader)}"
    general = jsonld.canonize(doc, loader)
    if fast != general:
        return "differs from pyld (jsonld.canonize)"
    try:
        jsonld.check_safe(doc, loader)
    except ValueError as exc:
        return f"the general path refuses it: {exc}"
    if oxigraph:
        if fast != oxigraph_canonical(pyld_nquads(doc, loader)):
            return "differs from pyoxigraph on pyld's dataset"
        if fast != oxigraph_canonical(fastld.to_nquads(doc, loader)):
            return "differs from pyoxigraph on the fast path's dataset"
    if fastld.canonical_hash(doc, loader) != hashlib.sha256(general.encode("utf-8")).digest():
        return "canonical_hash is not the SHA-256 of the canonical text"
    return None


def data_analysis_badge(issuer: str, holder: str) -> dict:
    """A small OB 3.0 badge (English and Chinese text) from `issuer` to `holder`, unsigned: the fixed
    credential of the JWT and fuzzing tests."""
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2",
                     "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"],
        "id": "urn:uuid:6f1d8a3e-1b7c-4e8d-9f0a-2c3b4d5e6f70",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": "Introduction to Data Analysis 資料分析入門",
        "issuer": {"id": issuer, "type": ["Profile"], "name": "Example University"},
        "validFrom": "2025-06-01T09:30:00Z",
        "credentialSubject": {
            "id": holder,
            "type": ["AchievementSubject"],
            "achievement": {
                "id": "https://badges.example.edu/achievements/data-analysis-101",
                "type": ["Achievement"],
                "name": "Introduction to Data Analysis",
                "description": "Learners clean, explore and visualise tabular data.",
                "criteria": {"narrative": "Complete all six modules with at least 70%."},
            },
        },
    }
