"""intake-keys clean on audio, video and HEIC: real files made by Debian's ffmpeg, heif-enc and exiftool.

The files are sent through a bundle built as the server builds it, decrypted and
then cleaned with the ``intake-keys`` command as a journalist types it. Cleaned
copies are read back with exiftool and ffprobe (outside any sandbox, as a check)
and byte by byte.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keys.cleaning.sandbox import Limits
from keys.identity import KDF_MIN, Identity
from keys.server_key import trust_server
from tests import cleaning_files, cleaning_media as made
from tests.fixtures_keys import PASSPHRASE, SERVER_PUBLIC, Source, Submission, build_export

# Under pytest-xdist one worker runs the whole module, so its costly fixture (the cleaned tips) is made once.
pytestmark = pytest.mark.xdist_group("cleaning_media")

BIN = Path(sys.executable).parent
DAY = "2026-11-28"
FOLDER = "brave otter"
# Cleaned by mat2, and a field each report line must name (names only, never values).
CLEANED = {
    "clip.mp4": ["GPSCoordinates", "Location", "Make", "Model", "CreationTime", "Title", "Artist", "Comment", "Software"],
    "clip.avi": ["Artist", "Comment", "DateCreated", "Title"],
    "clip.wmv": ["Author", "CreationDate", "Description", "Title"],
    "song.mp3": ["TPE1", "TIT2", "TENC"],
    "song.flac": ["artist", "creation_time", "description", "title"],
    "song.ogg": ["artist", "creation_time", "description", "title"],
    "photo.heic": ["GPSLatitude", "SerialNumber", "Model", "Artist", "DateTimeOriginal"],
    "long.mp4": ["GPSCoordinates", "Title"],
    "clip.mov": ["GPSCoordinates", "Location", "Make", "Model", "CreationTime", "Title", "Artist", "Comment", "Software"],
    "memo.m4a": ["Title", "Artist", "Comment", "CreateDate"],
    "timecode.mov": ["Title", "Artist", "Comment", "track data/tmcd"],
    "cover.m4a": ["track video/mjpeg (cover art)", "CoverArt", "Title", "Artist"],
    "hevc.mp4": ["HEVC header/SEI", "Title", "Artist", "Comment"],
    "camera.mov": ["Title", "Artist", "Comment"],
}
NOT_CLEANED = ("clip.webm", "clip.mkv")  # mat2 0.13 (Debian 12) has no parser for Matroska
# MP4, QuickTime and 3GP are first copied as MP4 (keys.cleaning.metadata); that fails on a stream MP4 cannot hold.
FAILED = ("float.mov", "surround.mov", "phone.3gp", "cover-only.m4a", "mjpeg.mov", "ends-h264.mp4", "ends-hevc.mp4")
ALL_PLANTED = sorted(set(made.PLANTED) | set(cleaning_files.PLANTED))


class Run:
    def __init__(self, out: Path, stdout: str, seconds: float, bodies: dict[str, bytes]):
        self.out, self.stdout, self.seconds, self.bodies = out, stdout, seconds, bodies
        self.folder = out / FOLDER

    def original(self, name: str) -> Path:
        return self.folder / f"{DAY} {name}"

    def cleaned(self, name: str) -> Path:
        stem, _, ext = name.rpartition(".")
        return self.folder / f"{DAY} {stem}.cleaned.{ext}"

    def line(self, name: str) -> str:
        (found,) = [line for line in self.stdout.splitlines() if line.startswith(f"{FOLDER}/{DAY} {name}: ")]
        return found


def media_files(folder: Path) -> dict[str, bytes]:
    bodies = {name: made.video(folder, name) for name in made.VIDEO}
    bodies |= {name: made.audio(folder, name) for name in made.AUDIO}
    bodies["photo.heic"] = made.heic(folder)
    bodies["long.mp4"] = made.long_video(folder)
    bodies["action.mp4"] = made.video_with_gps_track(folder)
    bodies["cover.m4a"] = made.audio_with_cover(folder)
    bodies["cover-only.m4a"] = made.audio_with_cover(folder, "cover-only.m4a", sound=False)
    bodies["phone.3gp"] = made.old_phone_video(folder)
    bodies["still.mp4"] = made.video_with_still_track(folder)
    bodies["mjpeg.mov"] = made.motion_jpeg(folder)
    bodies["sei.mp4"] = made.video_with_sei_text(folder)
    bodies["units-h264.mp4"] = made.video_with_foreign_units(folder, "h264")
    bodies["units-hevc.mp4"] = made.video_with_foreign_units(folder, "hevc")
    bodies["ends-h264.mp4"] = made.video_with_text_in_its_ends(folder, "h264")
    bodies["ends-hevc.mp4"] = made.video_with_text_in_its_ends(folder, "hevc")
    return bodies


def intake_keys(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "intake-keys"), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done


def decrypted(base: Path, bodies: dict[str, bytes]) -> Path:
    """The folder ``intake-keys decrypt`` writes for one source who sent ``bodies``."""
    alice = Identity.generate("alice")
    alice.save(base / "alice.secret", PASSPHRASE, KDF_MIN)
    trust_server(base / "alice.secret", SERVER_PUBLIC)
    (base / "pw").write_text(PASSPHRASE)
    submissions = [Submission("file", body, name=name) for name, body in bodies.items()]
    (base / "export.bundle").write_bytes(build_export([Source("src-1", FOLDER, submissions)], [alice]))
    intake_keys("decrypt", "export.bundle", "--key", "alice.secret", "--passphrase-file", "pw", "--out", "tips", cwd=base)
    return base / "tips"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("media")
    (base / "made").mkdir()
    bodies = media_files(base / "made")
    out = decrypted(base, bodies)
    started = time.monotonic()
    done = intake_keys("clean", "tips", cwd=base)
    return Run(out, done.stdout, time.monotonic() - started, bodies)


def exiftool(path: Path) -> str:
    return subprocess.run(["exiftool", "-a", "-u", "-G1", "-ee", str(path)], capture_output=True, text=True, timeout=60).stdout


def ffprobe(path: Path) -> str:
    """Every tag ffprobe reads: the container's, each stream's, each chapter's."""
    shown = ["format_tags", "stream_tags", "chapter_tags"]
    command = ["ffprobe", "-v", "error", "-show_entries", ":".join(shown), "-of", "json", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout


def planted_in(text: str) -> list[str]:
    return [value for value in ALL_PLANTED if value in text]


def test_the_run_cleans_audio_video_and_heic_and_names_what_it_could_not(run):
    cleaned = len(CLEANED) + 5  # and action.mp4, still.mp4, sei.mp4, units-*.mp4 (their values are not tags: tested on their own)
    not_cleaned = len(NOT_CLEANED) + len(FAILED)
    warned = 2  # action.mp4 and timecode.mov: tracks that are neither picture nor sound
    assert f"{cleaned} file(s) cleaned, {not_cleaned} not cleaned, 0 cleaned before; {warned} file(s) with warnings" in run.stdout


@pytest.mark.parametrize("name", CLEANED)
def test_the_cleaned_copy_carries_none_of_the_planted_values_and_the_original_is_untouched(run, name):
    original, cleaned = run.original(name), run.cleaned(name)
    assert original.read_bytes() == run.bodies[name]
    # The check can fail: exiftool and ffprobe find the planted values in the original.
    planted = planted_in(exiftool(original))
    assert len(planted) >= 3, (name, planted)
    assert name == "photo.heic" or planted_in(ffprobe(original)), name
    assert planted_in(exiftool(cleaned)) == [] and planted_in(ffprobe(cleaned)) == []
    assert [value for value in ALL_PLANTED if value.encode() in cleaned.read_bytes()] == []
    assert "GPS" not in exiftool(cleaned) and "location" not in ffprobe(cleaned).lower()


@pytest.mark.parametrize("name", CLEANED)
def test_the_report_names_the_fields_removed(run, name):
    line = run.line(name)
    assert line.startswith(f"{FOLDER}/{DAY} {name}: cleaned; removed: ")
    record = json.loads((run.folder / "cleaning.json").read_text())[f"{DAY} {name}"]
    assert record["status"] == "cleaned" and record["cleaned"] == run.cleaned(name).name
    assert [field for field in CLEANED[name] if field not in record["removed"]] == []
    assert planted_in(line) == [] and planted_in(json.dumps(record, ensure_ascii=False)) == []


def test_the_picture_and_sound_are_copied_not_re_encoded(run):
    """mat2 rewrites the container around the same streams: nothing is lost, and nothing inside the streams is removed."""

    def stream_hashes(path: Path) -> str:
        command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0", "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout

    def decoded(path: Path) -> str:
        command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-map", "0:a?", "-f", "framemd5", "-"]
        return "".join(line for line in subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout.splitlines(True)
                       if not line.startswith("#"))  # fmt: skip

    for name in ("clip.avi", "memo.m4a"):
        assert stream_hashes(run.original(name)) == stream_hashes(run.cleaned(name)) != ""
    # H.264 loses its SEI messages (x264's settings line among them): the same frames, decoded.
    for name in ("clip.mp4", "clip.mov", "long.mp4", "action.mp4", "timecode.mov", "still.mp4", "sei.mp4", "hevc.mp4"):
        assert decoded(run.original(name)) == decoded(run.cleaned(name)) != "", name
    assert b"x264 - core " in run.original("clip.mp4").read_bytes() and b"x264 - core " not in run.cleaned("clip.mp4").read_bytes()


def test_a_cameras_pcm_sound_is_kept_losslessly_as_alac(run):
    """An MP4 cannot hold PCM, as cameras record sound: the copy holds it as ALAC, and the samples
    decode the same, to the last of their 24 bits; the picture decodes to the same frames."""
    def decoded(path: Path, stream: str, raw: str) -> bytes:
        command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", stream, "-f", raw, "-"]
        return subprocess.run(command, capture_output=True, check=True, timeout=60).stdout

    def samples(path: Path) -> bytes:
        return decoded(path, "0:a", "s32le")

    assert streams(run.original("camera.mov")) == ["video,avc1", "audio,in24"]
    assert streams(run.cleaned("camera.mov")) == ["video,avc1", "audio,alac"]
    assert len(samples(run.original("camera.mov"))) > 30_000 and samples(run.original("camera.mov")) == samples(run.cleaned("camera.mov"))
    assert decoded(run.original("camera.mov"), "0:v", "rawvideo") == decoded(run.cleaned("camera.mov"), "0:v", "rawvideo") != b""


def test_sound_that_would_not_decode_the_same_as_alac_is_refused(run, tmp_path):
    """The check behind the conversion: a copy whose sound differs from the original's by one
    sample's worth of level is refused, not reported cleaned."""
    from keys.cleaning import streams as copying
    from keys.cleaning.sandbox import Limits, find_tools

    tools, original = find_tools(), run.original("camera.mov")
    kept = [s for s in copying.list_streams(tools, original, original.name, tmp_path, Limits()) if s.kept]
    assert [s.to_alac for s in kept] == [False, True]
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(original), "-map", "0", "-c:v", "copy", "-c:a", "alac", "-af", "volume=0.999",
                    "-f", "mp4", str(tmp_path / copying.COPY_NAME)], check=True, timeout=60)  # fmt: skip
    with pytest.raises(copying.StreamError, match=r"its sound \(pcm_s24le\) would not come out the same as ALAC"):
        copying._check_same_samples(tools, original, original.name, kept, tmp_path, Limits())
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(original), "-map", "0", "-c:v", "copy", "-c:a", "alac",
                    "-f", "mp4", str(tmp_path / copying.COPY_NAME)], check=True, timeout=60)  # fmt: skip
    copying._check_same_samples(tools, original, original.name, kept, tmp_path, Limits())  # the same samples: no complaint


