"""The sockets intake serves on (intake.listeners): real sockets, real files."""

from __future__ import annotations

import grp
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from intake.config import Settings
from intake.listeners import ListenerError, open_tcp_listener, open_unix_listener, prepare_socket_dir
from tests.fixtures_serve import INTAKE, REPO, ServeProcess, free_port


def test_a_port_left_in_time_wait_is_reused_but_a_listening_port_is_refused():
    first = open_tcp_listener(0)
    port = first.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = first.accept()
    accepted.close()  # the server closes first: its end lingers in TIME_WAIT on `port`
    client.close()
    with pytest.raises(ListenerError, match=f"port {port} on 127.0.0.1 is already in use"):
        open_tcp_listener(port)  # still listening
    first.close()
    open_tcp_listener(port).close()  # TIME_WAIT alone does not block it


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(tmp_path: Path):
    directory = prepare_socket_dir(tmp_path / "sockets", None)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    path = directory / "source.sock"
    crashed = socket.socket(socket.AF_UNIX)
    crashed.bind(str(path))
    crashed.close()  # the file stays, nothing answers: what a killed gunicorn leaves
    live = open_unix_listener(path, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    with pytest.raises(ListenerError, match="is in use: is another intake serving this data dir"):
        open_unix_listener(path, None)
    live.close()
    (directory / "note").write_text("not a socket")
    with pytest.raises(ListenerError, match="is not a socket"):
        open_unix_listener(directory / "note", None)
    with pytest.raises(ListenerError, match="longer than 107 bytes"):
        open_unix_listener(directory / ("x" * 120), None)


def test_a_shared_or_foreign_directory_is_never_taken_for_the_sockets(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with pytest.raises(ListenerError, match="must be a directory of intake's own user that others cannot enter"):
        prepare_socket_dir(shared, None)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # left as it was
    (tmp_path / "file").write_text("")
    with pytest.raises(ListenerError, match="must be a directory"):
        prepare_socket_dir(tmp_path / "file", None)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    assert stat.S_IMODE(prepare_socket_dir(mine, None).stat().st_mode) == 0o700


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="joining tor's group needs root")
def test_the_sockets_belong_to_tors_group_when_intake_is_in_it(settings: Settings):
    try:
        tor_gid = grp.getgrnam("debian-tor").gr_gid
    except KeyError:
        pytest.skip("no debian-tor group (Debian's tor package)")
    serve = subprocess.Popen(INTAKE + ["serve", "--data", str(settings.data_dir), "--no-tor"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, extra_groups=[tor_gid])
    try:
        for line in serve.stdout:
            if "Ctrl-C stops intake" in line:
                break
        sockets = settings.data_dir / "sockets"
        assert (stat.S_IMODE(sockets.stat().st_mode), sockets.stat().st_gid) == (0o710, tor_gid)
        for name in ("source.sock", "journalist.sock"):
            info = (sockets / name).stat()
            assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, tor_gid)
    finally:
        serve.terminate()
        assert serve.wait(60) == 0


@pytest.mark.parametrize("character", [" ", ",", '"', "'", "\\", "\t"])
def test_every_character_tor_cannot_name_in_a_socket_path_is_refused(tmp_path: Path, character: str):
    """docs/operator.md: paths with spaces, commas, quotes or backslashes are refused (tor splits
    HiddenServicePort and ADD_ONION's Port= on them and takes no quotes there)."""
    from intake.tor import TorError, unix_socket_target

    with pytest.raises(TorError, match="must not contain spaces, commas, quotes or backslashes"):
        unix_socket_target(tmp_path / f"a{character}b" / "source.sock")
    assert unix_socket_target(tmp_path / "ab" / "source.sock") == f"unix:{tmp_path / 'ab' / 'source.sock'}"


@pytest.mark.slow
def test_a_socket_path_tor_cannot_name_is_refused_in_one_line(settings: Settings, tmp_path: Path):
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--tor", "offline",
                          "--socket-dir", str(tmp_path / "with space"), "--port", str(free_port())])
    assert serve.process.wait(60) == 1
    output = serve.all_output()
    assert "tor cannot forward to" in output and "must not contain spaces" in output
    assert "Traceback" not in output
