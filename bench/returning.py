"""Returning sources: message throughput, and page latency during a new-codename flood.

On a fresh server under deploy/gunicorn.conf.py (3 journalist keys, the real
Argon2id cost from intake.config):
  messages/s   logged-in sources each post short messages back to back, as a
               browser does (POST /submit, follow the redirect to /thanks);
               counted from what the store holds afterwards (durable).
  flood        clients ask for new codenames as fast as they can (each an
               Argon2id derivation, bounded by the KdfGate: excess gets 503
               "busy"), while a logged-in source loads its replies page every
               100 ms; p95 of that page's latency, and the same without the
               flood as the baseline measured in this run.

Targets (DESIGN.md / issue 3): >= 200 messages/s on 2 cores; p95 < 1 s during the flood.

Each figure comes from several rounds (the flood alternates with quiet periods,
A B, B A, ...): median [min..max]; MISSED is printed next to a target not met.

Run: .venv/bin/python bench/returning.py [--clients 16] [--seconds 10] [--flooders 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paired import Paired, spread, verdict  # noqa: E402
from tests.fixtures_server import IntakeServer, SourceClient, run_intake_server  # noqa: E402

JOURNALISTS = 3
MADE = (200, 303)  # a new codename: its page, or the redirect to it


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * q + 0.5) - 1)]


def messages_per_second(server: IntakeServer, clients: int, seconds: float) -> tuple[float, int, int]:
    """(messages/s, stored, failed) for `clients` logged-in sources posting for `seconds`."""
    sources = []
    for _ in range(clients):
        client = SourceClient(server.url)
        _codename, page = client.start_as_new_source()
        sources.append((client, client.get("/submit")))
    with server.open_store() as store:
        before = store.counts()["submissions"]
    failed = [0] * clients
    start_line = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def post_messages(index: int) -> None:
        client, page = sources[index]
        start_line.wait()
        n = 0
        while time.monotonic() < stop_at[0]:
            done = client.send(page, f"message {n} from source {index}: short and to the point")
            if not (done.status == 200 and done.url.endswith("/thanks")):
                failed[index] += 1
            n += 1

    threads = [threading.Thread(target=post_messages, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    started = time.monotonic()
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    with server.open_store() as store:
        stored = store.counts()["submissions"] - before
    return stored / elapsed, stored, sum(failed)


def page_latencies(client: SourceClient, seconds: float) -> list[float]:
    latencies = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.monotonic()
        page = client.get("/replies")
        latencies.append(time.monotonic() - started)
        if page.status != 200:
            raise RuntimeError(f"the logged-in source's replies page answered {page.status}")
        time.sleep(0.1)
    return latencies


def flood(server: IntakeServer, flooders: int, seconds: float, logged_in: SourceClient) -> tuple[list[float], dict[int, int], float]:
    """Page latencies of `logged_in` while `flooders` clients request new codenames; the flood's status counts and duration."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    clients = [SourceClient(server.url) for _ in range(flooders)]
    landings = [client.get("/") for client in clients]

    def request_codenames(client: SourceClient, landing) -> None:
        form = landing.form_posting_to("/new")
        while not stop.is_set():
            page = client.submit(landing, form, follow_redirects=False)
            with lock:
                statuses[page.status] = statuses.get(page.status, 0) + 1

    threads = [threading.Thread(target=request_codenames, args=pair) for pair in zip(clients, landings)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let the KdfGates fill up
    try:
        latencies = page_latencies(logged_in, seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return latencies, statuses, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="logged-in sources posting messages at once")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flooders", type=int, default=32, help="clients requesting new codenames at once")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"returning-source benchmark: {os.cpu_count()} CPUs, {JOURNALISTS} journalist keys")

    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp, run_intake_server(Path(tmp), journalist_count=JOURNALISTS) as server:
        settings = server.settings
        print(f"Argon2id per codename: opslimit {settings.kdf_opslimit}, {settings.kdf_memlimit // (1024 * 1024)} MiB; "
              f"KdfGate per worker: {settings.kdf_concurrency} running + {settings.kdf_queue} waiting; {args.rounds} rounds")
        rates, failures = [], 0
        for _ in range(args.rounds):
            rate, _stored, failed = messages_per_second(server, args.clients, args.seconds)
            rates.append(rate)
            failures += failed
        print()
        rate = statistics.median(rates)
        print(f"messages/s, {args.clients} logged-in sources, {args.seconds:g} s a round: {spread(rates, 1)}/s ({failures} failed)"
              f"  target >= 200/s{'' if not failures else '   MISSED (failures)'}{verdict(rate, 200, 'higher')}")

        source = SourceClient(server.url)
        source.start_as_new_source()
        pages = Paired(f"logged-in source's replies page, p95 of the loads in {args.seconds:g} s", "without flood",
                       f"during a flood by {args.flooders} clients", unit="ms", digits=1)
        outcome: dict[int, int] = {}
        codenames_per_s = []
        for number in range(args.rounds):  # the order flips every round
            for flooded in ((False, True) if number % 2 == 0 else (True, False)):
                if flooded:
                    latencies, statuses, flood_seconds = flood(server, args.flooders, args.seconds, source)
                    for status, count in statuses.items():
                        outcome[status] = outcome.get(status, 0) + count
                    codenames_per_s.append(sum(statuses.get(made, 0) for made in MADE) / flood_seconds)
                    flooded_p95 = _p(latencies, 0.95) * 1000
                else:
                    quiet_p95 = _p(page_latencies(source, args.seconds), 0.95) * 1000
            pages.add(quiet_p95, flooded_p95)
        print()
        pages.report()
        flooded_median = statistics.median(pages.b)
        print(f"  p95 during the flood: {flooded_median:.0f} ms  target < 1000 ms{verdict(flooded_median, 1000, 'lower')}")
        print(f"flood outcome: {sum(outcome.get(made, 0) for made in MADE)} codenames made ({spread(codenames_per_s, 1)}/s), "
              f"{outcome.get(503, 0)} refused as busy (503), other: { {k: v for k, v in outcome.items() if k not in (*MADE, 503)} }")


if __name__ == "__main__":
    main()
