"""Fuzz the MP4/QuickTime box reader that finds tracks mat2 keeps (keys.cleaning.tracks).

Contract: a list of printable ``handler/format`` strings ([] for a damaged file), never an
exception, and never more boxes read than MAX_BOXES (no endless loop on boxes that point back).
"""

from __future__ import annotations

import io

import atheris

from common import run

with atheris.instrument_imports():
    from keys.cleaning import tracks


def test_one_input(data: bytes) -> None:
    found = tracks.tracks_in(io.BytesIO(data), len(data))
    assert isinstance(found, list)
    for track in found:
        handler, slash, sample_format = track.partition("/")
        assert slash and handler and sample_format and track.isprintable() and track.isascii(), track


if __name__ == "__main__":
    run(test_one_input)
