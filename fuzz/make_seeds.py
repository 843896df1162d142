"""Write the seed corpora under fuzz/corpus/NAME/ (run once; the seeds are committed).

    .venv/bin/python fuzz/make_seeds.py

Seeds are valid inputs of each reader, made with the real writers and the harnesses'
fixed keys, so the fuzzer starts from inputs that get all the way through.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, fixed_key_bytes  # noqa: E402
from nacl.public import PrivateKey  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from keys.envelope import Metadata, encrypt_bytes  # noqa: E402
from keys.identity import Identity, KdfParams  # noqa: E402
from tests.fixtures_app import upload_body  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"


def write(harness: str, data: bytes) -> None:
    folder = CORPUS / harness
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)


def envelope_seeds() -> None:
    key = PrivateKey(fixed_key_bytes("envelope")).public_key
    for meta, body in [(Metadata("message"), b""), (Metadata("message", content_type="text/plain", length=5), b"hello"),
                       (Metadata("file", name="report.pdf", content_type="application/pdf"), bytes(70_000))]:
        write("envelope", b"\0" + encrypt_bytes(body, [key], meta))
        write("record", meta.encode()[2:])


def key_file_seeds() -> None:
    identity = Identity("fuzzer", PrivateKey(fixed_key_bytes("keyfile")), SigningKey(fixed_key_bytes("keyfile-sign")))
    write("public_key", identity.public.to_text().encode())
    cheap = KdfParams(opslimit=1, memlimit=8192)
    write("secret_key", identity.to_secret_bytes("fuzz passphrase", cheap))


def multipart_seeds() -> None:
    for message, files, read_size in [("a short message", [], 4096), (None, [("a.txt", b"file body", "text/plain")], 7),
                                      ("both", [("x.bin", bytes(3000), "application/octet-stream"), ("y", b"", "")], 1)]:
        body, content_type = upload_body("fuzz-token", message=message, files=files)
        write("multipart", content_type.encode() + b"\n" + read_size.to_bytes(2, "big") + body)


if __name__ == "__main__":
    envelope_seeds()
    key_file_seeds()
    multipart_seeds()
