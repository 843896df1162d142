"""Export bundles (server -> laptop), version 2: signed by the server.

Everything is ciphertext, the manifest included; the server's Ed25519 key signs
a hash of every byte before the signature::

    export = MAGIC "INTAKE-X" | version u8 = 2 | entry* | manifest entry | signature entry
    entry  = type u8 | length u64be | payload
             type 1 (item):      payload = one stored envelope, verbatim
             type 2 (manifest):  payload = envelope of kind "manifest" (JSON), exactly once
             type 3 (signature): payload = server verify key (32) | server box key (32)
                                           | Ed25519 signature (64); last
    signature = Ed25519("intake-export-bundle-v2" || BLAKE2b-512(every byte before the signature entry))

The manifest comes after the items so the server can stream them straight from
its store and hash them on the way; it binds every item entry (index, size,
BLAKE2b-256) to its source. The signature makes the whole bundle the server's:
without it anyone holding the journalists' public keys could rebuild a manifest
around genuine items. This module writes bundles (the server's side) and checks the
manifest's fields; ``keys.bundle_reader`` verifies and reads them on the laptop. Reply
bundles are in ``keys.reply_bundle``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence

from nacl.public import PublicKey
from nacl.signing import SigningKey

from keys import envelope
from keys.envelope import Metadata
from keys.errors import FormatError
from keys.identity import check_name
from keys.server_key import ServerPublicKey
from keys.told import told

EXPORT_MAGIC = b"INTAKE-X"
VERSION = 2
MANIFEST_VERSION = 1
ENTRY_ITEM = 1
ENTRY_MANIFEST = 2
ENTRY_SIGNATURE = 3
SIGNATURE_ENTRY_LENGTH = 32 + 32 + 64  # verify key, box key, signature
SIGNATURE_CONTEXT = b"intake-export-bundle-v2"
ITEM_KINDS = ("message", "file")

MAX_ITEM_SIZE = 1 << 40  # 1 TiB: far above any upload, far below u64 tricks
MAX_ITEMS = 1_000_000
MAX_MANIFEST_SIZE = 256 << 20
MAX_DESIGNATION = 64
MAX_SOURCE_ID = 128
HASH_SIZE = 32

EXPORT_ENTRY = struct.Struct(">BQ")
SOURCE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,%d}" % MAX_SOURCE_ID)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The server makes designations as "adjective noun" from the diceware package's word lists
# (intake/store/designations.py): lowercase ASCII words and single spaces; up to four words
# are accepted. A designation names a folder on the laptop and appears in suggested
# commands, so a manifest can carry no shell, HTML or path metacharacters through it.
DESIGNATION = re.compile(r"[a-z]+( [a-z]+){0,3}")


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


def stream_export_bundle(recipients: Sequence[PublicKey | bytes], sources: Iterable[ExportSource], server_key: SigningKey,
                         order: Sequence[str] | None = None) -> Iterator[bytes]:
    """Yield an export bundle piece by piece: items as they come from the store,
    the manifest sealed to ``recipients``, then the server's signature over all of
    it (``server_key``, made from the server's seed). Memory holds the manifest only.
    ``order``: every item id once, in the order the item entries are to be streamed
    (the order the store reads fastest in); by default, the sources' order.

    A store that yields other bytes than announced raises ValueError mid-stream;
    the bundle then has no manifest and no signature, and every reader refuses it.
    """
    server = ServerPublicKey.from_seed(bytes(server_key))  # bytes(SigningKey) is its seed
    signed = hashlib.blake2b(digest_size=64)
    for piece in _unsigned_export(recipients, list(sources), order):
        signed.update(piece)
        yield piece
    signature = server_key.sign(SIGNATURE_CONTEXT + signed.digest()).signature
    yield EXPORT_ENTRY.pack(ENTRY_SIGNATURE, SIGNATURE_ENTRY_LENGTH) + bytes(server.verify_key) + bytes(server.encryption_key) + signature


def _unsigned_export(recipients: Sequence[PublicKey | bytes], sources: list[ExportSource], order: Sequence[str] | None) -> Iterator[bytes]:
    items: dict[str, ExportItem] = {}
    for source in sources:  # every check before the first byte
        check_source(source.source_id, source.designation, bytes(source.reply_public_key))
        for item in source.items:
            check_item_fields(item.item_id, item.kind, item.received_day, item.recipients)
            if item.item_id in items:
                raise ValueError(f"item {item.item_id}: listed twice")
            if not 0 < item.size <= MAX_ITEM_SIZE:
                raise ValueError(f"item {item.item_id}: invalid stored size {item.size}")
            items[item.item_id] = item
    if len(items) > MAX_ITEMS:
        raise ValueError(f"an export bundle holds at most {MAX_ITEMS} items")
    if order is None:
        order = list(items)
    elif len(order) != len(items) or set(order) != set(items):
        raise ValueError("the order of the items must name every item once")
    yield EXPORT_MAGIC + bytes([VERSION])
    entries: dict[str, tuple[int, str]] = {}  # item id -> (entry, BLAKE2b-256)
    for entry, item_id in enumerate(order):
        item = items[item_id]
        yield EXPORT_ENTRY.pack(ENTRY_ITEM, item.size)
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
        entries[item_id] = (entry, digest.hexdigest())
    manifest_sources = [
        {
            "source_id": source.source_id,
            "designation": source.designation,
            "reply_public_key": base64.b64encode(bytes(source.reply_public_key)).decode(),
            "items": [
                {
                    "item_id": item.item_id,
                    "kind": item.kind,
                    "received_day": item.received_day,
                    "recipients": list(item.recipients),
                    "entry": entries[item.item_id][0],
                    "size": item.size,
                    "blake2b": entries[item.item_id][1],
                }
                for item in source.items
            ],
        }
        for source in sources
    ]
    manifest = json.dumps(
        {"format": "intake-export-manifest", "version": MANIFEST_VERSION, "items": len(entries), "sources": manifest_sources},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    sealed = envelope.encrypt_bytes(manifest, recipients, Metadata("manifest", content_type="application/json", length=len(manifest)))
    if len(sealed) > MAX_MANIFEST_SIZE:
        raise ValueError("the manifest is too large: export fewer items at once")
    yield EXPORT_ENTRY.pack(ENTRY_MANIFEST, len(sealed))
    yield sealed


def check_source(source_id: object, designation: object, reply_key: bytes) -> None:
    if not isinstance(source_id, str) or not SOURCE_ID.fullmatch(source_id):
        raise FormatError(told("a source id in the bundle is invalid"))
    check_designation(designation)
    if len(reply_key) != 32:
        raise FormatError(told("a source's reply key in the bundle is invalid"))


def check_designation(designation: object) -> str:
    """``designation`` if it has the server's shape, else FormatError."""
    if not isinstance(designation, str) or len(designation) > MAX_DESIGNATION or not DESIGNATION.fullmatch(designation):
        raise FormatError(told("a source designation in the bundle is invalid: expected lowercase words separated by single spaces, like 'brave otter'"))
    return designation


def check_item_fields(item_id: object, kind: object, day: object, recipients: object) -> None:
    if not isinstance(item_id, str) or not SOURCE_ID.fullmatch(item_id):
        raise FormatError(told("an item id in the bundle is invalid"))
    if kind not in ITEM_KINDS:
        raise FormatError(told("an item in the bundle has an unknown kind"))
    if not isinstance(day, str) or not _DAY.fullmatch(day):
        raise FormatError(told("an item in the bundle has an invalid date"))
    try:
        datetime.date.fromisoformat(day)
    except ValueError:
        raise FormatError(told("an item in the bundle has an invalid date")) from None
    if not isinstance(recipients, list) or not 0 < len(recipients) <= envelope.MAX_RECIPIENTS:
        raise FormatError(told("an item in the bundle has an invalid recipient list"))
    for name in recipients:
        check_name(name)
    if len(set(recipients)) != len(recipients):
        raise FormatError(told("an item in the bundle names a recipient twice"))
