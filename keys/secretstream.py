"""libsodium's secretstream pull and sealed-box open, into buffers the caller owns.

PyNaCl's bindings return every plaintext as a new ``bytes`` (copied out of a
buffer of theirs that is never cleared) and take only ``bytes`` in. The envelope
reader instead decrypts each message straight into one ``bytearray`` it reuses
and wipes, from a ciphertext buffer it fills with ``readinto``: no copy of the
plaintext is made on the way. The calls are PyNaCl's own libsodium (its cffi
module), so nothing but PyNaCl is needed.
"""

from __future__ import annotations

from nacl._sodium import ffi, lib
from nacl.exceptions import CryptoError

ABYTES = lib.crypto_secretstream_xchacha20poly1305_abytes()
HEADER_BYTES = lib.crypto_secretstream_xchacha20poly1305_headerbytes()
KEY_BYTES = lib.crypto_secretstream_xchacha20poly1305_keybytes()
SEAL_BYTES = lib.crypto_box_sealbytes()


def wipe(buffer: bytearray | memoryview) -> None:
    """Overwrite ``buffer`` with zeros (sodium_memzero: not optimised away)."""
    if len(buffer):
        lib.sodium_memzero(ffi.from_buffer(buffer), len(buffer))


def seal_open(stanza: bytes, public_key: bytes, secret_key: bytes) -> bytearray | None:
    """The file key sealed in ``stanza`` for this key pair, in a new buffer; None if it is not for them."""
    if len(stanza) != KEY_BYTES + SEAL_BYTES:
        return None
    key = bytearray(KEY_BYTES)
    if lib.crypto_box_seal_open(ffi.from_buffer(key), stanza, len(stanza), public_key, secret_key) != 0:
        return None
    return key


class PullStream:
    """One secretstream being decrypted; its state is a buffer of ours, wiped by ``wipe()``."""

    def __init__(self, header: bytes, key: bytearray | bytes):
        self._state = bytearray(lib.crypto_secretstream_xchacha20poly1305_statebytes())
        self._tag = bytearray(1)
        if len(header) != HEADER_BYTES or len(key) != KEY_BYTES:
            raise CryptoError("invalid secretstream header or key")
        if lib.crypto_secretstream_xchacha20poly1305_init_pull(ffi.from_buffer(self._state), header, ffi.from_buffer(key)) != 0:
            raise CryptoError("invalid secretstream header")

    def pull_into(self, ciphertext: memoryview, out: bytearray, ad: bytes | None = None) -> tuple[int, int]:
        """Decrypt ``ciphertext`` into the start of ``out``; returns (plaintext length, tag).
        CryptoError if it fails authentication (``out`` may then hold garbage: wipe it)."""
        length = len(ciphertext) - ABYTES
        if length < 0 or length > len(out):
            raise CryptoError("invalid ciphertext length")
        rc = lib.crypto_secretstream_xchacha20poly1305_pull(
            ffi.from_buffer(self._state), ffi.from_buffer(out), ffi.NULL, ffi.from_buffer(self._tag),
            ffi.from_buffer(ciphertext), len(ciphertext), ad if ad is not None else ffi.NULL, len(ad) if ad is not None else 0,
        )
        if rc != 0:
            raise CryptoError("secretstream message failed authentication")
        return length, self._tag[0]

    def wipe(self) -> None:
        wipe(self._state)