def test_hevc_keeps_only_its_parameter_sets_in_its_picture_header(run):
    """x265 writes its version and settings into an SEI message in the picture header (hvcC),
    which ffmpeg's SEI filter does not reach. It is not in the copy, whose header holds the three
    parameter sets a decoder needs and nothing else."""
    original, cleaned = run.original("hevc.mp4").read_bytes(), run.cleaned("hevc.mp4").read_bytes()
    assert original.count(made.HEVC_ENCODER_TEXT) == 1
    assert made.HEVC_ENCODER_TEXT not in cleaned and b"options: " not in cleaned
    assert hevc_header_nal_types(run.original("hevc.mp4")) == [32, 33, 34, 39]
    assert hevc_header_nal_types(run.cleaned("hevc.mp4")) == [32, 33, 34]
    assert streams(run.cleaned("hevc.mp4")) == ["video,hvc1", "audio,mp4a"]


def hevc_header_nal_types(path: Path) -> list[int]:
    """The NAL unit types of the arrays in the file's hvcC, read by ffmpeg's trace_headers (not by intake's reader)."""
    command = ["ffmpeg", "-nostdin", "-i", str(path), "-map", "0:v", "-c", "copy", "-bsf:v", "trace_headers", "-frames:v", "1", "-f", "null", "-"]
    trace = subprocess.run(command, capture_output=True, text=True, timeout=60).stderr
    extradata = trace.split("Extradata")[1].split("Packet")[0]
    return [int(found) for found in re.findall(r"nal_unit_type +[01]+ = +(\d+)", extradata)]


