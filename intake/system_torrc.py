"""What the system tor's torrc already publishes (``intake serve --tor system``).

deploy/torrc lets the operator publish the source service from the system torrc (a
``HiddenServiceDir`` holding intake's onion/source.key), because only a torrc service gets
tor's introduction-point DoS defence. Before adding the source service itself, intake asks
tor here whether a torrc service already forwards to intake's socket, and with which address.
Read-only questions on a connection intake.tor_control opened; the caller holds its lock.
"""

from __future__ import annotations

import time
from pathlib import Path

import stem
import stem.control

DESCRIPTOR_WAIT = 10.0  # seconds a torrc service forwarding to intake's socket may take to build its descriptor


def hostname_files(controller: stem.control.Controller | None, target: str) -> list[Path]:
    """The hostname file of each torrc service with a HiddenServicePort to ``target``."""
    try:
        reply = controller.msg("GETCONF HiddenServiceOptions") if controller else None
    except stem.ControllerError:
        return []
    if reply is None or not reply.is_ok():
        return []
    found, directory = [], None
    for _code, _div, content in reply.content():  # in torrc order: each Dir, then its options
        key, _, value = content.partition("=")
        if key == "HiddenServiceDir":
            directory = Path(value.strip().strip('"'))
        elif key == "HiddenServicePort" and directory is not None and value.split()[-1] == target:
            found.append(directory / "hostname")
    return found


def publishes(controller: stem.control.Controller, address: str, target: str, wait: float = DESCRIPTOR_WAIT) -> bool:
    """Whether the torrc already publishes ``address`` (forwarding to ``target``).

    The service's hostname file says so when intake may read it; tor's own directory usually
    is not readable (Debian's is debian-tor's, 0700), and then tor answers with the service's
    descriptor once it has built it, within seconds of a torrc service starting (waited for,
    only when a torrc service forwards to intake's socket)."""
    hostnames = hostname_files(controller, target)
    if not hostnames:
        return False
    for hostname in hostnames:
        try:
            if hostname.read_text().strip() == address:
                return True
        except OSError:
            break  # not ours to read: ask tor
    else:
        return False  # every service forwarding to our socket has another address
    deadline = time.monotonic() + wait
    while True:
        try:
            controller.get_info(f"hs/service/desc/id/{address.removesuffix('.onion')}")
            return True
        except stem.ControllerError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(0.25)
