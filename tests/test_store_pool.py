"""The per-worker pool of open stores: reuse, and what is never handed on."""

from __future__ import annotations

import os

from tests.fixtures_store import PAST_ANY_HEADER
from intake.config import Settings
from intake.store.pool import StorePool


def test_a_store_given_back_is_reused(settings: Settings):
    pool = StorePool(settings, keep=2)
    first = pool.take()
    pool.give_back(first)
    assert pool.take() is first
    pool.give_back(first)
    pool.close()


def test_each_request_gets_its_own_store(settings: Settings):
    pool = StorePool(settings)
    first, second = pool.take(), pool.take()
    assert first is not second
    for store in (first, second):
        pool.give_back(store)
    pool.close()


def test_a_store_of_a_failed_request_is_closed_not_reused(settings: Settings):
    pool = StorePool(settings)
    store = pool.take()
    pool.give_back(store, failed=True)
    assert pool.take() is not store
    pool.close()


def test_a_store_left_inside_a_transaction_is_not_reused(settings: Settings):
    pool = StorePool(settings)
    store = pool.take()
    store._conn.execute("BEGIN IMMEDIATE")
    pool.give_back(store)
    fresh = pool.take()
    assert fresh is not store
    fresh.create_source(os.urandom(32), os.urandom(32))  # the write lock was released with the old store
    pool.give_back(fresh)
    pool.close()


def test_a_store_with_an_upload_write_in_flight_is_not_reused(settings: Settings, recipients):
    pool = StorePool(settings)
    store = pool.take()
    source = store.create_source(os.urandom(32), os.urandom(32))
    upload = store.start_submission(source.id, "file", recipients)
    upload.write(os.urandom(settings.upload_chunk_bytes + PAST_ANY_HEADER))  # handed to an OS thread
    assert not store.idle
    pool.give_back(store)
    assert pool.take() is not store
    pool.close()


def test_stores_beyond_the_kept_number_are_closed(settings: Settings):
    pool = StorePool(settings, keep=1)
    first, second = pool.take(), pool.take()
    pool.give_back(first)
    pool.give_back(second)
    assert pool.take() is first and pool.take() is not second
    pool.close()


def test_stores_are_not_carried_across_fork(settings: Settings, monkeypatch):
    pool = StorePool(settings)
    store = pool.take()
    pool.give_back(store)
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as seen from a forked child
    assert pool.take() is not store
