"""Forward-only schema migrations. Append new ones; never edit one that has shipped.

The database's schema version is SQLite's `user_version` (inside the encrypted
header). Migration N takes the schema from version N-1 to N.

Dates are days ('YYYY-MM-DD', UTC) and nothing records a client's address or
browser. Since migration 5 nothing records a time finer than the day or an order
of arrival (see MIGRATION_5 and SECURITY.md section 2).
"""

from __future__ import annotations

import sqlcipher3

from intake.store.connection import Connection, write_transaction
from intake.store.errors import SchemaTooNewError, StoreError
from intake.told import told

MIGRATION_1 = """
CREATE TABLE journalists (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key BLOB NOT NULL UNIQUE,     -- X25519, submissions are encrypted to it
    verify_key BLOB NOT NULL,            -- Ed25519, checks reply bundles
    fingerprint TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    added_day TEXT NOT NULL,
    removed_day TEXT
);
CREATE TABLE sources (
    id TEXT PRIMARY KEY,                 -- random, not derived from the codename
    lookup_id BLOB NOT NULL UNIQUE,      -- from the codename by Argon2id + BLAKE2b
    reply_public_key BLOB NOT NULL,
    designation TEXT NOT NULL UNIQUE,    -- "adjective noun", how journalists name the source
    created_day TEXT NOT NULL,
    last_active_day TEXT NOT NULL
);
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    received_day TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,     -- ciphertext bytes (envelopes are padded)
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready')),
    writer TEXT,                         -- the process writing a pending upload (so recovery spots orphans); NULL once ready
    exported_day TEXT
);
CREATE INDEX submissions_by_source ON submissions(source_id, state);
CREATE INDEX submissions_by_state ON submissions(state, exported_day);
CREATE TABLE submission_recipients (
    submission_id TEXT NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    journalist_id INTEGER NOT NULL REFERENCES journalists(id),
    PRIMARY KEY (submission_id, journalist_id)
) WITHOUT ROWID;
CREATE TABLE submission_chunks (
    submission_id TEXT NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (submission_id, seq)
);
CREATE TABLE replies (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    journalist_id INTEGER REFERENCES journalists(id),
    envelope BLOB NOT NULL,              -- sealed to the source's reply key on the air-gapped laptop
    created_day TEXT NOT NULL,
    read_day TEXT
);
CREATE INDEX replies_by_source ON replies(source_id);
CREATE TABLE source_sessions (
    id BLOB PRIMARY KEY,                 -- hash of the cookie token, never the token
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    sealed_secret BLOB NOT NULL,         -- the source's reply secret key, encrypted under the token
    expires_at INTEGER NOT NULL          -- unix seconds; the only precise time kept, deleted with the row
);
CREATE INDEX source_sessions_by_expiry ON source_sessions(expires_at);
"""

# Journalist logins, the journalist onion's client authorisation, reply import and retention.
# failed_logins.failed_at is a precise time about journalists (never sources), kept only
# for the throttle window and deleted with its row.
MIGRATION_2 = """
ALTER TABLE journalists ADD COLUMN login_hash BLOB;               -- Argon2id string (nacl.pwhash) of the login passphrase
ALTER TABLE journalists ADD COLUMN totp_secret TEXT;              -- base32, the second factor
ALTER TABLE journalists ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;  -- a code is accepted only for a later time step
ALTER TABLE journalists ADD COLUMN client_auth_key TEXT;          -- base32 x25519 public key for the journalist onion
CREATE TABLE failed_logins (
    journalist_id INTEGER REFERENCES journalists(id) ON DELETE CASCADE,  -- NULL: an unknown name
    failed_at INTEGER NOT NULL                                            -- unix seconds
);
CREATE INDEX failed_logins_by_time ON failed_logins(failed_at);
CREATE TABLE journalist_sessions (
    id BLOB PRIMARY KEY,                 -- hash of the cookie token, never the token
    journalist_id INTEGER NOT NULL REFERENCES journalists(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL          -- unix seconds; the row goes at expiry or logout
);
CREATE INDEX journalist_sessions_by_expiry ON journalist_sessions(expires_at);
ALTER TABLE replies ADD COLUMN digest BLOB;                       -- BLAKE2b of the envelope: importing a bundle twice adds nothing
CREATE UNIQUE INDEX replies_by_digest ON replies(digest);
CREATE INDEX replies_by_read_day ON replies(read_day);
ALTER TABLE sources ADD COLUMN has_submitted INTEGER NOT NULL DEFAULT 0;  -- retention keeps sources that ever sent something
UPDATE sources SET has_submitted = 1 WHERE id IN (SELECT source_id FROM submissions WHERE state = 'ready');
CREATE TRIGGER sources_mark_submitted AFTER UPDATE OF state ON submissions
WHEN NEW.state = 'ready'
BEGIN
    UPDATE sources SET has_submitted = 1 WHERE id = NEW.source_id AND has_submitted = 0;
END;
"""

