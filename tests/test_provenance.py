"""Issue 9, section 1: an export bundle is the server's, and a source stays who it was.

The attacker here holds only public keys (the journalists', the server's) and a genuine
bundle in transit, and rebuilds its manifest: reply keys swapped, items re-attributed to
another source, items spliced in from another bundle, items dropped. `intake-keys decrypt`
must refuse every such bundle with one line and write nothing. Further tests play a server
whose signing key was stolen: the laptop's pins still refuse a source that changes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from keys import bundle, cli, envelope
from keys.identity import SECRET_MAGIC, Identity
from keys.pins import PINS_FILE
from keys.server_key import ServerPublicKey
from tests.fixtures_keys import SERVER_PUBLIC, KeyFiles, Source, Submission, build_export, sign_export, unsigned_part

ENTRY = struct.Struct(">BQ")
HEAD = len(bundle.EXPORT_MAGIC) + 1


def decrypt(capsys, files: KeyFiles, data: bytes, tmp_path: Path, name: str = "bundle") -> tuple[int, str, str, Path]:
    path = tmp_path / f"{name}.bundle"
    path.write_bytes(data)
    out = tmp_path / f"out-{name}"
    code = cli.main(["decrypt", str(path), "--key", str(files.secret), "--passphrase-file", str(files.passphrase_file), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def assert_refused(code: int, err: str, out: Path, match: str) -> None:
    lines = err.strip().splitlines()
    assert code == cli.EXIT_ERROR and len(lines) == 1 and match.lower() in lines[0].lower(), err
    assert not out.exists(), sorted(out.rglob("*"))


def items_of(data: bytes) -> list[bytes]:
    """The item entries' payloads (public: no key needed to cut a bundle into its entries)."""
    found, offset = [], HEAD
    while offset < len(data):
        kind, length = ENTRY.unpack_from(data, offset)
        if kind == bundle.ENTRY_ITEM:
            found.append(data[offset + ENTRY.size : offset + ENTRY.size + length])
        offset += ENTRY.size + length
    return found


def rebuild(items: list[bytes], manifest_sources: list[dict], recipients: list) -> bytes:
    """An export bundle made from scratch with public keys only: the items, a new manifest sealed to
    the recipients' public keys. Without the server's key it can only be left unsigned."""
    out = bytearray(bundle.EXPORT_MAGIC + bytes([bundle.VERSION]))
    for item in items:
        out += ENTRY.pack(bundle.ENTRY_ITEM, len(item)) + item
    manifest = json.dumps({"format": "intake-export-manifest", "version": 1, "items": len(items), "sources": manifest_sources}).encode()
    sealed = envelope.encrypt_bytes(manifest, recipients, envelope.Metadata("manifest", content_type="application/json"))
    return bytes(out + ENTRY.pack(bundle.ENTRY_MANIFEST, len(sealed)) + sealed)


def manifest_item(item_id: str, kind: str, index: int, payload: bytes) -> dict:
    return {"item_id": item_id, "kind": kind, "received_day": "2026-11-28", "recipients": ["alice"], "entry": index,
            "size": len(payload), "blake2b": hashlib.blake2b(payload, digest_size=32).hexdigest()}


def b64(key) -> str:
    return base64.b64encode(bytes(key)).decode()


ATTACKER = PrivateKey.generate()  # where the forger wants replies to go


@pytest.fixture
def genuine(alice) -> tuple[bytes, list[Source]]:
    sources = [
        Source("src-1", "brave otter", [Submission("message", b"the first source's tip")]),
        Source("src-2", "quiet heron", [Submission("message", b"the second source's tip"), Submission("file", b"%PDF", name="a.pdf")]),
    ]
    return build_export(sources, [alice]), sources


