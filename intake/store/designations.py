"""Human-friendly names for sources ("adjective noun"), for journalists to refer to them.

Random, never derived from anything the source typed; uniqueness is enforced by
the database (UNIQUE constraint), the caller retries on a collision.
"""

from __future__ import annotations

import secrets

from diceware.wordlist import WordList, get_wordlist_path


def _words(name: str) -> tuple[str, ...]:
    path = get_wordlist_path(name)
    if path is None:
        raise RuntimeError(f"the diceware package's wordlist {name} is missing")
    return tuple(WordList(path))


ADJECTIVES = _words("en_adjectives")
NOUNS = _words("en_nouns")


def random_designation() -> str:
    return f"{secrets.choice(ADJECTIVES)} {secrets.choice(NOUNS)}"
