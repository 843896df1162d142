"""What the store hands out (its records), the values it writes that are not the caller's (ids,
row ids, and days: the finest time the store keeps), and how many ids one query names at most."""

from __future__ import annotations

import datetime
import math
import secrets
import time
from dataclasses import dataclass, field

ID_BATCH = 500  # ids per IN (...) query, well under SQLite's parameter limit
# A source (row of `sources`) that never sent anything, has no upload in flight and no reply: what
# retention forgets when idle, and what a source may exchange for a codename in another language.
NEVER_SENT = ("has_submitted = 0 AND NOT EXISTS (SELECT 1 FROM submissions WHERE source_id = sources.id)"
              " AND NOT EXISTS (SELECT 1 FROM replies WHERE source_id = sources.id)")


def today() -> str:
    """The current day, UTC: the finest time the store keeps (see migrations.py)."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def new_id() -> str:
    return secrets.token_hex(16)


def random_rowid() -> int:
    """A rowid for the chunk tables, whose rows are too large for WITHOUT ROWID: SQLite's
    own would number them in the order they came (migrations.MIGRATION_5)."""
    return secrets.randbits(63)


def expires_by_day(expires_at: float, *, now: float | None = None) -> str:
    """The day a session that ends at ``expires_at`` has surely ended by: today plus its
    length in whole days, rounded up. It depends on the login day and the session's
    length only, never on the time of day (the day of the expiry itself would tell
    whether the login came late in the evening)."""
    now = time.time() if now is None else now
    login_day = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    days = math.ceil(max(0.0, expires_at - now) / 86400)
    return (login_day + datetime.timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class Source:
    id: str
    designation: str
    reply_public_key: bytes
    created_day: str
    last_active_day: str


@dataclass(frozen=True)
class Recipient:
    journalist_id: int
    name: str
    public_key: bytes


@dataclass(frozen=True)
class Journalist:
    id: int
    name: str
    public_key: bytes
    verify_key: bytes
    fingerprint: str
    active: bool
    added_day: str


@dataclass(frozen=True)
class StoredReply:
    id: str
    created_day: str
    envelope: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredSubmission:
    id: str
    source_id: str
    kind: str
    received_day: str
    size: int
    exported_day: str | None
