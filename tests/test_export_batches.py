"""A full export reads the short items ahead in batches, in the table's key order (the bundle's
entries follow it), and streams the large ones piece by piece: the bundle holds exactly what
the store holds, whatever the mix, and a submission deleted while the bundle streams stops it."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest

from keys.bundle_reader import ExportBundle

from intake.exchange import EXPORT_CACHE_MIB, ExportScope, PreparedExport, _BatchedCiphertexts
from intake.server_identity import load_server_signing_key, server_public_key
from intake.store.newsroom import Newsroom as NewsroomStore
from intake.store.submission_writer import INLINE_BYTES
from tests.fixtures_newsroom import Newsroom, make_newsroom


def store_items(newsroom: Newsroom, sizes: list[int]) -> dict[str, bytes]:
    """One source per three items, each item's 'ciphertext' random bytes of the size given."""
    stored = {}
    with newsroom.store() as store:
        recipients = store.active_recipients()
        for n, size in enumerate(sizes):
            if n % 3 == 0:
                source = store.create_source(os.urandom(32), os.urandom(32))
            with store.start_submission(source.id, "file", recipients) as upload:
                data = os.urandom(size)
                upload.write(data)
                stored[upload.commit()] = data
    return stored


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(_BatchedCiphertexts, "BATCH_ITEMS", 4)
    monkeypatch.setattr(_BatchedCiphertexts, "BATCH_BYTES", 3 * 1024)


def test_every_item_holds_what_the_store_holds(tmp_path: Path, small_batches):
    newsroom = make_newsroom(tmp_path)
    sizes = [100, 2000, INLINE_BYTES + 5000, 700, 5000, 90, 3 * INLINE_BYTES, 1500, 1, 2500, 300]
    stored = store_items(dataclasses.replace(newsroom, settings=dataclasses.replace(newsroom.settings, upload_chunk_bytes=64 * 1024)), sizes)
    with newsroom.store() as store:
        order = [entry.submission.id for group in NewsroomStore(store).export_groups(only_new=False) for entry in group.entries]
        read = _BatchedCiphertexts(store, [(submission_id, len(stored[submission_id])) for submission_id in order])
        assert {submission_id: b"".join(read.pieces(submission_id)) for submission_id in order} == stored


def test_a_submission_deleted_while_streaming_stops_the_bundle(tmp_path: Path, small_batches):
    newsroom = make_newsroom(tmp_path)
    store_items(newsroom, [100] * 12)
    with newsroom.store() as store:
        prepared = PreparedExport(store, ExportScope(only_new=False), load_server_signing_key(newsroom.settings.data_dir))
        pieces = iter(prepared)
        next(pieces)
        with newsroom.store() as other:
            NewsroomStore(other).delete_submissions_of(NewsroomStore(other).source_overview()[-1].id)
        with pytest.raises(ValueError):
            list(pieces)
        assert not prepared.completed


def test_an_export_reads_with_a_larger_page_cache_and_gives_it_back(tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    store_items(newsroom, [100] * 3)
    with newsroom.store() as store:
        default = store._read("PRAGMA cache_size")[0][0]
        prepared = PreparedExport(store, ExportScope(only_new=False), load_server_signing_key(newsroom.settings.data_dir))
        pieces = iter(prepared)
        next(pieces)
        assert store._read("PRAGMA cache_size")[0][0] == -EXPORT_CACHE_MIB * 1024
        list(pieces)
        assert store._read("PRAGMA cache_size")[0][0] == default


def test_the_bundle_lists_the_items_in_the_order_the_store_reads_them(tmp_path: Path, small_batches):
    """The item entries follow the store's own order (each page of the table read once, front to
    back), not the sources' (one page here, one there): the manifest says which entry is which."""
    newsroom = make_newsroom(tmp_path)
    sizes = [100, 2000, INLINE_BYTES + 5000, 700, 5000, 90, 1500, 1, 2500, 300, 40, 800]
    stored = store_items(newsroom, sizes)
    with newsroom.store() as store:
        positions = store.ciphertext_positions(list(stored))
        prepared = PreparedExport(store, ExportScope(only_new=False), load_server_signing_key(newsroom.settings.data_dir))
        data = b"".join(prepared)
    bundle = ExportBundle(io.BytesIO(data))
    server = server_public_key(newsroom.settings.data_dir)
    bundle.verify({bytes(server.verify_key): server})
    sources = bundle.read_manifest(newsroom.alice.identity)
    entries = {item.item_id: item.entry for source in sources for item in source.items}
    in_bundle = sorted(entries, key=entries.get)
    assert len(positions) == len(sizes) - 1  # the large one is stored in pieces
    assert in_bundle[:-1] == sorted(positions, key=positions.get) and in_bundle[-1] not in positions
    source_order = [item.item_id for source in sources for item in source.items]
    assert in_bundle != source_order  # (random keys: twelve items in the same order by chance is a 1 in 479 million)
    for item_id, entry in entries.items():  # each entry holds its own item's envelope, verbatim
        offset, length = bundle.items[entry].offset, bundle.items[entry].length
        assert data[offset : offset + length] == stored[item_id]
