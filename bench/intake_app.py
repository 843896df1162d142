"""intake's app as wsgi.py builds it, with the request size limit raised for the
1 GiB memory measurement (the default limit is 500 MiB per request)."""

from __future__ import annotations

import os
from pathlib import Path

from intake.app import create_app
from intake.config import load_settings

app = create_app(load_settings(Path(os.environ["INTAKE_DATA"]), max_request_bytes=int(os.environ["BENCH_MAX_REQUEST_BYTES"])))
