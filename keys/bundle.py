"""Export bundles (server -> laptop) and reply bundles (laptop -> server), version 1.

Export bundle: everything is ciphertext, the manifest included::

    export = MAGIC "INTAKE-X" | version u8 = 1 | entry* | manifest entry
    entry  = type u8 | length u64be | payload
             type 1 (item):     payload = one stored envelope, verbatim
             type 2 (manifest): payload = envelope of kind "manifest" (JSON), exactly once, last

The manifest comes last so the server can stream items straight from its store
and hash them on the way; it binds every item entry (index, size, BLAKE2b-256)
to its source, so items cannot be dropped, swapped or replayed from another
bundle without the reader noticing.

Reply bundle: replies sealed to sources, signed by one journalist::

    reply  = MAGIC "INTAKE-R" | version u8 = 1 | signer length u8 | signer (UTF-8)
           | (type u8 = 1 | length u32be | source_id length u8 | source_id | envelope)*
           | type u8 = 2 | length u32be = 64 | Ed25519 signature

The signature is over ``"intake-reply-bundle-v1" || BLAKE2b-512(every byte
before the signature entry)``, so both sides stream.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.public import PublicKey
from nacl.signing import VerifyKey

from keys import envelope
from keys.envelope import EnvelopeReader, Metadata, read_exact
from keys.errors import (
    BadSignatureError,
    DamagedItemError,
    FormatError,
    KeysError,
    TamperedError,
    TruncatedError,
    UnknownSignerError,
    UnsupportedVersionError,
)
from keys.files import PendingFile
from keys.identity import Identity, check_name

EXPORT_MAGIC = b"INTAKE-X"
REPLY_MAGIC = b"INTAKE-R"
VERSION = 1
ENTRY_ITEM = 1
ENTRY_MANIFEST = 2
ENTRY_REPLY = 1
ENTRY_SIGNATURE = 2
ITEM_KINDS = ("message", "file")

MAX_ITEM_SIZE = 1 << 40  # 1 TiB: far above any upload, far below u64 tricks
MAX_ITEMS = 1_000_000
MAX_MANIFEST_SIZE = 256 << 20
MAX_REPLY_ENVELOPE = 4 << 20
MAX_REPLIES = 10_000
MAX_REPLY_BUNDLE = 64 << 20
MAX_DESIGNATION = 64
MAX_SOURCE_ID = 128
HASH_SIZE = 32
SIGNATURE_CONTEXT = b"intake-reply-bundle-v1"

_EXPORT_ENTRY = struct.Struct(">BQ")
_REPLY_ENTRY = struct.Struct(">BI")
_SOURCE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,%d}" % MAX_SOURCE_ID)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# The server makes designations as "adjective noun" from the diceware package's word lists
# (intake/store/designations.py): lowercase ASCII words and single spaces; up to four words
# are accepted. A designation names a folder on the laptop and appears in suggested
# commands, so a manifest can carry no shell, HTML or path metacharacters through it.
DESIGNATION = re.compile(r"[a-z]+( [a-z]+){0,3}")


# ---------------------------------------------------------------- export: server side


@dataclasses.dataclass(frozen=True)
class ExportItem:
    """One stored submission part. ``size`` is the stored envelope's byte length;
    ``chunks()`` yields exactly those bytes, read lazily."""

    item_id: str
    kind: str  # "message" | "file"
    received_day: str  # "YYYY-MM-DD"
    size: int
    recipients: list[str]  # names of the journalists the envelope is sealed to
    chunks: Callable[[], Iterable[bytes]]


@dataclasses.dataclass(frozen=True)
class ExportSource:
    source_id: str
    designation: str
    reply_public_key: bytes
    items: list[ExportItem]


def stream_export_bundle(recipients: Sequence[PublicKey | bytes], sources: Iterable[ExportSource]) -> Iterator[bytes]:
    """Yield an export bundle piece by piece: items as they come from the store,
    then the manifest sealed to ``recipients``. Memory holds the manifest only.

    A store that yields other bytes than announced raises ValueError mid-stream;
    the bundle then has no manifest and every reader refuses it.
    """
    yield EXPORT_MAGIC + bytes([VERSION])
    manifest_sources = []
    entry = 0
    for source in sources:
        _check_source(source.source_id, source.designation, bytes(source.reply_public_key))
        items = []
        for item in source.items:
            _check_item_fields(item.item_id, item.kind, item.received_day, item.recipients)
            if not 0 < item.size <= MAX_ITEM_SIZE:
                raise ValueError(f"item {item.item_id}: invalid stored size {item.size}")
            if entry >= MAX_ITEMS:
                raise ValueError(f"an export bundle holds at most {MAX_ITEMS} items")
            yield _EXPORT_ENTRY.pack(ENTRY_ITEM, item.size)
            digest = hashlib.blake2b(digest_size=HASH_SIZE)
            written = 0
            for chunk in item.chunks():
                written += len(chunk)
                if written > item.size:
                    raise ValueError(f"item {item.item_id}: the store yields more than its stored size")
                digest.update(chunk)
                yield chunk
            if written != item.size:
                raise ValueError(f"item {item.item_id}: the store yields {written} bytes, not {item.size}")
            items.append(
                {
                    "item_id": item.item_id,
                    "kind": item.kind,
                    "received_day": item.received_day,
                    "recipients": list(item.recipients),
                    "entry": entry,
                    "size": item.size,
                    "blake2b": digest.hexdigest(),
                }
            )
            entry += 1
        manifest_sources.append(
            {
                "source_id": source.source_id,
                "designation": source.designation,
                "reply_public_key": base64.b64encode(bytes(source.reply_public_key)).decode(),
                "items": items,
            }
        )
    manifest = json.dumps(
        {"format": "intake-export-manifest", "version": VERSION, "items": entry, "sources": manifest_sources},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    sealed = envelope.encrypt_bytes(manifest, recipients, Metadata("manifest", content_type="application/json", length=len(manifest)))
    if len(sealed) > MAX_MANIFEST_SIZE:
        raise ValueError("the manifest is too large: export fewer items at once")
    yield _EXPORT_ENTRY.pack(ENTRY_MANIFEST, len(sealed))
    yield sealed


def _check_source(source_id: object, designation: object, reply_key: bytes) -> None:
    if not isinstance(source_id, str) or not _SOURCE_ID.fullmatch(source_id):
        raise FormatError("a source id in the bundle is invalid")
    check_designation(designation)
    if len(reply_key) != 32:
        raise FormatError("a source's reply key in the bundle is invalid")


def check_designation(designation: object) -> str:
    """``designation`` if it has the server's shape, else FormatError."""
    if not isinstance(designation, str) or len(designation) > MAX_DESIGNATION or not DESIGNATION.fullmatch(designation):
        raise FormatError("a source designation in the bundle is invalid: expected lowercase words separated by single spaces, like 'brave otter'")
    return designation


