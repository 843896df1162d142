"""Store figures: upload ingest vs writing a plain file, durable small submissions (store per request vs pooled), open cost, KDF.

Run: .venv/bin/python bench/store.py [--mib 256] [--rounds 3]. Baselines are measured in the same
run, in paired rounds (A B, B A, ...): median [min..max] of each and of the ratio B / A.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paired import Paired, seconds, spread  # noqa: E402
from keys.identity import Identity  # noqa: E402

from intake.codename import derive_source_keys, generate_codename  # noqa: E402
from intake.config import load_settings  # noqa: E402
from intake.setup import init_data_dir  # noqa: E402
from intake.store import Store  # noqa: E402
from intake.store.pool import StorePool  # noqa: E402

PIECE = 64 * 1024 + 17  # what the envelope writer hands over: one secretstream message


def _instance(folder: Path):
    Identity.generate("bench").public.save(folder / "bench.public")
    init_data_dir(folder / "data", [folder / "bench.public"], key_in_data_dir=True)  # a throwaway bench store
    return load_settings(folder / "data")


def ingest(settings, total: int) -> float:
    piece = os.urandom(PIECE)
    with Store.open(settings) as store:
        source = store.create_source(os.urandom(32), os.urandom(32))
        started = time.perf_counter()
        upload = store.start_submission(source.id, "file", store.active_recipients())
        for _ in range(total // PIECE):
            upload.write(piece)
        upload.commit()
        return time.perf_counter() - started


def plain_file(folder: Path, total: int) -> float:
    piece = os.urandom(PIECE)
    started = time.perf_counter()
    with open(folder / "plain", "wb") as out:
        for _ in range(total // PIECE):
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - started
    (folder / "plain").unlink()
    return elapsed


def small_submissions(settings, count: int, *, pooled: bool) -> float:
    """As a returning source's message: take a store, session lookup, submission of ~1.2 KiB
    ciphertext (published in one transaction that also marks the source active), give it back.
    `pooled`: from a StorePool, as the app does; else opened and closed per request."""
    with Store.open(settings) as store:
        source = store.create_source(os.urandom(32), os.urandom(32))
    pool = StorePool(settings)
    started = time.perf_counter()
    for _ in range(count):
        store = pool.take() if pooled else Store.open(settings)
        store.load_session(b"bench")
        with store.start_submission(source.id, "message", store.active_recipients()) as upload:
            upload.write(os.urandom(1200))
            upload.commit()
        if pooled:
            pool.give_back(store)
        else:
            store.close()
    rate = count / (time.perf_counter() - started)
    pool.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    print(f"store benchmark: {args.rounds} paired rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        folder = Path(tmp)
        settings = _instance(folder)
        upload = Paired(f"upload of {args.mib} MiB", "into the store", "plain file + fsync (the disk's floor)", unit="MiB/s")
        pairs = (lambda: ingest(settings, total), lambda: plain_file(folder, total))
        for number in range(args.rounds):
            first, second = pairs if number % 2 == 0 else pairs[::-1]
            a, b = first(), second()
            store_s, plain_s = (a, b) if number % 2 == 0 else (b, a)
            upload.add(args.mib / store_s, args.mib / plain_s)
        # ratio: the floor's speed over the store's (1.0: the store writes at the disk's speed)
        upload.report()  # no target here: issue 10 sets it for the upload through the server (bench/ingest.py)
        small = Paired(f"durable small submissions (one thread, {args.messages} a round)", "store opened per request",
                       "from the worker's pool", unit="/s", digits=0)
        for number in range(args.rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            rates = {pooled: small_submissions(settings, args.messages, pooled=pooled) for pooled in order}
            small.add(rates[False], rates[True])
        small.report()  # no target: the pool's gain
        opens = [seconds(lambda: Store.open(settings).close(), 50) * 1000 for _ in range(args.rounds)]
        print(f"Store.open + close: {spread(opens)} ms")
        codename, salt = generate_codename(), settings.codename_salt
        timings = [seconds(lambda: derive_source_keys(codename, salt, opslimit=settings.kdf_opslimit, memlimit=settings.kdf_memlimit))
                   for _ in range(args.rounds)]
        print(f"codename derivation (opslimit {settings.kdf_opslimit}, {settings.kdf_memlimit >> 20} MiB): {spread(timings)} s")


if __name__ == "__main__":
    main()
