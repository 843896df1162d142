"""Sharing the decryption of a bundle between processes, one per CPU.

Decrypting many short items is bound by creating files and opening envelope
headers (an X25519 operation each), both CPU work that one Python process does
on one core. ``Team`` runs each share of the work (``plan``, then ``write``: see
keys.unpack) in a forked child, so the secret key is never sent anywhere: the
children have it from the fork, as the parent does. Each child dies with the
parent (PR_SET_PDEATHSIG), as one process killed would; and stops between two
items, keeping what is complete, when the parent says so or goes away. Where
processes cannot be forked safely (outside Linux), or for one share, the work
runs in this process, the same way.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence

from keys.errors import KeysError

MAX_WORKERS = 4
PR_SET_PDEATHSIG = 1
PROGRESS_EVERY = 0.1  # seconds between two progress messages of a child


def worker_count() -> int:
    """Processes worth starting here: one per CPU this process may run on, or 1 where forking is not used."""
    if not can_fork():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class Team:
    """Runs phases (method names) of every share: ``share.<phase>(advance, stopped, *args)``.

    ``run`` returns the shares' results in order, or raises the first error after the other
    shares have stopped between two items. ``advance`` gets the children's progress.
    """

    def __init__(self, shares: Sequence[object]):
        self._shares = list(shares)
        self._children: list[tuple[multiprocessing.Process, multiprocessing.connection.Connection]] = []

    def __enter__(self) -> "Team":
        if len(self._shares) > 1:
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        for _process, conn in self._children:
            try:
                conn.send(None)  # stop between two items, keep what is complete, end
            except OSError:
                pass
        for process, conn in self._children:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._children = []

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or a child would write out the parent's buffered text again
        pipes = [context.Pipe() for _ in self._shares]
        for share, (mine, theirs) in zip(self._shares, pipes):
            others = [end for pair in pipes for end in pair if end is not theirs]
            process = context.Process(target=_serve, args=(share, theirs, others, os.getpid()), daemon=True)
            process.start()
            self._children.append((process, mine))
        for _mine, theirs in pipes:
            theirs.close()

    def run(self, phase: str, advance: Callable[[int], None], *args: object) -> list:
        if not self._children:
            return [getattr(share, phase)(advance, lambda: False, *args) for share in self._shares]
        for _process, conn in self._children:
            conn.send((phase, args))
        conns = [conn for _process, conn in self._children]
        results: list = [None] * len(conns)
        pending = set(range(len(conns)))
        error: BaseException | None = None
        while pending:
            for conn in multiprocessing.connection.wait([conns[number] for number in pending]):
                number = conns.index(conn)
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    kind, value = "error", KeysError("a decrypting process stopped unexpectedly; decrypt again to finish "
                                                     "(nothing partial was kept)")
                if kind == "advance":
                    advance(value)
                    continue
                pending.discard(number)
                if kind == "done":
                    results[number] = value
                elif error is None:
                    error = value
                    for other in pending:
                        _send(conns[other], "stop")
        if error is not None:
            raise error
        return results


def _send(conn: multiprocessing.connection.Connection, message: object) -> None:
    try:
        conn.send(message)
    except OSError:
        pass  # that child has ended


def _serve(share: object, conn: multiprocessing.connection.Connection, others: list, parent: int) -> None:
    """A child: run the phases the parent asks for, until it says to end or goes away."""
    for end in others:
        end.close()
    _die_with(parent)
    progress = _Progress(conn)
    stopped = conn.poll  # the parent writes only to stop this phase (or to end)
    try:
        while isinstance(message := conn.recv(), tuple):
            phase, args = message
            result = getattr(share, phase)(progress.advance, stopped, *args)
            progress.send()
            conn.send(("done", result))
    except EOFError:
        pass  # the parent is gone
    except BaseException as error:  # noqa: BLE001 - every failure goes to the parent, which raises it
        progress.send()
        _send(conn, ("error", _portable(error)))


def _die_with(parent: int) -> None:
    """Be killed when the parent dies, as the single process it replaces would be."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
        os._exit(1)


def _portable(error: BaseException) -> BaseException:
    """``error`` if it crosses the pipe intact, else a stand-in naming its kind (and nothing of its data)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any failure to pickle
        return RuntimeError(f"{type(error).__name__} in a decrypting process")


class _Progress:
    """Sums a child's progress and sends it at most every PROGRESS_EVERY seconds."""

    def __init__(self, conn: multiprocessing.connection.Connection):
        self._conn = conn
        self._count = 0
        self._last = time.monotonic()

    def advance(self, count: int) -> None:
        self._count += count
        if time.monotonic() - self._last >= PROGRESS_EVERY:
            self.send()

    def send(self) -> None:
        if self._count:
            _send(self._conn, ("advance", self._count))
            self._count = 0
        self._last = time.monotonic()