def forgeries(alice: Identity, genuine: bytes, sources: list[Source]) -> dict[str, list[dict]]:
    """Manifests a forger can write around the genuine items (entries 0, 1, 2)."""
    items = items_of(genuine)
    one, two, three = (manifest_item(f"item-{n}", kind, n, items[n]) for n, kind in enumerate(("message", "message", "file")))
    return {
        "reply keys swapped": [
            {"source_id": "src-1", "designation": "brave otter", "reply_public_key": b64(ATTACKER.public_key), "items": [one]},
            {"source_id": "src-2", "designation": "quiet heron", "reply_public_key": b64(ATTACKER.public_key), "items": [two, three]},
        ],
        "items re-attributed": [
            {"source_id": "src-1", "designation": "brave otter", "reply_public_key": b64(sources[0].key.public_key), "items": [one, two, three]},
            {"source_id": "src-2", "designation": "quiet heron", "reply_public_key": b64(sources[1].key.public_key), "items": []},
        ],
        "designations swapped": [
            {"source_id": "src-1", "designation": "quiet heron", "reply_public_key": b64(sources[0].key.public_key), "items": [one]},
            {"source_id": "src-2", "designation": "brave otter", "reply_public_key": b64(sources[1].key.public_key), "items": [two, three]},
        ],
    }


def signed_variants(unsigned: bytes, genuine: bytes) -> dict[str, bytes]:
    """What a forger without the server's secret key can put at the end of a rebuilt bundle."""
    trailer = genuine[len(unsigned_part(genuine)) :]
    own = SigningKey.generate()
    return {
        "unsigned": unsigned,
        "the genuine signature kept": unsigned + trailer,
        "signed with the forger's key": sign_export(unsigned, own),
        "signed with the forger's key naming the server's keys": _claiming_the_server(sign_export(unsigned, own)),
        "as an unsigned version 1 bundle": bundle.EXPORT_MAGIC + b"\x01" + unsigned[HEAD:],
    }


def _claiming_the_server(data: bytes) -> bytes:
    start = len(data) - bundle.SIGNATURE_ENTRY_LENGTH
    return data[:start] + bytes(SERVER_PUBLIC.verify_key) + bytes(SERVER_PUBLIC.encryption_key) + data[start + 64 :]


@pytest.mark.parametrize("forgery", ["reply keys swapped", "items re-attributed", "designations swapped"])
def test_a_manifest_rebuilt_with_public_keys_only_is_refused_and_nothing_is_written(capsys, tmp_path, alice, alice_files, genuine, forgery):
    data, sources = genuine
    unsigned = rebuild(items_of(data), forgeries(alice, data, sources)[forgery], [alice.public.encryption_key])
    for n, (how, forged) in enumerate(signed_variants(unsigned, data).items()):
        code, _, err, out = decrypt(capsys, alice_files, forged, tmp_path, f"forged-{n}")
        assert_refused(code, err, out, {"unsigned": "not signed", "as an unsigned version 1 bundle": "not signed"}.get(how, "signature" if "genuine" in how or "naming" in how else "does not trust"))
    assert not (alice_files.secret.parent / PINS_FILE).exists()


def test_items_spliced_in_from_another_bundle_are_refused(capsys, tmp_path, alice, alice_files, genuine):
    data, sources = genuine
    other = build_export([Source("src-9", "loud crane", [Submission("message", b"planted")])], [alice])
    items = items_of(data) + items_of(other)
    manifest = forgeries(alice, data, sources)["items re-attributed"]
    manifest[0]["items"].append(manifest_item("item-3", "message", 3, items[3]))
    for n, forged in enumerate(signed_variants(rebuild(items, manifest, [alice.public.encryption_key]), data).values()):
        code, _, err, out = decrypt(capsys, alice_files, forged, tmp_path, f"spliced-{n}")
        assert code == cli.EXIT_ERROR and not out.exists(), err


def test_dropped_items_are_refused(capsys, tmp_path, alice, alice_files, genuine):
    data, sources = genuine
    items = items_of(data)[:1]
    manifest = forgeries(alice, data, sources)["items re-attributed"]
    manifest[0]["items"] = manifest[0]["items"][:1]
    for n, forged in enumerate(signed_variants(rebuild(items, manifest, [alice.public.encryption_key]), data).values()):
        code, _, err, out = decrypt(capsys, alice_files, forged, tmp_path, f"dropped-{n}")
        assert code == cli.EXIT_ERROR and not out.exists(), err


