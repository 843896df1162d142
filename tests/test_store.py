"""The SQLCipher store: encryption at rest, visibility of uploads, recovery, limits."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import os
import re
import signal
import threading
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from keys.envelope import EnvelopeWriter, Metadata, header_size
from keys.envelope_reader import decrypt_bytes

from intake.config import Settings
from intake.store import (
    NotInitialisedError,
    SchemaTooNewError,
    SourceExistsError,
    Store,
    StoreError,
    StoreFullError,
    WrongDatabaseKeyError,
)
from intake.store import store as store_module
from intake.store import submission_writer as writer_module
from intake.store.connection import write_transaction
from intake.store.migrations import LATEST_VERSION
from intake.store import slot_table
from intake.store.slots_file import SLOT_BYTES, slots_path
from intake.config import load_settings
from intake.setup import init_data_dir
from tests.fixtures_store import FAST_KDF, PAST_ANY_HEADER, store_as_before_the_slots_file
from tests.test_faults import free_bytes, small_filesystem

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def _files_digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir()) if path.is_file()}


def _disk_bytes(settings: Settings) -> int:
    """What the store's files take on disk (a hole in the slots file takes nothing)."""
    return sum(path.stat().st_blocks * 512 for path in settings.data_dir.glob("intake.db*"))


def _store_envelope(store: Store, source_id: str, recipients, body: bytes) -> str:
    out = io.BytesIO()
    with EnvelopeWriter(out, [r.public_key for r in recipients], Metadata("message", length=len(body))) as envelope:
        envelope.write(body)
    with store.start_submission(source_id, "message", recipients) as upload:
        upload.write(out.getvalue())
        return upload.commit()


def test_rows_that_could_tell_an_order_of_arrival_are_keyed_by_random_ids(store: Store):
    """SECURITY.md §2, "No order of arrival": sources, submissions, replies, sessions and failed
    sign-ins sit in WITHOUT ROWID tables keyed by random ids, and the ciphertext pieces get random
    rowids, so neither the keys nor the rowids of forty sources follow the order they came in."""
    tables = {name: sql.upper() for name, sql in store._conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")}
    for name in ("sources", "submissions", "replies", "source_sessions", "journalist_sessions", "failed_logins"):
        assert "WITHOUT ROWID" in tables[name], name
    recipients = store.active_recipients()
    source_ids, submission_ids = [], []
    for _ in range(40):
        source_ids.append(store.create_source(os.urandom(32), os.urandom(32)).id)
        submission_ids.append(_store_envelope(store, source_ids[-1], recipients, os.urandom(100)))
    rowids = [row[0] for row in store._conn.execute(
        "SELECT rowid FROM submission_chunks WHERE submission_id IN (%s)" % ",".join("?" * 40), submission_ids)]
    assert len(rowids) == 40
    for arrival in (source_ids, submission_ids):
        assert sorted(arrival) != arrival and sorted(arrival, reverse=True) != arrival
        assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in arrival)
    by_arrival = dict(store._conn.execute(
        "SELECT submission_id, rowid FROM submission_chunks WHERE submission_id IN (%s)" % ",".join("?" * 40), submission_ids))
    in_order = [by_arrival[submission_id] for submission_id in submission_ids]
    assert sorted(in_order) != in_order and max(in_order) > 2**40  # random 63-bit, not 1, 2, 3, ...


def test_wrong_database_key_is_refused_and_changes_nothing(settings: Settings):
    before = _files_digest(settings.data_dir)
    wrong = dataclasses.replace(settings, db_key=bytes(32))
    with pytest.raises(WrongDatabaseKeyError) as refused:
        Store.open(wrong)
    assert settings.db_key.hex() not in str(refused.value)
    assert _files_digest(settings.data_dir) == before


def test_missing_database_is_not_initialised(settings: Settings, tmp_path: Path):
    elsewhere = dataclasses.replace(settings, data_dir=tmp_path / "nowhere")
    with pytest.raises(NotInitialisedError):
        Store.open(elsewhere)
    assert not (tmp_path / "nowhere").exists()


def test_database_and_wal_hold_no_plaintext(store: Store, settings: Settings, recipients):
    canary = b"CANARY-" + os.urandom(8).hex().encode()
    source = store.create_source(canary + b"-lookup", b"\x05" * 32)
    with store.start_submission(source.id, "message", recipients) as upload:
        upload.write(canary * 1000)  # stands in for ciphertext: proves the pages themselves are encrypted
        upload.commit()
    store.add_reply(source.id, recipients[0].journalist_id, canary)
    wal = settings.data_dir / "intake.db-wal"
    # Each commit is checkpointed out of the WAL at once (SECURITY.md section 2), so look at
    # one held there by a reader's snapshot.
    with Store.open(settings) as reader:
        reader._conn.execute("BEGIN")
        reader._conn.execute("SELECT count(*) FROM replies").fetchone()
        store.add_reply(source.id, recipients[0].journalist_id, canary + b"-2")
        assert store._conn.wal_pending and wal.stat().st_size > 0
        files = {path.name: path.read_bytes() for path in settings.data_dir.glob("intake.db*")}
        reader._conn.execute("COMMIT")
    for name, data in files.items():
        assert canary not in data and source.designation.encode() not in data, name
    store.end_request()
    assert wal.stat().st_size == 0 and not store._conn.wal_pending
    assert store.counts()["submissions"] == 1


