"""A receipt per file, over real gunicorn and real sockets: each file of an upload is published
once it has arrived whole, so a connection cut or a refusal later in the request keeps the files
before it, the source is told which (the refusal's page, or the status page after logging in),
and the file in flight never appears, not even in part."""

from __future__ import annotations

import html
import os
import re
import socket
import time
from collections.abc import Iterator

import pytest

from keys.envelope_reader import decrypt_bytes
from tests.fixtures_server import IntakeServer, SourceClient, Upload, encode_multipart, run_intake_server

pytestmark = pytest.mark.slow

KiB = 1024


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory) -> Iterator[IntakeServer]:
    """The real app under gunicorn with a 1 MiB limit per submission."""
    with run_intake_server(tmp_path_factory.mktemp("receipts"), env={"INTAKE_MAX_UPLOAD_MIB": "1"}) as server:
        yield server


def stored_contents(server: IntakeServer) -> tuple[list[bytes], int]:
    """What a journalist would read: every visible submission decrypted, and the pending uploads."""
    with server.open_store() as store:
        contents = [decrypt_bytes(b"".join(store.submission_ciphertext(s.id)), server.journalists[0].private_key)[1]
                    for s in store.submissions()]
        return contents, store.counts()["pending uploads"]


def wait_until_settled(server: IntakeServer, timeout: float = 30) -> list[bytes]:
    """The visible contents once the worker has noticed the cut and dropped the upload in flight."""
    deadline = time.monotonic() + timeout
    while True:
        contents, pending = stored_contents(server)
        if pending == 0:
            return contents
        assert time.monotonic() < deadline, "the cut upload is still pending"
        time.sleep(0.2)


def open_post(server: IntakeServer, client: SourceClient, content_type: str, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=60)
    head = [
        "POST /submit HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}",
        "Cookie: " + "; ".join(f"{k}={v}" for k, v in client.cookies.items()),
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return sock


def read_answer(sock: socket.socket) -> tuple[str, str]:
    """(head, body) of the answer, read as a browser does, to its Content-Length: the server may
    keep the connection open after a refusal (it reads what is left of the body)."""
    sock.settimeout(30)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    except ConnectionResetError:
        head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body.decode("utf-8", errors="replace")


def three_files(tag: str) -> list[Upload]:
    return [Upload(f"{tag}-{n}.pdf", os.urandom(300 * KiB + n * 1000), "application/pdf") for n in (1, 2, 3)]


def test_a_connection_cut_after_the_second_of_three_files_keeps_two_and_the_status_page_lists_them(small_limit_server):
    server = small_limit_server
    client = SourceClient(server.url)
    codename, page = client.start_as_new_source()
    files = three_files("cut")
    content_type, pieces = encode_multipart(page.form_with("message", "files"), {"message": ""}, {"files": files})
    third = pieces.index(files[2].content)
    # Everything up to the third file's headers and half its content: the second file's closing
    # delimiter has arrived, the third file has not.
    sent = pieces[:third] + [files[2].content[: len(files[2].content) // 2]]
    sock = open_post(server, client, content_type, {"Content-Length": str(sum(map(len, pieces)))})
    for piece in sent:
        sock.sendall(piece)
    time.sleep(1)  # the worker reads what arrived before the cut
    sock.close()

    contents = wait_until_settled(server)
    assert sorted(contents) == sorted([files[0].content, files[1].content]), "not exactly the two whole files"
    assert not any(files[2].content.startswith(content) for content in contents), "the third file appears in part"

    # The source's browser got no answer; it comes back, logs in, and sees what arrived.
    returning = SourceClient(server.url)
    status = returning.log_in(codename)
    assert status.status == 200 and "Status and replies" in status.text
    what_you_sent = status.text.split("What you sent", 1)[1].split("Replies from our journalists", 1)[0]
    assert len(re.findall(r"<li>\s*File: received", what_you_sent)) == 2, what_you_sent
    assert "If sending broke off, only what arrived whole is listed here: send the rest again." in what_you_sent


REFUSAL_WORDS = {
    "en": ("This arrived safely and was kept:", "The rest did not arrive: a submission can be at most 1 MiB"),
    "ru": ("Благополучно дошло и сохранено:", "Остальное не дошло: за один раз можно отправить не больше 1 МБ"),
}


@pytest.mark.parametrize("language", sorted(REFUSAL_WORDS))
def test_a_refusal_for_size_after_two_files_names_the_two_files_received(small_limit_server, language):
    server = small_limit_server
    listed, advice = REFUSAL_WORDS[language]
    before, _ = stored_contents(server)
    client = SourceClient(server.url)
    client.get(f"/language/{language}")
    _codename, page = client.start_as_new_source()
    files = three_files("size")
    files[2].content += os.urandom(200 * KiB)
    files[1].name = "<b>second</b> & co's.pdf"  # names are shown escaped
    content_type, pieces = encode_multipart(page.form_with("message", "files"), {"message": ""}, {"files": files})
    body = b"".join(pieces)
    assert len(body) > 1024 * KiB > body.index(files[2].content)  # over the limit only inside the third file
    # No Content-Length (chunked), so the server finds the body too large only while it arrives.
    sock = open_post(server, client, content_type, {"Transfer-Encoding": "chunked"})
    try:
        for start in range(0, len(body), 64 * KiB):
            piece = body[start : start + 64 * KiB]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the rest of the body was sent
    head, text = read_answer(sock)
    sock.close()
    assert head.startswith("HTTP/1.1 413"), head
    kept = text.split(listed, 1)[1].split("</ul>", 1)[0]
    assert "size-1.pdf" in kept and files[1].name in html.unescape(kept) and "<b>second</b>" not in text
    assert "size-3.pdf" not in text
    assert advice in text

    contents = wait_until_settled(server)
    new = [content for content in contents if content not in before]
    assert sorted(new) == sorted([files[0].content, files[1].content])
    assert not any(files[2].content.startswith(content) for content in new), "the third file appears in part"
