"""Codenames: what a source remembers, and what the server derives from it.

A codename is 7+ words from the EFF large wordlist (12.9 bits a word, so 7 words
give 90.5 bits). One Argon2id derivation turns it into a master secret; BLAKE2b
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

from diceware.wordlist import WordList, get_wordlist_path
from nacl import pwhash
from nacl.public import PrivateKey

MIN_WORDS = 7
MAX_WORDS = 24  # bounds the work a hostile login form can ask for
SALT_BYTES = pwhash.argon2id.SALTBYTES  # 16
_MASTER_BYTES = 32

T = TypeVar("T")


class InvalidCodenameError(ValueError):
    """The text is not a codename: too few words, or words not on the list."""


class KdfBusyError(Exception):
    """Too many codename derivations are running or waiting: try again shortly."""


def _load_eff_wordlist() -> tuple[str, ...]:
    path = get_wordlist_path("en_eff")
    if path is None:
        raise RuntimeError("the diceware package's EFF wordlist (en_eff) is missing")
    words = tuple(WordList(path))
    if len(words) != 7776 or len(set(words)) != 7776:
        raise RuntimeError("the diceware package's EFF wordlist is not the 7,776-word list")
    return words


EFF_WORDS = _load_eff_wordlist()
_EFF_SET = frozenset(EFF_WORDS)


def generate_codename(words: int = MIN_WORDS) -> str:
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise ValueError(f"a codename has {MIN_WORDS} to {MAX_WORDS} words")
    return " ".join(secrets.choice(EFF_WORDS) for _ in range(words))


def normalize_codename(text: str) -> str:
    """The canonical form of a typed codename: lower case, single spaces."""
    words = text.lower().split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not all(word in _EFF_SET for word in words):
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
