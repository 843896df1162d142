"""The shipped worker freezes what the app made while loading, so that the collections it runs
after requests walk only what requests made (SECURITY.md §2, intake.memory_wiping)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from intake.memory_wiping import WIPING_ENVIRONMENT
from tests.fixtures_serve import free_port
from tests.fixtures_server import GUNICORN_CONF, REPO


def test_the_shipped_worker_freezes_its_startup_objects():
    port = free_port()
    env = {**os.environ, **WIPING_ENVIRONMENT, "INTAKE_BIND": f"127.0.0.1:{port}", "INTAKE_WORKERS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "tests.gc_freeze_app:app"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    frozen = int(answer.read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(30)
    # gunicorn, gevent and the app's modules: tens of thousands of objects, none of them walked again.
    assert frozen > 10_000
