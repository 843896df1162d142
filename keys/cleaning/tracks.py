"""The tracks of an MP4 or QuickTime file that are neither picture nor sound, read from its boxes.

Action cameras, drones and dashcams record where they were as a track of its
own (GoPro's ``gpmd``, Google's ``camm``, Apple's ``mebx`` timed metadata),
and cameras write the time of day as a timecode track (``tmcd``). mat2 copies
every track of a video as it is, so such a track is left out before mat2 runs
(keys.cleaning.metadata), and the original is flagged. Only box headers and a few bytes
of each track's handler and sample description are read; ``mdat``, however
large, is skipped over.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

PICTURE_AND_SOUND = frozenset({b"vide", b"soun"})
MAX_BOXES = 10_000  # boxes read per file: a real video has a few hundred
_PATH = (b"mdia", b"minf", b"stbl", b"stsd")


class Box(NamedTuple):
    kind: bytes
    header: int  # where the box starts (its size field)
    payload: int
    end: int


def other_tracks(path: Path) -> list[str]:
    """``handler/format`` of each track that is not picture or sound, e.g. ``meta/gpmd``; [] if there are none or the file is damaged."""
    with open(path, "rb") as f:
        return tracks_in(f, os.fstat(f.fileno()).st_size)


def tracks_in(f: BinaryIO, size: int) -> list[str]:
    """other_tracks() of an open file of ``size`` bytes (what the fuzzing harness feeds)."""
    budget = [MAX_BOXES]
    moov = next((box for box in boxes(f, 0, size, budget) if box.kind == b"moov"), None)
    if moov is None:
        return []
    found = []
    for trak in boxes(f, moov.payload, moov.end, budget):
        if trak.kind != b"trak":
            continue
        handler = _handler(f, trak.payload, trak.end, budget)
        if handler is not None and handler not in PICTURE_AND_SOUND:
            found.append(f"{_text(handler)}/{_text(_sample_format(f, trak.payload, trak.end, budget))}")
    return found


def boxes(f: BinaryIO, start: int, end: int, budget: list[int]) -> Iterator[Box]:
    """Each box between ``start`` and ``end``, while ``budget[0]`` (boxes left to read) lasts;
    a box that claims more than the room it has ends the list."""
    position = start
    while position + 8 <= end and budget[0] > 0:
        budget[0] -= 1
        f.seek(position)
        header = f.read(16)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header[:8])
        payload = position + 8
        if size == 1:
            if len(header) < 16:
                return
            size = struct.unpack(">Q", header[8:16])[0]
            payload = position + 16
        elif size == 0:
            size = end - position
        if size < payload - position or position + size > end:
            return
        yield Box(kind, position, payload, position + size)
        position += size


def _child(f: BinaryIO, start: int, end: int, path: tuple[bytes, ...], budget: list[int]) -> tuple[int, int] | None:
    for box in boxes(f, start, end, budget):
        if box.kind == path[0]:
            return (box.payload, box.end) if len(path) == 1 else _child(f, box.payload, box.end, path[1:], budget)
    return None


def _handler(f: BinaryIO, start: int, end: int, budget: list[int]) -> bytes | None:
    """The handler type of a trak: mdia/hdlr holds version and flags, a pre-defined field, then the type."""
    hdlr = _child(f, start, end, (b"mdia", b"hdlr"), budget)
    if hdlr is None or hdlr[1] - hdlr[0] < 12:
        return None
    f.seek(hdlr[0] + 8)
    return f.read(4)


def _sample_format(f: BinaryIO, start: int, end: int, budget: list[int]) -> bytes:
    """The format of a trak's first sample description: stsd holds version and flags, a count, then sample entries."""
    stsd = _child(f, start, end, _PATH, budget)
    if stsd is None or stsd[1] - stsd[0] < 16:
        return b"?"
    f.seek(stsd[0] + 12)
    return f.read(4)


def _text(code: bytes) -> str:
    """A four-byte code as printable ASCII; "/" too becomes "?", as it separates handler and format."""
    return "".join(chr(b) if 0x21 <= b < 0x7F and b != 0x2F else "?" for b in code) or "?"
