"""Response headers and logging rules that every page of both interfaces gets.

The pages need nothing but our own stylesheet and same-origin form posts, so the
policy allows exactly that. Every response is no-store: a source's pages must not
linger in a cache on a shared or seized computer.
"""

from __future__ import annotations

import logging

from flask import Flask, Response

from intake.logs import redact

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
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
