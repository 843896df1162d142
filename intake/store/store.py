"""The encrypted store: what intake keeps, and the SQL that keeps it.

One `Store` wraps one connection to the main SQLCipher database (see connection.py);
use it from one request or thread at a time. Transactions are short and explicit.
This module opens and closes it and keeps journalists, sources, replies and sessions;
uploads.py stores and publishes submissions (ciphertext already encrypted to the
journalists goes to the slots file, slots_file.py, with no second encryption), and
reads.py reads their envelopes back. A slow upload over Tor never holds the
database's write lock while it arrives. Envelopes stored before the slots file
(schema 8 and older) are read from the blobs database (intake.db-blobs), which
nothing writes any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from keys.envelope import header_size

from intake.store.connection import (
    Connection,
    DatabaseError,
    IntegrityError,
    connect,
    connect_blobs,
    empty_wal,
    translate_errors,
    write_transaction,
)
from intake.store.designations import random_designation
from intake.store.errors import JournalistExistsError, NotInitialisedError, SourceExistsError, StoreError
from intake.store.file_times import settle_file_times
from intake.store.group_commit import group_for
from intake.store.migrations import BLOBS_MIGRATIONS, migrate
from intake.store.reads import EnvelopeReads
from intake.store.records import (
    ID_BATCH,
    NEVER_SENT,
    Journalist,
    Recipient,
    Source,
    StoredReply,
    StoredSubmission,
    expires_by_day,
    new_id,
    today,
)
from intake.store.slots_file import SLOT_BYTES, SlotsFile, slots_file_for, slots_path
from intake.store.submission_writer import SubmissionWriter
from intake.store.uploads import UploadWrites
from intake.told import told
from intake.worker_threads import Running

if TYPE_CHECKING:
    from intake.config import Settings

_DESIGNATION_ATTEMPTS = 20
BLOBS_SUFFIX = "-blobs"  # intake.db-blobs: named like SQLite's own side files, so intake.db* is the whole store

T = TypeVar("T")


def blobs_path(settings: Settings) -> Path:
    return settings.db_path.with_name(settings.db_path.name + BLOBS_SUFFIX)


def _open_blobs(settings: Settings) -> Connection:
    """The blobs database, opened (and created, the first time) and migrated."""
    blobs = connect_blobs(blobs_path(settings), settings.db_key, busy_timeout_ms=settings.busy_timeout_ms)
    try:
        migrate(blobs, BLOBS_MIGRATIONS)
    except BaseException:
        blobs.close()
        raise
    return blobs


class Store(EnvelopeReads, UploadWrites):
    def __init__(self, conn: Connection, settings: Settings):
        self._conn = conn
        self._settings = settings
        # Whole slots: a full chunk fills its slots exactly.
        self._chunk_bytes = max(SLOT_BYTES, settings.upload_chunk_bytes // SLOT_BYTES * SLOT_BYTES)
        self._blobs: Connection | None = None  # opened on first use
        self._in_flight: Running[None] | None = None  # the one piece being claimed and written in an OS thread

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """Open an initialised database (raises NotInitialisedError, WrongDatabaseKeyError)."""
        if not settings.db_path.is_file():
            raise NotInitialisedError(told("{data_dir} has no intake database: run `intake init --data {data_dir}` first",
                                           data_dir=settings.data_dir))
        return cls._connect(settings, create=False)

    @classmethod
    def create(cls, settings: Settings) -> Store:
        """Create the database with the current schema (used by `intake init`)."""
        return cls._connect(settings, create=True)

    @classmethod
    def _connect(cls, settings: Settings, *, create: bool) -> Store:
        conn = connect(settings.db_path, settings.db_key, busy_timeout_ms=settings.busy_timeout_ms, create=create)
        try:
            migrate(conn)
            if create:
                # SQLite gives the -wal and -shm files the database file's mode.
                settings.db_path.chmod(0o600)
        except BaseException:
            conn.close()
            raise
        return cls(conn, settings)

    def close(self) -> None:
        try:
            self._settle()
        except Exception:  # noqa: BLE001 - a write of an upload left unfinished: recover() removes it
            pass
        finally:
            # A wait cut short leaves the piece in flight on the connection: the process keeps
            # both until it ends (recovery then removes the upload).
            if self._in_flight is None or self._in_flight.done():
                if self._conn.wal_pending:
                    empty_wal(self._conn)
                if self._blobs is not None:
                    self._blobs.close()
                    self._blobs = None
                self._conn.close()
                settle_file_times(self._settings.data_dir)

    def end_request(self) -> None:
        """Leave nothing that dates the request: empty the WAL if a reader held up the
        checkpoint after this store's last write (connection.empty_wal), and give the
        files the day's start as their times (file_times.py)."""
        self._wait_for_piece()
        if self._conn.wal_pending:
            empty_wal(self._conn)
        settle_file_times(self._settings.data_dir)

    def release_blobs_cache(self) -> None:
        """Free the blobs connection's cached pages (up to 8 MiB), for a store kept idle in a pool."""
        if self._blobs is not None and self.idle:
            with translate_errors():
                self._blobs.execute("PRAGMA shrink_memory")

    @property
    def page_size(self) -> int:
        """The main database's page size: connection.CIPHER_PAGE_SIZE, or the older size until rewritten."""
        return self._conn.page_size

    @property
    def idle(self) -> bool:
        """No transaction open and no write in flight: safe to hand to the next request."""
        return self._in_flight is None and not self._conn.in_transaction and not (self._blobs and self._blobs.in_transaction)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def databases(self) -> list[tuple[str, Connection]]:
        """The database files, named as `intake status` and `intake check` report them: the
        blobs database only in a store from before the slots file."""
        self._settle()
        blobs = self._legacy_blobs()
        return [("database", self._conn)] + ([("blobs database", blobs)] if blobs is not None else [])

    def _legacy_blobs(self) -> Connection | None:
        """The blobs database of a store from before the slots file, opened on first use; None
        in a store that never had one (nothing creates it any more). Call only with no write in
        flight (see _settle)."""
        if self._blobs is None and blobs_path(self._settings).exists():
            self._blobs = _open_blobs(self._settings)
        return self._blobs

    def _wait_for_piece(self) -> None:
        """Let the piece in flight (its claim runs a transaction on this connection) end before the
        connection does anything else. Its error, if any, stays for the upload's next call."""
        running = self._in_flight
        if running is None:
            return
        try:
            running.result()
        except Exception:  # noqa: BLE001 - raised by _settle, to the upload
            return
        self._in_flight = None

    def _settle(self) -> None:
        """Wait for the write in flight, if any; raise what it raised. A wait cut short (the
        request's greenlet killed) leaves the write known as in flight: it still runs."""
        running = self._in_flight
        if running is None:
            return
        try:
            running.result()
        finally:
            if running.done():
                self._in_flight = None

    @contextmanager
    def page_cache(self, mib: int) -> Iterator[None]:
        """A larger page cache for one long read (an export), SQLite's default again after:
        with the default 2 MiB, the rows streaming through the cache push out the b-trees'
        inner pages, which are then read and decrypted again for every row."""
        with translate_errors():
            before = int(self._conn.execute("PRAGMA cache_size").fetchone()[0])
            self._conn.execute(f"PRAGMA cache_size = {-int(mib) * 1024}")
        try:
            yield
        finally:
            try:
                self._conn.execute(f"PRAGMA cache_size = {before}")
            except DatabaseError:
                pass  # the store was closed before the reader let go: nothing to restore

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        self._wait_for_piece()
        with translate_errors():
            return self._conn.execute(sql, params).fetchall()

    def _slots(self) -> SlotsFile:
        return slots_file_for(slots_path(self._settings.db_path))

    def _write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a write transaction, and what it returned. For a source's requests:
        through intake.store.group_commit, so the commit (its fsyncs: tens of milliseconds on a
        busy disk) runs in an OS thread, where under a gevent worker it freezes no other
        connection, and shares its transaction with other requests writing at the same moment."""
        self._wait_for_piece()
        done: list[T] = []
        group_for(self._settings.db_path).publish(self._conn, lambda conn: done.append(work(conn)))
        return done[0]

    # Journalists

    def register_journalist(self, name: str, public_key: bytes, verify_key: bytes, fingerprint: str) -> Recipient:
        self._wait_for_piece()
        try:
            with write_transaction(self._conn) as conn:
                cursor = conn.execute(
                    "INSERT INTO journalists (name, public_key, verify_key, fingerprint, added_day) VALUES (?, ?, ?, ?, ?)",
                    (name, public_key, verify_key, fingerprint, today()),
                )
        except IntegrityError:
            raise JournalistExistsError(told("a journalist named {name!r} or with the same key is already registered", name=name)) from None
        return Recipient(cursor.lastrowid, name, public_key)

    def journalists(self) -> list[Journalist]:
        rows = self._read("SELECT id, name, public_key, verify_key, fingerprint, active, added_day FROM journalists ORDER BY id")
        return [Journalist(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6]) for row in rows]

    def active_recipients(self) -> list[Recipient]:
        rows = self._read("SELECT id, name, public_key FROM journalists WHERE active = 1 ORDER BY id")
        return [Recipient(*row) for row in rows]

    # Sources

    def source_by_lookup(self, lookup_id: bytes) -> Source | None:
        rows = self._read(
            "SELECT id, designation, reply_public_key, created_day, last_active_day FROM sources WHERE lookup_id = ?",
            (lookup_id,),
        )
        return Source(*rows[0]) if rows else None

    def create_source(self, lookup_id: bytes, reply_public_key: bytes) -> Source:
        return self._write(lambda conn: self._insert_source(conn, lookup_id, reply_public_key))

    def exchange_unused_source(self, source_id: str, lookup_id: bytes, reply_public_key: bytes,
                               session: tuple[bytes, bytes, int]) -> Source | None:
        """In one transaction, forget a source that never sent anything (as retention would a day
        later, its sessions with it), create its successor and the successor's ``session`` (as
        save_session takes it): a codename given up on its own page for one in the page's
        language. None, and nothing changed, if the first has sent something meanwhile. A first
        already forgotten (the same request sent twice) does not stop the successor."""

        def exchange(conn: Connection) -> Source | None:
            conn.execute(f"DELETE FROM sources WHERE id = ? AND {NEVER_SENT}", (source_id,))
            if conn.execute("SELECT 1 FROM sources WHERE id = ?", (source_id,)).fetchone():
                return None
            source = self._insert_source(conn, lookup_id, reply_public_key)
            self._insert_session(conn, source.id, *session)
            return source

        return self._write(exchange)

    @staticmethod
    def _insert_source(conn: Connection, lookup_id: bytes, reply_public_key: bytes) -> Source:
        day = today()
        # Under the write lock this check cannot race another insert.
        if conn.execute("SELECT 1 FROM sources WHERE lookup_id = ?", (lookup_id,)).fetchone():
            raise SourceExistsError(told("a source with this codename already exists"))
        for _ in range(_DESIGNATION_ATTEMPTS):
            source = Source(new_id(), random_designation(), reply_public_key, day, day)
            try:
                conn.execute(
                    "INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (source.id, lookup_id, reply_public_key, source.designation, day, day),
                )
                return source
            except IntegrityError:
                continue  # the designation (or the random id) is taken: draw again
        raise StoreError(told("could not find a free source designation: try again"))

    def source_has_sent(self, source_id: str) -> bool:
        """Whether the source ever sent something, has an upload in flight, or has a reply:
        exactly the sources that retention keeps when they are idle (see newsroom.py)."""
        rows = self._read(f"SELECT NOT ({NEVER_SENT}) FROM sources WHERE id = ?", (source_id,))
        return bool(rows and rows[0][0])

    def touch_source(self, source_id: str) -> None:
        self._write(lambda conn: conn.execute("UPDATE sources SET last_active_day = ? WHERE id = ? AND last_active_day != ?",
                                              (today(), source_id, today())))

    # Submissions

    def start_submission(self, source_id: str, kind: str, recipients: list[Recipient]) -> SubmissionWriter:
        """A writer for a new submission. Nothing is stored until its first chunk is
        (a submission of at most INLINE_BYTES is stored and published in one transaction)."""
        if not recipients:
            raise StoreError(told("no journalist is registered to receive submissions"))
        return SubmissionWriter(self, new_id(), source_id, kind, [r.journalist_id for r in recipients], self._chunk_bytes,
                                header_size(len(recipients)))

    def submissions(self, source_id: str | None = None) -> list[StoredSubmission]:
        """Visible (complete) submissions, of one source or of all."""
        sql = "SELECT id, source_id, kind, received_day, size, exported_day FROM submissions WHERE state = 'ready'"
        params: tuple = ()
        if source_id is not None:
            sql += " AND source_id = ?"
            params = (source_id,)
        return [StoredSubmission(*row) for row in self._read(sql + " ORDER BY received_day, source_id, position", params)]

    def existing_submissions(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` that are submissions (pending or ready)."""
        found: set[str] = set()
        for start in range(0, len(ids), ID_BATCH):
            batch = ids[start : start + ID_BATCH]
            marks = ",".join("?" * len(batch))
            found.update(row[0] for row in self._read(f"SELECT id FROM submissions WHERE id IN ({marks})", tuple(batch)))
        return found

    # Replies

    def add_reply(self, source_id: str, journalist_id: int | None, envelope: bytes) -> StoredReply:
        reply = StoredReply(new_id(), today(), envelope)
        self._write(lambda conn: conn.execute(
            "INSERT INTO replies (id, source_id, journalist_id, envelope, created_day, position) VALUES (?, ?, ?, ?, ?,"
            " (SELECT coalesce(max(position), 0) + 1 FROM replies WHERE source_id = ?))",
            (reply.id, source_id, journalist_id, envelope, reply.created_day, source_id),
        ))
        return reply

    def replies_for(self, source_id: str) -> list[StoredReply]:
        rows = self._read("SELECT id, created_day, envelope FROM replies WHERE source_id = ? ORDER BY position", (source_id,))
        return [StoredReply(*row) for row in rows]

    def delete_reply(self, source_id: str, reply_id: str) -> bool:
        return self._write(lambda conn: conn.execute("DELETE FROM replies WHERE id = ? AND source_id = ?",
                                                     (reply_id, source_id)).rowcount == 1)

    def mark_replies_read(self, source_id: str, reply_ids: list[str]) -> None:
        if not reply_ids:
            return
        self._write(lambda conn: conn.executemany(
            "UPDATE replies SET read_day = ? WHERE id = ? AND source_id = ? AND read_day IS NULL",
            [(today(), reply_id, source_id) for reply_id in reply_ids],
        ))

    # Sessions. The store keeps only the day a session has surely ended by; its exact
    # expiry is inside the sealed secret, which only the cookie's token opens
    # (intake.app.sessions checks it). The row goes at logout, or the day after that day.

    def save_session(self, session_id: bytes, source_id: str, sealed_secret: bytes, expires_at: int) -> None:
        self._write(lambda conn: self._insert_session(conn, source_id, session_id, sealed_secret, expires_at))

    @staticmethod
    def _insert_session(conn: Connection, source_id: str, session_id: bytes, sealed_secret: bytes, expires_at: int) -> None:
        conn.execute("INSERT INTO source_sessions (id, source_id, sealed_secret, expires_by_day) VALUES (?, ?, ?, ?)",
                     (session_id, source_id, sealed_secret, expires_by_day(expires_at)))

    def load_session(self, session_id: bytes) -> tuple[str, bytes] | None:
        """(source id, sealed secret) of a session whose day has not passed; the caller checks the exact expiry."""
        rows = self._read("SELECT source_id, sealed_secret FROM source_sessions WHERE id = ? AND expires_by_day >= ?",
                          (session_id, today()))
        return (rows[0][0], rows[0][1]) if rows else None

    def delete_session(self, session_id: bytes) -> None:
        self._write(lambda conn: conn.execute("DELETE FROM source_sessions WHERE id = ?", (session_id,)))

    def purge_expired_sessions(self) -> int:
        return self._write(lambda conn: conn.execute("DELETE FROM source_sessions WHERE expires_by_day < ?", (today(),)).rowcount)

    # Overview

    def counts(self) -> dict[str, int]:
        (row,) = self._read(
            "SELECT (SELECT count(*) FROM sources),"
            " (SELECT count(*) FROM submissions WHERE state = 'ready'),"
            " (SELECT count(*) FROM replies),"
            " (SELECT count(*) FROM journalists WHERE active = 1),"
            " (SELECT count(*) FROM submissions WHERE state = 'pending')"
        )
        return dict(zip(("sources", "submissions", "replies", "journalists", "pending uploads"), row))
