"""Locks that a gevent worker's OS threads share.

Under gunicorn's gevent worker, `threading.Lock` is gevent's lock. The slots file's
descriptors were guarded by such locks and taken by the hub's pool threads, which write every
upload's pieces: when several of them contended for one, they stopped for good (on the code
before this test, 9 of 10 threads in every run), and with them every upload of the worker and
every login's key derivation. CI once saw it as 100 slow uploads never answered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_POOL_THREADS_SHARE_THE_SLOTS_FILE = """
from gevent import monkey
monkey.patch_all()
import sys, time, gevent
from pathlib import Path
from intake.store.slots_file import slots_file_for

path = Path(sys.argv[1]) / "intake.slots"
seconds = float(sys.argv[2])

def use_the_slots_file():
    calls = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        slots = slots_file_for(path)  # the module's lock, then the file's own
        slots.holes_among([])
        with slots.cleaning():
            pass
        calls += 1
    return calls

running = [gevent.get_hub().threadpool.spawn(use_the_slots_file) for _ in range(10)]
try:
    print("calls", sum(result.get(timeout=seconds + 20) for result in running))
except gevent.Timeout:
    print("stuck", sum(not result.ready() for result in running))
"""


def test_the_pools_threads_never_stop_on_the_slots_files_locks(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", _POOL_THREADS_SHARE_THE_SLOTS_FILE, str(tmp_path), "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, count = done.stdout.split()
    assert outcome == "calls", f"{count} of 10 threads never finished"
    assert int(count) > 1000
