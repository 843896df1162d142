"""100 slow uploads in flight (as over Tor) against real gunicorn, and kill -9 of one worker in
the middle: every upload the server acknowledged is there whole, none is there in part, and the
next start's recovery leaves no chunk of the interrupted ones behind."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from keys.envelope_reader import decrypt_bytes
from intake.store.newsroom import Newsroom
from tests.fixtures_server import run_intake_server
from tests.test_faults import store_space
from tests.test_memory_in_flight import slow_uploads_for

# Time or memory bounds: one worker runs all such tests in turn, never two at once (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

UPLOADS = 100
SOURCES = 5
FILE_BYTES = 1536 * 1024  # sent at 160 KiB/s: ~10 s, chunks stored while they arrive (the slow flush)
PIECE = 32 * 1024
EVERY = 0.2


def _drive(port: int, uploads, killed: threading.Event) -> None:
    """Send every body a piece at a time; a connection the kill broke is left alone."""
    for upload in uploads:
        upload.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        upload.sock.sendall(upload.head)
    broken = set()
    longest = max(len(upload.body) for upload in uploads)
    for offset in range(0, longest, PIECE):
        started = time.monotonic()
        for n, upload in enumerate(uploads):
            chunk = upload.body[offset : offset + PIECE]
            if chunk and n not in broken:
                try:
                    upload.sock.sendall(chunk)
                    upload.sent += len(chunk)
                except OSError:
                    assert killed.is_set(), "a connection broke before the kill"
                    broken.add(n)
        time.sleep(max(0.0, EVERY - (time.monotonic() - started)))
    for n, upload in enumerate(uploads):
        try:
            upload.answer = b"" if n in broken else upload.sock.recv(200)
        except OSError:
            upload.answer = b""
        upload.sock.close()


def test_kill_9_of_a_worker_with_100_slow_uploads_in_flight_loses_no_acknowledged_one(tmp_path: Path) -> None:
    with run_intake_server(tmp_path) as server:
        uploads = slow_uploads_for(server, UPLOADS, SOURCES, FILE_BYTES)
        victim = server.gunicorn.worker_pids()[0]
        killed = threading.Event()
        driver = threading.Thread(target=_drive, args=(server.gunicorn.port, uploads, killed))
        driver.start()
        deadline = time.monotonic() + 60
        with server.open_store() as store:  # the kill comes once most uploads have chunks stored
            while (in_flight := store.counts()["pending uploads"]) < UPLOADS // 2:
                assert time.monotonic() < deadline and driver.is_alive(), f"only {in_flight} uploads ever had chunks stored"
                time.sleep(0.05)
        killed.set()
        os.kill(victim, signal.SIGKILL)
        driver.join(120)
        assert not driver.is_alive()
        with server.open_store() as store:
            files = store.submissions()
            stored = {decrypt_bytes(b"".join(store.submission_ciphertext(s.id)), server.journalists[0].private_key)[1]
                      for s in files if s.kind == "file"}
            interrupted = store.counts()["pending uploads"]
            removed = store.recover()  # what the next start of `intake serve` does
            after = store.counts()
            problems = Newsroom(store).integrity_problems()
        space = store_space(server.settings)

    acknowledged = [upload for upload in uploads if upload.answer.startswith(b"HTTP/1.1 303")]
    sent = {upload.content for upload in uploads}
    print(f"\n{UPLOADS} slow uploads, {in_flight} pending when one of 2 workers was killed: {len(acknowledged)} acknowledged,"
          f" {len(stored)} stored whole, {interrupted} left pending and removed by recovery")
    assert 0 < len(acknowledged) < UPLOADS, "the kill should have cut some uploads and spared others"
    assert {upload.content for upload in acknowledged} <= stored, "an acknowledged upload is missing"
    assert stored <= sent, "a stored file is not any upload whole (a partial one is visible)"
    assert removed == interrupted and after["pending uploads"] == 0
    assert space["blob chunk owners"] <= space["ready"], "chunks of an interrupted upload were left behind"
    assert problems == []
