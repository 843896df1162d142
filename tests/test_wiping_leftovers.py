"""No buffer of ours is left holding plaintext or a secret once the code is done with it.

tests/test_wiping.py watches the buffers handed to `wipe`; it cannot see a buffer that
was never wiped. These tests look from the other side: a tracer (sys.settrace, this
thread only) notes, when each watched function returns (however it returns), what its
buffer locals hold, and keeps every object of ours that holds buffers (the envelope
writers and readers, an upload's parts, the sessions resumed). Once the work is over,
all of it must be zeros. scripts/mutate-wipes deletes each wipe in turn: every one of
them makes a test here or in test_wiping.py fail (docs/ASSURANCE.md)."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl._sodium import ffi
from nacl.public import PrivateKey

import intake.app.ingest as ingest
from intake.app.give_back import read_unsent_form
from intake.app.ingest import MalformedUploadError, ingest_submission
from intake.app.multipart import MultipartDecoder
from intake.app.sessions import SourceSession, open_session, resume_session
from intake.codename import derive_source_keys, generate_codename
from intake.journalist_auth import hash_passphrase, passphrase_matches
from intake.store import Store
from keys import envelope_reader
from keys.envelope import MESSAGE_CT_SIZE, EnvelopeWriter, Metadata, encrypt_bytes, header_size
from keys.envelope_reader import EnvelopeReader
from keys.errors import BadPassphraseError, TamperedError, TruncatedError, WrongKeyError
from keys.identity import KDF_MIN, Identity, _derive_into
from keys.wiping import wipe
from tests.fixtures_app import AppInstance, csrf_token, make_instance, post_upload, start_as_new_source, upload_body
from tests.test_wiping import FAST, TOKEN, UPLOADS, _canary, _check_token, _Reads

# The buffer locals of each function that must be zeros when it returns.
LOCALS = {
    ingest.ingest_submission: ("held", "decoder", "read_buffer"),
    MultipartDecoder._safe_cut: ("tail",),
    ingest._EncryptedPart.feed: ("held",),
    read_unsent_form: ("message", "decoder"),
    EnvelopeWriter.__init__: ("file_key", "ephemeral_secret"),
    envelope_reader._open_stanzas: ("shared",),
    EnvelopeReader._read_header: ("key",),
    EnvelopeReader._take_content: ("taken",),
    EnvelopeReader.read: ("out",),
    Identity.to_secret_bytes: ("key",),
    Identity.from_secret_bytes: ("key", "payload"),
    Identity.load: ("data",),
    _derive_into: ("password",),
    open_session: ("plaintext",),
    resume_session: ("opened",),
    derive_source_keys: ("password", "master"),
    passphrase_matches: ("password",),
}
# Objects made (their __init__) or handed out (resume_session) that hold buffers of ours.
MAKERS = (EnvelopeWriter.__init__, EnvelopeReader.__init__, ingest._EncryptedPart.__init__, ingest._SmallField.__init__,
          resume_session)


def held_by(thing: object) -> dict[str, bytes]:
    """The buffers of ours an object holds, and what they hold now."""
    if isinstance(thing, EnvelopeWriter):
        return {"message": bytes(thing._message), "stream state": ffi.buffer(thing._state.statebuf)[:]}
    if isinstance(thing, EnvelopeReader):
        stream = getattr(thing, "_stream", None)
        return {"plaintext": bytes(thing._plaintext), **({"stream state": bytes(stream._state)} if stream else {})}
    if isinstance(thing, ingest._EncryptedPart):
        return {"held": bytes(thing._held)}
    if isinstance(thing, ingest._SmallField):
        return {"value": bytes(thing._value)}
    if isinstance(thing, SourceSession):
        return {"reply secret key": bytes(thing.reply_secret_key)}
    raise AssertionError(f"nothing says what a {type(thing).__name__} holds")


def _buffer(value: object) -> bytes | None:
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, MultipartDecoder):
        return bytes(value.buffer)
    return None


class Leftovers:
    """What the watched functions' locals held when they returned, and the objects they made."""

    def __init__(self) -> None:
        self._locals = {function.__code__: (function.__qualname__, names) for function, names in LOCALS.items()}
        self._makers = {function.__code__ for function in MAKERS}
        self.returned: list[tuple[str, bytes]] = []  # ("function.local", what it held on return)
        self.objects: list[object] = []

    @contextlib.contextmanager
    def watching(self) -> Iterator[Leftovers]:
        """Trace this thread while the block runs (a tracer already set, coverage's, is put back after)."""
        before = sys.gettrace()
        sys.settrace(self._on_call)
        try:
            yield self
        finally:
            sys.settrace(before)

    def _on_call(self, frame, event, _arg):
        if frame.f_code in self._locals or frame.f_code in self._makers:
            frame.f_trace_lines = False
            return self._on_return
        return None

    def _on_return(self, frame, event, value):
        if event != "return":
            return self._on_return
        if frame.f_code in self._locals:
            qualname, names = self._locals[frame.f_code]
            for name in names:
                if (held := _buffer(frame.f_locals.get(name))) is not None:
                    self.returned.append((f"{qualname}.{name}", held))
        if frame.f_code in self._makers:
            made = frame.f_locals["self"] if frame.f_code.co_name == "__init__" else value
            if made is not None:
                self.objects.append(made)
        return None

    def check(self) -> set[str]:
        """Everything is zeros; returns what was looked at (so a test can tell it looked)."""
        # Only names in the failure message: what the buffer held is not printed.
        for where, held in self.returned:
            left = any(held)
            assert not left, f"{where} still holds data when its function returns"
        for thing in self.objects:
            for name, held in held_by(thing).items():
                left = any(held)
                assert not left, f"a {type(thing).__name__}'s {name} still holds data"
        return {where for where, _held in self.returned} | {type(thing).__name__ for thing in self.objects}

    def sizes(self, where: str) -> list[int]:
        """How large each buffer noted as ``where`` was (zeros or not)."""
        return [len(held) for noted, held in self.returned if noted == where]


