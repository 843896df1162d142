"""The counts on each source (migration 8: ready and never-exported submissions, replies and
unread replies, kept by triggers for the journalists' list) always equal a count of the rows,
through every way the store adds, changes and deletes them, and from a store migrated with
items already in it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.fixtures_store import PAST_ANY_HEADER
from intake.store import Store
from intake.store.connection import connect, write_transaction
from intake.store.migrations import MIGRATIONS, migrate
from intake.store.newsroom import Newsroom as NewsroomStore
from intake.store.store import today
from tests.fixtures_newsroom import make_newsroom

COUNTS = "SELECT id, ready_submissions, new_submissions, reply_count, unread_replies FROM sources ORDER BY id"
RECOUNT = (
    "SELECT id,"
    " (SELECT count(*) FROM submissions WHERE source_id = s.id AND state = 'ready'),"
    " (SELECT count(*) FROM submissions WHERE source_id = s.id AND state = 'ready' AND exported_day IS NULL),"
    " (SELECT count(*) FROM replies WHERE source_id = s.id),"
    " (SELECT count(*) FROM replies WHERE source_id = s.id AND read_day IS NULL)"
    " FROM sources s ORDER BY id"
)


def counts(store: Store) -> dict[str, tuple[int, int, int, int]]:
    """The kept counts by source id, after checking them against a count of the rows."""
    kept = store._read(COUNTS)
    assert kept == store._read(RECOUNT)
    return {row[0]: tuple(row[1:]) for row in kept}


def submit(store: Store, source_id: str) -> str:
    with store.start_submission(source_id, "message", store.active_recipients()) as upload:
        upload.write(b"ciphertext stand-in")
        return upload.commit()


def test_the_counts_follow_uploads_exports_replies_and_deletions(tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    with newsroom.store() as store:
        newsroom_store = NewsroomStore(store)
        a, b, c = (store.create_source(os.urandom(32), os.urandom(32)).id for _ in range(3))
        assert counts(store) == {a: (0, 0, 0, 0), b: (0, 0, 0, 0), c: (0, 0, 0, 0)}

        first_of_a = [submit(store, a) for _ in range(3)]
        submit(store, b)
        submit(store, c)
        # Past a chunk, an upload's row is written, pending (not counted) until it is complete.
        part = bytes(newsroom.settings.upload_chunk_bytes + PAST_ANY_HEADER)
        in_flight = store.start_submission(b, "file", store.active_recipients())
        in_flight.write(part)
        abandoned = store.start_submission(c, "file", store.active_recipients())
        abandoned.write(part)
        store._settle()  # each first chunk is stored beside its upload: the last one has ended now
        assert store._read("SELECT count(*) FROM submissions WHERE state = 'pending'") == [(2,)]
        assert counts(store) == {a: (3, 3, 0, 0), b: (1, 1, 0, 0), c: (1, 1, 0, 0)}
        abandoned.abort()
        assert counts(store) == {a: (3, 3, 0, 0), b: (1, 1, 0, 0), c: (1, 1, 0, 0)}
        in_flight.commit()
        assert counts(store)[b] == (2, 2, 0, 0)

        assert newsroom_store.mark_exported(first_of_a[:2]) == 2
        assert newsroom_store.mark_exported(first_of_a) == 1  # one already exported keeps its day: counted once
        assert counts(store)[a] == (3, 0, 0, 0)

        replies = [store.add_reply(a, None, os.urandom(64)).id for _ in range(3)]
        newsroom_store.import_replies("alice", [(b, os.urandom(64)), (b, os.urandom(64))])
        assert counts(store)[a] == (3, 0, 3, 3) and counts(store)[b] == (2, 2, 2, 2)
        store.mark_replies_read(a, replies[:2])
        store.mark_replies_read(a, replies[:1])  # read already: no change
        assert counts(store)[a] == (3, 0, 3, 1)
        assert store.delete_reply(a, replies[2])
        assert counts(store)[a] == (3, 0, 2, 0)

        assert newsroom_store.purge_exported_submissions(today()) == 3
        assert newsroom_store.purge_read_replies(today()) == 2
        assert counts(store)[a] == (0, 0, 0, 0)
        assert newsroom_store.delete_submissions_of(b) == 2
        assert counts(store)[b] == (0, 0, 2, 2)
        assert newsroom_store.delete_source(c)
        assert counts(store) == {a: (0, 0, 0, 0), b: (0, 0, 2, 2)}

        # A row given to another source (no code path does it today) is counted there.
        moved = submit(store, a)
        with write_transaction(store._conn) as conn:
            conn.execute("UPDATE submissions SET source_id = ? WHERE id = ?", (b, moved))
            conn.execute("UPDATE replies SET source_id = ? WHERE source_id = ?", (a, b))
        assert counts(store) == {a: (0, 0, 2, 2), b: (1, 1, 0, 0)}
        with write_transaction(store._conn) as conn:
            conn.execute("UPDATE submissions SET source_id = ? WHERE id = ?", (a, moved))
            conn.execute("UPDATE replies SET source_id = ? WHERE source_id = ?", (b, a))
        newsroom_store.delete_submissions_of(a)

        # What the journalists' list shows is these counts.
        shown = {s.id: (s.submissions, s.new_submissions, s.replies, s.unread_replies) for s in newsroom_store.source_overview()}
        assert shown == {a: (0, 0, 0, 0), b: (0, 0, 2, 2)}  # a is listed still: it has submitted
        assert newsroom_store.source_overview_of(b).replies == 2

        # A source that never sent anything is listed while it has a reply waiting, and only then.
        d = store.create_source(os.urandom(32), os.urandom(32)).id
        assert d not in {s.id for s in newsroom_store.source_page(0, 50)}
        reply = store.add_reply(d, None, os.urandom(64)).id
        assert d in {s.id for s in newsroom_store.source_page(0, 50)}
        store.delete_reply(d, reply)
        assert d not in {s.id for s in newsroom_store.source_page(0, 50)}


def test_migration_8_counts_what_a_store_already_holds(tmp_path: Path):
    conn = connect(tmp_path / "intake.db", os.urandom(32), busy_timeout_ms=1000, create=True)
    migrate(conn, MIGRATIONS[:7])
    conn.execute("INSERT INTO journalists (id, name, public_key, verify_key, fingerprint, added_day) VALUES (1, 'alice', x'01', x'02', 'FP', '2026-11-01')")
    for source_id, designation in (("src-a", "brave otter"), ("src-b", "calm heron"), ("src-c", "quiet hill")):
        conn.execute("INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day, has_submitted)"
                     " VALUES (?, ?, x'aa', ?, '2026-11-01', '2026-11-02', 1)", (source_id, os.urandom(8), designation))
    for n, (source_id, state, exported) in enumerate([("src-a", "ready", None), ("src-a", "ready", "2026-11-02"),
                                                      ("src-a", "pending", None), ("src-b", "ready", None)], 1):
        conn.execute("INSERT INTO submissions (id, source_id, kind, received_day, state, exported_day, position)"
                     " VALUES (?, ?, 'message', '2026-11-01', ?, ?, ?)", (f"s{n}", source_id, state, exported, n))
    for n, (source_id, read) in enumerate([("src-a", "2026-11-02"), ("src-c", None), ("src-c", None)], 1):
        conn.execute("INSERT INTO replies (id, source_id, journalist_id, envelope, created_day, read_day, digest, position)"
                     " VALUES (?, ?, 1, x'e1', '2026-11-01', ?, ?, ?)", (f"r{n}", source_id, read, os.urandom(8), n))
    assert migrate(conn, MIGRATIONS[:8]) == 8
    assert conn.execute(COUNTS).fetchall() == [("src-a", 2, 1, 1, 0), ("src-b", 1, 1, 0, 0), ("src-c", 0, 0, 2, 2)]
    assert conn.execute(COUNTS).fetchall() == conn.execute(RECOUNT).fetchall()
    conn.close()
