"""Logged-in source sessions, kept server-side and readable only with the cookie.

The cookie holds a random 32-byte token and nothing else. The store keeps, under
a hash of the token, the source id and, sealed with a key derived from the same
token, the session's exact expiry and the source's reply secret key: a copy of
the database alone opens no session and tells no time of day (the store itself
keeps only the day the session has surely ended by), and the codename is never
needed again until the next login.

The reply secret key is sealed from, and opened into, buffers wiped here; a
resumed session holds it in a bytearray that the source view wipes when the
request ends (``wipe_session``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from keys.sodium_buffers import SECRETBOX_MACBYTES, secretbox_open, secretbox_seal
from keys.wiping import wipe, wiping
from nacl.secret import SecretBox

COOKIE_NAME = "intake_session"
TOKEN_BYTES = 32
_COOKIE_CHARS = 43  # unpadded base64url of 32 bytes
_EXPIRY_BYTES = 8  # unix seconds, big-endian, sealed before the reply secret key


class SessionStore(Protocol):
    def save_session(self, session_id: bytes, source_id: str, sealed_secret: bytes, expires_at: int) -> None: ...
    def load_session(self, session_id: bytes) -> tuple[str, bytes] | None: ...
    def delete_session(self, session_id: bytes) -> None: ...


@dataclass(frozen=True)
class SourceSession:
    source_id: str
    reply_secret_key: bytearray  # wiped by wipe_session when the request ends
    session_id: bytes

    def __repr__(self) -> str:  # keep the secret key out of tracebacks and debug output
        return f"SourceSession(source_id={self.source_id!r})"


def _session_id(token: bytes) -> bytes:
    return hashlib.blake2b(token, digest_size=32, person=b"intake:sess-id").digest()


def _sealing_key(token: bytes) -> bytes:
    return hashlib.blake2b(token, digest_size=32, person=b"intake:sess-key").digest()


def _encode_token(token: bytes) -> str:
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def _decode_token(cookie_value: str | None) -> bytes | None:
    if not cookie_value or len(cookie_value) != _COOKIE_CHARS:
        return None
    try:
        token = base64.urlsafe_b64decode(cookie_value + "=")
    except (binascii.Error, ValueError):
        return None
    return token if len(token) == TOKEN_BYTES else None


@dataclass(frozen=True)
class NewSession:
    """A session ready to be stored (``row``, for any source) and the cookie that will unlock it."""

    cookie: str
    row: tuple[bytes, bytes, int]  # session id, sealed secret, exact expiry: Store.save_session's arguments

    def __repr__(self) -> str:  # the cookie opens the session
        return "NewSession(...)"


def new_session(reply_secret_key: bytes | bytearray, *, minutes: int) -> NewSession:
    token = secrets.token_bytes(TOKEN_BYTES)
    expires_at = int(time.time()) + minutes * 60
    plaintext = bytearray(expires_at.to_bytes(_EXPIRY_BYTES, "big"))
    with wiping(plaintext):
        plaintext += reply_secret_key
        sealed = secretbox_seal(plaintext, _sealing_key(token))
    return NewSession(_encode_token(token), (_session_id(token), sealed, expires_at))


def open_session(store: SessionStore, source_id: str, reply_secret_key: bytes | bytearray, *, minutes: int) -> str:
    """Store a new session and return the cookie value that unlocks it."""
    session = new_session(reply_secret_key, minutes=minutes)
    session_id, sealed, expires_at = session.row
    store.save_session(session_id, source_id, sealed, expires_at)
    return session.cookie


def resume_session(store: SessionStore, cookie_value: str | None) -> SourceSession | None:
    """The session this cookie unlocks, or None if it is malformed, unknown or expired
    (an expired one is deleted)."""
    token = _decode_token(cookie_value)
    if token is None:
        return None
    session_id = _session_id(token)
    found = store.load_session(session_id)
    if found is None:
        return None
    source_id, sealed = found
    overhead = SecretBox.NONCE_SIZE + SECRETBOX_MACBYTES
    if len(sealed) < overhead + _EXPIRY_BYTES:
        return None
    opened = bytearray(len(sealed) - overhead)
    with wiping(opened), memoryview(opened) as view:
        if not secretbox_open(opened, sealed, _sealing_key(token)):
            return None
        if int.from_bytes(view[:_EXPIRY_BYTES], "big") <= time.time():
            store.delete_session(session_id)
            return None
        return SourceSession(source_id=source_id, reply_secret_key=bytearray(view[_EXPIRY_BYTES:]), session_id=session_id)


def wipe_session(session: SourceSession | None) -> None:
    """Wipe the reply secret key a resumed session holds (once its request is over)."""
    if session is not None:
        wipe(session.reply_secret_key)


def end_session(store: SessionStore, cookie_value: str | None) -> None:
    token = _decode_token(cookie_value)
    if token is not None:
        store.delete_session(_session_id(token))
