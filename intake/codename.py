"""Codenames: what a source remembers, and what the server derives from it.

A codename is words from one of the lists in intake.wordlists, in the language of
the page where it was made: 7 words of the EFF large wordlist (12.9 bits a word,
90.5 bits) or 8 of the Russian list (12 bits a word, 96 bits). A typed codename is
first written in its canonical form (each word as its list spells it, one space
between words, whatever the case, spacing, ё or keyboard layout it was typed
with), so a login costs exactly one Argon2id derivation; English codenames made
before the Russian list existed keep their canonical form, and so their keys.
One Argon2id derivation turns it into a master secret; BLAKE2b
personalised per purpose then gives the lookup id kept in the database and the
seed of the source's X25519 reply key pair. The codename itself is never stored.

Argon2id is deliberately costly, so a flood of logins must not take every CPU
from sources already logged in: `KdfGate` bounds how many derivations run and
wait at once and refuses the rest straight away.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nacl import pwhash
from nacl.public import PrivateKey

from intake.wordlists.vocabulary import ENGLISH, VOCABULARIES, resolve_word

MIN_WORDS = 7  # the fewest a login accepts: an English codename's length
MAX_WORDS = 24  # bounds the work a hostile login form can ask for
SALT_BYTES = pwhash.argon2id.SALTBYTES  # 16
_MASTER_BYTES = 32

T = TypeVar("T")


class InvalidCodenameError(ValueError):
    """The text is not a codename: too few words, or words not on the list."""


class KdfBusyError(Exception):
    """Too many codename derivations are running or waiting: try again shortly."""


EFF_WORDS = ENGLISH.words
CODENAME_LANGUAGES = tuple(VOCABULARIES)


def generate_codename(words: int | None = None, *, language: str = "en") -> str:
    """A new codename from the word list of `language`, of at least the words that reach 90 bits."""
    vocabulary = VOCABULARIES[language]
    fewest = max(MIN_WORDS, vocabulary.codename_words)
    words = fewest if words is None else words
    if not fewest <= words <= MAX_WORDS:
        raise ValueError(f"a codename from the {language} list has {fewest} to {MAX_WORDS} words")
    return " ".join(secrets.choice(vocabulary.words) for _ in range(words))


def normalize_codename(text: str) -> str:
    """The canonical form of a typed codename: each word as its list spells it, single spaces.
    The error never says which words were wrong."""
    typed = text.split()
    if not MIN_WORDS <= len(typed) <= MAX_WORDS:
        raise InvalidCodenameError("this is not a valid codename")
    words = [resolve_word(word) for word in typed]
    if None in words:
        raise InvalidCodenameError("this is not a valid codename")
    return " ".join(words)


@dataclass(frozen=True)
class SourceKeys:
    lookup_id: bytes = field(repr=False)
    reply_secret_key: bytes = field(repr=False)
    reply_public_key: bytes


def _purpose_hash(master: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(master, digest_size=32, person=purpose).digest()


def derive_source_keys(codename: str, salt: bytes, *, opslimit: int, memlimit: int) -> SourceKeys:
    """One Argon2id derivation, then a domain-separated hash per purpose."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the codename salt must be {SALT_BYTES} bytes")
    canonical = normalize_codename(codename)
    master = pwhash.argon2id.kdf(_MASTER_BYTES, canonical.encode(), salt, opslimit=opslimit, memlimit=memlimit)
    reply_key = PrivateKey.from_seed(_purpose_hash(master, b"intake:reply-key"))
    return SourceKeys(
        lookup_id=_purpose_hash(master, b"intake:lookup"),
        reply_secret_key=bytes(reply_key),
        reply_public_key=bytes(reply_key.public_key),
    )


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)


class KdfGate:
    """Admits at most `concurrency` running plus `queue` waiting calls; others get
    KdfBusyError at once, as does a call that waited longer than `timeout` seconds.

    `runner(fn, *args, **kwargs)` executes the admitted call; under an event-loop
    worker (gevent) pass one that runs it in an OS thread so the loop keeps serving.
    """

    def __init__(self, concurrency: int, queue: int, timeout: float, *, runner: Callable[..., Any] = _call):
        if concurrency < 1 or queue < 0 or timeout <= 0:
            raise ValueError("a KdfGate needs concurrency >= 1, queue >= 0 and a positive timeout")
        self._running = threading.Semaphore(concurrency)
        self._admitted = threading.Semaphore(concurrency + queue)
        self._timeout = timeout
        self._runner = runner

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._admitted.acquire(blocking=False):
            raise KdfBusyError("too many codename checks at once")
        try:
            if not self._running.acquire(timeout=self._timeout):
                raise KdfBusyError("a codename check waited too long")
            try:
                return self._runner(fn, *args, **kwargs)
            finally:
                self._running.release()
        finally:
            self._admitted.release()
