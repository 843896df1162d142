"""Signing in to the journalist interface: passphrase + single-use TOTP, throttling,
server-side sessions, CSRF, headers."""

from __future__ import annotations

import hashlib
import html
import re
import threading
import time
from pathlib import Path

from intake.app.journalist import SESSION_COOKIE
from intake import memory_key
from intake.journalist_auth import LoginError, ThrottlePolicy, authenticate, name_key, sealed_time
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


def _sign_in_as(client, name: str, passphrase: str = "wrong", code: str = "000000"):
    page = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf_token(page.text), "name": name,
                                       "passphrase": passphrase, "code": code})


def test_an_unknown_name_is_throttled_like_a_known_one(newsroom: Newsroom):
    """The throttle must not tell which names exist: the sixth try gets the same 429 either way."""
    known, unknown = [], []
    for _ in range(6):
        known.append(_sign_in_as(newsroom.journalist_app.test_client(), "alice"))
        unknown.append(_sign_in_as(newsroom.journalist_app.test_client(), "mallory"))
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401] * 5 + [429]
    without_form_token = [re.sub(r'name="csrf_token" value="[^"]*"', "", r.text) for r in (known[-1], unknown[-1])]
    assert without_form_token[0] == without_form_token[1] and "Too many failed sign-ins" in unknown[-1].text
    # Another unknown name is not locked by mallory's failures.
    assert _sign_in_as(newsroom.journalist_app.test_client(), "eve").status_code == 401


def test_the_throttle_never_stores_a_name_that_was_tried(newsroom: Newsroom):
    _sign_in_as(newsroom.journalist_app.test_client(), "mallory-the-unknown")
    _sign_in_as(newsroom.journalist_app.test_client(), "alice")
    with newsroom.store() as store:
        rows = store._conn.execute("SELECT * FROM failed_logins").fetchall()
    assert len(rows) == 2
    for row in rows:
        for value in row:
            as_bytes = value if isinstance(value, bytes) else str(value).encode()
            assert b"mallory" not in as_bytes and b"alice" not in as_bytes


def test_failures_age_out_of_the_throttle_window(newsroom: Newsroom):
    with newsroom.store() as store:
        record = NewsroomStore(store).login_record("alice")
        for _ in range(5):
            NewsroomStore(store).record_failed_login(record.journalist_id, name_key("alice", newsroom.settings.login_throttle_key),
                                                     sealed_time(time.time() - 16 * 60))
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice).status_code == 303


def test_the_throttle_and_the_used_code_are_sealed_and_a_restart_forgets_them(newsroom: Newsroom, monkeypatch):
    """Their times are sealed under a key that lives only in the server's memory: the store
    shows no time (tests/test_seized_store.py), and a new run cannot read the old run's."""
    code = newsroom.alice.code()
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=code).status_code == 303
    for _ in range(5):
        assert sign_in(newsroom.journalist_app.test_client(), newsroom.bob, passphrase="nope").status_code == 401
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.bob).status_code == 429
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=code).status_code == 401
    with newsroom.store() as store:
        (used,) = store._conn.execute("SELECT totp_used FROM journalists WHERE name = 'alice'").fetchone()
        sealed = [row[0] for row in store._conn.execute("SELECT sealed_time FROM failed_logins")]
    step = int(time.time() // 30)
    assert len(used) == 24 + 8 + 16 and all(len(value) == 24 + 8 + 16 for value in sealed) and len(sealed) == 6  # bob 5, the replay 1
    for value in (used, *sealed):
        assert all(str(number).encode() not in value and number.to_bytes(8, "big") not in value
                   for number in (step, step + 1, int(time.time())))
    monkeypatch.setattr(memory_key, "_key", None)  # the server restarts: a new key
    monkeypatch.delenv(memory_key.ENVIRONMENT_VARIABLE, raising=False)
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.bob).status_code == 303
    # SECURITY.md: a code used just before the restart works once more after it, and once only.
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=code).status_code == 303
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=code).status_code == 401
    with newsroom.store() as store:
        assert store._conn.execute("SELECT count(*) FROM failed_logins").fetchone()[0] == 1  # that replay


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
    response = sign_in(client, newsroom.alice)
    assert response.status_code == 303
    assert client.get("/sources").status_code == 303
    # The server does not rely on the browser dropping the cookie: the exact expiry, sealed under
    # the cookie's token, is checked, and a session found expired is deleted.
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(SESSION_COOKIE + "="))
    replayed = newsroom.journalist_app.test_client()
    replayed.set_cookie(SESSION_COOKIE, cookie.split(";")[0].split("=", 1)[1])
    assert replayed.get("/sources").status_code == 303
    with newsroom.store() as store:
        assert store._conn.execute("SELECT count(*) FROM journalist_sessions").fetchone()[0] == 0


def test_the_documented_limits_and_session_length_are_the_servers_own(newsroom: Newsroom):
    """docs/journalists.md gives the figures; the other tests here shrink them to run fast, so this
    one reads what an app made with no overrides uses."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "journalists.md").read_text()
    throttle = newsroom.journalist_app.extensions["intake-journalist"].throttle
    assert f"**{throttle.per_account} failed sign-ins within {throttle.window_minutes} minutes**" in guide
    assert f"**{throttle.overall} failures across all names**" in guide
    assert f"sessions end after {newsroom.journalist_app.config['JOURNALIST_SESSION_MINUTES']} minutes" in guide


class _Clock:
    """The journalist app's time module as a session sees it: time.time(), moved on by hand."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


def test_a_session_lasts_thirty_minutes_and_no_longer(newsroom: Newsroom, monkeypatch):
    import intake.app.journalist as journalist_app

    clock = _Clock()
    monkeypatch.setattr(journalist_app, "time", clock)
    client = newsroom.journalist_app.test_client()
    assert sign_in(client, newsroom.alice).status_code == 303
    clock.ahead = 29 * 60
    assert client.get("/sources").status_code == 200
    clock.ahead = 31 * 60
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


