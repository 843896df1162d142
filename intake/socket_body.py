"""A request body of known length, read from the connection straight into the app's buffer.

gunicorn hands the app a body through ``Body.read``: each 64 KiB the app asks for was
received into a new bytes object, copied into the socket reader's buffer, copied into the
body's own, and sliced out; Werkzeug's stream then copied it twice more. Each copy is a
fresh allocation, which intake's allocator settings fill and wipe (intake.memory_wiping).
Reading without them saved 15% of a worker's CPU on a 256 MiB upload (docs/PERFORMANCE.md,
"Sixteenth session"). ``SocketBody.readinto`` receives into the
caller's buffer instead: once what gunicorn read ahead with the request's head is given
out, each call is one ``recv_into`` on the connection, paced like every body read
(intake.body_pace).

It is gunicorn's ``Body`` still, so gunicorn's own reads (``read``, and the draining of a
body the app left unread) go on working, and each read counts against the same length:
no byte past the body is ever read.

Imported by the gunicorn master (through the worker class), so no Flask or app import.
"""

from __future__ import annotations

from typing import Any

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader


class SocketBody(Body):
    """gunicorn's body of one request with a Content-Length, with ``readinto`` from the connection."""

    def __init__(self, body: Body):
        super().__init__(body.reader)
        self.buf = body.buf  # what gunicorn's read() had buffered: nothing, unless the app read already

    @staticmethod
    def fits(body: Body) -> bool:
        """Whether ``body`` is read by length from a connection (not chunked, not a test's iterable)."""
        return isinstance(body.reader, LengthReader) and isinstance(body.reader.unreader, SocketUnreader)

    def readinto(self, buffer: Any) -> int:
        """Fill the start of ``buffer`` with the next bytes of the body; 0 at its end (or when
        the client went away before it). Raises what the connection's reads raise."""
        reader: LengthReader = self.reader
        with memoryview(buffer) as given, given.cast("B") as view:
            if self.buf.tell():  # an earlier read() took more than it returned: those bytes first
                data = self.read(min(len(view), self.buf.tell()))
                view[: len(data)] = data
                return len(data)
            wanted = min(len(view), reader.length)
            if wanted <= 0:
                return 0
            ahead = reader.unreader.take_buffered()  # read with the head (or unread by gunicorn)
            if ahead:
                if len(ahead) > wanted:
                    reader.unreader.unread(ahead[wanted:])  # a pipelined request's bytes, or more of this body
                    ahead = ahead[:wanted]
                view[: len(ahead)] = ahead
                reader.length -= len(ahead)
                return len(ahead)
            try:
                with view[:wanted] as into:
                    count = reader.unreader.sock.recv_into(into)
            except Exception:
                self.failed = True  # as gunicorn's own reads mark it: the connection is closed, not drained
                raise
            reader.length -= count
            return count
