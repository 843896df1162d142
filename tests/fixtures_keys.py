"""Fixtures for the offline toolkit: identities, key files, export bundles built as the server builds them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from nacl import bindings as sodium
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from keys import bundle, bundle_reader, envelope
from keys.identity import KDF_MIN, Identity
from keys.server_key import ServerPublicKey, trust_server

PASSPHRASE = "correct horse battery staple"
# The server key test bundles are signed with; alice_files trusts it.
SERVER_SEED = bytes(range(32))
SERVER_KEY = SigningKey(SERVER_SEED)
SERVER_PUBLIC = ServerPublicKey.from_seed(SERVER_SEED)


@pytest.fixture
def alice() -> Identity:
    return Identity.generate("alice")


@pytest.fixture
def bob() -> Identity:
    return Identity.generate("bob")


@dataclasses.dataclass
class KeyFiles:
    identity: Identity
    secret: Path
    public: Path
    passphrase_file: Path


@pytest.fixture
def alice_files(alice: Identity, tmp_path: Path) -> KeyFiles:
    folder = tmp_path / "keys"
    folder.mkdir()
    alice.save(folder / "alice.secret", PASSPHRASE, KDF_MIN)
    alice.public.save(folder / "alice.public")
    passphrase_file = folder / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    trust_server(folder / "alice.secret", SERVER_PUBLIC)
    return KeyFiles(alice, folder / "alice.secret", folder / "alice.public", passphrase_file)


@dataclasses.dataclass
class Submission:
    """A plaintext item for ``build_export``: what a source sent."""

    kind: str
    body: bytes
    name: str | None = None
    day: str = "2026-11-28"
    envelope_version: int = envelope.VERSION  # 1: sealed as the server did before version 2


@dataclasses.dataclass
class Source:
    source_id: str
    designation: str
    submissions: list[Submission]
    key: PrivateKey = dataclasses.field(default_factory=PrivateKey.generate)


def seal_submission(submission: Submission, recipients: Sequence[Identity]) -> bytes:
    meta = envelope.Metadata(submission.kind, name=submission.name, content_type="application/octet-stream" if submission.name else None)
    keys = [r.public.encryption_key for r in recipients]
    if submission.envelope_version == 1:
        return seal_v1(submission.body, keys, meta)
    return envelope.encrypt_bytes(submission.body, keys, meta)


def seal_v1(body: bytes, recipients: Sequence, meta: envelope.Metadata) -> bytes:
    """A version-1 envelope, written from SECURITY.md section 3 with PyNaCl alone (keys.envelope
    no longer writes version 1; it must still read what was stored and exported before)."""
    content = meta.encode() + body  # u16 record length | record | body
    padded = envelope.padded_size(len(content))
    file_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    header = envelope.MAGIC + bytes([1, len(recipients)]) + b"".join(sodium.crypto_box_seal(file_key, bytes(pk)) for pk in recipients) + stream_header
    full_messages = -(-padded // envelope.SLOT_CAPACITY) - 1  # every message but the last is full
    capacities = [envelope.SLOT_CAPACITY] * full_messages + [padded - envelope.SLOT_CAPACITY * full_messages]
    out, position = [header], 0
    for i, capacity in enumerate(capacities):
        used = content[position : position + capacity]
        position += len(used)
        plaintext = struct.pack(">I", len(used)) + used + bytes(capacity - len(used))
        tag = envelope.TAG_FINAL if i == len(capacities) - 1 else envelope.TAG_MESSAGE
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, plaintext, header if i == 0 else None, tag))
    return b"".join(out)


def export_sources(sources: Sequence[Source], recipients: Sequence[Identity], piece: int = 4096) -> list[bundle.ExportSource]:
    """Seal every submission as the server does on receipt; chunks() reads it back in pieces."""
    result = []
    for n, source in enumerate(sources):
        items = []
        for m, submission in enumerate(source.submissions):
            sealed = seal_submission(submission, recipients)

            def chunks(sealed: bytes = sealed) -> list[bytes]:
                return [sealed[i : i + piece] for i in range(0, len(sealed), piece)]

            items.append(
                bundle.ExportItem(f"item-{n}-{m}", submission.kind, submission.day, len(sealed), [r.name for r in recipients], chunks)
            )
        result.append(bundle.ExportSource(source.source_id, source.designation, bytes(source.key.public_key), items))
    return result


def build_export(sources: Sequence[Source], recipients: Sequence[Identity], server_key: SigningKey = SERVER_KEY) -> bytes:
    return b"".join(bundle.stream_export_bundle([r.public.encryption_key for r in recipients], export_sources(sources, recipients), server_key))


@pytest.fixture
def two_sources() -> list[Source]:
    return [
        Source(
            "src-1",
            "brave otter",
            [
                Submission("message", "Der Bürgermeister hat gelogen.\n".encode()),
                Submission("file", os.urandom(200_000), name="minutes.pdf"),
            ],
        ),
        Source("src-2", "quiet heron", [Submission("message", b"second source", day="2026-11-27")]),
    ]


def unsigned_part(data: bytes) -> bytes:
    """An export bundle without its signature entry (the last 9 + 128 bytes)."""
    return data[: -(9 + bundle.SIGNATURE_ENTRY_LENGTH)]


def sign_export(unsigned: bytes, server_key: SigningKey = SERVER_KEY) -> bytes:
    """Append the server's signature entry to an export bundle's bytes, as the server does: a forgery
    made with the server's secret key (the tests' way to reach checks behind the signature)."""
    digest = hashlib.blake2b(unsigned, digest_size=64).digest()
    public = ServerPublicKey.from_seed(bytes(server_key))
    signature = server_key.sign(bundle.SIGNATURE_CONTEXT + digest).signature
    return unsigned + struct.pack(">BQ", bundle.ENTRY_SIGNATURE, bundle.SIGNATURE_ENTRY_LENGTH) + bytes(public.verify_key) + bytes(public.encryption_key) + signature


def open_export(data: bytes) -> bundle_reader.ExportBundle:
    """An export bundle opened and its signature checked against the test server key."""
    export = bundle_reader.ExportBundle(io.BytesIO(data))
    export.verify({bytes(SERVER_PUBLIC.verify_key): SERVER_PUBLIC})
    return export
