"""docs/ASSURANCE.md cannot rot: every test it names exists, in the file it names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSURANCE = REPO / "docs" / "ASSURANCE.md"
# tests/test_x.py, optionally ::test_name, optionally [a parametrised case]
REFERENCE = re.compile(r"\b(tests/[\w/]+\.py)(?:::(\w+)(\[[^\]`]*\])?)?")


def names_collected_from(path: Path) -> set[str]:
    """The test functions pytest collects from a file: `test_*` at module level and in `Test*` classes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test_")}
    return names


def references(text: str) -> list[tuple[str, str | None]]:
    return [(match[1], match[2]) for match in REFERENCE.finditer(text)]


def test_every_test_the_assurance_document_names_exists():
    found = references(ASSURANCE.read_text())
    assert len(found) >= 100, "docs/ASSURANCE.md names suspiciously few tests"
    missing = []
    for file, name in found:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif name is not None and name not in names_collected_from(path):
            missing.append(f"{file}::{name}")
    assert missing == [], f"docs/ASSURANCE.md names tests that do not exist: {sorted(set(missing))}"


def test_the_check_sees_a_name_that_does_not_exist(tmp_path: Path):
    """The check itself works: a renamed test, a missing file and a real test are told apart."""
    sample = tmp_path / "tests" / "test_sample.py"
    sample.parent.mkdir()
    sample.write_text("def test_real():\n    pass\n\n\ndef helper():\n    pass\n")
    text = ("`tests/test_sample.py::test_real` `tests/test_sample.py::test_real[case-1]` "
            "`tests/test_sample.py::helper` `tests/test_gone.py::test_x`")
    refs = references(text)
    assert refs == [("tests/test_sample.py", "test_real"), ("tests/test_sample.py", "test_real"),
                    ("tests/test_sample.py", "helper"), ("tests/test_gone.py", "test_x")]
    assert names_collected_from(sample) == {"test_real"}


def test_the_assurance_document_counts_no_tests_in_a_file():
    """A file's tests are named as "every test": a count ("all 16 tests") goes stale unseen."""
    assert not re.search(r"\((?:all \d+|both) tests\)", ASSURANCE.read_text())
