"""Opening the SQLCipher database: key, verification and the pragmas every connection needs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlcipher3

from intake.store.errors import StoreError, StoreFullError, WrongDatabaseKeyError

Connection = sqlcipher3.Connection
DatabaseError = sqlcipher3.DatabaseError
IntegrityError = sqlcipher3.IntegrityError

# SQLCipher encrypts and authenticates each page, and WAL mode writes each page twice
# (log, then database). Measured here (bench figures in the store engineer's report):
# 1 MiB chunk rows ingest at ~120 MiB/s with 4 KiB pages, ~155 MiB/s with 16 KiB,
# while small three-transaction submissions drop only from ~850/s to ~630/s
# (64 KiB pages: ~280/s). The page size is not stored in the clear, so every
# connection must give the same one; changing it needs a `sqlcipher_export` migration.
CIPHER_PAGE_SIZE = 16384


def connect(path: Path, key: bytes, *, busy_timeout_ms: int, create: bool = False) -> Connection:
    """A connection in autocommit mode (transactions are explicit), keyed and verified.

    The key is given raw (x'..'), so opening costs no PBKDF. A wrong key is
    detected by reading the schema, before anything is written.
    """
    if len(key) != 32:
        raise ValueError("the database key must be 32 bytes")
    with translate_errors():
        conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=True)
    try:
        with translate_errors():
            # SQLCipher logs decryption failures to stderr by default; the CLI says it in one line instead.
            conn.execute("PRAGMA cipher_log_level = NONE")
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            conn.execute(f"PRAGMA cipher_page_size = {CIPHER_PAGE_SIZE}")
            # Off on purpose: wiping every freed allocation cost ~40% of upload throughput and
            # halved read speed here, while the bulk of the pages hold envelopes (ciphertext to
            # the journalists) and the rest is pseudonymous (lookup ids, sealed session secrets).
            conn.execute("PRAGMA cipher_memory_security = OFF")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except DatabaseError:
            raise WrongDatabaseKeyError("the database key does not open this database (wrong key, or not an intake database)") from None
        with translate_errors():
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if create:
                # Must precede the first table: freed pages can then be returned to the OS.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            # WAL: readers never block the writer and the writer never blocks readers.
            conn.execute("PRAGMA journal_mode = WAL")
            # An acknowledged submission survives power loss: every commit is fsynced.
            conn.execute("PRAGMA synchronous = FULL")
            # Deleted content is overwritten, not just unlinked from the b-tree.
            conn.execute("PRAGMA secure_delete = ON")
            # Sorts and temporary indexes stay in memory, never in an unencrypted temp file.
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _error_code(error: BaseException) -> int | None:
    return getattr(error, "sqlite_errorcode", None)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLite failures that an operator can act on into store errors with a clear message."""
    try:
        yield
    except DatabaseError as error:
        code = _error_code(error)
        if code is not None and code & 0xFF == sqlcipher3.SQLITE_FULL:
            raise StoreFullError("the disk holding the intake database is full: free some space and try again") from None
        if code is not None and code & 0xFF == sqlcipher3.SQLITE_NOTADB:
            raise WrongDatabaseKeyError("the database key does not open this database (wrong key, or not an intake database)") from None
        if code is not None and code & 0xFF == sqlcipher3.SQLITE_BUSY:
            raise StoreError("the database stayed busy too long: try again") from None
        raise


@contextlib.contextmanager
def write_transaction(conn: Connection) -> Iterator[Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock at once (no upgrade deadlock), rolls back on error."""
    with translate_errors():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
