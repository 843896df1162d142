"""Canary in memory: once a submission's request has ended, its plaintext is gone from the
memory of every gunicorn process (master and workers), read through /proc/PID/mem.

The file and the message carry a random marker that exists nowhere else; the scan looks
for it in every readable mapping of each process. The test process itself made the
upload, so it is not scanned."""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intake.memory_wiping import WIPING_ENVIRONMENT
from tests.fixtures_serve import ServeProcess, command_line, descendants, free_port
from tests.fixtures_server import (
    GUNICORN_CONF,
    REPO,
    IntakeServer,
    SourceClient,
    Upload,
    encode_multipart,
    init_instance,
    run_gunicorn,
    run_intake_server,
)

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


# In the environment of every server these tests start: a scan that does not find it did not read
# the process's memory, and would find no canary either.
PROBE = "MEMORY-PROBE-" + secrets.token_hex(12)
PROBE_ENVIRONMENT = {"INTAKE_TEST_MEMORY_PROBE": PROBE}


def count_in_memory(pid: int, needle: bytes) -> int:
    """How often ``needle`` is in the process's writable memory. The scan proves it read that
    memory: it finds PROBE, and reads nearly every byte still mapped once it is done."""
    found = probes = read = 0
    unread: list[tuple[int, int]] = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for start, end, _name in readable_regions(pid):
            try:
                memory.seek(start)
                data = memory.read(end - start)
            except (OSError, ValueError, OverflowError):
                unread.append((start, end))
                continue
            read += len(data)
            found += data.count(needle)
            probes += data.count(PROBE.encode())
    still_mapped = {(start, end) for start, end, _name in readable_regions(pid)}
    missed = sum(end - start for start, end in unread if (start, end) in still_mapped)  # unmapped meanwhile: not missed
    assert probes >= 1, f"process {pid}: the scan did not find the probe in its memory"
    assert missed <= 0.1 * (read + missed), f"process {pid}: {missed} bytes still mapped could not be read ({read} were)"
    return found


def gunicorn_pids(server: IntakeServer) -> list[int]:
    return [server.gunicorn.process.pid, *server.gunicorn.worker_pids()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[IntakeServer]:
    with run_intake_server(tmp_path, env=PROBE_ENVIRONMENT) as running:
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
                                         {"PYTHONMALLOC": "malloc", "MALLOC_PERTURB_": "0"},
                                         {"PYTHONMALLOC": "malloc", "MALLOC_PERTURB_": "165"},
                                         {"PYTHONMALLOC": "malloc", "MALLOC_PERTURB_": "165", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}])
def test_gunicorn_refuses_to_serve_without_wiping_freed_memory(tmp_path: Path, environment: dict[str, str]):
    env = {name: value for name, value in os.environ.items() if name not in WIPING_ENVIRONMENT}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--check-config", "wsgi:app"],
                            env={**env, **environment, "INTAKE_BIND": "127.0.0.1:1"}, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "refusing to serve without wiping freed memory" in result.stdout + result.stderr


# --- refusals and logins: the error paths leave nothing either -------------------------------

SMALL_LIMIT_MIB = 2
JOURNALIST_APP = "intake.app.journalist:create_journalist_app()"


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory) -> Iterator[IntakeServer]:
    """One server for the refusals below, with a 2 MiB upload limit so one can be exceeded."""
    with run_intake_server(tmp_path_factory.mktemp("canary-refusals"), env={"INTAKE_MAX_UPLOAD_MIB": str(SMALL_LIMIT_MIB), **PROBE_ENVIRONMENT}) as running:
        yield running


def _scan(server_pids: list[int], markers: dict[str, bytes]) -> dict[str, dict[int, int]]:
    """Wait for the request's end to settle, then count each marker in each process."""
    time.sleep(SETTLE_SECONDS)
    return {what: {pid: count_in_memory(pid, marker) for pid in server_pids} for what, marker in markers.items()}


def _report(case: str, found: dict[str, dict[int, int]]) -> str:
    total = sum(sum(per_pid.values()) for per_pid in found.values())
    pids = {pid for per_pid in found.values() for pid in per_pid}
    scanned = sum(end - start for pid in pids for start, end, _name in readable_regions(pid)) / 2**20
    return (f"\n[canary in memory] {case}: {total} markers found in {scanned:.0f} MiB of {len(pids)} gunicorn processes "
            f"{SETTLE_SECONDS:.0f} s after the request ({found})")


