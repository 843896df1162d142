"""The whole tip line over real Tor: `intake serve` on the private network of tests/tornet.py,
with no TCP port: tor reaches both apps over their unix sockets.

A source fetches the landing page through the network's client tor (SOCKS) by the
.onion address, gets a codename and submits a message and a file with the page's own
form (CSRF token, session cookie, multipart). The journalist onion refuses a client
without the authorisation key and serves one holding it; the journalist signs in with
passphrase + TOTP, downloads the export there, and `intake-keys decrypt` on the
"laptop" gives back the exact bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from keys.identity import KDF_MIN
from keys.server_key import trust_server

from intake.server_identity import server_public_key
from tests.fixtures_newsroom import Journalist, make_newsroom
from tests.fixtures_serve import ServeProcess, descendants, tcp_listeners
from tests.fixtures_server import SourceClient, Upload
from tests.tornet import SOCKS_MISSING_CLIENT_AUTH, TRANSIENT_SOCKS_ERRORS, SocksError, TorNetwork

# The private Tor network (one per process, so all its tests in one group) runs after the parallel run,
# beside nothing but the abuse tests that leave the cores idle (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.xdist_group("tornet")]

INTAKE_KEYS = Path(sys.executable).parent / "intake-keys"


def _socks_refusal(net: TorNetwork, url: str, timeout: float = 90.0) -> int:
    """Poll url until tor gives a definite (non-transient) SOCKS refusal; return its code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = net.fetch(url, timeout=30)
        except SocksError as error:
            if error.code not in TRANSIENT_SOCKS_ERRORS:
                return error.code
        else:
            pytest.fail(f"{url} answered {response.status} to a client without the authorisation key")
        time.sleep(0.5)
    pytest.fail(f"{url}: no definite answer within {timeout:.0f} s")


def _client_auth_private_key(journalist: Journalist) -> tuple[str, str]:
    """(onion address, private key) from the line `intake journalist add` printed."""
    address, _descriptor, _x25519, private = journalist.enrolment.client_auth_line.split(":")
    return address + ".onion", private


def _download_new_submissions(net: TorNetwork, journalist: SourceClient, onion: str) -> bytes:
    """Press "Download new submissions" on the sources page; the raw body is the bundle."""
    page = journalist.get("/sources")
    assert page.status == 200, page.text[:500]
    form = page.form_posting_to("/export")
    token = next(value for name, _kind, value in form.controls if name == "csrf_token")
    body = urlencode({"csrf_token": token, "scope": "new"}).encode()
    connection = net.http_connection(onion, 80, timeout=120)
    try:
        connection.request("POST", "/export", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "; ".join(f"{k}={v}" for k, v in journalist.cookies.items()),
        })
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert response.status == 200, data[:500]
    assert response.headers["Content-Disposition"].startswith("attachment;")
    return data


def test_a_tip_goes_from_a_source_over_tor_to_the_journalists_laptop(tor_network: TorNetwork, tmp_path: Path):
    t0 = time.monotonic()
    newsroom = make_newsroom(tmp_path)  # alice and bob, each with a login and a client-auth key
    message = "The minutes are in the attached file. " + os.urandom(6).hex()
    document = os.urandom(300_000) + b"end of the minutes"

    # No --port: both onions reach the apps over their unix sockets only.
    serve = ServeProcess(["serve", "--data", str(newsroom.settings.data_dir),
                          "--tor", "launch", "--tor-config", str(tor_network.write_service_torrc(tmp_path / "tornet.torrc"))])
    try:
        serve.read_until("Tor is connected", timeout=90)
        onions = serve.onions()
        assert "2 keys authorised" in serve.output
        assert tcp_listeners([serve.process.pid, *descendants(serve.process.pid)]) == []
        t_connected = time.monotonic() - t0

        # The source, through Tor by the .onion address only.
        landing = tor_network.wait_until_reachable(f"http://{onions['source']}/", timeout=120)
        assert landing.status == 200
        t_reachable = time.monotonic() - t0
        source = SourceClient(f"http://{onions['source']}", connection=tor_network.http_connection, timeout=120)
        codename, page = source.start_as_new_source()
        assert len(codename.split()) >= 7
        thanks = source.send(page, message, [Upload("minutes.pdf", document, "application/pdf")])
        assert thanks.status == 200, thanks.text[:500]
        t_submitted = time.monotonic() - t0

        # The journalist onion: nothing without the key, the interface with it.
        address, private_key = _client_auth_private_key(newsroom.alice)
        assert address == onions["journalist"]
        assert _socks_refusal(tor_network, f"http://{address}/login") == SOCKS_MISSING_CLIENT_AUTH
        tor_network.add_client_auth(address, private_key)
        try:
            assert tor_network.wait_until_reachable(f"http://{address}/login", timeout=120).status == 200
            journalist = SourceClient(f"http://{address}", connection=tor_network.http_connection, timeout=120)
            login = journalist.get("/login")
            signed_in = journalist.submit(login, login.form_with("name", "passphrase", "code"), {
                "name": "alice", "passphrase": newsroom.alice.enrolment.passphrase, "code": newsroom.alice.code()})
            assert signed_in.status == 200 and signed_in.url.endswith("/sources"), signed_in.text[:500]
            bundle = _download_new_submissions(tor_network, journalist, address)
        finally:
            tor_network.remove_client_auth(address)
        t_exported = time.monotonic() - t0
    finally:
        assert serve.stop() == 0, serve.output

    # On the laptop: alice's secret key and intake-keys, no network needed.
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    (laptop / "export.bundle").write_bytes(bundle)
    newsroom.alice.identity.save(laptop / "alice.secret", "alice's laptop passphrase", KDF_MIN)
    (laptop / "passphrase.txt").write_text("alice's laptop passphrase\n")
    trust_server(laptop / "alice.secret", server_public_key(newsroom.settings.data_dir))
    done = subprocess.run([str(INTAKE_KEYS), "decrypt", str(laptop / "export.bundle"), "--key", str(laptop / "alice.secret"),
                           "--passphrase-file", str(laptop / "passphrase.txt"), "--out", str(laptop / "tips")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    decrypted = [p.read_bytes() for p in (laptop / "tips").rglob("*") if p.is_file()]
    assert document in decrypted
    assert message.encode() in decrypted
    assert codename not in done.stdout + done.stderr + serve.output
    print(f"\nprivate network up in {tor_network.bring_up_seconds:.1f} s; after `intake serve` started: "
          f"tor connected {t_connected:.1f} s, source onion answered {t_reachable:.1f} s, submitted "
          f"{t_submitted:.1f} s, exported through the journalist onion {t_exported:.1f} s")
