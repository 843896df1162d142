"""Encryption on receipt: a multipart upload is parsed as a stream and every part
is encrypted, chunk by chunk, to all active journalist keys as it arrives.

Werkzeug's own form parser spools uploaded files to a temporary file in the clear,
so upload routes never touch ``request.form``/``request.files``; they hand the raw
body to :func:`ingest_submission`. Plaintext exists only in this process's memory,
one read at a time. Each part (the message, every file) is published once it has
arrived whole, so that a connection cut or a refusal later in the request keeps
what was complete: never a part in part, and the source is told which parts
arrived (``on_published``, the receipt). A failure aborts only the part in flight.
Parts that end close together (a message and a few small files: most requests) are
published in one transaction: a whole part waits for the parts after it while they
stay small and data keeps coming (HOLD_SECONDS), and what waits is published
before any refusal is raised. Each transaction costs a commit and emptying the WAL,
and every request of a busy server waits for one: publishing per request made 50
senders 14-17% faster (docs/PERFORMANCE.md, "Tenth session").

Every buffer of plaintext this module owns (what is held back for the parser, a
blank message held back, the form token, the envelope writers' message buffers) is
wiped when the request ends, refused or not (keys.wiping). What Werkzeug hands over
is ``bytes`` (each read, each piece of a part) that nobody can wipe: those are freed
within the read that made them, and the server's allocator settings overwrite freed
memory (intake.memory_wiping).

The form must send its CSRF token as the first part, so that a forged request is
refused before anything is written or published: any other part before it refuses
the upload. A part the form never sends (another name, a message sent as a file, a
file sent as a field) refuses the rest of the upload: the source is told which
earlier parts were kept, rather than told "received" about something dropped.
There is no honeypot field: over an onion service with proof-of-work and an
Argon2id-priced codename it stopped little, and a browser's autofill could fill it
and have a real source's message thrown away behind a success page.
"""

from __future__ import annotations

import contextlib
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, NeedData

from intake.app.multipart import MultipartDecoder
from intake.body_pace import BodyTooSlowError
from keys.envelope import MAX_TYPE, EnvelopeWriter, Metadata
from keys.wiping import wipe

READ_SIZE = 64 * 1024  # per upload in flight, a few buffers of this size (the read, what the parser holds)
PARSER_BUFFER_LIMIT = READ_SIZE + 64 * 1024  # part headers must fit in one read
MAX_FILES = 255  # files in one submission; a refusal names this limit
# The files, the CSRF token and the message, and one more so that a file past the limit
# reaches our own count (TooManyFilesError names the limit) before the parser's.
MAX_PARTS = MAX_FILES + 3
SMALL_FIELD_LIMIT = 1024  # the CSRF token
MAX_FILE_NAME = 255
BLANK_MESSAGE_HOLD = 64 * 1024  # a message of only whitespace is not stored
# A whole part waits to be published with the parts after it while the ciphertext of those
# waiting and the plaintext of the part in flight stay under HOLD_BYTES. That is half of what
# the store keeps in the database with a publication (INLINE_BYTES, 256 KiB of ciphertext:
# padding adds at most 12% to a part, its header at most 5 KiB) and of the size at which it
# starts writing a part to the slots file before its publication, so parts that wait together
# all stay in the database and keep the order they were sent in. The first data, part or end
# after HOLD_SECONDS have passed publishes them: a slow circuit does not keep a message back.
HOLD_BYTES = 128 * 1024
HOLD_SECONDS = 1.0

CSRF_FIELD = "csrf_token"
MESSAGE_FIELD = "message"
FILES_FIELD = "files"


class UploadError(Exception):
    """A submission was refused; its part in flight and everything after were not stored."""


class UploadTooLargeError(UploadError):
    """The request is larger than the configured limit."""


class MalformedUploadError(UploadError):
    """The body is not a multipart form we understand."""


class UnexpectedPartError(MalformedUploadError):
    """The form has a part the submit page never sends: nothing from it on is kept."""


class TooManyFilesError(MalformedUploadError):
    """More than MAX_FILES files in one submission."""


class ConnectionLostError(UploadError):
    """The client stopped sending before the request was complete."""


class UploadTooSlowError(ConnectionLostError):
    """The server stopped the body: it came slower than the minimum rate over a window, or was
    still coming at the deadline (``past_deadline``); ``seconds`` is that window or deadline
    (intake.body_pace)."""

    def __init__(self, message: str, *, past_deadline: bool, seconds: float):
        super().__init__(message)
        self.past_deadline = past_deadline
        self.seconds = seconds


class FormTokenError(UploadError):
    """The CSRF token is missing, misplaced or invalid."""


class EmptySubmissionError(UploadError):
    """Neither a message nor a file was sent."""


