"""A key that exists only in the memory of the running server, and numbers sealed under it.

The journalist login keeps two kinds of state that are times: when recent sign-ins
failed (the throttle) and the last TOTP step used (replay protection). Every worker
process must see the same state, so it lives in the store, but a copy of the disk
must not read it (SECURITY.md section 2). So it is sealed (XSalsa20-Poly1305, random
nonce) under this key, which is never written anywhere.

One key per run of the server: `intake serve` makes it and hands it to its gunicorn
servers in the environment (gunicorn's own config makes one if it was started some
other way), so every worker, and the retention schedule in `intake serve` itself, share
it. A restart makes a new key: what was sealed under the old one reads as nothing,
which ends the throttle window and lets a TOTP code used in the last 90 seconds before
the restart work once more.
"""

from __future__ import annotations

import os
import secrets

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

ENVIRONMENT_VARIABLE = "INTAKE_MEMORY_KEY"
KEY_BYTES = 32
_NUMBER_BYTES = 8

# Kept for the life of the process, as is the environment it came in: there is no moment to
# wipe it before the process ends (SECURITY.md section 2, "Plaintext and secrets in memory").
_key: bytes | None = None


def memory_key() -> bytes:
    """This run's key: from the environment if the process that started this one made
    it, else made now (and kept for this process only)."""
    global _key
    if _key is None:
        given = os.environ.get(ENVIRONMENT_VARIABLE, "")
        try:
            key = bytes.fromhex(given)
        except ValueError:
            key = b""
        _key = key if len(key) == KEY_BYTES else secrets.token_bytes(KEY_BYTES)
    return _key


def environment_for_children() -> dict[str, str]:
    """What to add to the environment of a process that must share this run's key."""
    return {ENVIRONMENT_VARIABLE: memory_key().hex()}


def seal_number(number: int) -> bytes:
    return bytes(SecretBox(memory_key()).encrypt(number.to_bytes(_NUMBER_BYTES, "big")))


def open_number(sealed: bytes | None) -> int | None:
    """The number sealed under this run's key; None if nothing was sealed, or it was
    sealed under another run's key (or is damaged)."""
    if sealed is None:
        return None
    try:
        plain = SecretBox(memory_key()).decrypt(sealed)
    except CryptoError:
        return None
    return int.from_bytes(plain, "big") if len(plain) == _NUMBER_BYTES else None
