"""intake.tor end to end over the private Tor network of tests/tornet.py.

A tor launched by intake.tor joins the private network, publishes the source
and journalist onions in front of two tiny local HTTP servers, and the
network's client tor reaches them through its SocksPort by .onion address.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intake.onion_keys import generate_client_auth_keypair
from intake.tor import OnionServices
from tests.tornet import SOCKS_MISSING_CLIENT_AUTH, TRANSIENT_SOCKS_ERRORS, SocksError, TorNetwork

# The private Tor network (one per process, so all its tests in one group) runs after the parallel run,
# beside nothing but the abuse tests that leave the cores idle (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.xdist_group("tornet")]


class _Site(socketserver.ThreadingUnixStreamServer):
    """A tiny web site on a unix socket, where intake's onions point (as gunicorn does)."""
    daemon_threads = True

    def __init__(self, path: Path, body: bytes):
        self.body = body
        super().__init__(str(path), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    proxy_lines: list[bytes] = []  # tor's PROXY line of each connection (HiddenServiceExportCircuitID)

    def handle(self) -> None:
        # intake's tor opens each connection with a PROXY v1 line naming the circuit; intake's
        # worker reads and removes it (intake.circuits), and so does this site.
        first = self.rfile.peek(6)[:6]
        if first == b"PROXY ":
            _Handler.proxy_lines.append(self.rfile.readline(108))
        super().handle()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator:
    servers: list[_Site] = []

    def serve(body: bytes) -> Path:
        path = tmp_path / f"site{len(servers)}.sock"
        server = _Site(path, body)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return path

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _wait_for_socks_error(net: TorNetwork, url: str, timeout: float = 90.0) -> int:
    """Poll url until tor answers with a non-transient SOCKS error; return its code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = net.fetch(url, timeout=30)
        except SocksError as exc:
            if exc.code not in TRANSIENT_SOCKS_ERRORS:
                return exc.code
        else:
            pytest.fail(f"{url} answered {response.status} without client authorisation")
        time.sleep(0.5)
    pytest.fail(f"{url}: no definite answer within {timeout:.0f} s")


def test_source_and_journalist_onions_over_a_private_tor_network(tor_network, site, tmp_path):
    t0 = time.monotonic()
    source_socket = site(b"source interface")
    journalist_socket = site(b"journalist interface")
    public, private = generate_client_auth_keypair()
    progress: list[tuple[int, str]] = []
    services = OnionServices(tmp_path / "data", "launch",
                             extra_torrc=tor_network.torrc_lines_for_service(),
                             progress=lambda p, s: progress.append((p, s)))
    try:
        source, journalist = services.start(source_socket, journalist_socket, [public])
        assert services.wait_for_bootstrap(60), services.bootstrap.describe()
        assert progress[-1][0] == 100
        t_bootstrap = time.monotonic() - t0

        response = tor_network.wait_until_reachable(f"http://{source}/", timeout=90)
        assert (response.status, response.body) == (200, b"source interface")
        assert _Handler.proxy_lines and all(line.startswith(b"PROXY TCP6 ") for line in _Handler.proxy_lines)
        t_source = time.monotonic() - t0

        # The journalist onion: without the key tor cannot even read the descriptor.
        assert _wait_for_socks_error(tor_network, f"http://{journalist}/") == SOCKS_MISSING_CLIENT_AUTH
        tor_network.add_client_auth(journalist, private)
        try:
            response = tor_network.wait_until_reachable(f"http://{journalist}/", timeout=90)
            assert (response.status, response.body) == (200, b"journalist interface")
        finally:
            tor_network.remove_client_auth(journalist)
        t_journalist = time.monotonic() - t0
    finally:
        services.stop()
    print(f"\nnetwork up in {tor_network.bring_up_seconds:.1f} s; service bootstrapped "
          f"{t_bootstrap:.1f} s, source fetched {t_source:.1f} s, journalist fetched "
          f"{t_journalist:.1f} s after intake started its tor")


def test_a_relay_that_joins_late_is_fast_and_stable_at_once(tmp_path_factory):
    """A relay whose descriptor still says 0 bytes/s, or whose uptime is below the median, keeps
    the Fast and Stable flags: with three relays, losing them stalled tors at 95% ("Failed to find
    node for hop #2"), one run in three. A relay started after the others is both at once."""
    root = tmp_path_factory.mktemp("tornet_late")
    root.chmod(0o700)
    with TorNetwork.start(root) as net:
        net.add_relay("late")
        consensus = net.root / "auth" / "cached-microdesc-consensus"
        deadline = time.monotonic() + 60
        while "late" not in net.flags():
            net.nodes[-1].check_running()
            assert time.monotonic() < deadline, "the late relay never reached the consensus"
            time.sleep(0.2)
        for check in ("first consensus listing it", "next consensus (new bandwidths)"):
            if check.startswith("next"):
                listed_at = consensus.stat().st_mtime_ns
                while consensus.stat().st_mtime_ns == listed_at:
                    assert time.monotonic() < deadline, "no new consensus"
                    time.sleep(0.2)
            short = {name: sorted({"Fast", "Stable"} - node_flags) for name, node_flags in net.flags().items()
                     if not {"Fast", "Stable"} <= node_flags}
            assert not short, f"{check}: relays without Fast or Stable: {short}"
