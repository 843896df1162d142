"""Playing tor's side of ``HiddenServiceExportCircuitID haproxy`` in tests: every
connection opens with the PROXY line naming the circuit it came over."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

TOR_ENV = {"INTAKE_TOR_CIRCUIT_IDS": "required"}


def tor_line(circuit_id: int, virtual_port: int = 80) -> bytes:
    """The line tor writes (export_hs_client_circuit_id in tor's hs_circuit.c)."""
    return (
        f"PROXY TCP6 fc00:dead:beef:4dad::{circuit_id >> 16:x}:{circuit_id & 0xFFFF:x} ::1 "
        f"{circuit_id & 0xFFFF} {virtual_port}\r\n"
    ).encode()


def circuit_connection(circuit_id: int) -> Callable[..., http.client.HTTPConnection]:
    """An http.client connection class for SourceClient(connection=...) over one circuit."""

    class CircuitConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            self.sock.sendall(tor_line(circuit_id))

    return CircuitConnection


def open_over_circuit(port: int, circuit_id: int | None, timeout: float = 10) -> socket.socket:
    """A raw connection to the server; with the circuit's line first unless circuit_id is None."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if circuit_id is not None:
        sock.sendall(tor_line(circuit_id))
    return sock
