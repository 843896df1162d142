"""Envelope throughput against raw libsodium secretstream and gpg, and memory vs size.

    .venv/bin/python bench/envelope.py [--size-mib 256] [--big-mib 1024] [--runs 3]

Every contender reads the same random file in 1 MiB pieces and writes to
/dev/null, in the same run:

- raw secretstream: PyNaCl's crypto_secretstream_xchacha20poly1305 on 64 KiB
  messages (the envelope's message size), nothing else: the floor;
- envelope: keys.envelope writer / reader (chunks()), one recipient;
- gpg: ``gpg --batch --encrypt`` to a throwaway cv25519 key (``--trust-model
  always``), default settings, and again with compression off (-z 0).

Peak memory is the maximum RSS of a child process that encrypts, then decrypts,
a generated stream of the given size. Targets: envelope >= 0.8x raw,
>= 4x gpg, memory flat in the size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nacl import bindings as sodium  # noqa: E402
from nacl.public import PrivateKey  # noqa: E402

from keys.envelope import MESSAGE_SIZE, EnvelopeReader, EnvelopeWriter, Metadata  # noqa: E402

PIECE = 1 << 20
MiB = 1 << 20


def make_data(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        block = os.urandom(PIECE)
        for i in range(size // PIECE):
            f.write(block[i % 7 :] + block[: i % 7])  # not one repeated block, in case anything dedups


def timed(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ---------------------------------------------------------------- contenders


def raw_encrypt(src: Path, dst: str, key: bytes) -> None:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    push = sodium.crypto_secretstream_xchacha20poly1305_push
    tag_message = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key))
        while piece := f.read(PIECE):
            for i in range(0, len(piece), MESSAGE_SIZE):  # PyNaCl takes bytes only: slicing copies, as the envelope must
                out.write(push(state, piece[i : i + MESSAGE_SIZE], None, tag_message))
        out.write(push(state, b"", None, sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL))


def raw_decrypt(src: Path, dst: str, key: bytes) -> None:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    pull = sodium.crypto_secretstream_xchacha20poly1305_pull
    abytes = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
    with open(src, "rb") as f, open(dst, "wb") as out:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, f.read(24), key)
        while ciphertext := f.read(MESSAGE_SIZE + abytes):
            plaintext, _ = pull(state, ciphertext, None)
            out.write(plaintext)


def envelope_encrypt(src: Path, dst: str, recipient) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        writer = EnvelopeWriter(out, [recipient], Metadata("file", name="bench.bin"))
        while piece := f.read(PIECE):
            writer.write(piece)
        writer.close()


def envelope_decrypt(src: Path, dst: str, key: PrivateKey) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        reader = EnvelopeReader(f, key)
        for piece in reader.chunks():
            out.write(piece)
        assert reader.complete


def gpg(home: str, *args: str) -> None:
    subprocess.run(["gpg", "--homedir", home, "--batch", "--yes", "--quiet", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- memory


_MEMORY_CHILD = """
import os, resource, sys, tempfile
sys.path.insert(0, {root!r})
from nacl.public import PrivateKey
from keys.envelope import EnvelopeReader, EnvelopeWriter, Metadata
size = {size}
key = PrivateKey.generate()
block = os.urandom(1 << 20)
with tempfile.NamedTemporaryFile(dir={tmp!r}) as sealed:
    writer = EnvelopeWriter(sealed, [key.public_key], Metadata("file"))
    for _ in range(size >> 20):
        writer.write(block)
    writer.close()
    sealed.flush()
    encrypt_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sealed.seek(0)
    total = 0
    reader = EnvelopeReader(sealed, key)
    with open(os.devnull, "wb") as sink:
        for piece in reader.chunks():
            total += len(piece)
            sink.write(piece)
    assert total == size and reader.complete
print(encrypt_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(size: int, tmp: str) -> tuple[int, int]:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD.format(root=root, size=size, tmp=tmp)], check=True, capture_output=True, text=True)
    encrypt_peak, overall_peak = map(int, out.stdout.split())
    return encrypt_peak, overall_peak


def designation(number: int) -> str:
    """A distinct designation of the server's shape (lowercase words), e.g. 'source bdc'."""
    letters = ""
    while True:
        number, digit = divmod(number, 26)
        letters += chr(ord("a") + digit)
        if not number:
            return f"source {letters}"


