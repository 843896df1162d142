"""keys.bundle: export bundles (server -> laptop) and signed reply bundles (laptop -> server)."""

from __future__ import annotations

import io
import json
import struct

import pytest
from nacl.public import PrivateKey

from keys import bundle, envelope
from keys.bundle import ExportBundle, stream_export_bundle, verify_reply_bundle
from keys.errors import (
    BadSignatureError,
    FormatError,
    KeysError,
    TamperedError,
    TruncatedError,
    UnknownSignerError,
    UnsupportedVersionError,
    WrongKeyError,
)
from keys.identity import Identity
from tests.fixtures_keys import Source, Submission, build_export, export_sources, open_export

HEAD = len(bundle.EXPORT_MAGIC) + 1
ENTRY = struct.Struct(">BQ")


def read_all(export: ExportBundle, identity: Identity) -> dict[str, list[tuple[str, bytes]]]:
    return {
        source.designation: [(item.kind, b"".join(export.open_item(item, identity).chunks())) for item in source.items]
        for source in export.read_manifest(identity)
    }


def entries(data: bytes) -> list[tuple[int, int, int]]:
    """(type, start of entry header, end of payload) for each entry."""
    found, offset = [], HEAD
    while offset < len(data):
        kind, length = ENTRY.unpack_from(data, offset)
        found.append((kind, offset, offset + ENTRY.size + length))
        offset += ENTRY.size + length
    return found


# ---------------------------------------------------------------- export bundles


def test_export_round_trips_sources_items_and_reply_keys(alice, bob, two_sources):
    export = open_export(build_export(two_sources, [alice, bob]))
    for reader in (alice, bob):
        assert read_all(export, reader) == {
            "brave otter": [("message", two_sources[0].submissions[0].body), ("file", two_sources[0].submissions[1].body)],
            "quiet heron": [("message", b"second source")],
        }
    sources = export.read_manifest(alice)
    assert [s.source_id for s in sources] == ["src-1", "src-2"]
    assert sources[0].reply_public_key == bytes(two_sources[0].key.public_key)
    assert [(i.received_day, i.recipients) for i in sources[1].items] == [("2026-11-27", ("alice", "bob"))]
    file_item = sources[0].items[1]
    assert export.open_item(file_item, alice).metadata.name == "minutes.pdf"


def test_everything_in_an_export_is_ciphertext(alice, two_sources):
    data = build_export(two_sources, [alice])
    for clear in (b"brave otter", b"src-1", b"item-0-0", b"2026-11-2", b"minutes.pdf", b"alice", bytes(two_sources[0].key.public_key)):
        assert clear not in data


def test_empty_export_is_valid(alice):
    export = open_export(build_export([], [alice]))
    assert export.read_manifest(alice) == [] and export.items == []


def test_export_streams_items_lazily_from_the_store(alice):
    sealed = envelope.encrypt_bytes(b"x", [alice.public.encryption_key], envelope.Metadata("message"))
    reads: list[str] = []

    def reader(name: str):
        def chunks():
            reads.append(name)
            yield sealed

        return chunks

    items = [bundle.ExportItem(f"i{n}", "message", "2026-11-28", len(sealed), ["alice"], reader(f"i{n}")) for n in range(3)]
    stream = stream_export_bundle([alice.public.encryption_key], [bundle.ExportSource("s", "brave otter", bytes(32), items)])
    next(stream), next(stream), next(stream)  # magic, first entry header, first item
    assert reads == ["i0"]
    rest = b"".join(stream)
    assert reads == ["i0", "i1", "i2"] and rest


def test_a_store_yielding_the_wrong_size_aborts_the_stream_and_leaves_an_unreadable_bundle(alice):
    sealed = envelope.encrypt_bytes(b"x", [alice.public.encryption_key], envelope.Metadata("message"))
    item = bundle.ExportItem("i0", "message", "2026-11-28", len(sealed) + 1, ["alice"], lambda: [sealed])
    written = []
    with pytest.raises(ValueError, match="i0"):
        for piece in stream_export_bundle([alice.public.encryption_key], [bundle.ExportSource("s", "brave otter", bytes(32), [item])]):
            written.append(piece)
    with pytest.raises(TruncatedError):
        open_export(b"".join(written))


def test_a_journalist_not_named_gets_wrong_key(alice, bob, two_sources):
    export = open_export(build_export(two_sources, [alice]))
    with pytest.raises(WrongKeyError):
        export.read_manifest(bob)


