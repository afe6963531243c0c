"""The microcredential catalogue: what the school awards badges for.

A catalogue file (YAML or JSON) is checked against `schemas/catalogue.schema.json` and then against the
rules a schema cannot express (unique codes, one name and one area per theme), so that a mistake is
reported once, at load time, naming the entry and the field, instead of surfacing later inside a
signed badge.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CATALOGUE_SCHEMA = PROJECT_ROOT / "schemas" / "catalogue.schema.json"
DEMO_CATALOGUE = Path(__file__).resolve().parent / "demo" / "catalogue.yaml"

AREAS = ("professional", "general")


class CatalogueError(ValueError):
    """A catalogue that cannot be used; `errors` lists every problem, one line each."""

    def __init__(self, errors: Iterable[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Localised:
    """One text in English and Traditional Chinese."""

    en: str
    zh_hant: str

    def get(self, language: str) -> str:
        """The text for a BCP 47 tag; any Chinese tag (zh, zh-HK, yue…) gets the Traditional text."""
        return self.zh_hant if is_chinese(language) else self.en

    def as_dict(self) -> dict[str, str]:
        return {"en": self.en, "zh-Hant": self.zh_hant}


@dataclass(frozen=True)
class Theme:
    """A theme; `code` is the stable key stacking rules match on, the names and colour are for display."""

    code: str
    name: Localised
    colour: str | None = None


@dataclass(frozen=True)
class Microcredential:
    """One catalogue entry, validated and NFC-normalised."""

    code: str
    name: Localised
    description: Localised
    criteria: Localised
    credits: float
    contact_hours: float
    theme: Theme
    area: str
    qf_level: int
    language: tuple[str, ...]
    cef_code: str | None = None
    image: str | None = None


def is_chinese(language: str) -> bool:
    """Whether a language tag should be served the zh-Hant text (we publish no Simplified edition)."""
    primary = language.split("-", 1)[0].lower()
    return primary in ("zh", "yue", "cmn")


def load_catalogue(path: str | Path) -> list[Microcredential]:
    """Read and validate a .yaml/.yml/.json catalogue file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise CatalogueError(
            [f"{path.name}: unsupported catalogue format {suffix!r} (use .yaml, .yml or .json)"]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError([f"{path.name}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CatalogueError([f"{path.name}: not valid {suffix[1:].upper()}: {exc}"]) from exc
    return validate_catalogue(data)


def validate_catalogue(data: Any) -> list[Microcredential]:
    """Validate parsed catalogue data and build the entries; raise CatalogueError listing every problem."""
    data = nfc_all(data)
    # jsonschema reports a missing property once per property; dict.fromkeys drops the repeats.
    errors = list(dict.fromkeys(line for error in _sorted_errors(data) for line in _describe(error, data)))
    if errors:
        raise CatalogueError(errors)
    entries = data["microcredentials"]
    errors = _cross_entry_errors(entries)
    if errors:
        raise CatalogueError(errors)
    return [_build(entry) for entry in entries]


def index_by_code(entries: Iterable[Microcredential]) -> dict[str, Microcredential]:
    return {entry.code: entry for entry in entries}


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(CATALOGUE_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _sorted_errors(data: Any) -> list[ValidationError]:
    return sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])


def _entry_label(index: int, entries: Any) -> str:
    """'entry 3 (AI-102)': 1-based, as a person counts entries in the file."""
    code = None
    if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
        code = entries[index].get("code")
    label = f"entry {index + 1}"
    return f"{label} ({code})" if isinstance(code, str) and code else label


def _field_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ValidationError, data: Any) -> list[str]:
    """Lines naming where each problem is (entry and field path) and what it is."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return [_locate(path + [name], "is required", data) for name in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(name) for name in error.instance if name not in allowed)
        return [_locate(path + [name], "unknown field", data) for name in extra]
    message = error.message
    if error.validator in ("oneOf", "anyOf") and error.context:
        specific = [sub for sub in error.context if sub.validator != "type"] or error.context
        message = f"{error.instance!r} is not valid here ({specific[0].message})"
    return [_locate(path, message, data)]


def _locate(path: list[Any], message: str, data: Any) -> str:
    if len(path) >= 2 and path[0] == "microcredentials" and isinstance(path[1], int):
        where = _entry_label(path[1], data.get("microcredentials"))
        field = _field_path(path[2:])
        return f"{where}: {field}: {message}" if field else f"{where}: {message}"
    field = _field_path(path)
    return f"catalogue: {field}: {message}" if field else f"catalogue: {message}"


def _cross_entry_errors(entries: list[dict[str, Any]]) -> list[str]:
    """Rules across entries: unique codes; per theme code one theme object (names, colour) and one area."""
    errors: list[str] = []
    seen_codes: dict[str, int] = {}
    themes: dict[str, int] = {}
    for index, entry in enumerate(entries):
        label = _entry_label(index, entries)
        code = entry["code"]
        if code in seen_codes:
            errors.append(f"{label}: code: duplicate of entry {seen_codes[code] + 1}")
        else:
            seen_codes[code] = index
        theme = entry["theme"]
        first = themes.setdefault(theme["code"], index)
        if first == index:
            continue
        other = entries[first]
        if other["theme"] != theme:
            errors.append(
                f"{label}: theme: differs from theme {theme['code']!r} as given in entry {first + 1} "
                "(names and colour must be the same in every entry)"
            )
        if other["area"] != entry["area"]:
            errors.append(
                f"{label}: area: {entry['area']!r} differs from {other['area']!r}, "
                f"the area of theme {theme['code']!r} in entry {first + 1}"
            )
    return errors


def _number(value: float) -> float:
    """Keep whole numbers as int so the badge JSON says 6, not 6.0."""
    return int(value) if float(value).is_integer() else float(value)


def _localised(value: dict[str, str]) -> Localised:
    return Localised(en=value["en"].strip(), zh_hant=value["zh-Hant"].strip())


def _build(entry: dict[str, Any]) -> Microcredential:
    language = entry["language"]
    return Microcredential(
        code=entry["code"],
        name=_localised(entry["name"]),
        description=_localised(entry["description"]),
        criteria=_localised(entry["criteria"]),
        credits=_number(entry["credits"]),
        contact_hours=_number(entry["contact_hours"]),
        theme=Theme(
            code=entry["theme"]["code"],
            name=_localised(entry["theme"]),
            colour=entry["theme"].get("colour", "").lower() or None,
        ),
        area=entry["area"],
        qf_level=entry["qf_level"],
        language=(language,) if isinstance(language, str) else tuple(language),
        cef_code=entry.get("cef_code"),
        image=entry.get("image"),
    )


def nfc_all(value: Any) -> Any:
    """NFC-normalise every string, so what is signed later is what was written in the file."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {nfc_all(k): nfc_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nfc_all(v) for v in value]
    return value
