"""Canary in memory: once a submission's request has ended, its plaintext is gone from the
memory of every gunicorn process (master and workers), read through /proc/PID/mem.

The file and the message carry a random marker that exists nowhere else; the scan looks
for it in every readable mapping of each process. The test process itself made the
upload, so it is not scanned."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intake.memory_wiping import WIPING_ENVIRONMENT
from tests.fixtures_serve import ServeProcess, command_line, descendants, free_port
from tests.fixtures_server import GUNICORN_CONF, REPO, IntakeServer, SourceClient, Upload, init_instance, run_intake_server

FILE_BYTES = 5 * 1024 * 1024
SETTLE_SECONDS = 3.0  # the request has ended; give the worker's loop a moment to drop what it held
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (r...) [0-9a-f]+ \S+ \d+\s*(.*)$")


def readable_regions(pid: int) -> Iterator[tuple[int, int, str]]:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        match = _MAPPING.match(line)
        if not match:
            continue
        start, end, perms, name = int(match[1], 16), int(match[2], 16), match[3], match[4]
        # Code and read-only data of libraries cannot hold request data; [vvar] cannot be read.
        if "w" not in perms or name in ("[vvar]", "[vsyscall]"):
            continue
        yield start, end, name


def count_in_memory(pid: int, needle: bytes) -> int:
    found = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for start, end, _name in readable_regions(pid):
            try:
                memory.seek(start)
                data = memory.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            found += data.count(needle)
    return found


def gunicorn_pids(server: IntakeServer) -> list[int]:
    return [server.gunicorn.process.pid, *server.gunicorn.worker_pids()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[IntakeServer]:
    with run_intake_server(tmp_path) as running:
        yield running


def _canary_file(marker: bytes) -> bytes:
    # The marker at the start of every 4 KiB block: any surviving piece of the file shows.
    block = marker + b"." * (4096 - len(marker))
    return block * (FILE_BYTES // len(block))


@pytest.mark.slow
def test_no_plaintext_stays_in_the_servers_memory_after_the_request(server: IntakeServer):
    file_marker = b"CANARY-FILE-" + secrets.token_hex(12).encode()
    message_marker = "CANARY-MSG-" + secrets.token_hex(12)
    client = SourceClient(server.url)
    _codename, page = client.start_as_new_source()
    thanks = client.send(page, f"the message {message_marker} ends here",
                         [Upload("evidence.txt", _canary_file(file_marker), "text/plain")])
    assert thanks.status == 200
    with server.open_store() as store:
        assert store.counts()["submissions"] == 2  # both arrived (encrypted): the scan below is meaningful
    time.sleep(SETTLE_SECONDS)
    found = {pid: (count_in_memory(pid, file_marker), count_in_memory(pid, message_marker.encode()))
             for pid in gunicorn_pids(server)}
    scanned = sum(end - start for pid in found for start, end, _name in readable_regions(pid))
    print(f"\n[canary in memory] {len(found)} gunicorn processes, {scanned / 2**20:.0f} MiB of writable memory scanned "
          f"{SETTLE_SECONDS:.0f} s after a {FILE_BYTES >> 20} MiB upload: {sum(map(sum, found.values()))} markers found")
    assert all(counts == (0, 0) for counts in found.values()), f"(file, message) markers per process: {found}"


def _environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").partition("=")[::2] for pair in pairs if pair)


@pytest.mark.slow
def test_intake_serve_runs_every_gunicorn_with_freed_memory_wiped(serve_offline_family):
    gunicorns = [pid for pid, command in serve_offline_family.items() if "gunicorn" in command]
    assert len(gunicorns) >= 4
    for pid in gunicorns:
        environment = _environment_of(pid)
        assert {name: environment.get(name) for name in WIPING_ENVIRONMENT} == WIPING_ENVIRONMENT


@pytest.fixture
def serve_offline_family(tmp_path: Path) -> Iterator[dict[int, str]]:
    data_dir, _settings, _journalists = init_instance(tmp_path, 1)
    process = ServeProcess(["serve", "--data", str(data_dir), "--tor", "none", "--port", str(free_port()),
                            "--journalist-port", str(free_port())])
    try:
        process.read_until("Ctrl-C stops intake")
        yield {pid: command_line(pid) for pid in descendants(process.process.pid)}
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize("environment", [{}, {"PYTHONMALLOC": "malloc"}, {"MALLOC_PERTURB_": "165"},
                                         {"PYTHONMALLOC": "malloc", "MALLOC_PERTURB_": "0"}])
def test_gunicorn_refuses_to_serve_without_wiping_freed_memory(tmp_path: Path, environment: dict[str, str]):
    env = {name: value for name, value in os.environ.items() if name not in WIPING_ENVIRONMENT}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--check-config", "wsgi:app"],
                            env={**env, **environment, "INTAKE_BIND": "127.0.0.1:1"}, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "refusing to serve without wiping freed memory" in result.stdout + result.stderr
