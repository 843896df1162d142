"""Issue 9, section 3: every reader is strict, and no input makes one crash or leave a partial tree.

The first tests pin single rules (forged records, strict JSON, the recipient list, decrypting
twice). Then Hypothesis mutates valid inputs of every reader: export bundles (as they travel,
and behind a stolen server key: manifests and records), reply bundles, public and server key
files, secret key files, source.json and the pin file. Each must give a clean refusal (the CLI:
one line, exit 1, nothing written) and never a crash (exit 70) or a partial tree.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from keys import bundle, cli, envelope, envelope_reader, reply_bundle
from keys.errors import FormatError, KeysError
from keys.files import TEMP_PREFIX
from keys.identity import KDF_MIN, Identity, PublicIdentity
from keys.pins import load_pins
from keys.server_key import ServerPublicKey, server_keys_from_seed, trust_server
from keys.source_record import SOURCE_RECORD
from tests.fixtures_keys import (
    PASSPHRASE,
    SERVER_KEY,
    SERVER_PUBLIC,
    SERVER_SEED,
    Source,
    Submission,
    build_export,
    export_sources,
    sign_export,
)

FUZZ = settings(max_examples=int(os.environ.get("INTAKE_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclasses.dataclass(frozen=True)
class RawRecord(envelope.Metadata):
    """An envelope record written byte for byte: what a forger with a recipient's public key can seal."""

    raw: bytes = b""

    def encode(self) -> bytes:
        return struct.pack(">H", len(self.raw)) + self.raw


@dataclasses.dataclass(frozen=True)
class Laptop:
    """A journalist's key folder (alice, trusting the test server), made once: Argon2 is the slow part."""

    folder: Path
    identity: Identity

    @property
    def secret(self) -> Path:
        return self.folder / "alice.secret"

    @property
    def passphrase(self) -> Path:
        return self.folder / "passphrase"


# Hypothesis runs a test many times, so these tests make their folders themselves rather than take
# tmp_path: all under one root per module run, removed at its end with everything in it.
_roots: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _folders_removed_after() -> Iterator[None]:
    root = Path(tempfile.mkdtemp(prefix="intake-test-readers-"))
    _roots.append(root)
    yield
    laptop.cache_clear()
    _roots.remove(root)
    shutil.rmtree(root)


def _fresh_folder(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=_roots[-1])


@functools.lru_cache(maxsize=1)
def laptop() -> Laptop:
    folder = Path(_fresh_folder("intake-readers-"))
    identity = Identity.generate("alice")
    identity.save(folder / "alice.secret", PASSPHRASE, KDF_MIN)
    (folder / "passphrase").write_text(PASSPHRASE + "\n")
    trust_server(folder / "alice.secret", SERVER_PUBLIC)
    return Laptop(folder, identity)


def decrypt(data: bytes, capsys) -> tuple[int, str, str, Path]:
    """`intake-keys decrypt` of ``data`` into a fresh folder, with fresh pins."""
    work = Path(_fresh_folder("intake-decrypt-"))
    keys = laptop()
    (keys.folder / "pinned-sources.json").unlink(missing_ok=True)
    (work / "b.bundle").write_bytes(data)
    out = work / "out"
    code = cli.main(["decrypt", str(work / "b.bundle"), "--key", str(keys.secret), "--passphrase-file", str(keys.passphrase), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def assert_clean(code: int, err: str, out: Path) -> None:
    """The reader's contract: exit 0, 3 (items damaged on the server) or 1 with one line and nothing
    written; never 70; no temporary file; every file written is recorded in its source.json."""
    assert code in (0, 1, cli.EXIT_DAMAGED_ITEMS), err
    if code == cli.EXIT_ERROR:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("intake-keys: error: "), err
        assert not out.exists(), sorted(out.rglob("*"))
        return
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))
    for folder in (p for p in out.iterdir() if p.is_dir()):
        record = json.loads((folder / SOURCE_RECORD).read_text())
        recorded = {item["file"] for item in record["items"]}
        assert {p.name for p in folder.iterdir()} == recorded | {SOURCE_RECORD}


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def forged_item_bundle(alice: Identity, raw_record: bytes, body: bytes = b"body", kind: str = "file") -> bytes:
    """A good message, then an item whose record is ``raw_record``; signed by the (trusted) server:
    the server hands on what a source's session sealed, and anyone with a public key can seal anything."""
    good = envelope.encrypt_bytes(b"a good message", [alice.public.encryption_key], envelope.Metadata("message"))
    forged = envelope.encrypt_bytes(body, [alice.public.encryption_key], RawRecord(kind, raw=raw_record))
    items = [bundle.ExportItem("good", "message", "2026-11-28", len(good), ["alice"], lambda: [good]),
             bundle.ExportItem("forged", kind, "2026-11-28", len(forged), ["alice"], lambda: [forged])]
    source = bundle.ExportSource("src-1", "brave otter", bytes(PrivateKey.generate().public_key), items)
    return b"".join(bundle.stream_export_bundle([alice.public.encryption_key], [source], SERVER_KEY))


