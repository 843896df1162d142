"""Fuzz the export-bundle reader (keys.bundle_reader.ExportBundle: verify, read_manifest, open_item).

Three kinds of input, by the first byte:
- 0 mod 3, raw: the bytes as a bundle file (framing, signature entry, trust check);
- 1 mod 3, re-signed: the rest is a bundle without its signature entry, which the
  harness signs with the trusted test server key, so the reader gets past the
  signature to the entries, the item hashes and the manifest envelope;
- 2 mod 3, forged manifest: the rest is the manifest's JSON, sealed to the harness's
  journalist key and placed after one genuine item, then signed: this reaches every
  rule of the manifest parser, which random bytes never would through encryption.

Contract: the reader's result, each item read to its end or refused, or a KeysError.
"""

from __future__ import annotations

import hashlib
import io
import struct

import atheris

from common import fixed_key_bytes, run

with atheris.instrument_imports():
    from keys import bundle, bundle_reader
    from keys.envelope import Metadata, encrypt_bytes
    from keys.errors import KeysError
    from keys.server_key import ServerPublicKey

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from keys.identity import Identity

SERVER_SEED = fixed_key_bytes("export-server")
SERVER = SigningKey(SERVER_SEED)
SERVER_PUBLIC = ServerPublicKey.from_seed(SERVER_SEED)
TRUSTED = {bytes(SERVER_PUBLIC.verify_key): SERVER_PUBLIC}
JOURNALIST = Identity("fuzzer", PrivateKey(fixed_key_bytes("export-journalist")), SigningKey(fixed_key_bytes("export-sign")))
ITEM = encrypt_bytes(b"a genuine message", [JOURNALIST.private_key.public_key], Metadata("message"))
ENTRY = struct.Struct(">BQ")


def signed(unsigned: bytes) -> bytes:
    digest = hashlib.blake2b(unsigned, digest_size=64).digest()
    signature = SERVER.sign(bundle.SIGNATURE_CONTEXT + digest).signature
    return (unsigned + ENTRY.pack(bundle.ENTRY_SIGNATURE, bundle.SIGNATURE_ENTRY_LENGTH)
            + bytes(SERVER_PUBLIC.verify_key) + bytes(SERVER_PUBLIC.encryption_key) + signature)


def with_manifest(manifest: bytes) -> bytes:
    sealed = encrypt_bytes(manifest, [JOURNALIST.private_key.public_key],
                           Metadata("manifest", content_type="application/json", length=len(manifest)))
    return signed(bundle.EXPORT_MAGIC + bytes([bundle.VERSION]) + ENTRY.pack(bundle.ENTRY_ITEM, len(ITEM)) + ITEM
                  + ENTRY.pack(bundle.ENTRY_MANIFEST, len(sealed)) + sealed)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    raw = rest if mode == 0 else signed(rest) if mode == 1 else with_manifest(rest)
    try:
        export = bundle_reader.ExportBundle(io.BytesIO(raw))
        export.verify(TRUSTED)
        sources = export.read_manifest(JOURNALIST)
        for source in sources:
            for item in source.items:
                try:
                    reader = export.open_item(item, JOURNALIST)
                    for _chunk in reader.chunks():
                        pass
                except KeysError:
                    continue
    except KeysError:
        return


if __name__ == "__main__":
    run(test_one_input)
