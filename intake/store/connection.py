"""Opening the SQLCipher databases: key, verification and the pragmas every connection needs.

A data dir holds a SQLCipher database, and, in a store from before the slots file
(intake.store.slots_file), a second one under a related key:

- ``intake.db`` (WAL): everything but the bulk of large uploads, so a submission is
  published in one transaction.
  A WAL keeps every commit since the last checkpoint, in order, and whoever holds
  the key can replay them (a deleted reply, the order in which sources came): so
  every write transaction ends with a checkpoint that empties it (empty_wal).
- ``intake.db-blobs`` (rollback journal): the ciphertext chunks of large uploads
  stored before the slots file, read from there; nothing writes new ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import sqlcipher3

from intake.store.errors import StoreBusyError, StoreDamagedError, StoreFullError, WrongDatabaseKeyError
from intake.told import told
from intake.worker_threads import sleep_here

DatabaseError = sqlcipher3.DatabaseError
IntegrityError = sqlcipher3.IntegrityError

# SQLCipher encrypts and authenticates each page, and WAL mode writes each page twice
# (log, then database). Stores made before 2026-12 have 16 KiB pages: then 1 MiB chunk rows lived
# here and ingested at ~155 MiB/s against ~120 with 4 KiB. Large uploads now go to the slots file,
# and what bounds fifty senders is the write lock's hold: each publish dirties about five pages at
# random places, each encrypted, written twice and synced. Measured with 4 KiB pages (paired
# rounds, docs/PERFORMANCE.md): +2 to +40% messages/s a round, and the journalist side as fast.
# The page size is not stored in the clear, so every connection must give the right one: an older
# store opens with LEGACY_PAGE_SIZE and is rewritten by intake.store.page_size at the next start.
CIPHER_PAGE_SIZE = 4096
LEGACY_PAGE_SIZE = 16384

# The blobs database holds only large chunk rows. Measured here (2 cores, 256 MiB of
# 1 MiB rows, fsync on every commit): 16 KiB pages + HMAC-SHA512 ~230 MiB/s; 64 KiB
# pages ~240 MiB/s; 64 KiB + HMAC-SHA256 (SHA extensions in the CPU) ~330 MiB/s.
# Both are fixed for the life of the file.
BLOBS_PAGE_SIZE = 65536
BLOBS_HMAC = "HMAC_SHA256"

# Page caches, per connection (every upload in flight holds one of each). SQLCipher's default
# here is 8 MiB each, and appending a 4 MiB chunk filled the blobs one: measured ~9 MiB of C
# memory per slow upload in flight. The main database needs far less (its rows are small).
# The blobs database keeps 8 MiB: a chunk's dirty pages must fit, or SQLite spills them to the
# file before the commit (measured, 96 MiB of 4 MiB chunks: 65-84 MiB/s with 8 MiB, 45-50 with
# 256 KiB, 34-46 with 64 KiB); its pages are released after every chunk (shrink_memory).
MAIN_CACHE_KIB = 2048
BLOBS_CACHE_KIB = 8000
# SQLite allocates a cache's first 20 pages in bulk on its first read unless the cache holds
# fewer than 3 pages (measured: 1.26 MiB per blobs connection, 64 KiB pages), so the blobs
# database is opened with a one-page cache and given its real size after that first read.
_OPENING_CACHE_KIB = 64


class Connection(sqlcipher3.Connection):
    """A connection that knows how long a writer may wait for the write lock.

    Connections are used by one thread at a time, but not always the thread that
    opened them (a gevent worker hands store writes to OS threads), so Python's
    same-thread check is off.
    """

    lock_wait_seconds: float = 10.0
    page_size: int = CIPHER_PAGE_SIZE  # SQLCipher's page size for this file (a copy must use the same)
    empties_wal: bool = False  # the main database: checkpoint after every write transaction
    wal_pending: bool = False  # a checkpoint was held up by a reader: try again when the request ends


def blobs_key(db_key: bytes) -> bytes:
    """The blobs database's key: derived from the main key, so one secret opens both
    and neither file's key opens the other (domain separation)."""
    return hashlib.blake2b(b"", key=db_key, person=b"intake:blobs-db", digest_size=32).digest()


