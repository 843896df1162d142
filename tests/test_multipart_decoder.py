"""intake.app.multipart's decoder against Werkzeug's own, on the same input.

The decoder replaces Werkzeug's two compiled boundary expressions with byte searches,
so it must behave exactly as they do: the searches themselves are compared on many
buffers at every start position, then whole bodies (well-formed, odd line breaks,
preamble and epilogue, malformed, over intake's limits) are fed to both decoders cut
at every offset, and the events and errors must be the same.
"""

from __future__ import annotations

import random

import pytest
from werkzeug.sansio import multipart as werkzeug_multipart

from intake.app.ingest import MAX_PARTS, PARSER_BUFFER_LIMIT
from intake.app.multipart import MultipartDecoder

# Bytes that tell the two apart when they differ: every kind of line break, the blanks
# [^\S\n\r] allows (and the whitespace it does not), dashes, and a plain letter.
TRICKY = [b"\r", b"\n", b"\r\n", b"-", b"--", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x85", b"\xa0", b"x"]


def boundaries(rng: random.Random) -> list[bytes]:
    """What browsers send, what curl sends, and boundaries made of the tricky bytes."""
    made = [b"----WebKitFormBoundary" + bytes(rng.choice(b"ABCDEFabcdef0123456789") for _ in range(16)),
            b"------------------------" + bytes(rng.choice(b"0123456789abcdef") for _ in range(16)),
            b"a", b"-", b"--", b"x-", b"-x", b"ab.c+d", b"=_Part_1"]
    for _ in range(12):
        made.append(b"".join(rng.choice([b"-", b"x", b"y", b".", b"'"]) for _ in range(rng.randint(1, 6))))
    return made


def tricky_buffer(rng: random.Random, boundary: bytes, pieces: int) -> bytes:
    choices = [*TRICKY, b"--" + boundary, b"--" + boundary, b"--" + boundary[:-1], b"--" + boundary + b"--", boundary]
    return b"".join(rng.choice(choices) for _ in range(pieces))


def as_tuple(match) -> tuple | None:
    return None if match is None else (match.start(), match.end(), bytes(match.group(1)))


def test_the_boundary_searches_match_werkzeugs_expressions_at_every_start():
    rng = random.Random(10)
    compared = found = 0
    for boundary in boundaries(rng):
        stock, ours = werkzeug_multipart.MultipartDecoder(boundary), MultipartDecoder(boundary)
        for _ in range(60):
            buffer = tricky_buffer(rng, boundary, rng.randint(0, 14))
            for data in (buffer, bytearray(buffer)):
                for pos in range(len(buffer) + 1):
                    for name in ("preamble_re", "boundary_re"):
                        expected = as_tuple(getattr(stock, name).search(data, pos))
                        assert as_tuple(getattr(ours, name).search(data, pos)) == expected, (name, boundary, buffer, pos)
                        compared += 1
                        found += expected is not None
    assert found > compared // 8  # the buffers do hold boundaries, not only misses


def test_every_byte_after_a_boundary_is_judged_as_werkzeug_judges_it():
    boundary = b"b0undary"
    stock, ours = werkzeug_multipart.MultipartDecoder(boundary), MultipartDecoder(boundary)
    for first in range(256):
        for tail in (b"", b"\n", b"\r\n", b"--", b"-" + bytes([first])):
            for closing in (b"", b"--"):
                data = b"\r\n--" + boundary + closing + bytes([first]) + tail
                for name in ("preamble_re", "boundary_re"):
                    assert as_tuple(getattr(ours, name).search(data)) == as_tuple(getattr(stock, name).search(data)), (name, data)


def run(decoder, chunks: list[bytes]) -> list:
    """Every event and the first error, as a list: what the caller of a decoder sees."""
    seen: list = []
    try:
        for chunk in [*chunks, None]:
            decoder.receive_data(chunk)
            while True:
                event = decoder.next_event()
                if isinstance(event, werkzeug_multipart.NeedData):
                    seen.append("need data")
                    break
                seen.append(event)
                if isinstance(event, werkzeug_multipart.Epilogue):
                    return seen
    except Exception as error:  # noqa: BLE001 - the error is what is compared
        seen.append((type(error), str(error)))
    return seen


def cuts(body: bytes, rng: random.Random) -> list[list[bytes]]:
    """The body whole, cut in two at every offset, cut in three around every offset, byte by
    byte, and in random pieces."""
    ways = [[body], [body[i : i + 1] for i in range(len(body))]]
    for offset in range(len(body) + 1):
        ways.append([body[:offset], body[offset:]])
        ways.append([body[: offset // 2], body[offset // 2 : offset], body[offset:]])
    for _ in range(20):
        points = sorted(rng.sample(range(len(body) + 1), min(len(body) + 1, rng.randint(1, 8))))
        ways.append([body[a:b] for a, b in zip([0, *points], [*points, len(body)])])
    return ways


def form(boundary: bytes, parts: list[tuple[bytes, bytes]], *, line_break: bytes = b"\r\n",
         preamble: bytes = b"", epilogue: bytes = b"", after_boundary: bytes = b"", closing: bytes | None = None) -> bytes:
    """A multipart body: each part is (its header lines, its content)."""
    body = preamble
    for headers, content in parts:
        body += (line_break if body else b"") + b"--" + boundary + after_boundary + line_break
        body += headers + line_break + line_break + content
    end = closing if closing is not None else line_break + b"--" + boundary + b"--" + after_boundary + line_break
    return body + end + epilogue


def field(name: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="' + name + b'"'


def upload(name: bytes, filename: bytes, line_break: bytes = b"\r\n") -> bytes:
    return field(name) + b'; filename="' + filename + b'"' + line_break + b"Content-Type: application/octet-stream"


def bodies(rng: random.Random, boundary: bytes) -> list[bytes]:
    made = []
    for line_break in (b"\r\n", b"\n", b"\r"):
        made += [
            form(boundary, [(field(b"csrf_token"), b"token"), (field(b"message"), b"hello"),
                            (upload(b"files", b"a.txt", line_break), b"line 1\r\nline 2\r\n")], line_break=line_break),
            form(boundary, [(field(b"message"), b"")], line_break=line_break),
            form(boundary, [(field(b"message"), b"ends with a break\r")], line_break=line_break, after_boundary=b" \t"),
        ]
    made += [
        form(boundary, [(field(b"message"), b"x")], preamble=b"preamble text\r\n", epilogue=b"epilogue\r\n"),
        form(boundary, [(field(b"message"), b"--" + boundary[:-1] + b"\r\n-\r")]),  # almost a boundary inside
        form(boundary, [(field(b"message"), b"\r\n--" + boundary + b"x")]),  # the boundary as a prefix of content
        form(boundary, [(field(b"message"), b"a"), (field(b"message"), b"b")], after_boundary=b"\x0b\x0c "),
        form(boundary, [(field(b"message"), b"x")], closing=b"\r\n--" + boundary + b"--"),  # no break after the end
        form(boundary, [(field(b"message"), b"x")], closing=b"\r\n--" + boundary + b"-"),  # half a closing
        form(boundary, [(field(b"message"), b"x")], closing=b""),  # never closed
        form(boundary, [(field(b"message"), b"x")], closing=b"\r\n--" + boundary + b"\x1c\r\n"),  # not a blank
        form(boundary, [(b"Content-Type: text/plain", b"no disposition")]),
        form(boundary, [(field(b"message") + b"\r\n\tcontinued", b"folded header")]),
        form(boundary, [(b"Content-Disposition: form-data; name=\"\xff\"", b"bad header bytes")]),
        b"--" + boundary + b"--\r\n",  # an empty form
        # A boundary straight after a part's blank line, with no line break of its own: the
        # data's search must start at the buffer's start, not after the blank line.
        b"--" + boundary + b"\r\n" + field(b"message") + b"\r\n\r\n--" + boundary + b"--\r\n",
        b"--" + boundary + b"\n" + field(b"message") + b"\n\n--" + boundary + b"\n" + field(b"files") + b"\n\nx\n--" + boundary + b"--",
        b"--" + boundary + b"\r\n",  # a boundary and nothing after
        b"not a form at all\r\n",
        b"",
        bytes(rng.randrange(256) for _ in range(100)),
        tricky_buffer(rng, boundary, 30),
    ]
    return made


def test_the_events_and_errors_are_werkzeugs_for_every_way_of_cutting_a_body():
    rng = random.Random(2026)
    compared = 0
    for boundary in [b"----WebKitFormBoundaryq8Ez3BvT2s1RNd0P", b"-", b"x-", b"a"]:
        for body in bodies(rng, boundary):
            for chunks in cuts(body, rng):
                for limits in ({}, {"max_form_memory_size": 64, "max_parts": 1},
                               {"max_form_memory_size": PARSER_BUFFER_LIMIT, "max_parts": MAX_PARTS}):
                    expected = run(werkzeug_multipart.MultipartDecoder(boundary, **limits), chunks)
                    assert run(MultipartDecoder(boundary, **limits), chunks) == expected, (boundary, body, chunks, limits)
                    compared += 1
    assert compared > 10_000


def test_large_random_parts_and_intakes_limits_give_the_same_events():
    rng = random.Random(7)
    boundary = b"------------------------d74496d66958873e"
    for size in (0, 1, 65_535, 65_536, 200_000):
        content = rng.randbytes(size)
        # Line breaks and near-boundaries inside a large part, where a read ends.
        content = content[: size // 2] + b"\r\n--" + boundary[:-3] + b"\r" + content[size // 2 :]
        parts = [(field(b"csrf_token"), b"t"), (field(b"message"), b"m"), (upload(b"files", b"big.bin"), content)]
        body = form(boundary, parts)
        for read_size in (1_000, 65_536, 1 << 20):
            chunks = [body[i : i + read_size] for i in range(0, len(body), read_size)]
            for limits in ({}, {"max_form_memory_size": PARSER_BUFFER_LIMIT, "max_parts": MAX_PARTS},
                           {"max_form_memory_size": 10_000, "max_parts": 2}):
                expected = run(werkzeug_multipart.MultipartDecoder(boundary, **limits), chunks)
                assert run(MultipartDecoder(boundary, **limits), chunks) == expected, (size, read_size, limits)


def test_too_many_parts_is_refused_alike():
    boundary = b"manyparts"
    body = form(boundary, [(field(b"files"), b"x")] * (MAX_PARTS + 2))
    expected = run(werkzeug_multipart.MultipartDecoder(boundary, PARSER_BUFFER_LIMIT, max_parts=MAX_PARTS), [body])
    assert expected[-1][0].__name__ == "RequestEntityTooLarge"
    assert run(MultipartDecoder(boundary, PARSER_BUFFER_LIMIT, max_parts=MAX_PARTS), [body]) == expected


@pytest.mark.parametrize("name", ["preamble_re", "boundary_re"])
def test_werkzeugs_decoder_state_is_all_set(name):
    """A Werkzeug upgrade that adds state to its __init__ must show up here, not in production."""
    stock, ours = werkzeug_multipart.MultipartDecoder(b"b", 10, max_parts=2), MultipartDecoder(b"b", 10, max_parts=2)
    assert set(vars(ours)) == set(vars(stock))
    assert hasattr(getattr(ours, name), "search")
