"""Error pages that tell the source what to do and nothing about the server."""

from __future__ import annotations

from flask import Flask, g, render_template
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

# What a source can do about each failure; no detail from the exception is ever shown.
ERROR_MESSAGES = {
    400: (_l("Something was wrong with that request"), _l("Go back, reload the page and try again.")),
    403: (_l("Not allowed"), _l("This page is not available to you. Go back to the start page.")),
    404: (_l("Page not found"), _l("There is nothing at this address. Go back to the start page.")),
    405: (_l("Not allowed"), _l("This page cannot be used that way. Go back to the start page.")),
    413: (_l("Too large"), _l("What you tried to send is larger than this service accepts.")),
    429: (_l("Too many requests"), _l("Please wait a minute and try again.")),
    500: (_l("Something went wrong"), _l("The service could not finish this request. Nothing you sent was kept. Please try again later.")),
    503: (_l("Busy, try again"), _l("The service is busy right now. Wait a minute, then try again.")),
}
FORM_EXPIRED = (_l("The form has expired"), _l("For your safety, forms expire. Go back, reload the page and send again."))
# The same failures part-way through an upload whose earlier parts were kept (g.received, listed above the advice):
# the title says so, where the failure's own ("The upload did not arrive") would contradict the list below it.
SOME_ARRIVED_TITLE = _l("Not everything arrived")
SOME_ARRIVED = _l("The rest did not arrive. Reload the page and send the rest again.")
SOME_ARRIVED_MESSAGES = {
    500: _l("The service could not finish this request, so the rest was not kept. Please send the rest again later."),
}


def error_page(status: int, title=None, advice=None, advice_if_some_arrived=None):
    """The page for a failure; during an upload whose earlier parts were published it lists
    them first and gives ``advice_if_some_arrived`` instead (what to do with the rest)."""
    default_title, default_advice = ERROR_MESSAGES.get(status, ERROR_MESSAGES[500])
    received = g.get("received") or []
    if received:
        title = SOME_ARRIVED_TITLE
        advice = advice_if_some_arrived or SOME_ARRIVED_MESSAGES.get(status, SOME_ARRIVED)
    page = render_template("error.html", title=title or default_title, advice=advice or default_advice, received=received)
    return page, status


def _http_error(error: HTTPException):
    if error.code is None or error.code < 400:  # redirects raised by routing pass through
        return error
    status = error.code if error.code in ERROR_MESSAGES else 500
    return error_page(status)


def _csrf_error(_error: CSRFError):
    return error_page(400, *FORM_EXPIRED)


def _unexpected_error(_error: InternalServerError):
    return error_page(500)


def install_error_pages(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _unexpected_error)
