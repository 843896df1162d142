"""`intake serve` with Tor, as a real subprocess: tor offline (DisableNetwork 1) or a
launched tor whose only directory authority is a closed loopback port. Nothing here
can contact any network. The private-network end to end is tests/test_tornet_end_to_end.py."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from intake.cli import cli
from intake.config import Settings
from intake.enrolment import reset_login
from intake.store import Store
from intake.onion_keys import ensure_onion_keys
from intake.serving import TipLine, TorPlan
from tests.fixtures_newsroom import FAST_LOGIN_HASH
from tests.fixtures_serve import ServeProcess, alive, command_line, descendants, free_port


@pytest.fixture
def serve(settings: Settings) -> Iterator:
    """Start `intake serve --data <settings' data dir> ARGS...` on free ports; stopped at the end."""
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(["serve", "--data", str(settings.data_dir), "--port", str(free_port()),
                                "--journalist-port", str(free_port()), *args])
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _give_alice_a_login(settings: Settings) -> None:
    with Store.open(settings) as store:
        reset_login(store, settings.data_dir, "alice", **FAST_LOGIN_HASH)


# --- without tor ----------------------------------------------------------------------------

def test_init_makes_the_onion_keys_and_prints_both_addresses(tmp_path: Path, journalists):
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(cli, ["init", "--yes", "--data", str(data_dir), "--journalist-key", str(journalists[0][1]),
                                      "--db-key-in-data-dir"])
    assert result.exit_code == 0, result.output
    source, journalist = ensure_onion_keys(data_dir)
    assert f"Source onion address: {source}" in result.output
    assert f"Journalist onion address: {journalist}" in result.output
    assert sorted(p.name for p in (data_dir / "onion").iterdir()) == ["journalist.key", "source.key"]


def test_extra_torrc_lines_are_refused_for_the_system_tor(settings: Settings, tmp_path: Path):
    extra = tmp_path / "extra.torrc"
    extra.write_text("TestingTorNetwork 1\n")
    result = CliRunner().invoke(cli, ["serve", "--data", str(settings.data_dir), "--tor", "system",
                                      "--tor-config", str(extra)])
    assert result.exit_code == 1
    assert "extra torrc lines only apply to a tor that intake launches" in result.output


def test_unknown_tor_mode_from_the_environment_is_refused(settings: Settings):
    result = CliRunner().invoke(cli, ["serve", "--data", str(settings.data_dir)], env={"INTAKE_TOR": "public"})
    assert result.exit_code == 2
    assert "INTAKE_TOR" in result.output or "--tor" in result.output


# --- tor offline -------------------------------------------------------------------------------

@pytest.mark.slow
def test_offline_serve_prints_both_addresses_at_once_and_the_same_after_a_restart(serve, settings: Settings):
    expected = dict(zip(("source", "journalist"), ensure_onion_keys(settings.data_dir)))
    first = serve("--tor", "offline")
    first.read_until("Ctrl-C stops intake", timeout=60)
    assert first.onions() == expected
    assert "nothing is contacted" in first.output
    assert "Tor is offline" in first.output and "bootstrapped" not in first.output
    assert first.stop() == 0

    second = serve("--tor", "offline")
    second.read_until("Ctrl-C stops intake", timeout=60)
    assert second.onions() == expected
    assert second.stop() == 0


@pytest.mark.slow
def test_offline_mode_can_come_from_the_environment(settings: Settings):
    process = ServeProcess(["serve", "--data", str(settings.data_dir), "--port", str(free_port()),
                            "--journalist-port", str(free_port())], env={"INTAKE_TOR": "offline"})
    try:
        output = process.read_until("Ctrl-C stops intake")
        assert "Starting tor offline" in output
        assert len(process.onions()) == 2
    finally:
        assert process.stop() == 0


@pytest.mark.slow
def test_sigterm_leaves_no_tor_or_gunicorn_process_behind(serve, settings: Settings):
    _give_alice_a_login(settings)
    process = serve("--tor", "offline")
    process.read_until("Ctrl-C stops intake")
    family = descendants(process.process.pid)
    commands = {pid: command_line(pid) for pid in family}
    tors = [pid for pid, command in commands.items() if Path(command.split(" ", 1)[0]).name == "tor"]
    gunicorns = [pid for pid, command in commands.items() if "gunicorn" in command]
    assert len(tors) == 1, commands
    assert len(gunicorns) >= 4, commands  # two masters, each with at least one worker
    assert all(alive(pid) for pid in family)

    assert process.stop(signal.SIGTERM) == 0
    left = [f"{pid}: {commands[pid]}" for pid in family if alive(pid)]
    assert left == []
    assert not _tor_socket_answers(settings.data_dir)


def _tor_socket_answers(data_dir: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(data_dir / "tor" / "control"))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_ctrl_c_stops_everything_too(serve, settings: Settings):
    process = serve("--tor", "offline")
    process.read_until("Ctrl-C stops intake")
    family = descendants(process.process.pid)
    assert process.stop(signal.SIGINT) == 0
    assert [pid for pid in family if alive(pid)] == []


@pytest.mark.slow
def test_journalist_onion_waits_for_a_client_key_and_sighup_publishes_it(serve, settings: Settings):
    process = serve("--tor", "offline")
    output = process.read_until("Ctrl-C stops intake")
    assert "NOT published: no journalist has a client-authorisation key yet" in output
    assert f"`intake journalist add --data {settings.data_dir} --name NAME --public-key FILE`" in output

    _give_alice_a_login(settings)  # what `intake journalist reset-login` does
    process.process.send_signal(signal.SIGHUP)
    line = process.read_until("1 key authorised")
    assert f"Journalist onion:  http://{ensure_onion_keys(settings.data_dir)[1]}/" in line.splitlines()[-1]
    assert process.stop() == 0


def test_the_hint_for_a_journalist_key_names_the_instance_as_it_was_started(settings: Settings, tmp_path: Path, monkeypatch):
    """The command the operator is told to run opens this instance: with its --db-key-file when
    intake got one, and through intake-admin when systemd gave the key (deploy/intake.service)."""

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("INTAKE_DB_KEY_FILE", raising=False)
    data = settings.data_dir.resolve()
    assert TipLine(data, tor=TorPlan("none"))._instance_options() == f"--data {data}"
    outside = tmp_path / "my keys" / "db.key"
    outside.parent.mkdir()
    shutil.copy(data / "db.key", outside)
    tip_line = TipLine(data, db_key_file=outside, tor=TorPlan("none"))
    assert tip_line._instance_options() == f"--data {data} --db-key-file '{outside}'"
    assert not tip_line._under_systemd()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(data / "db.key", credentials / "intake-db-key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert TipLine(data, tor=TorPlan("none"))._under_systemd()


@pytest.mark.slow
def test_journalist_onion_is_published_with_the_stored_client_keys(serve, settings: Settings):
    _give_alice_a_login(settings)
    process = serve("--tor", "offline")
    output = process.read_until("Ctrl-C stops intake")
    assert "client authorisation: reachable only with a journalist's key; 1 key authorised" in output
    assert "NOT published" not in output


# --- a launched tor with no route to any Tor network --------------------------------------------

@pytest.mark.slow
def test_without_a_route_to_tor_it_says_so_and_keeps_serving_on_loopback(serve, settings: Settings, tmp_path: Path):
    # A private network whose only authority is a closed loopback port: tor can reach nothing
    # (and, having its own DirAuthority, would never try the public Tor network).
    dead = [free_port(), free_port()]
    extra = tmp_path / "dead-network.torrc"
    extra.write_text("\n".join([
        "TestingTorNetwork 1",
        f"DirAuthority dead orport={dead[0]} no-v2 v3ident={'A' * 40} 127.0.0.1:{dead[1]} {'B' * 40}",
        "GeoIPFile /nonexistent",
        "GeoIPv6File /nonexistent",
    ]) + "\n")
    process = serve("--tor", "launch", "--tor-config", str(extra), "--tor-bootstrap-timeout", "3")
    output = process.read_until("Ctrl-C stops intake", timeout=60)
    assert len(process.onions()) == 2
    output = process.read_until("Tor could not bootstrap", timeout=60)
    assert "intake keeps serving" in output
    url = re.search(r"the source interface at (http://127\.0\.0\.1:\d+/)", output).group(1)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    assert process.stop() == 0


@pytest.mark.slow
def test_demo_honours_intake_tor_offline(tmp_path: Path):
    """The README's `INTAKE_TOR=offline scripts/run`: addresses shown, nothing contacted."""
    process = ServeProcess(["demo", "--dir", str(tmp_path / "demo"), "--port", str(free_port()),
                            "--journalist-port", str(free_port())], cwd=tmp_path,
                           env={"INTAKE_TOR": "offline"})
    try:
        output = process.read_until("Ctrl-C stops the server")
        assert "Starting tor offline" in output
        assert process.onions() == dict(zip(("source", "journalist"), ensure_onion_keys(tmp_path / "demo" / "data")))
        assert "Submit a tip:" in output
    finally:
        assert process.stop() == 0