def _parallel_attempts(newsroom: Newsroom, names: list[str], policy: ThrottlePolicy) -> tuple[int, list[str]]:
    """Wrong sign-ins started at the same moment, each with its own store (as separate
    requests and workers have); returns how many reached Argon2id, and each outcome."""
    barrier = threading.Barrier(len(names))
    lock = threading.Lock()
    checks = 0
    outcomes: list[str] = []

    def slow_kdf(fn, *args):
        nonlocal checks
        with lock:
            checks += 1
        time.sleep(0.2)  # Argon2id takes this long or more: every other attempt runs meanwhile
        return fn(*args)

    def attempt(name: str) -> None:
        with newsroom.store() as store:
            barrier.wait()
            try:
                authenticate(NewsroomStore(store), name, "wrong " * 7, "000000", policy=policy,
                             throttle_key=newsroom.settings.login_throttle_key, run=slow_kdf)
            except LoginError as error:
                with lock:
                    outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=attempt, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return checks, outcomes


def test_parallel_wrong_passphrases_for_one_account_get_no_more_checks_than_the_limit(newsroom: Newsroom):
    checks, outcomes = _parallel_attempts(newsroom, ["alice"] * 30, ThrottlePolicy(per_account=5, overall=1000))
    assert checks == 5
    assert sorted(outcomes) == ["LoginFailedError"] * 5 + ["LoginThrottledError"] * 25
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice).status_code == 429


def test_parallel_guesses_across_names_get_no_more_checks_than_the_overall_limit(tmp_path: Path):
    policy = ThrottlePolicy(per_account=5, overall=8)
    newsroom = make_newsroom(tmp_path, JOURNALIST_THROTTLE=policy)
    checks, outcomes = _parallel_attempts(newsroom, [f"user{i}" for i in range(30)], policy)
    assert checks == 8 and outcomes.count("LoginThrottledError") == 22
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.bob).status_code == 429


def _flask_session(app, client) -> dict:
    """What Flask's signed (not encrypted) cookie holds: anyone with the cookie can read it."""
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    return app.session_interface.get_signing_serializer(app).loads(cookie.value) if cookie else {}


def test_action_results_never_travel_in_the_cookie(newsroom: Newsroom, alice_client):
    from tests.fixtures_newsroom import submit_as_new_source

    app = newsroom.journalist_app
    submit_as_new_source(newsroom.source_app, "to be deleted", [("a.txt", b"a", "text/plain")])
    with newsroom.store() as store:
        ((source_id, designation),) = [(s.id, s.designation) for s in NewsroomStore(store).source_overview()]
    token = csrf_token(alice_client.get("/sources").text)
    actions = [
        ("/export", {"scope": "selected"}, "Select at least one source to download."),
        ("/replies", {}, "Choose a reply bundle file to upload."),
        (f"/sources/{source_id}/delete-submissions", {}, "Deleted the source's submissions."),
        ("/export", {"scope": "new"}, "Nothing to download: there are no new submissions. Submissions downloaded before are in “Download everything” until they are deleted."),
        (f"/sources/{source_id}/delete", {}, "Deleted the source and everything from and for it."),
    ]
    for path, data, notice in actions:
        response = alice_client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 303, path
        assert set(_flask_session(app, alice_client)) <= {"csrf_token"}, path
        page = alice_client.get(response.location)
        (shown,) = re.findall(r'<p class="notice[^"]*"[^>]*>([^<]*)</p>', page.text)
        assert html.unescape(shown) == notice and designation not in response.location, path
    # A status in the address is only a key to a fixed message: nothing else can be shown through it.
    assert "<p class=\"notice" not in alice_client.get("/sources?done=%3Cb%3Eowned%3C%2Fb%3E").text


def test_a_head_request_to_the_sign_in_page_is_the_page_not_a_sign_in(newsroom: Newsroom):
    """HEAD is GET without the body (and CSRFProtect checks POST only): a HEAD carrying a sign-in
    form, without its token, must neither sign anyone in nor count as an attempt (it did both)."""
    client = newsroom.journalist_app.test_client()
    response = client.head("/login", data={"name": "alice", "passphrase": newsroom.alice.enrolment.passphrase,
                                           "code": newsroom.alice.code()})
    assert response.status_code == 200
    assert SESSION_COOKIE not in (response.headers.get("Set-Cookie") or "")
    assert client.get("/sources").status_code == 303
    with newsroom.store() as store:
        assert store._conn.execute("SELECT count(*) FROM failed_logins").fetchone()[0] == 0
    assert sign_in(client, newsroom.alice).status_code == 303  # the code was not used up


def test_deleting_a_source_warns_when_some_of_it_was_never_downloaded(newsroom: Newsroom, alice_client):
    from tests.fixtures_newsroom import submit_as_new_source

    submit_as_new_source(newsroom.source_app, "never downloaded", [("a.txt", b"a", "text/plain"), ("b.txt", b"b", "text/plain")])
    with newsroom.store() as store:
        ((source_id, _designation),) = [(s.id, s.designation) for s in NewsroomStore(store).source_overview()]
    page = alice_client.get(f"/sources/{source_id}/delete").text
    assert "3 submissions have never been downloaded by anyone: deleting them loses them for good." in page
    token = csrf_token(alice_client.get("/sources").text)
    download = alice_client.post("/export", data={"csrf_token": token, "scope": "new"})
    assert download.status_code == 200
    download.get_data()  # the whole bundle read: its submissions are marked downloaded
    assert "never been downloaded" not in alice_client.get(f"/sources/{source_id}/delete").text
