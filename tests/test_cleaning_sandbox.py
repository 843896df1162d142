"""The bubblewrap sandbox the cleaner runs in, tried with real commands: what it cannot do, and its limits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from keys import cli
from keys.cleaning import metadata, sandbox
from keys.cleaning.sandbox import Limits
from tests.cleaning_files import image

PY = "/usr/bin/python3"


@pytest.fixture
def tools() -> sandbox.Tools:
    return sandbox.find_tools()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """An input file and an empty scratch folder."""
    secret = tmp_path / "input.txt"
    secret.write_text("the source's file\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return secret, scratch


def inside(tools, setup, code: str, limits: Limits = Limits(seconds=30)) -> sandbox.Outcome:
    secret, scratch = setup
    return sandbox.run(tools, [PY, "-c", code], secret, "input.txt", scratch, limits)


def test_the_sandbox_has_no_network(tools, setup):
    outcome = inside(tools, setup, "import socket; print(sorted(n for _, n in socket.if_nameindex()))\n"
                     "s = socket.socket(); s.settimeout(3)\n"
                     "try:\n s.connect(('1.1.1.1', 443)); print('CONNECTED')\nexcept OSError as e: print('refused', e.errno)")  # fmt: skip
    assert outcome.returncode == 0, outcome.output
    assert "['lo']" in outcome.output and "refused" in outcome.output and "CONNECTED" not in outcome.output


def test_the_input_is_read_only_and_only_the_scratch_folder_is_writable(tools, setup, tmp_path):
    secret, scratch = setup
    private = Path("/tmp") / f"intake-sandbox-tmp-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "import os\n"
        "print(open('/work/input.txt').read().strip())\n"
        "for path in ['/work/input.txt', '/usr/evil', '/etc/evil', '/evil', '/home/evil', '/root/evil']:\n"
        "    try:\n        open(path, 'a').write('x'); print('WROTE', path)\n"
        "    except OSError as e: print('no', path)\n"
        f"open('/work/out.txt', 'w').write('ok'); open('/tmp/{private.name}', 'w').write('ok')\n"
        "print(sorted(os.listdir('/')), os.path.exists('/etc/passwd'), os.path.exists(os.path.expanduser('~/.ssh')))\n"
    )
    outcome = inside(tools, setup, code)
    assert outcome.returncode == 0, outcome.output
    assert "the source's file" in outcome.output and "WROTE" not in outcome.output
    assert secret.read_text() == "the source's file\n"
    assert (scratch / "out.txt").read_text() == "ok"
    assert "False False" in outcome.output  # no /etc/passwd, no home: nothing of the laptop's to read
    assert not (tmp_path / "evil").exists()
    assert not private.exists()  # the sandbox's /tmp is its own


def test_a_hanging_command_is_stopped_at_the_time_limit_with_everything_it_started(tools, setup):
    # 300 s and a fraction of its own: another run of this test on the machine may have a sleep going too.
    seconds = f"300.{os.getpid()}{time.monotonic_ns() % 10**6}"
    started = time.monotonic()
    outcome = inside(tools, setup, f"import subprocess, time; subprocess.Popen(['sleep', '{seconds}']); time.sleep(300)", Limits(seconds=2))
    assert outcome.timed_out and time.monotonic() - started < 30
    # What ran inside dies with the sandbox's pid namespace; the kernel reaps it a moment later.
    deadline = time.monotonic() + 5
    while (leftover := [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == f"sleep\0{seconds}\0".encode()]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover == []


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""


def test_memory_is_capped(tools, setup):
    outcome = inside(tools, setup, "x = bytearray(3 << 30); print('GOT IT')", Limits(seconds=30, memory=1 << 30))
    assert outcome.returncode != 0 and "GOT IT" not in outcome.output and "MemoryError" in outcome.output


def test_a_cleaner_that_runs_out_of_time_is_reported_and_the_run_goes_on(tmp_path, capsys, alice, alice_files):
    """A real image too large to clean in one second: the file is reported, the next is still cleaned."""
    from PIL import Image

    from tests.fixtures_keys import Source, Submission, build_export

    big = tmp_path / "big.png"
    Image.effect_noise((4000, 4000), 64).convert("RGB").save(big, compress_level=1)
    sources = [Source("s1", "brave otter", [Submission("file", big.read_bytes(), name="big.png"), Submission("file", image("JPEG"), name="small.jpg")])]
    (tmp_path / "b").write_bytes(build_export(sources, [alice]))
    common = ["--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(tmp_path / "out")]
    assert cli.main(["decrypt", str(tmp_path / "b"), *common]) == 0
    capsys.readouterr()
    assert cli.main(["clean", str(tmp_path / "out"), "--time-limit", "1"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "big.png:" in line]
    # One second, and one more per 8 MiB of the file (Limits.for_file).
    seconds = 1 + big.stat().st_size // sandbox.SLOW_DISK
    assert f"took longer than {seconds} seconds" in line or "crashed or went over its time or memory limit" in line, line
    assert not (tmp_path / "out" / "brave otter" / "2026-11-28 big.cleaned.png").exists()
    # With room to work, the same run cleans the small file (and, this time, the big one too).
    assert cli.main(["clean", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "brave otter" / "2026-11-28 small.cleaned.jpg").is_file()


def test_field_names_are_read_from_mat2_show_with_members_and_no_values():
    output = (
        "[+] Metadata for /work/input.zip:\n[++] Metadata for a.docx:\n[+++] Metadata for docProps/core.xml:\n"
        "        dc:creator: Ivan\n        cp:revision: 17\n[++] Metadata for b.jpg:\n      GPSLatitude: 55 deg\n"
        "      Evil\x1b[31m: x\n"
    )
    assert metadata.fields(output) == ("a.docx / docProps/core.xml / dc:creator", "a.docx / docProps/core.xml / cp:revision", "b.jpg / GPSLatitude", "b.jpg / Evil [31m")
    assert metadata.fields("  No metadata found in /work/input.jpg.\n") == ()


def test_find_tools_refuses_a_mat2_outside_usr(tmp_path, monkeypatch):
    fake = tmp_path / "mat2"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(sandbox.ToolMissingError, match="the sandbox sees only /usr"):
        sandbox.find_tools()


def test_a_cleaner_starved_of_memory_fails_on_every_file_and_the_run_still_finishes(tmp_path, capsys, alice, alice_files):
    from tests.cleaning_files import pdf
    from tests.fixtures_keys import Source, Submission, build_export

    sources = [Source("s1", "brave otter", [Submission("file", image("JPEG"), name="a.jpg"), Submission("file", pdf(), name="b.pdf")])]
    (tmp_path / "b").write_bytes(build_export(sources, [alice]))
    common = ["--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(tmp_path / "out")]
    assert cli.main(["decrypt", str(tmp_path / "b"), *common]) == 0
    capsys.readouterr()
    assert cli.main(["clean", str(tmp_path / "out"), "--memory-limit", "40", "--time-limit", "15"]) == 0  # starved, some hang
    out = capsys.readouterr().out
    assert "0 file(s) cleaned, 2 not cleaned" in out
    assert len([line for line in out.splitlines() if line.startswith("brave otter/") and ": not cleaned: " in line]) == 2
    assert sorted(p.name for p in (tmp_path / "out" / "brave otter").iterdir()) == ["2026-11-28 a.jpg", "2026-11-28 b.pdf", "cleaning.json", "source.json"]
