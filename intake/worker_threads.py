"""Running long C calls without stalling a gevent worker's event loop."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_os_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call `fn` in a real OS thread when this process runs under gevent, else directly.

    Under gunicorn's gevent worker every connection of a worker shares one OS
    thread, so a 0.35 s Argon2id on it would freeze them all. libsodium releases
    the GIL while it works, so in a pool thread the derivation runs while the
    loop keeps serving. Under a threaded server or the Flask test client the
    caller is already a real thread and gevent is not loaded.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return fn(*args, **kwargs)
    import gevent

    return gevent.get_hub().threadpool.apply(fn, args, kwargs)
