"""Which Tor circuit a connection came from, and what each circuit may hold at once.

With ``HiddenServiceExportCircuitID haproxy`` tor opens every connection to the app
with a PROXY protocol v1 line naming the rendezvous circuit the request came over,
its global id in the low 32 bits of an address in ``fc00:dead:beef:4dad::/64``:

    PROXY TCP6 fc00:dead:beef:4dad::0:29a ::1 666 80\\r\\n

A circuit is the closest thing to "one client" an onion service can see, so the
worker (intake.gunicorn_worker) caps connections per circuit, and the source app
caps uploads in flight and codename derivations per circuit. The id itself is
kept only as a per-process keyed hash (`CircuitKey`), in memory, while a
connection from that circuit is open; it is never stored or logged, and the
WSGI environment the apps see carries no trace of it.

Imported by the gunicorn master (through the worker class), so standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import ipaddress
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

TOR_CIRCUIT_NETWORK = ipaddress.ip_network("fc00:dead:beef:4dad::/64")
PROXY_V1_MAX = 107  # the longest v1 line, CRLF included (haproxy's PROXY protocol spec)


@dataclass(frozen=True)
class CircuitKey:
    """A circuit as this process tells circuits apart: a keyed hash of its id (repr shows nothing)."""

    digest: bytes

    def __repr__(self) -> str:
        return "CircuitKey(...)"


# The key of the hash is drawn per process: equal circuits give equal keys within a worker,
# and nothing derived from an id means anything outside it.
_HASH_KEY = secrets.token_bytes(32)


def circuit_from_proxy_line(line: bytes) -> CircuitKey | None:
    """The circuit named by tor's PROXY v1 line (without or with its CRLF); None if the
    line is not one tor writes (another address, or not a PROXY line at all)."""
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 6 or parts[0] != b"PROXY" or parts[1] != b"TCP6":
        return None
    try:
        address = ipaddress.IPv6Address(parts[2].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if address not in TOR_CIRCUIT_NETWORK:
        return None
    circuit_id = int(address) & 0xFFFFFFFF
    digest = hashlib.blake2b(circuit_id.to_bytes(4, "big"), key=_HASH_KEY, digest_size=16).digest()
    return CircuitKey(digest)


# The circuit of the connection this greenlet serves (one greenlet per connection under
# gevent; greenlets have their own context). None: unknown (no PROXY line).
_current: contextvars.ContextVar[CircuitKey | None] = contextvars.ContextVar("intake_circuit", default=None)


def current_circuit() -> CircuitKey | None:
    return _current.get()


@contextlib.contextmanager
def serving_circuit(circuit: CircuitKey | None) -> Iterator[None]:
    token = _current.set(circuit)
    try:
        yield
    finally:
        _current.reset(token)


class CircuitBusyError(Exception):
    """This circuit, or everyone together, already holds as many as allowed."""


class CircuitLedger:
    """Counts what is held at once, in total and per circuit, within one worker process.

    `hold(circuit)` admits one more (a connection, an upload) or raises
    CircuitBusyError at once; the count drops when the block ends. An unknown
    circuit (None) counts only towards the total: without tor's PROXY line every
    connection looks alike.

    With a `rate`, `allow_request(circuit)` also meters a circuit's requests (a token
    bucket of `rate` a second, `burst` at once), so that one circuit cannot keep the
    worker busy answering "busy". A circuit's bucket lives while it holds something.
    """

    def __init__(self, per_circuit: int, total: int, *, rate: float | None = None, burst: int = 1):
        if per_circuit < 1 or total < 1 or (rate is not None and (rate <= 0 or burst < 1)):
            raise ValueError("a CircuitLedger needs per_circuit >= 1, total >= 1 and a positive rate and burst")
        self.per_circuit = per_circuit
        self.total = total
        self._rate = rate
        self._burst = burst
        self._held: Counter[CircuitKey] = Counter()
        self._buckets: dict[CircuitKey, tuple[float, float]] = {}  # circuit -> (tokens, when counted)
        self._count = 0
        self._lock = threading.Lock()  # gevent's lock under a gevent worker; held only around the counts

    def allow_request(self, circuit: CircuitKey | None) -> bool:
        """Take a token from the circuit's bucket; False when it is empty (always True
        without a rate, or for an unknown circuit)."""
        if self._rate is None or circuit is None:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(circuit, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - then) * self._rate)
            allowed = tokens >= 1
            self._buckets[circuit] = (tokens - 1 if allowed else tokens, now)
            return allowed

    @contextlib.contextmanager
    def hold(self, circuit: CircuitKey | None) -> Iterator[None]:
        with self._lock:
            if self._count >= self.total:
                raise CircuitBusyError("too many at once")
            if circuit is not None and self._held[circuit] >= self.per_circuit:
                raise CircuitBusyError("too many at once from one circuit")
            self._count += 1
            if circuit is not None:
                self._held[circuit] += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if circuit is not None:
                    self._held[circuit] -= 1
                    if not self._held[circuit]:
                        del self._held[circuit]  # nothing of a circuit outlives its last connection
                        self._buckets.pop(circuit, None)

    def held(self, circuit: CircuitKey | None = None) -> int:
        with self._lock:
            return self._count if circuit is None else self._held[circuit]
