"""Keeping request details out of the error log.

Three writers can log about a request: gunicorn (``gunicorn.error``, when it
refuses a request or the app fails: it names the client address, the request
line or the URI) and each Flask app (``app.logger``, whose ``log_exception``
names the route and method, with the full traceback). An exception's message
can quote request data too (a header, a form value, bytes of an upload). The
same filter goes on all of them: only what happened, the exception's type and
the code locations are kept.
"""

from __future__ import annotations

import logging
import traceback


class RedactRequestDetails(logging.Filter):
    """Rewrites records about a request and drops every exception's message."""

    # Messages that name request details in their text or arguments, by how they start.
    _REQUEST_MESSAGES = {
        # gunicorn.workers.base.Worker.handle_error and the async workers' handle_request
        "Invalid request from": "Refused an invalid request (details withheld)",
        "Error handling request": "Error handling a request (details withheld)",
        # flask.Flask.log_exception: f"Exception on {request.path} [{request.method}]"
        "Exception on ": "Exception in a request (details withheld)",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        for prefix, replacement in self._REQUEST_MESSAGES.items():
            if message.startswith(prefix):
                record.msg, record.args = replacement, ()
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, error, tb = record.exc_info
            frames = "".join(traceback.format_tb(tb))
            # Raised in an OS thread and handed over without its frames (intake.store.group_commit).
            if raised_at := getattr(error, "raised_in_thread_at", None):
                frames += "  ... raised in an OS thread, at:\n" + "".join(raised_at)
            record.exc_text = f"Traceback (most recent call last):\n{frames}{exc_type.__name__} (message withheld)"
            record.exc_info = None
        return True


def redact(logger: logging.Logger) -> logging.Logger:
    """Put the filter on ``logger`` once. A logger-level filter sees every record
    logged there whatever its handlers (gunicorn replaces its handlers on reload;
    Flask adds its own)."""
    if not any(isinstance(f, RedactRequestDetails) for f in logger.filters):
        logger.addFilter(RedactRequestDetails())
    return logger
