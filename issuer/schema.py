"""Validate a credential against our own OB 3.0 JSON Schema.

The schema (`schemas/ob-v3p0-achievementcredential.schema.json`) is ours, written from the OB 3.0 data
model, not 1EdTech's file. It accepts VCDM 2.0 credentials (`validFrom`) and the VCDM 1.1 ones
(`issuanceDate`) that verifiers must still handle. Format checking is switched on and
`date-time` is guaranteed to be checked: without `rfc3339-validator` jsonschema would silently skip it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CREDENTIAL_SCHEMA = PROJECT_ROOT / "schemas" / "ob-v3p0-achievementcredential.schema.json"

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def validate_credential(doc: Any) -> list[str]:
    """Every schema violation as '<JSON path>: <message>'; an empty list means the document conforms.

    A conforming document is recognised by the compiled check (`fast_validator`); jsonschema itself runs
    only on one that may not conform, and it alone decides and says what is wrong."""
    fast = fast_validator()
    if fast is not None and fast(doc):
        return []
    errors = sorted(validator().iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return list(dict.fromkeys(_describe(error) for error in errors))


def is_valid_credential(doc: Any) -> bool:
    fast = fast_validator()
    return (fast is not None and fast(doc)) or validator().is_valid(doc)


@cache
def validator() -> Draft202012Validator:
    """The compiled validator, built once per process (schema parsing dominates a single check)."""
    schema = json.loads(CREDENTIAL_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=format_checker())


@cache
def fast_validator() -> Callable[[Any], bool] | None:
    """jsonschema-rs (Rust, Draft 2020-12) compiled once: it answers "conforms" about 20 times faster than
    jsonschema's general machinery, which spent 4 ms on a badge (issue #7). Its `format` checks are
    jsonschema's own checker, called back, so both libraries judge formats alike. Only its True is trusted;
    False means "ask jsonschema", which decides and explains. tests/test_perf_caches.py compares the two
    over issued badges and thousands of mutations of them. None when jsonschema-rs cannot take the schema."""
    import jsonschema_rs

    schema = json.loads(CREDENTIAL_SCHEMA.read_text(encoding="utf-8"))
    checker = format_checker()
    formats = {name: (lambda value, name=name: checker.conforms(value, name)) for name in _formats_in(schema)}
    try:
        return jsonschema_rs.validator_for(schema, formats=formats, validate_formats=True).is_valid
    except (ValueError, jsonschema_rs.ValidationError):
        return None


def _formats_in(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["format"]} if isinstance(schema.get("format"), str) else set()
        return found.union(*(_formats_in(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_formats_in(value) for value in schema))
    return set()


def format_checker() -> FormatChecker:
    """jsonschema's checker, with our own `date-time` / `date` checks if the optional packages are missing."""
    checker = FormatChecker()
    if "date-time" not in checker.checkers:
        checker.checks("date-time", raises=ValueError)(_check_date_time)
    if "date" not in checker.checkers:
        checker.checks("date", raises=ValueError)(_check_date)
    return checker


def _check_date_time(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def _check_date(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    date.fromisoformat(value)
    return True


def json_path(parts: Iterable[Any]) -> str:
    """'$.credentialSubject.identifier[0].salt' style; keys that are not identifiers are quoted."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part))}]"
    return path


_LEAF_VALIDATORS = ("type", "const", "enum", "pattern")


def _describe(error: ValidationError) -> str:
    error = _most_specific(error)
    return f"{json_path(error.absolute_path)}: {_message(error)}"


def _most_specific(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, follow the branch that got furthest into the document, not jsonschema's summary."""
    while error.context and error.validator in ("anyOf", "oneOf"):
        if all(sub.validator == "required" for sub in error.context):
            break
        best = max(
            error.context,
            key=lambda e: (len(e.absolute_path), e.validator not in _LEAF_VALIDATORS),
        )
        if len(best.absolute_path) == len(error.absolute_path) and best.validator in _LEAF_VALIDATORS:
            break
        error = best
    return error


def _message(error: ValidationError) -> str:
    """jsonschema's message, reworded where it would only quote the schema back at the reader."""
    validator, value, instance = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    if validator == "not" and value == {}:
        reason = schema.get("description")
        return f"not allowed here ({reason})" if reason else "not allowed here"
    if validator in ("format", "pattern") and schema.get("format") == "date-time":
        return f"{instance!r} is not an RFC 3339 date-time with a time zone, e.g. 2025-01-31T09:00:00Z"
    if validator in ("anyOf", "oneOf") and error.context:
        missing = [
            name for sub in error.context if sub.validator == "required" for name in sub.validator_value
        ]
        if len(missing) == len(error.context):
            return "needs at least one of " + ", ".join(repr(name) for name in dict.fromkeys(missing))
        consts = [sub.validator_value for sub in error.context if sub.validator == "const"]
        if consts:
            return f"{instance!r} must be {consts[0]!r} or an array containing it"
        has_enum = any(sub.validator == "enum" for sub in error.context)
        has_extension = any(
            sub.validator == "pattern" and str(sub.validator_value).startswith("^ext:")
            for sub in error.context
        )
        if has_enum and has_extension:
            return f"{instance!r} is neither a defined value nor an 'ext:' extension value"
    if validator == "contains" and isinstance(value, dict):
        wanted = [value["const"]] if "const" in value else list(value.get("enum", []))
        if wanted:
            return f"{instance!r} must contain " + " or ".join(repr(name) for name in wanted)
    return error.message
