"""The README's run command on a fresh clone, as a new user types it.

A clone of this repository's committed HEAD (uncommitted changes are not in it:
this tests what would be pushed) runs `INTAKE_TOR=offline scripts/run`, which
installs the venv a user gets (no test extras, only what the lock pins) and
serves the demo. Against it, a source sends a message and a file through the
real pages, and the commands the demo prints export the submission and decrypt
it with the demo journalist's key, to the exact bytes.

The venv is built by scripts/run itself; only pip's download cache is shared
with the machine, so a run takes a few minutes at most.
"""

from __future__ import annotations

import http.client
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures_serve import free_port
from tests.lockfiles import installed_releases, read_lock
from tests.fixtures_server import SourceClient, Upload
from tests.test_end_to_end_newsroom import decrypted_items

REPO = Path(__file__).resolve().parents[1]
INSTALL_AND_START_SECONDS = 900
MESSAGE = "Проверка связи: the README's run command, on a fresh clone."
FILE_NAME = "ledger 2024.pdf"
FILE_CONTENT = b"%PDF-1.7\n" + bytes(range(256)) * 1000 + b"\n%%EOF\n"
READY_LINE = "Ctrl-C stops the server"


def fresh_clone(dest: Path) -> Path:
    """A clone of the repository at its current HEAD commit."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", head], check=True)
    return dest


def user_environment() -> dict[str, str]:
    """A terminal's environment: nothing of the test venv (its bin dir, VIRTUAL_ENV, PYTHONPATH)."""
    test_venv_bin = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not key.startswith(("INTAKE_", "PYTEST_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != test_venv_bin)
    return env


class Terminal:
    """A command started in its own session, as from a shell; its output is read line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.process = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read_until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} within {timeout:.0f} s; output so far:\n{self.output[-6000:]}") from None
            if line is None:
                raise AssertionError(f"scripts/run ended (status {self.process.wait()}) before {marker!r}:\n{self.output[-6000:]}")
            self.lines.append(line)
            if marker in line:
                return self.output

    def press_ctrl_c(self, timeout: float = 60.0) -> int:
        # A terminal sends SIGINT to the whole foreground process group.
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def processes_in_session(session_id: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session.
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def printed_command(output: str, verb: str) -> list[str]:
    """The command line the demo printed for `intake ... export` / `intake-keys ... decrypt`."""
    for line in output.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:  # prose with an apostrophe, not a command
            continue
        if len(words) > 1 and words[1] == verb and words[0].endswith(("/intake", "/intake-keys")):
            return words
    raise AssertionError(f"the demo printed no {verb} command:\n{output}")


def status_of(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.slow
def test_readme_run_command_on_a_fresh_clone_takes_a_tip_that_decrypts_exactly(tmp_path_factory: pytest.TempPathFactory):
    # A short folder: the demo's sockets (intake/demo/data/sockets/journalist.sock) must fit in the
    # 107 bytes of a socket path also under pytest-xdist's longer tmp paths (popen-gw0/).
    clone = fresh_clone(tmp_path_factory.mktemp("clone") / "intake")
    env = {**user_environment(), "INTAKE_TOR": "offline"}
    port, journalist_port = free_port(), free_port()
    run = Terminal(["scripts/run", "--port", str(port), "--journalist-port", str(journalist_port)], clone, env)
    try:
        output = run.read_until(READY_LINE, INSTALL_AND_START_SECONDS)
        assert f"http://127.0.0.1:{port}" in output
        assert status_of(journalist_port, "/login") == 200
        # The venv holds what the locks pin (no test extras), intake itself, and the pip it came with.
        pins = {**read_lock("build", clone / "requirements"), **read_lock("runtime", clone / "requirements")}
        installed = installed_releases(clone / ".venv" / "bin" / "python")
        assert installed.pop("pip") and installed.pop("intake")
        assert installed == {name: pin.version for name, pin in pins.items()}

        source = SourceClient(f"http://127.0.0.1:{port}")
        _codename, page = source.start_as_new_source()
        thanks = source.send(page, MESSAGE, [Upload(FILE_NAME, FILE_CONTENT, "application/pdf")])
        assert thanks.status == 200 and "/thanks" in thanks.url, thanks.text[:500]

        # The commands exactly as the demo printed them, run from the clone like a user pasting them.
        export, decrypt = printed_command(output, "export"), printed_command(output, "decrypt")
        for command in (export, decrypt):
            assert (clone / command[0]).resolve().parent == (clone / ".venv" / "bin").resolve(), command
            result = subprocess.run(command, cwd=clone, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stdout}{result.stderr}"
        _source_dir, items = decrypted_items(clone / decrypt[decrypt.index("--out") + 1])
        assert items == {"message": MESSAGE.encode("utf-8"), FILE_NAME: FILE_CONTENT}

        assert run.press_ctrl_c() == 0, run.output[-6000:]
        assert processes_in_session(run.process.pid) == []
        for stopped in (port, journalist_port):
            with pytest.raises(ConnectionRefusedError):
                status_of(stopped, "/")
    finally:
        if run.process.poll() is None or processes_in_session(run.process.pid):
            run.kill()
