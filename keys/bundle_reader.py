"""Reading an export bundle on the laptop (format in keys/bundle.py and SECURITY.md section 6).

``ExportBundle`` finds the entries, checks the server's signature over every byte before it
(a bundle whose signer the laptop does not trust is refused before anything is decrypted),
opens the manifest with the journalist's keys and checks that it binds every item entry (size,
BLAKE2b-256) to its source; ``ItemReader`` then decrypts one item at a time, hashing its
ciphertext as it is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.public import PublicKey
from nacl.signing import VerifyKey

from keys.bundle import (
    ENTRY_ITEM,
    ENTRY_MANIFEST,
    ENTRY_SIGNATURE,
    EXPORT_ENTRY,
    EXPORT_MAGIC,
    HASH_SIZE,
    MANIFEST_VERSION,
    MAX_ITEMS,
    MAX_ITEM_SIZE,
    MAX_MANIFEST_SIZE,
    SIGNATURE_CONTEXT,
    SIGNATURE_ENTRY_LENGTH,
    VERSION,
    check_item_fields,
    check_source,
)
from keys.envelope_reader import EnvelopeReader, read_exact
from keys.errors import (
    BadSignatureError,
    DamagedItemError,
    FormatError,
    KeysError,
    RecordError,
    TamperedError,
    TruncatedError,
    UnknownServerError,
    UnsupportedVersionError,
    WrongKeyError,
)
from keys.identity import Identity
from keys.server_key import ServerPublicKey
from keys.strict_json import b64_key, is_int, loads
from keys.told import told

_HEX_HASH = re.compile(r"[0-9a-f]{%d}" % (2 * HASH_SIZE))


@dataclasses.dataclass(frozen=True)
class ManifestItem:
    item_id: str
    kind: str
    received_day: str
    recipients: tuple[str, ...]
    entry: int
    size: int
    blake2b: bytes


@dataclasses.dataclass(frozen=True)
class ManifestSource:
    source_id: str
    designation: str
    reply_public_key: bytes
    items: tuple[ManifestItem, ...]


@dataclasses.dataclass(frozen=True)
class _Entry:
    kind: int
    offset: int  # of the payload
    length: int


class ExportBundle:
    """An export bundle file, opened for reading.

    Opening checks the framing (what can be checked without a key): magic,
    version, entry types and lengths, the manifest then the signature last,
    nothing after. ``verify`` then reads every byte once to check the server's
    signature, and keeps the manifest it covered; only then can the manifest be read.
    """

    def __init__(self, src: BinaryIO):
        self._src = src
        self.size = src.seek(0, io.SEEK_END)
        src.seek(0)
        head = read_exact(src, len(EXPORT_MAGIC) + 1)
        if not head.startswith(EXPORT_MAGIC):
            raise FormatError(told("this is not an intake export bundle"))
        if len(head) == len(EXPORT_MAGIC):
            raise TruncatedError(told("the export file is cut short (downloaded or copied only in part): download it again"))
        if head[-1] == 1:
            raise UnsupportedVersionError(told("this export bundle is version 1, which is not signed: export it again from an updated server"))
        if head[-1] != VERSION:
            raise UnsupportedVersionError(told("export bundle version {version} is not supported (this toolkit reads version {supported})", version=head[-1], supported=VERSION))
        self.version = head[-1]
        self.items: list[_Entry] = []
        self.manifest_entry: _Entry | None = None
        self.signature_entry: _Entry | None = None
        self._manifest: bytes | None = None  # set by verify(): the bytes the signature covered
        self._item_digests: list[bytes] = []  # set by verify(): BLAKE2b-256 of each item entry's payload
        self.server: ServerPublicKey | None = None
        offset = len(head)
        while offset < self.size:
            if self.signature_entry is not None:  # any byte at all, not only a whole entry header
                raise FormatError(told("the export bundle has data after its signature"))
            src.seek(offset)
            raw = read_exact(src, EXPORT_ENTRY.size)
            if len(raw) < EXPORT_ENTRY.size:
                raise TruncatedError(told("the export file is cut short inside an entry header: download it again"))
            kind, length = EXPORT_ENTRY.unpack(raw)
            offset += EXPORT_ENTRY.size
            if kind == ENTRY_ITEM:
                if self.manifest_entry is not None:
                    raise FormatError(told("the export bundle has an item after its manifest"))
                if not 0 < length <= MAX_ITEM_SIZE:
                    raise FormatError(told("an item in the export bundle is oversized"))
                if len(self.items) >= MAX_ITEMS:
                    raise FormatError(told("the export bundle holds too many items"))
            elif kind == ENTRY_MANIFEST:
                if self.manifest_entry is not None:
                    raise FormatError(told("the export bundle has two manifests"))
                if not 0 < length <= MAX_MANIFEST_SIZE:
                    raise FormatError(told("the export bundle's manifest is oversized"))
            elif kind == ENTRY_SIGNATURE:
                if self.manifest_entry is None:
                    raise FormatError(told("the export bundle is signed before its manifest"))
                if length != SIGNATURE_ENTRY_LENGTH:
                    raise FormatError(told("the export bundle's signature is malformed"))
            else:
                raise FormatError(told("the export bundle has an entry of unknown type {kind}", kind=kind))
            if offset + length > self.size:
                raise TruncatedError(told("the export file is cut short (downloaded or copied only in part): download it again"))
            entry = _Entry(kind, offset, length)
            if kind == ENTRY_ITEM:
                self.items.append(entry)
            elif kind == ENTRY_MANIFEST:
                self.manifest_entry = entry
            else:
                self.signature_entry = entry
            offset += length
        if self.manifest_entry is None:
            raise TruncatedError(told("the export file is cut short before its manifest: download it again"))
        if self.signature_entry is None:
            # Every version 2 bundle ends with the server's signature: without it, it is unsigned or cut off.
            raise TruncatedError(told("the export bundle is not signed by the server (or it was cut off after its manifest)"))

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ExportBundle":
        src = open(path, "rb")
        try:
            return cls(src)
        except BaseException:
            src.close()
            raise

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> "ExportBundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def items_size(self) -> int:
        return sum(entry.length for entry in self.items)

    def verify(self, trusted: Mapping[bytes, ServerPublicKey], advance: Callable[[int], None] = lambda n: None) -> ServerPublicKey:
        """Check the server's signature over every byte before it; keep the manifest it covers.

        The signer must be one of ``trusted`` (verify key -> server key); the bundle is
        read from its first byte to the signature, so nothing can be left out of it.
        """
        assert self.manifest_entry is not None and self.signature_entry is not None
        self._src.seek(self.signature_entry.offset)
        trailer = read_exact(self._src, SIGNATURE_ENTRY_LENGTH)
        signature = trailer[64:]
        named = ServerPublicKey(VerifyKey(trailer[:32]), PublicKey(trailer[32:64]))
        server = trusted.get(bytes(named.verify_key))
        if server is None or server != named:
            raise UnknownServerError(told(
                "the export bundle is signed by a server key this laptop does not trust ({fingerprint}); nothing was "
                "written (if your admin rotated the server key, trust the new one with `intake-keys trust-server`)",
                fingerprint=named.fingerprint))
        signed = hashlib.blake2b(digest_size=64)
        self._src.seek(0)
        signed.update(read_exact(self._src, len(EXPORT_MAGIC) + 1))
        manifest = bytearray()
        digests = []
        for entry in [*self.items, self.manifest_entry]:  # in file order, as the framing walk found them
            signed.update(read_exact(self._src, EXPORT_ENTRY.size))
            item_hash = hashlib.blake2b(digest_size=HASH_SIZE)
            remaining = entry.length
            while remaining:
                data = self._src.read(min(1 << 20, remaining))
                if not data:
                    raise TruncatedError(told("the export file is cut short (downloaded or copied only in part): download it again"))
                signed.update(data)
                if entry.kind == ENTRY_ITEM:
                    item_hash.update(data)
                else:
                    manifest += data
                remaining -= len(data)
                advance(len(data))
            if entry.kind == ENTRY_ITEM:
                digests.append(item_hash.digest())
        try:
            server.verify_key.verify(SIGNATURE_CONTEXT + signed.digest(), signature)
        except NaclBadSignature:
            raise BadSignatureError(told("the export bundle's signature does not verify: it was modified or forged; nothing was written")) from None
        self._manifest = bytes(manifest)
        self._item_digests = digests
        self.server = server
        return server

    def read_manifest(self, identity: Identity) -> list[ManifestSource]:
        """Decrypt and validate the manifest the signature covered; it must describe every item entry exactly once."""
        if self._manifest is None:
            raise BadSignatureError(told("the export bundle's signature has not been checked"))
        try:
            reader = EnvelopeReader(io.BytesIO(self._manifest), identity.private_key)
        except WrongKeyError:
            # The manifest is sealed to every active journalist: not opening it means another's export.
            raise WrongKeyError(told(
                "this export was not made for your key: check that --key names your own secret key file (an export made before a key change opens with the old key)"
            )) from None
        if reader.metadata.kind != "manifest":  # it authenticated: the server's forgery or bug, like any broken record
            reader.close()
            raise RecordError(told("the export bundle's manifest is not a manifest"))
        sources = _parse_manifest(reader.read(), self.items)
        # Every item's hash was taken in the signature pass: a mismatch refuses the bundle before anything is written.
        for source in sources:
            for item in source.items:
                if item.blake2b != self._item_digests[item.entry]:
                    raise TamperedError(told("an item in the export bundle does not match its manifest entry"))
        return sources

    def open_item(self, item: ManifestItem, identity: Identity, *, file_key: bytes | None = None, keep_file_key: bool = False,
                  record_only: bool = False) -> "ItemReader":
        """A reader of ``item`` (see ItemReader; ``file_key``, ``keep_file_key``: see EnvelopeReader).
        ``record_only``: only its metadata will be read, so what is read is not hashed on the way."""
        entry = self.items[item.entry]
        window = _Slice(self._src, entry.offset, entry.length, hashed=not record_only)
        return ItemReader(window, identity, item, file_key=file_key, keep_file_key=keep_file_key)


class ItemReader:
    """Decrypts one item. ``chunks()`` ends normally only when the envelope
    reached its FINAL message and the bytes match the manifest's hash.

    When the envelope refuses (TamperedError, or FormatError and its subclasses
    TruncatedError...), the rest of the item's bytes are read and hashed, not
    decrypted: if they match the manifest, the bundle is intact and the item was
    damaged before export, and DamagedItemError says so; otherwise the bundle is
    damaged and the envelope's own error is raised. Two refusals are never
    "damaged": an envelope that authenticated but breaks the rules, in its record
    or its messages, or whose kind is not the manifest's (RecordError: a forgery
    by whoever wrote it, for an item the server, or its bug; never damage, which
    fails authentication), raised naming the item and saying so; and a key that
    opens no stanza (WrongKeyError).
    """

    def __init__(self, src: "_Slice", identity: Identity, item: ManifestItem, *, file_key: bytes | None = None, keep_file_key: bool = False):
        self._src = src
        self._item = item
        try:
            self._reader = EnvelopeReader(src, identity.private_key, file_key=file_key, keep_file_key=keep_file_key)
        except RecordError as error:
            raise self._forged(error) from None
        except (TamperedError, FormatError) as error:
            raise self._refusal(error) from None
        self.metadata = self._reader.metadata
        self.file_key = self._reader.file_key
        if self.metadata.kind != item.kind:
            self._reader.close()
            raise self._forged(RecordError(told("an item in the export bundle does not match its manifest entry: it is of another kind")))

    def close(self) -> None:
        """Wipe what was decrypted and not read (see EnvelopeReader.close)."""
        self._reader.close()

    def chunks(self) -> Iterator[bytes]:
        with self._refusals():
            yield from self._reader.chunks()
        self._check_end()

    def write_to(self, out: BinaryIO, progress: Callable[[int], object] = lambda n: None) -> int:
        """Write the body to ``out`` without a copy (EnvelopeReader.write_to), checked as ``chunks()`` is."""
        with self._refusals():
            length = self._reader.write_to(out, progress)
        self._check_end()
        return length

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        try:
            yield
        except RecordError as error:
            raise self._forged(error) from None
        except (TamperedError, FormatError) as error:
            raise self._refusal(error) from None

    def _check_end(self) -> None:
        if not self._reader.complete or self._src.remaining or self._src.digest() != self._item.blake2b:
            raise TamperedError(told("an item in the export bundle does not match its manifest entry"))

    def _forged(self, error: RecordError) -> RecordError:
        """What the journalist is told of an item that authenticated but breaks the rules: not damage."""
        return RecordError(told(
            "REFUSED: item {item} opened with your key but is malformed ({reason}); only whoever wrote it could "
            "make it so (the server, or someone who can write to its store): it is forged or the server is faulty, "
            "not damaged. Decryption stopped; tell your security contact", item=self._item.item_id, reason=error))

    def _refusal(self, error: KeysError) -> KeysError:
        """The envelope refused: DamagedItemError if the item's bytes are the ones the manifest lists, else ``error``."""
        if self._src.whole_digest() == self._item.blake2b:
            return DamagedItemError(*error.args)  # told words stay translatable
        return error


