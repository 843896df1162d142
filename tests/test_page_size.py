"""Stores made with 16 KiB pages (before 2026-12) keep working and are rewritten with 4 KiB pages
at the next start (intake.store.page_size): every row kept, nothing done while another program
has the store open, the old file left unreadable, and a rewrite killed at any moment leaves a
whole store behind."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import sqlcipher3
from keys.envelope import Metadata, encrypt_bytes

from intake.backup import make_backup, restore_backup
from intake.config import Settings, load_settings
from intake.onion_keys import ensure_onion_keys
from intake.server import prepare_data_dir
from intake.setup import init_data_dir
from intake.store import Store
from intake.store import connection as connection_module
from intake.store.connection import CIPHER_PAGE_SIZE, LEGACY_PAGE_SIZE, MAIN_CACHE_KIB, open_keyed
from intake.store.errors import WrongDatabaseKeyError
from intake.store.newsroom import Newsroom
from intake.store import page_size as page_size_module
from intake.store.page_size import convert_page_size, copy_path
from tests.fixtures_store import FAST_KDF, page_to_damage
from tests.test_faults import free_bytes, small_filesystem

ROOT = Path(__file__).resolve().parents[1]


def opens_with(settings: Settings, page_size: int) -> bool:
    try:
        open_keyed(settings.db_path, settings.db_key, page_size=page_size, hmac_algorithm=None, cache_kib=MAIN_CACHE_KIB).close()
    except WrongDatabaseKeyError:
        return False
    return True


def rows(settings: Settings) -> dict[str, list]:
    """Every row of every table, and the schema, as SQLite reads them."""
    with Store.open(settings) as store:
        conn = store._conn
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        found = {table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr) for table in tables}  # noqa: S608
        found["schema"] = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        found["user_version"] = conn.execute("PRAGMA user_version").fetchall()
        found["auto_vacuum"] = conn.execute("PRAGMA auto_vacuum").fetchall()
        return found


def fill(settings: Settings, count: int, size: int = 3000) -> None:
    """Sources, messages (in the database), a large file (in the slots file), replies and sessions."""
    with Store.open(settings) as store:
        recipients = store.active_recipients()
        for number in range(count):
            source = store.create_source(os.urandom(32), os.urandom(32))
            envelope = encrypt_bytes(os.urandom(size), [r.public_key for r in recipients], Metadata("message", length=size))
            with store.start_submission(source.id, "message", recipients) as upload:
                upload.write(envelope)
                upload.commit()
            if number % 10 == 0:
                store.add_reply(source.id, recipients[0].journalist_id, os.urandom(500))
                store.save_session(os.urandom(32), source.id, os.urandom(80), int(time.time()) + 3600)
        large = encrypt_bytes(os.urandom(900_000), [r.public_key for r in recipients], Metadata("file", length=900_000))
        with store.start_submission(source.id, "file", recipients) as upload:
            upload.write(large)
            upload.commit()


@pytest.fixture
def old_store(tmp_path: Path, journalists, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A data dir made and filled by intake as it was before 4 KiB pages."""
    monkeypatch.setattr(connection_module, "CIPHER_PAGE_SIZE", LEGACY_PAGE_SIZE)
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, [public_file for _, public_file in journalists], key_in_data_dir=True)
    settings = load_settings(data_dir, **FAST_KDF)
    fill(settings, 30)
    monkeypatch.undo()
    assert opens_with(settings, LEGACY_PAGE_SIZE) and not opens_with(settings, CIPHER_PAGE_SIZE)
    return settings


def test_a_new_store_has_4_kib_pages(settings: Settings):
    assert CIPHER_PAGE_SIZE == 4096
    assert opens_with(settings, CIPHER_PAGE_SIZE) and not opens_with(settings, LEGACY_PAGE_SIZE)
    assert convert_page_size(settings.db_path, settings.db_key) == "current"


def test_an_old_store_works_and_is_rewritten_at_start_with_every_row(old_store: Settings):
    settings = old_store
    with Store.open(settings) as store:  # before the rewrite it still serves: read and written
        store.create_source(os.urandom(32), os.urandom(32))
    before = rows(settings)
    counts = prepare_data_dir(settings.data_dir)  # what `intake serve` runs first
    assert counts["submissions"] == 31
    assert opens_with(settings, CIPHER_PAGE_SIZE) and not opens_with(settings, LEGACY_PAGE_SIZE)
    assert rows(settings) == before
    assert before["auto_vacuum"] == [(2,)]  # incremental: freed pages still go back to the file system
    assert settings.db_path.stat().st_mode & 0o777 == 0o600
    assert not copy_path(settings.db_path).exists()
    with Store.open(settings) as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert Newsroom(store).integrity_problems() == []
        large = max(store.submissions(), key=lambda submission: submission.size)
        assert len(b"".join(store.submission_ciphertext(large.id))) == large.size > 900_000
    assert convert_page_size(settings.db_path, settings.db_key) == "current"


