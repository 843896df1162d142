"""The intake envelope, format version 2: streaming public-key encryption.

One envelope holds one item (a message, a file, a reply, a manifest) for one or
more recipients' X25519 keys. The full specification, with test vectors, is in
SECURITY.md; in short::

    envelope = MAGIC "INTAKE-E" | version u8 = 2 | count u8 (1..64)
             | ephemeral public key (32 bytes, one per envelope)
             | count x stanza (48 bytes: crypto_box_easy of the 32-byte file key from the
               ephemeral key to the recipient's, nonce = BLAKE2b-192(ephemeral | recipient))
             | secretstream header (24 bytes)
             | messages...

``ephemeral | stanza`` is exactly a crypto_box_seal of the file key: version 2 shares one
ephemeral key pair among the recipients, as saltpack does, so each more recipient costs one
key agreement instead of a key pair and a key agreement, and a reader needs one key agreement
per key it holds instead of one per stanza. Version 1 (a whole crypto_box_seal of 80 bytes per
recipient) is still read, never written.

Every message is libsodium secretstream XChaCha20-Poly1305. A message's plaintext
is ``u32be used | used bytes of content | zero bytes``; every message but the
last has a plaintext of exactly MESSAGE_SIZE bytes; the last is tagged FINAL.
The first message carries the whole header (magic through secretstream header)
as associated data, so reordering or swapping stanzas is detected.

The content is ``u16be record_len | record (JSON) | body``; the record names the
item (kind, name, type, length). The slots across all messages add up to
``padme(max(len(content), MIN_PADDED))``, so the stored size of an envelope
depends only on that padded length and the number of recipients.

Writer and reader (keys/envelope_reader.py) work one message at a time: memory use
does not grow with the size of the item.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import struct
from collections.abc import Sequence
from typing import BinaryIO

from nacl import bindings as sodium
from nacl.exceptions import CryptoError
from nacl.public import PublicKey

from keys.errors import FormatError, RecordError
from keys import sodium_buffers as owned
from keys.strict_json import is_int, loads
from keys.told import told
from keys.wiping import wipe, wiping

MAGIC = b"INTAKE-E"
VERSION = 2  # written
READ_VERSIONS = (1, 2)  # read: envelopes already stored or exported stay readable
MAX_RECIPIENTS = 64
FILE_KEY_SIZE = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
EPHEMERAL_KEY_SIZE = sodium.crypto_box_PUBLICKEYBYTES  # 32
STANZA_SIZE = FILE_KEY_SIZE + owned.BOX_MACBYTES  # 48
V1_STANZA_SIZE = FILE_KEY_SIZE + sodium.crypto_box_SEALBYTES  # 80: the ephemeral key, the MAC, the key
STREAM_HEADER_SIZE = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
MESSAGE_SIZE = 64 * 1024  # plaintext bytes of every message but the last
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
MESSAGE_CT_SIZE = MESSAGE_SIZE + ABYTES
SLOT_CAPACITY = MESSAGE_SIZE - 4  # content bytes one message can carry
MIN_PADDED = 1024  # short messages all look alike in size
MAX_RECORD = 4096
MAX_NAME = 1024
MAX_TYPE = 255
MAX_KIND = 32

TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_PREFIX = MAGIC + bytes([VERSION])


@dataclasses.dataclass(frozen=True)
class Metadata:
    """What an envelope says about its item. ``length`` is None when the writer
    did not know it in advance; the reader then learns it at the end."""

    kind: str
    name: str | None = None
    content_type: str | None = None
    length: int | None = None

    def encode(self) -> bytes:
        record = {
            "kind": self.kind,
            "length": self.length,
            "name": self.name,
            "type": self.content_type,
        }
        _check_record(self)
        try:
            data = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # lone surrogates, e.g. from a badly decoded file name
            raise FormatError(told("the item's name or type is not valid text")) from None
        if len(data) > MAX_RECORD:
            raise FormatError(told("the item's name or type is too long for an envelope"))
        return _U16.pack(len(data)) + data

    @classmethod
    def decode(cls, data: bytes) -> "Metadata":
        """Read a record that authenticated: any rule it breaks makes it a forgery (RecordError)."""
        try:
            record = loads(data, told("the envelope's record"))
        except FormatError as error:
            raise RecordError(*error.args) from None
        if not isinstance(record, dict) or set(record) != {"kind", "length", "name", "type"}:
            raise RecordError(told("the envelope's record has unexpected fields"))
        length = record["length"]
        if length is not None and (not is_int(length) or length < 0):
            raise RecordError(told("the envelope's record has an invalid length"))
        meta = cls(record["kind"], record["name"], record["type"], length)
        try:
            _check_record(meta)
        except FormatError as error:
            raise RecordError(*error.args) from None
        return meta


def _check_record(meta: Metadata) -> None:
    def text(value, limit, optional=True):
        if value is None:
            return optional
        return isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value

    if not (text(meta.kind, MAX_KIND, False) and text(meta.name, MAX_NAME) and text(meta.content_type, MAX_TYPE)):
        raise FormatError(told("the envelope's record has an invalid kind, name or type"))


def padme(length: int) -> int:
    """Padmé (Nikitin et al., PETS 2019): round up so at most O(log log L)
    bits of the length remain; overhead is at most 12%."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    size_bits = exponent.bit_length()
    low_bits = exponent - size_bits
    mask = (1 << low_bits) - 1
    return (length + mask) & ~mask


