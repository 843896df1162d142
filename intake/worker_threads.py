"""Running long C calls in OS threads without stalling a gevent worker's event loop, and the lock
and the sleep those threads use instead of gevent's."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


def _gevent_threads() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def os_thread_lock() -> threading.Lock:
    """A lock for what OS threads share, such as the slots file's descriptors.

    Under a gevent worker, `threading.Lock` is gevent's lock, made for greenlets. OS threads of
    the hub's pool that contend for one can stop waiting for good (tests/test_os_thread_locks.py),
    so such state gets a real lock. A greenlet may take it too, but must not switch to another
    greenlet while it holds it: hold it only around a few quick calls.
    """
    if _gevent_threads():
        return sys.modules["gevent.monkey"].get_original("_thread", "allocate_lock")()
    return threading.Lock()


def sleep_here(seconds: float) -> None:
    """Wait ``seconds`` as suits this thread. On a gevent worker's loop (its main thread) with
    gevent's sleep: the worker's other connections are served meanwhile. In any other thread, a
    pool thread included, with the OS's sleep: gevent's there would give the thread an event
    loop of its own, and OS threads stay clear of gevent (see os_thread_lock)."""
    monkey = sys.modules.get("gevent.monkey")
    # On Linux the main thread's id is the process id; gevent does not patch get_native_id.
    if monkey is not None and monkey.is_module_patched("time") and threading.get_native_id() != os.getpid():
        monkey.get_original("time", "sleep")(seconds)
    else:
        time.sleep(seconds)


class WaitedTooLong(BaseException):
    """Raised by ``waiting_at_most``. A BaseException, as gevent's own Timeout is: what reads on
    the way turns errors into others (a TimeoutError is retried by intake.body_pace, an Exception
    becomes a 400 in intake.app.security), and only the caller may catch it."""


@contextlib.contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    """On a gevent worker, WaitedTooLong in the block if it still waits after ``seconds`` (for a
    client's bytes, say). Elsewhere (the Flask test client reads from memory) no bound."""
    if not _gevent_threads():
        yield
        return
    import gevent

    with gevent.Timeout(seconds, WaitedTooLong(f"waited {seconds:g} s")):
        yield


def run_in_os_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call `fn` in a real OS thread when this process runs under gevent, else directly.

    Under gunicorn's gevent worker every connection of a worker shares one OS
    thread, so a 0.35 s Argon2id on it would freeze them all. libsodium releases
    the GIL while it works, so in a pool thread the derivation runs while the
    loop keeps serving. Under a threaded server or the Flask test client the
    caller is already a real thread and gevent is not loaded.
    """
    if not _gevent_threads():
        return fn(*args, **kwargs)
    import gevent

    return _outcome(gevent.get_hub().threadpool.apply(_caught, (fn, args, kwargs)))


# gevent's system errors: they stop the worker (the hub throws them into its main greenlet), as a
# fault in a C extension should; they are left to gevent.
_STOPS_THE_WORKER = (KeyboardInterrupt, SystemExit, SystemError)


class _Raised:
    """What a task raised, handed back as its result: gevent prints every error a pool task
    raises (its message, traceback and a timestamp, in the server's log, past intake.logs'
    withheld details) even though the greenlet waiting for it gets it, and handles it. One that
    nothing ever waited for is logged when it goes, by its type only."""

    __slots__ = ("error", "raised")

    def __init__(self, error: BaseException):
        self.error, self.raised = error, False

    def __del__(self) -> None:
        # On the loop's thread only: logging's locks are gevent's there, and would hang an OS thread.
        if not self.raised and threading.get_native_id() == os.getpid():
            logging.getLogger(__name__).warning("A task in an OS thread failed and nothing waited for it: %s (details withheld)",
                                                type(self.error).__name__)


def _caught(fn: Callable[..., T], args: tuple, kwargs: dict) -> T | _Raised:
    try:
        return fn(*args, **kwargs)
    except _STOPS_THE_WORKER:
        raise
    except BaseException as error:  # raised again, whole, in the greenlet that waits for it
        return _Raised(error)


def _outcome(value: Any) -> Any:
    if isinstance(value, _Raised):
        value.raised = True
        raise value.error
    return value


class Running(Protocol[T_co]):
    def result(self) -> T_co:
        """Wait for the call to end (only this greenlet, under gevent) and return or raise what it did."""

    def done(self) -> bool:
        """Whether the call has ended."""


class _GeventRunning:
    def __init__(self, async_result: Any):
        self._async_result = async_result

    def result(self) -> Any:
        return _outcome(self._async_result.get())

    def done(self) -> bool:
        return self._async_result.ready()


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _plain_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():  # threads do not survive fork
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="intake-store")
            _executor_pid = os.getpid()
        return _executor


def start_in_os_thread(fn: Callable[..., T], /, *args: Any) -> Running[T]:
    """Start `fn` in a real OS thread and return at once, so the caller can go on
    (read and encrypt the next piece of an upload while this one is written).

    Under gevent the thread comes from the hub's pool and waiting for the result
    lets the loop serve other connections; elsewhere from a small shared pool.
    """
    if _gevent_threads():
        import gevent

        return _GeventRunning(gevent.get_hub().threadpool.spawn(_caught, fn, args, {}))
    return _plain_executor().submit(fn, *args)
