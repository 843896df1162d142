"""Fuzz the laptop's own JSON and key files, which a journalist may have copied or edited:
source.json (keys.source_record), the pinned sources (keys.pins) and a server key file
(keys.server_key.ServerPublicKey.from_text). The first byte picks the reader.

Contract: the parsed value, or a KeysError; never another exception.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import atheris

from common import run

with atheris.instrument_imports():
    from keys.errors import KeysError
    from keys.pins import load_pins
    from keys.server_key import ServerPublicKey
    from keys.source_record import SOURCE_RECORD, load_source_record

_work = tempfile.TemporaryDirectory(prefix="intake-fuzz-records-", dir="/dev/shm")
FOLDER = Path(_work.name)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, rest = data[0] % 3, data[1:]
    try:
        if kind == 0:
            (FOLDER / SOURCE_RECORD).write_bytes(rest)
            load_source_record(FOLDER)
        elif kind == 1:
            path = FOLDER / "pinned-sources.json"
            path.write_bytes(rest)
            load_pins(path)
        else:
            try:
                text = rest.decode("utf-8")
            except UnicodeDecodeError:
                return
            key = ServerPublicKey.from_text(text)
            assert ServerPublicKey.from_text(key.to_text()) == key
    except KeysError:
        return
    finally:
        for name in (SOURCE_RECORD, "pinned-sources.json"):
            try:
                os.unlink(FOLDER / name)
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    run(test_one_input)
