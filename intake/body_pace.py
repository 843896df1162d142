"""How fast a request body must arrive, and the worker's other limits per connection.

gunicorn bounds a request's head in time (``keepalive``, under the gevent worker) but
not its body, so a client sending a body at 1 byte / 5 s held a connection for as
long as it liked, and ~500 of them stopped the source site. A body now has:

- a minimum rate: at least ``min_rate`` bytes a second on average over each
  ``window`` seconds (1 KiB/s over 60 s by default). A Tor circuit on a slow bridge
  moves tens of KiB a second; a stall of a whole minute means the circuit is gone.
  An attacker must now spend a real circuit's bandwidth on every connection it holds.
- an overall deadline: by default long enough for the largest upload allowed to arrive
  at 12 KiB/s (about 0.1 Mbit/s, a slow bridge's upload), and at least 4 h: 11.9 h for
  500 MiB. A source on a slow Snowflake bridge can send the whole limit; a body that
  takes longer is cut, and the source is told why (intake.app.ingest).

The limits are read from the environment by `worker_limits_from_environment`, which
deploy/gunicorn.conf.py calls at start (so a bad value stops the server with a clear
message) and the worker calls again in each process.

Imported by the gunicorn master (through the worker class), so standard library only.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

BODY_MIN_RATE_ENV = "INTAKE_BODY_MIN_BYTES_PER_SECOND"
BODY_WINDOW_ENV = "INTAKE_BODY_WINDOW_SECONDS"
BODY_DEADLINE_ENV = "INTAKE_BODY_DEADLINE_SECONDS"
CIRCUIT_IDS_ENV = "INTAKE_TOR_CIRCUIT_IDS"
CONNECTIONS_PER_CIRCUIT_ENV = "INTAKE_CONNECTIONS_PER_CIRCUIT"
REQUESTS_PER_CIRCUIT_ENV = "INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND"

MAX_UPLOAD_ENV = "INTAKE_MAX_UPLOAD_MIB"  # intake.config reads it for the app; here for the deadline

T = TypeVar("T")

MIB = 1024 * 1024
DEFAULT_MAX_UPLOAD_MIB = 500  # intake.config.Settings.max_request_bytes (tests/test_operator_settings_table.py)
SLOW_BRIDGE_BYTES_PER_SECOND = 12 * 1024  # the slowest circuit that must still carry the largest upload
SHORTEST_BODY_DEADLINE = 4 * 60 * 60


def body_deadline_for(max_upload_bytes: int) -> float:
    """The default deadline: the largest upload allowed at SLOW_BRIDGE_BYTES_PER_SECOND, at least 4 h."""
    return float(max(SHORTEST_BODY_DEADLINE, -(-max_upload_bytes // SLOW_BRIDGE_BYTES_PER_SECOND)))


# A connection that never carried a request counts as idle only after this long: a browser over tor
# opens one for a request that is on its way, and a stop must not close it just before it arrives.
FRESH_CONNECTION_WAIT = 5.0


class BodyTooSlowError(ConnectionResetError):
    """The body arrived slower than the minimum rate over a window, or not within the deadline
    (``past_deadline``); ``seconds`` is that window or deadline. The app tells the source which.

    A ConnectionResetError (errno ECONNRESET), so that everything between the socket and
    the app (gunicorn, Werkzeug, intake's upload parser) treats it as the client going away."""

    def __init__(self, reason: str, *, past_deadline: bool, seconds: float):
        super().__init__(errno.ECONNRESET, reason)
        self.past_deadline = past_deadline
        self.seconds = seconds

    def copy(self) -> BodyTooSlowError:
        """The same refusal, not raised yet: no traceback holding the frames it was raised from."""
        return BodyTooSlowError(self.strerror, past_deadline=self.past_deadline, seconds=self.seconds)


@dataclass(frozen=True)
class WorkerLimits:
    body_min_rate: int = 1024  # bytes a second, averaged over each window
    body_window: float = 60.0  # seconds
    body_deadline: float = body_deadline_for(DEFAULT_MAX_UPLOAD_MIB * MIB)  # seconds from the body's first byte to its last
    # "auto": a connection that opens with tor's PROXY line is counted by its circuit, others
    # as unknown; "required": refused without it; "off": never read (the line is a bad request).
    circuit_ids: str = "auto"
    connections_per_circuit: int = 12  # per worker; Tor Browser opens ~6 to a site
    requests_per_circuit: float = 4.0  # a second, per worker, in bursts of 4x that; a page is 2 requests without JavaScript


def _number(env: dict[str, str], name: str, default: float, kind: type, minimum: float) -> Any:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SystemExit(f"intake: {name} must be a number, not {text!r}") from None
    if value < minimum:
        raise SystemExit(f"intake: {name} must be at least {minimum}")
    return value


def count_from_environment(name: str, default: int, env: dict[str, str] | None = None) -> int:
    """A whole number of at least 1 from the environment (workers, connections per worker)."""
    return _number(dict(os.environ if env is None else env), name, default, int, 1)


def worker_limits_from_environment(env: dict[str, str] | None = None) -> WorkerLimits:
    env = dict(os.environ if env is None else env)
    defaults = WorkerLimits()
    circuit_ids = env.get(CIRCUIT_IDS_ENV) or defaults.circuit_ids
    if circuit_ids not in ("auto", "required", "off"):
        raise SystemExit(f"intake: {CIRCUIT_IDS_ENV} must be auto, required or off")
    limits = WorkerLimits(
        body_min_rate=_number(env, BODY_MIN_RATE_ENV, defaults.body_min_rate, int, 1),
        body_window=_number(env, BODY_WINDOW_ENV, defaults.body_window, float, 1),
        body_deadline=_number(env, BODY_DEADLINE_ENV, body_deadline_for(_max_upload_bytes(env)), float, 1),
        circuit_ids=circuit_ids,
        connections_per_circuit=_number(env, CONNECTIONS_PER_CIRCUIT_ENV, defaults.connections_per_circuit, int, 1),
        requests_per_circuit=_number(env, REQUESTS_PER_CIRCUIT_ENV, defaults.requests_per_circuit, float, 0.1),
    )
    if limits.body_deadline < limits.body_window:
        raise SystemExit(f"intake: {BODY_DEADLINE_ENV} must be at least {BODY_WINDOW_ENV}")
    return limits


def _max_upload_bytes(env: dict[str, str]) -> int:
    """The upload limit, for the deadline; a bad value is intake.config's to refuse, with its own words."""
    text = env.get(MAX_UPLOAD_ENV, "")
    return int(text) * MIB if text.isdigit() and int(text) >= 1 else DEFAULT_MAX_UPLOAD_MIB * MIB


class _BodyClock:
    """Bytes of one body per window, against the limits."""

    def __init__(self, limits: WorkerLimits, now: float):
        self._limits = limits
        self._deadline = now + limits.body_deadline
        self._window_end = now + limits.body_window
        self._in_window = 0

    def seconds_left(self, now: float) -> float:
        """Until the next check: the end of this window or the deadline."""
        return max(0.0, min(self._window_end, self._deadline) - now)

    def received(self, count: int, now: float) -> None:
        self._in_window += count
        self.check(now)

    def check(self, now: float) -> None:
        if now >= self._deadline:
            raise BodyTooSlowError("the request body did not arrive within the deadline", past_deadline=True,
                                   seconds=self._limits.body_deadline)
        if now >= self._window_end:
            needed = self._limits.body_min_rate * self._limits.body_window
            if self._in_window < needed:
                raise BodyTooSlowError("the request body arrived slower than the minimum rate", past_deadline=False,
                                       seconds=self._limits.body_window)
            # Windows follow each other; a pause is judged from where the last window ended.
            self._window_end += self._limits.body_window * max(1, int((now - self._window_end) // self._limits.body_window) + 1)
            self._in_window = 0


def _close_if_nothing_waiting(sock: socket.socket) -> bool:
    """Shut the connection down for both directions unless bytes have arrived that nobody has
    read yet (asked without reading or blocking). The greenlet waiting to read it then reads
    the end of the stream: the shutdown goes to the file descriptor through a socket object of
    its own, since gevent's own shutdown would wake that reader with an error instead."""
    try:
        waiting = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
        if waiting[0]:
            return False
        same = socket.socket(fileno=sock.fileno())
        try:
            same.shutdown(socket.SHUT_RDWR)
        finally:
            same.detach()  # the descriptor stays the handler's to close
    except OSError:
        pass  # closed already, by either end
    return True


class PacedSocket:
    """A connection's socket whose reads enforce the body limits while a body is read.

    gunicorn's worker reads heads, bodies and the remains of a body the app left
    unread through ``recv``; the worker calls `start_body` before the app runs a
    request that has a body and `end_body` after. Once a body was too slow, every
    later read fails too, so the connection is closed rather than drained.

    It also knows whether the connection is idle, so that a stopping worker can close it
    (`close_if_idle`) instead of waiting out the keepalive: no byte of a request has come
    since its last answer (`answered`, which the worker calls only when nothing of a next
    request is held in gunicorn's buffer), or, if it never carried a request, for
    FRESH_CONNECTION_WAIT since it opened (over tor, a request's first bytes follow the
    connection a circuit's round trip later).
    """

    def __init__(self, sock: socket.socket, limits: WorkerLimits, *, unread: bytes = b""):
        self._sock = sock
        self._limits = limits
        self._unread = unread  # read from the socket already (looking for tor's line): given out first
        self._clock: _BodyClock | None = None
        self.carried_a_body = False  # some request on this connection had a body (intake.memory_wiping)
        # What stopped the body, said again to any later read: a copy, never raised, so that no
        # traceback keeps the request's frames (and views of its buffers) alive with the connection.
        self.too_slow: BodyTooSlowError | None = None
        self._idle = not unread
        self._fresh_until = time.monotonic() + FRESH_CONNECTION_WAIT  # until it carried a request

    def request_began(self) -> None:
        self._idle = False
        self._fresh_until = 0.0

    def answered(self) -> None:
        """The last request's answer is out, and nothing of the next one has been read."""
        self._idle = True

    def close_if_idle(self) -> bool:
        """Close the connection for both directions if no request is under way on it, and no
        byte of one is waiting to be read: a client may always find an idle connection closed
        (RFC 9112, 9.3), and browsers send a request again when a connection they reused was."""
        if not self._idle or time.monotonic() < self._fresh_until:
            return False
        return _close_if_nothing_waiting(self._sock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def start_body(self) -> None:
        self._clock = _BodyClock(self._limits, time.monotonic())
        self.carried_a_body = True

    def end_body(self) -> None:
        self._clock = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self._unread and not self.too_slow:
            data, self._unread = self._unread[:size], self._unread[size:]
            self._idle = False
            return data
        return self._read(lambda: self._sock.recv(size, *flags), len)

    def recv_into(self, buffer: Any, nbytes: int = 0, *flags: int) -> int:
        """As ``recv``, into ``buffer`` (an upload's body, read straight into the app's buffer:
        intake.socket_body)."""
        if self._unread and not self.too_slow:
            with memoryview(buffer) as view:
                count = min(nbytes or len(view), len(self._unread))
                view[:count] = self._unread[:count]
            self._unread = self._unread[count:]
            self._idle = False
            return count
        return self._read(lambda: self._sock.recv_into(buffer, nbytes, *flags), int)

    def _read(self, read: Callable[[], T], count: Callable[[T], int]) -> T:
        """``read()`` from the socket, held to the body's rate and deadline while a body is read."""
        if self.too_slow:
            raise self.too_slow.copy()
        clock = self._clock
        if clock is None:
            data = read()
            self._idle = self._idle and not count(data)
            return data
        try:
            while True:
                self._sock.settimeout(max(0.001, clock.seconds_left(time.monotonic())))
                try:
                    data = read()
                except TimeoutError:
                    clock.check(time.monotonic())  # raises unless a window passed with enough data
                    continue
                clock.received(count(data), time.monotonic())
                return data
        except BodyTooSlowError as stopped:
            self.too_slow = stopped.copy()
            raise
        finally:
            self._sock.settimeout(None)
