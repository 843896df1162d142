"""Buffering one submission's ciphertext on its way to the store (intake.store.store).

A short submission is buffered whole and stored with its publish. A larger one is handed to
the store a chunk at a time (a slow one, over Tor, a slot at a time), in page-aligned buffers
whose slots' bytes start on a page boundary, as the slots file's O_DIRECT writes need
(intake.store.slots_file).
"""

from __future__ import annotations

import mmap
import time
from typing import TYPE_CHECKING

from intake.store.slots_file import HEADER_ROOM, SLOT_BYTES, SlotsFile

if TYPE_CHECKING:
    from intake.store.store import Store

# A submission up to this size is stored in the main database with the publish (a short
# message costs one transaction); a larger one goes to the slots file first, so the main
# database's write lock is held for milliseconds only.
INLINE_BYTES = 256 * 1024
# A slow upload (over Tor: most of them) would hold up to a whole chunk in memory for as long
# as it takes to arrive; its buffer is stored as soon as it holds this much and its first byte
# waited this long. A fast upload still fills whole chunks (fewer, larger writes).
SLOW_FLUSH_BYTES = SLOT_BYTES
SLOW_FLUSH_SECONDS = 1.0


class SubmissionWriter:
    """File-like sink for one submission's ciphertext.

    `write()` buffers up to one chunk and hands each full chunk to the store, which
    writes it into slots of the slots file while the caller goes on (a failed write
    raises at the next call); `commit()` stores the rest and makes the submission
    visible in one transaction; `abort()` (or leaving a `with` block by an exception)
    removes it.
    """

    def __init__(self, store: Store, submission_id: str, source_id: str, kind: str, journalist_ids: list[int], chunk_bytes: int,
                 header_bytes: int):
        self.id = submission_id
        self.source_id = source_id
        self.kind = kind
        self.journalist_ids = journalist_ids
        self._store = store
        self._chunk_bytes = chunk_bytes  # a whole number of slots
        self._header_bytes = header_bytes  # the envelope's header: the first piece's first bytes, kept in the database
        # A short submission (most are) is buffered in a bytearray. Past INLINE_BYTES it moves to
        # a mapping of its own, page-aligned for O_DIRECT, its first slot's bytes on a page
        # boundary after the header (HEADER_ROOM). A new mapping for each piece of a slow upload:
        # the one handed over is written in the background and then unmapped, so it holds one
        # buffer, not two (a spare kept for reuse was 4 MiB of every slow upload's ~16 MiB). A fast
        # upload, whose full chunks follow each other, refills the mapping of the chunk before
        # instead (its write has ended by the time the next chunk is handed over): pages already
        # faulted in.
        self._buffer: bytearray | mmap.mmap = bytearray()
        self._start = 0  # where the piece being buffered starts in _buffer
        self._written: mmap.mmap | None = None  # the full chunk last handed over, refilled next
        self._filled = 0  # bytes of the piece in _buffer
        self._first_at = 0.0  # when the first byte now in _buffer arrived
        self._stored = 0  # bytes handed to the store so far
        self._slots: list[int] = []  # slots claimed, in the envelope's order
        self._used = 0  # of which written
        self._written_to: tuple[SlotsFile, int] | None = None  # the slots file it first wrote to, and its failed syncs then
        self._finished = False

    @property
    def size(self) -> int:
        return self._stored + self._filled

    def _head(self) -> int:
        """The header's bytes at the start of the piece being buffered (the first one only)."""
        return 0 if self._stored else self._header_bytes

    def _target(self) -> int:
        """Bytes of a full chunk: whole slots, after the header in the first one."""
        return self._chunk_bytes + self._head()

    def _mapped(self, keep: int) -> mmap.mmap:
        """A page-aligned buffer for a piece whose first ``keep`` bytes are the buffered ones."""
        mapped = mmap.mmap(-1, HEADER_ROOM + self._chunk_bytes)
        start = HEADER_ROOM - self._head() if not self._stored else 0
        if keep:
            mapped[start : start + keep] = memoryview(self._buffer)[self._start : self._start + keep]
        self._buffer, self._start = mapped, start
        return mapped

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._finished:
            raise ValueError("write to a submission that was already committed or aborted")
        with memoryview(data) as view, view.cast("B") as octets:
            taken = 0
            while taken < len(octets):
                if not self._filled:
                    self._first_at = time.monotonic()
                piece = octets[taken : taken + self._target() - self._filled]
                at = self._start + self._filled
                if isinstance(self._buffer, bytearray) and at + len(piece) > INLINE_BYTES:
                    self._mapped(self._filled)
                    at = self._start + self._filled
                self._buffer[at : at + len(piece)] = piece
                self._filled += len(piece)
                taken += len(piece)
                piece.release()
                if self._filled == self._target():
                    self._hand_over(self._filled, full=True)
        head = self._head()
        if self._filled >= head + SLOW_FLUSH_BYTES and time.monotonic() - self._first_at >= SLOW_FLUSH_SECONDS:
            self._hand_over(head + (self._filled - head) // SLOT_BYTES * SLOT_BYTES, full=False)
        return taken

    def _hand_over(self, length: int, *, full: bool) -> None:
        """Hand the piece's first ``length`` bytes to the store; what follows them stays buffered."""
        chunk, start = self._buffer, self._start
        self._store._append(self, chunk, start, length)  # written in the background; every earlier write has ended
        rest = self._filled - length
        spare, self._written = (self._written, chunk) if full else (None, None)
        self._buffer = spare if spare is not None else mmap.mmap(-1, HEADER_ROOM + self._chunk_bytes)
        self._start = 0
        if rest:
            self._buffer[:rest] = memoryview(chunk)[start + length : start + self._filled]
        self._filled = rest

    def _hand_over_rest(self) -> None:
        """Store what is buffered as the last piece (at the commit)."""
        if isinstance(self._buffer, bytearray):
            self._mapped(self._filled)
        self._store._append(self, self._buffer, self._start, self._filled)
        self._buffer, self._start, self._filled = bytearray(), 0, 0

    def commit(self) -> str:
        (submission_id,) = self._store.commit_together([self])
        return submission_id

    def _buffered(self) -> int:
        """How many bytes are buffered (the last piece, stored by Store.commit_together)."""
        if self._finished:
            raise ValueError("this submission was already committed or aborted")
        return self._filled

    def _rest(self) -> bytes:
        """What is buffered, for a submission stored whole in the database."""
        return bytes(memoryview(self._buffer)[self._start : self._start + self._filled])

    def _published(self) -> None:
        self._finished = True
        self._buffer = self._written = None

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._buffer = self._written = None
        self._filled = 0
        if self._stored:
            self._store._discard(self)

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
