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
from keys.told import told

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
        size = os.fstat(f.fileno()).st_size
        moov = next((box for box in boxes(f, 0, size, [MAX_BOXES]) if box.kind == b"moov"), None)
        if moov is None or not _edits(f, moov)[1]:
            return []  # nothing to leave out: moov is not read whole (a day-long H.264 video's is large)
        if moov.end - moov.header > MAX_MOOV:
            raise HeaderError(told("the MP4's moov box is larger than a video needs"))
        f.seek(moov.header)
        original = f.read(moov.end - moov.header)
        rewritten, removed = rewrite_moov(original)
        room = len(original) - len(rewritten)
        f.seek(moov.header)
        f.write(rewritten)
        if moov.end == size:
            f.truncate()
        elif room >= 8:
            f.write(struct.pack(">I4s", room, b"free") + bytes(room - 8))
        else:
            raise HeaderError(told("the HEVC header shrank by too little to leave a free box in its place"))
    return removed


def header_extras(path: Path) -> list[str]:
    """What keep_parameter_sets() would leave out of the MP4 at ``path`` ([]: only parameter sets)."""
    with open(path, "rb") as f:
        moov = next((box for box in boxes(f, 0, os.fstat(f.fileno()).st_size, [MAX_BOXES]) if box.kind == b"moov"), None)
        return _edits(f, moov)[1] if moov is not None else []


def rewrite_moov(moov: bytes) -> tuple[bytes, list[str]]:
    """``moov`` (a whole box, header included) with each hvcC holding only parameter sets, and
    what was left out. Raises HeaderError for an hvcC that does not add up."""
    f = io.BytesIO(moov)
    top = next(boxes(f, 0, len(moov), [MAX_BOXES]), None)
    if top is None or top.kind != b"moov":
        return moov, []
    edits, removed = _edits(f, top)
    buffer = bytearray(moov)
    for ancestors, record, kept in reversed(edits):  # from the end: an edit moves nothing before it
        buffer[record.payload : record.end] = kept
        for box in (*ancestors, record):
            _shrink(buffer, box, (record.end - record.payload) - len(kept))
    return bytes(buffer), removed


def _edits(f, moov: Box) -> tuple[list[tuple[tuple[Box, ...], Box, bytes]], list[str]]:
    """For each hvcC under ``moov`` that holds more than parameter sets: (its ancestors from moov
    down, the hvcC box, its record rewritten); and what would be left out, for the report."""
    edits, removed = [], set()
    for ancestors, record in _hevc_records(f, moov):
        f.seek(record.payload)
        kept, left_out = _parameter_sets_only(f.read(record.end - record.payload))
        if left_out:
            edits.append((ancestors, record, kept))
            removed.update(left_out)
    return edits, sorted(f"HEVC header/{what}" for what in removed)


def _hevc_records(f, moov: Box):
    """(ancestors, hvcC box) of each HEVC sample entry, ancestors from moov down."""
    budget = [MAX_BOXES]
    for trail in _descend(f, [moov], _PATH, budget):
        stsd = trail[-1]
        for entry in boxes(f, stsd.payload + _STSD_FIELDS, stsd.end, budget):
            if entry.kind not in _HEVC_ENTRIES:
                continue
            for child in boxes(f, entry.payload + _VISUAL_FIELDS, entry.end, budget):
                if child.kind == b"hvcC":
                    yield (*trail, entry), child
    if budget[0] <= 0:
        raise HeaderError(told("the MP4 has more boxes than a video has"))


def _descend(f, trail: list[Box], path: tuple[bytes, ...], budget: list[int]):
    for child in boxes(f, trail[-1].payload, trail[-1].end, budget):
        if child.kind == path[0]:
            yield from ([[*trail, child]] if len(path) == 1 else _descend(f, [*trail, child], path[1:], budget))


def _parameter_sets_only(record: bytes) -> tuple[bytes, set[str]]:
    """The hvcC record with its parameter sets only, and what else it held. A NAL unit is kept
    when its own header, not only its array's, says it is a parameter set of the array's type."""
    if len(record) <= _RECORD_FIELDS:
        raise HeaderError(told("an HEVC header record is shorter than its fixed fields"))
    position, arrays, left_out = _RECORD_FIELDS + 1, [], set()
    for _ in range(record[_RECORD_FIELDS]):
        if position + 3 > len(record):
            raise HeaderError(told("an HEVC header record ends inside an array"))
        flags_and_type, count = record[position], struct.unpack_from(">H", record, position + 1)[0]
        array_type, units = flags_and_type & 0x3F, []
        position += 3
        for _ in range(count):
            if position + 2 > len(record):
                raise HeaderError(told("an HEVC header record ends inside an array"))
            end = position + 2 + struct.unpack_from(">H", record, position)[0]
            if end > len(record):
                raise HeaderError(told("a NAL unit in an HEVC header record runs past its end"))
            unit = record[position + 2 : end]
            unit_type = (unit[0] >> 1) & 0x3F if unit else None
            if array_type in PARAMETER_SETS and unit_type == array_type:
                units.append(record[position:end])
            else:
                left_out.add("SEI" if {array_type, unit_type} & _SEI else f"NAL unit type {unit_type if unit_type is not None else array_type}")
            position = end
        if units:
            arrays.append(bytes([flags_and_type]) + struct.pack(">H", len(units)) + b"".join(units))
    if position < len(record):
        left_out.add("bytes after the arrays")
    return record[:_RECORD_FIELDS] + bytes([len(arrays)]) + b"".join(arrays), left_out


def _shrink(buffer: bytearray, box: Box, by: int) -> None:
    """Take ``by`` bytes off the size field of ``box`` (a size of 0, "to the end", stays)."""
    size = struct.unpack_from(">I", buffer, box.header)[0]
    if size == 1:
        struct.pack_into(">Q", buffer, box.header + 8, struct.unpack_from(">Q", buffer, box.header + 8)[0] - by)
    elif size != 0:
        struct.pack_into(">I", buffer, box.header, size - by)
