"""Writing large uploads' chunks into the blobs database: one connection per process, commits shared.

Each upload in flight used to write its chunks through a blobs connection of its own, and a
slow upload (over Tor: most of them) kept it for minutes: SQLCipher's page buffers, a copy of
its last chunk bound in the connection's cached INSERT, and, while it queued for the blobs
database's write lock behind other uploads' commits, the pages it had read meanwhile (1.25 MiB,
allocated in bulk with 64 KiB pages). Measured in a worker: ~1 MiB of SQLite's memory per slow
upload in flight, more as the disk slowed.

Now the uploads of one process hand their chunks to one connection, and the chunks handed over
while a commit runs are written together in the next (intake.store.group_commit's queue, as
for the main database's publications): a burst of slow uploads holds one connection, one
commit at a time, and pays far fewer fsyncs. A chunk is acknowledged to its upload only once
committed. The connection is closed when no upload of the process is writing chunks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from intake.store.connection import Connection, translate_errors, write_transaction
from intake.store.group_commit import GroupCommit

if TYPE_CHECKING:
    from intake.store.group_commit import _Request

_INSERT = "INSERT INTO chunks (rowid, submission_id, seq, data) VALUES (?, ?, ?, ?)"


class ChunkWriter:
    """The chunk writes of one blobs database in this process.

    An upload calls enter() before its first write() and leave() once its last has ended.
    """

    def __init__(self, open_connection: Callable[[], Connection]):
        self._open_connection = open_connection
        self._group = GroupCommit(self._commit)
        self._lock = threading.Lock()  # gevent's in a gevent worker
        self._conn: Connection | None = None
        self._users = 0
        # Set by a batch holding a piece smaller than a chunk (a slow upload's), in the OS
        # thread that commits it: its pages are released after the commit.
        self._release_cache = False

    def enter(self) -> None:
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._conn is None:
                return
            conn, self._conn = self._conn, None
        conn.close()

    def write(self, rowid: int, submission_id: str, seq: int, data: bytes | bytearray, *, release_cache: bool) -> None:
        """Store one chunk; returns once it is committed, raises what the commit raised.
        ``release_cache``: a slow upload's piece, whose pages are not kept after the commit."""

        def work(conn: Connection) -> None:
            conn.execute(_INSERT, (rowid, submission_id, seq, data))
            if release_cache:
                self._release_cache = True

        self._group.publish(self._connection(), work)

    def _connection(self) -> Connection:
        with self._lock:
            if self._conn is None:
                self._conn = self._open_connection()
            return self._conn

    def _commit(self, conn: Connection, batch: list[_Request]) -> None:
        """One chunk: one autocommit statement, as a lone upload's chunks always were (SQLite's
        busy handler may wait in this OS thread; every statement is a trip for the GIL, and
        3 statements per chunk made a fast upload's overlap with encryption ~25% worse).
        Several: one transaction; a chunk whose INSERT fails alone is undone alone (SQLite
        rolls back the statement) and its upload gets the error."""
        if len(batch) == 1:
            with translate_errors():
                batch[0].work(conn)
        else:
            with write_transaction(conn):
                for request in batch:
                    try:
                        with translate_errors():
                            request.work(conn)
                    except Exception as error:  # noqa: BLE001 - given back to its request
                        if not conn.in_transaction:
                            raise  # SQLite rolled the whole transaction back: the batch fails with it
                        request.error = error
        if self._release_cache:
            # Up to 8 MiB of pages stay cached after a commit (connection.py). Kept when the batch
            # held full chunks only: a fast upload refills the cache at once (releasing cost 10-15%
            # of its speed).
            self._release_cache = False
            with translate_errors():
                conn.execute("PRAGMA shrink_memory")


_writers: dict[tuple[int, Path, int], ChunkWriter] = {}
_writers_lock = threading.Lock()


def chunk_writer_for(blobs: Path, busy_timeout_ms: int, open_connection: Callable[[], Connection]) -> ChunkWriter:
    """The chunk writer of the blobs database ``blobs`` in this process (a forked worker gets
    its own); ``open_connection`` opens it with that wait for the write lock."""
    with _writers_lock:
        key = (os.getpid(), Path(blobs), busy_timeout_ms)
        if key not in _writers:
            _writers[key] = ChunkWriter(open_connection)
        return _writers[key]