def _raw_upload(server: IntakeServer, client: SourceClient, page, *, token: str | None, message: str, file_bytes: bytes,
                how: str) -> bytes:
    """Send the submit form over a raw socket: whole ("whole"), chunked without a length ("chunked"),
    or cut off half way and the connection closed ("dropped"). Returns what the server answered."""
    form = page.form_with("message", "files")
    values = {"message": message, **({"csrf_token": token} if token is not None else {})}
    content_type, pieces = encode_multipart(form, values, {"files": [Upload("evidence.txt", file_bytes, "text/plain")]})
    body = b"".join(pieces)
    head = [f"POST /submit HTTP/1.1", "Host: x.onion", f"Content-Type: {content_type}",
            f"Cookie: {client._cookie_header()['Cookie']}", "Connection: close"]
    if how == "chunked":
        head.append("Transfer-Encoding: chunked")
        step = 64 * 1024
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step]) for i in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body if how == "whole" else body[: len(body) // 2]
    answer = b""
    with socket.create_connection(("127.0.0.1", server.gunicorn.port), timeout=30) as sock:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            if how == "dropped":
                time.sleep(0.5)  # the worker has read what was sent; then the source's connection dies
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return b""
            sock.shutdown(socket.SHUT_WR)
            while data := sock.recv(65536):
                answer += data
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed before reading everything: as it should
    return answer


REFUSALS = {
    # case: (how the body is sent, file size, whether the form token is right, the status expected,
    #        parts kept: the message arrives whole before the file, and a whole part is kept)
    "too-large": ("chunked", (SMALL_LIMIT_MIB + 1) << 20, True, b" 413 ", 1),
    "connection-dropped": ("dropped", 1536 << 10, True, None, 1),
    "bad-form-token": ("whole", 512 << 10, False, b" 400 ", 0),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_upload_leaves_no_plaintext_in_the_servers_memory(small_limit_server: IntakeServer, case: str):
    how, size, good_token, status, kept = REFUSALS[case]
    file_marker = b"CANARY-FILE-" + secrets.token_hex(12).encode()
    message_marker = "CANARY-MSG-" + secrets.token_hex(12)
    client = SourceClient(small_limit_server.url)
    _codename, page = client.start_as_new_source()
    with small_limit_server.open_store() as store:
        before = store.counts()["submissions"]
    answer = _raw_upload(small_limit_server, client, page, token=None if good_token else "forged-" + secrets.token_hex(20),
                         message=f"the message {message_marker} ends here", file_bytes=_canary_file(file_marker)[:size], how=how)
    if status is not None:
        assert status in answer.split(b"\r\n", 1)[0], answer[:200]
    with small_limit_server.open_store() as store:
        assert store.counts()["submissions"] - before == kept  # the file refused; the message before it kept, or not if forged
    found = _scan(gunicorn_pids(small_limit_server), {"file": file_marker, "message": message_marker.encode()})
    print(_report(case, found))
    assert all(count == 0 for per_pid in found.values() for count in per_pid.values()), found


def _typed_differently(codename: str) -> str:
    """The codename as a source might type it: upper case, doubled spaces (the server makes it canonical)."""
    return "  ".join(codename.upper().split())


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["known", "unknown"])
def test_a_login_leaves_no_codename_in_the_servers_memory(small_limit_server: IntakeServer, outcome: str):
    from intake.codename import generate_codename

    if outcome == "known":
        codename, _page = SourceClient(small_limit_server.url).start_as_new_source()
    else:
        codename = generate_codename()  # valid words, no source: the refusal path derives all the same
    time.sleep(SETTLE_SECONDS)
    client = SourceClient(small_limit_server.url)
    page = client.log_in(_typed_differently(codename))
    assert page.status == (200 if outcome == "known" else 401)
    typed = _typed_differently(codename)
    markers = {"canonical": codename.encode(), "typed": typed.encode(), "form-encoded": typed.replace(" ", "+").encode()}
    found = _scan(gunicorn_pids(small_limit_server), markers)
    print(_report(f"source login, {outcome} codename", found))
    assert all(count == 0 for per_pid in found.values() for count in per_pid.values()), found


@pytest.fixture(scope="module")
def journalist_server(tmp_path_factory):
    from tests.fixtures_newsroom import make_newsroom

    base = tmp_path_factory.mktemp("canary-journalist")
    newsroom = make_newsroom(base)
    with run_gunicorn(JOURNALIST_APP, base, {"INTAKE_DATA": str(newsroom.settings.data_dir), **PROBE_ENVIRONMENT}) as server:
        yield server, newsroom


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["signed-in", "wrong-passphrase"])
def test_a_journalist_sign_in_leaves_no_passphrase_in_the_servers_memory(journalist_server, outcome: str):
    server, newsroom = journalist_server
    passphrase = newsroom.alice.enrolment.passphrase if outcome == "signed-in" else "CANARY-PASS-" + secrets.token_hex(12)
    client = SourceClient(server.url)
    login = client.get("/login")
    page = client.submit(login, login.form_with("name", "passphrase", "code"),
                         {"name": "alice", "passphrase": passphrase, "code": newsroom.alice.code()})
    assert ("Signed in as alice" in page.text) == (outcome == "signed-in")
    markers = {"passphrase": passphrase.encode(), "form-encoded": passphrase.replace(" ", "+").encode()}
    found = _scan([server.process.pid, *server.worker_pids()], markers)
    print(_report(f"journalist sign-in, {outcome}", found))
    assert all(count == 0 for per_pid in found.values() for count in per_pid.values()), found


def test_a_worker_collects_cycles_soon_after_requests_and_at_most_once_a_second(monkeypatch):
    """Requests ending in a flood make one collection at once and at most one more a second."""
    import gevent

    import intake.gunicorn_worker as worker_module

    collections: list[float] = []
    monkeypatch.setattr(worker_module, "collect_request_garbage", lambda: collections.append(time.monotonic()))
    worker = worker_module.IntakeGeventWorker.__new__(worker_module.IntakeGeventWorker)
    worker._collection_due, worker._last_collection = False, 0.0
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        worker._collect_soon()  # a request with a body ended
        gevent.sleep(0.01)
    gevent.sleep(worker_module.COLLECT_INTERVAL + 0.2)
    assert collections[0] - started < 0.5  # the first at once (on the loop's next turn)
    assert 2 <= len(collections) <= 4
    assert all(later - earlier >= worker_module.COLLECT_INTERVAL - 0.01 for earlier, later in zip(collections, collections[1:]))
    assert collections[-1] >= started + 2.0  # the last requests' cycles were collected too
