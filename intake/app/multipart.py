"""Werkzeug's multipart decoder, without compiling two regular expressions per request.

Werkzeug's ``MultipartDecoder`` compiles two regular expressions from each request's
boundary. Boundaries are random, so no cache reuses them, and compiling them was about
a tenth of a worker's CPU per short submission (docs/PERFORMANCE.md, "Fifty senders, CPU
per message"). This decoder keeps Werkzeug's state machine and every one of its events
and errors; only the two boundary searches are done with ``bytes.find`` and a few byte
comparisons, which behave exactly as the expressions did (tests/test_multipart_decoder.py
runs both on the same bodies and requires the same events).

It also reads a part's data with less copying. For every read of a large upload Werkzeug
scanned the whole buffer for the delimiter and then again for the boundary, copied the
buffer to look for a partial boundary at its end, and copied the data out twice; here the
buffer is scanned once and the data copied out once (docs/PERFORMANCE.md, "Large uploads:
one scan of the multipart buffer").

And it is fed the way intake.app.ingest needs: ``receive_held`` takes the body bytes a request
has read, holds back the few after a boundary that Werkzeug would misread, and wipes what it
handed to the parser (the body is plaintext).
"""

from __future__ import annotations

from werkzeug.sansio import multipart as werkzeug_multipart

from keys.wiping import wipe

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
        return self.search_from(data, pos, data.find(self._delimiter, pos))

    def search_from(self, data: bytes | bytearray, pos: int, at: int) -> _BoundaryMatch | None:
        """``search(data, pos)`` when ``at`` is where the delimiter first occurs from ``pos`` (-1: nowhere)."""
        # The leftmost match starts before the first delimiter whose surroundings fit: a
        # line break ends at the delimiter, so a later delimiter can never start earlier.
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

    def _parse_data(self, data: bytes | bytearray, *, start: bool) -> tuple[bytes, int, bool]:
        """Werkzeug's ``_parse_data``, with the same results: the data up to the boundary (or
        up to where a boundary could begin at the end), where the buffer may be cut, and
        whether more data of this part follows."""
        data_start = werkzeug_multipart.LINE_BREAK_RE.match(data).end() if start else 0  # type: ignore[union-attr]
        # Werkzeug looks for the delimiter anywhere in the buffer, then searches from its start.
        at = data.find(self.boundary_re._delimiter)  # type: ignore[attr-defined]
        match = None if at == -1 else self.boundary_re.search_from(data, 0, at)  # type: ignore[attr-defined]
        if match is None:
            data_end = del_index = _last_partial_boundary_index(data, data_start, len(self.boundary))
        else:
            self.state = werkzeug_multipart.State.EPILOGUE if match.group(1).startswith(b"--") else werkzeug_multipart.State.PART
            data_end, del_index = match.start(), match.end()
        with memoryview(data) as view, view[data_start:data_end] as piece:
            return bytes(piece), del_index, match is None

    def receive_held(self, held: bytearray, *, at_the_end: bool = False) -> None:
        """Give the parser what it may see now of the body bytes ``held`` (at the end of the
        body, all of them), as :meth:`hand_over` does."""
        self.hand_over(held, len(held) if at_the_end else self._safe_cut(held))

    def hand_over(self, held: bytearray, cut: int) -> None:
        """Give the parser the first ``cut`` bytes of ``held`` (it copies them), then wipe
        and drop them from ``held``: deleting from a bytearray's front only moves its start,
        so bytes not wiped first would stay in its memory."""
        with memoryview(held) as view, view[:cut] as given:
            self.receive_data(given)
            wipe(given)
        del held[:cut]

    def _safe_cut(self, held: bytearray) -> int:
        """How many of the ``held`` bytes may be given now.

        Werkzeug 3.1's decoder mistakes the line break before a boundary for content
        when its input ends right after ``--boundary-`` (half of the closing ``--``)
        or after blanks following the boundary, and adds a stray CR to the part.
        Such a suffix is held back until more data (or the end) arrives.
        """
        delimiter = self.boundary_re._delimiter  # type: ignore[attr-defined]
        window = len(delimiter) + 64
        tail = self.buffer[-window:] + held[-window:]  # bytearrays: wiped below, like every copy of the body
        try:
            index = tail.rfind(delimiter)
            if index == -1:
                return len(held)
            after = len(tail) - index - len(delimiter)
            with memoryview(tail) as view, view[index + len(delimiter) :] as rest:
                held_back = rest == b"-" or (after > 0 and all(byte in b" \t" for byte in rest))
            return max(0, len(held) - after) if held_back else len(held)
        finally:
            wipe(tail)


def _last_partial_boundary_index(data: bytes | bytearray, data_start: int, boundary_length: int) -> int:
    """Where a boundary cut short by the end of the buffer could begin in ``data[data_start:]``
    (an index into ``data``; its end when there is none), as Werkzeug's method of that name
    finds it, without copying the buffer: the last CR or LF among the final bytes that a
    line break, two dashes and the boundary would take."""
    size = len(data) - data_start
    complete_boundary_index = size - (4 + boundary_length)  # len(b"\r\n--" + boundary)
    # A line break before complete_boundary_index counts as none, so only the tail is searched.
    tail = data_start + max(0, complete_boundary_index)
    found = []
    for line_break in (b"\n", b"\r"):
        last = data.rfind(line_break, tail)
        last = size if last == -1 else last - data_start
        found.append(size if last < complete_boundary_index else last)
    return min(found) + data_start
