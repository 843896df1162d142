"""`intake serve --tor none` run as systemd runs deploy/intake.service, and kill -9 of its processes.

systemd's default KillMode=control-group is played by a process group of our own: when the main
process (`intake serve`) exits, whatever is left of the group gets SIGTERM, then SIGKILL after
TimeoutStopSec, and the service starts again after RestartSec (Restart=on-failure).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from intake.server import APP_FACTORY, JOURNALIST_APP_FACTORY
from soak.newsroom import BIN, Newsroom
from tests.ports import free_port

RESTART_SEC = 5.0  # deploy/intake.service
TIMEOUT_STOP_SEC = 30.0
START_SECONDS = 120.0
KILL_KINDS = {  # kind: weight
    "source worker": 4,
    "journalist worker": 1,
    "source gunicorn master": 2,
    "journalist gunicorn master": 1,
    "intake serve": 2,
}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, the way systemd sees its cgroup."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class Service:
    """The supervised `intake serve`; `up` is set while it answers on both ports."""

    def __init__(self, room: Newsroom, log: Path):
        self.room = room
        self.log = log
        self.source_port, self.journalist_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.up = threading.Event()
        self.restarts = 0
        self.exits: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the monkey never kills while the supervisor starts or cleans up
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    @property
    def source_url(self) -> str:
        return f"http://127.0.0.1:{self.source_port}"

    @property
    def journalist_url(self) -> str:
        return f"http://127.0.0.1:{self.journalist_port}"

    def start(self) -> None:
        with self._lock:
            self._start()
        self._thread.start()

    def _start(self) -> None:
        room = self.room
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "intake"), "serve", "--data", str(room.data), "--db-key-file", str(room.db_key),
                 "--tor", "none", "--port", str(self.source_port), "--journalist-port", str(self.journalist_port)],
                cwd=room.work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while not (_accepts(self.source_port) and _accepts(self.journalist_port)):
            if self.process.poll() is not None:
                return  # the supervisor sees it and tries again, as systemd would
            if time.monotonic() > deadline:
                raise RuntimeError(f"intake serve did not answer within {START_SECONDS:.0f} s (see {self.log})")
            time.sleep(0.1)
        self.up.set()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            assert self.process is not None
            try:
                status = self.process.wait(0.2)
            except subprocess.TimeoutExpired:
                continue
            with self._lock:
                if self._stopping.is_set():
                    return
                self.up.clear()
                self.exits[f"exit status {status}"] += 1
                self._clean_up_group()
                time.sleep(RESTART_SEC)
                self.restarts += 1
                self._start()

    def _clean_up_group(self) -> None:
        assert self.process is not None
        pgid = self.process.pid
        for sig, wait in ((signal.SIGTERM, TIMEOUT_STOP_SEC), (signal.SIGKILL, 10.0)):
            members = group_members(pgid)
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        if group_members(pgid):
            raise RuntimeError("processes of intake serve survived SIGKILL")

    def stop(self) -> None:
        """Stop it as `systemctl stop` does: SIGTERM to the main process, then the group."""
        self._stopping.set()
        with self._lock:
            self.up.clear()
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(TIMEOUT_STOP_SEC)
                except subprocess.TimeoutExpired:
                    pass
            if self.process is not None:
                self._clean_up_group()
                self.process.wait()
        if self._thread.is_alive():
            self._thread.join(60)

    def restart(self) -> None:
        """A clean start after `stop` (its start-up recovers the store)."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self.start()
        if not self.up.wait(START_SECONDS + 4 * (RESTART_SEC + TIMEOUT_STOP_SEC)):
            raise RuntimeError(f"intake serve did not start again (see {self.log})")

    # -- the processes the monkey may kill --

    def targets(self, kind: str) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        parent = self.process.pid
        if kind == "intake serve":
            return [parent]
        # intake serve hands gunicorn its listening sockets (--bind fd://N): tell the two masters
        # apart by the app they serve, which ends their command line.
        app = APP_FACTORY if kind.startswith("source") else JOURNALIST_APP_FACTORY
        masters = [pid for pid in _children(parent) if _cmdline(pid).rstrip().endswith(app)]
        if kind.endswith("master"):
            return masters
        return [worker for master in masters for worker in _children(master)]

    def kill_one(self, kind: str, rng: random.Random) -> bool:
        """SIGKILL one process of `kind` while the service is up; False if there was none to kill."""
        with self._lock:
            if not self.up.is_set():
                return False
            candidates = self.targets(kind)
            if not candidates:
                return False
            try:
                os.kill(rng.choice(candidates), signal.SIGKILL)
            except ProcessLookupError:
                return False
            return True


class Monkey:
    """kill -9 of a random process of the service at random times, about every `every` seconds."""

    def __init__(self, service: Service, every: float, deadline: float):
        self.service = service
        self.every = every
        self.deadline = deadline
        self.kills: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monkey", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        rng = random.Random(os.urandom(8))
        kinds, weights = list(KILL_KINDS), list(KILL_KINDS.values())
        while not self._stop.wait(rng.uniform(0.5, 1.5) * self.every):
            if time.monotonic() > self.deadline:
                return
            if not self.service.up.wait(1):
                continue
            kind = rng.choices(kinds, weights)[0]
            if self.service.kill_one(kind, rng):
                self.kills[kind] += 1
