"""Baked badges: a signed credential carried inside its own badge image (OB 3.0 "Baked Badge").

PNG baking splices one ``iTXt`` chunk into the file and leaves every other byte alone, so the picture
is exactly the issuer's and no image library can re-encode it. SVG baking splices text next to the root
start tag for the same reason. Reading is defensive, because the images come from anyone: every chunk
length and CRC is checked, compressed text is inflated under a cap, and SVG is parsed with entity
declarations and external references refused (a DOCTYPE is allowed only without an internal subset,
because the official fixtures carry the SVG 1.1 one; expat never loads it).

OB 2.0 baked images (PNG keyword ``openbadges``, ``<openbadges:assertion>`` in ``http://openbadges.org``)
are read too, and reported as ``kind="ob2"`` so callers can say what they are.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Literal
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import quoteattr

from defusedxml import DefusedXmlException
from defusedxml.common import DTDForbidden
from defusedxml.ElementTree import DefusedXMLParser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OB3_KEYWORD = b"openbadgecredential"
OB2_KEYWORD = b"openbadges"
OB3_NAMESPACE = "https://purl.imsglobal.org/ob/v3p0"
OB2_NAMESPACE = "http://openbadges.org"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # a badge image larger than this is not a badge image
MAX_TEXT_BYTES = 2 * 1024 * 1024  # the most a compressed text chunk may inflate to

_MAX_CHUNK = 2**31 - 1  # the PNG specification's limit on one chunk's length
_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Characters XML 1.0 cannot carry at all, not even in CDATA.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# The end of a start tag whose first byte is "<": the name, then attributes with quoted values.
_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")
_OB_PREFIX_DECL = re.compile(rb"""\sxmlns:openbadges\s*=\s*(?:"([^"]*)"|'([^']*)')""")


class BakingError(ValueError):
    """The image cannot be baked or read; the message says what is wrong with it."""


@dataclass(frozen=True)
class Baked:
    """What a baked image carries: an OB 3.0 credential (JSON or compact JWS) or an OB 2.0 assertion."""

    kind: Literal["ob3", "ob2"]
    payload: str


# --- PNG ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Chunk:
    type: bytes
    data: bytes
    start: int  # offset of the length field
    end: int  # offset just past the CRC


def _chunks(png: bytes) -> list[_Chunk]:
    """Every chunk, after checking what a decoder relies on: signature, lengths, CRCs, IHDR first,
    IEND last and nothing after it."""
    if not isinstance(png, bytes | bytearray | memoryview):
        raise BakingError("a PNG must be given as bytes")
    png = bytes(png)
    if len(png) > MAX_IMAGE_BYTES:
        raise BakingError(f"PNG is too large ({len(png)} bytes; the limit is {MAX_IMAGE_BYTES})")
    if not png.startswith(PNG_SIGNATURE):
        raise BakingError("not a PNG: the file does not start with the PNG signature")
    chunks: list[_Chunk] = []
    offset = len(PNG_SIGNATURE)
    while offset < len(png):
        if len(png) - offset < 12:
            raise BakingError(f"PNG is truncated: an incomplete chunk header at byte {offset}")
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        if length > _MAX_CHUNK:
            raise BakingError(f"PNG chunk at byte {offset} declares an impossible length ({length})")
        if not _CHUNK_TYPE.fullmatch(kind):
            raise BakingError(f"PNG chunk at byte {offset} has an invalid type {kind!r}")
        end = offset + 12 + length
        if end > len(png):
            raise BakingError(f"PNG is truncated: the {kind.decode('ascii')} chunk at byte {offset} needs "
                              f"{length} bytes of data but the file ends first")
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[end - 4 : end])
        if zlib.crc32(kind + data) != crc:
            raise BakingError(f"PNG chunk {kind.decode('ascii')} at byte {offset} has a bad CRC "
                              "(the file is damaged or was edited)")
        chunks.append(_Chunk(kind, data, offset, end))
        offset = end
        if kind == b"IEND":
            break
    if not chunks or chunks[0].type != b"IHDR" or len(chunks[0].data) != 13:
        raise BakingError("PNG does not start with a valid IHDR chunk")
    if chunks[-1].type != b"IEND":
        raise BakingError("PNG is truncated: it has no IEND chunk")
    if offset != len(png):
        raise BakingError(f"PNG has {len(png) - offset} bytes of data after its IEND chunk")
    return chunks


