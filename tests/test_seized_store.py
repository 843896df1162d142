"""A copy of the data dir, taken after a realistic session and opened with the database key,
tells nothing finer than the day: no time in any table, no order of arrival, no deleted row in
a journal, no time in a file name or in the file times the app sets (SECURITY.md §2)."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import time
import zlib
from pathlib import Path

from keys.envelope import MAGIC
from keys.reply_bundle import seal_reply
from tests.test_export_import import reply_bundle

from intake.app import create_app
from intake.codename import generate_codename
from intake.store.connection import connect
from intake.store.slots_file import SLOT_BYTES
from intake.store.newsroom import Newsroom as NewsroomStore
from tests.fixtures_app import post_upload, start_as_new_source, upload_body
from tests.fixtures_newsroom import Newsroom, csrf_token, download_export, make_newsroom, sign_in

DAY = 86400
# SQLite numbers rows 1, 2, 3... in the order they were inserted, unless given a rowid.
# Journalists are numbered in the order an admin enrolled them (on the server's console,
# never from the onion).
ROWID_ALLOWED = {"journalists"}
RANDOM_ROWID_FLOOR = 2**32  # a random 63-bit rowid is below this once in 2**31
# Units a stored number could count time in: ns, us, ms, s, a TOTP step (30 s), minutes, windows, hours.
TIME_UNITS = (1e-9, 1e-6, 1e-3, 1, 30, 60, 300, 600, 900, 1800, 3600)
TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}|\d{4}-\d{2}-\d{2}[T ]\d")
NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _finer_than_a_day(value, now: float) -> bool:
    """Does this stored value read as a time within a few days of now, finer than the day?"""
    if isinstance(value, str):
        if TIME_OF_DAY.search(value):
            return True
        if not NUMBER.fullmatch(value):
            return False
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    for unit in TIME_UNITS:
        seconds = value * unit
        if abs(seconds - now) < 3 * DAY and seconds % DAY != 0:
            return True
    return False


@dataclasses.dataclass
class Session:
    """What the scenario knows, to look for it in the seized copy."""

    newsroom: Newsroom
    arrival: list[str]  # source ids in the order they arrived
    deleted_reply: bytes  # the envelope of a reply the source read and deleted


# What each source's browser and connection say about it (SECURITY.md §1: intake stores no IP
# address and no user agent): none of it may be found anywhere in the seized copy.
SOURCE_CLUES = {"REMOTE_ADDR": "203.0.113.77", "HTTP_USER_AGENT": "Mozilla/5.0 (canary-agent-7f3e)",
                "HTTP_X_FORWARDED_FOR": "198.51.100.23", "HTTP_X_REAL_IP": "192.0.2.41"}


def _source_client(app):
    client = app.test_client()
    client.environ_base.update(SOURCE_CLUES)
    return client


def _realistic_session(tmp_path: Path) -> Session:
    newsroom = make_newsroom(tmp_path)
    # Small chunks, so a file goes through the slots file in several pieces.
    settings = dataclasses.replace(newsroom.settings, upload_chunk_bytes=64 * 1024)
    source_app = create_app(settings, TESTING=True)
    journalists = newsroom.journalist_app

    # Source A: a new codename, a message and a file, then a second visit with a failed login first.
    first = _source_client(source_app)
    codename, page = start_as_new_source(first)
    body, content_type = upload_body(csrf_token(page), message="first tip",
                                     files=[("notes.pdf", os.urandom(600_000), "application/pdf")])
    assert post_upload(first, body, content_type).status_code == 303
    first.post("/logout", data={"csrf_token": csrf_token(first.get("/thanks").text)})
    # Source B: a new codename and a message; stays logged in.
    second = _source_client(source_app)
    _codename_b, page_b = start_as_new_source(second)
    body, content_type = upload_body(csrf_token(page_b), message="second tip")
    assert post_upload(second, body, content_type).status_code == 303
    with newsroom.store() as store:
        (id_a,) = {s.source_id for s in store.submissions() if s.kind == "file"}
        (id_b,) = {s.source_id for s in store.submissions()} - {id_a}
        (group_a,) = NewsroomStore(store).export_groups(only_new=False, source_ids=[id_a])
    reply_key_a = group_a.source.reply_public_key

    # Failed logins: a source with a codename that does not exist, a name nobody has, a wrong passphrase.
    stranger = _source_client(source_app)
    stranger.post("/login", data={"csrf_token": csrf_token(stranger.get("/login").text), "codename": generate_codename()})
    assert sign_in(journalists.test_client(), newsroom.bob, passphrase="wrong " * 7).status_code == 401
    unknown = journalists.test_client()
    unknown.post("/login", data={"csrf_token": csrf_token(unknown.get("/login").text), "name": "mallory",
                                 "passphrase": "guess", "code": "123456"})

    # Alice signs in with her TOTP code, downloads the new submissions and uploads a reply.
    alice = journalists.test_client()
    assert sign_in(alice, newsroom.alice).status_code == 303
    download_export(alice)
    reply = seal_reply("We read it. Delete this after reading.", reply_key_a)
    bundle = reply_bundle(newsroom, newsroom.alice.identity, [(id_a, reply)])
    uploaded = alice.post("/replies", data={"csrf_token": csrf_token(alice.get("/sources").text),
                                            "bundle": (io.BytesIO(bundle), "replies.bundle")},
                          content_type="multipart/form-data")
    assert ": 1 added" in uploaded.text

    # Source A comes back, reads the reply, deletes it and logs out.
    login = first.post("/login", data={"csrf_token": csrf_token(first.get("/login").text), "codename": codename})
    assert login.status_code == 303
    shown = first.get("/replies")
    (reply_id,) = re.findall(r'action="/replies/([0-9a-f]+)/delete"', shown.text)
    deleted = first.post(f"/replies/{reply_id}/delete", data={"csrf_token": csrf_token(shown.text)})
    assert deleted.status_code == 303
    first.post("/logout", data={"csrf_token": csrf_token(first.get("/submit").text)})
    return Session(newsroom, [id_a, id_b], reply)


def _file_time_problems(path: Path) -> list[str]:
    """Each file's times, read before its folder is listed (listing a folder sets its access time)."""
    info = path.lstat()
    problems = [f"{path.name}: {label} {time.strftime('%H:%M:%S', time.gmtime(value))} (not the day's start)"
                for label, value in (("mtime", info.st_mtime), ("atime", info.st_atime)) if value % DAY != 0]
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.iterdir()):
            problems += _file_time_problems(child)
    return problems


