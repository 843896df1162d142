"""Which slot of the slots file holds what: the main database's ``slots`` table (migration 9).

A slot is free (no submission), claimed by an upload in flight (a pending submission), or
holds a piece of a published one, at its place ``seq``. ``dirty`` marks a slot that may hold
ciphertext: set when claimed, cleared once the slot is overwritten with random bytes after it
was freed (or when its upload gave it back unwritten). ``writer`` names the process that
claimed it until its upload is published or gives it back: a slot freed while that process
lives (its source deleted while the upload still arrives) may still be written by it, so it is
not overwritten, and so not claimed again, until that process lets go or dies. Only clean
free slots are claimed. Deleting a submission frees its slots (the foreign key's ON DELETE SET
NULL), in the same transaction.

Where a claim lands: free slots from a random place in the file on, so where a reused slot is
says nothing of when its upload came; when too few are free the file grows at its end, and a
store that only grew keeps its slots in order of arrival, as the blobs database's pages were
(SECURITY.md §2). An upload claims ahead of what it writes (fewer transactions); what it did
not write is filled with random bytes before it is given back, so no slot is left a hole
between written ones (a hole would show where an upload ended).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from intake.store import processes
from intake.store.connection import Connection, translate_errors, write_transaction
from intake.store.slots_file import runs


def claim(conn: Connection, submission_id: str, first_seq: int, count: int) -> list[int]:
    """Claim ``count`` slots for ``submission_id``, numbered first_seq...; call inside a write
    transaction. Adds rows at the end (the file grows as they are written) when too few are free."""
    total = conn.execute("SELECT coalesce(max(slot), -1) + 1 FROM slots").fetchone()[0]
    slots = _free_from(conn, secrets.randbelow(total) if total else 0, count)
    if len(slots) < count:
        conn.execute("WITH RECURSIVE new(slot) AS (SELECT ? UNION ALL SELECT slot + 1 FROM new WHERE slot + 1 < ?)"
                     " INSERT INTO slots (slot, dirty) SELECT slot, 0 FROM new", (total, total + count - len(slots)))
        slots += range(total, total + count - len(slots))
    # One statement per run of consecutive slots (a claim is mostly one or two runs).
    conn.executemany(
        "UPDATE slots SET submission_id = ?, seq = ? + slot - ?, dirty = 1, writer = ? WHERE slot BETWEEN ? AND ?",
        [(submission_id, first_seq + index, first, processes.current_writer(), first, first + run - 1)
         for index, first, run in runs(slots)],
    )
    return slots


def _free_from(conn: Connection, start: int, count: int) -> list[int]:
    """Up to ``count`` clean free slots: from ``start`` on, then from the file's start."""
    query = "SELECT slot FROM slots WHERE submission_id IS NULL AND dirty = 0 AND slot {} ? ORDER BY slot LIMIT ?"
    slots = [row[0] for row in conn.execute(query.format(">="), (start, count))]
    if len(slots) < count:
        slots += [row[0] for row in conn.execute(query.format("<"), (start, count - len(slots)))]
    return slots


def publish(conn: Connection, submission_id: str, used: int) -> None:
    """At the publish: the upload's written slots are its own; the others, claimed ahead and
    filled with random bytes instead, go back clean."""
    conn.execute("UPDATE slots SET submission_id = NULL, seq = NULL, dirty = 0, writer = NULL WHERE submission_id = ? AND seq >= ?",
                 (submission_id, used))
    conn.execute("UPDATE slots SET writer = NULL WHERE submission_id = ?", (submission_id,))


def let_go(conn: Connection, slots: list[int]) -> None:
    """An upload that was removed lets go of its slots (already freed with its row): from now on
    they are overwritten and reused. Call inside a write transaction."""
    conn.executemany("UPDATE slots SET writer = NULL WHERE slot = ? AND submission_id IS NULL", [(slot,) for slot in slots])


def slots_of(conn: Connection, submission_id: str) -> list[tuple[int, int]]:
    """(seq, slot) of a submission's slots, in order."""
    with translate_errors():
        return conn.execute("SELECT seq, slot FROM slots WHERE submission_id = ? ORDER BY seq", (submission_id,)).fetchall()


def clean_freed(conn: Connection, overwrite: Callable[[list[int]], None], truncate: Callable[[int], None]) -> int:
    """Overwrite every freed slot that may still hold ciphertext and that no live process may
    still write (``overwrite``, outside any transaction: those slots cannot be claimed
    meanwhile), mark them clean, then cut the file after its last slot in use (``truncate``,
    under the write lock: no claim can grow the file meanwhile). The caller holds the slots
    file's cleaning lock, so two cleaners never overwrite a slot one of them already gave back.
    Returns how many slots were overwritten."""
    overwritten = 0
    while freed := _cleanable(conn):  # again: others may have freed some meanwhile
        overwrite(freed)
        with write_transaction(conn):
            conn.executemany("UPDATE slots SET dirty = 0, writer = NULL WHERE slot = ? AND submission_id IS NULL",
                             [(slot,) for slot in freed])
        overwritten += len(freed)
    last_in_use = "SELECT coalesce(max(slot), -1) + 1 FROM slots WHERE submission_id IS NOT NULL OR dirty = 1"
    with translate_errors():
        (kept,) = conn.execute(last_in_use).fetchone()
        after = conn.execute("SELECT 1 FROM slots WHERE slot >= ? LIMIT 1", (kept,)).fetchone()
    if after:
        with write_transaction(conn):
            (kept,) = conn.execute(last_in_use).fetchone()
            conn.execute("DELETE FROM slots WHERE slot >= ?", (kept,))
            truncate(kept)
    return overwritten


def _cleanable(conn: Connection) -> list[int]:
    """Freed slots that may hold ciphertext and that no live process may still write (a zombie
    whose threads have all ended, killed and not yet reaped, counts as gone, as for recovery:
    see SECURITY.md §2)."""
    with translate_errors():
        rows = conn.execute("SELECT slot, writer FROM slots WHERE submission_id IS NULL AND dirty = 1 ORDER BY slot").fetchall()
    return [slot for slot, writer in rows if writer is None or not processes.writer_alive(writer)]
