"""A loopback TCP port for a server a test starts by port number (tor, `intake serve`).

Binding port 0 hands out a port from the kernel's range for outgoing connections, and any
client's connection can take it between the probe and the server's bind: that once failed
the whole private Tor network ("Address already in use"). Ports here come from outside that
range (below it from 10000, or above it), at random from the system's generator (tests that
seed `random` do not make two workers pick alike), and never the same twice in one process.
Under pytest-xdist each worker (and every process it starts, which inherits its environment)
takes only the ports of its own residue class: a server restarted on its port by one worker (the
soak) never finds it taken meanwhile by another worker's new server.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from pathlib import Path

LOWEST, HIGHEST = 10_000, 65_535
ATTEMPTS = 1000

_issued: set[int] = set()
_random = random.SystemRandom()


def _outside_outgoing_range() -> list[range]:
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    index, count = _this_worker()
    spans = [range(LOWEST, low), range(max(high + 1, LOWEST), HIGHEST + 1)]
    spans = [range(span.start + (index - span.start) % count, span.stop, count) for span in spans]
    return [span for span in spans if len(span)]


def _this_worker() -> tuple[int, int]:
    """(this pytest-xdist worker's number, how many there are); (0, 1) outside xdist."""
    name, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if name.startswith("gw") and name[2:].isdigit() and count.isdigit() and int(name[2:]) < int(count):
        return int(name[2:]), int(count)
    return 0, 1


def free_port() -> int:
    """A port free now on 127.0.0.1, outside the kernel's range for outgoing connections."""
    spans = _outside_outgoing_range()
    if not spans:
        raise RuntimeError("no loopback port outside the kernel's range for outgoing connections "
                           "(/proc/sys/net/ipv4/ip_local_port_range) is left for test servers")
    for _ in range(ATTEMPTS):
        span = _random.choices(spans, weights=[len(s) for s in spans])[0]
        port = _random.choice(span)
        if port in _issued:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                continue
        _issued.add(port)
        return port
    raise RuntimeError(f"no free loopback port found in {ATTEMPTS} tries")
