"""Store figures: upload ingest vs writing a plain file, durable small submissions (store per request vs pooled), open cost, KDF.

Run: .venv/bin/python bench/store.py [--mib 256]. Baselines are measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from keys.identity import Identity

from intake.codename import derive_source_keys, generate_codename
from intake.config import load_settings
from intake.setup import init_data_dir
from intake.store import Store
from intake.store.pool import StorePool

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
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        folder = Path(tmp)
        settings = _instance(folder)
        store_s, plain_s = ingest(settings, total), plain_file(folder, total)
        print(f"upload of {args.mib} MiB into the store: {args.mib / store_s:.0f} MiB/s; "
              f"plain file + fsync: {args.mib / plain_s:.0f} MiB/s; ratio {plain_s / store_s:.2f}")
        per_request = small_submissions(settings, args.messages, pooled=False)
        pooled = small_submissions(settings, args.messages, pooled=True)
        print(f"durable small submissions (one thread): store opened per request {per_request:.0f}/s; "
              f"from the worker's pool {pooled:.0f}/s; ratio {pooled / per_request:.2f}")
        started = time.perf_counter()
        for _ in range(200):
            Store.open(settings).close()
        print(f"Store.open + close: {(time.perf_counter() - started) / 200 * 1000:.2f} ms")
        codename, salt = generate_codename(), settings.codename_salt
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            derive_source_keys(codename, salt, opslimit=settings.kdf_opslimit, memlimit=settings.kdf_memlimit)
            timings.append(time.perf_counter() - started)
        print(f"codename derivation (opslimit {settings.kdf_opslimit}, {settings.kdf_memlimit >> 20} MiB): "
              + ", ".join(f"{t:.2f} s" for t in timings))


if __name__ == "__main__":
    main()