@pytest.mark.parametrize("name", NOT_CLEANED)
def test_a_format_mat2_cannot_clean_is_said_so_and_left_alone(run, name):
    assert run.line(name) == f"{FOLDER}/{DAY} {name}: not cleaned: mat2 does not support this format"
    assert not run.cleaned(name).exists() and run.original(name).read_bytes() == run.bodies[name]
    index = (run.out / "index.html").read_text()
    (row,) = [row for row in index.split("<tr")[1:] if f"{DAY} {name}" in row]
    assert "not cleaned: mat2 does not support this format" in row and ".cleaned." not in row


def test_quicktime_and_m4a_are_cleaned_as_mp4_and_keep_their_names(run):
    """mat2 has no parser for .mov or .m4a, the way iPhones record video and voice memos: shown to
    it as .mp4, the same container is rewritten as an MP4 without the metadata; the copy keeps the
    original's extension, which players and intake's own check accept for an MP4."""
    for name in ("clip.mov", "memo.m4a"):
        cleaned = run.cleaned(name)
        assert cleaned.read_bytes()[4:12] == b"ftypisom", name
        assert run.original(name).read_bytes()[4:8] == b"ftyp" and b"com.apple.quicktime" not in cleaned.read_bytes()
    assert run.original("clip.mov").read_bytes()[8:12] == b"qt  "  # a QuickTime file, as an iPhone writes it
    assert "55.7558" in exiftool(run.original("clip.mov")) and "GPS" not in exiftool(run.cleaned("clip.mov"))


