"""Which streams of an MP4 or QuickTime file go into its cleaned copy, and that first copy.

Such a file (``.mp4``, ``.mov``, ``.m4a``, ``.3gp``: one family) may hold more than
picture and sound, and mat2 copies every stream as it is:

- tracks that are nothing but metadata: a camera's or drone's GPS track, a timecode
  (the time of day), an iPhone's timed metadata;
- pictures: cover art, or a still image stored as a track of its own, whose JPEG or
  PNG keeps its own EXIF (GPS, a serial number); Motion JPEG video, whose every frame
  may carry it too;
- text inside the picture stream: H.264 and HEVC carry "SEI" messages, where x264
  writes its settings and a camera may write anything, and NAL units no decoder
  needs (delimiters, filler, reserved, unspecified), which may carry anything too.

So ffprobe lists the streams (in the sandbox), and ffmpeg copies only sound and
moving picture in a video codec into an MP4, with only the NAL units that make the
picture and without metadata, not re-encoded; HEVC's picture header keeps only its
parameter sets (keys.cleaning.hevc_header). Uncompressed sound as cameras record it
(16- or 24-bit PCM, mono or stereo), which ffmpeg cannot write into an MP4, is encoded
as ALAC, and checked to decode to the same samples. A file whose only picture is still
images (Motion JPEG) is refused: it cannot be cleaned without re-encoding. What was left
out is named for the report, and the copy is listed again to check it holds only what
was kept.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from keys.cleaning import hevc_header, sandbox
from keys.cleaning.sandbox import Limits, Tools
from keys.told import told

COPY_NAME = "picture-and-sound.mp4"
_LIST_NAME = "streams.json"  # ffprobe's answer: a file of its own, apart from its complaints
_LIST_LIMIT = 1 << 20
# Picture codecs that hold still images (each frame a file format of its own, with room for EXIF).
STILL_PICTURES = frozenset({"mjpeg", "jpeg2000", "jpegls", "png", "apng", "bmp", "gif", "tiff", "webp", "ljpeg"})
# The NAL unit types of each video codec that the copy keeps: the picture's slices, parameter
# sets, and the ends of sequence and of stream (which change how what follows them decodes).
# Everything else is left out: SEI messages (where x264 writes its settings and a camera may
# write anything), access unit delimiters (a decoder needs none, and their payload can carry
# text), filler, reserved and unspecified types (Dolby Vision's metadata is type 62 in HEVC).
_PICTURE_UNITS = {"h264": "1-5|7|8|10|11", "hevc": "0-9|16-21|32-34|36|37"}
# The ends of sequence and of stream hold nothing but their header (1 byte in H.264, 2 in HEVC,
# layer 0): a copy where one holds more is refused. Written out on their own with start codes,
# such units and zeros must be all there is.
_END_UNITS = {"h264": ("10|11", re.compile(rb"\x00\x00\x01[\x0a\x0b\x2a\x2b\x4a\x4b\x6a\x6b]")),  # any nal_ref_idc
              "hevc": ("36|37", re.compile(rb"\x00\x00\x01[\x48\x4a][\x01-\x07]"))}
_ENDS_NAME = "ends.raw"
# Uncompressed sound ffmpeg cannot write into an MP4, which ALAC encodes without loss: 16 and
# 24 bits, mono or stereo (ffmpeg would remix other layouts into one ALAC knows).
TO_ALAC = frozenset({"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be"})
_ALAC_CHANNELS = (1, 2)
_SAMPLES = ("samples-original.md5", "samples-copy.md5")


@dataclasses.dataclass(frozen=True)
class Stream:
    index: int
    kind: str  # ffprobe's codec_type: video, audio, data, subtitle, attachment
    codec: str
    tag: str  # the format's four characters in the file (gpmd, tmcd, mebx...)
    attached_picture: bool
    channels: int = 0  # sound only
    sample_rate: str = ""

    def describe(self) -> str:
        """e.g. ``data/gpmd``, ``video/mjpeg (cover art)``: the format's tag says more than the codec for data."""
        label = self.tag if self.kind not in ("video", "audio") and self.tag else self.codec
        return f"{self.kind}/{label}" + (" (cover art)" if self.attached_picture else "")

    @property
    def still_picture(self) -> bool:
        return self.kind == "video" and not self.attached_picture and self.codec in STILL_PICTURES

    @property
    def moving_picture(self) -> bool:
        return self.kind == "video" and not self.attached_picture and not self.still_picture

    @property
    def kept(self) -> bool:
        return self.kind == "audio" or self.moving_picture

    @property
    def to_alac(self) -> bool:
        return self.kind == "audio" and self.codec in TO_ALAC and self.channels in _ALAC_CHANNELS

    @property
    def in_copy(self) -> Stream:
        """This stream as the copy holds it: the same, or its PCM sound as ALAC."""
        return dataclasses.replace(self, codec="alac") if self.to_alac else self

    def shape(self) -> tuple[str, str, int, str]:
        """What the copy must keep of it."""
        return self.kind, self.codec, self.channels, self.sample_rate


