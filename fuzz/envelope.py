"""Fuzz the envelope reader (keys.envelope_reader.EnvelopeReader) with two kinds of input.

- raw (first byte even): the bytes as an envelope file, for the header parser;
- authentic (first byte odd): the rest builds an envelope (version 2, or version 1, which is
  still read) whose header and messages are correctly encrypted to the harness key, but whose plaintext (used-length fields,
  record, padding, body, tags, message sizes) is whatever the fuzzer chose. Random
  bytes never get past authentication; this form reaches everything behind it.

Contract: a Metadata with usable text and a body, or a KeysError.
"""

from __future__ import annotations

import hashlib
import io

import atheris

from common import fixed_key_bytes, run, usable_text

with atheris.instrument_imports():
    from nacl import bindings as sodium
    from nacl.public import PrivateKey

    from keys.envelope import MAGIC, MESSAGE_SIZE
    from keys.envelope_reader import EnvelopeReader
    from keys.errors import KeysError

KEY = PrivateKey(fixed_key_bytes("envelope"))
TAGS = (sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE, sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL,
        sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH, sodium.crypto_secretstream_xchacha20poly1305_TAG_REKEY)


def authentic_envelope(provider: atheris.FuzzedDataProvider) -> bytes:
    file_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    public = bytes(KEY.public_key)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    if provider.ConsumeBool():
        header = MAGIC + bytes([1, 1]) + sodium.crypto_box_seal(file_key, public) + stream_header
    else:
        ephemeral, secret = sodium.crypto_box_keypair()
        nonce = hashlib.blake2b(ephemeral + public, digest_size=24).digest()
        header = MAGIC + bytes([2, 1]) + ephemeral + sodium.crypto_box_easy(file_key, nonce, public, secret) + stream_header
    out, ad = [header], header
    for _ in range(provider.ConsumeIntInRange(1, 3)):
        tag = TAGS[provider.ConsumeIntInRange(0, 3)]
        plaintext = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 2048))
        if provider.ConsumeBool():  # a full-size message, as every one but the last must be
            plaintext = plaintext[:MESSAGE_SIZE].ljust(MESSAGE_SIZE, b"\0")
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, plaintext, ad, tag))
        ad = None
    out.append(provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64)))  # trailing bytes, if any
    return b"".join(out)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    envelope = authentic_envelope(atheris.FuzzedDataProvider(data[1:])) if data[0] & 1 else data[1:]
    try:
        reader = EnvelopeReader(io.BytesIO(envelope), KEY)
        body = b"".join(reader.chunks())
    except KeysError:
        return
    meta = reader.metadata
    assert usable_text(meta.kind), meta.kind
    assert meta.name is None or usable_text(meta.name), "a record's name cannot be written out"
    assert meta.content_type is None or usable_text(meta.content_type)
    assert meta.length is None or meta.length == len(body)
    assert reader.complete


if __name__ == "__main__":
    run(test_one_input)
