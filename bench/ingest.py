"""Ingest benchmark: a large upload through gunicorn, encrypted on receipt, durable.

Measured in one run, each on a fresh server under deploy/gunicorn.conf.py:
  intake     a logged-in source uploads one file; the server encrypts it as it
             arrives to 3 journalist keys and stores it (the slots file, fsynced)
             before answering.
  plain      baseline (a): a plain Flask app saving `request.files` unencrypted
             (bench/plain_upload_app.py), fsynced before answering; it keeps every
             upload, as intake's store does.
  gpg        baselines (b): the plain upload, then gpg as SecureDrop stores a
             submission today (gzip -9, then gpg -z 0 to one key), and gpg -z 0
             to the 3 keys; each result fsynced.
  floor      the physical limits, in the same round: the slower of writing the
             upload's bytes to a file with fsync (the faster of through the page
             cache and O_DIRECT, as intake's slots file does) and raw secretstream
             over them.
the CPU time (user + system) the workers spent on each upload of intake and plain,
and the workers' peak RSS (VmHWM, reset before each upload) for uploads of
256 MiB and 1 GiB. intake and plain alternate (A B, B A, ...); each figure is
median [min..max] of the rounds, ratios per round.

Targets (issue 10, and bench/envelope.py's against gpg): intake at least as fast
as plain (>= 1.0x), 4x faster than each gpg-after-upload, >= 0.7x the floor,
worker RSS < 100 MiB and flat in file size; MISSED is printed next to a target
the median does not meet. Against `gpg -z 0` the bench also prints what a server
exactly as fast as the plain app would show, (plain + gpg) / plain: 4x there
needs a server about twice as fast as the plain app.

Run: .venv/bin/python bench/ingest.py [--size-mib 256] [--large-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import errno
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paired import Paired, spread, verdict  # noqa: E402
from tests.fixtures_server import (  # noqa: E402
    Form,
    GunicornProcess,
    SourceClient,
    Upload,
    encode_multipart,
    run_gunicorn,
    run_intake_server,
)

MIB = 1024 * 1024
JOURNALISTS = 3


def _body(form: Form, values: dict[str, str], content: Sequence[memoryview | bytes], name: str = "upload.bin") -> tuple[str, list]:
    """Multipart pieces with the file content as `content` (pieces of one buffer, so 1 GiB needs no 1 GiB of memory)."""
    placeholder = b"\0intake-bench-content\0"
    content_type, pieces = encode_multipart(form, values, {"files": [Upload(name, placeholder)]})
    at = next(i for i, piece in enumerate(pieces) if piece is placeholder)
    return content_type, pieces[:at] + list(content) + pieces[at + 1 :]


def _post(client: SourceClient, path: str, content_type: str, pieces: list) -> float:
    started = time.perf_counter()
    page = client.request("POST", path, pieces, {"Content-Type": content_type}, follow_redirects=False)
    elapsed = time.perf_counter() - started
    if page.status not in (200, 303):
        raise RuntimeError(f"upload to {path} answered {page.status}")
    return elapsed


def reset_peak_rss(server: GunicornProcess) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    for pid in server.worker_pids():
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(server: GunicornProcess) -> float:
    peaks = []
    for pid in server.worker_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def workers_cpu_seconds(server: GunicornProcess) -> float:
    """User + system CPU of the server's workers so far, all their threads (/proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in server.worker_pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _cpu_of(server: GunicornProcess, upload, content: list, cpu: list[float]) -> float:
    before = workers_cpu_seconds(server)
    seconds = upload(content)
    cpu.append(workers_cpu_seconds(server) - before)
    return seconds


def _content(data: bytes, total: int) -> list[memoryview]:
    view = memoryview(data)
    return [view[: min(len(data), total - offset)] for offset in range(0, total, len(data))]


class IntakeTarget:
    def __init__(self, base: Path, max_request_bytes: int):
        self._context = run_intake_server(
            base, journalist_count=JOURNALISTS, app_spec="bench.intake_app:app", env={"BENCH_MAX_REQUEST_BYTES": str(max_request_bytes)}
        )

    def __enter__(self) -> "IntakeTarget":
        self.server = self._context.__enter__()
        self.client = SourceClient(self.server.url, timeout=600)
        _codename, self.form_page = self.client.start_as_new_source()
        return self

    def __exit__(self, *exc_info) -> None:
        self._context.__exit__(*exc_info)

    def upload(self, content: list) -> float:
        content_type, pieces = _body(self.form_page.form_with("message", "files"), {"message": ""}, content)
        return _post(self.client, "/submit", content_type, pieces)


