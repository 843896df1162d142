"""The pages a source uses: start, codename, submit, return, status and replies, log out.

A source never loses work or identity without being told: the codename page can
be reloaded while the session lives; an upload renews the session it started
in, so a long upload never ends on "your session has ended"; a message sent
after the session ended is handed back; logging out of a codename that never
sent anything asks first; and a logged-in source is shown as logged in on
every page, so "get a codename" never silently starts a second identity.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Response, abort, g, make_response, redirect, render_template, request, session, url_for
from flask_babel import format_date, format_decimal, get_locale, ngettext, npgettext, pgettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from intake.app import app_state
from intake.app.errors import FORM_EXPIRED, error_page
from intake.app.i18n import LANGUAGES, language_redirect
from intake.app.give_back import read_unsent_form
from intake.app.ingest import (
    MAX_FILES,
    ConnectionLostError,
    EmptySubmissionError,
    FormTokenError,
    MalformedUploadError,
    NoRecipientsError,
    TooManyFilesError,
    UnexpectedPartError,
    UploadTooLargeError,
    UploadTooSlowError,
    ingest_submission,
)
from intake.app.sealed_cookies import (
    CODENAME_COOKIE,
    RECEIPT_COOKIE,
    delete_sealed_cookies,
    open_receipt,
    seal,
    seal_receipt,
    set_sealed_cookie,
    unseal,
)
from intake.app.sessions import COOKIE_NAME, SourceSession, end_session, new_session, open_session, resume_session, wipe_session
from intake.app.stores import request_store
from intake.circuits import CircuitBusyError, current_circuit
from intake.heap import give_back_free_memory
from intake.worker_threads import start_in_os_thread
from intake.codename import (
    CODENAME_LANGUAGES,
    InvalidCodenameError,
    KdfBusyError,
    SourceKeys,
    derive_source_keys,
    generate_codename,
    normalize_codename,
)
from intake.retention import RetentionPolicy
from intake.store.errors import SourceGoneError, StoreBusyError, StoreError, StoreFullError
from intake.wordlists.vocabulary import language_of
from keys.envelope_reader import decrypt_bytes
from keys.errors import KeysError
from nacl.public import PrivateKey

blueprint = Blueprint("source", __name__)

MAX_REPLY_ID = 64
GIVE_BACK_WAIT_SECONDS = 10  # for the message of an upload declared too large, before the page answers with what came


# --- sessions -----------------------------------------------------------------


def current_session() -> SourceSession | None:
    if "source_session" not in g:
        g.source_session = resume_session(request_store(), request.cookies.get(COOKIE_NAME))
    return g.source_session


@blueprint.teardown_app_request
def _wipe_session_key(_error: BaseException | None) -> None:
    """The reply secret key a resumed session held is wiped once the request is over."""
    wipe_session(g.pop("source_session", None))


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_session() is None:
            return redirect(url_for("source.login", ended=1), 303)
        return view(*args, **kwargs)

    return wrapper


def _start_session(response: Response, source_id: str, reply_secret_key: bytes | bytearray) -> str:
    """Open a session (ending the one this browser had), set its cookie and return the cookie's value."""
    store = request_store()
    end_session(store, request.cookies.get(COOKIE_NAME))  # a second login replaces the first
    cookie = open_session(store, source_id, reply_secret_key, minutes=app_state().settings.session_minutes)
    _set_session_cookie(response, cookie)
    return cookie


def _set_session_cookie(response: Response, cookie: str) -> None:
    response.set_cookie(COOKIE_NAME, cookie, path="/", httponly=True, samesite="Strict", secure=False)


def _shown_codename(source_session: SourceSession) -> list[str] | None:
    """The codename made in this session, if this browser still holds it sealed."""
    opened = unseal(CODENAME_COOKIE, request.cookies.get(COOKIE_NAME), source_session.reply_secret_key, request.cookies.get(CODENAME_COOKIE))
    return opened.decode("utf-8").split() if opened else None


def _unused_source_days() -> int:
    return RetentionPolicy.load(app_state().settings.data_dir).unused_source_days


def _derive_keys(codename: str) -> SourceKeys:
    settings = app_state().settings
    return app_state().kdf_gate.run(
        derive_source_keys,
        codename,
        settings.codename_salt,
        circuit=current_circuit(),
        opslimit=settings.kdf_opslimit,
        memlimit=settings.kdf_memlimit,
    )


