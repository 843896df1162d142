"""Signing in to the journalist interface: passphrase + single-use TOTP, throttling,
server-side sessions, CSRF, headers."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from intake.app.journalist import SESSION_COOKIE
from intake.journalist_auth import ThrottlePolicy
from intake.store.newsroom import Newsroom as NewsroomStore
from tests.fixtures_newsroom import Newsroom, csrf_token, make_newsroom, sign_in


def test_passphrase_and_code_open_the_sources_page(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    assert client.get("/sources").status_code == 303  # not signed in yet
    response = sign_in(client, newsroom.alice)
    assert response.status_code == 303 and response.location.endswith("/sources")
    page = client.get("/sources")
    assert page.status_code == 200 and "Signed in as alice" in page.text


def test_a_code_works_only_once(newsroom: Newsroom):
    code = newsroom.alice.code()
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=code).status_code == 303
    replay = sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=code)
    assert replay.status_code == 401 and "works only once" in replay.text
    # An earlier code than the one used is refused too; the next one works.
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=newsroom.alice.code(-1)).status_code == 401
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=newsroom.alice.code(+1)).status_code == 303


def test_a_wrong_passphrase_or_code_is_refused_without_saying_which(newsroom: Newsroom):
    wrong_passphrase = sign_in(newsroom.journalist_app.test_client(), newsroom.alice, passphrase="guess " * 7)
    wrong_code = sign_in(newsroom.journalist_app.test_client(), newsroom.alice,
                         code=f"{(int(newsroom.alice.code()) + 1) % 1_000_000:06d}")
    unknown_name = newsroom.journalist_app.test_client()
    page = unknown_name.get("/login")
    unknown = unknown_name.post("/login", data={"csrf_token": csrf_token(page.text), "name": "mallory",
                                                "passphrase": "x", "code": "123456"})
    assert wrong_passphrase.status_code == wrong_code.status_code == unknown.status_code == 401
    assert wrong_passphrase.text.count("The name, passphrase or code is wrong") == 1
    assert SESSION_COOKIE not in (wrong_passphrase.headers.get("Set-Cookie") or "")
    # A code is used up only by a successful sign-in: the right one still works.
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice).status_code == 303


def test_an_account_is_throttled_after_five_failures_even_with_the_right_secrets(newsroom: Newsroom):
    for _ in range(5):
        assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, passphrase="nope").status_code == 401
    blocked = sign_in(newsroom.journalist_app.test_client(), newsroom.alice)
    assert blocked.status_code == 429
    assert "Too many failed sign-ins. Wait 15 minutes" in blocked.text
    # Other accounts are not locked by one account's failures.
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.bob).status_code == 303


def test_failures_age_out_of_the_throttle_window(newsroom: Newsroom):
    with newsroom.store() as store:
        record = NewsroomStore(store).login_record("alice")
        for _ in range(5):
            NewsroomStore(store).record_failed_login(record.journalist_id, int(time.time()) - 16 * 60)
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice).status_code == 303


def test_guessing_across_many_names_hits_the_overall_limit(tmp_path: Path):
    newsroom = make_newsroom(tmp_path, JOURNALIST_THROTTLE=ThrottlePolicy(per_account=5, overall=8))
    client = newsroom.journalist_app.test_client()
    for attempt in range(8):
        page = client.get("/login")
        response = client.post("/login", data={"csrf_token": csrf_token(page.text), "name": f"user{attempt}",
                                               "passphrase": "x", "code": "000000"})
        assert response.status_code == 401
    assert sign_in(client, newsroom.bob).status_code == 429


def test_sign_in_without_the_form_token_is_refused(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    client.get("/login")
    response = client.post("/login", data={"name": "alice", "passphrase": newsroom.alice.enrolment.passphrase,
                                           "code": newsroom.alice.code()})
    assert response.status_code == 400 and "form expired" in response.text
    assert client.get("/sources").status_code == 303


def test_actions_without_the_form_token_are_refused(newsroom: Newsroom, alice_client):
    with newsroom.store() as store:
        source = store.create_source(b"\x07" * 32, b"\x08" * 32)
    for path in ("/export", f"/sources/{source.id}/delete", f"/sources/{source.id}/delete-submissions", "/logout"):
        response = alice_client.post(path, data={"scope": "all"})
        assert response.status_code == 400, path
    with newsroom.store() as store:
        assert store.counts()["sources"] == 1


def test_the_session_is_server_side_and_the_cookie_strict(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    response = sign_in(client, newsroom.alice)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    with newsroom.store() as store:
        stored = [row[0] for row in store._conn.execute("SELECT id FROM journalist_sessions")]
    assert len(stored) == 1 and token.encode() not in stored[0] and hashlib.sha256(token.encode()).digest() != stored[0]


def test_sign_out_ends_the_session_on_the_server(newsroom: Newsroom, alice_client):
    token = alice_client.get_cookie(SESSION_COOKIE).value
    alice_client.post("/logout", data={"csrf_token": csrf_token(alice_client.get("/sources").text)})
    assert alice_client.get("/sources").status_code == 303
    replayed = newsroom.journalist_app.test_client()
    replayed.set_cookie(SESSION_COOKIE, token)
    assert replayed.get("/sources").status_code == 303


def test_a_session_expires(tmp_path: Path):
    newsroom = make_newsroom(tmp_path, JOURNALIST_SESSION_MINUTES=0)
    client = newsroom.journalist_app.test_client()
    assert sign_in(client, newsroom.alice).status_code == 303
    assert client.get("/sources").status_code == 303


def test_a_removed_journalist_is_signed_out_and_cannot_sign_in(newsroom: Newsroom, alice_client):
    with newsroom.store() as store:
        NewsroomStore(store).remove_journalist("alice")
    assert alice_client.get("/sources").status_code == 303
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=newsroom.alice.code(1)).status_code == 401


def test_journalist_pages_carry_the_strict_headers(newsroom: Newsroom, alice_client):
    for response in (newsroom.journalist_app.test_client().get("/login"), alice_client.get("/sources")):
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "<script" not in response.text
