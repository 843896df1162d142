"""mat2 in the sandbox: which metadata a file carries, and a cleaned copy of it.

mat2 (the tool Tails ships) picks its parser from the file's extension and
writes ``NAME.cleaned.EXT`` beside its input, so the input is shown to it as
``/work/input.EXT`` and the copy appears in the scratch folder.

An MP4 or QuickTime file is first copied to its sound and moving picture only
(keys.cleaning.streams), and mat2's MP4 parser cleans that copy: mat2 alone
would keep every stream, and Debian 12's mat2 has no parser for ``.mov``,
``.m4a`` or ``.3gp`` anyway. No flag about mat2's own bubblewrap is passed:
Debian's mat2 0.13.3 turns it on only when given ``--no-sandbox`` (the flag is
inverted there), and it cannot nest inside ours when the laptop's user is root;
everything mat2 runs is inside ours anyway.
Field names, never values, leave this module:
values are what the source may need hidden, even from a report.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from keys.cleaning import sandbox, sniff, streams, tracks
from keys.cleaning.sandbox import Limits, Tools

MAX_FIELD = 100
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_HEADER = re.compile(r"^\[(\++)\] Metadata for (.*):$")
_FIELD = re.compile(r"^\s+(\S.{0,199}?):(?: |$)")  # "cp:lastModifiedBy: Petr": the name ends at the first ": "
_UNSUPPORTED = re.compile(r"format \(.*\) is not supported|isn't supported")
_AS_MP4 = frozenset({"mov", "qt", "m4a", "3gp", "3g2"})


@dataclasses.dataclass(frozen=True)
class Result:
    status: str  # a key of wording.STATUS
    detail: str = ""
    cleaned: Path | None = None  # in the scratch folder; the caller moves it
    removed: tuple[str, ...] = ()
    left: tuple[str, ...] = ()


def inside_name(path: Path, stem: str = "input") -> str:
    ext = path.suffix.lower().lstrip(".")
    if ext in _AS_MP4 and sniff.detect(path).name in sniff.MP4_FAMILY:
        ext = "mp4"
    return f"{stem}.{ext}" if _EXTENSION.fullmatch(ext) else stem


def show(tools: Tools, path: Path, scratch: Path, limits: Limits) -> tuple[Result | None, tuple[str, ...]]:
    """The metadata fields mat2 lists for ``path``; a failed Result instead when mat2 cannot read it."""
    name = inside_name(path)
    outcome = sandbox.run(tools, [tools.mat2, "--show", f"/work/{name}"], path, name, scratch, limits)
    failure = _failure(outcome, limits)
    if failure:
        return failure, ()
    return None, fields(outcome.output)


def clean(tools: Tools, path: Path, scratch: Path, limits: Limits) -> Result:
    """Clean ``path`` into the scratch folder; Result.removed and .left come from mat2 --show before and after."""
    failure, before = show(tools, path, scratch, limits)
    if failure:
        return failure
    name = inside_name(path)
    kept: list[streams.Stream] | None = None
    left_out: list[str] = []
    if sniff.detect(path).name in sniff.MP4_FAMILY:
        try:
            kept, left_out = streams.copy_picture_and_sound(tools, path, name, scratch, limits)
        except streams.StreamError as error:
            return Result("copy-failed", str(error))
        name = streams.COPY_NAME
        path = scratch / name
    outcome = sandbox.run(tools, [tools.mat2, f"/work/{name}"], path, name, scratch, limits)
    if path.parent == scratch:
        path.unlink()  # mat2 has read it: the disk holds two copies of the video, not three
    failure = _failure(outcome, limits)
    stem, dot, ext = name.partition(".")
    cleaned = scratch / f"{stem}.cleaned{dot}{ext}"
    if failure or not cleaned.is_file():
        return failure or Result("failed", "no cleaned copy was written")
    failure, after = show(tools, cleaned, scratch, limits)
    if failure:
        return failure
    failure = check_no_other_tracks(cleaned)
    if failure:
        return failure
    if kept is not None:
        try:
            streams.check_copy(tools, cleaned, kept, scratch, limits)
        except streams.StreamError as error:
            return Result("failed", str(error))
    removed = tuple(dict.fromkeys(left_out)) + tuple(field for field in before if field not in after)
    return Result("cleaned", "", cleaned, removed, after)


def check_no_other_tracks(cleaned: Path) -> Result | None:
    """A failed Result if a cleaned MP4 still has a track that is neither picture nor sound."""
    if sniff.detect(cleaned).name in sniff.MP4_FAMILY and tracks.other_tracks(cleaned):
        return Result("failed", "a track that is neither picture nor sound was left in the copy")
    return None


def fields(output: str) -> tuple[str, ...]:
    """Field names from ``mat2 --show``, prefixed with the archive member they belong to."""
    found: list[str] = []
    members: list[str] = []
    for line in output.splitlines():
        header = _HEADER.match(line)
        if header:
            depth = len(header.group(1))
            members = members[: depth - 2] + ([header.group(2)] if depth > 1 else [])
            continue
        field = _FIELD.match(line)
        if field and not line.lstrip().startswith("No metadata found"):
            name = " / ".join([*members, field.group(1).strip()])
            found.append(sandbox.printable(name)[:MAX_FIELD])
    return tuple(dict.fromkeys(found))


def _failure(outcome: sandbox.Outcome, limits: Limits) -> Result | None:
    if outcome.timed_out:
        return Result("timeout", str(limits.seconds))
    if outcome.killed:
        return Result("crashed")
    problem = next((line for line in outcome.output.splitlines() if line.startswith("[-]") or line.startswith("ERROR")), None)
    if problem and _UNSUPPORTED.search(problem):
        return Result("unsupported")
    if problem or outcome.returncode != 0:
        reason = problem or next((line for line in reversed(outcome.output.splitlines()) if line.strip()), "")
        return Result("failed", sandbox.printable(reason.replace("/work/", ""))[:200] or f"exit status {outcome.returncode}")
    return None
