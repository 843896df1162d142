"""The journalist interface: a second Flask app on its own loopback port (and its
own client-authorised onion service). Sign in with passphrase + TOTP; list
sources (never content); download encrypted exports; upload signed reply
bundles; delete.

Sessions are server-side: the cookie holds a random token, the store a hash of
it, the day the session has surely ended by, and its exact expiry sealed under a
key derived from the token (a copy of the store tells no time of day). Flask's
signed (readable, not encrypted) cookie carries the CSRF token only: the
outcome of an action is a short code in the address it redirects to
(``/sources?done=...``), shown as one of the fixed messages in ``NOTICES``, never
a designation or anything from the store.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError, CSRFProtect
from keys.reply_bundle import MAX_REPLY_BUNDLE
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from intake.app import PACKAGE_DIR
from intake.app.i18n import LANGUAGES, install_i18n, language_redirect
from intake.app.security import install_security, strict_cookie_config
from intake.app.stores import install_store_pool, request_store, store_pool
from intake.config import Settings, load_settings_from_environment
from intake.exchange import (
    ExportScope,
    NothingToExportError,
    PreparedExport,
    ReplyBundleRefusedError,
    import_reply_bundle,
    selected_sources,
)
from intake.server_identity import load_server_signing_key, server_box_keys
from intake.journalist_auth import LoginError, LoginThrottledError, ThrottlePolicy, authenticate
from intake.store import Store, StoreError
from intake.store.pool import StorePool
from intake.store.newsroom import Newsroom, SourceOverview
from intake.told import catalogue, in_language
from intake.worker_threads import run_in_os_thread

SESSION_COOKIE = "journalist_session"
# Text fields are tiny, but Werkzeug's multipart decoder applies this bound to its
# buffer, which holds up to two 64 KiB reads of a file part too.
FORM_FIELD_BYTES = 1024 * 1024
MAX_SELECTED_SOURCES = 1000

blueprint = Blueprint("journalist", __name__)


class _InMemoryUploads(Request):
    """Uploads (reply bundles: ciphertext, at most MAX_CONTENT_LENGTH) are parsed
    from the stream into memory: Werkzeug would spool large ones to /tmp."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


@dataclass(frozen=True)
class JournalistState:
    settings: Settings
    throttle: ThrottlePolicy


@dataclass(frozen=True)
class CurrentJournalist:
    id: int
    name: str


def _state() -> JournalistState:
    return current_app.extensions["intake-journalist"]


def _session_id(token: str) -> bytes:
    return hashlib.blake2b(token.encode("ascii"), digest_size=32, person=b"intake:jsess-id").digest()


def _expiry_box(token: str) -> SecretBox:
    return SecretBox(hashlib.blake2b(token.encode("ascii"), digest_size=32, person=b"intake:jsess-key").digest())


def _open_session(token: str) -> CurrentJournalist | None:
    newsroom = Newsroom(request_store())
    found = newsroom.load_journalist_session(_session_id(token))
    if found is None:
        return None
    journalist_id, name, sealed_expiry = found
    try:
        expires_at = int.from_bytes(_expiry_box(token).decrypt(sealed_expiry), "big")
    except CryptoError:
        return None
    if expires_at <= time.time():
        newsroom.delete_journalist_session(_session_id(token))
        return None
    return CurrentJournalist(journalist_id, name)


def current_journalist() -> CurrentJournalist | None:
    if "journalist" not in g:
        token = request.cookies.get(SESSION_COOKIE, "")
        g.journalist = _open_session(token) if 20 <= len(token) <= 64 and token.isascii() else None
    return g.journalist


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_journalist() is None:
            return redirect(url_for("journalist.login"), 303)
        return view(*args, **kwargs)

    return wrapper


@blueprint.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"journalist": current_journalist()}


@blueprint.get("/")
def index():
    return redirect(url_for("journalist.sources" if current_journalist() else "journalist.login"), 303)


@blueprint.get("/language/<code>")
def language(code: str):
    if code not in LANGUAGES:
        abort(404)
    return language_redirect(code, url_for("journalist.index"))


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    # HEAD too (GET without the body): CSRFProtect checks POST only, so anything but POST is the page.
    if request.method != "POST":
        return render_template("journalist/login.html")
    form = request.form
    try:
        signed_in = authenticate(
            Newsroom(request_store()), form.get("name", "")[:64], form.get("passphrase", "")[:256], form.get("code", "")[:16],
            throttle_key=_state().settings.login_throttle_key, policy=_state().throttle, run=run_in_os_thread,
        )
    except LoginThrottledError:
        message = _("Too many failed sign-ins. Wait %(minutes)s minutes, then try again.", minutes=_state().throttle.window_minutes)
        return render_template("journalist/login.html", error=message), 429
    except LoginError:
        return render_template("journalist/login.html", error=_("The name, passphrase or code is wrong (each code works only once).")), 401
    token = secrets.token_urlsafe(32)
    minutes = current_app.config["JOURNALIST_SESSION_MINUTES"]
    expires_at = int(time.time()) + minutes * 60
    sealed_expiry = bytes(_expiry_box(token).encrypt(expires_at.to_bytes(8, "big")))
    Newsroom(request_store()).save_journalist_session(_session_id(token), signed_in.journalist_id, sealed_expiry, expires_at)
    response = redirect(url_for("journalist.sources"), 303)
    response.set_cookie(SESSION_COOKIE, token, max_age=minutes * 60, httponly=True, samesite="Strict", secure=False)
    return response


