"""The admin commands for journalists: add, list, remove, reset-login, rotation, status, check."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pyotp
from click.testing import CliRunner
from nacl.public import PrivateKey
from keys.envelope import Metadata, encrypt_bytes
from keys.identity import Identity, fingerprint_v1
from keys.server_key import ServerPublicKey

import intake.newsroom_cli  # noqa: F401  (attaches the journalist-side commands)
from intake.cli import cli
from intake.journalist_auth import passphrase_matches
from intake.store.connection import CIPHER_PAGE_SIZE
from intake.store.newsroom import Newsroom as NewsroomStore
from intake.store.slots_file import SLOT_BYTES, slots_path
from intake.store.store import blobs_path
from intake.onion_keys import normalise_client_public_key
from tests.fixtures_newsroom import Newsroom, download_export, sign_in, submit_as_new_source
from tests.fixtures_store import store_as_before_the_slots_file


def invoke(newsroom: Newsroom, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, [args[0], *args[1:], "--data", str(newsroom.settings.data_dir)] if args[0] != "journalist"
                              else [*args[:2], "--data", str(newsroom.settings.data_dir), *args[2:]], input=input)


def client_public_key(private_b32: str) -> str:
    """The client-auth public key (as the server keeps it) of a printed private key."""
    private = PrivateKey(base64.b32decode(private_b32 + "=" * (-len(private_b32) % 8)))
    return normalise_client_public_key(base64.b32encode(bytes(private.public_key)).decode())


def new_key(tmp_path: Path, name: str) -> tuple[Identity, Path]:
    identity = Identity.generate(name)
    path = tmp_path / f"{name}-{identity.public.fingerprint[:4]}.public"
    identity.public.save(path)
    return identity, path


def test_add_shows_the_fingerprint_and_asks_before_registering(newsroom: Newsroom, tmp_path: Path):
    identity, path = new_key(tmp_path, "carol")
    declined = invoke(newsroom, "journalist", "add", "--name", "carol", "--public-key", str(path), input="n\n")
    assert identity.public.fingerprint in declined.output and declined.exit_code == 1
    assert declined.output.endswith("Error: the journalist was not added: the fingerprints were not confirmed. Get the "
                                    "public key file again from the journalist in person\n"), declined.output
    with newsroom.store() as store:
        assert "carol" not in [r.name for r in store.active_recipients()]
    added = invoke(newsroom, "journalist", "add", "--name", "carol", "--public-key", str(path), input="y\n")
    assert added.exit_code == 0, added.output
    _, dave = new_key(tmp_path, "dave")  # a Russian operator answers in Russian (refused before: a newcomer test)
    assert invoke(newsroom, "journalist", "add", "--name", "dave", "--public-key", str(dave), input="да\n").exit_code == 0
    passphrase = re.search(r"Login passphrase:\s+(.+)", added.output).group(1).strip()
    totp = pyotp.parse_uri(re.search(r"(otpauth://\S+)", added.output).group(1))
    auth_line = re.search(r"(\S+:descriptor:x25519:\S+)", added.output).group(1)
    assert len(passphrase.split()) == 7
    with newsroom.store() as store:
        assert "carol" in [r.name for r in store.active_recipients()]
        record = NewsroomStore(store).login_record("carol")
        assert passphrase_matches(record.login_hash, passphrase) and record.totp_secret == totp.secret
        assert passphrase.encode() not in record.login_hash
        (stored_client_key,) = [a.client_auth_key for a in NewsroomStore(store).accounts() if a.name == "carol"]
    assert normalise_client_public_key(stored_client_key) == stored_client_key
    assert stored_client_key not in auth_line  # the server keeps the public half, the journalist gets the private one
    # The server's key goes to the laptop at enrolment, with its fingerprint to compare (intake-keys trust-server).
    server_file = newsroom.settings.data_dir / "server-signing.public"
    server = ServerPublicKey.load(server_file)
    assert f"Server key file (copy it to the laptop): {server_file}" in added.output and server.fingerprint in added.output
    reset = invoke(newsroom, "journalist", "reset-login", "--name", "carol")
    assert reset.exit_code == 0 and server.fingerprint in reset.output


def test_add_refuses_a_key_of_someone_else_or_twice(newsroom: Newsroom, tmp_path: Path):
    _, path = new_key(tmp_path, "dave")
    mismatch = invoke(newsroom, "journalist", "add", "--name", "erin", "--public-key", str(path), "--yes")
    assert mismatch.exit_code == 1 and "is the key of 'dave'" in mismatch.output and "Traceback" not in mismatch.output
    twice = invoke(newsroom, "journalist", "add", "--name", "bob", "--public-key", str(newsroom_public(newsroom, tmp_path)), "--yes")
    assert twice.exit_code == 1 and "reset-login" in twice.output
    # A removed journalist's key: no reset-login for a name that is no longer active (newcomer test).
    assert invoke(newsroom, "journalist", "remove", "--name", "bob", "--even-if-unexported").exit_code == 0
    removed = invoke(newsroom, "journalist", "add", "--name", "bob", "--public-key", str(tmp_path / "bob-again.public"), "--yes")
    assert removed.exit_code == 1 and "a removed key cannot be registered again: make a new one" in removed.output
    assert "reset-login" not in removed.output, removed.output
    broken = tmp_path / "broken.public"
    broken.write_text("not a key")
    assert invoke(newsroom, "journalist", "add", "--name", "x", "--public-key", str(broken), "--yes").exit_code == 1


def newsroom_public(newsroom: Newsroom, tmp_path: Path) -> Path:
    path = tmp_path / "bob-again.public"
    newsroom.bob.identity.public.save(path)
    return path


def test_list_shows_the_v2_fingerprint_of_accounts_registered_with_v1(newsroom: Newsroom):
    alice = newsroom.alice.identity.public
    old = fingerprint_v1(bytes(alice.encryption_key), bytes(alice.verify_key))
    with newsroom.store() as store:
        store._conn.execute("UPDATE journalists SET fingerprint = ? WHERE name = 'alice'", (old,))
    listed = invoke(newsroom, "journalist", "list")
    assert alice.fingerprint in listed.output and old not in listed.output


def test_list_and_remove(newsroom: Newsroom):
    listed = invoke(newsroom, "journalist", "list")
    assert listed.exit_code == 0
    assert newsroom.alice.identity.public.fingerprint in listed.output and "bob" in listed.output
    assert invoke(newsroom, "journalist", "remove", "--name", "bob").exit_code == 0
    assert "bob" not in invoke(newsroom, "journalist", "list").output
    assert "removed" in invoke(newsroom, "journalist", "list", "--all").output
    last = invoke(newsroom, "journalist", "remove", "--name", "alice")
    assert last.exit_code == 1 and "last active journalist" in last.output
    unknown = invoke(newsroom, "journalist", "remove", "--name", "nobody")
    assert unknown.exit_code == 1 and "no active journalist is named 'nobody'" in unknown.output


def test_reset_login_replaces_the_passphrase_and_ends_sessions(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    assert sign_in(client, newsroom.alice).status_code == 303
    result = invoke(newsroom, "journalist", "reset-login", "--name", "alice")
    assert result.exit_code == 0
    assert client.get("/sources").status_code == 303
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, code=newsroom.alice.code(1)).status_code == 401
    new_passphrase = re.search(r"Login passphrase:\s+(.+)", result.output).group(1).strip()
    new_totp = pyotp.parse_uri(re.search(r"(otpauth://\S+)", result.output).group(1))
    # The old TOTP secret stops working too, not only the old passphrase (docs/journalists.md):
    # the new passphrase with a code of the old secret is refused.
    old_code = newsroom.alice.code(-1)
    assert old_code not in {new_totp.at(time.time() + 30 * step) for step in (-1, 0, 1)}
    refused = sign_in(newsroom.journalist_app.test_client(), newsroom.alice, passphrase=new_passphrase, code=old_code)
    assert refused.status_code == 401
    assert sign_in(newsroom.journalist_app.test_client(), newsroom.alice, passphrase=new_passphrase, code=new_totp.now()).status_code == 303
    # And the old client-auth key: the journalist service is published with the new one only.
    old_private = newsroom.alice.enrolment.client_auth_line.rsplit(":", 1)[1]
    new_private = re.search(r"descriptor:x25519:([A-Z2-7]+)", result.output).group(1)
    with newsroom.store() as store:
        published = NewsroomStore(store).client_auth_keys()
    assert client_public_key(new_private) in published
    assert client_public_key(old_private) not in published


def test_key_rotation_is_remove_then_add(newsroom: Newsroom, alice_client, tmp_path: Path):
    submit_as_new_source(newsroom.source_app, "sealed to bob's old key")
    new_bob, path = new_key(tmp_path, "bob")
    assert invoke(newsroom, "journalist", "remove", "--name", "bob").exit_code == 0
    added = invoke(newsroom, "journalist", "add", "--name", "bob", "--public-key", str(path), "--yes")
    assert added.exit_code == 0, added.output
    submit_as_new_source(newsroom.source_app, "sealed to bob's new key")
    with newsroom.store() as store:
        groups = NewsroomStore(store).export_groups(only_new=True)
        recipients = sorted(tuple(entry.recipients) for group in groups for entry in group.entries)
        assert recipients == [("alice", "bob"), ("alice", "bob.retired-2")]
        assert [r.public_key for r in store.active_recipients() if r.name == "bob"] == [bytes(new_bob.public.encryption_key)]
    download_export(alice_client)


def test_a_newsrooms_only_journalist_rotates_with_add_replace(newsroom: Newsroom, tmp_path: Path):
    """remove refused the last journalist and add refused a name in use: the only journalist could
    not rotate their key (found by an independent newcomer test)."""
    assert invoke(newsroom, "journalist", "remove", "--name", "bob").exit_code == 0
    submit_as_new_source(newsroom.source_app, "sealed to alice's old key")
    last = invoke(newsroom, "journalist", "remove", "--name", "alice", "--even-if-unexported")
    assert last.exit_code == 1 and "add --replace" in last.output
    new_alice, path = new_key(tmp_path, "alice")
    taken = invoke(newsroom, "journalist", "add", "--name", "alice", "--public-key", str(path), "--yes")
    assert taken.exit_code == 1 and "intake journalist add --replace" in taken.output
    recovery = (newsroom.settings.data_dir / "db-key.recovery").read_bytes()
    replaced = invoke(newsroom, "journalist", "add", "--name", "alice", "--public-key", str(path), "--yes", "--replace",
                      "--even-if-unexported")
    assert replaced.exit_code == 0, replaced.output
    assert (newsroom.settings.data_dir / "db-key.recovery").read_bytes() != recovery  # sealed to the new key now
    submit_as_new_source(newsroom.source_app, "sealed to alice's new key")
    with newsroom.store() as store:
        recipients = sorted(tuple(entry.recipients) for group in NewsroomStore(store).export_groups(only_new=True)
                            for entry in group.entries)
        assert recipients == [("alice",), ("alice.retired-1",)]
        assert [r.public_key for r in store.active_recipients()] == [bytes(new_alice.public.encryption_key)]
    unknown = invoke(newsroom, "journalist", "add", "--name", "carol", "--public-key", str(new_key(tmp_path, "carol")[1]),
                     "--yes", "--replace")
    assert unknown.exit_code == 1 and "no active journalist is named 'carol'" in unknown.output


def _laptop_folder(newsroom: Newsroom, folder: Path, identity: Identity) -> Path:
    """A journalist's key folder: the secret key (passphrase in folder/passphrase) and the server key trusted."""
    from keys.identity import KDF_MIN
    from keys.server_key import trust_server
    from intake.server_identity import server_public_key

    folder.mkdir()
    (folder / "passphrase").write_text("the laptop's passphrase\n")
    identity.save(folder / f"{identity.name}.secret", "the laptop's passphrase", KDF_MIN)
    trust_server(folder / f"{identity.name}.secret", server_public_key(newsroom.settings.data_dir))
    return folder