# Replay protection that outlives the replies: replies.digest goes with its row (the
# source deletes the reply, retention purges it), and `intake-keys reply --out FILE`
# appends to FILE, so every upload carries the earlier replies again. This keeps the
# digest of every reply envelope ever imported: no content, no source, no day, and no
# rowid (the rows are ordered by digest, so they do not even say which came first).
MIGRATION_3 = """
CREATE TABLE imported_reply_digests (
    digest BLOB PRIMARY KEY              -- BLAKE2b-256 of the envelope, as in replies.digest
) WITHOUT ROWID;
INSERT OR IGNORE INTO imported_reply_digests (digest) SELECT digest FROM replies WHERE digest IS NOT NULL;
"""

# The login throttle counts failures per name tried, whether or not an account has that
# name (throttling only real accounts would tell which names exist). The name is kept
# only as a keyed BLAKE2b (key: the instance secret), never as text.
MIGRATION_4 = """
ALTER TABLE failed_logins ADD COLUMN name_key BLOB;               -- keyed BLAKE2b of the name tried
"""

# Nothing finer than the day, and no order of arrival (issue 9):
# - Tables of small rows become WITHOUT ROWID, keyed by their random ids: a rowid
#   numbered the rows in the order they came. The two tables of ciphertext chunks
#   (rows up to 256 KiB and 4 MiB, too large for a WITHOUT ROWID b-tree) keep rowids,
#   drawn at random from now on, and their old rowids are replaced by random ones.
# - A source's submissions and replies keep their order among themselves (journalists
#   read them as a conversation) in `position`, 1, 2, ... per source: it orders nothing
#   across sources.
# - Sessions keep the day they surely ended by (`expires_by_day`, from the login day
#   and the session length, never the time of day); the exact expiry is sealed under a
#   key derived from the cookie's token, which the server never stores. The migration
#   ends every open session (their rows held the exact expiry).
# - The TOTP step last used and the times of failed logins are sealed under a key that
#   lives only in the running server's memory (intake.memory_key): without it they
#   are noise, and a restart forgets them.
# A table is rebuilt as the SQLite documentation says (create, copy, drop, rename);
# migrate() turns foreign keys off around it, so dropping a parent deletes no child.
MIGRATION_5 = """
DROP TRIGGER sources_mark_submitted;
CREATE TABLE sources_new (
    id TEXT PRIMARY KEY,                 -- random, not derived from the codename
    lookup_id BLOB NOT NULL UNIQUE,      -- from the codename by Argon2id + BLAKE2b
    reply_public_key BLOB NOT NULL,
    designation TEXT NOT NULL UNIQUE,    -- "adjective noun", how journalists name the source
    created_day TEXT NOT NULL,
    last_active_day TEXT NOT NULL,
    has_submitted INTEGER NOT NULL DEFAULT 0  -- retention keeps sources that ever sent something
) WITHOUT ROWID;
INSERT INTO sources_new (id, lookup_id, reply_public_key, designation, created_day, last_active_day, has_submitted)
    SELECT id, lookup_id, reply_public_key, designation, created_day, last_active_day, has_submitted FROM sources;
DROP TABLE sources;
ALTER TABLE sources_new RENAME TO sources;
CREATE TABLE submissions_new (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    received_day TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,     -- ciphertext bytes (envelopes are padded)
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready')),
    writer TEXT,                         -- the process writing a pending upload (so recovery spots orphans); NULL once ready
    exported_day TEXT,
    position INTEGER NOT NULL            -- 1, 2, ... among this source's submissions, in the order it sent them
) WITHOUT ROWID;
INSERT INTO submissions_new (id, source_id, kind, received_day, size, state, writer, exported_day, position)
    SELECT id, source_id, kind, received_day, size, state, writer, exported_day,
           (SELECT count(*) FROM submissions AS earlier WHERE earlier.source_id = s.source_id AND earlier.rowid <= s.rowid)
    FROM submissions AS s;
DROP TABLE submissions;
ALTER TABLE submissions_new RENAME TO submissions;
CREATE INDEX submissions_by_source ON submissions(source_id, state);
CREATE INDEX submissions_by_state ON submissions(state, exported_day);
CREATE UNIQUE INDEX submissions_in_order ON submissions(source_id, position);
CREATE TRIGGER sources_mark_submitted AFTER UPDATE OF state ON submissions
WHEN NEW.state = 'ready'
BEGIN
    UPDATE sources SET has_submitted = 1 WHERE id = NEW.source_id AND has_submitted = 0;
END;
UPDATE submission_chunks SET rowid = random() & 9223372036854775807;
CREATE TABLE replies_new (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    journalist_id INTEGER REFERENCES journalists(id),
    envelope BLOB NOT NULL,              -- sealed to the source's reply key on the air-gapped laptop
    created_day TEXT NOT NULL,
    read_day TEXT,
    digest BLOB,                         -- BLAKE2b of the envelope: importing a bundle twice adds nothing
    position INTEGER NOT NULL            -- 1, 2, ... among this source's replies, in the order they were imported
) WITHOUT ROWID;
INSERT INTO replies_new (id, source_id, journalist_id, envelope, created_day, read_day, digest, position)
    SELECT id, source_id, journalist_id, envelope, created_day, read_day, digest,
           (SELECT count(*) FROM replies AS earlier WHERE earlier.source_id = r.source_id AND earlier.rowid <= r.rowid)
    FROM replies AS r;
DROP TABLE replies;
ALTER TABLE replies_new RENAME TO replies;
CREATE UNIQUE INDEX replies_in_order ON replies(source_id, position);
CREATE UNIQUE INDEX replies_by_digest ON replies(digest);
CREATE INDEX replies_by_read_day ON replies(read_day);
DROP TABLE source_sessions;
CREATE TABLE source_sessions (
    id BLOB PRIMARY KEY,                 -- hash of the cookie token, never the token
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    sealed_secret BLOB NOT NULL,         -- exact expiry and the source's reply secret key, sealed under the token
    expires_by_day TEXT NOT NULL         -- the session has surely ended after this day; retention deletes the row then
) WITHOUT ROWID;
CREATE INDEX source_sessions_by_day ON source_sessions(expires_by_day);
DROP TABLE journalist_sessions;
CREATE TABLE journalist_sessions (
    id BLOB PRIMARY KEY,                 -- hash of the cookie token, never the token
    journalist_id INTEGER NOT NULL REFERENCES journalists(id) ON DELETE CASCADE,
    sealed_expiry BLOB NOT NULL,         -- the exact expiry, sealed under the token
    expires_by_day TEXT NOT NULL         -- as in source_sessions
) WITHOUT ROWID;
CREATE INDEX journalist_sessions_by_day ON journalist_sessions(expires_by_day);
DROP TABLE failed_logins;
CREATE TABLE failed_logins (
    id BLOB PRIMARY KEY,                 -- random
    journalist_id INTEGER REFERENCES journalists(id) ON DELETE CASCADE,  -- NULL: an unknown name
    name_key BLOB NOT NULL,              -- keyed BLAKE2b of the name tried
    sealed_time BLOB NOT NULL            -- when, sealed under the server's memory key (intake.memory_key)
) WITHOUT ROWID;
ALTER TABLE journalists DROP COLUMN totp_last_step;
ALTER TABLE journalists ADD COLUMN totp_used BLOB;                -- the last TOTP step used, sealed under the memory key
"""

