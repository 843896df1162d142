"""`scripts/soak MINUTES`: see soak/__init__.py. Exits 1 on any loss, partial item, unread reply or
integrity problem; the work dir (a fresh temporary one unless --work) is kept only then."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from soak.load import Journalist, Ledger, Sources
from soak.newsroom import make_newsroom
from soak.reconcile import Reckoning, reconcile
from soak.service import Monkey, Service


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__)
    parser.add_argument("minutes", type=float, help="how long the load runs (decimals allowed: 0.5)")
    parser.add_argument("--sources", type=int, default=3, help="source threads sending at normal speed (default 3)")
    parser.add_argument("--slow", type=int, default=1, help="source threads dribbling uploads over seconds (default 1)")
    parser.add_argument("--kill-every", type=float, default=40.0, help="mean seconds between two kill -9 (default 40)")
    parser.add_argument("--export-every", type=float, default=60.0, help="mean seconds between two exports (default 60)")
    parser.add_argument("--work", type=Path, help="work dir (default: a new temporary dir, removed when all is well)")
    return parser.parse_args(argv)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


def _latencies(by_kind: dict[str, list[float]]) -> str:
    def figures(values: list[float]) -> str:
        return f"p50 {_percentile(values, 0.5) * 1000:.0f} ms, p95 {_percentile(values, 0.95) * 1000:.0f} ms ({len(values)})"

    every = [seconds for values in by_kind.values() for seconds in values]
    return (f"latency of normal requests: {figures(every)}; "
            + "; ".join(f"{kind} {figures(values)}" for kind, values in sorted(by_kind.items())))


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="intake-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(timezone.utc)
    room = make_newsroom(work)
    service = Service(room, work / "intake-serve.log")
    service.start()
    began = time.monotonic()
    deadline = began + args.minutes * 60
    ledger = Ledger()
    journalist = Journalist(room, service, ledger, deadline, args.export_every)
    actors = [Sources(service, ledger, deadline, slow=i >= args.sources).run for i in range(args.sources + args.slow)]
    threads = [threading.Thread(target=run, daemon=True) for run in [*actors, journalist.run]]
    monkey = Monkey(service, args.kill_every, deadline)
    for thread in threads:
        thread.start()
    monkey.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 180)
    monkey.stop()
    ran = (time.monotonic() - began) / 60
    stuck = sum(thread.is_alive() for thread in threads)
    service.stop()
    reckoning = reconcile(room, service, ledger, journalist)
    _print(args, started_at, ran, ledger, service, monkey, reckoning, stuck)
    failed = reckoning.failed or stuck
    if failed:
        print(f"FAILED: the work dir is kept for inspection: {work}")
    elif args.work is None:
        shutil.rmtree(work)
    return 1 if failed else 0


def _print(args, started_at, ran: float, ledger: Ledger, service: Service, monkey: Monkey, r: Reckoning, stuck: int) -> None:
    lines = [
        f"soak {args.minutes:g} minutes, started {started_at:%Y-%m-%d %H:%M} UTC: load ran {ran:.1f} min"
        f" ({args.sources} source threads, {args.slow} slow, kill -9 about every {args.kill_every:g} s)",
        "requests: " + ", ".join(f"{kind} {count}" for kind, count in sorted(ledger.requests.items())),
        "other outcomes: " + (", ".join(f"{what} {count}" for what, count in sorted(ledger.outcomes.items())) or "none"),
        f"acknowledged: {r.acknowledged_requests} requests ({r.acknowledged_parts} items);"
        f" {r.unacknowledged_but_complete} more stored whole without an answer (connection cut after the commit),"
        f" {r.unacknowledged_first_parts} cut after their first parts were stored whole",
        f"stored: {r.stored} submissions; decrypted: " + ", ".join(f"{name} {n}" for name, n in r.decrypted.items()),
        f"during the run: {ledger.decrypted_during_run} items decrypted from exports, {ledger.damaged_during_run} damaged,"
        f" {ledger.unknown_during_run} unknown",
        f"lost: {r.lost}",
        f"partial: {r.partial}" + (f" ({', '.join(f'{k} {v}' for k, v in r.partial_reasons.items())})" if r.partial else "")
        + f"; pending uploads after recovery: {r.pending_after_recovery}",
        f"replies: {r.replies_imported} imported, {r.replies_read} read by their sources, {r.replies_missing} missing",
        "kills: " + (", ".join(f"{kind} {count}" for kind, count in sorted(monkey.kills.items())) or "none")
        + f"; restarts: {service.restarts}",
        _latencies(ledger.latencies),
        f"intake check: {r.check}" + ("" if r.check_clean else "  (NOT CLEAN)"),
    ]
    lines += [f"FAILURE: {failure}" for failure in r.failures]
    if stuck:
        lines.append(f"{stuck} load threads did not stop in time")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
