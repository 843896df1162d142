"""Export bundles out of the journalist interface and the CLI; signed reply bundles in."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from keys.bundle_reader import ExportBundle
from keys.envelope_reader import decrypt_bytes
from keys.errors import UnknownServerError, WrongKeyError
from keys.identity import Identity
from keys.reply_bundle import SealedReply, seal_reply, seal_routing, write_reply_bundle
from keys.server_key import ServerPublicKey

import intake.newsroom_cli  # noqa: F401  (attaches the journalist-side commands)
from intake.cli import cli
from intake.exchange import ExportScope, PreparedExport
from intake.retention import RetentionPolicy, purge
from intake.server_identity import SERVER_PUBLIC_FILE, load_server_signing_key, server_public_key
from intake.store.connection import connect
from intake.store.migrations import MIGRATIONS, migrate
from intake.store.newsroom import Newsroom as NewsroomStore
from intake.store.newsroom import day_before
from tests.fixtures_newsroom import Newsroom, csrf_token, download_export, submit_as_new_source


def read_bundle(newsroom: Newsroom, data: bytes, identity: Identity) -> dict[str, list[tuple[str, str | None, bytes, tuple[str, ...]]]]:
    """designation -> [(kind, file name, plaintext, recipients)], as the offline laptop sees it
    (trusting the instance's server key, as the journalist does after `intake-keys trust-server`)."""
    bundle = ExportBundle(io.BytesIO(data))
    server = server_public_key(newsroom.settings.data_dir)
    bundle.verify({bytes(server.verify_key): server})
    out = {}
    for source in bundle.read_manifest(identity):
        items = []
        for item in source.items:
            reader = bundle.open_item(item, identity)
            items.append((item.kind, reader.metadata.name, b"".join(reader.chunks()), item.recipients))
        out[source.designation] = items
    return out


def designation_of(newsroom: Newsroom) -> dict[str, str]:
    with newsroom.store() as store:
        return {s.designation: s.id for s in NewsroomStore(store).source_overview()}


def new_counts(newsroom: Newsroom) -> dict[str, int]:
    with newsroom.store() as store:
        return {s.designation: s.new_submissions for s in NewsroomStore(store).source_overview()}


def test_sources_page_lists_designations_and_counts_never_content(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "the secret canary text", [("canary-name.pdf", b"%PDF canary", "application/pdf")])
    page = alice_client.get("/sources")
    (designation,) = designation_of(newsroom)
    assert designation in page.text
    assert "canary" not in page.text
    assert ">2<" in page.text  # two new submissions: the message and the file


def test_export_holds_exact_plaintexts_for_every_journalist(newsroom: Newsroom, alice_client):
    files = [("report.pdf", b"%PDF-1.7 leaked report", "application/pdf"), ("photo.jpg", bytes(range(256)) * 700, "image/jpeg")]
    submit_as_new_source(newsroom.source_app, "Meet me at the usual place.", files)
    data = download_export(alice_client)
    for journalist in (newsroom.alice, newsroom.bob):
        (items,) = read_bundle(newsroom, data, journalist.identity).values()
        assert sorted((kind, name, body) for kind, name, body, _ in items) == sorted(
            [("message", None, b"Meet me at the usual place.")] + [("file", name, body) for name, body, _ in files])
        assert all(recipients == ("alice", "bob") for *_, recipients in items)
    assert all(count == 0 for count in new_counts(newsroom).values())


def test_the_bundle_is_ciphertext_throughout(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "plaintext-marker-4711", [("marker-4711.txt", b"plaintext-marker-4711", "text/plain")])
    data = download_export(alice_client)
    assert b"marker-4711" not in data
    assert designation_of(newsroom).popitem()[0].encode() not in data  # even designations are in the sealed manifest
    with pytest.raises(WrongKeyError):
        read_bundle(newsroom, data, Identity.generate("outsider"))


def test_new_selected_and_all_scopes(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "first source")
    submit_as_new_source(newsroom.source_app, "second source")
    first, second = sorted(designation_of(newsroom).items())
    selected = read_bundle(newsroom, download_export(alice_client, "selected", [first[1]]), newsroom.alice.identity)
    assert list(selected) == [first[0]]
    rest = read_bundle(newsroom, download_export(alice_client, "new"), newsroom.alice.identity)
    assert list(rest) == [second[0]]
    page = alice_client.get("/sources")
    nothing = alice_client.post("/export", data={"csrf_token": csrf_token(page.text), "scope": "new"}, follow_redirects=True)
    assert "Nothing to download" in nothing.text
    everything = read_bundle(newsroom, download_export(alice_client, "all"), newsroom.alice.identity)
    assert sorted(everything) == sorted([first[0], second[0]])


def test_a_download_cut_short_marks_nothing_exported(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "x" * 10, [("big.bin", os.urandom(300_000), "application/octet-stream")])
    page = alice_client.get("/sources")
    response = alice_client.post("/export", data={"csrf_token": csrf_token(page.text), "scope": "new"}, buffered=False)
    pieces = iter(response.response)
    next(pieces)
    response.close()  # the client went away after the first piece
    assert list(new_counts(newsroom).values()) == [2]
    download_export(alice_client)
    assert list(new_counts(newsroom).values()) == [0]


def test_export_reads_the_store_lazily(newsroom: Newsroom):
    submit_as_new_source(newsroom.source_app, "lazy", [("f.bin", os.urandom(50_000), "application/octet-stream")])
    with newsroom.store() as store:
        prepared = PreparedExport(store, ExportScope(), load_server_signing_key(newsroom.settings.data_dir))
        pieces = iter(prepared)
        next(pieces)  # the bundle header: nothing read from the chunk rows yet, nothing marked
        assert not prepared.completed
        with pytest.raises(RuntimeError):
            prepared.mark_exported()


def test_removing_a_journalist_stops_sealing_to_them(newsroom: Newsroom, alice_client):
    with newsroom.store() as store:
        NewsroomStore(store).remove_journalist("bob")
        assert [r.name for r in store.active_recipients()] == ["alice"]
    submit_as_new_source(newsroom.source_app, "only for alice")
    with newsroom.store() as store:
        (submission,) = store.submissions()
        envelope = b"".join(store.submission_ciphertext(submission.id))
    assert decrypt_bytes(envelope, newsroom.alice.identity.private_key)[1] == b"only for alice"
    with pytest.raises(WrongKeyError):
        decrypt_bytes(envelope, newsroom.bob.identity.private_key)
    (items,) = read_bundle(newsroom, download_export(alice_client), newsroom.alice.identity).values()
    assert items[0][3] == ("alice",)


def reply_bundle(newsroom: Newsroom, journalist: Identity, replies: list[tuple[str, bytes]]) -> bytes:
    """A reply bundle as `intake-keys reply` writes it: each source id sealed to the instance's server key."""
    server = server_public_key(newsroom.settings.data_dir)
    out = io.BytesIO()
    write_reply_bundle(out, journalist, [SealedReply(seal_routing(source_id, server.encryption_key), sealed) for source_id, sealed in replies])
    return out.getvalue()


def reply_to(newsroom: Newsroom, text: str) -> tuple[str, bytes]:
    with newsroom.store() as store:
        (source,) = [s for s in NewsroomStore(store).export_groups(only_new=False)][:1]
    return source.source.id, seal_reply(text, source.source.reply_public_key)


def upload(client, data: bytes, name: str = "replies.bundle"):
    page = client.get("/sources")
    return client.post("/replies", data={"csrf_token": csrf_token(page.text), "bundle": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_a_signed_reply_bundle_is_imported_with_a_report(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "We got it, thank you.")
    response = upload(alice_client, reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)]))
    assert response.status_code == 200
    assert "signed by <strong>bob</strong>" in response.text and ": 1 added" in response.text
    assert "<h1>Replies imported</h1>" in response.text
    again = upload(alice_client, reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)]))
    assert "1 already imported before" in again.text
    # Nothing new: not "Replies imported ... sources see their replies" (found by a newcomer test).
    assert "<h1>No new replies</h1>" in again.text and "<title>No new replies" in again.text
    assert "Replies imported" not in again.text and "Nothing in it was new" in again.text
    with newsroom.store() as store:
        assert [r.envelope for r in store.replies_for(source_id)] == [sealed]