# The journalists' list of sources is paginated in SQL, most recently active first:
# with this index a page is read from the index's start, whatever the number of sources
# (it holds only what the columns hold already).
MIGRATION_6 = """
CREATE INDEX sources_by_activity ON sources(last_active_day DESC, designation);
"""

# Who a submission is sealed to was a row per journalist per submission: with 30 journalists,
# 30 rows (and their b-tree pages) written in every publishing transaction, the heaviest
# per-journalist cost after sealing itself. Submissions sealed to the same journalists now
# share one set, written once; a submission names its set. Keyed by its members, not by a
# number: numbers given in turn would tell the order in which the sets were first used.
MIGRATION_7 = """
CREATE TABLE recipient_sets (
    members TEXT PRIMARY KEY CHECK (json_valid(members))  -- journalists' ids, a JSON array in ascending order
) WITHOUT ROWID;
ALTER TABLE submissions ADD COLUMN sealed_to TEXT REFERENCES recipient_sets(members);
UPDATE submissions SET sealed_to = (
    SELECT json_group_array(journalist_id ORDER BY journalist_id)
    FROM submission_recipients WHERE submission_id = submissions.id
) WHERE EXISTS (SELECT 1 FROM submission_recipients WHERE submission_id = submissions.id);
INSERT INTO recipient_sets (members) SELECT DISTINCT sealed_to FROM submissions WHERE sealed_to IS NOT NULL;
DROP TABLE submission_recipients;
"""