class PlainTarget:
    FORM = Form("/upload", "post", "multipart/form-data", [("files", "file", "")])

    def __init__(self, base: Path):
        self.upload_dir = base / "uploads"
        self.upload_dir.mkdir()
        self._context = run_gunicorn("bench.plain_upload_app:app", base, {"BENCH_UPLOAD_DIR": str(self.upload_dir)})

    def __enter__(self) -> "PlainTarget":
        self.server = self._context.__enter__()
        self.client = SourceClient(self.server.url, timeout=600)
        return self

    def __exit__(self, *exc_info) -> None:
        self._context.__exit__(*exc_info)

    def upload(self, content: list) -> float:
        # The uploads before stay, as a tip line keeps what it receives and as intake's store
        # keeps them in this bench. Deleting them first (as this bench did) gave the plain app the
        # page cache they freed: on this VM writing into fresh page-cache pages costs ~2 s of
        # system time per 256 MiB, into pages just freed ~0.1 s (docs/PERFORMANCE.md, "The slots file").
        before = set(self.upload_dir.iterdir())
        content_type, pieces = _body(self.FORM, {}, content)
        elapsed = _post(self.client, "/upload", content_type, pieces)
        (self._saved,) = set(self.upload_dir.iterdir()) - before
        return elapsed

    def saved_file(self) -> Path:
        return self._saved


class Gpg:
    """A throwaway GnuPG home with 3 recipients (Curve25519 keys, like intake's)."""

    def __init__(self, base: Path):
        self.home = base / "gnupg"
        self.home.mkdir(mode=0o700)
        self.recipients = [f"bench-journalist-{i}@example.invalid" for i in range(JOURNALISTS)]
        for uid in self.recipients:
            self._gpg("--passphrase", "", "--quick-generate-key", uid, "future-default", "default", "never")

    def _gpg(self, *args: str) -> None:
        subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--quiet", *args], check=True, capture_output=True)

    def _timed(self, script: str, out: Path) -> float:
        started = time.perf_counter()
        subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, capture_output=True)
        with open(out, "rb") as f:
            os.fsync(f.fileno())
        elapsed = time.perf_counter() - started
        out.unlink()
        return elapsed

    def securedrop(self, path: Path) -> float:
        """As SecureDrop stores a submission today: gzip -9, then gpg to one key with compression off, fsync."""
        out = path.with_suffix(".gz.gpg")
        return self._timed(f"gzip -9 -c {path} | gpg --homedir {self.home} --batch --quiet --trust-model always --yes -z 0"
                           f" --recipient {self.recipients[0]} --encrypt --output {out}", out)

    def uncompressed(self, path: Path) -> float:
        """gpg to the 3 journalist keys with compression off (-z 0), fsync."""
        out = path.with_suffix(".gpg")
        recipients = " ".join(f"--recipient {uid}" for uid in self.recipients)
        return self._timed(f"gpg --homedir {self.home} --batch --quiet --trust-model always --yes -z 0 {recipients}"
                           f" --output {out} --encrypt {path}", out)


def disk_write_fsync(base: Path, data: bytes, total: int) -> float:
    """The disk's floor: the upload's bytes written to a file, file and folder fsynced."""
    path = base / "floor.bin"
    started = time.perf_counter()
    with open(path, "wb") as out:
        for piece in _content(data, total):
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    return _folder_synced_then_removed(path, started)


def disk_write_direct(base: Path, data: bytes, total: int) -> float | None:
    """The same with O_DIRECT from a page-aligned buffer, as the slots file writes (copying into
    it included), fdatasync, folder fsynced: the disk without the page cache, which costs this
    kind of VM ~7 µs per fresh page (docs/PERFORMANCE.md, "Why O_DIRECT"). None where the file
    system refuses O_DIRECT (tmpfs); any other error is raised."""
    path = base / "floor-direct.bin"
    piece = 4 * MIB
    buffer = mmap.mmap(-1, piece)
    started = time.perf_counter()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return None
    try:
        view = memoryview(data)
        for offset in range(0, total, piece):
            length = min(piece, total - offset)
            buffer[:length] = view[offset % len(data) : offset % len(data) + length]
            os.pwrite(fd, memoryview(buffer)[:length] if length < piece else buffer, offset)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return _folder_synced_then_removed(path, started)


