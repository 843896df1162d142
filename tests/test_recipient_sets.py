"""Who a submission is sealed to, kept as shared recipient sets (migration 7).

Before, every submission had a row per journalist (30 journalists: 30 rows written in each
publishing transaction). Now submissions sealed to the same journalists share one set.
"""

from __future__ import annotations

import os
from pathlib import Path

from intake.store import Store
from intake.store.connection import connect, write_transaction
from intake.store.migrations import LATEST_VERSION, MIGRATIONS, migrate
from intake.store.newsroom import Newsroom

V6_ROWS = [
    "INSERT INTO journalists (id, name, public_key, verify_key, fingerprint, added_day) VALUES (1, 'alice', x'01', x'02', 'FP1', '2025-01-01')",
    "INSERT INTO journalists (id, name, public_key, verify_key, fingerprint, added_day) VALUES (2, 'boris', x'03', x'04', 'FP2', '2025-01-01')",
    "INSERT INTO journalists (id, name, public_key, verify_key, fingerprint, added_day) VALUES (3, 'vera', x'05', x'06', 'FP3', '2025-01-01')",
    "INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day, has_submitted)"
    " VALUES ('src-a', x'0a', x'aa', 'brave otter', '2025-01-01', '2025-01-02', 1)",
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state, position)"
    " VALUES ('s-alice-boris', 'src-a', 'message', '2025-01-01', 10, 'ready', 1)",
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state, position)"
    " VALUES ('s-boris-alice', 'src-a', 'file', '2025-01-01', 10, 'ready', 2)",
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state, position)"
    " VALUES ('s-vera', 'src-a', 'message', '2025-01-02', 10, 'ready', 3)",
    "INSERT INTO submissions (id, source_id, kind, received_day, size, state, position)"
    " VALUES ('s-all', 'src-a', 'message', '2025-01-02', 10, 'ready', 4)",
    # Inserted out of order on purpose: a set is the same whatever order its rows came in.
    "INSERT INTO submission_recipients (submission_id, journalist_id) VALUES"
    " ('s-alice-boris', 1), ('s-alice-boris', 2), ('s-boris-alice', 2), ('s-boris-alice', 1),"
    " ('s-vera', 3), ('s-all', 3), ('s-all', 1), ('s-all', 2)",
    "INSERT INTO submission_chunks (submission_id, seq, data) VALUES"
    " ('s-alice-boris', 0, x'c0'), ('s-boris-alice', 0, x'c1'), ('s-vera', 0, x'c2'), ('s-all', 0, x'c3')",
]


def test_migration_7_keeps_who_each_submission_is_sealed_to_in_shared_sets(tmp_path: Path):
    conn = connect(tmp_path / "intake.db", os.urandom(32), busy_timeout_ms=1000, create=True)
    migrate(conn, MIGRATIONS[:6])
    for statement in V6_ROWS:
        conn.execute(statement)
    assert migrate(conn, MIGRATIONS[:7]) == 7 <= LATEST_VERSION

    sets = [members for (members,) in conn.execute("SELECT members FROM recipient_sets")]
    assert sorted(sets) == ["[1,2,3]", "[1,2]", "[3]"]  # three teams for four submissions
    sealed_to = dict(conn.execute(
        "SELECT s.id, sets.members FROM submissions AS s JOIN recipient_sets AS sets ON sets.members = s.sealed_to"))
    assert sealed_to == {"s-alice-boris": "[1,2]", "s-boris-alice": "[1,2]", "s-vera": "[3]", "s-all": "[1,2,3]"}
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "submission_recipients" not in tables
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT count(*) FROM submission_chunks").fetchone()[0] == 4  # nothing else touched
    conn.close()


def test_thirty_journalists_cost_one_set_not_thirty_rows_a_submission(store: Store, source, recipients):
    """Every submission sealed to the same journalists shares one set; the export still names
    every journalist each item is sealed to."""
    with write_transaction(store._conn) as conn:
        conn.executemany(
            "INSERT INTO journalists (name, public_key, verify_key, fingerprint, added_day) VALUES (?, ?, ?, ?, '2025-01-01')",
            [(f"journalist-{n:02}", os.urandom(32), os.urandom(32), f"FP{n}") for n in range(30 - len(recipients))])
    thirty = store.active_recipients()
    assert len(thirty) == 30
    for _ in range(5):
        with store.start_submission(source.id, "message", thirty) as upload:
            upload.write(os.urandom(300))
            upload.commit()
    with store.start_submission(source.id, "message", thirty[:1]) as upload:
        upload.write(os.urandom(300))
        upload.commit()

    assert store._conn.execute("SELECT count(*) FROM recipient_sets").fetchone()[0] == 2
    groups = Newsroom(store).export_groups(only_new=True)
    names = [entry.recipients for group in groups for entry in group.entries]
    assert names == [sorted(r.name for r in thirty)] * 5 + [[thirty[0].name]]
