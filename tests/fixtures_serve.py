"""A session-wide guard for everything tests start: no tor that can join the public Tor network.

`intake serve` and `intake demo` default to `--tor launch`, which joins the public
Tor network. Tests may only use `offline` or the private network of tests/tornet.py,
so every subprocess a test starts inherits INTAKE_TOR=none unless it passes
`--tor` itself (an option beats the environment).

It also has the helpers to run `intake serve` as a subprocess and to see its processes.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port  # noqa: F401 (tests import it from here)

REPO = Path(__file__).resolve().parents[1]
INTAKE = [sys.executable, "-c", "from intake.cli import main; main()"]
ONION_LINE = re.compile(r"^(Source|Journalist) onion: +http://([a-z2-7]{56}\.onion)/", re.MULTILINE)


@pytest.fixture(scope="session", autouse=True)
def intake_tor_defaults_to_none() -> Iterator[None]:
    previous = os.environ.get("INTAKE_TOR")
    os.environ["INTAKE_TOR"] = "none"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("INTAKE_TOR", None)
        else:
            os.environ["INTAKE_TOR"] = previous


def process_state(pid: int) -> str | None:
    """The process state letter from /proc (None if there is no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below pid (children of all its threads, recursively)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found.append(child)
            found += descendants(child)
    return found


def _listening_tcp_inodes() -> set[str]:
    """Socket inodes of every listening TCP socket (IPv4 and IPv6) on this machine."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def tcp_listeners(pids: list[int]) -> list[str]:
    """The listening TCP sockets these processes hold, as "pid: command (socket:[inode])"."""
    listening = _listening_tcp_inodes()
    found = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                found.append(f"{pid}: {command_line(pid)} ({target})")
    return found


class ServeProcess:
    """`intake serve` (or `demo`) as a subprocess whose output is read line by line."""

    def __init__(self, args: list[str], cwd: Path = REPO, env: dict[str, str] | None = None,
                 new_session: bool = False):
        # new_session: its own process group, as a command typed in a terminal has (Ctrl-C is
        # then os.killpg(pid, SIGINT)).
        self.process = subprocess.Popen(INTAKE + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**os.environ, **(env or {})}, start_new_session=new_session)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read_until(self, marker: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} within {timeout:.0f} s; output so far:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"intake ended (status {self.process.wait()}) before {marker!r}:\n{self.output}")
            self.lines.append(line)
            if marker in line:
                return self.output

    def all_output(self, timeout: float = 10.0) -> str:
        """Everything it printed, once it has ended (for failure messages)."""
        self._take(timeout)
        return self.output

    def _take(self, timeout: float) -> None:
        """Take in what it prints for up to ``timeout`` seconds, or until its output ends (0: what it printed so far)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if line is None:
                self._queue.put(None)
                return
            self.lines.append(line)
            if time.monotonic() > deadline and timeout:
                return

    def onions(self) -> dict[str, str]:
        return {kind.lower(): address for kind, address in ONION_LINE.findall(self.output)}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45.0) -> int:
        """Send ``sig`` and wait for the exit status. Past ``timeout``, what still ran and what
        intake and gunicorn said meanwhile become the failure's message (then it is killed)."""
        self._take(0)
        said_before = len(self.lines)
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            running = [f"{pid} {process_state(pid)} {command_line(pid)}" for pid in [self.process.pid, *descendants(self.process.pid)]]
            self._take(0)
            raise AssertionError(f"not stopped {timeout:.0f} s after {signal.Signals(sig).name}; still running:\n"
                                 + "\n".join(running) + "\nsaid since:\n" + "".join(self.lines[said_before:])) from None
        finally:
            if self.process.poll() is None:
                for pid in descendants(self.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.process.kill()
                self.process.wait()