def _decrypt(folder: Path, name: str, bundle: Path, out: Path) -> int:
    from keys.cli import main as intake_keys

    return intake_keys(["decrypt", str(bundle), "--key", str(folder / f"{name}.secret"), "--passphrase-file",
                        str(folder / "passphrase"), "--out", str(out)])


def test_a_rotation_counts_uploads_still_arriving_and_a_forced_one_strands_nothing(newsroom: Newsroom, tmp_path: Path):
    """A hostile review: an upload still arriving was not counted, and a key retired with
    --even-if-unexported left items nobody could open, since the manifest was sealed to the active
    keys only. Now an upload with a piece stored counts (and, once its keys are gone, is refused at
    its publish), and a bundle holding items only a retired key opens is sealed to that key too."""
    from intake.store import StoreError

    assert invoke(newsroom, "journalist", "remove", "--name", "bob").exit_code == 0  # nothing sealed to bob alone
    old_folder = _laptop_folder(newsroom, tmp_path / "keys", newsroom.alice.identity)
    submit_as_new_source(newsroom.source_app, "before the rotation")  # published, sealed to alice alone
    _, public = new_key(tmp_path, "alice")
    rotate = ["journalist", "add", "--name", "alice", "--public-key", str(public), "--yes", "--replace"]
    sealed = encrypt_bytes(os.urandom(3 * newsroom.settings.upload_chunk_bytes), [newsroom.alice.identity.public.encryption_key],
                           Metadata("file", name="evidence.bin"))
    with newsroom.store() as store:
        upload = store.start_submission(store.create_source(os.urandom(32), os.urandom(32)).id, "file", store.active_recipients())
        # Two pieces handed over: the second waits for the first, stored with the pending row (sealed to alice alone).
        upload.write(sealed[: 2 * newsroom.settings.upload_chunk_bytes + 1000])
        refused = invoke(newsroom, *rotate)
        assert refused.exit_code == 1 and "2 submissions sealed to alice's key, and to no other" in refused.output
        assert invoke(newsroom, *rotate, "--even-if-unexported").exit_code == 0
        with pytest.raises(StoreError, match="keys changed while this was sent"):
            upload.commit()
    submit_as_new_source(newsroom.source_app, "after the rotation")
    bundle = tmp_path / "export.bundle"
    assert invoke(newsroom, "export", "--out", str(bundle)).exit_code == 0
    assert _decrypt(old_folder, "alice", bundle, tmp_path / "tips") == 0  # the manifest opens with the old key too
    assert [path.read_text() for path in (tmp_path / "tips").rglob("*message.txt")] == ["before the rotation"]


