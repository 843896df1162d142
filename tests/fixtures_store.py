"""Fixtures for an initialised data dir, its settings and an open store (cheap KDF costs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from keys.envelope import MAX_RECIPIENTS, header_size
from keys.identity import Identity
from nacl import pwhash

from intake.config import Settings, load_settings
from intake.setup import init_data_dir
from intake.store import Recipient, Source, Store

# A first piece this much past a chunk is stored whatever the number of recipients: a large
# upload's first chunk is a chunk's worth of slots after the envelope's header.
PAST_ANY_HEADER = header_size(MAX_RECIPIENTS) + 1
# Argon2id's minimum costs: derivations take milliseconds, so tests stay fast.
FAST_KDF = {"kdf_opslimit": pwhash.argon2id.OPSLIMIT_MIN, "kdf_memlimit": pwhash.argon2id.MEMLIMIT_MIN}


def make_journalist(folder: Path, name: str) -> tuple[Identity, Path]:
    """A journalist identity and its public key file (the secret stays in memory)."""
    identity = Identity.generate(name)
    public_file = folder / f"{name}.public"
    identity.public.save(public_file)
    return identity, public_file


@pytest.fixture
def journalists(tmp_path: Path) -> list[tuple[Identity, Path]]:
    folder = tmp_path / "journalist-keys"
    folder.mkdir()
    return [make_journalist(folder, name) for name in ("alice", "bob", "carol")]


@pytest.fixture
def settings(tmp_path: Path, journalists: list[tuple[Identity, Path]]) -> Settings:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, [public_file for _, public_file in journalists], key_in_data_dir=True)
    return load_settings(data_dir, **FAST_KDF)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings) as opened:
        yield opened


@pytest.fixture
def recipients(store: Store) -> list[Recipient]:
    return store.active_recipients()


@pytest.fixture
def source(store: Store) -> Source:
    return store.create_source(b"\x01" * 32, b"\x02" * 32)


def store_as_before_the_slots_file(store: Store, source_id: str, envelope: bytes, piece_bytes: int = 64 * 1024) -> str:
    """Store ``envelope`` as intake did before the slots file (schema 8): every piece but the
    last in the blobs database, the last one in the main database. Returns the submission's id."""
    from intake.store.connection import write_transaction
    from intake.store.records import random_rowid
    from intake.store.store import _open_blobs

    upload = store.start_submission(source_id, "file", store.active_recipients())
    pieces = [envelope[start : start + piece_bytes] for start in range(0, len(envelope), piece_bytes)]
    _open_blobs(store._settings).close()
    blobs = store._legacy_blobs()
    with write_transaction(blobs) as conn:
        conn.executemany("INSERT INTO chunks (rowid, submission_id, seq, data) VALUES (?, ?, ?, ?)",
                         [(random_rowid(), upload.id, seq, piece) for seq, piece in enumerate(pieces[:-1])])
    with write_transaction(store._conn) as conn:
        store._insert_pending(conn, upload, writer=None)
        conn.execute("UPDATE submissions SET state = 'ready', size = ? WHERE id = ?", (len(envelope), upload.id))
        conn.execute("INSERT INTO submission_chunks (rowid, submission_id, seq, data) VALUES (?, ?, ?, ?)",
                     (random_rowid(), upload.id, len(pieces) - 1, pieces[-1]))
    upload.abort()  # nothing of it was written through the writer
    return upload.id


def page_to_damage(database: bytes, key: bytes, scratch: Path, *, read_at_opening: bool, page_size: int | None = None) -> int:
    """The offset of a byte in the last page of ``database`` past page 1 that opening it reads (the
    schema's pages), or does not read (then only an integrity check finds a flip there)."""
    from intake.store.connection import CIPHER_PAGE_SIZE, MAIN_CACHE_KIB, open_keyed
    from intake.store.errors import StoreDamagedError

    page_size = page_size or CIPHER_PAGE_SIZE
    for page in range(len(database) // page_size - 1, 0, -1):
        offset = page * page_size + 100
        scratch.write_bytes(database[:offset] + bytes([database[offset] ^ 0x01]) + database[offset + 1:])
        try:
            open_keyed(scratch, key, page_size=page_size, hmac_algorithm=None, cache_kib=MAIN_CACHE_KIB).close()
        except StoreDamagedError:
            if read_at_opening:
                return offset
        else:
            if not read_at_opening:
                return offset
    raise AssertionError("no such page in this database")
