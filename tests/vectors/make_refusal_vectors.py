"""Generate tests/vectors/refusals-v2.json: inputs a conforming reader MUST refuse, each with the
error SECURITY.md names for it (a class of keys/errors.py) and a one-line reason, and inputs it
MUST accept beside them (the bases the refusals are made from, and rules that accept more than a
writer writes).

Written from SECURITY.md sections 3-7 with PyNaCl and hashlib alone, not with keys/' writers, and
deterministic: every key, nonce, salt and file key comes from a fixed label (a secretstream is
started with init_pull on a chosen header: push and pull share one state), so running it again
makes the same file; tests/test_vectors.py checks that it does, and that keys/ refuses each input
with exactly its error. Keys are the published ones of the other vector files: never use them for
anything else.

    PYTHONPATH=. .venv/bin/python tests/vectors/make_refusal_vectors.py   # rewrites tests/vectors/refusals-v2.json

To keep the file small, envelopes made here are padded only as far as the case needs (a reader
does not check that sizes follow Padmé), and an input may be given as another one with edits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import unicodedata
from pathlib import Path

from nacl import bindings as sodium

VECTORS = Path(__file__).parent / "refusals-v2.json"
PASSPHRASE = "correct horse battery staple"


def fixed(label: str, size: int = 32) -> bytes:
    """The bytes a writer would draw at random, from a label instead."""
    return hashlib.blake2b(label.encode(), digest_size=size, person=b"intake-refusals").digest()


# The published keys of tests/vectors/envelope-v2.json and bundles-v2.json.
ALICE = hashlib.sha256(b"intake test vector key: alice").digest()
BOB = hashlib.sha256(b"intake test vector key: bob").digest()
ALICE_SIGNING_SEED = hashlib.sha256(b"intake test vector key: alice signing").digest()
SERVER_SEED = hashlib.sha256(b"intake test vector key: server").digest()
SOURCE = hashlib.sha256(b"intake test vector key: source reply").digest()
OTHER_SERVER_SEED = fixed("another server's seed")

ALICE_PUBLIC = sodium.crypto_scalarmult_base(ALICE)
BOB_PUBLIC = sodium.crypto_scalarmult_base(BOB)
SOURCE_PUBLIC = sodium.crypto_scalarmult_base(SOURCE)
ALICE_VERIFY, ALICE_SIGN = sodium.crypto_sign_seed_keypair(ALICE_SIGNING_SEED)
SERVER_BOX = hashlib.blake2b(b"", key=SERVER_SEED, digest_size=32, person=b"intake-srv-box").digest()
SERVER_BOX_PUBLIC = sodium.crypto_scalarmult_base(SERVER_BOX)
SERVER_VERIFY, SERVER_SIGN = sodium.crypto_sign_seed_keypair(SERVER_SEED)

# ---------------------------------------------------------------- envelopes (section 3)

MAGIC = b"INTAKE-E"
SLOT = 65532
MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE  # 0
PUSH = sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH  # 1: no tag of the format
FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL  # 3


def padme(length: int) -> int:
    if length < 2:
        return length
    e = length.bit_length() - 1
    mask = (1 << (e - e.bit_length())) - 1
    return (length + mask) & ~mask


def nonce(ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return hashlib.blake2b(ephemeral_public + recipient_public, digest_size=24).digest()


def record(kind: object = "message", name: object = None, type: object = None, length: object = None, raw: bytes | None = None) -> bytes:
    """``u16 record_length | record``, serialised as the writer does (sorted keys, no spaces) unless ``raw``."""
    data = raw if raw is not None else json.dumps({"kind": kind, "length": length, "name": name, "type": type},
                                                  sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return struct.pack(">H", len(data)) + data


def message(content: bytes, capacity: int | None = None, used: int | None = None, padding: bytes = b"") -> bytes:
    """A message's plaintext: ``u32 used | content | padding``, zero padding up to ``capacity``."""
    capacity = len(content) + len(padding) if capacity is None else capacity
    return struct.pack(">I", len(content) if used is None else used) + content + padding + bytes(capacity - len(content) - len(padding))


def spread(content: bytes, padded: int | None = None) -> list[tuple[bytes, int]]:
    """The messages of ``content`` as a writer spreads it over slots: padded to ``padme`` (or to ``padded``)."""
    size = padme(max(len(content), 1024)) if padded is None else padded
    count = max(1, -(-size // SLOT))
    out, position = [], 0
    for i in range(count):
        capacity = min(SLOT, size - i * SLOT)
        used = content[position : position + capacity]
        position += len(used)
        out.append((message(used, capacity), FINAL if i == count - 1 else MESSAGE))
    return out


def envelope(label: str, messages: list[tuple[bytes, int]], recipients: tuple[bytes, ...] = (ALICE_PUBLIC,), version: int = 2,
             low_order: bool = False) -> bytes:
    """An envelope with exactly these (plaintext, tag) messages, its keys drawn from ``label``."""
    file_key = fixed(label + ": file key")
    stream_header = fixed(label + ": stream header", 24)
    if version == 1:  # each stanza a whole crypto_box_seal: its own ephemeral key, then the box
        stanzas = []
        for n, public in enumerate(recipients):
            secret = fixed(f"{label}: ephemeral key {n}")
            ephemeral = sodium.crypto_scalarmult_base(secret)
            stanzas.append(ephemeral + sodium.crypto_box_easy(file_key, nonce(ephemeral, public), public, secret))
        header = MAGIC + bytes([1, len(stanzas)]) + b"".join(stanzas) + stream_header
    elif low_order:  # the all-zero ephemeral key, the file key boxed under the all-zero shared key
        ephemeral = bytes(32)
        stanzas = [sodium.crypto_box_easy_afternm(file_key, nonce(ephemeral, public), bytes(32)) for public in recipients]
        header = MAGIC + bytes([2, len(stanzas)]) + ephemeral + b"".join(stanzas) + stream_header
    else:
        secret = fixed(label + ": ephemeral key")
        ephemeral = sodium.crypto_scalarmult_base(secret)
        stanzas = [sodium.crypto_box_easy(file_key, nonce(ephemeral, public), public, secret) for public in recipients]
        header = MAGIC + bytes([2, len(stanzas)]) + ephemeral + b"".join(stanzas) + stream_header
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, stream_header, file_key)  # the state init_push would make
    out = [header]
    for i, (plaintext, tag) in enumerate(messages):
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, plaintext, header if i == 0 else None, tag))
    return b"".join(out)


