"""File times that say nothing finer than the day.

Every write to the store sets its files' modification time, and every read may set
the access time: a seized disk would show when the last source came, to the
nanosecond. When a request gives its store back (and whenever a store is closed),
the data dir and the files intake writes in it get the start of the current day
(UTC) as both times. The change time (ctime) cannot be set by any program, but
setting the other two sets it to now: `intake serve` does that every minute
(FileTimesTicker), so the ctime tells when the server last ran, not when the
last request came (SECURITY.md section 2).

Tools that copy only files whose time and size changed (rsync without --checksum)
would miss a change made within the same day: back up with --checksum.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

DAY_SECONDS = 86400
# Tor's own data directory (intake.tor): tor writes it, and its files are tor's business.
TOR_DIR = "tor"


def day_start(now: float | None = None) -> int:
    """The start of the current day (UTC), in unix seconds."""
    now = time.time() if now is None else now
    return int(now // DAY_SECONDS * DAY_SECONDS)


def settle_file_times(data_dir: Path) -> None:
    """Set the access and modification times of the data dir and of everything intake
    writes in it to the start of the day."""
    paths: list[str | Path] = [data_dir]
    for folder, subfolders, files in os.walk(data_dir):
        if os.path.samefile(folder, data_dir) and TOR_DIR in subfolders:
            subfolders.remove(TOR_DIR)
        paths += [os.path.join(folder, name) for name in (*files, *subfolders)]
    # Only once everything is listed: listing a folder sets its access time.
    start = day_start()
    for path in paths:
        _set_times(path, start)


def _set_times(path: str | Path, when: int) -> None:
    try:
        os.utime(path, (when, when), follow_symlinks=False)
    except (FileNotFoundError, PermissionError):
        pass  # gone meanwhile (a journal), or not ours to change


class FileTimesTicker:
    """Settles the file times every ``interval`` seconds in a daemon thread, requests or not."""

    def __init__(self, data_dir: Path, interval: float = 60.0):
        self._data_dir = data_dir
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FileTimesTicker:
        self._thread = threading.Thread(target=self._loop, name="intake-file-times", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            settle_file_times(self._data_dir)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
