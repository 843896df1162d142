"""gunicorn's gevent worker, answering what gunicorn refuses itself like the app would.

gunicorn answers some requests before the app sees them: a request line over
``limit_request_line`` (414), a malformed or oversized header block (400, 431),
an unknown method, and an app that failed before starting its response (500).
Its own answer is an HTML page without any of the app's headers that quotes the
offending request line or header back. This worker answers them instead with a
fixed plain-text body (the status, nothing else) and the same strict headers as
every page (intake.headers), and logs only what kind of request it refused.

No answer carries gunicorn's ``Server`` and ``Date`` headers: the server's clock is a
known way to tell onion services apart (or match one to a clearnet host), and the
server's name and version help nobody but an attacker.

Connections are also where slow and abusive clients are met (intake.body_pace,
intake.circuits): each connection's reads enforce the body rate and deadline, and
a connection that opens with tor's PROXY line (``HiddenServiceExportCircuitID haproxy``)
has it read and removed here, so the circuit's connections and requests can be capped
and gunicorn and the app never see its id (``INTAKE_TOR_CIRCUIT_IDS``: auto, the
default; required: refuse connections without it; off).

Imported by the gunicorn master when it reads its config (``worker_class``), so
it imports nothing of Flask or the app: the app loads in each worker, after
gevent has patched the standard library.
"""

from __future__ import annotations

import socket
import ssl
import time

import gevent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.unreader import SocketUnreader
from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.ggevent import GeventWorker

from intake.body_pace import PacedSocket, WorkerLimits, worker_limits_from_environment
from intake.circuits import PROXY_V1_MAX, CircuitBusyError, CircuitKey, CircuitLedger, circuit_from_proxy_line, current_circuit, serving_circuit
from intake.headers import SECURITY_HEADERS
from intake.memory_wiping import collect_request_garbage, freeze_startup_objects
from intake.socket_body import SocketBody

# Largest recv() for a request body: what the apps read at once (Werkzeug's form parser and
# intake's upload parser, intake.app.ingest.READ_SIZE, both 64 KiB). gunicorn reads up to 1 MiB
# and keeps the rest, and its unreader copies what it keeps into a new buffer on every read the
# app makes: a 1 MiB recv read in 64 KiB steps copied ~8 MiB, in fresh allocations above the
# mmap threshold (intake.memory_wiping), so page faults on every one. Measured (256 MiB upload,
# docs/PERFORMANCE.md, "Large uploads, second pass"): the plain app's worker 3.6 s of CPU
# against 0.9 s with this cap, intake's 5.1 s against 2.4 s.
BODY_RECV_BYTES = 64 * 1024

# Statuses as gunicorn gives them (gunicorn.workers.base.Worker.handle_error); any other
# request it cannot parse is a 400.
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (LimitRequestLine, 414, "URI Too Long"),
    (LimitRequestHeaders, 431, "Request Header Fields Too Large"),
    (ExpectationFailed, 417, "Expectation Failed"),
    (UnsupportedTransferCoding, 501, "Not Implemented"),
    (ForbiddenProxyRequest, 403, "Forbidden"),
    (ssl.SSLError, 403, "Forbidden"),
)


def _holds_unread_bytes(req) -> bool:
    """Whether gunicorn read bytes past this request from its connection (a pipelined request)."""
    with req.unreader.buf.getbuffer() as held:
        return held.nbytes > 0


def _has_body(req) -> bool:
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING" or (name == "CONTENT-LENGTH" and value.strip() != "0"):
            return True
    return False


def refusal_status(error: BaseException) -> tuple[int, str]:
    """(status, reason) for an error gunicorn hands to ``handle_error``."""
    # A header the app tried to send, or gunicorn's own configuration, is the server's fault.
    if isinstance(error, (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem)):
        return 500, "Internal Server Error"
    for kind, status, reason in _CLIENT_ERRORS:
        if isinstance(error, kind):
            return status, reason
    if isinstance(error, ParseException):
        return 400, "Bad Request"
    return 500, "Internal Server Error"


