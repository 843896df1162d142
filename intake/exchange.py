"""The server's side of the bundles: export bundles out, reply bundles in.

Both the journalist interface and the admin CLI use these, so a download and
``intake export`` produce the same bundle and an upload and ``intake
import-replies`` apply the same checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from keys.bundle import ExportItem, ExportSource, stream_export_bundle
from keys.errors import KeysError
from keys.reply_bundle import verify_reply_bundle
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from intake.store import Store
from intake.store.newsroom import Newsroom
from intake.told import Told, told


# The page cache of the store an export reads from, while it reads and marks (Store.page_cache): at
# 100,000 items the default 2 MiB made every item cost more than at 10,000.
EXPORT_CACHE_MIB = 64


class NothingToExportError(Exception):
    """The selection holds no submission."""


class ReplyBundleRefusedError(Exception):
    """The reply bundle is not signed by an active journalist, or is damaged; nothing was imported."""

    def __init__(self, reason: KeysError):
        super().__init__(told("the reply bundle was refused: {reason}. Nothing was imported.", reason=reason))
        self.reason = reason


@dataclass(frozen=True)
class ExportScope:
    """What to export: only submissions never exported, or all; of some sources or of all."""

    only_new: bool = True
    source_ids: tuple[str, ...] | None = None

    def nothing_to_export(self) -> Told:
        """Why an export of this scope found nothing, in words the reader's language can take."""
        if self.source_ids is None:
            if self.only_new:
                return told("there are no new submissions to export (--all exports those exported before again)")
            return told("there are no submissions to export")
        count = len(self.source_ids)
        if self.only_new:
            return told("there are no new submissions of the selected sources to export (sources: {count}; --all exports "
                        "those exported before again)", count=count)
        return told("there are no submissions of the selected sources to export (sources: {count})", count=count)


class PreparedExport:
    """An export bundle ready to stream from ``store``, signed with ``signing_key`` (the server's).

    Iterate it for the bundle's bytes; call :meth:`mark_exported` only once the
    bundle is complete where it goes (the last byte sent, the file committed),
    so a download cut short marks nothing.
    """

    def __init__(self, store: Store, scope: ExportScope, signing_key: SigningKey):
        self._signing_key = signing_key
        newsroom = Newsroom(store)
        with store.page_cache(EXPORT_CACHE_MIB):
            groups = newsroom.export_groups(only_new=scope.only_new, source_ids=scope.source_ids)
        self.submission_ids = [entry.submission.id for group in groups for entry in group.entries]
        if not self.submission_ids:
            raise NothingToExportError(scope.nothing_to_export())
        self.recipients = _manifest_recipients(store, [entry.recipients for group in groups for entry in group.entries])
        self.source_count = len(groups)
        self.stored_bytes = sum(entry.submission.size for group in groups for entry in group.entries)
        self.completed = False
        self._store = store
        with store.page_cache(EXPORT_CACHE_MIB):
            ciphertexts = _BatchedCiphertexts(store, [(entry.submission.id, entry.submission.size) for group in groups for entry in group.entries])
        self._order = ciphertexts.order
        self._sources = [
            ExportSource(
                group.source.id,
                group.source.designation,
                group.source.reply_public_key,
                [_export_item(ciphertexts, entry.submission.id, entry.submission.kind, entry.submission.received_day,
                              entry.submission.size, entry.recipients) for entry in group.entries],
            )
            for group in groups
        ]

    def __iter__(self) -> Iterator[bytes]:
        with self._store.page_cache(EXPORT_CACHE_MIB):
            yield from stream_export_bundle(self.recipients, self._sources, self._signing_key, order=self._order)
        self.completed = True

    def mark_exported(self) -> int:
        if not self.completed:
            raise RuntimeError("the export bundle was not streamed to its end")
        # Each marked row updates its source's counts (migration 8): with the default cache,
        # the sources' pages went out and came back, 7-9 s for 100,000 rows against 3 s.
        with self._store.page_cache(EXPORT_CACHE_MIB):
            return Newsroom(self._store).mark_exported(self.submission_ids)


