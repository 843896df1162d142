"""Decrypt an export bundle into a folder per source.

Layout of the output folder::

    OUT/index.html                      every source and item, no scripts (keys.cleaning.triage, after)
    OUT/<designation>/source.json       source_id, designation, reply public key, server key, items decrypted
    OUT/<designation>/<day> message.txt
    OUT/<designation>/<day> <sanitised original file name>

The caller has checked the server's signature (``ExportBundle.verify``). Then,
before anything is written: the manifest is read, the sources are checked
against the laptop's pins, and every item is opened far enough to read its
record (a record that breaks the rules refuses the whole bundle). An item
counts as for this journalist when its envelope opens with their key, whatever
the manifest's recipient list says.

Each item is written under a hidden temporary name and renamed only after its
envelope's FINAL message verified and its bytes matched the manifest; on any
error the temporary file is removed, so nothing partial looks complete. Items
are named in batches, each made durable first (see BATCH_ITEMS), so a crash
leaves no partial file under a final name either.
Decrypting the same bundle again skips items already recorded in source.json.

An item whose envelope fails to open although its bytes are exactly those the
manifest lists (the bundle is intact: the item was damaged on the server before
export) is skipped, not recorded, and listed in ``UnpackSummary.damaged``; the
other items are decrypted. Any other failure stops.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from keys.bundle_reader import ExportBundle, ManifestItem, ManifestSource
from keys.errors import DamagedItemError, FormatError, PinnedSourceError, WrongKeyError
from keys.files import (
    TEMP_PREFIX,
    FreeNames,
    PendingFile,
    fsync_folders,
    safe_file_name,
    safe_folder_name,
    sync_all,
    with_suffix_number,
)
from keys.identity import Identity
from keys.pins import check_and_pin
from keys.source_record import load_source_record, save_source_record
from keys.told import told
from keys.workers import Team, worker_count


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
    order: tuple[int, int] = dataclasses.field(default=(0, 0), compare=False, repr=False)  # (source, item) in the manifest


def unpack_bundle(
    bundle: ExportBundle, identity: Identity, out: Path, secret_key_file: Path, advance: Callable[[int], None] = lambda n: None,
    workers: int | None = None,
) -> UnpackSummary:
    """Decrypt ``bundle`` (its signature verified) into ``out``; ``secret_key_file`` is the secret key
    file beside which the source pins live. ``workers``: processes to share the work (default: one
    per CPU for a bundle of many items, where the system can fork; see keys.workers)."""
    assert bundle.server is not None, "verify the bundle's signature first"
    sources = bundle.read_manifest(identity)
    summary = UnpackSummary(sources=len(sources))
    shares = [_Share(bundle, identity, out, part) for part in _partition(sources, workers)]
    try:
        with Team(shares) as team:
            for planned in team.run("plan", advance):
                summary.already_there += planned[0]
                summary.not_for_you += planned[1]
            check_and_pin(secret_key_file, sources)
            # Nothing was written before this line.
            out.mkdir(mode=0o700, parents=True, exist_ok=True)
            for written, damaged in team.run("write", advance, bundle.server.fingerprint):
                summary.written += written
                summary.damaged += damaged
    finally:
        _remove_partial_files(out)
    summary.damaged.sort(key=lambda item: item.order)
    return summary


def _remove_partial_files(out: Path) -> None:
    """Once every process has ended, a file still under its temporary name is plaintext that was
    never finished (a process killed in the middle of an item, this run or an earlier one)."""
    if out.is_dir():
        for partial in out.rglob(f"{TEMP_PREFIX}*"):
            partial.unlink(missing_ok=True)


# A bundle of fewer items is decrypted in this process: forking would cost more than it saves.
PARALLEL_ITEMS = 256


def _partition(sources: list[ManifestSource], workers: int | None) -> list[list[tuple[int, ManifestSource]]]:
    """The sources in ``workers`` shares of about equal work, keeping together every source whose
    folder could take the same name (same designation), so no two processes compete for a folder."""
    items = sum(len(source.items) for source in sources)
    count = workers if workers is not None else (worker_count() if items >= PARALLEL_ITEMS else 1)
    groups: dict[str, list[tuple[int, ManifestSource]]] = {}
    for number, source in enumerate(sources):
        groups.setdefault(_folder_base(source), []).append((number, source))
    shares: list[list[tuple[int, ManifestSource]]] = [[] for _ in range(max(1, min(count, len(groups))))]
    loads = [0] * len(shares)
    # Heaviest first, each to the lightest share; an item weighs its bytes plus a file's creation.
    for group in sorted(groups.values(), key=_weight, reverse=True):
        lightest = loads.index(min(loads))
        shares[lightest] += group
        loads[lightest] += _weight(group)
    return [sorted(share, key=lambda pair: pair[0]) for share in shares]


def _weight(group: list[tuple[int, ManifestSource]]) -> int:
    return sum(item.size + (64 << 10) for _number, source in group for item in source.items)


class _Share:
    """Some of the bundle's sources, planned then written by one process (keys.workers.Team)."""

    def __init__(self, bundle: ExportBundle, identity: Identity, out: Path, sources: list[tuple[int, ManifestSource]]):
        self._bundle, self._identity, self._out, self._sources = bundle, identity, out, sources
        self._plans: list[_SourcePlan] = []

    def plan(self, advance: Callable[[int], None], stopped: Callable[[], bool]) -> tuple[int, int]:
        """Decide, writing nothing, which items to decrypt; refuse a forged record.
        Returns (already decrypted, not for this journalist). ``stopped``: asked between sources."""
        counts = [0, 0]
        for number, source in self._sources:
            if stopped():
                break
            self._plans.append(_plan_source(self._bundle, self._identity, self._out, number, source, counts, advance))
        return counts[0], counts[1]

    def write(self, advance: Callable[[int], None], stopped: Callable[[], bool], server_key: str) -> tuple[int, list[DamagedItem]]:
        """Decrypt the planned items; returns (written, damaged). ``stopped``: asked between items."""
        written, damaged = 0, []
        batch = _Batch()
        try:
            for plan in self._plans:
                if stopped():
                    break
                if not plan.items and plan.record is None:
                    continue  # nothing for this journalist, and no folder yet: none is made
                folder, record = _source_folder(self._out, plan.source)
                record["server_key"] = server_key  # replies go to the server that sent the source last
                target = batch.target(folder, record)
                for item in plan.items:
                    if stopped():
                        break
                    try:
                        batch.add(target, _write_item(self._bundle, self._identity, folder, item, plan.file_keys.pop(item.entry), advance))
                    except DamagedItemError as error:
                        damaged.append(_damaged(plan, item, error.args[0] if len(error.args) == 1 else str(error)))
                    if batch.full:
                        written += batch.flush()
        finally:
            # Name and record what is complete even when a later item fails.
            try:
                written += batch.flush()
            finally:
                batch.abort()
        return written, damaged


