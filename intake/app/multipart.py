"""Werkzeug's multipart decoder, without compiling two regular expressions per request.

Werkzeug's ``MultipartDecoder`` compiles two regular expressions from each request's
boundary. Boundaries are random, so no cache reuses them, and compiling them was about
a tenth of a worker's CPU per short submission (docs/PERFORMANCE.md, "Fifty senders, CPU
per message"). This decoder keeps Werkzeug's state machine and every one of its events
and errors; only the two boundary searches are done with ``bytes.find`` and a few byte
comparisons, which behave exactly as the expressions did (tests/test_multipart_decoder.py
runs both on the same bodies and requires the same events).
"""

from __future__ import annotations

from werkzeug.sansio import multipart as werkzeug_multipart

# What ``[^\S\n\r]`` matches in a bytes pattern: ASCII whitespace but the line breaks.
_BLANKS = b" \t\x0b\x0c"
_CR, _LF = 13, 10


class _BoundaryMatch:
    """The three things Werkzeug reads from a match: where it starts and ends, and group 1."""

    __slots__ = ("_start", "_end", "_after")

    def __init__(self, start: int, end: int, after: bytes):
        self._start, self._end, self._after = start, end, after

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def group(self, index: int) -> bytes:
        if index != 1:
            raise IndexError("only group 1 is kept")
        return self._after


class _BoundarySearch:
    """``search`` as Werkzeug's compiled boundary expressions do it:
    ``(?:\\r\\n|\\n|\\r)--BOUNDARY(--[^\\S\\n\\r]*(?:\\r\\n|\\n|\\r)?|[^\\S\\n\\r]*(?:\\r\\n|\\n|\\r))``,
    with the leading line break optional before the first boundary (``break_optional``)."""

    __slots__ = ("_delimiter", "_break_optional")

    def __init__(self, boundary: bytes, *, break_optional: bool):
        self._delimiter = b"--" + boundary
        self._break_optional = break_optional

    def search(self, data: bytes | bytearray, pos: int = 0) -> _BoundaryMatch | None:
        # The leftmost match starts before the first delimiter whose surroundings fit: a
        # line break ends at the delimiter, so a later delimiter can never start earlier.
        at = data.find(self._delimiter, pos)
        while at != -1:
            start = self._start(data, pos, at)
            if start is not None:
                after = at + len(self._delimiter)
                end = _end_after_delimiter(data, after)
                if end is not None:
                    return _BoundaryMatch(start, end, bytes(data[after:end]))
            at = data.find(self._delimiter, at + 1)
        return None

    def _start(self, data: bytes | bytearray, pos: int, at: int) -> int | None:
        """Where the line break before the delimiter at ``at`` starts (None: there is none)."""
        if at - 2 >= pos and data[at - 2] == _CR and data[at - 1] == _LF:
            return at - 2
        if at - 1 >= pos and data[at - 1] in (_CR, _LF):
            return at - 1
        return at if self._break_optional else None


def _line_break_length(data: bytes | bytearray, at: int) -> int:
    """2 for CRLF at ``at``, 1 for a lone CR or LF, 0 for none (CRLF is tried first)."""
    if data[at : at + 2] == b"\r\n":
        return 2
    return 1 if data[at : at + 1] in (b"\r", b"\n") else 0


def _end_after_delimiter(data: bytes | bytearray, at: int) -> int | None:
    """The end of what must follow a delimiter: ``--``, blanks and an optional line break
    (the closing delimiter), or blanks and a line break; None when neither is there (yet)."""
    size = len(data)
    closing = data[at : at + 2] == b"--"
    index = at + 2 if closing else at
    while index < size and data[index] in _BLANKS:
        index += 1
    line_break = _line_break_length(data, index)
    if not closing and not line_break:
        return None
    return index + line_break


class MultipartDecoder(werkzeug_multipart.MultipartDecoder):
    """Werkzeug's decoder (same arguments, events and errors) with boundary searches that
    compile nothing. ``__init__`` sets what Werkzeug's sets; the differential test fails
    if a Werkzeug upgrade adds state this one lacks."""

    def __init__(self, boundary: bytes, max_form_memory_size: int | None = None, *, max_parts: int | None = None) -> None:
        self.buffer = bytearray()
        self.complete = False
        self.max_form_memory_size = max_form_memory_size
        self.max_parts = max_parts
        self.state = werkzeug_multipart.State.PREAMBLE
        self.boundary = boundary
        self.preamble_re = _BoundarySearch(boundary, break_optional=True)  # type: ignore[assignment]
        self.boundary_re = _BoundarySearch(boundary, break_optional=False)  # type: ignore[assignment]
        self._search_position = 0
        self._parts_decoded = 0
