"""Stacking rules: which verified badges make a Certificate or a Diploma, and why.

A pure module: the caller verifies each badge, reads its credits, theme, area and QF level, looks up the
pathways it already counts toward, and passes plain values; the decision that comes back is a value, a
report a learner can read and a program can parse. Every number comes from a rule file validated by
`schemas/rules.schema.json`. The rules as implemented, and why the search is exact: docs/stacking.md.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .catalogue import nfc_all

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RULES_SCHEMA = PROJECT_ROOT / "schemas" / "rules.schema.json"
DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "demo" / "rules.yaml"

PROFESSIONAL = "professional"
GENERAL = "general"
PROGRAMME_PREFIX = "programme:"
QF_LEVELS = tuple(range(1, 8))  # the Hong Kong Qualifications Framework has seven levels
NOT_NEEDED = "not needed for this award"


class RulesError(ValueError):
    """A rule file, target or programme that cannot be used; each line names the field at fault."""

    def __init__(self, errors: str | Iterable[str]):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


# --- the rule set -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelRule:
    """One award level. `focus_credits` is both the theme share for a theme title and the QF share."""

    name: str
    credits: int
    focus_credits: int
    achievement_type: str
    title: dict[str, str]


@dataclass(frozen=True)
class Programme:
    """A parent programme: its own list of eligible microcredentials (humanCode) and credit requirement."""

    code: str
    name: dict[str, str]
    eligible: frozenset[str]
    credits: int


@dataclass(frozen=True)
class RuleSet:
    """Every number the engine uses; `levels` are ordered by credits, lowest first."""

    levels: tuple[LevelRule, ...]
    validity_years: int
    professional_title: dict[str, str]
    general_title: dict[str, str]
    max_badges: int
    programmes: tuple[Programme, ...] = ()

    def level(self, name: str) -> LevelRule:
        for level in self.levels:
            if level.name == name:
                return level
        known = ", ".join(level.name for level in self.levels)
        raise RulesError(f"unknown award level {name!r} (the rules know {known})")

    def programme(self, code: str) -> Programme:
        for programme in self.programmes:
            if programme.code == code:
                return programme
        known = ", ".join(p.code for p in self.programmes) or "none"
        raise RulesError(f"unknown programme {code!r} (the rules define {known})")


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a .yaml/.yml/.json rule file; a bad file stops start-up with the field named."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise RulesError(f"{path.name}: unsupported rule file format {suffix!r} (use .yaml, .yml or .json)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path.name}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RulesError(f"{path.name}: not valid {suffix[1:].upper()}: {exc}") from exc
    return parse_rules(data)


@cache
def default_rules() -> RuleSet:
    """The default scheme (issuer/demo/rules.yaml); read once, it is immutable."""
    return load_rules(DEFAULT_RULES_PATH)


def parse_rules(data: Any) -> RuleSet:
    """Validate parsed rule data (schema, then what a schema cannot say) and build the RuleSet."""
    data = nfc_all(data)
    errors = list(dict.fromkeys(line for error in _schema_errors(data) for line in _describe(error)))
    if errors:
        raise RulesError(errors)
    levels = data["levels"]
    seen_credits: dict[int, str] = {}
    for name, level in levels.items():
        if level["focus_credits"] > level["credits"]:
            errors.append(f"rules: levels.{name}.focus_credits: {level['focus_credits']} is more than "
                          f"the level's credits ({level['credits']})")
        other = seen_credits.setdefault(level["credits"], name)
        if other != name:
            errors.append(f"rules: levels.{name}.credits: {level['credits']} is the same as levels.{other}.credits "
                          "(each level needs its own number of credits)")
    if errors:
        raise RulesError(errors)
    return RuleSet(
        levels=tuple(
            LevelRule(name=name, credits=level["credits"], focus_credits=level["focus_credits"],
                      achievement_type=level["achievement_type"], title=_bilingual(level["title"]))
            for name, level in sorted(levels.items(), key=lambda item: item[1]["credits"])
        ),
        validity_years=data["validity_years"],
        professional_title=_bilingual(data["professional_title"]),
        general_title=_bilingual(data["general_title"]),
        max_badges=data["max_badges"],
        programmes=tuple(
            Programme(code=code, name=_bilingual(entry["name"]), eligible=frozenset(entry["eligible"]),
                      credits=entry["credits"])
            for code, entry in sorted((data.get("programmes") or {}).items())
        ),
    )


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(RULES_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _schema_errors(data: Any) -> list[ValidationError]:
    return sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])


def _field(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ValidationError) -> list[str]:
    """One line per problem: 'rules: <field path>: <what is wrong>'."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return [_line(path + [name], "is required") for name in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [name for name in sorted(map(str, error.instance)) if name not in allowed]
        return [_line(path + [name], "unknown field") for name in extra]
    if "propertyNames" in error.absolute_schema_path:
        return [_line(path + [error.instance], f"is not a valid name ({error.message})")]
    return [_line(path, error.message)]


def _line(path: list[Any], message: str) -> str:
    field = _field(path)
    return f"rules: {field}: {message}" if field else f"rules: {message}"


def _bilingual(value: Mapping[str, str]) -> dict[str, str]:
    return {"en": value["en"].strip(), "zh-Hant": value["zh-Hant"].strip()}


