"""Real audio, video and HEIC files for the cleaning tests, made here with Debian's ffmpeg, heif-enc and exiftool.

Each carries the planted values of tests/cleaning_files.py where its format
keeps tags: title, artist, comment, a creation time, a camera make and model,
the software that wrote it, and a place (an ISO 6709 location as phones write
it into videos; EXIF GPS in the HEIC). Finding any of them in a cleaned copy
means cleaning failed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.cleaning_files import AUTHOR, CAMERA, CREATOR_APP, SERIAL

TITLE = "Planted title of the recording"
COMMENT = "Planted comment: filmed from the third floor"
MAKER = "Plantedmaker"
CREATED = "2024-03-05T06:07:08Z"
CREATED_SHOWN = "2024:03:05 06:07:08"  # how exiftool prints it
LOCATION = "+55.7558+037.6173+150.000/"  # ISO 6709, as com.apple.quicktime.location.ISO6709 holds it
LATITUDE = "55 deg 45' 20.88\""  # how exiftool prints the planted latitude
TIMECODE = "06:07:08:09"  # a time of day, as a camera's timecode track holds it
SEI_TEXT = "PLANTED-SEI-IMEI-356789"  # text a camera wrote into the picture stream's SEI messages
PLANTED = [AUTHOR, CAMERA, CREATOR_APP, SERIAL, TITLE, COMMENT, MAKER, CREATED, CREATED_SHOWN, "55.7558", LATITUDE, SEI_TEXT]

_TAGS = ["-metadata", f"title={TITLE}", "-metadata", f"artist={AUTHOR}", "-metadata", f"comment={COMMENT}", "-metadata", f"creation_time={CREATED}"]
# The keys an iPhone writes into a video's metadata (mdta), which ffmpeg writes with use_metadata_tags.
_APPLE_KEYS = [
    "-metadata", f"com.apple.quicktime.location.ISO6709={LOCATION}", "-metadata", f"location={LOCATION}",
    "-metadata", f"com.apple.quicktime.make={MAKER}", "-metadata", f"com.apple.quicktime.model={CAMERA}",
    "-metadata", f"com.apple.quicktime.software={CREATOR_APP}", "-metadata:s:v:0", f"handler_name={CREATOR_APP}",
]  # fmt: skip
_PICTURE = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"]
_SOUND = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000"]

# name: ffmpeg's arguments after the inputs. The containers mat2 cleans (with ffmpeg or mutagen), and some it does not.
VIDEO = {
    "clip.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", *_TAGS, *_APPLE_KEYS, "-movflags", "use_metadata_tags"],
    "clip.avi": ["-c:v", "mpeg4", "-c:a", "pcm_s16le", *_TAGS, "-metadata", f"date={CREATED}"],
    "clip.wmv": ["-c:v", "wmv2", "-c:a", "wmav2", *_TAGS, "-metadata", f"copyright={MAKER}"],
    "clip.webm": ["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libvorbis", *_TAGS],
    "clip.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", *_TAGS, *_APPLE_KEYS, "-movflags", "use_metadata_tags"],
    "clip.mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", *_TAGS],
    # As cameras record: 24-bit PCM sound, which an MP4 cannot hold (the copy holds it as ALAC, lossless).
    "camera.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s24le", *_TAGS, *_APPLE_KEYS],
    # Floating-point PCM, which no lossless codec an MP4 holds can take.
    "float.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_f32le", *_TAGS],
    # Six channels of 24-bit PCM: ffmpeg's ALAC encoder would remix a layout it does not know.
    "surround.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s24le", "-ac", "6", *_TAGS],
    # A timecode track (tmcd): the time of day the recording started, as cameras write it.
    "timecode.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-timecode", TIMECODE, *_TAGS],
    # HEVC, as iPhones record by default; x265 writes its version and settings (HEVC_ENCODER_TEXT) into
    # an SEI message in the picture header (hvcC).
    "hevc.mp4": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1", "-c:a", "aac", *_TAGS],
}
HEVC_ENCODER_TEXT = b"x265 (build"
AUDIO = {
    "song.mp3": ["-c:a", "libmp3lame", *_TAGS, "-metadata", f"encoded_by={CREATOR_APP}", "-write_id3v1", "1", "-id3v2_version", "3"],
    "song.flac": ["-c:a", "flac", *_TAGS, "-metadata", f"organization={MAKER}"],
    "song.ogg": ["-c:a", "libvorbis", *_TAGS, "-metadata", f"organization={MAKER}"],
    "memo.m4a": ["-c:a", "aac", *_TAGS],  # as iPhone's Voice Memos records
}


def _ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *arguments], check=True, timeout=120)


def video(folder: Path, name: str) -> bytes:
    path = folder / name
    _ffmpeg(*_PICTURE, *_SOUND, "-t", "1", *VIDEO[name], "-y", str(path))
    return path.read_bytes()


def audio(folder: Path, name: str) -> bytes:
    path = folder / name
    _ffmpeg(*_SOUND, "-t", "1", *AUDIO[name], "-y", str(path))
    return path.read_bytes()


def long_video(folder: Path, hours: int = 1) -> bytes:
    """An MP4 of ``hours`` hours (two frames a second and 8 kHz sound): tens of thousands of packets, in a few seconds."""
    path = folder / "long.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:size=32x32:rate=2", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(hours * 3600),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "600", "-c:a", "aac", "-b:a", "8k", *_TAGS, *_APPLE_KEYS,
        "-movflags", "use_metadata_tags", "-y", str(path),
    )  # fmt: skip
    return path.read_bytes()


GPS_TRACK = b"PLANTED-GPS-TRACK 55.7558 37.6173 "


def video_with_gps_track(folder: Path) -> bytes:
    """An MP4 with a GoPro-style GPS track (a ``gpmd`` data track beside the picture), as action cameras and drones record."""
    (folder / "gps.bin").write_bytes(GPS_TRACK * 20)
    path = folder / "action.mp4"
    _ffmpeg(*_PICTURE, "-f", "data", "-i", str(folder / "gps.bin"), "-t", "1", "-map", "0:v", "-map", "1:d", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:d", "copy", "-tag:d", "gpmd", "-f", "mov", "-brand", "mp42", "-y", str(path))  # fmt: skip
    return path.read_bytes()


def jpeg_with_exif(folder: Path) -> Path:
    """A small JPEG whose EXIF holds a place, a camera and its serial."""
    jpeg = folder / "exif.jpg"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1", "-y", str(jpeg))
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", f"-Make={MAKER}", f"-Model={CAMERA}", f"-SerialNumber={SERIAL}",
         "-GPSLatitude=55.7558", "-GPSLatitudeRef=N", "-GPSLongitude=37.6173", "-GPSLongitudeRef=E", str(jpeg)],
        check=True, timeout=60,
    )  # fmt: skip
    return jpeg


def audio_with_cover(folder: Path, name: str = "cover.m4a", sound: bool = True) -> bytes:
    """An M4A with cover art whose JPEG carries EXIF: ffmpeg reads cover art as a one-frame picture
    stream, which mat2 copies into its MP4 as it is. Without sound: the cover alone."""
    path = folder / name
    inputs = [*_SOUND, "-i", str(jpeg_with_exif(folder))] if sound else ["-i", str(jpeg_with_exif(folder))]
    maps = ["-map", "0:a", "-map", "1:v", "-c:a", "aac"] if sound else ["-map", "0:v"]
    _ffmpeg(*inputs, "-t", "1", *maps, "-c:v", "copy", "-disposition:v", "attached_pic", *_TAGS, "-y", str(path))
    return path.read_bytes()


def video_with_still_track(folder: Path) -> bytes:
    """An MP4 with a still picture (its JPEG's EXIF inside) stored as a second video track, not as cover art."""
    path = folder / "still.mp4"
    _ffmpeg(*_PICTURE, *_SOUND, "-i", str(jpeg_with_exif(folder)), "-t", "1", "-map", "0:v", "-map", "1:a", "-map", "2:v",
            "-c:v:0", "libx264", "-preset", "ultrafast", "-c:v:1", "copy", "-c:a", "aac", "-y", str(path))  # fmt: skip
    return path.read_bytes()


def motion_jpeg(folder: Path) -> bytes:
    """A QuickTime whose picture is Motion JPEG, as older cameras record, each frame a JPEG with EXIF."""
    frames = folder / "frames"
    frames.mkdir(exist_ok=True)
    jpeg = jpeg_with_exif(folder)
    for number in range(5):
        (frames / f"{number:03d}.jpg").write_bytes(jpeg.read_bytes())
    path = folder / "mjpeg.mov"
    _ffmpeg("-framerate", "5", "-i", str(frames / "%03d.jpg"), *_SOUND, "-t", "1", "-c:v", "copy", "-c:a", "aac", "-y", str(path))
    return path.read_bytes()


def video_with_sei_text(folder: Path) -> bytes:
    """An H.264 MP4 whose picture stream carries text in an SEI message (a camera may write anything there)."""
    path = folder / "sei.mp4"
    _ffmpeg(*_PICTURE, *_SOUND, "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
            "-bsf:v", f"h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+{SEI_TEXT}", "-y", str(path))  # fmt: skip
    return path.read_bytes()


UNIT_TEXT = "PLANTED-NAL-UNIT-IMEI-356789"  # text in NAL units of types no decoder needs
# NAL unit types a camera might fill with text: an access unit delimiter (H.264 9, HEVC 35), filler,
# reserved and unspecified types (Dolby Vision writes its metadata as HEVC's 62).
FOREIGN_UNITS = {"h264": (9, 12, 24, 30), "hevc": (35, 38, 41, 48, 62)}
# The ends of sequence and of stream, which decoders need and which hold nothing but their header.
END_UNITS = {"h264": (10, 11), "hevc": (36, 37)}
_NAL_HEADER = {"h264": lambda t: bytes([0x60 | t]), "hevc": lambda t: bytes([t << 1, 1])}


def video_with_foreign_units(folder: Path, codec: str) -> bytes:
    """An MP4 whose first frame is preceded by NAL units of FOREIGN_UNITS[codec] carrying UNIT_TEXT,
    and whose stream ends with an (empty) end of stream."""
    units = [_NAL_HEADER[codec](t) + UNIT_TEXT.encode() + bytes([0x80]) for t in FOREIGN_UNITS[codec]]
    return _with_units(folder, codec, f"units-{codec}.mp4", units, [_NAL_HEADER[codec](END_UNITS[codec][1])])


def video_with_text_in_its_ends(folder: Path, codec: str) -> bytes:
    """An MP4 whose stream ends with an end of sequence and an end of stream, each carrying UNIT_TEXT."""
    return _with_units(folder, codec, f"ends-{codec}.mp4", [], [_NAL_HEADER[codec](t) + UNIT_TEXT.encode() + bytes([0x80]) for t in END_UNITS[codec]])


def _with_units(folder: Path, codec: str, name: str, before_first_slice: list[bytes], at_end: list[bytes]) -> bytes:
    """The picture is encoded, written as a raw stream, the units are put in, and it is muxed again."""
    raw = folder / f"{name}.{codec}"
    encoder = {"h264": "libx264", "hevc": "libx265"}[codec]
    _ffmpeg(*_PICTURE, "-t", "1", "-c:v", encoder, "-preset", "ultrafast", *(["-x265-params", "log-level=error"] if codec == "hevc" else []),
            "-bsf:v", f"{codec}_mp4toannexb", "-f", codec, "-y", str(raw))  # fmt: skip
    stream, start = raw.read_bytes(), 0
    for start in (m.start() for m in re.finditer(b"\x00\x00\x01", stream)):
        nal_header = stream[start + 3]
        if (codec == "hevc" and (nal_header >> 1) & 0x3F < 32) or (codec == "h264" and nal_header & 0x1F in (1, 5)):
            break  # the first slice of the first frame
    start_code = b"\x00\x00\x01"
    raw.write_bytes(stream[:start] + b"".join(start_code + unit for unit in before_first_slice) + stream[start:]
                    + b"".join(start_code + unit for unit in at_end))  # fmt: skip
    path = folder / name
    _ffmpeg("-f", codec, "-framerate", "10", "-i", str(raw), "-c", "copy", *(["-tag:v", "hvc1"] if codec == "hevc" else []), "-y", str(path))
    return path.read_bytes()


def old_phone_video(folder: Path) -> bytes:
    """A 3GP as older phones record it: H.263 picture, which an MP4 cannot hold."""
    path = folder / "phone.3gp"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=176x144:rate=10", *_SOUND, "-t", "1", "-c:v", "h263", "-c:a", "aac", *_TAGS, "-y", str(path))
    return path.read_bytes()


def heic(folder: Path) -> bytes:
    """A HEIC photo (x265, through heif-enc) with EXIF GPS, camera model, body serial and artist written by exiftool."""
    from PIL import Image

    Image.new("RGB", (64, 48), (10, 120, 200)).save(folder / "picture.png")
    subprocess.run(["heif-enc", "--quality", "50", "-o", str(folder / "photo.heic"), str(folder / "picture.png")], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", f"-Make={MAKER}", f"-Model={CAMERA}", f"-Artist={AUTHOR}", f"-SerialNumber={SERIAL}",
         f"-Software={CREATOR_APP}", "-GPSLatitude=55.7558", "-GPSLatitudeRef=N", "-GPSLongitude=37.6173", "-GPSLongitudeRef=E",
         f"-DateTimeOriginal={CREATED_SHOWN}", str(folder / "photo.heic")],
        check=True, timeout=60,
    )  # fmt: skip
    return (folder / "photo.heic").read_bytes()
