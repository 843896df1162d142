"""An upload's body read straight from the connection into the app's buffer (intake.socket_body):
what gunicorn read ahead comes first, no byte past the body is taken, and a request pipelined
behind an upload is still answered. Real sockets and real gunicorn, no stand-ins."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from intake.socket_body import SocketBody
from keys.envelope_reader import decrypt_bytes
from tests.fixtures_server import SourceClient, Upload, encode_multipart, run_intake_server


def _body_over(sock: socket.socket, length: int, read_ahead: bytes) -> SocketBody:
    unreader = SocketUnreader(sock)
    unreader.unread(read_ahead)  # what gunicorn read with the head
    return SocketBody(Body(LengthReader(unreader, length)))


def test_the_read_ahead_comes_first_then_the_connection_and_nothing_past_the_body_is_taken():
    sender, receiver = socket.socketpair()
    with sender, receiver:
        body = os.urandom(100_000)
        next_request = b"GET / HTTP/1.1\r\n\r\n"
        sender.sendall(body[1000:] + next_request)
        reader = _body_over(receiver, len(body), body[:1000])
        buffer = bytearray(64 * 1024)
        got = bytearray()
        while count := reader.readinto(buffer):
            got += buffer[:count]
        assert bytes(got) == body
        assert reader.readinto(buffer) == 0
        receiver.settimeout(1)
        assert receiver.recv(100) == next_request  # still there for gunicorn to parse


def test_read_ahead_past_the_body_is_given_back_for_the_next_request():
    sender, receiver = socket.socketpair()
    with sender, receiver:
        next_request = b"GET / HTTP/1.1\r\n\r\n"
        reader = _body_over(receiver, 5, b"hello" + next_request)
        buffer = bytearray(64)
        assert reader.readinto(buffer) == 5 and buffer[:5] == b"hello"
        assert reader.readinto(buffer) == 0
        assert reader.reader.unreader.take_buffered() == next_request


@pytest.mark.parametrize("size", [1024, 2000, 50_000])
def test_a_read_through_gunicorns_read_first_is_continued_exactly(size: int):
    """gunicorn's read(10) asks its reader for at least 1 KiB and keeps the rest in its own buffer:
    readinto must hand that out before anything else (a hostile review found it left behind)."""
    sender, receiver = socket.socketpair()
    with sender, receiver:
        body = os.urandom(size)
        sender.sendall(body)
        reader = _body_over(receiver, len(body), b"")
        first = reader.read(10)
        assert reader.buf.tell() > 0  # the case this test is about
        buffer = bytearray(64 * 1024)
        rest = bytearray()
        while count := reader.readinto(buffer):
            rest += buffer[:count]
        assert first + bytes(rest) == body


@pytest.mark.parametrize("file_size", [0, 300_000], ids=["read-with-the-head", "read-from-the-connection"])
def test_an_upload_with_a_request_pipelined_behind_it_is_stored_and_both_are_answered(tmp_path: Path, file_size: int):
    """A short upload arrives whole with its head, the next request's bytes too (gunicorn's
    read-ahead); a long one's end and the next request come through readinto's own reads."""
    with run_intake_server(tmp_path, journalist_count=1) as server:
        client = SourceClient(server.url)
        form = client.start_as_new_source()[1].form_with("message", "files")
        content = os.urandom(file_size)
        files = {"files": [Upload("evidence.bin", content)]} if content else {}
        content_type, pieces = encode_multipart(form, {"message": "pipelined"}, files)
        body = b"".join(pieces)
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        upload = (f"POST /submit HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        following = f"GET /submit HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", server.gunicorn.port), timeout=30) as sock:
            sock.sendall(upload + following)  # one stream: the GET's bytes follow the body's at once
            answers = b""
            while data := sock.recv(65536):
                answers += data
        assert answers.startswith(b"HTTP/1.1 303"), answers[:200]
        assert answers.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 200" in answers, answers[:400]
        with server.open_store() as store:
            stored = {decrypt_bytes(b"".join(store.submission_ciphertext(s.id)), server.journalists[0].private_key)[1]
                      for s in store.submissions()}
        assert stored == ({b"pipelined", content} if content else {b"pipelined"})
