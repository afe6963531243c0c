"""The stacking rules engine (issue #3): rule file, screening, selection, titles, targets, the report.

Badges are built by `badge()`: six credits of Artificial Intelligence (professional) at QF level 4,
awarded on day `n` of 2024, unless a row says otherwise. Ids sort in submission order, so ties are
broken the way the rules say (soonest-expiring first, then id).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from issuer import stacking
from issuer.stacking import (
    DEFAULT_RULES_PATH,
    Badge,
    RulesError,
    Target,
    default_rules,
    evaluate,
    load_rules,
    parse_target,
)

AS_OF = date(2025, 9, 1)
RULES = default_rules()

AI = ("artificial-intelligence", "professional", {"en": "Artificial Intelligence", "zh-Hant": "人工智能"})
WPS = ("workplace-psychology", "professional", {"en": "Workplace Psychology", "zh-Hant": "職場心理學"})
DA = ("data-analytics", "professional", {"en": "Data Analytics", "zh-Hant": "數據分析"})
TEA = ("chinese-tea-culture", "general", {"en": "Chinese Tea Culture", "zh-Hant": "中國茶文化"})
HKC = ("hong-kong-heritage", "general", {"en": "Hong Kong Culture and Heritage", "zh-Hant": "香港文化與歷史遺產"})
THEMES = {code: names for code, _, names in (AI, WPS, DA, TEA, HKC)}


def badge(n: int, credits: float | None = 6, theme: tuple | None = AI, qf: int | None = 4, *,
          awarded: date | None = None, code: str | None = None, **extra) -> Badge:
    code = code or f"C{n:03d}"
    return Badge(
        id=f"b{n:03d}",
        name=f"Course {n}",
        achievement=f"did:web:school.example|{code}",
        code=code,
        credits=credits,
        theme=theme[0] if theme else None,
        theme_name=theme[2] if theme else None,
        area=theme[1] if theme else None,
        qf_level=qf,
        awarded=awarded or date(2024, 1, 1) + timedelta(days=n),
        **extra,
    )


def run(badges: list[Badge], target: Target | str | None = None, **kwargs) -> dict:
    if isinstance(target, str):
        target = parse_target(target, RULES, THEMES)
    return evaluate(badges, rules=RULES, as_of=kwargs.pop("as_of", AS_OF), target=target, **kwargs).to_json()


def rows_by_id(report: dict) -> dict[str, dict]:
    return {row["id"]: row for row in report["badges"]}


def many(first: int, count: int, **kwargs) -> list[Badge]:
    return [badge(n, **kwargs) for n in range(first, first + count)]


# --- the rule file --------------------------------------------------------------------------------------------


def test_default_rule_file_has_the_numbers_of_the_issue():
    rules = load_rules(DEFAULT_RULES_PATH)
    assert [(lv.name, lv.credits, lv.focus_credits, lv.achievement_type) for lv in rules.levels] == [
        ("Certificate", 30, 24, "Certificate"), ("Diploma", 60, 45, "Diploma")]
    assert rules.level("Certificate").title == {"en": "Certificate", "zh-Hant": "證書"}
    assert rules.level("Diploma").title == {"en": "Diploma", "zh-Hant": "文憑"}
    assert rules.validity_years == 5
    assert rules.max_badges == 200
    assert rules.professional_title == {"en": "Professional Practice", "zh-Hant": "專業實踐"}
    assert rules.general_title == {"en": "General Studies", "zh-Hant": "通識"}
    assert rules.programmes == ()
    assert default_rules() == rules


def _default_data() -> dict:
    return yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))


def _set(path: str, value):
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[part]
        if value is KeyError:
            del data[last]
        else:
            data[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("levels.Certificate.credits", -1), "rules: levels.Certificate.credits: -1 is less than the minimum of 1"),
    (_set("levels.Diploma.focus_credits", "45"), "rules: levels.Diploma.focus_credits: '45' is not of type 'integer'"),
    (_set("validity_years", KeyError), "rules: validity_years: is required"),
    (_set("levels.Diploma.colour", "red"), "rules: levels.Diploma.colour: unknown field"),
    (_set("levels.Certificate.title", {"en": "Certificate"}), "rules: levels.Certificate.title.zh-Hant: is required"),
    (_set("levels.Certificate.focus_credits", 31),
     "rules: levels.Certificate.focus_credits: 31 is more than the level's credits (30)"),
    (_set("levels.Diploma.credits", 30), "rules: levels.Diploma.credits: 30 is the same as levels.Certificate.credits"),
    (_set("levels.certificate", {"credits": 20, "focus_credits": 10, "achievement_type": "Certificate",
                                 "title": {"en": "c", "zh-Hant": "c"}}),
     "rules: levels.certificate: is not a valid name"),
    (_set("programmes", {"PC-AI": {"name": {"en": "P", "zh-Hant": "P"}, "credits": 24, "eligible": []}}),
     "rules: programmes.PC-AI.eligible: [] should be non-empty"),
    (_set("max_badges", 0), "rules: max_badges: 0 is less than the minimum of 1"),
    (_set("version", 2), "rules: version: 1 was expected"),
])
def test_a_malformed_rule_file_is_refused_naming_the_field(tmp_path: Path, change, message):
    data = _default_data()
    change(data)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert any(line.startswith(message) for line in error.value.errors), error.value.errors


@pytest.mark.parametrize("name, text, message", [
    ("rules.yaml", "levels: [unclosed", "rules.yaml: not valid YAML"),
    ("rules.json", "{", "rules.json: not valid JSON"),
    ("rules.toml", "x = 1", "rules.toml: unsupported rule file format '.toml'"),
])
def test_an_unreadable_rule_file_is_refused_naming_the_file(tmp_path: Path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError, match=message):
        load_rules(path)


def test_a_json_rule_file_with_a_programme_loads(tmp_path: Path):
    data = _default_data()
    data["programmes"] = {"PC-AIB": {"name": {"en": "Professional Certificate in AI for Business",
                                              "zh-Hant": "商業人工智能專業證書"},
                                     "credits": 24, "eligible": ["AI-101", "AI-102"]}}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    rules = load_rules(path)
    assert rules.levels == RULES.levels
    assert rules.programme("PC-AIB").eligible == frozenset({"AI-101", "AI-102"})
    assert rules.programme("PC-AIB").credits == 24
    with pytest.raises(RulesError, match="unknown programme 'nope'"):
        rules.programme("nope")
    with pytest.raises(RulesError, match="unknown award level 'Masters'"):
        rules.level("Masters")


# --- thresholds, titles and QF levels (rules 6, 7, 8) -------------------------------------------------------

AWARDS = [
    # label, badges, expected (eligible, level, English title, zh-Hant title, QF level, credits)
    ("exactly 30 credits make a Certificate",
     many(1, 3, theme=TEA) + many(4, 2, theme=HKC),
     (True, "Certificate", "Certificate in General Studies", "通識證書", 4, 30)),
    ("29 credits make nothing",
     [badge(1, 9, TEA), badge(2, 9, HKC), badge(3, 6, WPS), badge(4, 5, DA)],
     (False, None, None, None, None, None)),
    ("24 credits in one professional theme give Professional Practice (theme)",
     many(1, 4) + [badge(5, 6, TEA)],
     (True, "Certificate", "Certificate in Professional Practice (Artificial Intelligence)",
      "專業實踐證書(人工智能)", 4, 30)),
    ("21 credits in one professional theme do not",
     [badge(1, 9), badge(2, 6), badge(3, 6), badge(4, 9, TEA)],
     (True, "Certificate", "Certificate in General Studies", "通識證書", 4, 30)),
    ("a professional 75% spread over two themes is General Studies",
     many(1, 2) + many(3, 2, theme=WPS) + [badge(5, 6, DA)],
     (True, "Certificate", "Certificate in General Studies", "通識證書", 4, 30)),
    ("24 credits in one general theme put it in brackets",
     many(1, 4, theme=TEA) + [badge(5)],
     (True, "Certificate", "Certificate in General Studies (Chinese Tea Culture)", "通識證書(中國茶文化)", 4, 30)),
    ("QF level: 24 credits at level 4 or above, only 18 at 5",
     many(1, 3, qf=5) + many(4, 1, qf=4) + many(5, 1, qf=3),
     (True, "Certificate", "Certificate in Professional Practice (Artificial Intelligence)",
      "專業實踐證書(人工智能)", 4, 30)),
    ("QF level: 24 credits at level 5 or above",
     many(1, 4, qf=5) + many(5, 1, qf=2),
     (True, "Certificate", "Certificate in Professional Practice (Artificial Intelligence)",
      "專業實踐證書(人工智能)", 5, 30)),
    ("credits without a stated QF level count toward the total, not the level",
     many(1, 2, qf=None) + many(3, 3, qf=6),
     (False, None, None, None, None, None)),
    ("60 credits: a Diploma rather than a Certificate",
     many(1, 5) + many(6, 5, theme=TEA),
     (True, "Diploma", "Diploma in General Studies", "通識文憑", 4, 60)),
    ("45 credits of one professional theme in a Diploma",
     many(1, 5, credits=9) + many(6, 3, theme=TEA, qf=3) + [badge(9, 6, HKC, qf=5)],
     (True, "Diploma", "Diploma in Professional Practice (Artificial Intelligence)",
      "專業實踐文憑(人工智能)", 4, 63)),
    ("a Diploma's QF level by the 45-credit rule",
     many(1, 5, credits=9, qf=5) + many(6, 2, theme=TEA, qf=3) + [badge(8, 3, HKC, qf=3)],
     (True, "Diploma", "Diploma in Professional Practice (Artificial Intelligence)",
      "專業實踐文憑(人工智能)", 5, 60)),
    ("half credits add up exactly",
     [badge(1, 7.5), badge(2, 7.5), badge(3, 7.5), badge(4, 7.5)],
     (True, "Certificate", "Certificate in Professional Practice (Artificial Intelligence)",
      "專業實踐證書(人工智能)", 4, 30)),
]


@pytest.mark.parametrize("label, badges, expected", AWARDS, ids=[row[0] for row in AWARDS])
def test_thresholds_titles_and_qf_levels(label, badges, expected):
    report = run(badges)
    eligible, level, title_en, title_zh, qf, credits = expected
    assert report["eligible"] is eligible
    if not eligible:
        assert report["award"] is None
        assert report["next"]
        return
    award = report["award"]
    assert (award["level"], award["title"]["en"], award["title"]["zh-Hant"], award["qf_level"], award["credits"]) == (
        level, title_en, title_zh, qf, credits)
    counted = [row for row in report["badges"] if row["counted"]]
    assert [row["id"] for row in counted] == award["counted"]
    assert sum(row["credits"] for row in counted) == credits


@pytest.mark.parametrize("label, badges, target, expected_next", [
    ("one credit short", [badge(1, 9, TEA), badge(2, 9, HKC), badge(3, 6, WPS), badge(4, 5, DA)], None,
     ["1 more credit for a Certificate"]),
    ("credits but too few at a stated QF level", many(1, 2, qf=None) + many(3, 3, qf=6), None,
     ["6 more credits with a stated QF level for a Certificate"]),
    ("nothing usable", [badge(1, problem="revoked")], None, ["30 more credits for a Certificate"]),
    ("21 in the theme asked for", [badge(1, 9), badge(2, 6), badge(3, 6), badge(4, 9, TEA)],
     "Certificate in Professional Practice (Artificial Intelligence)",
     ["3 more credits in Artificial Intelligence for a Certificate in Professional Practice "
      "(Artificial Intelligence)"]),
    ("a Diploma asked for with 36 credits", many(1, 6), "Diploma",
     ["24 more credits for a Diploma"]),
    ("a professional Diploma asked for", many(1, 6) + many(7, 4, theme=TEA), "Diploma in Professional Practice",
     ["9 more credits in one professional theme for a Diploma in Professional Practice"]),
    ("a professional Diploma asked for with 48 credits", many(1, 6) + many(7, 2, theme=TEA),
     "Diploma in Professional Practice",
     ["12 more credits for a Diploma in Professional Practice",
      "9 more credits in one professional theme for a Diploma in Professional Practice"]),
    ("General Studies asked for with only professional credits", many(1, 6), "Certificate in General Studies",
     ["12 more credits outside professional themes for a Certificate in General Studies "
      "(fewer than 24 credits may come from one professional theme)"]),
])
def test_a_target_that_cannot_be_met_says_what_is_missing(label, badges, target, expected_next):
    report = run(badges, target)
    assert report["eligible"] is False
    assert report["award"] is None
    assert report["next"] == expected_next


@pytest.mark.parametrize("label, badges, expected_next", [
    ("General Studies Certificate: the Diploma, Professional Practice, a theme, a higher QF level",
     [badge(1, 9), badge(2, 6), badge(3, 6), badge(4, 9, TEA)],
     ["30 more credits for a Diploma",
      "3 more credits in Artificial Intelligence for a Certificate in Professional Practice (Artificial Intelligence)",
      "15 more credits in Chinese Tea Culture for a Certificate in General Studies (Chinese Tea Culture)",
      "24 more credits at QF level 5 or above for a Certificate in General Studies at QF level 5"]),
    ("Professional Practice Diploma at QF 5", many(1, 5, credits=9, qf=5) + many(6, 2, theme=TEA, qf=3)
     + [badge(8, 3, HKC, qf=3)],
     ["45 more credits at QF level 6 or above for a Diploma in Professional Practice (Artificial Intelligence) "
      "at QF level 6"]),
])
def test_an_award_says_what_the_next_better_award_needs(label, badges, expected_next):
    report = run(badges)
    assert report["eligible"] is True
    assert report["next"] == expected_next


# --- badges that do not count (rules 1, 3, 4, 5) --------------------------------------------------------------

NOT_COUNTED = [
    ("revoked", {"problem": "revoked by the issuer"}, "revoked by the issuer"),
    ("tampered", {"problem": "does not verify: the proof's signature does not match"},
     "does not verify: the proof's signature does not match"),
    ("untrusted issuer", {"problem": "issuer did:web:elsewhere.example is not this school or a trusted partner"},
     "issuer did:web:elsewhere.example is not this school or a trusted partner"),
    ("someone else's", {"problem": "issued to someone else: the recipient does not match"},
     "issued to someone else: the recipient does not match"),
    ("no credits", {"credits": None}, "the badge states no credits"),
    ("zero credits", {"credits": 0}, "the badge states 0 credits; only a positive number counts"),
    ("negative credits", {"credits": -6}, "only a positive number counts"),
    ("awarded after the application", {"awarded": date(2025, 9, 2)},
     "awarded after 2025-09-01, the date of the application"),
    ("5 years and a day old", {"awarded": date(2020, 8, 31)},
     "awarded more than 5 years before 2025-09-01: its credits counted until 2025-08-31"),
    ("used in an earlier Certificate", {"used_in": frozenset({"Certificate"})}, "already counted toward a Certificate"),
    ("used in a parent programme", {"used_in": frozenset({"programme:PC-AIB"})},
     "already counted toward programme PC-AIB"),
]


@pytest.mark.parametrize("label, change, reason", NOT_COUNTED, ids=[row[0] for row in NOT_COUNTED])
def test_a_badge_that_does_not_count_is_listed_with_its_reason(label, change, reason):
    bad = replace(badge(1), **change)
    report = run([bad] + many(2, 5), "Certificate")
    row = rows_by_id(report)["b001"]
    assert row["counted"] is False
    assert reason in row["reason"]
    assert report["eligible"] is True
    assert "b001" not in report["award"]["counted"]
    assert report["award"]["credits"] == 30


@pytest.mark.parametrize("label, change", [row[:2] for row in NOT_COUNTED], ids=[row[0] for row in NOT_COUNTED])
def test_a_badge_that_does_not_count_can_cost_the_award(label, change):
    report = run([replace(badge(1), **change)] + many(2, 4), "Certificate")
    assert report["eligible"] is False
    assert report["next"] == ["6 more credits for a Certificate"]


@pytest.mark.parametrize("awarded, as_of, counted, expires", [
    (date(2020, 9, 1), date(2025, 9, 1), True, "2025-09-01"),   # exactly 5 years old
    (date(2020, 8, 31), date(2025, 9, 1), False, "2025-08-31"),  # 5 years and a day
    (date(2020, 2, 29), date(2025, 2, 28), True, "2025-02-28"),  # leap day: 28 February
    (date(2020, 2, 29), date(2025, 3, 1), False, "2025-02-28"),
    (date(2025, 9, 1), date(2025, 9, 1), True, "2030-09-01"),    # awarded on the day of the application
])
def test_credits_stay_valid_for_five_calendar_years(awarded, as_of, counted, expires):
    report = run([badge(1, awarded=awarded)] + many(2, 4), as_of=as_of)
    row = rows_by_id(report)["b001"]
    assert row["expires_for_stacking"] == expires
    assert row["counted"] is counted
    assert report["eligible"] is counted


def test_the_same_achievement_counts_once():
    first = badge(1, code="AI-101")
    again = badge(2, code="AI-101")  # e.g. a reissue: another credential for the same course
    report = run([first, again] + many(3, 3) + [badge(6, 6, TEA)])
    rows = rows_by_id(report)
    assert rows["b001"]["counted"] is True
    assert rows["b002"] == {**rows["b002"], "counted": False, "reason": "same achievement as b001"}
    assert report["eligible"] is True
    assert report["award"]["counted"] == ["b001", "b003", "b004", "b005", "b006"]

    short = run([first, again] + many(3, 3))
    assert short["eligible"] is False
    assert short["next"] == ["6 more credits for a Certificate"]


def test_a_duplicate_keeps_the_copy_worth_most_then_the_one_expiring_first():
    small = badge(1, 3, code="AI-101")
    big = badge(2, 6, code="AI-101")
    older_big = badge(3, 6, code="AI-101", awarded=date(2023, 5, 1))
    rows = rows_by_id(run([small, big, older_big] + many(4, 4)))
    assert rows["b003"]["counted"] is True
    assert rows["b001"]["reason"] == rows["b002"]["reason"] == "same achievement as b003"


def test_the_same_credential_submitted_twice_counts_once():
    report = run([badge(1), badge(1)] + many(2, 4))
    assert [row["counted"] for row in report["badges"]] == [True, False, True, True, True, True]
    assert report["badges"][1]["reason"] == "submitted more than once"


# --- pathways (rule 10) ---------------------------------------------------------------------------------------


def test_a_diploma_may_reuse_the_badges_of_an_earlier_certificate():
    earlier = [replace(b, used_in=frozenset({"Certificate"})) for b in many(1, 5)]
    report = run(earlier + many(6, 5, theme=TEA))
    assert report["eligible"] is True
    assert report["award"]["level"] == "Diploma"
    assert report["award"]["counted"] == [f"b{n:03d}" for n in range(1, 11)]


def test_badges_of_an_earlier_certificate_do_not_make_another_certificate():
    earlier = [replace(b, used_in=frozenset({"Certificate"})) for b in many(1, 5)]
    report = run(earlier + many(6, 3, theme=TEA), "Certificate")
    assert report["eligible"] is False
    assert rows_by_id(report)["b001"]["reason"] == "already counted toward a Certificate"
    assert report["next"] == ["12 more credits for a Certificate"]


def test_without_a_target_the_nearest_award_explains_a_refusal():
    earlier = [replace(b, used_in=frozenset({"Certificate"})) for b in many(1, 5)]
    report = run(earlier + many(6, 4, theme=TEA))  # Certificate: 24 usable; Diploma: 54 usable
    assert report["eligible"] is False
    assert report["next"] == ["6 more credits for a Certificate"]
    assert rows_by_id(report)["b001"]["reason"] == "already counted toward a Certificate"


def test_a_badge_used_in_a_diploma_is_refused_for_another_diploma():
    used = [replace(b, used_in=frozenset({"Certificate", "Diploma"})) for b in many(1, 5)]
    report = run(used + many(6, 6, theme=TEA), "Diploma")
    assert report["eligible"] is False
    assert rows_by_id(report)["b001"]["reason"] == "already counted toward a Diploma"
    assert report["next"] == ["24 more credits for a Diploma"]


def test_another_copy_of_an_achievement_already_counted_is_refused_too():
    counted = replace(badge(1, code="AI-101"), used_in=frozenset({"Certificate"}))
    copy = badge(2, code="AI-101")
    report = run([counted, copy] + many(3, 5), "Certificate")
    assert rows_by_id(report)["b002"]["reason"] == "same achievement as b001, already counted toward a Certificate"
    assert report["award"]["counted"] == [f"b{n:03d}" for n in range(3, 8)]


PROGRAMME_RULES = replace(RULES, programmes=(stacking.Programme(
    code="PC-AIB", name={"en": "Professional Certificate in AI for Business", "zh-Hant": "商業人工智能專業證書"},
    eligible=frozenset({"AI-101", "AI-102", "AI-201", "AI-202", "AI-203"}), credits=24),))


def test_a_parent_programme_counts_its_own_microcredentials_only():
    badges = [badge(1, code="AI-101"), badge(2, code="AI-102"), badge(3, 9, code="AI-201"),
              badge(4, 9, code="AI-202"), badge(5, code="DA-101", theme=DA),
              replace(badge(6, code="AI-203"), used_in=frozenset({"Certificate"}))]
    report = evaluate(badges, rules=PROGRAMME_RULES, as_of=AS_OF, programme="PC-AIB").to_json()
    assert report["eligible"] is True
    assert report["award"]["level"] == "programme:PC-AIB"
    assert report["award"]["title"]["en"] == "Professional Certificate in AI for Business"
    assert report["award"]["counted"] == ["b001", "b003", "b004"]  # 24 credits: 6 + 9 + 9, oldest first
    rows = rows_by_id(report)
    assert rows["b002"]["reason"] == "not needed for this award"
    assert rows["b005"]["reason"] == "not one of the microcredentials of programme PC-AIB"
    assert rows["b006"]["reason"] == "already counted toward a Certificate"


def test_a_parent_programme_badge_is_refused_for_a_certificate():
    in_programme = [replace(b, used_in=frozenset({"programme:PC-AIB"})) for b in many(1, 4)]
    report = run(in_programme + many(5, 3, theme=TEA))
    assert report["eligible"] is False
    assert rows_by_id(report)["b001"]["reason"] == "already counted toward programme PC-AIB"
    assert report["next"] == ["12 more credits for a Certificate"]


def test_a_programme_that_cannot_be_met_says_what_is_missing():
    report = evaluate([badge(1, code="AI-101")], rules=PROGRAMME_RULES, as_of=AS_OF, programme="PC-AIB").to_json()
    assert report["eligible"] is False
    assert report["next"] == [
        "18 more credits from the microcredentials of Professional Certificate in AI for Business"]


# --- choosing the badges (rule 9) -----------------------------------------------------------------------------


def test_as_few_credits_as_reach_the_threshold_and_the_oldest_first():
    badges = [badge(1, 9), badge(2, 9), badge(3, 9), badge(4, 6), badge(5, 6)]
    report = run(badges)
    assert report["award"]["credits"] == 30
    assert report["award"]["counted"] == ["b001", "b002", "b004", "b005"]
    assert rows_by_id(report)["b003"]["reason"] == "not needed for this award"


def test_among_equal_sets_the_badges_that_expire_soonest_are_used():
    badges = [badge(n, awarded=date(2024, 12, 1) - timedelta(days=n)) for n in range(1, 8)]  # b007 oldest
    report = run(badges)
    assert report["award"]["counted"] == ["b007", "b006", "b005", "b004", "b003"]


def test_same_day_badges_are_taken_in_id_order():
    day = date(2024, 3, 3)
    report = run([badge(n, awarded=day) for n in (6, 2, 4, 1, 5, 3)])
    assert sorted(report["award"]["counted"]) == ["b001", "b002", "b003", "b004", "b005"]


def test_a_higher_qf_level_comes_before_fewer_credits():
    # Rule 9's order: the title, then the QF level, then as few credits as reach the threshold.
    badges = many(1, 4, qf=3) + many(5, 4, theme=TEA, qf=5)
    award = run(badges)["award"]
    assert (award["area"], award["theme"], award["qf_level"], award["credits"]) == (
        "professional", "artificial-intelligence", 5, 48)


def test_professional_practice_comes_before_a_general_theme():
    badges = many(1, 4, theme=TEA, qf=5) + many(5, 4, qf=5)
    award = run(badges)["award"]
    assert (award["area"], award["theme"], award["credits"]) == ("professional", "artificial-intelligence", 30)
    assert award["counted"] == ["b001", "b005", "b006", "b007", "b008"]


def test_the_general_theme_needing_fewest_credits_is_named():
    badges = many(1, 4, theme=TEA, qf=3) + many(5, 4, theme=HKC, qf=5) + [badge(9, 6, None, 5)]
    award = run(badges)["award"]
    assert award["title"]["en"] == "Certificate in General Studies (Hong Kong Culture and Heritage)"
    assert award["title"]["zh-Hant"] == "通識證書(香港文化與歷史遺產)"
    assert (award["qf_level"], award["credits"]) == (5, 30)
    assert award["counted"] == ["b001", "b005", "b006", "b007", "b008"]  # the oldest sixth badge


def test_a_higher_qf_level_wins_over_older_badges():
    badges = many(1, 4, qf=3) + many(5, 4, qf=5)
    award = run(badges)["award"]
    assert award["qf_level"] == 5
    assert award["counted"] == ["b001", "b005", "b006", "b007", "b008"]


def test_between_two_qualifying_themes_the_older_badges_decide():
    badges = many(1, 4, theme=WPS) + many(5, 4, theme=AI) + [badge(9, 6, TEA)]
    award = run(badges)["award"]
    assert award["theme"] == "workplace-psychology"
    assert award["theme_name"] == {"en": "Workplace Psychology", "zh-Hant": "職場心理學"}
    assert award["counted"] == ["b001", "b002", "b003", "b004", "b005"]


# --- targets --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Certificate", Target("Certificate", None, None)),
    ("diploma", Target("Diploma", None, None)),
    ("Diploma in General Studies", Target("Diploma", "general", None)),
    ("Certificate in Professional Practice", Target("Certificate", "professional", None)),
    ("Certificate in Professional Practice (Artificial Intelligence)",
     Target("Certificate", "professional", "artificial-intelligence")),
    ("  Certificate  in General Studies ( Chinese Tea Culture ) ",
     Target("Certificate", "general", "chinese-tea-culture")),
    ("Certificate in General Studies (chinese-tea-culture)", Target("Certificate", "general", "chinese-tea-culture")),
    ("專業實踐證書(人工智能)", Target("Certificate", "professional", "artificial-intelligence")),
    ("專業實踐證書（人工智能）", Target("Certificate", "professional", "artificial-intelligence")),
    ("通識文憑", Target("Diploma", "general", None)),
    ("通識證書（中國茶文化）", Target("Certificate", "general", "chinese-tea-culture")),
    ("證書", Target("Certificate", None, None)),
    ({"level": "Diploma"}, Target("Diploma", None, None)),
    ({"level": "Certificate", "area": "professional", "theme": "artificial-intelligence"},
     Target("Certificate", "professional", "artificial-intelligence")),
    ({"level": "Certificate", "area": None, "theme": "Chinese Tea Culture"},
     Target("Certificate", None, "chinese-tea-culture")),
])
def test_a_target_is_read_from_a_title_in_either_language_or_an_object(text, expected):
    assert parse_target(text, RULES, THEMES) == expected


@pytest.mark.parametrize("text, message", [
    ("Masters", "target: 'Masters' is not an award these rules give"),
    ("Certificate in Fine Arts", "is not an award these rules give"),
    ("Certificate in Professional Practice (Basket Weaving)", "target: unknown theme 'Basket Weaving'"),
    ("", "target: expected an award title"),
    ({"level": "Masters"}, "target.level: 'Masters' is not one of Certificate, Diploma"),
    ({"level": "Certificate in General Studies"}, "target.level"),
    ({"level": "Certificate", "area": "vocational"}, "target.area: 'vocational' is not 'professional' or 'general'"),
    ({"level": "Certificate", "colour": "blue"}, "target.colour: unknown field"),
    ({"area": "general"}, "target.level: is required"),
])
def test_an_unknown_target_is_refused_with_a_clear_message(text, message):
    with pytest.raises(RulesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_target(text, RULES, THEMES)


def test_a_target_that_can_be_met_is_the_award_even_when_a_better_one_exists():
    badges = many(1, 5) + many(6, 5, theme=TEA)  # 60 credits: a Diploma without a target
    report = run(badges, "Certificate in Professional Practice (Artificial Intelligence)")
    award = report["award"]
    assert report["eligible"] is True
    assert (award["level"], award["theme"], award["credits"]) == ("Certificate", "artificial-intelligence", 30)
    assert award["counted"] == ["b001", "b002", "b003", "b004", "b005"]
    assert report["next"] == ["24 more credits at QF level 5 or above for a Certificate in Professional Practice "
                              "(Artificial Intelligence) at QF level 5"]


def test_a_general_studies_target_keeps_below_the_professional_share():
    badges = many(1, 6) + many(7, 2, theme=TEA)  # 36 AI + 12 tea
    report = run(badges, "Certificate in General Studies")
    award = report["award"]
    assert award["title"]["en"] == "Certificate in General Studies"
    ai = sum(row["credits"] for row in report["badges"] if row["counted"] and row["theme"] == AI[0])
    assert ai < 24
    assert award["credits"] == 30


def test_a_general_studies_target_falls_back_to_trimming_when_the_exact_search_is_too_large(monkeypatch):
    monkeypatch.setattr(stacking, "GRID_LIMIT", 1)
    badges = many(1, 6) + many(7, 6, theme=WPS) + many(13, 2, theme=TEA)
    report = run(badges, "Certificate in General Studies")
    assert report["eligible"] is True
    counted = [row for row in report["badges"] if row["counted"]]
    for theme in (AI[0], WPS[0]):
        assert sum(row["credits"] for row in counted if row["theme"] == theme) < 24
    assert report["award"]["title"]["en"] == "Certificate in General Studies"


def test_a_target_and_a_programme_together_are_refused():
    with pytest.raises(RulesError, match="not both"):
        evaluate([], rules=PROGRAMME_RULES, as_of=AS_OF, target=Target("Certificate"), programme="PC-AIB")


# --- the report -----------------------------------------------------------------------------------------------


def test_the_report_has_the_fields_of_the_issue_and_is_json():
    badges = many(1, 4) + [badge(5, 6, TEA, qf=3), badge(6, problem="revoked")]
    report = run(badges)
    assert json.loads(json.dumps(report, ensure_ascii=False)) == report
    assert set(report) == {"eligible", "award", "badges", "next"}
    assert set(report["award"]) == {"level", "title", "area", "theme", "theme_name", "qf_level", "credits", "counted"}
    assert report["award"]["title"] == {"en": "Certificate in Professional Practice (Artificial Intelligence)",
                                        "zh-Hant": "專業實踐證書(人工智能)"}
    assert report["badges"][0] == {
        "id": "b001", "name": "Course 1", "credits": 6, "theme": "artificial-intelligence", "area": "professional",
        "qf_level": 4, "awarded": "2024-01-02", "expires_for_stacking": "2029-01-02", "counted": True, "reason": None}
    assert [row["id"] for row in report["badges"]] == [b.id for b in badges]  # in the order submitted
    assert report["badges"][5]["reason"] == "revoked"


def test_a_refusal_lists_usable_badges_without_a_reason():
    report = run(many(1, 2))
    assert [(row["counted"], row["reason"]) for row in report["badges"]] == [(False, None), (False, None)]


def test_the_same_badges_in_another_order_give_the_same_decision():
    badges = many(1, 4, credits=9) + many(5, 6, theme=TEA) + many(11, 3, theme=HKC, qf=5)
    expected = run(badges)
    shuffled = badges[:]
    random.Random(7).shuffle(shuffled)
    again = run(shuffled)
    assert again["award"] == expected["award"]
    assert again["next"] == expected["next"]
    assert sorted(again["badges"], key=lambda r: r["id"]) == sorted(expected["badges"], key=lambda r: r["id"])


def test_too_many_badges_are_refused():
    with pytest.raises(ValueError, match="at most 200"):
        evaluate(many(1, 201), rules=RULES, as_of=AS_OF)


def test_sixty_badges_make_the_expected_diploma():
    themes = [AI, WPS, DA, TEA, HKC]
    badges = [badge(n, 9 if n % 2 else 6, themes[n % 5], qf=3 + n % 3) for n in range(1, 61)]
    report = run(badges)
    award = report["award"]
    assert award["level"] == "Diploma"
    assert award["area"] == "professional"
    assert award["credits"] == 60
    assert award["qf_level"] == 5  # the highest level any badge has
    counted = [row for row in report["badges"] if row["counted"]]
    assert sum(row["credits"] for row in counted) == 60
    assert sum(row["credits"] for row in counted if row["theme"] == award["theme"]) >= 45
    assert sum(row["credits"] for row in counted if row["qf_level"] >= 5) >= 45
    # Three professional themes qualify equally; the one whose set uses the oldest badges is named.
    assert award["theme"] == "workplace-psychology"
    assert award["counted"] == ["b001", "b002", "b005", "b006", "b011", "b026", "b041", "b056"]
    assert all(row["reason"] == "not needed for this award" for row in report["badges"] if not row["counted"])


def test_two_hundred_badges_are_evaluated():
    themes = [AI, WPS, DA, TEA, HKC]
    badges = [badge(n, [6, 9, 7.5][n % 3], themes[n % 5], qf=2 + n % 5) for n in range(1, 201)]
    award = run(badges)["award"]
    # Each theme has one QF level here (QF 6 only in a general theme): QF 6 comes before fewer credits,
    # so the Diploma takes 45 credits of a professional theme and 45 at QF 6.
    assert (award["level"], award["area"], award["qf_level"], award["credits"]) == ("Diploma", "professional", 6, 90)
    assert len(award["counted"]) == 12


# --- against a brute-force reading of the rules -----------------------------------------------------------------


def _reference(badges: list[Badge], target: Target | None) -> tuple | None:
    """Every subset of the usable badges, ranked by rule 9 literally; only for a few badges."""
    order = sorted((b for b in badges if b.awarded <= AS_OF), key=lambda b: (b.awarded, b.id))
    best = None
    levels = [RULES.level(target.level)] if target else list(RULES.levels)
    for rank, level in enumerate(levels):
        for mask in range(1, 1 << len(order)):
            chosen = [b for i, b in enumerate(order) if mask >> i & 1]
            total = sum(b.credits for b in chosen)
            if total < level.credits:
                continue
            at = [sum(b.credits for b in chosen if (b.qf_level or 0) >= lv) for lv in range(8)]
            qf = max((lv for lv in range(1, 8) if at[lv] >= level.focus_credits), default=None)
            if qf is None:
                continue
            professional, themes = {}, {}
            for b in chosen:
                if b.theme:
                    themes[b.theme] = themes.get(b.theme, 0) + b.credits
                    if b.area == "professional":
                        professional[b.theme] = professional.get(b.theme, 0) + b.credits
            reached = [t for t, c in professional.items() if c >= level.focus_credits]
            area = "professional" if reached else "general"
            if not reached:
                reached = [t for t, c in themes.items() if c >= level.focus_credits]
            if target and (target.area not in (None, area) or (target.theme and target.theme not in reached)):
                continue
            key = (rank, area == "professional", bool(reached), qf, -total,
                   tuple(mask >> i & 1 for i in range(len(order))))
            if best is None or key > best[0]:
                best = (key, (level.name, area, bool(reached), qf, total, sorted(b.id for b in chosen)), reached)
    return best


def _reference_award(badges: list[Badge], target: Target | None) -> None:
    """The engine's award agrees with the brute force on everything the brute force decides."""
    award = evaluate(badges, rules=RULES, as_of=AS_OF, target=target).to_json()["award"]
    expected = _reference(badges, target)
    if expected is None:
        assert award is None
        return
    got = (award["level"], award["area"], award["theme"] is not None, award["qf_level"], award["credits"],
           sorted(award["counted"]))
    assert got == expected[1]
    assert award["theme"] is None or award["theme"] in expected[2]
    if target and target.theme:
        assert award["theme"] == target.theme