def test_the_genuine_bundle_still_decrypts(capsys, tmp_path, alice_files, genuine):
    code, stdout, err, out = decrypt(capsys, alice_files, genuine[0], tmp_path)
    assert code == 0 and "3 item(s) decrypted from 2 source(s)" in stdout, err


# ---------------------------------------------------------------- pins: a stolen server key


def _export(alice: Identity, source_id: str, designation: str, key: PrivateKey, body: bytes) -> bytes:
    return build_export([Source(source_id, designation, [Submission("message", body)], key)], [alice])


@pytest.mark.parametrize("change", ["reply key", "designation"])
def test_a_later_bundle_that_changes_a_pinned_source_is_refused_loudly(capsys, tmp_path, alice, alice_files, change):
    key = PrivateKey.generate()
    code, _, err, first = decrypt(capsys, alice_files, _export(alice, "src-1", "brave otter", key, b"first"), tmp_path, "first")
    assert code == 0, err
    pins = (alice_files.secret.parent / PINS_FILE).read_bytes()
    later = (_export(alice, "src-1", "brave otter", ATTACKER, b"second") if change == "reply key"
             else _export(alice, "src-1", "quiet heron", key, b"second"))
    code, _, err, out = decrypt(capsys, alice_files, later, tmp_path, "later")
    assert_refused(code, err, out, "REFUSED: this bundle changes the designation or reply key of source src-1")
    assert "tell your security contact" in err
    assert (alice_files.secret.parent / PINS_FILE).read_bytes() == pins
    # Into the folder of the first bundle, too: nothing is added.
    before = sorted(p.name for p in first.rglob("*"))
    code = cli.main(["decrypt", str(tmp_path / "later.bundle"), "--key", str(alice_files.secret), "--passphrase-file",
                     str(alice_files.passphrase_file), "--out", str(first)])
    assert code == cli.EXIT_ERROR and sorted(p.name for p in first.rglob("*")) == before
    capsys.readouterr()


def test_a_pinned_reply_key_given_to_another_source_id_is_refused(capsys, tmp_path, alice, alice_files):
    key = PrivateKey.generate()
    assert decrypt(capsys, alice_files, _export(alice, "src-1", "brave otter", key, b"first"), tmp_path, "first")[0] == 0
    code, _, err, out = decrypt(capsys, alice_files, _export(alice, "src-2", "quiet heron", key, b"second"), tmp_path, "second")
    assert_refused(code, err, out, "gives source src-2 the reply key of source src-1")


def test_the_same_source_again_is_accepted_and_pins_are_kept_beside_the_key(capsys, tmp_path, alice, alice_files):
    key = PrivateKey.generate()
    assert decrypt(capsys, alice_files, _export(alice, "src-1", "brave otter", key, b"first"), tmp_path, "a")[0] == 0
    code, stdout, err, out = decrypt(capsys, alice_files, _export(alice, "src-1", "brave otter", key, b"second"), tmp_path, "b")
    assert code == 0, err
    pins = json.loads((alice_files.secret.parent / PINS_FILE).read_text())
    assert pins["sources"] == [{"source_id": "src-1", "designation": "brave otter", "reply_public_key": b64(key.public_key)}]


def test_a_damaged_pin_file_stops_decrypt_before_writing(capsys, tmp_path, alice, alice_files):
    (alice_files.secret.parent / PINS_FILE).write_text('{"format": "intake-pinned-sources", "version": 1, "sources": [], "sources": []}')
    code, _, err, out = decrypt(capsys, alice_files, _export(alice, "src-1", "brave otter", PrivateKey.generate(), b"x"), tmp_path)
    assert_refused(code, err, out, PINS_FILE)


