"""Envelope throughput against raw libsodium secretstream and gpg, and memory vs size.

    .venv/bin/python bench/envelope.py [--size-mib 256] [--big-mib 1024] [--runs 3]

Every contender reads the same random file in 1 MiB pieces and writes to
/dev/null, in paired rounds (each contender once a round, the order reversed
every other round; figures are median [min..max] of the rounds):

- raw secretstream: PyNaCl's crypto_secretstream_xchacha20poly1305 on 64 KiB
  messages (the envelope's message size), nothing else: the crypto's floor;
- disk write + fsync: the same bytes to a file, fsynced: the disk's floor;
- envelope: keys.envelope writer / reader (write_to(), as intake-keys decrypt
  writes its files), one recipient;
- gpg as SecureDrop runs it today: ``gzip -9``, then ``gpg --encrypt -z 0`` to
  one throwaway cv25519 key (decrypt: gpg, then gunzip); and gpg with
  compression off (-z 0) on the raw file.

Peak memory is the maximum RSS of a child process that encrypts, then decrypts,
a generated stream of the given size. Then ``intake-keys decrypt`` of many short
messages against writing the same plaintexts as files fsynced the same way. Last,
what envelope version 2 saves with many recipients: short messages sealed to 30
keys and opened with one of them, against version 1 (a crypto_box_seal per key,
written by tests/fixtures_keys.seal_v1 and read by the same reader).
Targets: envelope >= 0.8x raw secretstream, >= 4x each gpg, memory flat in the
size (<= 1.1x); MISSED is printed next to a target the median does not meet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paired import Paired, seconds, spread, verdict  # noqa: E402
from nacl import bindings as sodium  # noqa: E402
from nacl.public import PrivateKey  # noqa: E402

from keys.envelope import MESSAGE_SIZE, EnvelopeWriter, Metadata, encrypt_bytes  # noqa: E402
from keys.envelope_reader import EnvelopeReader, decrypt_bytes  # noqa: E402
from tests.fixtures_keys import seal_v1  # noqa: E402

PIECE = 1 << 20
MiB = 1 << 20


def make_data(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        block = os.urandom(PIECE)
        for i in range(size // PIECE):
            f.write(block[i % 7 :] + block[: i % 7])  # not one repeated block, in case anything dedups


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
        reader.write_to(out)  # as intake-keys decrypt writes files: straight from the reader's buffer
        assert reader.complete


def gpg(home: str, *args: str) -> None:
    subprocess.run(["gpg", "--homedir", home, "--batch", "--yes", "--quiet", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- memory


_MEMORY_CHILD = """
import os, resource, sys, tempfile
sys.path.insert(0, {root!r})
from nacl.public import PrivateKey
from keys.envelope import EnvelopeWriter, Metadata
from keys.envelope_reader import EnvelopeReader
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


