"""The journalist side as the store grows: the list of sources and the full export.

    .venv/bin/python bench/journalist.py [--small 1000] [--medium 10000] [--large 100000] [--rounds 5] [--keep DIR] [--pages-only]

Three instances are filled through the store's own API (as bench/export.py does:
mostly short messages, every tenth a 20-200 KiB file, one source per ten
submissions, each sealed to two journalists); the fill is set-up, not measured,
and runs with SQLite's synchronous=OFF to take minutes, not hours. Then, in
paired rounds (the two contenders alternate A B, B A, ...):

- /sources: a signed-in journalist's first page (Flask test client, the real app
  and store), the store with --small vs --large submissions. Target: flat, the
  large store's time at most 1.5x the small one's (median of the rounds), and a
  page under 50 KB of HTML. Timed twice: loads one after the other (SQLite's page
  cache kept), then each load just after another connection's write (the cache
  emptied, as on a server taking uploads);
- full export: `intake export --all` (a subprocess, as an admin types it: it
  streams the signed bundle to a file and fsyncs it), --medium vs --large, after
  one warm-up export of each (not measured: it marks everything exported).
  Target: linear, at most 1.1x the ratio of the items (10k -> 100k: <= 11x).

Each figure is printed as median [min..max] of the rounds, with the ratio of
each pair, and MISSED next to any target the median does not meet.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.export import fill  # noqa: E402
from bench.paired import Paired, seconds  # noqa: E402
from intake.app import create_app  # noqa: E402
from intake.app.journalist import create_journalist_app  # noqa: E402
from intake.store import Store  # noqa: E402
from intake.store.newsroom import Newsroom as NewsroomStore  # noqa: E402
from tests.fixtures_newsroom import Newsroom, make_newsroom, sign_in  # noqa: E402

BIN = Path(sys.executable).parent
PAGE_FLAT = 1.5  # the large store's /sources time over the small one's
PAGE_BYTES = 50_000
LINEAR_SLACK = 1.1  # export time ratio allowed over the items ratio


def filled(base: Path, submissions: int) -> Newsroom:
    if (base / "filled").exists():  # kept from an earlier run (--keep)
        print(f"  {submissions:,} submissions: reusing {base}", flush=True)
        settings, alice, bob = pickle.loads((base / "filled").read_bytes())
        settings = dataclasses.replace(settings, data_dir=base / "data")  # the folder may have been copied or moved
        return Newsroom(settings, create_app(settings, TESTING=True), create_journalist_app(settings, TESTING=True), alice, bob)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    newsroom = make_newsroom(base)
    started = time.perf_counter()
    with Store.open(newsroom.settings) as store:
        store._conn.execute("PRAGMA synchronous = OFF")  # set-up only: the measured runs open their own stores
        stored = fill(store, submissions, max(1, submissions // 10))
    print(f"  filled {submissions:,} submissions ({stored / 2**20:.0f} MiB of ciphertext) in {time.perf_counter() - started:.0f} s"
          " (set-up, not measured)", flush=True)
    (base / "filled").write_bytes(pickle.dumps((newsroom.settings, newsroom.alice, newsroom.bob)))  # bench keys, for --keep
    return newsroom


def sources_page(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    assert sign_in(client, newsroom.alice).status_code == 303
    sizes = []

    def load() -> None:
        page = client.get("/sources")
        assert page.status_code == 200
        sizes.append(len(page.data))

    load()  # the first request opens the store pool
    return load, sizes


def after_a_write(newsroom: Newsroom, load):
    """``load`` timed just after another connection wrote (a journalist session saved and
    deleted): SQLite then empties the page cache of every other connection, so the page's
    reads come from the file, each page decrypted and checked, as on a server taking uploads."""
    other = Store.open(newsroom.settings)
    (journalist_id,) = other._read("SELECT id FROM journalists WHERE name = 'alice'")[0]

    def timed() -> float:
        session_id = os.urandom(32)
        NewsroomStore(other).save_journalist_session(session_id, journalist_id, b"bench", 0)
        NewsroomStore(other).delete_journalist_session(session_id)
        started = time.perf_counter()
        load()
        return time.perf_counter() - started

    return timed, other


def paired_after_writes(pages: Paired, small, large, *, rounds: int, loads: int) -> None:
    """As Paired.run, each figure the median of ``loads`` loads, the writes not timed."""
    for number in range(rounds):
        figures = {}
        for which in ((small, large) if number % 2 == 0 else (large, small)):
            figures[which] = statistics.median(which() for _ in range(loads))
        pages.add(figures[small] * pages.scale, figures[large] * pages.scale)


def exporter(newsroom: Newsroom, work: Path):
    out = work / "export.bundle"

    def export() -> None:
        out.unlink(missing_ok=True)
        result = subprocess.run([str(BIN / "intake"), "export", "--all", "--data", str(newsroom.settings.data_dir), "--out", str(out)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"intake export failed: {result.stderr.strip()}")

    return export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--medium", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--page-loads", type=int, default=20, help="/sources loads per round (the round's figure is their median)")
    parser.add_argument("--pages-only", action="store_true", help="only /sources (no medium store, no exports)")
    parser.add_argument("--keep", type=Path, help="fill the stores in this folder and keep them; a later run with the same folder reuses them")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"journalist side at scale: {os.cpu_count()} CPUs, load average {load:.1f} at the start", flush=True)

    with tempfile.TemporaryDirectory(prefix="intake-bench-journalist-") as tmp:
        base = args.keep or Path(tmp)
        sizes = {args.small, args.large} if args.pages_only else {args.small, args.medium, args.large}
        rooms = {size: filled(base / str(size), size) for size in sorted(sizes)}

        small_page, small_sizes = sources_page(rooms[args.small])
        large_page, large_sizes = sources_page(rooms[args.large])
        pages = Paired(f"/sources, first page ({args.page_loads} loads a round, their median)",
                       f"{args.small:,} submissions", f"{args.large:,} submissions", unit="ms", scale=1000)
        pages.run(lambda: small_page(), lambda: large_page(), rounds=args.rounds, repeat=args.page_loads)
        pages.report(target=PAGE_FLAT, better="lower", target_text=f"<= {PAGE_FLAT}x (flat)")
        small_cold, small_other = after_a_write(rooms[args.small], small_page)
        large_cold, large_other = after_a_write(rooms[args.large], large_page)
        cold = Paired(f"/sources, first page, each load after another connection's write ({args.page_loads} loads a round, their median)",
                      f"{args.small:,} submissions", f"{args.large:,} submissions", unit="ms", scale=1000)
        paired_after_writes(cold, small_cold, large_cold, rounds=args.rounds, loads=args.page_loads)
        cold.report(target=PAGE_FLAT, better="lower", target_text=f"<= {PAGE_FLAT}x (flat)")
        small_other.close()
        large_other.close()
        biggest = max(small_sizes + large_sizes)
        verdict = "" if biggest < PAGE_BYTES else "   MISSED"
        print(f"  largest page: {biggest / 1000:.1f} KB of HTML   target < {PAGE_BYTES // 1000} KB{verdict}")
        if args.pages_only:
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
            return

        (base / "m").mkdir(exist_ok=True)
        (base / "l").mkdir(exist_ok=True)
        medium, large = exporter(rooms[args.medium], base / "m"), exporter(rooms[args.large], base / "l")
        # Not measured: the first export marks everything exported and reads the fill's pages
        # once (the first export is timed by bench/export.py); the rounds are alike after it.
        warm_up = [seconds(medium), seconds(large)]
        print(f"  warm-up exports, not measured: {warm_up[0]:.1f} s and {warm_up[1]:.1f} s", flush=True)
        exports = Paired("full export, intake export --all (a subprocess)", f"{args.medium:,} items", f"{args.large:,} items",
                         unit="s", scale=1)
        exports.run(medium, large, rounds=args.rounds)
        allowed = args.large / args.medium * LINEAR_SLACK
        exports.report(target=allowed, better="lower", target_text=f"<= {allowed:.1f}x (linear: {args.large / args.medium:.1f}x the items)")
        for path in (base / "m", base / "l"):
            shutil.rmtree(path, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
