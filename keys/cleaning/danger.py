"""Flags for files to be careful with, found by reading bytes: nothing is opened with an application.

Executables and scripts; office files with macros, embedded programs or links
that fetch from the internet when opened; HTML and SVG with scripts or remote
references; PDFs with scripts or launch actions; archives that would escape
their folder, expand absurdly or nest too deep; files whose content
contradicts their name; videos with tracks that are neither picture nor sound. Some flags also stop cleaning (``Flag.blocks_cleaning``):
cleaning an archive extracts it, and cleaning an executable makes no sense.
"""

from __future__ import annotations

import dataclasses
import re
import zipfile
from pathlib import Path

from keys.cleaning import archives, sniff, tracks

SCAN_LIMIT = 256 << 20  # bytes of a file searched for scripts and remote references
_CHUNK = 1 << 20
_OVERLAP = 4096
RELS_LIMIT = 1 << 20

# Names Windows, macOS or a Linux desktop run (or hand to an interpreter) on a double click.
RUNNABLE_EXTENSIONS = frozenset(
    "exe dll scr com pif cpl msi msp msc bat cmd ps1 psm1 psd1 vbs vbe js jse mjs wsf wsh wsc hta lnk reg scf url inf "
    "jar apk sh bash zsh command desktop appimage run bin deb rpm dmg pkg app py pyw pl rb php iso img vhd vhdx "
    "xll xlam ppam docm dotm xlsm xltm pptm potm ppsm sldm".split()
)
MACRO_EXTENSIONS = frozenset("docm dotm xlsm xltm xlam pptm potm ppsm sldm".split())
BLOCKS_CLEANING = frozenset(
    {"executable", "mismatch", "archive-traversal", "archive-link", "archive-bomb", "archive-overlap", "archive-nesting",
     "archive-members", "archive-unreadable", "archive-uninspected", "archive-encrypted", "encrypted"}
)

CAUTIONS = frozenset({"mismatch", "encrypted", "partly-checked", "media-track"})  # worth knowing, but nothing in the file acts

