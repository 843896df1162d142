"""The source's journey through the pages, and every way it can fail, with the Flask test source_client."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.fixtures_app import AppInstance, csrf_token, make_instance, post_upload, start_as_new_source, upload_body
from intake.app.sessions import COOKIE_NAME
from intake.codename import derive_source_keys
from intake.store import Store
from keys.envelope import Metadata, encrypt_bytes
from keys.envelope_reader import decrypt_bytes

TRANSLATIONS = Path(__file__).resolve().parent.parent / "intake" / "translations"


def source_keys(instance: AppInstance, codename: str):
    settings = instance.settings
    return derive_source_keys(codename, settings.codename_salt, opslimit=settings.kdf_opslimit, memlimit=settings.kdf_memlimit)


def source_id_for(instance: AppInstance, codename: str) -> str:
    with Store.open(instance.settings) as store:
        return store.source_by_lookup(source_keys(instance, codename).lookup_id).id


def log_in(client, codename: str):
    token = csrf_token(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "codename": codename})


def test_landing_page_explains_safety_and_offers_both_paths(source_client):
    page = source_client.get("/")
    assert page.status_code == 200
    for advice in ("Tor Browser", "Safest", "bridge"):
        assert advice in page.text
    assert 'action="/new"' in page.text and 'href="/login"' in page.text
    assert "<script" not in page.text


def test_first_visit_shows_a_seven_word_codename_and_the_submit_form(source_client, app_instance):
    codename, page = start_as_new_source(source_client)
    assert len(codename.split()) == 7
    assert "Learn this codename now" in page
    assert 'enctype="multipart/form-data"' in page
    assert source_client.get_cookie(COOKIE_NAME) is not None
    # The codename is shown on its own page only: not on the form page, not after login.
    assert codename.split()[0] + " " + codename.split()[1] not in source_client.get("/submit").text


def test_codename_is_not_in_any_cookie(source_client):
    codename, _page = start_as_new_source(source_client)
    # The values: the cookies' names are fixed words of ours ("intake_session" holds "take", a
    # codename word), which made this fail at random.
    cookies = " ".join(cookie.value for cookie in source_client._cookies.values())
    for word in codename.split():
        assert word not in cookies


def test_new_source_without_csrf_token_is_refused(source_client, app_instance):
    source_client.get("/")
    page = source_client.post("/new", data={})
    assert page.status_code == 400
    assert "expired" in page.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["sources"] == 0


def test_message_and_several_files_are_stored_for_the_journalist(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    files = [("notes.txt", b"first file", "text/plain"), ("scan.pdf", b"%PDF-1.4 second", "application/pdf")]
    body, content_type = upload_body(csrf_token(page), message="the message", files=files)
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 303 and response.location.endswith("/thanks")
    assert "we received it" in source_client.get("/thanks").text
    journalist = app_instance.journalists[1].private_key
    with Store.open(app_instance.settings) as store:
        stored = store.submissions()
        opened = [decrypt_bytes(b"".join(store.submission_ciphertext(item.id)), journalist) for item in stored]
    assert [(meta.kind, meta.name, meta.content_type, body) for meta, body in opened] == [
        ("message", None, "text/plain; charset=utf-8", b"the message"),
        ("file", "notes.txt", "text/plain", b"first file"),
        ("file", "scan.pdf", "application/pdf", b"%PDF-1.4 second"),
    ]


def test_the_thanks_page_without_anything_sent_does_not_thank(source_client):
    """A source who opens /thanks (a bookmark, the back button in a new session) having sent
    nothing is not told "we received it": it lands on the status page."""
    start_as_new_source(source_client)
    page = source_client.get("/thanks")
    assert page.status_code == 303 and page.headers["Location"].endswith("/replies")
    assert "Thank you, we received it" not in source_client.get("/thanks", follow_redirects=True).text


def test_empty_submission_gets_a_clear_error(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    body, content_type = upload_body(csrf_token(page), message="  \r\n ", files=[("", b"", "application/octet-stream")])
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 400
    assert "write a message or choose at least one file" in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def test_upload_with_wrong_csrf_token_stores_nothing(source_client, app_instance):
    start_as_new_source(source_client)
    body, content_type = upload_body("not-a-token", message="forged")
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 400
    assert "expired" in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def test_a_form_with_a_part_the_page_never_sends_is_refused_and_says_nothing_was_kept(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    assert 'name="website"' not in page  # no hidden field for autofill to fill
    body, content_type = upload_body(csrf_token(page), message="a real message", extra_parts=(("website", b"autofilled"),))
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 400 and "nothing from this attempt was kept" in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def test_oversized_upload_is_refused_with_a_clear_page_and_nothing_kept(tmp_path):
    app_instance = make_instance(tmp_path, max_request_bytes=64 * 1024)
    source_client = app_instance.app.test_client()
    _codename, page = start_as_new_source(source_client)
    body, content_type = upload_body(csrf_token(page), message="fits", files=[("big.bin", b"x" * 100_000, "application/octet-stream")])
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 413
    assert "0.0625 MiB" in response.text  # the page names the limit
    # The files were too large, not the message: it goes back into the form, ready to send.
    assert '<textarea id="message" name="message" rows="10">fits</textarea>' in response.text
    assert "Your message is back in the box below" in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def test_oversized_upload_says_what_of_the_message_came_back(tmp_path):
    app_instance = make_instance(tmp_path, max_request_bytes=64 * 1024)
    source_client = app_instance.app.test_client()
    _codename, page = start_as_new_source(source_client)
    files = [("big.bin", b"x" * 100_000, "application/octet-stream")]
    response = post_upload(source_client, *upload_body(csrf_token(page), message="", files=files))
    assert response.status_code == 413 and "back in the box" not in response.text  # there was no message
    long_message = "a long account of what happened. " * 1000  # 33 KB: more than a page can hand back
    response = post_upload(source_client, *upload_body(csrf_token(page), message=long_message, files=files))
    assert response.status_code == 413 and "Your message is back in the box below" in response.text
    assert "Only the beginning of your message could be kept here" in response.text


def test_oversized_upload_after_the_session_ended_hands_the_message_back_on_the_login_page(tmp_path):
    app_instance = make_instance(tmp_path, max_request_bytes=64 * 1024)
    source_client = app_instance.app.test_client()
    _codename, page = start_as_new_source(source_client)
    end_the_session_as_expiry_would(app_instance, source_client)
    body, content_type = upload_body(csrf_token(page), message="written while the session ran out",
                                     files=[("big.bin", b"x" * 100_000, "application/octet-stream")])
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 401 and "Nothing was received" in response.text
    assert "written while the session ran out" in response.text and "choose them again" in response.text
    assert "also larger than the limit of 0.0625 MiB" in response.text  # not to choose the same files again


def test_oversized_upload_without_declared_length_is_cut_off_while_streaming(tmp_path):
    app_instance = make_instance(tmp_path, max_request_bytes=64 * 1024)
    source_client = app_instance.app.test_client()
    _codename, page = start_as_new_source(source_client)
    body, content_type = upload_body(csrf_token(page), message="fits", files=[("big.bin", b"x" * 300_000, "application/octet-stream")])
    chunks = iter([body[i : i + 10_000] for i in range(0, len(body), 10_000)])

    class Chunked:
        def read(self, size=-1):
            return next(chunks, b"")

    # As gunicorn hands over a chunked body: no length, a terminated input stream. The content type
    # goes in the environ: as a header with no data, the test client would replace its boundary.
    response = source_client.post(
        "/submit",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"CONTENT_TYPE": content_type, "wsgi.input": Chunked(), "wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert "This arrived safely and was kept" in response.text and "0.0625 MiB" in response.text
    with Store.open(app_instance.settings) as store:  # the whole message is kept, nothing of the file
        assert store.counts()["submissions"] == 1 and store.counts()["pending uploads"] == 0
    assert next(chunks, None) is not None  # cut off while streaming: the rest of the body was never read


def test_upload_without_session_hands_the_message_back_and_says_nothing_was_received(source_client, app_instance):
    page = source_client.get("/")
    body, content_type = upload_body(csrf_token(page.text), message="who am I <b>bold</b>",
                                     files=[("evidence.pdf", b"%PDF" * 1000, "application/pdf")])
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 401
    assert "Nothing was received" in response.text and "choose them again" in response.text
    assert "who am I &lt;b&gt;bold&lt;/b&gt;" in response.text  # escaped, never markup
    assert response.headers["Cache-Control"] == "no-store"
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def end_the_session_as_expiry_would(instance: AppInstance, client) -> None:
    from intake.app.sessions import resume_session

    with Store.open(instance.settings) as store:
        store.delete_session(resume_session(store, client.get_cookie(COOKIE_NAME).value).session_id)


def test_message_written_while_the_session_ran_out_is_sent_after_logging_in(source_client, app_instance):
    codename, page = start_as_new_source(source_client)
    end_the_session_as_expiry_would(app_instance, source_client)
    body, content_type = upload_body(csrf_token(page), message="too late, but kept")
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 401 and "Nothing was received" in response.text
    assert source_client.get("/replies").status_code == 303
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0
    # Logging in again from that page brings the text back into the submit form, unsent.
    login = source_client.post("/login", data={"csrf_token": csrf_token(response.text), "codename": codename,
                                               "message": "too late, but kept"})
    assert login.status_code == 200 and "it has not been sent yet" in login.text
    assert '<textarea id="message" name="message" rows="10">too late, but kept</textarea>' in login.text
    assert "Log out" in login.text


def test_long_message_is_handed_back_only_in_part_and_says_so(source_client):
    page = source_client.get("/")
    body, content_type = upload_body(csrf_token(page.text), message="слово " * 10_000)
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 401 and "Only the beginning of your message could be kept here" in response.text
    assert response.text.count("слово") > 1000


def test_an_expired_session_is_deleted_when_its_cookie_comes_back(tmp_path):
    instance = make_instance(tmp_path, session_minutes=0)
    client = instance.app.test_client()
    client.post("/new", data={"csrf_token": csrf_token(client.get("/").text)})
    assert client.get("/replies").status_code == 303  # sent to log in
    with Store.open(instance.settings) as store:
        # The exact expiry was sealed under the cookie's token; found expired, the session was deleted.
        assert store._conn.execute("SELECT count(*) FROM source_sessions").fetchone()[0] == 0


def test_returning_source_logs_in_and_sends_more(source_client, app_instance):
    codename, _page = start_as_new_source(source_client)
    source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    response = log_in(source_client, "  " + codename.upper().replace(" ", "   ") + " ")  # typed loosely
    assert response.status_code == 303 and response.location.endswith("/replies")
    form = source_client.get("/submit")
    body, content_type = upload_body(csrf_token(form.text), message="second visit")
    assert post_upload(source_client, body, content_type).status_code == 303
    with Store.open(app_instance.settings) as store:
        assert store.counts()["sources"] == 1
        assert [item.source_id for item in store.submissions()] == [source_id_for(app_instance, codename)]


def test_invalid_codename_is_refused_without_a_derivation(source_client):
    response = log_in(source_client, "not a real codename at all here")
    assert response.status_code == 400
    assert "not a valid codename" in response.text


def test_unknown_codename_is_refused(source_client):
    response = log_in(source_client, "april charging retrial concise delta arming churn")
    assert response.status_code == 401
    assert "do not know this codename" in response.text
    assert source_client.get_cookie(COOKIE_NAME) is None


def test_login_when_the_kdf_is_saturated_gets_a_busy_page(tmp_path):
    app_instance = make_instance(tmp_path, kdf_concurrency=1, kdf_queue=0)
    source_client = app_instance.app.test_client()
    gate = app_instance.app.extensions["intake"].kdf_gate
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=gate.run, args=(lambda: (started.set(), release.wait(10)),))
    holder.start()
    try:
        assert started.wait(5)
        response = log_in(source_client, "april charging retrial concise delta arming churn")
        new_source = source_client.post("/new", data={"csrf_token": csrf_token(source_client.get("/").text)})
    finally:
        release.set()
        holder.join()
    for busy in (response, new_source):
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "30"
        assert "try again" in busy.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["sources"] == 0


def test_replies_are_shown_decrypted_and_can_be_deleted(source_client, app_instance):
    codename, _page = start_as_new_source(source_client)
    keys = source_keys(app_instance, codename)
    with Store.open(app_instance.settings) as store:
        source_id = store.source_by_lookup(keys.lookup_id).id
        reply = store.add_reply(source_id, None, encrypt_bytes("Thank you. <b>Can you send more?</b>".encode(), [keys.reply_public_key], Metadata("reply")))
        store.add_reply(source_id, None, b"INTAKE-E damaged")
    page = source_client.get("/replies")
    assert page.status_code == 200
    assert "Thank you. &lt;b&gt;Can you send more?&lt;/b&gt;" in page.text  # escaped, never markup
    assert "could not be opened" in page.text
    delete = source_client.post(f"/replies/{reply.id}/delete", data={"csrf_token": csrf_token(page.text)})
    assert delete.status_code == 303
    assert "Can you send more?" not in source_client.get(delete.location).text
    with Store.open(app_instance.settings) as store:
        assert [r.id for r in store.replies_for(source_id)] != [reply.id]
        assert reply.id not in [r.id for r in store.replies_for(source_id)]


def test_a_source_cannot_delete_another_sources_reply(source_client, app_instance):
    codename, _page = start_as_new_source(source_client)
    keys = source_keys(app_instance, codename)
    with Store.open(app_instance.settings) as store:
        reply = store.add_reply(source_id_for(app_instance, codename), None, encrypt_bytes(b"private", [keys.reply_public_key], Metadata("reply")))
    other = app_instance.app.test_client()
    start_as_new_source(other)
    response = other.post(f"/replies/{reply.id}/delete", data={"csrf_token": csrf_token(other.get("/submit").text)})
    assert response.status_code == 404
    assert "private" in source_client.get("/replies").text


def test_reply_deletion_needs_the_csrf_token(source_client, app_instance):
    codename, _page = start_as_new_source(source_client)
    keys = source_keys(app_instance, codename)
    with Store.open(app_instance.settings) as store:
        reply = store.add_reply(source_id_for(app_instance, codename), None, encrypt_bytes(b"keep me", [keys.reply_public_key], Metadata("reply")))
    assert source_client.post(f"/replies/{reply.id}/delete", data={}).status_code == 400
    assert "keep me" in source_client.get("/replies").text


def send_something(client) -> None:
    body, content_type = upload_body(csrf_token(client.get("/submit").text), message="something")
    assert post_upload(client, body, content_type).status_code == 303


def test_logout_of_a_codename_that_never_sent_anything_asks_first(source_client, app_instance):
    start_as_new_source(source_client)
    page = source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    assert page.status_code == 200
    assert "Nothing has been sent with this codename yet" in page.text and "deleted after 1 day" in page.text
    assert source_client.get("/submit").status_code == 200  # still logged in
    anyway = source_client.post("/logout", data={"csrf_token": csrf_token(page.text), "confirm": "1"})
    assert "You are logged out" in anyway.text
    assert source_client.get("/submit").status_code == 303
    assert source_client.get_cookie("intake_codename") is None and source_client.get_cookie("intake_receipt") is None


def test_logout_ends_the_session_and_advises_a_new_identity(source_client, app_instance):
    start_as_new_source(source_client)
    send_something(source_client)
    assert source_client.get_cookie("intake_codename") is not None and source_client.get_cookie("intake_receipt") is not None
    page = source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    assert page.status_code == 200
    assert "New identity" in page.text
    assert source_client.get_cookie(COOKIE_NAME) is None
    # SECURITY.md: the sealed codename and receipt cookies go with the session.
    assert source_client.get_cookie("intake_codename") is None and source_client.get_cookie("intake_receipt") is None
    assert source_client.get("/submit").status_code == 303
    with Store.open(app_instance.settings) as store:
        assert store.purge_expired_sessions() == 0  # nothing left behind to expire


def test_old_cookie_is_useless_after_logout(source_client):
    start_as_new_source(source_client)
    send_something(source_client)
    old = source_client.get_cookie(COOKIE_NAME).value
    source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    source_client.set_cookie(COOKIE_NAME, old)
    assert source_client.get("/replies").status_code == 303


@pytest.mark.parametrize("cookie", ["", "x" * 43, "A" * 42, "!" * 43, "A" * 500])
def test_malformed_session_cookie_is_treated_as_logged_out(source_client, cookie):
    source_client.set_cookie(COOKIE_NAME, cookie)
    assert source_client.get("/replies").status_code == 303


def test_browser_language_is_used(source_client):
    page = source_client.get("/", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"})
    assert '<html lang="ru">' in page.text
    assert "Как обезопасить себя" in page.text


def test_language_can_be_switched_by_a_plain_link(source_client):
    response = source_client.get("/language/ru?next=/login")
    assert response.status_code == 303 and response.location == "/login"
    assert "Введите кодовое имя" in source_client.get("/login", headers={"Accept-Language": "en"}).text
    source_client.get("/language/en?next=/")
    assert "Enter your codename" in source_client.get("/login", headers={"Accept-Language": "ru"}).text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)",
                                    "/guide\r\nX-Injected: 1", "/guide\nX", "/guide\x00", "/guide\x7f"])
def test_language_switch_never_redirects_off_site(source_client, target):
    """A line break in the target made a 500 with a traceback in the log (found by a newcomer test)."""
    response = source_client.get("/language/ru", query_string={"next": target})
    assert response.status_code == 303 and response.location == "/"


def test_unknown_language_is_not_found(source_client):
    assert source_client.get("/language/xx").status_code == 404


def test_russian_pages_render_in_russian(source_client):
    source_client.get("/language/ru")
    codename, page = start_as_new_source(source_client)
    assert "Ваше кодовое имя" in page
    assert "Отправить" in page
    assert "Ответов пока нет" in source_client.get("/replies").text


def test_every_message_is_translated_to_russian():
    with open(TRANSLATIONS / "messages.pot", "rb") as f:
        template = read_po(f)
    with open(TRANSLATIONS / "ru" / "LC_MESSAGES" / "messages.po", "rb") as f:
        russian = read_po(f)
    wanted = {message.id for message in template if message.id}
    translated = {message.id for message in russian if message.id and message.string and not message.fuzzy}
    assert wanted - translated == set()
    assert all(message.string for message in russian if message.id)


def _entries(catalog) -> dict:
    """{msgid: msgstr}, plural forms as tuples (the .mo reader gives lists)."""
    as_key = lambda value: tuple(value) if isinstance(value, (list, tuple)) else value  # noqa: E731
    return {as_key(message.id): as_key(message.string) for message in catalog if message.id}


def test_compiled_russian_catalog_matches_its_po():
    with open(TRANSLATIONS / "ru" / "LC_MESSAGES" / "messages.po", "rb") as f:
        source = _entries(read_po(f))
    with open(TRANSLATIONS / "ru" / "LC_MESSAGES" / "messages.mo", "rb") as f:
        compiled = _entries(read_mo(f))
    assert compiled == source


def test_template_catalog_is_up_to_date_with_the_code(tmp_path):
    from babel.messages.frontend import CommandLineInterface

    root = TRANSLATIONS.parent.parent
    fresh = tmp_path / "fresh.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(root / "babel.cfg"), "-k", "_l", "--no-location", "--sort-output", "-o", str(fresh), str(root)])
    with open(fresh, "rb") as f:
        extracted = {message.id for message in read_po(f) if message.id}
    with open(TRANSLATIONS / "messages.pot", "rb") as f:
        checked_in = {message.id for message in read_po(f) if message.id}
    assert extracted == checked_in


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/no-such-page", 404), ("get", "/logout", 405), ("delete", "/", 405)],
)
def test_error_pages_say_nothing_internal(source_client, method, path, status):
    response = getattr(source_client, method)(path)
    assert response.status_code == status
    assert "Traceback" not in response.text and "werkzeug" not in response.text.lower()
    assert "start page" in response.text


def test_unexpected_failure_shows_a_plain_500_page(tmp_path):
    app_instance = make_instance(tmp_path)
    app_instance.app.config["PROPAGATE_EXCEPTIONS"] = False

    @app_instance.app.get("/boom")
    def boom():
        raise RuntimeError("internal detail /srv/intake secret-path")

    response = app_instance.app.test_client().get("/boom")
    assert response.status_code == 500
    assert "internal detail" not in response.text and "secret-path" not in response.text
    assert "Something went wrong" in response.text


def test_session_keeps_the_reply_key_only_sealed_under_the_cookie_token(source_client, app_instance):
    from intake.app.sessions import resume_session

    codename, _page = start_as_new_source(source_client)
    keys = source_keys(app_instance, codename)
    cookie = source_client.get_cookie(COOKIE_NAME).value
    with Store.open(app_instance.settings) as store:
        session = resume_session(store, cookie)
        assert session.reply_secret_key == keys.reply_secret_key
        _source_id, sealed = store.load_session(session.session_id)
        assert keys.reply_secret_key not in sealed and len(sealed) == 24 + 8 + 32 + 16  # nonce, exact expiry, key, MAC
        assert session.session_id != cookie.encode()
        forged = cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BA")
        assert resume_session(store, forged) is None
    assert "reply_secret_key" not in repr(session) and keys.reply_secret_key.hex() not in repr(session)
    from intake.app.sessions import new_session

    made = new_session(keys.reply_secret_key, minutes=5)  # a session not stored yet (the codename's exchange)
    assert made.cookie not in repr(made) and made.row[1].hex() not in repr(made)


def test_russian_copy_calls_sources_sources_never_informers():
    with open(TRANSLATIONS / "ru" / "LC_MESSAGES" / "messages.po", "rb") as f:
        strings = " ".join(" ".join(m.string) if isinstance(m.string, (list, tuple)) else m.string for m in read_po(f) if m.id)
    for word in ("информатор", "осведомител", "стукач", "доносчик"):
        assert word not in strings.lower()
    # The page title says what the site is for the reader, in words that name no one: "a channel
    # for sources" was newsroom jargon, and a tab titled so tells an onlooker who is reading it.
    assert "Защищённый канал связи с редакцией" in strings


@pytest.mark.parametrize(("seconds", "english", "russian"), [
    (1, "1 second", "1 секунды"), (45, "45 seconds", "45 секунд"), (60, "a minute", "минуты"),
    (90, "2 minutes", "2 минут"), (150, "3 minutes", "3 минут"), (300, "5 minutes", "5 минут"),
    (3600, "an hour", "часа"), (3660, "1 hour 1 minute", "1 часа 1 минуты"), (14_400, "4 hours", "4 часов"),
    (42_667, "11 hours 51 minutes", "11 часов 51 минуты"), (75_600, "21 hours", "21 часа"),
])
def test_a_limits_length_reads_right_after_at_most(app_instance, seconds: int, english: str, russian: str):
    """The deadline and the stall window the source is told of: whole units, and in Russian the
    genitive that "не больше" and "в течение" take."""
    from intake.app.source import _duration_label

    for language, expected in (("en", english), ("ru", russian)):
        with app_instance.app.test_request_context(headers={"Accept-Language": language}):
            assert _duration_label(seconds) == expected


def test_a_body_one_byte_over_the_limit_is_refused_before_its_files_with_the_message_back(tmp_path):
    limit = 64 * 1024
    app_instance = make_instance(tmp_path, max_request_bytes=limit)
    source_client = app_instance.app.test_client()
    _codename, page = start_as_new_source(source_client)
    shape, _ = upload_body(csrf_token(page), message="fits", files=[("big.bin", b"", "application/octet-stream")])
    body, content_type = upload_body(csrf_token(page), message="fits",
                                     files=[("big.bin", b"x" * (limit + 1 - len(shape)), "application/octet-stream")])
    assert len(body) == limit + 1
    response = post_upload(source_client, body, content_type)
    assert response.status_code == 413 and '<textarea id="message" name="message" rows="10">fits</textarea>' in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0
