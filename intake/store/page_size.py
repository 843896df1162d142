"""Rewriting a store made with 16 KiB pages into one with 4 KiB pages (connection.CIPHER_PAGE_SIZE).

SQLCipher cannot change a file's page size in place: the rows are copied into a new file
(``sqlcipher_export``), which then takes the old one's name. That is safe only while no other
connection can write to the old file, or its writes would go to a file nobody reads again:

- switching the old file out of WAL mode succeeds only if no other connection has it open,
  so a store in use is left as it is (converted at a later start);
- from then on this connection holds the old file's exclusive lock, so a connection opened
  meanwhile waits; the old file is overwritten with zeros before the lock is let go, so such a
  connection cannot read it, let alone write to it (connection.open_main then opens the file
  the path names by then: the new one).

The rename is the commit point: killed before it, the old file is whole (a leftover copy is
removed the next time); after it, the new one is. The copy is checked (every table's rows
counted, SQLite's quick_check) before it replaces anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from keys.files import fsync_folders

from intake.store.connection import (
    CIPHER_PAGE_SIZE,
    MAIN_CACHE_KIB,
    Connection,
    DatabaseError,
    is_busy,
    open_keyed,
    open_main,
    translate_errors,
)
from intake.store.errors import StoreError, StoreFullError
from intake.told import told

COPY_SUFFIX = "-repaging"
_ZEROS = bytes(1 << 20)
# Room the copy needs: the old file's size, a tenth more (4 KiB pages lose more to SQLCipher's
# 80 bytes of IV and HMAC a page), and room for the database to go on taking submissions after.
ROOM_FACTOR = 1.1
ROOM_MARGIN = 64 << 20


def copy_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + COPY_SUFFIX)


class PageRewriteError(StoreError):
    """The copy could not be made or did not match (a damaged page, say): the store is as it was."""


def convert_page_size(db_path: Path, key: bytes) -> str:
    """Give the store at ``db_path`` CIPHER_PAGE_SIZE pages if it has the older size.

    Returns "current" (nothing to do), "converted", "in use" (another connection has it
    open) or "no room" (the disk cannot hold a second copy); in the last two cases the
    store keeps its pages until a later call. Raises PageRewriteError (the store kept as it
    was) if the copy fails, and WrongDatabaseKeyError if the key opens it with neither size.
    """
    if not db_path.is_file():
        return "current"  # not a store yet: Store.open says so
    old = open_main(db_path, key)  # waits out, and then sees past, another process's rewrite in progress
    if old.page_size == CIPHER_PAGE_SIZE:
        old.close()
        return "current"
    copy = copy_path(db_path)
    alone = False
    try:
        alone = _leave_wal(old) and _hold_exclusive_lock(old)
        if not alone:
            return "in use"
        _remove_copy(copy)  # left by a rewrite killed before its rename (under the lock: not another's in progress)
        if shutil.disk_usage(db_path.parent).free < db_path.stat().st_size * ROOM_FACTOR + ROOM_MARGIN:
            return "no room"  # the store serves on with its old pages
        try:
            _export(old, copy, key)
            _check_copy(old, copy, key)
        except StoreFullError:
            return "no room"
        except (DatabaseError, StoreError) as error:  # SQLite's one-line messages hold no content
            raise PageRewriteError(*error.args) from None
        with _opened(db_path, os.O_WRONLY) as old_file, _opened(copy, os.O_RDONLY) as copy_file:
            os.fsync(copy_file)
            os.replace(copy, db_path)
            fsync_folders([db_path.parent])
            _overwrite(old_file)  # still under the exclusive lock: a waiting connection reads zeros
    finally:
        old.close()
        if alone:
            _remove_copy(copy)  # what is left of a copy that did not take the store's place
    return "converted"


def _leave_wal(conn: Connection) -> bool:
    """Leave WAL mode: SQLite allows it only to the one connection that has the file open.
    False if another connection has it open."""
    with translate_errors():
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        except DatabaseError as error:
            if is_busy(error):
                return False
            raise
    return True


def _hold_exclusive_lock(conn: Connection) -> bool:
    """Take the exclusive lock and keep it until ``conn`` closes; False if another connection
    opened the store since it left WAL mode."""
    with translate_errors():
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except DatabaseError as error:
            if is_busy(error):
                return False
            raise
        # Read again under the lock: a connection opened since the switch may have set WAL mode back.
        still_alone = conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "delete"
        conn.execute("COMMIT")  # in EXCLUSIVE locking mode the lock stays taken
    return still_alone


def _export(old: Connection, copy: Path, key: bytes) -> None:
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # SQLite keeps an existing file's mode
    with translate_errors():
        # Parameters are not allowed in ATTACH's KEY clause; the key and the path are ours, not input.
        old.execute(f"ATTACH DATABASE '{_quoted(copy)}' AS repaged KEY \"x'{key.hex()}'\"")
        try:
            old.execute(f"PRAGMA repaged.cipher_page_size = {CIPHER_PAGE_SIZE}")
            old.execute("PRAGMA repaged.auto_vacuum = INCREMENTAL")  # not copied by sqlcipher_export
            old.execute("PRAGMA repaged.secure_delete = ON")
            old.execute("PRAGMA repaged.synchronous = FULL")
            try:
                old.execute("SELECT sqlcipher_export('repaged')")
            except DatabaseError as error:  # it reports a full disk as SQLITE_ERROR, by its message only
                if "full" in str(error):
                    raise StoreFullError(told("the disk is full")) from None
                raise
            version = old.execute("PRAGMA main.user_version").fetchone()[0]
            old.execute(f"PRAGMA repaged.user_version = {int(version)}")  # not copied either
        finally:
            old.execute("DETACH DATABASE repaged")


def _check_copy(old: Connection, copy: Path, key: bytes) -> None:
    new = open_keyed(copy, key, page_size=CIPHER_PAGE_SIZE, hmac_algorithm=None, cache_kib=MAIN_CACHE_KIB)
    try:
        with translate_errors():
            if new.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise StoreError(told("the rewritten database did not check out: the store was left as it was"))
            for question in ("PRAGMA user_version", "PRAGMA auto_vacuum", "SELECT type, name, sql FROM sqlite_master ORDER BY name"):
                if new.execute(question).fetchall() != old.execute(question).fetchall():
                    raise StoreError(told("the rewritten database differs from the store: the store was left as it was"))
            tables = [name for (name,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            for table in tables:
                count = f'SELECT count(*) FROM "{table}"'  # noqa: S608 - names from the schema
                if new.execute(count).fetchone() != old.execute(count).fetchone():
                    raise StoreError(told("the rewritten database lacks rows: the store was left as it was"))
    finally:
        new.close()


def _overwrite(fd: int) -> None:
    """Zeros over the old file, synced: no stale connection can read it, nor a thief with the key
    find the old pages in its blocks (on a file system that writes in place)."""
    size = os.fstat(fd).st_size
    written = 0
    while written < size:
        written += os.pwrite(fd, _ZEROS[: min(len(_ZEROS), size - written)], written)
    os.fsync(fd)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


@contextlib.contextmanager
def _opened(path: Path, flags: int):
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)  # the old file's: this also lets go of the exclusive lock SQLite took on it


def _remove_copy(copy: Path) -> None:
    for path in (copy, copy.with_name(copy.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
