"""Generated badge images: well-formed, escaped, bilingual SVG; a PNG that never fails on CJK text; both
byte-for-byte deterministic."""

from __future__ import annotations

import dataclasses
import io
import re
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from issuer.catalogue import DEMO_CATALOGUE, Localised, Microcredential, Theme, load_catalogue
from issuer.images import badge_png, badge_svg, estimated_width, fit, text_units, theme_colours, wrap

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def demo() -> dict[str, Microcredential]:
    return {mc.code: mc for mc in load_catalogue(DEMO_CATALOGUE)}


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode("utf-8"))
    wanted = (f"{SVG_NS}text", f"{SVG_NS}title")
    return ["".join(element.itertext()) for element in root.iter() if element.tag in wanted]


def renamed(mc: Microcredential, en: str, zh: str) -> Microcredential:
    return dataclasses.replace(mc, name=Localised(en=en, zh_hant=zh))


# --- SVG ----------------------------------------------------------------------------------------


def test_svg_is_well_formed_and_starts_with_the_svg_element(demo):
    svg = badge_svg(demo["AI-101"])
    assert svg.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<svg ')
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("viewBox") == "0 0 512 512"


def test_svg_shows_both_names_theme_credits_level_and_code(demo):
    mc = demo["WPS-201"]
    shown = " ".join(texts(badge_svg(mc)))
    for expected in ("Coaching and Mentoring", "教練及師徒輔導技巧", "WORKPLACE PSYCHOLOGY", "職場心理學",
                     "9 CREDITS", "9學分", "QF LEVEL 4", "資歷架構第4級", "WPS-201"):
        assert expected in shown, expected


def test_svg_escapes_markup_in_catalogue_text(demo):
    hostile = renamed(demo["AI-101"], '<script>alert("x")</script> & Co\'s ]]>', "<b>粗體</b> & 茶")
    svg = badge_svg(hostile)
    assert "<script>" not in svg and "<b>" not in svg
    [title] = [t for t in texts(svg) if "|" in t]
    assert title == '<script>alert("x")</script> & Co\'s ]]> | <b>粗體</b> & 茶'


def test_svg_drops_characters_xml_cannot_carry(demo):
    svg = badge_svg(renamed(demo["AI-101"], "Bell\x07 and\x0b tab", "控制\x1f字元"))
    ET.fromstring(svg.encode("utf-8"))
    assert "Bell and tab | 控制字元" in texts(svg)


def test_long_names_are_wrapped_and_shortened(demo):
    long_en = "An Extraordinarily Long Course Title About Many Different Topics In Applied Machine Learning"
    long_zh = "一個非常非常長的課程名稱用來測試自動換行與省略號是否正確運作而不會超出徽章範圍"
    shown = texts(badge_svg(renamed(demo["AI-101"], long_en, long_zh)))
    lines = shown[3:]
    assert any(line.endswith("…") for line in lines)
    assert all(text_units(line) <= 26 for line in lines if "CREDITS" not in line and "QF" not in line)


def test_professional_badges_are_hexagons_and_general_ones_circles(demo):
    hexagon = ET.fromstring(badge_svg(demo["AI-101"]).encode("utf-8"))
    circle = ET.fromstring(badge_svg(demo["TEA-101"]).encode("utf-8"))
    assert hexagon.find(f".//{SVG_NS}polygon") is not None
    assert circle.find(f".//{SVG_NS}polygon") is None


def test_svg_is_deterministic(demo):
    assert badge_svg(demo["DA-201"]) == badge_svg(demo["DA-201"])


# --- colours ------------------------------------------------------------------------------------


def test_the_catalogue_colour_is_the_main_colour(demo):
    theme = demo["TEA-101"].theme
    colours = theme_colours(theme)
    assert colours.main == theme.colour
    assert f'fill="{theme.colour}"' in badge_svg(demo["TEA-101"])
    assert colours.dark != colours.main != colours.light


def test_a_theme_without_a_colour_gets_a_stable_one_from_its_code():
    first = theme_colours(Theme(code="calligraphy", name=Localised(en="Calligraphy", zh_hant="書法")))
    again = theme_colours(Theme(code="calligraphy", name=Localised(en="Brush Writing", zh_hant="書法")))
    other = theme_colours(Theme(code="photography", name=Localised(en="Photography", zh_hant="攝影")))
    assert first == again and first != other
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in (first.main, first.dark, first.light))


def test_demo_themes_are_told_apart_by_colour(demo):
    themes = {mc.theme for mc in demo.values()}
    assert len({theme_colours(theme).main for theme in themes}) == len(themes)


def test_lines_too_wide_for_the_badge_are_squeezed_and_short_ones_left_alone(demo):
    assert fit("Tea", 20, 200) == ""
    squeezed = ' textLength="230" lengthAdjust="spacingAndGlyphs"'
    assert fit("HONG KONG CULTURE AND HERITAGE", 17, 230, 1.5) == squeezed
    assert estimated_width("人工智能", 10) == 40
    svg = badge_svg(demo["HKC-101"])
    assert 'textLength="230"' in svg


# --- PNG ----------------------------------------------------------------------------------------


def test_png_is_a_512_pixel_rgba_image(demo):
    data = badge_png(demo["AI-101"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (512, 512)
        assert image.mode == "RGBA"
        assert image.getpixel((256, 256))[3] == 255  # badge body is opaque
        assert image.getpixel((2, 2))[3] == 0  # corners are transparent


def test_png_carries_no_text_chunks_so_baking_starts_clean(demo):
    assert b"iTXt" not in badge_png(demo["AI-101"]) and b"tEXt" not in badge_png(demo["AI-101"])


def test_png_is_deterministic(demo):
    assert badge_png(demo["TEA-201"]) == badge_png(demo["TEA-201"])


def test_png_differs_between_courses(demo):
    assert badge_png(demo["AI-101"]) != badge_png(demo["AI-102"])


def test_png_survives_text_the_default_font_cannot_draw(demo):
    mc = dataclasses.replace(
        demo["TEA-101"],
        code="TEA-999",
        theme=Theme(code="tea", name=Localised(en="茶文化 Tea Culture ☕", zh_hant="茶文化")),
        name=Localised(en="功夫茶", zh_hant="功夫茶"),
    )
    with Image.open(io.BytesIO(badge_png(mc))) as image:
        assert image.size == (512, 512)


# --- wrapping -----------------------------------------------------------------------------------


def test_wide_characters_count_double():
    assert text_units("AI") == 2
    assert text_units("人工智能") == 8


def test_wrap_breaks_english_at_spaces():
    assert wrap("Data Analytics with Spreadsheets", 16, 3) == ["Data Analytics", "with", "Spreadsheets"]


def test_wrap_breaks_chinese_between_characters_keeping_latin_words():
    lines = wrap("以Python進行機器學習與數據分析", 12, 3)
    assert "".join(lines) == "以Python進行機器學習與數據分析"
    assert all(text_units(line) <= 12 for line in lines)
    assert any("Python" in line for line in lines)


def test_wrap_marks_cut_text_with_an_ellipsis():
    lines = wrap("one two three four five six", 7, 2)
    assert len(lines) == 2 and lines[-1].endswith("…")