@pytest.mark.parametrize(
    "chunks, tail",
    [(0, 1000), (0, writer_module.INLINE_BYTES + 1), (3, 123), (3, writer_module.INLINE_BYTES + 1), (2, -3000)],
    ids=["tiny", "just-over-the-inline-size", "three-chunks", "three-chunks-and-more", "under-two-chunks"],
)
def test_committed_submission_decrypts_for_every_journalist(store: Store, settings: Settings, source, recipients, journalists, chunks, tail):
    body = os.urandom(chunks * settings.upload_chunk_bytes + tail)
    submission_id = _store_envelope(store, source.id, recipients, body)
    (stored,) = store.submissions(source.id)
    assert stored.id == submission_id and DAY.match(stored.received_day)
    ciphertext = b"".join(store.submission_ciphertext(submission_id))
    assert stored.size == len(ciphertext)
    for identity, _ in journalists:
        metadata, plaintext = decrypt_bytes(ciphertext, identity.private_key)
        assert plaintext == body and metadata.kind == "message"


@pytest.mark.parametrize("size", [1000, 3 * MiB], ids=["inline", "slotted"])
def test_a_version_1_envelope_stored_before_the_upgrade_reads_back_whole(store: Store, settings: Settings, source, recipients,
                                                                         journalists, monkeypatch, size):
    """The code before envelope version 2 kept a slotted envelope's header, 80 bytes a recipient, in
    the database: reading it back follows the stored header's length, not today's header_size."""
    import intake.store.store as store_module
    from tests.fixtures_keys import seal_v1

    body = os.urandom(size)
    old = seal_v1(body, [r.public_key for r in recipients], Metadata("file", name="old.pdf", length=size))
    monkeypatch.setattr(store_module, "header_size", lambda count: 10 + 80 * count + 24)  # as that code split it
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(old)
        old_id = upload.commit()
    monkeypatch.undo()
    new_id = _store_envelope(store, source.id, recipients, body)  # and a version-2 one beside it
    assert store.slot_problems() == []
    assert b"".join(store.submission_ciphertext(old_id)) == old
    new = b"".join(store.submission_ciphertext(new_id))
    assert new[8] == 2 and len(new) == len(old) - len(recipients) * 32 + 32  # 48-byte stanzas and one ephemeral key
    for identity, _ in journalists:
        assert decrypt_bytes(old, identity.private_key)[1] == body == decrypt_bytes(new, identity.private_key)[1]


def test_a_slow_piece_after_full_chunks_stores_exactly_what_was_written(store: Store, settings: Settings, source, recipients):
    # Full chunks back to back refill the buffer of the chunk before; a piece stored by the slow
    # flush from such a buffer must not carry the old chunk's bytes past its own end.
    pieces = [os.urandom(settings.upload_chunk_bytes) for _ in range(3)] + [os.urandom(writer_module.SLOW_FLUSH_BYTES + 7)]
    upload = store.start_submission(source.id, "file", recipients)
    for piece in pieces:
        upload.write(piece)
    time.sleep(writer_module.SLOW_FLUSH_SECONDS + 0.05)
    pieces.append(os.urandom(11))  # the write after the wait stores what waited
    upload.write(pieces[-1])
    assert upload.size == sum(map(len, pieces))
    pieces.append(os.urandom(settings.upload_chunk_bytes + 5))  # and full chunks again after it
    upload.write(pieces[-1])
    submission_id = upload.commit()
    assert b"".join(store.submission_ciphertext(submission_id)) == b"".join(pieces)


def test_pending_upload_is_invisible_until_commit(store: Store, settings: Settings, source, recipients):
    upload = store.start_submission(source.id, "file", recipients)
    upload.write(os.urandom(2 * settings.upload_chunk_bytes))
    store._settle()  # its first piece is stored beside the upload: its pending row is in now
    assert store.submissions() == []
    assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 1
    upload.commit()
    assert len(store.submissions()) == 1 and store.counts()["pending uploads"] == 0


def test_aborted_upload_leaves_nothing_and_frees_its_space(store: Store, settings: Settings, source, recipients):
    store.recover()  # settle the WAL so the baseline is the database itself
    baseline = _disk_bytes(settings)
    upload = store.start_submission(source.id, "file", recipients)
    upload.write(os.urandom(2 * settings.upload_chunk_bytes + 5))
    upload.abort()
    assert store.counts()["pending uploads"] == 0
    assert _disk_bytes(settings) < baseline + 256 * 1024