def fitted(label: str, content: bytes, recipients: tuple[bytes, ...] = (ALICE_PUBLIC,), version: int = 2) -> bytes:
    """An envelope of one FINAL message exactly as large as its content (no padding)."""
    return envelope(label, [(message(content), FINAL)], recipients, version)


HI = record("message", type="text/plain; charset=utf-8", length=2) + b"hi"
HEADER = len(MAGIC) + 2 + 32 + 48 + 24  # 114: a version-2 header for one recipient
EPHEMERAL, STANZA, STREAM_HEADER = 10, 42, 90  # offsets in it

# ---------------------------------------------------------------- key files (sections 4, 5)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def non_canonical(key: str) -> str:
    """The same 32 bytes with an unused low bit of the last character set."""
    assert key.endswith("=") and not key.endswith("==")
    return key[:-2] + BASE64[BASE64.index(key[-2]) ^ 1] + "="


def groups(digest: bytes) -> str:
    text = base64.b32encode(digest).decode()
    return " ".join(text[i : i + 4] for i in range(0, 32, 4))


def fingerprint(name: str, encryption: bytes, verify: bytes) -> str:
    raw = name.encode()
    return groups(hashlib.blake2b(bytes([len(raw)]) + raw + encryption + verify, digest_size=20, person=b"intake-fp-v2").digest())


def fingerprint_v1(encryption: bytes, verify: bytes) -> str:
    return groups(hashlib.blake2b(encryption + verify, digest_size=20, person=b"intake-fp-v1").digest())


def public_file(name: str = "alice", encryption: bytes = ALICE_PUBLIC, verify: bytes = ALICE_VERIFY, print_as: str | None = None) -> str:
    return (f"intake-public-key v1\nname: {name}\nencryption-key: {b64(encryption)}\nverify-key: {b64(verify)}\n"
            f"fingerprint: {fingerprint(name, encryption, verify) if print_as is None else print_as}\n")


SERVER_FINGERPRINT = groups(hashlib.blake2b(SERVER_VERIFY + SERVER_BOX_PUBLIC, digest_size=20, person=b"intake-sfp-v1").digest())
SERVER_FILE = (f"intake-server-key v1\n# the server's public key\nverify-key: {b64(SERVER_VERIFY)}\n"
               f"encryption-key: {b64(SERVER_BOX_PUBLIC)}\nfingerprint: {SERVER_FINGERPRINT}\n")
P = 2**255 - 19
ALL_ONES = (2**255 - 1).to_bytes(32, "little")  # 18 mod p: not of small order, but written above p


def secret_file(name: bytes = b"alice") -> bytes:
    """A secret key file at the least cost libsodium allows (opslimit 1, memlimit 8 KiB), holding ``name``."""
    salt, box_nonce = fixed("secret key file: salt", 16), fixed("secret key file: nonce", 24)
    key = sodium.crypto_pwhash_alg(32, PASSPHRASE.encode(), salt, 1, 8192, sodium.crypto_pwhash_ALG_ARGON2ID13)
    payload = ALICE + ALICE_SIGNING_SEED + name
    return b"INTAKE-K" + struct.pack(">BII", 1, 1, 8192) + salt + box_nonce + sodium.crypto_secretbox(payload, box_nonce, key)


# ---------------------------------------------------------------- export bundles (section 6)

EXPORT_ENTRY = struct.Struct(">BQ")


def entry(kind: int, payload: bytes) -> bytes:
    return EXPORT_ENTRY.pack(kind, len(payload)) + payload


def signed_export(unsigned: bytes, seed: bytes = SERVER_SEED, box_public: bytes = SERVER_BOX_PUBLIC) -> bytes:
    verify, sign = sodium.crypto_sign_seed_keypair(seed)
    signature = sodium.crypto_sign(b"intake-export-bundle-v2" + hashlib.blake2b(unsigned, digest_size=64).digest(), sign)[:64]
    return unsigned + entry(3, verify + box_public + signature)


ITEM = fitted("export item", HI)


