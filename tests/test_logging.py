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
