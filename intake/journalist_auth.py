"""Journalist login secrets: passphrase hashes, one-time TOTP codes, throttling rules.

Pure functions and small records; the state they act on (hashes, the last
used TOTP time step, recent failures) lives in the store
(:mod:`intake.store.newsroom`), which is shared by every gunicorn worker. The
two that are times (the step, when a sign-in failed) are stored sealed under the
server's memory key (:mod:`intake.memory_key`): a copy of the disk cannot read
them, and a restart of the server forgets them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.pwhash
import pyotp

from keys.sodium_buffers import argon2id_verify
from keys.wiping import wiping

from intake.codename import EFF_WORDS
from intake.memory_key import open_number, seal_number

if TYPE_CHECKING:
    from intake.store.newsroom import Newsroom

TOTP_ISSUER = "intake"
TOTP_INTERVAL = 30
LOGIN_PASSPHRASE_WORDS = 7  # EFF large list: 7 x 12.9 bits > 90 bits

# Argon2id for login hashes: journalists log in rarely, so this may cost more
# than a source login; tests pass smaller limits.
PASSPHRASE_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE + 1
PASSPHRASE_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


class LoginError(Exception):
    """A login was refused; the message is safe to show to the person logging in."""


class LoginFailedError(LoginError):
    """Wrong name, passphrase or code (deliberately not saying which)."""


class LoginThrottledError(LoginError):
    """Too many recent failures for this account or for the whole service."""


@dataclass(frozen=True)
class ThrottlePolicy:
    """Failed logins allowed within ``window_seconds``, per name tried and in total.

    ``per_account`` applies to every name, whether an account has it or not, so
    the throttle does not tell which names exist. The global limit stops
    guessing spread over many account names; it also locks real journalists out
    during an attack, which is the safer failure for a service whose accounts
    are few. A restart of the server forgets the failures (their times were sealed
    under its memory key).
    """

    per_account: int = 5
    overall: int = 50
    window_seconds: int = 15 * 60

    @property
    def window_minutes(self) -> int:
        return -(-self.window_seconds // 60)

    def recent(self, now: float) -> Callable[[bytes], bool]:
        """Whether a failure's sealed time is inside the window that ends at ``now``
        (one sealed under another run's memory key is not)."""
        since = int(now) - self.window_seconds

        def inside(sealed: bytes) -> bool:
            when = open_number(sealed)
            return when is not None and when >= since

        return inside

    def outdated(self, now: float) -> Callable[[bytes], bool]:
        """Whether a failure's sealed time is before the window that ends at ``now``. One
        sealed under another run's key is left alone: it may be the running server's
        (``intake purge`` runs in a process of its own), and the server's next sign-in
        check drops it if it is not."""
        since = int(now) - self.window_seconds

        def before(sealed: bytes) -> bool:
            when = open_number(sealed)
            return when is not None and when < since

        return before


def sealed_time(when: float) -> bytes:
    """A failure's time as the store keeps it: sealed under the memory key."""
    return seal_number(int(when))


def _last_used_step(sealed: bytes | None) -> int:
    return open_number(sealed) or 0


def generate_login_passphrase() -> str:
    """Words from the EFF large list, the list codenames are made of (checked once at import)."""
    return " ".join(secrets.choice(EFF_WORDS) for _ in range(LOGIN_PASSPHRASE_WORDS))


def hash_passphrase(passphrase: str, *, opslimit: int = PASSPHRASE_OPSLIMIT,
                    memlimit: int = PASSPHRASE_MEMLIMIT) -> bytes:
    """An Argon2id hash string (salt and limits included) for storing."""
    return nacl.pwhash.argon2id.str(passphrase.encode("utf-8"), opslimit=opslimit, memlimit=memlimit)


def passphrase_matches(stored_hash: bytes, passphrase: str) -> bool:
    """The passphrase's bytes are checked from a buffer wiped here; the str the form
    gave (Werkzeug's) cannot be wiped, only freed (intake.memory_wiping)."""
    if not stored_hash.startswith(nacl.pwhash.argon2id.STRPREFIX):
        return False
    password = bytearray(passphrase, "utf-8")
    with wiping(password):
        return argon2id_verify(stored_hash, password)


_decoy_hash: bytes | None = None


def waste_like_a_verification(passphrase: str) -> None:
    """Verify against a throwaway hash, so a wrong account name costs as much
    time as a wrong passphrase (no timing oracle for which names exist)."""
    global _decoy_hash
    if _decoy_hash is None:
        _decoy_hash = hash_passphrase(secrets.token_hex(16))
    passphrase_matches(_decoy_hash, passphrase)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_provisioning_uri(secret: str, account_name: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(
        name=account_name, issuer_name=TOTP_ISSUER)


def matching_totp_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step whose code equals ``code`` (the current one or a neighbour,
    for clock drift), or None. The caller accepts it only if it is later than
    the last step used, which makes every code single-use."""
    code = "".join(code.split())
    if not (code.isdigit() and len(code) == 6):
        return None
    # pyotp takes the secret as a str (as the store returns it): it cannot be wiped, only freed.
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    current = int((time.time() if now is None else now) // TOTP_INTERVAL)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.at(step * TOTP_INTERVAL), code):
            return step
    return None


@dataclass(frozen=True)
class SignedIn:
    journalist_id: int
    name: str


def name_key(name: str, throttle_key: bytes) -> bytes:
    """What the throttle stores for a name tried: a keyed hash, never the name (it may be
    a mistyped passphrase, or someone's guess at who works here)."""
    return hashlib.blake2b(name.encode("utf-8"), key=throttle_key, digest_size=32).digest()


def authenticate(newsroom: Newsroom, name: str, passphrase: str, code: str, *, throttle_key: bytes,
                 policy: ThrottlePolicy = ThrottlePolicy(), now: float | None = None,
                 run: Callable[..., Any] = lambda fn, *args: fn(*args)) -> SignedIn:
    """Check a name, passphrase and TOTP code against the store.

    Every attempt is first recorded as a failure, in the same transaction that
    counts the recent ones (see ``Newsroom.reserve_login_attempt``); over the
    limit for this name, known or not, or for the service as a whole, it is
    refused before any Argon2id work. Only a successful sign-in removes the
    record. A code is used up by a successful sign-in (its time step is
    recorded, sealed; that step and earlier ones are refused afterwards). ``run``
    executes the Argon2id verification (the web app passes a runner that leaves
    a gevent event loop). ``throttle_key`` keys the hash of the name that the
    throttle stores (``Settings.login_throttle_key``).
    """
    now = time.time() if now is None else now
    record = newsroom.login_record(name)
    journalist_id = record.journalist_id if record else None
    reservation = newsroom.reserve_login_attempt(
        journalist_id, name_key(name, throttle_key), sealed_now=sealed_time(now), recent=policy.recent(now),
        per_name=policy.per_account, overall=policy.overall)
    if reservation is None:
        raise LoginThrottledError(
            f"Too many failed sign-ins. Wait {policy.window_minutes} minutes, then try again.")
    if record is None:
        run(waste_like_a_verification, passphrase)
        ok = False
    else:
        ok = bool(run(passphrase_matches, record.login_hash, passphrase))
        step = matching_totp_step(record.totp_secret, code, now=now) if ok else None
        ok = step is not None and newsroom.use_totp_step(record.journalist_id, step, seal=seal_number,
                                                          last_used=_last_used_step)
    if not ok:
        raise LoginFailedError("The name, passphrase or code is wrong (each code works only once).")
    newsroom.login_succeeded(record.journalist_id, reservation)
    return SignedIn(record.journalist_id, record.name)