def _max_upload_label() -> str:
    mebibytes = format(app_state().settings.max_request_bytes / (1024 * 1024), "g")
    return _("%(size)s MiB", size=mebibytes)


# --- pages --------------------------------------------------------------------


@blueprint.get("/")
def index():
    return render_template("index.html")


@blueprint.get("/language/<code>")
def language(code: str):
    if code not in LANGUAGES:
        abort(404)
    return language_redirect(code, url_for("source.index"))


@blueprint.post("/new")
def new_source():
    """Make a codename in the page's language, log the new source in, and show the codename.
    On the page of a new codename in another language, before anything was sent, the source may
    ask for one in the page's language instead: the first is forgotten once the second exists."""
    source_session = current_session()
    if source_session is not None:
        shown = _shown_codename(source_session)
        if not (request.form.get("instead") and shown and _language_of_codename(shown) != get_locale().language):
            # Never start a second identity without the source logging out first.
            return redirect(url_for("source.codename_page" if shown else "source.submit_form"), 303)
    language = get_locale().language
    codename = generate_codename(language=language if language in CODENAME_LANGUAGES else "en")
    keys = _derive_keys(codename)  # before anything is given up: a busy server leaves the first codename working
    response = redirect(url_for("source.codename_page"), 303)
    if source_session is None:
        source = request_store().create_source(keys.lookup_id, keys.reply_public_key)
        cookie = _start_session(response, source.id, keys.reply_secret_key)
    else:
        # The old source, its session, the new source and its session change in one transaction:
        # a failure anywhere leaves the source logged in with the first codename.
        session = new_session(keys.reply_secret_key, minutes=app_state().settings.session_minutes)
        if request_store().exchange_unused_source(source_session.source_id, keys.lookup_id, keys.reply_public_key,
                                                  session.row) is None:
            return redirect(url_for("source.codename_page"), 303)  # something was sent from another tab meanwhile
        cookie = session.cookie
        _set_session_cookie(response, cookie)
    set_sealed_cookie(response, CODENAME_COOKIE, seal(CODENAME_COOKIE, cookie, keys.reply_secret_key, codename.encode("utf-8")))
    return response


@blueprint.get("/codename")
@login_required
def codename_page():
    """The new codename and the form; the same codename on every reload while the session lives."""
    words = _shown_codename(current_session())
    if words is None:
        return redirect(url_for("source.submit_form"), 303)
    return render_template("codename.html", codename=words, codename_language=_language_of_codename(words),
                           max_upload=_max_upload_label(), session_minutes=app_state().settings.session_minutes,
                           may_change_language=not request_store().source_has_sent(current_session().source_id))


def _language_of_codename(words: list[str]) -> str:
    return language_of(words[0])


@blueprint.get("/submit")
@login_required
def submit_form():
    return render_template("submit.html", max_upload=_max_upload_label())