@pytest.mark.parametrize("name", FAILED)
def test_a_video_whose_streams_an_mp4_cannot_hold_is_reported_not_cleaned(run, name):
    """Sound as cameras record it (PCM), H.263 picture as older phones record it, a cover without
    sound, Motion JPEG (each frame a JPEG with its own EXIF)."""
    line = run.line(name)
    assert line.startswith(f"{FOLDER}/{DAY} {name}: not cleaned: ffmpeg could not copy the picture and sound into an MP4 (")
    assert planted_in(line) == []
    why = {"cover-only.m4a": "it holds no sound and no moving picture",
           "mjpeg.mov": "its picture is a series of still images (mjpeg), each of which may carry its own EXIF",
           "float.mov": "its sound, pcm_f32le in 1 channel(s), cannot be put into an MP4 unchanged",
           "surround.mov": "its sound, pcm_s24le in 6 channel(s), cannot be put into an MP4 unchanged",
           "ends-h264.mp4": "an end-of-sequence marker in its picture holds data, which may be anything",
           "ends-hevc.mp4": "an end-of-sequence marker in its picture holds data, which may be anything",
           "phone.3gp": "ffmpeg cannot write h263 into an MP4"}
    assert line.endswith(f"({why[name]})")
    assert not run.cleaned(name).exists() and run.original(name).read_bytes() == run.bodies[name]
    assert not [p for p in run.folder.iterdir() if p.name.startswith(".") or "cleaned" in p.name and name.split(".")[0] in p.name]