def test_the_record_of_an_earlier_folder_is_checked_too(capsys, tmp_path, alice, alice_files):
    """Pins beside another key (or removed) do not help a forger: the source's earlier folder disagrees."""
    key = PrivateKey.generate()
    code, _, _, out = decrypt(capsys, alice_files, _export(alice, "src-1", "brave otter", key, b"first"), tmp_path, "first")
    assert code == 0
    (alice_files.secret.parent / PINS_FILE).unlink()
    (tmp_path / "later.bundle").write_bytes(_export(alice, "src-1", "brave otter", ATTACKER, b"second"))
    before = sorted(str(p) for p in out.rglob("*"))
    code = cli.main(["decrypt", str(tmp_path / "later.bundle"), "--key", str(alice_files.secret), "--passphrase-file",
                     str(alice_files.passphrase_file), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "changes the reply key of source src-1" in err
    assert sorted(str(p) for p in out.rglob("*")) == before


# ---------------------------------------------------------------- trust-server


def test_trust_server_checks_the_fingerprint_and_keeps_the_key_beside_the_secret_key(capsys, tmp_path, alice):
    folder = tmp_path / "laptop"
    folder.mkdir()
    secret = folder / "alice.secret"
    secret.write_bytes(SECRET_MAGIC)  # trust-server checks its kind by its first bytes; otherwise only its folder matters
    server = ServerPublicKey.from_seed(bytes(range(32, 64)))
    server_file = tmp_path / "server-signing.public"
    server_file.write_text(server.to_text())
    wrong = SERVER_PUBLIC.fingerprint
    assert cli.main(["trust-server", str(server_file), "--key", str(secret), "--fingerprint", wrong]) == cli.EXIT_ERROR
    assert "NOT trusted" in capsys.readouterr().err and not (folder / "trusted-servers").exists()
    assert cli.main(["trust-server", str(server_file), "--key", str(secret), "--fingerprint", server.fingerprint.lower()]) == 0
    out = capsys.readouterr().out
    stored = folder / "trusted-servers" / (server.fingerprint.replace(" ", "") + ".public")
    assert server.fingerprint in out and str(stored) in out and ServerPublicKey.load(stored) == server
    assert cli.main(["trust-server", str(server_file), "--key", str(secret), "--fingerprint", server.fingerprint]) == 0
    assert "already trusted" in capsys.readouterr().out
    # Typed without the spaces, as it may be copied from a message (a newcomer test found it refused).
    unspaced = server.fingerprint.replace(" ", "")
    assert cli.main(["trust-server", str(server_file), "--key", str(secret), "--fingerprint", unspaced]) == 0
    assert "already trusted" in capsys.readouterr().out


def test_trust_server_asks_when_no_fingerprint_is_given(capsys, tmp_path, monkeypatch):
    secret = tmp_path / "alice.secret"
    secret.write_bytes(SECRET_MAGIC)
    server_file = tmp_path / "s.public"
    server_file.write_text(SERVER_PUBLIC.to_text())
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    assert cli.main(["trust-server", str(server_file), "--key", str(secret)]) == cli.EXIT_ERROR
    assert "not confirmed" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert cli.main(["trust-server", str(server_file), "--key", str(secret)]) == 0
    # A Russian reader answers in Russian (a newcomer test found «д» refused).
    for answer in ("д", "Да"):
        monkeypatch.setattr("sys.stdin", io.StringIO(answer + "\n"))
        assert cli.main(["trust-server", str(server_file), "--key", str(secret)]) == 0


@pytest.mark.parametrize(
    "edit, error",
    [
        (lambda t: t.replace("intake-server-key v1", "intake-server-key v2"), "not supported"),
        (lambda t: t.replace("intake-server-key v1", "intake-public-key v1"), "not an intake server key"),
        (lambda t: "\n".join(line for line in t.split("\n") if not line.startswith("fingerprint")), "lacks"),
        (lambda t: t.replace("fingerprint: ", "fingerprint: AAAA"), "does not match"),
        (lambda t: t + "verify-key: x\n", "repeated"),
        (lambda t: t.replace("\nverify-key", "\u2028verify-key"), "lacks"),
        # A server box key of small order: every reply's routing would be refused or unreadable.
        (lambda t: re.sub(r"encryption-key: \S+", "encryption-key: " + base64.b64encode(bytes(32)).decode(), t), "not an X25519 public key"),
    ],
)
def test_hostile_server_key_files_are_refused(capsys, tmp_path, edit, error):
    path = tmp_path / "s.public"
    path.write_text(edit(SERVER_PUBLIC.to_text()))
    (tmp_path / "k.secret").write_bytes(SECRET_MAGIC)
    assert cli.main(["trust-server", str(path), "--key", str(tmp_path / "k.secret"), "--fingerprint", "x"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and error in err and not (tmp_path / "trusted-servers").exists()


def test_a_damaged_file_among_the_trusted_servers_stops_decrypt(capsys, tmp_path, alice_files, genuine):
    (alice_files.secret.parent / "trusted-servers" / "junk.public").write_text("junk")
    code, _, err, out = decrypt(capsys, alice_files, genuine[0], tmp_path)
    assert_refused(code, err, out, "junk.public")


# ---------------------------------------------------------------- reply routing on the laptop


def test_a_reply_is_routed_to_the_server_the_source_came_from(capsys, tmp_path, alice, alice_files, genuine):
    from keys.reply_bundle import describe_reply_bundle, verify_reply_bundle
    from keys.server_key import server_keys_from_seed, trust_server
    from tests.fixtures_keys import SERVER_SEED

    code, _, err, out = decrypt(capsys, alice_files, genuine[0], tmp_path)
    assert code == 0, err
    record = json.loads((out / "brave otter" / "source.json").read_text())
    assert record["server_key"] == SERVER_PUBLIC.fingerprint
    other_seed = bytes(range(64, 96))
    trust_server(alice_files.secret, ServerPublicKey.from_seed(other_seed))  # a second newsroom, or a rotated key
    replies = tmp_path / "replies.bundle"
    common = ["--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(replies)]
    assert cli.main(["reply", "--source", str(out / "brave otter"), "--message", "hello", *common]) == 0
    verified = verify_reply_bundle(io.BytesIO(replies.read_bytes()), {"alice": alice.signing_key.verify_key}, [server_keys_from_seed(SERVER_SEED)[1]])
    assert [sid for sid, _ in verified.replies] == ["src-1"]
    assert b"src-1" not in replies.read_bytes() and describe_reply_bundle(io.BytesIO(replies.read_bytes())).replies == 1
    # A record that names no server (written before signed bundles) is ambiguous with two trusted keys.
    del record["server_key"]
    (out / "brave otter" / "source.json").write_text(json.dumps(record))
    code = cli.main(["reply", "--source", str(out / "brave otter"), "--message", "hello", *common])
    assert code == cli.EXIT_ERROR and "several server keys are trusted" in capsys.readouterr().err


def test_the_signature_is_checked_before_the_passphrase_is_asked(capsys, tmp_path, alice_files, genuine, monkeypatch):
    def no_prompt(prompt=""):
        raise AssertionError("the passphrase was asked for a bundle that is not the server's")

    monkeypatch.setattr("getpass.getpass", no_prompt)
    (tmp_path / "b.bundle").write_bytes(unsigned_part(genuine[0]))
    code = cli.main(["decrypt", str(tmp_path / "b.bundle"), "--key", str(alice_files.secret), "--out", str(tmp_path / "out")])
    assert code == cli.EXIT_ERROR and "not signed" in capsys.readouterr().err


def test_a_passphrase_file_with_a_crlf_line_ending_works(capsys, tmp_path, alice_files, genuine):
    alice_files.passphrase_file.write_bytes(alice_files.passphrase_file.read_text().strip().encode() + b"\r\n")
    code, _, err, _ = decrypt(capsys, alice_files, genuine[0], tmp_path)
    assert code == 0, err
