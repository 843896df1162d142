"""`intake-keys decrypt` names its files in batches, each made durable first: killed at
any moment, it leaves no partial file under a final name and records no missing file;
decrypting again completes the folder (an item named but not yet recorded when it was
killed is written again, under a numbered name)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keys import unpack
from keys.bundle_reader import ExportBundle
from keys.errors import TamperedError
from keys.files import TEMP_PREFIX
from tests.fixtures_keys import SERVER_PUBLIC, KeyFiles, Source, Submission, alice, alice_files, build_export  # noqa: F401

BIN = Path(sys.executable).parent


def many_sources(count: int, per_source: int) -> tuple[list[Source], dict[str, bytes]]:
    sources, bodies = [], {}
    for s in range(count):
        submissions = []
        for i in range(per_source):
            body = f"source {s}, message {i}: ".encode() + os.urandom(2000 if i % 5 else 150_000).hex().encode()
            submissions.append(Submission("message", body))
            bodies[body[:40].decode()] = body
        sources.append(Source(f"s{s:04d}", f"source {chr(97 + s % 26)}{chr(97 + s // 26 % 26)}", submissions))
    return sources, bodies


def check_folder(out: Path, bodies: dict[str, bytes]) -> set[str]:
    """Every named file is complete, every recorded file exists; returns which items have a file."""
    named = set()
    for folder in (p for p in out.iterdir() if p.is_dir()):
        recorded = set()
        if (folder / "source.json").exists():
            recorded = {entry["file"] for entry in json.loads((folder / "source.json").read_text())["items"]}
        for path in folder.iterdir():
            if path.name.startswith(TEMP_PREFIX) or path.name == "source.json":
                continue
            data = path.read_bytes()
            assert bodies.get(data[:40].decode()) == data, f"{path} is partial"
            named.add(data[:40].decode())
        assert recorded <= {p.name for p in folder.iterdir()}, f"{folder}: a recorded file is missing"
    return named


def test_many_items_of_one_day_get_numbered_names(alice_files: KeyFiles, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(unpack, "BATCH_ITEMS", 7)
    sources, bodies = many_sources(3, 20)
    (tmp_path / "export.bundle").write_bytes(build_export(sources, [alice_files.identity]))
    out = tmp_path / "out"
    run = subprocess.run([BIN / "intake-keys", "decrypt", tmp_path / "export.bundle", "--key", alice_files.secret,
                          "--passphrase-file", alice_files.passphrase_file, "--out", out], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert check_folder(out, bodies) == set(bodies) and len(bodies) == 60
    names = sorted(p.name for p in (out / "source aa").iterdir())
    assert names[:3] == ["2026-11-28 message (10).txt", "2026-11-28 message (11).txt", "2026-11-28 message (12).txt"]
    assert "2026-11-28 message.txt" in names and "2026-11-28 message (20).txt" in names


@pytest.mark.slow
def test_killed_at_any_moment_it_leaves_nothing_partial_under_a_final_name(alice_files: KeyFiles, tmp_path: Path):
    sources, bodies = many_sources(40, 12)
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(sources, [alice_files.identity]))
    argv = [BIN / "intake-keys", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file", alice_files.passphrase_file]
    started = time.monotonic()
    whole = subprocess.run([*argv, "--out", tmp_path / "whole"], capture_output=True)
    assert whole.returncode == 0
    took = time.monotonic() - started
    rng = random.Random(5)
    for attempt in range(4):
        out = tmp_path / f"killed-{attempt}"
        process = subprocess.Popen([*argv, "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.9) * took)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():
            check_folder(out, bodies)
            left = list(out.rglob(f"{TEMP_PREFIX}*"))  # plaintext of the items it was killed in
            (out / "source aa").mkdir(exist_ok=True)
            (out / "source aa" / f"{TEMP_PREFIX}planted").write_bytes(b"a decrypted item never finished")
        again = subprocess.run([*argv, "--out", out], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        # Every item is there (one named but not yet recorded when killed comes twice: "(2)").
        assert check_folder(out, bodies) == set(bodies)
        # and no unfinished plaintext is left under a temporary name, the killed run's or planted
        assert not list(out.rglob(f"{TEMP_PREFIX}*")), left


def folder_contents(out: Path) -> dict[str, bytes]:
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def test_several_processes_write_exactly_what_one_writes(alice_files: KeyFiles, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(unpack, "BATCH_ITEMS", 5)
    sources, _bodies = many_sources(12, 4)
    # Sources that share a designation compete for the same folder names: they stay in one process.
    sources += [Source(f"t{n}", "source aa", [Submission("message", f"twin {n}".encode()), Submission("file", b"%PDF-", "a.pdf")])
                for n in range(3)]
    (tmp_path / "export.bundle").write_bytes(build_export(sources, [alice_files.identity]))
    folders = {}
    for workers in (1, 3):
        out = tmp_path / f"out-{workers}"
        with ExportBundle.open(tmp_path / "export.bundle") as bundle:
            bundle.verify({bytes(SERVER_PUBLIC.verify_key): SERVER_PUBLIC})
            summary = unpack.unpack_bundle(bundle, alice_files.identity, out, alice_files.secret, workers=workers)
        assert summary.written == 12 * 4 + 3 * 2 and not summary.damaged
        folders[workers] = {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
    assert folders[1] == folders[3]
    assert {"source aa (2)/2026-11-28 a.pdf", "source aa (4)/source.json"} <= set(folders[3])


def test_the_processes_that_share_the_work_die_with_the_command(alice_files: KeyFiles, tmp_path: Path):
    """Killed while writing, decrypt stops at once, all its processes: none goes on naming files
    (a decrypt run again at once would share the folder with it)."""
    sources, _bodies = many_sources(60, 10)
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(sources, [alice_files.identity]))
    out = tmp_path / "out"
    process = subprocess.Popen([BIN / "intake-keys", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file",
                                alice_files.passphrase_file, "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children_file = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 60
    children: list[str] = []
    while time.monotonic() < deadline and process.poll() is None:
        children = children_file.read_text().split() if children_file.exists() else children
        if len(children) >= 2 and sum(1 for _ in out.rglob("*")) > 100:  # the children are writing
            break
        time.sleep(0.005)
    assert len(children) >= 2, "decrypt did not share the work (one CPU?)"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 0.5
    while any(map(running, children)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(map(running, children))
    left = sorted(out.rglob("*"))
    time.sleep(1)
    assert sorted(out.rglob("*")) == left


def running(pid: str) -> bool:
    """Alive, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_when_one_process_meets_a_changed_item_the_others_stop_and_keep_what_is_complete(alice_files: KeyFiles, tmp_path: Path,
                                                                                       monkeypatch):
    monkeypatch.setattr(unpack, "BATCH_ITEMS", 3)
    sources, bodies = many_sources(8, 6)
    path = tmp_path / "export.bundle"
    path.write_bytes(build_export(sources, [alice_files.identity]))
    out = tmp_path / "out"
    with ExportBundle.open(path) as bundle:
        bundle.verify({bytes(SERVER_PUBLIC.verify_key): SERVER_PUBLIC})
        last = bundle.items[-1]
        with open(path, "r+b") as f:  # changed on disk after the signature check, before it is decrypted
            f.seek(last.offset + last.length // 2)
            f.write(b"\x00" * 16)
        with pytest.raises(TamperedError):
            unpack.unpack_bundle(bundle, alice_files.identity, out, alice_files.secret, workers=2)
    named = check_folder(out, bodies)
    assert 0 < len(named) < len(bodies)
