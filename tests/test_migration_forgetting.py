"""Migration 5 on a data dir from before it: every submission, reply and chunk is kept, a
source's items keep their order among themselves, and what told times or the order of
arrival (rowids, exact session expiries, failed-login times, the last TOTP step) is gone."""

from __future__ import annotations

import os
from pathlib import Path

from intake.store.connection import connect, connect_blobs
from intake.store.migrations import BLOBS_MIGRATIONS, LATEST_VERSION, MIGRATIONS, migrate

OLD_ROWS = [
    "INSERT INTO journalists (id, name, public_key, verify_key, fingerprint, added_day, totp_last_step)"
    " VALUES (1, 'alice', x'01', x'02', 'FP', '2025-01-01', 59871232)",
    "INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day, has_submitted)"
    " VALUES ('src-a', x'0a', x'aa', 'brave otter', '2025-01-01', '2025-01-02', 1)",
    "INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day, has_submitted)"
    " VALUES ('src-b', x'0b', x'bb', 'calm heron', '2025-01-01', '2025-01-01', 1)",
    # Arrival: a's first, b's, then a's second (rowids 1, 2, 3).
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state) VALUES ('z-a-first', 'src-a', 'message', '2025-01-01', 10, 'ready')",
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state) VALUES ('m-b-only', 'src-b', 'message', '2025-01-01', 10, 'ready')",
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state) VALUES ('a-a-second', 'src-a', 'file', '2025-01-02', 10, 'ready')",
    "INSERT INTO submission_recipients (submission_id, journalist_id) VALUES ('z-a-first', 1), ('m-b-only', 1), ('a-a-second', 1)",
    "INSERT INTO submission_chunks (submission_id, seq, data) VALUES ('z-a-first', 0, x'c0'), ('m-b-only', 0, x'c1'), ('a-a-second', 0, x'c2')",
    "INSERT INTO replies (id, source_id, journalist_id, envelope, created_day, digest) VALUES ('r-later-id', 'src-a', 1, x'e1', '2025-01-02', x'd1')",
    "INSERT INTO replies (id, source_id, journalist_id, envelope, created_day, digest) VALUES ('a-earlier-id', 'src-a', 1, x'e2', '2025-01-02', x'd2')",
    "INSERT INTO source_sessions (id, source_id, sealed_secret, expires_at) VALUES (x'51', 'src-a', x'00', 1796144188)",
    "INSERT INTO journalist_sessions (id, journalist_id, expires_at) VALUES (x'52', 1, 1796138788)",
    "INSERT INTO failed_logins (journalist_id, failed_at, name_key) VALUES (1, 1796136988, x'4e')",
]


def test_migration_5_keeps_every_item_in_its_sources_order_and_forgets_times_and_arrival(tmp_path: Path):
    conn = connect(tmp_path / "intake.db", os.urandom(32), busy_timeout_ms=1000, create=True)
    migrate(conn, MIGRATIONS[:4])
    for statement in OLD_ROWS:
        conn.execute(statement)
    assert migrate(conn, MIGRATIONS[:5]) == 5 < LATEST_VERSION
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # on again after the rebuild

    order = conn.execute("SELECT source_id, id, position FROM submissions ORDER BY source_id, position").fetchall()
    assert order == [("src-a", "z-a-first", 1), ("src-a", "a-a-second", 2), ("src-b", "m-b-only", 1)]
    replies = conn.execute("SELECT id, position, digest FROM replies ORDER BY position").fetchall()
    assert replies == [("r-later-id", 1, b"\xd1"), ("a-earlier-id", 2, b"\xd2")]
    # Rebuilding the parents deleted none of their children.
    assert conn.execute("SELECT count(*) FROM submission_recipients").fetchone()[0] == 3
    assert sorted(conn.execute("SELECT submission_id, data FROM submission_chunks")) == [
        ("a-a-second", b"\xc2"), ("m-b-only", b"\xc1"), ("z-a-first", b"\xc0")]
    assert all(rowid >= 2**32 for (rowid,) in conn.execute("SELECT rowid FROM submission_chunks"))
    assert conn.execute("SELECT has_submitted FROM sources ORDER BY id").fetchall() == [(1,), (1,)]

    # What held times is gone: open sessions end, failures and the last TOTP step are forgotten.
    for table in ("source_sessions", "journalist_sessions", "failed_logins"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    columns = [row[1] for row in conn.execute("PRAGMA table_info(journalists)")]
    assert "totp_last_step" not in columns and conn.execute("SELECT totp_used FROM journalists").fetchone() == (None,)
    with_rowid = [name for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                  if "WITHOUT ROWID" not in sql.upper()]
    assert sorted(with_rowid) == ["journalists", "submission_chunks"]

    # The trigger survived the rebuild: a new source's first upload marks it.
    conn.execute("INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day)"
                 " VALUES ('src-c', x'0c', x'cc', 'quiet hill', '2025-01-03', '2025-01-03')")
    conn.execute("INSERT INTO submissions (id, source_id, kind, received_day, state, position) VALUES ('c', 'src-c', 'message', '2025-01-03', 'pending', 1)")
    conn.execute("UPDATE submissions SET state = 'ready' WHERE id = 'c'")
    assert conn.execute("SELECT has_submitted FROM sources WHERE id = 'src-c'").fetchone() == (1,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == [] and conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_an_old_blobs_database_gets_random_rowids(tmp_path: Path):
    key = os.urandom(32)
    blobs = connect_blobs(tmp_path / "intake.db-blobs", key, busy_timeout_ms=1000)
    migrate(blobs, BLOBS_MIGRATIONS[:1])
    blobs.executemany("INSERT INTO chunks (submission_id, seq, data) VALUES (?, ?, ?)",
                      [(f"upload-{n}", 0, bytes([n]) * 100) for n in range(20)])
    assert migrate(blobs, BLOBS_MIGRATIONS) == 2
    rows = blobs.execute("SELECT rowid, submission_id, data FROM chunks ORDER BY rowid").fetchall()
    assert sorted((name, data) for _, name, data in rows) == sorted((f"upload-{n}", bytes([n]) * 100) for n in range(20))
    assert all(rowid >= 2**32 for rowid, *_ in rows)
    assert [name for _, name, _ in rows] != [f"upload-{n}" for n in range(20)]  # no longer in the order they came
    blobs.close()
