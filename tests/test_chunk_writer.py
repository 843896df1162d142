"""The chunk writer (intake/store/chunk_writer.py): the uploads in flight of one process write
their chunks through one blobs connection, closed when the last of them ends; chunks handed
over together share a commit, and one that fails there fails alone."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from keys.envelope import EnvelopeWriter, Metadata, decrypt_bytes

from intake.config import Settings
from intake.store import Store
from intake.store.connection import IntegrityError, connect_blobs
from intake.store.store import blobs_path
from tests.fixtures_store import journalists, recipients, settings, source, store  # noqa: F401 - fixtures

UPLOADS = 12
CHUNK = 64 * 1024


def _open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
    return count


def test_uploads_in_flight_share_one_blobs_connection_closed_after_the_last(settings: Settings, journalists, source, recipients):
    small_chunks = dataclasses.replace(settings, upload_chunk_bytes=CHUNK)
    blobs = blobs_path(settings)
    stores = [Store.open(small_chunks) for _ in range(UPLOADS)]
    try:
        uploads, contents = [], []
        for own in stores:
            content = os.urandom(5 * CHUNK // 2)
            upload = own.start_submission(source.id, "file", recipients)
            with EnvelopeWriter(upload, [r.public_key for r in recipients], Metadata("file", name="f.bin")) as envelope:
                envelope.write(content)
            uploads.append(upload)
            contents.append(content)
        # Every upload has handed chunks over and is still in flight (none published yet).
        in_flight = _open_descriptors(blobs)
        ids = [upload.commit() for upload in uploads]
        after = _open_descriptors(blobs)
    finally:
        for own in stores:
            own.close()
    print(f"\n{UPLOADS} uploads in flight: {in_flight} descriptor(s) on the blobs database; {after} after they ended")
    assert in_flight == 1  # one per upload before the chunk writer (each store its own connection)
    assert after == 0
    with Store.open(settings) as fresh:
        for submission_id, content in zip(ids, contents):
            ciphertext = b"".join(fresh.submission_ciphertext(submission_id))
            assert decrypt_bytes(ciphertext, journalists[0][0].private_key)[1] == content


def test_a_chunk_failing_in_a_shared_commit_fails_alone(settings: Settings, store: Store, source, recipients):
    """While another connection holds the blobs database's write lock, a first chunk's commit
    waits; two more queue behind it and then share the next commit. One of them is a chunk
    already stored (the same upload and number): it alone is refused."""
    store._blobs_connection()  # the blobs database exists, with its table
    blocker = connect_blobs(blobs_path(settings), settings.db_key, busy_timeout_ms=1000)
    writer = store._chunk_writer()
    outcome: dict[str, BaseException | None] = {}
    rowids = {"first": 1, "second": 2, "again": 3}

    def write(name: str, submission_id: str, seq: int) -> None:
        try:
            writer.write(rowids[name], submission_id, seq, name.encode() * 1000, release_cache=True)
            outcome[name] = None
        except BaseException as error:  # noqa: BLE001 - recorded for the test to look at
            outcome[name] = error

    writer.enter()
    try:
        writer._connection()  # opened (its pragmas set) before the lock is taken
        blocker.execute("BEGIN IMMEDIATE")
        threads = [threading.Thread(target=write, args=("first", "upload-a", 0))]
        threads[0].start()
        _wait_until(lambda: writer._group._leading)  # its commit waits for the lock
        for name, seq in (("second", 1), ("again", 0)):  # "again": upload-a's chunk 0 once more
            threads.append(threading.Thread(target=write, args=(name, "upload-a", seq)))
            threads[-1].start()
        _wait_until(lambda: len(writer._group._waiting) == 2)
        blocker.execute("COMMIT")
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        blocker.close()
        writer.leave()
    assert outcome["first"] is None and outcome["second"] is None
    assert isinstance(outcome["again"], IntegrityError), outcome
    rows = store._blobs_connection().execute("SELECT seq, data FROM chunks WHERE submission_id = 'upload-a' ORDER BY seq").fetchall()
    assert rows == [(0, b"first" * 1000), (1, b"second" * 1000)]


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)
