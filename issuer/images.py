"""Badge images generated from a catalogue entry, for courses that have no designed image.

SVG (from `templates/badge.svg.j2`) carries the bilingual name and is what pages show; PNG (Pillow) is
for places that need a bitmap and uses only Latin text, because the default font may have no CJK
glyphs. Both are deterministic: the same entry always gives the same bytes, so they can be cached,
digested and baked without churn.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from PIL import Image, ImageDraw, ImageFont

from .catalogue import Microcredential, Theme

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = PROJECT_ROOT / "templates"
SIZE = 512

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class ThemeColours:
    main: str
    dark: str
    light: str


def theme_colours(theme: Theme) -> ThemeColours:
    """Three shades of the theme's colour: the catalogue's, or else a hue taken from a hash of the theme
    code (stable across runs and machines; Python's own hash() is salted per process)."""
    if theme.colour:
        red, green, blue = (int(theme.colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
        hue, lightness, saturation = colorsys.rgb_to_hls(red, green, blue)
        main = theme.colour.lower()
    else:
        digest = hashlib.sha256(theme.code.encode("utf-8")).digest()
        hue, lightness, saturation = int.from_bytes(digest[:4], "big") % 360 / 360, 0.40, 0.55
        main = _hls(hue, lightness, saturation)
    return ThemeColours(
        main=main,
        dark=_hls(hue, min(lightness, 0.40) * 0.6, saturation),
        light=_hls(hue, 0.92, min(saturation, 0.6)),
    )


def _hls(hue: float, lightness: float, saturation: float) -> str:
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, saturation)
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in (red, green, blue))


def badge_svg(mc: Microcredential) -> str:
    """The badge as an SVG document (UTF-8 text), with every catalogue text XML-escaped."""
    colours = theme_colours(mc.theme)
    context: dict[str, Any] = {
        "size": SIZE,
        "colours": colours,
        "shape": _shape_points(mc.area),
        "code": _svg_text(mc.code),
        "name_en": _svg_text(mc.name.en),
        "name_zh": _svg_text(mc.name.zh_hant),
        "name_en_lines": wrap(_svg_text(mc.name.en), 24, 3),
        "name_zh_lines": wrap(_svg_text(mc.name.zh_hant), 22, 2),
        "theme_en": _svg_text(mc.theme.name.en),
        "theme_zh": _svg_text(mc.theme.name.zh_hant),
        "credits": _number(mc.credits),
        "qf_level": mc.qf_level,
        "credits_line": f"{_number(mc.credits)} CREDITS · {_number(mc.credits)}學分",
        "qf_line": f"QF LEVEL {mc.qf_level} · 資歷架構第{mc.qf_level}級",
        "area": mc.area,
    }
    return _environment().get_template("badge.svg.j2").render(**context)


def badge_png(mc: Microcredential) -> bytes:
    """The badge as a PNG: shape and colours as the SVG, Latin text only (code, credits, level, theme)."""
    colours = theme_colours(mc.theme)
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    points = [(x, y) for x, y in _shape_vertices(mc.area)]
    if points:
        draw.polygon(points, fill=colours.main, outline=colours.dark, width=10)
    else:
        draw.ellipse((16, 16, SIZE - 16, SIZE - 16), fill=colours.main, outline=colours.dark, width=10)
    draw.ellipse((86, 86, SIZE - 86, SIZE - 86), fill="#ffffff", outline=colours.light, width=6)

    _centred(draw, 150, _latin(mc.theme.name.en).upper(), 20, colours.dark, max_width=250)
    _centred(draw, 215, _latin(mc.code), 52, colours.main, max_width=300)
    _centred(draw, 290, f"{_number(mc.credits)} CREDITS", 30, colours.dark)
    _centred(draw, 335, f"QF LEVEL {mc.qf_level}", 24, colours.dark)
    draw.rounded_rectangle((96, 420, SIZE - 96, 470), radius=12, fill=colours.dark)
    _centred(draw, 445, mc.area.upper(), 22, "#ffffff")

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def text_units(text: str) -> int:
    """Display width in half-width units: CJK and other wide characters count double."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def wrap(text: str, max_units: int, max_lines: int) -> list[str]:
    """Break at spaces where there are any, anywhere between wide characters; end with '…' if cut."""
    tokens = re.findall(r"\S+\s*|\s+", text.strip())
    pieces: list[str] = []
    for token in tokens:
        if text_units(token.strip()) > max_units or any(text_units(ch) == 2 for ch in token):
            pieces.extend(_split_wide(token, max_units))
        else:
            pieces.append(token)
    lines: list[str] = []
    current = ""
    for piece in pieces:
        if current and text_units((current + piece).rstrip()) > max_units:
            lines.append(current.rstrip())
            current = piece.lstrip()
        else:
            current += piece
    if current.strip():
        lines.append(current.rstrip())
    if len(lines) > max_lines:
        kept = lines[:max_lines]
        last = kept[-1]
        while last and text_units(last + "…") > max_units:
            last = last[:-1]
        kept[-1] = last.rstrip() + "…"
        return kept
    return lines


def _split_wide(token: str, max_units: int) -> list[str]:
    """A token with wide characters (or a very long word) may break between any two characters,
    except that Latin runs inside it stay together when they fit."""
    parts = re.findall(r"[A-Za-z0-9]+|.", token, flags=re.DOTALL)
    result: list[str] = []
    for part in parts:
        if text_units(part) <= max_units:
            result.append(part)
        else:
            result.extend(part[i : i + max_units] for i in range(0, len(part), max_units))
    return result


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.globals["fit"] = fit
    return environment


def estimated_width(text: str, font_size: float, letter_spacing: float = 0.0) -> float:
    """A generous estimate of rendered width: SVG text cannot be measured without the viewer's font."""
    width = 0.0
    for ch in text:
        if text_units(ch) == 2:
            width += 1.0
        elif ch == " ":
            width += 0.3
        elif ch.isupper() or ch.isdigit():
            width += 0.68
        else:
            width += 0.56
    return width * font_size + letter_spacing * len(text)


def fit(text: str, font_size: float, max_width: float, letter_spacing: float = 0.0) -> Markup:
    """SVG attributes that squeeze a line into `max_width` when it would overflow the badge, else nothing."""
    if estimated_width(text, font_size, letter_spacing) <= max_width:
        return Markup("")
    return Markup(f' textLength="{max_width:g}" lengthAdjust="spacingAndGlyphs"')


def _svg_text(text: str) -> str:
    """NFC, without characters XML 1.0 forbids even as references (escaping is the template's job)."""
    return _XML_INVALID.sub("", unicodedata.normalize("NFC", text))


def _latin(text: str) -> str:
    """Text the default bitmap font can draw: accents folded, anything else dropped."""
    folded = unicodedata.normalize("NFKD", text.replace("’", "'").replace("–", "-"))
    return "".join(ch for ch in folded if " " <= ch <= "~").strip()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shape_vertices(area: str) -> list[tuple[float, float]]:
    """Professional badges are hexagons, general-interest ones are circles (empty list)."""
    if area != "professional":
        return []
    centre, radius = SIZE / 2, SIZE / 2 - 16
    # Flat-topped hexagon; coordinates rounded so SVG and PNG agree and output is stable.
    offsets = ((1, 0), (0.5, 0.866), (-0.5, 0.866), (-1, 0), (-0.5, -0.866), (0.5, -0.866))
    return [(round(centre + radius * dx, 1), round(centre + radius * dy, 1)) for dx, dy in offsets]


def _shape_points(area: str) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in _shape_vertices(area))


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _centred(
    draw: ImageDraw.ImageDraw, y: int, text: str, size: int, fill: str, *, max_width: int = 320
) -> None:
    """Draw a line centred on the badge, shrinking (then shortening) it until it fits `max_width`."""
    if not text:
        return
    try:
        while True:
            font = _font(size)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            if right - left <= max_width or len(text) <= 4:
                break
            if size > 14:
                size -= 1
            else:
                text = text[:-4].rstrip() + "..."
        origin = (SIZE / 2 - (right - left) / 2 - left, y - (bottom - top) / 2 - top)
        draw.text(origin, text, font=font, fill=fill)
    except UnicodeEncodeError:
        # The bitmap fallback font has Latin-1 glyphs only: leave the text out rather than fail.
        return
