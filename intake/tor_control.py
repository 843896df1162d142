"""The tor intake talks to: one it launches and owns, or the system's; the control connection.

intake.tor publishes the onion services through a :class:`TorControl`; this module knows how
to start tor, attach to it, speak to it and stop it, and nothing about the services. With
intake.system_torrc, they are the only modules that import stem.

A launched tor runs with the torrc intake writes (DataDirectory ``<data_dir>/tor/``, 0700),
is controlled over a unix socket in that directory with cookie authentication, and exits
when intake does (``TAKEOWNERSHIP``; and at once, by PR_SET_PDEATHSIG, if intake is killed
outright). Its output is read here and never written to disk: warnings are logged, and the
last one is quoted when tor fails.

stem traces every control command (ADD_ONION carries a service's secret key) at its own TRACE
level (5); stem's logger is pinned at WARNING here, so that trace is never emitted whatever the
root logger is set to. A command never goes into an error message, for the same reason.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import stem
import stem.connection
import stem.control
import stem.response

from intake.child_processes import dies_with_this_process
from intake.onion_keys import private_dir, write_private_file
from intake.told import Told, told

log = logging.getLogger("intake.tor")  # the same log as the services': one name for everything tor says

# stem logs raw control traffic (including ADD_ONION's secret key) at TRACE (5),
# and chatters at INFO when a controller closes: keep only its warnings.
logging.getLogger("stem").setLevel(logging.WARNING)

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0

ProgressCallback = Callable[[int, str], None]
T = TypeVar("T")


class TorError(Exception):
    """Tor could not do what intake asked; the message is one clear line."""


@dataclass(frozen=True)
class BootstrapStatus:
    """What tor last said about bootstrapping."""
    percent: int
    summary: str
    problem: str | None = None  # tor's warning and reason, when it reported one

    @property
    def done(self) -> bool:
        return self.percent >= 100

    def describe(self) -> str:
        text = f"{self.percent}% ({self.summary})"
        return f"{text}: {self.problem}" if self.problem else text


_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_bootstrap_phase(value: str) -> BootstrapStatus:
    """``GETINFO status/bootstrap-phase``'s answer as a status."""
    fields = {k: v.strip('"') for k, v in _KV.findall(value)}
    try:
        percent = int(fields.get("PROGRESS", "0"))
    except ValueError:
        percent = 0
    problem = None
    if value.startswith("WARN") or "WARNING" in fields:
        problem = fields.get("WARNING", "problem")
        if fields.get("REASON"):
            problem += f" (reason: {fields['REASON']})"
    return BootstrapStatus(percent, fields.get("SUMMARY", fields.get("TAG", "")), problem)


def torrc_quote(value: str | os.PathLike) -> str:
    """A path as a torrc value."""
    text = os.fspath(value)
    if any(c in text for c in "\n\r\0"):
        raise TorError(told("a path given to tor contains a line break"))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _find_tor(binary: str | None) -> str:
    if binary and os.sep in binary:
        return binary
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(binary or "tor", path=path)
    if not found:
        raise TorError(told("tor is not installed (install the Debian package `tor`)"))
    return found


