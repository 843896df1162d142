"""What every harness shares: fixed keys (public, for fuzzing only) and the contract check.

A harness feeds untrusted bytes to one reader. The contract: the reader returns a
well-formed result or raises the toolkit's or the app's own typed error. Anything
else (another exception, a result that cannot be used) is a crash for libFuzzer.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fixed_key_bytes(label: str) -> bytes:
    return hashlib.sha256(b"intake fuzzing key: " + label.encode()).digest()


def run(test_one_input: Callable[[bytes], None]) -> None:
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def usable_text(value: object) -> bool:
    """A str that can be written out (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
