"""Build ru.txt, the Russian codename word list, from free data (see README.md).

    .venv/bin/pip install wordfreq==3.1.1 pymorphy3==2.0.6 pymorphy3-dicts-ru==2.4.417150.4580142
    .venv/bin/python -m intake.wordlists.build_ru [--check]

Candidates come in wordfreq's Russian frequency order; the OpenCorpora
dictionary (through pymorphy3) says which are common nouns and adjectives in
their dictionary form. The rules, applied in that order, more frequent words
first, are listed in README.md and checked again by tests/test_wordlists.py.
`--check` rebuilds in memory and fails if ru.txt differs.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from diceware.wordlist import WordList, get_wordlist_path

from intake.wordlists.layout import PREFIX_LETTERS, as_typed_on_russian_layout, fold, prefix_key

SIZE = 4096
CANDIDATES = 200_000  # wordfreq's most frequent Russian words looked at
HERE = Path(__file__).resolve().parent
RUSSIAN_FILE = HERE / "ru.txt"  # vocabulary.py loads it; importing that here would need the file to exist
DENY_FILE = HERE / "deny-ru.txt"
# A real common noun or adjective is used in its other forms too ("кота", "коту"), a
# foreign word written in Cyrillic ("гуд", "роуд", "стоун") hardly ever: the other
# forms together must be at least this frequent relative to the dictionary form.
MIN_INFLECTED_RATIO = 1.0
SPELLING = re.compile(r"[а-яё]{3,9}")
# OpenCorpora grammemes that disqualify a word: names, places, organisations, brands,
# abbreviations, informal, slang, archaic, misspelt or distorted words, pronoun- and
# numeral-like adjectives, indeclinable words, diminutive or hypocoristic forms.
EXCLUDED_GRAMMEMES = frozenset(
    {"Name", "Surn", "Patr", "Geox", "Orgn", "Trad", "Abbr", "Infr", "Slng", "Arch", "Erro", "Dist",
     "Apro", "Anum", "Fixd", "Subx", "Dmns", "Hypo", "Init"}
)


def load_deny_list(path: Path = DENY_FILE) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact words, prefixes) of the deny list."""
    exact, prefixes = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = fold(line.split("#", 1)[0].strip())
        if entry.endswith("*"):
            prefixes.append(entry[:-1])
        elif entry:
            exact.add(entry)
    return frozenset(exact), tuple(prefixes)


def is_denied(word: str, deny: tuple[frozenset[str], tuple[str, ...]]) -> bool:
    exact, prefixes = deny
    folded = fold(word)
    return folded in exact or folded.startswith(prefixes)


def english_twin_keys() -> frozenset[str]:
    """The prefix keys an English word gives when typed on the Russian layout."""
    return frozenset(prefix_key(as_typed_on_russian_layout(word)) for word in WordList(get_wordlist_path("en_eff")))


def dictionary_reading(analyzer, word: str):
    """The word's likeliest reading (pymorphy3 Parse; its .word has ё restored) if that is a
    common noun in the nominative singular or a full adjective in the masculine
    nominative singular, in its dictionary form, and no reading of it is excluded;
    otherwise None."""
    if not analyzer.word_is_known(word):
        return None
    parses = analyzer.parse(word)
    if any(EXCLUDED_GRAMMEMES & other.tag.grammemes for other in parses):
        return None  # also a name, a place, a brand...: "вика", "кларк", "хонда"
    parse = parses[0]
    tag = parse.tag
    if fold(parse.normal_form) != fold(word):
        return None
    noun = tag.POS == "NOUN" and {"nomn", "sing"} <= tag.grammemes
    adjective = tag.POS == "ADJF" and {"nomn", "sing", "masc"} <= tag.grammemes
    return parse if noun or adjective else None


def is_inflected_in_use(parse, frequency) -> bool:
    """Whether the word's other forms are used at least MIN_INFLECTED_RATIO times as often as it."""
    own = frequency(parse.word)
    others = sum(frequency(form.word) for form in parse.lexeme if fold(form.word) != fold(parse.word))
    return own > 0 and others >= MIN_INFLECTED_RATIO * own


def build() -> list[str]:
    import pymorphy3
    from wordfreq import top_n_list, word_frequency

    analyzer = pymorphy3.MorphAnalyzer()
    deny = load_deny_list()
    twins = english_twin_keys()
    chosen: list[str] = []
    taken: set[str] = set()  # prefix keys (a 3-letter word's key is the whole word)
    for candidate in top_n_list("ru", CANDIDATES):
        if len(chosen) == SIZE:
            break
        if not SPELLING.fullmatch(candidate):
            continue
        reading = dictionary_reading(analyzer, candidate)
        if reading is None or not is_inflected_in_use(reading, lambda form: word_frequency(form, "ru")):
            continue
        word = reading.word
        if not SPELLING.fullmatch(word) or is_denied(word, deny):
            continue
        key = prefix_key(word)
        if key in taken or key in twins:
            continue
        taken.add(key)
        chosen.append(word)
    if len(chosen) != SIZE:
        raise SystemExit(f"only {len(chosen)} words pass the rules; wanted {SIZE}")
    return sorted(chosen, key=lambda word: (fold(word), word))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if ru.txt differs from a fresh build")
    args = parser.parse_args()
    data = "".join(word + "\n" for word in build()).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        if RUSSIAN_FILE.read_bytes() != data:
            print(f"{RUSSIAN_FILE} differs from a fresh build", file=sys.stderr)
            return 1
        print(f"{RUSSIAN_FILE} matches a fresh build (sha256 {digest})")
        return 0
    RUSSIAN_FILE.write_bytes(data)
    print(f"wrote {RUSSIAN_FILE}: {SIZE} words, sha256 {digest}")
    print(f"{PREFIX_LETTERS}-letter prefixes are unique; set RUSSIAN_SHA256 in intake/wordlists/vocabulary.py to the digest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
