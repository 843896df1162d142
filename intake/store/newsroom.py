"""The journalist side of the store: accounts, exports, reply import, deletion, retention and
health (the sign-in state: intake.store.newsroom_logins). SQL only; the rules live in the callers
(intake.journalist_auth, intake.exchange, intake.retention).

Wraps one :class:`Store` (its connection); use it where the Store is used.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from keys.identity import MAX_NAME_BYTES

from intake.store import processes
from intake.store.connection import Connection, DatabaseError, IntegrityError, translate_errors
from intake.store.errors import JournalistExistsError, StoreError
from intake.store.newsroom_logins import JournalistLogins
from intake.store.records import ID_BATCH, NEVER_SENT, Source, StoredSubmission, today
from intake.told import Told, told

# Names of retired keys stay in old rows (which submissions were sealed to them);
# the suffix keeps them valid identity names (letters, digits, '.', '-').
_RETIRED_SUFFIX = ".retired-{id}"


class UnknownJournalistError(StoreError):
    """No active journalist has this name."""


class UnexportedSubmissionsError(StoreError):
    """Retiring this key would leave submissions that no other active journalist can open, never
    exported: a bundle's manifest is sealed to the active keys."""

    def __init__(self, name: str, count: int):
        super().__init__(f"{count} submission(s) sealed to {name}'s key and to no other active journalist's were never exported")
        self.name, self.count = name, count


# How `intake check` names the store's databases (Store.databases()' labels).
_STORE_NAMES = {"database": told("the database"), "blobs database": told("the blobs database")}


@dataclass(frozen=True)
class JournalistAccount:
    id: int
    name: str
    fingerprint: str
    active: bool
    added_day: str
    removed_day: str | None
    can_log_in: bool
    client_auth_key: str | None


@dataclass(frozen=True)
class SourceOverview:
    id: str
    designation: str
    created_day: str
    last_active_day: str
    submissions: int
    new_submissions: int
    replies: int
    unread_replies: int


@dataclass(frozen=True)
class ExportEntry:
    """A stored submission to put in an export, with who can open it."""

    submission: StoredSubmission
    recipients: list[str]


@dataclass(frozen=True)
class ExportGroup:
    source: Source
    entries: list[ExportEntry] = field(default_factory=list)


@dataclass(frozen=True)
class ReplyImportCounts:
    added: int
    duplicates: int
    missing: int


def day_before(days: int, *, now: datetime.date | None = None) -> str:
    """The day ``days`` before today (UTC), as stored."""
    base = now or datetime.date.fromisoformat(today())
    return (base - datetime.timedelta(days=days)).isoformat()


