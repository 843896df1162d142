"""Giving freed memory back to the kernel after a burst of uploads.

glibc returns freed memory at the top of its heaps by itself, but a burst of uploads
leaves freed blocks scattered below live ones, and the worker's resident size stays
near its peak (measured: ~74 MiB kept by 2 workers after 100 slow uploads).
`malloc_trim` hands every wholly free page back; a worker calls it when its last
upload in flight ends, in an OS thread (it walks the heaps, and ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

_LIBC_NAME = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_LIBC_NAME), "malloc_trim", None) if _LIBC_NAME else None


_INTERVAL = 1.0  # seconds: a trim costs milliseconds, and a lone source's messages come one by one
_last = 0.0


def give_back_free_memory() -> None:
    """Return wholly free heap pages to the kernel, at most once a second (glibc only)."""
    global _last
    if _malloc_trim is None or time.monotonic() - _last < _INTERVAL:
        return
    _last = time.monotonic()
    _malloc_trim(0)