class TorControl:
    """A control connection to tor, and the tor process itself when intake launched it.

    Callers hold :attr:`lock` around anything that uses :attr:`controller` (the methods here
    take it themselves)."""

    def __init__(self, tor_dir: Path, control_socket: Path, *, tor_binary: str | None = None,
                 progress: ProgressCallback | None = None) -> None:
        self.tor_dir = tor_dir
        self.control_socket = control_socket
        self.progress = progress
        self.lock = threading.RLock()
        self.controller: stem.control.Controller | None = None
        self._tor_binary = tor_binary
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._tor_output: collections.deque[str] = collections.deque(maxlen=40)
        self._bootstrap = BootstrapStatus(0, "not started")

    @property
    def bootstrap(self) -> BootstrapStatus:
        return self._bootstrap

    @property
    def pid(self) -> int | None:
        """The pid of the tor we launched (None when attached to the system's, or stopped)."""
        return self._process.pid if self._process else None

    # -- starting --

    def check_launchable(self) -> str:
        """The tor program to run; refuses before anything is written if tor cannot be launched here."""
        tor = _find_tor(self._tor_binary)
        if len(os.fsencode(self.control_socket)) > _SUN_PATH_MAX:
            raise TorError(told("the data directory path is too long for tor's control socket (keep {path} under "
                                "{limit} bytes)", path=self.control_socket, limit=_SUN_PATH_MAX))
        return tor

    def launch(self, torrc_text: str) -> None:
        """Start tor with ``torrc_text`` as its whole configuration, connect, take ownership."""
        tor = self.check_launchable()
        private_dir(self.tor_dir)
        torrc = self.tor_dir / "torrc"
        torrc.unlink(missing_ok=True)
        write_private_file(torrc, torrc_text.encode())
        self.control_socket.unlink(missing_ok=True)

        self._bootstrap = BootstrapStatus(0, "starting tor")
        try:
            self._process = subprocess.Popen(
                [tor, "--defaults-torrc", os.devnull, "-f", str(torrc)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches intake, which stops tor in order
                preexec_fn=dies_with_this_process(signal.SIGTERM),  # even if intake is killed outright
            )
        except OSError as exc:
            raise TorError(told("cannot run tor: {reason}", reason=exc.strerror)) from None
        self._reader = threading.Thread(target=self._read_output, name="tor-output", daemon=True)
        self._reader.start()

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            self.check_alive()
            if self.control_socket.exists():
                try:
                    self._connect()
                    break
                except TorError:
                    if time.monotonic() > deadline:
                        raise
            if time.monotonic() > deadline:
                raise TorError(told("tor did not open its control socket within {seconds:.0f} s{complaint}",
                                    seconds=_START_TIMEOUT, complaint=self._last_complaint()))
            time.sleep(0.05)
        self.msg("TAKEOWNERSHIP", told("tor refused TAKEOWNERSHIP"))

    def attach(self) -> None:
        """Connect to a tor that runs already (the system's)."""
        if not self.control_socket.exists():
            raise TorError(told("no tor control socket at {path} (is the system tor running with ControlSocket "
                                "enabled?)", path=self.control_socket))
        self._connect()

    def _connect(self) -> None:
        try:
            with warnings.catch_warnings():  # stem 1.8 calls Thread.setDaemon (deprecated)
                warnings.simplefilter("ignore", DeprecationWarning)
                controller = stem.control.Controller.from_socket_file(str(self.control_socket))
        except stem.SocketError as exc:
            if "ermission" in str(exc):
                raise TorError(told("cannot open tor's control socket {path}: permission denied (is intake's user in "
                                    "tor's group, e.g. debian-tor?)", path=self.control_socket)) from None
            raise TorError(told("cannot open tor's control socket {path}: {reason}", path=self.control_socket,
                                reason=exc)) from None
        try:
            controller.authenticate()
        except stem.connection.AuthenticationFailure as exc:
            controller.close()
            raise TorError(told("tor refused intake's control connection ({reason}); check CookieAuthentication "
                                "and the cookie file's permissions", reason=type(exc).__name__)) from None
        self.controller = controller

    # -- tor's output --

    def check_alive(self) -> None:
        """Raise TorError (with tor's last complaint) if the tor we launched exited."""
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            if self._reader is not None:
                self._reader.join(2)
            raise TorError(told("tor exited (status {status}){complaint}", status=code, complaint=self._last_complaint()))

    def _read_output(self) -> None:
        process = self._process
        if process is None or process.stdout is None:
            return
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._tor_output.append(line)
            if "[err]" in line or "[warn]" in line:
                if "running Tor as root" not in line:
                    log.warning("tor: %s", line.split("] ", 1)[-1])
            else:
                log.debug("tor: %s", line)

    def _last_complaint(self) -> str:
        """': <tor's last warning or error>', preferring the warning that an
        error such as "Reading config failed--see warnings above" points to."""
        complaints = [line.split("] ", 1)[-1] for line in self._tor_output
                      if ("[err]" in line or "[warn]" in line) and "running Tor as root" not in line]
        while len(complaints) > 1 and "see warnings above" in complaints[-1]:
            complaints.pop()
        return ": " + complaints[-1].strip() if complaints else ""

    # -- commands --

    def send(self, command: str, what: Told) -> stem.response.ControlMessage:
        """Send a raw control command and return tor's reply, accepted or not.
        The command itself never goes into an error (it may carry a key)."""
        if self.controller is None:
            raise TorError(told("tor is not running"))
        try:
            return self.controller.msg(command)
        except stem.ControllerError as exc:
            raise TorError(told("{what}: lost the connection to tor ({error})", what=what, error=type(exc).__name__)) from None

    def msg(self, command: str, what: Told) -> stem.response.ControlMessage:
        """Send a raw control command; raise TorError(what: tor's reply) if refused."""
        reply = self.send(command, what)
        if not reply.is_ok():
            raise TorError(told("{what}: tor said {reply!r}", what=what, reply=str(reply).strip()))
        return reply

    def set_bootstrap(self, status: BootstrapStatus) -> None:
        changed = (status.percent, status.summary, status.problem) != (
            self._bootstrap.percent, self._bootstrap.summary, self._bootstrap.problem)
        self._bootstrap = status
        if changed and self.progress is not None:
            self.progress(status.percent, status.summary)

    def wait_for_bootstrap(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for tor to reach the Tor network, telling ``progress``
        of each change; False on timeout. Raises TorError if tor died."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.controller is None:
                    raise TorError(told("tor is not running"))
                self.check_alive()
                try:
                    value = self.controller.get_info("status/bootstrap-phase")
                except stem.ControllerError as exc:
                    raise TorError(told("lost the connection to tor: {reason}", reason=exc)) from None
            self.set_bootstrap(parse_bootstrap_phase(value))
            if self._bootstrap.done:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def check_running(self) -> None:
        """Raise TorError if our tor exited or the control connection to tor is lost."""
        with self.lock:
            if self.controller is None:
                raise TorError(told("tor is not running"))
            self.check_alive()
            if not self.controller.is_alive():
                raise TorError(told("lost the connection to tor's control socket"))

    @property
    def connected(self) -> bool:
        with self.lock:
            return self.controller is not None and self.controller.is_alive()

    def getinfo(self, key: str) -> str:
        return self._ask(f"GETINFO {key}", lambda controller: controller.get_info(key))

    def getconf(self, key: str) -> dict[str, list[str]]:
        return self._ask(f"GETCONF {key}", lambda controller: controller.get_conf_map(key))

    def _ask(self, what: str, question: Callable[[stem.control.Controller], T]) -> T:
        """A read-only question to tor, under the lock; a lost connection is a TorError naming ``what``."""
        with self.lock:
            if self.controller is None:
                raise TorError(told("tor is not running"))
            try:
                return question(self.controller)
            except stem.ControllerError as exc:
                raise TorError(told("{what} failed: {reason}", what=what, reason=str(exc))) from None

    # -- stopping --

    def close_controller(self) -> None:
        controller, self.controller = self.controller, None
        if controller is not None:
            try:
                controller.close()
            except Exception:  # closing must never stop a shutdown or a reconnection
                pass

    def stop(self) -> None:
        """Close the connection, and stop the tor we launched (no orphan). Idempotent."""
        with self.lock:
            self.close_controller()
            process, self._process = self._process, None
            if process is not None:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(_STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.join(5)  # tor is gone: its output ends
        if process is not None and process.stdout:
            process.stdout.close()