def test_cover_art_and_the_exif_in_its_picture_are_left_out(run):
    """ffmpeg reads cover art as a picture stream, and mat2 alone would copy it with its JPEG's EXIF
    (a place, a camera's serial): the copy is sound only, and none of the EXIF's values is in it."""
    assert streams(run.original("cover.m4a")) == ["audio,mp4a", "video,[0][0][0][0]"]
    assert cleaning_files.SERIAL.encode() in run.original("cover.m4a").read_bytes()
    cleaned = run.cleaned("cover.m4a")
    assert streams(cleaned) == ["audio,mp4a"]
    assert [value for value in ALL_PLANTED if value.encode() in cleaned.read_bytes()] == []
    assert b"Exif" not in cleaned.read_bytes() and b"\xff\xd8\xff" not in cleaned.read_bytes()


def test_a_still_picture_track_and_text_in_the_picture_stream_are_left_out(run):
    """A JPEG stored as a second video track keeps its EXIF; a camera's text in H.264's SEI messages
    is inside the picture stream. Neither is in the copy, whose moving picture decodes the same."""
    assert streams(run.original("still.mp4")) == ["video,avc1", "audio,mp4a", "video,mp4v"]
    assert streams(run.cleaned("still.mp4")) == ["video,avc1", "audio,mp4a"]
    assert run.line("still.mp4").startswith(f"{FOLDER}/{DAY} still.mp4: cleaned; removed: track video/mjpeg")
    assert run.line("sei.mp4").startswith(f"{FOLDER}/{DAY} sei.mp4: cleaned; ")
    assert made.SERIAL.encode() in run.original("still.mp4").read_bytes()
    assert made.SEI_TEXT.encode() in run.original("sei.mp4").read_bytes()
    for name in ("still.mp4", "sei.mp4"):
        assert [value for value in ALL_PLANTED if value.encode() in run.cleaned(name).read_bytes()] == [], name


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_nal_units_no_decoder_reads_are_left_out_of_the_picture(run, codec):
    """Access unit delimiters, filler, reserved and unspecified NAL units (Dolby Vision's metadata is
    one) are no part of the picture but may carry anything: the copy keeps only the units that
    make the picture, which decodes to the same frames; an empty end of stream is kept."""
    name = f"units-{codec}.mp4"
    text = made.UNIT_TEXT.encode()
    assert run.original(name).read_bytes().count(text) == len(made.FOREIGN_UNITS[codec])
    assert run.line(name).startswith(f"{FOLDER}/{DAY} {name}: cleaned; ")
    assert text not in run.cleaned(name).read_bytes()
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", "PATH", "-map", "0:v", "-f", "framemd5", "-"]
    frames = [subprocess.run([str(path) if part == "PATH" else part for part in command], capture_output=True, text=True, check=True, timeout=60).stdout
              for path in (run.original(name), run.cleaned(name))]  # fmt: skip
    assert [line for line in frames[0].splitlines() if not line.startswith("#")] == [line for line in frames[1].splitlines() if not line.startswith("#")] != []


def test_every_program_the_cleaner_runs_runs_in_the_sandbox(tmp_path, monkeypatch):
    """The copy of picture and sound is made by ffmpeg inside the same sandbox as mat2: every
    program started while cleaning a video goes through sandbox.run (watched, not replaced)."""
    from keys.cleaning import sandbox
    from keys.cleaning.folder import clean_folder

    started: list[str] = []
    real_run, real_popen = sandbox.run, subprocess.Popen

    def watched_run(tools, argv, *args, **kwargs):
        started.append(f"sandboxed {Path(argv[0]).name}")
        return real_run(tools, argv, *args, **kwargs)

    def watched_popen(argv, *args, **kwargs):
        if Path(str(argv[0])).name != "bwrap":
            started.append(f"outside {Path(str(argv[0])).name}")
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(sandbox, "run", watched_run)
    monkeypatch.setattr(subprocess, "Popen", watched_popen)
    (tmp_path / "made").mkdir()
    out = decrypted(tmp_path, {"action.mp4": made.video_with_gps_track(tmp_path / "made")})
    started.clear()
    assert clean_folder(out).cleaned == 1
    assert {"sandboxed ffprobe", "sandboxed ffmpeg", "sandboxed mat2"} <= set(started)
    assert [entry for entry in started if entry.startswith("outside")] == []


