"""`--help` of every `intake` and `intake-keys` command, run as a user types it (the venv's console
scripts): Russian with `--lang ru` and with LANG=ru_RU.UTF-8, no English description left; English
without a language, exactly as the pages in tests/cli_help/ (today's English)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PAGES = Path(__file__).resolve().parent / "cli_help"
# A fixed width: click and argparse wrap help to the terminal's, which COLUMNS gives them off a terminal.
ENGLISH_ENV = {"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": "C.UTF-8", "COLUMNS": "80"}
RUSSIAN_ENV = {**ENGLISH_ENV, "LANG": "ru_RU.UTF-8"}
# Names Russian help keeps as they are: programs, protocols, and the values an option takes.
NAMES = {"intake", "gunicorn", "SQLCipher", "SQLite", "loopback", "systemd", "torrc", "stderr", "launch", "system",
         "offline", "none", "moderate", "bubblewrap", "Debian", "sudo", "install"}


def run(program: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(BIN / program), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def intake_commands(*group: str) -> list[tuple[str, ...]]:
    """Every command and subcommand, as `intake --help` lists them."""
    page = run("intake", *group, "--help", env=ENGLISH_ENV)
    listed = page.partition("\nCommands:\n")[2]
    found = []
    for name in re.findall(r"^  (\S+)", listed, re.MULTILINE):
        found.append((*group, name))
        if "\nCommands:\n" in run("intake", *group, name, "--help", env=ENGLISH_ENV):
            found += intake_commands(*group, name)
    return found


def keys_commands() -> list[tuple[str, ...]]:
    page = run("intake-keys", "--help", env=ENGLISH_ENV)
    return [(name,) for name in re.findall(r"^    (\S+)", page.partition("\n  COMMAND\n")[2], re.MULTILINE)]


INTAKE = [("intake", ())] + [("intake", command) for command in intake_commands()]
KEYS = [("intake-keys", ())] + [("intake-keys", command) for command in keys_commands()]
EVERY = INTAKE + KEYS


def label(case: tuple[str, tuple[str, ...]]) -> str:
    program, command = case
    return "-".join((program, *command))


def english_phrases(page: str) -> set[str]:
    """The description text of an English help page: the runs of three or more English words in it
    (usage lines and option names left out)."""
    text = re.sub(r"^(usage|Usage):.*(\n {8,}.*)*", "", page, flags=re.MULTILINE)
    return {phrase.strip() for phrase in re.findall(r"(?:\b[a-z][a-z']+\b[,;:()]* ){2,}\b[a-z][a-z']+\b", text)}


def words_left_in_english(page: str, commands: set[str]) -> list[str]:
    """Latin words of four letters or more, outside option names, metavars and environment variables,
    paths and file names, commands and the NAMES above."""
    page = re.sub(r"-\n\s*", "-", page)  # a word the wrapping broke at its hyphen
    text = re.sub(r"\S*[/`.=$<>]\S*|--?[\w-]+|\b\w+(?:-\w+)+\b|\[[\w|]+\]|\{[\w,]+\}|\b[A-Z][A-Z0-9_]+\b", " ", page)
    return [word for word in re.findall(r"\b[A-Za-z]{4,}\b", text) if word not in NAMES | commands]


@pytest.mark.parametrize("case", EVERY, ids=label)
def test_help_is_russian_with_lang_and_with_LANG(case):
    program, command = case
    english = run(program, *command, "--help", env=ENGLISH_ENV)
    names = {name for _program, listed in EVERY for name in listed}
    with_lang = run(program, "--lang", "ru", *command, "--help", env=ENGLISH_ENV)
    with_env = run(program, *command, "--help", env=RUSSIAN_ENV)
    assert with_env == with_lang
    assert re.search(r"[а-яА-Я]{4,}", with_lang)
    assert [phrase for phrase in english_phrases(english) if phrase in with_lang] == [], with_lang
    assert words_left_in_english(with_lang, names) == [], with_lang


def test_the_phrase_check_sees_an_untranslated_help():
    """The check above is not vacuous: English help is full of English phrases and words."""
    english = run("intake", "journalist", "add", "--help", env=ENGLISH_ENV)
    assert "do not ask to confirm the fingerprint" in english_phrases(english)
    assert "Register" in words_left_in_english(english, set())


def test_lang_given_after_help_still_counts():
    assert run("intake", "--help", "--lang", "ru", env=ENGLISH_ENV) == run("intake", "--lang", "ru", "--help", env=ENGLISH_ENV)
    assert run("intake-keys", "decrypt", "--help", "--lang", "ru", env=ENGLISH_ENV) == \
        run("intake-keys", "--lang", "ru", "decrypt", "--help", env=ENGLISH_ENV)


@pytest.mark.parametrize("case", [("intake", ()), ("intake", ("journalist", "add")), ("intake-keys", ("decrypt",))], ids=label)
def test_lang_en_wins_over_a_russian_LANG(case):
    program, command = case
    assert run(program, "--lang", "en", *command, "--help", env=RUSSIAN_ENV) == run(program, *command, "--help", env=ENGLISH_ENV)


@pytest.mark.parametrize("case", EVERY, ids=label)
def test_english_help_is_todays(case):
    """tests/cli_help/ holds each page as it read before the help texts were marked for translation;
    after changing a help text on purpose, change its page there too."""
    program, command = case
    page = run(program, *command, "--help", env=ENGLISH_ENV).replace(str(REPO), "{repo}")
    assert page == (PAGES / f"{label(case)}.txt").read_text(encoding="utf-8")


def test_every_page_has_a_command():
    assert sorted(path.stem for path in PAGES.glob("*.txt")) == sorted(label(case) for case in EVERY)


def test_version_line_is_translated():
    assert "  --version       Показать версию и выйти.\n" in run("intake", "--lang", "ru", "--help", env=ENGLISH_ENV)
    assert "  --version       показать версию и выйти\n" in run("intake-keys", "--lang", "ru", "--help", env=ENGLISH_ENV)
    assert "  --version       Show the version and exit.\n" in run("intake", "--help", env=ENGLISH_ENV)
