"""Response headers and logging rules that every page of both interfaces gets
(the headers themselves: intake.headers, shared with gunicorn's own error answers)."""

from __future__ import annotations

import logging

from flask import Flask, Response

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


def install_security(app: Flask) -> None:
    silence_request_logging()
    # Flask logs an unhandled exception with its route, method and message: redacted like gunicorn's log.
    redact(app.logger)
    app.after_request(add_security_headers)