# --- inputs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Badge:
    """What the rules need from one submitted badge, as the caller read and verified it."""

    id: str
    name: str
    achievement: str  # identity for "each achievement counts once", e.g. "<issuer>|<humanCode>"
    code: str | None
    credits: float | None
    theme: str | None
    theme_name: dict[str, str] | None
    area: str | None
    qf_level: int | None
    awarded: date
    problem: str | None = None  # why verification failed; such a badge is listed, never counted
    used_in: frozenset[str] = frozenset()  # "Certificate", "Diploma", "programme:<code>"


@dataclass(frozen=True)
class Target:
    """The award a learner asks for; None means "any" (area) or "no theme required" (theme)."""

    level: str
    area: str | None = None
    theme: str | None = None


_BRACKETED = re.compile(r"^(?P<head>.*?)\s*[(（]\s*(?P<theme>[^()（）]+?)\s*[)）]$")
_THEME_CODE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_EXAMPLES = ("'Certificate', 'Diploma in General Studies' or "
             "'Certificate in Professional Practice (Artificial Intelligence)'")


def parse_target(text: str | Mapping[str, Any], rules: RuleSet, themes: Mapping[str, Mapping[str, str]]) -> Target:
    """Read the award a learner names: an English or zh-Hant title, or {"level", "area", "theme"}.

    `themes` maps theme codes to their names, so the bracketed theme may be given by name in either
    language (or by code).
    """
    if isinstance(text, Target):
        return text
    if isinstance(text, Mapping):
        return _target_from_mapping(text, rules, themes)
    if not isinstance(text, str) or not text.strip():
        raise RulesError(f"target: expected an award title such as {_EXAMPLES}, "
                         "or an object with level, area and theme")
    spoken = " ".join(unicodedata.normalize("NFC", text).split())
    head, theme_text = spoken, None
    match = _BRACKETED.match(spoken)
    if match:
        head, theme_text = match["head"], match["theme"]
    found = _titles(rules).get(_key(head))
    if found is None:
        raise RulesError(f"target: {text.strip()!r} is not an award these rules give; expected e.g. {_EXAMPLES}")
    level, area = found
    return Target(level, area, _theme_code(theme_text, themes) if theme_text else None)


def _key(text: str) -> str:
    return "".join(text.split()).casefold()


def _titles(rules: RuleSet) -> dict[str, tuple[str, str | None]]:
    """Every way to write a level with or without its area: English and zh-Hant, spaces ignored."""
    titles: dict[str, tuple[str, str | None]] = {}
    areas = ((PROFESSIONAL, rules.professional_title), (GENERAL, rules.general_title))
    for level in rules.levels:
        for word in (level.name, level.title["en"], level.title["zh-Hant"]):
            titles[_key(word)] = (level.name, None)
        for area, title in areas:
            titles[_key(f"{level.title['en']} in {title['en']}")] = (level.name, area)
            titles[_key(f"{level.name} in {title['en']}")] = (level.name, area)
            titles[_key(title["zh-Hant"] + level.title["zh-Hant"])] = (level.name, area)
    return titles


def _target_from_mapping(value: Mapping[str, Any], rules: RuleSet, themes: Mapping[str, Mapping[str, str]]) -> Target:
    unknown = sorted(str(k) for k in value if k not in ("level", "area", "theme"))
    if unknown:
        raise RulesError(f"target.{unknown[0]}: unknown field (a target has level, area and theme)")
    level_text = value.get("level")
    if not isinstance(level_text, str):
        raise RulesError("target.level: is required (" + ", ".join(level.name for level in rules.levels) + ")")
    found = _titles(rules).get(_key(level_text))
    if found is None or found[1] is not None:
        raise RulesError(f"target.level: {level_text!r} is not one of "
                         + ", ".join(level.name for level in rules.levels))
    area = value.get("area")
    if area is not None:
        by_name = {_key(PROFESSIONAL): PROFESSIONAL, _key(GENERAL): GENERAL}
        for name, title in ((PROFESSIONAL, rules.professional_title), (GENERAL, rules.general_title)):
            by_name.update({_key(title["en"]): name, _key(title["zh-Hant"]): name})
        if not isinstance(area, str) or _key(area) not in by_name:
            raise RulesError(f"target.area: {area!r} is not 'professional' or 'general'")
        area = by_name[_key(area)]
    theme = value.get("theme")
    if theme is not None and (not isinstance(theme, str) or not theme.strip()):
        raise RulesError(f"target.theme: {theme!r} is not a theme code or name")
    return Target(found[0], area, _theme_code(theme, themes) if theme else None)


def _theme_code(text: str, themes: Mapping[str, Mapping[str, str]]) -> str:
    """A theme given by code or by either name; an unknown code-shaped word is taken as a code."""
    wanted = _key(text)
    for code in sorted(themes):
        names = themes[code]
        if wanted in (_key(code), *(_key(names.get(lang, "")) for lang in ("en", "zh-Hant"))):
            return code
    if _THEME_CODE.match(text.strip()):
        return text.strip()
    known = ", ".join(sorted(themes[code].get("en", code) for code in themes)) or "none in these badges"
    raise RulesError(f"target: unknown theme {text.strip()!r} (known themes: {known})")


