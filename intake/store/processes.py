"""Naming the process that writes a pending upload, so recovery can tell an
orphan (its writer died) from an upload still in flight in another worker."""

from __future__ import annotations

import os


def _stat_fields(stat_path: str) -> list[bytes] | None:
    """A /proc/.../stat file from field 3 (the state) on."""
    try:
        stat = open(stat_path, "rb").read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()  # the command name may hold spaces


def _some_thread_runs(pid: int) -> bool:
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for thread in threads:
        fields = _stat_fields(f"/proc/{pid}/task/{thread}/stat")  # None: it ended meanwhile
        if fields is not None and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _start_time(pid: int) -> str | None:
    # Field 22 of /proc/PID/stat: start time in clock ticks since boot. With the pid
    # it names a process uniquely, even after the pid is reused.
    fields = _stat_fields(f"/proc/{pid}/stat")
    return fields[19].decode() if fields else None


def current_writer() -> str:
    return f"{os.getpid()}:{_start_time(os.getpid()) or ''}"


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
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None:
        return started == ""  # no /proc: the pid is all there is to go by
    if started != fields[19].decode():
        return False  # the pid now names another process
    # /proc shows a process as a zombie once its first thread has ended, which may be before
    # another of its threads does (one stuck in a write on a stalled disk outlives a kill -9).
    # Only a zombie whose threads have all ended (killed, not yet reaped) writes nothing more.
    return fields[0] not in (b"Z", b"X") or _some_thread_runs(pid)