HOLD_OPEN = """
import os, sys
from intake.config import load_settings
from intake.store import Store
with Store.open(load_settings(sys.argv[1])) as store:
    store.counts()
    print("open", flush=True)
    sys.stdin.readline()  # the test says when to go on
    print(store.create_source(os.urandom(32), os.urandom(32)).id, flush=True)
"""


def test_a_store_another_process_has_open_is_left_as_it_is_until_a_later_start(old_store: Settings, caplog: pytest.LogCaptureFixture):
    settings = old_store
    other = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(settings.data_dir)], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert other.stdout.readline() == "open\n"
        assert convert_page_size(settings.db_path, settings.db_key) == "in use"
        prepare_data_dir(settings.data_dir)  # `intake serve` starts all the same, and says why the pages stay
        assert "another program has it open" in caplog.text
        assert opens_with(settings, LEGACY_PAGE_SIZE)
        source_id, _ = other.communicate("go on\n", timeout=60)  # the other program goes on working
        assert other.returncode == 0
    finally:
        other.kill()
    assert source_id.strip() in {row[0] for row in rows(settings)["sources"]}
    assert convert_page_size(settings.db_path, settings.db_key) == "converted"
    assert source_id.strip() in {row[0] for row in rows(settings)["sources"]}


OPEN_AND_COUNT = """
import sys
from intake.config import load_settings
from intake.store import Store
print("opening", flush=True)
with Store.open(load_settings(sys.argv[1])) as store:
    print(store.counts()["submissions"], flush=True)
"""