class StreamError(Exception):
    """The streams could not be listed, or none can be kept: the file is not cleaned (``args[0]`` says why)."""


def list_streams(tools: Tools, path: Path, name: str, scratch: Path, limits: Limits) -> list[Stream]:
    """The streams of ``path`` as ffprobe lists them. A decoder's complaint about a damaged frame
    (on stderr) does not stop it: the list is read from a file of its own."""
    listing = scratch / _LIST_NAME
    listing.unlink(missing_ok=True)
    argv = ["ffprobe", "-v", "error", "-show_entries",
            "stream=index,codec_type,codec_name,codec_tag_string,channels,sample_rate:stream_disposition=attached_pic",
            "-of", "json", "-o", f"/work/{_LIST_NAME}", f"/work/{name}"]  # fmt: skip
    outcome = sandbox.run(tools, argv, path, name, scratch, limits)
    try:
        if outcome.returncode != 0 or outcome.timed_out or listing.stat().st_size > _LIST_LIMIT:
            raise ValueError
        listed = json.loads(listing.read_bytes())["streams"]
        return [Stream(int(s["index"]), str(s.get("codec_type", "unknown")), str(s.get("codec_name", "unknown")),
                       sandbox.printable(str(s.get("codec_tag_string", "")))[:16], bool(s.get("disposition", {}).get("attached_pic")),
                       int(s.get("channels", 0)), sandbox.printable(str(s.get("sample_rate", "")))[:16])
                for s in listed]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise StreamError(told("ffprobe could not list its streams")) from None


def copy_picture_and_sound(tools: Tools, path: Path, name: str, scratch: Path, limits: Limits) -> tuple[list[Stream], list[str]]:
    """Write scratch/COPY_NAME; return the streams kept (as the copy holds them) and what was left out, for the report
    (``track data/gpmd``, ``HEVC header/SEI``). Raises StreamError (and writes nothing usable) when
    the streams cannot be listed, a picture is of still images, or nothing is kept."""
    streams = list_streams(tools, path, name, scratch, limits)
    stills = [s for s in streams if s.still_picture]
    if stills and not any(s.moving_picture for s in streams):
        raise StreamError(told("its picture is a series of still images ({codec}), each of which may carry its own EXIF", codec=stills[0].codec))
    kept = [s for s in streams if s.kept]
    if not kept:
        raise StreamError(told("it holds no sound and no moving picture"))
    pcm = next((s for s in kept if s.kind == "audio" and s.codec.startswith("pcm_") and not s.to_alac), None)
    if pcm is not None:
        raise StreamError(told("its sound, {codec} in {channels} channel(s), cannot be put into an MP4 unchanged", codec=pcm.codec, channels=pcm.channels))
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"/work/{name}"]
    for stream in kept:
        argv += ["-map", f"0:{stream.index}"]
    argv += ["-c", "copy"]
    for position, stream in enumerate(kept):
        if stream.codec in _PICTURE_UNITS:
            argv += [f"-bsf:{position}", f"filter_units=pass_types={_PICTURE_UNITS[stream.codec]}"]
        if stream.in_copy.codec != stream.codec:
            argv += [f"-c:{position}", stream.in_copy.codec]
    argv += ["-map_metadata", "-1", "-map_chapters", "-1", "-f", "mp4", f"/work/{COPY_NAME}"]
    outcome = sandbox.run(tools, argv, path, name, scratch, limits)
    if outcome.timed_out or outcome.killed:
        raise StreamError(told("ffmpeg went over its time or memory limit"))
    if outcome.returncode != 0 or not (scratch / COPY_NAME).is_file():
        raise StreamError(_ffmpeg_reason(outcome))
    try:
        header_left_out = hevc_header.keep_parameter_sets(scratch / COPY_NAME)
    except (hevc_header.HeaderError, OSError) as error:
        raise StreamError(told("its HEVC picture header could not be rewritten: {error}", error=error)) from None
    in_copy = [stream.in_copy for stream in kept]
    check_copy(tools, scratch / COPY_NAME, in_copy, scratch, limits)  # first: the checks below go by position
    _check_same_samples(tools, path, name, kept, scratch, limits)
    _check_empty_ends(tools, scratch / COPY_NAME, in_copy, scratch, limits)
    return in_copy, [f"track {s.describe()}" for s in streams if not s.kept] + header_left_out


