"""A request body is taken from the socket about as fast as the app reads it (intake.gunicorn_worker).

gunicorn read up to 1 MiB per recv() and copied what it held into a new buffer on each of the
app's 64 KiB reads: ~8 MiB copied per MiB of a fast upload, in both intake and the plain app
(docs/PERFORMANCE.md, "Large uploads, second pass").
"""

from __future__ import annotations

import hashlib
import http.client
import os

from intake.gunicorn_worker import BODY_RECV_BYTES
from tests.body_reads_app import READ_SIZE
from tests.fixtures_server import run_gunicorn


def test_a_fast_body_is_read_with_no_more_held_ahead_than_one_read(tmp_path):
    body = os.urandom(8 * 1024 * 1024)
    with run_gunicorn("tests.body_reads_app:app", tmp_path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            digest, most_held = response.read().decode().split()
        finally:
            conn.close()
    assert response.status == 200
    assert digest == hashlib.sha256(body).hexdigest()  # every byte, in order
    # One recv() of at most BODY_RECV_BYTES can land on top of less than one read's worth.
    assert int(most_held) < BODY_RECV_BYTES + READ_SIZE, f"gunicorn held {int(most_held)} bytes ahead of the app"