def test_a_process_that_opens_the_store_during_the_rewrite_waits_and_reads_the_new_file(old_store: Settings,
                                                                                           monkeypatch: pytest.MonkeyPatch):
    settings = old_store
    waiting = []
    check_copy = page_size_module._check_copy

    def check_then_let_another_process_open(*args) -> None:
        check_copy(*args)
        process = subprocess.Popen([sys.executable, "-c", OPEN_AND_COUNT, str(settings.data_dir)], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout.readline() == "opening\n"
        time.sleep(1.0)  # it opens the old file and waits for the rewrite's lock
        waiting.append(process)

    monkeypatch.setattr(page_size_module, "_check_copy", check_then_let_another_process_open)
    assert convert_page_size(settings.db_path, settings.db_key) == "converted"
    output, errors = waiting[0].communicate(timeout=60)
    assert waiting[0].returncode == 0, errors
    assert output.strip() == "31"


def test_the_old_file_is_zeroed_and_a_connection_that_had_it_open_cannot_use_it(old_store: Settings, tmp_path: Path):
    settings = old_store
    old_file = tmp_path / "old-inode"
    os.link(settings.db_path, old_file)  # keeps the old file's blocks in view after the rename
    late = sqlcipher3.connect(str(settings.db_path), isolation_level=None)  # opened, nothing read: holds no lock
    try:
        assert convert_page_size(settings.db_path, settings.db_key) == "converted"
        assert old_file.stat().st_size > 0 and old_file.read_bytes() == bytes(old_file.stat().st_size)
        late.execute(f"PRAGMA key = \"x'{settings.db_key.hex()}'\"")
        late.execute(f"PRAGMA cipher_page_size = {LEGACY_PAGE_SIZE}")
        with pytest.raises(sqlcipher3.DatabaseError, match="not a database"):
            late.execute("INSERT INTO sources (id) VALUES ('lost')")
    finally:
        late.close()
    assert opens_with(settings, CIPHER_PAGE_SIZE)


def test_a_wrong_key_is_refused_and_leaves_nothing(old_store: Settings):
    with pytest.raises(WrongDatabaseKeyError):
        convert_page_size(old_store.db_path, os.urandom(32))
    assert not copy_path(old_store.db_path).exists() and opens_with(old_store, LEGACY_PAGE_SIZE)


SECOND_START = """
import sys
from pathlib import Path
from intake.store.page_size import convert_page_size
print("starting", flush=True)
print(convert_page_size(Path(sys.argv[1]), bytes.fromhex(sys.argv[2])), flush=True)
"""


def test_a_second_start_during_the_rewrite_waits_and_finds_it_done(old_store: Settings, monkeypatch: pytest.MonkeyPatch):
    """Two starts at once (`intake restore` and systemd's, say): the second neither removes the
    first one's copy in progress nor takes the rewritten store for a wrong key."""
    settings = old_store
    before = rows(settings)
    second = []
    export = page_size_module._export

    def export_then_start_another(*args) -> None:
        export(*args)
        process = subprocess.Popen([sys.executable, "-c", SECOND_START, str(settings.db_path), settings.db_key.hex()],
                                   cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout.readline() == "starting\n"
        time.sleep(1.0)  # it opens the store and waits for this rewrite's lock
        second.append(process)

    monkeypatch.setattr(page_size_module, "_export", export_then_start_another)
    assert convert_page_size(settings.db_path, settings.db_key) == "converted"
    output, errors = second[0].communicate(timeout=60)
    assert (second[0].returncode, output.strip()) == (0, "current"), errors
    assert rows(settings) == before


def test_a_connection_opened_just_after_the_switch_out_of_wal_stops_the_rewrite(old_store: Settings,
                                                                                monkeypatch: pytest.MonkeyPatch):
    """Between leaving WAL mode and taking the lock, another connection may open the store and set
    WAL mode back: the rewrite must see it under the lock and leave the store alone."""
    settings = old_store
    hold = page_size_module._hold_exclusive_lock
    other = []

    def another_connection_first(conn) -> bool:
        other.append(Store.open(settings))  # sets WAL mode, as every intake connection does
        other[0].close()
        return hold(conn)

    monkeypatch.setattr(page_size_module, "_hold_exclusive_lock", another_connection_first)
    assert convert_page_size(settings.db_path, settings.db_key) == "in use"
    assert opens_with(settings, LEGACY_PAGE_SIZE)
    monkeypatch.undo()
    assert convert_page_size(settings.db_path, settings.db_key) == "converted"


CONVERT = """
import sys, time
from pathlib import Path
from intake.store import page_size
if sys.argv[3] == "stop-after-the-rename":
    def renamed_then_stop(fd):
        print("renamed", flush=True)
        time.sleep(60)
    page_size._overwrite = renamed_then_stop
print(page_size.convert_page_size(Path(sys.argv[1]), bytes.fromhex(sys.argv[2])), flush=True)
"""


def test_a_rewrite_killed_after_its_rename_leaves_the_new_store_whole(old_store: Settings):
    settings = old_store
    before = rows(settings)
    process = subprocess.Popen([sys.executable, "-c", CONVERT, str(settings.db_path), settings.db_key.hex(), "stop-after-the-rename"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "renamed\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert opens_with(settings, CIPHER_PAGE_SIZE) and rows(settings) == before
    assert convert_page_size(settings.db_path, settings.db_key) == "current"


@pytest.mark.slow
def test_a_rewrite_killed_at_any_moment_leaves_a_whole_store(old_store: Settings, tmp_path: Path):
    settings = old_store
    fill(settings, 1500)  # a few MiB: the rewrite takes long enough to be cut at different points
    before = rows(settings)
    trial = tmp_path / "trial"
    shutil.copytree(settings.data_dir, trial)
    started = time.monotonic()
    assert convert_page_size(trial / settings.db_path.name, settings.db_key) == "converted"
    duration = time.monotonic() - started
    outcomes = set()
    for tenth in range(13):  # from the copy's first page to past the end
        process = subprocess.Popen([sys.executable, "-c", CONVERT, str(settings.db_path), settings.db_key.hex(), "run"],
                                   cwd=ROOT, stdout=subprocess.PIPE, text=True)
        waited = time.monotonic()
        while process.poll() is None and not copy_path(settings.db_path).exists() and time.monotonic() - waited < 30:
            time.sleep(0.0005)
        time.sleep(duration * tenth / 10)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert rows(settings) == before, f"killed {tenth / 10:.1f} of a rewrite's time after the copy began"
        outcomes.add(opens_with(settings, CIPHER_PAGE_SIZE))
        if True in outcomes:
            break  # this run got through its rename: nothing left to cut
    assert False in outcomes  # some runs were cut before the rename
    assert convert_page_size(settings.db_path, settings.db_key) in ("current", "converted")
    assert opens_with(settings, CIPHER_PAGE_SIZE) and rows(settings) == before and not copy_path(settings.db_path).exists()


def test_a_backup_of_an_old_store_restores_with_4_kib_pages(old_store: Settings, tmp_path: Path):
    before = rows(old_store)
    backup = tmp_path / "intake.backup"
    key_file = tmp_path / "db.key"
    key_file.write_text(old_store.db_key.hex() + "\n")
    key_file.chmod(0o600)
    ensure_onion_keys(old_store.data_dir)  # as `intake init` makes them
    make_backup(old_store.data_dir, backup, db_key_file=key_file)
    restored = restore_backup(backup, tmp_path / "restored", db_key_file=key_file)
    restored = load_settings(restored.data_dir, db_key_file=key_file, **FAST_KDF)
    assert opens_with(restored, CIPHER_PAGE_SIZE)
    after = rows(restored)
    # A backup leaves out the sessions (they end with the machine) and renumbers the slots.
    for table in ("sources", "submissions", "submission_chunks", "replies", "journalists", "schema", "user_version"):
        assert after[table] == before[table], table


@pytest.mark.parametrize("seen_in_advance", [True, False], ids=["seen-in-advance", "found-while-copying"])
def test_a_disk_without_room_for_the_copy_keeps_the_old_pages_and_serves(tmp_path: Path, journalists, monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture, seen_in_advance: bool):
    with small_filesystem(tmp_path / "disk", "100m") as disk:
        monkeypatch.setattr(connection_module, "CIPHER_PAGE_SIZE", LEGACY_PAGE_SIZE)
        init_data_dir(disk / "data", [public_file for _, public_file in journalists], key_in_data_dir=True)
        settings = load_settings(disk / "data", **FAST_KDF)
        fill(settings, 400)  # about 2 MiB of rows
        monkeypatch.undo()
        before = rows(settings)
        with open(disk / "filler", "wb") as filler:  # leaves less room than a copy of the database needs
            filler.write(bytes(free_bytes(disk) - settings.db_path.stat().st_size // 2))
        if not seen_in_advance:  # the disk fills while the copy is written (another program, say)
            monkeypatch.setattr(page_size_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
        counts = prepare_data_dir(settings.data_dir)
        monkeypatch.undo()
        assert "needs free disk space of a tenth more than it takes, plus 64 MiB" in caplog.text
        assert counts["submissions"] == 401 and rows(settings) == before
        assert opens_with(settings, LEGACY_PAGE_SIZE) and not copy_path(settings.db_path).exists()
        (disk / "filler").unlink()
        prepare_data_dir(settings.data_dir)
        assert opens_with(settings, CIPHER_PAGE_SIZE) and rows(settings) == before


def test_an_old_store_with_a_damaged_page_is_served_as_before_and_its_backup_refused_in_one_line(
        old_store: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = old_store
    key_file = tmp_path / "db.key"
    key_file.write_text(settings.db_key.hex() + "\n")
    key_file.chmod(0o600)
    ensure_onion_keys(settings.data_dir)
    backup = tmp_path / "intake.backup"
    make_backup(settings.data_dir, backup, db_key_file=key_file)
    database = settings.db_path.read_bytes()
    offset = page_to_damage(database, settings.db_key, tmp_path / "scratch.db", read_at_opening=False, page_size=LEGACY_PAGE_SIZE)
    settings.db_path.write_bytes(database[:offset] + bytes([database[offset] ^ 0x01]) + database[offset + 1:])

    counts = prepare_data_dir(settings.data_dir)  # it served before 4 KiB pages; it still does
    assert counts["submissions"] == 31 and "Run `intake check`" in caplog.text
    assert opens_with(settings, LEGACY_PAGE_SIZE) and not copy_path(settings.db_path).exists()

    damaged = tmp_path / "damaged.backup"
    with tarfile.open(backup) as original, tarfile.open(damaged, "w") as out:
        for member in original.getmembers():
            content = original.extractfile(member).read()
            if member.name == "intake.db":
                offset = page_to_damage(content, settings.db_key, tmp_path / "scratch.db", read_at_opening=False,
                                        page_size=LEGACY_PAGE_SIZE)
                content = content[:offset] + bytes([content[offset] ^ 0x01]) + content[offset + 1:]
            out.addfile(member, io.BytesIO(content))
    refused = subprocess.run([str(Path(sys.executable).parent / "intake"), "restore", str(damaged), "--data",
                              str(tmp_path / "restored"), "--db-key-file", str(key_file)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "the restored store is damaged" in refused.stderr and not (tmp_path / "restored").exists()


def test_intake_status_says_which_pages_the_store_has(old_store: Settings):
    def status(*extra: str) -> str:
        done = subprocess.run([str(Path(sys.executable).parent / "intake"), *extra, "status", "--data", str(old_store.data_dir)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "LANG": "C.UTF-8", "LANGUAGE": ""})
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "database pages: 16 KiB, the older and slower size" in status()
    assert "размер страниц базы данных: 16 КиБ (прежний, запись с ним медленнее)" in status("--lang", "ru")
    prepare_data_dir(old_store.data_dir)
    assert "database pages: 4 KiB\n" in status()
