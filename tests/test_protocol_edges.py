"""Protocol edges that browsers never produce, against both apps under real gunicorn:
a malformed chunked body, OPTIONS, a request without Host. Each gets a clean 4xx
with the strict headers, and the error log gets one line at most and no traceback.
Run with and without a valid session on the source app."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures_newsroom import make_newsroom
from tests.fixtures_server import GunicornProcess, SourceClient, run_gunicorn

JOURNALIST_APP = "intake.app.journalist:create_journalist_app()"
SECRET = "edge-secret-81c4e2"


@dataclass
class Apps:
    source: GunicornProcess
    journalist: GunicornProcess
    sessions: dict[str, str]  # app name -> a signed-in user's cookies, as a Cookie header value


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> Iterator[Apps]:
    base = tmp_path_factory.mktemp("protocol-edges")
    newsroom = make_newsroom(base)
    env = {"INTAKE_DATA": str(newsroom.settings.data_dir)}
    with run_gunicorn("wsgi:app", base, env) as source, run_gunicorn(JOURNALIST_APP, base, env) as journalist:
        source_client = SourceClient(source.url)
        source_client.start_as_new_source()
        journalist_client = SourceClient(journalist.url)
        login = journalist_client.get("/login")
        signed_in = journalist_client.submit(login, login.form_with("name", "passphrase", "code"), {
            "name": "alice", "passphrase": newsroom.alice.enrolment.passphrase, "code": newsroom.alice.code()})
        assert "Signed in as alice" in signed_in.text
        yield Apps(source, journalist, {"source": source_client._cookie_header()["Cookie"],
                                        "journalist": journalist_client._cookie_header()["Cookie"]})


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def malformed_chunked(path: str, cookie: str, content_type: str) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: x.onion\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: {content_type}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
    return head.encode() + f"zz{SECRET}\r\nabc\r\n0\r\n\r\n".encode()


FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=b0undary"
POSTS = {
    "source": [("/new", FORM), ("/login", FORM), ("/submit", MULTIPART), ("/logout", FORM)],
    "journalist": [("/login", FORM), ("/logout", FORM), ("/export", FORM), ("/replies", MULTIPART)],
}


def _server(apps: Apps, name: str) -> GunicornProcess:
    return apps.source if name == "source" else apps.journalist


def _log_lines_added(server: GunicornProcess, before: str) -> list[str]:
    return server.error_log_text()[len(before):].splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("with_session", [False, True], ids=["no-session", "session"])
@pytest.mark.parametrize("app_name,path,content_type",
                         [(app, path, kind) for app, posts in POSTS.items() for path, kind in posts])
def test_a_malformed_chunked_body_is_a_400_with_one_log_line_at_most(apps: Apps, app_name, path, content_type, with_session):
    server = _server(apps, app_name)
    before = server.error_log_text()
    status, headers, body = exchange(server.port, malformed_chunked(path, apps.sessions[app_name] if with_session else "", content_type))
    # Without a session /submit reads the body too (to hand the message back): the same 400.
    assert status == 400, body[:300]
    assert headers["content-security-policy"].startswith("default-src 'none'")
    added = _log_lines_added(server, before)
    assert len(added) <= 1, added
    assert not any("Traceback" in line or SECRET in line for line in added)
    server.check_alive()


@pytest.mark.slow
@pytest.mark.parametrize("app_name", ["source", "journalist"])
@pytest.mark.parametrize("path", ["/", "/login"])
def test_options_is_not_allowed(apps: Apps, app_name, path):
    status, headers, _ = exchange(_server(apps, app_name).port, f"OPTIONS {path} HTTP/1.1\r\nHost: x.onion\r\n\r\n".encode())
    assert status == 405
    assert headers["cache-control"] == "no-store"


@pytest.mark.slow
@pytest.mark.parametrize("app_name", ["source", "journalist"])
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_request_without_host_is_refused(apps: Apps, app_name, version):
    status, headers, body = exchange(_server(apps, app_name).port, f"GET / {version}\r\n\r\n".encode())
    assert status == 400, body[:300]
    assert headers["x-frame-options"] == "DENY"


@pytest.mark.slow
@pytest.mark.parametrize("app_name", ["source", "journalist"])
def test_every_page_is_cross_origin_isolated(apps: Apps, app_name):
    status, headers, _ = exchange(_server(apps, app_name).port, b"GET / HTTP/1.1\r\nHost: x.onion\r\n\r\n")
    assert status in (200, 303)
    assert headers["cross-origin-embedder-policy"] == "require-corp"


def test_gunicorns_own_answers_carry_coep_too():
    from intake.gunicorn_worker import error_response

    assert b"\r\nCross-Origin-Embedder-Policy: require-corp\r\n" in error_response(400, "Bad Request")


def _posted_paths(module: Path) -> set[str]:
    text = module.read_text()
    found = set(re.findall(r'@blueprint\.post\("([^"<]+)"\)', text))
    found |= set(re.findall(r'@blueprint\.route\("([^"<]+)", methods=\[[^\]]*"POST"', text))
    return found


def test_the_corpus_covers_every_form_post_of_both_apps():
    # A new POST route (without a path parameter) must join the corpus above.
    app_dir = Path(__file__).resolve().parents[1] / "intake" / "app"
    assert _posted_paths(app_dir / "source.py") <= {path for path, _ in POSTS["source"]}
    assert _posted_paths(app_dir / "journalist.py") <= {path for path, _ in POSTS["journalist"]}
