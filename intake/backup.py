"""`intake backup` and `intake restore`: a whole instance in one file, and back.

A backup is an uncompressed tar (every member mode 0600, owner 0, time 0) of:

- ``intake-backup``: the format line ``intake-backup 1``;
- ``secrets.sealed``: the instance secret, the server's signing key and both onion keys,
  in a SecretBox under a key derived from the database key (BLAKE2b, personal
  ``intake:backup``), so the file is exactly as hard to read as the store itself;
- ``db-key.recovery``: the database key sealed to the journalists (already sealed;
  taken out of a backup with ``tar -xf BACKUP db-key.recovery`` when the key is lost);
- ``intake.db`` (and ``intake.db-blobs``, in a store older than the slots file): consistent
  snapshots by SQLite's backup API, still encrypted with the database key; uploads in progress
  are left out;
- ``intake.db-slots``: the slots of the snapshot's submissions (ciphertext to the journalists),
  renumbered in the order of the submissions' random ids, with no free slot between them;
- ``retention.toml``, if the instance has one.

Restoring needs the database key (from the running server's credential, or recovered on
a journalist's laptop with `intake-keys recover-db-key`) and an empty data dir; it
gives the same onion addresses and every submission, or nothing at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nacl.secret
from keys.files import PendingFile, write_new_file
from nacl.exceptions import CryptoError

from intake.cli_i18n import _, said
from intake.config import (
    DATABASE_KEY,
    DB_FILE,
    DB_KEY_BYTES,
    INSTANCE_SECRET_FILE,
    Settings,
    db_key_path,
    load_settings,
    read_secret_file,
)
from intake.db_key_recovery import RECOVERY_FILE
from intake.server_identity import SERVER_SIGNING_FILE, write_server_public_file
from intake.store import MissingDatabaseKeyError, Store, StoreError
from intake.store.connection import Connection, DatabaseError, connect, connect_blobs, files_fault, write_transaction
from intake.store.errors import StoreDamagedError, StoreFullError
from intake.store.newsroom import Newsroom
from intake.store.page_size import PageRewriteError, convert_page_size
from intake.store.slots_file import SLOT_BYTES, SLOTS_SUFFIX, SlotsFile, SlotsFileShortError, slots_path
from intake.store.store import blobs_path

FORMAT_MEMBER = "intake-backup"
FORMAT_LINE = b"intake-backup 1\n"
SECRETS_MEMBER = "secrets.sealed"
BLOBS_FILE = DB_FILE + "-blobs"
SLOTS_FILE = DB_FILE + SLOTS_SUFFIX
RETENTION_FILE = "retention.toml"
# The files sealed in secrets.sealed, by their path in the data dir.
SECRET_FILES = (INSTANCE_SECRET_FILE, SERVER_SIGNING_FILE, "onion/source.key", "onion/journalist.key")
_PLAIN_MEMBERS = (RECOVERY_FILE, DB_FILE, BLOBS_FILE, SLOTS_FILE, RETENTION_FILE)
_SNAPSHOT_FILES = (DB_FILE, BLOBS_FILE, SLOTS_FILE)
_SMALL_MEMBER = 1 << 20  # the format line, the sealed secrets, the recovery file, the retention policy
_SNAPSHOT_ATTEMPTS = 3


class BackupError(StoreError):
    """A backup cannot be made or restored as asked; nothing was left half-done."""


def _backup_box(db_key: bytes) -> nacl.secret.SecretBox:
    return nacl.secret.SecretBox(hashlib.blake2b(b"", key=db_key, person=b"intake:backup", digest_size=32).digest())


# Making a backup


def make_backup(data_dir: Path, out: Path, *, db_key_file: Path | None = None) -> dict[str, int]:
    """Write a backup of the instance in `data_dir` to the new file `out`; returns the snapshot's counts."""
    settings = load_settings(data_dir, db_key_file=db_key_file)
    out = Path(out)
    if out.exists():
        raise BackupError(_("{path} exists already: choose a new file name").format(path=out))
    secrets_blob = _seal_secrets(settings)
    folder = out.parent if str(out.parent) else Path(".")
    with _writing_in(folder):
        stage = Path(tempfile.mkdtemp(prefix=".intake-backup-", dir=folder))
    try:
        counts = _snapshot(settings, stage)
        with _writing_in(folder), PendingFile(folder, 0o600) as pending:
            with tarfile.open(fileobj=pending, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, FORMAT_MEMBER, FORMAT_LINE)
                _add_bytes(tar, SECRETS_MEMBER, secrets_blob)
                for name in _PLAIN_MEMBERS:
                    source = stage / name if name in _SNAPSHOT_FILES else settings.data_dir / name
                    if source.is_file():
                        with open(source, "rb") as f:
                            tar.addfile(_member(name, source.stat().st_size), f)
            pending.commit(out.name, durable=True, renumber=False)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return counts


