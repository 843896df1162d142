"""Fuzz the public key file reader (keys.identity.PublicIdentity.from_text) as bytes off a USB stick.

Contract: a PublicIdentity that writes out and reads back the same, or a KeysError
(a file that is not UTF-8 is the caller's to refuse, as PublicIdentity.load does).
"""

from __future__ import annotations

import atheris

from common import run

with atheris.instrument_imports():
    from keys.errors import KeysError
    from keys.identity import PublicIdentity


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        identity = PublicIdentity.from_text(text)
    except KeysError:
        return
    again = PublicIdentity.from_text(identity.to_text())
    assert (again.name, bytes(again.encryption_key), bytes(again.verify_key)) == (
        identity.name, bytes(identity.encryption_key), bytes(identity.verify_key))


if __name__ == "__main__":
    run(test_one_input)
