"""A private Tor network on 127.0.0.1 for end-to-end tests (a pytest plugin).

Registered in ``tests/conftest.py`` through ``pytest_plugins``; it provides the
session-scoped fixture ``tor_network`` (a :class:`TorNetwork`). Tests that use
it should be marked ``@pytest.mark.slow``.

Topology
--------
Four tor processes plus a client, all on 127.0.0.1, all with
``TestingTorNetwork 1`` and a ``DirAuthority`` line naming only our authority,
so none of them can ever try the public Tor network::

    auth    directory authority: ORPort + DirPort, votes every 10 s
    relay1  relay (Guard, HSDir, middle, intro and rendezvous point)
    relay2  relay
    relay3  relay
    client  SocksPort (with ExtendedErrors) + ControlSocket, no relay

A v3 onion service needs at least four relays in the consensus (the authority
counts as one), so this is the smallest network that serves one. The onion
service itself is a sixth tor, started by the test (``intake.tor`` in
``launch`` mode with :meth:`TorNetwork.torrc_lines_for_service`).

Why each option is there (see also ../shared/tor-testnet.md)
-------------------------------------------------------------
Every node:
  ``TestingTorNetwork 1``           private-network mode: allows 127.0.0.1 relays,
                                    fast timings, no distinct-subnet rules. Tor refuses
                                    it without ``DirAuthority`` lines.
  ``DirAuthority ...``              our only authority (orport, v3 identity from
                                    tor-gencert's certificate, RSA fingerprint from
                                    ``tor --list-fingerprint``): this replaces the
                                    public authorities, so nothing public is contacted.
  ``GeoIPFile /nonexistent``        skip loading GeoIP (~1 s and tens of MB per process;
  ``GeoIPv6File /nonexistent``      nothing here needs country codes).
  ``ShutdownWaitLength 0``          relays exit at once on SIGTERM/SIGINT.
  ``__OwningControllerProcess``     the pytest process: if it dies without tearing
                                    down, every tor exits by itself (checked ~15 s).
  ``Log notice file``               a log per node in its directory, for diagnostics.
Authority:
  ``AuthoritativeDirectory 1``, ``V3AuthoritativeDirectory 1``: it votes.
  ``Address 127.0.0.1`` + ``DirPort``: required for an authority.
  ``AssumeReachable 1``             skip reachability self-tests (they need a
                                    consensus that does not exist yet).
  ``TestingV3AuthInitial*`` 5/2/2 and ``V3Auth*`` 10/2/2, ``V3AuthNIntervalsValid 2``:
                                    first consensus after ~5 s, a new one every 10 s;
                                    vote + dist delay must stay under half the interval.
  ``TestingDirAuthVoteGuard *``     every relay is a Guard (else no onion circuits),
  ``TestingDirAuthVoteHSDir *``     every relay is an HSDir (descriptors need them).
  ``AuthDirFastGuarantee 1``        every relay is Fast and Stable, whatever it measured:
  ``AuthDirVoteStableGuarantee*`` 0 otherwise a relay whose descriptor still says 0 bytes/s
                                    (the others say 1) loses Fast, and one with less than
                                    the median uptime loses Stable; with one relay short
                                    of each, a tor needing a Fast and Stable third hop
                                    finds none ("Failed to find node for hop #2") and
                                    stalls at 95%.
Relays:
  ``AssumeReachable 1``             publish at once, without self-testing.
  ``DirCache 0``                    clients fetch directory info from the authority
                                    only (relay dir caches stall a fresh client ~10 s).
  ``ExitRelay 0``                   onion traffic never needs exits.
Client:
  ``SocksPort 127.0.0.1:N ExtendedErrors``: SOCKS5 replies carry onion-specific
                                    errors (0xF4 = missing client authorisation, ...).
  ``ControlSocket`` + cookie        for ``ONION_CLIENT_AUTH_ADD`` (client auth keys).

The client and services are started only once the authority's consensus lists
every relay (counted in its ``cached-microdesc-consensus``): starting earlier
costs 10-30 s of stalls. Until a service's descriptor is published a SOCKS
connect fails fast with 0xF0, so :meth:`TorNetwork.wait_until_reachable` polls.

Ports are picked free at run time; directories come from ``tmp_path_factory``;
teardown stops only the processes started here (terminate, then kill).
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.ports import free_port

RELAYS = 3
NETWORK_TIMEOUT = 90.0
NEWNYM_INTERVAL = 10.5  # tor delays a NEWNYM that comes sooner after the last (MAX_SIGNEWNYM_RATE, 10 s)

SOCKS_ERRORS = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
    0xF0: "onion service descriptor can not be found",
    0xF1: "onion service descriptor is invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service missing client authorization",
    0xF5: "onion service wrong client authorization",
    0xF6: "onion service invalid address",
    0xF7: "onion service introduction timed out",
}
# Replies that mean "not yet" while a descriptor is being published or circuits built.
TRANSIENT_SOCKS_ERRORS = {0x01, 0x04, 0x06, 0xF0, 0xF2, 0xF3, 0xF7}
SOCKS_MISSING_CLIENT_AUTH = 0xF4
SOCKS_WRONG_CLIENT_AUTH = 0xF5


class TorNetworkError(RuntimeError):
    """The private network could not be brought up (message includes log tails)."""


class SocksError(OSError):
    """The SOCKS proxy (the client tor) refused the connection."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"SOCKS5 error 0x{code:02X}: {SOCKS_ERRORS.get(code, 'unknown')}")


