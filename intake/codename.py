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
wait at once, in total and per Tor circuit, refuses the rest straight away, and
serves the waiting ones round robin across circuits.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nacl import pwhash
from nacl.public import PrivateKey

from keys.sodium_buffers import argon2id_kdf
from keys.wiping import wiping

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
    # No word twice: a source who sees a word repeated may "correct" it as a typo. Drawing without
    # replacement costs 0.004 bits (English, 7 words) and 0.01 (Russian, 8): both stay above the floor.
    return " ".join(secrets.SystemRandom().sample(vocabulary.words, words))


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


def _purpose_hash(master: bytes | bytearray, purpose: bytes) -> bytes:
    return hashlib.blake2b(master, digest_size=32, person=purpose).digest()


def derive_source_keys(codename: str, salt: bytes, *, opslimit: int, memlimit: int) -> SourceKeys:
    """One Argon2id derivation, then a domain-separated hash per purpose."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the codename salt must be {SALT_BYTES} bytes")
    # The codename's bytes and the master secret stay in buffers wiped here. The str forms
    # (as typed, canonical) cannot be wiped, nor can the derived keys, which hashlib and
    # PyNaCl return as bytes: the allocator settings wipe them when freed (SECURITY.md §2).
    password = bytearray(normalize_codename(codename), "utf-8")
    master = bytearray(_MASTER_BYTES)
    with wiping(password, master):
        argon2id_kdf(master, password, salt, opslimit=opslimit, memlimit=memlimit)
        reply_key = PrivateKey.from_seed(_purpose_hash(master, b"intake:reply-key"))
        return SourceKeys(
            lookup_id=_purpose_hash(master, b"intake:lookup"),
            reply_secret_key=bytes(reply_key),
            reply_public_key=bytes(reply_key.public_key),
        )


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)


_BUCKETS_KEPT = 1024  # beyond this many circuits' buckets, the full ones are dropped


class KdfGate:
    """Admits at most `concurrency` running plus `queue` waiting calls, and at most
    `per_circuit` of them from one Tor circuit; others get KdfBusyError at once, as
    does a call that waited longer than `timeout` seconds.

    Waiting calls are served round robin across circuits, not first come first
    served, so 32 logins from one circuit delay another circuit's login by one
    derivation at most. Calls of unknown circuit (None) share one place in the round.

    A circuit may also start only `circuit_burst` derivations at once and one more
    every `circuit_interval` seconds (a source types a codename at human speed), so a
    flood from one circuit cannot keep the CPUs busy. Its bucket is forgotten once full.

    `runner(fn, *args, **kwargs)` executes the admitted call; under an event-loop
    worker (gevent) pass one that runs it in an OS thread so the loop keeps serving.
    """

    def __init__(self, concurrency: int, queue: int, timeout: float, *, per_circuit: int | None = None,
                 circuit_interval: float = 0.0, circuit_burst: int = 1, runner: Callable[..., Any] = _call):
        per_circuit = concurrency + queue if per_circuit is None else per_circuit
        if concurrency < 1 or queue < 0 or timeout <= 0 or per_circuit < 1:
            raise ValueError("a KdfGate needs concurrency >= 1, queue >= 0, per_circuit >= 1 and a positive timeout")
        self._concurrency = concurrency
        self._capacity = concurrency + queue
        self._per_circuit = per_circuit
        self._timeout = timeout
        self._runner = runner
        self._lock = threading.Lock()  # gevent's under a gevent worker; held only around the counts
        self._running = 0
        self._admitted = 0
        self._per: Counter[Hashable] = Counter()  # admitted calls per circuit (None included)
        self._waiting: dict[Hashable, deque[_Turn]] = {}  # in round-robin order: the next circuit first
        self._interval = circuit_interval
        self._burst = circuit_burst
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # circuit -> (derivations allowed, when counted)

    def run(self, fn: Callable[..., T], *args: Any, circuit: Hashable = None, **kwargs: Any) -> T:
        turn = self._admit(circuit)
        try:
            if turn is not None and not turn.wait(self._timeout):
                raise KdfBusyError("a codename check waited too long")
            try:
                return self._runner(fn, *args, **kwargs)
            finally:
                self._hand_on()
        finally:
            with self._lock:
                self._admitted -= 1
                self._per[circuit] -= 1
                if not self._per[circuit]:
                    del self._per[circuit]

    def _admit(self, circuit: Hashable) -> _Turn | None:
        """Count the call in; None if it may run now, else its place in the queue."""
        with self._lock:
            if self._admitted >= self._capacity:
                raise KdfBusyError("too many codename checks at once")
            if circuit is not None and self._per[circuit] >= self._per_circuit:
                raise KdfBusyError("too many codename checks at once from one circuit")
            if circuit is not None and self._interval > 0 and not self._take_token(circuit):
                raise KdfBusyError("too many codename checks in a row from one circuit")
            self._admitted += 1
            self._per[circuit] += 1
            if self._running < self._concurrency and not self._waiting:
                self._running += 1
                return None
            turn = _Turn(self._lock, circuit, self._waiting)
            self._waiting.setdefault(circuit, deque()).append(turn)
            return turn

    def _take_token(self, circuit: Hashable) -> bool:
        """Under the lock: one derivation from the circuit's bucket, if it has one."""
        now = time.monotonic()
        tokens, then = self._buckets.get(circuit, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - then) / self._interval)
        if tokens < 1:
            self._buckets[circuit] = (tokens, now)
            return False
        self._buckets[circuit] = (tokens - 1, now)
        if len(self._buckets) > _BUCKETS_KEPT:
            # Buckets that have filled up again say nothing more than a missing one.
            full = [key for key, (left, when) in self._buckets.items() if left + (now - when) / self._interval >= self._burst]
            for key in full:
                del self._buckets[key]
        return True

    def _hand_on(self) -> None:
        """A running call ended: its slot goes to the first waiting call of the next circuit."""
        with self._lock:
            while self._waiting:
                circuit = next(iter(self._waiting))
                queue = self._waiting.pop(circuit)
                turn = queue.popleft()
                if queue:
                    self._waiting[circuit] = queue  # to the back of the round
                if turn.grant():
                    return
            self._running -= 1


class _Turn:
    """A waiting call's place in the queue: granted a slot, or given up after the timeout."""

    def __init__(self, lock: threading.Lock, circuit: Hashable, waiting: dict[Hashable, deque[_Turn]]):
        self._lock = lock
        self._circuit = circuit
        self._waiting = waiting
        self._event = threading.Event()
        self._state = "waiting"

    def grant(self) -> bool:
        """Under the gate's lock: True if the waiter takes the slot (it had not given up)."""
        if self._state != "waiting":
            return False
        self._state = "granted"
        self._event.set()
        return True

    def wait(self, timeout: float) -> bool:
        self._event.wait(timeout)
        with self._lock:
            if self._state == "granted":
                return True
            self._state = "gave up"
            queue = self._waiting.get(self._circuit)
            if queue is not None and self in queue:
                queue.remove(self)
                if not queue:
                    del self._waiting[self._circuit]
            return False