# --- the decision -----------------------------------------------------------------------------------------


@dataclass
class Decision:
    """The outcome of one evaluation; `to_json()` is the report of issue #3."""

    eligible: bool
    award: dict[str, Any] | None
    badges: list[dict[str, Any]]
    next: list[str]

    def to_json(self) -> dict[str, Any]:
        return deepcopy({"eligible": self.eligible, "award": self.award, "badges": self.badges, "next": self.next})


def add_years(day: date, years: int) -> date:
    """Calendar years; 29 February becomes 28 February in a year without one."""
    if day.year + years > date.max.year:
        return date.max
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True)
class _Item:
    """A usable badge inside the search, its credits in integer units (1/den of a credit)."""

    badge: Badge
    units: int


class _Pool:
    """The usable badges for one pathway, soonest-expiring first, with the sums the rules look at."""

    def __init__(self, items: list[_Item], reasons: dict[int, str]):
        self.items = sorted(items, key=lambda item: (item.badge.awarded, item.badge.id))
        self.reasons = reasons  # badge position -> why it does not count here
        self.total = sum(item.units for item in self.items)
        self.professional: dict[str, int] = {}
        self.non_professional: dict[str, int] = {}
        self.by_theme: dict[str, int] = {}
        for item in self.items:
            theme = item.badge.theme
            if theme is None:
                continue
            self.by_theme[theme] = self.by_theme.get(theme, 0) + item.units
            side = self.professional if item.badge.area == PROFESSIONAL else self.non_professional
            side[theme] = side.get(theme, 0) + item.units

    def at_qf(self, level: int) -> int:
        return sum(item.units for item in self.items if _qf(item.badge) >= level)


def _qf(badge: Badge) -> int:
    return badge.qf_level if isinstance(badge.qf_level, int) and not isinstance(badge.qf_level, bool) else 0


def _fraction(value: float | int) -> Fraction:
    return Fraction(value) if isinstance(value, int) else Fraction(repr(float(value)))


