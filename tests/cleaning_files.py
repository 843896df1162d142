"""Real files for the cleaning tests, made here: documents with planted metadata, and hostile files.

Every planted value is unique to the test run's constants below so that finding
it anywhere in a cleaned copy (raw bytes, nested zip members, exiftool, mat2
--show) means cleaning failed.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image

AUTHOR = "Ivan Plantedauthor"
EDITOR = "Petr Plantededitor"
REVIEWER = "Olga Plantedreviewer"
SERIAL = "SN-PLANTED-4242"
CAMERA = "Plantedcam X100"
CREATOR_APP = "PlantedCreatorApp 9.1"
DELETED_TEXT = "planted deleted sentence"
PLANTED = [AUTHOR, EDITOR, REVIEWER, SERIAL, CAMERA, CREATOR_APP, DELETED_TEXT]
GPS_LATITUDE = (55.0, 45.0, 21.0)


def image(fmt: str) -> bytes:
    """A JPEG/PNG with EXIF GPS, camera model and body serial; a TIFF with camera and artist tags."""
    picture = Image.new("RGB", (48, 32), (180, 40, 40))
    exif = Image.Exif()
    exif[0x010F] = "Plantedmaker"  # Make
    exif[0x0110] = CAMERA  # Model
    exif[0x013B] = AUTHOR  # Artist
    exif.get_ifd(0x8769)[0xA431] = SERIAL  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", GPS_LATITUDE, "E", (37.0, 37.0, 4.0)
    out = io.BytesIO()
    if fmt == "TIFF":
        picture.save(out, "TIFF", tiffinfo={0x0110: CAMERA, 0x013B: AUTHOR, 0x0131: CREATOR_APP})
    else:
        picture.save(out, fmt, exif=exif)
    return out.getvalue()


def pdf() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (255, 255, 255)).save(out, "PDF", author=AUTHOR, creator=CREATOR_APP, title="Planted title")
    return out.getvalue()


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.{main}.main+xml"/>'
    '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>'
    "</Relationships>"
)
_CORE = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>{author}</dc:creator>'
    "<cp:lastModifiedBy>{editor}</cp:lastModifiedBy><cp:revision>17</cp:revision></cp:coreProperties>"
)
_DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p>'
    "<w:r><w:t>The ledger is in the blue binder.</w:t></w:r>"
    '<w:ins w:id="1" w:author="{reviewer}" w:date="2026-01-01T00:00:00Z"><w:r><w:t> Inserted.</w:t></w:r></w:ins>'
    '<w:del w:id="2" w:author="{reviewer}" w:date="2026-01-01T00:00:00Z"><w:r><w:delText>{deleted}</w:delText></w:r></w:del>'
    "</w:p></w:body></w:document>"
)


def docx(macro: bool = False) -> bytes:
    """A Word document with author, last editor, revision count and tracked changes (and a VBA project if ``macro``)."""
    main = "ms-word.document.macroEnabled" if macro else "openxmlformats-officedocument.wordprocessingml.document"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES.format(main=main))
        z.writestr("_rels/.rels", _RELS)
        z.writestr("word/document.xml", _DOCUMENT.format(reviewer=REVIEWER, deleted=DELETED_TEXT))
        z.writestr("docProps/core.xml", _CORE.format(author=AUTHOR, editor=EDITOR))
        if macro:
            # The OLE compound file a real VBA project is: its magic and the _VBA_PROJECT stream name.
            z.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "_VBA_PROJECT".encode("utf-16-le") + b"\x00" * 64)
    return out.getvalue()


_ODF_META = (
    '<?xml version="1.0" encoding="UTF-8"?><office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.2">'
    "<office:meta><meta:initial-creator>{author}</meta:initial-creator><dc:creator>{editor}</dc:creator>"
    "<meta:editing-cycles>17</meta:editing-cycles><meta:generator>{app}</meta:generator></office:meta></office:document-meta>"
)
_ODF_CONTENT = (
    '<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.2">'
    '<office:body><office:text><text:tracked-changes><text:changed-region text:id="ct1"><text:deletion><office:change-info>'
    "<dc:creator>{reviewer}</dc:creator><dc:date>2026-01-01T00:00:00</dc:date></office:change-info><text:p>{deleted}</text:p>"
    '</text:deletion></text:changed-region></text:tracked-changes><text:p>The ledger.<text:change text:change-id="ct1"/></text:p>'
    "</office:text></office:body></office:document-content>"
)
_ODF_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
    'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    '<manifest:file-entry manifest:full-path="meta.xml" manifest:media-type="text/xml"/></manifest:manifest>'
)


def odt() -> bytes:
    """An OpenDocument text with author, editor, editing cycles, generator and a tracked deletion."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("META-INF/manifest.xml", _ODF_MANIFEST, zipfile.ZIP_DEFLATED)
        z.writestr("meta.xml", _ODF_META.format(author=AUTHOR, editor=EDITOR, app=CREATOR_APP), zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", _ODF_CONTENT.format(reviewer=REVIEWER, deleted=DELETED_TEXT), zipfile.ZIP_DEFLATED)
    return out.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def traversal_zip() -> bytes:
    return zip_of({"notes.txt": b"harmless", "../../../../tmp/intake-test-escaped.txt": b"escaped", "/etc/intake-test-abs.txt": b"x"})


def zip_bomb(members: int = 10, member_size: int = 1 << 30) -> bytes:
    """A real zip of ``members`` x ``member_size`` zeros (10 GiB by default) in about 10 MB.

    Deflate blocks of 1 MiB of zeros, each ended by a full flush (byte-aligned,
    no reference to earlier data), can be repeated as they are; a final empty
    block ends the stream. Nothing here ever inflates it.
    """
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = block.compress(b"\0" * (1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    stream = piece * (member_size >> 20) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    zeros, crc = b"\0" * (64 << 20), 0
    for _ in range(member_size // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    out = io.BytesIO()
    central = []
    for n in range(members):
        name = f"zeros-{n}.bin".encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream), member_size, len(name), 0) + name)
        out.write(stream)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(stream), member_size, len(name), 0, 0, 0, 0, 0, offset) + name)
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, out.tell() - start, start, 0))
    return out.getvalue()


def elf() -> bytes:
    """The 64-byte header of an x86-64 Linux executable and a little code-shaped padding: never run."""
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x400078, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    return header + b"\x90" * 64


REMOTE_HOST = "tracker.example.net"


def html_with_remote_image() -> bytes:
    return f'<!doctype html><html><body><p>Hi</p><img src="https://{REMOTE_HOST}/pixel.gif?who=me" alt=""></body></html>'.encode()


def _id3(artist: str) -> bytes:
    """An ID3v2.3 tag with one frame: the artist."""
    text = b"\x00" + artist.encode()
    frame = b"TPE1" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    size = len(frame)
    return b"ID3\x03\x00\x00" + bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F]) + frame


def mp3() -> bytes:
    """An ID3 tag naming the artist, then 20 silent MPEG-1 layer III frames (128 kbit/s, 44.1 kHz: 417 bytes each)."""
    return _id3(AUTHOR) + (b"\xff\xfb\x90\x64" + b"\x00" * 413) * 20


def wav() -> bytes:
    """A tenth of a second of silence with an ID3 chunk naming the artist."""
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    data, tag = out.getvalue(), _id3(AUTHOR)
    chunk = b"id3 " + struct.pack("<I", len(tag)) + tag + b"\x00" * (len(tag) % 2)
    return data[:4] + struct.pack("<I", len(data) - 8 + len(chunk)) + data[8:] + chunk
