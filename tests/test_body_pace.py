"""Request bodies have a minimum rate and a deadline (intake.body_pace), and the upload size
limit is the operator's, against the real app under real gunicorn with limits set through
the environment as an operator would (docs/operator.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_server import SourceClient, encode_multipart, run_intake_server

# Time or memory bounds: one worker runs all such tests in turn, never two at once (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

LIMITS = {"INTAKE_BODY_MIN_BYTES_PER_SECOND": "1000", "INTAKE_BODY_WINDOW_SECONDS": "3", "INTAKE_BODY_DEADLINE_SECONDS": "9",
          "INTAKE_MAX_UPLOAD_MIB": "1"}


def _send_paced(port: int, head: bytes, body: bytes, piece: int, every: float, limit: float) -> tuple[bytes, float]:
    """Send the body `piece` bytes every `every` seconds; (the answer, seconds until it came)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        for offset in range(0, len(body), piece):
            try:
                sock.sendall(body[offset : offset + piece])
                answer = sock.recv(200)
                return answer, time.monotonic() - started  # answered (or closed) before the end
            except BlockingIOError:
                pass
            except OSError:
                return b"", time.monotonic() - started
            time.sleep(every)
        sock.setblocking(True)
        try:
            return sock.recv(200), time.monotonic() - started
        except OSError:
            return b"", time.monotonic() - started


def _request(client: SourceClient, form, message: str) -> tuple[bytes, bytes]:
    content_type, pieces = encode_multipart(form, {"message": message}, {})
    body = b"".join(pieces)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    head = f"POST /submit HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode(), body


def test_bodies_below_the_minimum_rate_are_cut_and_those_above_it_arrive(tmp_path: Path) -> None:
    with run_intake_server(tmp_path, env=LIMITS) as server:
        client = SourceClient(server.url)
        form = client.start_as_new_source()[1].form_with("message", "files")
        with server.open_store() as store:
            before = store.counts()["submissions"]
        # 1 byte every 0.5 s (2 B/s): cut at the end of the first 3 s window, nothing stored.
        head, body = _request(client, form, "slow " * 200)
        answer, seconds = _send_paced(server.gunicorn.port, head, body, 1, 0.5, 30)
        assert answer in (b"",) or answer.startswith(b"HTTP/1.1 400"), answer
        assert 2.5 <= seconds < 6, seconds
        # 1,600 B/s for ~6 s: above the minimum in every window, below the deadline: stored.
        head, body = _request(client, form, "steady " * 1400)
        answer, seconds = _send_paced(server.gunicorn.port, head, body, 400, 0.25, 30)
        assert answer.startswith(b"HTTP/1.1 303"), answer
        assert seconds > 5
        # 1,600 B/s for ~12 s: fast enough in every window, but past the 9 s deadline.
        head, body = _request(client, form, "long " * 4000)
        answer, seconds = _send_paced(server.gunicorn.port, head, body, 400, 0.25, 30)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
        assert 8.5 <= seconds < 12, seconds
        # The operator's upload limit: told on the page, and enforced.
        page = client.get("/submit")
        assert "Up to 1 MiB and 255 files in total per submission" in page.text
        too_large = client.send(page, "x" * (1024 * 1024 + 1))
        assert too_large.status == 413
        with server.open_store() as store:
            assert store.counts()["submissions"] == before + 1
            assert store.counts()["pending uploads"] == 0
        assert "Traceback" not in server.gunicorn.error_log_text()


def _whole_answer(port: int, head: bytes, body: bytes, piece: int, every: float) -> str:
    """Send the body paced as `_send_paced` does, and read the whole answer the server gave."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for offset in range(0, len(body), piece):
            try:
                sock.sendall(body[offset : offset + piece])
            except OSError:
                break
            ready = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) if _readable(sock) else b""
            if ready:
                break
            time.sleep(every)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer.decode("utf-8", "replace")


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_a_source_is_told_whether_its_upload_was_too_slow_or_took_too_long(tmp_path: Path) -> None:
    """A cut by the server is not "the connection broke": the page says which limit stopped it."""
    with run_intake_server(tmp_path, env={**LIMITS, "INTAKE_SOURCE_LANGUAGE": "ru"}) as server:
        client = SourceClient(server.url)
        form = client.start_as_new_source()[1].form_with("message", "files")
        head, body = _request(client, form, "slow " * 200)
        stalled = _whole_answer(server.gunicorn.port, head, body, 1, 0.5)
        assert stalled.startswith("HTTP/1.1 400") and "Соединение стало слишком медленным" in stalled, stalled[:300]
        assert "В течение 3 секунд почти ничего не приходило" in stalled  # the window set here, as said
        head, body = _request(client, form, "long " * 4000)
        too_long = _whole_answer(server.gunicorn.port, head, body, 400, 0.25)
        assert too_long.startswith("HTTP/1.1 400") and "Отправка шла слишком долго" in too_long, too_long[:300]
        assert "На одну отправку сервис отводит не больше 9 секунд" in too_long  # the deadline set here
        assert "Traceback" not in server.gunicorn.error_log_text()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("INTAKE_MAX_UPLOAD_MIB", "lots", "intake: INTAKE_MAX_UPLOAD_MIB must be a whole number of at least 1, not 'lots'"),
        ("INTAKE_BODY_WINDOW_SECONDS", "0", "intake: INTAKE_BODY_WINDOW_SECONDS must be at least 1"),
        ("INTAKE_WORKERS", "abc", "intake: INTAKE_WORKERS must be a number, not 'abc'"),
        ("INTAKE_WORKERS", "0", "intake: INTAKE_WORKERS must be at least 1"),
        ("INTAKE_WORKER_CONNECTIONS", "0", "intake: INTAKE_WORKER_CONNECTIONS must be at least 1"),
        ("INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND", "0.05", "intake: INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND must be at least 0.1"),
    ],
)
def test_a_bad_limit_stops_the_server_at_start_with_one_line(tmp_path: Path, variable: str, value: str, message: str) -> None:
    from intake.memory_wiping import WIPING_ENVIRONMENT
    from tests.fixtures_server import GUNICORN_CONF, REPO

    env = {**os.environ, **WIPING_ENVIRONMENT, variable: value, "INTAKE_BIND": "127.0.0.1:0"}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "wsgi:app"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [message]  # one line, no traceback


def test_a_request_rate_below_one_every_four_seconds_still_serves(tmp_path: Path) -> None:
    """INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND accepts 0.1; a burst of int(4 x 0.2) = 0 requests
    made every worker fail at start, and the site answered nothing."""
    from intake.gunicorn_worker import request_burst

    assert [request_burst(rate) for rate in (0.1, 0.2, 0.25, 1, 4)] == [1, 1, 1, 4, 16]
    with run_intake_server(tmp_path, env={"INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND": "0.2"}) as server:
        assert SourceClient(server.url).get("/").status == 200
        assert "Traceback" not in server.gunicorn.error_log_text()
