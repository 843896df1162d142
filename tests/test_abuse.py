"""Abusive clients against the real app under real gunicorn (deploy/gunicorn.conf.py),
each attack run twice: as tor delivers it with ``HiddenServiceExportCircuitID haproxy``
(every connection opens with a PROXY line naming its circuit), and without that line.

- 2,000 connections each send a request body at 1 byte / 5 s (to the login form, to the
  upload form without a session, and as a logged-in source's upload) and reconnect when
  dropped, while another source loads pages and sends messages: p95 < 1 s.
- 32 codename logins at once, again and again (each as soon as the last was answered and
  a Tor round trip passed), from one circuit, while sources on other
  circuits log in: every genuine login succeeds, p95 < 2 s. Without circuit ids the
  attacker cannot be told from anyone else: pages still load promptly and every login
  is answered (busy or not) at once; genuine logins are not promised.

Loopback only, bounded in connections and time. The test process raises its file limit
for the 2,000 connections (gunicorn inherits it).
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import resource
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest

from intake.codename import generate_codename
from tests.fixtures_circuits import TOR_ENV, circuit_connection, open_over_circuit, tor_line
from tests.fixtures_server import IntakeServer, SourceClient, encode_multipart, run_intake_server

# Latencies under attack are what it measures: it runs after the parallel run, one test at a time,
# beside only the private Tor network's tests; the login floods, which fill both cores with key
# derivations, by themselves (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.xdist_group("abuse")]

DRIBBLERS = 2000
DRIBBLE_INTERVAL = 5.0
PROBE_START = 12.0  # every dribbler is connected by then
PROBE_SECONDS = 22.0
ATTACK_SECONDS = PROBE_START + PROBE_SECONDS + 2.0  # the attack holds on until the probe is done
# Of DRIBBLERS, uploads of a logged-in source: fewer than a worker's upload slots (150).
# Without circuit ids, more would take every slot until the body rate cuts them (60 s).
LOGGED_IN_DRIBBLERS = 100
ATTACK_CIRCUITS = 40  # with circuit ids, the dribblers come over this many circuits
P95_PAGES = 1.0
LOGIN_ATTACKERS = 32
# Over loopback an answer comes back at once; over an onion circuit (6 hops) a round trip
# takes ~0.3 s at best, so each of the 32 asks again no sooner than that.
TOR_ROUND_TRIP = 0.3
LOGIN_SECONDS = 25.0
P95_LOGINS = 2.0
# Distinctive ids, searched for afterwards in the log and the store.
PROBE_CIRCUIT = 0xC1C1D2D2
GENUINE_CIRCUITS = [0xC1C1E000 + i for i in range(4)]  # where the genuine sources were made
GENUINE_LOGIN_CIRCUITS = [0xC1C1E100 + i for i in range(200)]  # each login comes over a new one
ATTACKER_CIRCUIT = 0xC1C1F00D


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.contextmanager
def _server(tmp_path: Path, circuit_ids: bool) -> Iterator[IntakeServer]:
    _raise_file_limit(3 * DRIBBLERS + 1000)
    connection = circuit_connection(PROBE_CIRCUIT) if circuit_ids else http.client.HTTPConnection
    with run_intake_server(tmp_path, env=TOR_ENV if circuit_ids else {}, connection=connection) as server:
        yield server


def _client(server: IntakeServer, circuit: int | None) -> SourceClient:
    if circuit is None:
        return SourceClient(server.url)
    return SourceClient(server.url, connection=circuit_connection(circuit))


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


def _worker_rss_mib(server: IntakeServer) -> float:
    total = 0
    for pid in server.gunicorn.worker_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


# --- 2,000 body dribblers ------------------------------------------------------------------


@dataclass
class Dribblers:
    """`len(requests)` connections, each sending its request's head and then its body a byte
    every DRIBBLE_INTERVAL seconds; a connection the server answers or closes is opened
    again on the next round, as an attacker would. One thread, non-blocking sockets."""

    port: int
    requests: list[tuple[int | None, bytes]]  # (circuit id or None, head + start of body)
    until: float
    opened: int = 0
    dropped: int = 0
    peak_held: int = 0
    connect_failures: int = 0

    def _open(self, index: int) -> socket.socket | None:
        circuit, head = self.requests[index]
        try:
            sock = open_over_circuit(self.port, circuit, timeout=2)
            sock.sendall(head)
        except OSError:
            self.connect_failures += 1
            return None
        sock.setblocking(False)
        self.opened += 1
        return sock

    def run(self) -> None:
        held: dict[int, socket.socket] = {}
        selector = selectors.DefaultSelector()
        try:
            while time.monotonic() < self.until:
                round_started = time.monotonic()
                for index in range(len(self.requests)):
                    if index not in held and time.monotonic() < self.until:
                        sock = self._open(index)
                        if sock is not None:
                            held[index] = sock
                            selector.register(sock, selectors.EVENT_READ, index)
                # Wait for the next round, noticing connections the server answers or closes.
                while time.monotonic() < min(self.until, round_started + DRIBBLE_INTERVAL):
                    for key, _ in selector.select(timeout=0.5):
                        sock = held.pop(key.data)
                        selector.unregister(sock)
                        sock.close()
                        self.dropped += 1
                # Held: still open a whole round after it was opened or last sent to.
                self.peak_held = max(self.peak_held, len(held))
                for index, sock in list(held.items()):
                    try:
                        sock.send(b"a")
                    except OSError:
                        selector.unregister(sock)
                        sock.close()
                        del held[index]
                        self.dropped += 1
        finally:
            for sock in held.values():
                sock.close()
            selector.close()


def _dribble_requests(server: IntakeServer, circuit_ids: bool) -> list[tuple[int | None, bytes]]:
    attacker = _client(server, ATTACKER_CIRCUIT if circuit_ids else None)
    _codename, page = attacker.start_as_new_source()
    form = page.form_with("message", "files")
    content_type, pieces = encode_multipart(form, {"message": "x" * 100_000}, {})
    body = b"".join(pieces)
    upload_start = body[: body.index(b"x" * 100)]
    cookie = "; ".join(f"{k}={v}" for k, v in attacker.cookies.items())
    heads = {
        "login": b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\ncodename=",
        "anonymous upload": f"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n".encode(),
        "upload": (f"POST /submit HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: {content_type}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + upload_start,
    }
    requests = []
    for i in range(DRIBBLERS):
        kind = "upload" if i < LOGGED_IN_DRIBBLERS else ("anonymous upload" if i % 20 == 0 else "login")
        circuit = (ATTACKER_CIRCUIT + 1 + i % ATTACK_CIRCUITS) if circuit_ids else None
        requests.append((circuit, heads[kind]))
    return requests


@dataclass
class Probe:
    """A source loading the submit page and sending a short message, again and again."""

    client: SourceClient
    until: float
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self) -> None:
        for round_ in range(200):
            if time.monotonic() >= self.until:
                return
            started = time.monotonic()
            try:
                page = self.client.get("/submit")
                loaded = time.monotonic()
                self.latencies.append(loaded - started)
                done = self.client.send(page, f"probe message {round_}")
                self.latencies.append(time.monotonic() - loaded)
            except OSError as error:
                self.failures.append(type(error).__name__)
                continue
            if page.status != 200 or not done.url.endswith("/thanks"):
                self.failures.append(f"{page.status} / {done.status}")
            time.sleep(0.8)  # at a person's pace: 3 requests a round, under a circuit's request rate


@pytest.mark.parametrize("circuit_ids", [True, False], ids=["with-circuit-ids", "without-circuit-ids"])
def test_sources_are_served_while_2000_connections_dribble_bodies(tmp_path: Path, circuit_ids: bool) -> None:
    with _server(tmp_path, circuit_ids) as server:
        probe_client = _client(server, PROBE_CIRCUIT if circuit_ids else None)
        probe_client.start_as_new_source()
        baseline_rss = _worker_rss_mib(server)
        start = time.monotonic()
        attack = Dribblers(server.gunicorn.port, _dribble_requests(server, circuit_ids), until=start + ATTACK_SECONDS)
        attacker = threading.Thread(target=attack.run, daemon=True)
        attacker.start()
        workers = len(server.gunicorn.worker_pids())
        time.sleep(PROBE_START)
        attack_rss = _worker_rss_mib(server)
        probe = Probe(probe_client, until=time.monotonic() + PROBE_SECONDS)
        probe.run()
        attacker.join(timeout=ATTACK_SECONDS + 30)
        assert not attacker.is_alive()
        log = server.gunicorn.error_log_text()
        pending = _wait_for_no_pending(server)

    print(f"\n{'with' if circuit_ids else 'without'} circuit ids: {DRIBBLERS} dribblers, {attack.opened} connections opened,"
          f" peak held {attack.peak_held}, dropped by the server {attack.dropped}, connect failures {attack.connect_failures};"
          f" probe: {len(probe.latencies)} requests, p95 {_p95(probe.latencies) * 1000:.0f} ms, worst {max(probe.latencies) * 1000:.0f} ms;"
          f" worker RSS {baseline_rss:.0f} MiB before, {attack_rss:.0f} MiB under attack")
    assert not probe.failures, probe.failures
    assert len(probe.latencies) >= 30
    assert _p95(probe.latencies) < P95_PAGES, f"p95 {_p95(probe.latencies):.3f} s"
    if circuit_ids:
        # 12 connections per circuit and worker: the 40 circuits hold at most 40 x 12 x 2.
        assert attack.peak_held <= ATTACK_CIRCUITS * 12 * workers
    else:
        # Anonymous uploads are answered (a redirect to log in) without their body being read.
        assert attack.peak_held >= 0.9 * DRIBBLERS, "the attack did not hold its connections: it tested nothing"
    assert pending == 0
    assert "Traceback" not in log
    _assert_no_trace_of_circuits(server, log)


def _wait_for_no_pending(server: IntakeServer) -> int:
    with server.open_store() as store:
        deadline = time.monotonic() + 15
        while store.counts()["pending uploads"] and time.monotonic() < deadline:
            time.sleep(0.2)
        return store.counts()["pending uploads"]


def _circuit_traces(circuit_id: int) -> list[str]:
    return [str(circuit_id), f"{circuit_id:x}", f"{circuit_id >> 16:x}:{circuit_id & 0xFFFF:x}", tor_line(circuit_id).decode().strip()]


def _assert_no_trace_of_circuits(server: IntakeServer, log: str) -> None:
    """Neither the error log nor anything in the store (every table of both databases, dumped
    as SQL) nor any file in the data dir holds a circuit id or tor's address for it."""
    # Every trace is 8 characters or more: the store and its files are mostly random bytes (ciphertext),
    # where a given 4-character string turns up by chance about once in 500 MB.
    traces = ["fc00:dead", "dead:beef", "beef:4dad"]
    for circuit_id in [PROBE_CIRCUIT, ATTACKER_CIRCUIT, *GENUINE_CIRCUITS, *GENUINE_LOGIN_CIRCUITS]:
        traces += _circuit_traces(circuit_id)
    dumps = []
    with server.open_store() as store:
        for _name, conn in store.databases():
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    dumps.append(" ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row))
    files = b"".join(path.read_bytes() for path in server.data_dir.rglob("*") if path.is_file())
    for trace in traces:
        assert trace not in log.lower()
        assert all(trace not in dump.lower() for dump in dumps)
        assert trace.encode() not in files.lower()


# --- 32 codename logins from one circuit -------------------------------------------------------


@dataclass
class LoginFlood:
    """`LOGIN_ATTACKERS` threads each posting made-up codenames to the login form, again and again."""

    server: IntakeServer
    circuit: int | None
    until: float
    answers: dict[int, int] = field(default_factory=dict)
    slowest: float = 0.0

    def _form(self) -> tuple[str, str]:
        """(the cookie header, the form token) of the login page, as a browser would have them."""
        while True:
            try:
                client = _client(self.server, self.circuit)
                login = client.get("/login")
                token = dict((name, value) for name, _kind, value in login.form_with("codename").controls)["csrf_token"]
                return "; ".join(f"{k}={v}" for k, v in client.cookies.items()), token
            except (OSError, http.client.HTTPException, AssertionError, KeyError):
                time.sleep(TOR_ROUND_TRIP)  # refused: this circuit is over its limits

    def _one(self) -> None:
        # Raw sockets and a prepared request: the attacker's own CPU (on this same machine) stays small.
        cookie, token = self._form()
        while time.monotonic() < self.until:
            body = urlencode({"csrf_token": token, "codename": generate_codename()}).encode()
            request = (f"POST /login HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n"
                       f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            started = time.monotonic()
            try:
                with open_over_circuit(self.server.gunicorn.port, self.circuit, timeout=30) as sock:
                    sock.sendall(request)
                    head = sock.recv(16)
                status = int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0
            except OSError:
                status = 0  # refused at once: too many connections from this circuit
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.answers[status] = self.answers.get(status, 0) + 1
            time.sleep(TOR_ROUND_TRIP)

    def _run_here(self, results: multiprocessing.Queue) -> None:
        threads = [threading.Thread(target=self._one, daemon=True) for _ in range(LOGIN_ATTACKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=self.until - time.monotonic() + 40)
        results.put((self.answers, self.slowest))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The flood runs in a process of its own, so that its 32 threads do not slow the
        genuine clients of this process (the GIL) and only the server is measured."""
        results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
        process = multiprocessing.get_context("fork").Process(target=self._run_here, args=(results,), daemon=True)
        process.start()
        try:
            yield
            self.answers, self.slowest = results.get(timeout=self.until - time.monotonic() + 60)
        finally:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _genuine_logins(server: IntakeServer, codenames: list[str], circuit_ids: bool, page_client: SourceClient, until: float):
    """Sources log in with their codenames in turn, each time in a new Tor Browser session
    (a new circuit), and another source loads a page, until `until`."""
    login_times: list[float] = []
    login_results: list[int] = []
    page_times: list[float] = []
    circuits = iter(GENUINE_LOGIN_CIRCUITS)
    while time.monotonic() < until:
        for codename in codenames:
            client = _client(server, next(circuits) if circuit_ids else None)
            started = time.monotonic()
            page = client.log_in(codename)
            login_times.append(time.monotonic() - started)
            login_results.append(page.status if page.url.endswith("/replies") or page.status != 200 else 0)
            started = time.monotonic()
            assert page_client.get("/submit").status == 200
            page_times.append(time.monotonic() - started)
    return login_times, login_results, page_times


@pytest.mark.by_itself
@pytest.mark.parametrize("circuit_ids", [True, False], ids=["with-circuit-ids", "without-circuit-ids"])
def test_genuine_logins_go_through_while_one_circuit_floods_the_login_form(tmp_path: Path, circuit_ids: bool) -> None:
    with _server(tmp_path, circuit_ids) as server:
        codenames = [_client(server, circuit if circuit_ids else None).start_as_new_source()[0] for circuit in GENUINE_CIRCUITS]
        page_client = _client(server, PROBE_CIRCUIT if circuit_ids else None)
        page_client.start_as_new_source()

        flood = LoginFlood(server, ATTACKER_CIRCUIT if circuit_ids else None, until=time.monotonic() + LOGIN_SECONDS)
        with flood.running():
            time.sleep(2)
            login_times, login_results, page_times = _genuine_logins(server, codenames, circuit_ids, page_client, until=time.monotonic() + LOGIN_SECONDS - 5)
        log = server.gunicorn.error_log_text()

    succeeded = login_results.count(200)
    print(f"\n{'with' if circuit_ids else 'without'} circuit ids: attacker answers {dict(sorted(flood.answers.items()))},"
          f" slowest {flood.slowest:.2f} s; genuine logins {succeeded}/{len(login_results)} succeeded,"
          f" p95 {_p95(login_times):.2f} s, worst {max(login_times):.2f} s; pages p95 {_p95(page_times) * 1000:.0f} ms")
    assert sum(flood.answers.values()) >= 2 * LOGIN_ATTACKERS, "the flood did not run: it tested nothing"
    assert flood.answers.get(503, 0) > 0  # the attacker was told "busy"
    assert flood.slowest < 20
    assert _p95(page_times) < P95_PAGES
    if circuit_ids:
        assert succeeded == len(login_results), login_results
        assert _p95(login_times) < P95_LOGINS
        _assert_no_trace_of_circuits(server, log)
    assert "Traceback" not in log


def _answer(sock: socket.socket) -> bytes:
    """The server's first bytes; b"" if it closed the connection (a reset included)."""
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return b""


def _rest_of_answer(sock: socket.socket) -> bytes:
    rest = b""
    sock.settimeout(2)
    while chunk := sock.recv(65536):
        rest += chunk
    return rest


def test_without_tors_line_a_connection_is_refused_when_circuit_ids_are_on(tmp_path: Path) -> None:
    with _server(tmp_path, circuit_ids=True) as server:
        with open_over_circuit(server.gunicorn.port, None) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(sock) == b""  # closed unanswered
        # A client cannot name its own circuit after tor's line: the second line is its request line.
        with open_over_circuit(server.gunicorn.port, PROBE_CIRCUIT) as sock:
            sock.sendall(tor_line(secrets.randbelow(2**32)) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        assert _client(server, PROBE_CIRCUIT).get("/").status == 200


def test_one_circuit_holds_at_most_its_share_of_connections(tmp_path: Path) -> None:
    with _server(tmp_path, circuit_ids=True) as server:
        workers = len(server.gunicorn.worker_pids())
        socks = []
        try:
            for _ in range(12 * workers + 20):
                sock = open_over_circuit(server.gunicorn.port, ATTACKER_CIRCUIT)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
                socks.append(sock)
            time.sleep(1)
            refused, busy_pages = 0, []
            for sock in socks:
                sock.settimeout(0.2)
                try:
                    answer = _answer(sock)
                except TimeoutError:
                    continue
                refused += answer.startswith(b"HTTP/1.1 503") or answer == b""
                if answer.startswith(b"HTTP/1.1 503"):
                    busy_pages.append(answer + _rest_of_answer(sock))
            # Each worker holds 12; the kernel spreads connections over workers unevenly.
            assert 20 <= refused <= len(socks) - 12
            # Refused before the app, the page still tells a source what to do, in each language.
            page = busy_pages[0].decode("utf-8")
            assert "Wait a minute, then reload the page" in page and "Подождите минуту и обновите страницу" in page
            assert _client(server, PROBE_CIRCUIT).get("/").status == 200  # another circuit is served
        finally:
            for sock in socks:
                sock.close()


def test_by_default_tors_line_is_read_when_it_comes_and_not_needed(tmp_path: Path) -> None:
    """INTAKE_TOR_CIRCUIT_IDS=auto: the journalist site (published without the line) and a
    source site whose tor exports circuit ids are served by the same settings."""
    _raise_file_limit(1000)
    with run_intake_server(tmp_path) as server:
        assert SourceClient(server.url).get("/").status == 200
        assert _client(server, PROBE_CIRCUIT).get("/").status == 200
        # A line that is not tor's is the bad request it is, and never names a circuit.
        with open_over_circuit(server.gunicorn.port, None) as sock:
            sock.sendall(b"PROXY TCP4 10.1.2.3 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 400")
        # Slow to start: the first bytes of a request still reach gunicorn whole.
        with open_over_circuit(server.gunicorn.port, None) as sock:
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.01)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
        assert "Traceback" not in server.gunicorn.error_log_text()


def test_one_circuit_has_at_most_its_share_of_uploads_in_flight(tmp_path: Path) -> None:
    """INTAKE_UPLOADS_PER_CIRCUIT=2 in one worker: a third upload in flight from the same
    circuit is answered "busy" at once; another circuit's upload goes through meanwhile."""
    _raise_file_limit(1000)
    env = {**TOR_ENV, "INTAKE_WORKERS": "1", "INTAKE_UPLOADS_PER_CIRCUIT": "2"}
    with run_intake_server(tmp_path, env=env, connection=circuit_connection(PROBE_CIRCUIT)) as server:
        client = _client(server, ATTACKER_CIRCUIT)
        form = client.start_as_new_source()[1].form_with("message", "files")
        content_type, pieces = encode_multipart(form, {"message": "m" * 10_000}, {})
        body = b"".join(pieces)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        head = f"POST /submit HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        held = []
        try:
            for _ in range(2):
                sock = open_over_circuit(server.gunicorn.port, ATTACKER_CIRCUIT)
                sock.sendall(head + body[:5000])  # in flight: the rest is yet to come
                held.append(sock)
            time.sleep(0.5)
            with open_over_circuit(server.gunicorn.port, ATTACKER_CIRCUIT) as third:
                third.sendall(head + body[:5000])
                assert _answer(third).startswith(b"HTTP/1.1 503")
            other = _client(server, PROBE_CIRCUIT)
            assert other.send(other.start_as_new_source()[1], "from another circuit").url.endswith("/thanks")
            for sock in held:
                sock.sendall(body[5000:])
                assert _answer(sock).startswith(b"HTTP/1.1 303")
        finally:
            for sock in held:
                sock.close()