@blueprint.post("/submit")
def submit():
    """Stream the upload into encrypted submissions, each published once whole. The CSRF token is
    the form's first part and is checked inside the stream, before anything is published; a
    refusal's page lists what was published before it (g.received)."""
    settings = app_state().settings
    source_session = current_session()
    content_type = request.headers.get("Content-Type")
    declared_too_large = request.content_length is not None and request.content_length > settings.max_request_bytes
    # A body declared too large is refused before its files are read; the message comes before them
    # in the form, so it goes back into a form rather than being lost with the files. A browser sends
    # the body at once; a client that waits for the answer first gets it after a few seconds, with
    # what arrived of the message, and is never asked for the rest.
    request.max_content_length = request.content_length if declared_too_large else settings.max_request_bytes
    wait_seconds = GIVE_BACK_WAIT_SECONDS if declared_too_large else None
    if source_session is None:
        # The session ended while the source was writing: nothing can be stored, so hand the text back.
        unsent = read_unsent_form(request.stream, content_type, wait_seconds=wait_seconds)
        return render_template("login.html", ended=True, unsent=unsent, too_large=declared_too_large,
                               max_upload=_max_upload_label()), 401
    if declared_too_large:
        unsent = read_unsent_form(request.stream, content_type, wait_seconds=wait_seconds)
        return render_template("submit.html", max_upload=_max_upload_label(), too_large=True, unsent=unsent,
                               message=unsent.message), 413
    store = request_store()
    uploads = app_state().uploads
    g.received = []
    try:
        with uploads.hold(current_circuit()):
            result = ingest_submission(
                request.stream,
                request.headers.get("Content-Type"),
                store=store,
                source_id=source_session.source_id,
                max_bytes=settings.max_request_bytes,
                check_form_token=_check_form_token,
                on_published=g.received.append,
            )
    except EmptySubmissionError:
        page = render_template("submit.html", max_upload=_max_upload_label(), empty=True)
        return page, 400
    finally:
        if uploads.held() == 0:
            start_in_os_thread(give_back_free_memory)  # the last upload in flight ended (intake.heap); not waited for
    # Publishing marked the source active, in the same transaction.
    response = redirect(url_for("source.thanks"), 303)
    cookie = request.cookies.get(COOKIE_NAME)
    renewed = resume_session(store, cookie)
    wipe_session(renewed)  # only whether it still lives matters here
    if renewed is None:
        # The upload outlived the session it started in: open a new one, so the source lands on its
        # receipt still logged in (and its codename page still opens).
        codename = _shown_codename(source_session)
        cookie = _start_session(response, source_session.source_id, source_session.reply_secret_key)
        if codename:
            sealed = seal(CODENAME_COOKIE, cookie, source_session.reply_secret_key, " ".join(codename).encode("utf-8"))
            set_sealed_cookie(response, CODENAME_COOKIE, sealed)
    set_sealed_cookie(response, RECEIPT_COOKIE, seal_receipt(cookie, source_session.reply_secret_key, result.items))
    return response


def _check_form_token(value: str) -> None:
    try:
        validate_csrf(value)
    except ValidationError:
        raise FormTokenError("the form token is invalid") from None


@blueprint.get("/thanks")
@login_required
def thanks():
    """What arrived in the last upload, part by part (the receipt lives sealed in the browser only)."""
    source_session = current_session()
    items = open_receipt(request.cookies.get(COOKIE_NAME), source_session.reply_secret_key, request.cookies.get(RECEIPT_COOKIE))
    if not items:  # nothing sent in this session: a thank-you would tell the source something arrived
        return redirect(url_for("source.replies"), 303)
    return render_template("thanks.html", items=items, codename_held=_shown_codename(source_session) is not None)


@blueprint.get("/login")
def login():
    return render_template("login.html", ended=bool(request.args.get("ended")))


@blueprint.post("/login")
def login_submit():
    # A message handed back after the session ended travels with the login, to go back in the form.
    unsent_message = request.form.get("message", "")
    try:
        codename = normalize_codename(request.form.get("codename", ""))
    except InvalidCodenameError:
        return render_template("login.html", error="invalid", unsent_message=unsent_message), 400
    keys = _derive_keys(codename)
    store = request_store()
    source = store.source_by_lookup(keys.lookup_id)
    if source is None:
        page = render_template("login.html", error="unknown", unused_days=_unused_source_days(), unsent_message=unsent_message)
        return page, 401
    store.touch_source(source.id)
    store.purge_expired_sessions()
    if unsent_message.strip():
        page = render_template("submit.html", max_upload=_max_upload_label(), message=unsent_message, handed_back=True, logged_in=True)
        response = make_response(page)
    else:
        response = redirect(url_for("source.replies"), 303)
    _start_session(response, source.id, keys.reply_secret_key)
    return response


@dataclass(frozen=True)
class ShownSubmission:
    kind: str
    received: str
    downloaded: str | None  # the day the newsroom first exported it


def _day(iso_day: str) -> str:
    return format_date(datetime.date.fromisoformat(iso_day), format="long")


@dataclass(frozen=True)
class ShownReply:
    id: str
    day: str
    text: str | None  # None: the reply could not be opened with this source's key


