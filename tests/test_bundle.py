"""keys.bundle: signed export bundles (server -> laptop). Reply bundles: tests/test_reply_bundle.py."""

from __future__ import annotations

import io
import json
import struct

import pytest
from nacl.signing import SigningKey

from keys import bundle, envelope
from keys.bundle import stream_export_bundle
from keys.bundle_reader import ExportBundle
from keys.errors import (
    BadSignatureError,
    FormatError,
    RecordError,
    TamperedError,
    TruncatedError,
    UnknownServerError,
    UnsupportedVersionError,
    WrongKeyError,
)
from keys.identity import Identity
from keys.server_key import ServerPublicKey
from tests.fixtures_keys import (
    SERVER_KEY,
    SERVER_PUBLIC,
    Source,
    Submission,
    build_export,
    export_sources,
    open_export,
    sign_export,
    unsigned_part,
)

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
    stream = stream_export_bundle([alice.public.encryption_key], [bundle.ExportSource("s", "brave otter", bytes(32), items)], SERVER_KEY)
    next(stream), next(stream), next(stream)  # magic, first entry header, first item
    assert reads == ["i0"]
    rest = b"".join(stream)
    assert reads == ["i0", "i1", "i2"] and rest


def test_a_store_yielding_the_wrong_size_aborts_the_stream_and_leaves_an_unreadable_bundle(alice):
    sealed = envelope.encrypt_bytes(b"x", [alice.public.encryption_key], envelope.Metadata("message"))
    item = bundle.ExportItem("i0", "message", "2026-11-28", len(sealed) + 1, ["alice"], lambda: [sealed])
    written = []
    with pytest.raises(ValueError, match="i0"):
        for piece in stream_export_bundle([alice.public.encryption_key], [bundle.ExportSource("s", "brave otter", bytes(32), [item])], SERVER_KEY):
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
    data = b"".join(stream_export_bundle([alice.public.encryption_key, bob.public.encryption_key], sources, SERVER_KEY))
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
        (lambda d: d + ENTRY.pack(1, 4) + b"abcd", "after its signature"),
        (lambda d: d + b"\x00", "after its signature"),  # one byte, not an entry header cut short
        (lambda d: d[:HEAD] + ENTRY.pack(2, 20) + bytes(20) + d[HEAD:], "after its manifest"),
        (lambda d: d[:HEAD] + ENTRY.pack(3, 128) + bytes(128) + d[HEAD:], "signed before its manifest"),
        (lambda d: unsigned_part(d) + ENTRY.pack(3, 64) + bytes(64), "signature is malformed"),
        (lambda d: unsigned_part(d) + d[-(9 + 128) :] + d[-(9 + 128) :], "after its signature"),
    ],
)
def test_malformed_export_framing_is_refused(alice, two_sources, mutate, error):
    data = build_export(two_sources, [alice])
    with pytest.raises(FormatError, match=error) as caught:
        open_export(mutate(data))
    assert type(caught.value) is (UnsupportedVersionError if "version" in error else FormatError)


def test_a_second_manifest_is_refused(alice, two_sources):
    data = build_export(two_sources, [alice])
    kind, start, end = entries(unsigned_part(data))[-1]
    assert kind == 2
    with pytest.raises(FormatError, match="two manifests"):
        open_export(sign_export(unsigned_part(data) + data[start:end]))


def test_an_unsigned_bundle_is_refused(alice, two_sources):
    data = build_export(two_sources, [alice])
    with pytest.raises(TruncatedError, match="not signed"):
        open_export(unsigned_part(data))
    version_1 = data[:8] + b"\x01" + unsigned_part(data)[9:]  # what servers wrote before signing
    with pytest.raises(UnsupportedVersionError, match="not signed"):
        open_export(version_1)


def test_a_bundle_signed_by_an_untrusted_key_is_refused(alice, two_sources):
    other = SigningKey.generate()
    data = build_export(two_sources, [alice], server_key=other)
    with pytest.raises(UnknownServerError, match=ServerPublicKey.from_seed(bytes(other)).fingerprint):
        open_export(data)
    # Naming the trusted verify key with another box key is refused too: the trailer must name a trusted key exactly.
    forged = bytearray(data)
    trailer = len(data) - bundle.SIGNATURE_ENTRY_LENGTH
    forged[trailer : trailer + 32] = bytes(SERVER_PUBLIC.verify_key)
    with pytest.raises(UnknownServerError):
        open_export(bytes(forged))


