"""What the apps log when a view fails: the exception's type and the code locations,
never the route, the method, the exception's message or anything the request carried."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from flask import Flask, request

from intake.logs import RedactRequestDetails
from tests.fixtures_newsroom import make_newsroom

ROUTE_SECRET = "route-9c1e7a"
QUERY_SECRET = "query-4b2f0d"
HEADER_SECRET = "header-77aa31"


def _failing_view():
    raise ValueError(f"could not use {request.args['q']} with {request.headers['X-Note']}")


def _log_of_a_failing_request(app: Flask, capsys) -> str:
    app.add_url_rule(f"/fails/{ROUTE_SECRET}", "fails", _failing_view)
    app.testing = False  # errors are logged and answered with 500, as in production
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    app.logger.addHandler(handler)
    try:
        response = app.test_client().get(f"/fails/{ROUTE_SECRET}?q={QUERY_SECRET}", headers={"X-Note": HEADER_SECRET})
    finally:
        app.logger.removeHandler(handler)
    assert response.status_code == 500
    return stream.getvalue() + capsys.readouterr().err  # ours, and Flask's own handler on wsgi.errors


@pytest.mark.parametrize("which", ["source", "journalist"])
def test_an_exception_in_a_view_logs_no_route_message_or_request_data(tmp_path: Path, capsys, which: str):
    newsroom = make_newsroom(tmp_path)
    app = newsroom.source_app if which == "source" else newsroom.journalist_app
    log = _log_of_a_failing_request(app, capsys)
    assert "Exception in a request (details withheld)" in log
    assert "ValueError (message withheld)" in log and "_failing_view" in log  # type and code location stay
    for leak in (ROUTE_SECRET, QUERY_SECRET, HEADER_SECRET, "/fails", "[GET]"):
        assert leak not in log, leak


def test_gunicorn_config_uses_the_same_filter():
    config = (Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py").read_text()
    assert "from intake.logs import redact" in config and 'redact(logging.getLogger("gunicorn.error"))' in config
    assert RedactRequestDetails.__module__ == "intake.logs"


def test_gunicorn_as_shipped_logs_no_address_or_browser_of_any_request(tmp_path: Path):
    """SECURITY.md §2: no IP address and no user agent in the logs. The in-process tests cannot
    see gunicorn's own logging (its access log above all): this serves with deploy/gunicorn.conf.py
    and reads everything the server wrote, after normal pages, a missing one and refused requests."""
    import socket

    from tests.fixtures_server import SourceClient, run_intake_server

    agent, forwarded = "CanaryBrowser/1.0 (agent-5e1d9c)", "198.51.100.203"
    headers = f"User-Agent: {agent}\r\nX-Forwarded-For: {forwarded}\r\nX-Real-IP: {forwarded}\r\n"
    requests = [
        f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n",
        f"GET /nope-3a7f HTTP/1.1\r\nHost: x\r\n{headers}\r\n",
        f"GET / HTTP/1.1\r\nHost: x\r\n{headers}Bad Name: 1\r\n\r\n",  # a header gunicorn refuses
        f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n{headers}\r\n",  # over gunicorn's request line limit
    ]
    with run_intake_server(tmp_path) as server:
        SourceClient(server.url).start_as_new_source()  # a codename made: the app's own logging runs too
        answers = []
        for raw in requests:
            with socket.create_connection(("127.0.0.1", server.gunicorn.port), timeout=30) as sock:
                sock.sendall(raw.encode())
                answers.append(sock.recv(100).split(b"\r\n", 1)[0])
        log = server.gunicorn.error_log_text()
    assert [answer.split()[1] for answer in answers] == [b"200", b"404", b"400", b"414"], answers
    assert "Refused an invalid request" in log  # the refusals were logged: the log was written to
    assert "agent-5e1d9c" not in log and forwarded not in log and "127.0.0.1" not in log