def _check_item_fields(item_id: object, kind: object, day: object, recipients: object) -> None:
    if not isinstance(item_id, str) or not _SOURCE_ID.fullmatch(item_id):
        raise FormatError("an item id in the bundle is invalid")
    if kind not in ITEM_KINDS:
        raise FormatError("an item in the bundle has an unknown kind")
    if not isinstance(day, str) or not _DAY.fullmatch(day):
        raise FormatError("an item in the bundle has an invalid date")
    try:
        datetime.date.fromisoformat(day)
    except ValueError:
        raise FormatError("an item in the bundle has an invalid date") from None
    if not isinstance(recipients, list) or not 0 < len(recipients) <= envelope.MAX_RECIPIENTS:
        raise FormatError("an item in the bundle has an invalid recipient list")
    for name in recipients:
        check_name(name)


# ---------------------------------------------------------------- export: offline side


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
    version, entry types and lengths, a manifest last, nothing after it.
    """

    def __init__(self, src: BinaryIO):
        self._src = src
        self.size = src.seek(0, io.SEEK_END)
        src.seek(0)
        head = read_exact(src, len(EXPORT_MAGIC) + 1)
        if not head.startswith(EXPORT_MAGIC):
            raise FormatError("this is not an intake export bundle")
        if len(head) == len(EXPORT_MAGIC):
            raise TruncatedError("the export bundle is truncated")
        if head[-1] != VERSION:
            raise UnsupportedVersionError(f"export bundle version {head[-1]} is not supported (this toolkit reads version {VERSION})")
        self.version = head[-1]
        self.items: list[_Entry] = []
        self.manifest_entry: _Entry | None = None
        offset = len(head)
        while offset < self.size:
            src.seek(offset)
            raw = read_exact(src, _EXPORT_ENTRY.size)
            if len(raw) < _EXPORT_ENTRY.size:
                raise TruncatedError("the export bundle is truncated inside an entry header")
            kind, length = _EXPORT_ENTRY.unpack(raw)
            offset += _EXPORT_ENTRY.size
            if self.manifest_entry is not None:
                raise FormatError("the export bundle has data after its manifest")
            if kind == ENTRY_ITEM:
                if not 0 < length <= MAX_ITEM_SIZE:
                    raise FormatError("an item in the export bundle is oversized")
                if len(self.items) >= MAX_ITEMS:
                    raise FormatError("the export bundle holds too many items")
            elif kind == ENTRY_MANIFEST:
                if not 0 < length <= MAX_MANIFEST_SIZE:
                    raise FormatError("the export bundle's manifest is oversized")
            else:
                raise FormatError(f"the export bundle has an entry of unknown type {kind}")
            if offset + length > self.size:
                raise TruncatedError("the export bundle is truncated")
            entry = _Entry(kind, offset, length)
            if kind == ENTRY_ITEM:
                self.items.append(entry)
            else:
                self.manifest_entry = entry
            offset += length
        if self.manifest_entry is None:
            raise TruncatedError("the export bundle is truncated: it has no manifest")

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

    def read_manifest(self, identity: Identity) -> list[ManifestSource]:
        """Decrypt and validate the manifest; it must describe every item entry exactly once."""
        assert self.manifest_entry is not None
        reader = EnvelopeReader(_Slice(self._src, self.manifest_entry.offset, self.manifest_entry.length), identity.private_key)
        if reader.metadata.kind != "manifest":
            raise FormatError("the export bundle's manifest is not a manifest")
        data = reader.read()
        return _parse_manifest(data, self.items)

    def open_item(self, item: ManifestItem, identity: Identity) -> "ItemReader":
        entry = self.items[item.entry]
        return ItemReader(_Slice(self._src, entry.offset, entry.length), identity, item)


class ItemReader:
    """Decrypts one item. ``chunks()`` ends normally only when the envelope
    reached its FINAL message and the bytes match the manifest's hash.

    When the envelope refuses (TamperedError, or FormatError and its subclasses
    TruncatedError...), the rest of the item's bytes are read and hashed, not
    decrypted: if they match the manifest, the bundle is intact and the item was
    damaged before export, and DamagedItemError says so; otherwise the bundle is
    damaged and the envelope's own error is raised.
    """

    def __init__(self, src: "_Slice", identity: Identity, item: ManifestItem):
        self._src = src
        self._item = item
        try:
            self._reader = EnvelopeReader(src, identity.private_key)
        except (TamperedError, FormatError) as error:
            raise self._refusal(error) from None
        self.metadata = self._reader.metadata
        if self.metadata.kind != item.kind:
            raise FormatError("an item in the export bundle does not match its manifest entry")

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._reader.chunks()
        except (TamperedError, FormatError) as error:
            raise self._refusal(error) from None
        if not self._reader.complete or self._src.remaining or self._src.digest() != self._item.blake2b:
            raise TamperedError("an item in the export bundle does not match its manifest entry")

    def _refusal(self, error: KeysError) -> KeysError:
        """The envelope refused: DamagedItemError if the item's bytes are the ones the manifest lists, else ``error``."""
        while self._src.read(1 << 20):
            pass
        if self._src.digest() == self._item.blake2b:
            return DamagedItemError(str(error))
        return error


