"""A journalist's sign-in state in the store: login secrets, the TOTP step last used, failed
attempts (the throttle) and sessions. SQL only; the rules live in intake.journalist_auth.

Newsroom (intake.store.newsroom) is this and the rest of the journalist side, over one
:class:`Store` (its connection); use it where the Store is used.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from intake.store.connection import Connection
from intake.store.records import expires_by_day, today
from intake.store.store import Store

T = TypeVar("T")


@dataclass(frozen=True, repr=False)
class LoginRecord:
    journalist_id: int
    name: str
    login_hash: bytes
    totp_secret: str

    def __repr__(self) -> str:  # the TOTP secret and hash stay out of tracebacks
        return f"LoginRecord(journalist_id={self.journalist_id}, name={self.name!r})"


class JournalistLogins:
    def __init__(self, store: Store):
        self._store = store
        self._conn = store._conn  # same package: one connection, one set of rules

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._store._read(sql, params)

    def _write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a write transaction, as a source's writes: its commit in an OS thread
        (Store._write), since the journalist interface shares the gevent workers with the source site."""
        return self._store._write(work)

    # ------------------------------------------------------------- logins

    def login_record(self, name: str) -> LoginRecord | None:
        rows = self._read(
            "SELECT id, name, login_hash, totp_secret FROM journalists"
            " WHERE name = ? AND active = 1 AND login_hash IS NOT NULL AND totp_secret IS NOT NULL",
            (name,),
        )
        return LoginRecord(*rows[0]) if rows else None

    # The TOTP step last used and the times of failed logins are stored sealed: the
    # callers (intake.journalist_auth) seal and open them under the server's memory key,
    # so these methods take the sealed bytes and a test for them, and know no time.

    def use_totp_step(self, journalist_id: int, step: int, *, seal: Callable[[int], bytes],
                      last_used: Callable[[bytes | None], int]) -> bool:
        """Record ``step`` as used (sealed by ``seal``); False if it or a later one was
        used already (``last_used`` opens what is stored): a replay."""

        def use(conn: Connection) -> bool:
            row = conn.execute("SELECT totp_used FROM journalists WHERE id = ?", (journalist_id,)).fetchone()
            if row is None or step <= last_used(row[0]):
                return False
            conn.execute("UPDATE journalists SET totp_used = ? WHERE id = ?", (seal(step), journalist_id))
            return True

        return self._write(use)

    def record_failed_login(self, journalist_id: int | None, name_key: bytes, sealed_time: bytes) -> None:
        self._write(lambda conn: conn.execute("INSERT INTO failed_logins (id, journalist_id, name_key, sealed_time) VALUES (?, ?, ?, ?)",
                                              (secrets.token_bytes(16), journalist_id, name_key, sealed_time)))

    def reserve_login_attempt(self, journalist_id: int | None, name_key: bytes, *, sealed_now: bytes,
                              recent: Callable[[bytes], bool], per_name: int, overall: int) -> bytes | None:
        """Forget the failures that are not ``recent`` (their sealed time is outside the
        window, or unreadable), count the rest for this name (by its key, or by the
        account) and overall; if both are under their limits, record this attempt as a
        failure now, before any passphrase check.

        One write transaction: parallel attempts (other workers, other greenlets of
        this one) queue for the write lock, so each sees the ones before it and no more
        than the limit get through. Returns the record's id (the caller deletes it when
        the attempt succeeds), or None: the attempt is throttled.
        """

        def reserve(conn: Connection) -> bytes | None:
            live = []
            for row in conn.execute("SELECT id, name_key, journalist_id, sealed_time FROM failed_logins").fetchall():
                if recent(row[3]):
                    live.append(row)
                else:
                    conn.execute("DELETE FROM failed_logins WHERE id = ?", (row[0],))
            for_name = sum(1 for row in live if row[1] == name_key or (journalist_id is not None and row[2] == journalist_id))
            if for_name >= per_name or len(live) >= overall:
                return None
            reservation = secrets.token_bytes(16)
            conn.execute("INSERT INTO failed_logins (id, journalist_id, name_key, sealed_time) VALUES (?, ?, ?, ?)",
                         (reservation, journalist_id, name_key, sealed_now))
            return reservation

        return self._write(reserve)

    def login_succeeded(self, journalist_id: int, reservation: bytes) -> None:
        """Drop the attempt's reserved record and the account's earlier failures."""
        self._write(lambda conn: conn.execute("DELETE FROM failed_logins WHERE id = ? OR journalist_id = ?", (reservation, journalist_id)))

    def forget_failed_logins(self, *, outdated: Callable[[bytes], bool]) -> int:
        """Delete the failed-login records whose sealed time is ``outdated`` (outside every throttle window)."""
        rows = self._read("SELECT id, sealed_time FROM failed_logins")
        return self._write(lambda conn: sum(conn.execute("DELETE FROM failed_logins WHERE id = ?", (row_id,)).rowcount
                                            for row_id, sealed in rows if outdated(sealed)))

    # ------------------------------------------------------------- sessions

    def save_journalist_session(self, session_id: bytes, journalist_id: int, sealed_expiry: bytes, expires_at: int) -> None:
        """Store a session: its exact expiry only sealed (by the caller, under the cookie's
        token), and the day it has surely ended by (see store.expires_by_day)."""
        self._write(lambda conn: conn.execute(
            "INSERT INTO journalist_sessions (id, journalist_id, sealed_expiry, expires_by_day) VALUES (?, ?, ?, ?)",
            (session_id, journalist_id, sealed_expiry, expires_by_day(expires_at)),
        ))

    def load_journalist_session(self, session_id: bytes) -> tuple[int, str, bytes] | None:
        """(journalist id, name, sealed expiry) of a session of an active journalist whose
        day has not passed, else None; the caller checks the exact expiry."""
        rows = self._read(
            "SELECT j.id, j.name, s.sealed_expiry FROM journalist_sessions s JOIN journalists j ON j.id = s.journalist_id"
            " WHERE s.id = ? AND s.expires_by_day >= ? AND j.active = 1",
            (session_id, today()),
        )
        return (int(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def delete_journalist_session(self, session_id: bytes) -> None:
        self._write(lambda conn: conn.execute("DELETE FROM journalist_sessions WHERE id = ?", (session_id,)))

    def purge_expired_journalist_sessions(self) -> int:
        return self._write(lambda conn: conn.execute("DELETE FROM journalist_sessions WHERE expires_by_day < ?", (today(),)).rowcount)
