"""Operating `intake serve` over real Tor (the private network of tests/tornet.py): the system
tor going away and coming back, revoking a journalist while they are connected, and a stop
that lets a source's upload over Tor finish.

intake is started without --port: both onions reach the apps over the unix sockets only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures_newsroom import make_newsroom
from tests.fixtures_serve import INTAKE, ServeProcess, alive, descendants, tcp_listeners
from tests.fixtures_server import SourceClient, Upload, encode_multipart
from tests.test_serve_lifecycle import _stored_submissions
from tests.test_serve_lifecycle import _unix_get
from tests.test_tornet_end_to_end import _client_auth_private_key, _socks_refusal
from tests.test_tornet_system_tor import _start_system_tor
from tests.tornet import SOCKS_MISSING_CLIENT_AUTH, SOCKS_WRONG_CLIENT_AUTH, TorNetwork, socks5_connect

# The private Tor network (one per process, so all its tests in one group) runs after the parallel run,
# beside nothing but the abuse tests that leave the cores idle (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.xdist_group("tornet")]


def _restart_system_tor(data: Path) -> subprocess.Popen:
    """Start the stand-in system tor again from its data dir and torrc; waits for bootstrap."""
    log = data / "notice.log"
    log.unlink()
    with open(data / "console.log", "ab") as console:
        process = subprocess.Popen(["tor", "--defaults-torrc", "/dev/null", "-f", str(data / "torrc")],
                                   stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 90
    while not (log.exists() and "Bootstrapped 100%" in log.read_text(errors="replace")):
        assert process.poll() is None, (data / "console.log").read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "the system tor did not bootstrap again within 90 s"
        time.sleep(0.1)
    return process


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_when_the_system_tor_goes_away_intake_keeps_serving_and_republishes_when_it_is_back(
        tor_network: TorNetwork, tmp_path: Path):
    t0 = time.monotonic()
    newsroom = make_newsroom(tmp_path)
    data_dir = newsroom.settings.data_dir
    system = tmp_path / "sys"
    tor = _start_system_tor(tor_network, system)
    serve = ServeProcess(["serve", "--data", str(data_dir), "--tor", "system",
                          "--tor-control-socket", str(system / "control")])
    address, private_key = _client_auth_private_key(newsroom.alice)
    try:
        serve.read_until("Tor is connected", timeout=90)
        onions = serve.onions()
        family = [serve.process.pid, *descendants(serve.process.pid)]
        assert tcp_listeners(family) == []  # the onions can only be reaching the unix sockets
        assert tor_network.wait_until_reachable(f"http://{onions['source']}/", timeout=120).status == 200
        t_first = time.monotonic() - t0

        _stop(tor)
        serve.read_until("Lost the system tor", timeout=30)
        assert serve.process.poll() is None
        assert [pid for pid in family if not alive(pid)] == []  # both gunicorns still serve
        status, page = _unix_get(data_dir / "sockets" / "source.sock")
        assert status == 200 and b"Share information" in page

        tor = _restart_system_tor(system)
        serve.read_until("The system tor is back", timeout=30)
        assert "2 keys authorised" in serve.read_until("keys authorised").split("The system tor is back", 1)[1]
        # A visitor arriving now: this client may have fetched the old descriptor while the new
        # one was still on its way, which says nothing about whether intake republished.
        source_onion = f"http://{onions['source']}/"
        assert tor_network.wait_until_reachable(source_onion, timeout=180, as_new_client=True, timeout_each=30).status == 200
        tor_network.add_client_auth(address, private_key)
        try:
            login = tor_network.wait_until_reachable(f"http://{address}/login", timeout=180, as_new_client=True, timeout_each=30)
            assert login.status == 200
        finally:
            tor_network.remove_client_auth(address)
        t_again = time.monotonic() - t0
    finally:
        status = serve.stop()
        _stop(tor)
    assert status == 0, serve.output
    assert "Traceback" not in serve.output
    print(f"\nsource onion answered {t_first:.1f} s; after the system tor's restart, both onions "
          f"answered again at {t_again:.1f} s")


def _http_get_on(sock: socket.socket, path: str) -> bytes:
    """One keep-alive GET on an open connection: the whole answer (head and body), or b""
    if the connection was closed instead."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body
    except (ConnectionResetError, BrokenPipeError):
        return data


