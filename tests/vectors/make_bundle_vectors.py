"""Generate tests/vectors/bundles-v2.json: export bundles (version 2, signed) and reply bundles
(version 2, routing sealed to the server), one of each whose envelopes are version 2 (as
written today) and one of each whose envelopes are version 1 (as written before release 0.2.0;
today's writers cannot make them, so a re-run keeps those two from the file as it is). Run
once; encryption is randomised, so re-running makes different but equally valid vectors. Keys
are fixed and public: never use them for anything else.

    PYTHONPATH=. .venv/bin/python tests/vectors/make_bundle_vectors.py              # rewrites tests/vectors/bundles-v2.json
    PYTHONPATH=. .venv/bin/python tests/vectors/make_bundle_vectors.py --markdown   # part of section 9 of SECURITY.md

tests/test_vectors.py reads the four bundles with the published keys and checks that SECURITY.md
prints what the JSON file holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from keys import bundle, envelope, reply_bundle
from keys.identity import Identity
from keys.server_key import ServerPublicKey, server_keys_from_seed

VECTORS = Path(__file__).parent / "bundles-v2.json"

JOURNALIST = Identity(
    "alice",
    PrivateKey(hashlib.sha256(b"intake test vector key: alice").digest()),  # alice of envelope-v1.json and envelope-v2.json
    SigningKey(hashlib.sha256(b"intake test vector key: alice signing").digest()),
)
SERVER_SEED = hashlib.sha256(b"intake test vector key: server").digest()
SOURCE = PrivateKey(hashlib.sha256(b"intake test vector key: source reply").digest())
MESSAGE = "Der Bürgermeister hat gelogen.\n".encode()
FILE = bytes((i * 7 + 3) % 256 for i in range(2000))
REPLY = "Thank you. — the desk"


def _export() -> bytes:
    recipients = [JOURNALIST.public.encryption_key]
    sealed = [
        envelope.encrypt_bytes(MESSAGE, recipients, envelope.Metadata("message", content_type="text/plain; charset=utf-8", length=len(MESSAGE))),
        envelope.encrypt_bytes(FILE, recipients, envelope.Metadata("file", name="minutes.pdf", content_type="application/pdf", length=len(FILE))),
    ]
    items = [
        bundle.ExportItem("sub-1", "message", "2026-11-28", len(sealed[0]), ["alice"], lambda: [sealed[0]]),
        bundle.ExportItem("sub-2", "file", "2026-11-28", len(sealed[1]), ["alice"], lambda: [sealed[1]]),
    ]
    source = bundle.ExportSource("src-1", "brave otter", bytes(SOURCE.public_key), items)
    return b"".join(bundle.stream_export_bundle(recipients, [source], server_keys_from_seed(SERVER_SEED)[0]))


def _reply() -> bytes:
    server = ServerPublicKey.from_seed(SERVER_SEED)
    out = io.BytesIO()
    sealed = reply_bundle.SealedReply(reply_bundle.seal_routing("src-1", server.encryption_key), reply_bundle.seal_reply(REPLY, SOURCE.public_key))
    reply_bundle.write_reply_bundle(out, JOURNALIST, [sealed])
    return out.getvalue()


def main() -> None:
    signing, box = server_keys_from_seed(SERVER_SEED)
    server = ServerPublicKey.from_seed(SERVER_SEED)
    export, reply = _export(), _reply()
    before = json.loads(VECTORS.read_text())  # the bundles with version-1 envelopes, kept
    doc = {
        "format": "intake bundles v2",
        "keys": {
            "journalist": {"name": JOURNALIST.name, "x25519_secret": bytes(JOURNALIST.private_key).hex(),
                           "x25519_public": bytes(JOURNALIST.public.encryption_key).hex(),
                           "ed25519_seed": bytes(JOURNALIST.signing_key).hex(),
                           "ed25519_public": bytes(JOURNALIST.signing_key.verify_key).hex(),
                           "fingerprint": JOURNALIST.public.fingerprint},
            "server": {"seed": SERVER_SEED.hex(), "ed25519_public": bytes(signing.verify_key).hex(),
                       "x25519_secret": bytes(box).hex(), "x25519_public": bytes(box.public_key).hex(),
                       "fingerprint": server.fingerprint, "public_file": server.to_text()},
            "source": {"x25519_secret": bytes(SOURCE).hex(), "x25519_public": bytes(SOURCE.public_key).hex()},
        },
        "export": {"envelope_version": 1, **before["export"]},
        "reply": {"envelope_version": 1, **before["reply"]},
        "export_with_v2_envelopes": {
            "envelope_version": envelope.VERSION,
            "sources": [{"source_id": "src-1", "designation": "brave otter", "reply_public_key": bytes(SOURCE.public_key).hex(),
                         "items": [{"item_id": "sub-1", "kind": "message", "received_day": "2026-11-28", "recipients": ["alice"],
                                    "name": None, "type": "text/plain; charset=utf-8", "body_hex": MESSAGE.hex()},
                                   {"item_id": "sub-2", "kind": "file", "received_day": "2026-11-28", "recipients": ["alice"],
                                    "name": "minutes.pdf", "type": "application/pdf", "body": "2000 bytes, byte i = (7·i + 3) mod 256"}]}],
            "size": len(export),
            "sha256": hashlib.sha256(export).hexdigest(),
            "signed_blake2b_512": hashlib.blake2b(export[: -(9 + bundle.SIGNATURE_ENTRY_LENGTH)], digest_size=64).hexdigest(),
            "hex": export.hex(),
        },
        "reply_with_v2_envelopes": {
            "envelope_version": envelope.VERSION,
            "signer": "alice",
            "replies": [{"source_id": "src-1", "text": REPLY}],
            "size": len(reply),
            "sha256": hashlib.sha256(reply).hexdigest(),
            "hex": reply.hex(),
        },
    }
    pending = VECTORS.with_suffix(".json.new")
    pending.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    pending.replace(VECTORS)


def _described(vector: dict, signed: bool = False) -> str:
    text = f"{vector['size']} bytes, SHA-256 `{vector['sha256']}`"
    return text + (f"; the BLAKE2b-512 its signature covers is `{vector['signed_blake2b_512']}`" if signed else "")


def markdown() -> str:
    """The bundle vectors' part of SECURITY.md, from the published JSON file."""
    doc = json.loads(VECTORS.read_text())
    keys = doc["keys"]
    journalist, server, source = keys["journalist"], keys["server"], keys["source"]
    out = [
        "Keys (hex). The journalist's X25519 key is alice's of the envelope vectors.\n",
        "```",
        f"journalist alice  x25519 secret  {journalist['x25519_secret']}",
        f"                  ed25519 seed   {journalist['ed25519_seed']}",
        f"                  ed25519 public {journalist['ed25519_public']}",
        f"                  fingerprint    {journalist['fingerprint']}",
        f"server            seed           {server['seed']}",
        f"                  ed25519 public {server['ed25519_public']}",
        f"                  x25519 secret  {server['x25519_secret']}",
        f"                  x25519 public  {server['x25519_public']}",
        f"                  fingerprint    {server['fingerprint']}",
        f"source            x25519 secret  {source['x25519_secret']}",
        "```\n",
        f"**Export bundle vectors.** One source `src-1` (\"brave otter\", reply key = the source key above) with a message "
        f"(`{doc['export']['sources'][0]['items'][0]['body_hex']}`, type `text/plain; charset=utf-8`) and a file "
        f"`minutes.pdf` (2000 bytes, byte i = (7·i + 3) mod 256, type `application/pdf`), both received 2026-11-28 and "
        f"sealed to alice; signed by the server key above. With envelopes of version 2 (`export_with_v2_envelopes`): "
        f"{_described(doc['export_with_v2_envelopes'], signed=True)}. With envelopes of version 1 (`export`): "
        f"{_described(doc['export'], signed=True)}.\n",
        f"**Reply bundle vectors.** Signed by alice; one reply to `src-1` (routing sealed to the server's X25519 key), "
        f"text \"{doc['reply']['replies'][0]['text']}\" sealed to the source key. With an envelope of version 2 "
        f"(`reply_with_v2_envelopes`): {_described(doc['reply_with_v2_envelopes'])}. With an envelope of version 1 "
        f"(`reply`): {_described(doc['reply'])}.\n",
        "The full hex of the four bundles is in the JSON file.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown())
    else:
        main()
