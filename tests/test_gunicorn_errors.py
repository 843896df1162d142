"""Requests that gunicorn refuses itself, before the app sees them (an over-long request
line, a malformed or oversized header block), against the real server: the answer
carries the same strict headers as every page, a fixed body, and nothing of the
request; the error log names none of it either. No answer of either app, the app's own
or gunicorn's, carries a Server or Date header."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from intake.server import JOURNALIST_APP_FACTORY
from tests.fixtures_server import IntakeServer, run_intake_server

SECRET = "echo-me-5d21c9"
STRICT = {
    "content-security-policy": "default-src 'none'",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[IntakeServer]:
    with run_intake_server(tmp_path_factory.mktemp("gunicorn-errors")) as running:
        yield running


@pytest.fixture(scope="module")
def journalist_server(tmp_path_factory) -> Iterator[IntakeServer]:
    with run_intake_server(tmp_path_factory.mktemp("gunicorn-errors-journalist"), app_spec=JOURNALIST_APP_FACTORY) as running:
        yield running


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


REFUSED = {
    "over-long request line": (b"GET /" + SECRET.encode() * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "malformed header": (f"GET / HTTP/1.1\r\nHost: x\r\nBad {SECRET}: v\r\n\r\n".encode(), 400),
    "header without a colon": (f"GET / HTTP/1.1\r\nHost: x\r\n{SECRET}\r\n\r\n".encode(), 400),
    "over-long header": (f"GET / HTTP/1.1\r\nHost: x\r\nX-Note: {SECRET * 400}\r\n\r\n".encode(), 431),
    "bad method": (f"G{SECRET}T / HTTP/1.1\r\nHost: x\r\n\r\n".encode().replace(b"-", b"@"), 400),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_request_gunicorn_refuses_gets_the_strict_headers_and_no_echo(server: IntakeServer, case: str):
    request, expected_status = REFUSED[case]
    status, headers, body = raw_exchange(server.gunicorn.port, request)
    assert status == expected_status
    for name, value in STRICT.items():
        assert headers.get(name, "").startswith(value), (name, headers)
    assert headers["content-type"] == "text/plain; charset=utf-8" and headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body) and body.startswith(str(status).encode())
    assert SECRET.encode() not in body and SECRET.replace("-", "@").encode() not in body
    assert b"<" not in body  # plain text, nothing a browser could render as a page
    server.gunicorn.check_alive()
    log = server.gunicorn.error_log_text()
    assert SECRET not in log and SECRET.replace("-", "@") not in log


def test_refused_requests_keep_gunicorns_statuses_and_app_failures_are_500():
    from gunicorn.http.errors import InvalidHeaderName, InvalidResponseHeader, LimitRequestLine

    from intake.gunicorn_worker import error_response, refusal_status

    assert refusal_status(LimitRequestLine(5000, 2048)) == (414, "URI Too Long")
    assert refusal_status(InvalidHeaderName(SECRET)) == (400, "Bad Request")
    assert refusal_status(InvalidResponseHeader(SECRET)) == (500, "Internal Server Error")
    assert refusal_status(RuntimeError(SECRET)) == (500, "Internal Server Error")
    answer = error_response(500, "Internal Server Error")
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and answer.endswith(b"\r\n\r\n500 Internal Server Error\n")


def test_the_gunicorn_config_runs_this_worker():
    from pathlib import Path

    from gunicorn.workers.ggevent import GeventWorker

    from intake.gunicorn_worker import IntakeGeventWorker

    config = (Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py").read_text()
    assert 'worker_class = "intake.gunicorn_worker.IntakeGeventWorker"' in config
    assert issubclass(IntakeGeventWorker, GeventWorker)


# Normal pages, the app's own errors, and what gunicorn answers itself.
EVERY_KIND_OF_ANSWER = {
    "page": (b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
    "stylesheet": (b"GET /static/style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
    "not found": (b"GET /no-such-page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
    "malformed request line": (b"GARBAGE\r\n\r\n", 400),
    "over-long request line": (REFUSED["over-long request line"][0], 414),
    "malformed header": (REFUSED["malformed header"][0], 400),
}


@pytest.mark.slow
@pytest.mark.parametrize("app", ["source", "journalist"])
@pytest.mark.parametrize("case", sorted(EVERY_KIND_OF_ANSWER))
def test_no_answer_carries_a_server_or_date_header(request, app: str, case: str):
    running: IntakeServer = request.getfixturevalue("server" if app == "source" else "journalist_server")
    raw, expected_status = EVERY_KIND_OF_ANSWER[case]
    status, headers, _body = raw_exchange(running.gunicorn.port, raw)
    assert status == expected_status
    assert "server" not in headers and "date" not in headers, headers
    assert headers["cache-control"] == "no-store"  # the answer is intake's, with its headers


def test_the_workers_own_busy_refusal_is_a_page_a_source_can_read_in_either_language():
    """Refused before the app (a circuit over its limits, a full worker), the answer cannot follow the
    page's language: it says what to do in each language of the pages, with the strict headers."""
    from intake.config import PAGE_LANGUAGES
    from intake.gunicorn_worker import BUSY_PAGE, error_response

    answer = error_response(503, "Service Unavailable", BUSY_PAGE)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nContent-Type: text/html; charset=utf-8\r\n" in head and b"\r\nConnection: close\r\n" in head
    assert b"\r\nContent-Security-Policy: default-src 'none'" in head
    assert f"Content-Length: {len(body)}".encode() in head
    text = body.decode("utf-8")
    assert "Wait a minute, then reload the page" in text and "Подождите минуту и обновите страницу" in text
    assert set(PAGE_LANGUAGES) == {"en", "ru"}  # a language added to the pages needs its words here too
    assert "<script" not in text and "http" not in text