# --- SOCKS5 and HTTP over it (stdlib only) ---------------------------------------

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("SOCKS proxy closed the connection")
        data += chunk
    return data


def socks5_connect(socks_port: int, host: str, port: int, timeout: float = 60.0) -> socket.socket:
    """A TCP connection to host:port through the SOCKS5 proxy on 127.0.0.1:socks_port.
    The host name is sent to the proxy (SOCKS5h): .onion names resolve inside tor."""
    sock = socket.create_connection(("127.0.0.1", socks_port), timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
        if _recv_exact(sock, 2) != b"\x05\x00":
            raise ConnectionError("SOCKS proxy refused no-authentication")
        name = host.encode("idna")
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
        version, reply, _rsv, atyp = _recv_exact(sock, 4)
        if version != 5:
            raise ConnectionError("not a SOCKS5 reply")
        if reply != 0:
            raise SocksError(reply)
        if atyp == 1:
            _recv_exact(sock, 4 + 2)
        elif atyp == 4:
            _recv_exact(sock, 16 + 2)
        elif atyp == 3:
            _recv_exact(sock, _recv_exact(sock, 1)[0] + 2)
        return sock
    except BaseException:
        sock.close()
        raise


class SocksHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` whose socket goes through tor's SocksPort."""

    def __init__(self, host: str, port: int = 80, *, socks_port: int, timeout: float = 60.0):
        super().__init__(host, port, timeout=timeout)
        self.socks_port = socks_port

    def connect(self) -> None:
        self.sock = socks5_connect(self.socks_port, self.host, self.port, self.timeout)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


# --- tor processes ------------------------------------------------------------------

def _tor_binaries() -> tuple[str, str]:
    """Paths of tor and tor-gencert."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin"
    tor, gencert = shutil.which("tor", path=path), shutil.which("tor-gencert", path=path)
    if not tor or not gencert:
        raise TorNetworkError("tor and tor-gencert are needed (Debian package `tor`)")
    return tor, gencert


def _check_private(torrc: str) -> None:
    """Refuse to start any tor that could try the public Tor network."""
    lines = [line.strip() for line in torrc.splitlines()]
    private = "TestingTorNetwork 1" in lines and any(l.startswith("DirAuthority ") for l in lines)
    if not (private or "DisableNetwork 1" in lines):
        raise TorNetworkError("refusing to start a tor without the private DirAuthority lines")


@dataclass
class TorNode:
    """One tor process of the network."""
    name: str
    data_dir: Path
    torrc: str
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "notice.log"

    def start(self, tor: str) -> None:
        _check_private(self.torrc)
        path = self.data_dir / "torrc"
        path.write_text(self.torrc)
        # Until its Log line takes effect (or when the config is refused) tor writes to stdout.
        with open(self.data_dir / "console.log", "wb") as console:
            self.process = subprocess.Popen(
                [tor, "--defaults-torrc", os.devnull, "-f", str(path)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_text().splitlines()[-lines:]
        err = (self.data_dir / "console.log")
        if err.exists():
            text += err.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  {self.name}: {line}" for line in text)

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise TorNetworkError(f"{self.name} exited with status {self.process.returncode}")

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Control:
    """A minimal tor control-port client (the app's stem code lives in intake.tor)."""

    def __init__(self, path: Path, cookie: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.request(f"AUTHENTICATE {cookie.read_bytes().hex()}")

    def request(self, command: str) -> list[str]:
        """Send one command; return the reply lines; raise on a non-2xx reply."""
        self.sock.sendall(command.encode() + b"\r\n")
        lines = []
        while True:
            line = self.file.readline().decode(errors="replace").rstrip("\r\n")
            if not line:
                raise ConnectionError("tor closed the control connection")
            code, sep, text = line[:3], line[3:4], line[4:]
            if code.startswith("6"):
                continue  # asynchronous event
            lines.append(text)
            if sep == "+":  # data reply until a lone "."
                while (data := self.file.readline().decode(errors="replace").rstrip("\r\n")) != ".":
                    lines.append(data)
            if sep == " ":
                if not code.startswith("2"):
                    raise RuntimeError(f"tor control: {code} {text}")
                return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class TorNetwork:
    """A running private Tor network; see the module docstring."""
    root: Path
    socks_port: int = 0
    dir_authority_line: str = ""
    nodes: list[TorNode] = field(default_factory=list)
    bring_up_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    _control: _Control | None = None
    _client_auths: dict[str, str] = field(default_factory=dict)
    _last_newnym: float = float("-inf")

    # -- for services --

    def torrc_lines_for_service(self) -> list[str]:
        """Lines a service-side tor appends to its torrc to join this network (and only it)."""
        return [
            "TestingTorNetwork 1",
            self.dir_authority_line,
            "GeoIPFile /nonexistent",
            "GeoIPv6File /nonexistent",
        ]

    def write_service_torrc(self, path: Path) -> Path:
        """torrc_lines_for_service() in a file, for a service started as a subprocess
        (e.g. ``intake serve`` told to append it to the torrc of the tor it launches)."""
        path.write_text("\n".join(self.torrc_lines_for_service()) + "\n")
        return path

    # -- for clients --

    @property
    def client(self) -> TorNode:
        return next(n for n in self.nodes if n.name == "client")

    def http_connection(self, host: str, port: int = 80, timeout: float = 60.0) -> SocksHTTPConnection:
        """An ``http.client`` connection to host:port through the client's SocksPort."""
        return SocksHTTPConnection(host, port, socks_port=self.socks_port, timeout=timeout)

    def fetch(self, url: str, method: str = "GET", body: bytes | None = None,
              headers: dict[str, str] | None = None, timeout: float = 60.0) -> Response:
        """One HTTP request through the client tor (raises SocksError if tor refuses)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("fetch() takes http:// URLs")
        conn = self.http_connection(parts.hostname, parts.port or 80, timeout)
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            conn.close()

    def wait_until_reachable(self, url: str, timeout: float = 90.0, *, as_new_client: bool = False,
                             timeout_each: float = 60.0, **kwargs) -> Response:
        """fetch(url) until the service answers (its descriptor may not be published yet).
        Non-transient SOCKS errors (e.g. 0xF4, missing client authorisation) raise at once.

        as_new_client: before each try, make the client forget what it knows of onion services
        (forget_onions), as a visitor arriving now would. A client that fetched the service's old
        descriptor keeps failing on its dead introduction points, and tor will not ask the same
        directories again for 15 minutes."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if as_new_client:
                self.forget_onions()
            try:
                return self.fetch(url, timeout=min(timeout_each, max(1.0, deadline - time.monotonic())), **kwargs)
            except SocksError as exc:
                if exc.code not in TRANSIENT_SOCKS_ERRORS:
                    raise
                last = exc
            except (ConnectionError, socket.timeout, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"{url} not reachable within {timeout:.0f} s (last error: {last})")

    def control(self, command: str) -> list[str]:
        """A raw control command on the client tor."""
        if self._control is None:
            self._control = _Control(self.client.data_dir / "control",
                                     self.client.data_dir / "control_auth_cookie")
        return self._control.request(command)

    def forget_onions(self) -> None:
        """NEWNYM: tor drops its onion descriptors, introduction-point failures and the record of
        which directories it asked, and the client-authorisation keys added over the control port,
        which are given back at once. Tor delays a NEWNYM that comes within 10 s of the last one
        (it would then land later, in someone else's test): it is sent only once 10 s have passed."""
        time.sleep(max(0.0, self._last_newnym + NEWNYM_INTERVAL - time.monotonic()))
        self.control("SIGNAL NEWNYM")
        self._last_newnym = time.monotonic()
        for onion_address, private_b32 in self._client_auths.items():
            self._add_client_auth(onion_address, private_b32)

    def add_client_auth(self, onion_address: str, private_b32: str) -> None:
        """Give the client tor a v3 client-authorisation key for onion_address."""
        self._add_client_auth(onion_address, private_b32)
        self._client_auths[onion_address] = private_b32

    def _add_client_auth(self, onion_address: str, private_b32: str) -> None:
        raw = base64.b32decode(private_b32.upper() + "=" * (-len(private_b32) % 8))
        address = onion_address.removesuffix(".onion")
        self.control(f"ONION_CLIENT_AUTH_ADD {address} x25519:{base64.b64encode(raw).decode()}")

    def remove_client_auth(self, onion_address: str) -> None:
        self._client_auths.pop(onion_address, None)
        self.control(f"ONION_CLIENT_AUTH_REMOVE {onion_address.removesuffix('.onion')}")

    # -- lifecycle --

    @classmethod
    def start(cls, root: Path, relays: int = RELAYS, timeout: float = NETWORK_TIMEOUT) -> "TorNetwork":
        net = cls(root=root)
        try:
            net._bring_up(relays, timeout)
        except BaseException as exc:
            tails = net.describe()
            net.stop()
            if isinstance(exc, Exception):
                raise TorNetworkError(f"{exc}\nlast log lines:\n{tails}") from exc
            raise
        return net

    def _bring_up(self, relays: int, timeout: float) -> None:
        tor, gencert_binary = _tor_binaries()
        t0 = time.monotonic()
        deadline = t0 + timeout
        # 1. Authority keys: v3 identity (tor-gencert) and relay identity, in parallel.
        auth_dir = self._node_dir("auth")
        (auth_dir / "keys").mkdir(mode=0o700)
        auth_or, auth_dir_port = free_port(), free_port()
        gencert = subprocess.Popen(
            [gencert_binary, "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
             "-a", f"127.0.0.1:{auth_dir_port}",
             "-i", str(auth_dir / "keys" / "authority_identity_key"),
             "-s", str(auth_dir / "keys" / "authority_signing_key"),
             "-c", str(auth_dir / "keys" / "authority_certificate")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        fingerprint = subprocess.Popen(
            [tor, "--defaults-torrc", os.devnull, "-f", os.devnull, "--ignore-missing-torrc",
             "--DisableNetwork", "1", "--ORPort", f"127.0.0.1:{auth_or}",
             "--DataDirectory", str(auth_dir), "--Log", "err stderr", "--list-fingerprint"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, gencert_err = gencert.communicate(b"\n", timeout=60)
        _, fp_err = fingerprint.communicate(timeout=60)
        if gencert.returncode or fingerprint.returncode:
            raise TorNetworkError(f"authority key generation failed: {gencert_err!r} {fp_err!r}")
        cert = (auth_dir / "keys" / "authority_certificate").read_text()
        v3ident = next(l.split()[1] for l in cert.splitlines() if l.startswith("fingerprint "))
        rsa_fpr = (auth_dir / "fingerprint").read_text().split()[1]
        self.dir_authority_line = (f"DirAuthority auth orport={auth_or} no-v2 v3ident={v3ident} "
                                   f"127.0.0.1:{auth_dir_port} {rsa_fpr}")
        self.timings["keys"] = time.monotonic() - t0

        # 2. Authority and relays, all at once.
        self.nodes.append(TorNode("auth", auth_dir, "\n".join(self._common("auth", auth_dir) + [
            "SocksPort 0",
            f"ORPort 127.0.0.1:{auth_or}",
            f"DirPort 127.0.0.1:{auth_dir_port}",
            "Address 127.0.0.1",
            "AuthoritativeDirectory 1",
            "V3AuthoritativeDirectory 1",
            "AssumeReachable 1",
            "ExitRelay 0",
            "TestingV3AuthInitialVotingInterval 5",
            "TestingV3AuthInitialVoteDelay 2",
            "TestingV3AuthInitialDistDelay 2",
            "V3AuthVotingInterval 10",
            "V3AuthVoteDelay 2",
            "V3AuthDistDelay 2",
            "V3AuthNIntervalsValid 2",
            "TestingDirAuthVoteGuard *",
            "TestingDirAuthVoteHSDir *",
            "AuthDirFastGuarantee 1",
            "AuthDirVoteStableGuaranteeMinUptime 0",
            "AuthDirVoteStableGuaranteeMTBF 0",
        ]) + "\n"))
        for i in range(1, relays + 1):
            self.nodes.append(self._relay(f"relay{i}"))
        for node in self.nodes:
            node.start(tor)

        # 3. Wait until the authority's consensus lists every relay.
        expected = {n.name for n in self.nodes}
        while True:
            for node in self.nodes:
                node.check_running()
            listed = set(self.flags())
            if expected <= listed:
                break
            if time.monotonic() > deadline:
                raise TorNetworkError(f"consensus lists {sorted(listed)} after {timeout:.0f} s, "
                                      f"expected {sorted(expected)}")
            time.sleep(0.2)
        self.timings["consensus"] = time.monotonic() - t0

        # 4. The client, once the consensus is complete.
        d = self._node_dir("client")
        self.socks_port = free_port()
        client = TorNode("client", d, "\n".join(self._common("client", d) + [
            f"SocksPort 127.0.0.1:{self.socks_port} ExtendedErrors",
            f'ControlSocket unix:"{d / "control"}"',
            "CookieAuthentication 1",
        ]) + "\n")
        self.nodes.append(client)
        client.start(tor)
        while "Bootstrapped 100%" not in client.log_text():
            client.check_running()
            if time.monotonic() > deadline:
                raise TorNetworkError(f"the client did not bootstrap within {timeout:.0f} s")
            time.sleep(0.1)
        self.bring_up_seconds = self.timings["client"] = time.monotonic() - t0

    def _node_dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(mode=0o700)
        return d

    def _common(self, name: str, d: Path) -> list[str]:
        return [
            "TestingTorNetwork 1",
            f'DataDirectory "{d}"',
            f"Nickname {name}",
            self.dir_authority_line,
            "GeoIPFile /nonexistent",
            "GeoIPv6File /nonexistent",
            "ShutdownWaitLength 0",
            f"__OwningControllerProcess {os.getpid()}",
            f"Log notice file {d / 'notice.log'}",  # (Log takes no quotes)
        ]

    def _relay(self, name: str) -> TorNode:
        d = self._node_dir(name)
        return TorNode(name, d, "\n".join(self._common(name, d) + [
            "SocksPort 0",
            f"ORPort 127.0.0.1:{free_port()}",
            "Address 127.0.0.1",
            "AssumeReachable 1",
            "DirCache 0",
            "ExitRelay 0",
        ]) + "\n")

    def add_relay(self, name: str) -> None:
        """Start one more relay, as one that joins a running network."""
        node = self._relay(name)
        self.nodes.append(node)
        node.start(_tor_binaries()[0])

    def flags(self) -> dict[str, set[str]]:
        """Each node's flags in the authority's latest consensus."""
        flags: dict[str, set[str]] = {}
        name = ""
        consensus = self.root / "auth" / "cached-microdesc-consensus"
        if not consensus.exists():
            return flags
        for line in consensus.read_text(errors="replace").splitlines():
            if line.startswith("r "):
                name = line.split()[1]
            elif line.startswith("s ") and name:
                flags[name] = set(line.split()[1:])
        return flags

    def stop(self) -> None:
        """Stop every tor this network started (and nothing else)."""
        if self._control is not None:
            try:
                self._control.close()
            except OSError:
                pass
            self._control = None
        for node in reversed(self.nodes):
            node.terminate()
        for node in reversed(self.nodes):
            node.wait_stopped()

    def describe(self) -> str:
        return "\n".join(n.log_tail() for n in self.nodes)

    def __enter__(self) -> "TorNetwork":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def tor_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorNetwork]:
    """A private Tor network (1 authority, 3 relays, a client with a SocksPort)."""
    root = tmp_path_factory.mktemp("tornet")  # no spaces: tor's Log option takes no quotes
    root.chmod(0o700)
    try:
        net = TorNetwork.start(root)
    except TorNetworkError as exc:
        pytest.fail(f"private Tor network did not come up: {exc}", pytrace=False)
    print(f"\nprivate Tor network up in {net.bring_up_seconds:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in net.timings.items())})")
    try:
        yield net
    finally:
        net.stop()
