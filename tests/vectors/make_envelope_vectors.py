"""Generate tests/vectors/envelope-v1.json (run once; encryption is randomised, so
re-running makes different but equally valid vectors). Keys are fixed and public:
never use them for anything else.

    .venv/bin/python tests/vectors/make_envelope_vectors.py > tests/vectors/envelope-v1.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

from nacl.public import PrivateKey

from keys.envelope import Metadata, encrypt_bytes

KEYS = {
    "alice": PrivateKey(hashlib.sha256(b"intake test vector key: alice").digest()),
    "bob": PrivateKey(hashlib.sha256(b"intake test vector key: bob").digest()),
}

CASES = [
    ("empty body", Metadata("message"), b"", ["alice"]),
    (
        "short message, declared length and type",
        Metadata("message", content_type="text/plain; charset=utf-8", length=21),
        b"Hello from a source.\n",
        ["alice"],
    ),
    (
        "file body spanning two messages",
        Metadata("file", name="report.pdf", content_type="application/pdf"),
        bytes((i * 7 + 3) % 256 for i in range(70_000)),
        ["alice"],
    ),
    ("two recipients", Metadata("reply", content_type="text/plain; charset=utf-8"), "Thank you. — the desk".encode(), ["alice", "bob"]),
]


def main() -> None:
    vectors = []
    for description, meta, body, recipients in CASES:
        blob = encrypt_bytes(body, [KEYS[name].public_key for name in recipients], meta)
        vectors.append(
            {
                "description": description,
                "recipients": recipients,
                "metadata": dataclasses.asdict(meta),
                "body_hex": body.hex(),
                "envelope_size": len(blob),
                "envelope_sha256": hashlib.sha256(blob).hexdigest(),
                "envelope_hex": blob.hex(),
            }
        )
    doc = {
        "format": "intake envelope v1",
        "secret_keys": {name: bytes(key).hex() for name, key in KEYS.items()},
        "public_keys": {name: bytes(key.public_key).hex() for name, key in KEYS.items()},
        "vectors": vectors,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