def test_a_damaged_video_gets_a_clear_answer_and_no_copy_short_of_a_stream(tmp_path):
    """A decoder's complaints about damaged frames (ffprobe's stderr) do not spoil the listing of
    its streams; the picture, whose SEI filter fails on the damaged frames, is missing from the
    first copy, and the check on it refuses the file with words a journalist can read."""
    from keys.cleaning.folder import clean_folder

    (tmp_path / "made").mkdir()
    body = bytearray(made.video(tmp_path / "made", "clip.mp4"))
    start = body.index(b"mdat") + 600
    body[start : start + 2000] = bytes(b ^ 0x5A for b in body[start : start + 2000])
    out = decrypted(tmp_path, {"damaged.mp4": bytes(body)})
    clean_folder(out, say=lambda line: None)
    record = json.loads((out / FOLDER / "cleaning.json").read_text())[f"{DAY} damaged.mp4"]
    assert record["status"] == "copy-failed" and record["cleaned"] is None, record
    assert record["detail"] == "the copy does not hold the streams kept, no more and no fewer (a damaged file?)"
    assert [p.name for p in (out / FOLDER).iterdir() if "cleaned" in p.name] == []


def test_the_check_on_a_copy_refuses_a_track_that_is_neither_picture_nor_sound(run):
    from keys.cleaning.metadata import check_no_other_tracks

    refused = check_no_other_tracks(run.original("action.mp4"))
    assert refused is not None and refused.status == "failed"
    assert check_no_other_tracks(run.cleaned("action.mp4")) is None and check_no_other_tracks(run.cleaned("timecode.mov")) is None


def test_an_hour_long_video_is_cleaned_within_the_default_limits(run):
    assert run.line("long.mp4").startswith(f"{FOLDER}/{DAY} long.mp4: cleaned; ")
    duration = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(run.cleaned("long.mp4"))],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert float(duration) == pytest.approx(3600, abs=1)
    assert run.seconds < 120, run.seconds  # every file of the run, the hour included, in less than one step's limit


def test_ffmpeg_runs_under_the_sandboxs_memory_limit(tmp_path):
    """200 MiB of address space is room for mat2 and exiftool, not for ffmpeg and its libraries:
    the video is reported and the HEIC beside it cleaned. ffmpeg runs inside the sandbox's limits."""
    (tmp_path / "made").mkdir()
    bodies = {"clip.mp4": made.video(tmp_path / "made", "clip.mp4"), "photo.heic": made.heic(tmp_path / "made")}
    decrypted(tmp_path, bodies)
    out = intake_keys("clean", "tips", "--memory-limit", "200", cwd=tmp_path).stdout
    assert "1 file(s) cleaned, 1 not cleaned" in out
    assert f"{FOLDER}/{DAY} photo.heic: cleaned; removed: " in out
    (line,) = [line for line in out.splitlines() if line.startswith(f"{FOLDER}/{DAY} clip.mp4: ")]
    assert line.startswith(f"{FOLDER}/{DAY} clip.mp4: not cleaned: ") and not (tmp_path / "tips" / FOLDER / f"{DAY} clip.cleaned.mp4").exists()
    assert intake_keys("clean", "tips", cwd=tmp_path).stdout.count(": cleaned; ") == 1  # with the default limit, the video too


def test_the_file_size_limit_grows_with_a_large_video(tmp_path, capsys):
    """The cleaned copy of a video is as large as the video: a limit smaller than the file must not stop it."""
    (tmp_path / "made").mkdir()
    video = tmp_path / "made" / "big.avi"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=25", "-t", "1",
                    "-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-metadata", f"artist={cleaning_files.AUTHOR}", str(video)], check=True, timeout=60)  # fmt: skip
    assert video.stat().st_size > 10 << 20
    out = decrypted(tmp_path, {"big.avi": video.read_bytes()})
    from keys.cleaning.folder import clean_folder

    summary = clean_folder(out, limits=Limits(file_size=4 << 20))
    assert summary.cleaned == 1, capsys.readouterr().out
    cleaned = out / FOLDER / f"{DAY} big.cleaned.avi"
    assert cleaned.stat().st_size > 10 << 20 and cleaning_files.AUTHOR.encode() not in cleaned.read_bytes()


