"""Fuzz the envelope's record parser (keys.envelope.Metadata.decode), the JSON that names an item.

Contract: a Metadata whose text fields can be written out and re-encoded, or a KeysError.
"""

from __future__ import annotations

import atheris

from common import run, usable_text

with atheris.instrument_imports():
    from keys.envelope import Metadata
    from keys.errors import KeysError


def test_one_input(data: bytes) -> None:
    try:
        meta = Metadata.decode(data)
    except KeysError:
        return
    assert usable_text(meta.kind)
    assert meta.name is None or usable_text(meta.name), "a record's name cannot be written out"
    assert meta.content_type is None or usable_text(meta.content_type)
    assert Metadata.decode(meta.encode()[2:]) == meta


if __name__ == "__main__":
    run(test_one_input)