_MANIFEST_KEYS = {"format", "version", "items", "sources"}
_SOURCE_KEYS = {"source_id", "designation", "reply_public_key", "items"}
_ITEM_KEYS = {"item_id", "kind", "received_day", "recipients", "entry", "size", "blake2b"}


def _parse_manifest(data: bytes, entries: list[_Entry]) -> list[ManifestSource]:
    doc = loads(data, told("the export bundle's manifest"))
    if not isinstance(doc, dict) or doc.get("format") != "intake-export-manifest":
        raise FormatError(told("the export bundle's manifest is malformed"))
    if not is_int(doc.get("version")) or doc["version"] != MANIFEST_VERSION:
        raise UnsupportedVersionError(told("manifest version {version!r} is not supported (this toolkit reads version {supported})", version=doc.get("version"), supported=MANIFEST_VERSION))
    if set(doc) != _MANIFEST_KEYS or not isinstance(doc["sources"], list):
        raise FormatError(told("the export bundle's manifest is malformed"))
    if not is_int(doc["items"]) or doc["items"] != len(entries):
        raise FormatError(told("the export bundle's manifest does not match its items"))
    seen: set[int] = set()
    item_ids: set[str] = set()
    source_ids: set[str] = set()
    sources = []
    for raw in doc["sources"]:
        if not isinstance(raw, dict) or set(raw) != _SOURCE_KEYS or not isinstance(raw["items"], list):
            raise FormatError(told("the export bundle's manifest is malformed"))
        reply_key = b64_key(raw["reply_public_key"], 32, told("a source's reply key in the bundle"))
        check_source(raw["source_id"], raw["designation"], reply_key)
        if raw["source_id"] in source_ids:
            raise FormatError(told("the export bundle's manifest lists a source twice"))
        source_ids.add(raw["source_id"])
        items = []
        for it in raw["items"]:
            if not isinstance(it, dict) or set(it) != _ITEM_KEYS:
                raise FormatError(told("the export bundle's manifest is malformed"))
            check_item_fields(it["item_id"], it["kind"], it["received_day"], it["recipients"])
            index, size, digest = it["entry"], it["size"], it["blake2b"]
            if not is_int(index) or not 0 <= index < len(entries) or index in seen or it["item_id"] in item_ids:
                raise FormatError(told("the export bundle's manifest does not match its items"))
            if not is_int(size) or size != entries[index].length:
                raise FormatError(told("the export bundle's manifest does not match its items"))
            if not isinstance(digest, str) or not _HEX_HASH.fullmatch(digest):
                raise FormatError(told("the export bundle's manifest is malformed"))
            seen.add(index)
            item_ids.add(it["item_id"])
            items.append(ManifestItem(it["item_id"], it["kind"], it["received_day"], tuple(it["recipients"]), index, size, bytes.fromhex(digest)))
        sources.append(ManifestSource(raw["source_id"], raw["designation"], reply_key, tuple(items)))
    if len(seen) != len(entries):
        raise FormatError(told("the export bundle's manifest does not match its items"))
    return sources


