"""100 slow uploads in flight (as over Tor) against the real app under real gunicorn: the
workers' memory stays bounded while they arrive and goes back down afterwards, and every
upload is stored whole."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keys.envelope_reader import decrypt_bytes
from tests.fixtures_server import SourceClient, Upload, encode_multipart, run_intake_server
from tests.fixtures_slow_uploads import SlowUpload, SlowUploads, random_content, workers_rss_mib

# Time or memory bounds: one worker runs all such tests in turn, never two at once (scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

UPLOADS = 100
SOURCES = 5
FILE_BYTES = 1536 * 1024  # 1.5 MiB, sent at 160 KiB/s: ~10 s
PIECE = 32 * 1024
EVERY = 0.2
# Measured here under load from other work: 0.94-2.0 MiB per upload (it was 16-18 MiB). The
# goal of issue 10 is 1 MiB; bench/memory.py reports it, MISSED while it is not met.
MIB_PER_UPLOAD = 2.5
AFTER_BURST_MIB = 48  # back within this of where it started (the store pool keeps up to 32 open stores a worker: measured 42-43 MiB after, 21 with 8)


def slow_uploads_for(server, count: int, sources: int, size: int) -> list[SlowUpload]:
    """`count` logged-in uploads of a file of `size` random bytes each, from `sources` sources."""
    sessions = []
    for _ in range(sources):
        client = SourceClient(server.url)
        _codename, page = client.start_as_new_source()
        sessions.append((page.form_with("message", "files"), "; ".join(f"{k}={v}" for k, v in client.cookies.items())))
    uploads = []
    for i in range(count):
        form, cookie = sessions[i % sources]
        content = random_content(size)
        content_type, pieces = encode_multipart(form, {"message": f"upload {i}"}, {"files": [Upload(f"file-{i}.bin", content)]})
        body = b"".join(pieces)
        head = (f"POST /submit HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        uploads.append(SlowUpload(head, body, content))
    return uploads


def test_100_slow_uploads_in_flight_hold_little_memory_and_give_it_back(tmp_path: Path) -> None:
    with run_intake_server(tmp_path) as server:
        uploads = slow_uploads_for(server, UPLOADS, SOURCES, FILE_BYTES)
        pids = server.gunicorn.worker_pids()
        before = workers_rss_mib(pids)
        driver = SlowUploads(server.gunicorn.port, uploads, PIECE, EVERY)
        driver.run(pids, sample_at=0.8)
        time.sleep(3)
        after = workers_rss_mib(pids)
        during = driver.rss_samples[0]
        with server.open_store() as store:
            files = [s for s in store.submissions() if s.kind == "file"]
            contents = {decrypt_bytes(b"".join(store.submission_ciphertext(s.id)), server.journalists[0].private_key)[1]
                        for s in files}
            pending = store.counts()["pending uploads"]
        log = server.gunicorn.error_log_text()

    per_upload = (during - before) / UPLOADS
    print(f"\n{UPLOADS} slow uploads in flight, {len(pids)} workers: RSS {before:.0f} MiB before, {during:.0f} MiB in flight"
          f" ({per_upload:.2f} MiB per upload), {after:.0f} MiB after")
    assert all(upload.answer for upload in uploads), (driver.unanswered(), log[-3000:])
    assert all(upload.answer.startswith(b"HTTP/1.1 303") for upload in uploads), ({u.answer[:12] for u in uploads}, log[-3000:])
    assert "Traceback" not in log
    assert len(files) == UPLOADS and pending == 0
    assert contents == {upload.content for upload in uploads}
    assert per_upload <= MIB_PER_UPLOAD
    assert after - before <= AFTER_BURST_MIB
