"""Retention: what the server deletes, when, and the schedule that does it unasked.

Defaults (docs/journalists.md), changed per instance in ``DATA/retention.toml``::

    exported_days = 14       # a submission goes this many days after its first export
    read_reply_days = 7      # a reply goes this many days after the source first read it
    unused_source_days = 1   # a codename that never sent anything goes after this many idle days
    interval_minutes = 60    # how often the schedule runs

Sessions whose day has passed and failed-login records outside the throttle
window go at every run (records sealed under another run's memory key are left
to the server's sign-in check, see ThrottlePolicy.outdated). Deleted rows are overwritten (``secure_delete``) and freed pages returned.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from intake.config import Settings
from intake.journalist_auth import ThrottlePolicy
from intake.store import Store, StoreError
from intake.store.newsroom import Newsroom, day_before
from intake.told import told

RETENTION_FILE = "retention.toml"
# Bounds that every file an earlier intake took still meets: days that a date can still count
# back from today (about 1,900 years: "keep for ever"), and a run at least once a year.
MAX_DAYS = 700_000
MAX_INTERVAL_MINUTES = 525_600

log = logging.getLogger(__name__)


class RetentionConfigError(StoreError):
    """retention.toml is unreadable or holds an invalid value."""


@dataclass(frozen=True)
class RetentionPolicy:
    exported_days: int = 14
    read_reply_days: int = 7
    unused_source_days: int = 1
    interval_minutes: int = 60

    @classmethod
    def load(cls, data_dir: Path) -> RetentionPolicy:
        """The policy of the instance in ``data_dir``: the defaults, changed by retention.toml if present."""
        path = Path(data_dir) / RETENTION_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as error:
            raise RetentionConfigError(told("{path} cannot be read: {reason}", path=path, reason=error.strerror)) from None
        try:
            text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # an editor's byte-order mark is no error
        except UnicodeDecodeError:
            raise RetentionConfigError(told("{path} is not UTF-8 text: save it as UTF-8", path=path)) from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            place = re.search(r"line (\d+), column (\d+)", str(error))
            raise RetentionConfigError(told("{path}: not a valid setting at line {line}, column {column} (write it as "
                                            "name = number)", path=path, line=place[1] if place else "?",
                                            column=place[2] if place else "?")) from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise RetentionConfigError(told("{path}: unknown setting {name!r} (known: {known})", path=path,
                                            name=sorted(unknown)[0], known=", ".join(sorted(known))))
        for name, value in values.items():
            if name == "interval_minutes":
                if type(value) is not int or not 1 <= value <= MAX_INTERVAL_MINUTES:
                    raise RetentionConfigError(told("{path}: {name} must be a whole number of minutes from 1 to {most}",
                                                    path=path, name=name, most=MAX_INTERVAL_MINUTES))
            elif type(value) is not int or not 0 <= value <= MAX_DAYS:
                raise RetentionConfigError(told("{path}: {name} must be a whole number of days from 0 to {most}",
                                                path=path, name=name, most=MAX_DAYS))
        return cls(**values)


@dataclass(frozen=True)
class PurgeReport:
    submissions: int
    replies: int
    sources: int
    source_sessions: int
    journalist_sessions: int
    failed_logins: int

    def lines(self) -> list[str]:
        return [f"{name.replace('_', ' ')} deleted: {count}" for name, count in dataclasses.asdict(self).items()]


def purge(store: Store, policy: RetentionPolicy, *, now: float | None = None) -> PurgeReport:
    """Delete everything the policy says has been kept long enough."""
    now = time.time() if now is None else now
    newsroom = Newsroom(store)
    report = PurgeReport(
        submissions=newsroom.purge_exported_submissions(day_before(policy.exported_days)),
        replies=newsroom.purge_read_replies(day_before(policy.read_reply_days)),
        sources=newsroom.purge_sources_that_never_submitted(day_before(policy.unused_source_days)),
        source_sessions=store.purge_expired_sessions(),
        journalist_sessions=newsroom.purge_expired_journalist_sessions(),
        failed_logins=newsroom.forget_failed_logins(outdated=ThrottlePolicy().outdated(now)),
    )
    newsroom.reclaim_space()
    return report


class PurgeSchedule:
    """Runs :func:`purge` every ``interval_minutes`` in a daemon thread (and once at start).

    ``intake serve`` starts one, so retention happens without anyone running
    ``intake purge``. A failed run is logged (without content) and retried at the
    next interval.
    """

    def __init__(self, settings: Settings, policy: RetentionPolicy | None = None):
        self._settings = settings
        self.policy = policy or RetentionPolicy.load(settings.data_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> PurgeSchedule:
        self._thread = threading.Thread(target=self._loop, name="intake-retention", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with Store.open(self._settings) as store:
                    report = purge(store, self.policy)
                if any(dataclasses.astuple(report)):
                    log.info("retention: %s", "; ".join(report.lines()))
            except StoreError as error:  # e.g. the disk is full or the database busy: try again later
                log.warning("retention run failed: %s", error)
            except Exception as error:  # noqa: BLE001 - a bug must not end retention for the rest of the run
                log.error("retention run failed (%s): retrying at the next interval", type(error).__name__)
            self.runs += 1
            self._stop.wait(self.policy.interval_minutes * 60)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