def test_an_upload_whose_every_key_was_retired_while_it_arrived_is_refused_not_published(newsroom: Newsroom, tmp_path: Path):
    """A second hostile review: an upload with nothing stored yet (a message, or the first 4 MiB of
    a file) is not in the database when the rotation counts, and was then published sealed to the
    retired key alone. Its publish is refused instead, and the source told to send it again."""
    from intake.store import StoreError

    assert invoke(newsroom, "journalist", "remove", "--name", "bob").exit_code == 0
    _, public = new_key(tmp_path, "alice")
    with newsroom.store() as store:
        before = store.counts()["submissions"]
        upload = store.start_submission(store.create_source(os.urandom(32), os.urandom(32)).id, "message", store.active_recipients())
        upload.write(encrypt_bytes(b"sent during the rotation", [newsroom.alice.identity.public.encryption_key], Metadata("message")))
        rotated = invoke(newsroom, "journalist", "add", "--name", "alice", "--public-key", str(public), "--yes", "--replace")
        assert rotated.exit_code == 0, rotated.output  # nothing of the upload stored yet: nothing to count
        with pytest.raises(StoreError, match="keys changed while this was sent: please send it again"):
            upload.commit()
        assert store.counts()["submissions"] == before


def test_a_rotated_key_decrypts_the_new_items_and_the_old_key_the_old_ones_into_one_folder(newsroom: Newsroom, tmp_path: Path):
    """docs/journalists.md, "Key rotation", as a journalist does it: everything sealed to the old
    key exported and decrypted first (the rotation refuses until it is), the new key in a folder of
    its own with the trust store copied over, later bundles decrypted with it into the same folder."""
    import shutil

    from keys.cli import main as intake_keys
    from keys.identity import KDF_MIN
    from keys.server_key import trust_server
    from intake.server_identity import server_public_key

    passphrase = tmp_path / "passphrase"
    passphrase.write_text("the laptop's passphrase\n")
    old_folder, new_folder = tmp_path / "keys", tmp_path / "keys-2026"
    old_folder.mkdir()
    newsroom.alice.identity.save(old_folder / "alice.secret", "the laptop's passphrase", KDF_MIN)
    trust_server(old_folder / "alice.secret", server_public_key(newsroom.settings.data_dir))
    assert invoke(newsroom, "journalist", "remove", "--name", "bob").exit_code == 0  # alice alone: nobody else opens hers
    submit_as_new_source(newsroom.source_app, "before the rotation")
    new_folder.mkdir()
    shutil.copytree(old_folder / "trusted-servers", new_folder / "trusted-servers")
    new_alice, public = new_key(tmp_path, "alice")
    new_alice.save(new_folder / "alice.secret", "the laptop's passphrase", KDF_MIN)
    rotate = ["journalist", "add", "--name", "alice", "--public-key", str(public), "--yes", "--replace"]
    refused = invoke(newsroom, *rotate)  # a bundle made after it could not be opened with the old key
    assert refused.exit_code == 1 and "1 submission sealed to alice's key, and to no other" in refused.output
    out = tmp_path / "decrypted"
    for bundle, key in ((tmp_path / "before.bundle", old_folder), (tmp_path / "after.bundle", new_folder)):
        assert invoke(newsroom, "export", "--out", str(bundle)).exit_code == 0
        assert intake_keys(["decrypt", str(bundle), "--key", str(key / "alice.secret"), "--passphrase-file", str(passphrase),
                            "--out", str(out)]) == 0
        if key == old_folder:
            assert invoke(newsroom, *rotate).exit_code == 0
            submit_as_new_source(newsroom.source_app, "after the rotation")
    texts = sorted(path.read_text() for path in out.rglob("*message.txt"))
    assert texts == ["after the rotation", "before the rotation"]