class NoRecipientsError(UploadError):
    """No journalist key is active, so nothing can be encrypted."""


class SubmissionSink(Protocol):
    size: int  # ciphertext bytes written so far
    def write(self, ciphertext: bytes | memoryview) -> object: ...  # copies: the buffer is reused after it returns
    def commit(self) -> str: ...
    def abort(self) -> None: ...


class RecipientLike(Protocol):
    public_key: bytes


class SubmissionStore(Protocol):
    def active_recipients(self) -> Sequence[RecipientLike]: ...
    def start_submission(self, source_id: str, kind: str, recipients: list) -> SubmissionSink: ...
    def commit_together(self, sinks: list) -> tuple[str, ...]: ...  # all visible in one transaction, or none


@dataclass(frozen=True)
class ReceivedItem:
    """What the source sent in one stored part, for its receipt (never stored in the clear)."""

    kind: str  # "message" or "file"
    name: str | None  # the file name as sent (cleaned), None for the message
    size: int  # plaintext bytes


@dataclass(frozen=True)
class IngestResult:
    submission_ids: tuple[str, ...]
    items: tuple[ReceivedItem, ...] = ()  # one per stored submission, in the order sent


PublishedCallback = Callable[[ReceivedItem], None]


class _EncryptedPart:
    """One message or file, encrypted into its own pending submission.

    The submission starts on the first byte worth keeping (or at once for a named
    file, so an empty file still arrives), which keeps the unused file input and an
    empty message box from leaving anything behind.
    """

    def __init__(self, upload: "_Upload", kind: str, metadata: Metadata, *, start_now: bool, skip_blank: bool):
        self._upload = upload
        self._kind = kind
        self._metadata = metadata
        self._skip_blank = skip_blank
        self._held = bytearray()
        self._envelope: EnvelopeWriter | None = None
        self._sink: SubmissionSink | None = None
        self.received = 0
        if start_now:
            self._start()

    def _start(self) -> None:
        self._sink = self._upload.start_submission(self._kind)
        self._envelope = EnvelopeWriter(self._sink, self._upload.recipient_keys, self._metadata)

    def receipt(self) -> ReceivedItem:
        return ReceivedItem(self._kind, self._metadata.name, self.received)

    def feed(self, data: bytes) -> None:
        if self._envelope is None and self._skip_blank:
            self._held += data
            if (not self._held or self._held.isspace()) and len(self._held) <= BLANK_MESSAGE_HOLD:
                return
            held, self._held = self._held, bytearray()
            try:
                self._write(held)
            finally:
                wipe(held)
            return
        self._write(data)

    def _write(self, data: bytes | bytearray) -> None:
        if not data:
            return
        self._upload.publish_held_if(self.received + len(data))
        if self._envelope is None:
            self._start()
        self._envelope.write(data)
        self.received += len(data)

    def finish(self) -> None:
        """The part has arrived whole: close its envelope and publish it (perhaps with the next ones)."""
        if self._envelope is not None:
            self._envelope.close()
            self._upload.publish(self._sink, self.receipt())

    def wipe(self) -> None:
        """Wipe what this part holds (its envelope is given up unless it was closed)."""
        wipe(self._held)
        if self._envelope is not None:
            self._envelope.discard()


class _SmallField:
    def __init__(self, limit: int = SMALL_FIELD_LIMIT):
        self._limit = limit
        self._value = bytearray()

    def feed(self, data: bytes) -> None:
        self._value += data
        if len(self._value) > self._limit:
            raise MalformedUploadError("a form field is longer than allowed")

    def text(self) -> str:
        return self._value.decode("utf-8", errors="replace")

    def wipe(self) -> None:
        wipe(self._value)


def _clean_file_name(name: str) -> str | None:
    """Browsers send the bare name; keep it readable, bounded and free of control characters.
    The offline toolkit sanitises it again before it ever becomes a path."""
    cleaned = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return cleaned[:MAX_FILE_NAME] or None


def _clean_content_type(value: str | None) -> str:
    if value and len(value) <= MAX_TYPE and value.isascii() and value.isprintable():
        return value
    return "application/octet-stream"