def open_keyed(path: Path, key: bytes, *, page_size: int, hmac_algorithm: str | None, cache_kib: int) -> Connection:
    if len(key) != 32:
        raise ValueError("the database key must be 32 bytes")
    with translate_errors():
        conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False, factory=Connection)
    try:
        with translate_errors(), _damage_reported(path):
            # SQLCipher logs decryption failures to stderr by default; the CLI says it in one line instead.
            conn.execute("PRAGMA cipher_log_level = NONE")
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            conn.execute(f"PRAGMA cipher_page_size = {page_size}")
            if hmac_algorithm is not None:
                conn.execute(f"PRAGMA cipher_hmac_algorithm = {hmac_algorithm}")
            # Before the first read: SQLite allocates the cache's first pages in bulk then, up to
            # 20 pages (1.25 MiB at 64 KiB) under SQLCipher's default cache size.
            conn.execute(f"PRAGMA cache_size = -{cache_kib}")
            # Off on purpose: wiping every freed allocation cost ~40% of upload throughput and
            # halved read speed here, while the bulk of the pages hold envelopes (ciphertext to
            # the journalists) and the rest is pseudonymous (lookup ids, sealed session secrets).
            conn.execute("PRAGMA cipher_memory_security = OFF")
            # The first read: a wrong key (or page size) reads as SQLITE_NOTADB.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    conn.page_size = page_size
    return conn


def _common_pragmas(conn: Connection, *, busy_timeout_ms: int) -> None:
    conn.lock_wait_seconds = busy_timeout_ms / 1000
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # Deleted content is overwritten, not just unlinked from the b-tree.
    conn.execute("PRAGMA secure_delete = ON")
    # Sorts and temporary indexes stay in memory, never in an unencrypted temp file.
    conn.execute("PRAGMA temp_store = MEMORY")


def connect(path: Path, key: bytes, *, busy_timeout_ms: int, create: bool = False, page_size: int | None = None) -> Connection:
    """The main database, in autocommit mode (transactions are explicit), keyed and verified.

    The key is given raw (x'..'), so opening costs no PBKDF. A wrong key is
    detected by reading the schema, before anything is written. A new file gets
    ``page_size`` (CIPHER_PAGE_SIZE unless given: a backup's copy takes its source's).
    """
    if create or page_size is not None:
        conn = open_keyed(path, key, page_size=page_size or CIPHER_PAGE_SIZE, hmac_algorithm=None, cache_kib=MAIN_CACHE_KIB)
    else:
        conn = open_main(path, key)
    try:
        with translate_errors():
            if create:
                # Must precede the first table: freed pages can then be returned to the OS.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            _common_pragmas(conn, busy_timeout_ms=busy_timeout_ms)
            # WAL: readers never block the writer and the writer never blocks readers.
            # Emptied after every write transaction (empty_wal): measured against a
            # rollback journal in SECURITY.md section 2.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.empties_wal = True
            # An acknowledged submission survives power loss: every commit is fsynced.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def open_main(path: Path, key: bytes) -> Connection:
    """The main database with the page size it was made with: CIPHER_PAGE_SIZE, or
    LEGACY_PAGE_SIZE in a store not yet rewritten (one failed read of page 1 more).

    A connection opened while intake.store.page_size rewrites the store waits for its lock (up
    to sqlcipher3's 5 s, then StoreBusyError), then finds the old file zeroed: the path names
    the new file by then, so it opens again."""
    for _attempt in range(2):
        file_id = _file_id(path)
        try:
            return open_keyed(path, key, page_size=CIPHER_PAGE_SIZE, hmac_algorithm=None, cache_kib=MAIN_CACHE_KIB)
        except WrongDatabaseKeyError:
            pass
        try:
            return open_keyed(path, key, page_size=LEGACY_PAGE_SIZE, hmac_algorithm=None, cache_kib=MAIN_CACHE_KIB)
        except WrongDatabaseKeyError:
            if _file_id(path) == file_id:
                raise
    raise WrongDatabaseKeyError(told("the database key does not open this database (wrong key, or not an intake database)"))


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def connect_blobs(path: Path, db_key: bytes, *, busy_timeout_ms: int) -> Connection:
    """The blobs database (SQLite creates it the first time; then it is made 0600 like the main one)."""
    conn = open_keyed(path, blobs_key(db_key), page_size=BLOBS_PAGE_SIZE, hmac_algorithm=BLOBS_HMAC, cache_kib=_OPENING_CACHE_KIB)
    try:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            # SQLite gives its journal the database file's mode.
            path.chmod(0o600)
        with translate_errors():
            conn.execute(f"PRAGMA cache_size = -{BLOBS_CACHE_KIB}")
            # As for the main database; on a file that already has its table this changes nothing.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            _common_pragmas(conn, busy_timeout_ms=busy_timeout_ms)
            # A rollback journal: appended pages are written once, and the journal
            # holds only the few b-tree pages a chunk row changes.
            conn.execute("PRAGMA journal_mode = TRUNCATE")
            # Measured: fsync on every commit costs ~3% here, and keeps every committed
            # chunk (and the b-tree pages it shares with older rows) safe from power loss.
            conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def _error_code(error: BaseException) -> int | None:
    return getattr(error, "sqlite_errorcode", None)