def test_status_shows_counts_sizes_and_logins_and_check_passes(newsroom: Newsroom):
    submit_as_new_source(newsroom.source_app, "something")
    status = invoke(newsroom, "status")
    assert status.exit_code == 0
    for line in ("sources: 1", "submissions: 1", "not exported:", "database:", "journalists who can sign in: 2 of 2", "retention (days):"):
        assert line in status.output
    check = invoke(newsroom, "check")
    assert check.exit_code == 0 and "intact" in check.output


def test_check_reports_a_damaged_store(newsroom: Newsroom):
    submit_as_new_source(newsroom.source_app, "x" * 2000)
    db = newsroom.settings.db_path
    with newsroom.store() as store:
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = CIPHER_PAGE_SIZE
    data[3 * page + 100] ^= 0xFF  # a flipped bit inside the fourth page
    db.write_bytes(bytes(data))
    result = invoke(newsroom, "check")
    assert result.exit_code == 1 and "integrity problems" in result.output and "Traceback" not in result.output


def test_status_and_export_on_a_damaged_store_say_so_in_one_line(newsroom: Newsroom, tmp_path: Path):
    """check explains damage; the other commands failed with sqlcipher's traceback instead."""
    submit_as_new_source(newsroom.source_app, "x" * 2000)
    with newsroom.store() as store:
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = newsroom.settings.db_path
    data = bytearray(db.read_bytes())
    data[CIPHER_PAGE_SIZE : 3 * CIPHER_PAGE_SIZE] = os.urandom(2 * CIPHER_PAGE_SIZE)  # the schema's pages
    db.write_bytes(bytes(data))
    for command in (["status"], ["export", "--out", str(tmp_path / "x.bundle")]):
        result = invoke(newsroom, *command)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.output)
        assert result.output.startswith("Error: the database cannot be read (") and result.output.count("\n") == 1, result.output
        assert "intake check" in result.output