def test_exception_inside_upload_block_aborts_it(store: Store, source, recipients):
    with pytest.raises(RuntimeError):
        with store.start_submission(source.id, "file", recipients) as upload:
            upload.write(b"x" * 10)
            raise RuntimeError("client went away")
    assert store.counts()["pending uploads"] == 0


def test_second_store_commits_while_an_upload_is_in_flight(settings: Settings, source, recipients):
    # A short busy timeout: the other worker must not wait on the upload at all.
    impatient = dataclasses.replace(settings, busy_timeout_ms=100)
    with Store.open(settings) as slow_worker, Store.open(impatient) as other_worker:
        upload = slow_worker.start_submission(source.id, "file", recipients)
        upload.write(os.urandom(settings.upload_chunk_bytes + PAST_ANY_HEADER))  # one chunk stored, the rest buffered
        # The slow client is between writes: another worker takes in a whole submission meanwhile.
        quick_source = other_worker.create_source(b"\x09" * 32, b"\x08" * 32)
        quick_id = _store_envelope(other_worker, quick_source.id, recipients, b"tip")
        upload.write(os.urandom(settings.upload_chunk_bytes))
        slow_id = upload.commit()
        assert {s.id for s in other_worker.submissions()} == {quick_id, slow_id}


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from intake.config import load_settings
from intake.store import Store
settings = load_settings(Path(sys.argv[1]))
store = Store.open(settings)
(source,) = [store.source_by_lookup(bytes(32))]
upload = store.start_submission(source.id, "file", store.active_recipients())
upload.write(os.urandom(3 * settings.upload_chunk_bytes + 5))
store._settle()  # its pieces are stored beside it: the first one's pending row is in now
print("written", flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_writer_killed_mid_upload_shows_nothing_and_recover_reclaims_space(store: Store, settings: Settings):
    store.create_source(bytes(32), b"\x03" * 32)
    store.recover()
    baseline = _disk_bytes(settings)
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(settings.data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "written"
        assert store.counts()["pending uploads"] == 1
        assert store.recover() == 0  # the writer is alive: its upload is kept
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert store.submissions() == []
    assert store.recover() == 1
    counts = store.counts()
    assert counts["pending uploads"] == 0 and counts["submissions"] == 0
    assert _disk_bytes(settings) < baseline + 256 * 1024


def test_recover_keeps_uploads_still_being_written(store: Store, source, recipients):
    upload = store.start_submission(source.id, "file", recipients)
    upload.write(b"x" * 100)
    assert store.recover() == 0
    upload.commit()
    assert len(store.submissions()) == 1


@pytest.fixture
def small_disk(tmp_path: Path, journalists) -> Iterator[tuple[Store, Settings, Path]]:
    """A store on a real 24 MiB file system of its own, and that file system's folder."""
    with small_filesystem(tmp_path / "disk", "24m") as disk:
        data_dir = disk / "data"
        init_data_dir(data_dir, [public_file for _, public_file in journalists], key_in_data_dir=True)
        settings = load_settings(data_dir, **FAST_KDF)
        with Store.open(settings) as opened:
            yield opened, settings, disk


def _fill_disk(disk: Path, spare_bytes: int) -> None:
    """Fill the file system until ``spare_bytes`` are left."""
    with open(disk / "filler", "ab") as filler:
        while (left := free_bytes(disk) - spare_bytes) > 0:
            filler.write(bytes(min(left, 1 << 20)))
            filler.flush()


def test_full_disk_gives_a_clear_error_and_no_partial_submission(small_disk):
    store, settings, disk = small_disk
    source = store.create_source(b"\x01" * 32, b"\x02" * 32)
    _fill_disk(disk, 2 * MiB)
    upload = store.start_submission(source.id, "file", store.active_recipients())
    with pytest.raises(StoreFullError) as full:
        for _ in range(3):
            upload.write(os.urandom(settings.upload_chunk_bytes))
    assert "full" in str(full.value)
    upload.abort()
    assert store.submissions() == [] and store.counts()["pending uploads"] == 0
    assert _slots_in_use(settings) == 0


def test_full_disk_at_publish_gives_a_clear_error_and_no_partial_submission(small_disk):
    store, settings, disk = small_disk
    source = store.create_source(b"\x01" * 32, b"\x02" * 32)
    upload = store.start_submission(source.id, "file", store.active_recipients())
    recipients = store.active_recipients()
    # Two full chunks stored in the slots file (the first also holds the envelope's header), with
    # slots claimed ahead: the commit needs no claim, and fails writing the last piece.
    upload.write(os.urandom(2 * settings.upload_chunk_bytes + header_size(len(recipients))))
    store._settle()  # those are stored beside the upload: they have ended now
    _fill_disk(disk, 512 * 1024)  # room for the database to record the failure, not for the last piece
    upload.write(os.urandom(settings.upload_chunk_bytes // 2))  # the last piece goes in at the commit
    with pytest.raises(StoreFullError):
        upload.commit()
    upload.abort()
    assert store.submissions() == [] and store.counts()["pending uploads"] == 0
    (disk / "filler").unlink()
    store.recover()
    assert _slots_in_use(settings) == 0
    assert _store_envelope(store, source.id, store.active_recipients(), os.urandom(3 * MiB))  # and it takes uploads again


def _slots_in_use(settings: Settings) -> int:
    """Blocks the slots file holds on disk, in slots (where a write failed, a hole holds none)."""
    path = slots_path(settings.db_path)
    return path.stat().st_blocks * 512 // SLOT_BYTES if path.exists() else 0


def test_existing_lookup_id_is_refused(store: Store, source):
    with pytest.raises(SourceExistsError):
        store.create_source(b"\x01" * 32, b"\x07" * 32)


def test_source_round_trip_with_day_granular_dates(store: Store):
    created = store.create_source(b"\x0a" * 32, b"\x0b" * 32)
    found = store.source_by_lookup(b"\x0a" * 32)
    assert found == created
    assert re.fullmatch(r"[a-z]+ [a-z]+", created.designation)
    assert DAY.match(created.created_day) and DAY.match(created.last_active_day)
    store.touch_source(created.id)
    assert store.source_by_lookup(b"\x0c" * 32) is None


def test_designation_collision_is_retried(store: Store, monkeypatch):
    names = iter(["calm river", "calm river", "quiet hill"])
    monkeypatch.setattr(store_module, "random_designation", lambda: next(names))
    first = store.create_source(b"\x10" * 32, b"\x00" * 32)
    second = store.create_source(b"\x11" * 32, b"\x00" * 32)
    assert (first.designation, second.designation) == ("calm river", "quiet hill")


def test_replies_are_listed_marked_read_and_deleted_only_by_their_source(store: Store, source, recipients):
    other = store.create_source(b"\x20" * 32, b"\x21" * 32)
    first = store.add_reply(source.id, recipients[0].journalist_id, b"sealed-1")
    second = store.add_reply(source.id, recipients[1].journalist_id, b"sealed-2")
    assert [reply.envelope for reply in store.replies_for(source.id)] == [b"sealed-1", b"sealed-2"]
    assert store.replies_for(other.id) == []
    store.mark_replies_read(source.id, [first.id])
    assert store.delete_reply(other.id, first.id) is False
    assert store.delete_reply(source.id, first.id) is True
    assert [reply.id for reply in store.replies_for(source.id)] == [second.id]


def test_sessions_load_until_their_day_has_passed(store: Store, source):
    # The exact expiry is sealed under the cookie's token (tests/test_source_pages.py checks it);
    # the store keeps only the day a session has surely ended by.
    store.save_session(b"live", source.id, b"sealed", int(time.time()) + 60)
    store.save_session(b"old", source.id, b"sealed", int(time.time()) + 60)
    store.save_session(b"older", source.id, b"sealed", int(time.time()) + 60)
    yesterday = (datetime.date.fromisoformat(store_module.today()) - datetime.timedelta(days=1)).isoformat()
    store._conn.execute("UPDATE source_sessions SET expires_by_day = ? WHERE id != ?", (yesterday, b"live"))
    assert store.load_session(b"live") == (source.id, b"sealed")
    assert store.load_session(b"old") is None
    assert store.purge_expired_sessions() == 2
    store.delete_session(b"live")
    assert store.load_session(b"live") is None and store.load_session(b"missing") is None


def test_a_sessions_day_tells_the_login_day_and_never_the_time_of_day():
    midnight = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc).timestamp()
    for seconds in range(0, 86400, 599):  # logins all through the day, two-hour sessions
        assert store_module.expires_by_day(midnight + seconds + 7200, now=midnight + seconds) == "2026-03-02"
    assert store_module.expires_by_day(midnight + 60, now=midnight + 30) == "2026-03-02"
    assert store_module.expires_by_day(midnight + 3 * 86400, now=midnight + 3600) == "2026-03-04"


def test_schema_keeps_no_client_data_or_precise_times(store: Store):
    tables = [row[0] for row in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = {f"{table}.{row[1]}" for table in tables for row in store._conn.execute(f"PRAGMA table_info({table})")}
    suspicious = {c for c in columns if re.search(r"ip|addr|agent|_at$|time|stamp", c.split(".")[1])}
    # The one exception: throttling needs when journalist logins failed; the time is sealed
    # under the server's memory key, never stored readable (tests/test_seized_store.py).
    assert suspicious == {"failed_logins.sealed_time"}


def test_database_from_a_newer_intake_is_refused(store: Store, settings: Settings):
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    store._conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(SchemaTooNewError):
        Store.open(settings)


def test_counts_cover_every_kind(store: Store, source, recipients):
    _store_envelope(store, source.id, recipients, b"hello")
    store.add_reply(source.id, None, b"sealed")
    assert store.counts() == {"sources": 1, "submissions": 1, "replies": 1, "journalists": 3, "pending uploads": 0}


def test_start_submission_needs_a_recipient(store: Store, source):
    with pytest.raises(StoreError):
        store.start_submission(source.id, "message", [])


def _blobs_file(settings: Settings) -> Path:
    return settings.data_dir / "intake.db-blobs"


def _blob_chunk_count(store: Store, submission_id: str | None = None) -> int:
    sql, params = "SELECT count(*) FROM chunks", ()
    if submission_id is not None:
        sql, params = sql + " WHERE submission_id = ?", (submission_id,)
    blobs = store._legacy_blobs()
    return blobs.execute(sql, params).fetchone()[0] if blobs is not None else 0


def test_large_upload_goes_to_the_slots_file_all_but_its_header(store: Store, settings: Settings, source, recipients):
    header = b"HEADER-" + os.urandom(header_size(len(recipients)) - 7).hex().encode()[: header_size(len(recipients)) - 7]
    canary = b"CANARY-" + os.urandom(8).hex().encode()
    main_before = settings.db_path.stat().st_size
    body = header + canary * (2 * settings.upload_chunk_bytes // len(canary) + 100)  # stands in for an envelope
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(body)
        submission_id = upload.commit()
    assert b"".join(store.submission_ciphertext(submission_id)) == body
    slots = slots_path(settings.db_path)
    assert slots.stat().st_mode & 0o777 == 0o600
    assert slots.stat().st_blocks * 512 >= len(body) - len(header)
    store.recover()  # checkpoint the main database's WAL into its file
    assert settings.db_path.stat().st_size < main_before + settings.upload_chunk_bytes
    # The envelope's body is stored as given (it is ciphertext to the journalists); its header,
    # with the format's magic and the number of recipients, only in the encrypted database.
    assert canary in slots.read_bytes() and header[:16] not in slots.read_bytes()
    for path in settings.data_dir.glob("intake.db*"):
        assert path == slots or (canary not in path.read_bytes() and header[:16] not in path.read_bytes()), path.name


def test_short_message_is_stored_and_read_without_touching_the_slots_file(store: Store, settings: Settings, source, recipients):
    submission_id = _store_envelope(store, source.id, recipients, b"a short tip")
    assert b"".join(store.submission_ciphertext(submission_id))
    assert not _blobs_file(settings).exists() and not slots_path(settings.db_path).exists()


def test_a_missing_piece_is_reported_not_skipped(store: Store, settings: Settings, source, recipients):
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(3 * settings.upload_chunk_bytes))
        submission_id = upload.commit()
    store._conn.execute("UPDATE slots SET submission_id = NULL WHERE submission_id = ? AND seq = 1", (submission_id,))
    with pytest.raises(StoreError):
        b"".join(store.submission_ciphertext(submission_id))


def test_a_submission_stored_before_the_slots_file_still_reads_whole(store: Store, settings: Settings, source, recipients):
    envelope = os.urandom(3 * MiB + 12345)
    old = store_as_before_the_slots_file(store, source.id, envelope)
    new = _store_envelope(store, source.id, recipients, os.urandom(2 * MiB))
    assert b"".join(store.submission_ciphertext(old)) == envelope
    assert b"".join(store.submission_ciphertext(new))
    assert _blob_chunk_count(store, old) > 1 and _blob_chunk_count(store, new) == 0
    store._legacy_blobs().execute("DELETE FROM chunks WHERE submission_id = ? AND seq = 1", (old,))
    with pytest.raises(StoreError):
        b"".join(store.submission_ciphertext(old))


def test_blobs_file_is_refused_under_another_key(store: Store, settings: Settings):
    store_module._open_blobs(settings).close()  # a store from before the slots file has one
    wrong = dataclasses.replace(settings, db_key=bytes(range(32)))
    with pytest.raises(WrongDatabaseKeyError):
        Store(store._conn, wrong)._legacy_blobs()


def test_deleting_a_submission_reclaims_its_slots_and_space(store: Store, settings: Settings, source, recipients):
    from intake.store.newsroom import Newsroom

    store.recover()
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(3 * settings.upload_chunk_bytes))
        upload.commit()
    grown = _disk_bytes(settings)
    assert Newsroom(store).delete_submissions_of(source.id) == 1
    assert _slots_in_use(settings) == 0 and not store._conn.execute("SELECT 1 FROM slots WHERE dirty = 1").fetchall()
    assert _disk_bytes(settings) < grown - 2 * settings.upload_chunk_bytes


def test_recover_overwrites_the_slots_of_a_submission_that_is_gone(store: Store, settings: Settings, source, recipients):
    """As after a crash between deleting a submission and overwriting its slots (and, in a store
    from before the slots file, deleting its chunks)."""
    store_module._open_blobs(settings).close()
    store._legacy_blobs().execute("INSERT INTO chunks (submission_id, seq, data) VALUES ('gone', 0, x'00')")
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(settings.upload_chunk_bytes + 1))
        gone = upload.commit()
    with store.start_submission(source.id, "file", recipients) as upload:  # after it in the file
        upload.write(os.urandom(settings.upload_chunk_bytes + 1))
        kept = upload.commit()
    gone_slots = [slot for _seq, slot in slot_table.slots_of(store._conn, gone)]
    path = slots_path(settings.db_path)
    before = {slot: _slot_bytes(path, slot) for slot in gone_slots}
    with write_transaction(store._conn) as conn:
        conn.execute("DELETE FROM submissions WHERE id = ?", (gone,))
    assert store.recover() == 0
    assert _blob_chunk_count(store, "gone") == 0
    for slot, old in before.items():
        now = _slot_bytes(path, slot)
        # Overwritten with random bytes: nothing of the old ciphertext, and not told apart from a slot in use.
        assert len(now) == SLOT_BYTES and now != old and old[:4096] not in now and len(zlib.compress(now)) >= SLOT_BYTES
    assert not store._conn.execute("SELECT 1 FROM slots WHERE submission_id IS NULL AND dirty = 1").fetchall()
    assert len(b"".join(store.submission_ciphertext(kept))) == settings.upload_chunk_bytes + 1


def _slot_bytes(path: Path, slot: int) -> bytes:
    with open(path, "rb") as slots_file:
        slots_file.seek(slot * SLOT_BYTES)
        return slots_file.read(SLOT_BYTES)


def test_write_transaction_waits_for_the_lock_and_gives_up_clearly(settings: Settings, source):
    
    impatient = dataclasses.replace(settings, busy_timeout_ms=300)
    with Store.open(settings) as holder, Store.open(impatient) as waiter:
        holder._conn.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.1, holder._conn.execute, ("COMMIT",))
        release.start()
        started = time.monotonic()
        with write_transaction(waiter._conn) as conn:  # waits until the holder commits
            conn.execute("UPDATE sources SET last_active_day = last_active_day")
        assert 0.05 < time.monotonic() - started < 0.3
        release.join()
        holder._conn.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreError) as busy:
                with write_transaction(waiter._conn):
                    pass
            assert "busy" in str(busy.value) and 0.2 < time.monotonic() - started < 1.0
        finally:
            holder._conn.execute("ROLLBACK")


