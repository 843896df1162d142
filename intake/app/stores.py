"""The store a request uses, in both apps: taken from the worker's pool
(intake.store.pool) on first use and given back when the request ends."""

from __future__ import annotations

from flask import Flask, current_app, g

from intake.config import Settings
from intake.store import Store
from intake.store.pool import StorePool

_EXTENSION = "intake-stores"


def install_store_pool(app: Flask, settings: Settings) -> StorePool:
    pool = StorePool(settings)
    app.extensions[_EXTENSION] = pool
    app.teardown_appcontext(_give_back_store)
    return pool


def store_pool() -> StorePool:
    return current_app.extensions[_EXTENSION]


def request_store() -> Store:
    """The store of this request, taken from the worker's pool on first use and given back at teardown."""
    if "store" not in g:
        g.store = store_pool().take()
    return g.store


def _give_back_store(error: BaseException | None) -> None:
    store = g.pop("store", None)
    if store is not None:
        store_pool().give_back(store, failed=error is not None)