# ---------------------------------------------------------------- single rules


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind":"file","length":null,"name":"\\ud800.pdf","type":null}',  # a lone surrogate in the file name
        b'{"kind":"file","length":null,"name":"a.pdf","name":"b.pdf","type":null}',  # a key twice
        b'{"kind":"file","length":true,"name":"a.pdf","type":null}',  # a boolean for an integer
        b'{"kind":"file","length":4.0,"name":"a.pdf","type":null}',
        b'{"kind":"file","length":NaN,"name":"a.pdf","type":null}',
        b'{"kind":"file","length":null,"name":"a.pdf","type":null,"x":1}',
        b'{"kind":"file","length":null,"name":"a\\u0000.pdf","type":null}',
        b'{"kind":"message","length":null,"name":null,"type":null}',  # not the kind the manifest says
        b'["kind","file"]',
        b"\xff\xfe",
    ],
    ids=["lone surrogate", "duplicate key", "boolean length", "float length", "NaN", "extra field", "NUL", "other kind", "array", "not UTF-8"],
)
def test_a_forged_record_is_refused_before_anything_is_written(capsys, raw):
    keys = laptop()
    data = forged_item_bundle(keys.identity, raw)
    for _ in range(2):  # and again: still nothing, no duplicate folder
        code, _, err, out = decrypt(data, capsys)
        assert code == cli.EXIT_ERROR and ("record" in err or "does not match" in err), err
        assert_clean(code, err, out)


def test_decrypting_one_bundle_twice_writes_the_same_tree_once(capsys, tmp_path):
    keys = laptop()
    sources = [Source("src-twice-1", "brave otter", [Submission("message", b"one"), Submission("file", b"two", name="a.pdf")]),
               Source("src-twice-2", "quiet heron", [Submission("message", b"three")])]
    path = tmp_path / "b.bundle"
    path.write_bytes(build_export(sources, [keys.identity]))
    out = tmp_path / "out"
    args = ["decrypt", str(path), "--key", str(keys.secret), "--passphrase-file", str(keys.passphrase), "--out", str(out)]
    assert cli.main(args) == 0
    first = tree(out)
    assert cli.main(args) == 0 and "3 item(s) were already decrypted" in capsys.readouterr().out
    assert tree(out) == first and sorted(p.name for p in out.iterdir()) == ["brave otter", "index.html", "quiet heron"]


def test_decrypt_opens_each_envelope_whatever_the_recipient_list_says(capsys, tmp_path):
    """alice's key registered on the server under another name: the manifest says "alice-desk", and
    the items are still hers. An item sealed to someone else is skipped, whatever the list claims."""
    keys = laptop()
    bob = Identity.generate("bob")
    (mine,) = export_sources([Source("src-recipients-1", "brave otter", [Submission("message", b"for alice")])], [keys.identity])
    (theirs,) = export_sources([Source("src-recipients-2", "quiet heron", [Submission("message", b"for bob")])], [bob])
    mine.items[0] = dataclasses.replace(mine.items[0], recipients=["alice-desk"])
    theirs.items[0] = dataclasses.replace(theirs.items[0], item_id="other", recipients=["alice"])
    data = b"".join(bundle.stream_export_bundle([keys.identity.public.encryption_key], [mine, theirs], SERVER_KEY))
    code, stdout, err, out = decrypt(data, capsys)
    assert code == 0, err
    assert "1 item(s) decrypted" in stdout and "1 item(s) are not sealed to alice" in stdout
    assert (out / "brave otter" / "2026-11-28 message.txt").read_bytes() == b"for alice"
    assert not (out / "quiet heron").exists()


# ---------------------------------------------------------------- mutations


def mutations(size: int) -> st.SearchStrategy:
    """(what, position, value): flip a byte, cut the input, insert bytes, delete a range."""
    position = st.integers(min_value=0, max_value=max(size - 1, 0))
    return st.one_of(
        st.tuples(st.just("flip"), position, st.integers(min_value=1, max_value=255)),
        st.tuples(st.just("cut"), position, st.just(0)),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), position, st.integers(min_value=1, max_value=64)),
    )


