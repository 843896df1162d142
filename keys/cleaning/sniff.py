"""What a file is, from its first bytes, and whether its name agrees.

Only magic numbers and a look inside zip directories: nothing is parsed by an
application. ``Kind.name`` is a key of ``wording.KINDS``; ``Kind.extensions``
are the names such a file normally carries (empty: any name will do).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

HEAD = 64 << 10  # enough for every magic number and for telling text from binary


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    extensions: frozenset[str] = frozenset()


def _kind(name: str, *extensions: str) -> Kind:
    return Kind(name, frozenset(extensions))


# Checked in order: (offset, magic bytes, kind).
_MAGIC = [
    (0, b"\xff\xd8\xff", _kind("jpeg", "jpg", "jpeg", "jpe", "jfif")),
    (0, b"\x89PNG\r\n\x1a\n", _kind("png", "png")),
    (0, b"GIF87a", _kind("gif", "gif")),
    (0, b"GIF89a", _kind("gif", "gif")),
    (0, b"II*\x00", _kind("tiff", "tif", "tiff", "dng", "nef", "cr2", "arw")),
    (0, b"MM\x00*", _kind("tiff", "tif", "tiff", "dng", "nef", "cr2", "arw")),
    (0, b"%PDF-", _kind("pdf", "pdf")),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", _kind("ole", "doc", "xls", "ppt", "msg", "dot", "xlt", "pot", "pps", "vsd", "pub", "msi")),
    (0, b"\x7fELF", _kind("elf")),
    (0, b"MZ", _kind("pe", "exe", "dll", "scr", "com", "sys", "cpl", "ocx", "efi")),
    (0, b"\xfe\xed\xfa\xce", _kind("macho")),
    (0, b"\xfe\xed\xfa\xcf", _kind("macho")),
    (0, b"\xce\xfa\xed\xfe", _kind("macho")),
    (0, b"\xcf\xfa\xed\xfe", _kind("macho")),
    (0, b"\xca\xfe\xba\xbe", _kind("macho", "class")),  # fat Mach-O, or a Java class: code either way
    (0, b"#!", _kind("script", "sh", "bash", "py", "pl", "rb", "php", "command")),
    (0, b"\x1f\x8b", _kind("gzip", "gz", "tgz")),
    (0, b"BZh", _kind("bzip2", "bz2", "tbz2", "tbz")),
    (0, b"\xfd7zXZ\x00", _kind("xz", "xz", "txz")),
    (0, b"(\xb5/\xfd", _kind("zstd", "zst")),
    (0, b"7z\xbc\xaf\x27\x1c", _kind("7z", "7z")),
    (0, b"Rar!\x1a\x07", _kind("rar", "rar")),
    (257, b"ustar", _kind("tar", "tar")),
    (0, b"ID3", _kind("mp3", "mp3", "mp2", "mpga")),
    (0, b"fLaC", _kind("flac", "flac")),
    (0, b"OggS", _kind("ogg", "ogg", "oga", "opus", "spx", "ogv")),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", _kind("asf", "wmv", "wma", "asf")),
    (0, b"\x1a\x45\xdf\xa3", _kind("matroska", "mkv", "webm", "mka")),
]
_RIFF = {b"WAVE": _kind("wav", "wav"), b"AVI ": _kind("avi", "avi"), b"WEBP": _kind("webp", "webp")}
_AIFF = _kind("aiff", "aif", "aiff", "aifc")
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"}
_HEIC = _kind("heic", "heic", "heif", "hif", "avif")
_QUICKTIME = _kind("quicktime", "mov", "qt")
_MP4 = _kind("mp4", "mp4", "m4v", "m4a", "mpg4", "3gp", "3g2", "mov")

# zip-based formats, told apart by their members.
_ZIP = _kind("zip", "zip")
_OOXML = {
    "word/": (_kind("docx", "docx", "dotx"), _kind("docm", "docm", "dotm")),
    "xl/": (_kind("xlsx", "xlsx", "xltx"), _kind("xlsm", "xlsm", "xltm", "xlam")),
    "ppt/": (_kind("pptx", "pptx", "potx", "ppsx"), _kind("pptm", "pptm", "potm", "ppsm")),
}
_ODF = {
    "application/vnd.oasis.opendocument.text": _kind("odt", "odt", "ott"),
    "application/vnd.oasis.opendocument.spreadsheet": _kind("ods", "ods", "ots"),
    "application/vnd.oasis.opendocument.presentation": _kind("odp", "odp", "otp"),
    "application/vnd.oasis.opendocument.graphics": _kind("odg", "odg", "otg"),
    "application/epub+zip": _kind("epub", "epub"),
}
_JAR = _kind("jar", "jar", "war", "ear")
_APK = _kind("apk", "apk", "aab")

# Text: the extension decides nothing dangerous, but markup is told apart (danger reads it).
_HTML = _kind("html", "html", "htm", "xhtml", "xht", "shtml", "mht", "mhtml")
_SVG = _kind("svg", "svg")
_XML = _kind("xml")
_TEXT = _kind("text")
EMPTY = _kind("empty")
UNKNOWN = _kind("unknown")
MARKUP = frozenset({"html", "svg", "xml"})
ARCHIVES = frozenset({"zip", "tar", "gzip", "bzip2", "xz", "zstd", "7z", "rar", "jar", "apk"})
ZIP_BASED = frozenset({"zip", "jar", "apk", "epub", "odt", "ods", "odp", "odg"}) | {k.name for pair in _OOXML.values() for k in pair}
MP4_FAMILY = frozenset({"mp4", "quicktime"})  # ISO base media: .mp4, .mov, .m4a, .3gp
EXECUTABLES = frozenset({"elf", "pe", "macho", "script", "jar", "apk"})


def extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def detect(path: Path) -> Kind:
    with open(path, "rb") as f:
        head = f.read(HEAD)
    if not head:
        return EMPTY
    for offset, magic, kind in _MAGIC:
        if head.startswith(magic, offset):
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _AIFF
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return _HEIC
        return _QUICKTIME if brand == b"qt  " else _MP4
    if head[:2] == b"\xff\xfb" or head[:2] == b"\xff\xf3" or head[:2] == b"\xff\xf2":
        return _kind("mp3", "mp3", "mp2", "mpga")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _zip_kind(path)
    return _text_kind(head)


def _zip_kind(path: Path) -> Kind:
    try:
        with zipfile.ZipFile(path) as archive:  # reads the central directory only
            names = archive.namelist()
            first = archive.infolist()[0] if names else None
            mimetype = b""
            if first is not None and first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED and first.file_size < 100:
                mimetype = archive.read(first)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
        return _ZIP
    kind = _ODF.get(mimetype.decode("ascii", "replace").strip())
    if kind:
        return kind
    if "[Content_Types].xml" in names:
        macros = any(name.lower().endswith("vbaproject.bin") for name in names)
        for prefix, (plain, with_macros) in _OOXML.items():
            if any(name.startswith(prefix) for name in names):
                return with_macros if macros else plain
    if "AndroidManifest.xml" in names:
        return _APK
    if "META-INF/MANIFEST.MF" in names:
        return _JAR
    return _ZIP


def _text_kind(head: bytes) -> Kind:
    if b"\x00" in head:
        return UNKNOWN
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut at the end of the head
            return UNKNOWN
        text = head[: error.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered[:4096]:
        return _SVG
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body", "<script", "<iframe")) or "<html" in lowered[:1024]:
        return _HTML
    if lowered.startswith("<?xml"):
        return _XML
    return _TEXT


def contradiction(kind: Kind, path: Path) -> str | None:
    """The extension when the content says the file is something else, else None."""
    ext = extension(path)
    if not ext:
        return None
    if kind.extensions:
        return None if ext in kind.extensions else ext
    if kind != EMPTY:
        # Text, unknown bytes and bare executables contradict only a name that promises a format we recognise.
        return ext if ext in _RECOGNISED else None
    return None


# Text scripts (.py, .sh) and .doc/.com files may well be plain text: not promised formats.
_RECOGNISED = frozenset(
    ext
    for kind in [k for _, _, k in _MAGIC] + list(_RIFF.values()) + [_AIFF, _HEIC, _MP4, _ZIP, _JAR, _APK]
    + [k for pair in _OOXML.values() for k in pair] + list(_ODF.values())
    if kind.name not in ("script", "ole", "pe")
    for ext in kind.extensions
)
