"""zip and tar archives judged from their headers: never extracted to disk.

A zip's central directory and a tar's member headers say what extraction would
do: names that climb out of the folder, links, how large the members claim to
be. An archive is refused (not cleaned, since cleaning extracts) when a name
leaves the folder, when it expands absurdly, when entries overlap (the trick of
the smallest zip bombs), or when archives nest too deep. Only zip archives
nested in a zip are opened, in memory, at most ``NESTED_READ_LIMIT`` bytes
each, and only once the outer archive passed every other check.
"""

from __future__ import annotations

import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

MAX_MEMBERS = 10_000
MAX_EXPANDED = 4 << 30  # bytes, all members of all nested archives together
MAX_RATIO = 100  # expanded / archive size, once the expanded size is above RATIO_FLOOR
RATIO_FLOOR = 64 << 20
MAX_DEPTH = 3  # an archive in an archive in an archive, no deeper
NESTED_READ_LIMIT = 64 << 20
_LOCAL_HEADER = 30
_NESTABLE = re.compile(r"\.(zip|jar|apk|epub|docx|docm|xlsx|xlsm|pptx|pptm|odt|ods|odp|odg)$", re.IGNORECASE)

Problem = tuple[str, str]  # (wording.FLAGS key, detail)


def leaves_folder(name: str) -> bool:
    """Whether extracting a member of this name could write outside the target folder."""
    return (
        name.startswith(("/", "\\"))
        or "\\" in name
        or re.match(r"[A-Za-z]:", name) is not None
        or ".." in name.split("/")
        or "\x00" in name
    )


def inspect_zip(path: Path) -> tuple[list[Problem], int]:
    """Problems found, and the expanded size the archive declares (nested archives included)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            problems, expanded = _inspect_zip(archive, size, depth=1)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError):
        return [("archive-unreadable", "")], 0
    return problems, expanded


def _inspect_zip(archive: zipfile.ZipFile, size: int, depth: int) -> tuple[list[Problem], int]:
    members = archive.infolist()
    problems: list[Problem] = []
    if len(members) > MAX_MEMBERS:
        problems.append(("archive-members", f"{len(members):,}"))
    for member in members:
        if leaves_folder(member.filename):
            problems.append(("archive-traversal", member.filename))
        if stat.S_ISLNK(member.external_attr >> 16):
            problems.append(("archive-link", member.filename))
        if member.flag_bits & 0x1:
            problems.append(("archive-encrypted", member.filename))
    if _overlapping(members):
        problems.append(("archive-overlap", ""))
    expanded = sum(member.file_size for member in members)
    problems += _expansion(expanded, size)
    if any(code != "archive-encrypted" for code, _ in problems):
        return _first_of_each(problems), expanded
    for member in members:
        if not _NESTABLE.search(member.filename):
            continue
        if depth >= MAX_DEPTH:
            problems.append(("archive-nesting", str(MAX_DEPTH)))
            break
        if member.file_size > NESTED_READ_LIMIT or member.flag_bits & 0x1:
            continue  # left as a member; cleaning refuses what it cannot read
        try:
            with zipfile.ZipFile(io.BytesIO(archive.read(member))) as nested:
                found, nested_expanded = _inspect_zip(nested, member.file_size, depth + 1)
        except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError, RuntimeError):
            continue  # not a zip after all: an ordinary member
        expanded += nested_expanded
        problems += found
        if found:
            break
    problems += _expansion(expanded, size)
    return _first_of_each(problems), expanded


def _overlapping(members: list[zipfile.ZipInfo]) -> bool:
    end = -1
    for member in sorted(members, key=lambda m: m.header_offset):
        if member.header_offset < end:
            return True
        end = member.header_offset + _LOCAL_HEADER + member.compress_size
    return False


def _expansion(expanded: int, size: int) -> list[Problem]:
    if expanded > MAX_EXPANDED or (expanded > RATIO_FLOOR and expanded > MAX_RATIO * max(size, 1)):
        return [("archive-bomb", f"{expanded:,}")]
    return []


def _first_of_each(problems: list[Problem]) -> list[Problem]:
    """One problem per kind: a thousand hostile names make one flag, with the first as example."""
    seen: dict[str, Problem] = {}
    for problem in problems:
        seen.setdefault(problem[0], problem)
    return list(seen.values())


def inspect_tar(path: Path) -> tuple[list[Problem], int]:
    """The same checks for an uncompressed tar, walking its headers (data is skipped, not read)."""
    problems: list[Problem] = []
    expanded = count = 0
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                count += 1
                expanded += member.size
                if leaves_folder(member.name):
                    problems.append(("archive-traversal", member.name))
                if member.issym() or member.islnk() or member.isdev() or member.isfifo():
                    problems.append(("archive-link", member.name))
                if count > MAX_MEMBERS:
                    problems.append(("archive-members", f"> {MAX_MEMBERS:,}"))
                    break
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return [("archive-unreadable", "")], expanded
    return _first_of_each(problems + _expansion(expanded, path.stat().st_size)), expanded
