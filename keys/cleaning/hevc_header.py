"""The picture header of HEVC video in an MP4 (its ``hvcC`` record): only the parameter sets are kept.

An HEVC track's sample description holds a record of the NAL units a decoder needs
before the first frame: the video, sequence and picture parameter sets (VPS, SPS,
PPS). The record may hold SEI messages too, and x265 writes its version and every
setting there; a camera may write anything. ffmpeg's SEI filter (keys.cleaning.streams)
reaches the frames, not this record. So in the copy ffmpeg made, every ``hvcC`` is
rewritten with its parameter sets only, and each box around it shrinks by as much.

Only ``moov`` is rewritten, never ``mdat``: where ``moov`` is the file's last box the file
is cut short, as ffmpeg writes it; elsewhere a ``free`` box of zeros fills the room, so
the frames stay where the chunk offsets say they are. Every length is checked against
the room it claims; a record that does not add up is refused, not guessed at.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

from keys.cleaning.tracks import MAX_BOXES, Box, boxes

PARAMETER_SETS = frozenset({32, 33, 34})  # VPS, SPS, PPS: all a decoder needs from the header
_SEI = frozenset({39, 40})  # prefix and suffix SEI
_HEVC_ENTRIES = frozenset({b"hvc1", b"hev1", b"dvh1", b"dvhe"})  # the sample entries that hold an hvcC
_VISUAL_FIELDS = 78  # a visual sample entry's fields before its child boxes
_STSD_FIELDS = 8  # version, flags and the entry count, before the entries
_RECORD_FIELDS = 22  # hvcC's fixed fields before its count of arrays
_PATH = (b"trak", b"mdia", b"minf", b"stbl", b"stsd")
MAX_MOOV = 64 << 20  # an hour of video at 60 frames a second needs a few MiB


class HeaderError(Exception):
    """The MP4's boxes or an hvcC record do not add up (``args[0]`` says what)."""


def keep_parameter_sets(path: Path) -> list[str]:
    """Rewrite every hvcC of the MP4 at ``path`` to hold its parameter sets only; return what was
    left out, for the report (e.g. ``HEVC header/SEI``), [] if nothing was."""
    with open(path, "r+b") as f:
        moov, data = _read_moov(f)
        if moov is None:
            return []
        rewritten, removed = rewrite_moov(data)
        if not removed:
            return []
        room = len(data) - len(rewritten)
        f.seek(moov.header)
        f.write(rewritten)
        if moov.end == os.fstat(f.fileno()).st_size:
            f.truncate()
        elif room >= 8:
            f.write(struct.pack(">I4s", room, b"free") + bytes(room - 8))
        else:
            raise HeaderError("the HEVC header shrank by too little to leave a free box in its place")
    return removed


def header_extras(path: Path) -> list[str]:
    """What keep_parameter_sets() would leave out of the MP4 at ``path`` ([]: only parameter sets)."""
    with open(path, "rb") as f:
        moov, data = _read_moov(f)
    return rewrite_moov(data)[1] if moov is not None else []


def _read_moov(f) -> tuple[Box | None, bytes]:
    moov = next((box for box in boxes(f, 0, os.fstat(f.fileno()).st_size, [MAX_BOXES]) if box.kind == b"moov"), None)
    if moov is None:
        return None, b""
    if moov.end - moov.header > MAX_MOOV:
        raise HeaderError("the MP4's moov box is larger than a video needs")
    f.seek(moov.header)
    return moov, f.read(moov.end - moov.header)


def rewrite_moov(moov: bytes) -> tuple[bytes, list[str]]:
    """``moov`` (a whole box, header included) with each hvcC holding only parameter sets, and
    what was left out. Raises HeaderError for an hvcC that does not add up."""
    found = list(_hevc_records(moov))
    buffer = bytearray(moov)
    removed: set[str] = set()
    for ancestors, record in reversed(found):  # from the end: an edit moves nothing before it
        kept, left_out = _parameter_sets_only(moov[record.payload : record.end])
        if not left_out:
            continue
        removed.update(left_out)
        shrink = (record.end - record.payload) - len(kept)
        buffer[record.payload : record.end] = kept
        for box in (*ancestors, record):
            _shrink(buffer, box, shrink)
    return bytes(buffer), sorted(f"HEVC header/{what}" for what in removed)


def _hevc_records(moov: bytes):
    """(ancestors, hvcC box) of each HEVC sample entry, ancestors from moov down."""
    f, budget = io.BytesIO(moov), [MAX_BOXES]
    top = next(boxes(f, 0, len(moov), budget), None)
    if top is None or top.kind != b"moov":
        return
    for trail in _descend(f, [top], _PATH, budget):
        stsd = trail[-1]
        for entry in boxes(f, stsd.payload + _STSD_FIELDS, stsd.end, budget):
            if entry.kind not in _HEVC_ENTRIES:
                continue
            for child in boxes(f, entry.payload + _VISUAL_FIELDS, entry.end, budget):
                if child.kind == b"hvcC":
                    yield (*trail, entry), child
    if budget[0] <= 0:
        raise HeaderError("the MP4 has more boxes than a video has")


def _descend(f, trail: list[Box], path: tuple[bytes, ...], budget: list[int]):
    for child in boxes(f, trail[-1].payload, trail[-1].end, budget):
        if child.kind == path[0]:
            yield from ([[*trail, child]] if len(path) == 1 else _descend(f, [*trail, child], path[1:], budget))


def _parameter_sets_only(record: bytes) -> tuple[bytes, set[str]]:
    """The hvcC record with its parameter-set arrays only, and what else it held."""
    if len(record) <= _RECORD_FIELDS:
        raise HeaderError("an HEVC header record is shorter than its fixed fields")
    position, kept, left_out = _RECORD_FIELDS + 1, [], set()
    for _ in range(record[_RECORD_FIELDS]):
        start = position
        if position + 3 > len(record):
            raise HeaderError("an HEVC header record ends inside an array")
        nal_type, count = record[position] & 0x3F, struct.unpack_from(">H", record, position + 1)[0]
        position += 3
        for _ in range(count):
            if position + 2 > len(record):
                raise HeaderError("an HEVC header record ends inside an array")
            position += 2 + struct.unpack_from(">H", record, position)[0]
        if position > len(record):
            raise HeaderError("a NAL unit in an HEVC header record runs past its end")
        if nal_type in PARAMETER_SETS:
            kept.append(record[start:position])
        else:
            left_out.add("SEI" if nal_type in _SEI else f"NAL unit type {nal_type}")
    if position < len(record):
        left_out.add("bytes after the arrays")
    return record[:_RECORD_FIELDS] + bytes([len(kept)]) + b"".join(kept), left_out


def _shrink(buffer: bytearray, box: Box, by: int) -> None:
    """Take ``by`` bytes off the size field of ``box`` (a size of 0, "to the end", stays)."""
    size = struct.unpack_from(">I", buffer, box.header)[0]
    if size == 1:
        struct.pack_into(">Q", buffer, box.header + 8, struct.unpack_from(">Q", buffer, box.header + 8)[0] - by)
    elif size != 0:
        struct.pack_into(">I", buffer, box.header, size - by)
