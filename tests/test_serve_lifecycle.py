"""`intake serve` as an operator lives with it: restarts, crashes, Ctrl-C, and what it listens on.

Real `intake serve` subprocesses, real gunicorn and (offline) tor; nothing is mocked.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from intake.config import Settings
from intake.store import Store
from tests.fixtures_circuits import tor_line
from tests.fixtures_serve import ServeProcess, alive, command_line, descendants, free_port, tcp_listeners
from tests.fixtures_server import SourceClient, Upload, encode_multipart, run_intake_server
from tests.test_faults import Part, acknowledged, post_submission

# Time or memory bounds: one worker runs all such tests in turn, never two at once (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

SERVING = "Ctrl-C stops intake."


def _first_ok(port: int, timeout: float) -> float | None:
    """Seconds until GET / on the loopback port answers 200 (polled every 20 ms), or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    return None


def _stored_submissions(settings: Settings) -> int:
    with Store.open(settings) as store:
        return len(store.submissions())


# --- restarts -----------------------------------------------------------------------------------

def _upload_over_kept_alive_connections(port: int, uploads: int, connections: int) -> list[http.client.HTTPConnection]:
    """A source sends `uploads` submissions (a message and a file each) over a few connections
    kept alive, as a browser or tor does; returns the connections, still open."""
    source = SourceClient(f"http://127.0.0.1:{port}")
    _codename, page = source.start_as_new_source()
    form = page.form_with("message", "files")
    cookie = "; ".join(f"{k}={v}" for k, v in source.cookies.items())
    opened = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    for i in range(uploads):
        content_type, pieces = encode_multipart(form, {"message": f"tip {i}"},
                                                {"files": [Upload(f"file{i}.txt", os.urandom(20_000))]})
        conn = opened[i % connections]
        conn.request("POST", form.action, body=b"".join(pieces),
                     headers={"Cookie": cookie, "Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        assert response.status == 303, response.status
        assert not response.will_close  # the connection stays open for the next request
    return opened


def test_a_restart_right_after_50_uploads_serves_again_within_3_seconds(settings: Settings):
    port, journalist_port = free_port(), free_port()
    args = ["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(port),
            "--journalist-port", str(journalist_port)]
    first = ServeProcess(args)
    try:
        first.read_until(SERVING)
        kept_alive = _upload_over_kept_alive_connections(port, uploads=50, connections=5)
    finally:
        # gunicorn closes the idle kept-alive connections itself: their ends on our port linger in
        # TIME_WAIT for a minute, which must not stop the restart.
        assert first.stop() == 0, first.output
    for conn in kept_alive:
        conn.close()
    assert _stored_submissions(settings) == 100  # 50 messages and 50 files

    second = ServeProcess(args)
    try:
        took = _first_ok(port, timeout=10)
        if took is None:
            second.stop()
            pytest.fail(f"the restarted intake did not serve within 10 s:\n{second.all_output()}")
        assert took < 3.0, f"serving again took {took:.2f} s"
    finally:
        assert second.stop() == 0, second.output
    print(f"\nrestart after 50 uploads: first 200 after {took:.2f} s")


def test_kill_9_of_intake_takes_gunicorn_and_tor_with_it_and_the_next_start_just_works(settings: Settings):
    port, journalist_port = free_port(), free_port()
    args = ["serve", "--data", str(settings.data_dir), "--tor", "offline", "--port", str(port),
            "--journalist-port", str(journalist_port)]
    first = ServeProcess(args)
    first.read_until(SERVING)
    family = descendants(first.process.pid)
    commands = {pid: command_line(pid) for pid in family}
    assert sum("gunicorn" in c for c in commands.values()) >= 4, commands  # two masters and their workers
    assert sum(Path(c.split(" ", 1)[0]).name == "tor" for c in commands.values()) == 1, commands

    first.process.kill()
    first.process.wait(10)
    t0 = time.monotonic()
    while [pid for pid in family if alive(pid)] and time.monotonic() < t0 + 15:
        time.sleep(0.05)
    assert [f"{pid}: {commands[pid]}" for pid in family if alive(pid)] == []
    gone = time.monotonic() - t0

    second = ServeProcess(args)
    try:
        second.read_until(SERVING)
        assert _first_ok(port, timeout=10) is not None
        assert second.onions() == first.onions() or not first.onions()
    finally:
        second_family = descendants(second.process.pid)
        assert second.stop() == 0, second.output
    assert [pid for pid in second_family if alive(pid)] == []
    print(f"\nafter kill -9 of intake its {len(family)} processes were gone in {gone:.2f} s")


# --- stopping drains uploads in flight ----------------------------------------------------------

def _slow_upload(settings: Settings, port: int, seconds: float) -> tuple[threading.Thread, dict, threading.Event]:
    """A source sends a file in 16 pieces over `seconds` (an upload over a slow Tor circuit), in a
    thread. Returns the thread, where its result goes, and an event set once half is sent."""
    source = SourceClient(f"http://127.0.0.1:{port}")
    _codename, page = source.start_as_new_source()
    document = os.urandom(160_000)
    result: dict = {"document": document}
    half_sent = threading.Event()

    def upload() -> None:
        try:
            result["answer"] = post_submission(source, page, [Part("file", "minutes.pdf", document)],
                                               piece=10_000, pause=seconds / 16,
                                               on_progress=lambda sent: sent >= 80_000 and half_sent.set())
        except OSError as error:
            result["error"] = error

    thread = threading.Thread(target=upload)
    thread.start()
    return thread, result, half_sent


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_lets_an_upload_in_flight_finish(settings: Settings, how: str):
    port = free_port()
    # Its own process group, like a command in a terminal: Ctrl-C signals the whole group.
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(port),
                          "--journalist-port", str(free_port()), "--grace-period", "20"], new_session=True)
    try:
        serve.read_until(SERVING)
        thread, result, half_sent = _slow_upload(settings, port, seconds=4.0)
        assert half_sent.wait(30)
        if how == "ctrl-c":
            os.killpg(serve.process.pid, signal.SIGINT)
        else:
            serve.process.send_signal(signal.SIGTERM)
        thread.join(60)
        status = serve.process.wait(60)
    finally:
        serve.stop()
    assert "error" not in result, result.get("error")
    assert acknowledged(*result["answer"][:2]), result["answer"]
    assert status == 0, serve.output
    assert _stored_submissions(settings) == 1