@contextlib.contextmanager
def _damage_reported(path: Path) -> Iterator[None]:
    """Opening reads page 1 and the schema's pages: one of them damaged is said in one line."""
    try:
        yield
    except DatabaseError as error:
        code = _error_code(error)
        if code is not None and code & 0xFF == sqlcipher3.SQLITE_CORRUPT:
            raise StoreDamagedError(told("{file} is damaged (a page SQLite reads to open it is malformed): restore a backup",
                                         file=path.name)) from None
        raise


def is_busy(error: BaseException) -> bool:
    code = _error_code(error)
    return code is not None and code & 0xFF == sqlcipher3.SQLITE_BUSY


def files_fault(error: BaseException) -> str | None:
    """What a database error says of the files or the disk: "damaged", "unusable" (cannot be opened
    or written: permissions, a failing disk) or "full"; None when it is not about them (a bug)."""
    code = _error_code(error)
    primary = None if code is None else code & 0xFF
    if primary in (sqlcipher3.SQLITE_CORRUPT, sqlcipher3.SQLITE_NOTADB):
        return "damaged"
    if primary in (sqlcipher3.SQLITE_READONLY, sqlcipher3.SQLITE_CANTOPEN, sqlcipher3.SQLITE_IOERR):
        return "unusable"
    if primary == sqlcipher3.SQLITE_FULL:
        return "full"
    return None


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLite failures that an operator can act on into store errors with a clear message."""
    try:
        yield
    except DatabaseError as error:
        code = _error_code(error)
        if files_fault(error) == "full":
            raise StoreFullError(told("the disk holding the intake database is full: free some space and try again")) from None
        if code is not None and code & 0xFF == sqlcipher3.SQLITE_NOTADB:
            raise WrongDatabaseKeyError(told("the database key does not open this database (wrong key, or not an intake database)")) from None
        if is_busy(error):
            raise StoreBusyError(told("the database stayed busy too long: try again")) from None
        raise


# Waiting for the write lock: first retry soon (transactions are short), then back off.
_FIRST_LOCK_RETRY = 0.0005
_LONGEST_LOCK_RETRY = 0.01


def _begin_immediate(conn: Connection) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock with sleep_here between tries.

    SQLite's own busy handler sleeps inside C: on a gevent worker's loop that would
    freeze every connection the worker serves. sleep_here is gevent's sleep there
    (other requests run meanwhile) and an ordinary sleep in any other thread.
    """
    deadline = time.monotonic() + conn.lock_wait_seconds
    delay = _FIRST_LOCK_RETRY
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except DatabaseError as error:
                if not is_busy(error) or time.monotonic() + delay > deadline:
                    raise
            sleep_here(delay)
            delay = min(delay * 2, _LONGEST_LOCK_RETRY)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(conn.lock_wait_seconds * 1000)}")


def begin_write(conn: Connection) -> None:
    """Take the write lock (BEGIN IMMEDIATE), waiting as _begin_immediate does; the transaction
    is then ended by ``write_transaction(conn, begun=True)``, perhaps in another thread."""
    with translate_errors():
        _begin_immediate(conn)


@contextlib.contextmanager
def write_transaction(conn: Connection, *, begun: bool = False) -> Iterator[Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock at once (no upgrade deadlock), rolls back on error.
    On the main database the commit is then checkpointed out of the WAL (empty_wal). ``begun``:
    the caller took the lock already (begin_write)."""
    with translate_errors():
        if not begun:
            _begin_immediate(conn)
        try:
            yield conn
            conn.execute("COMMIT")  # a failed COMMIT (a foreign key checked at the end) leaves the transaction open
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    if conn.empties_wal:
        empty_wal(conn)


def empty_wal(conn: Connection) -> bool:
    """Copy the WAL into the database and truncate it to nothing, so no earlier state
    of any page (a deleted row, the order of commits) stays in it. Never waits: while
    another connection reads a snapshot in the WAL it cannot be emptied, and
    ``conn.wal_pending`` says to try again (Store.end_request). True if it is empty."""
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(conn.lock_wait_seconds * 1000)}")
    except DatabaseError:  # the commit stands; the WAL is emptied by a later try
        busy, frames = 1, 1
    conn.wal_pending = bool(busy) or frames > 0
    return not conn.wal_pending