@pytest.mark.parametrize("where", ["missing-folder", "not-a-folder"])
def test_an_export_to_a_place_it_cannot_write_says_so_in_one_line(newsroom: Newsroom, tmp_path: Path, where: str):
    submit_as_new_source(newsroom.source_app, "a message")
    folder = tmp_path / "target"
    if where == "not-a-folder":
        folder.write_text("a file where the folder should be")
    result = invoke(newsroom, "export", "--out", str(folder / "x.bundle"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output == f"Error: {folder}: {'there is no such file or folder' if where == 'missing-folder' else 'a part of this path is not a folder'}\n"
    with newsroom.store() as store:
        assert all(s.exported_day is None for s in store.submissions())  # nothing marked exported


def test_status_and_check_cover_the_blobs_database(newsroom: Newsroom):
    """A store from before the slots file keeps its blobs database."""
    with newsroom.store() as store:
        source = store.create_source(os.urandom(32), os.urandom(32))
        store_as_before_the_slots_file(store, source.id, os.urandom(3 * 1024 * 1024))
    status = invoke(newsroom, "status")
    assert status.exit_code == 0 and "blobs database:" in status.output
    blobs = blobs_path(newsroom.settings)
    data = bytearray(blobs.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a chunk page, past the schema
    blobs.write_bytes(bytes(data))
    result = invoke(newsroom, "check")
    assert result.exit_code == 1 and "blobs database" in result.output and "Traceback" not in result.output


def test_status_and_check_cover_the_slots_file(newsroom: Newsroom):
    big = newsroom.settings.upload_chunk_bytes * 2  # large enough to go to the slots file
    submit_as_new_source(newsroom.source_app, "x" * big)
    status = invoke(newsroom, "status")
    assert status.exit_code == 0 and re.search(r"^slots file: [1-9]", status.output, re.MULTILINE), status.output
    assert invoke(newsroom, "check").exit_code == 0
    slots = slots_path(newsroom.settings.db_path)
    # A block of a slot in use that lost what was written to it (zeros, but still on disk).
    with open(slots, "r+b") as file:
        file.seek(SLOT_BYTES + 8192)
        saved = file.read(4096)
        file.seek(SLOT_BYTES + 8192)
        file.write(bytes(4096))
    zeroed = invoke(newsroom, "check")
    assert zeroed.exit_code == 1 and "1 slots of submissions hold zeroed blocks" in zeroed.output, zeroed.output
    russian = subprocess.run([str(Path(sys.executable).parent / "intake"), "--lang", "ru", "check", "--data",
                              str(newsroom.settings.data_dir)], capture_output=True, text=True, timeout=60)
    assert "хранилище крупных файлов: занятых ячеек с обнулёнными блоками на месте шифротекста: 1;" in russian.stderr
    with open(slots, "r+b") as file:
        file.seek(SLOT_BYTES + 8192)
        file.write(saved)
    assert invoke(newsroom, "check").exit_code == 0
    # A slot the database names is given back to the file system: a hole.
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(SLOT_BYTES), "--length", str(SLOT_BYTES), str(slots)], check=True)
    holed = invoke(newsroom, "check")
    assert holed.exit_code == 1 and "1 slots of submissions hold nothing" in holed.output and "Traceback" not in holed.output
    assert "zeroed" not in holed.output  # a hole is told once, as a hole
    os.truncate(slots, slots.stat().st_size - SLOT_BYTES)  # a slot the database names is gone
    result = invoke(newsroom, "check")
    assert result.exit_code == 1 and "slots file" in result.output and "Traceback" not in result.output


def test_check_beside_a_deletion_that_cuts_the_slots_file_reports_nothing(newsroom: Newsroom, monkeypatch):
    """`intake check` reads the slots file for as long as reading it takes, beside the server: a
    journalist who deletes the newest submissions meanwhile makes the file shorter. What is no
    longer in use is no problem; "restore a backup" there would lose every newer submission (a
    review found it)."""
    from intake.store.slots_file import SlotsFile

    big = newsroom.settings.upload_chunk_bytes * 2
    submit_as_new_source(newsroom.source_app, "x" * big)
    submit_as_new_source(newsroom.source_app, "y" * big)
    with newsroom.store() as store:
        newest = max(NewsroomStore(store).export_groups(only_new=False),
                     key=lambda group: max(store._conn.execute("SELECT max(slot) FROM slots WHERE submission_id = ?",
                                                               (entry.submission.id,)).fetchone()[0] for entry in group.entries))
    length = slots_path(newsroom.settings.db_path).stat().st_size
    real, deleted = SlotsFile.damaged_among, []

    def damaged_while_deleting(self, slots):
        if not deleted:
            with newsroom.store() as journalist:
                deleted.append(NewsroomStore(journalist).delete_source(newest.source.id))
            assert slots_path(newsroom.settings.db_path).stat().st_size < length  # the file was cut meanwhile
        return real(self, slots)

    monkeypatch.setattr(SlotsFile, "damaged_among", damaged_while_deleting)
    result = invoke(newsroom, "check")
    assert deleted == [True] and result.exit_code == 0, result.output


def test_a_slot_the_disk_cannot_read_is_listed_and_the_check_goes_on(newsroom: Newsroom, monkeypatch):
    """An I/O error on one slot ended the check with one line and hid the other findings (a review
    found it); now every slot is read, and the unreadable ones are counted among the problems."""
    import errno

    from intake.store import slots_file

    big = newsroom.settings.upload_chunk_bytes * 2
    submit_as_new_source(newsroom.source_app, "x" * big)
    real_preadv = os.preadv

    def failing_at_slot_one(fd, buffers, offset):
        if offset == SLOT_BYTES:
            raise OSError(errno.EIO, "Input/output error")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(slots_file.os, "preadv", failing_at_slot_one)
    with open(slots_path(newsroom.settings.db_path), "r+b") as file:  # and another slot lost a write
        file.seek(2 * SLOT_BYTES + 4096)
        file.write(bytes(4096))
    result = invoke(newsroom, "check")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 slots of submissions cannot be read (the disk reports errors): restore a backup" in result.output
    assert "1 slots of submissions hold zeroed blocks" in result.output


def test_every_command_has_help(newsroom: Newsroom):
    for args in (["journalist", "add"], ["journalist", "list"], ["journalist", "remove"], ["journalist", "reset-login"],
                 ["export"], ["import-replies"], ["purge"], ["check"], ["status"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "--data" in result.output, args


def test_init_and_add_refuse_a_bad_key_file_with_the_same_message(newsroom: Newsroom, tmp_path: Path):
    broken = tmp_path / "broken.public"
    broken.write_text("not a key\n")
    for path in (broken, tmp_path / "missing.public"):
        added = invoke(newsroom, "journalist", "add", "--name", "x", "--public-key", str(path), "--yes")
        initialised = CliRunner().invoke(cli, ["init", "--yes", "--data", str(tmp_path / "new-data"), "--journalist-key", str(path)])
        assert added.exit_code == initialised.exit_code == 1
        assert added.output == initialised.output and str(path) in added.output and "Traceback" not in added.output