def test_limits_grow_with_the_file_at_a_slow_disks_pace():
    base = Limits()
    assert base.for_file(1000) == base
    grown = base.for_file(4 << 30)
    assert grown.seconds == 120 + 512 and grown.file_size == 8 << 30 and grown.memory == base.memory and grown.tmp_size == base.tmp_size


def streams(path: Path) -> list[str]:
    command = ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_tag_string", "-of", "csv=p=0", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def test_a_gps_track_is_left_out_of_the_cleaned_copy_and_the_original_is_flagged(run):
    """mat2 copies every track of a video: an action camera's GPS track is dropped before it runs,
    the copy keeps the picture bit for bit, the report names the track, and the original is flagged."""
    says = "a video with tracks that are neither picture nor sound (meta/gpmd): cameras and drones record places and times there; cleaning leaves them out of the copy"
    lines = run.stdout.splitlines()
    line = run.line("action.mp4")
    assert line.startswith(f"{FOLDER}/{DAY} action.mp4: cleaned; removed: track data/gpmd, ")
    assert lines[lines.index(line) + 1] == f"  warning: {says}"
    assert "data,gpmd" in streams(run.original("action.mp4")) and made.GPS_TRACK in run.original("action.mp4").read_bytes()
    assert streams(run.cleaned("action.mp4")) == ["video,avc1"] and made.GPS_TRACK not in run.cleaned("action.mp4").read_bytes()
    index = (run.out / "index.html").read_text()
    (row,) = [row for row in index.split("<tr")[1:] if f"{DAY} action.mp4" in row]
    assert html.escape(says) in row and f'href="brave%20otter/{DAY}%20action.cleaned.mp4"' in row
    assert run.original("action.mp4").read_bytes() == run.bodies["action.mp4"]


def test_a_timecode_track_is_left_out_and_picture_and_sound_are_kept_bit_for_bit(run):
    """A camera's timecode track (the time of day) would make mat2's MP4 rewrite of a .mov fail: it is dropped first."""
    original, cleaned = run.original("timecode.mov"), run.cleaned("timecode.mov")
    assert "data,tmcd" in streams(original) and "timecode" in ffprobe(original) and "Time Code" in exiftool(original)
    assert streams(cleaned) == ["video,avc1", "audio,mp4a"] and "timecode" not in ffprobe(cleaned) and "Time Code" not in exiftool(cleaned)


def test_the_track_reader_survives_any_damage_to_the_boxes(tmp_path):
    """tracks.py reads untrusted boxes: every truncation and thousands of mutations give a list, quickly, and never raise."""
    import random
    import struct

    from keys.cleaning import tracks

    (tmp_path / "made").mkdir()
    good = made.video_with_gps_track(tmp_path / "made")
    path = tmp_path / "damaged.mp4"
    path.write_bytes(good)
    assert tracks.other_tracks(path) == ["meta/gpmd"]
    moov = good.index(b"moov") - 4
    random.seed(12)
    cases = [good[:n] for n in range(0, len(good), 7)]
    cases += [bytes(b if random.random() > 0.01 else random.randrange(256) for b in good[moov:]) for _ in range(300)]
    for _ in range(1000):
        mutated = bytearray(good)
        at = random.randrange(moov, len(good) - 8)
        mutated[at : at + 4] = random.choice([b"\x00\x00\x00\x00", b"\x00\x00\x00\x01", b"\xff\xff\xff\xff", b"\x00\x00\x00\x08", struct.pack(">I", random.randrange(1 << 32))])
        cases.append(bytes(mutated))
    # A moov of 100,000 empty boxes, and one that claims to be larger than the file.
    cases += [struct.pack(">I4s", 8 + 8 * 100_000, b"moov") + struct.pack(">I4s", 8, b"trak") * 100_000, struct.pack(">I4sQ", 1, b"moov", 1 << 62)]
    started = time.monotonic()
    for case in cases:
        path.write_bytes(case)
        found = tracks.other_tracks(path)
        assert isinstance(found, list) and all(isinstance(item, str) and item.isprintable() for item in found)
    assert time.monotonic() - started < 30, len(cases)
