"""Group commit (intake/store/group_commit.py): requests publishing at the same moment share a
transaction; each gets its own outcome; none waits for ever; a failed commit acknowledges none."""

from __future__ import annotations

import logging
import secrets
import threading

import pytest

from intake.config import Settings
from intake.logs import RedactRequestDetails
from intake.store import Recipient, Source, Store
from intake.store.connection import Connection
from intake.store.errors import StoreError
from intake.store import group_commit
from intake.store.group_commit import GroupCommit, Work, group_for
from tests.fixtures_store import PAST_ANY_HEADER, recipients, settings, source, store  # noqa: F401 - fixtures

SENDERS = 24


def _send_at_once(settings: Settings, source: Source, recipients: list[Recipient], senders: int,
                  removed: set[int] = frozenset()) -> dict[int, str | BaseException]:
    """`senders` threads, each with its own store, publish one message at the same moment;
    the uploads of the indexes in `removed` are deleted just before they publish."""
    outcome: dict[int, str | BaseException] = {}
    start_line = threading.Barrier(senders)

    def send(index: int) -> None:
        with Store.open(settings) as own:
            upload = own.start_submission(source.id, "message", recipients)
            if index in removed:
                # A first chunk stored (its pending row with it), then the row removed, as
                # recovery or deleting the source would, while the rest is still arriving.
                upload.write(b"x" * (settings.upload_chunk_bytes + PAST_ANY_HEADER))
                upload.write(b"the rest")
                own._settle()  # the first chunk's transaction runs beside the upload: it has ended now
                own._conn.execute("DELETE FROM submissions WHERE id = ?", (upload.id,))
            else:
                upload.write(f"message {index}".encode())
            start_line.wait()
            try:
                outcome[index] = upload.commit()
            except BaseException as error:  # noqa: BLE001 - recorded for the test to look at
                outcome[index] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a request waited for ever"
    return outcome


def test_requests_publishing_at_once_all_land(settings, store, source, recipients, monkeypatch):
    batches = _count_batches(monkeypatch)
    outcome = _send_at_once(settings, source, recipients, SENDERS)
    assert all(isinstance(value, str) for value in outcome.values()), outcome
    stored = {s.id for s in store.submissions(source.id)}
    assert stored == set(outcome.values())
    # They shared transactions (how many depends on timing; never one each when they all wait).
    print(f"\n{SENDERS} requests published in {len(batches)} transactions: {batches}")
    assert sum(batches) == SENDERS and len(batches) < SENDERS


def test_one_request_failing_does_not_take_the_others_with_it(settings, store, source, recipients):
    removed = {3, 11}
    outcome = _send_at_once(settings, source, recipients, SENDERS, removed)
    for index, value in outcome.items():
        if index in removed:
            assert isinstance(value, StoreError) and "removed before it completed" in str(value)
        else:
            assert isinstance(value, str), value
    assert {s.id for s in store.submissions(source.id)} == {v for v in outcome.values() if isinstance(v, str)}


def _good_and_bad_in_one_batch(settings: Settings, bad: Work) -> dict[str, BaseException | None]:
    """A leader in flight holds the queue while two requests wait; then they share a batch: `good`
    inserts a probe row, `bad` is the given work. Returns what each of the three got."""
    group = GroupCommit()
    in_flight, release = threading.Event(), threading.Event()
    outcome: dict[str, BaseException | None] = {}
    stores = {name: Store.open(settings) for name in ("first", "good", "bad")}
    stores["first"]._conn.execute("CREATE TABLE IF NOT EXISTS probe (name TEXT)")

    def first(conn: Connection) -> None:
        in_flight.set()
        release.wait(30)

    def good(conn: Connection) -> None:
        conn.execute("INSERT INTO probe VALUES ('good')")

    def run(name: str, work: Work) -> None:
        try:
            group.publish(stores[name]._conn, work)
            outcome[name] = None
        except BaseException as error:  # noqa: BLE001 - recorded for the test to look at
            outcome[name] = error

    try:
        threads = [threading.Thread(target=run, args=("first", first))]
        threads[0].start()
        assert in_flight.wait(30)
        for name, work in (("good", good), ("bad", bad)):
            threads.append(threading.Thread(target=run, args=(name, work)))
            threads[-1].start()
        while len(group._waiting) < 2:
            threading.Event().wait(0.01)
        release.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        for own in stores.values():
            own.close()
    return outcome


