"""Every response of the source interface carries the protective headers, and cookies are strict."""

from __future__ import annotations

import logging
import threading

import pytest

from intake.app.security import CONTENT_SECURITY_POLICY
from intake.app.sessions import COOKIE_NAME
from tests.fixtures_app import csrf_token, make_instance, post_upload, start_as_new_source, upload_body

EXPECTED = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def assert_protected(response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.request.path, name)
    for name in ("Server", "ETag", "Last-Modified", "Expires", "Access-Control-Allow-Origin"):
        assert name not in response.headers, (response.request.path, name)


def test_policy_allows_only_our_stylesheet_and_forms():
    assert CONTENT_SECURITY_POLICY == EXPECTED["Content-Security-Policy"]


def test_every_page_and_error_is_protected(tmp_path):
    instance = make_instance(tmp_path, max_request_bytes=32 * 1024, kdf_concurrency=1, kdf_queue=0)
    client = instance.app.test_client()
    responses = [client.get(path) for path in ("/", "/login", "/static/style.css", "/no-such-page", "/language/ru")]
    responses.append(client.post("/new", data={}))  # 400: no CSRF token
    responses.append(client.get("/logout"))  # 405
    _codename, page = start_as_new_source(client)
    responses += [client.get(path) for path in ("/submit", "/replies", "/thanks")]
    body, content_type = upload_body(csrf_token(page), files=[("f", b"x" * 40_000, "x/y")])
    responses.append(post_upload(client, body, content_type))  # 413
    gate = instance.app.extensions["intake"].kdf_gate
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=gate.run, args=(lambda: (started.set(), release.wait(10)),))
    holder.start()
    started.wait(5)
    responses.append(client.post("/login", data={"csrf_token": csrf_token(page), "codename": _codename}))  # 503
    release.set()
    holder.join()
    statuses = {response.status_code for response in responses}
    assert {200, 303, 400, 404, 405, 413, 503} <= statuses
    for response in responses:
        assert_protected(response)


def test_codename_page_is_not_stored_by_any_cache(source_client):
    landing = source_client.get("/")
    page = source_client.post("/new", data={"csrf_token": csrf_token(landing.text)})
    assert page.headers["Cache-Control"] == "no-store"


def set_cookie_headers(response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


def test_session_cookie_is_httponly_strict_and_holds_only_a_token(source_client):
    landing = source_client.get("/")
    page = source_client.post("/new", data={"csrf_token": csrf_token(landing.text)})
    cookie = set_cookie_headers(page)[COOKIE_NAME]
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # onion services are http; Tor encrypts the connection
    value = cookie.split(";")[0].split("=", 1)[1]
    assert len(value) == 43  # 32 random bytes, base64url: nothing else


def test_csrf_cookie_is_httponly_and_strict(source_client):
    cookie = set_cookie_headers(source_client.get("/"))["csrf"]
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes


def test_language_cookie_is_httponly_and_strict(source_client):
    cookie = set_cookie_headers(source_client.get("/language/ru"))["lang"]
    assert cookie.startswith("lang=ru;")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes


def test_pages_load_nothing_from_elsewhere_and_need_no_javascript(source_client):
    _codename, page = start_as_new_source(source_client)
    for html in (source_client.get("/").text, page, source_client.get("/replies").text, source_client.get("/login").text):
        assert "<script" not in html and "javascript:" not in html
        assert "http://" not in html and "https://" not in html and 'src="//' not in html and 'href="//' not in html
        assert " style=" not in html  # inline styles would need 'unsafe-inline'


def test_requests_are_not_logged_with_address_or_browser(source_client, caplog):
    agent = "CanaryBrowser/1.0 (unique-agent-7f3a)"
    with caplog.at_level(logging.DEBUG):
        source_client.get("/", headers={"User-Agent": agent}, environ_base={"REMOTE_ADDR": "203.0.113.77"})
        source_client.get("/nope", headers={"User-Agent": agent}, environ_base={"REMOTE_ADDR": "203.0.113.77"})
    text = caplog.text
    assert "203.0.113.77" not in text and "unique-agent-7f3a" not in text
    assert logging.getLogger("werkzeug").disabled


@pytest.mark.parametrize("path", ["/", "/login"])
def test_head_and_options_are_protected_too(source_client, path):
    assert_protected(source_client.head(path))
    assert_protected(source_client.options(path))