# Under gevent: how long `action()` took, and the longest the event loop went without serving
# another greenlet meanwhile (one that ticks every 10 ms), printed for the test to read.
_FROZEN_LOOP_PROBE = """
from gevent import monkey
monkey.patch_all()
import os, sys, time, gevent
from pathlib import Path
from intake.config import load_settings
from intake.store import Store, connection, slot_table

blocking_sleep = monkey.get_original("time", "sleep")  # stands for a slow disk: holds the calling thread
settings = load_settings(Path(sys.argv[1]))

def measure(action):
    ticks = []
    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)
    ticker = gevent.spawn(tick)
    gevent.sleep(0.05)
    started = time.monotonic()
    action()
    took = time.monotonic() - started
    ticker.kill()
    during = [t for t in ticks if t >= started] + [started + took]
    print(f"{took:.3f} {max(later - earlier for earlier, later in zip([started] + during, during)):.3f} {len(during) - 1}")
"""

_LOCK_HELD_BY_ANOTHER = """
from intake.store.connection import write_transaction
from intake.worker_threads import run_in_os_thread

holder, waiter = Store.open(settings), Store.open(settings)
run_in_os_thread(holder._conn.execute, "BEGIN IMMEDIATE")
gevent.spawn_later(0.35, run_in_os_thread, holder._conn.execute, "COMMIT")  # 0.3 s into measure()
def wait_for_the_lock():
    with write_transaction(waiter._conn):
        pass
measure(wait_for_the_lock)
"""