def _parse_manifest(data: bytes, entries: list[_Entry]) -> list[ManifestSource]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError("the export bundle's manifest is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != "intake-export-manifest":
        raise FormatError("the export bundle's manifest is malformed")
    if doc.get("version") != VERSION:
        raise UnsupportedVersionError(f"manifest version {doc.get('version')!r} is not supported (this toolkit reads version {VERSION})")
    if doc.get("items") != len(entries) or not isinstance(doc.get("sources"), list):
        raise FormatError("the export bundle's manifest does not match its items")
    seen: set[int] = set()
    item_ids: set[str] = set()
    source_ids: set[str] = set()
    sources = []
    try:
        for raw in doc["sources"]:
            reply_key = _b64(raw["reply_public_key"])
            _check_source(raw["source_id"], raw["designation"], reply_key)
            if raw["source_id"] in source_ids or not isinstance(raw["items"], list):
                raise FormatError("the export bundle's manifest is malformed")
            source_ids.add(raw["source_id"])
            items = []
            for it in raw["items"]:
                _check_item_fields(it["item_id"], it["kind"], it["received_day"], it["recipients"])
                index, size, digest = it["entry"], it["size"], it["blake2b"]
                if type(index) is not int or not 0 <= index < len(entries) or index in seen or it["item_id"] in item_ids:
                    raise FormatError("the export bundle's manifest does not match its items")
                if type(size) is not int or size != entries[index].length:
                    raise FormatError("the export bundle's manifest does not match its items")
                if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{%d}" % (2 * HASH_SIZE), digest):
                    raise FormatError("the export bundle's manifest is malformed")
                seen.add(index)
                item_ids.add(it["item_id"])
                items.append(
                    ManifestItem(it["item_id"], it["kind"], it["received_day"], tuple(it["recipients"]), index, size, bytes.fromhex(digest))
                )
            sources.append(ManifestSource(raw["source_id"], raw["designation"], reply_key, tuple(items)))
    except (KeyError, TypeError):
        raise FormatError("the export bundle's manifest is malformed") from None
    if len(seen) != len(entries):
        raise FormatError("the export bundle's manifest does not match its items")
    return sources


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise FormatError("a key in the bundle is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise FormatError("a key in the bundle is not base64") from None


class _Slice:
    """A read-only window of ``length`` bytes at ``offset``, hashed as it is read."""

    def __init__(self, src: BinaryIO, offset: int, length: int):
        src.seek(offset)
        self._src = src
        self.remaining = length
        self._hash = hashlib.blake2b(digest_size=HASH_SIZE)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self._src.read(size) if size else b""
        self.remaining -= len(data)
        self._hash.update(data)
        return data

    def digest(self) -> bytes:
        return self._hash.digest()


# ---------------------------------------------------------------- reply bundles


@dataclasses.dataclass(frozen=True)
class VerifiedReplies:
    journalist: str
    replies: list[tuple[str, bytes]]  # (source_id, envelope sealed to the source)


def seal_reply(text: str, source_reply_key: PublicKey | bytes) -> bytes:
    """Seal a reply's text to the source's reply public key (envelope kind "reply")."""
    body = text.encode("utf-8")
    sealed = envelope.encrypt_bytes(body, [source_reply_key], Metadata("reply", content_type="text/plain; charset=utf-8", length=len(body)))
    if len(sealed) > MAX_REPLY_ENVELOPE:
        raise FormatError("the reply is too long")
    return sealed


def write_reply_bundle(out: BinaryIO, identity: Identity, replies: Iterable[tuple[str, bytes]]) -> None:
    """Write ``replies`` (source_id, sealed envelope) signed by ``identity``."""
    digest = hashlib.blake2b(digest_size=64)

    def put(data: bytes) -> None:
        digest.update(data)
        out.write(data)

    signer = identity.name.encode("utf-8")
    put(REPLY_MAGIC + bytes([VERSION, len(signer)]) + signer)
    count = 0
    for source_id, sealed in replies:
        _check_reply(source_id, sealed)
        count += 1
        if count > MAX_REPLIES:
            raise FormatError(f"a reply bundle holds at most {MAX_REPLIES} replies")
        sid = source_id.encode("ascii")
        put(_REPLY_ENTRY.pack(ENTRY_REPLY, 1 + len(sid) + len(sealed)) + bytes([len(sid)]) + sid)
        put(sealed)
    signature = identity.signing_key.sign(SIGNATURE_CONTEXT + digest.digest()).signature
    out.write(_REPLY_ENTRY.pack(ENTRY_SIGNATURE, len(signature)) + signature)


def _check_reply(source_id: object, sealed: bytes) -> None:
    if not isinstance(source_id, str) or not _SOURCE_ID.fullmatch(source_id):
        raise FormatError("a reply in the bundle names an invalid source id")
    if not len(envelope.MAGIC) + 2 <= len(sealed) <= MAX_REPLY_ENVELOPE:
        raise FormatError("a reply in the bundle is oversized or empty")
    if not sealed.startswith(envelope.MAGIC) or sealed[len(envelope.MAGIC)] != envelope.VERSION:
        raise FormatError("a reply in the bundle is not a version 1 envelope")


@dataclasses.dataclass(frozen=True)
class _ParsedReplies:
    signer: str
    replies: list[tuple[str, bytes]]
    signed_digest: bytes
    signature: bytes | None  # None: the bundle ends where its signature should be


def _parse_reply_bundle(src: BinaryIO, accept_signer: Callable[[str], None]) -> _ParsedReplies:
    """Parse a reply bundle's framing; ``accept_signer`` may refuse the signer before the body is read."""
    digest = hashlib.blake2b(digest_size=64)
    total = 0

    def take(size: int) -> bytes:
        nonlocal total
        total += size
        if total > MAX_REPLY_BUNDLE:
            raise FormatError("the reply bundle is oversized")
        data = read_exact(src, size)
        if len(data) < size:
            raise TruncatedError("the reply bundle is truncated")
        return data

    head = read_exact(src, len(REPLY_MAGIC) + 2)
    if not head.startswith(REPLY_MAGIC):
        raise FormatError("this is not an intake reply bundle")
    if len(head) < len(REPLY_MAGIC) + 2:
        raise TruncatedError("the reply bundle is truncated")
    if head[len(REPLY_MAGIC)] != VERSION:
        raise UnsupportedVersionError(f"reply bundle version {head[len(REPLY_MAGIC)]} is not supported (this toolkit reads version {VERSION})")
    signer_raw = take(head[-1])
    try:
        signer = check_name(signer_raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError("the reply bundle names an invalid signer") from None
    accept_signer(signer)
    digest.update(head + signer_raw)
    replies: list[tuple[str, bytes]] = []
    while True:
        raw = read_exact(src, _REPLY_ENTRY.size)
        if not raw:
            return _ParsedReplies(signer, replies, digest.digest(), None)
        if len(raw) < _REPLY_ENTRY.size:
            raise TruncatedError("the reply bundle is truncated")
        total += len(raw)
        kind, length = _REPLY_ENTRY.unpack(raw)
        if kind == ENTRY_SIGNATURE:
            if length != 64:
                raise FormatError("the reply bundle's signature is malformed")
            signature = take(64)
            if read_exact(src, 1):
                raise FormatError("the reply bundle has data after its signature")
            return _ParsedReplies(signer, replies, digest.digest(), signature)
        if kind != ENTRY_REPLY:
            raise FormatError(f"the reply bundle has an entry of unknown type {kind}")
        if not 2 <= length <= 1 + 255 + MAX_REPLY_ENVELOPE:
            raise FormatError("a reply in the bundle is oversized")
        if len(replies) >= MAX_REPLIES:
            raise FormatError("the reply bundle holds too many replies")
        payload = take(length)
        digest.update(raw + payload)
        sid_len = payload[0]
        try:
            source_id = payload[1 : 1 + sid_len].decode("ascii")
        except UnicodeDecodeError:
            raise FormatError("a reply in the bundle names an invalid source id") from None
        sealed = payload[1 + sid_len :]
        _check_reply(source_id, sealed)
        replies.append((source_id, sealed))


def verify_reply_bundle(src: BinaryIO, verify_keys: Mapping[str, VerifyKey | bytes]) -> VerifiedReplies:
    """Read a reply bundle; return its replies only if a journalist in ``verify_keys`` signed it all."""

    def accept(signer: str) -> None:
        if signer not in verify_keys:
            raise UnknownSignerError(f"the reply bundle is signed by {signer!r}, who is not a registered journalist")

    parsed = _parse_reply_bundle(src, accept)
    if parsed.signature is None:
        raise BadSignatureError("the reply bundle is not signed")
    key = verify_keys[parsed.signer]
    key = key if isinstance(key, VerifyKey) else VerifyKey(bytes(key))
    try:
        key.verify(SIGNATURE_CONTEXT + parsed.signed_digest, parsed.signature)
    except NaclBadSignature:
        raise BadSignatureError(f"the reply bundle's signature by {parsed.signer!r} does not verify: it was forged or modified") from None
    return VerifiedReplies(parsed.signer, parsed.replies)


@dataclasses.dataclass(frozen=True)
class ReplyBundleInfo:
    """What a reply bundle says about itself, signature NOT checked (for ``inspect``)."""

    signer: str
    replies: int
    signed: bool


def describe_reply_bundle(src: BinaryIO) -> ReplyBundleInfo:
    parsed = _parse_reply_bundle(src, lambda signer: None)
    return ReplyBundleInfo(parsed.signer, len(parsed.replies), parsed.signature is not None)


def add_replies(path: Path, identity: Identity, new_replies: Sequence[tuple[str, bytes]]) -> int:
    """Add replies to the bundle at ``path`` (created if missing), re-verified and
    re-signed; the file is replaced atomically. Returns the number of replies."""
    replies: list[tuple[str, bytes]] = []
    if path.exists():
        with open(path, "rb") as f:
            try:
                existing = verify_reply_bundle(f, {identity.name: identity.signing_key.verify_key})
            except UnknownSignerError:
                raise UnknownSignerError(f"{path} is signed by another journalist: write your replies to a new file") from None
        replies.extend(existing.replies)
    replies.extend(new_replies)
    with PendingFile(path.parent) as pending:
        write_reply_bundle(pending, identity, replies)  # type: ignore[arg-type]
        pending.commit_replacing(path.name)
    return len(replies)
