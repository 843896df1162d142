"""A source never loses work or identity without being told, and sees what happened to
what it sent (issue 13, sections 1, 3 and 4), with the Flask test client and a real store."""

from __future__ import annotations

import datetime
import io
import re

import pytest
from babel.dates import format_date

from intake.app.ingest import MAX_FILES
from intake.app.sessions import COOKIE_NAME, resume_session
from intake.codename import generate_codename
from intake.store import Store
from intake.store.newsroom import Newsroom
from intake.wordlists.layout import as_typed_on_latin_layout
from intake.wordlists.vocabulary import RUSSIAN
from tests.fixtures_app import csrf_token, make_instance, post_upload, start_as_new_source, upload_body


def log_in(client, codename: str):
    return client.post("/login", data={"csrf_token": csrf_token(client.get("/login").text), "codename": codename})


def test_codename_is_in_the_language_of_the_page_where_it_was_made(source_client):
    source_client.get("/language/ru")
    codename, page = start_as_new_source(source_client)
    words = codename.split()
    assert len(words) == 8 and all(word in RUSSIAN.words for word in words)
    assert '<p class="codename" lang="ru">' in page and "первых четырёх букв" in page


def test_russian_codename_typed_on_the_latin_layout_with_prefixes_and_spaces_logs_in(source_client):
    source_client.get("/language/ru")
    codename, _page = start_as_new_source(source_client)
    post_upload(source_client, *upload_body(csrf_token(source_client.get("/submit").text), message="первое"))
    source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    words = codename.split()
    typed = "  ".join([as_typed_on_latin_layout(words[0]).upper(), words[1][:4], *words[2:7], as_typed_on_latin_layout(words[7][:4])])
    source_client.get("/language/en")  # either list works in any page language
    response = log_in(source_client, "  " + typed + "  ")
    assert response.status_code == 303 and response.location.endswith("/replies")


def test_login_field_takes_a_paste_and_asks_browsers_not_to_save_the_codename(source_client):
    """The codename page says not to keep it on a computer: the field asks browsers not to offer
    saving it, and no longer names a hidden account for password managers; nothing stops a paste.
    Only the asking is checked here: Firefox, and so Tor Browser, may still offer to save a password
    field, so the page's own advice is what protects the source."""
    page = source_client.get("/login").text
    field = re.search(r'<input type="password" id="codename"[^>]*>', page).group(0)
    assert 'autocomplete="off"' in field and "onpaste" not in page
    assert 'autocomplete="username"' not in page and 'name="account"' not in page


def test_codename_page_shows_the_same_codename_on_reload_and_after_back(source_client):
    codename, _page = start_as_new_source(source_client)
    again = source_client.get("/codename")
    assert again.status_code == 200 and " ".join(re.findall(r"<span>([^<]+)</span>", again.text)) == codename
    # Posting "get a codename" again (Back, then the button) makes no second identity.
    repost = source_client.post("/new", data={"csrf_token": csrf_token(again.text)})
    assert repost.status_code == 303 and repost.location.endswith("/codename")
    assert codename in " ".join(re.findall(r"<span>([^<]+)</span>", source_client.get(repost.location).text))


def test_codename_page_is_gone_with_the_session(source_client, app_instance):
    start_as_new_source(source_client)
    sealed = source_client.get_cookie("intake_codename").value
    cookie = source_client.get_cookie(COOKIE_NAME).value
    with Store.open(app_instance.settings) as store:
        store.delete_session(resume_session(store, cookie).session_id)
        assert store.counts()["sources"] == 1
    other = app_instance.app.test_client()
    start_as_new_source(other)  # a live session of someone else cannot open it either
    other.set_cookie("intake_codename", sealed)
    assert other.get("/codename").status_code == 303
    assert source_client.get("/codename").status_code == 303


@pytest.mark.parametrize("path", ["/", "/login", "/no-such-page"])
def test_logged_in_source_looks_logged_in_on_start_login_and_error_pages(source_client, path):
    start_as_new_source(source_client)
    page = source_client.get(path).text
    assert "Log out" in page
    assert "get a codename" not in page


def test_logged_out_visitor_is_offered_a_codename(source_client):
    page = source_client.get("/").text
    assert "First time: get a codename" in page and "Log out" not in page


