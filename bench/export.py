"""Export and offline decryption of a bundle of many submissions.

    .venv/bin/python bench/export.py [--submissions 10000] [--sources 1000] [--keep DIR]

Sets up a data dir with two journalists and fills it through the store's own
API with N submissions (mostly short messages, every tenth a 20-200 KiB file),
each sealed on receipt to both journalists as the source app does. Then, timed:

- export: `intake export` (a subprocess, as an admin runs it: opens the store,
  streams the bundle to a file, fsyncs it, marks the submissions exported);
  baseline: reading the same stored ciphertext out of the store into a file,
  in this process (the floor any export pays);
- decrypt: `intake-keys decrypt BUNDLE --progress` (a subprocess: unlocks the
  secret key, writes a folder per source, an index and a source.json each);
  baseline: decrypting the same envelopes in memory with keys.envelope, no files.

Targets: export < 10 s and decrypt < 10 s for 10,000 submissions on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keys.envelope import EnvelopeWriter, Metadata, decrypt_bytes  # noqa: E402
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


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{args[0]} failed: {result.stderr.strip()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=1_000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

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

        print(f"filling the store: {args.submissions} submissions from {args.sources} sources, sealed to 2 journalists ...",
              flush=True)
        with Store.open(settings) as store:
            fill_time, stored = timed(lambda: fill(store, args.submissions, args.sources))
        print(f"  (set-up, not measured: {fill_time:.1f} s, {stored / 2**20:.1f} MiB of ciphertext)")

        def read_back() -> list[bytes]:
            envelopes = []
            with Store.open(settings) as store, open(work / "raw.bin", "wb") as out:
                for submission in store.submissions():
                    envelope = b"".join(store.submission_ciphertext(submission.id))
                    out.write(envelope)
                    envelopes.append(envelope)
                out.flush()
                os.fsync(out.fileno())
            return envelopes

        baseline_export, envelopes = timed(read_back)
        bundle = work / "export.bundle"
        export_time, _ = timed(lambda: run(BIN / "intake", "export", "--data", data, "--out", bundle))
        baseline_decrypt, _ = timed(lambda: [decrypt_bytes(e, alice.private_key) for e in envelopes])
        out = work / "decrypted"
        decrypt_time, result = timed(lambda: run(BIN / "intake-keys", "decrypt", bundle, "--key", work / "alice.secret",
                                                  "--passphrase-file", work / "passphrase", "--out", out, "--progress"))
        progress = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
        files = sum(1 for p in out.rglob("*") if p.is_file())
        sources = sum(1 for p in out.glob("*/source.json"))

        n = args.submissions
        print(f"bundle: {bundle.stat().st_size / 2**20:.1f} MiB; decrypted into {sources} source folders, {files} files")
        if progress:
            print(f"progress shown offline (last line): {progress[-1].strip()}")
        print(f"{'':34}{'seconds':>9}{'per submission':>16}{'vs baseline':>13}")
        print(f"{'export (intake export)':34}{export_time:9.2f}{export_time / n * 1e3:13.2f} ms{export_time / baseline_export:12.1f}x")
        print(f"{'  baseline: read store to a file':34}{baseline_export:9.2f}{baseline_export / n * 1e3:13.2f} ms")
        print(f"{'decrypt (intake-keys decrypt)':34}{decrypt_time:9.2f}{decrypt_time / n * 1e3:13.2f} ms{decrypt_time / baseline_decrypt:12.1f}x")
        print(f"{'  baseline: decrypt in memory':34}{baseline_decrypt:9.2f}{baseline_decrypt / n * 1e3:13.2f} ms")
        verdict = "met" if export_time < 10 and decrypt_time < 10 else "MISSED"
        print(f"target < 10 s each for {n} submissions: {verdict}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