@pytest.fixture
def leftovers() -> Leftovers:
    return Leftovers()


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> AppInstance:
    return make_instance(tmp_path_factory.mktemp("leftovers"), journalist_count=1)


# --- uploads ----------------------------------------------------------------------------------

BLANK = " \r\n\t " * 8


@pytest.mark.parametrize("case", [*UPLOADS, "blank-message", "blank-message-cut-off", "oversized-part-header"])
def test_an_upload_leaves_no_buffer_holding_anything(leftovers: Leftovers, instance: AppInstance, case: str):
    message = "a short message " + os.urandom(24).hex()
    files = [("leak.bin", _canary(500_000)[1], "application/octet-stream")]
    token, fail_after, limit, refusal = UPLOADS.get(case, (TOKEN, None, 10 << 20, None))
    if case.startswith("blank-message"):
        message, files = BLANK, [("a.txt", b"a file, so that something is stored", "text/plain")]
    elif case == "oversized-part-header":  # the parser refuses a part header larger than its buffer
        files, refusal = [("name " + os.urandom(8).hex() * 20_000, b"never read", "text/plain")], MalformedUploadError
    body, content_type = upload_body(token, message=message, files=files)
    if case == "blank-message-cut-off":  # the body ends while the blank message is held back
        body, refusal = body[: body.index(BLANK.encode()) + len(BLANK) - 4], ingest.ConnectionLostError
    with Store.open(instance.settings) as store, leftovers.watching():
        source_id = store.create_source(os.urandom(32), os.urandom(32)).id

        def run():
            return ingest_submission(_Reads(body, fail_after), content_type, store=store, source_id=source_id,
                                     max_bytes=limit, check_form_token=_check_token)

        if refusal is None:
            run()
        else:
            with pytest.raises(refusal):
                run()
    seen = leftovers.check()
    assert {"ingest_submission.decoder", "MultipartDecoder._safe_cut.tail", "_SmallField"} <= seen
    if case in ("stored", "connection-lost", "too-large"):
        assert {"EnvelopeWriter", "_EncryptedPart", "_EncryptedPart.feed.held"} <= seen
    if case == "oversized-part-header":
        assert max(leftovers.sizes("ingest_submission.held")) > 0  # the refused header was still in it