def _ffmpeg_reason(outcome: sandbox.Outcome) -> str:
    """Why ffmpeg made no copy, in words a journalist can read where ffmpeg says it."""
    lines = outcome.output.splitlines()
    untagged = next((re.search(r"Could not find tag for codec (\w+)", line) for line in lines if "Could not find tag" in line), None)
    if untagged:
        return f"ffmpeg cannot write {untagged.group(1)} into an MP4"
    reason = next((line for line in reversed(lines) if line.strip()), f"exit status {outcome.returncode}")
    return sandbox.printable(reason.replace("/work/", ""))[:200]


def _check_same_samples(tools: Tools, path: Path, name: str, kept: list[Stream], scratch: Path, limits: Limits) -> None:
    """Raise StreamError unless each sound encoded as ALAC decodes to the original's samples
    (ffmpeg, in the sandbox, hashes both as 32-bit samples: 16 and 24 bits fit without change)."""
    for position, stream in enumerate(kept):
        if not stream.to_alac:
            continue
        for old in _SAMPLES:
            (scratch / old).unlink(missing_ok=True)
        argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"/work/{name}", "-i", f"/work/{COPY_NAME}",
                "-map", f"0:{stream.index}", "-c:a", "pcm_s32le", "-f", "md5", f"/work/{_SAMPLES[0]}",
                "-map", f"1:{position}", "-c:a", "pcm_s32le", "-f", "md5", f"/work/{_SAMPLES[1]}"]  # fmt: skip
        outcome = sandbox.run(tools, argv, path, name, scratch, limits)
        try:
            hashes = [(scratch / digest).read_text()[:200] for digest in _SAMPLES]
        except OSError:
            hashes = []
        for digest in _SAMPLES:
            (scratch / digest).unlink(missing_ok=True)
        if outcome.timed_out or outcome.killed:
            raise StreamError(told("ffmpeg went over its time or memory limit"))
        if outcome.returncode != 0 or len(hashes) != 2 or hashes[0] != hashes[1] or not hashes[0].startswith("MD5="):
            raise StreamError(told("its sound ({codec}) would not come out the same as ALAC", codec=stream.codec))


def _check_empty_ends(tools: Tools, copy: Path, kept: list[Stream], scratch: Path, limits: Limits) -> None:
    """Raise StreamError if an end of sequence or of stream in the copy's picture holds more than
    its header: text there would pass the filter that keeps these units."""
    for position, stream in enumerate(kept):
        if stream.codec not in _END_UNITS:
            continue
        types, empty_unit = _END_UNITS[stream.codec]
        ends = scratch / _ENDS_NAME
        ends.unlink(missing_ok=True)
        argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"/work/{copy.name}", "-map", f"0:{position}", "-c", "copy",
                "-bsf:v", f"filter_units=pass_types={types}", "-f", stream.codec, f"/work/{_ENDS_NAME}"]  # fmt: skip
        outcome = sandbox.run(tools, argv, copy, copy.name, scratch, limits)
        try:
            if outcome.timed_out or outcome.killed or outcome.returncode != 0:
                raise StreamError(told("ffmpeg could not read the ends of its picture's sequences"))
            with open(ends, "rb") as raw:
                leftover = empty_unit.sub(b"", raw.read()).strip(b"\x00")
        finally:
            ends.unlink(missing_ok=True)
        if leftover:
            raise StreamError(told("an end-of-sequence marker in its picture holds data, which may be anything"))


def check_copy(tools: Tools, copy: Path, kept: list[Stream], scratch: Path, limits: Limits) -> None:
    """Raise StreamError unless ``copy`` (in the scratch folder) holds exactly the streams kept,
    and HEVC picture headers hold only parameter sets."""
    copied = list_streams(tools, copy, copy.name, scratch, limits)
    if sorted(s.shape() for s in copied) != sorted(s.shape() for s in kept) or any(s.attached_picture for s in copied):
        raise StreamError(told("the copy does not hold the streams kept, no more and no fewer (a damaged file?)"))
    try:
        extras = hevc_header.header_extras(copy)
    except (hevc_header.HeaderError, OSError) as error:
        raise StreamError(told("its HEVC picture header could not be read: {error}", error=error)) from None
    if extras:
        raise StreamError(told("the copy's HEVC picture header still holds more than parameter sets ({names})", names=', '.join(extras)))