class _Upload:
    def __init__(self, store: SubmissionStore, source_id: str, check_form_token: Callable[[str], None],
                 on_published: PublishedCallback | None):
        self._store = store
        self._on_published = on_published
        self._source_id = source_id
        self._check_form_token = check_form_token
        self._recipients = list(store.active_recipients())
        if not self._recipients:
            raise NoRecipientsError("no journalist key is active")
        self.recipient_keys = [recipient.public_key for recipient in self._recipients]
        self._in_flight: SubmissionSink | None = None  # the part being stored, not yet published
        self._held: list[tuple[SubmissionSink, ReceivedItem]] = []  # whole parts waiting for the next ones
        self._held_since = 0.0
        self._held_refused = False  # the store refused to publish them: abort() drops them
        self.published_ids: list[str] = []
        self.items: list[ReceivedItem] = []  # the parts published, in the order sent
        self._files = 0
        self._token_checked = False
        self._field_name: str | None = None
        self._part: _EncryptedPart | _SmallField | None = None

    def start_submission(self, kind: str) -> SubmissionSink:
        self._in_flight = self._store.start_submission(self._source_id, kind, self._recipients)
        return self._in_flight

    def publish(self, sink: SubmissionSink, item: ReceivedItem) -> None:
        """A part has arrived whole: hold it for the parts after it (HOLD_BYTES), or publish it
        with those held before it. Only reached after the form token was checked: on_part
        refuses any part before it."""
        self._in_flight = None
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append((sink, item))
        self.publish_held_if(0)

    def publish_held_if(self, in_flight_bytes: int) -> None:
        """Publish the held parts if they waited HOLD_SECONDS, or if with a part in flight of
        ``in_flight_bytes`` (plaintext) they would no longer be small together (HOLD_BYTES)."""
        if not self._held:
            return
        held_bytes = sum(sink.size for sink, _ in self._held)  # ciphertext: padded, with its header
        if held_bytes + in_flight_bytes > HOLD_BYTES or time.monotonic() - self._held_since > HOLD_SECONDS:
            self.publish_held()

    def publish_held(self) -> None:
        """Make the held parts visible, in one transaction, then tell the caller of each."""
        if not self._held:
            return
        try:
            ids = self._store.commit_together([sink for sink, _ in self._held])
        except BaseException:
            self._held_refused = True
            raise
        held, self._held = self._held, []
        for submission_id, (_, item) in zip(ids, held):
            self.published_ids.append(submission_id)
            self.items.append(item)
            if self._on_published is not None:
                self._on_published(item)

    def on_part(self, event: Field | File) -> None:
        if not self._token_checked and event.name != CSRF_FIELD:
            raise FormTokenError("the form token must come first")
        self.publish_held_if(0)
        self._field_name = event.name
        if event.name == CSRF_FIELD:
            self._part = _SmallField()
        elif isinstance(event, Field) and event.name == MESSAGE_FIELD:
            metadata = Metadata("message", content_type="text/plain; charset=utf-8")
            self._part = _EncryptedPart(self, "message", metadata, start_now=False, skip_blank=True)
        elif isinstance(event, File) and event.name == FILES_FIELD:
            self._files += 1
            if self._files > MAX_FILES:
                raise TooManyFilesError(f"more than {MAX_FILES} files")
            name = _clean_file_name(event.filename)
            content_type = _clean_content_type(event.headers.get("content-type"))
            metadata = Metadata("file", name=name, content_type=content_type)
            self._part = _EncryptedPart(self, "file", metadata, start_now=name is not None, skip_blank=False)
        else:
            raise UnexpectedPartError("the form has a part the page never sends")

    def on_data(self, event: Data) -> None:
        if self._part is None:
            raise MalformedUploadError("data outside a form part")
        self._part.feed(event.data)
        if event.more_data:
            return
        part, self._part = self._part, None
        try:
            if isinstance(part, _EncryptedPart):
                part.finish()
            else:
                self._on_small_field(part.text())
        finally:
            part.wipe()  # published or refused, what it held is wiped now

    def _on_small_field(self, value: str) -> None:
        if self._token_checked:
            raise FormTokenError("the form token was sent twice")
        self._check_form_token(value)  # raises FormTokenError
        self._token_checked = True

    def finish(self) -> IngestResult:
        """The form is complete: publish what is held; every other part was published before."""
        if not self._token_checked:
            raise FormTokenError("the form token is missing")
        self.publish_held()
        if not self.published_ids:
            raise EmptySubmissionError("nothing was submitted")
        return IngestResult(tuple(self.published_ids), tuple(self.items))

    def wipe(self) -> None:
        """Wipe the buffers of the part in flight (each part is wiped as it ends: on_data)."""
        if self._part is not None:
            self._part.wipe()

    def abort(self, *, keep_held: bool) -> None:
        """Drop the part in flight; publish the whole parts held (``keep_held``, the request was
        refused or cut) or drop them too (the process is stopping); what was published stays."""
        stopped: BaseException | None = None
        if keep_held and not self._held_refused:
            try:
                self.publish_held()
            except Exception:  # noqa: BLE001 - the store refused them too (a full disk): the error raised is the first one
                pass
            except BaseException as stop:  # stopped meanwhile: drop what is left first, then stop
                stopped = stop
        dropped = [sink for sink, _ in self._held] + ([self._in_flight] if self._in_flight is not None else [])
        self._held, self._in_flight = [], None
        for sink in dropped:
            try:
                sink.abort()
            except Exception:  # noqa: BLE001 - the store's recover() at next start removes what is left
                pass
        if stopped is not None:
            raise stopped