def _name_problems(data_dir: Path) -> list[str]:
    return [f"file name {path.name!r} holds a number that could be a time"
            for path in data_dir.rglob("*") if re.search(r"\d{6,}|\d{1,2}[-_:]\d{2}[-_:]\d{2}", path.name)]


WAL_HEADER, FRAME_HEADER = 32, 24


def _wal_commit_prefixes(wal: bytes) -> list[int]:
    """Lengths of the WAL up to each commit frame (a frame whose 'database size' field is not zero)."""
    page_size = int.from_bytes(wal[8:12], "big")
    frame = FRAME_HEADER + page_size
    ends = []
    for offset in range(WAL_HEADER, len(wal) - frame + 1, frame):
        if int.from_bytes(wal[offset + 4 : offset + 8], "big"):
            ends.append(offset + frame)
    return ends


def _journal_problems(copy: Path, key: bytes, deleted_reply: bytes, scratch: Path) -> list[str]:
    problems = []
    for journal in sorted(copy.glob("intake.db*")):
        if not journal.name.endswith(("-wal", "-journal")) or journal.stat().st_size == 0:
            continue
        problems.append(f"{journal.name} holds {journal.stat().st_size} bytes of page images")
        if journal.name != "intake.db-wal":
            continue
        wal = journal.read_bytes()
        prefixes = _wal_commit_prefixes(wal)
        problems.append(f"intake.db-wal holds {len(prefixes)} commits: each is a state of the database, in order")
        for length in prefixes:
            # The database as it was after one of the earlier commits, replayed by SQLite itself.
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            shutil.copy(copy / "intake.db", scratch / "intake.db")
            (scratch / "intake.db-wal").write_bytes(wal[:length])
            conn = connect(scratch / "intake.db", key, busy_timeout_ms=1000)
            try:
                found = conn.execute("SELECT count(*) FROM replies WHERE envelope = ?", (deleted_reply,)).fetchone()[0]
            finally:
                conn.close()
            if found:
                problems.append(f"the deleted reply comes back from the first {length} bytes of intake.db-wal")
                break
    return problems