def error_response(status: int, reason: str, page: str | None = None) -> bytes:
    """A complete HTTP/1.1 answer: fixed body (``page``, an HTML page, or the status as text),
    strict headers, connection closed."""
    body = page.encode("utf-8") if page is not None else f"{status} {reason}\n".encode("ascii")
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        f"Content-Type: {'text/html' if page is not None else 'text/plain'}; charset=utf-8",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


# What a person is shown when the worker itself refuses a connection as busy (its circuit's
# requests or connections over their limits, or the worker full): before the app, so in every
# language of the pages at once, and telling what to do. Nothing of that request was kept.
BUSY_PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Busy, try again · Сервис перегружен</title>
<h1>Busy, try again</h1>
<p>The service is very busy right now. Wait a minute, then reload the page. What you sent with this request was not kept.</p>
<h1 lang="ru">Сервис перегружен</h1>
<p lang="ru">Сейчас сервис очень загружен. Подождите минуту и обновите страницу. То, что вы отправили этим запросом, не сохранено.</p>
"""


# The status line and headers gunicorn adds to every response that intake leaves out.
_DROPPED_DEFAULT_HEADERS = ("server:", "date:")


class ResponseWithoutServerOrDate(wsgi.Response):
    """gunicorn's HTTP/1 response, without its ``Server`` and ``Date`` headers."""

    def default_headers(self) -> list[str]:
        return [line for line in super().default_headers()
                if not line.lower().startswith(_DROPPED_DEFAULT_HEADERS)]


PROXY_LINE_WAIT = 5.0  # seconds; then the connection is gunicorn's, under its own deadline for the head
# At most one collection of reference cycles a second (intake.memory_wiping), however many requests end:
# a flood of requests cannot become a flood of collections, each of which walks every live connection's objects.
COLLECT_INTERVAL = 1.0
# How often a worker looks whether it is stopping, and then closes the connections gone idle
# (gunicorn's own loop looks once a second; a stopping worker exits once no connection is left).
IDLE_CLOSE_INTERVAL = 0.2


def _refuse_busy(client) -> None:
    try:
        util.write_nonblock(client, error_response(503, "Service Unavailable", BUSY_PAGE))
    except OSError:
        pass
    util.close(client)


def take_proxy_line(client: socket.socket, timeout: float) -> tuple[bytes, bytes]:
    """(the PROXY line that opens the connection or b"", what else was read meanwhile).
    Reads no further than the line or the first bytes that show there is none."""
    read = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            start = read[:6]
            if read and b"PROXY "[: len(start)] != start:
                return b"", read
            end = read.find(b"\r\n")
            if end != -1:
                return read[: end + 2], read[end + 2 :]
            if len(read) >= PROXY_V1_MAX or time.monotonic() >= deadline:
                return b"", read
            client.settimeout(max(0.001, deadline - time.monotonic()))
            data = client.recv(PROXY_V1_MAX - len(read))
            if not data:
                return b"", read
            read += data
    except OSError:  # a timeout included: gunicorn's own deadline for the head then applies
        return b"", read
    finally:
        client.settimeout(None)


def request_burst(rate: float) -> int:
    """Requests one circuit may make at once: 4 seconds' worth, and at least one (a rate below
    0.25 a second would otherwise allow none, and the worker could not start)."""
    return max(1, int(4 * rate))


