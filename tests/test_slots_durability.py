"""No submission is published before what it wrote to the slots file is durable: on every path
(one large upload, the parts of one request stored at its commit, a slow upload's pieces), a
sync of the slots file comes after its last write and before the publishing transaction.
(kill -9 cannot show this: the page cache outlives the process; only a power cut would.)"""

from __future__ import annotations

import os

import pytest

from intake.store import Store
from intake.store import store as store_module
from intake.store.slots_file import SLOT_BYTES

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


def test_a_slow_uploads_pieces_are_synced_before_it_is_published(store: Store, source, recipients, events, monkeypatch):
    monkeypatch.setattr(store_module, "SLOW_FLUSH_SECONDS", 0.0)  # every piece of a slot or more is stored at once
    with store.start_submission(source.id, "file", recipients) as upload:
        for _ in range(5):
            upload.write(os.urandom(SLOT_BYTES + 1000))
        upload.commit()
    assert events.count("write") >= 5 and _synced_before_each_publish(events), events
