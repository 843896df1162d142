"""intake's app as wsgi.py builds it, with the request size limit raised for the
1 GiB memory measurement (the default limit is 500 MiB per request)."""

from __future__ import annotations

import os

from intake.app import create_app
from intake.config import load_settings_from_environment

app = create_app(load_settings_from_environment(max_request_bytes=int(os.environ["BENCH_MAX_REQUEST_BYTES"])))
