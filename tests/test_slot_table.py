"""The slots table and the slots file together: many uploads claiming, publishing, failing and
being deleted, interleaved; every submission reads back exactly, no slot is ever held twice or
handed out before it was overwritten, and the space goes back once everything is deleted."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pytest

from intake.store import Store, StoreError, slot_table
from intake.store import submission_writer as writer_module
from intake.store.connection import write_transaction
from intake.store.newsroom import Newsroom
from intake.store.slots_file import SLOT_BYTES, SlotsFile, slots_path
from tests.fixtures_store import PAST_ANY_HEADER

MiB = 1 << 20


def _table_problems(store: Store) -> list[str]:
    problems = []
    rows = store._read("SELECT slot, submission_id, seq, dirty FROM slots ORDER BY slot")  # once the piece in flight has ended
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
    store._wait_for_piece()  # a claim in flight runs its transaction on this connection
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


def test_an_upload_whose_source_is_deleted_never_writes_into_anothers_slots(settings, monkeypatch):
    """A journalist deletes a source while its upload still arrives: the upload's slots are freed
    with its row, but not overwritten or claimed again while its writer may still write them."""
    monkeypatch.setattr(slot_table.secrets, "randbelow", lambda n: 0)  # claims start at the file's start
    with Store.open(settings) as worker, Store.open(settings) as other_worker, Store.open(settings) as journalist:
        recipients = worker.active_recipients()
        spammer = worker.create_source(b"\x01" * 32, b"\x02" * 32)
        honest = other_worker.create_source(b"\x03" * 32, b"\x04" * 32)
        uploads = []
        for size in (16 * MiB, MiB):  # 64 slots, then a few after them
            with worker.start_submission(honest.id, "file", recipients) as upload:
                upload.write(os.urandom(size))
                uploads.append(upload.commit())
        _delete(worker, uploads[0])  # its 64 slots are free again
        deleted = worker.start_submission(spammer.id, "file", recipients)
        deleted.write(os.urandom(8 * MiB + PAST_ANY_HEADER))  # two chunks stored, 16 free slots claimed ahead
        worker._settle()  # claims and writes run beside the upload; they have ended now
        assert len(deleted._slots) - deleted._used == 16
        assert Newsroom(journalist).delete_source(spammer.id)
        body = os.urandom(11 * MiB)
        with other_worker.start_submission(honest.id, "file", recipients) as upload:
            upload.write(body)
            kept = upload.commit()
        with pytest.raises(StoreError, match="removed before it completed"):
            # Its connection still sends: a chunk into the slots it claimed ahead, then the next
            # claim sees the upload is gone (it runs beside the upload, which hears of it at its
            # next call at the latest).
            deleted.write(os.urandom(8 * MiB))
            deleted.commit()
        deleted.abort()
        assert b"".join(other_worker.submission_ciphertext(kept)) == body
        assert not worker._conn.execute("SELECT 1 FROM slots WHERE submission_id IS NULL AND dirty = 1").fetchall()


def test_two_cleaners_never_overwrite_a_slot_given_back_meanwhile(settings, monkeypatch):
    """One cleaner overwrites freed slots while another (another worker, the journalist's CLI)
    wants to: the second waits, so it never overwrites slots the first already gave back and an
    upload has claimed since."""
    monkeypatch.setattr(slot_table.secrets, "randbelow", lambda n: 0)
    entered, release = threading.Event(), threading.Event()
    real_free = SlotsFile.free

    def slow_free(self, slots):
        if threading.current_thread().name == "first cleaner":
            entered.set()
            release.wait(20)
        real_free(self, slots)

    with Store.open(settings) as first, Store.open(settings) as second, Store.open(settings) as uploader:
        recipients = uploader.active_recipients()
        source = uploader.create_source(b"\x01" * 32, b"\x02" * 32)
        with uploader.start_submission(source.id, "file", recipients) as upload:
            upload.write(os.urandom(3 * MiB))
            gone = upload.commit()
        with write_transaction(uploader._conn) as conn:  # deleted; its slots not yet overwritten
            conn.execute("DELETE FROM submissions WHERE id = ?", (gone,))
        monkeypatch.setattr(SlotsFile, "free", slow_free)
        cleaners = [threading.Thread(target=store._reclaim_space, name=name) for store, name in
                    ((first, "first cleaner"), (second, "second cleaner"))]
        cleaners[0].start()
        assert entered.wait(10)
        cleaners[1].start()
        cleaners[1].join(0.5)
        # Meanwhile an upload is published: into those slots, had the second cleaner given them back.
        body = os.urandom(2 * MiB)
        with uploader.start_submission(source.id, "file", recipients) as upload:
            upload.write(body)
            published = upload.commit()
        release.set()
        for cleaner in cleaners:
            cleaner.join(20)
        assert b"".join(uploader.submission_ciphertext(published)) == body


def test_the_cleaning_lock_holds_across_processes_and_never_waits(settings):
    path = slots_path(settings.db_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from intake.store.slots_file import SlotsFile\n"
         "with SlotsFile(sys.argv[1]).cleaning() as alone:\n    print('held' if alone else 'refused', flush=True); time.sleep(1.5)",
         str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with SlotsFile(path).cleaning() as alone:
            assert not alone  # another process cleans: this one leaves it to that one, at once
        assert time.monotonic() - started < 0.5
    finally:
        holder.wait(10)
    with SlotsFile(path).cleaning() as alone:
        assert alone


def test_a_write_whose_wait_was_cut_short_lands_before_its_slots_are_let_go(store: Store, source, recipients, monkeypatch):
    """The request's greenlet is killed while it waits for a slot write (a graceful stop, say):
    the write still runs in its thread, so the upload's abort waits for it before its slots are
    let go, overwritten and handed to another upload."""
    landed = threading.Event()
    real_write, real_free = SlotsFile.write, SlotsFile.free

    def slow_write(self, slots, data, start):
        time.sleep(1.0)
        real_write(self, slots, data, start)
        landed.set()

    freed_too_early = []

    def watching_free(self, slots):
        freed_too_early.append(not landed.is_set())
        real_free(self, slots)

    monkeypatch.setattr(SlotsFile, "write", slow_write)
    monkeypatch.setattr(SlotsFile, "free", watching_free)
    upload = store.start_submission(source.id, "file", recipients)
    upload.write(os.urandom(4 * MiB + PAST_ANY_HEADER))  # one chunk's write in flight for a second
    running = store._in_flight

    class CutShort:
        """The first wait is interrupted, as a killed greenlet's is."""

        waited = False

        def result(self):
            if not self.waited:
                self.waited = True
                raise KeyboardInterrupt
            return running.result()

        def done(self):
            return running.done()

    store._in_flight = CutShort()
    with pytest.raises(KeyboardInterrupt):
        upload.write(os.urandom(4 * MiB))  # the next chunk waits for the one in flight
    upload.abort()
    assert landed.is_set() and freed_too_early == [False]


def test_a_submission_deleted_while_read_says_so(settings):
    with Store.open(settings) as reader_store, Store.open(settings) as journalist:
        source = reader_store.create_source(b"\x01" * 32, b"\x02" * 32)
        with reader_store.start_submission(source.id, "file", reader_store.active_recipients()) as upload:
            upload.write(os.urandom(10 * MiB))
            submission_id = upload.commit()
        reader = reader_store.submission_ciphertext(submission_id)
        next(reader), next(reader)  # the header, the first 4 MiB
        assert Newsroom(journalist).delete_submissions_of(source.id) == 1  # its slots overwritten, the file cut
        with pytest.raises(StoreError, match="deleted while it was being read"):
            for _piece in reader:
                pass


def test_a_slow_upload_in_a_growing_store_claims_a_few_times_and_leaves_no_hole(store: Store, source, recipients, monkeypatch):
    """Over Tor an upload arrives a slot at a time: it claims ahead of what it writes (not a
    transaction on the main database per slot), and what it claimed but did not write is filled
    with random bytes before it is given back, so no hole shows where the upload ended."""
    monkeypatch.setattr(writer_module, "SLOW_FLUSH_SECONDS", 0.0)
    claims = []
    real_claim = slot_table.claim
    monkeypatch.setattr(slot_table, "claim", lambda conn, *args: claims.append(args[-1]) or real_claim(conn, *args))
    with store.start_submission(source.id, "file", recipients) as upload:
        for _ in range(64):
            upload.write(os.urandom(SLOT_BYTES))
        upload.write(os.urandom(1000))
        upload.commit()
    assert len(claims) <= 10, claims
    every_slot = [slot for (slot,) in store._conn.execute("SELECT slot FROM slots")]
    assert len(every_slot) > 65 and store._slots().holes_among(every_slot) == set()


def test_a_claim_starts_at_a_random_free_slot_so_a_reused_slots_place_tells_nothing_of_its_time(store: Store, source, recipients):
    """SECURITY.md §2: a reused slot is taken from a random place among the free ones. With a
    fixed start, uploads one after another would fill the free slots in order of arrival."""
    with write_transaction(store._conn) as conn:  # 1,000 free, clean slots: a store that emptied out
        conn.execute("WITH RECURSIVE new(slot) AS (SELECT 0 UNION ALL SELECT slot + 1 FROM new WHERE slot + 1 < 1000)"
                     " INSERT INTO slots (slot, dirty) SELECT slot, 0 FROM new")
    firsts = []
    for _ in range(30):
        with store.start_submission(source.id, "file", recipients) as upload:
            upload.write(os.urandom(SLOT_BYTES + PAST_ANY_HEADER))
            submission_id = upload.commit()
        firsts.append(min(slot for (slot,) in store._conn.execute("SELECT slot FROM slots WHERE submission_id = ?", (submission_id,))))
    assert len({first // 100 for first in firsts}) >= 5, sorted(firsts)  # a fixed start: all in the first hundred
    assert firsts != sorted(firsts)