@blueprint.get("/replies")
@login_required
def replies():
    """Replies are decrypted in memory for this response only."""
    source_session = current_session()
    store = request_store()
    stored = store.replies_for(source_session.source_id)
    shown = []
    key = PrivateKey(bytes(source_session.reply_secret_key))  # PyNaCl takes its keys as bytes only
    for reply in stored:
        try:
            _metadata, body = decrypt_bytes(reply.envelope, key)
            text = body.decode("utf-8", errors="replace")
        except KeysError:
            text = None
        shown.append(ShownReply(reply.id, _day(reply.created_day), text))
    if stored:
        store.mark_replies_read(source_session.source_id, [reply.id for reply in stored])
    submissions = [
        ShownSubmission(item.kind, _day(item.received_day), _day(item.exported_day) if item.exported_day else None)
        for item in store.submissions(source_session.source_id)
    ]
    return render_template("replies.html", replies=shown, submissions=submissions,
                           codename_held=_shown_codename(source_session) is not None)


@blueprint.post("/replies/<reply_id>/delete")
@login_required
def delete_reply(reply_id: str):
    if len(reply_id) > MAX_REPLY_ID or not request_store().delete_reply(current_session().source_id, reply_id):
        abort(404)
    return redirect(url_for("source.replies", deleted=1), 303)


@blueprint.post("/logout")
def logout():
    source_session = current_session()
    if source_session is not None and not request.form.get("confirm") and not request_store().source_has_sent(source_session.source_id):
        # A codename that never sent anything is deleted after a day: say so before it is left behind.
        return render_template("confirm_logout.html", unused_days=_unused_source_days())
    end_session(request_store(), request.cookies.get(COOKIE_NAME))
    session.clear()
    g.source_session = None
    response = make_response(render_template("logged_out.html"))
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
    delete_sealed_cookies(response)
    return response


# --- refusals -----------------------------------------------------------------
# Each refusal during an upload has a second advice for when earlier parts were published
# (error_page lists those first): "the rest" is then what the source still has to send.

BUSY = (_l("Busy, try again"), _l("Many people are using the service right now. Wait a minute, then try again."))
TOO_LARGE = _l("Nothing was received: what you tried to send is larger than the limit of %(size)s per submission. Send fewer or smaller files, or split them over several submissions.")
TOO_LARGE_REST = _l("The rest did not arrive: a submission can be at most %(size)s. Send the rest in another submission, or as smaller files.")
TOO_MANY_FILES = (
    _l("Too many files"),
    _l("Nothing was received: you can send at most %(count)s files at a time. Send them in several submissions, or put them in an archive (ZIP) first."),
)
TOO_MANY_FILES_REST = _l("The rest did not arrive: you can send at most %(count)s files at a time. Send the rest in another submission, or put them in an archive (ZIP) first.")
UNEXPECTED_FORM = (
    _l("The form was not the one this page sends"),
    _l("What arrived had parts this page never sends, so nothing from this attempt was kept. Reload the page and send again."),
)
UNEXPECTED_FORM_REST = _l("After them came parts this page never sends, so the rest was not kept. Reload the page and send the rest again.")
BROKEN_UPLOAD = (
    _l("The upload did not arrive"),
    _l("The connection broke before everything arrived, so nothing from this attempt was kept. Send it again; what arrived earlier is listed under \"Status and replies\"."),
)
BROKEN_UPLOAD_REST = _l("The connection broke before the rest arrived. Send the rest again.")
TOO_SLOW = (
    _l("The connection became too slow"),
    _l("Almost nothing arrived for %(duration)s, so the server stopped the upload and nothing from this attempt was kept. Check your connection (in Tor Browser, a different bridge may help), then send it again."),
)
TOO_SLOW_REST = _l("Then almost nothing arrived for %(duration)s, so the server stopped the rest. Check your connection (in Tor Browser, a different bridge may help), then send the rest again.")
TOO_LONG = (
    _l("Sending took too long"),
    _l("This service allows at most %(duration)s for one submission, so the server stopped this one and nothing from it was kept. Over a slow connection, send large files one at a time, or make them smaller."),
)
TOO_LONG_REST = _l("This service allows at most %(duration)s for one submission, so the server stopped the rest. Send the rest again, one large file at a time.")
CODENAME_GONE = (
    _l("Nothing was kept: the codename is gone"),
    _l("While this was being sent, the codename it was sent with stopped existing: you exchanged it for a new one in another tab, or the newsroom deleted it. Nothing from this upload was kept. If you have a new codename, send it again with that one."),
)
NOT_ACCEPTING = (_l("Not accepting submissions right now"), _l("The service cannot accept submissions at the moment. Nothing you sent was kept. Please try again later."))
NOT_ACCEPTING_REST = _l("The service cannot accept the rest at the moment. Please send the rest later.")