def _probe_rows(settings: Settings) -> list:
    with Store.open(settings) as fresh:
        return fresh._conn.execute("SELECT name FROM probe").fetchall()


def test_when_the_commit_fails_no_request_of_the_batch_is_acknowledged(settings, store):
    """Two requests share a batch whose COMMIT fails (a foreign key checked only at COMMIT):
    both get the error, neither's writes stay."""

    def bad(conn: Connection) -> None:
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO submission_chunks (submission_id, seq, data) VALUES ('no such submission', 0, x'00')")

    outcome = _good_and_bad_in_one_batch(settings, bad)
    assert outcome["first"] is None
    # Both get the COMMIT's error, each in an object of its own: one shared object raised in two
    # requests would gather both requests' frames, and what they hold, in its traceback.
    good, bad_error = outcome["good"], outcome["bad"]
    assert type(good) is type(bad_error) and good.args == bad_error.args and good is not bad_error
    assert _probe_rows(settings) == []


def _frames_held_by(error: BaseException) -> list:
    """Every frame the error keeps alive through its tracebacks (and those of the errors it chains)."""
    frames, errors, seen = [], [error], set()
    while errors:
        current = errors.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback = current.__traceback__
        while traceback is not None:
            frames.append(traceback.tb_frame)
            traceback = traceback.tb_next
        errors += [current.__context__, current.__cause__]
    return frames


def test_a_requests_own_error_keeps_no_frame_of_the_shared_transaction(settings, store):
    """A request whose own work fails gets its error without the frames of the transaction it
    shared: they hold the work of every request of the batch, and what that work holds."""

    def bad(conn: Connection) -> None:
        raise StoreError("the upload was removed before it completed: please send it again")

    outcome = _good_and_bad_in_one_batch(settings, bad)
    assert outcome["good"] is None and isinstance(outcome["bad"], StoreError), outcome
    assert "removed before it completed" in str(outcome["bad"])
    held = [frame.f_code.co_name for frame in _frames_held_by(outcome["bad"]) if "batch" in frame.f_locals]
    assert held == [], held


def test_a_requests_own_error_still_tells_the_error_log_where_it_was_raised(settings, store):
    """Without its frames, the error keeps where it was raised as text: the error log shows the
    code locations (intake.logs withholds the message, which may quote request data)."""

    quoted = secrets.token_hex(8)  # what the message quotes: bytes of an upload, say

    def a_step_of_the_work() -> None:
        raise KeyError(quoted)

    def bad(conn: Connection) -> None:
        a_step_of_the_work()

    error = _good_and_bad_in_one_batch(settings, bad)["bad"]
    assert isinstance(error, KeyError), error
    record = logging.LogRecord("intake", logging.ERROR, __file__, 1, "publishing failed", (), (type(error), error, error.__traceback__))
    RedactRequestDetails().filter(record)
    assert "a_step_of_the_work" in record.exc_text and "_commit" in record.exc_text, record.exc_text
    assert quoted not in record.exc_text


def test_when_one_request_ends_the_whole_transaction_the_batch_fails_cleanly(settings, store):
    """A statement that makes SQLite roll the whole transaction back (a full disk mid-statement):
    no savepoint is left to roll back to, so every request of the batch gets that error, and
    nothing of the batch is stored."""

    def bad(conn: Connection) -> None:
        conn.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL in the middle of a statement
        raise StoreError("the disk is full")

    outcome = _good_and_bad_in_one_batch(settings, bad)
    assert isinstance(outcome["good"], StoreError) and isinstance(outcome["bad"], StoreError), outcome
    assert _probe_rows(settings) == []
    for error in (outcome["good"], outcome["bad"]):
        assert not [frame for frame in _frames_held_by(error) if "batch" in frame.f_locals]


