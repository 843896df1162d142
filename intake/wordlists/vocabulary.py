"""The two codename word lists, loaded and checked once per process, and how a typed word is resolved."""


from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from diceware.wordlist import WordList, get_wordlist_path

from intake.wordlists.layout import as_typed_on_latin_layout, as_typed_on_russian_layout, fold, prefix_key

RUSSIAN_FILE = Path(__file__).resolve().parent / "ru.txt"
RUSSIAN_SHA256 = "2269f5b18d6f1c42fb30b32e6316d5c0a3799ac6e1d401de2f47c5f4f4be832a"
ENTROPY_FLOOR_BITS = 90


@dataclass(frozen=True)
class Vocabulary:
    language: str
    words: tuple[str, ...]
    by_prefix: bool  # True: a word is found from its first PREFIX_LETTERS letters
    _index: dict[str, str] = field(repr=False, compare=False)

    @classmethod
    def of(cls, language: str, words: tuple[str, ...], *, by_prefix: bool) -> Vocabulary:
        keys = [prefix_key(word) if by_prefix else fold(word) for word in words]
        if len(set(keys)) != len(words):
            raise RuntimeError(f"the {language} word list has two words that read the same")
        return cls(language, words, by_prefix, dict(zip(keys, words)))

    @property
    def bits_per_word(self) -> float:
        return math.log2(len(self.words))

    @property
    def codename_words(self) -> int:
        """Words in a new codename: the fewest that reach the entropy floor."""
        return math.ceil(ENTROPY_FLOOR_BITS / self.bits_per_word)

    def find(self, typed: str) -> str | None:
        """The list word `typed` stands for (case, ё and, for a prefix list, any letters after the key ignored)."""
        return self._index.get(prefix_key(typed) if self.by_prefix else fold(typed))


def _load_english() -> Vocabulary:
    path = get_wordlist_path("en_eff")
    if path is None:
        raise RuntimeError("the diceware package's EFF wordlist (en_eff) is missing")
    words = tuple(WordList(path))
    if len(words) != 7776 or len(set(words)) != 7776:
        raise RuntimeError("the diceware package's EFF wordlist is not the 7,776-word list")
    return Vocabulary.of("en", words, by_prefix=False)


def _load_russian() -> Vocabulary:
    data = RUSSIAN_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != RUSSIAN_SHA256:
        raise RuntimeError(f"{RUSSIAN_FILE} has changed: codenames made from it would no longer open their sources")
    return Vocabulary.of("ru", tuple(data.decode("utf-8").split()), by_prefix=True)


ENGLISH = _load_english()
RUSSIAN = _load_russian()
VOCABULARIES = {vocabulary.language: vocabulary for vocabulary in (ENGLISH, RUSSIAN)}


def resolve_word(typed: str) -> str | None:
    """The list word (of either list) that `typed` stands for, as typed or with the keyboard layout mistaken."""
    for candidate in (typed, as_typed_on_russian_layout(typed), as_typed_on_latin_layout(typed)):
        for vocabulary in (ENGLISH, RUSSIAN):
            found = vocabulary.find(candidate)
            if found is not None:
                return found
    return None


def language_of(word: str) -> str:
    """The language of the list a list word belongs to."""
    return "ru" if RUSSIAN.find(word) == word else "en"
