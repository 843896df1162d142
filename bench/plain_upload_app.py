"""Baseline for bench/ingest.py: a plain Flask app that saves `request.files` unencrypted.

This is what a tip line without encryption on receipt would do (Werkzeug spools
the upload to a temporary file, then it is copied to its place) and it is made
durable the same way intake's store is: fsync before answering. Served under
the same gunicorn settings (deploy/gunicorn.conf.py) as intake.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, request

UPLOAD_DIR = Path(os.environ["BENCH_UPLOAD_DIR"])

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "plain upload baseline"


@app.post("/upload")
def upload() -> tuple[str, int]:
    saved = 0
    for storage in request.files.getlist("files"):
        path = UPLOAD_DIR / secrets.token_hex(8)
        with open(path, "wb") as out:
            storage.save(out)
            out.flush()
            os.fsync(out.fileno())
        saved += 1
    return f"saved {saved}", 200
