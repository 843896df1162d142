"""Naming the process that writes a pending upload, so recovery can tell an
orphan (its writer died) from an upload still in flight in another worker.

Taking a live writer for gone lets recovery delete its upload and the slot cleaner hand its
slots to another upload, which a late write of it would then damage; taking a dead one for
alive only keeps its space a while longer. So whatever cannot be read for certain (out of file
descriptors, say) counts as alive.
"""

from __future__ import annotations

import errno
import os

from intake.store.errors import StoreError
from intake.told import told

_GONE = (errno.ENOENT, errno.ESRCH)  # what reading /proc gives for a process or thread that has ended


def _stat_fields(stat_path: str) -> list[bytes] | None:
    """A /proc/.../stat file from field 3 (the state) on; None if that process or thread has
    ended. Raises OSError when it cannot be read for another reason."""
    try:
        with open(stat_path, "rb") as stat_file:
            stat = stat_file.read()
    except OSError as error:
        if error.errno in _GONE:
            return None
        raise
    return stat[stat.rindex(b")") + 2 :].split()  # the command name may hold spaces


def _some_thread_runs(pid: int) -> bool:
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError as error:
        return error.errno not in _GONE
    for thread in threads:
        fields = _stat_fields(f"/proc/{pid}/task/{thread}/stat")  # None: it ended meanwhile
        if fields is not None and fields[0] not in (b"Z", b"X"):
            return True
    return False


def current_writer() -> str:
    pid = os.getpid()
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
    except OSError as error:
        # A name without its start time would read as "the pid names another process" to the others.
        raise StoreError(told("could not read this process's start time from /proc: {reason}", reason=os.strerror(error.errno or 0))) from None
    # Field 22 of /proc/PID/stat: start time in clock ticks since boot. With the pid it names a
    # process uniquely, even after the pid is reused. No /proc at all: the pid is all there is.
    return f"{pid}:{fields[19].decode() if fields else ''}"


def writer_alive(writer: str | None) -> bool:
    pid_text, _, started = (writer or "").partition(":")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        if fields is None:
            return started == ""  # no /proc: the pid is all there is to go by
        if started != fields[19].decode():
            return False  # the pid now names another process
        # /proc shows a process as a zombie once its first thread has ended, which may be before
        # another of its threads does (one stuck in a write on a stalled disk outlives a kill -9).
        # Only a zombie whose threads have all ended (killed, not yet reaped) writes nothing more.
        return fields[0] not in (b"Z", b"X") or _some_thread_runs(pid)
    except OSError:
        return True  # cannot tell: never on a guess
