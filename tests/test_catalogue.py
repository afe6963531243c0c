"""The catalogue loader: the demo catalogue is usable for stacking demos, and every mistake in a catalogue
file is reported naming the entry and the field."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from issuer.catalogue import (
    CATALOGUE_SCHEMA,
    DEMO_CATALOGUE,
    CatalogueError,
    Localised,
    Microcredential,
    index_by_code,
    load_catalogue,
    validate_catalogue,
)

CJK = re.compile(r"[\u4e00-\u9fff]")


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "code": "AI-101",
        "name": {"en": "Foundations of AI", "zh-Hant": "人工智能基礎"},
        "description": {"en": "What AI can do.", "zh-Hant": "人工智能的應用。"},
        "criteria": {"en": "- Attend 80% of classes.", "zh-Hant": "- 出席率達百分之八十。"},
        "credits": 6,
        "contact_hours": 30,
        "theme": {"code": "artificial-intelligence", "en": "Artificial Intelligence", "zh-Hant": "人工智能"},
        "area": "professional",
        "qf_level": 4,
        "language": "en",
    }
    base.update(overrides)
    return base


def catalogue(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"microcredentials": list(entries)}


def errors_of(data: Any) -> list[str]:
    with pytest.raises(CatalogueError) as caught:
        validate_catalogue(data)
    return caught.value.errors


@pytest.fixture(scope="module")
def demo() -> list[Microcredential]:
    return load_catalogue(DEMO_CATALOGUE)


# --- the demo catalogue -------------------------------------------------------------------------


def test_demo_catalogue_has_enough_courses_and_themes(demo):
    assert len(demo) >= 14
    assert len({mc.theme.code for mc in demo}) >= 4
    themes = {mc.theme.code for mc in demo}
    assert {"artificial-intelligence", "workplace-psychology", "chinese-tea-culture"} <= themes


def test_demo_catalogue_mixes_areas_levels_credits_and_cef(demo):
    assert {mc.area for mc in demo} == {"professional", "general"}
    assert {3, 4, 5} <= {mc.qf_level for mc in demo}
    assert {6, 9} <= {mc.credits for mc in demo}
    assert any(mc.cef_code for mc in demo) and any(mc.cef_code is None for mc in demo)
    assert all(25 <= mc.contact_hours <= 40 for mc in demo)


def test_demo_catalogue_supports_certificate_and_diploma_stacking(demo):
    credits: dict[str, float] = defaultdict(float)
    for mc in demo:
        if mc.area == "professional":
            credits[mc.theme.code] += mc.credits
    assert max(credits.values()) >= 60
    assert sum(1 for total in credits.values() if total >= 30) >= 2


def test_demo_catalogue_gives_each_theme_one_area(demo):
    areas: dict[str, set[str]] = defaultdict(set)
    for mc in demo:
        areas[mc.theme.code].add(mc.area)
    assert all(len(found) == 1 for found in areas.values())


def test_demo_catalogue_texts_are_bilingual(demo):
    for mc in demo:
        for text in (mc.name, mc.description, mc.criteria, mc.theme.name):
            assert CJK.search(text.zh_hant), (mc.code, text.zh_hant)
            assert not CJK.search(text.en), (mc.code, text.en)


def test_demo_catalogue_uses_traditional_not_simplified_characters(demo):
    simplified = set("们这个国学习数据与职场艺术")
    for mc in demo:
        text = mc.name.zh_hant + mc.description.zh_hant + mc.criteria.zh_hant
        assert not simplified & set(text), (mc.code, simplified & set(text))


def test_demo_catalogue_codes_are_unique(demo):
    assert len(index_by_code(demo)) == len(demo)


# --- loading ------------------------------------------------------------------------------------


def test_loads_json_and_yaml_to_the_same_entries(tmp_path: Path):
    data = catalogue(entry(), entry(code="AI-102", cef_code="43C12345A"))
    (tmp_path / "c.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "c.yml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_catalogue(tmp_path / "c.json") == load_catalogue(tmp_path / "c.yml")


def test_unsupported_extension_is_refused(tmp_path: Path):
    path = tmp_path / "catalogue.csv"
    path.write_text("code,name\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="unsupported catalogue format"):
        load_catalogue(path)


def test_unparsable_yaml_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("microcredentials: [\n  - code: : :\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="broken.yaml"):
        load_catalogue(path)


def test_missing_file_is_a_catalogue_error(tmp_path: Path):
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "absent.yaml")


def test_entry_becomes_a_frozen_microcredential():
    [mc] = validate_catalogue(catalogue(entry(language=["yue", "en"], cef_code="43C12345A")))
    assert mc.code == "AI-101"
    assert mc.name == Localised(en="Foundations of AI", zh_hant="人工智能基礎")
    assert mc.theme.code == "artificial-intelligence" and mc.theme.name.zh_hant == "人工智能"
    assert mc.language == ("yue", "en")
    assert mc.cef_code == "43C12345A" and mc.image is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        mc.credits = 9  # type: ignore[misc]


def test_single_language_is_stored_as_a_one_element_tuple():
    [mc] = validate_catalogue(catalogue(entry(language="yue")))
    assert mc.language == ("yue",)


def test_whole_number_credits_stay_integers():
    [mc] = validate_catalogue(catalogue(entry(credits=6.0, contact_hours=22.5)))
    assert mc.credits == 6 and isinstance(mc.credits, int)
    assert mc.contact_hours == 22.5


def test_text_is_nfc_normalised():
    decomposed = unicodedata.normalize("NFD", "Café Culture")
    [mc] = validate_catalogue(catalogue(entry(name={"en": decomposed, "zh-Hant": "咖啡文化"})))
    assert mc.name.en == unicodedata.normalize("NFC", "Café Culture")
    assert mc.name.en != decomposed


def test_localised_text_serves_any_chinese_tag_the_traditional_text():
    text = Localised(en="Tea", zh_hant="茶")
    assert [text.get(tag) for tag in ("en", "zh-Hant", "zh-HK", "yue", "fr")] == ["Tea", "茶", "茶", "茶", "Tea"]


def test_catalogue_schema_is_our_own_2020_12_schema():
    schema = json.loads(CATALOGUE_SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Microcredential"]["additionalProperties"] is False


# --- errors name the entry and the field --------------------------------------------------------


def test_error_names_entry_number_code_and_field():
    data = catalogue(entry(code="AI-100"), entry(code="AI-101"), entry(code="AI-102", credits=-1))
    [message] = errors_of(data)
    assert message.startswith("entry 3 (AI-102): credits: -1 ")
    assert "minimum of 0" in message


def test_missing_nested_field_is_named_with_its_path():
    data = catalogue(entry(name={"en": "Only English"}))
    assert errors_of(data) == ["entry 1 (AI-101): name.zh-Hant: is required"]


def test_blank_text_is_refused():
    data = catalogue(entry(description={"en": "   ", "zh-Hant": "說明"}))
    [message] = errors_of(data)
    assert message.startswith("entry 1 (AI-101): description.en: ")


def test_unknown_field_is_refused_by_name():
    data = catalogue(entry(colour="red"))
    assert errors_of(data) == ["entry 1 (AI-101): colour: unknown field"]


def test_every_problem_is_reported_at_once():
    data = catalogue(entry(qf_level=8), entry(code="ai-102", area="vocational"))
    errors = errors_of(data)
    assert any(e.startswith("entry 1 (AI-101): qf_level: 8") for e in errors)
    assert any(e.startswith("entry 2 (ai-102): area: ") for e in errors)
    assert any(e.startswith("entry 2 (ai-102): code: ") for e in errors)


def test_entry_without_code_is_named_by_position():
    bad = entry()
    del bad["code"]
    assert errors_of(catalogue(bad)) == ["entry 1: code: is required"]


def test_top_level_problems_are_named_as_catalogue():
    assert set(errors_of({"courses": []})) == {
        "catalogue: microcredentials: is required",
        "catalogue: courses: unknown field",
    }
    assert errors_of(catalogue()) == ["catalogue: microcredentials: [] should be non-empty"]
    assert errors_of([]) == ["catalogue: [] is not of type 'object'"]


def test_duplicate_codes_are_refused_naming_both_entries():
    errors = errors_of(catalogue(entry(), entry(code="AI-102"), entry()))
    assert errors == ["entry 3 (AI-101): code: duplicate of entry 1"]


def test_theme_with_two_areas_is_refused():
    errors = errors_of(catalogue(entry(), entry(code="AI-102", area="general")))
    assert errors == [
        "entry 2 (AI-102): area: 'general' differs from 'professional', the area of theme "
        "'artificial-intelligence' in entry 1"
    ]


def test_theme_with_two_names_is_refused():
    renamed = {"code": "artificial-intelligence", "en": "AI", "zh-Hant": "人工智能"}
    errors = errors_of(catalogue(entry(), entry(code="AI-102", theme=renamed)))
    assert errors == [
        "entry 2 (AI-102): theme: differs from theme 'artificial-intelligence' as given in entry 1 "
        "(names and colour must be the same in every entry)"
    ]


def test_theme_colour_is_optional_and_normalised_to_lower_case():
    coloured = {"code": "tea", "en": "Tea", "zh-Hant": "茶", "colour": "#5B7F2A"}
    data = catalogue(entry(), entry(code="TEA-1", theme=coloured, area="general"))
    [plain, tinted] = validate_catalogue(data)
    assert plain.theme.colour is None
    assert tinted.theme.colour == "#5b7f2a"


def test_demo_themes_each_have_their_own_colour(demo):
    colours = {mc.theme.code: mc.theme.colour for mc in demo}
    assert all(colours.values()) and len(set(colours.values())) == len(colours)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("credits", 0),
        ("credits", 61),
        ("credits", "6"),
        ("contact_hours", 0),
        ("qf_level", 0),
        ("qf_level", 4.5),
        ("qf_level", True),
        ("code", "AI 101"),
        ("code", "A"),
        ("language", "English"),
        ("language", []),
        ("language", ["en", "en"]),
        ("cef_code", "CEF-123"),
        ("cef_code", "43c12345a"),
        ("image", "../secret.png"),
        ("image", "/etc/badge.png"),
        ("image", "http://insecure.example/badge.png"),
        ("image", "badge.gif"),
        ("theme", {"code": "Artificial Intelligence", "en": "AI", "zh-Hant": "人工智能"}),
        ("theme", {"code": "ai", "en": "AI", "zh-Hant": "人工智能", "colour": "blue"}),
    ],
)
def test_invalid_values_are_refused_naming_the_field(field: str, value: Any):
    [message, *_] = errors_of(catalogue(entry(**{field: value})))
    assert re.match(rf"entry 1 \([^)]*\): {field}\b", message), message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cef_code", "43C12345A"),
        ("cef_code", "32Z085411"),
        ("cef_code", "43C123456"),
        ("image", "https://cdn.example.edu.hk/badges/ai-101.png"),
        ("image", "images/ai-101.svg"),
        ("language", "yue-Hant-HK"),
        ("language", ["cmn", "en"]),
        ("credits", 7.5),
        ("qf_level", 7),
    ],
)
def test_valid_optional_values_are_accepted(field: str, value: Any):
    [mc] = validate_catalogue(catalogue(entry(**{field: value})))
    assert mc.code == "AI-101"


def test_validation_does_not_modify_the_input():
    data = catalogue(entry())
    before = copy.deepcopy(data)
    validate_catalogue(data)
    assert data == before
