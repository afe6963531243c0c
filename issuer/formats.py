"""Tell what a submitted badge file is (JSON credential or compact JWS) before anything else reads it.

Everything here is about refusing hostile or broken input early, with a message a learner can act on:
empty files, non-UTF-8, duplicate JSON member names (two parsers could disagree about which one wins,
so a signature could cover a different value than the one shown), absurd nesting, oversized uploads.
Baked badge images (PNG, SVG) and PDF parchments (their attached credential) are opened here too, so
everything after sees only the credential inside.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .baking import MAX_IMAGE_BYTES, PNG_SIGNATURE, Baked, BakingError, unbake_png, unbake_svg
from .parchment import MAX_PDF_BYTES, ParchmentError, attached_credential

MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64

_BOM = "\ufeff"
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# A JSON string, written as an unrolled loop: the same language as "(?:[^"\\]|\\.)*" at a quarter of the
# cost on a 200 kB request body (one alternation per character was most of json_depth's time).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_SVG_START = re.compile(r"<svg[\s>/]", re.IGNORECASE)
PDF_SIGNATURE = b"%PDF-"


class FormatError(ValueError):
    """The submission is not a badge file we can read; the message names the problem."""


@dataclass(frozen=True)
class Submission:
    """A parsed submission: exactly one of ``credential`` (json-ld) or ``jwt`` (vc-jwt) is set;
    ``baked`` names the image or PDF it was taken from, if any."""

    format: Literal["json-ld", "vc-jwt"]
    credential: dict | None = None
    jwt: str | None = None
    baked: Literal["png", "svg", "pdf"] | None = None


def parse_submission(data: bytes | str, content_type: str | None = None,
                     filename: str | None = None) -> Submission:
    """Detect and parse a submitted badge: a JSON credential, a compact JWS (VC-JWT), a baked PNG or
    SVG badge image carrying either, or a PDF parchment with either attached."""
    # surrogatepass: a str with lone surrogates then fails the UTF-8 decode below with a clear message.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.startswith(PNG_SIGNATURE):
        # Images may be larger than a credential: their own limit applies (checked by the unbaker).
        return _from_baked(_unbake(unbake_png, raw, "PNG"), "png")
    if raw[:1024].lstrip().startswith(PDF_SIGNATURE):
        if len(raw) > MAX_PDF_BYTES:
            raise FormatError(f"the PDF is too large ({len(raw)} bytes; the limit is {MAX_PDF_BYTES})")
        try:
            text = attached_credential(raw)
        except ParchmentError as exc:
            raise FormatError(f"cannot read the PDF: {exc}") from None
        return _parse_text(text.removeprefix(_BOM).strip(), "pdf")
    if len(raw) > MAX_IMAGE_BYTES:
        raise FormatError(f"submission is too large ({len(raw)} bytes; the limit is {MAX_BYTES}, "
                          f"{MAX_IMAGE_BYTES} for a baked image)")
    if not raw.strip():
        raise FormatError("submission is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"submission is not UTF-8 text (invalid byte at offset {exc.start})") from None
    text = text.removeprefix(_BOM).strip()
    if not text:
        raise FormatError("submission is empty")
    if _looks_like_svg(text, content_type, filename):
        return _from_baked(_unbake(unbake_svg, raw, "SVG"), "svg")
    if len(raw) > MAX_BYTES:
        raise FormatError(f"submission is too large ({len(raw)} bytes; the limit is {MAX_BYTES})")
    return _parse_text(text)


def _parse_text(text: str, baked: Literal["png", "svg", "pdf"] | None = None) -> Submission:
    if _JWS.fullmatch(text):
        _check_jws_header(text)
        return Submission("vc-jwt", jwt=text, baked=baked)
    return Submission("json-ld", credential=parse_json_object(text), baked=baked)


def _unbake(reader: Callable[[bytes], Baked], raw: bytes, kind: str) -> Baked:
    try:
        return reader(raw)
    except BakingError as exc:
        raise FormatError(f"cannot read the baked {kind} badge: {exc}") from None


def _from_baked(found: Baked, image: Literal["png", "svg"]) -> Submission:
    """The credential inside a baked image, read as JSON or JWS text but never as another image."""
    if found.kind == "ob2":
        raise FormatError("this is an Open Badges 2.0 assertion; only OB 3.0 credentials are verified")
    text = found.payload.removeprefix(_BOM).strip()
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise FormatError(f"the baked credential is too large (the limit is {MAX_BYTES} bytes)")
    return _parse_text(text, image)


def loads_strict(text: str) -> Any:
    """json.loads for text from strangers (request bodies as well as submissions): duplicate member names
    and nesting deeper than MAX_DEPTH are a FormatError naming the problem; NaN/Infinity and other
    syntax errors stay a ValueError (json.JSONDecodeError says where)."""
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise FormatError(f"JSON is nested too deep ({depth} levels; the limit is {MAX_DEPTH})")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        raise FormatError(f"JSON has a duplicate member name {exc.name!r}") from None
    except RecursionError:
        raise FormatError("JSON is nested too deep") from None


def parse_json_object(text: str) -> dict:
    """Strict JSON: one object, no duplicate member names, no NaN/Infinity, at most MAX_DEPTH deep."""
    try:
        value = loads_strict(text)
    except ValueError as exc:
        if isinstance(exc, FormatError):
            raise
        if text[:1] not in "{[\"-0123456789tfn":
            raise FormatError("submission is neither JSON nor a compact JWS (VC-JWT)") from None
        raise FormatError(f"submission is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FormatError(f"JSON must be an object (a credential), not {_json_type(value)}")
    return value


def json_depth(text: str) -> int:
    """Deepest bracket nesting, outside strings; measured before parsing so depth bombs cost nothing."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


class _DuplicateKey(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member name {name!r}")
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateKey(name)
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _looks_like_svg(text: str, content_type: str | None, filename: str | None) -> bool:
    head = text[:4096]
    if head.startswith("<") and _SVG_START.search(head):
        return True
    hinted = (content_type or "").split(";")[0].strip().lower() == "image/svg+xml" \
        or (filename or "").lower().endswith(".svg")
    return hinted and head.startswith("<")


def _check_jws_header(token: str) -> None:
    """Three base64url segments could be anything; a JWS header is a JSON object naming an alg."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: a header nested absurdly deep
        raise FormatError("looks like a compact JWS but its header is not base64url JSON") from None
    if not isinstance(header, dict) or "alg" not in header:
        raise FormatError("looks like a compact JWS but its header has no alg")