def test_a_reply_the_source_deleted_does_not_come_back_with_a_replayed_bundle(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "Delete this once you have read it.")
    bundle = reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)])
    assert ": 1 added" in upload(alice_client, bundle).text
    with newsroom.store() as store:
        (reply,) = store.replies_for(source_id)
        assert store.delete_reply(source_id, reply.id)
    again = upload(alice_client, bundle)
    assert again.status_code == 200 and "0 replies added, 1 already here" in again.text
    with newsroom.store() as store:
        assert store.replies_for(source_id) == [] and store.counts()["replies"] == 0


def test_a_cumulative_bundle_after_retention_adds_only_the_new_reply(newsroom: Newsroom, alice_client):
    # `intake-keys reply --out FILE` appends to FILE: each upload carries every earlier reply again.
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, first = reply_to(newsroom, "first answer")
    assert ": 1 added" in upload(alice_client, reply_bundle(newsroom, newsroom.bob.identity, [(source_id, first)])).text
    with newsroom.store() as store:
        (stored,) = store.replies_for(source_id)
        store.mark_replies_read(source_id, [stored.id])
        store._conn.execute("UPDATE replies SET read_day = ?", (day_before(30),))
        assert purge(store, RetentionPolicy(read_reply_days=7)).replies == 1
    _, second = reply_to(newsroom, "second answer")
    report = upload(alice_client, reply_bundle(newsroom, newsroom.bob.identity, [(source_id, first), (source_id, second)]))
    assert ": 1 added, 1 already imported before" in report.text
    with newsroom.store() as store:
        assert [r.envelope for r in store.replies_for(source_id)] == [second]


