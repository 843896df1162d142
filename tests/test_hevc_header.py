"""keys.cleaning.hevc_header: HEVC's picture header (hvcC) keeps its parameter sets only.

Files are made here by Debian's ffmpeg with libx265, which writes its version and settings
into an SEI message in that header. The results are read back by ffmpeg (decoded frames,
trace_headers), not only by the module's own reader.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from keys.cleaning import hevc_header, streams
from keys.cleaning.sandbox import Limits, find_tools
from tests import cleaning_media as made
from tests.test_cleaning_media import hevc_header_nal_types


def _ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *arguments], check=True, timeout=120)


@pytest.fixture(scope="module")
def x265(tmp_path_factory) -> Path:
    """One second of x265 picture in an MP4 whose moov follows mdat, as ffmpeg writes it."""
    path = tmp_path_factory.mktemp("hevc") / "x265.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1", "-c:v", "libx265", "-preset", "ultrafast",
            "-x265-params", "log-level=error", "-tag:v", "hvc1", "-map_metadata", "-1", "-y", str(path))  # fmt: skip
    return path


def decoded(path: Path) -> str:
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "framemd5", "-"], capture_output=True, text=True, check=True, timeout=60)
    return "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))


def boxes_at_top(path: Path) -> list[tuple[bytes, int]]:
    data, found, position = path.read_bytes(), [], 0
    while position < len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        found.append((kind, size))
        position += size
    return found


def test_a_copy_with_moov_last_is_cut_short_and_decodes_the_same(x265, tmp_path):
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(x265.read_bytes())
    assert hevc_header_nal_types(copy) == [32, 33, 34, 39] and hevc_header.header_extras(copy) == ["HEVC header/SEI"]
    assert hevc_header.keep_parameter_sets(copy) == ["HEVC header/SEI"]
    assert hevc_header_nal_types(copy) == [32, 33, 34] and hevc_header.header_extras(copy) == []
    assert made.HEVC_ENCODER_TEXT in x265.read_bytes() and made.HEVC_ENCODER_TEXT not in copy.read_bytes()
    assert copy.stat().st_size < x265.stat().st_size and boxes_at_top(copy)[-1][0] == b"moov"
    assert decoded(copy) == decoded(x265) != ""
    assert hevc_header.keep_parameter_sets(copy) == []  # a second pass finds nothing more


def test_with_moov_before_the_frames_a_free_box_keeps_them_where_the_offsets_say(x265, tmp_path):
    """As phones and `-movflags +faststart` write it: moov first, so shrinking it would move every frame."""
    faststart = tmp_path / "faststart.mp4"
    _ffmpeg("-i", str(x265), "-c", "copy", "-movflags", "+faststart", "-y", str(faststart))
    before = faststart.read_bytes()
    assert [kind for kind, _ in boxes_at_top(faststart)].index(b"moov") < [kind for kind, _ in boxes_at_top(faststart)].index(b"mdat")
    assert hevc_header.keep_parameter_sets(faststart) == ["HEVC header/SEI"]
    after = faststart.read_bytes()
    assert len(after) == len(before) and made.HEVC_ENCODER_TEXT not in after
    kinds = [kind for kind, _ in boxes_at_top(faststart)]
    free = dict(boxes_at_top(faststart))[b"free"]
    assert kinds[kinds.index(b"moov") + 1] == b"free" and after[after.index(b"free") + 4 :][: free - 8] == bytes(free - 8)
    assert decoded(faststart) == decoded(x265) and hevc_header_nal_types(faststart) == [32, 33, 34]


def _moov_with_record(record: bytes) -> bytes:
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(payload), kind) + payload

    entry = box(b"hvc1", bytes(78) + box(b"hvcC", record))
    stsd = box(b"stsd", bytes(4) + struct.pack(">I", 1) + entry)
    return box(b"moov", box(b"trak", box(b"mdia", box(b"minf", box(b"stbl", stsd)))))


def _array(nal_type: int, *units: bytes) -> bytes:
    return bytes([0x80 | nal_type]) + struct.pack(">H", len(units)) + b"".join(struct.pack(">H", len(u)) + u for u in units)


def test_the_record_keeps_the_parameter_sets_in_order_and_every_size_around_it_shrinks():
    head = bytes(range(22))
    arrays = [_array(32, b"\x40\x01vps"), _array(39, b"\x4e\x01camera serial 42"), _array(33, b"\x42\x01sps"), _array(34, b"\x44\x01pps"),
              _array(40, b"\x50\x01suffix"), _array(35, b"\x46\x01aud")]  # fmt: skip
    moov = _moov_with_record(head + bytes([len(arrays)]) + b"".join(arrays) + b"trailing text")
    rewritten, left_out = hevc_header.rewrite_moov(moov)
    assert left_out == ["HEVC header/NAL unit type 35", "HEVC header/SEI", "HEVC header/bytes after the arrays"]
    assert rewritten == _moov_with_record(head + b"\x03" + arrays[0] + arrays[2] + arrays[3])
    assert b"camera serial" not in rewritten and b"trailing" not in rewritten
    assert hevc_header.rewrite_moov(rewritten) == (rewritten, [])


def test_a_unit_is_kept_only_when_its_own_header_says_parameter_set():
    """An SEI message (or anything else) filed under a parameter-set array is still left out."""
    head = bytes(22)
    sps, sei_as_sps = b"\x42\x01sps", b"\x4e\x01camera serial 42"
    array = bytes([0x80 | 33]) + struct.pack(">HH", 2, len(sps)) + sps + struct.pack(">H", len(sei_as_sps)) + sei_as_sps
    rewritten, left_out = hevc_header.rewrite_moov(_moov_with_record(head + b"\x01" + array))
    assert left_out == ["HEVC header/SEI"] and b"camera serial" not in rewritten
    assert rewritten == _moov_with_record(head + b"\x01" + _array(33, sps))


@pytest.mark.parametrize("record", [
    bytes(22),  # the fixed fields without the count of arrays
    bytes(22) + b"\x01" + bytes([0x80 | 39]),  # an array cut inside its header
    bytes(22) + b"\x01" + _array(39, b"\x4e\x01text")[:-2],  # a NAL unit longer than the record
    bytes(22) + b"\x02" + _array(32, b"\x40\x01vps"),  # one array of the two it counts
])  # fmt: skip
def test_a_record_that_does_not_add_up_is_refused(record):
    with pytest.raises(hevc_header.HeaderError):
        hevc_header.rewrite_moov(_moov_with_record(record))


def test_the_check_on_a_copy_refuses_an_encoders_text_left_in_the_header(x265, tmp_path):
    """The same check runs on mat2's output: were the header's SEI ever back, the file is refused."""
    kept = streams.list_streams(find_tools(), x265, x265.name, tmp_path, Limits())
    with pytest.raises(streams.StreamError, match=r"HEVC picture header still holds more than parameter sets \(HEVC header/SEI\)"):
        streams.check_copy(find_tools(), x265, kept, tmp_path, Limits())