class IntakeGeventWorker(GeventWorker):
    """The gevent worker (see docs/worker-model.md) with intake's answers to refused
    requests, paced request bodies and, with tor's circuit ids, connections capped per circuit."""

    def init_process(self) -> None:
        # gunicorn has no setting for the Server and Date headers and builds each response through
        # the module's `Response` name (gunicorn.http.wsgi.create): point it at ours, in this worker only.
        wsgi.Response = ResponseWithoutServerOrDate
        self.limits: WorkerLimits = worker_limits_from_environment()
        self.connections = CircuitLedger(self.limits.connections_per_circuit, self.cfg.worker_connections,
                                         rate=self.limits.requests_per_circuit, burst=request_burst(self.limits.requests_per_circuit))
        self._collection_due = False
        self._last_collection = 0.0
        self._open_connections: set[PacedSocket] = set()
        super().init_process()

    def run(self) -> None:
        gevent.spawn(self._close_idle_connections_when_stopping)
        super().run()

    def _close_idle_connections_when_stopping(self) -> None:
        """gunicorn's graceful stop waits until every connection's handler has ended, and a kept-alive
        connection's handler waits for the next request for up to `keepalive` (20 s): every stop
        took that long while a browser had the site open. Requests under way still finish within
        the grace period; idle connections are closed, now and as others become idle. (A connection
        still waiting for tor's line waits PROXY_LINE_WAIT at most, then is a PacedSocket like the rest.)"""
        while self.alive:
            gevent.sleep(IDLE_CLOSE_INTERVAL)
        while True:
            for connection in list(self._open_connections):
                connection.close_if_idle()
            gevent.sleep(IDLE_CLOSE_INTERVAL)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        freeze_startup_objects()

    def _collect_soon(self) -> None:
        """Collect the cycles a request left once this greenlet has let go of it (the loop's next turn),
        or COLLECT_INTERVAL after the last collection if that is later."""
        if self._collection_due:
            return
        self._collection_due = True
        gevent.spawn_later(max(0.0, self._last_collection + COLLECT_INTERVAL - time.monotonic()), self._collect)

    def _collect(self) -> None:
        self._collection_due = False
        self._last_collection = time.monotonic()
        collect_request_garbage()

    def handle(self, listener, client, addr) -> None:
        circuit: CircuitKey | None = None
        unread = b""
        if self.limits.circuit_ids != "off":
            # tor writes its line as it connects; a client's own first bytes may take a Tor round trip.
            line, unread = take_proxy_line(client, min(self.cfg.keepalive, PROXY_LINE_WAIT))
            circuit = circuit_from_proxy_line(line)
            if circuit is None:
                unread = line + unread  # not tor's line: gunicorn answers it as the bad request it is
                if self.limits.circuit_ids == "required":
                    # Only tor connects here, and it opens every connection with the line.
                    self.log.warning("Refused a connection that did not start with tor's circuit line")
                    util.close(client)
                    return
        paced = PacedSocket(client, self.limits, unread=unread)
        self._open_connections.add(paced)
        try:
            with self.connections.hold(circuit), serving_circuit(circuit):
                super().handle(listener, paced, addr)
        except CircuitBusyError:
            _refuse_busy(client)
        finally:
            self._open_connections.discard(paced)
            if paced.carried_a_body:
                # gunicorn's request and its body reader refer to each other: garbage only now.
                self._collect_soon()

    def handle_request(self, listener_name, req, sock, addr):
        # A circuit over its request rate is answered here, before the app spends anything on it.
        if not self.connections.allow_request(current_circuit()):
            _refuse_busy(sock)
            raise StopIteration()  # gunicorn closes the connection
        if isinstance(sock, PacedSocket):
            sock.request_began()  # its bytes may all have come in an earlier read (pipelined)
        paced = isinstance(sock, PacedSocket) and _has_body(req)
        if paced:
            sock.start_body()
            if isinstance(req.unreader, SocketUnreader):
                req.unreader.max_body_chunk = BODY_RECV_BYTES
            if SocketBody.fits(req.body):
                req.body = SocketBody(req.body)  # the app's wsgi.input, and what gunicorn drains after
        try:
            super().handle_request(listener_name, req, sock, addr)
        finally:
            if paced:
                sock.end_body()
                self._collect_soon()  # a refusal's traceback held the frames that held its data
        if isinstance(sock, PacedSocket) and not _holds_unread_bytes(req):
            sock.answered()  # kept open, and no byte of a next request is held in gunicorn's buffer

    def handle_error(self, req, client, addr, exc) -> None:
        status, reason = refusal_status(exc)
        if status == 500:
            # Called inside the except block: the traceback is logged, its message withheld (intake.logs).
            self.log.exception("Error handling a request (details withheld)")
        else:
            self.log.warning("Refused an invalid request: %s %s, %s (details withheld)", status, reason, type(exc).__name__)
        # No access log entry: intake keeps none (deploy/gunicorn.conf.py).
        try:
            util.write_nonblock(client, error_response(status, reason))
        except Exception:
            self.log.debug("Failed to send an error answer.")
