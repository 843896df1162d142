"""Naming the process that writes a pending upload, so recovery can tell an
orphan (its writer died) from an upload still in flight in another worker."""

from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (the state) on."""
    try:
        stat = open(f"/proc/{pid}/stat", "rb").read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()  # the command name may hold spaces


def _start_time(pid: int) -> str | None:
    # Field 22 of /proc/PID/stat: start time in clock ticks since boot. With the pid
    # it names a process uniquely, even after the pid is reused.
    fields = _stat_fields(pid)
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
    fields = _stat_fields(pid)
    if fields is None:
        return started == ""  # no /proc: the pid is all there is to go by
    if fields[0] in (b"Z", b"X"):
        return False  # a killed writer its parent has not reaped yet (a zombie) writes nothing more
    return started == fields[19].decode()
