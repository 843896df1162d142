"""The language a Russian source meets first, and the codename that comes with it.

Tor Browser asks for English whatever its user reads, so a Russian source used to get English
pages and an English codename. The operator now sets the source pages' language, and a codename
made in the wrong language can be exchanged on its own page before anything is sent. A codename
made in this session can be shown again from the receipt and the status page until logout.
"""

from __future__ import annotations

import dataclasses
import io
import re
import threading
import time
from pathlib import Path

import pytest

from intake.codename import KdfGate
from intake.wordlists.vocabulary import RUSSIAN
from tests.fixtures_app import counts, csrf_token, make_instance, post_upload, start_as_new_source, upload_body

ENGLISH_BROWSER = {"Accept-Language": "en-US,en;q=0.5"}  # what Tor Browser sends, whatever its user reads


def _log_in(client, codename: str):
    return client.post("/login", data={"csrf_token": csrf_token(client.get("/login").text), "codename": codename})


def _offered_an_exchange(instance) -> tuple:
    """A new source with an English codename, now reading the Russian pages: (client, codename,
    the codename page offering a Russian one instead)."""
    client = instance.app.test_client()
    english, _page = start_as_new_source(client)
    client.get("/language/ru")
    return client, english, client.get("/codename").text


def test_an_operator_makes_the_source_pages_russian_for_a_browser_that_asks_for_english(tmp_path: Path):
    instance = make_instance(tmp_path, source_language="ru")
    client = instance.app.test_client()
    client.environ_base.update(HTTP_ACCEPT_LANGUAGE=ENGLISH_BROWSER["Accept-Language"])
    assert '<html lang="ru">' in client.get("/").text
    codename, _page = start_as_new_source(client)
    assert all(word in RUSSIAN.words for word in codename.split())
    client.get("/language/en")  # the visitor's own choice still wins
    assert '<html lang="en">' in client.get("/").text


def test_without_the_setting_the_browsers_language_is_taken(tmp_path: Path):
    client = make_instance(tmp_path).app.test_client()
    client.environ_base.update(HTTP_ACCEPT_LANGUAGE="ru-RU,ru;q=0.9")
    assert '<html lang="ru">' in client.get("/").text
    client.environ_base.update(HTTP_ACCEPT_LANGUAGE=ENGLISH_BROWSER["Accept-Language"])
    assert '<html lang="en">' in client.get("/").text


@pytest.mark.parametrize(("value", "accepted"), [("ru", True), ("en", True), ("de", False), ("RU", False)])
def test_the_setting_takes_a_language_of_the_pages_only(value: str, accepted: bool):
    from intake.config import operator_settings_from_environment

    if accepted:
        assert operator_settings_from_environment({"INTAKE_SOURCE_LANGUAGE": value}) == {"source_language": value}
    else:
        with pytest.raises(ValueError, match="INTAKE_SOURCE_LANGUAGE must be one of en, ru"):
            operator_settings_from_environment({"INTAKE_SOURCE_LANGUAGE": value})


def test_an_english_codename_is_exchanged_for_a_russian_one_before_anything_is_sent(tmp_path: Path):
    instance = make_instance(tmp_path)
    client = instance.app.test_client()
    english, _page = start_as_new_source(client)
    assert "Get a codename in this page's language" not in client.get("/codename").text  # same language: no offer
    client.get("/language/ru")
    offer = client.get("/codename").text
    assert "Получить кодовое имя на русском языке" in offer
    sources = counts(instance)["sources"]
    answer = client.post("/new", data={"csrf_token": csrf_token(offer), "instead": "1"})
    assert answer.status_code == 303 and answer.location.endswith("/codename")
    russian_page = client.get("/codename").text
    russian = re.findall(r"<span>([а-яё-]+)</span>", russian_page)
    assert len(russian) == 8 and all(word in RUSSIAN.words for word in russian)
    assert "Получить кодовое имя" not in russian_page
    assert counts(instance)["sources"] == sources  # the English one was forgotten at once, not left for retention
    stranger = instance.app.test_client()
    assert _log_in(stranger, english).status_code == 401


def test_once_something_was_sent_the_codename_is_not_exchanged(tmp_path: Path):
    instance = make_instance(tmp_path)
    client = instance.app.test_client()
    english, page = start_as_new_source(client)
    post_upload(client, *upload_body(csrf_token(page), message="sent with the English codename"))
    client.get("/language/ru")
    page = client.get("/codename").text
    assert "Получить кодовое имя" not in page
    answer = client.post("/new", data={"csrf_token": csrf_token(page), "instead": "1"})
    assert answer.status_code == 303 and answer.location.endswith("/codename")
    assert english.split()[0] in client.get("/codename").text  # the same codename, still logged in
    assert _log_in(instance.app.test_client(), english).status_code == 303


def test_the_receipt_and_the_status_page_show_the_codename_again_until_logout(tmp_path: Path):
    instance = make_instance(tmp_path)
    client = instance.app.test_client()
    codename, page = start_as_new_source(client)
    assert "a session lasts 120 minutes" in page
    post_upload(client, *upload_body(csrf_token(page), message="a tip"))
    for path in ("/thanks", "/replies"):
        shown = client.get(path).text
        assert 'href="/codename">Show my codename</a>' in shown, path
    assert codename.split()[0] in client.get("/codename").text
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/replies").text)})
    returning = instance.app.test_client()
    assert _log_in(returning, codename).status_code == 303
    assert "Show my codename" not in returning.get("/replies").text  # not made in this session: nothing to show