def _manifest_recipients(store: Store, item_recipients: list[list[str]]) -> list[bytes]:
    """The keys the manifest is sealed to: the active journalists', and a retired key that is the
    only way into some item of the bundle (retired with --even-if-unexported): without it in the
    manifest, nobody could open that item."""
    journalists = store.journalists()
    active = {journalist.name for journalist in journalists if journalist.active}
    needed = {name for names in item_recipients if not active.intersection(names) for name in names}
    return [journalist.public_key for journalist in journalists if journalist.active or journalist.name in needed]


def _export_item(ciphertexts: _BatchedCiphertexts, submission_id: str, kind: str, day: str, size: int, recipients: list[str]) -> ExportItem:
    return ExportItem(submission_id, kind, day, size, recipients, lambda: ciphertexts.pieces(submission_id))


class _BatchedCiphertexts:
    """The items' ciphertext, read in ``order``: the short ones in the store's own order
    (Store.ciphertext_positions), read ahead in batches of at most BATCH_ITEMS and
    BATCH_BYTES, so the store's pages are read front to back, each once; then the large
    ones, streamed piece by piece. The bundle's entries follow this order (its manifest
    says which entry is which item), so the export reads the store as it lies on disk."""

    BATCH_BYTES = 8 << 20
    BATCH_ITEMS = 2000

    def __init__(self, store: Store, planned: list[tuple[str, int]]):
        self._store = store
        positions = store.ciphertext_positions([submission_id for submission_id, _size in planned])
        whole = sorted((positions[submission_id], submission_id, size) for submission_id, size in planned if submission_id in positions)
        self._whole = [(submission_id, position, size) for position, submission_id, size in whole]
        self.order = [submission_id for submission_id, _position, _size in self._whole]
        self.order += [submission_id for submission_id, _size in planned if submission_id not in positions]
        self._index = {submission_id: number for number, (submission_id, _position, _size) in enumerate(self._whole)}
        self._batch: dict[str, bytes] = {}

    def pieces(self, submission_id: str) -> Iterator[bytes]:
        whole = self._batch.pop(submission_id, None)
        if whole is None and submission_id in self._index and not self._batch:
            self._read_ahead(self._index[submission_id])
            whole = self._batch.pop(submission_id, None)
        if whole is None:  # stored in pieces (large), or deleted since: the store says which
            return self._store.submission_ciphertext(submission_id)
        return iter((whole,))

    def _read_ahead(self, start: int) -> None:
        wanted, budget = [], self.BATCH_BYTES
        for submission_id, position, size in self._whole[start : start + self.BATCH_ITEMS]:
            if size > budget and wanted:
                break
            wanted.append((submission_id, position))
            budget -= size
        self._batch = self._store.ciphertexts_at(wanted)


@dataclass(frozen=True)
class SourceImport:
    source_id: str
    designation: str | None  # None: no such source here (deleted, or never existed)
    added: int
    duplicates: int
    missing: int


@dataclass(frozen=True)
class ImportReport:
    journalist: str
    per_source: list[SourceImport]

    @property
    def added(self) -> int:
        return sum(line.added for line in self.per_source)

    @property
    def duplicates(self) -> int:
        return sum(line.duplicates for line in self.per_source)

    @property
    def missing(self) -> int:
        return sum(line.missing for line in self.per_source)


def import_reply_bundle(store: Store, src: BinaryIO, box_keys: Sequence[PrivateKey]) -> ImportReport:
    """Verify a reply bundle against the active journalists' signing keys, open each
    reply's routing with the server's ``box_keys``, then store the replies for
    existing sources in one transaction."""
    newsroom = Newsroom(store)
    try:
        verified = verify_reply_bundle(src, newsroom.verify_keys(), box_keys)
    except KeysError as error:
        raise ReplyBundleRefusedError(error) from None
    counts = newsroom.import_replies(verified.journalist, verified.replies)
    designations = newsroom.designations(counts)
    return ImportReport(
        verified.journalist,
        [SourceImport(source_id, designations.get(source_id), c.added, c.duplicates, c.missing)
         for source_id, c in counts.items()],
    )


def selected_sources(values: Sequence[str]) -> tuple[str, ...]:
    """Source ids from a form or the command line, deduplicated, order kept."""
    return tuple(dict.fromkeys(value.strip() for value in values if value.strip()))
