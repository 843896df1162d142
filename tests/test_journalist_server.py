"""The journalist interface under real gunicorn (deploy/gunicorn.conf.py, gevent workers):
sign in over HTTP, and an export that streams as it is read and is marked exported
only when the whole bundle went out."""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from intake.store.newsroom import Newsroom as NewsroomStore
from tests.fixtures_newsroom import Newsroom, make_newsroom, submit_as_new_source
from tests.fixtures_server import SourceClient, run_gunicorn
from tests.test_export_import import read_bundle

JOURNALIST_APP = "intake.app.journalist:create_journalist_app()"


def new_submissions(newsroom: Newsroom) -> int:
    with newsroom.store() as store:
        return sum(s.new_submissions for s in NewsroomStore(store).source_overview())


def start_export(client: SourceClient, port: int) -> http.client.HTTPResponse:
    page = client.get("/sources")
    token = dict((name, value) for name, _kind, value in page.form_posting_to("/export").controls)["csrf_token"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = urlencode({"csrf_token": token, "scope": "new"}).encode()
    conn.request("POST", "/export", body, {**client._cookie_header(), "Content-Type": "application/x-www-form-urlencoded"})
    return conn.getresponse()


@pytest.mark.slow
def test_sign_in_and_streamed_export_under_gunicorn(tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    big = os.urandom(24 << 20)  # larger than the socket buffers, so a reader that stops really stops the stream
    submit_as_new_source(newsroom.source_app, "over real HTTP", [("big.bin", big, "application/octet-stream")])
    with run_gunicorn(JOURNALIST_APP, tmp_path, {"INTAKE_DATA": str(newsroom.settings.data_dir)}) as server:
        client = SourceClient(server.url)
        login = client.get("/login")
        sources = client.submit(login, login.form_with("name", "passphrase", "code"), {
            "name": "alice", "passphrase": newsroom.alice.enrolment.passphrase, "code": newsroom.alice.code()})
        assert sources.status == 200 and "Signed in as alice" in sources.text

        # A download abandoned after the first megabyte marks nothing exported.
        response = start_export(client, server.port)
        assert response.status == 200 and response.getheader("Content-Length") is None  # streamed, not built first
        response.read(1 << 20)
        response.close()
        time.sleep(2)
        assert new_submissions(newsroom) == 2

        response = start_export(client, server.port)
        data = b"".join(iter(lambda: response.read(1 << 16), b""))
        (items,) = read_bundle(newsroom, data, newsroom.bob.identity).values()
        assert sorted(body for _, _, body, _ in items) == sorted([b"over real HTTP", big])
        deadline = time.monotonic() + 10
        while new_submissions(newsroom) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert new_submissions(newsroom) == 0
    assert "Traceback" not in server.error_log.read_text()


@pytest.mark.slow
def test_simultaneous_wrong_passphrases_get_no_more_checks_than_the_limit_under_gunicorn(tmp_path: Path):
    """40 wrong sign-ins for one account at once, through gevent workers: 5 are checked
    (and fail), the rest are throttled before any Argon2id work."""
    newsroom = make_newsroom(tmp_path)
    with run_gunicorn(JOURNALIST_APP, tmp_path, {"INTAKE_DATA": str(newsroom.settings.data_dir),
                                                 "INTAKE_WORKERS": "2"}) as server:
        posts = []
        for _ in range(40):
            client = SourceClient(server.url)
            login = client.get("/login")
            token = dict((n, v) for n, _k, v in login.form_with("name", "passphrase", "code").controls)["csrf_token"]
            body = urlencode({"csrf_token": token, "name": "alice", "passphrase": "wrong " * 7, "code": "000000"})
            posts.append((client._cookie_header(), body.encode()))
        barrier = threading.Barrier(len(posts))
        statuses: list[int] = []

        def post(headers: dict[str, str], body: bytes) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            barrier.wait()
            conn.request("POST", "/login", body, {**headers, "Content-Type": "application/x-www-form-urlencoded"})
            statuses.append(conn.getresponse().status)
            conn.close()

        threads = [threading.Thread(target=post, args=args) for args in posts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [401] * 5 + [429] * 35


@pytest.mark.slow
def test_a_code_used_at_one_worker_is_refused_at_every_other(tmp_path: Path):
    """The last TOTP step is sealed under a key that lives only in memory; gunicorn's master
    makes it once, so every worker reads what any other sealed (intake.memory_key)."""
    newsroom = make_newsroom(tmp_path)
    env = {"INTAKE_DATA": str(newsroom.settings.data_dir), "INTAKE_WORKERS": "2"}
    with run_gunicorn(JOURNALIST_APP, tmp_path, env) as server:
        assert len(server.worker_pids()) == 2
        code = newsroom.alice.code()
        outcomes = []
        for _ in range(8):  # each on a new connection, so gevent workers take turns at accepting them
            client = SourceClient(server.url)
            login = client.get("/login")
            page = client.submit(login, login.form_with("name", "passphrase", "code"), {
                "name": "alice", "passphrase": newsroom.alice.enrolment.passphrase, "code": code})
            outcomes.append("Signed in as alice" in page.text)
    assert outcomes == [True] + [False] * 7
