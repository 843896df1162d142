"""Response headers and logging rules that every page of both interfaces gets
(the headers themselves: intake.headers, shared with gunicorn's own error answers)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, BinaryIO

from flask import Flask, Response, abort, request
from werkzeug.exceptions import BadRequest

from intake.headers import CONTENT_SECURITY_POLICY, SECURITY_HEADERS
from intake.logs import redact

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "add_security_headers", "install_security"]


def strict_cookie_config(cookie_name: str) -> dict[str, object]:
    """Flask settings for the one cookie each app keeps (its CSRF token): both apps use these."""
    return {
        "SESSION_COOKIE_NAME": cookie_name,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_SECURE": False,  # onion services are plain http; Tor encrypts end to end
        "WTF_CSRF_SSL_STRICT": False,  # no https Referer to check on an onion service
    }


# A content-hashed static file (intake.app.assets) may be cached; nothing else may.
IMMUTABLE_ASSET = "public, max-age=31536000, immutable"


def add_security_headers(response: Response) -> Response:
    immutable = response.headers.get("Cache-Control") == IMMUTABLE_ASSET
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if immutable:
        response.headers["Cache-Control"] = IMMUTABLE_ASSET
        del response.headers["Pragma"]
    # Flask's static route adds validators and an expiry; they only invite caching.
    for name in ("ETag", "Last-Modified", "Expires"):
        response.headers.pop(name, None)
    return response


def silence_request_logging() -> None:
    """Werkzeug's development server logs every request with the client address."""
    logging.getLogger("werkzeug").disabled = True


ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST"})  # all that a form-and-link site needs


class _GuardedInput:
    """The request body as the server hands it over, with its framing errors made a 400.

    gunicorn decodes a chunked body lazily, inside the app's read: a malformed chunk
    size raises gunicorn's own parse error there, which Flask would log as a 500 with
    a traceback. Here any such error becomes a plain BadRequest that names nothing
    of the request. Disconnects (OSError) pass through: the ingest handles them.
    """

    def __init__(self, stream: BinaryIO):
        self._stream = stream

    def _guarded(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._stream, method)(*args)
        except OSError:
            raise
        except Exception:
            raise BadRequest() from None

    def read(self, *args: Any) -> bytes:
        return self._guarded("read", *args)

    def readinto(self, buffer: Any) -> int:
        """Werkzeug's stream reads through this when the server's input has it (intake.socket_body:
        straight from the connection into the upload's buffer)."""
        if not hasattr(self._stream, "readinto"):
            data = self.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)
        return self._guarded("readinto", buffer)

    def readline(self, *args: Any) -> bytes:
        return self._guarded("readline", *args)

    def readlines(self, *args: Any) -> list[bytes]:
        return self._guarded("readlines", *args)

    def __iter__(self) -> Iterable[bytes]:
        return iter(self.readline, b"")


class _GuardBody:
    """WSGI middleware: wraps wsgi.input in a _GuardedInput before Flask sees it."""

    def __init__(self, wsgi_app: Any):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if "wsgi.input" in environ:
            environ["wsgi.input"] = _GuardedInput(environ["wsgi.input"])
        return self.wsgi_app(environ, start_response)


def _refuse_what_no_browser_sends() -> None:
    # Flask answers OPTIONS itself with 200 and an Allow header: a site of forms and links needs none of it.
    if request.method not in ALLOWED_METHODS:
        abort(405)
    # Tor Browser always sends Host; a request without one comes from something else.
    if not request.environ.get("HTTP_HOST"):
        abort(400)


def install_security(app: Flask) -> None:
    silence_request_logging()
    app.wsgi_app = _GuardBody(app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_refuse_what_no_browser_sends)
    # Flask logs an unhandled exception with its route, method and message: redacted like gunicorn's log.
    redact(app.logger)
    app.after_request(add_security_headers)
