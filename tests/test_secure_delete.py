"""Deleted rows are overwritten (SECURITY.md §2, docs/journalists.md "Delete"): after a source deletes
a reply, or a journalist deletes a source or a source's submissions, nothing of those rows is left in
any decrypted page of intake.db, free pages and the unused space inside pages included, nor in a
page image of its WAL. tests/test_documented_promises.py checks that `secure_delete` is set; this
checks what it is for, in the pages as a thief holding the key reads them (tests/sqlcipher_pages.py).

What is looked for is what those rows kept in the clear inside the encrypted database: a source's
designation, lookup id and reply public key, a session's id, and byte patterns of the envelopes
(ciphertext to the journalists or to the source, but each a unique pattern that shows whether the
row's bytes are still there). Each is first seen in the pages before its deletion, so its absence
after means something."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import secrets
import shutil
from pathlib import Path

from intake.app.sessions import COOKIE_NAME
from intake.codename import derive_source_keys
from intake.config import Settings
from intake.store import Store
from intake.store.connection import BLOBS_HMAC, BLOBS_PAGE_SIZE, blobs_key
from intake.store.newsroom import Newsroom as NewsroomStore
from keys.reply_bundle import seal_reply
from tests.fixtures_app import post_upload, start_as_new_source, upload_body
from tests.fixtures_newsroom import Newsroom, csrf_token, download_export, make_newsroom, sign_in
from tests.fixtures_store import store_as_before_the_slots_file
from tests.sqlcipher_pages import decrypted_pages, decrypted_wal_frames, freelist, reserve
from tests.test_export_import import reply_bundle


def _pages(newsroom: Newsroom, where: Path) -> tuple[bytes, list[bytes], list[bytes]]:
    """A copy of the data dir as it is now: (every decrypted page and WAL image joined, the pages, the WAL images)."""
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(newsroom.settings.data_dir, where)
    pages = decrypted_pages(where / "intake.db", newsroom.settings.db_key)
    frames = decrypted_wal_frames(where / "intake.db-wal", where / "intake.db", newsroom.settings.db_key)
    return b"\0".join(pages + frames), pages, frames


def _source(newsroom: Newsroom, message: str, file: bytes | None = None):
    """A new source that sends a message (and a file); returns its client, codename and row."""
    client = newsroom.source_app.test_client()
    codename, page = start_as_new_source(client)
    files = [("notes.txt", file, "text/plain")] if file else []
    body, content_type = upload_body(csrf_token(page), message=message, files=files)
    assert post_upload(client, body, content_type).status_code == 303
    settings = newsroom.settings
    lookup_id = derive_source_keys(codename, settings.codename_salt, opslimit=settings.kdf_opslimit,
                                   memlimit=settings.kdf_memlimit).lookup_id
    with newsroom.store() as store:
        row = store._conn.execute("SELECT id, designation, reply_public_key FROM sources WHERE lookup_id = ?", (lookup_id,)).fetchone()
        envelopes = [data for (data,) in store._conn.execute(
            "SELECT c.data FROM submission_chunks AS c JOIN submissions AS s ON s.id = c.submission_id WHERE s.source_id = ?", (row[0],))]
    return client, codename, row, lookup_id, envelopes


def _patterns(envelope: bytes) -> list[bytes]:
    """Three 48-byte windows of an envelope (start, middle, end): ciphertext, but found only where its row's bytes are."""
    return [envelope[at : at + 48] for at in (8, len(envelope) // 2, len(envelope) - 48)]


def _left(decrypted: bytes, markers: dict[str, list[bytes]]) -> list[str]:
    return [what for what, needles in markers.items() if any(needle in decrypted for needle in needles)]


def _free_pages_not_zero(pages: list[bytes], hmac: str = "sha512") -> list[int]:
    """Free pages holding anything but zeros: a leaf page is zeroed whole; a trunk page keeps the
    next trunk's number, its count of leaves and their numbers, and zeros after them."""
    dirty = []
    for number, leaves in freelist(pages).items():
        body = pages[number - 1][: len(pages[0]) - reserve(hmac)]
        header = 0 if leaves is None else 8 + 4 * leaves
        if body[header:].count(0) != len(body) - header:
            dirty.append(number)
    return dirty


def _session_id(client) -> bytes:
    """The id the store keeps for a source's session: a hash of its cookie's token (intake.app.sessions)."""
    value = client.get_cookie(COOKIE_NAME).value
    return hashlib.blake2b(base64.urlsafe_b64decode(value + "="), digest_size=32, person=b"intake:sess-id").digest()


def test_deleted_rows_leave_nothing_in_any_decrypted_page(tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    # Source A: a message and a small file (stored in the database, envelopes up to 256 KiB); B stays
    # throughout, so the pages A's rows shared with B's live on; C loses its submissions only.
    client_a, codename_a, source_a, lookup_a, envelopes_a = _source(newsroom, "from A", b"a file of A " * 300)
    _client_b, _codename_b, source_b, _lookup_b, _envelopes_b = _source(newsroom, "from B")
    _client_c, _codename_c, source_c, _lookup_c, envelopes_c = _source(newsroom, "from C", b"a file of C " * 300)
    assert len(envelopes_a) == 2 and len(envelopes_c) == 2
    session_a = _session_id(client_a)
    with newsroom.store() as store:
        assert store._conn.execute("SELECT count(*) FROM source_sessions WHERE id = ?", (session_a,)).fetchone()[0] == 1

    # Alice replies to A (one reply A deletes, one that goes with A), and to B.
    alice = newsroom.journalist_app.test_client()
    assert sign_in(alice, newsroom.alice).status_code == 303
    download_export(alice)
    replies = {name: seal_reply(f"reply {name} " + "x" * 200, key)
               for name, key in (("A1", source_a[2]), ("A2", source_a[2]), ("B", source_b[2]))}
    bundle = reply_bundle(newsroom, newsroom.alice.identity,
                          [(source_a[0], replies["A1"]), (source_a[0], replies["A2"]), (source_b[0], replies["B"])])
    page = alice.get("/sources")
    assert ": 2 added" in alice.post("/replies", data={"csrf_token": csrf_token(page.text),
                                                        "bundle": (io.BytesIO(bundle), "r.bundle")},
                                     content_type="multipart/form-data").text

    # Deleted by the source: the reply, and its first session (a second login ends it).
    markers_reply = {"the reply A deleted": _patterns(replies["A1"]), "A's first session id": [session_a]}
    markers_a = {"A's designation": [source_a[1].encode()], "A's lookup id": [lookup_a], "A's reply public key": [source_a[2]],
                 "A's other reply": _patterns(replies["A2"]),
                 **{f"A's submission {i}": _patterns(envelope) for i, envelope in enumerate(envelopes_a)}}
    markers_c = {f"C's submission {i}": _patterns(envelope) for i, envelope in enumerate(envelopes_c)}
    kept = {"B's designation": [source_b[1].encode()], "B's reply": _patterns(replies["B"]),
            "C's designation": [source_c[1].encode()]}
    everything = {**markers_reply, **markers_a, **markers_c, **kept}
    before, _pages_before, _frames = _pages(newsroom, tmp_path / "before")
    assert _left(before, everything) == list(everything), "a marker is not in the pages even before its row is deleted"

    # The source deletes a reply it read.
    login = client_a.post("/login", data={"csrf_token": csrf_token(client_a.get("/login").text), "codename": codename_a})
    assert login.status_code == 303
    markers_a["A's second session id"] = [_session_id(client_a)]
    shown = client_a.get("/replies")
    reply_ids = re.findall(r'action="/replies/([0-9a-f]+)/delete"', shown.text)
    assert len(reply_ids) == 2
    with newsroom.store() as store:
        (reply_id,) = [i for (i,) in store._conn.execute("SELECT id FROM replies WHERE envelope = ?", (replies["A1"],))]
    assert client_a.post(f"/replies/{reply_id}/delete", data={"csrf_token": csrf_token(shown.text)}).status_code == 303
    after_reply, pages, frames = _pages(newsroom, tmp_path / "after-reply")
    assert _left(after_reply, markers_reply) == [], "the deleted reply or ended session is still in the decrypted pages"
    assert _left(after_reply, {**markers_a, **markers_c, **kept}) == list({**markers_a, **markers_c, **kept})

    # A journalist deletes source A (and all from and for it), and source C's submissions.
    page = alice.get("/sources")
    assert alice.post(f"/sources/{source_a[0]}/delete", data={"csrf_token": csrf_token(page.text)}).status_code == 303
    assert alice.post(f"/sources/{source_c[0]}/delete-submissions", data={"csrf_token": csrf_token(page.text)}).status_code == 303
    with newsroom.store() as store:
        assert store._conn.execute("SELECT count(*) FROM sources WHERE id = ?", (source_a[0],)).fetchone()[0] == 0
        assert store._conn.execute("SELECT count(*) FROM submissions WHERE source_id = ?", (source_c[0],)).fetchone()[0] == 0
    after, pages, frames = _pages(newsroom, tmp_path / "after")
    left = _left(after, {**markers_reply, **markers_a, **markers_c})
    assert left == [], f"deleted, yet still in the decrypted pages of intake.db or its WAL: {left}"
    assert _left(after, kept) == list(kept)  # what was not deleted is still read there
    assert _free_pages_not_zero(pages) == [], "a free page still holds what was on it"
    print(f"\n[secure delete] {len(pages)} pages and {len(frames)} WAL page images decrypted, "
          f"{len(freelist(pages))} free: {len(markers_reply) + len(markers_a) + len(markers_c)} deleted rows' markers, 0 left")


def test_deleted_pieces_leave_nothing_in_an_older_stores_blobs_database(store: Store, settings: Settings, tmp_path: Path):
    """The same in the blobs database of a store from before the slots file: a deleted
    submission's pieces are overwritten there too (SECURITY.md §2: "in both databases")."""
    gone_source, kept_source = (store.create_source(secrets.token_bytes(32), secrets.token_bytes(32)) for _ in range(2))
    gone_envelope, kept_envelope = secrets.token_bytes(300 * 1024), secrets.token_bytes(300 * 1024)
    gone_id = store_as_before_the_slots_file(store, gone_source.id, gone_envelope)
    store_as_before_the_slots_file(store, kept_source.id, kept_envelope)
    blobs_pieces = {"the deleted submission's pieces": [gone_envelope[at : at + 48] for at in range(0, 4 * 64 * 1024, 64 * 1024)]}
    kept_pieces = {"the kept submission's pieces": [kept_envelope[at : at + 48] for at in range(0, 4 * 64 * 1024, 64 * 1024)]}

    def blobs_pages(where: Path) -> list[bytes]:
        shutil.rmtree(where, ignore_errors=True)
        shutil.copytree(settings.data_dir, where)
        return decrypted_pages(where / "intake.db-blobs", blobs_key(settings.db_key), page_size=BLOBS_PAGE_SIZE,
                               hmac=BLOBS_HMAC.removeprefix("HMAC_").lower())

    before = b"".join(blobs_pages(tmp_path / "before"))
    assert _left(before, {**blobs_pieces, **kept_pieces}) == [*blobs_pieces, *kept_pieces]
    assert NewsroomStore(store).delete_submissions_of(gone_source.id) == 1
    assert gone_id not in store.existing_submissions([gone_id])
    pages = blobs_pages(tmp_path / "after")
    assert _left(b"".join(pages), blobs_pieces) == [], "a deleted submission's pieces are still in the blobs database's pages"
    assert _left(b"".join(pages), kept_pieces) == list(kept_pieces)
    assert _free_pages_not_zero(pages, "sha256") == []
