"""The encrypted store: the only code in intake that knows SQL.

One `Store` wraps one connection to each SQLCipher database (see connection.py);
use it from one request or thread at a time. Transactions are short and
explicit. An upload writes its ciphertext chunk by chunk, each chunk committed
in the blobs database (so a slow upload over Tor never holds the main database's
write lock) through the process's chunk writer (chunk_writer.py: one connection
for every upload of the process, chunks that come together share a commit), and
becomes visible in one last short transaction in the main database, which also
stores its last piece if that is small. A short message therefore costs one
transaction. While one chunk is written in an OS thread, the caller reads and
encrypts the next (at most one write in flight per store).
"""

from __future__ import annotations

import datetime
import json
import math
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from intake.store import processes
from intake.store.chunk_writer import ChunkWriter, chunk_writer_for
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
from intake.worker_threads import Running, run_in_os_thread, start_in_background

if TYPE_CHECKING:
    from intake.config import Settings

_DESIGNATION_ATTEMPTS = 20
BLOBS_SUFFIX = "-blobs"  # intake.db-blobs: named like SQLite's own side files, so intake.db* is the whole store
# A submission's last piece up to this size is stored in the main database with the
# publish (a short message costs one transaction); a larger one goes to the blobs
# database first, so the main database's write lock is held for milliseconds only.
INLINE_BYTES = 256 * 1024
_ID_BATCH = 500  # ids per IN (...) query, well under SQLite's parameter limit
# A slow upload (over Tor: most of them) would hold up to a whole chunk in memory for as long
# as it takes to arrive; its buffer is stored as soon as it holds this much and its first byte
# waited this long. A fast upload still fills whole chunks (fewer, larger transactions).
SLOW_FLUSH_BYTES = 256 * 1024
SLOW_FLUSH_SECONDS = 1.0