class Newsroom(JournalistLogins):
    """The journalist side of one store; the sign-in state is JournalistLogins' (newsroom_logins)."""

    # ------------------------------------------------------------- journalists

    def add_journalist(
        self,
        name: str,
        public_key: bytes,
        verify_key: bytes,
        fingerprint: str,
        *,
        login_hash: bytes,
        totp_secret: str,
        client_auth_key: str,
        replacing: bool = False,
        even_if_unexported: bool = False,
    ) -> int:
        """Register an active journalist with login secrets. A removed journalist's
        name may be reused (key rotation): the old row is renamed, kept for the record
        of what was sealed to the old key. ``replacing``: the active journalist of that
        name is removed in the same transaction (a newsroom's only journalist can rotate);
        see _retire for ``even_if_unexported``."""

        def insert(conn: Connection) -> int:
            if replacing:
                _retire(conn, name, even_if_unexported=even_if_unexported)
            for old_id, old_name in conn.execute(
                "SELECT id, name FROM journalists WHERE name = ? AND active = 0", (name,)
            ).fetchall():
                conn.execute("UPDATE journalists SET name = ? WHERE id = ?", (_retired_name(old_name, old_id), old_id))
            cursor = conn.execute(
                "INSERT INTO journalists (name, public_key, verify_key, fingerprint, added_day,"
                " login_hash, totp_secret, client_auth_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, public_key, verify_key, fingerprint, today(), login_hash, totp_secret, client_auth_key),
            )
            return int(cursor.lastrowid)

        try:
            return self._write(insert)
        except IntegrityError:
            raise JournalistExistsError(told(
                "a journalist named {name!r} or with the same key is already registered"
                " (a removed key cannot be registered again: make a new one)", name=name,
            )) from None

    def set_login(self, name: str, *, login_hash: bytes, totp_secret: str, client_auth_key: str) -> int:
        """Replace an active journalist's login secrets and end their sessions."""

        def replace(conn: Connection) -> int:
            row = conn.execute("SELECT id FROM journalists WHERE name = ? AND active = 1", (name,)).fetchone()
            if row is None:
                raise UnknownJournalistError(told("no active journalist is named {name!r}", name=name))
            conn.execute(
                "UPDATE journalists SET login_hash = ?, totp_secret = ?, totp_used = NULL, client_auth_key = ? WHERE id = ?",
                (login_hash, totp_secret, client_auth_key, row[0]),
            )
            conn.execute("DELETE FROM journalist_sessions WHERE journalist_id = ?", (row[0],))
            conn.execute("DELETE FROM failed_logins WHERE journalist_id = ?", (row[0],))
            return int(row[0])

        return self._write(replace)

    def remove_journalist(self, name: str, *, even_if_unexported: bool = False) -> None:
        """Stop sealing to this journalist, end their sessions and forget their login (see
        _retire for ``even_if_unexported``)."""

        def remove(conn: Connection) -> None:
            if conn.execute("SELECT count(*) FROM journalists WHERE active = 1 AND name != ?", (name,)).fetchone()[0] == 0:
                if conn.execute("SELECT 1 FROM journalists WHERE name = ? AND active = 1", (name,)).fetchone():
                    raise StoreError(told("this is the last active journalist: add another before removing it, or sources"
                                          " could not submit (for a new key: `intake journalist add --replace`)"))
            _retire(conn, name, even_if_unexported=even_if_unexported)

        self._write(remove)

    def accounts(self, *, include_removed: bool = False) -> list[JournalistAccount]:
        sql = ("SELECT id, name, fingerprint, active, added_day, removed_day,"
               " login_hash IS NOT NULL AND totp_secret IS NOT NULL, client_auth_key FROM journalists")
        if not include_removed:
            sql += " WHERE active = 1"
        return [
            JournalistAccount(row[0], row[1], row[2], bool(row[3]), row[4], row[5], bool(row[6]), row[7])
            for row in self._read(sql + " ORDER BY id")
        ]

    def client_auth_keys(self) -> list[str]:
        """Public client-authorisation keys of active journalists, for the journalist onion."""
        rows = self._read("SELECT client_auth_key FROM journalists WHERE active = 1 AND client_auth_key IS NOT NULL ORDER BY id")
        return [row[0] for row in rows]

    def verify_keys(self) -> dict[str, bytes]:
        """Signing keys of active journalists by name: who may sign reply bundles."""
        return {name: key for name, key in self._read("SELECT name, verify_key FROM journalists WHERE active = 1")}

    # ------------------------------------------------------------- sources and exports

    # The counts are kept on each source by triggers (migration 8) and held by the index
    # sources_by_activity with the order's columns: a page reads only that index.
    _OVERVIEW = (
        "SELECT s.id, s.designation, s.created_day, s.last_active_day,"
        " s.ready_submissions, s.new_submissions, s.reply_count, s.unread_replies"
        " FROM sources s"
    )

    # The sources journalists see: those that sent something or have replies. Written as
    # the WHERE of the partial index sources_by_activity, for SQLite to use that index.
    _LISTED = " WHERE s.has_submitted = 1 OR s.reply_count > 0"
    # Most recently active first: the order of the index sources_by_activity, so a page
    # is read from the index's start and the query stops after it (no sort of every source).
    _ORDER = " ORDER BY s.last_active_day DESC, s.designation"

    def source_overview(self) -> list[SourceOverview]:
        """Every listed source, most recently active first."""
        return [SourceOverview(*row) for row in self._read(self._OVERVIEW + self._LISTED + self._ORDER)]

    def source_page(self, offset: int, limit: int) -> list[SourceOverview]:
        """At most ``limit`` listed sources, after the first ``offset`` in the order of source_overview."""
        rows = self._read(self._OVERVIEW + self._LISTED + self._ORDER + " LIMIT ? OFFSET ?", (limit, offset))
        return [SourceOverview(*row) for row in rows]

    def count_new_submissions(self, up_to: int) -> int:
        """Complete submissions never exported, counted on the index submissions_by_state
        up to ``up_to`` at most: the count stops there, so its cost does not grow with the store."""
        (row,) = self._read(
            "SELECT count(*) FROM (SELECT 1 FROM submissions WHERE state = 'ready' AND exported_day IS NULL LIMIT ?)", (up_to,)
        )
        return int(row[0])

    def source_overview_of(self, source_id: str) -> SourceOverview | None:
        rows = self._read(self._OVERVIEW + " WHERE s.id = ?", (source_id,))
        return SourceOverview(*rows[0]) if rows else None

    def source_id_for(self, id_or_designation: str) -> str | None:
        """The id of the source with this id, or with this designation (what journalists see)."""
        rows = self._read("SELECT id FROM sources WHERE id = ? OR designation = ? ORDER BY id = ? DESC LIMIT 1",
                          (id_or_designation, id_or_designation, id_or_designation))
        return rows[0][0] if rows else None

    def designations(self, source_ids: Iterable[str]) -> dict[str, str]:
        """Designation by source id, for the ids that exist."""
        wanted = sorted(set(source_ids))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), ID_BATCH):
            batch = wanted[start : start + ID_BATCH]
            marks = ",".join("?" * len(batch))
            found.update(self._read(f"SELECT id, designation FROM sources WHERE id IN ({marks})", tuple(batch)))
        return found

    def export_groups(self, *, only_new: bool, source_ids: Sequence[str] | None = None) -> list[ExportGroup]:
        """Complete submissions to export, grouped by source (oldest first), each with the
        names of the journalists it is sealed to. Never the ciphertext itself: items read
        it lazily with ``Store.submission_ciphertext``."""
        sql = (
            "SELECT s.id, s.source_id, s.kind, s.received_day, s.size, s.exported_day,"
            " src.designation, src.reply_public_key, src.created_day, src.last_active_day, s.sealed_to"
            " FROM submissions s JOIN sources src ON src.id = s.source_id WHERE s.state = 'ready'"
        )
        params: list = []
        if only_new:
            sql += " AND s.exported_day IS NULL"
        if source_ids is not None:
            if not source_ids:
                return []
            sql += f" AND s.source_id IN ({','.join('?' * len(source_ids))})"
            params += list(source_ids)
        sql += " ORDER BY src.created_day, src.id, s.received_day, s.position"
        groups: dict[str, ExportGroup] = {}
        rows = self._read(sql, tuple(params))
        recipients = self._recipient_names()
        for row in rows:
            submission = StoredSubmission(*row[:6])
            group = groups.get(submission.source_id)
            if group is None:
                source = Source(submission.source_id, row[6], row[7], row[8], row[9])
                group = groups[submission.source_id] = ExportGroup(source)
            group.entries.append(ExportEntry(submission, list(recipients.get(row[10], ()))))  # its own list
        return list(groups.values())

    def _recipient_names(self) -> dict[str, list[str]]:
        """The journalists of each recipient set (migration 7), by the set's members, names sorted.
        One query for the whole export: the sets are few (one per team the newsroom has had)."""
        names: dict[str, list[str]] = {}
        for members, name in self._read(
            "SELECT sets.members, j.name FROM recipient_sets AS sets, json_each(sets.members) AS member"
            " JOIN journalists AS j ON j.id = member.value"
        ):
            names.setdefault(members, []).append(name)
        return {members: sorted(of_set) for members, of_set in names.items()}

    def mark_exported(self, submission_ids: Iterable[str]) -> int:
        """Mark submissions exported today; one already exported keeps its first day
        (the retention clock starts at the first export)."""
        day = today()
        wanted = sorted(set(submission_ids))  # in key order: each page of the table is written once

        def mark(conn: Connection) -> int:
            # ID_BATCH a statement: each marked row fires a trigger that counts it on its source
            # (migration 8), and a statement with triggers journals the pages it changes; one
            # statement a row cost 24-36 us a row, against 9-13 in batches (10,000 rows).
            marked = 0
            for start in range(0, len(wanted), ID_BATCH):
                batch = wanted[start : start + ID_BATCH]
                marked += conn.execute(
                    f"UPDATE submissions SET exported_day = ? WHERE id IN ({','.join('?' * len(batch))})"
                    " AND state = 'ready' AND exported_day IS NULL", (day, *batch),
                ).rowcount
            return marked

        return self._write(mark)

    # ------------------------------------------------------------- replies

    def import_replies(self, journalist_name: str, replies: Sequence[tuple[str, bytes]]) -> dict[str, ReplyImportCounts]:
        """Store replies in one transaction, counted per source id: added, imported
        before (the same envelope is stored once, ever: its digest stays in
        imported_reply_digests after the reply is deleted or purged), or addressed
        to no existing source (not recorded, so it can be imported if that source
        turns up, e.g. from a restored backup)."""
        counts: dict[str, ReplyImportCounts] = {}
        day = today()

        def store_replies(conn: Connection) -> None:
            row = conn.execute("SELECT id FROM journalists WHERE name = ? AND active = 1", (journalist_name,)).fetchone()
            if row is None:
                raise UnknownJournalistError(told("no active journalist is named {name!r}", name=journalist_name))
            for source_id, envelope in replies:
                before = counts.get(source_id, ReplyImportCounts(0, 0, 0))
                if conn.execute("SELECT 1 FROM sources WHERE id = ?", (source_id,)).fetchone() is None:
                    counts[source_id] = dataclasses.replace(before, missing=before.missing + 1)
                    continue
                digest = hashlib.blake2b(envelope, digest_size=32).digest()
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO imported_reply_digests (digest) VALUES (?)", (digest,)
                ).rowcount
                if inserted:
                    conn.execute(
                        "INSERT INTO replies (id, source_id, journalist_id, envelope, created_day, digest, position)"
                        " VALUES (?, ?, ?, ?, ?, ?, (SELECT coalesce(max(position), 0) + 1 FROM replies WHERE source_id = ?))",
                        (secrets.token_hex(16), source_id, row[0], envelope, day, digest, source_id),
                    )
                counts[source_id] = dataclasses.replace(
                    before, added=before.added + inserted, duplicates=before.duplicates + 1 - inserted)

        self._write(store_replies)
        return counts

    # ------------------------------------------------------------- deletion

    def delete_source(self, source_id: str) -> bool:
        """Delete a source and everything from or for it (overwritten: secure_delete)."""
        deleted = self._write(lambda conn: conn.execute("DELETE FROM sources WHERE id = ?", (source_id,)).rowcount == 1)
        self._store._reclaim_space()
        return deleted

    def delete_submissions_of(self, source_id: str) -> int:
        deleted = self._write(lambda conn: conn.execute(
            "DELETE FROM submissions WHERE source_id = ? AND state = 'ready'", (source_id,)
        ).rowcount)
        self._store._reclaim_space()
        return deleted

    # ------------------------------------------------------------- retention

    def purge_exported_submissions(self, exported_on_or_before: str) -> int:
        return self._write(lambda conn: conn.execute(
            "DELETE FROM submissions WHERE state = 'ready' AND exported_day IS NOT NULL AND exported_day <= ?",
            (exported_on_or_before,),
        ).rowcount)

    def purge_read_replies(self, read_on_or_before: str) -> int:
        return self._write(lambda conn: conn.execute(
            "DELETE FROM replies WHERE read_day IS NOT NULL AND read_day <= ?", (read_on_or_before,)
        ).rowcount)

    def purge_sources_that_never_submitted(self, last_active_on_or_before: str) -> int:
        """Sources that made a codename but never sent anything, idle since that day.
        A source with an upload in flight or a reply waiting is kept."""
        return self._write(lambda conn: conn.execute(
            f"DELETE FROM sources WHERE last_active_day <= ? AND {NEVER_SENT}", (last_active_on_or_before,)
        ).rowcount)

    def reclaim_space(self) -> None:
        self._store._reclaim_space()

    # ------------------------------------------------------------- health

    def sizes(self) -> dict[str, int]:
        """Bytes of stored ciphertext by kind, and of the database files."""
        (row,) = self._read(
            "SELECT (SELECT coalesce(sum(size), 0) FROM submissions WHERE state = 'ready'),"
            " (SELECT coalesce(sum(size), 0) FROM submissions WHERE state = 'ready' AND exported_day IS NULL),"
            " (SELECT coalesce(sum(length(envelope)), 0) FROM replies)"
        )
        sizes = {
            "submissions": int(row[0]),
            "not exported": int(row[1]),
            "replies": int(row[2]),
        }
        for label, conn in self._store.databases():
            with translate_errors():
                # int(): SQLCipher reports page_size as text.
                page_size, pages, free = (int(conn.execute(f"PRAGMA {name}").fetchone()[0]) for name in ("page_size", "page_count", "freelist_count"))
            sizes[label] = page_size * pages
            sizes[f"free in {label}"] = page_size * free
        sizes["slots file"] = self._store.slots_file_bytes()
        return sizes

    def integrity_problems(self) -> list[Told]:
        """What SQLCipher's page authentication and SQLite's structure checks report, and whether
        the slots file holds every slot the database names; [] if healthy."""
        problems: list[str] = []
        for label, conn in self._store.databases():
            for pragma, healthy in (("cipher_integrity_check", None), ("integrity_check", "ok"), ("foreign_key_check", None)):
                try:
                    rows = conn.execute(f"PRAGMA {pragma}").fetchall()
                except DatabaseError as error:  # a damaged page can stop a check half-way
                    problems.append(told("{store}: {check}: {detail}", store=_STORE_NAMES[label], check=pragma, detail=error))
                    continue
                problems += [told("{store}: {check}: {detail}", store=_STORE_NAMES[label], check=pragma,
                                  detail=" ".join(map(str, row))) for row in rows if row[0] != healthy]
        try:
            problems += self._store.slot_problems()
        except DatabaseError as error:  # the database's own damage, already reported above
            problems.append(told("slots file: the database's list of slots cannot be read: {detail}", detail=error))
        return problems


