"""QR codes for a credential's public URL, made once when the credential is stored and kept with it.

A QR code costs milliseconds to draw, which is most of a page's budget, so the registry keeps the PNG
and SVG beside the signed document and serves those bytes (never drawn per request). The output is a
function of the URL alone: the same URL always gives the same bytes, so a cached copy never goes stale.
"""

from __future__ import annotations

import io
from typing import Protocol

import segno
from PIL import Image

ERROR_CORRECTION = "m"  # ~15% of the symbol may be lost (a crease or a smudge on a printed parchment)
QUIET_ZONE = 4  # modules of blank margin: what the QR specification asks for, so any reader finds it
PNG_SCALE = 8  # pixels per module: 330–370 px square for our URLs, sharp on screen and in print
SVG_MODULE_PX = 8  # the SVG's nominal size per module; it scales freely through its viewBox


class HasQrCodes(Protocol):
    """A stored credential or award: its public URL and the two cached images."""

    credential_url: str
    qr_png: bytes | None
    qr_svg: str | None


def _symbol(url: str) -> segno.QRCode:
    # No error-level boost: the level is M whatever the URL's length, so the symbol is predictable.
    return segno.make_qr(url, error=ERROR_CORRECTION, boost_error=False)


def _png(symbol: segno.QRCode) -> bytes:
    # Pillow's encoder is twice as fast as segno's pure-Python one; a 1-bit image keeps the file small.
    rows = list(symbol.matrix_iter(scale=1, border=QUIET_ZONE))
    side = len(rows)
    modules = Image.frombytes("L", (side, side), bytes(0 if dark else 255 for row in rows for dark in row))
    image = modules.resize((side * PNG_SCALE, side * PNG_SCALE), Image.Resampling.NEAREST).convert("1")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _svg(symbol: segno.QRCode, url: str) -> str:
    out = io.BytesIO()
    # One unit per module with a viewBox, so the image scales without blurring or clipping; the title
    # is the text alternative a screen reader gives for the standalone file.
    symbol.save(out, kind="svg", scale=1, border=QUIET_ZONE, xmldecl=True, omitsize=True, svgclass=None,
                lineclass=None, title=f"QR code for {url}", nl=True)
    text = out.getvalue().decode("utf-8")
    side = symbol.symbol_size(scale=SVG_MODULE_PX, border=QUIET_ZONE)[0]
    return text.replace("<svg ", f'<svg width="{side}" height="{side}" ', 1)


def qr_png(url: str) -> bytes:
    """The QR code for `url` as a PNG (black on white, error correction M, quiet zone 4)."""
    return _png(_symbol(url))


def qr_svg(url: str) -> str:
    """The same QR code as a standalone SVG document."""
    return _svg(_symbol(url), url)


def attach(row: HasQrCodes) -> None:
    """Store both images on a credential or award row, encoding the URL once for the two."""
    symbol = _symbol(row.credential_url)
    row.qr_png = _png(symbol)
    row.qr_svg = _svg(symbol, row.credential_url)


def ensure(row: HasQrCodes) -> bool:
    """Fill the images of a row stored before QR codes were kept; True when something was added."""
    if row.qr_png is not None and row.qr_svg is not None:
        return False
    attach(row)
    return True