def test_a_busy_server_during_the_exchange_leaves_the_first_codename_working(tmp_path: Path):
    """The new codename is derived before the old one is given up: if the server is too busy to
    derive it, the source keeps the codename it has, still logged in, and may try again."""
    instance = make_instance(tmp_path)
    client, english, offer = _offered_an_exchange(instance)
    real_state = instance.app.extensions["intake"]
    full_gate = KdfGate(concurrency=1, queue=0, timeout=0.1)
    release = threading.Event()
    holder = threading.Thread(target=full_gate.run, args=(release.wait, 10))
    holder.start()
    try:
        deadline = time.monotonic() + 5
        while full_gate._admitted < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        instance.app.extensions["intake"] = dataclasses.replace(real_state, kdf_gate=full_gate)
        answer = client.post("/new", data={"csrf_token": csrf_token(offer), "instead": "1"})
    finally:
        release.set()
        holder.join()
    assert answer.status_code == 503
    instance.app.extensions["intake"] = real_state
    assert english.split()[0] in client.get("/codename").text  # still logged in, with the same codename
    assert _log_in(instance.app.test_client(), english).status_code == 303
    again = client.post("/new", data={"csrf_token": csrf_token(client.get("/codename").text), "instead": "1"})
    assert again.status_code == 303 and _log_in(instance.app.test_client(), english).status_code == 401


@pytest.mark.parametrize("form", [{"instead": "1"}, {}], ids=["same language", "without asking"])
def test_the_exchange_is_refused_unless_asked_for_in_another_language(tmp_path: Path, form: dict):
    instance = make_instance(tmp_path)
    client = instance.app.test_client()
    english, page = start_as_new_source(client)
    if not form:
        client.get("/language/ru")
        page = client.get("/codename").text
    sources = counts(instance)["sources"]
    answer = client.post("/new", data={"csrf_token": csrf_token(page), **form})
    assert answer.status_code == 303 and answer.location.endswith("/codename")
    assert counts(instance)["sources"] == sources
    assert english.split()[0] in client.get("/codename").text
    assert _log_in(instance.app.test_client(), english).status_code == 303


def test_an_upload_in_another_tab_during_the_exchange_is_refused_with_a_clear_page(tmp_path: Path):
    """The upload began with the first codename; the exchange in another tab forgot it before
    anything was published. The upload keeps nothing (its source is gone) and says why."""
    instance = make_instance(tmp_path)
    client = instance.app.test_client()
    _english, page = start_as_new_source(client)
    body, content_type = upload_body(csrf_token(page), message="from the first tab",
                                     files=[("scan.bin", b"x" * 3_000_000, "application/octet-stream")])
    cut = body.index(b"x" * 100)
    first, rest = io.BytesIO(body[:cut]), io.BytesIO(body[cut:])
    reached, go_on = threading.Event(), threading.Event()

    class StallsInTheFile:
        def read(self, size: int = -1) -> bytes:
            if data := first.read(size):
                return data
            reached.set()
            go_on.wait(10)
            return rest.read(size)

    answers = []
    uploading = threading.Thread(target=lambda: answers.append(client.post(
        "/submit", environ_overrides={"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
                                      "wsgi.input": StallsInTheFile()})))
    uploading.start()
    try:
        assert reached.wait(10)
        client.get("/language/ru")
        exchanged = client.post("/new", data={"csrf_token": csrf_token(client.get("/codename").text), "instead": "1"})
        assert exchanged.status_code == 303
    finally:
        go_on.set()
        uploading.join()
    (answer,) = answers
    assert answer.status_code == 409 and "you exchanged it for a new one in another tab" in answer.text
    assert counts(instance)["submissions"] == 0 and counts(instance)["pending uploads"] == 0
    now = client.get("/codename")
    russian = re.findall(r"<span>([а-яё-]+)</span>", now.text)
    assert now.status_code == 200 and len(russian) == 8  # logged in with the new codename, shown


def test_a_store_failure_during_the_exchange_leaves_the_first_codename_logged_in(tmp_path: Path, monkeypatch):
    """The old source, its session, the new source and its session change in one transaction: a
    failure at its last step (injected where the new session is written) changes nothing."""
    from intake.store.errors import StoreBusyError
    from intake.store.store import Store

    instance = make_instance(tmp_path)
    client, english, offer = _offered_an_exchange(instance)
    sources = counts(instance)["sources"]

    def busy(*_args):
        raise StoreBusyError("injected: the write lock stayed taken")

    monkeypatch.setattr(Store, "_insert_session", staticmethod(busy))
    assert client.post("/new", data={"csrf_token": csrf_token(offer), "instead": "1"}).status_code == 503
    monkeypatch.undo()
    assert counts(instance)["sources"] == sources
    page = client.get("/codename")
    assert page.status_code == 200 and english.split()[0] in page.text  # still logged in, the same codename
    assert _log_in(instance.app.test_client(), english).status_code == 303
