"""Reading back the message of an upload that cannot be accepted, to hand it back.

When a source's session has ended while it was writing, its upload cannot be
stored (there is no one to store it for). Rather than losing the text, the
source view reads the message field from the body, up to a bound, and shows it
again on the login page (escaped, on a no-store page) so it can be sent after
logging in. Nothing read here is stored or logged. Reading stops at the first
file, so a large upload is not read through; files cannot be handed back. The
message's bytes and the parser's buffer are wiped once the text is made (the text
itself is a ``str``, which cannot be: keys.wiping). A body that stops coming, or a wait
that runs out, hands back what arrived and says it is only the beginning.
"""

from __future__ import annotations

import codecs
import contextlib
from dataclasses import dataclass
from typing import BinaryIO

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, NeedData

from intake.app.ingest import FILES_FIELD, MESSAGE_FIELD, PARSER_BUFFER_LIMIT, READ_SIZE
from intake.app.multipart import MultipartDecoder
from intake.worker_threads import WaitedTooLong, waiting_at_most
from keys.wiping import wipe

MAX_GIVE_BACK_BYTES = 24 * 1024  # fits the login form with room to spare (SMALL_FORM_BYTES)
_MAX_READ = MAX_GIVE_BACK_BYTES + 64 * 1024  # the token and part headers come first


@dataclass(frozen=True)
class UnsentForm:
    message: str  # "" when there was none
    truncated: bool  # only the beginning of the message is here (a longer one, or the rest never came)
    had_files: bool  # files were chosen; they are not handed back


def read_unsent_form(stream: BinaryIO, content_type: str | None, *, wait_seconds: float | None = None) -> UnsentForm:
    """The message (and whether files were chosen) of an upload body, read only as far as needed,
    and for at most ``wait_seconds`` under a gevent worker (the bound of intake.worker_threads)."""
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary or len(boundary) > 200 or not boundary.isascii():
        return UnsentForm("", False, False)
    decoder = MultipartDecoder(boundary.encode("ascii"), PARSER_BUFFER_LIMIT)
    message = bytearray()
    try:
        return _read_message(stream, decoder, message, wait_seconds)
    finally:
        wipe(message)
        wipe(decoder.buffer)


def _read_message(stream: BinaryIO, decoder: MultipartDecoder, message: bytearray, wait_seconds: float | None) -> UnsentForm:
    in_message, read, had_files = False, 0, False
    try:
        with waiting_at_most(wait_seconds) if wait_seconds else contextlib.nullcontext():
            while read < _MAX_READ:
                chunk = stream.read(min(READ_SIZE, _MAX_READ - read))
                read += len(chunk)
                decoder.receive_data(chunk or None)
                while not isinstance(event := decoder.next_event(), NeedData):
                    if isinstance(event, Epilogue):
                        return _unsent(message, had_files, cut_short=False)
                    if isinstance(event, (Field, File)):
                        in_message = isinstance(event, Field) and event.name == MESSAGE_FIELD
                        if isinstance(event, File) and event.name == FILES_FIELD and event.filename:
                            # Files come last: nothing more to hand back.
                            return _unsent(message, had_files=True, cut_short=False)
                    elif isinstance(event, Data) and in_message:
                        message += event.data
                        in_message = event.more_data  # False once the message's closing boundary came
                if not chunk:
                    break
    except (ValueError, RequestEntityTooLarge, ClientDisconnected, OSError, WaitedTooLong):
        pass  # hand back what was read
    return _unsent(message, had_files, cut_short=in_message)


def _unsent(message: bytearray, had_files: bool, *, cut_short: bool) -> UnsentForm:
    truncated = cut_short or len(message) > MAX_GIVE_BACK_BYTES
    with memoryview(message) as view:
        # A cut can fall inside a character: drop its half rather than show a replacement mark.
        text = codecs.decode(view[:MAX_GIVE_BACK_BYTES], "utf-8", "ignore" if truncated else "replace")
    return UnsentForm(text.replace("\r\n", "\n").strip("\n"), truncated, had_files)