def _retire(conn: Connection, name: str, *, even_if_unexported: bool) -> None:
    """The active journalist ``name`` stops: no new submission is sealed to their key, their login
    and sessions end. Call inside a write transaction. Refused (UnexportedSubmissionsError) while
    submissions sealed to that key and to no other active one were never exported (published, or
    arriving with a piece stored), unless ``even_if_unexported``. One still arriving with nothing
    stored yet is refused at its publish instead (UploadWrites._publish_in): so none slips through."""
    row = conn.execute("SELECT id FROM journalists WHERE name = ? AND active = 1", (name,)).fetchone()
    if row is None:
        raise UnknownJournalistError(told("no active journalist is named {name!r}", name=name))
    if not even_if_unexported:
        stranded = conn.execute(
            "SELECT s.state, s.writer FROM submissions AS s WHERE s.exported_day IS NULL AND s.state IN ('ready', 'pending')"
            " AND EXISTS (SELECT 1 FROM json_each(s.sealed_to) AS member WHERE member.value = ?)"
            " AND NOT EXISTS (SELECT 1 FROM json_each(s.sealed_to) AS member JOIN journalists AS j ON j.id = member.value"
            " WHERE j.active = 1 AND j.id != ?)", (row[0], row[0])).fetchall()
        # An upload whose writer died is removed at the next start (Store.recover): it strands nothing.
        count = sum(1 for state, writer in stranded if state == "ready" or processes.writer_alive(writer))
        if count:
            raise UnexportedSubmissionsError(name, count)
    conn.execute(
        "UPDATE journalists SET active = 0, removed_day = ?, login_hash = NULL, totp_secret = NULL,"
        " client_auth_key = NULL WHERE id = ?",
        (today(), row[0]),
    )
    conn.execute("DELETE FROM journalist_sessions WHERE journalist_id = ?", (row[0],))


def _retired_name(name: str, journalist_id: int) -> str:
    suffix = _RETIRED_SUFFIX.format(id=journalist_id)
    base = name.encode("utf-8")[: MAX_NAME_BYTES - len(suffix)].decode("utf-8", "ignore")
    return base + suffix
