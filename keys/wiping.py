"""Wiping plaintext and secrets from the buffers this code owns.

Python's ``bytes`` and ``str`` cannot be changed in place, so whatever must be wiped
is kept in a ``bytearray`` (or handed around as a ``memoryview`` of one) and zeroed
with :func:`wipe` as soon as it is no longer needed, in a ``finally`` so that an
error path wipes too (``with wiping(buffer):``).

The zeroing is libsodium's ``sodium_memzero``, called through PyNaCl's own cffi
binding (``nacl._sodium``: PyNaCl has no public function for it). A plain Python
loop or ``buffer[:] = bytes(n)`` would do too, but only ``sodium_memzero`` is written
so that no compiler removes it, and it costs one C call for any size. ``ctypes.memset``
would need the buffer's address (a writable ``ctypes`` view of the bytearray) and
would tie ``keys/`` to ctypes for what libsodium, already loaded, does itself.

What this cannot reach, and where the server relies on its allocator settings
instead (intake/memory_wiping.py; SECURITY.md section 2 says what is measured):

- ``bytes`` and ``str`` made by libraries: PyNaCl returns ``bytes`` and keeps its keys
  as ``bytes``, hashlib's digests are ``bytes``, Werkzeug hands request data over as
  ``bytes`` and form values as ``str``;
- the part of a ``bytearray``'s allocation outside what it holds now: deleting from
  the front (``del buffer[:n]``) only moves its start, and growing it may copy it and
  free the old block. Wipe what is about to be dropped before dropping it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from nacl._sodium import ffi, lib

__all__ = ["wipe", "wiping"]


def wipe(buffer: bytearray | memoryview) -> None:
    """Overwrite every byte of a writable buffer with zero, in place.

    A ``bytes`` object (or a read-only view) is refused with TypeError: it cannot be
    wiped, and the caller should not believe it was."""
    with memoryview(buffer) as view:
        if view.readonly:
            raise TypeError("a read-only buffer cannot be wiped")
        size = view.nbytes
    if size:
        lib.sodium_memzero(ffi.from_buffer(buffer), size)


@contextlib.contextmanager
def wiping(*buffers: bytearray | memoryview) -> Iterator[None]:
    """Wipe the buffers when the block ends, however it ends."""
    try:
        yield
    finally:
        for buffer in buffers:
            wipe(buffer)
