"""Fuzz the reply-bundle reader (keys.reply_bundle.verify_reply_bundle), as the server runs it
on an upload from the journalist interface or `intake import-replies`.

First byte even: the rest as a bundle file. Odd: the rest becomes the replies of a bundle
that the harness signs as a registered journalist, each reply's routing sealed to the
harness's server key: the reader then gets past the signature to every entry.

Contract: VerifiedReplies whose every source id is a usable string, or a KeysError.
"""

from __future__ import annotations

import io

import atheris

from common import fixed_key_bytes, run, usable_text

with atheris.instrument_imports():
    from keys import reply_bundle
    from keys.errors import KeysError

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from keys.envelope import MAGIC, READ_VERSIONS
from keys.identity import Identity
from keys.server_key import ServerPublicKey, server_keys_from_seed

SERVER_SEED = fixed_key_bytes("reply-server")
_signing, SERVER_BOX = server_keys_from_seed(SERVER_SEED)
SERVER_PUBLIC = ServerPublicKey.from_seed(SERVER_SEED)
JOURNALIST = Identity("fuzzer", PrivateKey(fixed_key_bytes("reply-journalist")), SigningKey(fixed_key_bytes("reply-sign")))
VERIFY_KEYS = {JOURNALIST.name: JOURNALIST.signing_key.verify_key}


def authentic(provider: atheris.FuzzedDataProvider) -> bytes:
    replies = []
    for _ in range(provider.ConsumeIntInRange(0, 3)):
        source_id = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 140))
        try:
            routing = reply_bundle.seal_routing(source_id, SERVER_PUBLIC.encryption_key)
        except (KeysError, ValueError):
            routing = provider.ConsumeBytes(176).ljust(176, b"\0")
        version = READ_VERSIONS[provider.ConsumeIntInRange(0, len(READ_VERSIONS) - 1)]  # old laptops still write version 1
        sealed = MAGIC + bytes([version]) + provider.ConsumeBytes(provider.ConsumeIntInRange(0, 4096))
        replies.append(reply_bundle.SealedReply(routing, sealed))
    out = io.BytesIO()
    try:
        reply_bundle.write_reply_bundle(out, JOURNALIST, replies)
    except (KeysError, ValueError):
        return b""
    return out.getvalue()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    raw = authentic(atheris.FuzzedDataProvider(data[1:])) if data[0] & 1 else data[1:]
    try:
        verified = reply_bundle.verify_reply_bundle(io.BytesIO(raw), VERIFY_KEYS, [SERVER_BOX])
    except KeysError:
        return
    for source_id, _envelope in verified.replies:
        assert usable_text(source_id)


if __name__ == "__main__":
    run(test_one_input)
