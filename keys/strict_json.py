"""JSON as every intake reader takes it: one strict reading, the same everywhere.

The manifest, envelope records, source.json and the laptop's pin file are read
here. A document is refused when it is not UTF-8, has a key twice in one object
(two readers could keep different values), holds NaN or Infinity (not JSON), or
holds a string with a lone surrogate (``"\\ud800"``: valid JSON escapes, but no
text: it cannot become a file name or be written back as UTF-8).
"""

from __future__ import annotations

import base64
import binascii
import json

from keys.errors import FormatError
from keys.told import told


class _Refused(ValueError):
    pass


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(told("duplicate key"))
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise _Refused(told("{name} is not JSON", name=name))


def _check_text(value: object) -> None:
    """Every string (keys included) must be encodable as UTF-8: no lone surrogates."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _Refused(told("lone surrogate")) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads(data: bytes, what: str) -> object:
    """Parse ``data``; FormatError naming ``what`` if it breaks any rule above."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_no_constant)
        _check_text(value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError(told("{what} is not valid JSON (or has a repeated key, or text that is not Unicode)", what=what)) from None
    return value


def is_int(value: object) -> bool:
    """An integer, and not a boolean (``True == 1`` in Python, never in our formats)."""
    return type(value) is int


def b64_key(value: object, size: int, what: str) -> bytes:
    """Canonical standard base64 (RFC 4648 section 4, ``+/``, with ``=`` padding) of exactly ``size`` bytes.

    Canonical: re-encoding the bytes gives the same text, so the unused low bits of
    the last character are zero and no two texts name the same key.
    """
    if not isinstance(value, str):
        raise FormatError(told("{what} is not base64", what=what))
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(told("{what} is not base64", what=what)) from None
    if len(raw) != size:
        raise FormatError(told("{what} has the wrong length (expected {size} bytes)", what=what, size=size))
    if base64.b64encode(raw).decode("ascii") != value:
        raise FormatError(told("{what} is not canonical base64 (its last character has unused bits set)", what=what))
    return raw
