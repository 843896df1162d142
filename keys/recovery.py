"""The database-key recovery file: the server's SQLCipher key, sealed to the journalists.

On the server the key lives only as an encrypted systemd credential, bound to that
machine (its TPM2 or host key). `intake init` therefore also writes
``db-key.recovery``: an ordinary envelope (keys.envelope) whose one item is the key
file's text, 64 hex digits and a newline, of kind ``intake-db-key``. Any registered
journalist can open it on the laptop (`intake-keys recover-db-key`) and so bring a
backup back to life on a new machine; without a journalist's secret key and
passphrase the file tells nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nacl.public import PublicKey

from keys.envelope import Metadata, encrypt_bytes
from keys.envelope_reader import decrypt_bytes
from keys.errors import FormatError, WrongKeyError
from keys.identity import Identity
from keys.told import told

DB_KEY_KIND = "intake-db-key"
DB_KEY_BYTES = 32
MAX_RECOVERY_FILE = 64 << 10  # an envelope of one 65-byte item for a few dozen journalists
_KEY_TEXT = re.compile(rb"[0-9a-f]{64}\n")


def seal_db_key(db_key: bytes, recipients: Sequence[PublicKey | bytes]) -> bytes:
    """The recovery file's bytes: the key as its key file holds it, sealed to every recipient."""
    if len(db_key) != DB_KEY_BYTES:
        raise ValueError("the database key must be 32 bytes")
    text = db_key.hex().encode() + b"\n"
    return encrypt_bytes(text, recipients, Metadata(DB_KEY_KIND, length=len(text)))


def open_db_key(sealed: bytes, identity: Identity) -> bytes:
    """The key file's text (64 hex digits and a newline) from a recovery file.

    Refuses anything that is not a database key sealed to this identity.
    """
    if len(sealed) > MAX_RECOVERY_FILE:
        raise FormatError(told("this is not a database-key recovery file (it is far too large)"))
    try:
        metadata, text = decrypt_bytes(sealed, identity.private_key)
    except WrongKeyError:
        raise WrongKeyError(told("this recovery file is not sealed to {name}'s key", name=identity.name)) from None
    if metadata.kind != DB_KEY_KIND or not _KEY_TEXT.fullmatch(text):
        raise FormatError(told("this envelope does not hold a database key"))
    return text