_SLOW_CLAIM = """
real_claim = slot_table.claim
def slow_claim(*args):
    blocking_sleep(0.3)
    return real_claim(*args)
slot_table.claim = slow_claim

with Store.open(settings) as store:
    upload = store.start_submission(store.create_source(os.urandom(32), os.urandom(32)).id, "file", store.active_recipients())
    def send():
        upload.write(os.urandom(2 * settings.upload_chunk_bytes + 5))  # two claims: the first piece's and the second's
        upload.commit()
    measure(send)
"""

_SLOW_COMMITS = """
real_empty_wal = connection.empty_wal
def slow_empty_wal(conn):
    blocking_sleep(0.2)  # after each commit
    return real_empty_wal(conn)
connection.empty_wal = slow_empty_wal
"""

_SLOW_SOURCE_WRITES = _SLOW_COMMITS + """
with Store.open(settings) as store:
    def visit():  # what a source's visits write: a new codename, a login's session, its day, replies read, logout
        source = store.create_source(os.urandom(32), os.urandom(32))
        store.save_session(b"session", source.id, b"sealed", int(time.time()) + 60)
        store.touch_source(source.id)
        store.mark_replies_read(source.id, ["no-such-reply"])
        store.delete_reply(source.id, "no-such-reply")
        store.delete_session(b"session")
    measure(visit)
"""