# Items are written under temporary names, made durable together (one round of fsyncs
# for a batch, in parallel, across sources), then named, then recorded: a crash leaves
# temporary files, never a partial file under its final name, and no record of a
# missing file. (A record is not fsynced: lost, it is redone by decrypting again.)
BATCH_ITEMS = 512
BATCH_BYTES = 64 << 20


@dataclasses.dataclass
class _Written:
    """A decrypted item, complete and verified, still under its temporary name."""

    pending: PendingFile
    name: str
    item: ManifestItem
    original_name: str | None
    content_type: str | None
    length: int


@dataclasses.dataclass
class _Target:
    folder: Path
    record: dict
    names: FreeNames


class _Batch:
    def __init__(self) -> None:
        self._written: list[tuple[_Target, _Written]] = []
        self._bytes = 0
        self._touched: dict[Path, _Target] = {}

    def target(self, folder: Path, record: dict) -> _Target:
        # Saved now: the folder is this source's before any other source looks for a free one.
        save_source_record(folder, record)
        return _Target(folder, record, FreeNames(folder))

    def add(self, target: _Target, written: _Written) -> None:
        self._touched[target.folder] = target
        self._written.append((target, written))
        self._bytes += written.length

    @property
    def full(self) -> bool:
        return len(self._written) >= BATCH_ITEMS or self._bytes >= BATCH_BYTES

    def flush(self) -> int:
        """Make the files durable, name them, make the names durable, save the records."""
        sync_all([written.pending for _target, written in self._written])
        named: dict[Path, None] = {}
        for target, written in self._written:
            path = written.pending.commit(written.name, first_number=target.names.first_free(written.name))
            target.names.take(path)
            named[target.folder] = None
            target.record["items"].append({
                "item_id": written.item.item_id,
                "kind": written.item.kind,
                "received_day": written.item.received_day,
                "file": path.name,
                "original_name": written.original_name,
                "content_type": written.content_type,
                "length": written.length,
            })
        fsync_folders(list(named))
        for target in self._touched.values():
            save_source_record(target.folder, target.record)
        count = len(self._written)
        self._written, self._bytes, self._touched = [], 0, {}
        return count

    def abort(self) -> None:
        for _target, written in self._written:
            written.pending.abort()
        self._written = []