class _ByteArrayHead(ctypes.Structure):
    """CPython's PyByteArrayObject: where a bytearray's allocation is, and how large."""

    _fields_ = [("ob_refcnt", ctypes.c_ssize_t), ("ob_type", ctypes.c_void_p), ("ob_size", ctypes.c_ssize_t),
                ("ob_alloc", ctypes.c_ssize_t), ("ob_bytes", ctypes.c_void_p), ("ob_start", ctypes.c_void_p)]


def _allocation(buffer: bytearray) -> bytes:
    """All of a bytearray's allocation: deleting from its front only moves its start, so what was
    there stays in memory unless it was wiped first."""
    head = _ByteArrayHead.from_address(id(buffer))
    return ctypes.string_at(head.ob_bytes, head.ob_alloc)


def test_the_bytes_handed_to_the_parser_are_wiped_not_only_dropped():
    """What stays held is most of the buffer, so CPython keeps the allocation and only moves its
    start past the bytes handed over: they stay in memory unless wiped before."""
    secret = os.urandom(16).hex().encode() * 64
    kept = b"kept back " * 1000
    held = bytearray(secret + kept)
    decoder = MultipartDecoder(b"boundary", 1 << 20)
    decoder.hand_over(held, len(secret))
    assert bytes(held) == kept and bytes(decoder.buffer) == secret
    allocation = _allocation(held)
    assert kept in allocation  # the check sees this buffer's memory
    assert secret[:32] not in allocation
    wipe(decoder.buffer)
    wipe(held)


def test_a_message_handed_back_leaves_nothing_in_the_parser(leftovers: Leftovers):
    message = "written while the session ended " + os.urandom(8).hex()
    body, content_type = upload_body("token", message=message, files=[("a.txt", b"file " * 100, "text/plain")])
    with leftovers.watching():
        assert read_unsent_form(io.BytesIO(body), content_type).message == message
    assert {"read_unsent_form.message", "read_unsent_form.decoder"} <= leftovers.check()


# --- the source's sessions, through the app ---------------------------------------------------


def test_a_sessions_reply_key_is_wiped_after_every_request(leftovers: Leftovers, instance: AppInstance):
    client = instance.app.test_client()
    start_as_new_source(client)
    with leftovers.watching():
        assert client.get("/submit").status_code == 200
        token = csrf_token(client.get("/submit").text)
        body, content_type = upload_body(token, message="a message " + os.urandom(8).hex())
        assert post_upload(client, body, content_type).status_code == 303
    leftovers.check()
    # /submit twice, the upload, and the upload's check that its session still lives.
    assert sum(isinstance(thing, SourceSession) for thing in leftovers.objects) == 4


# --- envelopes --------------------------------------------------------------------------------

KEY = PrivateKey.generate()
HEADER = header_size(1)  # one recipient


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


@pytest.mark.parametrize("how", ["close", "discard", "with-block-fails", "wrong-declared-length"])
def test_an_envelope_writer_leaves_nothing(leftovers: Leftovers, how: str):
    with leftovers.watching():
        length = 200_001 if how == "wrong-declared-length" else None
        writer = EnvelopeWriter(io.BytesIO(), [KEY.public_key], Metadata("file", name="leak.txt", length=length))
        writer.write(os.urandom(200_000))
        if how == "close":
            writer.close()
        elif how == "discard":
            writer.discard()
        elif how == "with-block-fails":
            with pytest.raises(ConnectionError), writer:
                raise ConnectionError("the upload broke")
        else:
            with pytest.raises(ValueError):
                writer.close()
    assert {"EnvelopeWriter.__init__.file_key", "EnvelopeWriter.__init__.ephemeral_secret", "EnvelopeWriter"} <= leftovers.check()


