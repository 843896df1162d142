"""Reading an intake envelope (format in keys/envelope.py and SECURITY.md section 3).

The reader opens the file key with one of the secret keys it is given, then checks and
decrypts one message at a time into a buffer it owns and wipes: memory use does not grow
with the size of the item, and nothing is handed out that failed authentication.
Versions 1 and 2 are read (keys.envelope.READ_VERSIONS).
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from nacl import bindings as sodium
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey

from keys import sodium_buffers as owned
from keys.envelope import (
    EPHEMERAL_KEY_SIZE,
    MAGIC,
    MAX_RECIPIENTS,
    MAX_RECORD,
    MESSAGE_CT_SIZE,
    MESSAGE_SIZE,
    READ_VERSIONS,
    STANZA_SIZE,
    STREAM_HEADER_SIZE,
    TAG_FINAL,
    TAG_MESSAGE,
    V1_STANZA_SIZE,
    Metadata,
    stanza_nonce,
)
from keys.errors import (
    FormatError,
    RecordError,
    TamperedError,
    TruncatedError,
    UnsupportedVersionError,
    WrongKeyError,
)
from keys.told import told
from keys.wiping import wipe, wiping

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_HEAD_SIZE = len(MAGIC) + 2  # magic, version, count


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
        prefix = read_exact(src, _HEAD_SIZE)
        if len(prefix) < len(MAGIC) or prefix[: len(MAGIC)] != MAGIC:
            raise FormatError(told("this is not an intake envelope"))
        if len(prefix) > len(MAGIC) and prefix[len(MAGIC)] not in READ_VERSIONS:  # even when the count is cut off
            raise UnsupportedVersionError(told("envelope format version {version} is not supported (this toolkit reads versions 1 and 2)", version=prefix[len(MAGIC)]))
        if len(prefix) < _HEAD_SIZE:
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
        # From here on the message authenticated: only a holder of the file key (the envelope's
        # writer) could have made it, so every rule it breaks is a forgery (RecordError), not damage.
        if tag == TAG_FINAL:
            if read_exact(self._src, 1):  # unauthenticated bytes after the end: anyone can append them
                raise FormatError(told("the envelope has data after its final message"))
            self._done = True
        elif tag != TAG_MESSAGE:
            raise RecordError(told("an envelope message carries an unexpected tag"))
        elif got < MESSAGE_CT_SIZE:  # a short message that authenticated was written short, not cut
            raise RecordError(told("an envelope message is malformed"))
        if size < 4:
            raise RecordError(told("an envelope message is malformed"))
        (used,) = _U32.unpack_from(self._plaintext)
        capacity = size - 4
        if used > capacity or (self._content_ended and used):
            raise RecordError(told("an envelope message is malformed"))
        if used < capacity:
            if self._plaintext.count(0, 4 + used, size) != capacity - used:
                raise RecordError(told("an envelope's padding is not zero"))
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
            raise RecordError(told("the envelope's body does not match its declared length"))

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


def decrypt_stream(src: BinaryIO, out: BinaryIO, identities) -> Metadata:
    """Decrypt ``src`` into ``out``; returns the metadata with the true length."""
    reader = EnvelopeReader(src, identities)
    reader.write_to(out)
    return dataclasses.replace(reader.metadata, length=reader.body_length)


def decrypt_bytes(blob: bytes, identities) -> tuple[Metadata, bytes]:
    reader = EnvelopeReader(io.BytesIO(blob), identities)
    body = reader.read()
    return dataclasses.replace(reader.metadata, length=len(body)), body




__all__ = ["EnvelopeReader", "decrypt_bytes", "decrypt_stream", "read_exact"]
