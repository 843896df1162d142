"""Which slot of the slots file holds what: the main database's ``slots`` table (migration 9).

A slot is free (no submission), claimed by an upload in flight (a pending submission), or
holds a piece of a published one, at its place ``seq``. ``dirty`` marks a slot that may hold
ciphertext: set when claimed, cleared once the slot is overwritten after it was freed (or
when its upload released it unwritten). Only clean free slots are claimed, so a slot being
overwritten is never handed to an upload meanwhile. Deleting a submission frees its slots
(the foreign key's ON DELETE SET NULL), in the same transaction.

Where a claim lands: free slots from a random place in the file on, so where an upload's
slots are says little about when it came (free slots are reused at random); the file grows
by at least an eighth when no free slot is left.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from intake.store.connection import Connection, translate_errors, write_transaction
from intake.store.slots_file import runs

_GROW_MIN_SLOTS = 64  # 16 MiB: a growing file is not extended for every upload


def claim(conn: Connection, submission_id: str, first_seq: int, count: int) -> list[int]:
    """Claim ``count`` clean free slots for ``submission_id``, numbered first_seq...; call inside
    a write transaction. Adds rows (a larger file) when too few are free."""
    total = conn.execute("SELECT coalesce(max(slot), -1) + 1 FROM slots").fetchone()[0]
    slots = _free_from(conn, secrets.randbelow(total) if total else 0, count)
    if len(slots) < count:
        grow = max(count - len(slots), _GROW_MIN_SLOTS, total // 8)
        conn.execute("WITH RECURSIVE new(slot) AS (SELECT ? UNION ALL SELECT slot + 1 FROM new WHERE slot + 1 < ?)"
                     " INSERT INTO slots (slot, dirty) SELECT slot, 0 FROM new", (total, total + grow))
        taken = set(slots)
        slots += [slot for slot in _free_from(conn, total + secrets.randbelow(grow), count) if slot not in taken][: count - len(slots)]
    # One statement per run of consecutive slots (a claim is mostly one or two runs).
    conn.executemany(
        "UPDATE slots SET submission_id = ?, seq = ? + slot - ?, dirty = 1 WHERE slot BETWEEN ? AND ?",
        [(submission_id, first_seq + index, first, first, first + run - 1) for index, first, run in runs(slots)],
    )
    return slots


def _free_from(conn: Connection, start: int, count: int) -> list[int]:
    """Up to ``count`` clean free slots: from ``start`` on, then from the file's start."""
    query = "SELECT slot FROM slots WHERE submission_id IS NULL AND dirty = 0 AND slot {} ? ORDER BY slot LIMIT ?"
    slots = [row[0] for row in conn.execute(query.format(">="), (start, count))]
    if len(slots) < count:
        slots += [row[0] for row in conn.execute(query.format("<"), (start, count - len(slots)))]
    return slots


def release_unused(conn: Connection, submission_id: str, used: int) -> None:
    """Give back the slots an upload claimed and never wrote (its seq ``used`` and after)."""
    conn.execute("UPDATE slots SET submission_id = NULL, seq = NULL, dirty = 0 WHERE submission_id = ? AND seq >= ?",
                 (submission_id, used))


def slots_of(conn: Connection, submission_id: str) -> list[tuple[int, int]]:
    """(seq, slot) of a submission's slots, in order."""
    with translate_errors():
        return conn.execute("SELECT seq, slot FROM slots WHERE submission_id = ? ORDER BY seq", (submission_id,)).fetchall()


def has_slots(conn: Connection, submission_id: str) -> bool:
    with translate_errors():
        return conn.execute("SELECT 1 FROM slots WHERE submission_id = ? LIMIT 1", (submission_id,)).fetchone() is not None


def clean_freed(conn: Connection, overwrite: Callable[[list[int]], None], truncate: Callable[[int], None]) -> int:
    """Overwrite every freed slot that may still hold ciphertext (``overwrite``, outside any
    transaction: those slots cannot be claimed meanwhile), mark them clean, then cut the file
    after its last slot in use (``truncate``, under the write lock: no claim can extend the file
    meanwhile). Returns how many slots were overwritten."""
    with translate_errors():
        freed = [row[0] for row in conn.execute("SELECT slot FROM slots WHERE submission_id IS NULL AND dirty = 1 ORDER BY slot")]
    if freed:
        overwrite(freed)
        with write_transaction(conn):
            conn.executemany("UPDATE slots SET dirty = 0 WHERE slot = ? AND submission_id IS NULL", [(slot,) for slot in freed])
    last_in_use = "SELECT coalesce(max(slot), -1) + 1 FROM slots WHERE submission_id IS NOT NULL OR dirty = 1"
    with translate_errors():
        (kept,) = conn.execute(last_in_use).fetchone()
        after = conn.execute("SELECT 1 FROM slots WHERE slot >= ? LIMIT 1", (kept,)).fetchone()
    if after:
        with write_transaction(conn):
            (kept,) = conn.execute(last_in_use).fetchone()
            conn.execute("DELETE FROM slots WHERE slot >= ?", (kept,))
            truncate(kept)
    return len(freed)