def mutate(data: bytes, mutation: tuple) -> bytes:
    what, at, value = mutation
    if what == "flip":
        return data[:at] + bytes([data[at] ^ value]) + data[at + 1 :]
    if what == "cut":
        return data[:at]
    if what == "insert":
        return data[:at] + value + data[at:]
    return data[:at] + data[at + value :]


@functools.lru_cache(maxsize=1)
def valid_export() -> bytes:
    sources = [Source("src-1", "brave otter", [Submission("message", b"tip"), Submission("file", os.urandom(70_000), name="x.pdf")]),
               Source("src-2", "quiet heron", [Submission("message", b"another")])]
    return build_export(sources, [laptop().identity])


@FUZZ
@given(data=st.data())
def test_any_mutation_of_an_export_bundle_is_refused_cleanly(capsys, data):
    original = valid_export()
    mutated = mutate(original, data.draw(mutations(len(original))))
    code, _, err, out = decrypt(mutated, capsys)
    if mutated != original:
        assert code == cli.EXIT_ERROR, err
    assert_clean(code, err, out)


GOOD_RECORD = b'{"kind":"file","length":null,"name":"report.pdf","type":"application/pdf"}'


@FUZZ
@given(data=st.data())
def test_any_mutation_of_a_record_behind_the_signature_is_clean(capsys, data):
    raw = mutate(GOOD_RECORD, data.draw(mutations(len(GOOD_RECORD))))
    code, _, err, out = decrypt(forged_item_bundle(laptop().identity, raw), capsys)
    assert_clean(code, err, out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(name=json_values, length=json_values, content_type=json_values, extra=st.dictionaries(st.text(max_size=6), json_values, max_size=2))
def test_any_json_in_a_record_is_clean(capsys, name, length, content_type, extra):
    record = {**extra, "kind": "file", "length": length, "name": name, "type": content_type}
    raw = json.dumps(record, allow_nan=True).encode("utf-8", "surrogatepass")[:4096]
    code, _, err, out = decrypt(forged_item_bundle(laptop().identity, raw), capsys)
    assert_clean(code, err, out)


@functools.lru_cache(maxsize=1)
def good_item() -> bytes:
    return envelope.encrypt_bytes(b"tip", [laptop().identity.public.encryption_key], envelope.Metadata("message"))


def manifest_bundle(manifest: bytes) -> bytes:
    """The good item with ``manifest`` sealed to alice, signed by the (trusted) server: what a stolen server key allows."""
    item = good_item()
    out = bundle.EXPORT_MAGIC + bytes([bundle.VERSION]) + struct.pack(">BQ", 1, len(item)) + item
    sealed = envelope.encrypt_bytes(manifest, [laptop().identity.public.encryption_key], envelope.Metadata("manifest"))
    return sign_export(out + struct.pack(">BQ", 2, len(sealed)) + sealed)


@functools.lru_cache(maxsize=1)
def good_manifest() -> bytes:
    item = good_item()
    return json.dumps({"format": "intake-export-manifest", "version": 1, "items": 1, "sources": [
        {"source_id": "src-manifest", "designation": "brave otter", "reply_public_key": "A" * 42 + "E=",
         "items": [{"item_id": "i", "kind": "message", "received_day": "2026-11-28", "recipients": ["alice"], "entry": 0,
                    "size": len(item), "blake2b": hashlib.blake2b(item, digest_size=32).hexdigest()}]}]}).encode()


def test_the_manifest_fuzz_starts_from_a_bundle_that_decrypts(capsys):
    code, _, err, out = decrypt(manifest_bundle(good_manifest()), capsys)
    assert code == 0 and (out / "brave otter" / "2026-11-28 message.txt").read_bytes() == b"tip", err


@FUZZ
@given(data=st.data())
def test_any_mutation_of_a_manifest_behind_the_signature_is_clean(capsys, data):
    manifest = good_manifest()
    raw = mutate(manifest, data.draw(mutations(len(manifest))))
    code, _, err, out = decrypt(manifest_bundle(raw), capsys)
    assert_clean(code, err, out)


@functools.lru_cache(maxsize=1)
def valid_replies() -> bytes:
    out = io.BytesIO()
    key = PrivateKey.generate().public_key
    replies = [reply_bundle.SealedReply(reply_bundle.seal_routing(f"src-{n}", SERVER_PUBLIC.encryption_key), reply_bundle.seal_reply("hi", key))
               for n in range(2)]
    reply_bundle.write_reply_bundle(out, laptop().identity, replies)
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_any_mutation_of_a_reply_bundle_is_refused_by_the_server(data):
    original = valid_replies()
    mutated = mutate(original, data.draw(mutations(len(original))))
    keys = {"alice": laptop().identity.signing_key.verify_key}
    box = [server_keys_from_seed(SERVER_SEED)[1]]
    if mutated == original:
        assert len(reply_bundle.verify_reply_bundle(io.BytesIO(mutated), keys, box).replies) == 2
        return
    with pytest.raises(KeysError):
        reply_bundle.verify_reply_bundle(io.BytesIO(mutated), keys, box)


@FUZZ
@given(data=st.data())
def test_any_mutation_of_a_public_key_file_is_refused_or_names_the_same_keys(data):
    identity = laptop().identity
    text = identity.public.to_text().encode()
    mutated = mutate(text, data.draw(mutations(len(text))))
    try:
        read = PublicIdentity.from_text(mutated.decode("utf-8"))
    except (FormatError, UnicodeDecodeError):
        return
    assert read == identity.public  # only a harmless change (a comment, a blank line) may be accepted


@FUZZ
@given(data=st.data())
def test_any_mutation_of_a_server_key_file_is_refused_or_names_the_same_keys(data):
    text = SERVER_PUBLIC.to_text().encode()
    mutated = mutate(text, data.draw(mutations(len(text))))
    try:
        read = ServerPublicKey.from_text(mutated.decode("utf-8"))
    except (FormatError, UnicodeDecodeError):
        return
    assert read == SERVER_PUBLIC


@functools.lru_cache(maxsize=1)
def valid_secret() -> bytes:
    return laptop().secret.read_bytes()


@FUZZ
@given(data=st.data())
def test_any_mutation_of_a_secret_key_file_is_refused(data):
    original = valid_secret()
    what, at, value = data.draw(mutations(len(original)))
    at = max(at, 17)  # the cost parameters stay in range here: a hostile cost is refused before deriving (test_identity)
    mutated = mutate(original, (what, at, value))
    if mutated == original:
        return
    with pytest.raises(KeysError):
        Identity.from_secret_bytes(mutated, PASSPHRASE)


@functools.lru_cache(maxsize=1)
def decrypted_source() -> Path:
    work = Path(_fresh_folder("intake-source-"))
    keys = laptop()
    # Each test that decrypts has source ids of its own: the laptop's pins are shared by this
    # file's tests, and the same id with another reply key is refused (xdist's order varies).
    (work / "b.bundle").write_bytes(build_export([Source("src-source-record", "brave otter", [Submission("message", b"x")])],
                                                 [keys.identity]))
    assert cli.main(["decrypt", str(work / "b.bundle"), "--key", str(keys.secret), "--passphrase-file", str(keys.passphrase), "--out", str(work / "out")]) == 0
    return work / "out" / "brave otter"


@FUZZ
@given(data=st.data())
def test_any_mutation_of_source_json_gives_a_reply_or_one_line(capsys, data):
    folder = decrypted_source()
    original = (folder / SOURCE_RECORD).read_bytes()
    work = Path(_fresh_folder("intake-reply-"))
    shutil.copytree(folder, work / "src")
    (work / "src" / SOURCE_RECORD).write_bytes(mutate(original, data.draw(mutations(len(original)))))
    keys = laptop()
    capsys.readouterr()
    code = cli.main(["reply", "--source", str(work / "src"), "--message", "hi", "--key", str(keys.secret),
                     "--passphrase-file", str(keys.passphrase), "--out", str(work / "r.bundle")])
    err = capsys.readouterr().err
    assert code in (0, cli.EXIT_ERROR), err
    if code:
        assert len(err.strip().splitlines()) == 1 and not (work / "r.bundle").exists()


@FUZZ
@given(data=st.data())
def test_any_mutation_of_the_pin_file_is_refused_or_read(data):
    original = json.dumps({"format": "intake-pinned-sources", "version": 1, "sources": [
        {"source_id": "src-1", "designation": "brave otter", "reply_public_key": "A" * 42 + "E="}]}).encode()
    path = Path(_fresh_folder("intake-pins-")) / "pinned-sources.json"
    path.write_bytes(mutate(original, data.draw(mutations(len(original)))))
    try:
        pins = load_pins(path)
    except FormatError:
        return
    assert all(isinstance(key, bytes) and len(key) == 32 for _, key in pins.values())


@FUZZ
@given(data=st.data())
def test_any_mutation_of_an_envelope_is_refused(data):
    key = laptop().identity.private_key
    original = envelope.encrypt_bytes(b"x" * 70_000, [key.public_key], envelope.Metadata("file", name="a"))
    mutated = mutate(original, data.draw(mutations(len(original))))
    if mutated == original:
        return
    with pytest.raises(KeysError):
        envelope_reader.decrypt_bytes(mutated, key)
