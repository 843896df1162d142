"""Errors raised below the interfaces keep their template, so that the reader's language is chosen
where they are shown (intake.told)."""

from __future__ import annotations

import ast
from pathlib import Path

from intake.store.errors import StoreError
from intake.told import Told, in_language, told

ROOT = Path(__file__).resolve().parents[1]
RUSSIAN = {
    "{path} ({what}) does not exist": "{path} ({what}) не существует",
    "the database key": "ключ базы данных",
    "the reply bundle was refused: {reason}. Nothing was imported.": "пакет ответов отклонён: {reason}. Ничего не импортировано.",
}


def test_told_words_read_as_english_and_keep_their_template():
    words = told("{path} ({what}) does not exist", path="/srv/db.key", what=told("the database key"))
    assert isinstance(words, Told) and words == "/srv/db.key (the database key) does not exist"
    assert str(StoreError(words)) == "/srv/db.key (the database key) does not exist"
    assert words.template == "{path} ({what}) does not exist"


def test_a_told_error_is_translated_with_its_told_fields_and_errors():
    error = StoreError(told("{path} ({what}) does not exist", path="/srv/db.key", what=told("the database key")))
    assert in_language(error, RUSSIAN.get) == "/srv/db.key (ключ базы данных) не существует"
    wrapping = told("the reply bundle was refused: {reason}. Nothing was imported.", reason=error)
    assert in_language(wrapping, RUSSIAN.get) == "пакет ответов отклонён: /srv/db.key (ключ базы данных) не существует. Ничего не импортировано."


def test_words_that_were_not_told_are_shown_as_they_are():
    assert in_language(StoreError("plain words"), RUSSIAN.get) == "plain words"
    assert in_language(OSError(2, "No such file or directory"), RUSSIAN.get) == "[Errno 2] No such file or directory"
    assert in_language(told("the reply bundle was refused: {reason}. Nothing was imported.", reason=ValueError("x")),
                       RUSSIAN.get) == "пакет ответов отклонён: x. Ничего не импортировано."


# The modules whose errors reach a person through the `intake` command or the journalist interface,
# and the exceptions that only ever mean a bug (their words are for a developer).
TOLD_MODULES = sorted((ROOT / "intake" / "store").glob("*.py")) + [
    ROOT / "intake" / f"{name}.py"
    for name in ("config", "retention", "exchange", "enrolment", "listeners", "server_identity", "onion_keys", "server",
                 "tor", "tor_control", "system_torrc")
] + [
    ROOT / "keys" / f"{name}.py"
    for name in ("bundle", "bundle_reader", "envelope", "envelope_reader", "identity", "pins", "recovery", "reply_bundle", "server_key", "source_record",
                 "unpack", "strict_json", "sodium_buffers", "cleaning/streams", "cleaning/hevc_header")
]
BUGS_ONLY = {"ValueError", "RuntimeError", "TypeError", "AssertionError", "KeyError"}


def test_errors_of_the_layers_below_are_raised_with_told_words():
    """A message written as a plain or f-string in these modules could not be translated."""
    untold = []
    for path in TOLD_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            name = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", ""))
            if name not in BUGS_ONLY and any(isinstance(arg, (ast.Constant, ast.JoinedStr)) for arg in node.exc.args):
                untold.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert untold == []


def test_every_module_that_tells_is_extracted_for_the_catalogue():
    configuration = (ROOT / "babel-cli.cfg").read_text()
    telling = [path for path in sorted((ROOT / "intake").rglob("*.py")) if "told(" in path.read_text() and path.name != "told.py"]
    for path in telling:
        relative = path.relative_to(ROOT).as_posix()
        section = f"[python: {relative}]\nkeywords = told" if path.parent.name != "store" else "[python: intake/store/*.py]\nkeywords = told"
        assert section in configuration, relative