def test_an_item_sealed_to_others_cannot_be_opened(alice, bob):
    source = Source("s", "brave otter", [Submission("message", b"only for bob")])
    sources = export_sources([source], [bob])
    data = b"".join(stream_export_bundle([alice.public.encryption_key, bob.public.encryption_key], sources))
    export = open_export(data)
    (item,) = export.read_manifest(alice)[0].items
    assert item.recipients == ("bob",)
    with pytest.raises(WrongKeyError):
        export.open_item(item, alice)


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda d: b"INTAKE-Y" + d[8:], "not an intake export bundle"),
        (lambda d: b"PK\x03\x04" + d, "not an intake export bundle"),
        (lambda d: d[:8] + b"\x07" + d[9:], "version 7"),
        (lambda d: d[:HEAD] + b"\x09" + d[HEAD + 1 :], "unknown type 9"),
        (lambda d: d[:HEAD] + ENTRY.pack(1, 1 << 62) + d[HEAD + ENTRY.size :], "oversized"),
        (lambda d: d[:HEAD] + ENTRY.pack(1, 0) + d[HEAD + ENTRY.size :], "oversized"),
        (lambda d: d + ENTRY.pack(1, 4) + b"abcd", "after its manifest"),
        (lambda d: d[:HEAD] + ENTRY.pack(2, 20) + bytes(20) + d[HEAD:], "after its manifest"),
    ],
)
def test_malformed_export_framing_is_refused(alice, two_sources, mutate, error):
    data = build_export(two_sources, [alice])
    with pytest.raises(FormatError, match=error):
        open_export(mutate(data))


def test_truncated_export_is_refused_at_every_interesting_offset(alice, two_sources):
    data = build_export(two_sources, [alice])
    cuts = {0, 5, 8, HEAD, HEAD + 3, len(data) - 1}
    for _, start, end in entries(data):
        cuts |= {start, start + 1, start + ENTRY.size, start + ENTRY.size + 100, end - 1}
    for cut in sorted(c for c in cuts if c < len(data)):
        with pytest.raises(FormatError) as caught:
            export = open_export(data[:cut])
            read_all(export, alice)
        if cut >= HEAD:
            assert isinstance(caught.value, TruncatedError), cut


def test_reordered_items_are_detected(alice):
    # Two messages of the same padded size: the framing still fits, the hashes do not.
    sources = [Source("s", "brave otter", [Submission("message", b"first"), Submission("message", b"second")])]
    data = build_export(sources, [alice])
    (k1, s1, e1), (k2, s2, e2), manifest = entries(data)
    assert e1 - s1 == e2 - s2
    swapped = data[:s1] + data[s2:e2] + data[s1:e1] + data[e2:]
    export = open_export(swapped)
    item = export.read_manifest(alice)[0].items[0]
    with pytest.raises(TamperedError, match="does not match its manifest"):
        list(export.open_item(item, alice).chunks())


def test_an_item_from_another_bundle_is_detected(alice):
    sources = [Source("s", "brave otter", [Submission("message", b"genuine")])]
    data = build_export(sources, [alice])
    other = build_export([Source("s", "brave otter", [Submission("message", b"planted")])], [alice])
    (_, s1, e1), _ = entries(data)
    (_, o1, f1), _ = entries(other)
    export = open_export(data[:s1] + other[o1:f1] + data[e1:])
    item = export.read_manifest(alice)[0].items[0]
    with pytest.raises(TamperedError):
        list(export.open_item(item, alice).chunks())


def test_a_dropped_item_is_detected(alice, two_sources):
    data = build_export(two_sources, [alice])
    (_, s1, e1), *_ = entries(data)
    with pytest.raises(FormatError, match="does not match its items"):
        open_export(data[:s1] + data[e1:]).read_manifest(alice)


