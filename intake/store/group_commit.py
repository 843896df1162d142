"""Publishing the submissions of many requests in one transaction (group commit); a source's
other writes (a new codename, a session, replies read) go the same way (Store._write).

A submission is acknowledged only once it is durable: its transaction committed (the WAL
fsynced) and the WAL emptied into the database (connection.empty_wal: more fsyncs). That is
several milliseconds of waiting on the disk, and it was paid once per request: 50 sources
sending at once queued on the write lock and got through at a fraction of a plain app's rate.

Here the requests of one process that want to publish at the same moment share one
transaction: the first to arrive leads; whoever arrives while it commits waits, and the first
of them leads the next batch with everyone who came meanwhile. Each request's writes run in a
savepoint of their own, so one that fails (an upload removed before it completed) is rolled
back alone and gets its own error while the rest commit. If the commit itself fails (a full
disk), every request of the batch gets the error and none is acknowledged. The commit runs
in an OS thread: under a gevent worker, the other connections keep being served meanwhile. A
request stopped while it waits (its greenlet killed) leaves the queue, or leads it first if it
was just made the leader; a leader stopped while its commit runs waits for the outcome first.
"""

from __future__ import annotations

import copy
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from intake.store.connection import Connection, translate_errors, write_transaction
from intake.store.errors import StoreError
from intake.worker_threads import start_in_os_thread

Work = Callable[[Connection], None]


class _Request:
    __slots__ = ("error", "finished", "leads", "wake", "work")

    def __init__(self, work: Work):
        self.work = work
        self.wake = threading.Event()  # gevent's Event in a patched worker: only the greenlet waits
        self.leads = False
        self.finished = False
        self.error: BaseException | None = None


class GroupCommit:
    """The publishing queue of one database in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._leading = False

    def publish(self, conn: Connection, work: Work) -> None:
        """Run ``work(conn)`` in a write transaction, perhaps shared with other requests'
        work; returns once it is committed (and the WAL emptied); raises what ``work`` raised
        or what the commit did."""
        request = _Request(work)
        with self._lock:
            self._waiting.append(request)
            if not self._leading:
                self._leading = request.leads = True
        if not request.leads:
            try:
                request.wake.wait()  # finished by a leader, or made the next leader
            except BaseException:  # this request is being stopped (its greenlet killed, say)
                if not self._give_up(request):
                    self._lead(conn)  # it was just made the leader: the others must not wait for ever
                raise
        if not request.finished:
            self._lead(conn)
        if request.error is not None:
            raise request.error

    def _give_up(self, request: _Request) -> bool:
        """Take a stopped request out of the queue; False if it was made the next leader."""
        with self._lock:
            if request.leads and not request.finished:
                return False
            if request in self._waiting:
                self._waiting.remove(request)
            return True

    def _lead(self, conn: Connection) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        stopped: BaseException | None = None
        try:
            running = start_in_os_thread(_commit, conn, batch)
        except BaseException as failure:  # no thread took the commit (stopped while the pool was full, say)
            running = None
            if not isinstance(failure, Exception):
                stopped = failure  # re-raised below, once the others are told
            for request in batch:  # none of the batch is stored: each is told so, none waits for ever
                request.error = _not_stored()
        try:
            while running is not None:
                try:
                    running.result()
                except Exception as error:  # the transaction is gone: none of the batch is stored
                    for request in batch:
                        # Each its own copy: raised in every request, one shared object would gather
                        # every request's frames (and the plaintext they hold) in its traceback.
                        request.error = request.error or _own_copy(error)
                except BaseException as stop:  # re-raised below
                    # The leader is being stopped (its greenlet killed, say), but its commit goes on in
                    # the OS thread: wait for the outcome, so that no request is told the wrong one.
                    stopped = stopped or stop
                    continue
                break
        finally:
            for request in batch:
                request.finished = True
            with self._lock:
                if self._waiting:
                    following = self._waiting[0]
                    following.leads = True
                    following.wake.set()
                else:
                    self._leading = False
            for request in batch:
                request.wake.set()
        if stopped is not None:
            raise stopped


def _commit(conn: Connection, batch: list[_Request]) -> None:
    with write_transaction(conn):
        for request in batch:
            conn.execute("SAVEPOINT request")
            try:
                with translate_errors():
                    request.work(conn)
            except Exception as error:  # this request's own failure, given back to it
                request.error = _detached(error)
                if not conn.in_transaction:  # SQLite rolled the whole transaction back (a full disk, say)
                    raise _own_copy(request.error) from None  # the batch fails with it; this request keeps its own
                conn.execute("ROLLBACK TO request")
            conn.execute("RELEASE request")


def _detached(error: Exception) -> Exception:
    """The error without its traceback and the error it chains: they hold _commit's frame, and
    with it the work of every request of the batch (and what that work holds). Where it was
    raised stays, as text, for the error log (intake.logs)."""
    error.raised_in_thread_at = traceback.format_tb(error.__traceback__)
    error.__traceback__ = None
    error.__context__ = error.__cause__ = None
    return error


def _own_copy(error: Exception) -> Exception:
    """The same error in a new object with no traceback (a StoreError if it cannot be copied);
    where the original was raised stays, as text, for the error log."""
    try:
        duplicate = copy.copy(error).with_traceback(None)
    except Exception:  # an exception whose constructor takes other arguments than its args
        duplicate = _not_stored()
    duplicate.raised_in_thread_at = getattr(error, "raised_in_thread_at", None) or traceback.format_tb(error.__traceback__)
    return duplicate


def _not_stored() -> StoreError:
    return StoreError("the database could not store this: please send it again")


_groups: dict[tuple[int, Path], GroupCommit] = {}
_groups_lock = threading.Lock()


def group_for(database: Path) -> GroupCommit:
    """The queue of ``database`` in this process (a worker's requests all share it; a forked
    worker gets its own)."""
    with _groups_lock:
        return _groups.setdefault((os.getpid(), Path(database)), GroupCommit())
