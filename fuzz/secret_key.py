"""Fuzz the secret key file reader (keys.identity.Identity.from_secret_bytes).

A file may ask for any Argon2id cost within the reader's bounds; to keep each run
short, an in-range cost is lowered to the minimum before reading (out-of-range costs
are left as they are, so their refusal is still exercised).

Contract: an Identity (only for the seed's passphrase), or a KeysError.
"""

from __future__ import annotations

import atheris

from common import run

with atheris.instrument_imports():
    from keys.errors import KeysError
    from keys.identity import _SECRET_HEAD, KDF_MAX, KDF_MIN, SECRET_MAGIC, Identity

PASSPHRASE = "fuzz passphrase"


def cheap(data: bytes) -> bytes:
    if not data.startswith(SECRET_MAGIC) or len(data) < _SECRET_HEAD.size:
        return data
    magic, version, opslimit, memlimit = _SECRET_HEAD.unpack_from(data)
    if KDF_MIN.opslimit <= opslimit <= KDF_MAX.opslimit and KDF_MIN.memlimit <= memlimit <= KDF_MAX.memlimit:
        return _SECRET_HEAD.pack(magic, version, KDF_MIN.opslimit, KDF_MIN.memlimit) + data[_SECRET_HEAD.size:]
    return data


def test_one_input(data: bytes) -> None:
    try:
        identity = Identity.from_secret_bytes(cheap(data), PASSPHRASE)
    except KeysError:
        return
    assert identity.public.fingerprint


if __name__ == "__main__":
    run(test_one_input)
