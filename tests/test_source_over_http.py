"""The source side over real gunicorn and real HTTP: the bytes and requests of the walk from
the landing page to "received", and an upload that outlives the session it started in."""

from __future__ import annotations

import http.client
import re
import socket
import time
from urllib.parse import urljoin

import pytest

from intake.app.sessions import COOKIE_NAME, resume_session
from intake.app.source import GIVE_BACK_WAIT_SECONDS
from tests.fixtures_server import IntakeServer, SourceClient, Upload, encode_multipart

pytestmark = pytest.mark.slow

MAX_WALK_BYTES = 20_000
TODAYS_WALK_REQUESTS = 7  # before the stylesheet was cacheable: 3 of the 7 were the same stylesheet


class _CountingReader:
    """The response side of a socket, counting every byte the client reads."""

    def __init__(self, raw, counter: list[int]):
        self._raw, self._counter = raw, counter

    def read(self, *args):
        data = self._raw.read(*args)
        self._counter[0] += len(data)
        return data

    def readline(self, *args):
        line = self._raw.readline(*args)
        self._counter[0] += len(line)
        return line

    def readinto(self, buffer):
        count = self._raw.readinto(buffer)
        self._counter[0] += count or 0
        return count

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _CountingSocket:
    def __init__(self, sock, counter: list[int]):
        self._sock, self._counter = sock, counter

    def makefile(self, *args, **kwargs):
        return _CountingReader(self._sock.makefile(*args, **kwargs), self._counter)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Browser(SourceClient):
    """A source's browser with JavaScript off that also loads each page's stylesheet (and keeps it
    while its Cache-Control allows), counting the requests made and the bytes received."""

    def __init__(self, base_url: str):
        self.received = [0]
        self.requests: list[str] = []
        self.cached: set[str] = set()
        counter = self.received

        class CountingConnection(http.client.HTTPConnection):
            def connect(self):
                super().connect()
                self.sock = _CountingSocket(self.sock, counter)

        super().__init__(base_url, connection=CountingConnection)

    def request(self, method, path, body=(), headers=None, *, follow_redirects=True):
        self.requests.append(f"{method} {path}")
        page = super().request(method, path, body, headers, follow_redirects=follow_redirects)
        for href in re.findall(r'<link rel="stylesheet" href="([^"]+)">', page.text):
            if href not in self.cached:
                self.requests.append(f"GET {href}")
                css = SourceClient.request(self, "GET", urljoin(page.url, href))
                assert css.status == 200
                if "immutable" in css.headers.get("Cache-Control", ""):
                    self.cached.add(href)
        return page

    def get(self, path, *, base=None):
        return self.request("GET", urljoin(base or self.base_url + "/", path))


def test_walk_from_landing_to_received_takes_fewer_requests_and_at_most_20_kb(intake_server: IntakeServer):
    browser = Browser(intake_server.url)
    _codename, page = browser.start_as_new_source()
    received = browser.send(page, message="The ledger is in the blue binder.", files=[Upload("notes.txt", b"n" * 1000, "text/plain")])
    assert "we received it" in received.text and "notes.txt" in received.text
    total = browser.received[0]
    print(f"landing -> received: {len(browser.requests)} requests, {total} bytes received: {browser.requests}")
    assert len(browser.requests) < TODAYS_WALK_REQUESTS
    assert sum("/assets/" in request for request in browser.requests) == 1
    assert total <= MAX_WALK_BYTES


