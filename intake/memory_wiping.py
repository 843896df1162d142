"""Freed memory is wiped in every server process, so plaintext does not outlive its request.

Python frees a request's buffers without clearing them: a 5 MiB upload's content was
still readable in a worker's memory long after the request ended (tests/test_memory_canary.py
shows it). Two allocator settings fix that for everything Python and its C extensions
free, not only the buffers our code owns:

- ``PYTHONMALLOC=malloc``: every object goes through glibc's malloc instead of
  pymalloc's pools (which reuse freed small blocks without clearing them);
- ``MALLOC_PERTURB_``: glibc overwrites every freed block with this byte (and fills new
  blocks with its complement);
- ``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``: without it glibc keeps up to 7 freed
  blocks of each small size (up to 1,032 bytes) per thread in a cache that the perturb
  byte never touches. Codenames, passphrases and short messages live in blocks that
  size: a login's codename was still readable there after the request
  (tests/test_memory_canary.py, found by this test).

Freed memory is wiped only once Python frees it, and objects in reference cycles (an
exception's traceback holds the frames that held a request's data; gunicorn's request
and its body reader refer to each other) wait for the cyclic garbage collector, which
may not run for a long time. So a worker collects them soon after a request that carried
a body ends, and again when its connection closes (`collect_request_garbage`, at most
once a second: intake.gunicorn_worker); it freezes what the app made while loading
(`gc.freeze`), so a collection walks only what requests made since (well under a
millisecond instead of ~20 ms on an idle worker).

The three settings are read when the interpreter starts, so they are set in the environment of the
gunicorn master (``intake serve`` does it; deploy/gunicorn.conf.py refuses to start
without them) and every worker inherits them. The cost is measured by bench/allocator.py.
What they cannot do: wipe memory still referenced (a live request's buffers), memory the
kernel holds (socket buffers), or pages swapped out before the free (the unit locks
nothing; use encrypted swap or none).
"""

from __future__ import annotations

import gc
from collections.abc import Mapping

WIPING_ENVIRONMENT: dict[str, str] = {
    "PYTHONMALLOC": "malloc",
    "MALLOC_PERTURB_": "165",
    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0",
    # Not for wiping but for giving memory back (bench/memory.py measures it): glibc raises its
    # mmap threshold after large frees, so later upload buffers (64 KiB-4 MiB) came from the heap
    # and stayed there after a burst, and each OS thread that wrote to the store got an arena
    # of its own. A fixed threshold maps every block of 256 KiB and more on its own and unmaps
    # it when freed (the kernel zeroes what it takes back); two arenas serve all threads.
    "MALLOC_MMAP_THRESHOLD_": "262144",
    "MALLOC_ARENA_MAX": "2",
    # A fixed mmap threshold also fixes the trim threshold at 128 KiB: every free that left that
    # much at the heap's top gave it back to the kernel, and the next 64 KiB read took it again,
    # a page fault and a cleared page for every 4 KiB of an upload (ingest without the store:
    # 2.9 ms of CPU per MiB, 1.7 with this; docs/PERFORMANCE.md, "Large uploads, second pass").
    # Freed blocks are wiped all the same (MALLOC_PERTURB_), and a worker trims its heap when its
    # last upload ends (intake.heap).
    "MALLOC_TRIM_THRESHOLD_": "1048576",
}


def missing_wiping(environment: Mapping[str, str]) -> list[str]:
    """The settings above that `environment` lacks (a MALLOC_PERTURB_ of 0 is off)."""
    missing = []
    if environment.get("PYTHONMALLOC") != "malloc":
        missing.append("PYTHONMALLOC=malloc")
    perturb = environment.get("MALLOC_PERTURB_", "")
    if not perturb.isdigit() or int(perturb) % 256 == 0:
        missing.append(f"MALLOC_PERTURB_={WIPING_ENVIRONMENT['MALLOC_PERTURB_']}")
    if "glibc.malloc.tcache_count=0" not in environment.get("GLIBC_TUNABLES", "").split(":"):
        missing.append(f"GLIBC_TUNABLES={WIPING_ENVIRONMENT['GLIBC_TUNABLES']}")
    return missing


def freeze_startup_objects() -> None:
    """Once the app is loaded in a worker: what exists now is left out of later collections."""
    gc.collect()
    gc.freeze()


def collect_request_garbage() -> None:
    """Free (and so wipe) what a finished request left in reference cycles."""
    gc.collect()
