"""The hostile-input corpus (issue #9): small files in this folder and generators for what is too big,
binary or key-dependent to keep as a file. Each case says what a verifier must answer:

* ``REJECT`` — the input is not a credential we can read: a 4xx with a message that names the problem;
* ``UNVERIFIED`` — a well-formed credential that must not pass: a 200 report with ``verified: false``.

Used by tests/test_hostile_input.py, which posts every case to every endpoint that reads credentials.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
REJECT, UNVERIFIED = "reject", "unverified"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    filename: str
    mimetype: str
    expect: str  # REJECT or UNVERIFIED
    message: str = ""  # a fragment the 4xx detail (or the failing check's detail) must contain


def file(name: str) -> bytes:
    return (HERE / name).read_bytes()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# --- JSON -------------------------------------------------------------------------------------------------

def json_cases() -> list[Case]:
    text = "application/json"
    big = b'{"@context": ["https://www.w3.org/ns/credentials/v2"], "name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    return [
        Case("malformed-json", file("malformed.json"), "badge.json", text, REJECT, "JSON"),
        Case("huge-json", big, "badge.json", text, REJECT, "too large"),
        Case("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "badge.json", text, REJECT, "nest"),
        Case("deep-nesting-objects", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "badge.json", text, REJECT, "nest"),
        Case("duplicate-keys", file("duplicate-keys.json"), "badge.json", text, REJECT, "duplicate"),
        Case("invalid-utf8", file("invalid-utf8.json"), "badge.json", text, REJECT, "UTF-8"),
        Case("nan", file("nan.json"), "badge.json", text, REJECT, "NaN"),
        Case("infinity", b'{"@context": [], "n": -Infinity}', "badge.json", text, REJECT, "Infinity"),
        Case("not-an-object", b'["VerifiableCredential"]', "badge.json", text, REJECT, "must be an object"),
        Case("empty", b"", "badge.json", text, REJECT, "empty"),
        Case("nul-bytes", b"\x00" * 1024, "badge.json", text, REJECT, "JSON"),
    ]


# --- JSON-LD: well-formed credentials, hostile contexts ---------------------------------------------------

def jsonld_cases(credential: dict) -> list[Case]:
    """Variations on one of our issued credentials; each must be reported as not verified."""
    def variant(name: str, change, message: str = "") -> Case:
        doc = json.loads(json.dumps(credential))
        change(doc)
        return Case(name, json.dumps(doc).encode(), "badge.json", "application/json", UNVERIFIED, message)

    def remote(doc):
        doc["@context"] = [*doc["@context"], "https://evil.test/context.jsonld"]

    def file_context(doc):
        doc["@context"] = [*doc["@context"], "file:///etc/passwd"]

    def internal_context(doc):
        doc["@context"] = [*doc["@context"], "http://169.254.169.254/latest/meta-data/"]

    def protected(doc):
        doc["@context"] = [*doc["@context"], {"VerifiableCredential": "https://evil.test/Other",
                                              "credentialSubject": "https://evil.test/subject"}]

    def relative(doc):
        doc["id"] = "../credentials/1"
        doc["credentialSubject"]["id"] = "relative/learner"

    def vocab(doc):
        doc["@context"] = [*doc["@context"], {"@vocab": "https://evil.test/vocab#"}]
        doc["credentialSubject"]["evilTerm"] = "dropped or remapped"

    def dropped(doc):
        doc["@context"] = [*doc["@context"], {"name": None}]

    def keyword_like(doc):
        doc["credentialSubject"]["@evil"] = "a keyword-like key that expansion would drop"

    def unknown_urn(doc):
        doc["@context"] = [*doc["@context"], "urn:example:unknown-context"]

    def undefined(doc):
        # Expansion drops a term no context defines, so the signature would still match: only the safe-mode
        # check stops a claim added to a signed badge this way.
        doc["credentialSubject"]["grade"] = "A+ with distinction"
        doc["awardedWithHonours"] = True

    never = "remote contexts are never fetched"
    return [variant("context-remote", remote, never), variant("context-file", file_context, never),
            variant("context-internal", internal_context, never),
            variant("context-redefines-protected", protected, "protected term"),
            variant("relative-iris", relative, "relative IRI"),
            variant("context-vocab", vocab, "signature does not match"),
            variant("term-dropped-by-null", dropped, "protected term"),
            variant("keyword-like-term-dropped", keyword_like, "looks like a JSON-LD keyword"),
            variant("context-unknown-urn", unknown_urn, never),
            variant("undefined-terms-dropped", undefined, "is not defined by the document's contexts")]


def bom_prefixed(credential: dict) -> Case:
    """A BOM in front of an (altered, so failing) credential: tolerated in an uploaded file, where some
    editors add one; refused in a JSON request body, which RFC 8259 says must not carry one."""
    altered = json.loads(json.dumps(credential))
    altered["name"] = "Altered"
    return Case("bom-prefixed", "\ufeff".encode() + json.dumps(altered).encode(), "badge.json",
                "application/json", UNVERIFIED)


# --- JWTs -------------------------------------------------------------------------------------------------

def compact(header: dict, payload: dict, signature: bytes) -> str:
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()),
                     b64url(signature) or "AA"])


def jwt_cases(credential: dict, issuer_kid: str, issuer_public_pem: bytes) -> list[Case]:
    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from issuer.vcjwt import to_numeric_date

    payload = {**credential}
    payload.pop("proof", None)
    # The registered claims our own VC-JWTs carry, so that each case fails for its own reason only.
    issuer = credential["issuer"]["id"] if isinstance(credential["issuer"], dict) else credential["issuer"]
    nbf = to_numeric_date(credential["validFrom"], "validFrom")
    payload.update({"iss": issuer, "jti": credential["id"], "nbf": nbf})
    if credential["credentialSubject"].get("id"):
        payload["sub"] = credential["credentialSubject"]["id"]
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_pem = attacker.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
    attacker_jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))

    def es256(headers: dict) -> str:
        return pyjwt.encode(payload, attacker_pem, algorithm="ES256", headers=headers)

    hs_header = {"alg": "HS256", "typ": "JWT", "kid": issuer_kid}
    signing_input = ".".join([b64url(json.dumps(hs_header).encode()), b64url(json.dumps(payload).encode())])
    hs_sig = hmac.new(issuer_public_pem, signing_input.encode(), hashlib.sha256).digest()
    text = "text/plain"

    def case(name, token, message=""):
        return Case(name, token.encode(), "badge.jwt", text, UNVERIFIED, message)

    return [
        case("jwt-alg-none", compact({"alg": "none", "typ": "JWT", "kid": issuer_kid}, payload, b""), "none"),
        case("jwt-alg-none-upper", compact({"alg": "NONE", "typ": "JWT", "kid": issuer_kid}, payload, b"x"),
             "none"),
        case("jwt-alg-none-no-key", compact({"alg": "none", "typ": "JWT"}, payload, b"")),
        case("jwt-hs256-public-key-as-secret", f"{signing_input}.{b64url(hs_sig)}", "HS256"),
        case("jwt-kid-file-url", es256({"kid": "file:///etc/passwd"}), "unsupported verification method"),
        case("jwt-kid-internal-url", es256({"kid": "http://169.254.169.254/latest/meta-data/key"}), "refusing"),
        case("jwt-kid-internal-https", es256({"kid": "https://169.254.169.254/latest/meta-data/key"}), "refused"),
        case("jwt-jku-internal", es256({"kid": issuer_kid, "jku": "http://127.0.0.1:1/jwks.json"})),
        case("jwt-jku-file", es256({"kid": issuer_kid, "jku": "file:///etc/passwd"})),
        case("jwt-x5u-internal", es256({"kid": issuer_kid, "x5u": "https://10.0.0.1/cert.pem"})),
        case("jwt-x5u-file", es256({"kid": issuer_kid, "x5u": "file:///etc/ssl/private/key.pem"})),
        case("jwt-jwk-not-published", es256({"jwk": attacker_jwk}), "not published"),
        Case("jwt-header-not-json", b"bm90LWpzb24.e30.AA", "badge.jwt", text, REJECT, "header"),
    ]


# --- PNG --------------------------------------------------------------------------------------------------

def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def plain_png() -> bytes:
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    return PNG_SIGNATURE + ihdr + idat + chunk(b"IEND", b"")


def with_chunks(*chunks: bytes) -> bytes:
    png = plain_png()
    cut = len(PNG_SIGNATURE) + 25  # after IHDR
    return png[:cut] + b"".join(chunks) + png[cut:]


def itxt(payload: bytes, compressed: bool = False) -> bytes:
    flag = b"\x01\x00" if compressed else b"\x00\x00"
    return chunk(b"iTXt", b"openbadgecredential\x00" + flag + b"\x00\x00" + payload)


def png_cases(credential_text: str) -> list[Case]:
    good = credential_text.encode()
    bomb = zlib.compress(b" " * (64 * 1024 * 1024), 9)
    bad_crc = bytearray(itxt(good))
    bad_crc[-1] ^= 0xFF
    full = with_chunks(itxt(good))
    png = "image/png"
    return [
        Case("png-two-credentials", with_chunks(itxt(good), itxt(good)), "badge.png", png, REJECT,
             "exactly one"),
        Case("png-itxt-zlib-bomb", with_chunks(itxt(bomb, compressed=True)), "badge.png", png, REJECT,
             "inflates to more than"),
        # zTXt is never read for a credential (OB bakes into iTXt), so its bomb is never inflated
        Case("png-ztxt-zlib-bomb", with_chunks(chunk(b"zTXt", b"openbadgecredential\x00\x00" + bomb)),
             "badge.png", png, REJECT, "no openbadgecredential iTXt"),
        Case("png-truncated", full[: len(full) - 40], "badge.png", png, REJECT, "truncated"),
        Case("png-truncated-inside-a-chunk-header", PNG_SIGNATURE + full[8:30], "badge.png", png, REJECT, ""),
        Case("png-bad-crc", with_chunks(bytes(bad_crc)), "badge.png", png, REJECT, "CRC"),
        Case("png-huge-chunk-length", with_chunks(struct.pack(">I", 0x7FFFFFFF) + b"iTXt" + b"x" * 16),
             "badge.png", png, REJECT, "truncated"),
        Case("png-no-credential", plain_png(), "badge.png", png, REJECT, "carries no Open Badges credential"),
        Case("png-signature-only", PNG_SIGNATURE, "badge.png", png, REJECT, "IHDR"),
    ]


# --- SVG --------------------------------------------------------------------------------------------------

def svg_cases() -> list[Case]:
    svg = "image/svg+xml"
    return [
        Case("svg-external-entity", file("xxe.svg"), "badge.svg", svg, REJECT, "DTD"),
        Case("svg-remote-dtd", file("remote-dtd.svg"), "badge.svg", svg, REJECT, "DTD"),
        Case("svg-billion-laughs", file("billion-laughs.svg"), "badge.svg", svg, REJECT, "DTD"),
        Case("svg-doctype", file("doctype-only.svg"), "badge.svg", svg, REJECT, "no openbadges:credential"),
        Case("svg-unclosed", b'<svg xmlns="http://www.w3.org/2000/svg"><openbadges:credential>',
             "badge.svg", svg, REJECT, "not well-formed"),
    ]


# --- PDF --------------------------------------------------------------------------------------------------

def pdf_with(files: dict[str, bytes]) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.add_page()
    for name, data in files.items():
        document.embed_file(bytes=data, basename=name, compress=True)
    return bytes(document.output())


def pdf_cases() -> list[Case]:
    pdf = "application/pdf"
    return [
        Case("pdf-many-attachments", pdf_with({f"f{i}.json": b"{}" for i in range(40)}), "badge.pdf", pdf,
             REJECT, "attachments"),
        Case("pdf-bomb-attachment", pdf_with({"credential.json": b"{" + b" " * (80 * 1024 * 1024) + b"}"}),
             "badge.pdf", pdf, REJECT, "larger than"),
        Case("pdf-huge-attachment", pdf_with({"credential.json": bytes(range(256)) * (12 * 1024)}),
             "badge.pdf", pdf, REJECT, "larger than"),
        Case("pdf-two-credentials", pdf_with({"a.json": b"{}", "b.json": b"{}"}), "badge.pdf", pdf, REJECT,
             "more than one"),
        Case("pdf-truncated", pdf_with({"credential.json": b"{}"})[:400], "badge.pdf", pdf, REJECT,
             "cannot be read"),
        Case("pdf-header-only", b"%PDF-1.7\n%%EOF", "badge.pdf", pdf, REJECT, "cannot be read"),
    ]


# --- status lists -----------------------------------------------------------------------------------------

def gzip_bomb_list(size: int = 64 * 1024 * 1024) -> str:
    """An encodedList that is ~70 KB on the wire and 64 MiB once expanded."""
    return "u" + b64url(gzip.compress(bytes(size), mtime=0))


def as_upload(case: Case) -> tuple[io.BytesIO, str, str]:
    return io.BytesIO(case.data), case.filename, case.mimetype
