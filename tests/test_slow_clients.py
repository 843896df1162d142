"""Slow clients are normal over Tor, and also an attack.

Against the real app under real gunicorn (deploy/gunicorn.conf.py): 50 legitimate
uploads trickle their bodies in over 15-25 s, 30 slowloris connections dribble
headers or bodies a byte at a time, and meanwhile another source keeps loading a
page and submitting. That source must be served promptly (p95 < 1 s), and every
slow upload must complete and be stored, readable by the journalist.
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from keys.envelope_reader import EnvelopeReader
from tests.fixtures_server import IntakeServer, Page, SourceClient, Upload, encode_multipart

# Time or memory bounds: one worker runs all such tests in turn, never two at once (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

SLOW_UPLOADS = 50
SLOW_UPLOAD_SOURCES = 5  # each logged in once; its uploads run side by side
SLOW_UPLOAD_BYTES = 48 * 1024
SLOWLORIS = 30
LOAD_SECONDS = 26.0  # slow clients hold their connections this long
PROBE_START = 3.0  # the probing source starts once every slow client is connected
PROBE_SECONDS = 20.0
P95_LIMIT = 1.0
MAX_PROBE_ROUNDS = 200


def _connect(server: IntakeServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.gunicorn.port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request_head(method: str, path: str, client: SourceClient, extra: dict[str, str]) -> bytes:
    headers = {"Host": "127.0.0.1", **client._cookie_header(), **extra}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


@dataclass
class SlowUpload:
    """A legitimate upload whose body arrives in ~40 pieces spread over `seconds`."""

    client: SourceClient
    form_page: Page
    content: bytes
    seconds: float
    status: int | None = None
    location: str = ""
    error: str = ""

    def run(self, server: IntakeServer) -> None:
        form = self.form_page.form_with("message", "files")
        content_type, pieces = encode_multipart(form, {"message": "slow upload"}, {"files": [Upload("slow.bin", self.content)]})
        body = b"".join(pieces)
        try:
            with _connect(server) as sock:
                sock.sendall(_request_head("POST", "/submit", self.client, {"Content-Type": content_type, "Content-Length": str(len(body))}))
                slices = 40
                step = -(-len(body) // slices)
                for i in range(0, len(body), step):
                    sock.sendall(body[i : i + step])
                    time.sleep(self.seconds / slices)
                response = http.client.HTTPResponse(sock)
                response.begin()
                self.status, self.location = response.status, response.getheader("Location", "")
                response.read()
        except OSError as error:
            self.error = type(error).__name__


@dataclass
class Slowloris:
    """Dribbles a request a byte at a time; reconnects when the server drops it, until `until`.

    A header dribbler never finishes its headers. A body dribbler is a logged-in
    source's upload whose form token arrives at once and whose message then comes
    a byte at a time, so the server holds a pending submission open for it.
    """

    client: SourceClient
    form_page: Page
    dribble_body: bool
    until: float
    connections: int = 0

    def _request(self) -> tuple[bytes, bytes]:
        """(sent at once, dribbled)"""
        if not self.dribble_body:
            return b"", b"GET /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slowloris: " + b"a" * 100000
        form = self.form_page.form_with("message", "files")
        marker = "slowloris-" + "a" * 100000
        content_type, pieces = encode_multipart(form, {"message": marker}, {})
        body = b"".join(pieces)
        at = body.index(marker.encode())
        head = _request_head("POST", "/submit", self.client, {"Content-Type": content_type, "Content-Length": str(len(body))})
        return head + body[:at], body[at:]

    def run(self, server: IntakeServer) -> None:
        at_once, drip = self._request()
        while time.monotonic() < self.until:
            try:
                with _connect(server) as sock:
                    self.connections += 1
                    sock.sendall(at_once)
                    for byte in drip:
                        if time.monotonic() >= self.until:
                            return
                        sock.sendall(bytes([byte]))
                        time.sleep(0.2)
            except OSError:
                time.sleep(0.2)  # dropped by the server: come back, as an attacker would


@dataclass
class Probe:
    """Another source: loads the submit page and sends a short message, again and again."""

    client: SourceClient
    until: float
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: int = 0

    def run(self) -> None:
        for round_ in range(MAX_PROBE_ROUNDS):
            if time.monotonic() >= self.until:
                return
            started = time.monotonic()
            page = self.client.get("/submit")
            loaded = time.monotonic()
            self.latencies.append(loaded - started)
            if page.status != 200:
                self.failures.append(f"submit page: {page.status}")
                continue
            done = self.client.send(page, f"probe message {round_}")
            self.latencies.append(time.monotonic() - loaded)
            if done.status == 200 and done.url.endswith("/thanks"):
                self.sent += 1
            else:
                self.failures.append(f"submission: {done.status}")
            time.sleep(0.2)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


def _logged_in_source(server: IntakeServer) -> tuple[SourceClient, Page]:
    client = SourceClient(server.url)
    _codename, page = client.start_as_new_source()
    return client, page


def test_a_source_is_served_promptly_while_slow_uploads_and_slowloris_hold_connections(intake_server: IntakeServer) -> None:
    server = intake_server
    uploaders = [_logged_in_source(server) for _ in range(SLOW_UPLOAD_SOURCES)]
    probe_client, _ = _logged_in_source(server)
    with server.open_store() as store:
        before = store.counts()["submissions"]

    start = time.monotonic()
    slow_uploads = [
        SlowUpload(*uploaders[i % SLOW_UPLOAD_SOURCES], content=os.urandom(SLOW_UPLOAD_BYTES), seconds=15 + (i % 10))
        for i in range(SLOW_UPLOADS)
    ]
    lorises = [Slowloris(*uploaders[i % SLOW_UPLOAD_SOURCES], dribble_body=bool(i % 2), until=start + LOAD_SECONDS) for i in range(SLOWLORIS)]
    threads = [threading.Thread(target=upload.run, args=(server,), daemon=True) for upload in slow_uploads]
    threads += [threading.Thread(target=loris.run, args=(server,), daemon=True) for loris in lorises]
    for thread in threads:
        thread.start()

    time.sleep(PROBE_START)
    probe = Probe(probe_client, until=time.monotonic() + PROBE_SECONDS)
    probe.run()

    for thread in threads:
        thread.join(timeout=max(1.0, start + LOAD_SECONDS + 15 - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "slow clients did not finish in time"

    completed = [upload for upload in slow_uploads if upload.status == 303 and upload.location.endswith("/thanks")]
    if probe.latencies:
        print(f"\n[slow clients] {SLOW_UPLOADS} slow uploads ({len(completed)} completed) and "
              f"{sum(loris.connections for loris in lorises)} slowloris connections held for {LOAD_SECONDS:.0f} s; "
              f"a probing source made {len(probe.latencies)} requests, p95 {_p95(probe.latencies):.3f} s, "
              f"worst {max(probe.latencies):.3f} s, {len(probe.failures)} failures")
    assert not probe.failures, probe.failures
    assert len(probe.latencies) >= 30, f"the probing source got through only {len(probe.latencies)} requests"
    assert _p95(probe.latencies) < P95_LIMIT, f"p95 {_p95(probe.latencies):.3f} s, worst {max(probe.latencies):.3f} s"
    assert sum(loris.connections for loris in lorises) >= SLOWLORIS

    assert len(completed) == SLOW_UPLOADS, [(u.status, u.error) for u in slow_uploads if u not in completed]

    journalist_key = server.journalists[0].private_key
    with server.open_store() as store:
        stored_files = set()
        for submission in store.submissions():
            if submission.kind == "file":
                reader = EnvelopeReader(io.BytesIO(b"".join(store.submission_ciphertext(submission.id))), journalist_key)
                stored_files.add(reader.read())
        assert stored_files == {upload.content for upload in completed}
        # Each slow upload is a message and a file; each probe round, a message.
        assert store.counts()["submissions"] - before == 2 * len(completed) + probe.sent
        # The dribbled messages were cut off when their connections closed: their pending parts are gone.
        deadline = time.monotonic() + 10
        while store.counts()["pending uploads"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.counts()["pending uploads"] == 0

    assert "Traceback" not in server.gunicorn.error_log_text()