def many_items_figures(tmp: str, sources: int, per_source: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds, in paired rounds, for ``intake-keys decrypt`` of a bundle of sources x per_source short
    messages sealed to two journalists, and for writing the same plaintexts as files fsynced as decrypt
    does (in parallel batches): the floor."""
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

    def plain_files(out: Path) -> None:
        out.mkdir()
        for s in range(sources):
            (out / f"source {s}").mkdir()
        written = []
        for s in range(sources):
            for i in range(per_source):
                path = out / f"source {s}" / f"{i}.txt"
                path.write_bytes(texts[s * per_source + i])
                written.append(path)
        with ThreadPoolExecutor(max_workers=16) as pool:
            for start in range(0, len(written), 512):
                list(pool.map(_fsync_path, written[start : start + 512]))

    def decrypt(out: Path) -> None:
        argv = ["decrypt", str(folder / "export.bundle"), "--key", str(folder / "alice.secret"), "--passphrase-file", str(folder / "pw"), "--out", str(out)]
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                assert cli.main(argv) == 0
            finally:
                sys.stdout = stdout

    decrypts, floors = [], []
    for number in range(rounds):
        pair = [(decrypts, decrypt), (floors, plain_files)]
        for times, work in pair if number % 2 == 0 else reversed(pair):
            out = folder / f"out-{number}-{len(times)}-{work.__name__}"
            times.append(seconds(lambda: work(out)))
            shutil.rmtree(out)
    return decrypts, floors


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_write(src: Path, dst: Path) -> None:
    """The disk's floor: the same bytes written to a file and fsynced (file and folder)."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        while piece := f.read(PIECE):
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    fd = os.open(dst.parent, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    dst.unlink()


def bash(script: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def contenders(tmp: str, data: Path, key: PrivateKey, stream_key: bytes, have_gpg: bool) -> dict[str, dict[str, object]]:
    """{operation: {contender: callable}}, with everything each needs made beforehand."""
    raw_ct, env_ct = Path(tmp) / "raw.ct", Path(tmp) / "env.ct"
    raw_encrypt(data, str(raw_ct), stream_key)
    envelope_encrypt(data, str(env_ct), key.public_key)
    work = {
        "encrypt": {
            "envelope": lambda: envelope_encrypt(data, os.devnull, key.public_key),
            "raw secretstream": lambda: raw_encrypt(data, os.devnull, stream_key),
            "disk write + fsync": lambda: disk_write(data, Path(tmp) / "disk.out"),
        },
        "decrypt": {
            "envelope": lambda: envelope_decrypt(env_ct, os.devnull, key),
            "raw secretstream": lambda: raw_decrypt(raw_ct, os.devnull, stream_key),
        },
    }
    if have_gpg:
        home = Path(tmp) / "gnupg"
        home.mkdir(mode=0o700)
        gpg(str(home), "--passphrase", "", "--quick-gen-key", "bench <bench@example.invalid>", "future-default", "default", "never")
        g = f"gpg --homedir {home} --batch --yes --quiet --trust-model always"
        sd_ct, z0_ct = Path(tmp) / "data.gz.gpg", Path(tmp) / "data.z0.gpg"
        # SecureDrop today: gzip -9 the submission, then encrypt it to one key with gpg's compression off.
        securedrop_encrypt = f"gzip -9 -c {data} | {g} -z 0 -r bench@example.invalid --encrypt -o"
        bash(f"{securedrop_encrypt} {sd_ct}")
        bash(f"{g} -z 0 -r bench@example.invalid -o {z0_ct} --encrypt {data}")
        work["encrypt"]["gpg as SecureDrop (gzip -9, gpg -z 0)"] = lambda: bash(f"{securedrop_encrypt} /dev/null")
        work["encrypt"]["gpg -z 0"] = lambda: bash(f"{g} -z 0 -r bench@example.invalid -o /dev/null --encrypt {data}")
        work["decrypt"]["gpg as SecureDrop (gpg, gunzip)"] = lambda: bash(f"{g} -o - --decrypt {sd_ct} | gunzip -c > /dev/null")
        work["decrypt"]["gpg -z 0"] = lambda: bash(f"{g} -o /dev/null --decrypt {z0_ct}")
    return work


# (operation, baseline, target for the baseline's time over the envelope's: higher is better)
TARGETS = [
    ("encrypt", "raw secretstream", 0.8), ("decrypt", "raw secretstream", 0.8),
    ("encrypt", "disk write + fsync", None),
    ("encrypt", "gpg as SecureDrop (gzip -9, gpg -z 0)", 4.0), ("encrypt", "gpg -z 0", 4.0),
    ("decrypt", "gpg as SecureDrop (gpg, gunzip)", 4.0), ("decrypt", "gpg -z 0", 4.0),
]


def recipients_figures(runs: int, count: int = 30, items: int = 300) -> None:
    """Envelope version 2 against version 1 where they differ: the stanzas, with many recipients."""
    keys = [PrivateKey.generate() for _ in range(count)]
    publics = [key.public_key for key in keys]
    meta = Metadata("message", content_type="text/plain; charset=utf-8")
    body = "Документы у меня, могу передать.".encode() * 4
    labels = ("version 1 (a crypto_box_seal per key)", "version 2 (one ephemeral key)")
    sealing = Paired(f"sealing {items} short messages to {count} keys, ms per message", *labels, unit="ms", scale=1000 / items)
    sealing.run(lambda: [seal_v1(body, publics, meta) for _ in range(items)],
                lambda: [encrypt_bytes(body, publics, meta) for _ in range(items)], rounds=runs)
    sealing.report()
    old, new = [seal_v1(body, publics, meta) for _ in range(items)], [encrypt_bytes(body, publics, meta) for _ in range(items)]
    # Each message opened with the next key in turn: on average the reader's stanza is half way down.
    opening = Paired(f"opening them, each with one of the {count} keys, ms per message", *labels, unit="ms", scale=1000 / items)
    opening.run(lambda: [decrypt_bytes(blob, keys[i % count]) for i, blob in enumerate(old)],
                lambda: [decrypt_bytes(blob, keys[i % count]) for i, blob in enumerate(new)], rounds=runs)
    opening.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5, help="paired rounds (every contender once a round, the order reversed every other round)")
    parser.add_argument("--sources", type=int, default=2000, help="sources in the many-items bundle (5 messages each)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    print(f"envelope benchmark: {args.size_mib} MiB, {args.runs} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        data = Path(tmp) / "data"
        make_data(data, size)
        have_gpg = shutil.which("gpg") is not None
        work = contenders(tmp, data, PrivateKey.generate(), sodium.crypto_secretstream_xchacha20poly1305_keygen(), have_gpg)
        with open(data, "rb") as f:  # warm the page cache for everyone
            while f.read(16 * MiB):
                pass
        times: dict[str, dict[str, list[float]]] = {op: {name: [] for name in named} for op, named in work.items()}
        for number in range(args.runs):
            for op, named in work.items():
                order = list(named) if number % 2 == 0 else list(reversed(named))
                for name in order:
                    times[op][name].append(seconds(named[name]))

        for op, named in times.items():
            print(f"{op}, file -> /dev/null (disk: to a file, fsynced), MiB/s median [min..max]:")
            for name, values in named.items():
                print(f"  {name:<40} {spread([args.size_mib / t for t in values], 1)}")
        print("the envelope against each (the other's time / the envelope's, per round; higher is better for the envelope):")
        for op, baseline, target in TARGETS:
            if baseline not in times[op]:
                print(f"  {op} vs {baseline}: not measured (gpg is not installed)")
                continue
            figure = Paired(f"  envelope {op} vs {baseline}", "envelope", baseline)
            for envelope_time, other in zip(times[op]["envelope"], times[op][baseline]):
                figure.add(envelope_time, other)
            ratio = statistics.median(figure.ratios)
            wanted = f"   target >= {target}x" if target else "   (the disk's floor, for reference)"
            print(f"  envelope {op} vs {baseline}: {spread(figure.ratios)}x{wanted}{verdict(ratio, target, 'higher')}")

        small_enc, small_all = peak_rss_kib(size, tmp)
        big_enc, big_all = peak_rss_kib(args.big_mib * MiB, tmp)
        print("peak RSS of a child that encrypts then decrypts a generated stream")
        print(f"  {args.size_mib:>5} MiB: encrypt {small_enc / 1024:6.1f} MiB, encrypt+decrypt {small_all / 1024:6.1f} MiB")
        print(f"  {args.big_mib:>5} MiB: encrypt {big_enc / 1024:6.1f} MiB, encrypt+decrypt {big_all / 1024:6.1f} MiB")
        flat = big_all / small_all
        print(f"  ratio {args.big_mib} MiB / {args.size_mib} MiB: {flat:4.2f} (flat = 1.00; target <= 1.1){verdict(flat, 1.1, 'lower')}")

        decrypts, floors = many_items_figures(tmp, args.sources, 5, args.runs)
        figure = Paired(f"intake-keys decrypt of {args.sources * 5:,} messages from {args.sources:,} sources (2 recipients each)",
                        "the same plaintexts as files, fsynced in parallel batches (the floor)", "intake-keys decrypt")
        for decrypt_time, floor in zip(decrypts, floors):
            figure.add(floor, decrypt_time)
        figure.report()
    recipients_figures(args.runs)


if __name__ == "__main__":
    main()