def _boundary(content_type: str | None) -> bytes:
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary or len(boundary) > 200 or not boundary.isascii():
        raise MalformedUploadError("the request is not a multipart form")
    return boundary.encode("ascii")


def _feed(decoder: MultipartDecoder, upload: _Upload) -> bool:
    """Hand every event the decoder can produce to the upload; True once the form is complete."""
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData):
            return False
        if isinstance(event, Epilogue):
            return True
        if isinstance(event, (Field, File)):
            upload.on_part(event)
        elif isinstance(event, Data):
            upload.on_data(event)


def _read_into(stream: BinaryIO, into: memoryview) -> int:
    """Fill the start of ``into`` with the next bytes of the body; 0 at its end. Straight from
    the connection where the stream can (intake.socket_body), else through a read."""
    try:
        if hasattr(stream, "readinto"):
            try:
                return stream.readinto(into) or 0
            except NotImplementedError:  # io.RawIOBase's own, in a stream that has only read()
                pass
        data = stream.read(len(into))
        into[: len(data)] = data
        return len(data)
    except (ClientDisconnected, OSError) as error:
        slow = _body_too_slow(error)
        if slow is not None:
            raise UploadTooSlowError("the server stopped a body that came too slowly", past_deadline=slow.past_deadline,
                                     seconds=slow.seconds) from None
        raise ConnectionLostError("the connection ended mid-upload") from None
    except RequestEntityTooLarge:  # Werkzeug's own cap on the input stream
        raise UploadTooLargeError("the upload is larger than allowed") from None


def _body_too_slow(error: BaseException | None) -> BodyTooSlowError | None:
    """The worker's refusal of a slow body (intake.body_pace) behind ``error``: Werkzeug's stream
    turns every read error into ClientDisconnected, raised while handling the original."""
    while error is not None:
        if isinstance(error, BodyTooSlowError):
            return error
        error = error.__cause__ or error.__context__
    return None


def ingest_submission(
    stream: BinaryIO,
    content_type: str | None,
    *,
    store: SubmissionStore,
    source_id: str,
    max_bytes: int,
    check_form_token: Callable[[str], None],
    on_published: PublishedCallback | None = None,
) -> IngestResult:
    """Read a multipart body from ``stream``, encrypting as it arrives and publishing
    each part once it is whole (perhaps with the next ones; ``on_published`` hears of
    each, in order). Raises an UploadError (after publishing the whole parts held and
    dropping the part in flight) when the request is refused; the parts published
    before the refusal stay."""
    decoder = MultipartDecoder(_boundary(content_type), PARSER_BUFFER_LIMIT, max_parts=MAX_PARTS)
    upload = _Upload(store, source_id, check_form_token, on_published)
    received = 0
    held = bytearray()
    read_buffer = bytearray(READ_SIZE)  # each read lands here, is handed on, and is wiped
    reads = memoryview(read_buffer)
    try:
        finished = False
        while not finished:
            count = _read_into(stream, reads)
            received += count
            if received > max_bytes:
                raise UploadTooLargeError("the upload is larger than allowed")
            if count:
                held += reads[:count]
                wipe(reads[:count])  # not kept while the next read waits for the network
                decoder.receive_held(held)
                finished = _feed(decoder, upload)
                continue
            decoder.receive_held(held, at_the_end=True)
            decoder.receive_data(None)
            try:
                finished = _feed(decoder, upload)
            except ValueError:
                finished = False
            if not finished:
                raise ConnectionLostError("the upload ended before the form was complete")
        return upload.finish()
    except RequestEntityTooLarge:
        upload.abort(keep_held=True)
        raise MalformedUploadError("the form has too many parts or an oversized part header") from None
    except ValueError:  # the parser's complaints (UnicodeDecodeError included); they name no data
        upload.abort(keep_held=True)
        raise MalformedUploadError("the request is not a well-formed multipart form") from None
    except Exception:
        upload.abort(keep_held=True)
        raise
    except BaseException:  # the request is being stopped (its greenlet killed): nothing more is stored
        upload.abort(keep_held=False)
        raise
    finally:
        wipe(read_buffer)
        wipe(held)
        wipe(decoder.buffer)  # the parser's own bytearray: what it had not handed out yet
        upload.wipe()
        with contextlib.suppress(BufferError):  # a stream that kept a view of it: nothing left to wipe
            reads.release()

