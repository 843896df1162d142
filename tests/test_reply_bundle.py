"""keys.reply_bundle: signed reply bundles (laptop -> server), their routing sealed to the server."""

from __future__ import annotations

import io
import struct

import pytest
from nacl.public import PrivateKey

from keys import envelope, envelope_reader, reply_bundle
from keys.errors import BadSignatureError, FormatError, KeysError, TruncatedError, UnknownSignerError, UnsupportedVersionError, WrongKeyError
from keys.identity import Identity
from keys.reply_bundle import SealedReply, seal_reply, seal_routing, verify_reply_bundle
from keys.server_key import server_keys_from_seed
from tests.fixtures_keys import SERVER_PUBLIC, SERVER_SEED

SERVER_BOX = [server_keys_from_seed(SERVER_SEED)[1]]


def sealed(source_id: str, text: str, source_key) -> SealedReply:
    return SealedReply(seal_routing(source_id, SERVER_PUBLIC.encryption_key), seal_reply(text, source_key))


def make_replies(alice: Identity, texts: list[str]) -> tuple[PrivateKey, bytes]:
    source_key = PrivateKey.generate()
    out = io.BytesIO()
    reply_bundle.write_reply_bundle(out, alice, [sealed(f"src-{n}", text, source_key.public_key) for n, text in enumerate(texts)])
    return source_key, out.getvalue()


def verify(data: bytes, keys: dict, box_keys=SERVER_BOX):
    return verify_reply_bundle(io.BytesIO(data), keys, box_keys)


def test_reply_bundle_round_trips_and_only_the_source_can_read(alice, bob):
    source_key, data = make_replies(alice, ["Thank you.", "Can you send the rest?"])
    verified = verify(data, {"alice": alice.signing_key.verify_key, "bob": bytes(bob.signing_key.verify_key)})
    assert verified.journalist == "alice"
    assert [sid for sid, _ in verified.replies] == ["src-0", "src-1"]
    meta, text = envelope_reader.decrypt_bytes(verified.replies[1][1], source_key)
    assert meta.kind == "reply" and text == b"Can you send the rest?"
    with pytest.raises(WrongKeyError):
        envelope_reader.decrypt_bytes(verified.replies[0][1], alice.private_key)


def test_source_ids_are_sealed_to_the_server_and_all_routing_is_one_size(alice):
    source_key = PrivateKey.generate()
    out = io.BytesIO()
    reply_bundle.write_reply_bundle(out, alice, [sealed("a", "x", source_key.public_key), sealed("b" * 128, "y", source_key.public_key)])
    data = out.getvalue()
    assert b"b" * 16 not in data
    entries, offset = [], 15
    while data[offset] == 1:
        (length,) = struct.unpack_from(">I", data, offset + 1)
        entries.append(data[offset + 5 : offset + 5 + reply_bundle.ROUTING_SIZE])
        offset += 5 + length
    assert [len(r) for r in entries] == [176, 176]
    assert [sid for sid, _ in verify(data, {"alice": alice.signing_key.verify_key}).replies] == ["a", "b" * 128]


def test_a_reply_routed_to_another_server_is_refused(alice):
    _, data = make_replies(alice, ["hi"])
    with pytest.raises(FormatError, match="not addressed to this server"):
        verify(data, {"alice": alice.signing_key.verify_key}, [PrivateKey.generate()])


def test_the_previous_server_key_still_opens_routing_after_a_rotation(alice):
    _, data = make_replies(alice, ["hi"])
    assert verify(data, {"alice": alice.signing_key.verify_key}, [PrivateKey.generate(), *SERVER_BOX]).replies[0][0] == "src-0"


@pytest.mark.parametrize("plaintext", [b"", b"src\0x".ljust(128, b"\0"), b"../x".ljust(128, b"\0"), b"s" * 129, b"\xff".ljust(128, b"\0")])
def test_routing_that_opens_but_names_no_valid_source_id_is_refused(alice, plaintext):
    from nacl.public import SealedBox

    reply = SealedReply(SealedBox(SERVER_PUBLIC.encryption_key).encrypt(plaintext).ljust(176, b"\0")[:176], seal_reply("hi", PrivateKey.generate().public_key))
    out = io.BytesIO()
    reply_bundle.write_reply_bundle(out, alice, [reply])
    with pytest.raises(FormatError):
        verify(out.getvalue(), {"alice": alice.signing_key.verify_key})


def test_unsigned_reply_bundle_is_refused(alice):
    _, data = make_replies(alice, ["hi"])
    with pytest.raises(BadSignatureError, match="not signed"):
        verify(data[:-69], {"alice": alice.signing_key.verify_key})


def test_reply_bundle_from_an_unknown_signer_is_refused(alice, bob):
    _, data = make_replies(alice, ["hi"])
    with pytest.raises(UnknownSignerError, match="alice"):
        verify(data, {"bob": bob.signing_key.verify_key})