def test_the_replay_record_keeps_no_content_and_no_time(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "kept nowhere")
    upload(alice_client, reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)]))
    with newsroom.store() as store:
        columns = [row[1] for row in store._conn.execute("PRAGMA table_info(imported_reply_digests)")]
        assert columns == ["digest"]
        (row,) = store._conn.execute("SELECT digest FROM imported_reply_digests").fetchall()
        assert len(row[0]) == 32 and row[0] not in sealed
        # No rowid either: the order of the records says nothing about when they came.
        assert store._conn.execute("SELECT count(*) FROM pragma_index_list('imported_reply_digests')").fetchone()[0] == 1
        with pytest.raises(Exception):
            store._conn.execute("SELECT rowid FROM imported_reply_digests").fetchall()


def test_the_upgrade_records_the_replies_already_imported(tmp_path: Path):
    conn = connect(tmp_path / "schema-2.db", os.urandom(32), busy_timeout_ms=1000, create=True)
    migrate(conn, MIGRATIONS[:2])  # a database from before the replay record
    conn.execute("INSERT INTO sources (id, lookup_id, reply_public_key, designation, created_day, last_active_day)"
                 " VALUES ('s', x'01', x'02', 'brave otter', '2025-01-01', '2025-01-01')")
    imported = hashlib.blake2b(b"an imported envelope", digest_size=32).digest()
    for reply_id, digest in (("imported", imported), ("added without a digest", None)):
        conn.execute("INSERT INTO replies (id, source_id, envelope, created_day, digest) VALUES (?, 's', x'00', '2025-01-01', ?)",
                     (reply_id, digest))
    migrate(conn)
    assert conn.execute("SELECT digest FROM imported_reply_digests").fetchall() == [(imported,)]
    conn.close()


@pytest.mark.parametrize("forgery", ["unknown signer", "unsigned", "tampered", "removed signer"])
def test_a_forged_or_unsigned_reply_bundle_is_refused_and_nothing_changes(newsroom: Newsroom, alice_client, forgery: str):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "forged words")
    if forgery == "unknown signer":
        data = reply_bundle(newsroom, Identity.generate("alice-impostor"), [(source_id, sealed)])
    elif forgery == "unsigned":
        data = reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)])
        data = data[: -(5 + 64)]  # the signature entry cut off
    elif forgery == "tampered":
        data = bytearray(reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)]))
        data[len(data) // 2] ^= 1
        data = bytes(data)
    else:
        data = reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)])
        with newsroom.store() as store:
            NewsroomStore(store).remove_journalist("bob")
    response = upload(alice_client, data)
    assert response.status_code == 400
    assert "refused" in response.text and "Nothing was imported" in response.text
    with newsroom.store() as store:
        assert store.counts()["replies"] == 0


def test_replies_to_a_deleted_source_are_reported_not_imported(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "too late")
    with newsroom.store() as store:
        NewsroomStore(store).delete_source(source_id)
    response = upload(alice_client, reply_bundle(newsroom, newsroom.alice.identity, [(source_id, sealed)]))
    assert response.status_code == 200 and "no longer here" in response.text and "0 replies added" in response.text


