"""Where the database key lives. Outside `intake demo`, `intake init` does not put it beside the
database unless asked (--db-key-in-data-dir), and `intake status` and `intake serve` warn loudly
while it is there. And what `intake init` tells the operator to do next works as printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port

BIN = Path(sys.executable).parent
WARNING = "WARNING: the database key is inside the data dir"


@pytest.fixture
def env(monkeypatch) -> dict[str, str]:
    """The environment of an operator's shell: the venv's commands on PATH, no key anywhere else."""
    for name in ("INTAKE_DB_KEY_FILE", "CREDENTIALS_DIRECTORY", "INTAKE_DATA"):
        monkeypatch.delenv(name, raising=False)
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def intake(*args, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["intake", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_init_refuses_to_write_the_key_beside_the_database(tmp_path: Path, journalists, env):
    for extra in ([], ["--db-key-file", tmp_path / "data" / "elsewhere.key"]):
        done = intake("init", "--yes", "--data", tmp_path / "data", "--journalist-key", journalists[0][1], *extra, cwd=tmp_path, env=env)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith("Error: refusing to keep the database key in the data dir")
        assert "--db-key-in-data-dir" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "data").exists()


def test_asked_for_explicitly_the_key_goes_there_and_init_and_status_warn(tmp_path: Path, journalists, env):
    data = tmp_path / "data"
    done = intake("init", "--yes", "--data", data, "--journalist-key", journalists[0][1], "--db-key-in-data-dir", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (data / "db.key").stat().st_mode & 0o777 == 0o600
    assert done.stderr.startswith(f"{WARNING} ({data / 'db.key'}): anyone with a copy of this disk can open the store")
    status = intake("status", "--data", data, cwd=tmp_path, env=env)
    assert status.returncode == 0 and "journalists: 1" in status.stdout
    assert status.stderr.startswith(WARNING) and WARNING not in status.stdout


def test_a_key_outside_the_data_dir_brings_no_warning(tmp_path: Path, journalists, env):
    data, key = tmp_path / "data", tmp_path / "keys" / "db.key"
    key.parent.mkdir(mode=0o700)
    done = intake("init", "--yes", "--data", data, "--journalist-key", journalists[0][1], "--db-key-file", key, cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert key.is_file() and not (data / "db.key").exists()
    status = intake("status", "--data", data, "--db-key-file", key, cwd=tmp_path, env=env)
    assert status.returncode == 0 and status.stderr == ""


@pytest.mark.slow
def test_serve_warns_when_the_key_is_beside_the_database(tmp_path: Path, journalists, env):
    data = tmp_path / "data"
    assert intake("init", "--yes", "--data", data, "--journalist-key", journalists[0][1], "--db-key-in-data-dir",
                  cwd=tmp_path, env=env).returncode == 0
    serve = subprocess.Popen(["intake", "serve", "--data", str(data), "--no-tor", "--port", str(free_port()),
                              "--journalist-port", str(free_port())],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first_line = serve.stderr.readline()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(40)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    assert first_line.startswith(f"{WARNING} ({data / 'db.key'})")


def test_the_login_commands_init_prints_work_as_printed(tmp_path: Path, journalists, env):
    """init registers journalists without logins; it prints, per journalist, a command that gives one
    (not `journalist add`, which refuses a journalist already registered)."""
    key = tmp_path / "db.key"
    keys = [a for _, public in journalists[:2] for a in ("--journalist-key", public)]
    done = intake("init", "--yes", "--data", "data", "--db-key-file", key, *keys, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "journalist add" not in done.stdout
    commands = [line.strip() for line in done.stdout.splitlines() if "reset-login" in line]
    assert commands == [f"intake journalist reset-login --data data --db-key-file db.key --name {name}" for name in ("alice", "bob")]
    for command in commands:
        given = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert given.returncode == 0, given.stderr
        assert "Login passphrase:" in given.stdout and "descriptor:x25519:" in given.stdout
    again = intake("init", "--yes", "--data", "data", "--db-key-file", key, cwd=tmp_path, env=env)
    assert again.returncode == 0 and "reset-login" not in again.stdout  # everyone has a login now