class _Slice:
    """A read-only window of ``length`` bytes at ``offset``, hashed as it is read.

    Reads are positioned (pread on a file), so windows of one bundle file can be read
    in any order and by forked processes sharing the file, never by its file offset."""

    def __init__(self, src: BinaryIO, offset: int, length: int, hashed: bool = True):
        self._src = src
        self._start, self._length = offset, length
        self._offset = offset
        self.remaining = length
        self._hash = hashlib.blake2b(digest_size=HASH_SIZE) if hashed else None
        try:
            self._fd: int | None = src.fileno()
        except (AttributeError, OSError, ValueError):  # io.BytesIO and the like
            self._fd = None

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")[: self.remaining]
        if not view:
            return 0
        if self._fd is not None:
            count = os.preadv(self._fd, [view], self._offset)
        else:
            self._src.seek(self._offset)
            count = self._src.readinto(view)
        if self._hash is not None:
            self._hash.update(view[:count])
        self._offset += count
        self.remaining -= count
        return count

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        buffer = bytearray(size)
        return bytes(memoryview(buffer)[: self.readinto(buffer)])

    def digest(self) -> bytes:
        """The hash of what was read (a hashed window only)."""
        assert self._hash is not None
        return self._hash.digest()

    def whole_digest(self) -> bytes:
        """The hash of the whole window: the rest is read (a window not hashed is read again from its start)."""
        if self._hash is None:
            self._hash, self._offset, self.remaining = hashlib.blake2b(digest_size=HASH_SIZE), self._start, self._length
        while self.read(1 << 20):
            pass
        return self._hash.digest()