def test_the_signature_covers_every_byte(alice, two_sources):
    """Flip one bit anywhere before the signature entry, or in the signature: refused before any key is used."""
    data = build_export(two_sources, [alice])
    for position in range(0, len(data), max(1, len(data) // 500)):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        with pytest.raises((FormatError, TamperedError, UnknownServerError)):
            open_export(bytes(damaged))


def test_verify_keeps_the_manifest_it_checked(alice, two_sources):
    """The manifest read is the one the signature covered, even if the file changes after the check."""
    data = build_export(two_sources, [alice])
    src = io.BytesIO(data)
    export = ExportBundle(src)
    export.verify({bytes(SERVER_PUBLIC.verify_key): SERVER_PUBLIC})
    _, start, end = entries(unsigned_part(data))[-1]
    src.seek(start + ENTRY.size)
    src.write(bytes(end - start - ENTRY.size))  # the manifest, overwritten on disk after the check
    assert [s.source_id for s in export.read_manifest(alice)] == ["src-1", "src-2"]


def test_the_manifest_cannot_be_read_before_the_signature_is_checked(alice, two_sources):
    export = ExportBundle(io.BytesIO(build_export(two_sources, [alice])))
    with pytest.raises(BadSignatureError, match="not been checked"):
        export.read_manifest(alice)


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
    # Two messages of the same padded size: the framing still fits, the signature does not; re-signed
    # (the server's key stolen), the manifest's hashes still do not.
    sources = [Source("s", "brave otter", [Submission("message", b"first"), Submission("message", b"second")])]
    signed = build_export(sources, [alice])
    data = unsigned_part(signed)
    (k1, s1, e1), (k2, s2, e2), manifest = entries(data)
    assert e1 - s1 == e2 - s2
    swapped = data[:s1] + data[s2:e2] + data[s1:e1] + data[e2:]
    with pytest.raises(BadSignatureError):
        open_export(swapped + signed[len(data) :])
    with pytest.raises(TamperedError, match="does not match its manifest"):
        open_export(sign_export(swapped)).read_manifest(alice)


def test_an_item_from_another_bundle_is_detected(alice):
    sources = [Source("s", "brave otter", [Submission("message", b"genuine")])]
    data = unsigned_part(build_export(sources, [alice]))
    other = unsigned_part(build_export([Source("s", "brave otter", [Submission("message", b"planted")])], [alice]))
    (_, s1, e1), _ = entries(data)
    (_, o1, f1), _ = entries(other)
    with pytest.raises(TamperedError, match="does not match its manifest"):
        open_export(sign_export(data[:s1] + other[o1:f1] + data[e1:])).read_manifest(alice)


def test_a_dropped_item_is_detected(alice, two_sources):
    data = unsigned_part(build_export(two_sources, [alice]))
    (_, s1, e1), *_ = entries(data)
    with pytest.raises(FormatError, match="does not match its items"):
        open_export(sign_export(data[:s1] + data[e1:])).read_manifest(alice)


def test_a_flipped_bit_in_an_item_is_detected(alice, two_sources):
    data = bytearray(unsigned_part(build_export(two_sources, [alice])))
    _, (_, start, end), *_ = entries(bytes(data))
    data[(start + end) // 2] ^= 0x10
    with pytest.raises(TamperedError, match="does not match its manifest"):
        open_export(sign_export(bytes(data))).read_manifest(alice)


def test_an_item_changed_on_disk_after_the_check_is_still_caught_while_decrypting(alice, two_sources):
    data = build_export(two_sources, [alice])
    src = io.BytesIO(data)
    export = ExportBundle(src)
    export.verify({bytes(SERVER_PUBLIC.verify_key): SERVER_PUBLIC})
    item = export.read_manifest(alice)[0].items[1]
    _, (_, start, end), *_ = entries(unsigned_part(data))
    src.seek((start + end) // 2)
    src.write(b"\x00" * 16)  # the file is changed between the signature check and the decryption
    with pytest.raises(TamperedError):
        list(export.open_item(item, alice).chunks())


def _bundle_with_manifest(alice: Identity, manifest: dict | bytes, items: list[bytes] = ()) -> bytes:
    """A bundle whose manifest is exactly ``manifest``, signed with the (trusted) test server key:
    what a server whose key was stolen could send."""
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    sealed = envelope.encrypt_bytes(body, [alice.public.encryption_key], envelope.Metadata("manifest"))
    out = bundle.EXPORT_MAGIC + b"\x02"
    for item in items:
        out += ENTRY.pack(1, len(item)) + item
    return sign_export(out + ENTRY.pack(2, len(sealed)) + sealed)


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
        ("sources.0.items.0.size", True, "does not match"),
        ("items", True, "does not match"),
        ("version", True, "not supported"),
        ("version", 1.0, "not supported"),
        ("sources.0.items.0.blake2b", "AB" * 32, "malformed"),
        ("sources.0.items.0.item_id", "x\u0661", "item id"),
        ("sources.0.items.0.received_day", "２０２６-11-28", "date"),
        ("sources.0.items.0.received_day", "2026-11-\u0662\u0668", "date"),
        ("sources.0.items.0.recipients", ["alice", "alice"], "twice"),
        ("sources.0.items.0.extra", 1, "malformed"),
        ("sources.0.extra", 1, "malformed"),
        ("extra", 1, "malformed"),
        ("sources.0.reply_public_key", "A" * 42 + "B=", "canonical"),
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
        b"".join(stream_export_bundle([alice.public.encryption_key], [source], SERVER_KEY))


def test_manifest_listing_one_item_twice_is_refused(alice):
    item = envelope.encrypt_bytes(b"hi", [alice.public.encryption_key], envelope.Metadata("message"))
    doc = _good_manifest(item)
    doc["sources"].append({**doc["sources"][0], "source_id": "t"})
    doc["items"] = 1
    with pytest.raises(FormatError, match="does not match"):
        open_export(_bundle_with_manifest(alice, doc, [item])).read_manifest(alice)
    # The same entry again under another item id: one ciphertext cannot be two sources' item.
    doc["sources"][1]["items"] = [{**doc["sources"][0]["items"][0], "item_id": "j"}]
    with pytest.raises(FormatError, match="does not match"):
        open_export(_bundle_with_manifest(alice, doc, [item])).read_manifest(alice)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"format":"intake-export-manifest","format":"intake-export-manifest","version":1,"items":0,"sources":[]}',
        b'{"format":"intake-export-manifest","version":1,"items":0,"sources":[],"x":NaN}',
        b'{"format":"intake-export-manifest","version":1,"items":0,"sources":[],"\\ud800":1}',
    ],
)
def test_manifest_that_is_not_a_strict_json_object_is_refused(alice, body):
    with pytest.raises(FormatError):
        open_export(_bundle_with_manifest(alice, body)).read_manifest(alice)


@pytest.fixture
def readers_made(monkeypatch) -> list:
    """Every EnvelopeReader the bundle reader makes, to see what each left in its buffers."""
    import keys.bundle_reader

    made = []

    class Recorded(keys.bundle_reader.EnvelopeReader):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(keys.bundle_reader, "EnvelopeReader", Recorded)
    return made


def test_an_envelope_of_another_kind_is_not_accepted_as_manifest(alice, readers_made):
    sealed = envelope.encrypt_bytes(b"{}", [alice.public.encryption_key], envelope.Metadata("message"))
    data = sign_export(bundle.EXPORT_MAGIC + b"\x02" + ENTRY.pack(2, len(sealed)) + sealed)
    with pytest.raises(RecordError, match="not a manifest") as caught:  # it authenticated: a forgery, not damage
        open_export(data).read_manifest(alice)
    assert type(caught.value) is RecordError
    assert not any(readers_made[-1]._plaintext)  # what it decrypted is wiped on the refusal


def test_item_whose_kind_differs_from_the_manifest_is_refused(alice, readers_made):
    item = envelope.encrypt_bytes(b"hi", [alice.public.encryption_key], envelope.Metadata("file", name="x"))
    export = open_export(_bundle_with_manifest(alice, _good_manifest(item), [item]))
    manifest = export.read_manifest(alice)
    with pytest.raises(RecordError, match="REFUSED: item .* is malformed .*does not match.*it is forged or the server is faulty"):
        export.open_item(manifest[0].items[0], alice)
    assert not any(readers_made[-1]._plaintext)  # what it decrypted is wiped on the refusal
