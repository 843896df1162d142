"""The published bundle test vectors (tests/vectors/bundles-v2.json) read as SECURITY.md says,
with the published keys only; SECURITY.md prints them. The refusal vectors (refusals-v2.json):
every input refused with exactly the error SECURITY.md names. Envelope vectors: tests/test_envelope.py."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey

from keys import bundle_reader, envelope, envelope_reader, errors, reply_bundle
from keys.errors import KeysError, WrongKeyError
from keys.identity import Identity, PublicIdentity
from keys.server_key import ServerPublicKey, server_keys_from_seed
from tests.vectors import make_bundle_vectors, make_refusal_vectors

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


# ---------------------------------------------------------------- refusal vectors (tests/vectors/refusals-v2.json)

REFUSALS_FILE = VECTORS.parent / "refusals-v2.json"
REFUSALS = json.loads(REFUSALS_FILE.read_text())
_BY_NAME = {vector["name"]: vector for vector in REFUSALS["accepted"] + REFUSALS["refusals"]}


def refusal_input(name: str) -> bytes:
    vector = _BY_NAME[name]
    if "hex" in vector:
        return bytes.fromhex(vector["hex"])
    return make_refusal_vectors.apply(refusal_input(vector["of"]), vector["edits"])


def read_as(kind: str, data: bytes, folder: Path) -> None:
    """Read ``data`` as SECURITY.md says for its kind, with the vectors' keys only (their `readers`)."""
    keys = REFUSALS["keys"]
    alice = Identity("alice", PrivateKey(bytes.fromhex(keys["secret"]["alice_x25519"])), SigningKey(bytes.fromhex(keys["secret"]["alice_ed25519_seed"])))
    path = folder / "input"
    path.write_bytes(data)
    if kind == "envelope":
        envelope_reader.decrypt_bytes(data, alice.private_key)
    elif kind == "public key file":
        PublicIdentity.load(path)
    elif kind == "server key file":
        ServerPublicKey.load(path)
    elif kind == "secret key file":
        Identity.load(path, keys["secret_key_file_passphrase"])
    elif kind == "export bundle":
        server = ServerPublicKey.from_text(keys["server_public_file"])
        with bundle_reader.ExportBundle.open(path) as export:
            export.verify({bytes(server.verify_key): server})
            for source in export.read_manifest(alice):
                for item in source.items:
                    try:
                        reader = export.open_item(item, alice)
                    except WrongKeyError:
                        continue  # not for alice: skipped
                    for _piece in reader.chunks():
                        pass
    elif kind == "reply bundle":
        reply_bundle.verify_reply_bundle(io.BytesIO(data), {"alice": VerifyKey(bytes.fromhex(keys["public"]["alice_ed25519"]))},
                                         [PrivateKey(bytes.fromhex(keys["secret"]["server_x25519"]))])
    else:
        raise AssertionError(f"unknown kind of input {kind!r}")


def test_the_refusal_vectors_are_what_their_generator_makes():
    """Deterministic: the published file is exactly what tests/vectors/make_refusal_vectors.py writes."""
    assert make_refusal_vectors.text() == REFUSALS_FILE.read_text()


@pytest.mark.parametrize("name", [vector["name"] for vector in REFUSALS["accepted"]])
def test_every_accepted_vector_is_read(name, tmp_path):
    read_as(_BY_NAME[name]["input"], refusal_input(name), tmp_path)


@pytest.mark.parametrize("name", [vector["name"] for vector in REFUSALS["refusals"]])
def test_every_refusal_vector_is_refused_with_exactly_its_error(name, tmp_path):
    vector = _BY_NAME[name]
    with pytest.raises(KeysError) as caught:
        read_as(vector["input"], refusal_input(name), tmp_path)
    assert type(caught.value).__name__ == vector["error"], (vector["reason"], repr(caught.value))


def test_the_refusal_vectors_name_the_classes_of_keys_errors_as_security_md_does():
    """Each error a vector names is a class of keys/errors.py with the parent the file gives, and
    SECURITY.md names it in the sections that specify the formats."""
    spec = (VECTORS.parents[2] / "SECURITY.md").read_text()
    formats = spec[spec.index("## 3. Envelope format") : spec.index("## 9. Test vectors")]
    assert {vector["error"] for vector in REFUSALS["refusals"]} == set(REFUSALS["errors"])
    for name, parent in REFUSALS["errors"].items():
        cls = getattr(errors, name)
        assert cls.__mro__[1].__name__ == parent, name
        assert f"`{name}`" in formats, name
    assert "tests/vectors/refusals-v2.json" in spec[spec.index("## 9. Test vectors") :]
    kinds = {vector["input"] for vector in REFUSALS["accepted"] + REFUSALS["refusals"]}
    assert kinds == set(REFUSALS["readers"])
    assert REFUSALS_FILE.stat().st_size < 400_000  # small envelopes: the one of 64 KiB is the one that needs it