def test_revoking_a_journalist_cuts_their_open_connection(tor_network: TorNetwork, tmp_path: Path):
    newsroom = make_newsroom(tmp_path)  # alice and bob, each with a client-auth key
    data_dir = newsroom.settings.data_dir
    serve = ServeProcess(["serve", "--data", str(data_dir), "--tor", "launch",
                          "--tor-config", str(tor_network.write_service_torrc(tmp_path / "tornet.torrc"))])
    address, bob_key = _client_auth_private_key(newsroom.bob)
    try:
        serve.read_until("Tor is connected", timeout=90)
        assert "2 keys authorised" in serve.output
        tor_network.add_client_auth(address, bob_key)
        try:
            assert tor_network.wait_until_reachable(f"http://{address}/login", timeout=120).status == 200
            connection = socks5_connect(tor_network.socks_port, address, 80, timeout=60)
            with connection:
                assert _http_get_on(connection, "/login").startswith(b"HTTP/1.1 200")

                removed = subprocess.run(INTAKE + ["journalist", "remove", "--data", str(data_dir), "--name", "bob"],
                                         capture_output=True, text=True, timeout=60)
                assert removed.returncode == 0, removed.stderr
                serve.process.send_signal(signal.SIGHUP)
                serve.read_until("1 key authorised", timeout=30)

                # The connection bob opened before is cut (well within gunicorn's 20 s keep-alive).
                connection.settimeout(15)
                assert _http_get_on(connection, "/login") == b""
            # and a new one is refused by tor: bob's key no longer opens the descriptor.
            assert _socks_refusal(tor_network, f"http://{address}/login", timeout=120) in (
                SOCKS_MISSING_CLIENT_AUTH, SOCKS_WRONG_CLIENT_AUTH)
        finally:
            tor_network.remove_client_auth(address)

        alice_address, alice_key = _client_auth_private_key(newsroom.alice)
        tor_network.add_client_auth(alice_address, alice_key)
        try:  # the journalist who stays reaches the service again
            assert tor_network.wait_until_reachable(f"http://{address}/login", timeout=120).status == 200
        finally:
            tor_network.remove_client_auth(alice_address)
    finally:
        assert serve.stop() == 0, serve.output


def _trickled_post(net: TorNetwork, onion: str, source: SourceClient, page, document: bytes, seconds: float,
                   half_sent: threading.Event) -> tuple[int, str]:
    """Send the submit form with a file through Tor in 16 pieces over `seconds`; (status, Location)."""
    form = page.form_with("message", "files")
    content_type, pieces = encode_multipart(form, {"message": ""}, {"files": [Upload("minutes.pdf", document)]})
    body = b"".join(pieces)
    connection = net.http_connection(onion, 80, timeout=120)
    try:
        connection.putrequest("POST", form.action)
        connection.putheader("Cookie", "; ".join(f"{k}={v}" for k, v in source.cookies.items()))
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        step = -(-len(body) // 16)
        for start in range(0, len(body), step):
            connection.send(body[start:start + step])
            if start + step >= len(body) // 2:
                half_sent.set()
            time.sleep(seconds / 16)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers.get("Location", "")
    finally:
        connection.close()


def test_sigterm_lets_an_upload_over_tor_finish_before_tor_stops(tor_network: TorNetwork, tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    serve = ServeProcess(["serve", "--data", str(newsroom.settings.data_dir), "--tor", "launch", "--grace-period", "30",
                          "--tor-config", str(tor_network.write_service_torrc(tmp_path / "tornet.torrc"))])
    result: dict = {}
    try:
        serve.read_until("Tor is connected", timeout=90)
        onion = serve.onions()["source"]
        assert tor_network.wait_until_reachable(f"http://{onion}/", timeout=120).status == 200
        source = SourceClient(f"http://{onion}", connection=tor_network.http_connection, timeout=120)
        _codename, page = source.start_as_new_source()
        half_sent = threading.Event()

        def upload() -> None:
            try:
                result["answer"] = _trickled_post(tor_network, onion, source, page, os.urandom(200_000), 6.0, half_sent)
            except OSError as error:
                result["error"] = error

        thread = threading.Thread(target=upload)
        thread.start()
        assert half_sent.wait(60)
        serve.process.send_signal(signal.SIGTERM)
        thread.join(90)
        status = serve.process.wait(60)
    finally:
        serve.stop()
    assert "error" not in result, result.get("error")
    answer_status, location = result["answer"]
    assert answer_status == 303 and location.rstrip("/").endswith("/thanks"), result["answer"]
    assert status == 0, serve.output
    assert _stored_submissions(newsroom.settings) == 1