def today() -> str:
    """The current day, UTC: the finest time the store keeps (see migrations.py)."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _new_id() -> str:
    return secrets.token_hex(16)


def random_rowid() -> int:
    """A rowid for the chunk tables, whose rows are too large for WITHOUT ROWID: SQLite's
    own would number them in the order they came (migrations.MIGRATION_5)."""
    return secrets.randbits(63)


def expires_by_day(expires_at: float, *, now: float | None = None) -> str:
    """The day a session that ends at ``expires_at`` has surely ended by: today plus its
    length in whole days, rounded up. It depends on the login day and the session's
    length only, never on the time of day (the day of the expiry itself would tell
    whether the login came late in the evening)."""
    now = time.time() if now is None else now
    login_day = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    days = math.ceil(max(0.0, expires_at - now) / 86400)
    return (login_day + datetime.timedelta(days=days)).isoformat()


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


@dataclass(frozen=True)
class Source:
    id: str
    designation: str
    reply_public_key: bytes
    created_day: str
    last_active_day: str


@dataclass(frozen=True)
class Recipient:
    journalist_id: int
    name: str
    public_key: bytes


@dataclass(frozen=True)
class Journalist:
    id: int
    name: str
    public_key: bytes
    verify_key: bytes
    fingerprint: str
    active: bool
    added_day: str


@dataclass(frozen=True)
class StoredReply:
    id: str
    created_day: str
    envelope: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredSubmission:
    id: str
    source_id: str
    kind: str
    received_day: str
    size: int
    exported_day: str | None


class Store:
    def __init__(self, conn: Connection, settings: Settings):
        self._conn = conn
        self._settings = settings
        self._chunk_bytes = settings.upload_chunk_bytes
        self._blobs: Connection | None = None  # opened on first use
        self._in_flight: Running[None] | None = None  # the one chunk write running in an OS thread

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """Open an initialised database (raises NotInitialisedError, WrongDatabaseKeyError)."""
        if not settings.db_path.is_file():
            raise NotInitialisedError(f"{settings.data_dir} has no intake database: run `intake init --data {settings.data_dir}` first")
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
        if self._conn.wal_pending:
            empty_wal(self._conn)
        settle_file_times(self._settings.data_dir)

    def release_blobs_cache(self) -> None:
        """Free the blobs connection's cached pages (up to 8 MiB), for a store kept idle in a pool."""
        if self._blobs is not None and self.idle:
            with translate_errors():
                self._blobs.execute("PRAGMA shrink_memory")

    @property
    def idle(self) -> bool:
        """No transaction open and no write in flight: safe to hand to the next request."""
        return self._in_flight is None and not self._conn.in_transaction and not (self._blobs and self._blobs.in_transaction)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def databases(self) -> list[tuple[str, Connection]]:
        """Both database files, named as `intake status` and `intake check` report them."""
        self._settle()
        return [("database", self._conn), ("blobs database", self._blobs_connection())]

    def _blobs_connection(self) -> Connection:
        """The blobs database, opened (and created, the first time) on first use.
        Call only with no write in flight (see _settle)."""
        if self._blobs is None:
            self._blobs = _open_blobs(self._settings)
        return self._blobs

    def _settle(self) -> None:
        """Wait for the write in flight, if any; raise what it raised."""
        running, self._in_flight = self._in_flight, None
        if running is not None:
            running.result()

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
        with translate_errors():
            return self._conn.execute(sql, params).fetchall()

    # Journalists

    def register_journalist(self, name: str, public_key: bytes, verify_key: bytes, fingerprint: str) -> Recipient:
        try:
            with write_transaction(self._conn) as conn:
                cursor = conn.execute(
                    "INSERT INTO journalists (name, public_key, verify_key, fingerprint, added_day) VALUES (?, ?, ?, ?, ?)",
                    (name, public_key, verify_key, fingerprint, today()),
                )
        except IntegrityError:
            raise JournalistExistsError(f"a journalist named {name!r} or with the same key is already registered") from None
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
        day = today()
        with write_transaction(self._conn) as conn:
            # Under the write lock this check cannot race another insert.
            if conn.execute("SELECT 1 FROM sources WHERE lookup_id = ?", (lookup_id,)).fetchone():
                raise SourceExistsError("a source with this codename already exists")
            for _ in range(_DESIGNATION_ATTEMPTS):
                source = Source(_new_id(), random_designation(), reply_public_key, day, day)
                try:
                    conn.execute(
                        "INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (source.id, lookup_id, reply_public_key, source.designation, day, day),
                    )
                    return source
                except IntegrityError:
                    continue  # the designation (or the random id) is taken: draw again
        raise StoreError("could not find a free source designation: try again")

    def source_has_sent(self, source_id: str) -> bool:
        """Whether the source ever sent something, has an upload in flight, or has a reply:
        exactly the sources that retention keeps when they are idle (see newsroom.py)."""
        rows = self._read(
            "SELECT has_submitted OR EXISTS (SELECT 1 FROM submissions WHERE source_id = sources.id)"
            " OR EXISTS (SELECT 1 FROM replies WHERE source_id = sources.id) FROM sources WHERE id = ?",
            (source_id,),
        )
        return bool(rows and rows[0][0])

    def touch_source(self, source_id: str) -> None:
        with write_transaction(self._conn) as conn:
            conn.execute("UPDATE sources SET last_active_day = ? WHERE id = ? AND last_active_day != ?", (today(), source_id, today()))

    # Submissions

    def start_submission(self, source_id: str, kind: str, recipients: list[Recipient]) -> SubmissionWriter:
        """A writer for a new submission. Nothing is stored until its first chunk is
        (a submission of at most INLINE_BYTES is stored and published in one transaction)."""
        if not recipients:
            raise StoreError("no journalist is registered to receive submissions")
        return SubmissionWriter(self, _new_id(), source_id, kind, [r.journalist_id for r in recipients], self._chunk_bytes)

    def submissions(self, source_id: str | None = None) -> list[StoredSubmission]:
        """Visible (complete) submissions, of one source or of all."""
        sql = "SELECT id, source_id, kind, received_day, size, exported_day FROM submissions WHERE state = 'ready'"
        params: tuple = ()
        if source_id is not None:
            sql += " AND source_id = ?"
            params = (source_id,)
        return [StoredSubmission(*row) for row in self._read(sql + " ORDER BY received_day, source_id, position", params)]

    def submission_ciphertext(self, submission_id: str) -> Iterator[bytes]:
        """The stored envelope of a visible submission, chunk by chunk (memory stays flat).

        Pieces 0..n-1 are in the blobs database, the last one (if small) in the main one,
        so a submission stored in one piece needs no look at the blobs database.
        """
        if not self._read("SELECT 1 FROM submissions WHERE id = ? AND state = 'ready'", (submission_id,)):
            return
        main_seqs = [row[0] for row in self._read("SELECT seq FROM submission_chunks WHERE submission_id = ? ORDER BY seq", (submission_id,))]
        blob_seqs: list[int] = []
        blobs = None
        if main_seqs != [0]:
            blobs = self._settled_blobs()
            blob_seqs = run_in_os_thread(self._blob_seqs, blobs, submission_id)
        if blob_seqs + main_seqs != list(range(len(blob_seqs) + len(main_seqs))):
            raise StoreError("the submission's stored pieces are incomplete")
        for seq in blob_seqs:
            yield self._one_piece(run_in_os_thread(self._blob_chunk, blobs, submission_id, seq))
        for seq in main_seqs:
            yield self._one_piece(self._read("SELECT data FROM submission_chunks WHERE submission_id = ? AND seq = ?", (submission_id, seq)))

    def ciphertext_positions(self, submission_ids: list[str]) -> dict[str, int]:
        """Where the envelope of each of ``submission_ids`` stored whole in the main database (one
        piece: every short one) is, by id: reading them in this order (the table's key order, see
        ciphertexts_at), each page of the table is read once, front to back. The others are not in it
        (read them with submission_ciphertext). One query per batch of ids, along the key's index."""
        found: dict[str, int] = {}
        in_key_order = sorted(submission_ids)
        for start in range(0, len(in_key_order), _ID_BATCH):
            batch = tuple(in_key_order[start : start + _ID_BATCH])
            marks = ",".join("?" * len(batch))
            found.update(self._read(f"SELECT submission_id, rowid FROM submission_chunks WHERE seq = 0 AND submission_id IN ({marks})", batch))
        return found

    def ciphertexts_at(self, positions: list[tuple[str, int]]) -> dict[str, bytes]:
        """The envelopes at ``positions`` ((id, position) from ciphertext_positions), by id; one
        deleted since is missing. For an export: many at once, in the table's order."""
        found: dict[str, bytes] = {}
        wanted = dict((position, submission_id) for submission_id, position in positions)
        in_table_order = sorted(wanted)
        for start in range(0, len(in_table_order), _ID_BATCH):
            batch = tuple(in_table_order[start : start + _ID_BATCH])
            marks = ",".join("?" * len(batch))
            for position, submission_id, data in self._read(
                f"SELECT rowid, submission_id, data FROM submission_chunks WHERE rowid IN ({marks})", batch
            ):
                if wanted[position] == submission_id:
                    found[submission_id] = data
        return found

    @staticmethod
    def _one_piece(rows: list[tuple]) -> bytes:
        if not rows:
            raise StoreError("the submission was deleted while it was being read")
        return rows[0][0]

    # Reads of the blobs database wait for a writer's commit in SQLite's busy handler, so they run in OS threads.

    @staticmethod
    def _blob_seqs(blobs: Connection, submission_id: str) -> list[int]:
        with translate_errors():
            return [row[0] for row in blobs.execute("SELECT seq FROM chunks WHERE submission_id = ? ORDER BY seq", (submission_id,))]

    @staticmethod
    def _blob_chunk(blobs: Connection, submission_id: str, seq: int) -> list[tuple]:
        with translate_errors():
            return blobs.execute("SELECT data FROM chunks WHERE submission_id = ? AND seq = ?", (submission_id, seq)).fetchall()

    def _insert_pending(self, conn: Connection, upload: SubmissionWriter, *, writer: str | None) -> None:
        # Two statements whatever the number of journalists (migration 7): the set is written once.
        members = json.dumps(sorted(upload.journalist_ids), separators=(",", ":"))
        conn.execute("INSERT INTO recipient_sets (members) VALUES (?) ON CONFLICT (members) DO NOTHING", (members,))
        conn.execute(
            "INSERT INTO submissions (id, source_id, kind, received_day, state, writer, position, sealed_to)"
            " VALUES (?, ?, ?, ?, 'pending', ?, (SELECT coalesce(max(position), 0) + 1 FROM submissions WHERE source_id = ?), ?)",
            (upload.id, upload.source_id, upload.kind, today(), writer, upload.source_id, members),
        )

    def _append_chunk(self, upload: SubmissionWriter, seq: int, data: bytes) -> None:
        """Store a full chunk in the blobs database, in the background, through this
        process's chunk writer (intake.store.chunk_writer: one connection, commits shared).

        The pending row is committed first, so every chunk in the blobs database
        belongs to a row of the main one until that row is deleted, and
        _reclaim_space can tell orphans from uploads in flight.
        """
        self._settle()  # the write in flight ends (or raises) first
        if seq == 0:
            with write_transaction(self._conn) as conn:
                self._insert_pending(conn, upload, writer=processes.current_writer())
            # The pages that insert cached are not needed again until the publish, which may be
            # minutes away over Tor (~150 KiB per upload in flight, measured on the blobs branch).
            with translate_errors():
                self._conn.execute("PRAGMA shrink_memory")
        if upload._chunks is None:
            upload._chunks = self._chunk_writer()
            upload._chunks.enter()
        # A piece smaller than a chunk is a slow upload's: its cached pages are released after it.
        self._in_flight = start_in_background(upload._chunks.write, random_rowid(), upload.id, seq, data,
                                              release_cache=len(data) < self._chunk_bytes)

    def _chunk_writer(self) -> ChunkWriter:
        settings = self._settings
        return chunk_writer_for(blobs_path(settings), settings.busy_timeout_ms, lambda: _open_blobs(settings))

    def _settled_blobs(self) -> Connection:
        self._settle()
        return self._blobs_connection()

    def commit_together(self, uploads: list[SubmissionWriter]) -> tuple[str, ...]:
        """Make several submissions (the parts of one request) visible in one transaction:
        all of them, or (on any error, or a crash) none. Their last pieces stay in the main
        database only while they add up to INLINE_BYTES, so the write lock stays short."""
        rests = [upload._rest() for upload in uploads]
        budget = INLINE_BYTES
        to_blobs = []
        for rest in rests:
            to_blobs.append(len(rest) > budget)
            budget -= 0 if to_blobs[-1] else len(rest)
        # Positions are given as rows are first stored: a part with nothing stored yet that comes
        # before one whose rest goes to the blobs file goes there too, so the parts keep their order.
        last = max((i for i, big in enumerate(to_blobs) if big), default=-1)
        pieces = []
        for i, (upload, rest) in enumerate(zip(uploads, rests)):
            if rest and (to_blobs[i] or (i < last and upload._seq == 0)):
                upload._hand_over(rest)
                rest = b""
            pieces.append((upload, upload._seq, rest or None, upload.size, upload._seq == 0))
        self._publish(pieces)
        for upload in uploads:
            upload._published()
        return tuple(upload.id for upload in uploads)

    def _publish(self, pieces: list[tuple[SubmissionWriter, int, bytes | None, int, bool]]) -> None:
        """Store each upload's last chunk and make the uploads visible, in one transaction.
        Every earlier chunk is committed (durably) in the blobs database before it."""
        self._settle()
        group_for(self._settings.db_path).publish(self._conn, lambda conn: self._publish_in(conn, pieces))

    def _publish_in(self, conn: Connection, pieces: list[tuple[SubmissionWriter, int, bytes | None, int, bool]]) -> None:
        """_publish's writes, inside the (perhaps shared) transaction of intake.store.group_commit."""
        for upload, seq, last_chunk, size, first in pieces:
            if first:
                # Pending only inside this transaction, so no other process ever sees it without a writer.
                self._insert_pending(conn, upload, writer=None)
            updated = conn.execute(
                "UPDATE submissions SET state = 'ready', size = ?, writer = NULL WHERE id = ? AND state = 'pending'",
                (size, upload.id),
            ).rowcount
            if updated != 1:  # checked before its last chunk, whose row would otherwise refer to nothing
                raise StoreError("the upload was removed before it completed: please send it again")
            if last_chunk is not None:
                conn.execute("INSERT INTO submission_chunks (rowid, submission_id, seq, data) VALUES (?, ?, ?, ?)",
                             (random_rowid(), upload.id, seq, last_chunk))
        for source_id in {upload.source_id for upload, *_ in pieces}:
            conn.execute(
                "UPDATE sources SET last_active_day = ? WHERE id = ? AND last_active_day != ?",
                (today(), source_id, today()),
            )

    def _discard(self, submission_id: str) -> None:
        try:
            self._settle()
        except Exception:  # noqa: BLE001 - a failed chunk write is often why the upload is discarded
            pass
        with write_transaction(self._conn) as conn:
            conn.execute("DELETE FROM submissions WHERE id = ? AND state = 'pending'", (submission_id,))
        self._reclaim_space()

    def recover(self) -> int:
        """Remove uploads left pending by a process that died, and free their space.

        Uploads still being written by a live process (another worker) are kept.
        Returns how many were removed.
        """
        pending = self._read("SELECT id, writer FROM submissions WHERE state = 'pending'")
        orphans = [(submission_id,) for submission_id, writer in pending if not processes.writer_alive(writer)]
        if orphans:
            with write_transaction(self._conn) as conn:
                conn.executemany("DELETE FROM submissions WHERE id = ? AND state = 'pending'", orphans)
        self._reclaim_space()
        return len(orphans)

    def _reclaim_space(self) -> None:
        """Delete chunks whose submission is gone (deleted, discarded, or left by a dead
        writer), then give freed pages back to the file system. In an OS thread: with
        secure_delete, freeing a large upload rewrites its pages."""
        self._settle()
        run_in_os_thread(self._reclaim_space_now, self._blobs_connection())

    def _reclaim_space_now(self, blobs: Connection) -> None:
        with translate_errors():
            stored = [row[0] for row in blobs.execute("SELECT DISTINCT submission_id FROM chunks").fetchall()]
        gone = set(stored) - self._existing_submissions(stored)
        if gone:
            with write_transaction(blobs) as conn:
                conn.executemany("DELETE FROM chunks WHERE submission_id = ?", [(submission_id,) for submission_id in gone])
        with translate_errors():
            blobs.execute("PRAGMA incremental_vacuum").fetchall()
            self._conn.execute("PRAGMA incremental_vacuum").fetchall()
        empty_wal(self._conn)  # the vacuum ran outside write_transaction

    def _existing_submissions(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _ID_BATCH):
            batch = ids[start : start + _ID_BATCH]
            marks = ",".join("?" * len(batch))
            found.update(row[0] for row in self._read(f"SELECT id FROM submissions WHERE id IN ({marks})", tuple(batch)))
        return found

    # Replies

    def add_reply(self, source_id: str, journalist_id: int | None, envelope: bytes) -> StoredReply:
        reply = StoredReply(_new_id(), today(), envelope)
        with write_transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO replies (id, source_id, journalist_id, envelope, created_day, position) VALUES (?, ?, ?, ?, ?,"
                " (SELECT coalesce(max(position), 0) + 1 FROM replies WHERE source_id = ?))",
                (reply.id, source_id, journalist_id, envelope, reply.created_day, source_id),
            )
        return reply

    def replies_for(self, source_id: str) -> list[StoredReply]:
        rows = self._read("SELECT id, created_day, envelope FROM replies WHERE source_id = ? ORDER BY position", (source_id,))
        return [StoredReply(*row) for row in rows]

    def delete_reply(self, source_id: str, reply_id: str) -> bool:
        with write_transaction(self._conn) as conn:
            return conn.execute("DELETE FROM replies WHERE id = ? AND source_id = ?", (reply_id, source_id)).rowcount == 1

    def mark_replies_read(self, source_id: str, reply_ids: list[str]) -> None:
        if not reply_ids:
            return
        with write_transaction(self._conn) as conn:
            conn.executemany(
                "UPDATE replies SET read_day = ? WHERE id = ? AND source_id = ? AND read_day IS NULL",
                [(today(), reply_id, source_id) for reply_id in reply_ids],
            )

    # Sessions. The store keeps only the day a session has surely ended by; its exact
    # expiry is inside the sealed secret, which only the cookie's token opens
    # (intake.app.sessions checks it). The row goes at logout, or the day after that day.

    def save_session(self, session_id: bytes, source_id: str, sealed_secret: bytes, expires_at: int) -> None:
        with write_transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO source_sessions (id, source_id, sealed_secret, expires_by_day) VALUES (?, ?, ?, ?)",
                (session_id, source_id, sealed_secret, expires_by_day(expires_at)),
            )

    def load_session(self, session_id: bytes) -> tuple[str, bytes] | None:
        """(source id, sealed secret) of a session whose day has not passed; the caller checks the exact expiry."""
        rows = self._read("SELECT source_id, sealed_secret FROM source_sessions WHERE id = ? AND expires_by_day >= ?",
                          (session_id, today()))
        return (rows[0][0], rows[0][1]) if rows else None

    def delete_session(self, session_id: bytes) -> None:
        with write_transaction(self._conn) as conn:
            conn.execute("DELETE FROM source_sessions WHERE id = ?", (session_id,))

    def purge_expired_sessions(self) -> int:
        with write_transaction(self._conn) as conn:
            return conn.execute("DELETE FROM source_sessions WHERE expires_by_day < ?", (today(),)).rowcount

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


