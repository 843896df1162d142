"""Storing and publishing uploads, and giving their space back: part of `Store` (store.py).

A submission of up to INLINE_BYTES is stored and published in one transaction. A larger one
keeps its envelope's header in the database and writes the rest, piece by piece, into slots
of the slots file, which a short transaction claims (slot_table.py); it becomes visible in one
last short transaction, after one fdatasync of the file. While one piece is claimed and
written in an OS thread, the caller reads and encrypts the next (at most one piece in flight
per store).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
from typing import TYPE_CHECKING

from intake.store import processes, slot_table
from intake.store.connection import Connection, begin_write, empty_wal, translate_errors, write_transaction
from intake.store.errors import SourceGoneError, StoreError
from intake.store.group_commit import group_for
from intake.store.records import random_rowid, today
from intake.store.slots_file import SLOT_BYTES, SlotsFile
from intake.store.submission_writer import INLINE_BYTES, SubmissionWriter
from intake.told import told
from intake.worker_threads import Running, run_in_os_thread, start_in_os_thread

if TYPE_CHECKING:
    from intake.config import Settings

log = logging.getLogger(__name__)
# An upload claims the slots of its next piece and, ahead, as many as it already has, up to this
# many more (16 MiB): a few claims per upload (one transaction each on the main database), and
# at most this many slots to fill with random bytes at the publish, those it did not write.
_MAX_AHEAD_SLOTS = 64


class UploadWrites:
    """Store's writes of uploads. Store provides the connection, settings and piece in flight, and
    the helpers used here: _read, _write, _settle, _legacy_blobs, _slots, existing_submissions."""

    _conn: Connection
    _settings: Settings
    _in_flight: Running[None] | None

    def _insert_pending(self, conn: Connection, upload: SubmissionWriter, *, writer: str | None) -> None:
        if not conn.execute("SELECT 1 FROM sources WHERE id = ?", (upload.source_id,)).fetchone():
            # Deleted after this upload began: the codename exchanged in another tab, or by the newsroom.
            raise SourceGoneError(told("the source of this upload was deleted while it arrived"))
        # Two statements whatever the number of journalists (migration 7): the set is written once.
        members = json.dumps(sorted(upload.journalist_ids), separators=(",", ":"))
        conn.execute("INSERT INTO recipient_sets (members) VALUES (?) ON CONFLICT (members) DO NOTHING", (members,))
        conn.execute(
            "INSERT INTO submissions (id, source_id, kind, received_day, state, writer, position, sealed_to)"
            " VALUES (?, ?, ?, ?, 'pending', ?, (SELECT coalesce(max(position), 0) + 1 FROM submissions WHERE source_id = ?), ?)",
            (upload.id, upload.source_id, upload.kind, today(), writer, upload.source_id, members),
        )

    def _append(self, upload: SubmissionWriter, buffer: mmap.mmap, start: int, length: int) -> None:
        """Store the upload's next piece, ``buffer[start:start + length]``, in the background (see
        _store_piece): its first piece starts with the envelope's header, which goes to the main
        database with the pending row; the rest fills whole slots of the slots file (a short last
        piece is padded with random bytes in the buffer, so the slot shows neither where the
        envelope ends nor its size). What goes wrong there is raised by the next call.
        """
        self._settle()  # the write in flight ends (or raises) first
        head = min(upload._header_bytes, length) if not upload._stored else 0
        body = start + head  # on a page boundary (HEADER_ROOM), as O_DIRECT needs
        needed = -(-(length - head) // SLOT_BYTES)
        unwritten = len(upload._slots) - upload._used
        claim = needed - unwritten + min(len(upload._slots), _MAX_AHEAD_SLOTS) if needed > unwritten else 0
        # A claim's commit waits for two fsyncs (about 20 ms on this VM): run here, under a gevent
        # worker, it froze every connection of the worker meanwhile, so the OS thread runs it.
        # The write lock is taken here first: its wait sleeps on this greenlet, where in the
        # thread it would hold one of the few threads that also derive keys and publish.
        transaction = bool(head or claim)
        if transaction:
            begin_write(self._conn)
        try:
            slots_file = self._slots()
            if not upload._stored:
                upload._written_to = (slots_file, slots_file.sync_failures)
            upload._stored += length
            end, padded = start + length, body + needed * SLOT_BYTES
            if padded > end:
                buffer[end:padded] = os.urandom(padded - end)
            self._in_flight = start_in_os_thread(self._store_piece, upload, slots_file, buffer, start, body, needed, claim)
        except BaseException:
            if transaction:
                with translate_errors():
                    self._conn.execute("ROLLBACK")
            raise

    def _store_piece(self, upload: SubmissionWriter, slots_file: SlotsFile, buffer: mmap.mmap, start: int, body: int,
                     needed: int, claim: int) -> None:
        """_append's work, in an OS thread (the caller settles it before it touches the upload's
        slots again): claim ``claim`` more slots, then write the piece into the next ``needed``.
        Slots are claimed before they are written, in a transaction that also records the pending
        row first (with the envelope's header, the first piece's first bytes), so every written
        slot belongs to a row until that row is deleted, and recovery frees it. The caller took
        the write lock for them (begin_write)."""
        first = body > start
        if first or claim:
            with write_transaction(self._conn, begun=True) as conn:
                if not first and not conn.execute("SELECT 1 FROM submissions WHERE id = ? AND state = 'pending'", (upload.id,)).fetchone():
                    raise StoreError(told("the upload was removed before it completed: please send it again"))
                if first:
                    self._insert_pending(conn, upload, writer=processes.current_writer())
                    conn.execute("INSERT INTO submission_chunks (rowid, submission_id, seq, data) VALUES (?, ?, 0, ?)",
                                 (random_rowid(), upload.id, buffer[start:body]))
                if claim:
                    upload._slots += slot_table.claim(conn, upload.id, len(upload._slots), claim)
            # The pages this transaction cached are not needed again until the next claim or the
            # publish, which may be minutes away over Tor (~150 KiB per upload in flight, measured
            # on the blobs branch).
            with translate_errors():
                self._conn.execute("PRAGMA shrink_memory")
        if needed:
            slots = upload._slots[upload._used : upload._used + needed]
            upload._used += needed
            slots_file.write(slots, buffer, body)

    def commit_together(self, uploads: list[SubmissionWriter]) -> tuple[str, ...]:
        """Make several submissions (the parts of one request) visible in one transaction:
        all of them, or (on any error, or a crash) none. Those with nothing stored yet stay
        in the main database whole only while they add up to INLINE_BYTES, so the write lock
        stays short; the others end in the slots file."""
        buffered = [upload._buffered() for upload in uploads]
        budget = INLINE_BYTES
        to_slots = []
        for upload, size in zip(uploads, buffered):
            to_slots.append(bool(upload._stored) or size > budget)
            budget -= 0 if to_slots[-1] else size
        # Positions are given as rows are first stored: a part with nothing stored yet that comes
        # before one whose rest goes to the slots file goes there too, so the parts keep their order.
        last = max((i for i, slotted in enumerate(to_slots) if slotted), default=-1)
        pieces = []
        for i, (upload, size) in enumerate(zip(uploads, buffered)):
            first, whole = not upload._stored, None
            if size and (to_slots[i] or i < last):
                upload._hand_over_rest()
            elif size:
                whole = upload._rest()
            pieces.append((upload, whole, upload.size, first and not upload._stored))
        self._publish(pieces)
        for upload in uploads:
            upload._published()
        return tuple(upload.id for upload in uploads)

    def _publish(self, pieces: list[tuple[SubmissionWriter, bytes | None, int, bool]]) -> None:
        """Make the uploads visible (with each one stored whole in the database), in one
        transaction, once everything written to the slots file is durable."""
        self._settle()
        if any(upload._slots for upload, *_ in pieces):  # a short message has none: nothing to do here
            slots_file = self._slots()
            for upload, *_ in pieces:
                if len(upload._slots) > upload._used:  # claimed ahead, not written: random bytes, no hole
                    run_in_os_thread(slots_file.fill_random, upload._slots[upload._used :])
            if any(upload._used for upload, *_ in pieces):
                run_in_os_thread(slots_file.sync)
                # A failed sync since the upload first wrote, or a slots file replaced meanwhile (its
                # first slots went to the old one): either way it is not all on the disk.
                if any(upload._used and upload._written_to != (slots_file, slots_file.sync_failures) for upload, *_ in pieces):
                    raise StoreError(told("the disk failed to keep an upload: please send it again"))
        group_for(self._settings.db_path).publish(self._conn, lambda conn: self._publish_in(conn, pieces))

    def _publish_in(self, conn: Connection, pieces: list[tuple[SubmissionWriter, bytes | None, int, bool]]) -> None:
        """_publish's writes, inside the (perhaps shared) transaction of intake.store.group_commit."""
        for upload, whole, size, first in pieces:
            ids = sorted(upload.journalist_ids)
            if not conn.execute(f"SELECT 1 FROM journalists WHERE active = 1 AND id IN ({','.join('?' * len(ids))}) LIMIT 1",
                                ids).fetchone():
                # Every key it was sealed to was retired while it arrived (a key rotation): nobody would
                # be meant to open it, and the export's manifest is sealed to active keys.
                raise StoreError(told("the newsroom's keys changed while this was sent: please send it again"))
            if first:
                # Pending only inside this transaction, so no other process ever sees it without a writer.
                self._insert_pending(conn, upload, writer=None)
            updated = conn.execute(
                "UPDATE submissions SET state = 'ready', size = ?, writer = NULL WHERE id = ? AND state = 'pending'",
                (size, upload.id),
            ).rowcount
            if updated != 1:  # checked before its envelope, whose row would otherwise refer to nothing
                raise StoreError(told("the upload was removed before it completed: please send it again"))
            if whole is not None:
                conn.execute("INSERT INTO submission_chunks (rowid, submission_id, seq, data) VALUES (?, ?, 0, ?)",
                             (random_rowid(), upload.id, whole))
            if upload._slots:
                slot_table.publish(conn, upload.id, upload._used)
        for source_id in {upload.source_id for upload, *_ in pieces}:
            conn.execute(
                "UPDATE sources SET last_active_day = ? WHERE id = ? AND last_active_day != ?",
                (today(), source_id, today()),
            )

    def _discard(self, upload: SubmissionWriter) -> None:
        try:
            self._settle()
        except Exception:  # noqa: BLE001 - a failed chunk write is often why the upload is discarded
            pass
        # Else a write whose wait was cut short may still land: its slots wait for this process to end.
        nothing_in_flight = self._in_flight is None

        def remove(conn: Connection) -> None:
            conn.execute("DELETE FROM submissions WHERE id = ? AND state = 'pending'", (upload.id,))
            if nothing_in_flight:
                slot_table.let_go(conn, upload._slots)  # nothing of this upload writes them any more

        self._write(remove)  # an upload cut off over Tor is common: its commit too runs off the loop
        self._reclaim_space()

    def recover(self) -> int:
        """Remove uploads left pending by a process that died, and free their space.

        Uploads still being written by a live process (another worker) are kept.
        Returns how many were removed.
        """
        pending = self._read("SELECT id, writer FROM submissions WHERE state = 'pending'")
        orphans = [(submission_id,) for submission_id, writer in pending if not processes.writer_alive(writer)]
        if orphans:
            with write_transaction(self._conn) as conn:
                conn.executemany("DELETE FROM submissions WHERE id = ? AND state = 'pending'", orphans)
        self._reclaim_space()
        return len(orphans)

    def _reclaim_space(self) -> None:
        """Overwrite the slots of submissions that are gone (deleted, discarded, or left by a
        dead writer) and give their space back; delete blobs-database chunks whose submission
        is gone; then give freed pages back to the file system. In an OS thread: freeing a
        large upload rewrites its slots (and, with secure_delete, pages)."""
        self._settle()
        failure = run_in_os_thread(self._reclaim_space_now, self._legacy_blobs())
        if failure is not None:  # logged here: logging's locks are gevent's, which hang OS threads (os_thread_lock)
            log.warning("freed space was not reclaimed yet: %s", failure)

    def _reclaim_space_now(self, blobs: Connection | None) -> str | None:
        """_reclaim_space's work, in an OS thread; what went wrong, if anything. On a full (or
        failing) disk each step may fail: what is left is done at a later reclaim."""
        failure = None
        try:
            if self._read("SELECT 1 FROM slots LIMIT 1"):
                slots = self._slots()
                with slots.cleaning() as alone:
                    if alone:
                        slot_table.clean_freed(self._conn, slots.free, slots.truncate)
                        slots.sync()
            if blobs is not None:
                with translate_errors():
                    stored = [row[0] for row in blobs.execute("SELECT DISTINCT submission_id FROM chunks").fetchall()]
                gone = set(stored) - self.existing_submissions(stored)
                if gone:
                    with write_transaction(blobs) as conn:
                        conn.executemany("DELETE FROM chunks WHERE submission_id = ?", [(submission_id,) for submission_id in gone])
                with translate_errors():
                    blobs.execute("PRAGMA incremental_vacuum").fetchall()
            with translate_errors():
                self._conn.execute("PRAGMA incremental_vacuum").fetchall()
        except StoreError as error:
            # The caller's change (a delete, an abort) stands; freed slots stay unclaimable until
            # a later reclaim overwrites them.
            failure = str(error)
        empty_wal(self._conn)  # the vacuum ran outside write_transaction
        return failure
