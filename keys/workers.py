"""Sharing the decryption of a bundle between processes, one per CPU.

Decrypting many short items is bound by creating files and opening envelope
headers (an X25519 operation each), both CPU work that one Python process does
on one core. ``Team`` runs each share of the work (``plan``, then ``write``: see
keys.unpack) in a forked child, so the secret key is never sent anywhere: the
children have it from the fork, as the parent does. They talk to the parent over
two pipes each (pickled messages; no multiprocessing, which would load the socket
module into an offline tool). Each child dies with the parent (PR_SET_PDEATHSIG),
as one process killed would; and stops between two items, keeping what is
complete, when the parent says so or goes away. Where processes cannot be forked
safely (outside Linux), or for one share, the work runs in this process, the same way.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence

from keys.errors import KeysError

MAX_WORKERS = 4
PR_SET_PDEATHSIG = 1
PROGRESS_EVERY = 0.1  # seconds between two progress messages of a child
_LENGTH = struct.Struct(">I")


def worker_count() -> int:
    """Processes worth starting here: one per CPU this process may run on, or 1 where forking is not used."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


class _Pipe:
    """One direction of a parent-child channel: pickled messages, each prefixed by its length."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, message: object) -> None:
        data = pickle.dumps(message)
        view = memoryview(_LENGTH.pack(len(data)) + data)
        while view:
            view = view[os.write(self.fd, view) :]

    def receive(self) -> object:
        """The next message; EOFError once the other side has closed."""
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
        return pickle.loads(self._exactly(length))

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            more = os.read(self.fd, size - len(data))
            if not more:
                raise EOFError
            data += more
        return bytes(data)

    def ready(self) -> bool:
        """Something (a message, or the end) can be read without waiting."""
        return bool(select.select([self.fd], [], [], 0)[0])

    def close(self) -> None:
        os.close(self.fd)


class _Child:
    def __init__(self, pid: int, commands: _Pipe, messages: _Pipe):
        self.pid, self.commands, self.messages = pid, commands, messages


class Team:
    """Runs phases (method names) of every share: ``share.<phase>(advance, stopped, *args)``.

    ``run`` returns the shares' results in order, or raises the first error after the other
    shares have stopped between two items. ``advance`` gets the children's progress.
    """

    def __init__(self, shares: Sequence[object]):
        self._shares = list(shares)
        self._children: list[_Child] = []

    def __enter__(self) -> "Team":
        if len(self._shares) > 1:
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self._children:
            _quietly(child.commands.close)  # the end: stop between two items, keep what is complete
        for child in self._children:
            _reap(child.pid, timeout=60)
            child.messages.close()
        self._children = []

    def _start(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or a child would write out the parent's buffered text again
        parent = os.getpid()
        for share in self._shares:
            command_read, command_write = os.pipe()
            message_read, message_write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the caller's code
                status = 1
                try:
                    for child in self._children:  # the other children's ends, inherited
                        _quietly(child.commands.close)
                        _quietly(child.messages.close)
                    os.close(command_write)
                    os.close(message_read)
                    _die_with(parent)
                    _serve(share, _Pipe(command_read), _Pipe(message_write))
                    status = 0
                finally:
                    os._exit(status)
            os.close(command_read)
            os.close(message_write)
            self._children.append(_Child(pid, _Pipe(command_write), _Pipe(message_read)))

    def run(self, phase: str, advance: Callable[[int], None], *args: object) -> list:
        if not self._children:
            return [getattr(share, phase)(advance, lambda: False, *args) for share in self._shares]
        for child in self._children:
            child.commands.send((phase, args))
        results: list = [None] * len(self._children)
        pending = dict(enumerate(self._children))
        error: BaseException | None = None
        while pending:
            ready, _, _ = select.select([child.messages.fd for child in pending.values()], [], [])
            for number, child in list(pending.items()):
                if child.messages.fd not in ready:
                    continue
                try:
                    kind, value = child.messages.receive()
                except (EOFError, OSError, pickle.UnpicklingError):
                    kind, value = "error", KeysError("a decrypting process stopped unexpectedly; decrypt again to finish "
                                                     "(nothing partial was kept)")
                if kind == "advance":
                    advance(value)
                    continue
                del pending[number]
                if kind == "done":
                    results[number] = value
                elif error is None:
                    error = value
                    for other in pending.values():
                        _quietly(other.commands.send, "stop")
        if error is not None:
            raise error
        return results


def _serve(share: object, commands: _Pipe, messages: _Pipe) -> None:
    """A child: run the phases the parent asks for, until it says to end or goes away."""
    progress = _Progress(messages)
    try:
        while isinstance(message := commands.receive(), tuple):
            phase, args = message
            # The parent writes during a phase only to stop it (or closes the pipe: the end).
            result = getattr(share, phase)(progress.advance, commands.ready, *args)
            progress.send()
            messages.send(("done", result))
    except EOFError:
        pass  # the parent is done, or gone
    except BaseException as error:  # noqa: BLE001 - every failure goes to the parent, which raises it
        progress.send()
        _quietly(messages.send, ("error", _portable(error)))


def _die_with(parent: int) -> None:
    """Be killed when the parent dies, as the single process it replaces would be."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
        os._exit(1)


def _reap(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.01)


def _portable(error: BaseException) -> BaseException:
    """``error`` if it crosses the pipe intact, else a stand-in naming its kind (and nothing of its data)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any failure to pickle
        return RuntimeError(f"{type(error).__name__} in a decrypting process")


def _quietly(action: Callable, *args: object) -> None:
    try:
        action(*args)
    except OSError:
        pass  # that end is gone already


class _Progress:
    """Sums a child's progress and sends it at most every PROGRESS_EVERY seconds."""

    def __init__(self, messages: _Pipe):
        self._messages = messages
        self._count = 0
        self._last = time.monotonic()

    def advance(self, count: int) -> None:
        self._count += count
        if time.monotonic() - self._last >= PROGRESS_EVERY:
            self.send()

    def send(self) -> None:
        if self._count:
            _quietly(self._messages.send, ("advance", self._count))
            self._count = 0
        self._last = time.monotonic()
