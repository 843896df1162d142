"""Export and offline decryption of a bundle of many submissions.

    .venv/bin/python bench/export.py [--submissions 10000] [--sources 1000] [--rounds 3] [--keep DIR]

Sets up a data dir with two journalists and fills it through the store's own
API with N submissions (mostly short messages, every tenth a 20-200 KiB file),
each sealed on receipt to both journalists as the source app does (set-up, with
SQLite's synchronous=OFF). Then, timed in paired rounds (A B, B A, ...; median
[min..max] of each and of the ratio):

- the first export: `intake export` (a subprocess, as an admin runs it: opens the
  store, streams the bundle to a file, fsyncs it, marks the submissions exported),
  once; then `intake export --all` in rounds;
  baseline: reading the same stored ciphertext out of the store into a file,
  in this process (the floor any export pays);
- decrypt: `intake-keys decrypt BUNDLE --progress` (a subprocess: unlocks the
  secret key, writes a folder per source, its files made durable in batches, an
  index and a source.json each); baseline: decrypting the same envelopes in
  memory with keys.envelope, no files;
- the triage page (index.html as `intake-keys clean` writes it) of the folder.

Targets: export, decrypt and the triage page < 10 s each for 10,000 submissions
on 2 cores; MISSED is printed next to a target the median does not meet.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paired import Paired, seconds, spread, verdict  # noqa: E402
from keys.cleaning.triage import write_triage  # noqa: E402
from keys.envelope import EnvelopeWriter, Metadata  # noqa: E402
from keys.envelope_reader import decrypt_bytes  # noqa: E402
from keys.identity import KDF_INTERACTIVE, Identity  # noqa: E402
from keys.server_key import trust_server  # noqa: E402

from intake.config import load_settings  # noqa: E402
from intake.server_identity import server_public_key  # noqa: E402
from intake.setup import init_data_dir  # noqa: E402
from intake.store import Store  # noqa: E402

BIN = Path(sys.executable).parent
PASSPHRASE = "benchmark passphrase, not a secret"


def fill(store: Store, submissions: int, sources: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    recipients = store.active_recipients()
    keys = [r.public_key for r in recipients]
    source_ids = [store.create_source(os.urandom(32), os.urandom(32)).id for _ in range(sources)]
    for n in range(submissions):
        source_id = source_ids[n % sources]
        if n % 10 == 9:
            body, meta = os.urandom(rng.randint(20_000, 200_000)), Metadata("file", f"document-{n}.pdf", "application/pdf")
        else:
            body, meta = os.urandom(rng.randint(200, 4000)).hex().encode()[: rng.randint(200, 4000)], Metadata("message")
        writer = store.start_submission(source_id, meta.kind, recipients)
        envelope = EnvelopeWriter(writer, keys, meta)
        envelope.write(body)
        envelope.close()
        writer.commit()
    return sum(submission.size for submission in store.submissions())


def run(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{args[0]} failed: {result.stderr.strip()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    n = args.submissions
    print(f"export benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.rounds} paired rounds")

    work = args.keep or Path(tempfile.mkdtemp(prefix="intake-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        alice, bob = Identity.generate("alice"), Identity.generate("bob")
        for identity in (alice, bob):
            identity.public.save(work / f"{identity.name}.public")
        alice.save(work / "alice.secret", PASSPHRASE, KDF_INTERACTIVE)
        (work / "passphrase").write_text(PASSPHRASE + "\n")
        data = work / "data"
        init_data_dir(data, [work / "alice.public", work / "bob.public"], key_in_data_dir=True)  # a throwaway bench store
        trust_server(work / "alice.secret", server_public_key(data))  # as the journalist does at enrolment
        settings = load_settings(data)

        print(f"filling the store: {n} submissions from {args.sources} sources, sealed to 2 journalists ...", flush=True)
        started = time.perf_counter()
        with Store.open(settings) as store:
            store._conn.execute("PRAGMA synchronous = OFF")  # set-up only: the measured runs open their own stores
            stored = fill(store, n, args.sources)
        print(f"  (set-up, not measured: {time.perf_counter() - started:.1f} s, {stored / 2**20:.1f} MiB of ciphertext)")

        def read_back(path: Path) -> list[bytes]:
            envelopes = []
            with Store.open(settings) as store, open(path, "wb") as out:
                for submission in store.submissions():
                    envelope = b"".join(store.submission_ciphertext(submission.id))
                    out.write(envelope)
                    envelopes.append(envelope)
                out.flush()
                os.fsync(out.fileno())
            path.unlink()
            return envelopes

        bundle = work / "export.bundle"
        first = seconds(lambda: run(BIN / "intake", "export", "--data", data, "--out", bundle))
        print(f"first export (intake export, marks {n} submissions exported): {first:.2f} s"
              f"   target < 10 s{verdict(first, 10, 'lower')}")
        envelopes = read_back(work / "raw.bin")

        def export_all() -> None:
            bundle.unlink()
            run(BIN / "intake", "export", "--all", "--data", data, "--out", bundle)

        exports = Paired("export", "baseline: read the store item by item to a file, fsync", "intake export --all")
        exports.run(lambda: read_back(work / "raw.bin"), export_all, rounds=args.rounds)
        ratio = exports.report()
        export_median = statistics.median(exports.b)
        print(f"  intake export --all: {export_median:.2f} s   target < 10 s{verdict(export_median, 10, 'lower')}")

        outs = iter(range(1_000_000))

        def decrypt() -> None:
            out = work / f"decrypted-{next(outs)}"
            run(BIN / "intake-keys", "decrypt", bundle, "--key", work / "alice.secret", "--passphrase-file", work / "passphrase",
                "--out", out, "--progress")
            decrypted.append(out)

        decrypted: list[Path] = []
        decrypts = Paired("decrypt", "baseline: decrypt every envelope in memory, no files", "intake-keys decrypt")
        decrypts.run(lambda: [decrypt_bytes(e, alice.private_key) for e in envelopes], decrypt, rounds=args.rounds)
        decrypts.report()
        decrypt_median = statistics.median(decrypts.b)
        print(f"  intake-keys decrypt: {decrypt_median:.2f} s   target < 10 s{verdict(decrypt_median, 10, 'lower')}")
        out = decrypted[-1]
        files = sum(1 for p in out.rglob("*") if p.is_file())
        sources = sum(1 for p in out.glob("*/source.json"))
        print(f"  bundle: {bundle.stat().st_size / 2**20:.1f} MiB; decrypted into {sources} source folders, {files} files")

        triage_times = [seconds(lambda: write_triage(out)) for _ in range(args.rounds)]
        triage_median = statistics.median(triage_times)
        print(f"triage index.html of {n} items (intake-keys clean's page): {spread(triage_times)} s"
              f"   target < 10 s{verdict(triage_median, 10, 'lower')}")
        print(f"per submission: export {export_median / n * 1e3:.2f} ms ({ratio:.1f}x the baseline), decrypt {decrypt_median / n * 1e3:.2f} ms")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