def padded_size(content_length: int) -> int:
    return padme(max(content_length, MIN_PADDED))


def header_size(recipients: int) -> int:
    """Bytes before the first message of a version-2 envelope (what the writer writes): magic,
    version, count, ephemeral key, stanzas, stream header."""
    return len(_PREFIX) + 1 + EPHEMERAL_KEY_SIZE + recipients * STANZA_SIZE + STREAM_HEADER_SIZE


def stanza_nonce(ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    """A stanza's nonce, as crypto_box_seal derives its own: BLAKE2b-192 of the two public keys."""
    return hashlib.blake2b(ephemeral_public + recipient_public, digest_size=sodium.crypto_box_NONCEBYTES).digest()


def envelope_size(content_length: int, recipients: int) -> int:
    """Exact stored size of a version-2 envelope whose content (record + body) has this length."""
    slots = padded_size(content_length)
    messages = max(1, -(-slots // SLOT_CAPACITY))
    return header_size(recipients) + messages * (ABYTES + 4) + slots


def _public_bytes(key: PublicKey | bytes) -> bytes:
    raw = bytes(key)
    if len(raw) != sodium.crypto_box_PUBLICKEYBYTES:
        raise ValueError("a recipient key must be 32 bytes")
    return raw


class EnvelopeWriter:
    """File-like writer: ``write()`` the body in pieces of any size, then ``close()``.

    Nothing is final until close(): an envelope without its FINAL message is
    refused by every reader, so an interrupted write never looks complete.

    The plaintext is copied once, into one message buffer this writer owns and reuses
    (each message overwrites the one before), and encrypted from there
    (keys.sodium_buffers). The file key lives only in a buffer wiped once the header is
    written. ``close()`` and ``discard()`` (an abandoned envelope, e.g. a refused upload)
    wipe the buffer and the stream state; leaving a ``with`` block by an exception discards.
    """

    def __init__(self, out: BinaryIO, recipients: Sequence[PublicKey | bytes], metadata: Metadata):
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise ValueError(f"an envelope needs 1 to {MAX_RECIPIENTS} recipients")
        public_keys = [_public_bytes(pk) for pk in recipients]
        if len(set(public_keys)) != len(public_keys):  # its two stanzas would be the same bytes
            raise ValueError("a recipient is listed twice")
        self._out = out
        self.metadata = metadata
        record = metadata.encode()
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        file_key = bytearray(FILE_KEY_SIZE)
        ephemeral, ephemeral_secret = owned.box_keypair()
        with wiping(file_key), wiping(ephemeral_secret):
            owned.secretstream_keygen(file_key)
            try:
                stanzas = [owned.box_easy(file_key, stanza_nonce(ephemeral, pk), pk, ephemeral_secret) for pk in public_keys]
            except CryptoError:  # libsodium refuses low-order points such as the all-zero key
                raise FormatError(told("a recipient key is not a usable X25519 public key")) from None
            random.SystemRandom().shuffle(stanzas)  # stanza order must not reveal the recipient list's order
            stream_header = owned.secretstream_init_push(self._state, file_key)
        header = _PREFIX + bytes([len(stanzas)]) + ephemeral + b"".join(stanzas) + stream_header
        out.write(header)
        self._ad: bytes | None = header  # associated data of the first message only
        # One message's plaintext, reused: u32 used | content (| zeros, in the last).
        self._message = bytearray(MESSAGE_SIZE)
        self._message[4 : 4 + len(record)] = record
        self._used = len(record)
        self._content_length = 0  # body bytes
        self._content_total = len(record)
        self._slots_written = 0
        self._closed = False

    @property
    def body_length(self) -> int:
        return self._content_length

    def _push(self, capacity: int, tag: int) -> None:
        """Encrypt the message buffer's first 4 + ``capacity`` bytes: the count, the content, zeros."""
        _U32.pack_into(self._message, 0, self._used)
        with memoryview(self._message) as view:
            if self._used < capacity:
                wipe(view[4 + self._used : 4 + capacity])  # padding: zeros, not what the last message held
            with view[: 4 + capacity] as plaintext:
                ciphertext = owned.secretstream_push(self._state, plaintext, self._ad, tag)
        self._ad = None
        self._used = 0  # the next message overwrites this one's content; close() and discard() wipe it
        self._out.write(ciphertext)

    def write(self, data) -> int:
        if self._closed:
            raise ValueError("write to a closed envelope")
        with memoryview(data) as given, given.cast("B") as view:
            size = len(view)
            self._content_length += size
            self._content_total += size
            pos = 0
            # A full message goes out only once more data exists behind it: the last
            # one must carry the FINAL tag, and we only know which it is at close().
            while pos < size:
                if self._used == SLOT_CAPACITY:
                    self._push(SLOT_CAPACITY, TAG_MESSAGE)
                    self._slots_written += SLOT_CAPACITY
                take = min(SLOT_CAPACITY - self._used, size - pos)
                self._message[4 + self._used : 4 + self._used + take] = view[pos : pos + take]
                self._used += take
                pos += take
        return size

    def close(self) -> None:
        """Write the padding and the FINAL message, then wipe. Idempotent."""
        if self._closed:
            return
        if self.metadata.length is not None and self.metadata.length != self._content_length:
            self.discard()
            raise ValueError("the body written does not match the length declared in the metadata")
        self._closed = True
        try:
            remaining = padded_size(self._content_total) - self._slots_written
            while True:
                capacity = min(SLOT_CAPACITY, remaining)
                remaining -= capacity
                self._push(capacity, TAG_FINAL if not remaining else TAG_MESSAGE)
                if not remaining:
                    break
        finally:
            self._wipe()

    def discard(self) -> None:
        """Give the envelope up unfinished: wipe what it holds. Idempotent."""
        self._closed = True
        self._wipe()

    def _wipe(self) -> None:
        wipe(self._message)
        self._used = 0
        owned.wipe_secretstream_state(self._state)

    def __enter__(self) -> "EnvelopeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def encrypt_stream(src: BinaryIO, out: BinaryIO, recipients: Sequence[PublicKey | bytes], metadata: Metadata, chunk_size: int = 1 << 20) -> int:
    """Encrypt everything from ``src`` into ``out``; returns the body length."""
    writer = EnvelopeWriter(out, recipients, metadata)
    while data := src.read(chunk_size):
        writer.write(data)
    writer.close()
    return writer.body_length


def encrypt_bytes(data: bytes, recipients: Sequence[PublicKey | bytes], metadata: Metadata) -> bytes:
    out = io.BytesIO()
    writer = EnvelopeWriter(out, recipients, metadata)
    writer.write(data)
    writer.close()
    return out.getvalue()


__all__ = [
    "EnvelopeWriter",
    "Metadata",
    "encrypt_bytes",
    "encrypt_stream",
    "envelope_size",
    "header_size",
    "padme",
]
