"""Fuzz the streaming multipart ingest (intake.app.ingest.ingest_submission) against a real store.

The input is ``Content-Type value | LF | u16 read size | body``: the read size is what
the "socket" hands over each time (so split points fall anywhere: inside boundaries,
part headers, CRLFs). Seeds in fuzz/corpus/multipart are real forms in this layout. The store is a real SQLCipher data dir made once per run.

Contract: an IngestResult whose parts are all published, or an UploadError with
nothing of this request left visible (no submission, no pending upload).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import atheris

from common import fixed_key_bytes, run

with atheris.instrument_imports():
    from intake.app.ingest import FormTokenError, UploadError, ingest_submission
    from keys.identity import Identity
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

from intake.config import load_settings
from intake.setup import init_data_dir
from intake.store import Store

TOKEN = "fuzz-token"
MAX_BYTES = 256 * 1024
_work = tempfile.TemporaryDirectory(prefix="intake-fuzz-multipart-")


def _open_store() -> tuple[Store, str]:
    identity = Identity("fuzzer", PrivateKey(fixed_key_bytes("multipart")), SigningKey(fixed_key_bytes("multipart-sign")))
    public_file = Path(_work.name) / "fuzzer.public"
    identity.public.save(public_file)
    data_dir = Path(_work.name) / "data"
    key_file = Path(_work.name) / "db.key"
    key_file.write_text(fixed_key_bytes("db").hex())
    key_file.chmod(0o600)
    init_data_dir(data_dir, [public_file], db_key_file=key_file)
    store = Store.open(load_settings(data_dir, db_key_file=key_file))
    source = store.create_source(fixed_key_bytes("lookup"), bytes(identity.private_key.public_key))
    return store, source.id


STORE, SOURCE_ID = _open_store()


class Reads(io.RawIOBase):
    def __init__(self, body: bytes, sizes: list[int]):
        self._body, self._sizes, self._n = memoryview(body), sizes, 0

    def read(self, size: int = -1) -> bytes:
        step = min(size if size >= 0 else len(self._body), self._sizes[self._n % len(self._sizes)])
        self._n += 1
        piece, self._body = bytes(self._body[:step]), self._body[step:]
        return piece


def check_token(value: str) -> None:
    if value != TOKEN:
        raise FormTokenError("the form token is wrong")


def test_one_input(data: bytes) -> None:
    content_type, newline, rest = data.partition(b"\n")
    if not newline or len(rest) < 2:
        return
    read_size = 1 + int.from_bytes(rest[:2], "big") % 8192
    body = rest[2:]
    before = STORE.counts()
    try:
        result = ingest_submission(Reads(body, [read_size]), content_type.decode("latin-1"), store=STORE, source_id=SOURCE_ID,
                                   max_bytes=MAX_BYTES, check_form_token=check_token)
    except UploadError:
        after = STORE.counts()
        assert after["submissions"] == before["submissions"], "a refused upload left a submission"
        assert after["pending uploads"] == 0, "a refused upload left a pending upload"
        return
    after = STORE.counts()
    assert after["submissions"] == before["submissions"] + len(result.submission_ids)
    assert after["pending uploads"] == 0


if __name__ == "__main__":
    run(test_one_input)
