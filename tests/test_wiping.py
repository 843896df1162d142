"""Buffers the code owns are wiped once used, on success and on every refusal (keys.wiping).

Each test runs the real code (a real store, real Argon2id, real key files) and watches
the buffers handed to `wipe`: a watcher keeps each buffer, notes what it held just
before it was wiped, and calls the real `wipe`. Every buffer that held the secret must
be all zeros afterwards, and at least one must have held it (so the test cannot pass
by watching nothing)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nacl import pwhash

import intake.app.give_back
import intake.app.ingest
import intake.app.sessions
import keys.envelope
import keys.envelope_reader
import keys.wiping
from intake.app.give_back import read_unsent_form
from intake.app.ingest import ConnectionLostError, FormTokenError, UploadTooLargeError, ingest_submission
from intake.app.sessions import open_session, resume_session, wipe_session
from intake.codename import derive_source_keys, generate_codename
from intake.journalist_auth import hash_passphrase, passphrase_matches
from intake.store import Store
from keys.envelope import EnvelopeWriter, Metadata
from keys.envelope_reader import decrypt_bytes
from keys.errors import BadPassphraseError
from keys.identity import KDF_MIN, Identity
from keys.wiping import wipe, wiping
from nacl.public import PrivateKey
from tests.fixtures_app import AppInstance, make_instance, upload_body

FAST = {"opslimit": pwhash.argon2id.OPSLIMIT_MIN, "memlimit": pwhash.argon2id.MEMLIMIT_MIN}
_real_wipe = keys.wiping.wipe


@dataclass
class Watcher:
    """Every buffer wiped, with what it held just before."""

    wiped: list[tuple[bytearray | bytes, bytes]] = field(default_factory=list)

    def __call__(self, buffer) -> None:
        before = bytes(buffer)
        _real_wipe(buffer)
        # A bytearray is kept to be looked at later; a view may be released by then, so what it shows now.
        self.wiped.append((buffer if isinstance(buffer, bytearray) else bytes(buffer), before))

    def check(self, secret: bytes) -> int:
        """How many wiped buffers held `secret`; all of them must be zero now."""
        held = [buffer for buffer, before in self.wiped if secret in before]
        for buffer in held:
            assert not any(bytes(buffer)), "a buffer that held the secret is not all zeros"
        return len(held)


@pytest.fixture
def watcher(monkeypatch) -> Watcher:
    watching = Watcher()
    for module in (keys.wiping, keys.envelope, keys.envelope_reader, intake.app.ingest, intake.app.give_back, intake.app.sessions):
        monkeypatch.setattr(module, "wipe", watching)
    return watching


# --- wipe itself ----------------------------------------------------------------------------


def test_wipe_zeroes_a_bytearray_and_a_view_of_one_in_place():
    buffer = bytearray(b"secret codename words")
    view = memoryview(buffer)[7:15]
    wipe(view)
    assert buffer == b"secret " + bytes(8) + b" words"
    view.release()
    wipe(buffer)
    assert buffer == bytes(21)
    buffer += b"more"  # no view is left holding it
    wipe(bytearray())


@pytest.mark.parametrize("immutable", [b"secret", b"", memoryview(b"secret")])
def test_wipe_refuses_what_cannot_be_wiped(immutable):
    with pytest.raises(TypeError, match="cannot be wiped"):
        wipe(immutable)


def test_wiping_wipes_when_the_block_fails():
    buffer = bytearray(b"plaintext")
    with pytest.raises(RuntimeError), wiping(buffer):
        raise RuntimeError("refused")
    assert buffer == bytes(9)


# --- the envelope writer --------------------------------------------------------------------


def _canary(size: int) -> tuple[bytes, bytes]:
    """(marker, content): the marker at the start of every 1 KiB, so any buffer that held a piece shows it."""
    marker = b"CANARY-" + os.urandom(8).hex().encode()
    block = marker + os.urandom(1024 - len(marker))
    return marker, (block * (size // 1024 + 1))[:size]


def _writer(out: io.BytesIO) -> tuple[EnvelopeWriter, PrivateKey]:
    key = PrivateKey.generate()
    return EnvelopeWriter(out, [key.public_key], Metadata("file", name="leak.txt")), key


def test_the_envelope_writer_wipes_its_plaintext_once_closed(watcher: Watcher):
    marker, secret = _canary(200_000)  # four messages from one buffer, reused
    out = io.BytesIO()
    writer, key = _writer(out)
    writer.write(secret[:1000])
    writer.write(memoryview(secret)[1000:])
    writer.close()
    assert watcher.check(marker) >= 1
    assert not any(writer._message)
    assert decrypt_bytes(out.getvalue(), key)[1] == secret


@pytest.mark.parametrize("how", ["discard", "with-block-fails", "wrong-declared-length"])
def test_an_abandoned_envelope_wipes_its_plaintext(watcher: Watcher, how: str):
    secret = os.urandom(1000)
    out = io.BytesIO()
    if how == "discard":
        writer, _key = _writer(out)
        writer.write(secret)
        writer.discard()
    elif how == "with-block-fails":
        writer, _key = _writer(out)
        with pytest.raises(ConnectionError), writer:
            writer.write(secret)
            raise ConnectionError("the upload broke")
    else:
        key = PrivateKey.generate()
        writer = EnvelopeWriter(out, [key.public_key], Metadata("file", length=len(secret) + 1))
        writer.write(secret)
        with pytest.raises(ValueError):
            writer.close()
    assert watcher.check(secret) >= 1
    assert not any(writer._message)
    with pytest.raises(ValueError):
        writer.write(b"more")  # it is done with


# --- an upload, stored or refused -----------------------------------------------------------

TOKEN = "valid-token"


def _check_token(value: str) -> None:
    if value != TOKEN:
        raise FormTokenError("bad token")


class _Reads(io.RawIOBase):
    """The body in reads of 64 KiB; `fail_after` bytes then the connection breaks."""

    def __init__(self, body: bytes, fail_after: int | None = None):
        self._body, self._at, self._fail_after = body, 0, fail_after

    def read(self, size=-1):
        if self._fail_after is not None and self._at >= self._fail_after:
            raise ConnectionResetError("the source's connection died")
        piece = self._body[self._at : self._at + min(size, 65536)]
        self._at += len(piece)
        return piece


class _ReadsInto(_Reads):
    """The same reads, into the caller's buffer (as intake.socket_body gives them), noting at
    each read whether that buffer still holds anything of the read before."""

    def __init__(self, body: bytes):
        super().__init__(body)
        self.held_something_at_a_read: list[bool] = []

    def readinto(self, buffer) -> int:
        self.held_something_at_a_read.append(any(bytes(buffer)))
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> AppInstance:
    return make_instance(tmp_path_factory.mktemp("wiping"), journalist_count=1)


UPLOADS: dict[str, tuple[str | None, int | None, int, type[Exception] | None]] = {
    # case: (form token, connection dies after N bytes, upload limit, refusal)
    "stored": (TOKEN, None, 10 << 20, None),
    "forged-token": ("forged", None, 10 << 20, FormTokenError),
    "connection-lost": (TOKEN, 300_000, 10 << 20, ConnectionLostError),
    "too-large": (TOKEN, None, 200_000, UploadTooLargeError),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_an_upload_wipes_every_buffer_that_held_its_plaintext(watcher: Watcher, instance: AppInstance, case: str):
    token, fail_after, limit, refusal = UPLOADS[case]
    message = b"a short message " + os.urandom(24).hex().encode()
    file_marker, file_content = _canary(500_000)
    body, content_type = upload_body(token, message=message.decode(), files=[("leak.bin", file_content, "application/octet-stream")])
    with Store.open(instance.settings) as store:
        source_id = store.create_source(os.urandom(32), os.urandom(32)).id

        def run():
            return ingest_submission(_Reads(body, fail_after), content_type, store=store, source_id=source_id,
                                     max_bytes=limit, check_form_token=_check_token)

        if refusal is None:
            assert len(run().submission_ids) == 2
        else:
            with pytest.raises(refusal):
                run()
    # The message (before a forged token is seen, it sits in the parser's buffer) and every
    # piece of the file that reached a buffer of ours.
    # A forged token is refused while the message waits in the parser's own buffer: that one too.
    assert watcher.check(message) >= (2 if case == "forged-token" else 1)
    if case != "forged-token":
        assert watcher.check(file_marker) >= 1


def test_an_uploads_read_buffer_holds_nothing_while_the_next_read_waits(instance: AppInstance):
    """Over Tor the next read of a body may wait for minutes: what the last one brought is
    handed to the parser and wiped first, not kept until it is overwritten."""
    _marker, file_content = _canary(500_000)
    body, content_type = upload_body(TOKEN, message="a message", files=[("leak.bin", file_content, "application/octet-stream")])
    reads = _ReadsInto(body)
    with Store.open(instance.settings) as store:
        source_id = store.create_source(os.urandom(32), os.urandom(32)).id
        result = ingest_submission(reads, content_type, store=store, source_id=source_id, max_bytes=10 << 20,
                                   check_form_token=_check_token)
    assert len(result.submission_ids) == 2
    assert len(reads.held_something_at_a_read) >= 8 and not any(reads.held_something_at_a_read)


def test_a_message_handed_back_is_wiped_once_its_text_is_made(watcher: Watcher):
    message = "written while the session ended " + os.urandom(8).hex()
    body, content_type = upload_body("token", message=message, files=[("a.txt", b"file", "text/plain")])
    assert read_unsent_form(io.BytesIO(body), content_type).message == message
    assert watcher.check(message.encode()) >= 1


# --- secrets: codenames, passphrases, session keys, secret key files -------------------------------


def test_a_codename_derivation_wipes_the_codename_bytes_and_the_master_secret(watcher: Watcher):
    codename = generate_codename()
    keys = derive_source_keys(codename, os.urandom(16), **FAST)
    assert watcher.check(codename.encode()) == 1
    assert len(watcher.wiped) == 2  # the codename's bytes and the master secret
    assert all(not any(buffer) for buffer, _before in watcher.wiped)
    assert keys.reply_public_key == bytes(PrivateKey(keys.reply_secret_key).public_key)


@pytest.mark.parametrize("right", [True, False], ids=["right", "wrong"])
def test_a_passphrase_check_wipes_the_passphrase_bytes(watcher: Watcher, right: bool):
    stored = hash_passphrase("correct horse battery staple", **FAST)
    typed = "correct horse battery staple" if right else "wrong horse battery staple"
    assert passphrase_matches(stored, typed) is right
    assert watcher.check(typed.encode()) == 1


def test_a_sessions_reply_key_is_wiped_when_sealed_and_when_its_request_ends(watcher: Watcher, instance: AppInstance):
    reply_key = os.urandom(32)
    with Store.open(instance.settings) as store:
        source_id = store.create_source(os.urandom(32), os.urandom(32)).id
        cookie = open_session(store, source_id, reply_key, minutes=5)
        assert watcher.check(reply_key) == 1  # the sealing's plaintext
        session = resume_session(store, cookie)
        assert session is not None and session.reply_secret_key == reply_key
        assert watcher.check(reply_key) == 2  # and the opened plaintext
        wipe_session(session)
    assert session.reply_secret_key == bytes(32)
    assert watcher.check(reply_key) == 3


@pytest.mark.parametrize("passphrase", ["the right one", "a wrong one"])
def test_loading_a_secret_key_file_wipes_what_it_read_and_derived(watcher: Watcher, tmp_path: Path, passphrase: str):
    identity = Identity.generate("alice")
    path = tmp_path / "alice.secret"
    identity.save(path, "the right one", KDF_MIN)
    watcher.wiped.clear()  # saving derived a key from the passphrase too
    secret_keys = bytes(identity.private_key) + bytes(identity.signing_key)
    if passphrase == "the right one":
        loaded = Identity.load(path, passphrase)
        assert bytes(loaded.private_key) == bytes(identity.private_key)
        assert watcher.check(secret_keys) == 1  # the opened payload
    else:
        with pytest.raises(BadPassphraseError):
            Identity.load(path, passphrase)
    assert watcher.check(passphrase.encode()) == 1
    assert watcher.check(path.read_bytes()) == 1  # the file as read
    assert all(not any(buffer) for buffer, _before in watcher.wiped)