def _valid_credits(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _article(word: str) -> str:
    return ("an " if word[:1].upper() in "AEIOU" else "a ") + word


def _amount(units: int, den: int) -> str:
    value = Fraction(units, den)
    text = str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
    return f"{text} more credit" + ("" if value == 1 else "s")


def _number(units: int, den: int) -> int | float:
    value = Fraction(units, den)
    return value.numerator if value.denominator == 1 else float(value)


class _Evaluation:
    """The state of one `evaluate` call: screened badges, credit unit, theme names, per-pathway pools."""

    def __init__(self, badges: Sequence[Badge], rules: RuleSet, as_of: date):
        self.badges = list(badges)
        self.rules = rules
        self.as_of = as_of
        self.base = self._screen()
        fractions = [_fraction(b.credits) for b, r in zip(self.badges, self.base, strict=True) if r is None]
        self.den = math.lcm(1, *(f.denominator for f in fractions))
        self.theme_names: dict[str, dict[str, str]] = {}
        for badge in sorted(self.badges, key=lambda b: b.id):
            if badge.theme and badge.theme_name and badge.theme not in self.theme_names:
                self.theme_names[badge.theme] = {"en": badge.theme_name.get("en", badge.theme),
                                                 "zh-Hant": badge.theme_name.get("zh-Hant", badge.theme)}

    def _screen(self) -> list[str | None]:
        """Reasons that hold for every pathway: verification, credits, dates, the same credential twice."""
        reasons: list[str | None] = []
        seen: set[str] = set()
        years = self.rules.validity_years
        for badge in self.badges:
            expires = add_years(badge.awarded, years)
            if badge.problem:
                reason = badge.problem
            elif badge.id in seen:
                reason = "submitted more than once"
            elif badge.credits is None:
                reason = "the badge states no credits"
            elif not _valid_credits(badge.credits):
                reason = f"the badge states {badge.credits!r} credits; only a positive number counts"
            elif badge.awarded > self.as_of:
                reason = f"awarded after {self.as_of.isoformat()}, the date of the application"
            elif self.as_of > expires:
                reason = (f"awarded more than {years} years before {self.as_of.isoformat()}: "
                          f"its credits counted until {expires.isoformat()}")
            else:
                reason = None
            seen.add(badge.id)
            reasons.append(reason)
        return reasons

    def theme_name(self, code: str) -> dict[str, str]:
        return self.theme_names.get(code, {"en": code, "zh-Hant": code})

    def pool(self, level: str | None = None, programme: Programme | None = None) -> _Pool:
        """The badges usable for one pathway (a level, or a programme) and why each other one is not."""
        reasons: dict[int, str] = {}
        spent: dict[str, tuple[str, str]] = {}  # achievement -> (badge id, pathway reason)
        for index, badge in enumerate(self.badges):
            reason = self.base[index] or self._pathway_reason(badge, level, programme)
            if reason is None:
                continue
            reasons[index] = reason
            if self.base[index] is None and reason.startswith("already counted"):
                spent.setdefault(badge.achievement, (badge.id, reason))
        groups: dict[str, list[int]] = {}
        for index, badge in enumerate(self.badges):
            if index in reasons:
                continue
            if badge.achievement in spent:
                other, why = spent[badge.achievement]
                reasons[index] = f"same achievement as {other}, {why}"
            else:
                groups.setdefault(badge.achievement, []).append(index)
        items = []
        for members in groups.values():
            # The achievement counts once, for the most it was awarded; then the copy that expires first.
            members.sort(key=lambda i: (-_fraction(self.badges[i].credits), self.badges[i].awarded, self.badges[i].id))
            keep = self.badges[members[0]]
            items.append(_Item(keep, int(_fraction(keep.credits) * self.den)))
            for index in members[1:]:
                reasons[index] = f"same achievement as {keep.id}"
        return _Pool(items, reasons)

    def _pathway_reason(self, badge: Badge, level: str | None, programme: Programme | None) -> str | None:
        """Rule 10: one Certificate and one Diploma per badge; a programme's badges count nowhere else."""
        programmes = sorted(used[len(PROGRAMME_PREFIX):] for used in badge.used_in if used.startswith(PROGRAMME_PREFIX))
        if programme is None:
            if level in badge.used_in:
                return f"already counted toward {_article(level)}"
            if programmes:
                return f"already counted toward programme {programmes[0]}"
            return None
        for rule in self.rules.levels:
            if rule.name in badge.used_in:
                return f"already counted toward {_article(rule.name)}"
        others = sorted(used for used in badge.used_in if not used.startswith(PROGRAMME_PREFIX))
        if others:
            return f"already counted toward {_article(others[0])}"
        if programmes:
            return f"already counted toward programme {programmes[0]}"
        if badge.code not in programme.eligible:
            return f"not one of the microcredentials of programme {programme.code}"
        return None

    def row(self, index: int, counted: bool, reason: str | None) -> dict[str, Any]:
        badge = self.badges[index]
        return {
            "id": badge.id,
            "name": badge.name,
            "credits": badge.credits,
            "theme": badge.theme,
            "area": badge.area,
            "qf_level": badge.qf_level,
            "awarded": badge.awarded.isoformat(),
            "expires_for_stacking": add_years(badge.awarded, self.rules.validity_years).isoformat(),
            "counted": counted,
            "reason": reason,
        }

    def rows(self, pool: _Pool, counted: set[str] | None) -> list[dict[str, Any]]:
        """Every submitted badge in the order given: counted, or the reason it is not."""
        rows = []
        counted_here = counted or set()
        taken: set[str] = set()
        for index, badge in enumerate(self.badges):
            if index in pool.reasons:
                rows.append(self.row(index, False, pool.reasons[index]))
            elif badge.id in counted_here and badge.id not in taken:
                taken.add(badge.id)
                rows.append(self.row(index, True, None))
            else:
                rows.append(self.row(index, False, NOT_NEEDED if counted is not None else None))
        return rows


# --- the search -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    level: LevelRule
    qf: int
    items: tuple[_Item, ...]
    units: int
    theme: str | None  # the theme the search aimed at, preferred for the title


_Share = Callable[[Badge], bool]


@dataclass(frozen=True)
class _Problem:
    """One search: at least `need` units; each `lower` share >= focus; each `upper` share < focus."""

    items: Sequence[_Item]  # soonest-expiring first
    lower: tuple[_Share, ...]
    upper: tuple[_Share, ...]
    need: int
    focus: int

    def shares(self) -> list[tuple[int, ...]]:
        return [tuple(item.units if test(item.badge) else 0 for test in (*self.lower, *self.upper))
                for item in self.items]

    def bound(self) -> int:
        """No optimal set totals more: each of its badges is needed by the total or by a lower share,
        so it stays under need + one badge, or under (focus + one badge) per lower share."""
        biggest = max((item.units for item in self.items), default=0)
        return max(self.need, len(self.lower) * self.focus) + max(1, len(self.lower)) * biggest

    def oldest(self, total: int) -> list[int]:
        """Positions that can be in a best set: per kind of badge (same units and shares) only the
        oldest ones that fit in `total`, since swapping in an older badge of the same kind keeps every
        share and prefers soonest-expiring badges."""
        seen: dict[tuple[int, tuple[int, ...]], int] = {}
        keep = []
        for position, (item, share) in enumerate(zip(self.items, self.shares(), strict=True)):
            kind = (item.units, share)
            seen[kind] = seen.get(kind, 0) + 1
            if seen[kind] * item.units <= total:
                keep.append(position)
        return keep


def _bits(value: int) -> list[int]:
    positions = []
    while value:
        low = value & -value
        positions.append(low.bit_length() - 1)
        value ^= low
    return positions


def _least(problem: _Problem) -> int | None:
    """The fewest units any qualifying set of badges can total, or None when no set qualifies."""
    if not problem.items:
        return None
    if problem.upper or len(problem.lower) > 2:
        return _least_packed(problem, problem.bound())
    # Two shares at most: sort the badges into four kinds (in share 1 / share 2) and combine subset sums.
    tests = list(problem.lower) + [lambda badge: True] * (2 - len(problem.lower))
    bound, focus, need = problem.bound(), problem.focus, problem.need
    mask = (1 << (bound + 1)) - 1
    sums = {(True, True): 1, (True, False): 1, (False, True): 1, (False, False): 1}
    for item in problem.items:
        kind = (tests[0](item.badge), tests[1](item.badge))
        sums[kind] |= (sums[kind] << item.units) & mask
    both, first, second, neither = (sums[k] for k in ((True, True), (True, False), (False, True), (False, False)))
    # with_second[m]: totals of (share-2-only + neither) sets whose share-2-only part is at least m.
    with_second = [0] * (focus + 1)
    running = 0
    for c in range(bound, -1, -1):
        if (second >> c) & 1:
            running |= (neither << c) & mask
        if c <= focus:
            with_second[c] = running
    best: int | None = None
    first_sums = _bits(first)
    for a in _bits(both):
        rest = with_second[max(0, focus - a)]
        if not rest:
            continue
        for b in first_sums:
            if a + b < focus:
                continue
            base = a + b
            if best is not None and base >= best:
                break
            short = max(0, need - base)
            above = rest >> short
            if above:
                total = base + short + (above & -above).bit_length() - 1
                best = total if best is None else min(best, total)
    return best


class _Grid:
    """Sets of points (total, lower shares, upper shares) held as the bits of one int.

    In units of the badges' common divisor, totals and lower shares take values 0..span-1 (a share never
    exceeds the total) and upper shares 0..cap-1. Adding a badge to every point of a set is one shift;
    points the shift would push out of range are masked off first, so no field carries into the next.
    """

    def __init__(self, problem: _Problem, span: int):
        self.divisor = math.gcd(*(item.units for item in problem.items))
        self.units = [item.units // self.divisor for item in problem.items]
        self.need = -(-problem.need // self.divisor)
        self.focus = -(-problem.focus // self.divisor)
        self.n_lower, self.n_upper = len(problem.lower), len(problem.upper)
        self.sizes = [span] * (1 + self.n_lower) + [self.focus] * self.n_upper
        self.strides: list[int] = []
        size = 1
        for field_size in self.sizes:
            self.strides.append(size)
            size *= field_size
        self.bits = size
        self.full = (1 << size) - 1
        self.masks: dict[tuple[int, int], int] = {}
        self.shares = [tuple(1 if s else 0 for s in share) for share in problem.shares()]

    @staticmethod
    def size(problem: _Problem, span_units: int) -> int:
        divisor = math.gcd(*(item.units for item in problem.items))
        span = span_units // divisor + 1
        return span ** (1 + len(problem.lower)) * (-(-problem.focus // divisor)) ** len(problem.upper)

    def at_most(self, field: int, limit: int) -> int:
        """The points whose `field` (0 = total) is at most `limit`."""
        limit = min(limit, self.sizes[field] - 1)
        if limit < 0:
            return 0
        mask = self.masks.get((field, limit))
        if mask is None:
            stride = self.strides[field]
            period = stride * self.sizes[field]
            mask, length = (1 << ((limit + 1) * stride)) - 1, period
            while length < self.bits:
                mask |= mask << length
                length *= 2
            mask &= self.full
            self.masks[(field, limit)] = mask
        return mask

    def at_least(self, field: int, low: int) -> int:
        return self.full if low <= 0 else self.full ^ self.at_most(field, low - 1)

    def room(self, position: int) -> int:
        """The points to which badge `position` can be added without leaving the grid or reaching a cap."""
        unit, share = self.units[position], self.shares[position]
        mask = self.at_most(0, self.sizes[0] - 1 - unit)
        for j in range(self.n_upper):
            if share[self.n_lower + j]:
                mask &= self.at_most(1 + self.n_lower + j, self.focus - 1 - unit)
        return mask

    def offset(self, position: int) -> int:
        unit, share = self.units[position], self.shares[position]
        return unit * (self.strides[0] + sum(stride for stride, s in zip(self.strides[1:], share, strict=True) if s))

    def qualifying(self) -> int:
        """The points whose lower shares all reach focus."""
        mask = self.full
        for j in range(self.n_lower):
            mask &= self.at_least(1 + j, self.focus)
        return mask

    def totals(self, points: int) -> int:
        """The set of totals among `points`, as a bitset."""
        span = self.sizes[0]
        blocks = self.bits // span
        while blocks > 1:
            half = (blocks + 1) // 2
            points = (points & ((1 << (half * span)) - 1)) | (points >> (half * span))
            blocks = half
        return points


GRID_LIMIT = 1 << 21  # bits per set of points; beyond it a capped search falls back to trimming


class _TooLarge(Exception):
    """The exact search with several caps would need more memory than a request should take."""


def _least_packed(problem: _Problem, span_units: int) -> int | None:
    """The fewest units of a qualifying set whose total fits in `span_units`, by one pass over the grid."""
    if _Grid.size(problem, span_units) > GRID_LIMIT:
        raise _TooLarge
    grid = _Grid(problem, span_units // math.gcd(*(item.units for item in problem.items)) + 1)
    points = 1
    for position in problem.oldest(span_units):
        points |= (points & grid.room(position)) << grid.offset(position)
    totals = grid.totals(points & grid.qualifying()) >> grid.need
    if not totals:
        return None
    return (grid.need + (totals & -totals).bit_length() - 1) * grid.divisor


def _least_capped(problem: _Problem) -> int | None:
    """Caps only remove sets, so the uncapped optimum is a floor: search just above it first."""
    floor = _least(_Problem(problem.items, problem.lower, (), problem.need, problem.focus))
    if floor is None:
        return None
    bound, span = problem.bound(), floor
    while True:
        found = _least_packed(problem, span)
        if found is not None or span >= bound:
            if found is not None and _Grid.size(problem, found) > GRID_LIMIT:
                raise _TooLarge
            return found
        span = min(bound, 2 * span)


def _trimmed(problem: _Problem) -> _Problem:
    """The fallback for many caps: from each capped theme keep its oldest badges while they stay below
    focus, then no set can reach a cap and the search is uncapped."""
    kept = []
    used = [0] * len(problem.upper)
    for item in problem.items:
        hits = [j for j, test in enumerate(problem.upper) if test(item.badge)]
        if all(used[j] + item.units < problem.focus for j in hits):
            for j in hits:
                used[j] += item.units
            kept.append(item)
    return _Problem(kept, problem.lower, (), problem.need, problem.focus)


def _settle(problem: _Problem) -> tuple[_Problem, int] | None:
    """The least total of a problem, and the problem to choose the badges from (trimmed if too large)."""
    if not problem.upper:
        least = _least(problem)
        return None if least is None else (problem, least)
    try:
        least = _least_capped(problem)
        return None if least is None else (problem, least)
    except _TooLarge:
        return _settle(_trimmed(problem))


def _choose(problem: _Problem, best: int) -> list[int]:
    """The qualifying set totalling `best` that uses the soonest-expiring badges first: walk the badges
    oldest first and keep each one when the later ones can still complete exactly `best`."""
    positions = problem.oldest(best)
    grid = _Grid(problem, best // math.gcd(*(item.units for item in problem.items)) + 1)
    target = best // grid.divisor
    suffixes = [1]
    for position in reversed(positions):
        points = suffixes[-1]
        suffixes.append(points | ((points & grid.room(position)) << grid.offset(position)))
    suffixes.reverse()
    chosen: list[int] = []
    total = 0
    shares = [0] * (grid.n_lower + grid.n_upper)
    for index, position in enumerate(positions):
        unit = grid.units[position]
        if total + unit > target:
            continue
        after = [have + unit * inc for have, inc in zip(shares, grid.shares[position], strict=True)]
        wanted = suffixes[index + 1] & grid.at_most(0, target - total - unit) & grid.at_least(0, target - total - unit)
        for j in range(grid.n_lower):
            wanted &= grid.at_least(1 + j, grid.focus - after[j])
        for j in range(grid.n_upper):
            wanted &= grid.at_most(1 + grid.n_lower + j, grid.focus - 1 - after[grid.n_lower + j])
        if wanted:
            chosen.append(position)
            total, shares = total + unit, after
            if total == target:
                break
    return chosen


def _highest_qf(items: Iterable[_Item], focus: int) -> int | None:
    """Rule 8: the highest level L with at least `focus` units at L or above."""
    items = list(items)
    levels = [level for level in QF_LEVELS if sum(i.units for i in items if _qf(i.badge) >= level) >= focus]
    return max(levels, default=None)


def _search(pool: _Pool, level: LevelRule, target: Target | None, den: int) -> _Found | None:
    """Rule 9 for one level: the best title, then the highest QF level, then fewest credits, oldest first."""
    need, focus = level.credits * den, level.focus_credits * den
    top = _highest_qf(pool.items, focus)
    if pool.total < need or top is None:
        return None

    def allowed(area: str, theme: str | None) -> bool:
        if target is None:
            return True
        return target.area in (None, area) and (target.theme is None or target.theme == theme)

    professional = sorted(t for t, u in pool.professional.items() if u >= focus and allowed(PROFESSIONAL, t))
    general = sorted(t for t, u in pool.by_theme.items() if u >= focus and allowed(GENERAL, t))
    # A General Studies set must not reach `focus` in one professional theme (its title would change).
    caps = tuple(_professional_in(t) for t, u in sorted(pool.professional.items()) if u >= focus)
    groups: list[list[tuple[str | None, tuple[_Share, ...], tuple[_Share, ...]]]] = [
        [(t, (_professional_in(t),), ()) for t in professional],
        [(t, (_in_theme(t),), caps) for t in general],
        [(None, (), caps)] if allowed(GENERAL, None) else [],
    ]
    for group in groups:
        candidates: list[tuple[int, int, str | None, _Problem]] = []
        for theme, shares, upper in group:
            for qf in range(top, 0, -1):
                settled = _settle(_Problem(pool.items, (*shares, _at_qf(qf)), upper, need, focus))
                if settled is not None:
                    candidates.append((qf, settled[1], theme, settled[0]))
                    break
        if not candidates:
            continue
        qf, least = max((c[0], -c[1]) for c in candidates)
        least = -least
        order = {item.badge.id: position for position, item in enumerate(pool.items)}
        ranked = []
        for c_qf, c_least, theme, problem in candidates:
            if (c_qf, c_least) == (qf, least):
                chosen = sorted(order[problem.items[i].badge.id] for i in _choose(problem, least))
                ranked.append((chosen, theme or ""))
        chosen, theme = min(ranked)
        return _Found(level, qf, tuple(pool.items[i] for i in chosen), least, theme or None)
    return None


def _professional_in(theme: str) -> _Share:
    return lambda badge: badge.theme == theme and badge.area == PROFESSIONAL


def _in_theme(theme: str) -> _Share:
    return lambda badge: badge.theme == theme


def _at_qf(level: int) -> _Share:
    return lambda badge: _qf(badge) >= level


# --- titles and advice ------------------------------------------------------------------------------------


def _title(rules: RuleSet, level: LevelRule, area: str, theme_name: dict[str, str] | None) -> dict[str, str]:
    """'Certificate in Professional Practice (Artificial Intelligence)' / '專業實踐證書(人工智能)'.

    The Chinese title uses ASCII brackets, as the school's published titles (issue #3) write them;
    targets are accepted with either ASCII or full-width brackets."""
    area_title = rules.professional_title if area == PROFESSIONAL else rules.general_title
    en = f"{level.title['en']} in {area_title['en']}"
    zh = f"{area_title['zh-Hant']}{level.title['zh-Hant']}"
    if theme_name:
        en += f" ({theme_name['en']})"
        zh += f"({theme_name['zh-Hant']})"
    return {"en": en, "zh-Hant": zh}


def _pick_title(professional: dict[str, int], themes: dict[str, int], aimed: str | None,
                focus: int) -> tuple[str, str | None]:
    def pick(shares: dict[str, int]) -> str | None:
        reached = [t for t, u in shares.items() if u >= focus]
        if not reached:
            return None
        return aimed if aimed in reached else min(reached, key=lambda t: (-shares[t], t))

    theme = pick(professional)
    if theme is not None:
        return PROFESSIONAL, theme
    return GENERAL, pick(themes)


def _nearest(shares: dict[str, int]) -> str | None:
    return min(shares, key=lambda t: (-shares[t], t), default=None)


# --- evaluate ---------------------------------------------------------------------------------------------


def evaluate(badges: list[Badge], *, rules: RuleSet, as_of: date, target: Target | None = None,
             programme: str | None = None) -> Decision:
    """Apply the rules to the submitted badges on the date `as_of` and explain the outcome."""
    if len(badges) > rules.max_badges:
        raise ValueError(f"{len(badges)} badges submitted; the rules allow at most {rules.max_badges}")
    if target is not None and programme is not None:
        raise RulesError("give a target award or a programme, not both")
    run = _Evaluation(badges, rules, as_of)
    if programme is not None:
        return _evaluate_programme(run, rules.programme(programme))
    if target is not None:
        levels = [rules.level(target.level)]
    else:
        levels = list(reversed(rules.levels))  # rule 9: the highest level first
    pools = {level.name: run.pool(level=level.name) for level in rules.levels}
    for level in levels:
        found = _search(pools[level.name], level, target, run.den)
        if found is not None:
            return _award_decision(run, pools, found, target)
    return _refusal(run, pools, levels, target)


def _award_decision(run: _Evaluation, pools: dict[str, _Pool], found: _Found, target: Target | None) -> Decision:
    rules, den = run.rules, run.den
    focus = found.level.focus_credits * den
    professional: dict[str, int] = {}
    themes: dict[str, int] = {}
    for item in found.items:
        if item.badge.theme:
            themes[item.badge.theme] = themes.get(item.badge.theme, 0) + item.units
            if item.badge.area == PROFESSIONAL:
                professional[item.badge.theme] = professional.get(item.badge.theme, 0) + item.units
    area, theme = _pick_title(professional, themes, found.theme, focus)
    theme_name = run.theme_name(theme) if theme else None
    title = _title(rules, found.level, area, theme_name)
    counted = [item.badge.id for item in found.items]
    award = {
        "level": found.level.name,
        "title": title,
        "area": area,
        "theme": theme,
        "theme_name": theme_name,
        "qf_level": found.qf,
        "credits": _number(found.units, den),
        "counted": counted,
    }
    pool = pools[found.level.name]
    advice = _better(run, pools, found, area, theme, title, target)
    return Decision(True, award, run.rows(pool, set(counted)), advice)


def _better(run: _Evaluation, pools: dict[str, _Pool], found: _Found, area: str, theme: str | None,
            title: dict[str, str], target: Target | None) -> list[str]:
    """What is missing for the nearest better awards: the next level, a better title, a higher QF level."""
    rules, den, level = run.rules, run.den, found.level
    pool = pools[level.name]
    focus = level.focus_credits * den
    advice: list[str] = []
    position = rules.levels.index(level)
    if target is None and position + 1 < len(rules.levels):
        higher = rules.levels[position + 1]
        advice += _shortfalls(run, pools[higher.name], higher, None, None, _article(higher.title["en"]))
    area_free = target is None or target.area is None
    theme_free = target is None or target.theme is None
    named = target.theme if target is not None else None
    if area == GENERAL and area_free and (named is None or named in pool.professional):
        # A named theme that is not professional can never give a Professional Practice title.
        wanted = named or _nearest(pool.professional)
        if wanted is None:
            advice.append(f"{_amount(focus, den)} in one professional theme for "
                          + _article(_title(rules, level, PROFESSIONAL, None)["en"]))
        elif pool.professional[wanted] < focus:
            name = run.theme_name(wanted)
            missing = focus - pool.professional[wanted]
            advice.append(f"{_amount(missing, den)} in {name['en']} for "
                          + _article(_title(rules, level, PROFESSIONAL, name)["en"]))
    if area == GENERAL and theme is None and theme_free:
        wanted = _nearest(pool.non_professional)
        if wanted is not None and pool.non_professional[wanted] < focus:
            name = run.theme_name(wanted)
            missing = focus - pool.non_professional[wanted]
            advice.append(f"{_amount(missing, den)} in {name['en']} for "
                          + _article(_title(rules, level, GENERAL, name)["en"]))
    if found.qf < QF_LEVELS[-1]:
        higher_qf = found.qf + 1
        missing = focus - pool.at_qf(higher_qf)
        if missing > 0:
            advice.append(f"{_amount(missing, den)} at QF level {higher_qf} or above for "
                          f"{_article(title['en'])} at QF level {higher_qf}")
    return advice


def _shortfalls(run: _Evaluation, pool: _Pool, level: LevelRule, area: str | None, theme: str | None,
                award: str) -> list[str]:
    """Each condition the pool does not meet yet, as 'N more credits …' (one new badge may meet several)."""
    den = run.den
    need, focus = level.credits * den, level.focus_credits * den
    lines: list[str] = []
    if pool.total < need:
        lines.append(f"{_amount(need - pool.total, den)} for {award}")
    if theme is not None:
        have = pool.professional.get(theme, 0) if area == PROFESSIONAL else pool.by_theme.get(theme, 0)
        if have < focus:
            lines.append(f"{_amount(focus - have, den)} in {run.theme_name(theme)['en']} for {award}")
    elif area == PROFESSIONAL:
        have = max(pool.professional.values(), default=0)
        if have < focus:
            lines.append(f"{_amount(focus - have, den)} in one professional theme for {award}")
    # New badges normally state a QF level: say so only when the total does not already cover it.
    with_level = pool.at_qf(1)
    if focus - with_level > need - pool.total:
        lines.append(f"{_amount(focus - with_level, den)} with a stated QF level for {award}")
    return lines


def _refusal(run: _Evaluation, pools: dict[str, _Pool], levels: list[LevelRule], target: Target | None) -> Decision:
    """Not eligible: the badges as seen by the nearest level (or the target's), and what is missing."""
    den = run.den
    if target is not None:
        level = levels[0]
        pool = pools[level.name]
        parts = [level.title["en"]]
        if target.area is not None:
            area_title = run.rules.professional_title if target.area == PROFESSIONAL else run.rules.general_title
            parts.append(f"in {area_title['en']}")
        if target.theme is not None:
            parts.append(f"({run.theme_name(target.theme)['en']})")
        award = _article(" ".join(parts))
        lines = _shortfalls(run, pool, level, target.area, target.theme, award)
        if not lines:
            lines = [_mix_advice(run, pool, level, award)]
        return Decision(False, None, run.rows(pool, None), lines)

    def gap(level: LevelRule) -> int:
        pool = pools[level.name]
        return max(level.credits * den - pool.total, level.focus_credits * den - pool.at_qf(1))

    level = min(run.rules.levels, key=lambda lv: (gap(lv), run.rules.levels.index(lv)))
    pool = pools[level.name]
    lines = _shortfalls(run, pool, level, None, None, _article(level.title["en"]))
    return Decision(False, None, run.rows(pool, None), lines)


def _mix_advice(run: _Evaluation, pool: _Pool, level: LevelRule, award: str) -> str:
    """Every share is there but no set gives the title: too much comes from one professional theme."""
    den = run.den
    focus = level.focus_credits * den
    usable = pool.total
    for theme, units in pool.professional.items():
        if units >= focus:
            sums = 1
            for item in pool.items:
                if item.badge.theme == theme and item.badge.area == PROFESSIONAL:
                    sums |= sums << item.units
            below = (sums & ((1 << focus) - 1)).bit_length() - 1
            usable -= units - below
    limit = f"fewer than {_number(focus, den)} credits may come from one professional theme"
    missing = level.credits * den - usable
    if missing > 0:
        return f"{_amount(missing, den)} outside professional themes for {award} ({limit})"
    return f"a different mix of badges for {award} ({limit})"


def _evaluate_programme(run: _Evaluation, programme: Programme) -> Decision:
    """A parent programme: its eligible badges only, as few credits as reach its requirement, oldest first."""
    pool = run.pool(programme=programme)
    problem = _Problem(pool.items, (), (), programme.credits * run.den, 0)
    least = _least(problem)
    if least is None:
        need = problem.need
        missing = need - pool.total
        line = f"{_amount(missing, run.den)} from the microcredentials of {programme.name['en']}"
        return Decision(False, None, run.rows(pool, None), [line])
    units = least
    counted = [pool.items[i].badge.id for i in _choose(problem, least)]
    award = {
        "level": PROGRAMME_PREFIX + programme.code,
        "title": dict(programme.name),
        "area": None,
        "theme": None,
        "theme_name": None,
        "qf_level": None,
        "credits": _number(units, run.den),
        "counted": counted,
    }
    return Decision(True, award, run.rows(pool, set(counted)), [])
