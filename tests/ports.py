"""A loopback TCP port for a server a test starts by port number (tor, `intake serve`).

Binding port 0 hands out a port from the kernel's range for outgoing connections, and any
client's connection can take it between the probe and the server's bind: that once failed
the whole private Tor network ("Address already in use"). Ports here come from below that
range, at random, so parallel test workers rarely pick the same one.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000


def free_port() -> int:
    """A port free now on 127.0.0.1, below the kernel's range for outgoing connections."""
    outgoing_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(LOWEST, outgoing_low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