_MARKUP_EXTENSIONS = frozenset("html htm xhtml xht shtml mht mhtml svg svgz xml".split())
_SCRIPT = re.compile(
    rb"<script\b|\bon[a-z]{3,20}\s*=|javascript\s*:|vbscript\s*:|<(?:iframe|object|embed|applet|foreignobject)\b"
    rb"|<meta[^>]{0,200}http-equiv\s*=\s*[\"']?refresh",
    re.IGNORECASE,
)
_REMOTE = re.compile(
    rb"(?:\b(?:src|href|action|data|poster|background|srcset|xlink:href|formaction|codebase|cite|manifest|content)\s*=\s*[\"']?\s*"
    rb"|url\(\s*[\"']?\s*|@import\s+[\"']?\s*)(?:https?:|ftps?:|wss?:|//)/*([^\s\"'<>/\\)]{1,100})",
    re.IGNORECASE,
)
_PDF_ACTIVE = re.compile(rb"/(JavaScript|JS|Launch|EmbeddedFiles?|RichMedia|XFA|SubmitForm|ImportData)\b")
_PDF_ENCRYPT = re.compile(rb"/Encrypt\b")
_PDF_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
_OLE_VBA = (b"_\x00V\x00B\x00A\x00_\x00P\x00R\x00O\x00J\x00E\x00C\x00T", b"V\x00B\x00A\x00\x00\x00", b"M\x00a\x00c\x00r\x00o\x00s\x00")
_EXTERNAL_TARGET = re.compile(rb"TargetMode\s*=\s*[\"']External[\"']", re.IGNORECASE)
_EXTERNAL_URL = re.compile(rb"Target\s*=\s*[\"']\s*(?:https?:|file:|\\\\|//)/*([^\"'/\\]{1,100})", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Flag:
    code: str  # a key of wording.FLAGS
    detail: str = ""  # from the file itself: hostile text, escape it when shown

    @property
    def blocks_cleaning(self) -> bool:
        return self.code in BLOCKS_CLEANING


def any_dangerous(flags: tuple[Flag, ...]) -> bool:
    return any(flag.code not in CAUTIONS for flag in flags)


@dataclasses.dataclass(frozen=True)
class Inspection:
    kind: sniff.Kind
    flags: tuple[Flag, ...]

    @property
    def blocking(self) -> Flag | None:
        return next((flag for flag in self.flags if flag.blocks_cleaning), None)


def inspect(path: Path) -> Inspection:
    kind = sniff.detect(path)
    ext = sniff.extension(path)
    flags: list[Flag] = []
    if kind.name in sniff.EXECUTABLES:
        flags.append(Flag("executable", kind.name))
    elif ext in RUNNABLE_EXTENSIONS and ext not in MACRO_EXTENSIONS:
        flags.append(Flag("executable", ext))
    wrong = sniff.contradiction(kind, path)
    if wrong:
        flags.append(Flag("mismatch", wrong))
    if kind.name in sniff.ZIP_BASED:
        problems, _ = archives.inspect_zip(path)
        flags += [Flag(code, detail) for code, detail in problems]
        if not problems:
            flags += _office_flags(path, kind)
    elif kind.name == "tar":
        flags += [Flag(code, detail) for code, detail in archives.inspect_tar(path)[0]]
    elif kind.name in sniff.ARCHIVES:
        flags.append(Flag("archive-uninspected", kind.name))
    elif kind.name == "ole":
        flags += _scan(path, _ole_flags)
    elif kind.name == "pdf":
        flags += _scan(path, _pdf_flags)
    elif kind.name in sniff.MP4_FAMILY:
        other = tracks.other_tracks(path)
        if other:
            flags.append(Flag("media-track", ", ".join(other)))
    if kind.name in sniff.MARKUP or ext in _MARKUP_EXTENSIONS:
        flags += _scan(path, _markup_flags)
    return Inspection(kind, tuple(dict.fromkeys(flags)))


def _office_flags(path: Path, kind: sniff.Kind) -> list[Flag]:
    """Macros, embedded programs and remote links in OOXML and ODF files (their zip already passed)."""
    flags = []
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        lowered = [name.lower() for name in names]
        if any(name.endswith(("vbaproject.bin", "vbadata.xml")) for name in lowered) or any(
            name.startswith(("basic/", "scripts/")) and not name.endswith("/") for name in lowered
        ):
            flags.append(Flag("macros", ""))
        if any("/activex/" in name or "/embeddings/" in name or name.startswith("object ") for name in lowered):
            flags.append(Flag("embedded", ""))
        for info in archive.infolist():
            if info.filename.endswith(".rels") and info.file_size <= RELS_LIMIT and not info.flag_bits & 0x1:
                rels = archive.read(info)
                if _EXTERNAL_TARGET.search(rels):
                    host = _EXTERNAL_URL.search(rels)
                    flags.append(Flag("remote", host.group(1).decode("utf-8", "replace") if host else ""))
                    break
    return flags


def _scan(path: Path, check) -> list[Flag]:
    """Run ``check`` over the file in overlapping chunks, up to SCAN_LIMIT bytes."""
    found: list[Flag] = []
    tail = b""
    read = 0
    with open(path, "rb") as f:
        while read < SCAN_LIMIT:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            read += len(chunk)
            found += check(tail + chunk)
            tail = chunk[-_OVERLAP:]
        else:
            if f.read(1):
                found.append(Flag("partly-checked", f"{SCAN_LIMIT >> 20} MiB"))
    return list(dict.fromkeys(found))


def _markup_flags(data: bytes) -> list[Flag]:
    flags = []
    if _SCRIPT.search(data):
        flags.append(Flag("script", ""))
    remote = _REMOTE.search(data)
    if remote:
        flags.append(Flag("remote", remote.group(1).decode("utf-8", "replace")))
    return flags


def _pdf_flags(data: bytes) -> list[Flag]:
    data = _PDF_NAME_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)  # /J#61vaScript is /JavaScript
    flags = [Flag("pdf-active", m.group(1).decode()) for m in _PDF_ACTIVE.finditer(data)][:1]
    if _PDF_ENCRYPT.search(data):
        flags.append(Flag("encrypted", "PDF"))
    return flags


def _ole_flags(data: bytes) -> list[Flag]:
    return [Flag("macros", "")] if any(marker in data for marker in _OLE_VBA) else []
