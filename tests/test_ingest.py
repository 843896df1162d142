"""Encryption on receipt: the streaming multipart ingest against a real store."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from werkzeug.exceptions import ClientDisconnected

import intake.app.ingest as ingest_module
from intake.app.ingest import (
    MAX_FILES,
    ConnectionLostError,
    EmptySubmissionError,
    FormTokenError,
    MalformedUploadError,
    TooManyFilesError,
    UnexpectedPartError,
    UploadTooLargeError,
    ingest_submission,
)
from intake.store import Store
from intake.store.errors import StoreFullError
from intake.store.slots_file import slots_path
from keys.envelope_reader import EnvelopeReader, decrypt_bytes
from tests.fixtures_app import AppInstance, make_instance, upload_body

TOKEN = "valid-token"
CHUNK_BYTES = 1024 * 1024


def accept_token(value: str) -> None:
    if value != TOKEN:
        raise FormTokenError("bad token")


class Dribble(io.RawIOBase):
    """A body arriving in reads of the given sizes (cycled), like a slow socket."""

    def __init__(self, data: bytes, sizes=(1,), on_read=None):
        self._data = memoryview(data)
        self._sizes = sizes
        self._reads = 0
        self._on_read = on_read

    def read(self, size=-1):
        if self._on_read:
            self._on_read(self._reads)
        step = min(size, self._sizes[self._reads % len(self._sizes)])
        self._reads += 1
        piece, self._data = bytes(self._data[:step]), self._data[step:]
        return piece


@pytest.fixture(scope="module")
def shared_instance(tmp_path_factory) -> AppInstance:
    return make_instance(tmp_path_factory.mktemp("ingest"), journalist_count=3)


@pytest.fixture
def instance(tmp_path: Path) -> AppInstance:
    # Small chunk rows, so a few MiB make many of them (the default is several MiB).
    return make_instance(tmp_path, upload_chunk_bytes=CHUNK_BYTES)


def new_source_id(store: Store) -> str:
    return store.create_source(os.urandom(32), os.urandom(32)).id


def ingest(store: Store, source_id: str, body: bytes, content_type: str, *, max_bytes: int = 10 * 1024 * 1024, sizes=(65536,), on_read=None):
    return ingest_submission(
        Dribble(body, sizes, on_read), content_type, store=store, source_id=source_id, max_bytes=max_bytes, check_form_token=accept_token
    )


def opened(instance: AppInstance, store: Store, submission_ids, journalist: int = 0):
    result = []
    for submission_id in submission_ids:
        blob = b"".join(store.submission_ciphertext(submission_id))
        metadata, body = decrypt_bytes(blob, instance.journalists[journalist].private_key)
        result.append((metadata.kind, metadata.name, metadata.content_type, body))
    return result


def nothing_kept(store: Store) -> bool:
    counts = store.counts()
    return counts["submissions"] == 0 and counts["pending uploads"] == 0


def kept_exactly(instance: AppInstance, store: Store, expected: list[tuple[str, str | None, bytes]]) -> bool:
    """The store shows exactly these whole parts, in this order, and nothing pending: each part is
    published once whole, so a refusal or a cut keeps the parts before it and nothing of the rest."""
    shown = [(kind, name, body) for kind, name, _type, body in opened(instance, store, [s.id for s in store.submissions()])]
    return shown == expected and store.counts()["pending uploads"] == 0


def test_every_journalist_can_decrypt_every_part(shared_instance):
    body, content_type = upload_body(TOKEN, message="hello", files=[("a.bin", bytes(range(256)) * 10, "application/octet-stream")])
    with Store.open(shared_instance.settings) as store:
        result = ingest(store, new_source_id(store), body, content_type)
        assert len(result.submission_ids) == 2
        for journalist in range(3):
            assert opened(shared_instance, store, result.submission_ids, journalist) == [
                ("message", None, "text/plain; charset=utf-8", b"hello"),
                ("file", "a.bin", "application/octet-stream", bytes(range(256)) * 10),
            ]


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message=st.text(min_size=1, max_size=300).filter(lambda text: text.strip()),
    content=st.binary(max_size=3000),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=5),
)
def test_content_survives_any_split_of_the_body_into_reads(shared_instance, message, content, sizes):
    # Content that looks like the start of a boundary must not confuse the parser.
    content = b"\r\n--intakeboundary7MA4YWxk\r" + content + b"\r\n--"
    body, content_type = upload_body(TOKEN, message=message, files=[("x.bin", content, "application/octet-stream")])
    with Store.open(shared_instance.settings) as store:
        result = ingest(store, new_source_id(store), body, content_type, sizes=sizes)
        assert opened(shared_instance, store, result.submission_ids) == [
            ("message", None, "text/plain; charset=utf-8", message.encode()),
            ("file", "x.bin", "application/octet-stream", content),
        ]


def test_large_file_is_stored_in_many_chunks_and_reads_back_exactly(instance):
    content = os.urandom(3 * 1024 * 1024 + 123)
    body, content_type = upload_body(TOKEN, files=[("big.bin", content, "application/octet-stream")])
    with Store.open(instance.settings) as store:
        result = ingest(store, new_source_id(store), body, content_type, sizes=(100_000, 7, 262_144))
        chunks = list(store.submission_ciphertext(result.submission_ids[0]))
        assert len(chunks) > 3
        reader = EnvelopeReader(io.BytesIO(b"".join(chunks)), instance.journalists[0].private_key)
        assert b"".join(reader.chunks()) == content and reader.complete


def test_form_token_must_come_first(instance):
    body, content_type = upload_body(None, message="no token first")
    with Store.open(instance.settings) as store:
        with pytest.raises(FormTokenError):
            ingest(store, new_source_id(store), body, content_type)
        assert nothing_kept(store)


def test_token_after_content_is_refused_before_anything_is_stored(instance):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n\r\nsneaky\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{TOKEN}\r\n--{boundary}--\r\n'
    ).encode()
    with Store.open(instance.settings) as store:
        with pytest.raises(FormTokenError):
            ingest(store, new_source_id(store), body, f"multipart/form-data; boundary={boundary}")
        assert nothing_kept(store)


def test_a_whole_file_before_the_token_is_refused_and_never_published(instance):
    """Parts are published as they end, so the token must be checked before the first one: a file
    that arrives whole before a valid token is refused, not published."""
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="early.pdf"\r\n'
        f'Content-Type: application/pdf\r\n\r\n{"x" * 70_000}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{TOKEN}\r\n--{boundary}--\r\n'
    ).encode()
    published = []
    with Store.open(instance.settings) as store:
        with pytest.raises(FormTokenError):
            ingest_submission(Dribble(body, (65536,)), f"multipart/form-data; boundary={boundary}", store=store,
                              source_id=new_source_id(store), max_bytes=10 * 1024 * 1024, check_form_token=accept_token,
                              on_published=published.append)
        assert nothing_kept(store) and published == []


def test_invalid_token_rolls_back(instance):
    body, content_type = upload_body("forged", message="x")
    with Store.open(instance.settings) as store:
        with pytest.raises(FormTokenError):
            ingest(store, new_source_id(store), body, content_type)
        assert nothing_kept(store)


def test_overflow_while_streaming_keeps_the_whole_parts_before_it_and_nothing_of_the_rest(instance):
    body, content_type = upload_body(TOKEN, message="kept until overflow", files=[("a", b"a" * 200_000, "x/y"), ("b", b"b" * 200_000, "x/y")])
    published = []
    with Store.open(instance.settings) as store:
        with pytest.raises(UploadTooLargeError):
            ingest_submission(Dribble(body, (50_000,)), content_type, store=store, source_id=new_source_id(store),
                              max_bytes=300_000, check_form_token=accept_token, on_published=published.append)
        assert kept_exactly(instance, store, [("message", None, b"kept until overflow"), ("file", "a", b"a" * 200_000)])
    assert [(item.kind, item.name, item.size) for item in published] == [("message", None, 19), ("file", "a", 200_000)]


def test_connection_lost_mid_file_keeps_the_message_before_it_and_nothing_of_the_file(instance):
    body, content_type = upload_body(TOKEN, message="m", files=[("a", os.urandom(500_000), "x/y")])
    with Store.open(instance.settings) as store:
        with pytest.raises(ConnectionLostError):
            ingest(store, new_source_id(store), body[:300_000], content_type)
        assert kept_exactly(instance, store, [("message", None, b"m")])


def test_connection_lost_anywhere_keeps_exactly_the_parts_that_ended_before_the_cut(instance):
    """Cut the body around the end of every part: a part is kept only once its closing delimiter
    (CRLF, dashes, boundary) has arrived, so never in part, even when all its bytes had arrived;
    and a part whose delimiter and the next line arrived is always kept, in order."""
    files = [("one.bin", os.urandom(70_000), "x/y"), ("two.bin", os.urandom(90_000), "x/y"), ("three.bin", os.urandom(80_000), "x/y")]
    body, content_type = upload_body(TOKEN, message="first", files=files)
    sent = [("message", None, b"first")] + [("file", name, content) for name, content, _t in files]
    delimiter = b"\r\n--" + content_type.split("boundary=")[1].encode()
    ends = [body.index(content) + len(content) for _kind, _name, content in sent]  # where each part's delimiter starts
    assert all(body[end:end + len(delimiter)] == delimiter for end in ends)
    cuts = sorted({end + d for end in ends for d in (-1, 0, 1, len(delimiter) - 1, len(delimiter), len(delimiter) + 1, len(delimiter) + 2, len(delimiter) + 40)})
    with Store.open(instance.settings) as store:
        for cut in cuts:
            source_id = new_source_id(store)
            try:
                ingest(store, source_id, body[:cut], content_type, sizes=(4096, 65536))
                assert body[:cut].rstrip().endswith(delimiter + b"--"), f"cut at {cut}: accepted an unfinished form"
            except ConnectionLostError:
                pass
            shown = [(kind, name, data) for kind, name, _type, data in opened(instance, store, [s.id for s in store.submissions(source_id)])]
            assert shown == sent[: len(shown)], f"cut at {cut}: a part kept out of order or in part"
            must = sum(cut >= end + len(delimiter) + 2 for end in ends)
            may = sum(cut >= end + len(delimiter) for end in ends)
            assert must <= len(shown) <= may, f"cut at {cut}: kept {len(shown)}, expected {must}..{may}"
            assert store.counts()["pending uploads"] == 0


def slots_file_bytes(instance: AppInstance) -> int:
    path = slots_path(instance.settings.db_path)
    return path.stat().st_size if path.exists() else 0


def publications(store: Store, monkeypatch, *, hold_seconds: float = 60.0) -> list[list[str]]:
    """The kinds of the parts of each publication (one transaction each) the store makes from now on.
    Parts wait up to ``hold_seconds`` (a minute by default: a loaded test machine must not split
    what arrived together)."""
    monkeypatch.setattr(ingest_module, "HOLD_SECONDS", hold_seconds)
    groups: list[list[str]] = []
    commit_together = store.commit_together

    def spy(sinks):
        groups.append([sink.kind for sink in sinks])
        return commit_together(sinks)

    monkeypatch.setattr(store, "commit_together", spy)
    return groups


def raising(error: BaseException):
    def refuse(*_args):
        raise error
    return refuse


def test_parts_that_arrive_together_are_published_in_one_transaction(instance, monkeypatch):
    files = [("a.txt", os.urandom(10_000), "text/plain"), ("b.jpg", os.urandom(20_000), "image/jpeg")]
    body, content_type = upload_body(TOKEN, message="together", files=files)
    with Store.open(instance.settings) as store:
        groups = publications(store, monkeypatch)
        ingest(store, new_source_id(store), body, content_type)
        assert groups == [["message", "file", "file"]]
        assert kept_exactly(instance, store, [("message", None, b"together")] + [("file", name, data) for name, data, _t in files])


def test_held_parts_are_published_before_a_larger_one_grows_and_every_part_keeps_its_place(instance, monkeypatch):
    """The parts held may not add up past HOLD_BYTES: the part that would take them there has them
    published first, before the store writes any of it ahead of its publication, so the order
    stays the one sent."""
    files = [("small", os.urandom(100_000), "x/y"), ("large", os.urandom(3_000_000), "x/y"), ("last", os.urandom(10_000), "x/y")]
    body, content_type = upload_body(TOKEN, message="m", files=files)
    with Store.open(instance.settings) as store:
        groups = publications(store, monkeypatch)
        ingest(store, new_source_id(store), body, content_type, sizes=(4096, 65536))
        assert groups == [["message", "file"], ["file"], ["file"]]
        assert kept_exactly(instance, store, [("message", None, b"m")] + [("file", name, data) for name, data, _t in files])


def test_the_hold_limits_are_the_ones_security_md_states():
    """The tests around change HOLD_SECONDS to run fast; what ships is what SECURITY.md says."""
    text = " ".join((Path(__file__).resolve().parents[1] / "SECURITY.md").read_text().split())
    assert ingest_module.HOLD_BYTES == 128 * 1024 and "(128 KiB of envelopes" in text
    assert ingest_module.HOLD_SECONDS == 1.0 and "for about a second: the first data, part or end of the request after a second publishes it" in text


def test_a_whole_part_waits_for_the_next_one_at_most_hold_seconds(instance, monkeypatch):
    """Over a slow circuit a message is not kept back until a small file after it has crawled in."""
    body, content_type = upload_body(TOKEN, message="slow", files=[("f", os.urandom(60_000), "x/y")])
    file_starts = body.index(b'filename="f"')
    with Store.open(instance.settings) as store:
        groups = publications(store, monkeypatch, hold_seconds=0.2)
        heard = []

        def slowly(reads: int) -> None:
            if reads * 5_000 > file_starts:
                time.sleep(0.05)

        ingest_submission(Dribble(body, (5_000,), slowly), content_type, store=store, source_id=new_source_id(store),
                          max_bytes=10 * 1024 * 1024, check_form_token=accept_token, on_published=heard.append)
        assert groups == [["message"], ["file"]]
        assert [item.kind for item in heard] == ["message", "file"]


def test_a_request_being_stopped_publishes_nothing_it_held_and_leaves_nothing_pending(instance, monkeypatch):
    """A worker stopping (its greenlet killed: a BaseException) is no refusal: what was held goes."""
    body, content_type = upload_body(TOKEN, message="held", files=[("f", os.urandom(60_000), "x/y")])
    file_starts = body.index(b'filename="f"')

    def stop(reads: int) -> None:
        if reads * 4096 > file_starts + 8192:
            raise KeyboardInterrupt

    with Store.open(instance.settings) as store:
        groups = publications(store, monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            ingest(store, new_source_id(store), body, content_type, sizes=(4096,), on_read=stop)
        assert groups == [] and nothing_kept(store)


def test_many_small_files_wait_in_groups_that_stay_in_the_database(instance, monkeypatch):
    """What waits is counted in ciphertext (padded, with its header), not in what the source sent:
    255 files of 20 bytes are over 256 KiB of envelopes, which published together would have gone
    to the slots file, a 256 KiB slot each."""
    files = [(f"f{i}", os.urandom(20), "x/y") for i in range(MAX_FILES)]
    body, content_type = upload_body(TOKEN, message="many", files=files)
    with Store.open(instance.settings) as store:
        groups = publications(store, monkeypatch)
        ingest(store, new_source_id(store), body, content_type)
        assert 2 <= len(groups) < len(files) and sum(map(len, groups)) == len(files) + 1
        assert slots_file_bytes(instance) == 0
        assert kept_exactly(instance, store, [("message", None, b"many")] + [("file", name, data) for name, data, _t in files])


def test_a_refusal_whose_store_refuses_the_waiting_parts_keeps_none_of_them_and_says_so(instance, monkeypatch):
    """A full disk at the refusal (too large: the message and file a are waiting, b is in flight):
    the parts that waited together are lost together, the first error is the one raised, and the
    source is told of nothing kept."""
    body, content_type = upload_body(TOKEN, message="m", files=[("a", b"a" * 50_000, "x/y"), ("b", b"b" * 500_000, "x/y")])
    heard = []
    with Store.open(instance.settings) as store:
        monkeypatch.setattr(store, "commit_together", raising(StoreFullError("the disk is full")))
        with pytest.raises(UploadTooLargeError):
            ingest_submission(Dribble(body, (4096,)), content_type, store=store, source_id=new_source_id(store),
                              max_bytes=100_000, check_form_token=accept_token, on_published=heard.append)
        assert heard == [] and nothing_kept(store)


def test_a_request_stopped_while_its_refusal_publishes_what_waited_leaves_nothing_pending(instance, monkeypatch):
    """The refusal (too large: the message and file a are waiting, b is in flight) tries to publish
    what waited, and the request is stopped meanwhile: everything is dropped, then it stops."""
    body, content_type = upload_body(TOKEN, message="m", files=[("a", b"a" * 50_000, "x/y"), ("b", b"b" * 500_000, "x/y")])
    with Store.open(instance.settings) as store:
        monkeypatch.setattr(store, "commit_together", raising(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            ingest(store, new_source_id(store), body, content_type, max_bytes=100_000, sizes=(4096,))
        assert nothing_kept(store) and slots_file_bytes(instance) == 0


def test_client_disconnect_reported_by_the_server_keeps_the_message_before_it_and_nothing_of_the_file(instance):
    body, content_type = upload_body(TOKEN, message="m", files=[("a", os.urandom(500_000), "x/y")])

    def disconnect(reads: int) -> None:
        if reads == 3:
            raise ClientDisconnected()

    with Store.open(instance.settings) as store:
        with pytest.raises(ConnectionLostError):
            ingest(store, new_source_id(store), body, content_type, on_read=disconnect)
        assert kept_exactly(instance, store, [("message", None, b"m")])


def test_empty_form_is_refused(instance):
    body, content_type = upload_body(TOKEN, message="", files=[("", b"", "application/octet-stream")])
    with Store.open(instance.settings) as store:
        with pytest.raises(EmptySubmissionError):
            ingest(store, new_source_id(store), body, content_type)
        assert nothing_kept(store)


def test_blank_message_is_not_stored_but_leading_space_of_a_real_one_is_kept(instance):
    with Store.open(instance.settings) as store:
        source_id = new_source_id(store)
        blank, content_type = upload_body(TOKEN, message=" \r\n\t ", files=[("f.txt", b"file", "text/plain")])
        result = ingest(store, source_id, blank, content_type)
        assert [kind for kind, *_ in opened(instance, store, result.submission_ids)] == ["file"]
        spaced, content_type = upload_body(TOKEN, message="\r\n   indented text")
        result = ingest(store, source_id, spaced, content_type, sizes=(1,))
        assert opened(instance, store, result.submission_ids)[0][3] == b"\r\n   indented text"


def test_empty_named_file_is_kept_and_unnamed_content_is_kept_without_a_name(instance):
    body, content_type = upload_body(TOKEN, files=[("empty.txt", b"", "text/plain"), ("", b"data", "text/plain")])
    with Store.open(instance.settings) as store:
        result = ingest(store, new_source_id(store), body, content_type)
        assert opened(instance, store, result.submission_ids) == [
            ("file", "empty.txt", "text/plain", b""),
            ("file", None, "text/plain", b"data"),
        ]


def test_hostile_file_name_and_type_are_made_safe_for_the_envelope(instance):
    name = "evil\x00\x1b[31m\u202e" + "n" * 2000 + ".txt"
    body, content_type = upload_body(TOKEN, files=[(name, b"x", "text/plain\x7f\x01")])
    with Store.open(instance.settings) as store:
        result = ingest(store, new_source_id(store), body, content_type)
        (_kind, stored_name, stored_type, _body), = opened(instance, store, result.submission_ids)
    assert stored_name.startswith("evil[31m") and len(stored_name) == 255
    assert all(ch.isprintable() for ch in stored_name)
    assert stored_type == "application/octet-stream"


# Parts the form never sends: an unknown name (the old honeypot's among them), a message sent as
# a file, files sent as a plain field. Each refuses the whole upload; nothing is kept.
UNEXPECTED = {
    "unknown field": dict(extra_parts=(("website", b"http://spam.example"),)),
    "another name": dict(extra_parts=(("comment", b"hello"),)),
}


@pytest.mark.parametrize("case", sorted(UNEXPECTED))
def test_a_part_the_form_never_sends_refuses_the_upload_and_keeps_nothing(instance, case):
    body, content_type = upload_body(TOKEN, message="a real message", files=[("a.txt", b"b" * 70_000, "text/plain")], **UNEXPECTED[case])
    with Store.open(instance.settings) as store:
        with pytest.raises(UnexpectedPartError):
            ingest(store, new_source_id(store), body, content_type)
        assert nothing_kept(store)


@pytest.mark.parametrize("swap", [b'name="message"; filename="m.txt"', b'name="files"'])
def test_a_message_sent_as_a_file_or_a_file_as_a_field_is_refused(instance, swap):
    body, content_type = upload_body(TOKEN, message="text", files=[("a.txt", b"data", "text/plain")])
    original = b'name="message"' if b"message" in swap else b'name="files"; filename="a.txt"'
    body = body.replace(original, swap, 1)
    with Store.open(instance.settings) as store:
        with pytest.raises(UnexpectedPartError):
            ingest(store, new_source_id(store), body, content_type)
        # The message part comes first: sent as a file, nothing is kept; sent right, it is kept whole.
        assert kept_exactly(instance, store, [] if b"message" in swap else [("message", None, b"text")])


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=" + "b" * 300],
)
def test_non_multipart_requests_are_refused(instance, content_type):
    with Store.open(instance.settings) as store:
        with pytest.raises(MalformedUploadError):
            ingest(store, new_source_id(store), b"anything", content_type)
        assert nothing_kept(store)


@pytest.mark.parametrize(
    "body",
    [
        b"garbage without boundaries",
        b"--bnd\r\nNo-Disposition: here\r\n\r\ndata\r\n--bnd--\r\n",
        b"--bnd\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n" + b"t" * 5000 + b"\r\n--bnd--\r\n",
        b"--bnd\r\nContent-Disposition: form-data; name=\"x\"\r\n" + b"X-Pad: " + b"p" * 400_000 + b"\r\n\r\n",
        b"--bnd\r\nContent-Disposition: form-data; name=\"\xff\xfe\"\r\n\r\nv\r\n--bnd--\r\n",
    ],
    ids=["no-boundary", "no-disposition", "oversized-token", "endless-headers", "undecodable-header"],
)
def test_malformed_bodies_are_refused_and_leave_nothing(instance, body):
    with Store.open(instance.settings) as store:
        with pytest.raises((MalformedUploadError, ConnectionLostError)):
            ingest(store, new_source_id(store), body, "multipart/form-data; boundary=bnd")
        assert nothing_kept(store)


def test_too_many_parts_are_refused_after_the_first_255_files(instance):
    parts = [("f%d" % i, b"x%d" % i, "x/y") for i in range(300)]
    body, content_type = upload_body(TOKEN, files=parts)
    with Store.open(instance.settings) as store:
        with pytest.raises(TooManyFilesError):
            ingest(store, new_source_id(store), body, content_type)
        assert kept_exactly(instance, store, [("file", name, content) for name, content, _t in parts[:MAX_FILES]])


def test_another_worker_commits_while_an_upload_is_in_flight(instance):
    """A slow upload holds no write lock: a second connection (another worker) submits
    and commits in the middle of it, and both end up complete."""
    slow_body, content_type = upload_body(TOKEN, message="slow", files=[("slow.bin", os.urandom(2_500_000), "x/y")])
    quick_body, _ = upload_body(TOKEN, message="quick")
    quick_ids = []

    with Store.open(instance.settings) as first, Store.open(instance.settings) as second:
        slow_source, quick_source = new_source_id(first), new_source_id(second)

        def meanwhile(reads: int) -> None:
            if reads == 20:  # well into the slow file, with chunks already stored
                first._settle()  # they are stored beside the upload, on its connection: they have ended now
                assert first.counts()["pending uploads"] >= 1
                quick_ids.extend(ingest(second, quick_source, quick_body, content_type).submission_ids)
                assert [s.id for s in second.submissions(quick_source)] == quick_ids

        result = ingest(first, slow_source, slow_body, content_type, sizes=(65536,), on_read=meanwhile)
        assert len(quick_ids) == 1 and len(result.submission_ids) == 2
        assert first.counts()["submissions"] == 3 and first.counts()["pending uploads"] == 0


def test_a_read_ending_anywhere_inside_a_boundary_adds_no_stray_byte(instance):
    """Werkzeug 3.1's decoder turns the CR before `--boundary-|-` into content; ingest holds such tails back."""
    body, content_type = upload_body(TOKEN, message="text", files=[("f", b"file\r", "x/y")])
    with Store.open(instance.settings) as store:
        source_id = new_source_id(store)
        for split in range(1, len(body)):
            first, rest = body[:split], body[split:]
            result = ingest(store, source_id, first + rest, content_type, sizes=(split, len(rest)))
            assert [part[3] for part in opened(instance, store, result.submission_ids)] == [b"text", b"file\r"], split