def test_reply_upload_is_size_capped_and_never_spooled_to_disk(newsroom: Newsroom, alice_client, monkeypatch, tmp_path: Path):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, _ = reply_to(newsroom, "x")
    with newsroom.store() as store:
        (group,) = NewsroomStore(store).export_groups(only_new=False)
    big = [(source_id, seal_reply("y" * 3_000_000, group.source.reply_public_key))]
    response = upload(alice_client, reply_bundle(newsroom, newsroom.alice.identity, big))
    assert response.status_code == 200 and ": 1 added" in response.text
    assert list(spool.iterdir()) == []
    oversized = b"INTAKE-R" + os.urandom(70 << 20)
    assert upload(alice_client, oversized).status_code == 413


def test_deleting_a_source_or_its_submissions(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "keep the source", [("a.txt", b"a", "text/plain")])
    (designation, source_id), = designation_of(newsroom).items()
    page = alice_client.get(f"/sources/{source_id}/delete")
    assert page.status_code == 200 and designation in page.text
    alice_client.post(f"/sources/{source_id}/delete-submissions", data={"csrf_token": csrf_token(page.text)})
    with newsroom.store() as store:
        assert store.counts()["submissions"] == 0 and store.counts()["sources"] == 1
    alice_client.post(f"/sources/{source_id}/delete", data={"csrf_token": csrf_token(page.text)})
    with newsroom.store() as store:
        assert store.counts()["sources"] == 0
    assert alice_client.get(f"/sources/{source_id}/delete").status_code == 404


def test_cli_export_and_import_replies(newsroom: Newsroom, tmp_path: Path):
    submit_as_new_source(newsroom.source_app, "via the command line")
    runner = CliRunner()
    data = str(newsroom.settings.data_dir)
    out = tmp_path / "export.bundle"
    result = runner.invoke(cli, ["export", "--data", data, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (items,) = read_bundle(newsroom, out.read_bytes(), newsroom.bob.identity).values()
    assert items[0][2] == b"via the command line"
    again = runner.invoke(cli, ["export", "--data", data, "--out", str(tmp_path / "second.bundle")])
    assert again.exit_code == 1 and "no new submissions" in again.output
    source_id, sealed = reply_to(newsroom, "answer")
    replies = tmp_path / "replies.bundle"
    replies.write_bytes(reply_bundle(newsroom, newsroom.alice.identity, [(source_id, sealed)]))
    result = runner.invoke(cli, ["import-replies", "--data", data, str(replies)])
    assert result.exit_code == 0 and "Replies added: 1, already here: 0" in result.output
    forged = tmp_path / "forged.bundle"
    forged.write_bytes(reply_bundle(newsroom, Identity.generate("alice"), [(source_id, sealed)]))
    result = runner.invoke(cli, ["import-replies", "--data", data, str(forged)])
    assert result.exit_code == 1 and "does not verify" in result.output and "Traceback" not in result.output


def test_cli_export_of_one_source_takes_its_id_or_designation_and_names_an_unknown_one(newsroom: Newsroom, tmp_path: Path):
    """Journalists see designations everywhere; an unknown id or a designation was taken silently
    as a source with nothing to export (found by a newcomer test)."""
    submit_as_new_source(newsroom.source_app, "one source's message")
    data = str(newsroom.settings.data_dir)
    ((designation, source_id),) = designation_of(newsroom).items()
    blank = CliRunner().invoke(cli, ["export", "--data", data, "--out", str(tmp_path / "x.bundle"), "--source", " "])
    assert blank.exit_code == 1 and blank.output == "Error: --source needs a source's id or designation\n"  # not every source
    unknown = CliRunner().invoke(cli, ["export", "--data", data, "--out", str(tmp_path / "x.bundle"), "--source", "no-such"])
    assert unknown.exit_code == 1 and unknown.output == "Error: no source has the id or designation 'no-such'\n"
    by_name = CliRunner().invoke(cli, ["export", "--data", data, "--out", str(tmp_path / "a.bundle"), "--source", designation])
    assert by_name.exit_code == 0, by_name.output
    again = CliRunner().invoke(cli, ["export", "--data", data, "--out", str(tmp_path / "b.bundle"), "--source", source_id])
    assert again.exit_code == 1 and "there are no new submissions of the selected sources to export (sources: 1; --all exports those exported before again)" in again.output
    every = CliRunner().invoke(cli, ["export", "--data", data, "--out", str(tmp_path / "c.bundle"), "--source", source_id, "--all"])
    assert every.exit_code == 0, every.output


def test_the_journalist_app_reuses_the_workers_stores(newsroom: Newsroom, alice_client, monkeypatch):
    """Like the source app, the journalist app takes stores from the worker's pool and gives
    them back (an export's store too, once the download is complete)."""
    from intake.store import Store

    submit_as_new_source(newsroom.source_app, "hello")
    opened = []
    real_open = Store.open.__func__
    monkeypatch.setattr(Store, "open", classmethod(lambda cls, settings: opened.append(1) or real_open(cls, settings)))
    for _ in range(3):
        assert alice_client.get("/sources").status_code == 200
    download_export(alice_client)
    for _ in range(3):
        assert alice_client.get("/sources").status_code == 200
    assert len(opened) <= 1  # the export's own store, the first time


def test_a_reply_bundle_routed_to_another_server_is_refused(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "for another server")
    elsewhere = ServerPublicKey.from_seed(os.urandom(32))
    out = io.BytesIO()
    write_reply_bundle(out, newsroom.bob.identity, [SealedReply(seal_routing(source_id, elsewhere.encryption_key), sealed)])
    response = upload(alice_client, out.getvalue())
    assert response.status_code == 400 and "not addressed to this server" in response.text
    with newsroom.store() as store:
        assert store.counts()["replies"] == 0


def test_reply_bundles_carry_no_source_id_in_clear(newsroom: Newsroom):
    submit_as_new_source(newsroom.source_app, "hello")
    source_id, sealed = reply_to(newsroom, "routing sealed")
    assert source_id.encode() not in reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)])


