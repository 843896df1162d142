"""The encrypted store: what intake keeps, and the SQL that keeps it.

One `Store` wraps one connection to the main SQLCipher database (see connection.py);
use it from one request or thread at a time. Transactions are short and explicit.
A submission of up to INLINE_BYTES is stored and published in one transaction. A
larger one keeps its envelope's header in the database and writes the rest, piece
by piece, into slots of the slots file (slots_file.py: plain pwrite of ciphertext
that is already encrypted to the journalists, no second encryption), which a short
transaction claims (slot_table.py); it becomes visible in one last short
transaction, after one fdatasync of the file. A slow upload over Tor therefore
never holds the database's write lock while it arrives. While one piece is claimed
and written in an OS thread, the caller reads and encrypts the next (at most one
piece in flight per store). Envelopes stored before the slots file (schema 8 and older) are
read from the blobs database (intake.db-blobs), which nothing writes any more.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import mmap
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from keys.envelope import header_size

from intake.store import processes, slot_table
from intake.store.connection import (
    Connection,
    DatabaseError,
    IntegrityError,
    begin_write,
    connect,
    connect_blobs,
    empty_wal,
    translate_errors,
    write_transaction,
)
from intake.store.designations import random_designation
from intake.store.errors import JournalistExistsError, NotInitialisedError, SourceExistsError, StoreError, StoreFullError
from intake.store.file_times import settle_file_times
from intake.store.group_commit import group_for
from intake.store.migrations import BLOBS_MIGRATIONS, migrate
from intake.store.slots_file import SLOT_BYTES, SlotsFile, slots_file_for, slots_path
from intake.store.submission_writer import INLINE_BYTES, SubmissionWriter
from intake.worker_threads import Running, run_in_os_thread, start_in_os_thread

if TYPE_CHECKING:
    from intake.config import Settings

log = logging.getLogger(__name__)
_DESIGNATION_ATTEMPTS = 20
BLOBS_SUFFIX = "-blobs"  # intake.db-blobs: named like SQLite's own side files, so intake.db* is the whole store
ID_BATCH = 500  # ids per IN (...) query, well under SQLite's parameter limit
# An upload claims the slots of its next piece and, ahead, as many as it already has, up to this
# many more (16 MiB): a few claims per upload (one transaction each on the main database), and
# at most this many slots to fill with random bytes at the publish, those it did not write.
_MAX_AHEAD_SLOTS = 64

T = TypeVar("T")


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
        # Whole slots: a full chunk fills its slots exactly.
        self._chunk_bytes = max(SLOT_BYTES, settings.upload_chunk_bytes // SLOT_BYTES * SLOT_BYTES)
        self._blobs: Connection | None = None  # opened on first use
        self._in_flight: Running[None] | None = None  # the one piece being claimed and written in an OS thread

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

        def insert(conn: Connection) -> Source:
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

        return self._write(insert)

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
        self._write(lambda conn: conn.execute("UPDATE sources SET last_active_day = ? WHERE id = ? AND last_active_day != ?",
                                              (today(), source_id, today())))

    # Submissions

    def start_submission(self, source_id: str, kind: str, recipients: list[Recipient]) -> SubmissionWriter:
        """A writer for a new submission. Nothing is stored until its first chunk is
        (a submission of at most INLINE_BYTES is stored and published in one transaction)."""
        if not recipients:
            raise StoreError("no journalist is registered to receive submissions")
        return SubmissionWriter(self, _new_id(), source_id, kind, [r.journalist_id for r in recipients], self._chunk_bytes,
                                header_size(len(recipients)))

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

        A slotted envelope is its header (piece 0, in the main database) then its slots. One
        stored before the slots file: pieces 0..n-1 in the blobs database, the last one (if
        small) in the main one. A submission stored in one piece is read from the main database only.
        """
        ready = self._read("SELECT size FROM submissions WHERE id = ? AND state = 'ready'", (submission_id,))
        if not ready:
            return
        main_seqs = [row[0] for row in self._read("SELECT seq FROM submission_chunks WHERE submission_id = ? ORDER BY seq", (submission_id,))]
        slots = slot_table.slots_of(self._conn, submission_id)
        if slots:
            yield from self._slotted_ciphertext(submission_id, main_seqs, slots, ready[0][0])
            return
        blob_seqs: list[int] = []
        blobs = None
        if main_seqs != [0]:
            self._settle()
            blobs = self._legacy_blobs()
            blob_seqs = run_in_os_thread(self._blob_seqs, blobs, submission_id) if blobs is not None else []
        if blob_seqs + main_seqs != list(range(len(blob_seqs) + len(main_seqs))):
            raise StoreError("the submission's stored pieces are incomplete")
        for seq in blob_seqs:
            yield self._one_piece(run_in_os_thread(self._blob_chunk, blobs, submission_id, seq))
        for seq in main_seqs:
            yield self._one_piece(self._read("SELECT data FROM submission_chunks WHERE submission_id = ? AND seq = ?", (submission_id, seq)))

    def _slotted_ciphertext(self, submission_id: str, main_seqs: list[int], slots: list[tuple[int, int]], size: int) -> Iterator[bytes]:
        if main_seqs != [0] or [seq for seq, _slot in slots] != list(range(len(slots))):
            raise StoreError("the submission's stored pieces are incomplete")
        head = self._one_piece(self._read("SELECT data FROM submission_chunks WHERE submission_id = ? AND seq = 0", (submission_id,)))
        left = size - len(head)
        if not 0 < left <= len(slots) * SLOT_BYTES:
            raise StoreError("the submission's stored pieces are incomplete")
        yield head
        numbers = [slot for _seq, slot in slots]
        per_read = self._chunk_bytes // SLOT_BYTES
        for start in range(0, len(numbers), per_read):
            try:
                piece = run_in_os_thread(self._slots().read, numbers[start : start + per_read], min(left, per_read * SLOT_BYTES))
            finally:
                # Still there after the read, so its slots were not freed (and perhaps reused or
                # cut off the file) during it; gone, that is why a read came back short.
                if not self._read("SELECT 1 FROM submissions WHERE id = ?", (submission_id,)):
                    raise StoreError("the submission was deleted while it was being read")
            left -= len(piece)
            yield piece

    def slot_problems(self) -> list[str]:
        """What is wrong between the slots table and the slots file (`intake check`); [] if nothing."""
        problems, highest = [], -1
        for count, low, high, last_slot, size, head in self._read(
            "SELECT count(*), min(slots.seq), max(slots.seq), max(slots.slot), submissions.size,"
            " (SELECT length(data) FROM submission_chunks WHERE submission_id = submissions.id AND seq = 0)"
            " FROM slots JOIN submissions ON submissions.id = slots.submission_id"
            " WHERE submissions.state = 'ready' GROUP BY submissions.id"
        ):
            highest = max(highest, last_slot)
            if (low, high) != (0, count - 1) or head is None or not (count - 1) * SLOT_BYTES < size - head <= count * SLOT_BYTES:
                problems.append("slots file: a submission's slots do not add up to its size")
        path = slots_path(self._settings.db_path)
        length = path.stat().st_size if path.exists() else 0
        if (highest + 1) * SLOT_BYTES > length:
            problems.append(f"slots file: {path.name} ends before the slots the database names (restore a backup)")
        elif highest >= 0:
            in_use = [row[0] for row in self._read("SELECT slots.slot FROM slots JOIN submissions ON submissions.id = slots.submission_id"
                                                  " WHERE submissions.state = 'ready' ORDER BY slots.slot")]
            empty = run_in_os_thread(self._slots().holes_among, in_use)
            if empty:
                problems.append(f"slots file: {empty} slots of submissions hold nothing (holes): restore a backup")
        return problems

    def slots_file_bytes(self) -> int:
        """What the slots file takes on disk (a hole, where a write failed, takes nothing)."""
        path = slots_path(self._settings.db_path)
        return path.stat().st_blocks * 512 if path.exists() else 0

    def _slots(self) -> SlotsFile:
        return slots_file_for(slots_path(self._settings.db_path))

    def ciphertext_positions(self, submission_ids: list[str]) -> dict[str, int]:
        """Where the envelope of each of ``submission_ids`` stored whole in the main database (one
        piece: every short one) is, by id: reading them in this order (the table's key order, see
        ciphertexts_at), each page of the table is read once, front to back. The others are not in it
        (read them with submission_ciphertext). One query per batch of ids, along the key's index."""
        found: dict[str, int] = {}
        in_key_order = sorted(submission_ids)
        for start in range(0, len(in_key_order), ID_BATCH):
            batch = tuple(in_key_order[start : start + ID_BATCH])
            marks = ",".join("?" * len(batch))
            found.update(self._read(f"SELECT submission_id, rowid FROM submission_chunks WHERE seq = 0 AND submission_id IN ({marks})"
                                    " AND NOT EXISTS (SELECT 1 FROM slots WHERE slots.submission_id = submission_chunks.submission_id)", batch))
        return found

    def ciphertexts_at(self, positions: list[tuple[str, int]]) -> dict[str, bytes]:
        """The envelopes at ``positions`` ((id, position) from ciphertext_positions), by id; one
        deleted since is missing. For an export: many at once, in the table's order."""
        found: dict[str, bytes] = {}
        wanted = dict((position, submission_id) for submission_id, position in positions)
        in_table_order = sorted(wanted)
        for start in range(0, len(in_table_order), ID_BATCH):
            batch = tuple(in_table_order[start : start + ID_BATCH])
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

    def _append(self, upload: SubmissionWriter, buffer: mmap.mmap, start: int, length: int) -> None:
        """Store the upload's next piece, ``buffer[start:start + length]``, in the background (see
        _store_piece): its first piece starts with the envelope's header, which goes to the main
        database with the pending row; the rest fills whole slots of the slots file (a short last
        piece is padded with random bytes in the buffer, so the slot shows neither where the
        envelope ends nor its size). What goes wrong there is raised by the next call.
        """
        self._settle()  # the write in flight ends (or raises) first
        head = min(upload._header_bytes, length) if not upload._stored else 0
        body = start + head  # on a page boundary (HEADER_ROOM), as O_DIRECT needs
        needed = -(-(length - head) // SLOT_BYTES)
        unwritten = len(upload._slots) - upload._used
        claim = needed - unwritten + min(len(upload._slots), _MAX_AHEAD_SLOTS) if needed > unwritten else 0
        # A claim's commit waits for two fsyncs (about 20 ms on this VM): run here, under a gevent
        # worker, it froze every connection of the worker meanwhile, so the OS thread runs it.
        # The write lock is taken here first: its wait sleeps on this greenlet, where in the
        # thread it would hold one of the few threads that also derive keys and publish.
        transaction = bool(head or claim)
        if transaction:
            begin_write(self._conn)
        try:
            slots_file = self._slots()
            if not upload._stored:
                upload._written_to = (slots_file, slots_file.sync_failures)
            upload._stored += length
            end, padded = start + length, body + needed * SLOT_BYTES
            if padded > end:
                buffer[end:padded] = os.urandom(padded - end)
            self._in_flight = start_in_os_thread(self._store_piece, upload, slots_file, buffer, start, body, needed, claim)
        except BaseException:
            if transaction:
                with translate_errors():
                    self._conn.execute("ROLLBACK")
            raise

    def _store_piece(self, upload: SubmissionWriter, slots_file: SlotsFile, buffer: mmap.mmap, start: int, body: int,
                     needed: int, claim: int) -> None:
        """_append's work, in an OS thread (the caller settles it before it touches the upload's
        slots again): claim ``claim`` more slots, then write the piece into the next ``needed``.
        Slots are claimed before they are written, in a transaction that also records the pending
        row first (with the envelope's header, the first piece's first bytes), so every written
        slot belongs to a row until that row is deleted, and recovery frees it. The caller took
        the write lock for them (begin_write)."""
        first = body > start
        if first or claim:
            with write_transaction(self._conn, begun=True) as conn:
                if not first and not conn.execute("SELECT 1 FROM submissions WHERE id = ? AND state = 'pending'", (upload.id,)).fetchone():
                    raise StoreError("the upload was removed before it completed: please send it again")
                if first:
                    self._insert_pending(conn, upload, writer=processes.current_writer())
                    conn.execute("INSERT INTO submission_chunks (rowid, submission_id, seq, data) VALUES (?, ?, 0, ?)",
                                 (random_rowid(), upload.id, buffer[start:body]))
                if claim:
                    upload._slots += slot_table.claim(conn, upload.id, len(upload._slots), claim)
            # The pages this transaction cached are not needed again until the next claim or the
            # publish, which may be minutes away over Tor (~150 KiB per upload in flight, measured
            # on the blobs branch).
            with translate_errors():
                self._conn.execute("PRAGMA shrink_memory")
        if needed:
            slots = upload._slots[upload._used : upload._used + needed]
            upload._used += needed
            slots_file.write(slots, buffer, body)

    def commit_together(self, uploads: list[SubmissionWriter]) -> tuple[str, ...]:
        """Make several submissions (the parts of one request) visible in one transaction:
        all of them, or (on any error, or a crash) none. Those with nothing stored yet stay
        in the main database whole only while they add up to INLINE_BYTES, so the write lock
        stays short; the others end in the slots file."""
        buffered = [upload._buffered() for upload in uploads]
        budget = INLINE_BYTES
        to_slots = []
        for upload, size in zip(uploads, buffered):
            to_slots.append(bool(upload._stored) or size > budget)
            budget -= 0 if to_slots[-1] else size
        # Positions are given as rows are first stored: a part with nothing stored yet that comes
        # before one whose rest goes to the slots file goes there too, so the parts keep their order.
        last = max((i for i, slotted in enumerate(to_slots) if slotted), default=-1)
        pieces = []
        for i, (upload, size) in enumerate(zip(uploads, buffered)):
            first, whole = not upload._stored, None
            if size and (to_slots[i] or i < last):
                upload._hand_over_rest()
            elif size:
                whole = upload._rest()
            pieces.append((upload, whole, upload.size, first and not upload._stored))
        self._publish(pieces)
        for upload in uploads:
            upload._published()
        return tuple(upload.id for upload in uploads)

    def _publish(self, pieces: list[tuple[SubmissionWriter, bytes | None, int, bool]]) -> None:
        """Make the uploads visible (with each one stored whole in the database), in one
        transaction, once everything written to the slots file is durable."""
        self._settle()
        if any(upload._slots for upload, *_ in pieces):  # a short message has none: nothing to do here
            slots_file = self._slots()
            for upload, *_ in pieces:
                if len(upload._slots) > upload._used:  # claimed ahead, not written: random bytes, no hole
                    run_in_os_thread(slots_file.fill_random, upload._slots[upload._used :])
            if any(upload._used for upload, *_ in pieces):
                run_in_os_thread(slots_file.sync)
                # A failed sync since the upload first wrote, or a slots file replaced meanwhile (its
                # first slots went to the old one): either way it is not all on the disk.
                if any(upload._used and upload._written_to != (slots_file, slots_file.sync_failures) for upload, *_ in pieces):
                    raise StoreError("the disk failed to keep an upload: please send it again")
        group_for(self._settings.db_path).publish(self._conn, lambda conn: self._publish_in(conn, pieces))

    def _publish_in(self, conn: Connection, pieces: list[tuple[SubmissionWriter, bytes | None, int, bool]]) -> None:
        """_publish's writes, inside the (perhaps shared) transaction of intake.store.group_commit."""
        for upload, whole, size, first in pieces:
            if first:
                # Pending only inside this transaction, so no other process ever sees it without a writer.
                self._insert_pending(conn, upload, writer=None)
            updated = conn.execute(
                "UPDATE submissions SET state = 'ready', size = ?, writer = NULL WHERE id = ? AND state = 'pending'",
                (size, upload.id),
            ).rowcount
            if updated != 1:  # checked before its envelope, whose row would otherwise refer to nothing
                raise StoreError("the upload was removed before it completed: please send it again")
            if whole is not None:
                conn.execute("INSERT INTO submission_chunks (rowid, submission_id, seq, data) VALUES (?, ?, 0, ?)",
                             (random_rowid(), upload.id, whole))
            if upload._slots:
                slot_table.publish(conn, upload.id, upload._used)
        for source_id in {upload.source_id for upload, *_ in pieces}:
            conn.execute(
                "UPDATE sources SET last_active_day = ? WHERE id = ? AND last_active_day != ?",
                (today(), source_id, today()),
            )

    def _discard(self, upload: SubmissionWriter) -> None:
        try:
            self._settle()
        except Exception:  # noqa: BLE001 - a failed chunk write is often why the upload is discarded
            pass
        # Else a write whose wait was cut short may still land: its slots wait for this process to end.
        nothing_in_flight = self._in_flight is None

        def remove(conn: Connection) -> None:
            conn.execute("DELETE FROM submissions WHERE id = ? AND state = 'pending'", (upload.id,))
            if nothing_in_flight:
                slot_table.let_go(conn, upload._slots)  # nothing of this upload writes them any more

        self._write(remove)  # an upload cut off over Tor is common: its commit too runs off the loop
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
        """Overwrite the slots of submissions that are gone (deleted, discarded, or left by a
        dead writer) and give their space back; delete blobs-database chunks whose submission
        is gone; then give freed pages back to the file system. In an OS thread: freeing a
        large upload rewrites its slots (and, with secure_delete, pages)."""
        self._settle()
        failure = run_in_os_thread(self._reclaim_space_now, self._legacy_blobs())
        if failure is not None:  # logged here: logging's locks are gevent's, which hang OS threads (os_thread_lock)
            log.warning("freed space was not reclaimed yet: %s", failure)

    def _reclaim_space_now(self, blobs: Connection | None) -> str | None:
        """_reclaim_space's work, in an OS thread; what went wrong, if anything. On a full (or
        failing) disk each step may fail: what is left is done at a later reclaim."""
        failure = None
        try:
            if self._read("SELECT 1 FROM slots LIMIT 1"):
                slots = self._slots()
                with slots.cleaning() as alone:
                    if alone:
                        slot_table.clean_freed(self._conn, slots.free, slots.truncate)
                        slots.sync()
            if blobs is not None:
                with translate_errors():
                    stored = [row[0] for row in blobs.execute("SELECT DISTINCT submission_id FROM chunks").fetchall()]
                gone = set(stored) - self.existing_submissions(stored)
                if gone:
                    with write_transaction(blobs) as conn:
                        conn.executemany("DELETE FROM chunks WHERE submission_id = ?", [(submission_id,) for submission_id in gone])
                with translate_errors():
                    blobs.execute("PRAGMA incremental_vacuum").fetchall()
            with translate_errors():
                self._conn.execute("PRAGMA incremental_vacuum").fetchall()
        except StoreError as error:
            # The caller's change (a delete, an abort) stands; freed slots stay unclaimable until
            # a later reclaim overwrites them.
            failure = str(error)
        empty_wal(self._conn)  # the vacuum ran outside write_transaction
        return failure

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
        reply = StoredReply(_new_id(), today(), envelope)
        self._wait_for_piece()
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
        self._write(lambda conn: conn.execute(
            "INSERT INTO source_sessions (id, source_id, sealed_secret, expires_by_day) VALUES (?, ?, ?, ?)",
            (session_id, source_id, sealed_secret, expires_by_day(expires_at)),
        ))

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