# Each source carries the counts the journalists' list shows, kept by triggers on every
# change to its submissions and replies, and sources_by_activity holds them, for the listed
# sources only (a partial index: codenames that never sent anything are not in it): a page of
# the list is read from a few neighbouring pages of that one index. Counting in the page's query
# looked up every submission of every listed source in the submissions table (for its
# exported_day): past SQLite's 2 MiB page cache, each page load read and decrypted ~550 pages
# at 100,000 submissions (see docs/PERFORMANCE.md, "/sources at 100,000, explained").
MIGRATION_8 = """
ALTER TABLE sources ADD COLUMN ready_submissions INTEGER NOT NULL DEFAULT 0;  -- state 'ready'
ALTER TABLE sources ADD COLUMN new_submissions INTEGER NOT NULL DEFAULT 0;    -- ready, never exported
ALTER TABLE sources ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sources ADD COLUMN unread_replies INTEGER NOT NULL DEFAULT 0;
-- One pass over the submissions table in its own order (looked up source by source, each row
-- was a random read: the first open of a 100,000 store took 17.5 s instead of 11.4).
UPDATE sources SET ready_submissions = counted.ready, new_submissions = counted.new
FROM (SELECT source_id, count(*) AS ready, sum(exported_day IS NULL) AS new
      FROM submissions NOT INDEXED WHERE state = 'ready' GROUP BY source_id) AS counted
WHERE counted.source_id = sources.id;
UPDATE sources SET
    reply_count = (SELECT count(*) FROM replies WHERE source_id = sources.id),
    unread_replies = (SELECT count(*) FROM replies WHERE source_id = sources.id AND read_day IS NULL);
CREATE TRIGGER submissions_count_inserted AFTER INSERT ON submissions
WHEN NEW.state = 'ready'
BEGIN
    UPDATE sources SET ready_submissions = ready_submissions + 1, new_submissions = new_submissions + (NEW.exported_day IS NULL)
    WHERE id = NEW.source_id;
END;
CREATE TRIGGER submissions_count_deleted AFTER DELETE ON submissions
WHEN OLD.state = 'ready'
BEGIN
    UPDATE sources SET ready_submissions = ready_submissions - 1, new_submissions = new_submissions - (OLD.exported_day IS NULL)
    WHERE id = OLD.source_id;
END;
CREATE TRIGGER submissions_count_updated AFTER UPDATE OF state, exported_day ON submissions
WHEN OLD.source_id IS NEW.source_id AND ((OLD.state = 'ready') IS NOT (NEW.state = 'ready')
                                         OR (OLD.exported_day IS NULL) IS NOT (NEW.exported_day IS NULL))
BEGIN
    UPDATE sources SET ready_submissions = ready_submissions + (NEW.state = 'ready') - (OLD.state = 'ready'),
                       new_submissions = new_submissions + (NEW.state = 'ready' AND NEW.exported_day IS NULL)
                                                         - (OLD.state = 'ready' AND OLD.exported_day IS NULL)
    WHERE id = NEW.source_id;
END;
CREATE TRIGGER submissions_count_moved AFTER UPDATE OF source_id ON submissions
WHEN OLD.source_id IS NOT NEW.source_id
BEGIN
    UPDATE sources SET ready_submissions = ready_submissions - (OLD.state = 'ready'),
                       new_submissions = new_submissions - (OLD.state = 'ready' AND OLD.exported_day IS NULL)
    WHERE id = OLD.source_id;
    UPDATE sources SET ready_submissions = ready_submissions + (NEW.state = 'ready'),
                       new_submissions = new_submissions + (NEW.state = 'ready' AND NEW.exported_day IS NULL)
    WHERE id = NEW.source_id;
END;
CREATE TRIGGER replies_count_inserted AFTER INSERT ON replies
BEGIN
    UPDATE sources SET reply_count = reply_count + 1, unread_replies = unread_replies + (NEW.read_day IS NULL)
    WHERE id = NEW.source_id;
END;
CREATE TRIGGER replies_count_deleted AFTER DELETE ON replies
BEGIN
    UPDATE sources SET reply_count = reply_count - 1, unread_replies = unread_replies - (OLD.read_day IS NULL)
    WHERE id = OLD.source_id;
END;
CREATE TRIGGER replies_count_updated AFTER UPDATE OF read_day ON replies
WHEN OLD.source_id IS NEW.source_id AND (OLD.read_day IS NULL) IS NOT (NEW.read_day IS NULL)
BEGIN
    UPDATE sources SET unread_replies = unread_replies + (NEW.read_day IS NULL) - (OLD.read_day IS NULL) WHERE id = NEW.source_id;
END;
CREATE TRIGGER replies_count_moved AFTER UPDATE OF source_id ON replies
WHEN OLD.source_id IS NOT NEW.source_id
BEGIN
    UPDATE sources SET reply_count = reply_count - 1, unread_replies = unread_replies - (OLD.read_day IS NULL) WHERE id = OLD.source_id;
    UPDATE sources SET reply_count = reply_count + 1, unread_replies = unread_replies + (NEW.read_day IS NULL) WHERE id = NEW.source_id;
END;
DROP INDEX sources_by_activity;
CREATE INDEX sources_by_activity ON sources(last_active_day DESC, designation, has_submitted, created_day,
                                            ready_submissions, new_submissions, reply_count, unread_replies)
    WHERE has_submitted = 1 OR reply_count > 0;
"""

