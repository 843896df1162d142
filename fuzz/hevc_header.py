"""Fuzz the rewriter of HEVC picture headers in an MP4's moov (keys.cleaning.hevc_header).

Contract: for any bytes, either HeaderError or a moov no longer than the input (shorter exactly
when something was left out), on which a second pass finds nothing more to leave out; never
another exception, never more boxes read than MAX_BOXES.
"""

from __future__ import annotations

import atheris

from common import run

with atheris.instrument_imports():
    from keys.cleaning import hevc_header


def test_one_input(data: bytes) -> None:
    try:
        rewritten, left_out = hevc_header.rewrite_moov(data)
    except hevc_header.HeaderError:
        return
    assert len(rewritten) <= len(data) and (len(rewritten) < len(data)) == bool(left_out), (len(rewritten), len(data), left_out)
    assert all(what.startswith("HEVC header/") and what.isprintable() for what in left_out), left_out
    assert hevc_header.rewrite_moov(rewritten) == (rewritten, [])


if __name__ == "__main__":
    run(test_one_input)
