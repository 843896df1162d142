"""The slots table and the slots file together: many uploads claiming, publishing, failing and
being deleted, interleaved; every submission reads back exactly, no slot is ever held twice or
handed out before it was overwritten, and the space goes back once everything is deleted."""

from __future__ import annotations

import os
import random

from intake.store import Store
from intake.store.connection import write_transaction
from intake.store.slots_file import SLOT_BYTES, slots_path
from tests.fixtures_store import PAST_ANY_HEADER

MiB = 1 << 20


def _table_problems(store: Store) -> list[str]:
    problems = []
    rows = store._conn.execute("SELECT slot, submission_id, seq, dirty FROM slots ORDER BY slot").fetchall()
    held: dict[str, list[int]] = {}
    for slot, submission_id, seq, dirty in rows:
        if submission_id is not None:
            held.setdefault(submission_id, []).append(seq)
            if not dirty:
                problems.append(f"slot {slot} holds a piece but is marked clean")
    for submission_id, seqs in held.items():
        if sorted(seqs) != list(range(len(seqs))):
            problems.append(f"{submission_id}: its slots are numbered {sorted(seqs)}")
    return problems


def test_interleaved_uploads_read_back_exactly_and_never_share_a_slot(store: Store, source, recipients):
    rng = random.Random(7)
    kept: dict[str, bytes] = {}
    open_uploads = []
    for step in range(60):
        action = rng.random()
        if action < 0.45 or not open_uploads:
            # Sizes around a slot and a chunk past the header, and several chunks.
            body = os.urandom(rng.choice([4 * MiB + PAST_ANY_HEADER, SLOT_BYTES + 1, 3 * SLOT_BYTES + 777, 9 * MiB]))
            upload = store.start_submission(source.id, "file", recipients)
            cut = rng.randrange(1, len(body))
            upload.write(body[:cut])
            open_uploads.append((upload, body, cut))
        else:
            upload, body, cut = open_uploads.pop(rng.randrange(len(open_uploads)))
            if rng.random() < 0.75:
                upload.write(body[cut:])
                kept[upload.commit()] = body
            else:
                upload.abort()
        if step % 10 == 9 and kept:
            gone = rng.choice(sorted(kept))
            _delete(store, gone)
            kept.pop(gone)
        assert not _table_problems(store), step
    for upload, _body, _cut in open_uploads:
        upload.abort()
    for submission_id, body in kept.items():
        assert b"".join(store.submission_ciphertext(submission_id)) == body

    for submission_id in list(kept):
        _delete(store, submission_id)
    assert store._conn.execute("SELECT count(*) FROM slots").fetchone()[0] == 0
    assert not slots_path(store._settings.db_path).exists() or slots_path(store._settings.db_path).stat().st_size == 0


def _delete(store: Store, submission_id: str) -> None:
    with write_transaction(store._conn) as conn:
        conn.execute("DELETE FROM submissions WHERE id = ?", (submission_id,))
    store._reclaim_space()


def test_a_slot_freed_but_not_yet_overwritten_is_never_claimed(store: Store, source, recipients):
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(3 * SLOT_BYTES + PAST_ANY_HEADER))
        first = upload.commit()
    freed = {slot for (slot,) in store._conn.execute("SELECT slot FROM slots WHERE submission_id = ?", (first,))}
    with write_transaction(store._conn) as conn:  # deleted, not yet overwritten (as before _reclaim_space runs)
        conn.execute("DELETE FROM submissions WHERE id = ?", (first,))
    # More slots than the file has (the first claim grew it by 64): every free slot is claimed
    # before the file grows again, so a freed one would be among them.
    assert store._conn.execute("SELECT count(*) FROM slots").fetchone()[0] <= 64
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(70 * SLOT_BYTES))
        second = upload.commit()
    taken = {slot for (slot,) in store._conn.execute("SELECT slot FROM slots WHERE submission_id = ?", (second,))}
    assert not taken & freed