@blueprint.post("/logout")
def logout():
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        Newsroom(request_store()).delete_journalist_session(_session_id(token))
    response = redirect(url_for("journalist.login"), 303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="Strict")
    return response


@dataclass(frozen=True)
class Notice:
    category: str  # "notice" or "error" (a CSS class)
    text: str  # a lazy translation, rendered in the page's language


# What an action says on the sources page it redirects to, by the code in ?done=.
NOTICES: dict[str, Notice] = {
    "choose-sources": Notice("error", _l("Select at least one source to download.")),
    "choose-bundle": Notice("error", _l("Choose a reply bundle file to upload.")),
    "nothing-new": Notice("notice", _l("Nothing to download: there are no new submissions. Submissions downloaded before are in “Download everything” until they are deleted.")),
    "nothing-selected": Notice("notice", _l("Nothing to download: the selected sources have no submissions.")),
    "nothing-all": Notice("notice", _l("Nothing to download: there are no submissions.")),
    "deleted-submissions": Notice("notice", _l("Deleted the source's submissions.")),
    "deleted-source": Notice("notice", _l("Deleted the source and everything from and for it.")),
}


def _back_to_sources(done: str):
    assert done in NOTICES
    return redirect(url_for("journalist.sources", done=done), 303)


@blueprint.get("/sources")
@login_required
def sources():
    """One page of sources, sorted and cut in SQL: its size and time do not grow with the store."""
    number = request.args.get("page", 1, type=int)
    if number < 1:
        abort(404)
    per_page = current_app.config["JOURNALIST_SOURCES_PER_PAGE"]
    newsroom = Newsroom(request_store())
    # One more than a page: whether there is a next page, without counting every source.
    listed = newsroom.source_page((number - 1) * per_page, per_page + 1)
    if not listed and number > 1:
        abort(404)
    # Counted up to one past the limit: "more than N" costs the same in any store.
    count_limit = current_app.config["JOURNALIST_COUNT_NEW_UP_TO"]
    new = newsroom.count_new_submissions(count_limit + 1)
    return render_template("journalist/sources.html", sources=listed[:per_page], new=new, count_limit=count_limit,
                           page=number, first=(number - 1) * per_page + 1, has_next=len(listed) > per_page,
                           notice=NOTICES.get(request.args.get("done", "")))


@blueprint.post("/export")
@login_required
def export():
    scope_name = request.form.get("scope", "new")
    if scope_name not in ("new", "selected", "all"):
        abort(400)
    chosen = selected_sources(request.form.getlist("source")[:MAX_SELECTED_SOURCES])
    if scope_name == "selected" and not chosen:
        return _back_to_sources("choose-sources")
    scope = ExportScope(only_new=scope_name == "new", source_ids=chosen if scope_name == "selected" else None)
    # The download outlives this request (its store goes back at teardown): it streams
    # from a store of its own, taken from the same pool and given back when it ends.
    pool = store_pool()
    store = pool.take()
    try:
        prepared = PreparedExport(store, scope, load_server_signing_key(_state().settings.data_dir))
    except NothingToExportError:
        pool.give_back(store)
        return _back_to_sources(f"nothing-{scope_name}")
    except BaseException:
        pool.give_back(store, failed=True)
        raise
    name = f"intake-export-{time.strftime('%Y-%m-%d', time.gmtime())}-{secrets.token_hex(3)}.bundle"
    return Response(
        _stream_and_give_back(prepared, pool, store),
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
        direct_passthrough=True,
    )


def _stream_and_give_back(prepared: PreparedExport, pool: StorePool, store: Store) -> Iterator[bytes]:
    done = False
    try:
        yield from prepared
        # Reached only when the server asks for more after the last piece: all of it was sent.
        prepared.mark_exported()
        done = True
    finally:
        pool.give_back(store, failed=not done)