def test_a_flipped_bit_in_an_item_is_detected(alice, two_sources):
    data = bytearray(build_export(two_sources, [alice]))
    _, (_, start, end), *_ = entries(bytes(data))
    data[(start + end) // 2] ^= 0x10
    export = open_export(bytes(data))
    item = export.read_manifest(alice)[0].items[1]
    with pytest.raises(TamperedError):
        list(export.open_item(item, alice).chunks())


def _bundle_with_manifest(alice: Identity, manifest: dict | bytes, items: list[bytes] = ()) -> bytes:
    """A bundle whose (authentic) manifest is exactly ``manifest``."""
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    sealed = envelope.encrypt_bytes(body, [alice.public.encryption_key], envelope.Metadata("manifest"))
    out = bundle.EXPORT_MAGIC + b"\x01"
    for item in items:
        out += ENTRY.pack(1, len(item)) + item
    return out + ENTRY.pack(2, len(sealed)) + sealed


def _good_manifest(item: bytes) -> dict:
    import hashlib

    return {
        "format": "intake-export-manifest",
        "version": 1,
        "items": 1,
        "sources": [
            {
                "source_id": "s",
                "designation": "brave otter",
                "reply_public_key": "A" * 43 + "=",
                "items": [
                    {
                        "item_id": "i",
                        "kind": "message",
                        "received_day": "2026-11-28",
                        "recipients": ["alice"],
                        "entry": 0,
                        "size": len(item),
                        "blake2b": hashlib.blake2b(item, digest_size=32).hexdigest(),
                    }
                ],
            }
        ],
    }


def _edit(doc: dict, path: str, value) -> dict:
    doc = json.loads(json.dumps(doc))
    target = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    target[keys[-1]] = value
    return doc


def test_manifest_helper_builds_a_readable_bundle(alice):
    item = envelope.encrypt_bytes(b"hi", [alice.public.encryption_key], envelope.Metadata("message"))
    export = open_export(_bundle_with_manifest(alice, _good_manifest(item), [item]))
    assert read_all(export, alice) == {"brave otter": [("message", b"hi")]}


@pytest.mark.parametrize(
    "path, value, error",
    [
        ("version", 2, "not supported"),
        ("format", "zip", "malformed"),
        ("items", 2, "does not match"),
        ("sources.0.source_id", "../x", "source id"),
        ("sources.0.designation", "", "designation"),
        ("sources.0.designation", "a\nb", "designation"),
        ("sources.0.designation", "brave $(touch PWNED) otter", "designation"),
        ("sources.0.designation", "brave `id` otter", "designation"),
        ("sources.0.designation", "brave;otter", "designation"),
        ("sources.0.designation", "../otter", "designation"),
        ("sources.0.designation", "Brave Otter", "designation"),
        ("sources.0.designation", "brave  otter", "designation"),
        ("sources.0.designation", " brave otter", "designation"),
        ("sources.0.designation", "brave otter\n", "designation"),
        ("sources.0.designation", "br\u00e4ve otter", "designation"),
        ("sources.0.designation", "one two three four five", "designation"),
        ("sources.0.designation", "a" * 65, "designation"),
        ("sources.0.designation", 5, "designation"),
        ("sources.0.reply_public_key", "AAAA", "reply key"),
        ("sources.0.reply_public_key", 5, "base64"),
        ("sources.0.items.0.kind", "reply", "unknown kind"),
        ("sources.0.items.0.received_day", "2026-13-40", "date"),
        ("sources.0.items.0.received_day", "yesterday", "date"),
        ("sources.0.items.0.recipients", [], "recipient"),
        ("sources.0.items.0.recipients", ["../root"], "name"),
        ("sources.0.items.0.entry", 1, "does not match"),
        ("sources.0.items.0.entry", True, "does not match"),
        ("sources.0.items.0.size", 5, "does not match"),
        ("sources.0.items.0.blake2b", "00", "malformed"),
        ("sources.0.items", {}, "malformed"),
        ("sources", [None], "malformed"),
    ],
)
def test_hostile_manifests_are_refused(alice, path, value, error):
    item = envelope.encrypt_bytes(b"hi", [alice.public.encryption_key], envelope.Metadata("message"))
    data = _bundle_with_manifest(alice, _edit(_good_manifest(item), path, value), [item])
    with pytest.raises(FormatError, match=error):
        open_export(data).read_manifest(alice)


def test_every_designation_the_server_makes_is_accepted_and_no_other_shape():
    # keys/ must not import intake/; the agreement between the two is checked here.
    from intake.store.designations import ADJECTIVES, NOUNS, random_designation

    longest = f"{max(ADJECTIVES, key=len)} {max(NOUNS, key=len)}"
    for designation in [longest, "a b", *(random_designation() for _ in range(200))]:
        assert bundle.check_designation(designation) == designation
    assert all(bundle.DESIGNATION.fullmatch(word) for word in (*ADJECTIVES, *NOUNS))


def test_the_server_side_refuses_to_export_a_designation_readers_refuse(alice):
    source = bundle.ExportSource("s", "brave $(touch PWNED) otter", bytes(32), [])
    with pytest.raises(FormatError, match="designation"):
        b"".join(stream_export_bundle([alice.public.encryption_key], [source]))


def test_manifest_listing_one_item_twice_is_refused(alice):
    item = envelope.encrypt_bytes(b"hi", [alice.public.encryption_key], envelope.Metadata("message"))
    doc = _good_manifest(item)
    doc["sources"].append({**doc["sources"][0], "source_id": "t"})
    doc["items"] = 1
    with pytest.raises(FormatError, match="does not match"):
        open_export(_bundle_with_manifest(alice, doc, [item])).read_manifest(alice)


@pytest.mark.parametrize("body", [b"not json", b"[]", b"\xff\xfe", b"[" * 100_000])
def test_manifest_that_is_not_a_json_object_is_refused(alice, body):
    with pytest.raises(FormatError):
        open_export(_bundle_with_manifest(alice, body)).read_manifest(alice)


def test_an_envelope_of_another_kind_is_not_accepted_as_manifest(alice):
    sealed = envelope.encrypt_bytes(b"{}", [alice.public.encryption_key], envelope.Metadata("message"))
    data = bundle.EXPORT_MAGIC + b"\x01" + ENTRY.pack(2, len(sealed)) + sealed
    with pytest.raises(FormatError, match="not a manifest"):
        open_export(data).read_manifest(alice)


def test_item_whose_kind_differs_from_the_manifest_is_refused(alice):
    item = envelope.encrypt_bytes(b"hi", [alice.public.encryption_key], envelope.Metadata("file", name="x"))
    export = open_export(_bundle_with_manifest(alice, _good_manifest(item), [item]))
    with pytest.raises(FormatError, match="does not match"):
        export.open_item(export.read_manifest(alice)[0].items[0], alice)


# ---------------------------------------------------------------- reply bundles


def make_replies(alice: Identity, texts: list[str]) -> tuple[PrivateKey, bytes]:
    source_key = PrivateKey.generate()
    out = io.BytesIO()
    bundle.write_reply_bundle(out, alice, [(f"src-{n}", bundle.seal_reply(text, source_key.public_key)) for n, text in enumerate(texts)])
    return source_key, out.getvalue()


def test_reply_bundle_round_trips_and_only_the_source_can_read(alice, bob):
    source_key, data = make_replies(alice, ["Thank you.", "Can you send the rest?"])
    verified = verify_reply_bundle(io.BytesIO(data), {"alice": alice.signing_key.verify_key, "bob": bytes(bob.signing_key.verify_key)})
    assert verified.journalist == "alice"
    assert [sid for sid, _ in verified.replies] == ["src-0", "src-1"]
    meta, text = envelope.decrypt_bytes(verified.replies[1][1], source_key)
    assert meta.kind == "reply" and text == b"Can you send the rest?"
    with pytest.raises(WrongKeyError):
        envelope.decrypt_bytes(verified.replies[0][1], alice.private_key)


def test_unsigned_reply_bundle_is_refused(alice):
    _, data = make_replies(alice, ["hi"])
    with pytest.raises(BadSignatureError, match="not signed"):
        verify_reply_bundle(io.BytesIO(data[:-69]), {"alice": alice.signing_key.verify_key})


def test_reply_bundle_from_an_unknown_signer_is_refused(alice, bob):
    _, data = make_replies(alice, ["hi"])
    with pytest.raises(UnknownSignerError, match="alice"):
        verify_reply_bundle(io.BytesIO(data), {"bob": bob.signing_key.verify_key})


def test_reply_bundle_forged_under_another_name_is_refused(alice, bob):
    mallory = Identity("alice", PrivateKey.generate(), bob.signing_key)  # claims alice, signs with another key
    _, data = make_replies(mallory, ["hi"])
    with pytest.raises(BadSignatureError, match="forged or modified"):
        verify_reply_bundle(io.BytesIO(data), {"alice": alice.signing_key.verify_key})


def test_any_flipped_bit_in_a_reply_bundle_is_refused(alice):
    _, data = make_replies(alice, ["hi", "again"])
    keys = {"alice": alice.signing_key.verify_key}
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0x04
        with pytest.raises(KeysError):
            verify_reply_bundle(io.BytesIO(bytes(damaged)), keys)


def test_truncated_reply_bundle_is_refused(alice):
    _, data = make_replies(alice, ["hi", "again"])
    for cut in sorted({0, 4, 8, 9, 10, 12, 20, 100, len(data) // 2, len(data) - 64, len(data) - 1}):
        with pytest.raises(KeysError):
            verify_reply_bundle(io.BytesIO(data[:cut]), {"alice": alice.signing_key.verify_key})


@pytest.mark.parametrize(
    "mutate, error, kind",
    [
        (lambda d: d[:8] + b"\x02" + d[9:], "version 2", UnsupportedVersionError),
        (lambda d: b"INTAKE-X" + d[8:], "not an intake reply bundle", FormatError),
        (lambda d: d + b"x", "after its signature", FormatError),
        (lambda d: d[:15] + struct.pack(">BI", 1, 1 << 31) + d[20:], "oversized", FormatError),
        (lambda d: d[:15] + struct.pack(">BI", 9, 4) + d[20:], "unknown type 9", FormatError),
    ],
)
def test_malformed_reply_bundles_are_refused(alice, mutate, error, kind):
    _, data = make_replies(alice, ["hi"])
    assert data[9] == 5 and data[10:15] == b"alice"  # the entries start at 15
    with pytest.raises(kind, match=error):
        verify_reply_bundle(io.BytesIO(mutate(data)), {"alice": alice.signing_key.verify_key})


def test_oversized_reply_bundle_is_refused_while_reading(alice, monkeypatch):
    _, data = make_replies(alice, ["hi"] * 20)
    monkeypatch.setattr(bundle, "MAX_REPLY_BUNDLE", len(data) // 2)
    with pytest.raises(FormatError, match="oversized"):
        verify_reply_bundle(io.BytesIO(data), {"alice": alice.signing_key.verify_key})


def test_a_reply_that_is_not_an_envelope_is_refused_on_both_sides(alice):
    with pytest.raises(FormatError, match="not a version 1 envelope"):
        bundle.write_reply_bundle(io.BytesIO(), alice, [("src", b"INTAKE-Q" + bytes(200))])
    with pytest.raises(FormatError, match="source id"):
        bundle.write_reply_bundle(io.BytesIO(), alice, [("../x", bundle.seal_reply("hi", PrivateKey.generate().public_key))])


def test_adding_replies_re_verifies_and_re_signs(alice, tmp_path):
    path = tmp_path / "replies.bundle"
    source_key = PrivateKey.generate()
    assert bundle.add_replies(path, alice, [("s1", bundle.seal_reply("one", source_key.public_key))]) == 1
    assert bundle.add_replies(path, alice, [("s2", bundle.seal_reply("two", source_key.public_key))]) == 2
    with open(path, "rb") as f:
        verified = verify_reply_bundle(f, {"alice": alice.signing_key.verify_key})
    assert [envelope.decrypt_bytes(e, source_key)[1] for _, e in verified.replies] == [b"one", b"two"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replies.bundle"]


def test_adding_to_a_tampered_or_foreign_reply_bundle_is_refused_and_keeps_it(alice, bob, tmp_path):
    path = tmp_path / "replies.bundle"
    bundle.add_replies(path, alice, [("s1", bundle.seal_reply("one", PrivateKey.generate().public_key))])
    damaged = bytearray(path.read_bytes())
    damaged[40] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(BadSignatureError):
        bundle.add_replies(path, alice, [("s2", bundle.seal_reply("two", PrivateKey.generate().public_key))])
    assert path.read_bytes() == bytes(damaged)
    other = tmp_path / "bob.bundle"
    bundle.add_replies(other, bob, [("s1", bundle.seal_reply("one", PrivateKey.generate().public_key))])
    with pytest.raises(UnknownSignerError, match="another journalist"):
        bundle.add_replies(other, alice, [("s2", bundle.seal_reply("two", PrivateKey.generate().public_key))])


def test_describe_reply_bundle_reports_without_verifying(alice):
    _, data = make_replies(alice, ["a", "b", "c"])
    info = bundle.describe_reply_bundle(io.BytesIO(data))
    assert (info.signer, info.replies, info.signed) == ("alice", 3, True)
    assert not bundle.describe_reply_bundle(io.BytesIO(data[:-69])).signed