def _chunk_bytes(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _keyword(chunk: _Chunk) -> bytes | None:
    """The keyword of a text chunk (tEXt, zTXt, iTXt), or None for any other chunk."""
    if chunk.type not in (b"tEXt", b"zTXt", b"iTXt"):
        return None
    keyword, separator, _ = chunk.data.partition(b"\x00")
    return keyword if separator else None


def _is_baked_chunk(chunk: _Chunk) -> bool:
    keyword = _keyword(chunk)
    return (chunk.type == b"iTXt" and keyword == OB3_KEYWORD) or keyword == OB2_KEYWORD


def bake_png(png: bytes, payload: str) -> bytes:
    """The PNG with ``payload`` (credential JSON or compact JWS) in one uncompressed ``openbadgecredential``
    iTXt chunk right after IHDR. Earlier baked chunks (OB 3.0 or 2.0) are dropped, so re-baking replaces."""
    text = _payload_bytes(payload)
    if b"\x00" in text:
        raise BakingError("the payload contains a NUL character, which a PNG text chunk cannot carry")
    chunks = _chunks(png)
    source = bytes(png)
    # keyword NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, text
    baked = _chunk_bytes(b"iTXt", OB3_KEYWORD + b"\x00\x00\x00\x00\x00" + text)
    parts = [PNG_SIGNATURE, source[chunks[0].start : chunks[0].end], baked]
    parts.extend(source[c.start : c.end] for c in chunks[1:] if not _is_baked_chunk(c))
    return b"".join(parts)


def unbake_png(png: bytes) -> Baked:
    """What a baked PNG carries: the ``openbadgecredential`` iTXt chunk, else an OB 2.0 ``openbadges`` one."""
    chunks = _chunks(png)
    ob3 = [c for c in chunks if c.type == b"iTXt" and _keyword(c) == OB3_KEYWORD]
    if len(ob3) > 1:
        raise BakingError(f"PNG has {len(ob3)} openbadgecredential chunks; a baked badge has exactly one")
    if ob3:
        return Baked("ob3", _text_of(ob3[0]))
    ob2 = [c for c in chunks if _keyword(c) == OB2_KEYWORD]
    if ob2:
        return Baked("ob2", _text_of(ob2[0]))
    raise BakingError("PNG carries no Open Badges credential (no openbadgecredential iTXt chunk)")


def _text_of(chunk: _Chunk) -> str:
    """The text of a tEXt, zTXt or iTXt chunk, inflated under MAX_TEXT_BYTES when compressed."""
    name = f"{chunk.type.decode('ascii')} chunk {_keyword(chunk).decode('latin-1')!r}"
    rest = chunk.data.partition(b"\x00")[2]
    if chunk.type == b"tEXt":
        return _decode(rest, "latin-1", name)
    if chunk.type == b"zTXt":
        if rest[:1] != b"\x00":
            raise BakingError(f"{name} uses an unknown compression method")
        return _decode(_inflate(rest[1:], name), "latin-1", name)
    if len(rest) < 2:
        raise BakingError(f"{name} is truncated")
    flag, method, rest = rest[0], rest[1], rest[2:]
    _language, sep1, rest = rest.partition(b"\x00")
    _translated, sep2, text = rest.partition(b"\x00")
    if not (sep1 and sep2):
        raise BakingError(f"{name} is malformed: the language tag or translated keyword is not terminated")
    if flag == 1:
        if method != 0:
            raise BakingError(f"{name} uses an unknown compression method ({method})")
        text = _inflate(text, name)
    elif flag != 0:
        raise BakingError(f"{name} has an invalid compression flag ({flag})")
    return _decode(text, "utf-8", name)


def _inflate(data: bytes, name: str) -> bytes:
    """zlib inflate that stops at MAX_TEXT_BYTES, so a small chunk cannot expand into gigabytes."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES + 1)
    except zlib.error as exc:
        raise BakingError(f"{name} is not valid compressed data: {exc}") from None
    if len(out) > MAX_TEXT_BYTES or inflater.unconsumed_tail:
        raise BakingError(f"{name} inflates to more than {MAX_TEXT_BYTES} bytes; refused")
    if not inflater.eof:
        raise BakingError(f"{name} holds truncated compressed data")
    return out


def _decode(data: bytes, encoding: str, name: str) -> str:
    try:
        text = data.decode(encoding).strip()
    except UnicodeDecodeError:
        raise BakingError(f"{name} is not valid {encoding.upper()} text") from None
    if not text:
        raise BakingError(f"{name} is empty")
    return text


def _payload_bytes(payload: str) -> bytes:
    if not isinstance(payload, str) or not payload.strip():
        raise BakingError("the payload to bake must be a non-empty string (credential JSON or a compact JWS)")
    try:
        return payload.encode("utf-8")
    except UnicodeEncodeError:
        raise BakingError("the payload is not valid Unicode text (it has a lone surrogate)") from None


# --- SVG ----------------------------------------------------------------------------------------------

@dataclass
class _SvgScan:
    """Where things are in an SVG's UTF-8 bytes: the root start tag and the baked elements."""

    root: str | None = None
    root_start: int = -1
    # (offset of the start tag, offset expat reports for the end event, attributes, text content)
    ob3: list[tuple[int, int, dict[str, str], str]] = field(default_factory=list)
    ob2: list[tuple[int, int, dict[str, str], str]] = field(default_factory=list)


class _Target:
    """A parser target that records byte offsets of the elements baking cares about, not a tree."""

    _WANTED = (f"{{{OB3_NAMESPACE}}}credential", f"{{{OB2_NAMESPACE}}}assertion")

    def __init__(self) -> None:
        self.parser: DefusedXMLParser | None = None
        self.scan = _SvgScan()
        self.depth = 0
        self._open: tuple[str, int, dict[str, str], list[str]] | None = None
        self._open_depth = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        index = self.parser.parser.CurrentByteIndex
        self.depth += 1
        if self.depth == 1:
            self.scan.root, self.scan.root_start = tag, index
        if self._open is None and tag in self._WANTED:
            self._open, self._open_depth = (tag, index, dict(attrib), []), self.depth

    def data(self, text: str) -> None:
        if self._open is not None:
            self._open[3].append(text)

    def end(self, tag: str) -> None:
        if self._open is not None and self.depth == self._open_depth:
            name, start, attrib, texts = self._open
            found = (start, self.parser.parser.CurrentByteIndex, attrib, "".join(texts))
            (self.scan.ob3 if name == self._WANTED[0] else self.scan.ob2).append(found)
            self._open = None
        self.depth -= 1

    def close(self) -> _SvgScan:
        return self.scan


class _SvgParser(DefusedXMLParser):
    """defusedxml's parser (no entity declarations, no external references), refusing DTD internal
    subsets too, and forced to UTF-8 so reported byte offsets match the bytes we splice."""

    def __init__(self, target: _Target) -> None:
        super().__init__(target=target, encoding="utf-8", forbid_dtd=False, forbid_entities=True,
                         forbid_external=True)
        self.parser.StartDoctypeDeclHandler = self._refuse_internal_subset

    @staticmethod
    def _refuse_internal_subset(name, sysid, pubid, has_internal_subset) -> None:
        if has_internal_subset:
            raise DTDForbidden(name, sysid, pubid)


def _svg_bytes(svg: bytes | str) -> bytes:
    if isinstance(svg, str):
        try:
            data = svg.encode("utf-8")
        except UnicodeEncodeError:
            raise BakingError("the SVG is not valid Unicode text") from None
    elif isinstance(svg, bytes | bytearray | memoryview):
        data = bytes(svg)
    else:
        raise BakingError("an SVG must be given as text or bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise BakingError(f"SVG is too large ({len(data)} bytes; the limit is {MAX_IMAGE_BYTES})")
    return data


def _scan_svg(data: bytes) -> _SvgScan:
    target = _Target()
    parser = _SvgParser(target)
    target.parser = parser
    try:
        parser.feed(data)
        scan = parser.close()
    except DefusedXmlException as exc:
        raise BakingError(f"SVG refused: it declares a DTD subset, entities or external references ({exc})") \
            from None
    except ParseError as exc:
        raise BakingError(f"SVG is not well-formed XML: {exc}") from None
    if scan.root is None or scan.root.rpartition("}")[2] != "svg":
        raise BakingError("not an SVG: the root element is not <svg>")
    return scan


def unbake_svg(svg: bytes | str) -> Baked:
    """What a baked SVG carries: ``<openbadges:credential>`` (OB 3.0), else ``<openbadges:assertion>`` (2.0)."""
    scan = _scan_svg(_svg_bytes(svg))
    if len(scan.ob3) > 1:
        raise BakingError(f"SVG has {len(scan.ob3)} openbadges:credential elements; a baked badge has exactly one")
    for kind, found in (("ob3", scan.ob3), ("ob2", scan.ob2)):
        if found:
            _start, _end, attrib, text = found[0]
            payload = (attrib.get("verify") or text).strip()
            if not payload:
                raise BakingError("the SVG's baked element is empty: no verify attribute and no content")
            return Baked(kind, payload)  # type: ignore[arg-type]
    raise BakingError("SVG carries no Open Badges credential (no openbadges:credential element)")


def bake_svg(svg: str, payload: str, *, jwt: bool) -> str:
    """The SVG with one ``<openbadges:credential>`` directly after the root start tag: ``verify="<jws>"``
    for a VC-JWT, CDATA JSON otherwise. Earlier baked elements (OB 3.0 or 2.0) are removed."""
    _payload_bytes(payload)
    if jwt:
        payload = payload.strip()
        if not _JWS.fullmatch(payload):
            raise BakingError("a VC-JWT to bake must be a compact JWS (three base64url parts)")
        element = f"<openbadges:credential verify={quoteattr(payload)}/>"
    else:
        if _XML_FORBIDDEN.search(payload):
            raise BakingError("the credential contains characters that XML cannot carry")
        # "]]>" would end the CDATA section early: close it after "]]" and reopen for the ">".
        element = ("<openbadges:credential><![CDATA[" + payload.replace("]]>", "]]]]><![CDATA[>")
                   + "]]></openbadges:credential>")
    data = _svg_bytes(svg)
    scan = _scan_svg(data)
    root_tag = _START_TAG.match(data, scan.root_start)
    if root_tag is None:  # cannot happen for XML expat accepted; guards the splice below
        raise BakingError("could not locate the end of the <svg> start tag")
    removals = sorted(_element_span(data, start, end) for start, end, _a, _t in scan.ob3 + scan.ob2)
    head = data[: root_tag.end()]
    self_closing = bool(root_tag.group(1))
    if self_closing:
        head = head[: head.rindex(b"/")].rstrip() + b">"
    head = _declare_namespace(head, scan.root_start)
    body = bytearray(data[root_tag.end() :])
    for start, end in reversed(removals):
        del body[start - root_tag.end() : end - root_tag.end()]
    tail = bytes(body)
    if self_closing:
        tail = b"</" + data[scan.root_start + 1 : root_tag.end()].split()[0].rstrip(b"/>") + b">" + tail
    result = (head + element.encode("utf-8") + tail).decode("utf-8")
    # The splice works on text; prove the result is still XML that carries exactly this payload.
    check = unbake_svg(result)
    expected = payload.replace("\r\n", "\n").replace("\r", "\n").strip()
    if check.kind != "ob3" or check.payload != expected:
        raise BakingError("baking the SVG did not produce a readable credential")
    return result


def _element_span(data: bytes, start: int, end_index: int) -> tuple[int, int]:
    """Byte span of an element from its start offset and the offset expat reported for its end event:
    an empty-element tag ends where its start tag ends, otherwise after the end tag's ">"."""
    tag = _START_TAG.match(data, start)
    if tag is not None and tag.group(1):
        return start, tag.end()
    return start, data.index(b">", end_index) + 1


def _declare_namespace(head: bytes, root_start: int) -> bytes:
    """Bind the ``openbadges`` prefix to the OB 3.0 namespace on the root element (rebinding an OB 2.0
    binding, whose elements have been removed)."""
    prefix, root = head[:root_start], head[root_start:]
    declaration = f' xmlns:openbadges="{OB3_NAMESPACE}"'.encode("ascii")
    found = _OB_PREFIX_DECL.search(root)
    if found is not None:
        if (found.group(1) or found.group(2) or b"").decode("utf-8") == OB3_NAMESPACE:
            return head
        return prefix + root[: found.start()] + declaration + root[found.end() :]
    return prefix + root[:-1].rstrip() + declaration + b">"