@blueprint.errorhandler(KdfBusyError)
@blueprint.errorhandler(CircuitBusyError)
@blueprint.errorhandler(StoreBusyError)
def _busy(_error: Exception):
    body, status = error_page(503, *BUSY)
    return body, status, {"Retry-After": "30"}


@blueprint.errorhandler(UploadTooLargeError)
def _too_large(_error: UploadTooLargeError):
    size = _max_upload_label()
    return error_page(413, advice=TOO_LARGE % {"size": size}, advice_if_some_arrived=TOO_LARGE_REST % {"size": size})


@blueprint.errorhandler(FormTokenError)
def _bad_form_token(_error: FormTokenError):
    return error_page(400, *FORM_EXPIRED)


@blueprint.errorhandler(TooManyFilesError)
def _too_many_files(_error: TooManyFilesError):
    title, advice = TOO_MANY_FILES
    return error_page(413, title, advice % {"count": MAX_FILES}, TOO_MANY_FILES_REST % {"count": MAX_FILES})


@blueprint.errorhandler(MalformedUploadError)
@blueprint.errorhandler(ConnectionLostError)
def _broken_upload(error: Exception):
    if isinstance(error, UnexpectedPartError):
        return error_page(400, *UNEXPECTED_FORM, UNEXPECTED_FORM_REST)
    if isinstance(error, UploadTooSlowError):
        duration = {"duration": _duration_label(error.seconds)}
        title, advice = TOO_LONG if error.past_deadline else TOO_SLOW
        return error_page(400, title, advice % duration, (TOO_LONG_REST if error.past_deadline else TOO_SLOW_REST) % duration)
    return error_page(400, *BROKEN_UPLOAD, BROKEN_UPLOAD_REST)


@blueprint.errorhandler(SourceGoneError)
def _codename_gone(_error: SourceGoneError):
    return error_page(409, *CODENAME_GONE)


@blueprint.errorhandler(StoreFullError)
@blueprint.errorhandler(NoRecipientsError)
def _not_accepting(_error: Exception):
    return error_page(503, *NOT_ACCEPTING, NOT_ACCEPTING_REST)


def _duration_label(seconds: float) -> str:
    """How long a limit lasts, as the source reads it after "at most" or "for" (which Russian
    follows with the genitive: the context tells the translator)."""
    if seconds < 60:
        return npgettext("how long, after 'at most' or 'for'", "%(num)s second", "%(num)s seconds", max(1, int(seconds + 0.5)))
    hours, minutes = divmod(int(seconds / 60 + 0.5), 60)
    if (hours, minutes) == (0, 1):
        return pgettext("how long, after 'at most' or 'for'", "a minute")
    if (hours, minutes) == (1, 0):
        return pgettext("how long, after 'at most' or 'for'", "an hour")
    parts = [npgettext("how long, after 'at most' or 'for'", "%(num)s hour", "%(num)s hours", hours)] if hours else []
    if minutes:
        parts.append(npgettext("how long, after 'at most' or 'for'", "%(num)s minute", "%(num)s minutes", minutes))
    return " ".join(parts)


def _size_label(size: int) -> str:
    if size < 1024:
        return ngettext("%(num)s byte", "%(num)s bytes", size)
    if size < 1024 * 1024:
        return _("%(size)s KiB", size=format_decimal(round(size / 1024, 1)))
    return _("%(size)s MiB", size=format_decimal(round(size / (1024 * 1024), 1)))


@blueprint.app_context_processor
def _page_globals() -> dict[str, object]:
    return {"max_files": MAX_FILES, "size_label": _size_label}


@blueprint.app_context_processor
def _navigation() -> dict[str, bool]:
    """Every page shows whether the source is logged in (start, login and error pages included)."""
    if "source_session" not in g and request.cookies.get(COOKIE_NAME):
        try:
            current_session()
        except StoreError:  # an error page about the store itself: show it logged out rather than fail again
            g.source_session = None
    return {"logged_in": g.get("source_session") is not None}