def _seal_secrets(settings: Settings) -> bytes:
    files = {}
    for name in SECRET_FILES:
        path = settings.data_dir / name
        try:
            files[name] = path.read_bytes().hex()
        except FileNotFoundError:
            raise BackupError(_("{path} is missing: this data dir is incomplete (run `intake init` on it)").format(path=path)) from None
    return bytes(_backup_box(settings.db_key).encrypt(json.dumps(files, sort_keys=True).encode()))


def _snapshot(settings: Settings, stage: Path) -> dict[str, int]:
    """The databases copied into `stage`, main first, then the slots: a submission seen there
    has all its chunks in the copy of an older store's blobs database and its slots unchanged in
    the slots file, unless it was deleted in between; then copy again."""
    staged = dataclasses.replace(settings, data_dir=stage)
    for _attempt in range(_SNAPSHOT_ATTEMPTS):
        for path in stage.iterdir():
            path.unlink()
        with Store.open(settings) as store:
            databases = dict(store.databases())
            # SQLite's backup API copies pages as they are: the copy must have its source's page size.
            targets = {"database": lambda source: connect(staged.db_path, settings.db_key, busy_timeout_ms=settings.busy_timeout_ms,
                                                          page_size=source.page_size),
                       "blobs database": lambda _source: connect_blobs(blobs_path(staged), settings.db_key,
                                                                       busy_timeout_ms=settings.busy_timeout_ms)}
            for name, source in databases.items():
                with _writing_in(stage.parent):
                    target = targets[name](source)
                    try:
                        source.backup(target)
                    finally:
                        target.close()
        with _writing_in(stage.parent), Store.open(staged) as copy:
            databases = dict(copy.databases())
            main, blobs = databases["database"], databases.get("blobs database")
            # Uploads in progress are not submissions yet; their chunks are reclaimed later.
            main.execute("DELETE FROM submissions WHERE state = 'pending'")
            copied = _copy_slots(settings, main, slots_path(staged.db_path)) if _every_submission_whole(main, blobs) else None
            if copied is not None:
                main.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                counts = copy.counts()
        # A submission still in the live store after its slots were copied was there throughout.
        if copied is not None and _all_still_there(settings, copied):
            return counts
    raise BackupError(_("submissions kept being deleted while the backup was made: run it again"))


def _every_submission_whole(main, blobs) -> bool:
    pieces: dict[str, list[int]] = {}
    for table, conn in (("chunks", blobs), ("submission_chunks", main)):
        if conn is None:
            continue
        for submission_id, seq in conn.execute(f"SELECT submission_id, seq FROM {table}"):  # noqa: S608 - fixed names
            pieces.setdefault(submission_id, []).append(seq)
    for (submission_id,) in main.execute("SELECT id FROM submissions"):
        seqs = sorted(pieces.get(submission_id, []))
        if not seqs or seqs != list(range(len(seqs))):
            return False
    return True


@contextlib.contextmanager
def _writing_in(folder: Path) -> Iterator[None]:
    """A full disk while writing the backup's staging copy is the backup folder's disk: named so,
    not as the data dir's (which the store's own error would say)."""
    try:
        yield
    except (StoreFullError, DatabaseError, OSError) as error:
        if isinstance(error, StoreFullError) or files_fault(error) == "full" or getattr(error, "errno", None) == errno.ENOSPC:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder)) from None
        raise


def _copy_slots(settings: Settings, staged: Connection, target_path: Path) -> list[str] | None:
    """Copy the slots of the staged snapshot's submissions from the live slots file into
    ``target_path``, numbered afresh; the submissions copied, or None if the live file was cut
    short meanwhile (a submission deleted: copy again)."""
    rows = staged.execute("SELECT submission_id, seq, slot FROM slots WHERE submission_id IS NOT NULL ORDER BY submission_id, seq").fetchall()
    if rows:
        live, target = SlotsFile(slots_path(settings.db_path), direct=False), SlotsFile(target_path, direct=False)
        try:
            for number, (submission_id, _seq, slot) in enumerate(rows):
                try:
                    piece = live.read([slot], SLOT_BYTES)
                except SlotsFileShortError:
                    if _all_still_there(settings, [submission_id]):
                        raise  # not a deletion that cut the file meanwhile: the file lost its end
                    return None  # cut off with a submission deleted meanwhile: copy again
                target.write([number], piece, 0)
            target.sync()
        finally:
            live.close()
            target.close()
    with write_transaction(staged):
        staged.execute("DELETE FROM slots")
        staged.executemany("INSERT INTO slots (slot, submission_id, seq, dirty) VALUES (?, ?, ?, 1)",
                           [(number, submission_id, seq) for number, (submission_id, seq, _slot) in enumerate(rows)])
    return sorted({submission_id for submission_id, _seq, _slot in rows})


