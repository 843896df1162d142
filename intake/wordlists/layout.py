"""Keyboard-layout mistakes: the same keys typed on the Latin (US QWERTY) layout
and on the Russian (ЙЦУКЕН) layout.

A source who forgets to switch layout types "rjn" for "кот", or "фифсгы" for
"abacus". Both word lists are built so that such a twin is never a word of the
other list (see README.md), so login can undo the mistake without ambiguity.
"""

from __future__ import annotations

# Key by key, unshifted then shifted: what the Latin layout gives, and what the Russian one gives.
_LATIN_KEYS = "qwertyuiop[]asdfghjkl;'zxcvbnm,.`" + 'QWERTYUIOP{}ASDFGHJKL:"ZXCVBNM<>~'
_RUSSIAN_KEYS = "йцукенгшщзхъфывапролджэячсмитьбюё" + "ЙЦУКЕНГШЩЗХЪФЫВАПРОЛДЖЭЯЧСМИТЬБЮЁ"
assert len(_LATIN_KEYS) == len(_RUSSIAN_KEYS)

_TO_RUSSIAN = str.maketrans(_LATIN_KEYS, _RUSSIAN_KEYS)
# The reverse gives letters only: English list words are lower-case letters and hyphens.
_TO_LATIN = str.maketrans(_RUSSIAN_KEYS, _LATIN_KEYS.lower().translate(str.maketrans("{}:\"<>~", "[];',.`")))


def as_typed_on_russian_layout(text: str) -> str:
    """What the keys of `text` (typed on the Latin layout) give on the Russian layout."""
    return text.translate(_TO_RUSSIAN)


def as_typed_on_latin_layout(text: str) -> str:
    """What the keys of `text` (typed on the Russian layout) give on the Latin layout."""
    return text.translate(_TO_LATIN)


def fold(text: str) -> str:
    """Lower case, with ё written as е (many keyboards and writers drop the dots)."""
    return text.lower().replace("ё", "е")


PREFIX_LETTERS = 4  # a Russian list word is found from this many first letters


def prefix_key(word: str) -> str:
    """What identifies a Russian list word: its first letters, folded (a 3-letter word: all of it)."""
    return fold(word)[:PREFIX_LETTERS]
