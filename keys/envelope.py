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

Writer and reader work one message at a time: memory use does not grow with
the size of the item.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from nacl import bindings as sodium
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey

from keys.errors import (
    FormatError,
    RecordError,
    TamperedError,
    TruncatedError,
    UnsupportedVersionError,
    WrongKeyError,
)
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


def read_exact(src: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of input (pipes and sockets return short reads)."""
    data = src.read(size)
    if data is None:
        data = b""
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _as_private_keys(identities) -> list[PrivateKey]:
    if isinstance(identities, (PrivateKey, bytes)):
        identities = [identities]
    return [key if isinstance(key, PrivateKey) else PrivateKey(key) for key in identities]


def _open_stanzas(keys_part: bytes, count: int, keys: list[PrivateKey]) -> bytearray:
    """Version 2: one key agreement per key held, then one MAC check per stanza."""
    ephemeral, stanzas = keys_part[:EPHEMERAL_KEY_SIZE], keys_part[EPHEMERAL_KEY_SIZE:]
    shared = bytearray(sodium.crypto_box_BEFORENMBYTES)
    with wiping(shared):
        for key in keys:
            public = bytes(key.public_key)
            if not owned.box_beforenm(shared, ephemeral, bytes(key)):
                continue  # an ephemeral key of low order: no one's
            nonce = stanza_nonce(ephemeral, public)
            for i in range(count):
                file_key = owned.box_open_afternm(stanzas[i * STANZA_SIZE : (i + 1) * STANZA_SIZE], nonce, shared)
                if file_key is not None:
                    return file_key
    raise WrongKeyError(told("none of the given keys can open this envelope"))


def _open_v1_stanzas(keys_part: bytes, count: int, keys: list[PrivateKey]) -> bytearray:
    """Version 1: each stanza is a whole sealed box, so every stanza costs a key agreement."""
    pairs = [(bytes(key.public_key), bytes(key)) for key in keys]
    for i in range(count):
        stanza = keys_part[i * V1_STANZA_SIZE : (i + 1) * V1_STANZA_SIZE]
        for public, secret in pairs:
            file_key = owned.seal_open(stanza, public, secret)
            if file_key is not None:
                return file_key
    raise WrongKeyError(told("none of the given keys can open this envelope"))


class EnvelopeReader:
    """Reads an envelope with one of the given secret keys.

    ``metadata`` is available after construction; the body comes from ``read()``
    or ``chunks()``. Plaintext handed out before the end is authentic chunk by
    chunk, but only reaching the end (``complete`` is True) proves nothing was
    cut off: callers that write files must treat them as partial until then.

    Each message is decrypted into one buffer the reader owns and reuses
    (keys.sodium_buffers), and wiped once the body is read to its end or refused;
    ``write_to()`` writes the body from it without a copy.
    With ``keep_file_key`` the reader keeps the envelope's file key in ``file_key``; given
    back as ``file_key`` to a later reader of the same envelope, it opens it without trying
    the secret keys against every stanza again.
    """

    def __init__(self, src: BinaryIO, identities: PrivateKey | bytes | Sequence[PrivateKey | bytes], *,
                 file_key: bytes | None = None, keep_file_key: bool = False):
        self.file_key: bytes | None = None
        self._src = src
        self._ciphertext = bytearray(MESSAGE_CT_SIZE)
        self._plaintext = bytearray(MESSAGE_SIZE)
        self._content = memoryview(b"")  # the current message's content not yet handed out
        self._content_ended = False  # a message used fewer slots than it had
        self._done = False
        self._body_length = 0
        try:
            self._first_ad: bytes | None = self._read_header(src, identities, file_key, keep_file_key)
            (record_len,) = _U16.unpack(self._take_content(2))
            if record_len > MAX_RECORD:
                raise RecordError(told("the envelope's record is oversized"))
            self.metadata = Metadata.decode(self._take_content(record_len))
        except BaseException:
            self._wipe()
            raise

    def _read_header(self, src: BinaryIO, identities, file_key: bytes | None, keep_file_key: bool) -> bytes:
        prefix = read_exact(src, len(_PREFIX) + 1)
        if len(prefix) < len(MAGIC) or prefix[: len(MAGIC)] != MAGIC:
            raise FormatError(told("this is not an intake envelope"))
        if len(prefix) > len(MAGIC) and prefix[len(MAGIC)] not in READ_VERSIONS:  # even when the count is cut off
            raise UnsupportedVersionError(told("envelope format version {version} is not supported (this toolkit reads versions 1 and 2)", version=prefix[len(MAGIC)]))
        if len(prefix) < len(_PREFIX) + 1:
            raise TruncatedError(told("the envelope ends inside its header"))
        version = prefix[len(MAGIC)]
        count = prefix[-1]
        if not 1 <= count <= MAX_RECIPIENTS:
            raise FormatError(told("the envelope names an invalid number of recipients"))
        keys_size = count * V1_STANZA_SIZE if version == 1 else EPHEMERAL_KEY_SIZE + count * STANZA_SIZE
        rest = read_exact(src, keys_size + STREAM_HEADER_SIZE)
        if len(rest) < keys_size + STREAM_HEADER_SIZE:
            raise TruncatedError(told("the envelope ends inside its header"))
        if file_key is not None:
            key = bytearray(file_key)
        else:
            open_stanzas = _open_v1_stanzas if version == 1 else _open_stanzas
            key = open_stanzas(rest[:keys_size], count, _as_private_keys(identities))
        try:
            self._stream = owned.PullStream(rest[-STREAM_HEADER_SIZE:], key)
        except CryptoError:
            wipe(key)
            raise TamperedError(told("the envelope's header is damaged")) from None
        else:
            if keep_file_key:
                self.file_key = bytes(key)
            wipe(key)
        return prefix + rest

    def _next_message(self) -> bool:
        """Decrypt the next message into the buffer; its content becomes ``_content``. False at the end."""
        if self._done:
            return False
        got = _read_into(self._src, self._ciphertext)
        if not got:
            raise TruncatedError(told("the envelope is truncated: it ends before its final message"))
        try:
            size, tag = self._stream.pull_into(memoryview(self._ciphertext)[:got], self._plaintext, self._first_ad)
        except CryptoError:
            if got < MESSAGE_CT_SIZE:
                raise TruncatedError(told("the envelope is truncated or damaged at its end")) from None
            raise TamperedError(told("the envelope failed authentication: it was modified or reordered")) from None
        self._first_ad = None
        if tag == TAG_FINAL:
            if read_exact(self._src, 1):
                raise FormatError(told("the envelope has data after its final message"))
            self._done = True
        elif tag != TAG_MESSAGE:
            raise FormatError(told("an envelope message carries an unexpected tag"))
        elif got < MESSAGE_CT_SIZE:
            raise TruncatedError(told("the envelope is truncated: it ends before its final message"))
        if size < 4:
            raise FormatError(told("an envelope message is malformed"))
        (used,) = _U32.unpack_from(self._plaintext)
        capacity = size - 4
        if used > capacity or (self._content_ended and used):
            raise FormatError(told("an envelope message is malformed"))
        if used < capacity:
            if self._plaintext.count(0, 4 + used, size) != capacity - used:
                raise FormatError(told("an envelope's padding is not zero"))
            self._content_ended = True
        self._content = memoryview(self._plaintext)[4 : 4 + used]
        return True

    def _take_content(self, size: int) -> bytes:
        """Take exactly ``size`` bytes of content (used for the record: the file's name and type,
        gathered in a buffer of its final size, wiped here; the bytes returned cannot be)."""
        taken = bytearray(size)
        with wiping(taken):
            filled = 0
            while filled < size:
                if not self._content and not self._next_message():
                    raise RecordError(told("the envelope ends inside its record"))
                piece = self._content[: size - filled]
                taken[filled : filled + len(piece)] = piece
                filled += len(piece)
                self._content = self._content[len(piece) :]
            return bytes(taken)

    def _pieces(self) -> Iterator[memoryview]:
        """The body's pieces as views of the buffer, to the authenticated end; each is valid until
        the next is asked for, and the buffer is wiped when the iteration ends, however it ends."""
        try:
            while True:
                if self._content:
                    piece, self._content = self._content, memoryview(b"")
                    self._body_length += len(piece)
                    yield piece
                if not self._next_message():
                    break
            self._check_length()
        finally:
            self._wipe()

    def chunks(self) -> Iterator[bytes]:
        """Yield the body piece by piece, to the authenticated end (each a copy: prefer ``write_to``)."""
        for piece in self._pieces():
            yield bytes(piece)

    def write_to(self, out: BinaryIO, progress: Callable[[int], object] = lambda n: None) -> int:
        """Write the body to ``out`` straight from the reader's buffer (no copy), to the authenticated
        end; ``progress`` is told each piece's length. Returns the body's length."""
        for piece in self._pieces():
            out.write(piece)
            progress(len(piece))
        return self._body_length

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` body bytes (all if negative); b"" only at the authenticated end."""
        out = bytearray()
        try:
            while size is None or size < 0 or len(out) < size:
                if not self._content and not self._next_message():
                    break
                piece = self._content if size is None or size < 0 else self._content[: size - len(out)]
                out += piece
                self._content = self._content[len(piece) :]
            self._body_length += len(out)
            if self._done and not self._content:
                self._check_length()
                self._wipe()
            return bytes(out)
        except BaseException:
            self._wipe()
            raise
        finally:
            wipe(out)

    def _check_length(self) -> None:
        if self.metadata.length is not None and self.metadata.length != self._body_length:
            raise FormatError(told("the envelope's body does not match its declared length"))

    def close(self) -> None:
        """Wipe what was decrypted and not read (a reader asked only for its metadata). Idempotent."""
        self._wipe()

    def _wipe(self) -> None:
        self._content = memoryview(b"")
        wipe(self._plaintext)
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.wipe()

    @property
    def complete(self) -> bool:
        return self._done and not self._content

    @property
    def body_length(self) -> int:
        return self._body_length


def _read_into(src: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``src`` (fewer bytes only at end of input); returns how many came."""
    view = memoryview(buffer)
    readinto = getattr(src, "readinto", None)
    got = 0
    while got < len(buffer):
        if readinto is not None:
            count = readinto(view[got:])
        else:
            data = src.read(len(buffer) - got)
            count = len(data) if data else 0
            view[got : got + count] = data or b""
        if not count:
            break
        got += count
    return got


def encrypt_stream(src: BinaryIO, out: BinaryIO, recipients: Sequence[PublicKey | bytes], metadata: Metadata, chunk_size: int = 1 << 20) -> int:
    """Encrypt everything from ``src`` into ``out``; returns the body length."""
    writer = EnvelopeWriter(out, recipients, metadata)
    while data := src.read(chunk_size):
        writer.write(data)
    writer.close()
    return writer.body_length


def decrypt_stream(src: BinaryIO, out: BinaryIO, identities) -> Metadata:
    """Decrypt ``src`` into ``out``; returns the metadata with the true length."""
    reader = EnvelopeReader(src, identities)
    reader.write_to(out)
    return dataclasses.replace(reader.metadata, length=reader.body_length)


def encrypt_bytes(data: bytes, recipients: Sequence[PublicKey | bytes], metadata: Metadata) -> bytes:
    out = io.BytesIO()
    writer = EnvelopeWriter(out, recipients, metadata)
    writer.write(data)
    writer.close()
    return out.getvalue()


def decrypt_bytes(blob: bytes, identities) -> tuple[Metadata, bytes]:
    reader = EnvelopeReader(io.BytesIO(blob), identities)
    body = reader.read()
    return dataclasses.replace(reader.metadata, length=len(body)), body


__all__ = [
    "EnvelopeReader",
    "EnvelopeWriter",
    "Metadata",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_stream",
    "envelope_size",
    "header_size",
    "padme",
]
