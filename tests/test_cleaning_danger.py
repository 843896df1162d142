"""Danger flags from bytes alone: each made from a real file built here, and clean files left unflagged."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from keys.cleaning import danger, sniff
from tests import cleaning_files as made


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def codes(path: Path) -> list[str]:
    return [flag.code for flag in danger.inspect(path).flags]


def nested_zip(depth: int) -> bytes:
    data = made.zip_of({"note.txt": b"inner"})
    for _ in range(depth - 1):
        data = made.zip_of({"inner.zip": data})
    return data


def overlapping_zip() -> bytes:
    """Two central entries pointing at the same local entry: the overlap the smallest zip bombs rely on."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", b"a" * 1000)
    data = out.getvalue()
    end = data.rindex(b"PK\x05\x06")
    central_start = int.from_bytes(data[end + 16 : end + 20], "little")
    entry = data[central_start:end]
    second = entry.replace(b"a.txt", b"b.txt")
    eocd = bytearray(data[end:])
    eocd[8:10] = eocd[10:12] = (2).to_bytes(2, "little")
    eocd[12:16] = (2 * len(entry)).to_bytes(4, "little")
    return data[:central_start] + entry + second + bytes(eocd)


def symlink_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    return out.getvalue()


def tar_with(name: str, link: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return out.getvalue()


def odt_with_macro() -> bytes:
    data = io.BytesIO(made.odt())
    with zipfile.ZipFile(data, "a") as z:
        z.writestr("Basic/Standard/Module1.xml", '<script:module script:name="Module1">Sub Main\nShell("calc")\nEnd Sub</script:module>')
    return data.getvalue()


def docx_with_embedded_object() -> bytes:
    data = io.BytesIO(made.docx())
    with zipfile.ZipFile(data, "a") as z:
        z.writestr("word/embeddings/oleObject1.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)
    return data.getvalue()


def docx_with_remote_template() -> bytes:
    data = io.BytesIO(made.docx())
    with zipfile.ZipFile(data, "a") as z:
        z.writestr(
            "word/_rels/settings.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/attachedTemplate" '
            'Target="https://evil.example.org/t.dotm" TargetMode="External"/></Relationships>',
        )
    return data.getvalue()


FLAGGED = {
    "run.sh": (b"#!/bin/sh\nrm -rf ~\n", "executable"),
    "invoice.pdf.exe": (b"MZ\x90\x00" + b"\x00" * 60, "executable"),
    "macho": (b"\xcf\xfa\xed\xfe" + b"\x00" * 60, "executable"),
    "open-me.bat": (b"@echo off\r\ndel /q *\r\n", "executable"),
    "script.ps1": (b"Remove-Item -Recurse C:\\\n", "executable"),
    "payload.js": (b"WScript.Shell.Run('calc')\n", "executable"),
    "macro.vbs": (b"CreateObject(\"WScript.Shell\").Run \"calc\"\n", "executable"),
    "photo.jpg": (made.pdf(), "mismatch"),
    "report.pdf": (b"just some text pretending\n", "mismatch"),
    "elf.png": (made.elf(), "mismatch"),
    "letter.odt": (odt_with_macro(), "macros"),
    "old.doc": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100 + "_VBA_PROJECT".encode("utf-16-le"), "macros"),
    "invoice.docm": (made.docx(macro=True), "macros"),
    "template.docx": (docx_with_remote_template(), "remote"),
    "embedded.docx": (docx_with_embedded_object(), "embedded"),
    "page.html": (b"<html><body><script>alert(1)</script></body></html>", "script"),
    "icon.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="fetch(1)"><circle r="4"/></svg>', "script"),
    "tracker.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><image href="//evil.example.org/x.png"/></svg>', "remote"),
    "styled.html": (b"<html><head><style>body{background:url( 'https://evil.example.org/p.gif')}</style></head></html>", "remote"),
    "active.pdf": (b"%PDF-1.4\n1 0 obj << /OpenAction << /S /J#61vaScript /JS (app.alert(1)) >> >> endobj\n", "pdf-active"),
    "locked.pdf": (b"%PDF-1.4\ntrailer << /Encrypt 5 0 R >>\n", "encrypted"),
    "escape.tar": (tar_with("../../.bashrc"), "archive-traversal"),
    "links.tar": (tar_with("passwd", link=True), "archive-link"),
    "links.zip": (symlink_zip(), "archive-link"),
    "overlap.zip": (overlapping_zip(), "archive-overlap"),
    "deep.zip": (nested_zip(4), "archive-nesting"),
    "windows.zip": (made.zip_of({"C:\\Windows\\evil.dll": b"x"}), "archive-traversal"),
    "backup.tar.gz": (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "archive-uninspected"),
}


@pytest.mark.parametrize("name", FLAGGED)
def test_each_kind_of_danger_is_flagged(tmp_path, name):
    data, code = FLAGGED[name]
    assert code in codes(write(tmp_path, name, data))


CLEAN = {
    "photo.jpg": made.image("JPEG"),
    "report.pdf": made.pdf(),
    "draft.docx": made.docx(),
    "draft.odt": made.odt(),
    "notes.txt": "Записка: встреча в среду.\n".encode(),
    "plain.html": b"<!doctype html><html><body><p>Hello <a href=\"#top\">top</a></p></body></html>",
    "shallow.zip": nested_zip(3),
    "archive.tar": tar_with("docs/readme.txt"),
    "no-extension": b"some text",
}


@pytest.mark.parametrize("name", CLEAN)
def test_ordinary_files_carry_no_flag(tmp_path, name):
    assert codes(write(tmp_path, name, CLEAN[name])) == []


def test_the_zip_bomb_is_judged_from_its_directory_in_well_under_a_second(tmp_path):
    import time

    path = write(tmp_path, "bomb.zip", made.zip_bomb())
    started = time.monotonic()
    inspection = danger.inspect(path)
    assert time.monotonic() - started < 2
    assert [(f.code, f.detail) for f in inspection.flags] == [("archive-bomb", "10,737,418,240")]
    assert inspection.blocking is not None


def test_a_thousand_hostile_names_make_one_flag_naming_the_first(tmp_path):
    path = write(tmp_path, "many.zip", made.zip_of({f"../x{n}": b"" for n in range(1000)}))
    assert [(f.code, f.detail) for f in danger.inspect(path).flags] == [("archive-traversal", "../x0")]


# Made when the test runs, not at collection: the zip and image makers stamp the
# current time, and xdist's workers must collect the same test names.
SAMPLES_BY_KIND = {
    "png": lambda: made.image("PNG"), "tiff": lambda: made.image("TIFF"), "docx": made.docx, "odt": made.odt,
    "elf": made.elf, "heic": lambda: b"\x00\x00\x00\x18ftypheic" + b"\x00" * 16,
    "mp4": lambda: b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16, "wav": lambda: b"RIFF\x00\x00\x00\x00WAVEfmt ",
    "flac": lambda: b"fLaC\x00", "mp3": lambda: b"ID3\x04", "empty": lambda: b"", "unknown": lambda: b"\x00\x01\x02garbage",
}  # fmt: skip


@pytest.mark.parametrize("kind", SAMPLES_BY_KIND)
def test_types_are_told_from_bytes(tmp_path, kind):
    data = SAMPLES_BY_KIND[kind]()
    assert sniff.detect(write(tmp_path, "file", data)).name == kind