def _folder_synced_then_removed(path: Path, started: float) -> float:
    """Seconds since ``started`` once the folder holding the written file is fsynced too; then
    the file goes (outside the time)."""
    folder = os.open(path.parent, os.O_RDONLY)
    os.fsync(folder)
    os.close(folder)
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def raw_secretstream(data: bytes, total: int) -> float:
    """The crypto's floor: secretstream over the upload's bytes in 64 KiB messages, nothing else."""
    from nacl import bindings as sodium

    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_push(state, sodium.crypto_secretstream_xchacha20poly1305_keygen())
    push, tag = sodium.crypto_secretstream_xchacha20poly1305_push, sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
    started = time.perf_counter()
    for piece in _content(data, total):
        for i in range(0, len(piece), 64 * 1024):
            push(state, bytes(piece[i : i + 64 * 1024]), None, tag)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size, large = args.size_mib * MIB, args.large_mib * MIB
    data = os.urandom(size)  # incompressible, like most media files sources send
    content = _content(data, size)
    print(f"ingest benchmark: {args.size_mib} MiB upload, {JOURNALISTS} journalist keys, {args.repeat} paired rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        base = Path(tmp)
        (base / "intake").mkdir()
        (base / "plain").mkdir()
        names = ("intake", "plain", "gpg as SecureDrop", "gpg -z 0", "disk, buffered", "disk, O_DIRECT", "secretstream", "floor")
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {"intake": [], "plain": []}  # the workers' CPU seconds per upload
        gpg = Gpg(base)
        with IntakeTarget(base / "intake", max(size, large) + MIB) as intake, PlainTarget(base / "plain") as plain:
            for number in range(args.repeat):  # paired rounds: the order flips every round
                for contender in (("intake", "plain") if number % 2 == 0 else ("plain", "intake")):
                    if contender == "intake":
                        times["intake"].append(_cpu_of(intake.server.gunicorn, intake.upload, content, cpu["intake"]))
                    else:
                        plain_seconds = _cpu_of(plain.server, plain.upload, content, cpu["plain"])
                        times["plain"].append(plain_seconds)
                        times["gpg as SecureDrop"].append(plain_seconds + gpg.securedrop(plain.saved_file()))
                        times["gpg -z 0"].append(plain_seconds + gpg.uncompressed(plain.saved_file()))
                # The physical limits, in the same round: the slower of the disk and the crypto.
                buffered, direct = disk_write_fsync(base, data, size), disk_write_direct(base, data, size)
                crypto = raw_secretstream(data, size)
                times["disk, buffered"].append(buffered)
                if direct is not None:
                    times["disk, O_DIRECT"].append(direct)
                times["secretstream"].append(crypto)
                times["floor"].append(max(min(buffered, direct or buffered), crypto))

            rss = {}
            for label, total in ((f"{args.size_mib} MiB", size), (f"{args.large_mib} MiB", large)):
                reset_peak_rss(intake.server.gunicorn)
                intake.upload(_content(data, total))
                rss[label] = peak_rss_mib(intake.server.gunicorn)
            reset_peak_rss(plain.server)
            plain.upload(content)
            plain_rss = peak_rss_mib(plain.server)

    mib = args.size_mib
    print()
    print(f"MiB/s, median [min..max] of {args.repeat} rounds:")
    labels = {"intake": "intake (encrypt on receipt)", "plain": "plain Flask request.files + fsync",
              "gpg as SecureDrop": "plain upload + gzip -9 + gpg -z 0 (1 key)", "gpg -z 0": "plain upload + gpg -z 0 (3 keys)",
              "disk, buffered": "  disk write + fsync, through the page cache", "disk, O_DIRECT": "  disk write + fdatasync, O_DIRECT",
              "secretstream": "  raw secretstream", "floor": "min(the faster disk write, raw secretstream)"}
    for name in names:
        if times[name]:
            print(f"  {labels[name]:48}{spread([mib / t for t in times[name]], 0)}")
    print()
    print("intake against each (the other's time / intake's, per round; higher is better for intake):")
    for name, target in (("plain", 1.0), ("gpg as SecureDrop", 4.0), ("gpg -z 0", 4.0), ("floor", 0.7)):
        figure = Paired(labels[name], "intake", labels[name])
        for ours, theirs in zip(times["intake"], times[name]):
            figure.add(ours, theirs)
        ratio = statistics.median(figure.ratios)
        print(f"  vs {labels[name]:48}{spread(figure.ratios)}x  target >= {target}x{verdict(ratio, target, 'higher')}")
    as_fast_as_plain = [after / plain for after, plain in zip(times["gpg -z 0"], times["plain"])]
    print(f"  (against gpg -z 0, a server exactly as fast as plain would show {spread(as_fast_as_plain)}x)")
    plain_vs_floor = [floor / plain for floor, plain in zip(times["floor"], times["plain"])]
    print(f"  (the plain app against the same floor: {spread(plain_vs_floor)}x)")
    print(f"workers' CPU per {mib} MiB upload (user + system, s): intake {spread(cpu['intake'], 2)}, plain {spread(cpu['plain'], 2)};"
          f" intake / plain {spread([ours / theirs for ours, theirs in zip(cpu['intake'], cpu['plain'])])}x")
    for label, peak in rss.items():
        print(f"intake worker peak RSS {label:>9}: {peak:6.1f} MiB  (target < 100 MiB){verdict(peak, 100, 'lower')}")
    print(f"plain worker peak RSS {args.size_mib:>5} MiB:  {plain_rss:6.1f} MiB  (for comparison)")


if __name__ == "__main__":
    main()
