"""Write the seed corpora under fuzz/corpus/NAME/ (run once; the seeds are committed).

    .venv/bin/python fuzz/make_seeds.py

Seeds are valid inputs of each reader, made with the real writers and the harnesses'
fixed keys, so the fuzzer starts from inputs that get all the way through.
"""

from __future__ import annotations

import hashlib
import io
import struct
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


def bundle_seeds() -> None:
    import json

    import export_bundle
    import reply_bundle as reply_harness

    from keys import bundle, reply_bundle
    from keys.envelope import Metadata as Meta

    identity = export_bundle.JOURNALIST
    recipient = identity.private_key.public_key
    items = [bundle.ExportItem(f"item-{n}", kind, "2026-11-30", len(sealed), ["fuzzer"], lambda sealed=sealed: [sealed])
             for n, (kind, sealed) in enumerate([("message", encrypt_bytes(b"hello", [recipient], Meta("message"))),
                                                 ("file", encrypt_bytes(bytes(5000), [recipient], Meta("file", name="a.pdf")))])]
    source = bundle.ExportSource("src-1", "brave otter", bytes(32), items)
    data = b"".join(bundle.stream_export_bundle([recipient], [source], export_bundle.SERVER))
    write("export_bundle", b"\0" + data)
    write("export_bundle", b"\1" + data[: -(9 + bundle.SIGNATURE_ENTRY_LENGTH)])
    manifest = {"format": "intake-export-manifest", "version": 1, "items": 1, "sources": [
        {"source_id": "src-1", "designation": "brave otter", "reply_public_key": "A" * 43 + "=", "items": [
            {"item_id": "item-0", "kind": "message", "received_day": "2026-11-30", "recipients": ["fuzzer"],
             "entry": 0, "size": len(export_bundle.ITEM),
             "blake2b": hashlib.blake2b(export_bundle.ITEM, digest_size=32).hexdigest()}]}]}
    write("export_bundle", b"\2" + json.dumps(manifest, separators=(",", ":")).encode())

    out = io.BytesIO()
    sealed = reply_bundle.SealedReply(reply_bundle.seal_routing("src-1", reply_harness.SERVER_PUBLIC.encryption_key),
                                      reply_bundle.seal_reply("thank you", PrivateKey.generate().public_key))
    reply_bundle.write_reply_bundle(out, reply_harness.JOURNALIST, [sealed])
    write("reply_bundle", b"\0" + out.getvalue())


def text_seeds() -> None:
    import json

    from intake.codename import generate_codename
    from keys.server_key import ServerPublicKey

    for language in ("en", "ru"):
        write("codename", generate_codename(language=language).encode())
    write("codename", b"  Strongbox LINGUIST spud stubborn grievance wind scrambled ")
    record = {"source_id": "src-1", "designation": "brave otter", "reply_public_key": "A" * 43 + "=",
              "server_key": "ABCD", "items": []}
    write("laptop_records", b"\0" + json.dumps(record).encode())
    pins = {"format": "intake-pinned-sources", "version": 1,
            "sources": [{"source_id": "src-1", "designation": "brave otter", "reply_public_key": "A" * 43 + "="}]}
    write("laptop_records", b"\1" + json.dumps(pins).encode())
    write("laptop_records", b"\2" + ServerPublicKey.from_seed(fixed_key_bytes("records")).to_text().encode())
    write("journalist_login", b"name=alice&passphrase=seven+words+of+a+login+pass+phrase&code=123456")


def _box(kind: bytes, *children: bytes) -> bytes:
    payload = b"".join(children)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def video_track_seeds() -> None:
    """An MP4's skeleton with a picture track and a GPS track (as GoPro writes), and a large mdat header."""
    def trak(handler: bytes, sample_format: bytes) -> bytes:
        hdlr = _box(b"hdlr", bytes(8) + handler + bytes(12) + b"\0")
        stsd = _box(b"stsd", bytes(4) + struct.pack(">I", 1) + _box(sample_format, bytes(8)))
        return _box(b"trak", _box(b"mdia", hdlr, _box(b"minf", _box(b"stbl", stsd))))
    moov = _box(b"moov", _box(b"mvhd", bytes(100)), trak(b"vide", b"avc1"), trak(b"meta", b"gpmd"))
    write("video_tracks", _box(b"ftyp", b"isom" + bytes(4) + b"isommp41") + moov)
    write("video_tracks", _box(b"ftyp", b"qt  " + bytes(4)) + struct.pack(">I4sQ", 1, b"mdat", 16) + moov)


def hevc_header_seeds() -> None:
    """A moov with an HEVC sample entry whose hvcC holds parameter sets and an SEI message (as
    x265 writes its settings there), and one whose moov has a 64-bit size."""
    def array(nal_type: int, unit: bytes) -> bytes:
        return bytes([0x80 | nal_type]) + struct.pack(">HH", 1, len(unit)) + unit
    record = bytes(22) + b"\x04" + array(32, b"\x40\x01vps") + array(33, b"\x42\x01sps") + array(34, b"\x44\x01pps") + array(39, b"\x4e\x01x265 options")
    stsd = _box(b"stsd", bytes(4) + struct.pack(">I", 1) + _box(b"hvc1", bytes(78), _box(b"hvcC", record)))
    trak = _box(b"trak", _box(b"mdia", _box(b"minf", _box(b"stbl", stsd))))
    write("hevc_header", _box(b"moov", _box(b"mvhd", bytes(100)), trak))
    write("hevc_header", struct.pack(">I4sQ", 1, b"moov", 16 + len(trak)) + trak)


if __name__ == "__main__":
    envelope_seeds()
    key_file_seeds()
    multipart_seeds()
    bundle_seeds()
    text_seeds()
    video_track_seeds()
    hevc_header_seeds()
