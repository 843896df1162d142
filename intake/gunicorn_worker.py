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

Imported by the gunicorn master when it reads its config (``worker_class``), so
it imports nothing of Flask or the app: the app loads in each worker, after
gevent has patched the standard library.
"""

from __future__ import annotations

import ssl

from gunicorn import util
from gunicorn.http import wsgi
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

from intake.headers import SECURITY_HEADERS

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


def error_response(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 answer: fixed body, strict headers, connection closed."""
    body = f"{status} {reason}\n".encode("ascii")
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


# The status line and headers gunicorn adds to every response that intake leaves out.
_DROPPED_DEFAULT_HEADERS = ("server:", "date:")


class ResponseWithoutServerOrDate(wsgi.Response):
    """gunicorn's HTTP/1 response, without its ``Server`` and ``Date`` headers."""

    def default_headers(self) -> list[str]:
        return [line for line in super().default_headers()
                if not line.lower().startswith(_DROPPED_DEFAULT_HEADERS)]


class IntakeGeventWorker(GeventWorker):
    """The gevent worker (see docs/worker-model.md) with intake's answers to refused requests."""

    def init_process(self) -> None:
        # gunicorn has no setting for these headers and builds each response through the module's
        # `Response` name (gunicorn.http.wsgi.create): point it at ours, in this worker process only.
        wsgi.Response = ResponseWithoutServerOrDate
        super().init_process()

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