@dataclasses.dataclass
class _SourcePlan:
    number: int  # the source's place in the manifest
    source: ManifestSource
    record: dict | None  # the source's existing record in ``out``, if any
    items: list[ManifestItem]  # to decrypt
    file_keys: dict[int, bytes]  # by item entry: found while planning, so each envelope's stanzas are tried once


def _plan_source(bundle: ExportBundle, identity: Identity, out: Path, number: int, source: ManifestSource, counts: list[int],
                 advance: Callable[[int], None]) -> _SourcePlan:
    """Decide, writing nothing, which of the source's items to decrypt; refuse a forged record.
    ``counts``: [already decrypted, not for this journalist], added to."""
    found = _existing_source_folder(out, source)
    record = found[1] if found else None
    done = {entry["item_id"] for entry in record["items"]} if record else set()
    plan = _SourcePlan(number, source, record, [], {})
    for item in source.items:
        if item.item_id in done:
            counts[0] += 1
            advance(item.size)
            continue
        try:
            reader = bundle.open_item(item, identity, keep_file_key=True, record_only=True)  # header and record, no more
            reader.close()  # the first message's plaintext, body included, is not left in memory
            plan.file_keys[item.entry] = reader.file_key
        except WrongKeyError:
            counts[1] += 1
            advance(item.size)
            continue
        except DamagedItemError:
            plan.file_keys[item.entry] = None  # found again, and reported, when it is written
        plan.items.append(item)
    return plan


def _damaged(plan: _SourcePlan, item: ManifestItem, reason: str) -> "DamagedItem":
    source = plan.source
    return DamagedItem(source.designation, source.source_id, item.item_id, item.kind, item.received_day, reason,
                       (plan.number, source.items.index(item)))


def _write_item(bundle: ExportBundle, identity: Identity, folder: Path, item: ManifestItem, file_key: bytes | None,
                advance: Callable[[int], None]) -> _Written:
    """Decrypt an item into a temporary file, verified to its end; the caller names it."""
    length = 0
    pending = None

    def wrote(count: int) -> None:
        nonlocal length
        length += count
        advance(count)

    try:
        reader = bundle.open_item(item, identity, file_key=file_key)
        if item.kind == "message":
            name = f"{item.received_day} message.txt"
        else:
            name = f"{item.received_day} {safe_file_name(reader.metadata.name, 'file')}"
        pending = PendingFile(folder)
        reader.write_to(pending, wrote)
        pending.start_writeback()
    except BaseException as error:
        if pending is not None:
            pending.abort()
        if isinstance(error, DamagedItemError):
            advance(item.size - length)  # the item was read to its end, to check its hash
        raise
    advance(item.size - length)  # the progress counts stored bytes: add the envelope's overhead
    return _Written(pending, name, item, reader.metadata.name, reader.metadata.content_type, length)


def _folder_base(source: ManifestSource) -> str:
    return safe_folder_name(source.designation, f"source {source.source_id}")


def _candidates(out: Path, source: ManifestSource) -> Iterator[Path]:
    base = _folder_base(source)
    for number in range(1, 1000):
        yield out / with_suffix_number(base, number)
    raise FormatError(told("too many folders named like {base!r} in {out}", base=base, out=out))


def _existing_source_folder(out: Path, source: ManifestSource) -> tuple[Path, dict] | None:
    """The folder in ``out`` already holding this source's record, if any (nothing is written)."""
    for folder in _candidates(out, source):
        if not os.path.lexists(folder):
            return None
        if not _is_real_directory(folder):
            continue
        try:
            record = load_source_record(folder, missing_ok=True)
        except FormatError:
            continue
        if record is not None and record["source_id"] == source.source_id:
            if base64.b64decode(record["reply_public_key"]) != source.reply_public_key:
                raise PinnedSourceError(told(
                    "REFUSED: this bundle changes the reply key of source {source_id}, decrypted before into {folder}; "
                    "it may be forged: nothing was written, tell your security contact",
                    source_id=source.source_id, folder=folder))
            return folder, record
    return None


def _source_folder(out: Path, source: ManifestSource) -> tuple[Path, dict]:
    """The source's folder: its existing one (same source_id) or a new one.

    ``out`` itself may be a symlink (the user chose it); an entry inside it is
    used only if it is a real directory, never a symlink, whatever it points to.
    """
    found = _existing_source_folder(out, source)
    if found is not None:
        return found
    for folder in _candidates(out, source):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not _is_real_directory(folder):
                continue  # a symlink (to a folder elsewhere, or dangling), a file, a device...
            try:
                record = load_source_record(folder, missing_ok=True)
            except FormatError:
                continue  # not ours to write into
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
    raise AssertionError("unreachable: _candidates raises when it runs out")
def _is_real_directory(path: Path) -> bool:
    """A directory, not a symlink to one (lstat: the last component is not followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
