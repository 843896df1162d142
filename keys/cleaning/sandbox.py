"""Run one command on one file under bubblewrap, with time and memory limits.

The sandbox has no network (``--unshare-all`` leaves only a loopback of its
own), sees /usr read-only and a handful of read-only files from /etc, a private
/tmp of limited size, and one scratch folder: the only place it can write
besides /tmp (its root is remounted read-only), where the one input file
appears read-only. Address space, CPU time and file size are
capped by rlimits set before bwrap starts (inherited by everything inside), and
no core dump is ever written; a wall-clock timeout kills the whole process group.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

from keys.cleaning import wording
from keys.errors import KeysError

INSTALL = "sudo apt install mat2 bubblewrap"
OUTPUT_LIMIT = 64 << 10  # characters of the tool's output kept
NESTED = "/run/intake/bwrap"
# mat2 wraps each helper it runs (exiftool, ffmpeg) in bwrap of its own, which cannot nest inside
# ours on many systems (the kernel refuses the inner /proc). This stand-in, first on the sandbox's
# PATH, drops bwrap's options and runs the helper directly: still inside our sandbox.
_NESTED_BWRAP = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    --ro-bind|--ro-bind-try|--bind|--bind-try|--dev-bind|--dev-bind-try|--symlink|--setenv|--chmod) shift 3 ;;
    --dev|--proc|--tmpfs|--mqueue|--dir|--chdir|--cap-drop|--cap-add|--unsetenv|--remount-ro|--hostname|--uid|--gid|--perms|--size) shift 2 ;;
    --*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"""
_ETC = ("/etc/ld.so.cache", "/etc/mime.types", "/etc/fonts", "/etc/perl", "/etc/alternatives", "/etc/ssl/openssl.cnf")


class ToolMissingError(KeysError):
    """mat2 or bubblewrap is not installed (or not usable)."""


SLOW_DISK = 8 << 20  # bytes a second: a USB 2 stick writing. Video is copied whole, so time grows with the file.


@dataclasses.dataclass(frozen=True)
class Limits:
    seconds: int = 120
    memory: int = 2 << 30  # address space, bytes
    file_size: int = 4 << 30  # largest file the tool may write
    tmp_size: int = 1 << 30  # the private /tmp (mat2 unpacks archives there)

    def for_file(self, size: int) -> Limits:
        """These limits grown for an input of ``size`` bytes: a second more per 8 MiB, and room for a copy twice its size.

        mat2 rewrites a video or audio file whole (ffmpeg copies every packet),
        so a 4 GiB phone video needs more than the two minutes and the 4 GiB
        file that are plenty for a document; memory does not grow with the file.
        """
        return dataclasses.replace(self, seconds=self.seconds + size // SLOW_DISK, file_size=max(self.file_size, 2 * size))


@dataclasses.dataclass(frozen=True)
class Tools:
    mat2: str
    bwrap: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    timed_out: bool = False

    @property
    def killed(self) -> bool:
        """Ended by a signal: a crash, or the kernel enforcing a limit (bwrap exits 128 + the signal's number)."""
        return self.returncode < 0 or 128 < self.returncode <= 128 + 64


def find_tools() -> Tools:
    """mat2 and bwrap from PATH, or one line saying how to install what is missing."""
    mat2, bwrap = shutil.which("mat2"), shutil.which("bwrap")
    if not mat2 or not bwrap:
        missing = "both-missing" if not mat2 and not bwrap else "mat2-missing" if not mat2 else "bubblewrap-missing"
        raise ToolMissingError(wording.text(missing).format(install=INSTALL))
    if not os.path.realpath(mat2).startswith("/usr/"):
        raise ToolMissingError(wording.text("mat2-outside-usr").format(mat2=mat2, install=INSTALL))
    return Tools(mat2, bwrap)


def check_sandbox(tools: Tools, scratch: Path) -> None:
    """Fail with one line if bwrap cannot make a sandbox on this system (e.g. user namespaces disabled)."""
    probe = scratch / "probe"
    probe.write_bytes(b"")
    outcome = run(tools, [tools.mat2, "--version"], probe, "probe", scratch, Limits(seconds=60))
    if outcome.returncode != 0:
        first = next((line for line in outcome.output.splitlines() if line.strip()), "no output")
        raise ToolMissingError(wording.text("no-sandbox").format(reason=printable(first)[:200]))


def run(tools: Tools, argv: list[str], input_file: Path, inside_name: str, scratch: Path, limits: Limits) -> Outcome:
    """Run ``argv`` in a sandbox where ``input_file`` is /work/``inside_name`` (read-only) and /work is ``scratch``."""
    nested = scratch / ".nested-bwrap"
    if not nested.exists():
        nested.write_text(_NESTED_BWRAP)
        nested.chmod(0o500)
    command = [
        tools.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "PATH", f"{os.path.dirname(NESTED)}:/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
        "--ro-bind", "/usr", "/usr", *_top_level_links(),
        *[arg for path in _ETC for arg in ("--ro-bind-try", path, path)],
        "--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_size), "--tmpfs", "/tmp",
        "--bind", str(scratch), "/work", "--ro-bind", str(input_file), f"/work/{inside_name}", "--chdir", "/work",
        "--ro-bind", str(nested), NESTED, "--remount-ro", "/",
        "--", *argv,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: _limit(limits),
    )
    try:
        output, _ = process.communicate(timeout=limits.seconds)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the process group we started: bwrap and all inside
        output, _ = process.communicate()
        timed_out = True
    return Outcome(process.returncode, output[:OUTPUT_LIMIT].decode("utf-8", "replace"), timed_out)


def _limit(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.seconds, limits.seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _top_level_links() -> list[str]:
    """/bin, /lib... as on the host: symlinks into /usr on merged-/usr systems, else read-only binds."""
    args = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def printable(text: str) -> str:
    """``text`` without control characters, for a terminal line or a record (it may come from a hostile file)."""
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()
