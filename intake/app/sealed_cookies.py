"""Small values a source's browser keeps for its own session, sealed so that only
that live session opens them: the codename just made (so its page survives a
reload) and the receipt of the last upload (file names included).

The key is derived from the session cookie's value *and* the source's reply
secret key, which the server holds only inside the live session's row (sealed
under the same cookie). Neither the cookie jar alone (once the session has ended)
nor the database alone opens them; nothing of them is stored on the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from collections.abc import Sequence

from flask import Response
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from intake.app.ingest import ReceivedItem

CODENAME_COOKIE = "intake_codename"
RECEIPT_COOKIE = "intake_receipt"
_PURPOSES = {CODENAME_COOKIE: b"intake:codename", RECEIPT_COOKIE: b"intake:receipt"}
MAX_COOKIE_CHARS = 3000  # browsers keep at least 4,096 bytes a cookie, name and attributes included
_MAX_NAME_CHARS = 120
_WINDOW_BITS, _MEMORY_LEVEL = 12, 6  # zlib: a 4 KiB window, ~48 KiB of state (its defaults: 32 KiB, ~256 KiB)


def _box(cookie_name: str, session_cookie: str, reply_secret_key: bytes | bytearray) -> SecretBox:
    key = hashlib.blake2b(session_cookie.encode("ascii"), key=reply_secret_key, digest_size=32, person=_PURPOSES[cookie_name])
    return SecretBox(key.digest())


def seal(cookie_name: str, session_cookie: str, reply_secret_key: bytes | bytearray, data: bytes) -> str:
    # zlib and PyNaCl take and return bytes: the codename or receipt sealed here cannot be wiped,
    # only freed at the end of the request (SECURITY.md section 2, "Plaintext and secrets in memory").
    # zlib's default state (~256 KiB) is overwritten when allocated and freed under the server's
    # allocator settings (intake.memory_wiping): ~100 us a seal. A 4 KiB window takes ~6 us, and a
    # 255-file receipt comes out within 1% of the same size. zlib.decompress reads either.
    compressor = zlib.compressobj(9, zlib.DEFLATED, _WINDOW_BITS, _MEMORY_LEVEL)
    sealed = _box(cookie_name, session_cookie, reply_secret_key).encrypt(compressor.compress(data) + compressor.flush())
    return base64.urlsafe_b64encode(bytes(sealed)).rstrip(b"=").decode("ascii")


def unseal(cookie_name: str, session_cookie: str | None, reply_secret_key: bytes | bytearray, value: str | None) -> bytes | None:
    if not session_cookie or not value or len(value) > MAX_COOKIE_CHARS * 2:
        return None
    try:
        sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return zlib.decompress(_box(cookie_name, session_cookie, reply_secret_key).decrypt(sealed), bufsize=64 * 1024)
    except (binascii.Error, ValueError, CryptoError, zlib.error):
        return None


def set_sealed_cookie(response: Response, cookie_name: str, value: str) -> None:
    response.set_cookie(cookie_name, value, path="/", httponly=True, samesite="Strict", secure=False)


def delete_sealed_cookies(response: Response) -> None:
    for name in _PURPOSES:
        response.delete_cookie(name, path="/", httponly=True, samesite="Strict")


def seal_receipt(session_cookie: str, reply_secret_key: bytes | bytearray, items: Sequence[ReceivedItem]) -> str:
    """The receipt of an upload; when it would not fit a cookie, the last file names are left out
    (the page then shows those files by their place in the list and their size)."""
    rows = [[item.kind, item.name[:_MAX_NAME_CHARS] if item.name else None, item.size] for item in items]
    named = len(rows)
    while True:
        shown = [row if i < named else [row[0], None, row[2]] for i, row in enumerate(rows)]
        value = seal(RECEIPT_COOKIE, session_cookie, reply_secret_key, json.dumps(shown, separators=(",", ":")).encode())
        if len(value) <= MAX_COOKIE_CHARS or named == 0:
            return value if len(value) <= MAX_COOKIE_CHARS else ""
        named = named * 3 // 4


def open_receipt(session_cookie: str | None, reply_secret_key: bytes | bytearray, value: str | None) -> list[ReceivedItem]:
    data = unseal(RECEIPT_COOKIE, session_cookie, reply_secret_key, value)
    if data is None:
        return []
    return [ReceivedItem(kind, name, size) for kind, name, size in json.loads(data)]