def test_a_leader_that_leaves_hands_the_queue_on(settings, store):
    """Many small publishes from many threads on one group: all finish, each exactly once."""
    group = GroupCommit()
    done = []
    lock = threading.Lock()
    stores = [Store.open(settings) for _ in range(16)]
    try:
        def publish(own: Store, index: int) -> None:
            for round_ in range(10):
                def work(conn: Connection, tag=(index, round_)) -> None:
                    with lock:
                        done.append(tag)
                group.publish(own._conn, work)

        threads = [threading.Thread(target=publish, args=(own, i)) for i, own in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        for own in stores:
            own.close()
    assert sorted(done) == sorted((i, r) for i in range(16) for r in range(10))


def test_a_commit_no_thread_would_take_fails_its_batch_and_the_queue_goes_on(settings, store, monkeypatch):
    """The leader cannot hand the commit to a thread (none can start, or it is stopped while the
    pool is full): its batch is told nothing was stored, and the next publish still runs."""
    group = GroupCommit()
    ran = []
    real_start = group_commit.start_in_os_thread

    def no_thread(*_args):
        monkeypatch.setattr(group_commit, "start_in_os_thread", real_start)  # only this once
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(group_commit, "start_in_os_thread", no_thread)
    with pytest.raises(StoreError, match="could not store"):
        group.publish(store._conn, lambda conn: ran.append("first"))
    after = threading.Thread(target=group.publish, args=(store._conn, lambda conn: ran.append("after")))
    after.start()
    after.join(10)
    assert not after.is_alive(), "the next publish waited for a leader that had gone"
    assert ran == ["after"]


def test_each_process_and_database_has_its_own_queue(settings, tmp_path):
    assert group_for(settings.db_path) is group_for(settings.db_path)
    assert group_for(settings.db_path) is not group_for(tmp_path / "other.db")


def _count_batches(monkeypatch) -> list[int]:
    """The size of each batch committed from now on (filled in as they commit)."""
    batches: list[int] = []
    commit = group_commit._commit

    def counting(conn: Connection, batch: list) -> None:
        commit(conn, batch)
        batches.append(len(batch))

    monkeypatch.setattr(group_commit, "_commit", counting)
    return batches


GEVENT_STOPPED_WAITERS = r"""
from gevent import monkey
monkey.patch_all()
import gevent
from intake.store import group_commit

committed = []
group_commit._commit = lambda conn, batch: (gevent.sleep(0.05), [r.work(conn) for r in batch])
group = group_commit.GroupCommit()

def run(name):
    group.publish(None, lambda conn: committed.append(name))
    return name

# A: a request stopped while it waits is taken out of the queue; the one behind it still gets through.
leader = gevent.spawn(run, "leader")
gevent.sleep(0.01)
stopped, behind = gevent.spawn(run, "stopped"), gevent.spawn(run, "behind")
gevent.sleep(0.01)
gevent.kill(stopped)
gevent.joinall([leader, behind], timeout=5)
assert leader.value == "leader" and behind.value == "behind", (leader.value, behind.value)
assert "stopped" not in committed and not group._leading, committed

# B: a request stopped just as it is made the next leader still leads the others before it goes,
# and a leader stopped while its commit runs waits for it: the others are told what happened.
for kill_after in (0, 0.02):
    committed.clear()
    group._leading = True  # someone else leads: both wait
    promoted, after = gevent.spawn(run, "promoted"), gevent.spawn(run, "after")
    gevent.sleep(0.01)
    with group._lock:
        group._waiting[0].leads = True
        group._waiting[0].wake.set()
    gevent.sleep(kill_after)
    gevent.kill(promoted)
    after.join(timeout=5)
    assert after.value == "after" and sorted(committed) == ["after", "promoted"], (kill_after, after.value, committed)
    assert not group._leading
print("ok")
"""


def test_under_gevent_a_request_stopped_while_it_waits_never_blocks_the_others():
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-c", GEVENT_STOPPED_WAITERS], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
