"""Open stores kept for reuse by one worker process.

Opening a store (keying SQLCipher, reading the schema, setting pragmas) cost
~0.9 ms, twice per returning source's message (the POST and the page it
redirects to). A request takes a store for itself and gives it back at its end;
a store is never shared by two requests at once. Stores beyond `keep` are
closed, so a burst of slow uploads does not keep connections open afterwards.

`keep` is 32 rather than 8: with 50 sources sending at once (25 requests in flight
per worker), 8 meant most requests opened a store and closed it again (keying,
pragmas, the page caches freed and filled again): about 1 ms of worker CPU a message.
An idle store holds 0.4-0.6 MiB of resident memory: after a burst, up to ~20 MiB a
worker (docs/PERFORMANCE.md, "Fifty senders, CPU per message").
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from intake.store.store import Store

if TYPE_CHECKING:
    from intake.config import Settings


class StorePool:
    def __init__(self, settings: Settings, *, keep: int = 32):
        self._settings = settings
        self._keep = keep
        self._idle: list[Store] = []
        self._lock = threading.Lock()  # gevent's lock in a gevent worker; held only around the list
        self._pid = os.getpid()

    def take(self) -> Store:
        with self._lock:
            if self._pid != os.getpid():
                # SQLite connections must not cross fork(): forget (never close) the parent's.
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return Store.open(self._settings)

    def give_back(self, store: Store, *, failed: bool = False) -> None:
        """Keep `store` for the next request, unless the request failed or it is not idle."""
        if not failed and store.idle and self._pid == os.getpid():
            store.end_request()
            with self._lock:
                if len(self._idle) < self._keep:
                    store.release_blobs_cache()  # a large upload's pages: not worth keeping for the next request
                    self._idle.append(store)
                    return
        store.close()  # ends the request the same way

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for store in idle:
            store.close()