def _table_problems(conn, label: str, now: float, deleted_reply: bytes, arrival: list[str]) -> list[str]:
    problems = []
    tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()
    for table, sql in tables:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        if "WITHOUT ROWID" not in sql.upper() and table not in ROWID_ALLOWED:
            rows = conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()
            rowids = [row[0] for row in rows]
            if any(rowid < RANDOM_ROWID_FLOOR for rowid in rowids) or any(b - a == 1 for a, b in zip(rowids, rowids[1:])):
                problems.append(f"{label}: {table} has rowids, numbered in order of arrival ({len(rows)} rows)")
            if "source_id" in columns or table == "sources":
                key = columns.index("source_id" if table != "sources" else "id") + 1
                order = list(dict.fromkeys(row[key] for row in rows if row[key] in arrival))
                if len(order) > 1 and order == arrival[: len(order)]:
                    problems.append(f"{label}: {table} in rowid order gives the sources' order of arrival")
        for row in conn.execute(f"SELECT * FROM {table}"):
            for column, value in zip(columns, row):
                if _finer_than_a_day(value, now):
                    problems.append(f"{label}: {table}.{column} = {value!r} reads as a time finer than the day")
                if isinstance(value, bytes) and deleted_reply[:64] in value:
                    problems.append(f"{label}: {table}.{column} still holds the deleted reply")
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                problems += [f"{label}: {table}.{column} holds the source's {clue}"
                             for clue, clue_value in SOURCE_CLUES.items() if clue_value in text]
    return problems


def test_a_seized_copy_of_the_data_dir_tells_nothing_finer_than_the_day(tmp_path: Path):
    session = _realistic_session(tmp_path)
    settings = session.newsroom.settings
    now = time.time()
    # The disk as seized: file times first (copying reads the files, which may change their atime).
    problems = _file_time_problems(settings.data_dir) + _name_problems(settings.data_dir)
    problems += [f"{path.name} holds the source's {clue} as written" for path in settings.data_dir.rglob("*") if path.is_file()
                 for clue, value in SOURCE_CLUES.items() if value.encode() in path.read_bytes()]
    copy = tmp_path / "seized"
    shutil.copytree(settings.data_dir, copy, copy_function=shutil.copy2)
    problems += _journal_problems(copy, settings.db_key, session.deleted_reply, tmp_path / "replayed")
    main = connect(copy / "intake.db", settings.db_key, busy_timeout_ms=1000)
    assert not (copy / "intake.db-blobs").exists()  # a store made since the slots file has none
    try:
        # The file went through the slots file: nothing there says where an envelope starts.
        assert main.execute("SELECT count(*) FROM slots WHERE submission_id IS NOT NULL").fetchone()[0] > 0
        slots_file = (copy / "intake.db-slots").read_bytes()
        assert MAGIC not in slots_file, "the slots file holds an envelope's header"
        # Every slot in use reads as random bytes: nothing in it compresses.
        used = b"".join(slots_file[slot * SLOT_BYTES : (slot + 1) * SLOT_BYTES]
                        for (slot,) in main.execute("SELECT slot FROM slots WHERE submission_id IS NOT NULL"))
        compressed, size = len(zlib.compress(used, 9)), len(used)
        assert compressed >= size, "a slot in use holds something other than random-looking bytes"
        problems += _table_problems(main, "intake.db", now, session.deleted_reply, session.arrival)
    finally:
        main.close()
    assert not problems, "the seized copy tells:\n" + "\n".join(problems)
