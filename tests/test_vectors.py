"""The published bundle test vectors (tests/vectors/bundles-v2.json) read as SECURITY.md says,
with the published keys only; SECURITY.md prints them. Envelope vectors: tests/test_envelope.py."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from keys import bundle_reader, envelope, envelope_reader, reply_bundle
from keys.identity import Identity
from keys.server_key import ServerPublicKey, server_keys_from_seed
from tests.vectors import make_bundle_vectors

# Each bundle twice: with the envelopes written today (version 2) and with those of release 0.1.0
# (version 1), which every reader must still open.
EXPORTS = ["export_with_v2_envelopes", "export"]
REPLIES = ["reply_with_v2_envelopes", "reply"]
VECTORS = Path(__file__).parent / "vectors" / "bundles-v2.json"
DOC = json.loads(VECTORS.read_text())
KEYS = DOC["keys"]


def journalist() -> Identity:
    j = KEYS["journalist"]
    return Identity(j["name"], PrivateKey(bytes.fromhex(j["x25519_secret"])), SigningKey(bytes.fromhex(j["ed25519_seed"])))


def test_the_published_keys_are_consistent():
    alice = journalist()
    assert bytes(alice.public.encryption_key).hex() == KEYS["journalist"]["x25519_public"]
    assert bytes(alice.signing_key.verify_key).hex() == KEYS["journalist"]["ed25519_public"]
    assert alice.public.fingerprint == KEYS["journalist"]["fingerprint"]
    seed = bytes.fromhex(KEYS["server"]["seed"])
    signing, box = server_keys_from_seed(seed)
    assert bytes(signing.verify_key).hex() == KEYS["server"]["ed25519_public"]
    assert bytes(box).hex() == KEYS["server"]["x25519_secret"]
    assert bytes(box.public_key).hex() == KEYS["server"]["x25519_public"]
    # The box key as SECURITY.md derives it: BLAKE2b-256, keyed with the seed, personalisation "intake-srv-box".
    assert hashlib.blake2b(b"", key=seed, digest_size=32, person=b"intake-srv-box").hexdigest() == KEYS["server"]["x25519_secret"]
    server = ServerPublicKey.from_text(KEYS["server"]["public_file"])
    assert server.fingerprint == KEYS["server"]["fingerprint"] == ServerPublicKey.from_seed(seed).fingerprint


@pytest.mark.parametrize("name", EXPORTS)
def test_the_export_vector_verifies_and_decrypts_to_the_published_contents(name):
    vector = DOC[name]
    data = bytes.fromhex(vector["hex"])
    assert len(data) == vector["size"] and hashlib.sha256(data).hexdigest() == vector["sha256"]
    assert hashlib.blake2b(data[: -(9 + 128)], digest_size=64).hexdigest() == vector["signed_blake2b_512"]
    server = ServerPublicKey.from_text(KEYS["server"]["public_file"])
    export = bundle_reader.ExportBundle(io.BytesIO(data))
    assert export.verify({bytes(server.verify_key): server}) == server
    manifest = export.manifest_entry
    assert data[manifest.offset : manifest.offset + 9] == envelope.MAGIC + bytes([vector["envelope_version"]])
    alice = journalist()
    (source,) = export.read_manifest(alice)
    (expected,) = vector["sources"]
    assert (source.source_id, source.designation, source.reply_public_key.hex()) == (
        expected["source_id"], expected["designation"], expected["reply_public_key"])
    bodies = {"sub-1": bytes.fromhex(expected["items"][0]["body_hex"]), "sub-2": make_bundle_vectors.FILE}
    for item, want in zip(source.items, expected["items"], strict=True):
        assert (item.item_id, item.kind, item.received_day, list(item.recipients)) == (
            want["item_id"], want["kind"], want["received_day"], want["recipients"])
        entry = export.items[item.entry]
        assert data[entry.offset : entry.offset + 9] == envelope.MAGIC + bytes([vector["envelope_version"]])
        reader = export.open_item(item, alice)
        assert (reader.metadata.name, reader.metadata.content_type) == (want["name"], want["type"])
        assert b"".join(reader.chunks()) == bodies[item.item_id]


@pytest.mark.parametrize("name", REPLIES)
def test_the_reply_vector_verifies_and_opens_with_the_published_keys(name):
    vector = DOC[name]
    data = bytes.fromhex(vector["hex"])
    assert len(data) == vector["size"] and hashlib.sha256(data).hexdigest() == vector["sha256"]
    alice = journalist()
    box = PrivateKey(bytes.fromhex(KEYS["server"]["x25519_secret"]))
    verified = reply_bundle.verify_reply_bundle(io.BytesIO(data), {"alice": alice.signing_key.verify_key}, [box])
    assert verified.journalist == vector["signer"]
    (want,) = vector["replies"]
    ((source_id, sealed),) = verified.replies
    assert sealed[:9] == envelope.MAGIC + bytes([vector["envelope_version"]])
    meta, text = envelope_reader.decrypt_bytes(sealed, PrivateKey(bytes.fromhex(KEYS["source"]["x25519_secret"])))
    assert source_id == want["source_id"] and meta.kind == "reply" and text.decode() == want["text"]
    assert source_id.encode() not in data


def test_security_md_prints_the_bundle_vectors():
    text = (VECTORS.parents[2] / "SECURITY.md").read_text()
    assert make_bundle_vectors.markdown() in text


@pytest.mark.parametrize(("export_name", "reply_name"), list(zip(EXPORTS, REPLIES, strict=True)))
def test_the_signatures_and_routing_are_exactly_as_specified(export_name, reply_name):
    """SECURITY.md sections 5-7 by hand, with nothing but PyNaCl and hashlib."""
    from nacl.public import SealedBox
    from nacl.signing import VerifyKey

    seed = bytes.fromhex(KEYS["server"]["seed"])
    server = ServerPublicKey.from_seed(seed)
    digest = hashlib.blake2b(bytes(server.verify_key) + bytes(server.encryption_key), digest_size=20, person=b"intake-sfp-v1").digest()
    assert server.fingerprint.replace(" ", "") == __import__("base64").b32encode(digest).decode()

    export = bytes.fromhex(DOC[export_name]["hex"])
    trailer = export[-(9 + 128) :]
    assert trailer[:9] == b"\x03" + (128).to_bytes(8, "big")
    assert trailer[9:41] == bytes(server.verify_key) and trailer[41:73] == bytes(server.encryption_key)
    signed = hashlib.blake2b(export[: -(9 + 128)], digest_size=64).digest()
    VerifyKey(trailer[9:41]).verify(b"intake-export-bundle-v2" + signed, trailer[73:])

    reply = bytes.fromhex(DOC[reply_name]["hex"])
    assert reply[:10] == b"INTAKE-R\x02\x05" and reply[10:15] == b"alice"
    assert reply[15] == 1
    length = int.from_bytes(reply[16:20], "big")
    routing = reply[20 : 20 + 176]
    padded = SealedBox(PrivateKey(bytes.fromhex(KEYS["server"]["x25519_secret"]))).decrypt(routing)
    assert padded == b"src-1".ljust(128, b"\0")
    end = 15 + 5 + length
    assert reply[end : end + 5] == b"\x02" + (64).to_bytes(4, "big") and len(reply) == end + 5 + 64
    VerifyKey(bytes.fromhex(KEYS["journalist"]["ed25519_public"])).verify(
        b"intake-reply-bundle-v2" + hashlib.blake2b(reply[:end], digest_size=64).digest(), reply[end + 5 :])
