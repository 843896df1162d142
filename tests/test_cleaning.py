"""intake-keys clean and decrypt --clean, end to end with real files, real mat2 and real bubblewrap.

A bundle is built as the server builds it from files made here (planted
metadata, and hostile files), decrypted with ``--clean`` as a journalist types
it; cleaned copies are read back with exiftool and ``mat2 --show`` (outside any
sandbox, as a check) and byte by byte, nested zip members included.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from keys import cli
from keys.identity import KDF_MIN, Identity
from tests import cleaning_files as made
from keys.server_key import trust_server
from tests.fixtures_keys import PASSPHRASE, SERVER_PUBLIC, Source, Submission, build_export

# Under pytest-xdist one worker runs the whole module, so its costly fixture (the cleaned tips) is made once.
pytestmark = pytest.mark.xdist_group("cleaning")

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-28"

PLANTED_FILES = {
    "photo.jpg": lambda: made.image("JPEG"),
    "photo.png": lambda: made.image("PNG"),
    "scan.tiff": lambda: made.image("TIFF"),
    "report.pdf": made.pdf,
    "draft.docx": made.docx,
    "draft.odt": made.odt,
    "recording.mp3": made.mp3,
    "everything.zip": lambda: made.zip_of({"photo.jpg": made.image("JPEG"), "report.pdf": made.pdf(), "draft.docx": made.docx(), "draft.odt": made.odt()}),
}
HOSTILE_FILES = {
    "escape.zip": made.traversal_zip,
    "bomb.zip": made.zip_bomb,
    "invoice.docm": lambda: made.docx(macro=True),
    "page.html": made.html_with_remote_image,
    "tool": made.elf,
}
# What the report and the triage view must say about each hostile file.
HOSTILE_SAYS = {
    "escape.zip": "names that leave its folder",
    "bomb.zip": "would expand to 10,737,418,240 bytes",
    "invoice.docm": "with macros",
    "page.html": f"loads something from the internet when opened ({made.REMOTE_HOST})",
    "tool": "Linux program (ELF): never run it",
}
NOT_EXIFTOOL_NAMES = re.compile(r"^(ExifTool Version Number|File Name|Directory|File Modification|File Access|File Inode|File Permissions)")


class Run:
    def __init__(self, out: Path, code: int, stdout: str, stderr: str, bodies: dict[str, bytes]):
        self.out, self.code, self.stdout, self.stderr, self.bodies = out, code, stdout, stderr, bodies
        self.folder = out / "brave otter"

    def original(self, name: str) -> Path:
        return self.folder / f"{DAY} {name}"

    def cleaned(self, name: str) -> Path:
        stem, _, ext = name.rpartition(".")
        return self.folder / f"{DAY} {stem}.cleaned.{ext}"

    def line(self, name: str) -> str:
        (found,) = [line for line in self.stdout.splitlines() if line.startswith(f"brave otter/{DAY} {name}: ")]
        return found

    def report(self, name: str) -> str:
        """The file's line and the warning lines under it."""
        lines = self.stdout.splitlines()
        start = lines.index(self.line(name))
        return "\n".join([lines[start], *itertools.takewhile(lambda line: line.startswith("  "), lines[start + 1 :])])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """One decrypt --clean of a bundle holding every planted and hostile file (the bomb makes it worth sharing)."""
    base = tmp_path_factory.mktemp("clean")
    alice = Identity.generate("alice")
    alice.save(base / "alice.secret", PASSPHRASE, KDF_MIN)
    trust_server(base / "alice.secret", SERVER_PUBLIC)  # the test bundles' server key, as at enrolment
    (base / "pw").write_text(PASSPHRASE)
    bodies = {name: make() for name, make in {**PLANTED_FILES, **HOSTILE_FILES}.items()}
    submissions = [Submission("message", "The files are <b>attached</b> & dated.\n".encode())]
    submissions += [Submission("file", body, name=name) for name, body in bodies.items()]
    (base / "export.bundle").write_bytes(build_export([Source("src-1", "brave otter", submissions)], [alice]))
    out = base / "out"
    argv = ["decrypt", str(base / "export.bundle"), "--key", str(base / "alice.secret"), "--passphrase-file", str(base / "pw"), "--out", str(out), "--clean"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", stdout)
        patch.setattr(sys, "stderr", stderr)
        code = cli.main(argv)
    return Run(out, code, stdout.getvalue(), stderr.getvalue(), bodies)


def every_byte_string(data: bytes, depth: int = 0) -> list[bytes]:
    """``data`` and, if it is a zip, every member's bytes, recursively (our own small test files only)."""
    found = [data]
    if depth < 3 and data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                found += every_byte_string(archive.read(member), depth + 1)
    return found


def exiftool(path: Path) -> str:
    result = subprocess.run(["exiftool", "-a", "-u", "-G1", "-ee", str(path)], capture_output=True, text=True, timeout=60)
    return "\n".join(line for line in result.stdout.splitlines() if not NOT_EXIFTOOL_NAMES.match(line.split(":", 1)[0].split("]", 1)[-1].strip()))


def mat2_show(path: Path) -> str:
    return subprocess.run(["mat2", "--show", str(path)], capture_output=True, text=True, timeout=120).stdout


def planted_in(text: str) -> list[str]:
    return [value for value in made.PLANTED if value in text] + (["GPS"] if "GPS" in text else [])


def test_the_run_finishes_and_says_so(run):
    assert run.code == 0, run.stderr
    assert f"{len(PLANTED_FILES)} file(s) cleaned, {len(HOSTILE_FILES)} not cleaned, 0 cleaned before; 5 file(s) with warnings" in run.stdout
    assert "14 item(s) decrypted from 1 source(s)" in run.stdout


@pytest.mark.parametrize("name", PLANTED_FILES)
def test_the_cleaned_copy_carries_none_of_the_planted_values_and_the_original_is_untouched(run, tmp_path, name):
    original, cleaned = run.original(name), run.cleaned(name)
    assert original.read_bytes() == run.bodies[name]
    assert cleaned.is_file() and stat.S_IMODE(cleaned.stat().st_mode) == 0o600
    # The check can fail: the original carries the planted values where the checks look.
    original_text = exiftool(original) + mat2_show(original) + "".join(b.decode("latin-1") for b in every_byte_string(original.read_bytes()))
    assert planted_in(original_text), f"{name}: nothing planted to find"
    cleaned_bytes = every_byte_string(cleaned.read_bytes())
    assert not [value for value in made.PLANTED if any(value.encode() in b for b in cleaned_bytes)]
    assert planted_in(exiftool(cleaned)) == []
    assert planted_in(mat2_show(cleaned)) == []
    for n, member in enumerate(cleaned_bytes[1:]):  # members of a zip, read back by exiftool one by one
        (tmp_path / f"member-{n}").write_bytes(member)
        assert planted_in(exiftool(tmp_path / f"member-{n}")) == [], (name, n)


def test_the_report_names_what_was_removed_and_never_a_value(run):
    assert re.search(r"photo\.jpg: cleaned; removed: .*GPSLatitude", run.line("photo.jpg"))
    assert "SerialNumber" in json.dumps(json.loads((run.folder / "cleaning.json").read_text())[f"{DAY} photo.jpg"])
    assert "author, creator, title" in run.line("report.pdf")
    assert "docProps/core.xml / dc:creator" in run.line("draft.docx") and "cp:lastModifiedBy" in run.line("draft.docx")
    assert "meta.xml / meta:initial-creator" in run.line("draft.odt")
    assert "draft.docx / docProps/core.xml / dc:creator" in json.dumps(json.loads((run.folder / "cleaning.json").read_text()))
    for text in (run.stdout, (run.folder / "cleaning.json").read_text()):
        assert [value for value in made.PLANTED if value in text] == [] and "55 deg" not in text


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_hostile_files_are_flagged_in_the_report(run, name):
    assert HOSTILE_SAYS[name] in run.report(name)
    assert not run.cleaned(name).exists() or name == "page.html"  # mat2 may clean HTML; it is flagged all the same
    assert run.original(name).read_bytes() == run.bodies[name]


def test_nothing_hostile_was_extracted_or_made_runnable(run):
    assert not Path("/tmp/intake-test-escaped.txt").exists() and not Path("/etc/intake-test-abs.txt").exists()
    everything = [p for p in run.out.parent.rglob("*")]
    assert not [p for p in everything if p.name.startswith("zeros-") or p.name == "intake-test-escaped.txt"]
    assert sum(p.stat().st_size for p in everything if p.is_file()) < 100 << 20  # the 10 GiB were never written
    assert not [p for p in everything if p.is_file() and p.stat().st_mode & 0o111]
    assert not [p for p in run.folder.iterdir() if p.name.startswith(".intake-partial-")]  # scratch folders are gone


def test_the_triage_view_shows_types_results_and_flags_and_never_links_a_dangerous_file(run):
    index = (run.out / "index.html").read_text()
    assert "<script" not in index and "default-src 'none'" in index and "http://" not in index and "https://" not in index
    assert "The files are &lt;b&gt;attached&lt;/b&gt; &amp; dated." in index
    rows = {row: body for row, body in re.findall(r"<tr[^>]*><th scope=\"row\">(.*?)</th>(.*?)</tr>", index)}
    for name, says in HOSTILE_SAYS.items():
        (row,) = [(head, body) for head, body in rows.items() if f"{DAY} {name} (original" in head]
        assert "href=" not in row[0], row[0]
        assert html.escape(says) in row[1], (name, row[1])
    for name in PLANTED_FILES:
        (head,) = [head for head in rows if f"{DAY} {name}</a> (original" in head]
        cleaned_link = head.index(f'href="brave%20otter/{run.cleaned(name).name.replace(" ", "%20")}"')
        assert cleaned_link < head.index(f'href="brave%20otter/{DAY}%20{name}"')  # the cleaned copy first
    assert "Linux program (ELF)" in index and "Word document with macros" in index and "HTML page" in index


def test_cleaning_again_skips_what_is_done_and_changes_nothing(run, capsys):
    before = {p: p.read_bytes() for p in run.folder.iterdir() if p.name != "cleaning.json"}
    code = cli.main(["clean", str(run.out)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"0 file(s) cleaned, {len(HOSTILE_FILES)} not cleaned, {len(PLANTED_FILES)} cleaned before" in out
    assert {p: p.read_bytes() for p in run.folder.iterdir() if p.name != "cleaning.json"} == before


def test_a_folder_not_written_by_decrypt_is_one_line(capsys, tmp_path):
    code = cli.main(["clean", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 1 and err.strip().splitlines() == [f"intake-keys: error: {tmp_path} holds no source folder from intake-keys decrypt (no source.json)"]


def _path_with_only(tmp_path: Path, *tools: str) -> str:
    """A PATH whose only folder links the named tools (and python, to run the command)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    return str(folder)


@pytest.mark.parametrize(("present", "missing"), [(["bwrap"], "mat2 is not installed"), (["mat2"], "bubblewrap is not installed"), ([], "mat2 and bubblewrap are not installed")])
def test_a_missing_tool_is_named_with_the_debian_command_before_anything_is_asked(tmp_path, run, present, missing):
    env = {**os.environ, "PATH": _path_with_only(tmp_path, *present), "PYTHONPATH": str(ROOT)}
    clean = subprocess.run([sys.executable, "-m", "keys.cli", "clean", str(run.out)], capture_output=True, text=True, env=env, timeout=60)
    assert clean.returncode == 1
    (line,) = clean.stderr.strip().splitlines()
    assert line.startswith(f"intake-keys: error: {missing}") and line.endswith("install with `sudo apt install mat2 bubblewrap`")
    out = tmp_path / "out"
    decrypt = subprocess.run(
        [sys.executable, "-m", "keys.cli", "decrypt", "no-such.bundle", "--key", "no-such.secret", "--out", str(out), "--clean"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert decrypt.returncode == 1 and "sudo apt install mat2 bubblewrap" in decrypt.stderr and not out.exists()


def test_decrypt_without_clean_still_writes_the_triage_view_with_flags(tmp_path, capsys, alice_files, alice):
    sources = [Source("s1", "brave otter", [Submission("file", made.elf(), name="update.pdf"), Submission("file", made.pdf(), name="report.pdf")])]
    (tmp_path / "b").write_bytes(build_export(sources, [alice]))
    code = cli.main(["decrypt", str(tmp_path / "b"), "--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    index = (tmp_path / "out" / "index.html").read_text()
    assert "Linux program (ELF): never run it" in index and "its content is not what its name (.pdf) says" in index
    assert "not cleaned yet" in index and "intake-keys clean " in index
    assert 'href="brave%20otter/2026-11-28%20report.pdf"' in index and 'href="brave%20otter/2026-11-28%20update.pdf"' not in index


def test_audio_that_needs_ffmpeg_is_cleaned_with_it_or_reported_without_it(tmp_path, capsys, alice, alice_files):
    """mat2 cleans WAV (and video) through ffmpeg, which Debian's mat2 only suggests."""
    (tmp_path / "b").write_bytes(build_export([Source("s1", "brave otter", [Submission("file", made.wav(), name="call.wav")])], [alice]))
    common = ["--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(tmp_path / "out")]
    assert cli.main(["decrypt", str(tmp_path / "b"), *common, "--clean"]) == 0
    out = capsys.readouterr().out
    cleaned = tmp_path / "out" / "brave otter" / f"{DAY} call.cleaned.wav"
    if shutil.which("ffmpeg"):
        assert f"{DAY} call.wav: cleaned; removed: Artist" in out
        assert made.AUTHOR.encode() not in cleaned.read_bytes() and planted_in(exiftool(cleaned)) == []
    else:
        assert f"{DAY} call.wav: not cleaned: mat2 failed" in out and "Unable to find ffmpeg" in out
        assert not cleaned.exists()


def test_one_source_folder_can_be_cleaned_and_the_triage_view_beside_it_follows(tmp_path, capsys, alice, alice_files):
    sources = [Source("s1", "brave otter", [Submission("file", made.pdf(), name="a.pdf")]), Source("s2", "quiet heron", [Submission("file", made.pdf(), name="b.pdf")])]
    (tmp_path / "b").write_bytes(build_export(sources, [alice]))
    common = ["--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(tmp_path / "out")]
    assert cli.main(["decrypt", str(tmp_path / "b"), *common]) == 0
    assert cli.main(["clean", str(tmp_path / "out" / "quiet heron")]) == 0
    assert "1 file(s) cleaned" in capsys.readouterr().out
    assert (tmp_path / "out" / "quiet heron" / f"{DAY} b.cleaned.pdf").is_file()
    assert not (tmp_path / "out" / "brave otter" / f"{DAY} a.cleaned.pdf").exists()
    index = (tmp_path / "out" / "index.html").read_text()
    assert f'href="quiet%20heron/{DAY}%20b.cleaned.pdf"' in index and "not cleaned yet" in index  # brave otter's is not
