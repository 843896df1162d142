"""Ingest benchmark: a large upload through gunicorn, encrypted on receipt, durable.

Measured in one run, each on a fresh server under deploy/gunicorn.conf.py:
  intake     a logged-in source uploads one file; the server encrypts it as it
             arrives to 3 journalist keys and stores it in SQLCipher (fsynced)
             before answering.
  plain      baseline (a): a plain Flask app saving `request.files` unencrypted
             (bench/plain_upload_app.py), fsynced before answering.
  gpg        baseline (b): the plain upload, then `gpg --encrypt` to 3
             recipients (gpg's defaults) and fsync of the result.
and the workers' peak RSS (VmHWM, reset before each upload) for uploads of
256 MiB and 1 GiB.

Targets (DESIGN.md): intake at least as fast as plain (>= 1.0x), 4x faster
than gpg-after-upload, worker RSS < 100 MiB and flat in file size.

Run: .venv/bin/python bench/ingest.py [--size-mib 256] [--large-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
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
        for old in self.upload_dir.iterdir():
            old.unlink()
        content_type, pieces = _body(self.FORM, {}, content)
        return _post(self.client, "/upload", content_type, pieces)

    def saved_file(self) -> Path:
        (saved,) = list(self.upload_dir.iterdir())
        return saved


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

    def encrypt(self, path: Path) -> float:
        out = path.with_suffix(".gpg")
        started = time.perf_counter()
        recipients = [arg for uid in self.recipients for arg in ("--recipient", uid)]
        self._gpg("--trust-model", "always", "--yes", "--output", str(out), *recipients, "--encrypt", str(path))
        with open(out, "rb") as f:
            os.fsync(f.fileno())
        elapsed = time.perf_counter() - started
        out.unlink()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size, large = args.size_mib * MIB, args.large_mib * MIB
    data = os.urandom(size)  # incompressible, like most media files sources send
    content = _content(data, size)
    print(f"ingest benchmark: {args.size_mib} MiB upload, {JOURNALISTS} journalist keys, best/median of {args.repeat}, {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        base = Path(tmp)
        (base / "intake").mkdir()
        (base / "plain").mkdir()
        times: dict[str, list[float]] = {"intake": [], "plain": [], "gpg": []}
        gpg = Gpg(base)
        with IntakeTarget(base / "intake", max(size, large) + MIB) as intake, PlainTarget(base / "plain") as plain:
            for _ in range(args.repeat):
                times["intake"].append(intake.upload(content))
                plain_seconds = plain.upload(content)
                times["plain"].append(plain_seconds)
                times["gpg"].append(plain_seconds + gpg.encrypt(plain.saved_file()))

            rss = {}
            for label, total in ((f"{args.size_mib} MiB", size), (f"{args.large_mib} MiB", large)):
                reset_peak_rss(intake.server.gunicorn)
                intake.upload(_content(data, total))
                rss[label] = peak_rss_mib(intake.server.gunicorn)
            reset_peak_rss(plain.server)
            plain.upload(content)
            plain_rss = peak_rss_mib(plain.server)

    median = {name: statistics.median(values) for name, values in times.items()}
    mib = args.size_mib
    print()
    print(f"{'':28}{'best s':>9}{'median s':>10}{'MiB/s':>8}")
    for name, label in (("intake", "intake (encrypt on receipt)"), ("plain", "plain Flask request.files"), ("gpg", "plain upload + gpg --encrypt")):
        print(f"{label:28}{min(times[name]):9.2f}{median[name]:10.2f}{mib / median[name]:8.0f}")
    print()
    vs_plain = median["plain"] / median["intake"]
    vs_gpg = median["gpg"] / median["intake"]
    print(f"intake vs plain Flask:          {vs_plain:5.2f}x  (target >= 1.0x)  {'OK' if vs_plain >= 1.0 else 'MISSED'}")
    print(f"intake vs upload + gpg:         {vs_gpg:5.2f}x  (target >= 4x)    {'OK' if vs_gpg >= 4.0 else 'MISSED'}")
    for label, peak in rss.items():
        print(f"intake worker peak RSS {label:>9}: {peak:6.1f} MiB  (target < 100 MiB)  {'OK' if peak < 100 else 'MISSED'}")
    print(f"plain worker peak RSS {args.size_mib:>5} MiB:  {plain_rss:6.1f} MiB  (for comparison)")


if __name__ == "__main__":
    main()