def test_upload_that_outlives_its_session_lands_on_its_receipt_still_logged_in(intake_server: IntakeServer):
    client = SourceClient(intake_server.url)
    codename, page = client.start_as_new_source()
    form = page.form_with("message", "files")
    content = b"b" * 2_000_000
    content_type, pieces = encode_multipart(form, {"message": "slow"}, {"files": [Upload("big.bin", content)]})
    at = pieces.index(content)
    first, rest = pieces[:at] + [content[:1_000_000]], [content[1_000_000:]] + pieces[at + 1:]
    conn = http.client.HTTPConnection("127.0.0.1", int(intake_server.url.rsplit(":", 1)[1]), timeout=60)
    conn.connect()
    # A small send buffer (no autotuning) and a server that has not read: then `first` cannot all be
    # sent until the app is reading the body, i.e. has already looked the session up.
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    conn.putrequest("POST", "/submit")
    conn.putheader("Cookie", "; ".join(f"{k}={v}" for k, v in client.cookies.items()))
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(sum(len(piece) for piece in pieces)))
    conn.endheaders()
    for piece in first:
        conn.send(piece)
    with intake_server.open_store() as store:  # the session runs out while the upload is arriving
        store.delete_session(resume_session(store, client.cookies[COOKIE_NAME]).session_id)
    for piece in rest:
        conn.send(piece)
    response = conn.getresponse()
    response.read()
    assert response.status == 303 and response.headers["Location"].endswith("/thanks")
    client._remember_cookies(response)
    conn.close()
    thanks = client.get("/thanks")
    assert thanks.status == 200 and "big.bin" in thanks.text and "Log out" in thanks.text
    assert client.get("/codename").codename() == codename  # the new session still shows it


def _declare_10_gib(intake_server: IntakeServer, client: SourceClient, content_type: str) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", int(intake_server.url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", "/submit")
    conn.putheader("Cookie", "; ".join(f"{k}={v}" for k, v in client.cookies.items()))
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(10 * 1024**3))
    conn.endheaders()
    return conn


def test_upload_declared_over_the_limit_is_refused_before_its_files_are_sent(intake_server: IntakeServer):
    """As a browser sends it: the body starts at once. Its message comes back in the form as soon
    as the first file's header has arrived; nothing of the 10 GiB is asked for."""
    client = SourceClient(intake_server.url)
    _codename, page = client.start_as_new_source()
    content_type, pieces = encode_multipart(page.form_with("message", "files"), {"message": "big news"},
                                            {"files": [Upload("film.mkv", b"v" * 100_000)]})
    conn = _declare_10_gib(intake_server, client, content_type)
    started = time.monotonic()
    conn.send(b"".join(pieces)[:20_000])  # the token, the message and the start of the file
    response = conn.getresponse()
    text = response.read().decode()
    took = time.monotonic() - started
    conn.close()
    assert response.status == 413 and took < 5, took
    assert "Nothing was received" in text and "500 MiB" in text
    assert '<textarea id="message" name="message" rows="10">big news</textarea>' in text


def test_upload_declared_over_the_limit_hands_back_the_part_of_the_message_that_came(intake_server: IntakeServer):
    """A body that stalls in the middle of the message: after GIVE_BACK_WAIT_SECONDS the page
    hands back what arrived, and says it is only the beginning."""
    client = SourceClient(intake_server.url)
    _codename, page = client.start_as_new_source()
    message = "first line arrived. " * 200 + "this tail never comes"
    content_type, pieces = encode_multipart(page.form_with("message", "files"), {"message": message},
                                            {"files": [Upload("film.mkv", b"v" * 1000)]})
    body = b"".join(pieces)
    conn = _declare_10_gib(intake_server, client, content_type)
    conn.send(body[: body.index(b"this tail")])
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    assert response.status == 413
    kept = re.search(r'<textarea id="message" name="message" rows="10">([^<]*)</textarea>', text).group(1)
    assert kept.startswith("first line arrived.") and "tail" not in kept and len(kept) > 3000
    assert "Only the beginning of your message could be kept here" in text


def test_upload_declared_over_the_limit_is_answered_even_if_no_body_byte_comes(intake_server: IntakeServer):
    """A client that waits for the answer before sending gets it after GIVE_BACK_WAIT_SECONDS,
    without a message to hand back, and is never asked for the body."""
    client = SourceClient(intake_server.url)
    _codename, page = client.start_as_new_source()
    content_type, _pieces = encode_multipart(page.form_with("message", "files"), {"message": "big"}, {})
    conn = _declare_10_gib(intake_server, client, content_type)
    started = time.monotonic()
    response = conn.getresponse()
    text = response.read().decode()
    took = time.monotonic() - started
    conn.close()
    assert response.status == 413 and GIVE_BACK_WAIT_SECONDS - 1 < took < GIVE_BACK_WAIT_SECONDS + 5, took
    assert "Nothing was received" in text and "500 MiB" in text
    assert "back in the box" not in text  # nothing arrived to give back
