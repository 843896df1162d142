"""Language of the pages: the browser's choice, overridable by a plain link.

The override is a cookie holding only a language code, set by a GET link so it
works without JavaScript. Tor Browser asks for English whatever its user reads,
so Accept-Language is only the last guess: an operator whose sources read Russian
sets the source pages' language (``INTAKE_SOURCE_LANGUAGE``). Each app has its own catalogue
(domain): the source pages ``messages``, the journalist pages ``journalist``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, redirect, request
from flask_babel import Babel, get_locale

from intake.config import PAGE_LANGUAGES as LANGUAGES

LANGUAGE_COOKIE = "lang"


def select_locale() -> str:
    """The visitor's choice (the cookie), else the operator's (the app's config ``INTAKE_DEFAULT_LANGUAGE``,
    from ``INTAKE_SOURCE_LANGUAGE`` for the source pages), else the browser's."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    default = current_app.config.get("INTAKE_DEFAULT_LANGUAGE")
    if default in LANGUAGES:
        return default
    return request.accept_languages.best_match(list(LANGUAGES)) or "en"


def language_redirect(code: str, fallback: str) -> Response:
    """Remember ``code`` and go back to the page the link came from (a path on this site, else ``fallback``)."""
    target = request.args.get("next", "")
    parts = urlsplit(target)
    control = any(ord(character) < 0x20 or ord(character) == 0x7F for character in target)  # no header can carry them
    if control or not target.startswith("/") or target.startswith("//") or "\\" in target or parts.scheme or parts.netloc:
        target = fallback
    response = redirect(target, 303)
    response.set_cookie(LANGUAGE_COOKIE, code, path="/", httponly=True, samesite="Strict", secure=False)
    return response


def install_i18n(app: Flask, domain: str = "messages") -> None:
    Babel(app, locale_selector=select_locale, default_domain=domain)
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, get_locale=get_locale)
