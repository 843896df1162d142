"""`intake serve --tor system` over real Tor: the private network of tests/tornet.py.

The test starts a "system" tor itself (control socket, cookie authentication, no SOCKS
port, the private network's lines) and runs `intake serve --tor system` against it.
The source onion answers through the network's client tor; the journalist onion refuses
a client without the authorisation key. After SIGTERM intake exits 0, the system tor
keeps running, and intake's services are gone from it: tor accepts ADD_ONION with
intake's keys again (while intake runs the same request is refused as a collision).
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import pytest

from intake.onion_keys import load_or_create_onion_key
from tests.fixtures_newsroom import make_newsroom
from tests.fixtures_serve import ServeProcess, alive, descendants, tcp_listeners
from tests.test_tornet_end_to_end import _socks_refusal
from tests.tornet import SOCKS_MISSING_CLIENT_AUTH, TorNetwork, _check_private, _Control

# The private Tor network (one per process, so all its tests in one group) runs after the parallel run,
# beside nothing but the abuse tests that leave the cores idle (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.xdist_group("tornet")]


def _start_system_tor(net: TorNetwork, data: Path) -> subprocess.Popen:
    """A tor like Debian's system tor, on the private network only; waits for bootstrap."""
    data.mkdir(mode=0o700)
    torrc = "\n".join([
        f'DataDirectory "{data}"',
        f'ControlSocket unix:"{data / "control"}"',
        "CookieAuthentication 1",
        f'CookieAuthFile "{data / "control_auth_cookie"}"',
        "SocksPort 0",
        "ShutdownWaitLength 0",
        # the test's pid, not intake's: intake must not own it, and it exits if pytest dies
        f"__OwningControllerProcess {os.getpid()}",
        f"Log notice file {data / 'notice.log'}",
        *net.torrc_lines_for_service(),
    ]) + "\n"
    _check_private(torrc)
    (data / "torrc").write_text(torrc)
    with open(data / "console.log", "wb") as console:
        process = subprocess.Popen(["tor", "--defaults-torrc", os.devnull, "-f", str(data / "torrc")],
                                   stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 90
    log = data / "notice.log"
    while not (log.exists() and "Bootstrapped 100%" in log.read_text(errors="replace")):
        assert process.poll() is None, (data / "console.log").read_text(errors="replace")
        assert time.monotonic() < deadline, "the system tor did not bootstrap within 90 s"
        time.sleep(0.1)
    return process


def _add_onion_reply(control: _Control, key: bytes) -> str:
    """Try to publish key's address from the test's own control connection: 'added'
    (then removed again) or tor's refusal."""
    blob = base64.b64encode(key).decode()
    try:
        lines = control.request(f"ADD_ONION ED25519-V3:{blob} Flags=DiscardPK Port=80,127.0.0.1:9")
    except RuntimeError as refusal:
        return str(refusal)
    sid = next(line.split("=", 1)[1] for line in lines if line.startswith("ServiceID="))
    control.request(f"DEL_ONION {sid}")
    return "added"


def test_intake_serve_on_a_system_tor(tor_network: TorNetwork, tmp_path: Path):
    t0 = time.monotonic()
    newsroom = make_newsroom(tmp_path)  # alice and bob, each with a client-auth key
    data_dir = newsroom.settings.data_dir
    system = tmp_path / "sys"
    tor = _start_system_tor(tor_network, system)
    control = None
    try:
        t_tor = time.monotonic() - t0
        # No --port: both onions reach the apps over their unix sockets only.
        serve = ServeProcess(["serve", "--data", str(data_dir),
                              "--tor", "system", "--tor-control-socket", str(system / "control")])
        try:
            serve.read_until("Tor is connected", timeout=90)
            onions = serve.onions()
            assert "2 keys authorised" in serve.output
            assert tcp_listeners([serve.process.pid, *descendants(serve.process.pid)]) == []
            landing = tor_network.wait_until_reachable(f"http://{onions['source']}/", timeout=120)
            assert landing.status == 200
            assert "Share information with our journalists, safely" in landing.text
            t_reachable = time.monotonic() - t0
            assert _socks_refusal(tor_network, f"http://{onions['journalist']}/login") == SOCKS_MISSING_CLIENT_AUTH

            control = _Control(system / "control", system / "control_auth_cookie")
            keys = [load_or_create_onion_key(data_dir / "onion" / f"{name}.key") for name in ("source", "journalist")]
            for key in keys:  # intake's services are there: tor refuses a second copy
                assert "collision" in _add_onion_reply(control, key).lower()
        finally:
            status = serve.stop()
        assert status == 0, serve.output
        t_stopped = time.monotonic() - t0

        assert tor.poll() is None and alive(tor.pid), "intake stopped a tor it did not start"
        assert control.request("GETINFO onions/detached")[0] == "onions/detached="  # intake detaches nothing
        for key in keys:  # intake's services are gone
            assert _add_onion_reply(control, key) == "added"
    finally:
        if control is not None:
            control.close()
        tor.terminate()
        try:
            tor.wait(10)
        except subprocess.TimeoutExpired:
            tor.kill()
            tor.wait()
    print(f"\nprivate network up in {tor_network.bring_up_seconds:.1f} s; system tor bootstrapped "
          f"{t_tor:.1f} s, source onion answered {t_reachable:.1f} s, intake stopped {t_stopped:.1f} s")