def test_an_upload_longer_than_the_grace_period_is_cut_and_intake_still_stops(settings: Settings):
    port = free_port()
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(port),
                          "--journalist-port", str(free_port()), "--grace-period", "2"])
    try:
        serve.read_until(SERVING)
        thread, result, half_sent = _slow_upload(settings, port, seconds=20.0)
        assert half_sent.wait(60)
        t0 = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        status = serve.process.wait(30)
        took = time.monotonic() - t0
        thread.join(60)
    finally:
        serve.stop()
    assert status == 0, serve.output
    assert took < 2 + 6, f"intake took {took:.1f} s to stop with a 2 s grace period"
    assert "answer" not in result or not acknowledged(*result["answer"][:2])
    assert _stored_submissions(settings) == 0


def _kept_alive(port: int, path: str = "/") -> http.client.HTTPConnection:
    """A connection that had one page answered and was kept open, as a browser or tor keeps it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and not response.will_close
    return conn


def _eof_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    finally:
        sock.settimeout(30)


def test_a_stop_closes_idle_connections_at_once_instead_of_waiting_out_the_keepalive(settings: Settings):
    """gunicorn's gevent worker let a kept-alive connection sit out its keepalive (20 s) before a
    stop could finish: every restart of a site a browser had open took that long."""
    port, journalist_port = free_port(), free_port()
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(port),
                          "--journalist-port", str(journalist_port)])
    try:
        serve.read_until(SERVING)
        idle = [_kept_alive(port) for _ in range(3)] + [_kept_alive(journalist_port, "/login")]
        t0 = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        closed = [_eof_within(conn.sock, 5) for conn in idle]
        all_closed = time.monotonic() - t0
        status = serve.process.wait(30)
        took = time.monotonic() - t0
    finally:
        serve.stop()
    assert status == 0, serve.output
    assert closed == [True] * 4, "the server did not close an idle connection"
    assert all_closed < 2.5, f"the idle connections were closed {all_closed:.1f} s after SIGTERM"
    assert took < 5, f"intake took {took:.1f} s to stop with idle connections open (keepalive: 20 s)"
    assert "Traceback" not in serve.output
    print(f"\nidle connections closed {all_closed:.2f} s and intake stopped {took:.2f} s after SIGTERM")


def test_a_stop_still_answers_requests_under_way_on_connections_it_closes_when_idle(settings: Settings):
    """What a stopping worker must not take for idle: a request whose head has begun, one that came
    in the same read as the last (pipelined), and a new connection from tor whose request is still
    crossing the circuit (tor connects and writes its line first)."""
    port = free_port()
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(port),
                          "--journalist-port", str(free_port())], env={"INTAKE_WORKERS": "1"})
    try:
        serve.read_until(SERVING)
        witness = _kept_alive(port)  # one worker: once this is closed, the worker is stopping
        head_begun = _kept_alive(port)
        head_begun.sock.sendall(b"GET / HTTP/1.1\r\n")
        pipelined = socket.create_connection(("127.0.0.1", port), timeout=30)
        pipelined.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n")
        first = http.client.HTTPResponse(pipelined)
        first.begin()
        first.read()
        from_tor = socket.create_connection(("127.0.0.1", port), timeout=30)
        from_tor.sendall(tor_line(0xC1C1D2D2))
        time.sleep(0.3)
        serve.process.send_signal(signal.SIGTERM)
        stopping = _eof_within(witness.sock, 5)
        answers = {}
        for name, sock, rest in (("head begun", head_begun.sock, b"Host: x\r\n\r\n"),
                                 ("pipelined", pipelined, b"Host: x\r\n\r\n"),
                                 ("new from tor", from_tor, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")):
            sock.sendall(rest)
            answers[name] = sock.recv(100)[:15]
        status = serve.process.wait(30)
    finally:
        serve.stop()
    assert first.status == 200
    assert stopping, "the witness connection was not closed: the test did not see a stopping worker"
    assert answers == dict.fromkeys(answers, b"HTTP/1.1 200 OK"), answers
    assert status == 0, serve.output
    assert "Traceback" not in serve.output


# --- what it listens on ---------------------------------------------------------------------------

def _unix_get(path: Path, target: str = "/", headers: str = "") -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_without_a_port_intake_serve_opens_no_tcp_listener(settings: Settings):
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--tor", "offline"])
    try:
        output = serve.read_until(SERVING)
        assert "no TCP port is open" in output
        family = [serve.process.pid, *descendants(serve.process.pid)]
        assert sum("gunicorn" in command_line(pid) for pid in family) >= 4
        assert tcp_listeners(family) == []
        sockets = settings.data_dir / "sockets"
        assert stat.S_IMODE(sockets.stat().st_mode) in (0o700, 0o710)
        for name, page in (("source", b"Share information"), ("journalist", b"<form")):
            path = sockets / f"{name}.sock"
            assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660
            status, answer = _unix_get(path, "/" if name == "source" else "/login")
            assert status == 200 and page in answer, answer[:300]
        # Every visitor comes through tor, and gunicorn trusts a unix-socket peer's forwarding
        # headers unless told otherwise: none may change the app's idea of its own URLs.
        status, answer = _unix_get(sockets / "source.sock", "/", "SCRIPT_NAME: /elsewhere\r\n"
                                   "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n")
        assert status == 200 and b"/elsewhere" not in answer and b"https:" not in answer
        assert b"; Secure" not in answer
        torrc = (settings.data_dir / "tor" / "torrc").read_text()
        assert f"HiddenServicePort 80 unix:{sockets / 'source.sock'}" in torrc
    finally:
        assert serve.stop() == 0, serve.output
    assert not (settings.data_dir / "sockets" / "source.sock").exists()  # gunicorn removed them


def _modes_not_as_promised(data_dir: Path) -> list[str]:
    """SECURITY.md §2: the data dir's folders 0700 and its files 0600, but the server's public key
    (0644), the folder of the apps' sockets (0710 when tor's group may enter it) and the two
    sockets in it (0660)."""
    wrong = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        relative = path.relative_to(data_dir).as_posix()
        if path.is_symlink():
            wrong.append(f"{relative}: a symbolic link")
        elif relative == "sockets":
            allowed = (0o700, 0o710)
        elif path.parent.name == "sockets" and stat.S_ISSOCK(path.lstat().st_mode) and path.parent.parent == data_dir:
            allowed = (0o660,)
        elif path.is_dir():
            allowed = (0o700,)
        elif relative == "server-signing.public":
            allowed = (0o644,)
        else:
            allowed = (0o600,)
        if mode not in allowed:
            wrong.append(f"{relative}: {oct(mode)}")
    return wrong


def test_the_data_dir_keeps_its_modes_while_intake_serves_and_after(settings: Settings):
    """Checked after `intake init` by test_cli_setup; here with what serving adds: tor's own files,
    the sockets, the WAL, the slots file of a large upload, a session."""
    port = free_port()
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--tor", "offline", "--port", str(port)])
    try:
        serve.read_until(SERVING)
        source = SourceClient(f"http://127.0.0.1:{port}")
        _codename, page = source.start_as_new_source()
        answer = post_submission(source, page, [Part("message", None, b"a tip"), Part("file", "large.bin", os.urandom(400_000))])
        assert acknowledged(*answer[:2]), answer[:2]
        data = settings.data_dir
        assert (data / "tor" / "state").exists() and (data / "intake.db-slots").stat().st_size > 400_000
        assert _modes_not_as_promised(data) == []
    finally:
        assert serve.stop() == 0, serve.output
    assert _modes_not_as_promised(settings.data_dir) == []


def test_a_stop_signal_is_heard_whatever_the_serving_loop_was_doing(settings: Settings):
    """A signal's handler runs in the main thread between any two of its bytecodes, so also in the
    middle of the serving loop's wait. Here the handler is called at each line of that wait in turn:
    once (a real SIGTERM under load, tests/test_serve_tor.py) it waited for ever for a lock the
    interrupted wait held, and intake ignored SIGTERM and every signal after it."""
    import sys

    from intake.serving import TipLine

    tip_line = TipLine(settings.data_dir)
    for moment in range(1, 40):
        tip_line._stop_requested.clear()
        delivered = []

        def wait_with_a_signal_at_the_moment(moment: int = moment) -> None:
            lines = 0

            def on_line(frame, event, _arg):
                nonlocal lines
                if event == "line" and not delivered:
                    lines += 1
                    if lines == moment:
                        delivered.append(True)
                        tip_line._on_signal(signal.SIGTERM, None)
                return on_line

            sys.settrace(lambda frame, event, arg: on_line if event == "call" else None)
            try:
                tip_line._stop_requested.wait(0.01)
            finally:
                sys.settrace(None)

        waiting = threading.Thread(target=wait_with_a_signal_at_the_moment, daemon=True)
        waiting.start()
        waiting.join(5)
        assert not waiting.is_alive(), f"the handler called at line {moment} of the wait never returned"
        assert tip_line._stop_requested.is_set() == bool(delivered), moment


def test_workers_stop_when_their_gunicorn_master_is_killed(tmp_path: Path):
    """docs/operator.md: each gunicorn worker stops if its master is gone (a kill -9 of the master
    must not leave workers holding the store and the sockets)."""
    with run_intake_server(tmp_path) as server:
        workers = server.gunicorn.worker_pids()
        assert workers and SourceClient(server.url).get("/").status == 200
        server.gunicorn.process.kill()
        server.gunicorn.process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their master"


@pytest.mark.slow
def test_intake_serve_moves_the_change_time_on_every_minute_without_any_request(settings: Settings):
    """SECURITY.md §2, "File names and file times": the ticker runs in `intake serve` as shipped,
    every minute, so a file's ctime tells when the server last ran, not when the last request came."""
    from intake.store.file_times import day_start

    process = ServeProcess(["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(free_port()),
                            "--journalist-port", str(free_port())])
    try:
        process.read_until(SERVING)
        time.sleep(3)  # what the start itself settles is done
        database = settings.db_path
        started = database.stat().st_ctime_ns
        deadline = time.monotonic() + 75  # one interval of 60 s, and room for a loaded machine
        while database.stat().st_ctime_ns == started and time.monotonic() < deadline:
            time.sleep(1)
        info = database.stat()
    finally:
        assert process.stop() == 0, process.output
    assert info.st_ctime_ns > started, "no tick within 75 s of serving"
    assert info.st_mtime == day_start() and info.st_atime == day_start()