def many_items_figures(tmp: str, sources: int, per_source: int) -> tuple[float, float]:
    """Seconds for ``intake-keys decrypt`` of a bundle of sources x per_source short messages
    sealed to two journalists, and for plainly writing the same plaintexts as files (the floor)."""
    from nacl.signing import SigningKey

    from keys import bundle, cli, envelope
    from keys.identity import KDF_MIN, Identity
    from keys.server_key import ServerPublicKey, trust_server

    folder = Path(tmp) / "many"
    folder.mkdir()
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    alice.save(folder / "alice.secret", "bench passphrase", KDF_MIN)
    (folder / "pw").write_text("bench passphrase")
    recipients = [alice.public.encryption_key, bob.public.encryption_key]
    texts = [f"message {s}.{i}: ".encode() + os.urandom(300).hex().encode() for s in range(sources) for i in range(per_source)]
    export_sources = []
    for s in range(sources):
        items = []
        for i in range(per_source):
            sealed = envelope.encrypt_bytes(texts[s * per_source + i], recipients, envelope.Metadata("message"))
            items.append(bundle.ExportItem(f"i{s}-{i}", "message", "2026-11-28", len(sealed), ["alice", "bob"], lambda sealed=sealed: [sealed]))
        export_sources.append(bundle.ExportSource(f"s{s}", designation(s), os.urandom(32), items))
    server = SigningKey.generate()
    trust_server(folder / "alice.secret", ServerPublicKey.from_seed(bytes(server)))
    with open(folder / "export.bundle", "wb") as f:
        for piece in bundle.stream_export_bundle(recipients, export_sources, server):
            f.write(piece)

    start = time.perf_counter()
    plain = folder / "plain"
    plain.mkdir()
    for s in range(sources):
        (plain / f"source {s}").mkdir()
        for i in range(per_source):
            (plain / f"source {s}" / f"{i}.txt").write_bytes(texts[s * per_source + i])
    floor = time.perf_counter() - start

    start = time.perf_counter()
    argv = ["decrypt", str(folder / "export.bundle"), "--key", str(folder / "alice.secret"), "--passphrase-file", str(folder / "pw"), "--out", str(folder / "out")]
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            assert cli.main(argv) == 0
        finally:
            sys.stdout = stdout
    return time.perf_counter() - start, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gpg-runs", type=int, default=1)
    parser.add_argument("--sources", type=int, default=2000, help="sources in the many-items bundle (5 messages each)")
    args = parser.parse_args()
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        data = Path(tmp) / "data"
        make_data(data, size)
        key = PrivateKey.generate()
        stream_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
        raw_ct, env_ct = Path(tmp) / "raw.ct", Path(tmp) / "env.ct"
        raw_encrypt(data, str(raw_ct), stream_key)
        envelope_encrypt(data, str(env_ct), key.public_key)
        with open(data, "rb") as f:  # warm the page cache for everyone
            while f.read(16 * MiB):
                pass

        results = {
            "raw encrypt": timed(lambda: raw_encrypt(data, os.devnull, stream_key), args.runs),
            "envelope encrypt": timed(lambda: envelope_encrypt(data, os.devnull, key.public_key), args.runs),
            "raw decrypt": timed(lambda: raw_decrypt(raw_ct, os.devnull, stream_key), args.runs),
            "envelope decrypt": timed(lambda: envelope_decrypt(env_ct, os.devnull, key), args.runs),
        }

        have_gpg = shutil.which("gpg") is not None
        if have_gpg:
            home = Path(tmp) / "gnupg"
            home.mkdir(mode=0o700)
            gpg(str(home), "--passphrase", "", "--quick-gen-key", "bench <bench@example.invalid>", "future-default", "default", "never")
            recipient = ["--trust-model", "always", "-r", "bench@example.invalid"]
            gpg_ct, gpg_ct_z0 = str(Path(tmp) / "data.gpg"), str(Path(tmp) / "data.z0.gpg")
            gpg(str(home), *recipient, "-o", gpg_ct, "--encrypt", str(data))
            gpg(str(home), *recipient, "-z", "0", "-o", gpg_ct_z0, "--encrypt", str(data))
            results["gpg encrypt"] = timed(lambda: gpg(str(home), *recipient, "-o", os.devnull, "--encrypt", str(data)), args.gpg_runs)
            results["gpg -z 0 encrypt"] = timed(lambda: gpg(str(home), *recipient, "-z", "0", "-o", os.devnull, "--encrypt", str(data)), args.gpg_runs)
            results["gpg decrypt"] = timed(lambda: gpg(str(home), "-o", os.devnull, "--decrypt", gpg_ct), args.gpg_runs)
            results["gpg -z 0 decrypt"] = timed(lambda: gpg(str(home), "-o", os.devnull, "--decrypt", gpg_ct_z0), args.gpg_runs)

        print(f"throughput, {args.size_mib} MiB, best of {args.runs} (gpg: {args.gpg_runs}), file -> /dev/null")
        for name, seconds in results.items():
            print(f"  {name:<20} {seconds:7.3f} s  {size / MiB / seconds:8.1f} MiB/s")
        print("ratios (higher is better for the envelope)")
        for op in ("encrypt", "decrypt"):
            env = results[f"envelope {op}"]
            print(f"  envelope {op} vs raw secretstream: {results[f'raw {op}'] / env:5.2f}x   (target >= 0.8x)")
            if have_gpg:
                print(f"  envelope {op} vs gpg:              {results[f'gpg {op}'] / env:5.2f}x   (target >= 4x)")
                print(f"  envelope {op} vs gpg -z 0:         {results[f'gpg -z 0 {op}'] / env:5.2f}x")
        if not have_gpg:
            print("  gpg not installed: no gpg baseline")

        small_enc, small_all = peak_rss_kib(size, tmp)
        big_enc, big_all = peak_rss_kib(args.big_mib * MiB, tmp)
        print("peak RSS of a child that encrypts then decrypts a generated stream")
        print(f"  {args.size_mib:>5} MiB: encrypt {small_enc / 1024:6.1f} MiB, encrypt+decrypt {small_all / 1024:6.1f} MiB")
        print(f"  {args.big_mib:>5} MiB: encrypt {big_enc / 1024:6.1f} MiB, encrypt+decrypt {big_all / 1024:6.1f} MiB")
        print(f"  ratio {args.big_mib} MiB / {args.size_mib} MiB: {big_all / small_all:4.2f} (flat = 1.00)")

        seconds, floor = many_items_figures(tmp, args.sources, 5)
        print(f"intake-keys decrypt of {args.sources * 5:,} messages from {args.sources:,} sources (2 recipients each)")
        print(f"  {seconds:.2f} s; writing the same plaintexts as plain files: {floor:.2f} s; ratio {seconds / floor:.1f}x")


if __name__ == "__main__":
    main()
