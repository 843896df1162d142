"""Fuzz the streaming multipart ingest (intake.app.ingest.ingest_submission).

The input is ``Content-Type value | LF | u16 read size | body``: the read size is what
the "socket" hands over each time (so split points fall anywhere: inside boundaries,
part headers, CRLFs). Seeds in fuzz/corpus/multipart are real forms in this layout.

The store here keeps ciphertext in memory and follows the store's contract (each sink
committed or aborted), so a run costs parsing and encryption only; the same contract
against the real SQLCipher store is tests/test_ingest.py's.

Contract: nothing is published before the form token was accepted; every part is
published once whole (alone or with the parts after it, in one commit_together), an
envelope that opens to a complete item, in the order sent, and the caller hears of
each; a part starts only once the one before it is whole; a refusal publishes every
part that had arrived whole; an IngestResult lists every published part; an UploadError leaves the parts
published before it (in order) and no part open.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import atheris

from common import fixed_key_bytes, run

# Coverage of the ingest and of Werkzeug's multipart parser under it; the rest of Flask is left
# uninstrumented, which makes a run several times faster.
with atheris.instrument_imports(include=["intake.app.ingest", "werkzeug.sansio.multipart", "werkzeug.http"]):
    from intake.app.ingest import FormTokenError, UploadError, ingest_submission

from nacl.public import PrivateKey

from keys.envelope_reader import decrypt_bytes

TOKEN = "fuzz-token"
MAX_BYTES = 256 * 1024
KEY = PrivateKey(fixed_key_bytes("multipart"))


@dataclass
class Recipient:
    public_key: bytes


@dataclass
class Sink:
    store: "MemoryStore"
    kind: str
    data: bytearray = field(default_factory=bytearray)
    state: str = "open"

    @property
    def size(self) -> int:
        return len(self.data)

    def whole(self) -> bool:
        """The envelope opens to a complete item (its part arrived whole and was closed)."""
        try:
            decrypt_bytes(bytes(self.data), KEY)
        except Exception:  # noqa: BLE001 - any refusal of the envelope: not whole
            return False
        return True

    def write(self, ciphertext: bytes) -> int:
        assert self.state == "open", "write after commit or abort"
        self.data += ciphertext
        return len(ciphertext)

    def commit(self) -> str:
        assert self.state == "open", "commit after commit or abort"
        assert self.store.token_accepted, "a part was published before the form token was accepted"
        decrypt_bytes(bytes(self.data), KEY)  # whole: the envelope opens to a complete item
        self.state = "published"
        self.store.published.append(self)
        return str(len(self.store.published))

    def abort(self) -> None:
        assert self.state != "published", "abort after publishing"
        self.state = "aborted"


class MemoryStore:
    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.published: list[Sink] = []
        self.token_accepted = False

    def active_recipients(self) -> list[Recipient]:
        return [Recipient(bytes(KEY.public_key))]

    def start_submission(self, source_id: str, kind: str, recipients: list) -> Sink:
        for sink in self.sinks:
            if sink.state == "open":  # held for the parts after it: it must be whole already
                assert sink.whole(), "a part started while the one before it was still open"
        sink = Sink(self, kind)
        self.sinks.append(sink)
        return sink

    def commit_together(self, sinks: list[Sink]) -> tuple[str, ...]:
        return tuple(sink.commit() for sink in sinks)


class Reads(io.RawIOBase):
    def __init__(self, body: bytes, size: int):
        self._body, self._size = memoryview(body), size

    def read(self, size: int = -1) -> bytes:
        step = min(size if size >= 0 else len(self._body), self._size)
        piece, self._body = bytes(self._body[:step]), self._body[step:]
        return piece


def token_checker(store: MemoryStore):
    def check_token(value: str) -> None:
        if value != TOKEN:
            raise FormTokenError("the form token is wrong")
        store.token_accepted = True
    return check_token


def test_one_input(data: bytes) -> None:
    content_type, newline, rest = data.partition(b"\n")
    if not newline or len(rest) < 2:
        return
    read_size = 16 + int.from_bytes(rest[:2], "big") % 8192  # 16 bytes up: split points still fall anywhere in the body
    store = MemoryStore()
    heard = []
    try:
        result = ingest_submission(Reads(rest[2:], read_size), content_type.decode("latin-1"), store=store,
                                   source_id="source", max_bytes=MAX_BYTES, check_form_token=token_checker(store),
                                   on_published=heard.append)
    except UploadError:
        assert all(sink.state != "open" for sink in store.sinks), "a refused upload left a part open"
        # Every part that arrived whole was published (none waiting was dropped), in the order sent.
        assert all(sink.state == "published" for sink in store.sinks if sink.whole()), "a refusal dropped a whole part"
        assert store.published == [sink for sink in store.sinks if sink.state == "published"], "parts published out of order"
        assert [item.kind for item in heard] == [sink.kind for sink in store.published]
        return
    assert len(result.submission_ids) == len(store.published) == len(result.items)
    assert list(result.items) == heard
    assert all(sink.state == "published" for sink in store.sinks)
    assert store.published == store.sinks, "parts published out of order"
    for sink in store.published:
        meta, _body = decrypt_bytes(bytes(sink.data), KEY)
        assert meta.kind == sink.kind


if __name__ == "__main__":
    run(test_one_input)
