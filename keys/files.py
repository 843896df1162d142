"""Writing files from hostile input: safe names, no overwrite, nothing partial.

Names in a bundle come from whoever uploaded the file. ``safe_file_name`` turns
any string into one plain file name that cannot leave its folder, hide itself,
name a device, smuggle control or bidi characters, or exceed common limits;
``safe_folder_name`` also leaves no shell metacharacters (``$ ` ( ) ; & |``...),
for names that end up in suggested commands.
``PendingFile`` writes under a hidden temporary name in the target folder and
only gives the file its real name once the caller says it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

MAX_NAME_BYTES = 200  # well under the 255 of common file systems, leaving room for a suffix
_RESERVED = re.compile(r'[<>:"/\\|?*]')
# Windows device names, also with an extension ("NUL.txt") and superscript digits ("COM¹").
_DEVICE = re.compile(r"(con|prn|aux|nul|conin\$|conout\$|clock\$|(com|lpt)[0-9¹²³])(\..*)?", re.IGNORECASE)
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
TEMP_PREFIX = ".intake-partial-"
_FOLDER_PUNCTUATION = frozenset(" .,_+-")  # with letters and digits: nothing a shell expands or splits on but the space


def safe_file_name(name: str | None, fallback: str) -> str:
    """A file name safe to create in any folder; ``fallback`` if nothing usable remains."""
    if not name:
        return fallback
    name = unicodedata.normalize("NFC", name)
    # Keep the last path component only, whichever separator the uploader used.
    name = re.split(r"[/\\]", name)[-1]
    # Drop control, format (bidi overrides, zero-width), surrogate, private and unassigned characters.
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _RESERVED.sub("_", name)
    name = " ".join(name.split())  # no tabs/newlines already; collapse odd spaces
    name = name.strip(" .")  # leading dots hide files; trailing dots and spaces vanish on Windows
    if not name:
        return fallback
    if _DEVICE.fullmatch(name):
        name = "_" + name
    return _truncate(name, MAX_NAME_BYTES)


def safe_folder_name(name: str | None, fallback: str) -> str:
    """A folder name like ``safe_file_name``'s, of letters, digits, spaces and ``.,_+-`` only.

    Every other character becomes ``_``, so the name can sit in a shell command
    without expanding anything (still quote it: it may hold spaces). ``fallback``
    is cleaned the same way when nothing usable remains of ``name``.
    """
    for candidate in (name, fallback):
        cleaned = "".join(ch if ch.isalnum() or ch in _FOLDER_PUNCTUATION else "_" for ch in safe_file_name(candidate, ""))
        cleaned = safe_file_name(cleaned, "")  # again: a replacement may have made a device name
        if cleaned:
            return cleaned
    return "folder"


def _truncate(name: str, limit: int) -> str:
    """Cut to ``limit`` UTF-8 bytes, keeping a short extension."""
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode("utf-8")) > 16 or not stem:
        stem, ext = name, ""
    ext = "." + ext if ext else ""
    budget = limit - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
    return (stem or "file") + ext


def with_suffix_number(name: str, number: int) -> str:
    """'report.pdf', 2 -> 'report (2).pdf'."""
    if number < 2:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f" ({number})"
    ext = "." + ext if ext else ""
    return _truncate(stem, MAX_NAME_BYTES - len(suffix) - len(ext.encode("utf-8"))) + suffix + ext


def _inside(folder: Path, name: str) -> Path:
    path = folder / name
    if path.parent != folder or name in {"", ".", ".."}:
        raise ValueError("a sanitised name still leaves its folder")  # a bug in safe_file_name, not bad input
    return path


def link_new(tmp: Path, path: Path) -> None:
    """Give the file at ``tmp`` the name ``path`` unless ``path`` exists (FileExistsError)."""
    try:
        os.link(tmp, path)
    except OSError as error:
        if error.errno not in _NO_LINK:
            raise
        # File systems without hard links (FAT on USB sticks): claim the name, then move onto it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)
        return
    tmp.unlink()


class PendingFile:
    """A file written under a hidden temporary name in ``folder``.

    ``commit(name)`` gives it the first free name among ``name``, ``name (2)``, ...
    and returns that path; leaving the ``with`` block without commit removes it.
    """

    def __init__(self, folder: Path, mode: int = 0o600):
        self.folder = folder
        self._tmp = folder / f"{TEMP_PREFIX}{os.urandom(8).hex()}"
        self._file = open(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")
        self._committed: Path | None = None

    def write(self, data: bytes) -> int:
        with _named(self.folder):
            return self._file.write(data)

    def start_writeback(self) -> None:
        """Have the system start writing the content now, so a later ``sync`` finds it (mostly) written:
        on Linux, POSIX_FADV_DONTNEED starts writeback of the dirty pages without waiting for it."""
        self._file.flush()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    def sync(self) -> None:
        """Make the content durable under the temporary name (commit then only names it)."""
        with _named(self.folder):
            self._file.flush()
            os.fsync(self._file.fileno())

    def commit(self, name: str, durable: bool = False, renumber: bool = True, first_number: int = 1) -> Path:
        """Name the file; with ``renumber`` False an existing ``name`` raises FileExistsError.
        ``first_number``: where to start among ``name``, ``name (2)``, ... (a caller that
        knows the taken names saves a try per taken one)."""
        with _named(self.folder):
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())
            self._file.close()
        for number in range(first_number, 10_000 if renumber else 2):
            path = _inside(self.folder, with_suffix_number(name, number))
            try:
                link_new(self._tmp, path)
            except FileExistsError:
                continue
            self._committed = path
            return path
        raise FileExistsError(errno.EEXIST, "the file exists", str(self.folder / name))

    def commit_replacing(self, name: str, durable: bool = True) -> Path:
        """Give the file the name ``name``, atomically replacing any file of that name."""
        with _named(self.folder):
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())
            self._file.close()
        path = _inside(self.folder, name)
        os.replace(self._tmp, path)
        self._committed = path
        return path

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # what was still buffered could not be written (a full disk): the file goes all the same
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "PendingFile":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._committed is None:
            self.abort()


@contextlib.contextmanager
def _named(folder: Path) -> Iterator[None]:
    """An error writing a pending file (a full disk) names the folder: the file's own name is a
    hidden temporary one, and the folder is the place the user chose."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(folder)
        raise


class FreeNames:
    """The names taken in a folder, read once, so that giving many files the first free
    name among ``name``, ``name (2)``, ... costs one try each, not one per taken name."""

    def __init__(self, folder: Path):
        self._taken = set(os.listdir(folder))

    def first_free(self, name: str) -> int:
        number = 1
        while with_suffix_number(name, number) in self._taken:
            number += 1
        return number

    def take(self, path: Path) -> None:
        self._taken.add(path.name)


def sync_all(files: list[PendingFile]) -> None:
    """fsync many files at once: in threads, so the file system commits them together."""
    _in_parallel(PendingFile.sync, files)


def fsync_folders(folders: list[Path]) -> None:
    """Make the names given in ``folders`` durable."""
    _in_parallel(_fsync_folder, folders)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_threads: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def _in_parallel(work, things: list) -> None:
    global _threads
    if len(things) == 1:
        work(things[0])
    elif things:
        if _threads is None or _threads[0] != os.getpid():
            _threads = (os.getpid(), ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync"))
        list(_threads[1].map(work, things))


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` durably, completely or not at all; never replaces an existing file."""
    with PendingFile(path.parent, mode) as pending:
        pending.write(data)
        pending.commit(path.name, durable=True, renumber=False)
