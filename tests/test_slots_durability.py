"""No submission is published before what it wrote to the slots file is durable: on every path
(one large upload, the parts of one request stored at its commit, a slow upload's pieces), a
sync of the slots file comes after its last write and before the publishing transaction.
(kill -9 cannot show this: the page cache outlives the process; only a power cut would.)"""

from __future__ import annotations

import errno
import os

import pytest

from intake.store import Store, StoreError
from intake.store import submission_writer as writer_module
from intake.store.slots_file import SLOT_BYTES
from tests.fixtures_store import PAST_ANY_HEADER

MiB = 1 << 20


@pytest.fixture
def events(store: Store, monkeypatch) -> list[str]:
    """'write' and 'sync' of the slots file, 'publish' of a transaction, in the order they happen."""
    seen: list[str] = []
    slots = store._slots()
    real_pwrite, real_fdatasync, real_publish_in = os.pwrite, os.fdatasync, Store._publish_in

    def ours(fd: int) -> bool:
        return fd in (slots._fd, slots._direct_fd)

    def pwrite(fd, data, offset):
        if ours(fd):
            seen.append("write")
        return real_pwrite(fd, data, offset)

    def fdatasync(fd):
        result = real_fdatasync(fd)
        if ours(fd):
            seen.append("sync")
        return result

    def publish_in(self, conn, pieces):
        seen.append("publish")
        return real_publish_in(self, conn, pieces)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(Store, "_publish_in", publish_in)
    return seen


def _synced_before_each_publish(seen: list[str]) -> bool:
    pending_writes = False
    for event in seen:
        if event == "write":
            pending_writes = True
        elif event == "sync":
            pending_writes = False
        elif event == "publish" and pending_writes:
            return False
    return "write" in seen and "publish" in seen


def test_a_large_upload_is_synced_before_it_is_published(store: Store, source, recipients, events):
    with store.start_submission(source.id, "file", recipients) as upload:
        upload.write(os.urandom(9 * MiB))
        upload.commit()
    assert _synced_before_each_publish(events), events


def test_parts_stored_at_the_commit_are_synced_before_they_are_published(store: Store, source, recipients, events):
    # Two parts of one request, each under the inline size but not both: the second goes to the
    # slots file at the commit itself.
    uploads = [store.start_submission(source.id, kind, recipients) for kind in ("message", "file")]
    for upload in uploads:
        upload.write(os.urandom(200 * 1024))
    store.commit_together(uploads)
    assert _synced_before_each_publish(events), events


def test_a_failed_sync_fails_every_upload_that_wrote_before_it(store: Store, source, recipients, monkeypatch):
    """Linux reports a failed write-back once per open file: the upload whose sync hears of it
    fails, and so does every other upload that wrote before it; one that came after is kept."""
    slots = store._slots()
    first, second = (store.start_submission(source.id, "file", recipients) for _ in range(2))
    for upload in (first, second):
        upload.write(os.urandom(4 * MiB + PAST_ANY_HEADER))  # a chunk of each written before the failure
    real_fdatasync, failures = os.fdatasync, [OSError(errno.EIO, "Input/output error")]

    def failing_once(fd):
        if fd in (slots._fd, slots._direct_fd) and failures:
            raise failures.pop()
        return real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)
    with pytest.raises(StoreError, match="could not sync"):
        first.commit()
    first.abort()
    with pytest.raises(StoreError, match="the disk failed to keep an upload"):
        second.commit()
    second.abort()
    with store.start_submission(source.id, "file", recipients) as later:
        later.write(os.urandom(2 * MiB))
        kept = later.commit()
    assert [submission.id for submission in store.submissions()] == [kept]


def test_a_slow_uploads_pieces_are_synced_before_it_is_published(store: Store, source, recipients, events, monkeypatch):
    monkeypatch.setattr(writer_module, "SLOW_FLUSH_SECONDS", 0.0)  # every piece of a slot or more is stored at once
    with store.start_submission(source.id, "file", recipients) as upload:
        for _ in range(5):
            upload.write(os.urandom(SLOT_BYTES + 1000))
        upload.commit()
    assert events.count("write") >= 5 and _synced_before_each_publish(events), events
