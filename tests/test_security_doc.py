"""docs/security.md and docs/hostile-inputs.md name the test behind every defence: each named test must
exist, so that the threat model cannot point at a test that was renamed or removed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["docs/security.md", "docs/hostile-inputs.md", "docs/keys.md"]
# `tests/test_x.py::test_name` (the `tests/` may be left out) starts a reference; a following
# `::test_other` on the same line names another test of the same file; `…::test_other` names a test of one
# of the files the document names.
REFERENCE = re.compile(r"`(?:tests/)?(test_\w+\.py)(?:::(test_\w+))?|`::(test_\w+)|`…::(test_\w+)")
ANY_FILE = "…"


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")}


def _references(text: str) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        current = None
        for match in REFERENCE.finditer(line):
            if match.group(1):
                current = f"tests/{match.group(1)}"
                if match.group(2):
                    found.append((current, match.group(2)))
            elif match.group(3) and current is not None:
                found.append((current, match.group(3)))
            elif match.group(4):
                found.append((ANY_FILE, match.group(4)))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_a_security_document_names_exists(doc):
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing"
    references = _references(path.read_text(encoding="utf-8"))
    assert references or doc == "docs/keys.md", f"{doc} names no test"
    named_files = {file for file, _ in references if file != ANY_FILE}
    missing = []
    for file, name in references:
        if file == ANY_FILE:
            if not any((ROOT / f).is_file() and name in _test_names(ROOT / f) for f in named_files):
                missing.append(f"…::{name}")
            continue
        test_file = ROOT / file
        if not test_file.is_file():
            missing.append(f"{file} (no such file)")
        elif name not in _test_names(test_file):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc} names tests that do not exist: {', '.join(sorted(set(missing)))}"


def test_the_reference_reader_follows_continuations():
    line = "| x | `tests/test_a.py::test_one`, `::test_two`; `test_b.py::test_three[p]`, `…::test_four` |"
    assert _references(line) == [("tests/test_a.py", "test_one"), ("tests/test_a.py", "test_two"),
                                 ("tests/test_b.py", "test_three"), (ANY_FILE, "test_four")]
