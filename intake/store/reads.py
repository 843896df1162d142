"""Reading stored envelopes back (exports, `intake check`): part of `Store` (store.py).

An envelope stored whole is one row of the main database. A slotted one is its header (piece
0, in the main database) then its slots in the slots file. One stored before the slots file:
pieces in the blobs database (intake.db-blobs), the last one perhaps in the main one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from intake.store import slot_table
from intake.store.connection import Connection, translate_errors
from intake.store.errors import StoreError
from intake.store.records import ID_BATCH
from intake.store.slots_file import SLOT_BYTES, slots_path
from intake.told import Told, told
from intake.worker_threads import run_in_os_thread

if TYPE_CHECKING:
    from intake.config import Settings


class EnvelopeReads:
    """Store's reads of envelopes. Store provides the connection and settings and the helpers used
    here: _read, _settle, _legacy_blobs and _slots."""

    _conn: Connection
    _settings: Settings
    _chunk_bytes: int

    def submission_ciphertext(self, submission_id: str) -> Iterator[bytes]:
        """The stored envelope of a visible submission, chunk by chunk (memory stays flat).

        A slotted envelope is its header (piece 0, in the main database) then its slots. One
        stored before the slots file: pieces 0..n-1 in the blobs database, the last one (if
        small) in the main one. A submission stored in one piece is read from the main database only.
        """
        ready = self._read("SELECT size FROM submissions WHERE id = ? AND state = 'ready'", (submission_id,))
        if not ready:
            return
        main_seqs = [row[0] for row in self._read("SELECT seq FROM submission_chunks WHERE submission_id = ? ORDER BY seq", (submission_id,))]
        slots = slot_table.slots_of(self._conn, submission_id)
        if slots:
            yield from self._slotted_ciphertext(submission_id, main_seqs, slots, ready[0][0])
            return
        blob_seqs: list[int] = []
        blobs = None
        if main_seqs != [0]:
            self._settle()
            blobs = self._legacy_blobs()
            blob_seqs = run_in_os_thread(self._blob_seqs, blobs, submission_id) if blobs is not None else []
        if blob_seqs + main_seqs != list(range(len(blob_seqs) + len(main_seqs))):
            raise StoreError(told("the submission's stored pieces are incomplete"))
        for seq in blob_seqs:
            yield self._one_piece(run_in_os_thread(self._blob_chunk, blobs, submission_id, seq))
        for seq in main_seqs:
            yield self._one_piece(self._read("SELECT data FROM submission_chunks WHERE submission_id = ? AND seq = ?", (submission_id, seq)))

    def _slotted_ciphertext(self, submission_id: str, main_seqs: list[int], slots: list[tuple[int, int]], size: int) -> Iterator[bytes]:
        if main_seqs != [0] or [seq for seq, _slot in slots] != list(range(len(slots))):
            raise StoreError(told("the submission's stored pieces are incomplete"))
        head = self._one_piece(self._read("SELECT data FROM submission_chunks WHERE submission_id = ? AND seq = 0", (submission_id,)))
        left = size - len(head)
        if not 0 < left <= len(slots) * SLOT_BYTES:
            raise StoreError(told("the submission's stored pieces are incomplete"))
        yield head
        numbers = [slot for _seq, slot in slots]
        per_read = self._chunk_bytes // SLOT_BYTES
        for start in range(0, len(numbers), per_read):
            try:
                piece = run_in_os_thread(self._slots().read, numbers[start : start + per_read], min(left, per_read * SLOT_BYTES))
            finally:
                # Still there after the read, so its slots were not freed (and perhaps reused or
                # cut off the file) during it; gone, that is why a read came back short.
                if not self._read("SELECT 1 FROM submissions WHERE id = ?", (submission_id,)):
                    raise StoreError(told("the submission was deleted while it was being read"))
            left -= len(piece)
            yield piece

    def slot_problems(self) -> list[Told]:
        """What is wrong between the slots table and the slots file (`intake check`); [] if nothing.
        Every slot in use is read back (slots_file.SlotsFile.damaged_among)."""
        problems = []
        for count, low, high, size, head in self._read(
            "SELECT count(*), min(slots.seq), max(slots.seq), submissions.size,"
            " (SELECT length(data) FROM submission_chunks WHERE submission_id = submissions.id AND seq = 0)"
            " FROM slots JOIN submissions ON submissions.id = slots.submission_id"
            " WHERE submissions.state = 'ready' GROUP BY submissions.id"
        ):
            if (low, high) != (0, count - 1) or head is None or not (count - 1) * SLOT_BYTES < size - head <= count * SLOT_BYTES:
                problems.append(told("slots file: a submission's slots do not add up to its size"))
        found = self._suspicious_slots()
        if any(found.values()):
            # The server may have deleted submissions and cut the file since: only what is still in
            # use and still wrong on a second look is a problem (a check can run beside the server).
            again = self._suspicious_slots(among=set().union(*found.values()))
            found = {kind: found[kind] & again[kind] for kind in found}
        if found["missing"]:
            problems.append(told("slots file: {file} ends before the slots the database names (restore a backup)",
                                 file=slots_path(self._settings.db_path).name))
        if found["holes"]:
            problems.append(told("slots file: {count} slots of submissions hold nothing (holes): restore a backup",
                                 count=len(found["holes"])))
        if found["zeroed"]:
            problems.append(told("slots file: {count} slots of submissions hold zeroed blocks where ciphertext was "
                                 "written: restore a backup", count=len(found["zeroed"])))
        if found["unreadable"]:
            problems.append(told("slots file: {count} slots of submissions cannot be read (the disk reports errors): "
                                 "restore a backup", count=len(found["unreadable"])))
        return problems

    def _suspicious_slots(self, among: set[int] | None = None) -> dict[str, set[int]]:
        """The slots of ready submissions (of ``among`` only, if given) that the file lacks, that
        are holes, that hold zeroed blocks, or that cannot be read."""
        in_use = [row[0] for row in self._read("SELECT slots.slot FROM slots JOIN submissions ON submissions.id = slots.submission_id"
                                              " WHERE submissions.state = 'ready' ORDER BY slots.slot")
                  if among is None or row[0] in among]
        path = slots_path(self._settings.db_path)
        length = path.stat().st_size if path.exists() else 0
        missing = {slot for slot in in_use if (slot + 1) * SLOT_BYTES > length}
        present = [slot for slot in in_use if slot not in missing]
        holes = run_in_os_thread(self._slots().holes_among, present) if present else set()
        zeroed, unreadable = run_in_os_thread(self._slots().damaged_among, [slot for slot in present if slot not in holes])
        return {"missing": missing, "holes": holes, "zeroed": zeroed, "unreadable": unreadable}

    def slots_file_bytes(self) -> int:
        """What the slots file takes on disk (a hole, where a write failed, takes nothing)."""
        path = slots_path(self._settings.db_path)
        return path.stat().st_blocks * 512 if path.exists() else 0

    def ciphertext_positions(self, submission_ids: list[str]) -> dict[str, int]:
        """Where the envelope of each of ``submission_ids`` stored whole in the main database (one
        piece: every short one) is, by id: reading them in this order (the table's key order, see
        ciphertexts_at), each page of the table is read once, front to back. The others are not in it
        (read them with submission_ciphertext). One query per batch of ids, along the key's index."""
        found: dict[str, int] = {}
        in_key_order = sorted(submission_ids)
        for start in range(0, len(in_key_order), ID_BATCH):
            batch = tuple(in_key_order[start : start + ID_BATCH])
            marks = ",".join("?" * len(batch))
            found.update(self._read(f"SELECT submission_id, rowid FROM submission_chunks WHERE seq = 0 AND submission_id IN ({marks})"
                                    " AND NOT EXISTS (SELECT 1 FROM slots WHERE slots.submission_id = submission_chunks.submission_id)", batch))
        return found

    def ciphertexts_at(self, positions: list[tuple[str, int]]) -> dict[str, bytes]:
        """The envelopes at ``positions`` ((id, position) from ciphertext_positions), by id; one
        deleted since is missing. For an export: many at once, in the table's order."""
        found: dict[str, bytes] = {}
        wanted = dict((position, submission_id) for submission_id, position in positions)
        in_table_order = sorted(wanted)
        for start in range(0, len(in_table_order), ID_BATCH):
            batch = tuple(in_table_order[start : start + ID_BATCH])
            marks = ",".join("?" * len(batch))
            for position, submission_id, data in self._read(
                f"SELECT rowid, submission_id, data FROM submission_chunks WHERE rowid IN ({marks})", batch
            ):
                if wanted[position] == submission_id:
                    found[submission_id] = data
        return found

    @staticmethod
    def _one_piece(rows: list[tuple]) -> bytes:
        if not rows:
            raise StoreError(told("the submission was deleted while it was being read"))
        return rows[0][0]

    # Reads of the blobs database wait for a writer's commit in SQLite's busy handler, so they run in OS threads.

    @staticmethod
    def _blob_seqs(blobs: Connection, submission_id: str) -> list[int]:
        with translate_errors():
            return [row[0] for row in blobs.execute("SELECT seq FROM chunks WHERE submission_id = ? ORDER BY seq", (submission_id,))]

    @staticmethod
    def _blob_chunk(blobs: Connection, submission_id: str, seq: int) -> list[tuple]:
        with translate_errors():
            return blobs.execute("SELECT data FROM chunks WHERE submission_id = ? AND seq = ?", (submission_id, seq)).fetchall()
