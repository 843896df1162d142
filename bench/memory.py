"""Memory per upload in flight: slow uploads (as over Tor) against intake and a plain app.

Each round starts both servers fresh under deploy/gunicorn.conf.py (2 workers unless
INTAKE_WORKERS says otherwise) and, in alternating order (A B, B A, ...), sends N uploads
of a file at once, each at a steady slow rate, to
  intake     a logged-in source's upload, encrypted on receipt to 3 journalist keys;
  plain      baseline: bench/plain_upload_app.py (a Flask app saving request.files and
             fsyncing it), under the same gunicorn settings.
The workers' resident memory is read before, while every upload is in flight (80% sent)
and 3 s after the last one was answered. Then, against intake only, another source sends
short messages back to back: first on the idle server, then during a second burst of as many
slow uploads (each large upload claims its slots of the slots file in transactions of the
main database, which short messages publish to too). A burst of its own, so that the memory
figures above are the slow uploads' alone.

Figures (min / median / max over the rounds):
  MiB per upload in flight, intake and plain, and their ratio
  intake: 200 uploads in flight, all workers (before + 200 x per upload)   target < 400 MiB
  intake: MiB per upload in flight                                          target <= 1 MiB
  intake: MiB kept after the burst                                          (reported)
  intake: short message latency p95 during the burst, and against idle     target < 1 s

Run: .venv/bin/python bench/memory.py [--rounds 3] [--uploads 40] [--file-kib 1536] [--kib-per-second 160]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paired import percentile  # noqa: E402
from tests.fixtures_server import Form, SourceClient, Upload, encode_multipart, run_gunicorn, run_intake_server  # noqa: E402
from tests.fixtures_slow_uploads import SlowUpload, SlowUploads, random_content, workers_rss_mib  # noqa: E402

JOURNALISTS = 3
EVERY = 0.2  # each upload sends a piece this often
TARGET_PER_UPLOAD = 1.0
TARGET_200 = 400.0
TARGET_SHORT_P95 = 1.0  # seconds: issue 10's bar for normal sources while a server is under slow clients
IDLE_SECONDS = 3.0


class ShortMessages:
    """Another logged-in source sending short messages back to back, each timed to its answer."""

    def __init__(self, url: str):
        self.client = SourceClient(url)
        _codename, self.page = self.client.start_as_new_source()
        self.latencies: list[float] = []
        self.failures = 0

    def send_one(self) -> None:
        started = time.monotonic()
        try:
            answer = self.client.send(self.page, "Короткое сообщение", follow_redirects=False)
        except (OSError, http.client.HTTPException):  # refused, reset, timed out: a failure, not a latency
            self.failures += 1
            return
        self.latencies.append(time.monotonic() - started)
        self.failures += answer.status != 303

    def send_until(self, stop: threading.Event) -> None:
        """At least one message, however short the burst."""
        self.send_one()
        while not stop.is_set():
            self.send_one()


def _head(path: str, content_type: str, length: int, cookie: str = "") -> bytes:
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{cookie_line}Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode()


def _burst(port: int, pids: list[int], uploads: list[SlowUpload], piece: int,
           alongside: ShortMessages | None = None) -> tuple[float, float, float]:
    """(before, in flight, after) RSS of the workers, MiB; `alongside` sends while the uploads are sent."""
    before = workers_rss_mib(pids)
    driver = SlowUploads(port, uploads, piece, EVERY)
    stop = threading.Event()
    sender = threading.Thread(target=alongside.send_until, args=(stop,)) if alongside else None
    if sender:
        sender.start()
    try:
        driver.run(pids, sample_at=0.8)
    finally:
        stop.set()
        if sender:
            sender.join()
    bad = [upload.answer[:12] for upload in uploads if not upload.answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 303"))]
    if bad:
        raise RuntimeError(f"{len(bad)} uploads failed: {set(bad)}" + (f"; {driver.unanswered()}" if b"" in bad else ""))
    time.sleep(3)
    return before, driver.rss_samples[0], workers_rss_mib(pids)


def intake_round(base: Path, count: int, size: int, piece: int) -> tuple[tuple[float, float, float], list[float], list[float]]:
    """(RSS before, in flight, after; short message latencies idle; the same during the burst)."""
    with run_intake_server(base, journalist_count=JOURNALISTS) as server:
        client = SourceClient(server.url)
        _codename, page = client.start_as_new_source()
        form = page.form_with("message", "files")
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())

        def uploads() -> list[SlowUpload]:
            made = []
            for i in range(count):
                content_type, pieces = encode_multipart(form, {"message": ""}, {"files": [Upload(f"f{i}.bin", random_content(size))]})
                body = b"".join(pieces)
                made.append(SlowUpload(_head("/submit", content_type, len(body), cookie), body))
            return made

        port, pids = server.gunicorn.port, server.gunicorn.worker_pids()
        memory = _burst(port, pids, uploads(), piece)
        idle = ShortMessages(server.url)
        for _ in range(3):  # warm: the store pool, the pages
            idle.send_one()
        idle.latencies.clear()
        until = time.monotonic() + IDLE_SECONDS
        while time.monotonic() < until:
            idle.send_one()
        busy = ShortMessages(server.url)
        _burst(port, pids, uploads(), piece, alongside=busy)
        if idle.failures or busy.failures:
            raise RuntimeError(f"{idle.failures + busy.failures} short messages failed")
        return memory, idle.latencies, busy.latencies


def plain_round(base: Path, count: int, size: int, piece: int) -> tuple[float, float, float]:
    upload_dir = base / "uploads"
    upload_dir.mkdir()
    with run_gunicorn("bench.plain_upload_app:app", base, {"BENCH_UPLOAD_DIR": str(upload_dir)}) as server:
        form = Form("/upload", "post", "multipart/form-data", [("files", "file", "")])
        uploads = []
        for i in range(count):
            content_type, pieces = encode_multipart(form, {}, {"files": [Upload(f"f{i}.bin", random_content(size))]})
            body = b"".join(pieces)
            uploads.append(SlowUpload(_head("/upload", content_type, len(body)), body))
        return _burst(server.port, server.worker_pids(), uploads, piece)


def summary(values: list[float]) -> str:
    return f"{min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=40)
    parser.add_argument("--file-kib", type=int, default=1536)
    # 160 KiB/s: a good onion circuit; a slow bridge is slower still
    parser.add_argument("--kib-per-second", type=int, default=160)
    args = parser.parse_args()
    size = args.file_kib * 1024
    piece = int(args.kib_per_second * 1024 * EVERY)
    results: dict[str, list[tuple[float, float, float]]] = {"intake": [], "plain": []}
    short: dict[str, list[list[float]]] = {"idle": [], "busy": []}
    with tempfile.TemporaryDirectory(prefix="intake-bench-memory-") as tmp:
        for round_number in range(args.rounds):
            order = ("intake", "plain") if round_number % 2 == 0 else ("plain", "intake")
            for name in order:
                base = Path(tmp) / f"{name}-{round_number}"
                base.mkdir()
                if name == "intake":
                    memory, idle, busy = intake_round(base, args.uploads, size, piece)
                    short["idle"].append(idle)
                    short["busy"].append(busy)
                else:
                    memory = plain_round(base, args.uploads, size, piece)
                results[name].append(memory)

    per_upload = {name: [(during - before) / args.uploads for before, during, _after in rounds] for name, rounds in results.items()}
    ratios = [i / p for i, p in zip(per_upload["intake"], per_upload["plain"])]
    at_200 = [before + 200 * each for (before, _d, _a), each in zip(results["intake"], per_upload["intake"])]
    kept = [after - before for before, _d, after in results["intake"]]
    print(f"memory per upload in flight: {args.rounds} paired rounds (alternated), {args.uploads} uploads of {args.file_kib} KiB"
          f" at {args.kib_per_second} KiB/s each, {JOURNALISTS} journalist keys")
    print(f"{'':52}{'min':>7} {'median':>7} {'max':>7}")
    print(f"{'intake MiB per upload in flight':52}{summary(per_upload['intake'])}"
          f"   target <= {TARGET_PER_UPLOAD}{'' if statistics.median(per_upload['intake']) <= TARGET_PER_UPLOAD else '   MISSED'}")
    print(f"{'plain app MiB per upload in flight (baseline)':52}{summary(per_upload['plain'])}")
    print(f"{'ratio intake / plain':52}{summary(ratios)}")
    print(f"{'intake, 200 in flight, all workers (MiB)':52}{summary(at_200)}"
          f"   target < {TARGET_200:.0f}{'' if statistics.median(at_200) < TARGET_200 else '   MISSED'}")
    print(f"{'intake MiB kept 3 s after the burst':52}{summary(kept)}")
    p95 = {when: [percentile(round_, 0.95) * 1000 for round_ in rounds] for when, rounds in short.items()}
    p95_ratio = [busy / idle for busy, idle in zip(p95["busy"], p95["idle"])]
    print(f"{'intake short message p95 ms, idle server':52}{summary(p95['idle'])}")
    print(f"{'intake short message p95 ms, during the burst':52}{summary(p95['busy'])}"
          f"   target < {TARGET_SHORT_P95 * 1000:.0f}{'' if statistics.median(p95['busy']) < TARGET_SHORT_P95 * 1000 else '   MISSED'}")
    print(f"{'  the same against idle (ratio)':52}{summary(p95_ratio)}")
    print(f"{'  short messages sent, idle / during the burst':52}"
          f"{statistics.median(len(r) for r in short['idle']):7.0f} / {statistics.median(len(r) for r in short['busy']):.0f} (median a round)")
    print(f"{'workers RSS before (intake / plain)':52}{statistics.median(r[0] for r in results['intake']):7.1f} / "
          f"{statistics.median(r[0] for r in results['plain']):.1f}")


if __name__ == "__main__":
    main()