def _all_still_there(settings: Settings, submission_ids: list[str]) -> bool:
    with Store.open(settings) as store:
        return len(store.existing_submissions(submission_ids)) == len(submission_ids)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0  # no owner, no time: a backup tells nothing about when
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


# Restoring


def restore_backup(backup: Path, data_dir: Path, *, db_key_file: Path | None = None) -> Settings:
    """Rebuild an instance from `backup` in `data_dir` (absent or empty), keyed by the usual key
    (`db_key_file`, $INTAKE_DB_KEY_FILE or the systemd credential). All or nothing."""
    data_dir = Path(data_dir)
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(_("{folder} is not empty: restore into a new or empty data dir").format(folder=data_dir))
    key_path = db_key_path(data_dir, db_key_file)
    if key_path.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(_("give the database key with --db-key-file (the one `intake-keys recover-db-key` wrote), "
                            "or run this where the server's systemd credential holds it"))
    db_key = read_secret_file(key_path, DB_KEY_BYTES, DATABASE_KEY, MissingDatabaseKeyError)
    made_dir = not data_dir.exists()
    try:
        if made_dir:
            data_dir.mkdir(mode=0o700, parents=True)
        os.chmod(data_dir, 0o700)
        _unpack(backup, data_dir, db_key)
        settings = load_settings(data_dir, db_key_file=db_key_file)
        try:
            with contextlib.suppress(PageRewriteError):  # a damaged page, say: the check below finds it
                convert_page_size(settings.db_path, db_key)  # a backup of a store with 16 KiB pages; nothing else has it open
            with Store.open(settings) as store:
                problems = Newsroom(store).integrity_problems()
        except StoreDamagedError:
            problems = [_("a page read to open it is malformed")]
        if problems:
            raise BackupError(_("the restored store is damaged ({problem}): this backup cannot be used").format(problem=said(problems[0])))
        write_server_public_file(data_dir)  # the public half journalists compare, from the restored seed
        return settings
    except BaseException:
        for path in sorted(data_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        if made_dir:
            data_dir.rmdir()
        raise


def _unpack(backup: Path, data_dir: Path, db_key: bytes) -> None:
    try:
        tar = tarfile.open(backup, mode="r|")
    except (OSError, tarfile.TarError):
        raise BackupError(_("{backup} is not an intake backup (not a tar file)").format(backup=backup)) from None
    seen: list[str] = []
    with tar:
        try:
            for member in tar:
                if member.name in seen or not member.isfile() or member.name not in (FORMAT_MEMBER, SECRETS_MEMBER, *_PLAIN_MEMBERS):
                    raise BackupError(_("{backup} is not an intake backup (unexpected member {member})").format(backup=backup, member=repr(member.name)))
                if not seen and member.name != FORMAT_MEMBER or seen == [FORMAT_MEMBER] and member.name != SECRETS_MEMBER:
                    raise BackupError(_("{backup} is not an intake backup (members out of order)").format(backup=backup))
                seen.append(member.name)
                src = tar.extractfile(member)
                if member.name == FORMAT_MEMBER:
                    if src.read(_SMALL_MEMBER) != FORMAT_LINE:
                        raise BackupError(_("{backup} is not an intake backup this version can read").format(backup=backup))
                elif member.name == SECRETS_MEMBER:
                    _write_secrets(data_dir, src.read(_SMALL_MEMBER), db_key)
                else:
                    with PendingFile(data_dir, 0o600) as pending:
                        shutil.copyfileobj(src, pending)
                        pending.commit(member.name, durable=True, renumber=False)
        except tarfile.TarError:
            raise BackupError(_("{backup} is damaged or cut short").format(backup=backup)) from None
    if DB_FILE not in seen:
        raise BackupError(_("{backup} is damaged or cut short (it holds no database)").format(backup=backup))


def _write_secrets(data_dir: Path, sealed: bytes, db_key: bytes) -> None:
    try:
        files = json.loads(_backup_box(db_key).decrypt(sealed))
    except CryptoError:
        raise BackupError(_("this database key does not open this backup (a different instance's key?)")) from None
    if not isinstance(files, dict) or sorted(files) != sorted(SECRET_FILES):
        raise BackupError(_("the backup's secrets are incomplete"))
    (data_dir / "onion").mkdir(mode=0o700)
    for name, data in files.items():
        write_new_file(data_dir / name, bytes.fromhex(data), 0o600)
