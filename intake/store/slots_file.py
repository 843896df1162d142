"""The slots file (``intake.db-slots``): where large envelopes' ciphertext lives, written once.

An envelope is already encrypted and authenticated to the journalists' keys. Stored in a
SQLCipher database it was encrypted and authenticated again, page by page, and copied three
times by SQLite on its way (docs/PERFORMANCE.md, "Large uploads, second pass"): more CPU than a
plain app spends receiving the whole upload. Here it is written as it is, with ``pwrite``, and
made durable with one ``fdatasync`` before the transaction that publishes the submission.

The file is a row of fixed-size slots. Which slot holds which part of which submission is
known only to the main database (table ``slots``, migration 9), which alone decides what is
visible. A slot is claimed (named by a pending upload, marked as maybe holding ciphertext)
before it is written, and published only after the sync; a crash leaves slots named by a
pending row, which recovery deletes, and the slots are then overwritten. What a slot holds is
the part of an envelope after its header (the header, with the format's magic and the
recipients' count, stays in the database), so every written slot reads as random bytes; a
short last piece is padded with random bytes, and a freed slot is overwritten with random
bytes: the file shows its length, not which slots are in use or belong together.

This module does file I/O only; the store decides which slots to use (intake.store.slot_table).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from intake.store.errors import StoreError, StoreFullError
from intake.told import N_, told
from intake.worker_threads import os_thread_lock

SLOT_BYTES = 256 * 1024
# Room before a large envelope's first slot in its first buffer, for its header (at most 3,138
# bytes: 64 recipients; 5,154 in envelope version 1), so that the slots' bytes start on a page
# boundary (O_DIRECT).
HEADER_ROOM = 8192
# Linux's fallocate(2) mode: deallocate the range, keep the file's size.
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
SLOTS_SUFFIX = "-slots"  # intake.db-slots: named like SQLite's side files, so intake.db* is the whole store


class SlotsFileShortError(StoreError):
    """The slots file ends before a slot asked for: damage, or (to a reader outside the store's
    transactions, such as a backup) a submission deleted and the file cut meanwhile."""


def slots_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + SLOTS_SUFFIX)


def runs(slots: list[int]) -> Iterator[tuple[int, int, int]]:
    """(index in ``slots``, first slot, count) of each run of consecutive slot numbers, in order."""
    start = 0
    for i in range(1, len(slots) + 1):
        if i == len(slots) or slots[i] != slots[i - 1] + 1:
            yield start, slots[start], i - start
            start = i


class SlotsFile:
    """One process's descriptors of the slots file; every method may block (call them in an OS thread).

    Slots are written with O_DIRECT where the file system allows it: straight from
    the upload's buffer to the disk, not through the page cache (measured here: 0.03 s of system
    CPU per 256 MiB against 1.7-2.3 s when the page cache has to take fresh memory, see
    docs/PERFORMANCE.md, "The slots file"). Such a write must start at an aligned address and
    cover whole blocks: the store hands over page-aligned buffers of whole slots. Reads, and
    anything misaligned or where O_DIRECT is refused, go through the page cache.
    """

    def __init__(self, path: Path, *, direct: bool = True):
        self.path = Path(path)
        self._direct_wanted = direct
        self._fd: int | None = None  # through the page cache
        self._direct_fd: int | None = None  # O_DIRECT, or None where the file system refuses it
        # Taken by the OS threads that write and read: real locks (intake.worker_threads).
        self._lock = os_thread_lock()
        self._cleaning = os_thread_lock()  # flock does not exclude the threads of one process
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file the descriptors name
        self.sync_failures = 0

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None:
                created = not self.path.exists()
                with _as_store_error("open"):
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    opened = os.fstat(self._fd)
                    self._opened = (opened.st_dev, opened.st_ino)
                if self._direct_wanted:
                    with _as_store_error("open"):
                        try:
                            self._direct_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_DIRECT)
                        except OSError as error:
                            if error.errno != errno.EINVAL:  # EINVAL: no O_DIRECT on this file system
                                raise
                if created:
                    # The file's name must survive a crash as surely as what is written in it.
                    with _as_store_error("create"):
                        folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                        try:
                            os.fsync(folder)
                        finally:
                            os.close(folder)
            return self._fd

    def write(self, slots: list[int], data: bytes | bytearray | mmap.mmap, start: int) -> None:
        """Write ``len(slots)`` whole slots from ``data`` at ``start`` into ``slots``, in order."""
        fd = self._descriptor()
        try:
            with memoryview(data) as view:
                if len(view) < start + len(slots) * SLOT_BYTES:
                    raise ValueError("the data does not fill the slots given")
                for index, first, count in runs(slots):
                    offset = start + index * SLOT_BYTES
                    with view[offset : offset + count * SLOT_BYTES] as piece:
                        self._write_slots(fd, piece, first * SLOT_BYTES)
        except StoreError:
            # A full disk: what this write did get onto it goes at once (holes, until the slots
            # are overwritten once the upload is removed), so the database has room to record it.
            for _index, first, count in runs(slots):
                _punch_hole(fd, first * SLOT_BYTES, count * SLOT_BYTES)
            raise

    def _write_slots(self, fd: int, piece: memoryview, offset: int) -> None:
        if self._direct_fd is not None:
            try:
                with _as_store_error("write"):
                    _pwrite_all(self._direct_fd, piece, offset)
                return
            except _Misaligned:
                pass  # a buffer not on a page boundary: through the page cache instead
        with _as_store_error("write"):
            _pwrite_all(fd, piece, offset)

    def read(self, slots: list[int], length: int) -> bytes:
        """The first ``length`` bytes held in ``slots``, in order."""
        fd = self._descriptor()
        out = bytearray()
        for _index, first, count in runs(slots):
            want = min(count * SLOT_BYTES, length - len(out))
            with _as_store_error("read"):
                got = os.pread(fd, want, first * SLOT_BYTES)
            if len(got) != want:
                raise SlotsFileShortError(told("the slots file is shorter than the database says: restore a backup"))
            out += got
        return bytes(out)

    def holes_among(self, slots: list[int]) -> set[int]:
        """Those of ``slots`` that are not wholly on disk (a hole: never written, or given back)."""
        fd = self._descriptor()
        holes = set(slots)
        for _index, first, count in runs(slots):
            for offset, length in _data_ranges(fd, first * SLOT_BYTES, (first + count) * SLOT_BYTES):
                whole_from, whole_to = -(-offset // SLOT_BYTES), (offset + length) // SLOT_BYTES
                holes.difference_update(range(whole_from, whole_to))
        return holes

    def damaged_among(self, slots: list[int]) -> tuple[set[int], set[int]]:
        """Those of ``slots`` that hold a 4 KiB run of zeros, and those the disk cannot read back
        (EIO), as read from the disk. A slot in use holds ciphertext and random padding only, so
        such a run is a write that never reached the disk or a file system that lost it. (A
        changed bit cannot be told from ciphertext here: the laptop's decryption finds it, naming
        the item.) Read with O_DIRECT where the file system allows it, into one page-aligned
        buffer: checking a large store neither fills the page cache (each fresh page costs this
        kind of VM ~7 µs, docs/PERFORMANCE.md) nor pushes out what else is cached."""
        buffered = self._descriptor()
        fd = self._direct_fd if self._direct_fd is not None else buffered
        zeroed, unreadable = set(), set()
        with mmap.mmap(-1, SLOT_BYTES) as buffer:
            for slot in slots:
                try:
                    got = os.preadv(fd, [buffer], slot * SLOT_BYTES)
                except OSError as error:
                    if error.errno != errno.EIO:
                        with _as_store_error("read"):
                            raise
                    unreadable.add(slot)  # the others are still read: a check lists every problem
                    continue
                if got < SLOT_BYTES or buffer.find(_ZEROED_RUN) != -1:
                    zeroed.add(slot)
        return zeroed, unreadable

    def sync(self) -> None:
        """Make every write so far durable (before the transaction that publishes them). Linux
        reports a failed write-back once per open file: every upload of this process that wrote
        before a failure must fail too, so failures are counted (``sync_failures``)."""
        try:
            with _as_store_error("sync"):
                os.fdatasync(self._descriptor())
        except StoreError:
            self.sync_failures += 1
            raise

    def fill_random(self, slots: list[int]) -> None:
        """Write random bytes into ``slots`` (claimed, never written: no hole may show where an
        upload ended)."""
        fd = self._descriptor()
        for slot in slots:
            self._write_slots(fd, _random_slot(), slot * SLOT_BYTES)

    def free(self, slots: list[int]) -> None:
        """Overwrite ``slots`` with random bytes, durably: a freed slot looks like one in use, so
        the file shows neither which slots are free nor where an upload ended. On a full disk,
        the holes this filled (slots never written, or given back after a failed write) are
        given back again, and StoreFullError says to try later."""
        fd = self._descriptor()
        filled: list[int] = []
        for slot in (slot for _index, first, count in runs(slots) for slot in range(first, first + count)):
            was_hole = sum(length for _offset, length in _data_ranges(fd, slot * SLOT_BYTES, (slot + 1) * SLOT_BYTES)) < SLOT_BYTES
            try:
                self._write_slots(fd, _random_slot(), slot * SLOT_BYTES)
            except StoreFullError:
                for hole in [*filled, slot]:
                    _punch_hole(fd, hole * SLOT_BYTES, SLOT_BYTES)
                raise
            if was_hole:
                filled.append(slot)
        self.sync()

    @contextmanager
    def cleaning(self) -> Iterator[bool]:
        """Held while freed slots are overwritten and given back: by one cleaner at a time, in
        every process (flock on the file), so none overwrites a slot another already gave back
        and an upload has since claimed. Never waits: yields False while another cleaner works
        (it cleans until nothing is left; what it misses, the next reclaim does)."""
        fd = self._descriptor()
        if not self._cleaning.acquire(blocking=False):
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._cleaning.release()

    def truncate(self, slot_count: int) -> None:
        """Cut the file after its first ``slot_count`` slots (call under the database's write lock;
        the cut is made durable by the next sync)."""
        if self._fd is None and not self.path.exists():
            return
        with _as_store_error("truncate"):
            if os.fstat(self._descriptor()).st_size > slot_count * SLOT_BYTES:
                os.ftruncate(self._descriptor(), slot_count * SLOT_BYTES)

    def close(self) -> None:
        with self._lock:
            self._close_descriptors()

    def _close_descriptors(self) -> None:
        """Close and forget both descriptors (no lock: the caller's business)."""
        fds, self._fd, self._direct_fd = (self._fd, self._direct_fd), None, None
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def still_at_its_path(self) -> bool:
        """False once the file these descriptors name is no longer the one at the path (a restore
        wrote a new one, or it was removed): writing through them would go nowhere lasting."""
        if self._opened is None:
            return True
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == self._opened

    def __del__(self) -> None:
        # The last user of a file no longer at its path has finished with it (slots_file_for). No
        # lock: nothing else holds this object, and one copied by fork may be held for ever.
        try:
            self._close_descriptors()
        except OSError:
            pass


_ZEROED_RUN = bytes(4096)


def _data_ranges(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each part of [start, end) that is on disk: not a hole, not past the end."""
    size = os.fstat(fd).st_size
    position = start
    while position < min(end, size):
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data from here to the end of the file
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        position = hole


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Give the range's blocks back to the file system, where it can (Linux's fallocate): at
    best, after a failed write, so nothing it fails with hides that write's own error."""
    _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)


def _random_slot() -> memoryview:
    """A slot of fresh random bytes, page-aligned (O_DIRECT)."""
    buffer = mmap.mmap(-1, SLOT_BYTES)
    buffer[:] = os.urandom(SLOT_BYTES)
    return memoryview(buffer)


class _Misaligned(Exception):
    """O_DIRECT refused the buffer's address or length (EINVAL)."""


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        try:
            done += os.pwrite(fd, data[done:], offset + done)
        except OSError as error:
            if error.errno == errno.EINVAL and done == 0:
                raise _Misaligned from None
            raise


# What _as_store_error says failed, by the operation named at its use.
_COULD_NOT = {
    "open": N_("could not open the slots file: {reason}"),
    "create": N_("could not create the slots file: {reason}"),
    "write": N_("could not write the slots file: {reason}"),
    "read": N_("could not read the slots file: {reason}"),
    "sync": N_("could not sync the slots file: {reason}"),
    "truncate": N_("could not truncate the slots file: {reason}"),
}


@contextmanager
def _as_store_error(doing: str) -> Iterator[None]:
    """OSError from the file, as the store's errors (a full disk is StoreFullError)."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFullError(told("the disk holding the intake database is full: free some space and try again")) from None
        raise StoreError(told(_COULD_NOT[doing], reason=os.strerror(error.errno or 0))) from None


_files: dict[tuple[int, Path], SlotsFile] = {}
_files_lock = os_thread_lock()


def slots_file_for(path: Path) -> SlotsFile:
    """This process's SlotsFile for ``path`` (a forked worker opens its own descriptors), opened
    again if the file at ``path`` is no longer the one it opened (the old one is closed once
    whatever still uses it has finished)."""
    with _files_lock:
        key = (os.getpid(), Path(path))
        known = _files.get(key)
        if known is None or not known.still_at_its_path():
            known = _files[key] = SlotsFile(path)
        return known


def _close_the_parents_files() -> None:
    """In a forked child: the parent's descriptors are not this process's to use. (No lock is
    taken: a thread of the parent may have held one when it forked.)"""
    global _files_lock
    _files_lock = os_thread_lock()
    for key in [key for key in _files if key[0] != os.getpid()]:
        _files.pop(key)._close_descriptors()


os.register_at_fork(after_in_child=_close_the_parents_files)
