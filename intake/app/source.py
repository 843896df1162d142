"""The pages a source uses: start, codename, submit, return, replies, log out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, g, make_response, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from intake.app import app_state
from intake.app.errors import FORM_EXPIRED, error_page
from intake.app.i18n import LANGUAGE_COOKIE, LANGUAGES
from intake.app.ingest import (
    ConnectionLostError,
    EmptySubmissionError,
    FormTokenError,
    MalformedUploadError,
    NoRecipientsError,
    UploadTooLargeError,
    ingest_submission,
)
from intake.app.sessions import COOKIE_NAME, SourceSession, end_session, open_session, resume_session
from intake.app.stores import request_store
from intake.circuits import CircuitBusyError, current_circuit
from intake.heap import give_back_free_memory
from intake.worker_threads import start_in_os_thread
from intake.codename import InvalidCodenameError, KdfBusyError, SourceKeys, derive_source_keys, generate_codename, normalize_codename
from intake.store.errors import StoreFullError
from keys.envelope import decrypt_bytes
from keys.errors import KeysError

blueprint = Blueprint("source", __name__)

MAX_REPLY_ID = 64


# --- sessions -----------------------------------------------------------------


def current_session() -> SourceSession | None:
    if "source_session" not in g:
        g.source_session = resume_session(request_store(), request.cookies.get(COOKIE_NAME))
    return g.source_session


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_session() is None:
            return redirect(url_for("source.login", ended=1), 303)
        return view(*args, **kwargs)

    return wrapper


def _start_session(response: Response, source_id: str, reply_secret_key: bytes) -> None:
    store = request_store()
    end_session(store, request.cookies.get(COOKIE_NAME))  # a second login replaces the first
    cookie = open_session(store, source_id, reply_secret_key, minutes=app_state().settings.session_minutes)
    response.set_cookie(COOKIE_NAME, cookie, path="/", httponly=True, samesite="Strict", secure=False)


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
    target = request.args.get("next", "")
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or "\\" in target or parts.scheme or parts.netloc:
        target = url_for("source.index")
    response = redirect(target, 303)
    response.set_cookie(LANGUAGE_COOKIE, code, path="/", httponly=True, samesite="Strict", secure=False)
    return response


@blueprint.post("/new")
def new_source():
    """Make a codename, show it once, and log the new source in."""
    codename = generate_codename()
    keys = _derive_keys(codename)
    source = request_store().create_source(keys.lookup_id, keys.reply_public_key)
    response = make_response(
        render_template("codename.html", codename=codename.split(), max_upload=_max_upload_label(), logged_in=True)
    )
    _start_session(response, source.id, keys.reply_secret_key)
    return response


@blueprint.get("/submit")
@login_required
def submit_form():
    return render_template("submit.html", max_upload=_max_upload_label())


@blueprint.post("/submit")
@login_required
def submit():
    """Stream the upload into encrypted submissions (CSRF is checked inside the stream)."""
    source_session = current_session()
    settings = app_state().settings
    if request.content_length is not None and request.content_length > settings.max_request_bytes:
        raise UploadTooLargeError("declared body too large")
    request.max_content_length = settings.max_request_bytes
    store = request_store()
    uploads = app_state().uploads
    try:
        with uploads.hold(current_circuit()):
            ingest_submission(
                request.stream,
                request.headers.get("Content-Type"),
                store=store,
                source_id=source_session.source_id,
                max_bytes=settings.max_request_bytes,
                check_form_token=_check_form_token,
            )
    except EmptySubmissionError:
        page = render_template("submit.html", max_upload=_max_upload_label(), empty=True)
        return page, 400
    finally:
        if uploads.held() == 0:
            start_in_os_thread(give_back_free_memory)  # the last upload in flight ended (intake.heap); not waited for
    # Publishing marked the source active, in the same transaction.
    return redirect(url_for("source.thanks"), 303)


def _check_form_token(value: str) -> None:
    try:
        validate_csrf(value)
    except ValidationError:
        raise FormTokenError("the form token is invalid") from None


@blueprint.get("/thanks")
@login_required
def thanks():
    return render_template("thanks.html")


@blueprint.get("/login")
def login():
    return render_template("login.html", ended=bool(request.args.get("ended")))


@blueprint.post("/login")
def login_submit():
    try:
        codename = normalize_codename(request.form.get("codename", ""))
    except InvalidCodenameError:
        return render_template("login.html", error="invalid"), 400
    keys = _derive_keys(codename)
    store = request_store()
    source = store.source_by_lookup(keys.lookup_id)
    if source is None:
        return render_template("login.html", error="unknown"), 401
    store.touch_source(source.id)
    store.purge_expired_sessions()
    response = redirect(url_for("source.replies"), 303)
    _start_session(response, source.id, keys.reply_secret_key)
    return response


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
    for reply in stored:
        try:
            _metadata, body = decrypt_bytes(reply.envelope, source_session.reply_secret_key)
            text = body.decode("utf-8", errors="replace")
        except KeysError:
            text = None
        shown.append(ShownReply(reply.id, reply.created_day, text))
    if stored:
        store.mark_replies_read(source_session.source_id, [reply.id for reply in stored])
    return render_template("replies.html", replies=shown)


@blueprint.post("/replies/<reply_id>/delete")
@login_required
def delete_reply(reply_id: str):
    if len(reply_id) > MAX_REPLY_ID or not request_store().delete_reply(current_session().source_id, reply_id):
        abort(404)
    return redirect(url_for("source.replies", deleted=1), 303)


@blueprint.post("/logout")
def logout():
    end_session(request_store(), request.cookies.get(COOKIE_NAME))
    session.clear()
    response = make_response(render_template("logged_out.html"))
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
    return response


# --- refusals -----------------------------------------------------------------

BUSY = (_l("Busy, try again"), _l("Many people are using the service right now. Wait a minute, then try again."))
TOO_LARGE = _l("What you tried to send is larger than the limit of %(size)s per submission. Send fewer or smaller files, or split them over several submissions.")
NOT_ACCEPTING = (_l("Not accepting submissions right now"), _l("The service cannot accept submissions at the moment. Nothing you sent was kept. Please try again later."))


@blueprint.errorhandler(KdfBusyError)
@blueprint.errorhandler(CircuitBusyError)
def _busy(_error: Exception):
    body, status = error_page(503, *BUSY)
    return body, status, {"Retry-After": "30"}


@blueprint.errorhandler(UploadTooLargeError)
def _too_large(_error: UploadTooLargeError):
    return error_page(413, advice=TOO_LARGE % {"size": _max_upload_label()})


@blueprint.errorhandler(FormTokenError)
def _bad_form_token(_error: FormTokenError):
    return error_page(400, *FORM_EXPIRED)


@blueprint.errorhandler(MalformedUploadError)
@blueprint.errorhandler(ConnectionLostError)
def _broken_upload(_error: Exception):
    return error_page(400)


@blueprint.errorhandler(StoreFullError)
@blueprint.errorhandler(NoRecipientsError)
def _not_accepting(_error: Exception):
    return error_page(503, *NOT_ACCEPTING)


@blueprint.app_context_processor
def _navigation() -> dict[str, bool]:
    # Reads only what this request already loaded: no store access from templates.
    return {"logged_in": g.get("source_session") is not None}