# Large envelopes' ciphertext moves out of SQLCipher, into the slots file (intake.db-slots,
# intake.store.slots_file): encrypting it a second time, page by page, cost more CPU than a plain
# app spends on the whole upload. This table says which slot holds what; it alone (with the
# submission's state) decides what is visible, in the same transactions as before. A slotted
# envelope is its header (submission_chunks seq 0) followed by its slots in seq order, its
# length being the submission's size. Keyed by the slot's number (no rowid: rows numbered as
# they came would tell the order of arrival); intake.store.slot_table claims free slots from a
# random place on. Envelopes stored before stay in intake.db-blobs and are read from there.
MIGRATION_9 = """
CREATE TABLE slots (
    slot INTEGER PRIMARY KEY,          -- bytes [slot * 256 KiB, + 256 KiB) of intake.db-slots
    submission_id TEXT REFERENCES submissions(id) ON DELETE SET NULL,  -- NULL: free
    seq INTEGER,                       -- its place among the submission's slots
    dirty INTEGER NOT NULL DEFAULT 0 CHECK (dirty IN (0, 1)),  -- may hold ciphertext: overwritten before reuse
    writer TEXT                        -- the process that claimed it, until its upload lets go (processes.py)
) WITHOUT ROWID;
CREATE INDEX slots_by_submission ON slots(submission_id, seq);
CREATE INDEX slots_free ON slots(dirty, slot) WHERE submission_id IS NULL;
"""

MIGRATIONS: list[str] = [MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4, MIGRATION_5, MIGRATION_6, MIGRATION_7, MIGRATION_8, MIGRATION_9]
LATEST_VERSION = len(MIGRATIONS)

# The blobs database (intake.db-blobs, see connection.py) has its own schema and
# user_version. It holds the ciphertext chunks of large uploads; the submission
# they belong to, its state and its last chunk live in the main database, which
# alone decides what is visible. Chunks whose submission is gone are reclaimed
# (Store._reclaim_space), so deleting a submission needs no cross-file transaction.
BLOBS_MIGRATION_1 = """
CREATE TABLE chunks (
    submission_id TEXT NOT NULL,         -- submissions.id in the main database
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (submission_id, seq)
);
"""

# Rows were numbered in the order the chunks came: from then on each got a random rowid,
# and the old ones are renumbered at random.
BLOBS_MIGRATION_2 = """
UPDATE chunks SET rowid = random() & 9223372036854775807;
"""

BLOBS_MIGRATIONS: list[str] = [BLOBS_MIGRATION_1, BLOBS_MIGRATION_2]


def schema_version(conn: Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Bring the schema to the latest of `migrations`; safe when several processes start at once."""
    latest = len(migrations)
    if schema_version(conn) == latest:
        return latest
    # A rebuilt table is dropped: with foreign keys on, that would delete its children.
    # (The pragma is a no-op inside a transaction, so it is set around it.)
    foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        with write_transaction(conn):
            version = schema_version(conn)  # re-read under the write lock: another process may have migrated
            if version > latest:
                raise SchemaTooNewError(told("the database has schema version {version}, newer than this intake ({latest}): upgrade "
                                             "intake", version=version, latest=latest))
            for number in range(version + 1, latest + 1):
                for statement in _statements(migrations[number - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            if conn.execute("PRAGMA foreign_key_check").fetchall():
                raise StoreError(told("the database's references are broken: run `intake check` and restore a backup"))
    finally:
        conn.execute(f"PRAGMA foreign_keys = {int(foreign_keys)}")
    return latest


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT the surrounding transaction; run statement by statement instead.
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlcipher3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError("a migration ends with an incomplete statement")
    return statements