_SLOW_JOURNALIST_WRITES = _SLOW_COMMITS + """
from intake.store.newsroom import Newsroom
with Store.open(settings) as store:
    newsroom = Newsroom(store)
    journalist = store.active_recipients()[0]
    def visit():  # what a journalist's visit writes: a login, its session, an export, replies, a deletion, logout
        reservation = newsroom.reserve_login_attempt(journalist.journalist_id, b"name-key", sealed_now=b"now", recent=lambda sealed: True,
                                                     per_name=5, overall=50)
        assert newsroom.use_totp_step(journalist.journalist_id, 1, seal=lambda step: b"step", last_used=lambda sealed: 0)
        newsroom.login_succeeded(journalist.journalist_id, reservation)
        newsroom.save_journalist_session(b"session", journalist.journalist_id, b"sealed", int(time.time()) + 60)
        newsroom.mark_exported(["no-such-submission"])
        newsroom.import_replies(journalist.name, [("no-such-source", b"reply")])
        newsroom.delete_submissions_of("no-such-source")
        newsroom.delete_journalist_session(b"session")
    measure(visit)
"""


_UPLOADS_WAITING_FOR_THE_LOCK = """
from tests.fixtures_store import PAST_ANY_HEADER
from intake.worker_threads import run_in_os_thread

holder = Store.open(settings)
source_id = holder.create_source(os.urandom(32), os.urandom(32)).id
run_in_os_thread(holder._conn.execute, "BEGIN IMMEDIATE")  # another worker's long write
gevent.spawn_later(1.0, run_in_os_thread, holder._conn.execute, "COMMIT")
def send():
    with Store.open(settings) as store:
        upload = store.start_submission(source_id, "file", store.active_recipients())
        upload.write(os.urandom(settings.upload_chunk_bytes + PAST_ANY_HEADER))  # its first piece: a claim
        upload.commit()
senders = [gevent.spawn(send) for _ in range(12)]  # more than gevent's pool has threads
gevent.sleep(0.2)
started = time.monotonic()
run_in_os_thread(lambda: None)  # as a login's key derivation would
print(f"{time.monotonic() - started:.3f}")
gevent.joinall(senders, raise_error=True)
"""