@blueprint.post("/replies")
@login_required
def upload_replies():
    upload = request.files.get("bundle")
    if upload is None or not upload.filename:
        return _back_to_sources("choose-bundle")
    try:
        report = import_reply_bundle(request_store(), upload.stream, server_box_keys(_state().settings.data_dir))
    except ReplyBundleRefusedError as error:
        return render_template("journalist/error.html", title=_("Reply bundle refused"),
                               message=_("Nothing was imported: {reason}.").format(reason=_said(error.reason))), 400
    return render_template("journalist/import_report.html", report=report)


def _source_or_404(newsroom: Newsroom, source_id: str) -> SourceOverview:
    source = newsroom.source_overview_of(source_id)
    if source is None:
        abort(404)
    return source


@blueprint.get("/sources/<source_id>/delete")
@login_required
def confirm_delete(source_id: str):
    source = _source_or_404(Newsroom(request_store()), source_id)
    return render_template("journalist/confirm_delete.html", source=source)


@blueprint.post("/sources/<source_id>/delete-submissions")
@login_required
def delete_submissions(source_id: str):
    newsroom = Newsroom(request_store())
    _source_or_404(newsroom, source_id)
    newsroom.delete_submissions_of(source_id)
    return _back_to_sources("deleted-submissions")


@blueprint.post("/sources/<source_id>/delete")
@login_required
def delete_source(source_id: str):
    newsroom = Newsroom(request_store())
    _source_or_404(newsroom, source_id)
    newsroom.delete_source(source_id)
    return _back_to_sources("deleted-source")


# --- errors: say what to do, never anything internal -----------------------------

_ERRORS = {
    400: (_l("Something was wrong with that request"), _l("Go back, reload the page and try again.")),
    403: (_l("Not allowed"), _l("Sign in again.")),
    404: (_l("Not found"), _l("There is nothing at this address (it may have been deleted).")),
    405: (_l("Not allowed"), _l("This page cannot be used that way.")),
    413: (_l("Too large"), _l("A reply bundle may be at most %(size)s MiB.", size=MAX_REPLY_BUNDLE // (1 << 20))),
    500: (_l("Something went wrong"), _l("The server could not finish this request. Nothing was changed by it.")),
    503: (_l("Busy"), _l("The server is busy right now. Wait a minute, then try again.")),
}


def _error(status: int, message: str | None = None):
    title, advice = _ERRORS.get(status, _ERRORS[500])
    return render_template("journalist/error.html", title=title, message=message or advice), status


def _said(error: Exception) -> str:
    """An error of the layers below in the page's language (intake.told)."""
    return in_language(error, catalogue(str(get_locale())).gettext)


def _http_error(error: HTTPException):
    if error.code is None or error.code < 400:
        return error
    return _error(error.code if error.code in _ERRORS else 500)


def _install_error_pages(app: Flask) -> None:
    app.register_error_handler(CSRFError, lambda _e: _error(400, _("The form expired or came from elsewhere. Reload the page and try again.")))
    app.register_error_handler(RequestEntityTooLarge, lambda _e: _error(413))
    app.register_error_handler(StoreError, lambda e: _error(503, _said(e)))
    app.register_error_handler(HTTPException, _http_error)


def create_journalist_app(settings: Settings | None = None, **config_overrides: Any) -> Flask:
    """The journalist interface for one instance (``settings=None``: from $INTAKE_DATA)."""
    if settings is None:
        settings = load_settings_from_environment()
    app = Flask(__name__, template_folder=str(PACKAGE_DIR / "templates"), static_folder=str(PACKAGE_DIR / "static"))
    app.request_class = _InMemoryUploads
    app.config.update(
        SECRET_KEY=settings.journalist_flask_secret_key,
        **strict_cookie_config("journalist_csrf"),
        WTF_CSRF_TIME_LIMIT=60 * 60,
        MAX_CONTENT_LENGTH=MAX_REPLY_BUNDLE + FORM_FIELD_BYTES,
        MAX_FORM_MEMORY_SIZE=FORM_FIELD_BYTES,
        JOURNALIST_SESSION_MINUTES=30,
        JOURNALIST_SOURCES_PER_PAGE=50,  # ~25 KB of HTML a page
        JOURNALIST_COUNT_NEW_UP_TO=1000,
        BABEL_TRANSLATION_DIRECTORIES=str(PACKAGE_DIR / "translations"),
        BABEL_DEFAULT_LOCALE="en",
    )
    app.config.update(config_overrides)
    app.extensions["intake-journalist"] = JournalistState(settings, app.config.get("JOURNALIST_THROTTLE", ThrottlePolicy()))
    install_security(app)
    # Its own catalogue (domain "journalist"), apart from the source pages' one.
    install_i18n(app, domain="journalist")
    CSRFProtect(app)
    _install_error_pages(app)
    install_store_pool(app, settings)
    app.register_blueprint(blueprint)
    return app