def test_more_than_255_files_are_refused_naming_the_limit_and_the_parts_before_it_are_kept_and_listed(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    files = [(f"f{i}.txt", b"x", "text/plain") for i in range(MAX_FILES + 1)]
    response = post_upload(source_client, *upload_body(csrf_token(page), message="many", files=files))
    assert response.status_code == 413
    assert "at most 255 files" in response.text and "Send the rest in another submission" in response.text
    assert "This arrived safely and was kept:" in response.text and "Your message" in response.text
    assert ">f254.txt<" in response.text and ">f255.txt<" not in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 1 + MAX_FILES and store.counts()["pending uploads"] == 0


def test_255_files_are_accepted(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    files = [(f"f{i}.txt", b"x", "text/plain") for i in range(MAX_FILES)]
    assert post_upload(source_client, *upload_body(csrf_token(page), files=files)).status_code == 303
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == MAX_FILES


def test_declared_oversized_upload_is_refused_reading_only_the_message_before_the_files(tmp_path):
    """A body declared over the limit is refused without reading its files: only the form's first
    parts are read, so that the message goes back into the form instead of being lost."""
    instance = make_instance(tmp_path, max_request_bytes=64 * 1024)
    client = instance.app.test_client()
    _codename, page = start_as_new_source(client)
    body, content_type = upload_body(csrf_token(page), message="written for an hour", files=[("film.mkv", b"v" * 400_000, "video/x-matroska")])

    class Counted(io.BytesIO):
        taken = 0

        def read(self, size=-1):
            data = super().read(size)
            Counted.taken += len(data)
            return data

    # The content type goes in the environ: as a header with no data, the test client would replace its boundary.
    response = client.post("/submit", environ_overrides={"wsgi.input": Counted(body), "CONTENT_LENGTH": str(10**9),
                                                         "CONTENT_TYPE": content_type})
    assert response.status_code == 413 and "0.0625 MiB" in response.text
    assert '<textarea id="message" name="message" rows="10">written for an hour</textarea>' in response.text
    assert Counted.taken <= 100 * 1024, Counted.taken  # the token, the message and a part header, in 64 KiB reads
    with Store.open(instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def test_unknown_codename_says_unused_codenames_are_deleted_after_a_day(source_client):
    response = log_in(source_client, generate_codename())
    assert response.status_code == 401
    assert "never sent anything is deleted after 1 day" in response.text


def test_thanks_page_lists_each_thing_that_arrived(source_client):
    _codename, page = start_as_new_source(source_client)
    files = [("notes <b>.txt", b"n" * 2000, "text/plain"), ("scan.pdf", b"p" * 3_000_000, "application/pdf")]
    response = post_upload(source_client, *upload_body(csrf_token(page), message="the message", files=files))
    thanks = source_client.get(response.location).text
    receipt = re.search(r'<ul class="receipt">(.*?)</ul>', thanks, re.S).group(1)
    assert "Your message, 11 bytes" in receipt
    assert '<span class="name">notes &lt;b&gt;.txt</span>, 2 KiB' in receipt
    assert '<span class="name">scan.pdf</span>, 2.9 MiB' in receipt
    # The receipt lives in the browser only, sealed; no file name in any cookie or on the server.
    assert "scan.pdf" not in " ".join(cookie.value for cookie in source_client._cookies.values())


def test_status_page_shows_received_and_downloaded_days_per_item_and_names_no_journalist(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    post_upload(source_client, *upload_body(csrf_token(page), message="m", files=[("a.txt", b"a", "text/plain")]))
    with Store.open(app_instance.settings) as store:
        Newsroom(store).mark_exported([store.submissions()[0].id])  # as an export by a journalist does
    status = source_client.get("/replies").text
    items = re.findall(r"<li>(.*?)</li>", re.search(r'<ul class="status">(.*?)</ul>', status, re.S).group(1), re.S)
    today = format_date(datetime.date.today(), "long", locale="en")
    assert [" ".join(item.split()) for item in items] == [
        f"Message: received {today}; downloaded by the newsroom {today}",
        f"File: received {today}; not downloaded by the newsroom yet",
    ]
    for name in ("journalist0", "journalist1"):
        assert name not in status
    assert re.search(r"\d\d:\d\d", status) is None  # days only


def test_stylesheet_is_served_under_a_content_hashed_name_and_cached_for_good(source_client):
    page = source_client.get("/").text
    href = re.search(r'<link rel="stylesheet" href="(/assets/style\.[0-9a-f]{16}\.css)">', page).group(1)
    asset = source_client.get(href)
    assert asset.status_code == 200 and asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Pragma" not in asset.headers and asset.headers["X-Content-Type-Options"] == "nosniff"
    assert source_client.get("/assets/style.0000000000000000.css").status_code == 404
    assert source_client.get("/").headers["Cache-Control"] == "no-store"


def test_login_with_mistakes_costs_exactly_one_derivation(source_client, monkeypatch):
    import intake.app.source as source_views

    source_client.get("/language/ru")
    codename, _page = start_as_new_source(source_client)
    post_upload(source_client, *upload_body(csrf_token(source_client.get("/submit").text), message="м"))
    source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    calls = []
    real = source_views.derive_source_keys
    monkeypatch.setattr(source_views, "derive_source_keys", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    words = codename.split()
    response = log_in(source_client, " ".join([as_typed_on_latin_layout(words[0]), *(word[:4].upper() for word in words[1:])]))
    assert response.status_code == 303 and calls == [1]


def test_english_codename_logs_in_from_a_russian_page(source_client):
    codename, _page = start_as_new_source(source_client)
    post_upload(source_client, *upload_body(csrf_token(source_client.get("/submit").text), message="m"))
    source_client.post("/logout", data={"csrf_token": csrf_token(source_client.get("/submit").text)})
    source_client.get("/language/ru")
    assert log_in(source_client, codename).status_code == 303


def _post_cut_off(client, body: bytes, content_type: str, cut: int):
    """The body as gunicorn hands over a chunked one whose connection ends after `cut` bytes.
    The content type goes in the environ: given as a header with no data, Flask's test client
    puts a boundary of its own in its place, and nothing of the body would be parsed."""
    chunks = iter([body[:cut]])

    class CutOff:
        def read(self, size=-1):
            return next(chunks, b"")

    return client.post("/submit", headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"CONTENT_TYPE": content_type, "wsgi.input": CutOff(), "wsgi.input_terminated": True})


def test_upload_cut_off_mid_file_keeps_the_whole_message_and_says_so(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    body, content_type = upload_body(csrf_token(page), message="m", files=[("a.bin", b"a" * 50_000, "x/y")])
    response = _post_cut_off(source_client, body, content_type, 30_000)  # the connection ends mid-file
    assert response.status_code == 400
    assert "This arrived safely and was kept" in response.text and "Your message, 1 byte" in response.text
    assert "Send the rest again" in response.text and "Status and replies" in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 1 and store.counts()["pending uploads"] == 0


def test_upload_cut_off_mid_message_says_nothing_from_this_attempt_was_kept(source_client, app_instance):
    _codename, page = start_as_new_source(source_client)
    body, content_type = upload_body(csrf_token(page), message="m" * 5000, files=[("a.bin", b"a" * 50_000, "x/y")])
    response = _post_cut_off(source_client, body, content_type, body.index(b"m" * 100) + 100)
    assert response.status_code == 400
    assert "nothing from this attempt was kept" in response.text and "Status and replies" in response.text
    with Store.open(app_instance.settings) as store:
        assert store.counts()["submissions"] == 0 and store.counts()["pending uploads"] == 0


def test_a_store_kept_busy_too_long_answers_busy_try_again_not_an_error(tmp_path):
    """A burst of writers can hold the write lock past what a request waits: the source gets the
    'busy, try again' page (503, Retry-After), as for any other overload, not a 500."""
    from intake.store import Store
    from tests.fixtures_app import csrf_token, make_instance, post_upload, start_as_new_source, upload_body

    instance = make_instance(tmp_path, busy_timeout_ms=300)
    client = instance.app.test_client()
    _codename, page = start_as_new_source(client)
    body, content_type = upload_body(csrf_token(page), message="sent while the store is busy")
    with Store.open(instance.settings) as other_writer:
        other_writer._conn.execute("BEGIN IMMEDIATE")  # the write lock, held past the request's wait
        try:
            answer = post_upload(client, body, content_type)
        finally:
            other_writer._conn.execute("ROLLBACK")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert "Busy, try again" in answer.text