def test_reply_bundle_forged_under_another_name_is_refused(alice, bob):
    mallory = Identity("alice", PrivateKey.generate(), bob.signing_key)  # claims alice, signs with another key
    _, data = make_replies(mallory, ["hi"])
    with pytest.raises(BadSignatureError, match="forged or modified"):
        verify(data, {"alice": alice.signing_key.verify_key})


def test_any_flipped_bit_in_a_reply_bundle_is_refused(alice):
    _, data = make_replies(alice, ["hi", "again"])
    keys = {"alice": alice.signing_key.verify_key}
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0x04
        with pytest.raises(KeysError):
            verify(bytes(damaged), keys)


def test_truncated_reply_bundle_is_refused(alice):
    _, data = make_replies(alice, ["hi", "again"])
    for cut in sorted({0, 4, 8, 9, 10, 12, 20, 100, 200, len(data) // 2, len(data) - 64, len(data) - 1}):
        with pytest.raises(KeysError):
            verify(data[:cut], {"alice": alice.signing_key.verify_key})


@pytest.mark.parametrize(
    "mutate, error, kind",
    [
        (lambda d: d[:8] + b"\x01" + d[9:], "version 1", UnsupportedVersionError),
        (lambda d: d[:8] + b"\x03" + d[9:], "version 3", UnsupportedVersionError),
        (lambda d: b"INTAKE-X" + d[8:], "not an intake reply bundle", FormatError),
        (lambda d: d + b"x", "after its signature", FormatError),
        (lambda d: d[:15] + struct.pack(">BI", 1, 1 << 31) + d[20:], "oversized", FormatError),
        (lambda d: d[:15] + struct.pack(">BI", 1, 176) + d[20:], "oversized or empty", FormatError),
        (lambda d: d[:15] + struct.pack(">BI", 9, 4) + d[20:], "unknown type 9", FormatError),
        (lambda d: d[:15] + struct.pack(">BI", 2, 63) + d[20:], "signature is malformed", FormatError),
    ],
)
def test_malformed_reply_bundles_are_refused(alice, mutate, error, kind):
    _, data = make_replies(alice, ["hi"])
    assert data[9] == 5 and data[10:15] == b"alice"  # the entries start at 15
    with pytest.raises(kind, match=error):
        verify(mutate(data), {"alice": alice.signing_key.verify_key})


def test_oversized_reply_bundle_is_refused_while_reading(alice, monkeypatch):
    _, data = make_replies(alice, ["hi"] * 20)
    monkeypatch.setattr(reply_bundle, "MAX_REPLY_BUNDLE", len(data) // 2)
    with pytest.raises(FormatError, match="oversized"):
        verify(data, {"alice": alice.signing_key.verify_key})


def test_the_64_mib_limit_is_the_whole_files_on_both_sides(alice, monkeypatch):
    """SECURITY.md section 7: 64 MiB for the whole file, from its magic to its signature. The reader
    refuses one byte more, and the writer refuses to write what the server would refuse."""
    source_key = PrivateKey.generate()
    replies = [sealed(f"src-{n}", "hi", source_key.public_key) for n in range(3)]
    out = io.BytesIO()
    reply_bundle.write_reply_bundle(out, alice, replies)
    data = out.getvalue()
    keys = {"alice": alice.signing_key.verify_key}
    monkeypatch.setattr(reply_bundle, "MAX_REPLY_BUNDLE", len(data))
    assert len(verify(data, keys).replies) == 3
    reply_bundle.write_reply_bundle(io.BytesIO(), alice, replies)
    monkeypatch.setattr(reply_bundle, "MAX_REPLY_BUNDLE", len(data) - 1)
    with pytest.raises(FormatError, match="oversized"):
        verify(data, keys)
    with pytest.raises(FormatError, match="oversized"):
        reply_bundle.write_reply_bundle(io.BytesIO(), alice, replies)


def test_a_reply_that_is_not_an_envelope_is_refused_on_both_sides(alice):
    routing = seal_routing("src", SERVER_PUBLIC.encryption_key)
    with pytest.raises(FormatError, match="not an envelope of version 1 or 2"):
        reply_bundle.write_reply_bundle(io.BytesIO(), alice, [SealedReply(routing, b"INTAKE-Q" + bytes(200))])
    with pytest.raises(FormatError, match="not an envelope of version 1 or 2"):
        reply_bundle.write_reply_bundle(io.BytesIO(), alice, [SealedReply(routing, b"INTAKE-E\x03" + bytes(200))])
    with pytest.raises(FormatError, match="source id"):
        seal_routing("../x", SERVER_PUBLIC.encryption_key)
    with pytest.raises(FormatError, match="routing"):
        reply_bundle.write_reply_bundle(io.BytesIO(), alice, [SealedReply(routing[:-1], seal_reply("hi", PrivateKey.generate().public_key))])


def test_adding_replies_re_verifies_and_re_signs(alice, tmp_path):
    path = tmp_path / "replies.bundle"
    source_key = PrivateKey.generate()
    assert reply_bundle.add_replies(path, alice, [sealed("s1", "one", source_key.public_key)]) == 1
    assert reply_bundle.add_replies(path, alice, [sealed("s2", "two", source_key.public_key)]) == 2
    verified = verify(path.read_bytes(), {"alice": alice.signing_key.verify_key})
    assert [sid for sid, _ in verified.replies] == ["s1", "s2"]
    assert [envelope_reader.decrypt_bytes(e, source_key)[1] for _, e in verified.replies] == [b"one", b"two"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replies.bundle"]


def test_adding_to_a_tampered_or_foreign_reply_bundle_is_refused_and_keeps_it(alice, bob, tmp_path):
    path = tmp_path / "replies.bundle"
    reply_bundle.add_replies(path, alice, [sealed("s1", "one", PrivateKey.generate().public_key)])
    damaged = bytearray(path.read_bytes())
    damaged[40] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(BadSignatureError):
        reply_bundle.add_replies(path, alice, [sealed("s2", "two", PrivateKey.generate().public_key)])
    assert path.read_bytes() == bytes(damaged)
    other = tmp_path / "bob.bundle"
    reply_bundle.add_replies(other, bob, [sealed("s1", "one", PrivateKey.generate().public_key)])
    with pytest.raises(UnknownSignerError, match="another journalist"):
        reply_bundle.add_replies(other, alice, [sealed("s2", "two", PrivateKey.generate().public_key)])


def test_describe_reply_bundle_reports_without_verifying(alice):
    _, data = make_replies(alice, ["a", "b", "c"])
    info = reply_bundle.describe_reply_bundle(io.BytesIO(data))
    assert (info.signer, info.replies, info.signed) == ("alice", 3, True)
    assert not reply_bundle.describe_reply_bundle(io.BytesIO(data[:-69])).signed
    with pytest.raises(TruncatedError):
        reply_bundle.describe_reply_bundle(io.BytesIO(data[:-1]))


def test_the_published_limits_are_the_readers_and_the_writers(alice):
    """SECURITY.md §7: an envelope of 10 bytes to 4 MiB, 10,000 replies, 64 MiB in all."""
    assert (reply_bundle.MAX_REPLY_ENVELOPE, reply_bundle.MAX_REPLIES, reply_bundle.MAX_REPLY_BUNDLE) == (4 << 20, 10_000, 64 << 20)
    routing = bytes(reply_bundle.ROUTING_SIZE)
    smallest = envelope.MAGIC + bytes([envelope.VERSION, 1])  # 10 bytes: what _check_reply lets through at least
    reply_bundle._check_reply(SealedReply(routing, smallest))
    reply_bundle._check_reply(SealedReply(routing, smallest.ljust(4 << 20, b"\0")))
    for wrong in (smallest[:9], smallest.ljust((4 << 20) + 1, b"\0")):
        with pytest.raises(FormatError, match="oversized or empty"):
            reply_bundle._check_reply(SealedReply(routing, wrong))

    def unsigned_bundle(count: int) -> bytes:
        entry = reply_bundle._ENTRY.pack(reply_bundle.ENTRY_REPLY, len(routing) + len(smallest)) + routing + smallest
        return reply_bundle.REPLY_MAGIC + bytes([reply_bundle.VERSION, 5]) + b"alice" + entry * count

    keys = {"alice": alice.signing_key.verify_key}
    # An entry is 176 + 10 bytes at least: a shorter one is refused from its header, before its payload is read.
    head = reply_bundle.REPLY_MAGIC + bytes([reply_bundle.VERSION, 5]) + b"alice"
    for length, refusal in ((176 + 9, FormatError), (176 + 10, TruncatedError)):
        with pytest.raises(refusal) as caught:
            verify(head + reply_bundle._ENTRY.pack(reply_bundle.ENTRY_REPLY, length), keys)
        assert type(caught.value) is refusal, length
    with pytest.raises(FormatError, match="too many replies"):
        verify(unsigned_bundle(10_001), keys)
    with pytest.raises(BadSignatureError):  # 10,000 are read to the end, where the signature is missing
        verify(unsigned_bundle(10_000), keys)


def test_the_writer_refuses_a_bundle_of_more_than_10000_replies(alice):
    routing = bytes(reply_bundle.ROUTING_SIZE)
    smallest = SealedReply(routing, envelope.MAGIC + bytes([envelope.VERSION, 1]))
    with pytest.raises(FormatError, match="at most 10000 replies"):
        reply_bundle.write_reply_bundle(io.BytesIO(), alice, [smallest] * 10_001)