READS = ["read", "read-in-pieces", "chunks", "write_to", "metadata-then-close", "kept-file-key",
         "tampered-first-message", "tampered-later-message", "truncated", "file-key-of-the-wrong-length", "a-stranger's-key"]


@pytest.mark.parametrize("how", READS)
def test_an_envelope_reader_leaves_nothing(leftovers: Leftovers, how: str):
    body = os.urandom(150_000)  # three messages
    blob = encrypt_bytes(body, [KEY.public_key], Metadata("file", name="leak.txt"))
    refusal = {"tampered-first-message": TamperedError, "tampered-later-message": TamperedError,
               "truncated": TruncatedError, "file-key-of-the-wrong-length": TamperedError,
               "a-stranger's-key": WrongKeyError}.get(how)
    if how == "tampered-first-message":
        blob = _flip(blob, HEADER + 100)
    elif how == "tampered-later-message":
        blob = _flip(blob, HEADER + MESSAGE_CT_SIZE + 100)
    elif how == "truncated":
        blob = blob[:-100]
    with leftovers.watching(), contextlib.ExitStack() as refused:
        if refusal is not None:
            refused.enter_context(pytest.raises(refusal))
        reader = EnvelopeReader(io.BytesIO(blob), PrivateKey.generate() if how == "a-stranger's-key" else KEY,
                                file_key=os.urandom(31) if how == "file-key-of-the-wrong-length" else None,
                                keep_file_key=how == "kept-file-key")
        if how in ("read", "tampered-later-message", "truncated"):
            assert reader.read() == body
        elif how == "read-in-pieces":
            assert b"".join(iter(lambda: reader.read(10_000), b"")) == body
        elif how == "chunks":
            assert b"".join(reader.chunks()) == body
        elif how == "write_to":
            reader.write_to(out := io.BytesIO())
            assert out.getvalue() == body
        elif how == "metadata-then-close":
            assert reader.metadata.name == "leak.txt"
            reader.close()
        elif how == "kept-file-key":
            again = EnvelopeReader(io.BytesIO(blob), [], file_key=reader.file_key)
            assert again.read() == reader.read() == body
    seen = leftovers.check()
    assert "EnvelopeReader" in seen
    if how != "a-stranger's-key":
        assert "EnvelopeReader._read_header.key" in seen
    if how != "file-key-of-the-wrong-length":
        assert "_open_stanzas.shared" in seen  # the key agreement with the ephemeral key
    if refusal is None or how == "tampered-later-message":
        assert "EnvelopeReader._take_content.taken" in seen  # the record: the file's name and type
    if how.startswith("read") or how in ("kept-file-key", "tampered-later-message", "truncated"):
        assert "EnvelopeReader.read.out" in seen


# --- secret key files, codenames, passphrases -------------------------------------------------


def test_a_secret_key_file_saved_and_loaded_leaves_nothing(leftovers: Leftovers, tmp_path: Path):
    identity = Identity.generate("alice")
    path = tmp_path / "alice.secret"
    with leftovers.watching():
        identity.save(path, "the right one", KDF_MIN)
        assert bytes(Identity.load(path, "the right one").private_key) == bytes(identity.private_key)
        with pytest.raises(BadPassphraseError):
            Identity.load(path, "a wrong one")
    assert {"Identity.to_secret_bytes.key", "Identity.from_secret_bytes.key", "Identity.from_secret_bytes.payload",
            "Identity.load.data", "_derive_into.password"} <= leftovers.check()


def test_codenames_and_passphrases_leave_nothing(leftovers: Leftovers):
    stored = hash_passphrase("correct horse battery staple", **FAST)
    with leftovers.watching():
        derive_source_keys(generate_codename(), os.urandom(16), **FAST)
        assert passphrase_matches(stored, "correct horse battery staple")
        assert not passphrase_matches(stored, "wrong horse battery staple")
    assert {"derive_source_keys.password", "derive_source_keys.master", "passphrase_matches.password"} <= leftovers.check()