def test_both_export_paths_are_signed_by_the_instance_key(newsroom: Newsroom, alice_client, tmp_path: Path):
    submit_as_new_source(newsroom.source_app, "signed twice")
    downloaded = download_export(alice_client, "all")
    out = tmp_path / "cli.bundle"
    assert CliRunner().invoke(cli, ["export", "--data", str(newsroom.settings.data_dir), "--all", "--out", str(out)]).exit_code == 0
    published = ServerPublicKey.load(newsroom.settings.data_dir / SERVER_PUBLIC_FILE)
    for data in (downloaded, out.read_bytes()):
        bundle = ExportBundle(io.BytesIO(data))
        assert bundle.verify({bytes(published.verify_key): published}) == published
        with pytest.raises(UnknownServerError):
            ExportBundle(io.BytesIO(data)).verify({})


def test_rotating_the_signing_key_asks_first(newsroom: Newsroom):
    """docs/operator.md: rotate-signing-key asks for confirmation (--yes skips it); a no rotates nothing."""
    before = server_public_key(newsroom.settings.data_dir)
    declined = CliRunner().invoke(cli, ["rotate-signing-key", "--data", str(newsroom.settings.data_dir)], input="n\n")
    assert declined.exit_code == 1 and "Rotate now? [y/N]" in declined.output
    assert declined.output.endswith("Error: the server key was not rotated\n")
    assert server_public_key(newsroom.settings.data_dir) == before


def test_rotating_the_signing_key_signs_with_the_new_one_and_still_opens_old_routing(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "before the rotation")
    old = server_public_key(newsroom.settings.data_dir)
    source_id, sealed = reply_to(newsroom, "sealed to the old key")
    old_bundle = reply_bundle(newsroom, newsroom.bob.identity, [(source_id, sealed)])
    result = CliRunner().invoke(cli, ["rotate-signing-key", "--data", str(newsroom.settings.data_dir), "--yes"])
    assert result.exit_code == 0, result.output
    new = server_public_key(newsroom.settings.data_dir)
    assert new != old and new.fingerprint in result.output and old.fingerprint in result.output
    assert ServerPublicKey.load(newsroom.settings.data_dir / SERVER_PUBLIC_FILE) == new
    data = download_export(alice_client, "all")
    with pytest.raises(UnknownServerError):
        ExportBundle(io.BytesIO(data)).verify({bytes(old.verify_key): old})
    assert ExportBundle(io.BytesIO(data)).verify({bytes(old.verify_key): old, bytes(new.verify_key): new}) == new
    assert ": 1 added" in upload(alice_client, old_bundle).text  # a laptop that has not trusted the new key yet
