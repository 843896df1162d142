"""Many sources sending at once: latency and throughput against a plain app, and the cost of keys.

Measured in one run, each on a fresh server under deploy/gunicorn.conf.py:
  senders    N logged-in sources (default 50) each post a message with a 100 KB file, back to
             back, for S seconds: the latency of each POST (to its answer, the redirect to the
             receipt) and the messages stored per second (counted from the store: durable).
             Baseline: the same N senders posting the same body to a plain Flask app that saves
             `request.files` unencrypted and fsyncs before answering (bench/plain_upload_app.py).
             intake has 3 journalist keys.
  keys       short messages/s from 16 logged-in sources, on a server with 30 journalist keys
             against one with 1 key (each message and file is sealed to every key).
The contenders alternate (A B, B A, ...); each figure is median [min..max] of the rounds.

Where the time goes, for both contenders in the same rounds: the CPU their gunicorn workers and
this client (all 50 threads) spent per message stored, and how much of the two cores sat idle.
Messages/s cannot pass (cores x busy share) / (worker + client CPU per message): when intake's
workers spend k times the plain app's CPU per message, and the machine is as busy, the ratio
of messages/s is about 1/k whatever holds the write lock.

Targets (issue 10): p95 < 250 ms and p99 < 500 ms with 50 senders, messages/s >= 0.8x the
plain app's; 30 keys >= 0.8x the messages/s of 1 key. MISSED is printed next to a target
that the median does not meet.

Run: .venv/bin/python bench/senders.py [--senders 50] [--kib 100] [--seconds 10] [--rounds 3] [--key-senders 16]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paired import Paired, percentile, spread, verdict  # noqa: E402
from tests.fixtures_server import Form, IntakeServer, Page, SourceClient, Upload, encode_multipart, run_gunicorn, run_intake_server  # noqa: E402

JOURNALISTS = 3


class CpuMeter:
    """CPU seconds of some server processes and of this process, and the machine's idle share,
    between start() and stop()."""

    def __init__(self, pids: list[int]):
        self.pids = pids

    @staticmethod
    def _machine() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    def _servers(self) -> float:
        ticks = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _client() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._begin = (self._servers(), self._client(), *self._machine())

    def stop(self, messages: float) -> tuple[float, float, float]:
        """(server ms per message, client ms per message, idle %) since start()."""
        servers, client, (idle, total) = self._servers(), self._client(), self._machine()
        per = 1000 / max(messages, 1)
        return ((servers - self._begin[0]) * per, (client - self._begin[1]) * per,
                100 * (idle - self._begin[2]) / max(total - self._begin[3], 1))


def _run_senders(post: Callable[[int], bool], senders: int, seconds: float) -> tuple[list[float], int, float]:
    """(latency of each POST, failures, elapsed seconds): `senders` threads call post(index) until time is up."""
    latencies: list[list[float]] = [[] for _ in range(senders)]
    failures = [0] * senders
    start_line = threading.Barrier(senders + 1)
    stop_at = [0.0]

    def loop(index: int) -> None:
        start_line.wait()
        while time.monotonic() < stop_at[0]:
            started = time.monotonic()
            ok = post(index)
            latencies[index].append(time.monotonic() - started)
            failures[index] += not ok

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    started = time.monotonic()
    start_line.wait()
    for thread in threads:
        thread.join()
    return [x for row in latencies for x in row], sum(failures), time.monotonic() - started


class IntakeSenders:
    """Logged-in sources of one intake server, each with its submit page."""

    def __init__(self, server: IntakeServer, senders: int, content: bytes):
        self.server, self.content = server, content
        self.cpu = (0.0, 0.0, 0.0)  # of the last round: CpuMeter.stop
        # The submit form is read once per sender, as PlainSenders reads its own: the client's CPU
        # shares the cores with the servers, so parsing the page for every message would count
        # against intake's rate.
        self.sources: list[tuple[SourceClient, Page, Form]] = []
        for _ in range(senders):
            client = SourceClient(server.url)
            client.start_as_new_source()
            page = client.get("/submit")
            self.sources.append((client, page, page.form_with("message", "files")))

    def stored(self) -> int:
        with self.server.open_store() as store:
            return store.counts()["submissions"]

    def post(self, index: int) -> bool:
        client, page, form = self.sources[index]
        files = [Upload("evidence.bin", self.content)] if self.content else []
        answer = client.submit(page, form, {"message": "a short note with the file"}, {"files": files}, follow_redirects=False)
        return answer.status == 303 and answer.headers["Location"].endswith("/thanks")

    def round(self, seconds: float, meter: CpuMeter | None = None) -> tuple[list[float], float, int]:
        """(latencies, stored messages/s, failures); a message with a file stores two items."""
        before = self.stored()
        if meter:
            meter.start()
        latencies, failures, elapsed = _run_senders(self.post, len(self.sources), seconds)
        messages = (self.stored() - before) / (2 if self.content else 1)
        if meter:
            self.cpu = meter.stop(messages)
        return latencies, messages / elapsed, failures


class PlainSenders:
    """The same senders against the plain app: one multipart POST of the same file each time."""

    def __init__(self, url: str, upload_dir: Path, senders: int, content: bytes):
        self.url, self.upload_dir, self.senders = url, upload_dir, senders
        form_page = Page(url + "/", 200, {}, '<form method="post" action="/upload" enctype="multipart/form-data">'
                         '<textarea name="message"></textarea><input type="file" name="files"></form>')
        self.form = form_page.form_with("message", "files")
        self.content = content
        self.clients = [SourceClient(url) for _ in range(senders)]
        self.cpu = (0.0, 0.0, 0.0)  # of the last round: CpuMeter.stop

    def post(self, index: int) -> bool:
        content_type, pieces = encode_multipart(self.form, {"message": "a short note with the file"},
                                                {"files": [Upload("evidence.bin", self.content)]})
        answer = self.clients[index].request("POST", "/upload", pieces, {"Content-Type": content_type}, follow_redirects=False)
        return answer.status == 200

    def round(self, seconds: float, meter: CpuMeter | None = None) -> tuple[list[float], float, int]:
        before = len(os.listdir(self.upload_dir))
        if meter:
            meter.start()
        latencies, failures, elapsed = _run_senders(self.post, self.senders, seconds)
        messages = len(os.listdir(self.upload_dir)) - before
        if meter:
            self.cpu = meter.stop(messages)
        return latencies, messages / elapsed, failures


def compare_with_plain(base: Path, args: argparse.Namespace) -> None:
    content = os.urandom(args.kib * 1024)
    upload_dir = base / "plain-uploads"
    upload_dir.mkdir(parents=True)
    (base / "plain").mkdir()
    (base / "intake").mkdir()
    rates = Paired(f"messages/s, {args.senders} senders of {args.kib} KB, {args.seconds:g} s a round",
                   "plain Flask request.files + fsync", "intake (3 keys)", unit="/s", digits=1)
    workers = Paired("worker CPU per message", "plain Flask request.files + fsync", "intake (3 keys)", unit="ms", digits=2)
    clients = Paired("this client's CPU per message (for comparison)", "plain", "intake", unit="ms", digits=2)
    idles = Paired("machine idle (for comparison)", "plain", "intake", unit="%", digits=1)
    p95s, p99s, plain_p95s, failures = [], [], [], 0
    with run_gunicorn("bench.plain_upload_app:app", base / "plain", {"BENCH_UPLOAD_DIR": str(upload_dir)}) as plain_server, \
            run_intake_server(base / "intake", journalist_count=JOURNALISTS) as server:
        plain = PlainSenders(plain_server.url, upload_dir, args.senders, content)
        intake = IntakeSenders(server, args.senders, content)
        meters = {"plain": CpuMeter(plain_server.worker_pids()), "intake": CpuMeter(server.gunicorn.worker_pids())}
        for number in range(args.rounds):
            figures = {}
            for name in (("plain", "intake") if number % 2 == 0 else ("intake", "plain")):
                figures[name] = (plain if name == "plain" else intake).round(args.seconds, meters[name])
            workers.add(plain.cpu[0], intake.cpu[0])
            clients.add(plain.cpu[1], intake.cpu[1])
            idles.add(plain.cpu[2], intake.cpu[2])
            (plain_latencies, plain_rate, plain_failed), (latencies, rate, failed) = figures["plain"], figures["intake"]
            rates.add(plain_rate, rate)
            p95s.append(percentile(latencies, 0.95) * 1000)
            p99s.append(percentile(latencies, 0.99) * 1000)
            plain_p95s.append(percentile(plain_latencies, 0.95) * 1000)
            failures += failed + plain_failed
    print()
    rates.report(target=0.8, better="higher", target_text=">= 0.8x")
    p95, p99 = statistics.median(p95s), statistics.median(p99s)
    print(f"  intake POST latency p95: {spread(p95s, 0)} ms  target < 250 ms{verdict(p95, 250, 'lower')}")
    print(f"  intake POST latency p99: {spread(p99s, 0)} ms  target < 500 ms{verdict(p99, 500, 'lower')}")
    print(f"  plain POST latency p95:  {spread(plain_p95s, 0)} ms  (for comparison)")
    print(f"  failed requests: {failures}{'   MISSED (failures)' if failures else ''}")
    print()
    workers.report()
    clients.report()
    idles.report()


def compare_keys(base: Path, args: argparse.Namespace) -> None:
    rates = Paired(f"short messages/s, {args.key_senders} senders, {args.seconds:g} s a round",
                   "1 journalist key", "30 journalist keys", unit="/s", digits=1)
    failures = 0
    (base / "one").mkdir(parents=True)
    (base / "thirty").mkdir()
    with run_intake_server(base / "one", journalist_count=1) as one_server, \
            run_intake_server(base / "thirty", journalist_count=30) as thirty_server:
        one = IntakeSenders(one_server, args.key_senders, b"")
        thirty = IntakeSenders(thirty_server, args.key_senders, b"")
        for number in range(args.rounds):
            figures = {}
            for name in (("one", "thirty") if number % 2 == 0 else ("thirty", "one")):
                figures[name] = (one if name == "one" else thirty).round(args.seconds)
            rates.add(figures["one"][1], figures["thirty"][1])
            failures += figures["one"][2] + figures["thirty"][2]
    print()
    rates.report(target=0.8, better="higher", target_text=">= 0.8x")
    print(f"  failed requests: {failures}{'   MISSED (failures)' if failures else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=50, help="sources sending at once")
    parser.add_argument("--kib", type=int, default=100, help="size of each file, KiB")
    parser.add_argument("--key-senders", type=int, default=16, help="sources sending short messages in the keys figure (0: skip it)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.key_senders < 0 or args.senders < 1:
        parser.error("--senders must be at least 1 and --key-senders at least 0")
    print(f"senders benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        compare_with_plain(Path(tmp) / "plain-vs-intake", args)
        if args.key_senders:
            compare_keys(Path(tmp) / "keys", args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