@pytest.mark.parametrize("seed", range(60))
def test_the_search_agrees_with_a_brute_force_over_every_subset(seed):
    rnd = random.Random(seed)
    themes = [AI, WPS, TEA, HKC, None]
    days = [date(2022, 1, 1) + timedelta(days=30 * k) for k in range(6)]
    badges = [badge(n, rnd.choice([3, 6, 6, 9, 9, 4.5]), rnd.choice(themes), rnd.choice([2, 3, 4, 5, 5, None]),
                    awarded=rnd.choice(days)) for n in range(1, rnd.randint(5, 11))]
    targets = [None, Target("Certificate"), Target("Diploma"), Target("Certificate", "general"),
               Target("Certificate", "professional"), Target("Certificate", "professional", AI[0]),
               Target("Certificate", None, TEA[0]), Target("Diploma", "general", None)]
    for target in targets:
        _reference_award(badges, target)


def test_every_subset_brute_force_also_holds_for_small_general_targets_with_several_professional_themes():
    for seed in range(20):
        rnd = random.Random(1000 + seed)
        badges = [badge(n, rnd.choice([6, 9]), rnd.choice([AI, WPS, DA, TEA]), rnd.choice([3, 4, 5]))
                  for n in range(1, 11)]
        for target in (Target("Certificate", "general"), Target("Certificate", "general", TEA[0])):
            _reference_award(badges, target)


def test_the_reference_itself_sees_the_simple_cases():
    assert _reference(many(1, 5), None)[1] == ("Certificate", "professional", True, 4, 30,
                                               [f"b{n:03d}" for n in range(1, 6)])
    assert _reference(many(1, 4), None) is None
