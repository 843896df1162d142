"""The codename word lists: the Russian list keeps every selection rule of
intake/wordlists/README.md, and every word of both lists is found again however
a source types it (case, ё, keyboard layout, four-letter prefix)."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import subprocess
import sys

import pytest

from intake.wordlists.build_ru import DENY_FILE, is_denied, load_deny_list
from intake.wordlists.layout import as_typed_on_latin_layout, as_typed_on_russian_layout, fold, prefix_key
from intake.wordlists.vocabulary import ENGLISH, RUSSIAN, RUSSIAN_FILE, RUSSIAN_SHA256, resolve_word


def test_russian_list_has_4096_words_and_eight_of_them_pass_90_bits():
    assert len(RUSSIAN.words) == len(set(RUSSIAN.words)) == 4096
    assert RUSSIAN.codename_words == 8 and 8 * math.log2(4096) == 96 >= 90
    assert 7 * math.log2(len(ENGLISH.words)) >= 90 and ENGLISH.codename_words == 7


def test_russian_list_file_is_the_pinned_one():
    assert hashlib.sha256(RUSSIAN_FILE.read_bytes()).hexdigest() == RUSSIAN_SHA256


def test_russian_words_are_3_to_9_cyrillic_letters():
    assert all(re.fullmatch(r"[а-яё]{3,9}", word) for word in RUSSIAN.words)


def test_no_two_russian_words_share_their_first_four_letters_even_with_yo_folded():
    keys = [prefix_key(word) for word in RUSSIAN.words]
    assert len(set(keys)) == len(keys)
    assert len({fold(word) for word in RUSSIAN.words}) == len(RUSSIAN.words)


def test_no_russian_word_is_on_the_deny_list():
    deny = load_deny_list(DENY_FILE)
    assert len(deny[0]) + len(deny[1]) > 300
    assert [word for word in RUSSIAN.words if is_denied(word, deny)] == []
    assert "информатор" not in RUSSIAN.words and "стукач" not in RUSSIAN.words


def test_no_word_of_one_list_is_a_word_of_the_other_typed_on_the_wrong_layout():
    russian_keys = {prefix_key(word) for word in RUSSIAN.words}
    english = set(ENGLISH.words)
    assert [w for w in ENGLISH.words if prefix_key(as_typed_on_russian_layout(w)) in russian_keys] == []
    assert [w for w in RUSSIAN.words if as_typed_on_latin_layout(w) in english] == []
    for word in RUSSIAN.words:  # nor any prefix of it that a source might stop at
        twin = as_typed_on_latin_layout(word)
        assert not any(twin[:n] in english for n in range(4, len(twin) + 1)), word


@pytest.mark.parametrize("vocabulary", [ENGLISH, RUSSIAN], ids=["en", "ru"])
def test_every_word_is_found_again_however_it_is_typed(vocabulary):
    for word in vocabulary.words:
        typed = {word, word.upper(), word.capitalize(), word.replace("ё", "е")}
        if vocabulary is RUSSIAN:
            on_latin = as_typed_on_latin_layout(word)
            typed |= {on_latin, on_latin.upper(), word[:4], on_latin[:4]}
            if len(word) > 3:  # a longer word is found from its first four letters, whatever follows
                typed.add(word + "ми")
        else:
            typed |= {as_typed_on_russian_layout(word), as_typed_on_russian_layout(word.upper())}
        for text in typed:
            assert resolve_word(text) == word, (text, word)


@pytest.mark.parametrize("typed", ["кош", "кот!", "ёжи", "abacusx", "rjiz", "", "ZZZZ", "x"])
def test_words_on_neither_list_are_not_found(typed):
    assert resolve_word(typed) is None


def test_shipped_list_is_what_the_build_script_makes():
    if importlib.util.find_spec("wordfreq") is None or importlib.util.find_spec("pymorphy3") is None:
        pytest.fail("install the word list's build tools (the test extras) to check ru.txt against a fresh build")
    result = subprocess.run([sys.executable, "-m", "intake.wordlists.build_ru", "--check"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
