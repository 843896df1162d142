"""The Russian guides keep up with the English ones: the same sections, and every command the
English guide gives (in its code blocks) also in the Russian one, so a reader of either types
the same things. Comments, `--lang ru` and <placeholders> may differ."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = [("journalists.md", "journalists.ru.md"), ("operator.md", "operator.ru.md")]
COMMAND_WORDS = ("intake", "intake-keys", "sudo", "sh", "systemctl", "scripts/", ".venv/", "git", "tor", "cp", "chmod")


def commands(text: str) -> set[str]:
    found = set()
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in block.split("\n"):
            line = re.sub(r"\s+#.*$", "", line.strip())  # a comment after the command
            line = re.sub(r"<[^<>]*>", "<>", line.replace(" --lang ru", ""))
            if line.startswith(COMMAND_WORDS) and not re.match(r"intake(-keys)?: ", line):  # not output
                found.add(" ".join(line.split()))
    return found


def headings(text: str) -> list[int]:
    return [len(marks) for marks in re.findall(r"^(#+) ", re.sub(r"```.*?```", "", text, flags=re.S), re.M)]


@pytest.mark.parametrize(("english", "russian"), GUIDES, ids=[pair[1] for pair in GUIDES])
def test_the_russian_guide_has_every_section_and_command_of_the_english_one(english: str, russian: str):
    english_text, russian_text = (DOCS / english).read_text(), (DOCS / russian).read_text()
    assert headings(russian_text) == headings(english_text)
    assert sorted(commands(english_text) - commands(russian_text)) == []
    assert russian_text.count("информатор") == 0  # docs/glossary.md: a source is «источник»
