"""Fuzz codename normalisation (intake.codename.normalize_codename), which every login runs
on what a source typed before the one Argon2id derivation.

Contract: a canonical codename (words of one list, single spaces, and normalising it
again gives it back, so one codename is one derivation), or InvalidCodenameError.
"""

from __future__ import annotations

import atheris

from common import run

with atheris.instrument_imports():
    from intake.codename import InvalidCodenameError, normalize_codename
    from intake.wordlists.vocabulary import resolve_word


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        canonical = normalize_codename(text)
    except InvalidCodenameError:
        return
    words = canonical.split(" ")
    assert all(word and resolve_word(word) == word for word in words), canonical
    assert normalize_codename(canonical) == canonical


if __name__ == "__main__":
    run(test_one_input)