class SubmissionWriter:
    """File-like sink for one submission's ciphertext.

    `write()` buffers up to one chunk and hands each full chunk to the store, which
    writes it in its own short transaction while the caller goes on (a failed
    write raises at the next call); `commit()` stores the rest and makes the
    submission visible in one more; `abort()` (or leaving a `with` block by an
    exception) removes it.
    """

    def __init__(self, store: Store, submission_id: str, source_id: str, kind: str, journalist_ids: list[int], chunk_bytes: int):
        self.id = submission_id
        self.source_id = source_id
        self.kind = kind
        self.journalist_ids = journalist_ids
        self._store = store
        self._chunk_bytes = chunk_bytes
        # A new buffer for each piece of a slow upload: the one handed over is written in the
        # background and then freed, so it holds one buffer, not two (measured: a spare kept for
        # reuse was 4 MiB of every slow upload's ~16 MiB). A fast upload, whose full chunks follow
        # each other, refills the buffer of the chunk before instead (its write has ended by the
        # time the next chunk is handed over): a fresh 4 MiB block is a new mapping that malloc's
        # wiping byte fills first, a page fault and a cleared page every 4 KiB.
        self._buffer = bytearray()
        self._written: bytearray | None = None  # the full chunk last handed over, refilled next
        self._filled = 0  # bytes of _buffer in use
        self._first_at = 0.0  # when the first byte now in _buffer arrived
        self._seq = 0  # chunks stored so far
        self._size = 0  # bytes stored so far
        self._finished = False
        self._chunks: ChunkWriter | None = None  # the process's chunk writer, from this upload's first chunk

    @property
    def size(self) -> int:
        return self._size + self._filled

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._finished:
            raise ValueError("write to a submission that was already committed or aborted")
        with memoryview(data) as view, view.cast("B") as octets:
            taken = 0
            while taken < len(octets):
                if not self._filled:
                    self._first_at = time.monotonic()
                piece = octets[taken : taken + self._chunk_bytes - self._filled]
                self._buffer[self._filled : self._filled + len(piece)] = piece
                self._filled += len(piece)
                taken += len(piece)
                piece.release()
                if self._filled == self._chunk_bytes:
                    self._hand_over(self._buffer)
        if self._filled >= SLOW_FLUSH_BYTES and time.monotonic() - self._first_at >= SLOW_FLUSH_SECONDS:
            del self._buffer[self._filled :]  # a refilled chunk's buffer holds the old chunk past this
            self._hand_over(self._buffer)
        return taken

    def _hand_over(self, chunk: bytearray | bytes) -> None:
        self._store._append_chunk(self, self._seq, chunk)  # written in the background; every earlier write has ended
        self._seq += 1
        self._size += len(chunk)
        if chunk is self._buffer:
            full = len(chunk) == self._chunk_bytes
            spare, self._written = self._written if full else None, chunk if full else None
            self._buffer = spare if spare is not None else bytearray()
        self._filled = 0

    def commit(self) -> str:
        (submission_id,) = self._store.commit_together([self])
        return submission_id

    def _rest(self) -> bytes:
        """What is buffered: the last piece, stored by Store.commit_together."""
        if self._finished:
            raise ValueError("this submission was already committed or aborted")
        with memoryview(self._buffer) as view:
            return bytes(view[: self._filled])

    def _published(self) -> None:
        self._finished = True
        self._buffer = self._written = None
        self._done_with_chunks()

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._buffer = self._written = None
        self._filled = 0
        try:
            if self._seq:
                self._store._discard(self.id)
        finally:
            self._done_with_chunks()

    def _done_with_chunks(self) -> None:
        """Every chunk write of this upload has ended (Store._settle): let the writer go."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.leave()

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
