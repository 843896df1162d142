"""Decrypt an export bundle into a folder per source.

Layout of the output folder::

    OUT/index.html                      every source and item, no scripts
    OUT/<designation>/source.json       source_id, designation, reply public key, items decrypted
    OUT/<designation>/<day> message.txt
    OUT/<designation>/<day> <sanitised original file name>

Each item is written under a hidden temporary name and renamed only after its
envelope's FINAL message verified and its bytes matched the manifest; on any
error the temporary file is removed, so nothing partial looks complete.
Decrypting the same bundle again skips items already recorded in source.json.

An item whose envelope fails to open although its bytes are exactly those the
manifest lists (the bundle is intact: the item was damaged on the server before
export) is skipped, not recorded, and listed in ``UnpackSummary.damaged``; the
other items are decrypted. Any other failure, a damaged bundle included, stops.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
from collections.abc import Callable
from pathlib import Path

from keys.bundle import ExportBundle, ManifestItem, ManifestSource
from keys.errors import DamagedItemError, FormatError
from keys.files import PendingFile, safe_file_name, safe_folder_name, with_suffix_number
from keys.identity import Identity
from keys.index import write_index
from keys.source_record import load_source_record, save_source_record

@dataclasses.dataclass
class UnpackSummary:
    sources: int = 0
    written: int = 0
    already_there: int = 0
    not_for_you: int = 0
    damaged: list["DamagedItem"] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DamagedItem:
    """An item skipped because it was damaged on the server before export. No plaintext."""

    designation: str
    source_id: str
    item_id: str
    kind: str
    received_day: str
    reason: str  # the envelope's refusal


def unpack_bundle(bundle: ExportBundle, identity: Identity, out: Path, advance: Callable[[int], None] = lambda n: None) -> UnpackSummary:
    sources = bundle.read_manifest(identity)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    summary = UnpackSummary(sources=len(sources))
    for source in sources:
        folder, record = _source_folder(out, source)
        done = {entry["item_id"] for entry in record["items"]}
        try:
            for item in source.items:
                if item.item_id in done:
                    summary.already_there += 1
                elif identity.name not in item.recipients:
                    summary.not_for_you += 1
                else:
                    try:
                        record["items"].append(_write_item(bundle, identity, folder, item, advance))
                    except DamagedItemError as error:
                        summary.damaged.append(
                            DamagedItem(source.designation, source.source_id, item.item_id, item.kind, item.received_day, str(error))
                        )
                    else:
                        summary.written += 1
                    continue
                advance(item.size)
        finally:
            # Record what is complete even when a later item fails.
            save_source_record(folder, record)
    write_index(out)
    return summary


def _write_item(bundle: ExportBundle, identity: Identity, folder: Path, item: ManifestItem, advance: Callable[[int], None]) -> dict:
    length = 0
    try:
        reader = bundle.open_item(item, identity)
        if item.kind == "message":
            name = f"{item.received_day} message.txt"
        else:
            name = f"{item.received_day} {safe_file_name(reader.metadata.name, 'file')}"
        with PendingFile(folder) as pending:
            for chunk in reader.chunks():
                pending.write(chunk)
                length += len(chunk)
                advance(len(chunk))
            path = pending.commit(name)
    except DamagedItemError:
        advance(item.size - length)  # the item was read to its end, to check its hash
        raise
    advance(item.size - length)  # the progress counts stored bytes: add the envelope's overhead
    return {
        "item_id": item.item_id,
        "kind": item.kind,
        "received_day": item.received_day,
        "file": path.name,
        "original_name": reader.metadata.name,
        "content_type": reader.metadata.content_type,
        "length": length,
    }


def _source_folder(out: Path, source: ManifestSource) -> tuple[Path, dict]:
    """The source's folder: its existing one (same source_id) or a new one.

    ``out`` itself may be a symlink (the user chose it); an entry inside it is
    used only if it is a real directory, never a symlink, whatever it points to.
    """
    base = safe_folder_name(source.designation, f"source {source.source_id}")
    for number in range(1, 1000):
        folder = out / with_suffix_number(base, number)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not _is_real_directory(folder):
                continue  # a symlink (to a folder elsewhere, or dangling), a file, a device...
            try:
                record = load_source_record(folder, missing_ok=True)
            except FormatError:
                continue  # not ours to write into
            if record is not None and record["source_id"] == source.source_id:
                return folder, record
            if record is not None or any(folder.iterdir()):
                continue
            # An empty folder without a record: ours, left by a run that stopped before its first item.
        # The record is saved once the source's items are done (unpack_bundle's finally).
        record = {
            "source_id": source.source_id,
            "designation": source.designation,
            "reply_public_key": base64.b64encode(source.reply_public_key).decode(),
            "items": [],
        }
        return folder, record
    raise FormatError(f"too many folders named like {base!r} in {out}")


def _is_real_directory(path: Path) -> bool:
    """A directory, not a symlink to one (lstat: the last component is not followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
