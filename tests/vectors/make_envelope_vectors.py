"""Generate tests/vectors/envelope-v2.json, for the version keys.envelope writes (run once;
encryption is randomised, so re-running makes different but equally valid vectors). Keys are
fixed and public: never use them for anything else. envelope-v1.json was made the same way
when version 1 was written; it stays, because version 1 is still read.

    PYTHONPATH=. .venv/bin/python tests/vectors/make_envelope_vectors.py > tests/vectors/envelope-v2.json
    PYTHONPATH=. .venv/bin/python tests/vectors/make_envelope_vectors.py --markdown   # section 9 of SECURITY.md

tests/test_envelope.py checks that SECURITY.md prints the vectors of the JSON file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import textwrap
from pathlib import Path

from nacl.public import PrivateKey

from keys.envelope import VERSION, Metadata, encrypt_bytes

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
        "format": f"intake envelope v{VERSION}",
        "secret_keys": {name: bytes(key).hex() for name, key in KEYS.items()},
        "public_keys": {name: bytes(key.public_key).hex() for name, key in KEYS.items()},
        "vectors": vectors,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


def markdown() -> str:
    """The envelope part of SECURITY.md's test vectors, from the published JSON files."""
    doc = json.loads((Path(__file__).parent / f"envelope-v{VERSION}.json").read_text())
    out = ["Secret keys (X25519, hex) and their public keys:\n", "```"]
    for name, key in doc["secret_keys"].items():
        out += [f"{name:<6} secret {key}", f"{'':<6} public {doc['public_keys'][name]}"]
    out.append("```\n")
    out += _vectors_markdown(doc, f"Version {VERSION}")
    old = json.loads((Path(__file__).parent / "envelope-v1.json").read_text())
    assert old["secret_keys"] == doc["secret_keys"]
    out.append("Version 1 (still read, no longer written), with the same keys:\n")
    out += _vectors_markdown(old, "Version 1")
    return "\n".join(out)


def _vectors_markdown(doc: dict, version: str) -> list[str]:
    out = []
    for number, vector in enumerate(doc["vectors"], 1):
        meta = vector["metadata"]
        record = {"kind": meta["kind"], "length": meta["length"], "name": meta["name"], "type": meta["content_type"]}
        body = bytes.fromhex(vector["body_hex"])
        line = f"**{version}, vector {number}: {vector['description']}.** Recipients: {', '.join(vector['recipients'])}. "
        line += f"Record: `{json.dumps(record, sort_keys=True, separators=(',', ':'), ensure_ascii=False)}`. "
        if len(body) <= 64:
            line += f"Body ({len(body)} bytes, hex): `{vector['body_hex'] or '(empty)'}`."
        else:
            line += f"Body: {len(body)} bytes, byte i = (7·i + 3) mod 256."
        out += [line, f"Envelope: {vector['envelope_size']} bytes, SHA-256 `{vector['envelope_sha256']}`."]
        if vector["envelope_size"] <= 4096:
            out += ["\n```", *textwrap.wrap(vector["envelope_hex"], 96), "```\n"]
        else:
            out.append("(Too long to print: the full hex is in the JSON file.)\n")
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown())
    else:
        main()
