"""Forward-only schema migrations. Append new ones; never edit one that has shipped.

The database's schema version is SQLite's `user_version` (inside the encrypted
header). Migration N takes the schema from version N-1 to N.

Dates are days ('YYYY-MM-DD', UTC) and nothing records a client's address or
browser. The one precise time is source_sessions.expires_at: a session must end
on time, and its row is deleted at expiry or logout.
"""

from __future__ import annotations

import sqlcipher3

from intake.store.connection import Connection, write_transaction
from intake.store.errors import SchemaTooNewError

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

MIGRATIONS: list[str] = [MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4]
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

BLOBS_MIGRATIONS: list[str] = [BLOBS_MIGRATION_1]


def schema_version(conn: Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Bring the schema to the latest of `migrations`; safe when several processes start at once."""
    latest = len(migrations)
    if schema_version(conn) == latest:
        return latest
    with write_transaction(conn):
        version = schema_version(conn)  # re-read under the write lock: another process may have migrated
        if version > latest:
            raise SchemaTooNewError(f"the database has schema version {version}, newer than this intake ({latest}): upgrade intake")
        for number in range(version + 1, latest + 1):
            for statement in _statements(migrations[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
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