def _probe(settings: Settings, script: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _FROZEN_LOOP_PROBE + script, str(settings.data_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def _frozen_loop(settings: Settings, script: str) -> tuple[float, float, int]:
    """(seconds the action took, the longest the loop went without serving the ticker, its ticks meanwhile)."""
    took, longest_frozen, ticks = _probe(settings, script)
    return float(took), float(longest_frozen), int(ticks)


def test_uploads_waiting_for_the_write_lock_leave_the_workers_threads_free(settings: Settings):
    """Uploads wait for the write lock on their own greenlets: the worker's few OS threads (a
    login's key derivation, a publish) are not held while another worker writes."""
    (waited,) = _probe(settings, _UPLOADS_WAITING_FOR_THE_LOCK)
    assert float(waited) < 0.2, waited


def test_waiting_for_the_write_lock_does_not_freeze_a_gevent_worker(settings: Settings):
    """Other connections of the worker keep being served while one request waits for the lock."""
    waited, _longest_frozen, ticks = _frozen_loop(settings, _LOCK_HELD_BY_ANOTHER)
    assert waited >= 0.25 and ticks >= 10


def test_an_uploads_slow_claim_does_not_freeze_a_gevent_worker(settings: Settings):
    """An upload claims its slots in a transaction whose commit waits for the disk (about 20 ms a
    claim on this VM, far more on a busy one). The worker's other connections (other sources, a
    journalist) keep being served meanwhile."""
    took, longest_frozen, _ticks = _frozen_loop(settings, _SLOW_CLAIM)
    assert took >= 0.6 and longest_frozen < 0.15, (took, longest_frozen)


def test_a_sources_writes_do_not_freeze_a_gevent_worker(settings: Settings):
    """A new codename, a login, reading replies and logging out each write to the store, and a
    write's commit waits for the disk. The worker's other connections keep being served meanwhile."""
    took, longest_frozen, _ticks = _frozen_loop(settings, _SLOW_SOURCE_WRITES)
    assert took >= 1.2 and longest_frozen < 0.1, (took, longest_frozen)


def test_a_journalists_writes_do_not_freeze_a_gevent_worker(settings: Settings):
    """The journalist interface runs in the same workers as the source site: a login, its
    session, an export's marks, imported replies and a deletion each commit, and a commit
    waits for the disk. Sources' connections keep being served meanwhile."""
    took, longest_frozen, _ticks = _frozen_loop(settings, _SLOW_JOURNALIST_WRITES)
    assert took >= 1.6 and longest_frozen < 0.1, (took, longest_frozen)


def test_a_slots_file_replaced_on_disk_is_opened_again_not_written_through_an_old_descriptor(store: Store, settings: Settings,
                                                                                            source, recipients):
    """A process keeps its descriptors of the slots file from one store to the next. If the file
    is replaced meanwhile (a restore writes a new one), writing through the old descriptors would
    put an acknowledged upload into a file no longer on the disk."""
    def stored(into: Store, body: bytes) -> str:
        with into.start_submission(source.id, "file", recipients) as upload:
            upload.write(body)
            return upload.commit()

    first = stored(store, os.urandom(2 * writer_module.INLINE_BYTES))  # opens the slots file
    slots = slots_path(settings.db_path)
    replacement = slots.with_name("replacement")
    replacement.write_bytes(slots.read_bytes())
    os.replace(replacement, slots)  # the same bytes, a new file
    body = os.urandom(2 * writer_module.INLINE_BYTES)
    with Store.open(settings) as again:
        second = stored(again, body)
    reader = subprocess.run([sys.executable, "-c", _PRINT_CIPHERTEXT_DIGEST, str(settings.data_dir), second, first],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.split() == [hashlib.sha256(body).hexdigest(), "first-readable"]



def test_an_upload_whose_slots_file_was_replaced_while_it_ran_is_refused_not_published(store: Store, settings: Settings,
                                                                                     source, recipients):
    before = store.counts()["submissions"]
    with pytest.raises(StoreError, match="please send it again"):
        with store.start_submission(source.id, "file", recipients) as upload:
            # Two chunks handed over: the second waits for the first, so the file exists with its slots in it.
            upload.write(os.urandom(3 * settings.upload_chunk_bytes))
            slots = slots_path(settings.db_path)
            replacement = slots.with_name("replacement")
            replacement.write_bytes(slots.read_bytes())
            os.replace(replacement, slots)
            upload.write(os.urandom(settings.upload_chunk_bytes))
            upload.commit()
    assert store.counts()["submissions"] == before

_PRINT_CIPHERTEXT_DIGEST = """
import hashlib, sys
from pathlib import Path
from intake.config import load_settings
from intake.store import Store
with Store.open(load_settings(Path(sys.argv[1]))) as store:
    print(hashlib.sha256(b"".join(store.submission_ciphertext(sys.argv[2]))).hexdigest())
    b"".join(store.submission_ciphertext(sys.argv[3]))
    print("first-readable")
"""


def test_an_unused_source_is_exchanged_with_its_session_in_one_step(store: Store):
    first = store.create_source(b"\x20" * 32, b"\x00" * 32)
    store.save_session(b"\x21" * 32, first.id, b"sealed", 2_000_000_000)
    second = store.exchange_unused_source(first.id, b"\x22" * 32, b"\x00" * 32, (b"\x23" * 32, b"sealed", 2_000_000_000))
    assert store.source_by_lookup(b"\x20" * 32) is None and store.load_session(b"\x21" * 32) is None
    assert store.source_by_lookup(b"\x22" * 32) == second and store.load_session(b"\x23" * 32) == (second.id, b"sealed")
    # The same request again (a double click: the first answer never reached the browser) still
    # gets its codename, though the first source is already gone.
    third = store.exchange_unused_source(first.id, b"\x24" * 32, b"\x00" * 32, (b"\x25" * 32, b"sealed", 2_000_000_000))
    assert third is not None and store.load_session(b"\x25" * 32) == (third.id, b"sealed")


def test_a_source_that_sent_something_is_not_exchanged(store: Store, source, recipients):
    with store.start_submission(source.id, "message", recipients) as upload:
        upload.write(b"\x00" * 200)
        upload.commit()
    assert store.exchange_unused_source(source.id, b"\x26" * 32, b"\x00" * 32, (b"\x27" * 32, b"sealed", 2_000_000_000)) is None
    assert store.source_by_lookup(b"\x01" * 32) == source and store.source_by_lookup(b"\x26" * 32) is None
    assert store.load_session(b"\x27" * 32) is None


def _kept_from_exchange(store: Store, source) -> None:
    assert store.exchange_unused_source(source.id, b"\x28" * 32, b"\x00" * 32, (b"\x29" * 32, b"sealed", 2_000_000_000)) is None
    assert store.source_by_lookup(b"\x01" * 32) == source and store.source_by_lookup(b"\x28" * 32) is None


def test_a_source_whose_submissions_were_deleted_is_not_exchanged(store: Store, source, recipients):
    from intake.store.newsroom import Newsroom

    with store.start_submission(source.id, "message", recipients) as upload:
        upload.write(b"\x00" * 200)
        upload.commit()
    Newsroom(store).delete_submissions_of(source.id)
    _kept_from_exchange(store, source)  # it did send something: the newsroom may still reply


def test_a_source_with_an_upload_in_flight_is_not_exchanged(store: Store, source, recipients):
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(40 << 20))  # enough for its first piece, with the pending row, to be stored
        _kept_from_exchange(store, source)


def test_a_source_with_only_a_reply_is_not_exchanged(store: Store, source, recipients):
    store.add_reply(source.id, recipients[0].journalist_id, b"x" * 100)
    _kept_from_exchange(store, source)