def manifest(items: list[bytes] = [ITEM], change=None) -> bytes:  # noqa: B006 - never changed in place
    doc = {"format": "intake-export-manifest", "version": 1, "items": len(items),
           "sources": [{"source_id": "src-1", "designation": "brave otter", "reply_public_key": b64(SOURCE_PUBLIC),
                        "items": [{"item_id": f"sub-{n + 1}", "kind": "message", "received_day": "2026-11-28", "recipients": ["alice"],
                                   "entry": n, "size": len(item), "blake2b": hashlib.blake2b(item, digest_size=32).hexdigest()}
                                  for n, item in enumerate(items)]}]}
    if change:
        change(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def sealed_manifest(label: str, body: bytes, kind: str = "manifest", recipients: tuple[bytes, ...] = (ALICE_PUBLIC,)) -> bytes:
    return fitted(label, record(kind, type="application/json", length=len(body)) + body, recipients)


def export(label: str, items: list[bytes] = [ITEM], body: bytes | None = None, **sealing) -> bytes:  # noqa: B006
    """A signed bundle of ``items`` and a manifest (``body``: its JSON; by default, listing the items truly)."""
    sealed = sealed_manifest(label + ": manifest", manifest(items) if body is None else body, **sealing)
    return signed_export(b"INTAKE-X\x02" + b"".join(entry(1, item) for item in items) + entry(2, sealed))


def changed(change) -> bytes:
    return manifest(change=change)


def set_path(path: tuple, value):
    def change(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


ITEM_PATH = ("sources", 0, "items", 0)

# ---------------------------------------------------------------- reply bundles (section 7)


def routing(source_id: bytes, label: str, server_public: bytes = SERVER_BOX_PUBLIC, size: int = 128) -> bytes:
    """crypto_box_seal of the padded source id, its ephemeral key from ``label``."""
    secret = fixed(label + ": routing key")
    ephemeral = sodium.crypto_scalarmult_base(secret)
    return ephemeral + sodium.crypto_box_easy(source_id.ljust(size, b"\0"), nonce(ephemeral, server_public), server_public, secret)


REPLY_TEXT = "Thank you. — the desk".encode()
REPLY = fitted("reply", record("reply", type="text/plain; charset=utf-8", length=len(REPLY_TEXT)) + REPLY_TEXT, (SOURCE_PUBLIC,))
ROUTING = routing(b"src-1", "reply")


def reply_bundle(replies: list[tuple[bytes, bytes]] | None = None, signer: bytes = b"alice", entry_type: int = 1,
                 sign: bytes = ALICE_SIGN) -> bytes:
    replies = [(ROUTING, REPLY)] if replies is None else replies
    unsigned = b"INTAKE-R\x02" + bytes([len(signer)]) + signer + b"".join(
        struct.pack(">BI", entry_type, len(r) + len(e)) + r + e for r, e in replies)
    signature = sodium.crypto_sign(b"intake-reply-bundle-v2" + hashlib.blake2b(unsigned, digest_size=64).digest(), sign)[:64]
    return unsigned + struct.pack(">BI", 2, 64) + signature


# ---------------------------------------------------------------- the file


class Vectors:
    def __init__(self) -> None:
        self.inputs: dict[str, bytes] = {}
        self.accepted: list[dict] = []
        self.refusals: list[dict] = []

    def _add(self, where: list[dict], name: str, kind: str, data: bytes | None, of: str | None, edits: list[dict] | None, **fields) -> None:
        assert name not in self.inputs, name
        if of is not None:
            data = apply(self.inputs[of], edits)
            source = {"of": of, "edits": edits}
        else:
            source = {"hex": data.hex()}
        self.inputs[name] = data
        where.append({"name": name, "input": kind, **fields, **source})

    def accept(self, name: str, kind: str, note: str, data: bytes | None = None, *, of: str | None = None, edits=None) -> None:
        self._add(self.accepted, name, kind, data, of, edits, note=note)

    def refuse(self, name: str, kind: str, error: str, reason: str, data: bytes | None = None, *, of: str | None = None, edits=None) -> None:
        self._add(self.refusals, name, kind, data, of, edits, error=error, reason=reason)


def apply(data: bytes, edits: list[dict]) -> bytes:
    """Edits, in order: {"at": offset, "write": hex} overwrites, {"cut": n} keeps the first n bytes,
    {"append": hex} adds at the end."""
    out = bytearray(data)
    for edit in edits:
        if "cut" in edit:
            del out[edit["cut"] :]
        elif "append" in edit:
            out += bytes.fromhex(edit["append"])
        else:
            new = bytes.fromhex(edit["write"])
            assert edit["at"] + len(new) <= len(out)
            out[edit["at"] : edit["at"] + len(new)] = new
    return bytes(out)


def flip(data: bytes, at: int) -> dict:
    return {"at": at, "write": bytes([data[at] ^ 0x01]).hex()}


def envelopes(v: Vectors) -> None:
    E = "envelope"
    base = envelope("base", spread(HI))
    v.accept("envelope", E, "a version-2 envelope as a writer makes it: 'hi', declared length 2, padded to 1024 bytes of slots", base)
    v.accept("envelope, version 1", E, "version 1, still read: each stanza a whole crypto_box_seal", envelope("version 1", spread(HI), version=1))
    v.accept("envelope, record spaced and reordered", E, "a record in another key order, with spaces: readers accept any object meeting the rules",
             fitted("spaced record", record(raw=b'{ "type" : null , "name" : null , "length" : null , "kind" : "message" }') + b"hi"))
    v.accept("envelope, no padding", E, "a FINAL message exactly as large as its content: a reader does not check that sizes follow Padmé",
             fitted("unpadded", HI))

    v.refuse("envelope: empty input", E, "FormatError", "no magic at all", b"")
    v.refuse("envelope: shorter than the magic", E, "FormatError", "5 bytes of the magic: a reader does not tell a cut-off magic from another format",
             MAGIC[:5])
    v.refuse("envelope: wrong magic", E, "FormatError", "the magic of an export bundle", of="envelope", edits=[{"at": 0, "write": b"INTAKE-X".hex()}])
    v.refuse("envelope: magic only", E, "TruncatedError", "the right magic, then the input ends", of="envelope", edits=[{"cut": 8}])
    v.refuse("envelope: version 3", E, "UnsupportedVersionError", "only versions 1 and 2 are read", of="envelope", edits=[{"at": 8, "write": "03"}])
    v.refuse("envelope: version 0, count cut off", E, "UnsupportedVersionError", "the version is decided from the ninth byte, before the count is needed",
             of="envelope", edits=[{"at": 8, "write": "00"}, {"cut": 9}])
    v.refuse("envelope: no count", E, "TruncatedError", "magic and version 2, then the input ends", of="envelope", edits=[{"cut": 9}])
    v.refuse("envelope: count 0", E, "FormatError", "a count outside 1..64", of="envelope", edits=[{"at": 9, "write": "00"}])
    v.refuse("envelope: count 65", E, "FormatError", "a count outside 1..64, refused before the stanzas are read", of="envelope",
             edits=[{"at": 9, "write": "41"}])
    v.refuse("envelope: cut inside the stanza", E, "TruncatedError", "the input ends inside the header", of="envelope", edits=[{"cut": STANZA + 20}])
    v.refuse("envelope: cut after the header", E, "TruncatedError", "no message at all", of="envelope", edits=[{"cut": HEADER}])
    v.refuse("envelope: sealed to bob", E, "WrongKeyError", "no stanza opens with alice's key", fitted("for bob", HI, (BOB_PUBLIC,)))
    v.refuse("envelope, version 1: sealed to bob", E, "WrongKeyError", "no stanza opens with alice's key",
             fitted("version 1 for bob", HI, (BOB_PUBLIC,), version=1))
    v.refuse("envelope: ephemeral key of low order", E, "WrongKeyError",
             "the all-zero ephemeral key: libsodium refuses the key agreement, so the stanza (boxed under the all-zero key) opens for no one",
             envelope("low order", [(message(HI), FINAL)], low_order=True))
    v.refuse("envelope: damaged ephemeral key", E, "WrongKeyError", "another ephemeral key: the stanza opens for no one",
             of="envelope", edits=[flip(base, EPHEMERAL + 3)])
    v.refuse("envelope: damaged stanza", E, "WrongKeyError", "a damaged stanza opens for no one", of="envelope", edits=[flip(base, STANZA + 20)])
    v.refuse("envelope: damaged stream header", E, "TruncatedError",
             "the only message fails authentication and is shorter than 65,553 bytes: truncated or damaged at its end, the reader cannot tell which",
             of="envelope", edits=[flip(base, STREAM_HEADER + 5)])
    v.refuse("envelope: damaged final message", E, "TruncatedError",
             "a writer's final message is always shorter than 65,553 bytes, so damage to it is refused as truncated or damaged at its end",
             of="envelope", edits=[flip(base, HEADER + 500)])
    v.refuse("envelope: one byte appended", E, "TruncatedError",
             "the extra byte is read as part of the short final message, which then fails authentication", of="envelope", edits=[{"append": "00"}])
    v.refuse("envelope: cut inside the final message", E, "TruncatedError", "the last byte is missing", of="envelope", edits=[{"cut": len(base) - 1}])

    # Authentic but malformed: only a holder of the file key can make these, so each is a forgery.
    F = "RecordError"
    v.refuse("envelope: tag PUSH", E, F, "an authenticated message tagged neither MESSAGE (0) nor FINAL (3)", envelope("push", [(message(HI), PUSH)]))
    v.refuse("envelope: short MESSAGE", E, F, "an authenticated MESSAGE shorter than 65,553 bytes: written short, since a cut message fails",
             envelope("short message", [(message(HI), MESSAGE)]))
    v.refuse("envelope: plaintext of 3 bytes", E, F, "a message too short for its u32 used", envelope("three bytes", [(b"\0\0\0", FINAL)]))
    v.refuse("envelope: used above capacity", E, F, f"used = 500 in a message of capacity {len(HI) + 2}",
             envelope("used above capacity", [(message(HI, used=500, capacity=len(HI) + 2), FINAL)]))
    v.refuse("envelope: padding not zero", E, F, "a padding byte of 1 after the content",
             envelope("padding", [(message(HI, padding=b"\0\0\x01"), FINAL)]))
    v.refuse("envelope: body longer than declared", E, F, "length 1 declared, 2 bytes of body",
             fitted("longer", record("message", length=1) + b"hi"))
    v.refuse("envelope: body shorter than declared", E, F, "length 3 declared, 2 bytes of body", fitted("shorter", record("message", length=3) + b"hi"))
    v.refuse("envelope: record longer than 4096 bytes", E, F, "record_length 4097, refused before the record is read",
             fitted("oversized record", struct.pack(">H", 4097) + b"{}"))
    v.refuse("envelope: content ends inside the record", E, F, "record_length 60, then only 20 bytes of content",
             fitted("record cut", struct.pack(">H", 60) + record("message")[2:22]))
    for name, raw, why in [
        ("not JSON", b"kind=message", "the record is not JSON"),
        ("not UTF-8", b'{"kind":"m\xe9","length":null,"name":null,"type":null}', "the record is not UTF-8"),
        ("not an object", b'["message",null,null,null]', "the record is not an object"),
        ("unknown key", b'{"kind":"message","length":null,"name":null,"type":null,"x":1}', "a key other than kind, length, name, type"),
        ("missing key", b'{"kind":"message","length":null,"name":null}', "no type"),
        ("repeated key", b'{"kind":"message","kind":"file","length":null,"name":null,"type":null}', "kind twice"),
        ("lone surrogate", b'{"kind":"message","length":null,"name":"\\ud800","type":null}', "a name holding a lone surrogate escape"),
        ("NaN", b'{"kind":"message","length":NaN,"name":null,"type":null}', "NaN is not JSON"),
        ("negative length", b'{"kind":"message","length":-1,"name":null,"type":null}', "a negative length"),
        ("length true", b'{"kind":"message","length":true,"name":null,"type":null}', "a boolean where an integer is meant"),
        ("length 2.0", b'{"kind":"message","length":2.0,"name":null,"type":null}', "a number with a fraction where an integer is meant"),
        ("empty kind", b'{"kind":"","length":null,"name":null,"type":null}', "kind is 1..32 characters"),
        ("kind of 33 characters", b'{"kind":"' + b"k" * 33 + b'","length":null,"name":null,"type":null}', "kind is 1..32 characters"),
        ("kind null", b'{"kind":null,"length":null,"name":null,"type":null}', "kind is a string, never null"),
        ("empty name", b'{"kind":"message","length":null,"name":"","type":null}', "name is 1..1024 characters or null"),
        ("NUL in the name", b'{"kind":"message","length":null,"name":"a\\u0000b","type":null}', "strings contain no NUL"),
        ("type of 256 characters", b'{"kind":"message","length":null,"name":null,"type":"' + b"t" * 256 + b'"}', "type is 1..255 characters or null"),
    ]:
        v.refuse(f"envelope: record {name}", E, F, why, fitted(f"record {name}", record(raw=raw)))

    # Two messages: 65,553 bytes of ciphertext before the final one.
    partial = envelope("partly used", [(message(HI, capacity=SLOT), MESSAGE), (message(b"xx"), FINAL)])
    v.refuse("envelope: content after a partly used message", E, F,
             f"message 1 (a MESSAGE of 65,553 bytes) holds {len(HI)} bytes of its 65,532, message 2 holds more content", partial)
    first = HEADER + 65553
    v.refuse("envelope: damaged first message of 65,553 bytes", E, "TamperedError",
             "a message of the full 65,553 bytes fails authentication (before anything else of the envelope is checked)",
             of="envelope: content after a partly used message", edits=[flip(partial, HEADER + 40_000)])
    v.refuse("envelope: damaged stream header, first message full", E, "TamperedError",
             "the first message, of 65,553 bytes, fails authentication", of="envelope: content after a partly used message",
             edits=[flip(partial, STREAM_HEADER + 5)])
    v.refuse("envelope: ends after a MESSAGE", E, "TruncatedError", "the input ends where the next message should start: no FINAL message",
             of="envelope: content after a partly used message", edits=[{"cut": first}])


def key_files(v: Vectors) -> None:
    K, S, X = "public key file", "server key file", "secret key file"
    base = public_file()
    fp = fingerprint("alice", ALICE_PUBLIC, ALICE_VERIFY)
    v.accept("public key file", K, "alice's public file as intake-keys writes it", base.encode())
    v.accept("public key file, CR LF", K, "CR LF line ends: a CR just before an LF is dropped", base.replace("\n", "\r\n").encode())
    v.accept("public key file, final CR", K, "a CR at the very end of the file, without an LF, is dropped too", base.rstrip("\n").encode() + b"\r")
    v.accept("public key file, no final LF", K, "the last line needs no line end", base.rstrip("\n").encode())
    v.accept("public key file, spacing", K, "no space after the colon, tabs and spaces around values, blank lines, comments",
             base.replace("name: alice", "name:alice").replace("verify-key: ", "verify-key:\t  ").replace("\nfingerprint", "\n\t\n  # a comment\n\nfingerprint")
             .encode())
    v.accept("public key file, mixed-case fingerprint", K, "the fingerprint in any mix of upper and lower case",
             base.replace(fp, fp[:10].lower() + fp[10:]).encode())
    v.accept("public key file, fingerprint version 1", K, "a version 1 fingerprint, as files written before version 2 have",
             public_file(print_as=fingerprint_v1(ALICE_PUBLIC, ALICE_VERIFY)).encode())
    v.accept("public key file, no fingerprint", K, "the fingerprint line is optional", "".join(base.splitlines(True)[:4]).encode())
    v.accept("public key file, name with a superscript digit", K, "letters and digits are Unicode categories L and N: a², Ⅳa, ½b are names",
             public_file("Ⅳa²").encode())
    v.refuse("public key file: empty", K, "FormatError", "no first line", b"")
    v.refuse("public key file: not UTF-8", K, "FormatError", "a byte 0xff in a comment", base.encode().replace(b"\nname", b"\n# \xff\nname"))
    v.refuse("public key file: 4097 bytes", K, "FormatError", "more than 4 KiB",
             (base + "#" * (4096 - len(base.encode())) + "\n").encode())
    v.refuse("public key file: version 2", K, "UnsupportedVersionError", "the first line names another version of the format",
             base.replace("intake-public-key v1", "intake-public-key v2").encode())
    v.refuse("public key file: a server key file's first line", K, "FormatError", "the first line is exactly intake-public-key v1",
             base.replace("intake-public-key v1", "intake-server-key v1").encode())
    v.refuse("public key file: unknown field", K, "FormatError", "a field other than name, encryption-key, verify-key, fingerprint",
             base.replace("name: alice\n", "name: alice\nemail: alice@example.org\n").encode())
    v.refuse("public key file: repeated field", K, "FormatError", "name twice, even with the same value",
             base.replace("name: alice\n", "name: alice\nname: alice\n").encode())
    v.refuse("public key file: space before the colon", K, "FormatError", "the field is exactly its name", base.replace("name: ", "name : ").encode())
    v.refuse("public key file: space before the field", K, "FormatError", "the field starts the line", base.replace("name: ", " name: ").encode())
    v.refuse("public key file: no colon", K, "FormatError", "a line that is neither blank, a comment nor a field", base.replace("name: ", "name ").encode())
    v.refuse("public key file: lone CR between lines", K, "FormatError", "a lone CR ends no line: the name line runs on over the encryption-key line, which is then missing",
             base.replace("alice\nencryption", "alice\rencryption").encode())
    v.refuse("public key file: U+2028 between lines", K, "FormatError", "only LF ends a line",
             base.replace("alice\nencryption", "alice\u2028encryption").encode())
    v.refuse("public key file: no verify-key", K, "FormatError", "name, encryption-key and verify-key are required",
             "".join(line for line in base.splitlines(True) if not line.startswith("verify-key")).encode())
    key = b64(ALICE_PUBLIC)
    v.refuse("public key file: non-canonical base64", K, "FormatError", "the last character's unused low bit set: the same bytes spelled otherwise",
             base.replace(key, non_canonical(key)).encode())
    v.refuse("public key file: base64 of 31 bytes", K, "FormatError", "keys are exactly 32 bytes",
             base.replace(key, b64(ALICE_PUBLIC[:31])).encode())
    v.refuse("public key file: base64 with a space", K, "FormatError", "no spaces inside base64", base.replace(key, key[:20] + " " + key[20:]).encode())
    v.refuse("public key file: encryption key of small order", K, "FormatError", "the all-zero X25519 key", public_file(encryption=bytes(32)).encode())
    v.refuse("public key file: encryption key above 2^255-19", K, "FormatError",
             "2^255 - 1, written at or above the field prime (not of small order)", public_file(encryption=ALL_ONES).encode())
    v.refuse("public key file: wrong fingerprint", K, "FormatError", "a fingerprint of other keys",
             public_file(print_as=fingerprint("alice", BOB_PUBLIC, ALICE_VERIFY)).encode())
    v.refuse("public key file: fingerprint with a double space", K, "FormatError", "groups are separated by single spaces",
             base.replace(fp, fp.replace(" ", "  ", 1)).encode())
    v.refuse("public key file: fingerprint of another name", K, "FormatError", "fingerprint version 2 covers the name",
             public_file(print_as=fingerprint("alicia", ALICE_PUBLIC, ALICE_VERIFY)).encode())
    decomposed = unicodedata.normalize("NFD", "josé")
    v.refuse("public key file: name not NFC", K, "FormatError", "a decomposed é (e and a combining accent, not a letter)",
             public_file(decomposed, print_as="").replace("fingerprint: \n", "").encode())
    for name, why in [(".alice", "a name starts with a letter or digit"), ("al ice", "no spaces in a name"),
                      ("a" * 65, "a name is at most 64 bytes"), ("al/ice", "no '/' in a name")]:
        v.refuse(f"public key file: name {name[:12]!r}", K, "FormatError", why, public_file(name, print_as="").replace("fingerprint: \n", "").encode())

    v.accept("server key file", S, "the server's public file", SERVER_FILE.encode())
    v.refuse("server key file: no fingerprint", S, "FormatError", "all three fields are required here",
             "".join(line for line in SERVER_FILE.splitlines(True) if not line.startswith("fingerprint")).encode())
    v.refuse("server key file: version 2", S, "UnsupportedVersionError", "another version of the format",
             SERVER_FILE.replace("intake-server-key v1", "intake-server-key v2").encode())
    v.refuse("server key file: a name field", S, "FormatError", "name is a field of journalists' files only",
             SERVER_FILE.replace("verify-key", "name: server\nverify-key").encode())
    v.refuse("server key file: encryption key of small order", S, "FormatError", "the all-zero X25519 key (its fingerprint matches it)",
             SERVER_FILE.replace(b64(SERVER_BOX_PUBLIC), b64(bytes(32))).replace(SERVER_FINGERPRINT, groups(hashlib.blake2b(
                 SERVER_VERIFY + bytes(32), digest_size=20, person=b"intake-sfp-v1").digest())).encode())
    v.refuse("server key file: wrong fingerprint", S, "FormatError", "the fingerprint of a journalist's keys",
             SERVER_FILE.replace(SERVER_FINGERPRINT, fingerprint("alice", SERVER_BOX_PUBLIC, SERVER_VERIFY)).encode())

    secret = secret_file()
    v.accept("secret key file", X, "alice's secret file (opslimit 1, memlimit 8 KiB: the least libsodium allows)", secret)
    v.refuse("secret key file: wrong magic", X, "FormatError", "another format's first bytes", b"-----BEGIN PGP PRIVATE KEY BLOCK-----")
    v.refuse("secret key file: shorter than the magic", X, "FormatError", "5 bytes", b"INTAK")
    v.refuse("secret key file: cut inside the cost", X, "TruncatedError", "the file ends before its 17-byte head does", of="secret key file", edits=[{"cut": 12}])
    v.refuse("secret key file: version 2", X, "UnsupportedVersionError", "only version 1", of="secret key file", edits=[{"at": 8, "write": "02"}])
    v.refuse("secret key file: 137 bytes", X, "TruncatedError", "a 1-byte name makes 138 bytes at least", secret_file(b"a")[:137])
    v.refuse("secret key file: 202 bytes", X, "FormatError", "a 64-byte name makes 201 bytes at most; refused before deriving",
             secret_file(b"a" * 64) + b"\0")
    for field, value, why in [("opslimit", 0, "opslimit below 1"), ("opslimit", 17, "opslimit above 16"),
                              ("memlimit", 8191, "memlimit below 8 KiB"), ("memlimit", (1 << 30) + 1, "memlimit above 1 GiB")]:
        at = 9 if field == "opslimit" else 13
        v.refuse(f"secret key file: {field} {value}", X, "FormatError", f"{why}: refused before deriving anything",
                 of="secret key file", edits=[{"at": at, "write": struct.pack(">I", value).hex()}])
    v.refuse("secret key file: damaged box", X, "BadPassphraseError", "a damaged box fails as a wrong passphrase does", of="secret key file",
             edits=[flip(secret, len(secret) - 3)])
    v.refuse("secret key file: another salt", X, "BadPassphraseError", "the salt derives another key", of="secret key file", edits=[flip(secret, 20)])
    v.refuse("secret key file: name not valid", X, "FormatError", "the box opens, but holds the name '../x'", secret_file(b"../x"))
    v.refuse("secret key file: name not UTF-8", X, "FormatError", "the box opens, but its name is not UTF-8", secret_file(b"al\xffce"))


def export_bundles(v: Vectors) -> None:
    B = "export bundle"
    base = export("base")
    v.accept("export bundle", B, "one source, one message, sealed to alice and signed by the server", base)
    v.accept("export bundle, item for bob only", B, "an item no stanza of which opens with alice's key is skipped, not refused",
             export("bob's item", [fitted("bob's item", HI, (BOB_PUBLIC,))]))
    v.accept("export bundle, reply key of small order", B,
             "reading a manifest checks a reply key's encoding only; `intake-keys reply` refuses to seal to it",
             export("small-order reply key", body=changed(set_path(("sources", 0, "reply_public_key"), b64(bytes(32))))))
    magic_end = 9
    item_start = magic_end + EXPORT_ENTRY.size
    manifest_at = item_start + len(ITEM)
    signature_at = len(base) - 9 - 128
    sealed = base[manifest_at + EXPORT_ENTRY.size : signature_at]
    unsigned = base[:signature_at]

    v.refuse("export bundle: wrong magic", B, "FormatError", "a reply bundle's magic", of="export bundle", edits=[{"at": 0, "write": b"INTAKE-R".hex()}])
    v.refuse("export bundle: magic only", B, "TruncatedError", "the input ends after the magic", of="export bundle", edits=[{"cut": 8}])
    v.refuse("export bundle: version 1", B, "UnsupportedVersionError", "version 1 bundles are unsigned: refused", of="export bundle",
             edits=[{"at": 8, "write": "01"}])
    v.refuse("export bundle: version 3", B, "UnsupportedVersionError", "only version 2", of="export bundle", edits=[{"at": 8, "write": "03"}])
    v.refuse("export bundle: entry type 4", B, "FormatError", "entry types are 1, 2 and 3", of="export bundle", edits=[{"at": magic_end, "write": "04"}])
    v.refuse("export bundle: item of 0 bytes", B, "FormatError", "an item is 1..2^40 bytes",
             signed_export(b"INTAKE-X\x02" + entry(1, b"") + base[manifest_at:signature_at]))
    v.refuse("export bundle: item of 2^40 + 1 bytes", B, "FormatError", "refused from its header, before its bytes are read",
             of="export bundle", edits=[{"at": magic_end + 1, "write": ((1 << 40) + 1).to_bytes(8, "big").hex()}])
    v.refuse("export bundle: item after the manifest", B, "FormatError", "items come first",
             signed_export(b"INTAKE-X\x02" + entry(2, sealed) + entry(1, ITEM)))
    v.refuse("export bundle: two manifests", B, "FormatError", "the manifest comes exactly once",
             signed_export(unsigned + entry(2, sealed)))
    v.refuse("export bundle: signed without a manifest", B, "FormatError", "the signature entry before any manifest",
             signed_export(b"INTAKE-X\x02" + entry(1, ITEM)))
    v.refuse("export bundle: no manifest", B, "TruncatedError", "the input ends after the items", of="export bundle", edits=[{"cut": manifest_at}])
    v.refuse("export bundle: no signature", B, "TruncatedError", "the input ends after the manifest: unsigned or cut off",
             of="export bundle", edits=[{"cut": signature_at}])
    v.refuse("export bundle: cut inside the item", B, "TruncatedError", "the input ends inside an entry", of="export bundle", edits=[{"cut": item_start + 50}])
    v.refuse("export bundle: signature entry of 64 bytes", B, "FormatError", "the signature entry is 128 bytes",
             unsigned + EXPORT_ENTRY.pack(3, 64) + base[-64:])
    v.refuse("export bundle: one byte after the signature", B, "FormatError", "nothing may follow the signature entry",
             of="export bundle", edits=[{"append": "00"}])
    v.refuse("export bundle: signed by an untrusted server", B, "UnknownServerError", "a valid signature by a key the laptop does not trust",
             signed_export(unsigned, seed=OTHER_SERVER_SEED))
    v.refuse("export bundle: trusted verify key, other box key", B, "UnknownServerError",
             "the signature entry must name exactly the keys of a trusted server, both of them",
             signed_export(unsigned, box_public=BOB_PUBLIC))
    v.refuse("export bundle: item changed", B, "BadSignatureError", "one byte of the item differs from what was signed",
             of="export bundle", edits=[flip(base, item_start + 200)])
    v.refuse("export bundle: signature changed", B, "BadSignatureError", "one byte of the signature differs", of="export bundle",
             edits=[flip(base, len(base) - 10)])
    v.refuse("export bundle: manifest sealed to bob", B, "WrongKeyError", "the manifest does not open with alice's key",
             export("manifest for bob", recipients=(BOB_PUBLIC,)))
    v.refuse("export bundle: manifest of kind message", B, "RecordError", "an authenticated record whose kind is not manifest",
             export("manifest kind", kind="message"))
    v.refuse("export bundle: manifest record length wrong", B, "RecordError", "the manifest's envelope declares one byte more than its body",
             signed_export(b"INTAKE-X\x02" + entry(1, ITEM) + entry(2, fitted("manifest length", record(
                 "manifest", type="application/json", length=len(manifest()) + 1) + manifest()))))
    for name, body, error, why in [
        ("not JSON", b"sources: none", "FormatError", "the manifest is not JSON"),
        ("repeated key", manifest().replace(b'"version":1,', b'"version":1,"version":1,'), "FormatError", "version twice"),
        ("unknown key", changed(set_path(("comment",), "x")), "FormatError", "a key the manifest does not have"),
        ("format", changed(set_path(("format",), "intake-manifest")), "FormatError", "format is intake-export-manifest"),
        ("version 2", changed(set_path(("version",), 2)), "UnsupportedVersionError", "manifest version 1 only"),
        ("items 2", changed(set_path(("items",), 2)), "FormatError", "items is the number of item entries (1)"),
        ("items true", changed(set_path(("items",), True)), "FormatError", "true is not the integer 1"),
        ("entry 1", changed(set_path(ITEM_PATH + ("entry",), 1)), "FormatError", "entry indexes the item entries, 0 here"),
        ("size", changed(set_path(ITEM_PATH + ("size",), len(ITEM) + 1)), "FormatError", "size is that entry's length"),
        ("uppercase hash", changed(set_path(ITEM_PATH + ("blake2b",), hashlib.blake2b(ITEM, digest_size=32).hexdigest().upper())),
         "FormatError", "the hash in lowercase hex"),
        ("hash of other bytes", changed(set_path(ITEM_PATH + ("blake2b",), hashlib.blake2b(b"other", digest_size=32).hexdigest())),
         "TamperedError", "the item's BLAKE2b-256 differs from the one listed"),
        ("designation", changed(set_path(("sources", 0, "designation"), "Brave Otter")), "FormatError", "lowercase ASCII words only"),
        ("designation of 5 words", changed(set_path(("sources", 0, "designation"), "a brave and quiet otter")), "FormatError", "at most 4 words"),
        ("source id", changed(set_path(("sources", 0, "source_id"), "src/1")), "FormatError", "ids match [A-Za-z0-9_.:-]{1,128}"),
        ("reply key non-canonical", changed(set_path(("sources", 0, "reply_public_key"), non_canonical(b64(SOURCE_PUBLIC)))),
         "FormatError", "reply_public_key in canonical base64 of 32 bytes"),
        ("received day", changed(set_path(ITEM_PATH + ("received_day",), "2026-02-30")), "FormatError", "not a calendar date"),
        ("item kind", changed(set_path(ITEM_PATH + ("kind",), "reply")), "FormatError", "items are of kind message or file"),
        ("no recipients", changed(set_path(ITEM_PATH + ("recipients",), [])), "FormatError", "1..64 recipients"),
        ("recipient twice", changed(set_path(ITEM_PATH + ("recipients",), ["alice", "alice"])), "FormatError", "no recipient twice"),
        ("source twice", manifest(change=lambda doc: doc["sources"].append({**doc["sources"][0], "items": []})), "FormatError",
         "a source id appears once"),
    ]:
        v.refuse(f"export bundle: manifest {name}", B, error, why, export(f"manifest {name}", body=body))
    v.refuse("export bundle: item of another kind", B, "RecordError", "the item's record says file, the manifest message: a forgery by its writer",
             export("item kind", [fitted("file item", record("file", name="x.pdf", length=2) + b"hi")]))
    v.refuse("export bundle: item padding not zero", B, "RecordError",
             "the item authenticated but its padding is not zero: made so by whoever wrote it, not damage",
             export("item padding", [envelope("item padding", [(message(HI, padding=b"\x01"), FINAL)])]))
    damaged = bytearray(ITEM)
    damaged[200] ^= 0x01
    v.refuse("export bundle: item damaged before export", B, "DamagedItemError",
             "the item fails authentication but is the bytes the signed manifest lists: damaged on the server; its item is skipped, the others read",
             export("damaged item", [bytes(damaged)]))


def reply_bundles(v: Vectors) -> None:
    R = "reply bundle"
    base = reply_bundle()
    v.accept("reply bundle", R, "one reply to src-1, signed by alice", base)
    v.accept("reply bundle, no replies", R, "a signed bundle of no reply", reply_bundle([]))
    signature_at = len(base) - 5 - 64
    v.refuse("reply bundle: wrong magic", R, "FormatError", "an envelope's magic", of="reply bundle", edits=[{"at": 0, "write": MAGIC.hex()}])
    v.refuse("reply bundle: cut after the version", R, "TruncatedError", "no signer length", of="reply bundle", edits=[{"cut": 9}])
    v.refuse("reply bundle: version 1", R, "UnsupportedVersionError", "only version 2", of="reply bundle", edits=[{"at": 8, "write": "01"}])
    v.refuse("reply bundle: unknown signer", R, "UnknownSignerError", "signed by 'bobby', who is not registered (decided from the header)",
             of="reply bundle", edits=[{"at": 10, "write": b"bobby".hex()}])
    v.refuse("reply bundle: signer not a name", R, "FormatError", "'.lice' does not start with a letter or digit", of="reply bundle",
             edits=[{"at": 10, "write": b".lice".hex()}])
    v.refuse("reply bundle: no signature", R, "BadSignatureError", "the input ends where the signature entry should start",
             of="reply bundle", edits=[{"cut": signature_at}])
    v.refuse("reply bundle: cut inside the signature", R, "TruncatedError", "the input ends inside an entry", of="reply bundle",
             edits=[{"cut": len(base) - 1}])
    v.refuse("reply bundle: envelope changed", R, "BadSignatureError", "one byte of the reply differs from what was signed",
             of="reply bundle", edits=[flip(base, signature_at - 30)])
    v.refuse("reply bundle: one byte after the signature", R, "FormatError", "nothing may follow the signature entry",
             of="reply bundle", edits=[{"append": "00"}])
    v.refuse("reply bundle: entry type 3", R, "FormatError", "entry types are 1 and 2", reply_bundle(entry_type=3))
    v.refuse("reply bundle: entry of 185 bytes", R, "FormatError", "an entry is 176 + 10 bytes at least (refused from its header)",
             reply_bundle([(ROUTING, MAGIC + b"\x02")]))
    v.refuse("reply bundle: signature entry of 63 bytes", R, "FormatError", "the signature entry is 64 bytes",
             base[:signature_at] + struct.pack(">BI", 2, 63) + base[-63:])
    v.refuse("reply bundle: reply not an envelope", R, "FormatError", "the reply does not start with an envelope's magic and version 1 or 2",
             reply_bundle([(ROUTING, b"INTAKE-Q" + REPLY[8:])]))
    v.refuse("reply bundle: routing for another server", R, "FormatError", "the routing opens with none of the server's box keys",
             reply_bundle([(routing(b"src-1", "other server", BOB_PUBLIC), REPLY)]))
    v.refuse("reply bundle: routing names no source id", R, "FormatError", "'../x' is not a source id",
             reply_bundle([(routing(b"../x", "bad id"), REPLY)]))
    v.refuse("reply bundle: routing with text after the NUL bytes", R, "FormatError", "the id is followed only by NUL bytes",
             reply_bundle([(routing(b"src-1".ljust(100, b"\0") + b"x", "text after"), REPLY)]))


ERRORS = {  # SECURITY.md's names, each a class of keys/errors.py, with its parent there
    "FormatError": "KeysError", "UnsupportedVersionError": "FormatError", "TruncatedError": "FormatError", "RecordError": "FormatError",
    "TamperedError": "KeysError", "BadSignatureError": "TamperedError", "WrongKeyError": "KeysError", "BadPassphraseError": "KeysError",
    "UnknownSignerError": "KeysError", "UnknownServerError": "KeysError", "DamagedItemError": "KeysError",
}

READERS = {
    "envelope": "read to its FINAL message with alice's X25519 secret key (keys.secret.alice_x25519)",
    "public key file": "read as a journalist's public file (section 4)",
    "server key file": "read as the server's public file (section 5)",
    "secret key file": "opened with the passphrase in keys.secret_key_file_passphrase (section 4)",
    "export bundle": "read as `intake-keys decrypt` reads it (section 6, steps 1-3 and 5): trusting only the server key "
                     "keys.server_public_file; with alice's keys; opening every item to its FINAL message (an item whose envelope "
                     "opens with none of her keys is skipped). DamagedItemError concerns one item: a reader skips it, "
                     "reads the others, and reports it",
    "reply bundle": "verified as the server verifies it (section 7): alice is the only registered journalist "
                    "(keys.public.alice_ed25519), the server's box key is keys.secret.server_x25519",
}


def build() -> dict:
    v = Vectors()
    envelopes(v)
    key_files(v)
    export_bundles(v)
    reply_bundles(v)
    return {
        "format": "intake refusal vectors v2",
        "about": "Inputs a reader conforming to SECURITY.md sections 3-8 MUST refuse, each with the error that SECURITY.md "
                 "names (a class of keys/errors.py; `errors` gives each one's parent there), and inputs it MUST accept. An "
                 "input is `hex`, or `of` another input (of either list) changed by `edits`, in order: {at, write} writes "
                 "the hex bytes at that offset, {cut} keeps that many bytes, {append} adds the hex bytes at the end. "
                 "Envelopes made for these vectors are padded only as far as the case needs: a reader does not check sizes "
                 "against Padmé. Generated by tests/vectors/make_refusal_vectors.py, deterministically.",
        "errors": ERRORS,
        "readers": READERS,
        "keys": {
            "secret": {"alice_x25519": ALICE.hex(), "alice_ed25519_seed": ALICE_SIGNING_SEED.hex(), "server_seed": SERVER_SEED.hex(),
                       "server_x25519": SERVER_BOX.hex(), "source_x25519": SOURCE.hex()},
            "public": {"alice_x25519": ALICE_PUBLIC.hex(), "alice_ed25519": ALICE_VERIFY.hex(), "bob_x25519": BOB_PUBLIC.hex(),
                       "server_ed25519": SERVER_VERIFY.hex(), "server_x25519": SERVER_BOX_PUBLIC.hex(), "source_x25519": SOURCE_PUBLIC.hex()},
            "server_public_file": SERVER_FILE,
            "secret_key_file_passphrase": PASSPHRASE,
        },
        "accepted": v.accepted,
        "refusals": v.refusals,
    }


def text() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit(__doc__)
    pending = VECTORS.with_suffix(".json.new")
    pending.write_text(text())
    pending.replace(VECTORS)
