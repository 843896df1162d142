"""A WSGI app for tests/test_body_reads.py, served by real gunicorn under deploy/gunicorn.conf.py.

It reads a request body 64 KiB at a time, as intake's upload parser and Werkzeug's form
parser do, and answers the body's SHA-256 and the most that gunicorn held read ahead of it
after any read (bytes taken from the socket but not yet handed to the app).
"""

from __future__ import annotations

import hashlib
import time

READ_SIZE = 64 * 1024


def app(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ready"]
    time.sleep(0.5)  # the client's whole body reaches the socket's buffer first, as on a fast link
    body = environ["wsgi.input"]  # gunicorn's Body; its reader reads through the connection's unreader
    unreader = body.reader.unreader
    digest, most_held = hashlib.sha256(), 0
    while data := body.read(READ_SIZE):
        digest.update(data)
        most_held = max(most_held, unreader.buf.tell() + body.buf.tell())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{digest.hexdigest()} {most_held}".encode()]
