"""Backups and recovery of the database key, as an operator and a journalist run them:
`intake init`, submissions, `intake backup`; on "another machine" (fresh paths, the old data dir
and key gone) the key recovered from db-key.recovery with `intake-keys recover-db-key`,
`intake restore`; then the same onion addresses, and `intake export` + `intake-keys decrypt`
give every submission."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from keys.envelope import Metadata, encrypt_bytes
from keys.identity import KDF_MIN, Identity
from keys.server_key import ServerPublicKey

from intake.backup import make_backup
from intake.config import load_settings
from intake.store import Store, slot_table
from intake.store.newsroom import Newsroom
from intake.store.slots_file import SLOT_BYTES, SlotsFile, slots_path
from intake.onion_keys import ensure_onion_keys
from tests.test_faults import small_filesystem

BIN = Path(sys.executable).parent
PASSPHRASE = "a long passphrase for the laptop"


def run(*args, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """Two journalists' key files, as `intake-keys generate` leaves them on the laptop."""
    folder = tmp_path / "laptop"
    folder.mkdir()
    (folder / "passphrase").write_text(PASSPHRASE + "\n")
    for name in ("alice", "bob"):
        identity = Identity.generate(name)
        identity.save(folder / f"{name}.secret", PASSPHRASE, KDF_MIN)
        identity.public.save(folder / f"{name}.public")
    return folder


def _key_file(path: Path) -> Path:
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path


def _submit(data: Path, key_file: Path, tips: dict[str, bytes]) -> None:
    """Store submissions as the source app does: envelopes sealed to the active journalists.
    Small chunks: the large ones go to the slots file in several pieces."""
    settings = load_settings(data, db_key_file=key_file, upload_chunk_bytes=64 << 10)
    with Store.open(settings) as store:
        recipients = store.active_recipients()
        for kind, tip in tips.items():
            source = store.create_source(os.urandom(32), os.urandom(32))
            envelope = encrypt_bytes(tip, [r.public_key for r in recipients], Metadata(kind, length=len(tip)))
            with store.start_submission(source.id, kind, recipients) as upload:
                for start in range(0, len(envelope), 100_000):
                    upload.write(envelope[start:start + 100_000])
                upload.commit()


def _decrypted(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in folder.rglob("*") if path.is_file()]


@pytest.mark.slow
def test_a_backup_restored_on_another_machine_keeps_the_addresses_and_every_submission(tmp_path: Path, laptop: Path):
    server, other = tmp_path / "server", tmp_path / "other-machine"
    server.mkdir()
    other.mkdir()
    key = _key_file(server / "db.key.credential")  # stands for the systemd credential: outside the data dir
    data = server / "data"
    init = run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key,
               "--journalist-key", laptop / "alice.public", "--journalist-key", laptop / "bob.public", cwd=server)
    source_onion, journalist_onion = ensure_onion_keys(data)
    assert f"Source onion address: {source_onion}" in init.stdout
    # At enrolment both laptops trusted the server's key, checked by its fingerprint.
    server_key = ServerPublicKey.load(data / "server-signing.public")
    for name in ("alice", "bob"):
        run(BIN / "intake-keys", "trust-server", data / "server-signing.public", "--key", laptop / f"{name}.secret",
            "--fingerprint", server_key.fingerprint, cwd=laptop)
    tips = {"message": b"the first tip " + os.urandom(8).hex().encode(),
            "file": os.urandom(700_000)}  # several blobs pieces and a last piece in the main database
    _submit(data, key, tips)

    backup = server / "intake.backup"
    made = run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", backup, cwd=server)
    assert "submissions: 2, sources: 2" in made.stdout
    assert backup.stat().st_mode & 0o077 == 0
    # The server is lost: its data dir and its key with it. Only the backup is left.
    shutil.copy(backup, other / "intake.backup")
    shutil.rmtree(server)

    # On the laptop: bob recovers the database key from the recovery file inside the backup.
    run("tar", "-xf", other / "intake.backup", "db-key.recovery", cwd=laptop)
    recovered = laptop / "usb" / "db.key"
    recovered.parent.mkdir()
    run(BIN / "intake-keys", "recover-db-key", laptop / "db-key.recovery", "--key", laptop / "bob.secret",
        "--passphrase-file", laptop / "passphrase", "--out", recovered, cwd=laptop)
    assert recovered.stat().st_mode & 0o777 == 0o600

    new_data = other / "data"
    restored = run(BIN / "intake", "restore", other / "intake.backup", "--data", new_data, "--db-key-file", recovered,
                   cwd=other)
    assert f"Source onion address: {source_onion}" in restored.stdout
    assert f"Journalist onion address: {journalist_onion}" in restored.stdout
    assert ensure_onion_keys(new_data) == (source_onion, journalist_onion)
    assert "submissions: 2" in restored.stdout

    # The restored server signs with the same key: the laptops, which trust only the old one, accept its bundles.
    assert ServerPublicKey.load(new_data / "server-signing.public") == server_key
    bundle = other / "export.bundle"
    run(BIN / "intake", "export", "--data", new_data, "--db-key-file", recovered, "--out", bundle, cwd=other)
    for name in ("alice", "bob"):
        run(BIN / "intake-keys", "decrypt", bundle, "--key", laptop / f"{name}.secret",
            "--passphrase-file", laptop / "passphrase", "--out", laptop / f"decrypted-{name}", cwd=laptop)
        found = _decrypted(laptop / f"decrypted-{name}")
        assert tips["file"] in found and any(tips["message"] in data for data in found)


def test_a_backup_holds_no_secret_in_clear_and_no_time(tmp_path: Path, laptop: Path):
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        cwd=tmp_path)
    _submit(data, key, {"file": os.urandom(700_000)})  # a large one: its slots are in the backup
    backup = tmp_path / "intake.backup"
    run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", backup, cwd=tmp_path)
    raw = backup.read_bytes()
    onion = data / "onion"
    for secret in ((onion / "source.key").read_bytes()[-64:], (onion / "journalist.key").read_bytes()[-64:],
                   (data / "instance.secret").read_bytes().strip(), (data / "server-signing.secret").read_bytes().strip(),
                   key.read_bytes().strip(), bytes.fromhex(key.read_text())):
        assert secret not in raw
    with tarfile.open(backup) as tar:
        members = tar.getmembers()
    # No blobs database: a store made since the slots file never has one.
    assert [m.name for m in members] == ["intake-backup", "secrets.sealed", "db-key.recovery", "intake.db", "intake.db-slots"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o600)}
    # Refuses to overwrite.
    again = run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", backup, cwd=tmp_path, ok=False)
    assert again.returncode == 1 and again.stderr.strip() == f"Error: {backup} exists already: choose a new file name"


def test_restore_refuses_a_wrong_key_a_full_dir_and_a_key_inside_it_and_leaves_nothing(tmp_path: Path, laptop: Path):
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        cwd=tmp_path)
    backup = tmp_path / "intake.backup"
    run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", backup, cwd=tmp_path)
    target = tmp_path / "restored"

    wrong = run(BIN / "intake", "restore", backup, "--data", target, "--db-key-file", _key_file(tmp_path / "wrong.key"),
                cwd=tmp_path, ok=False)
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "Error: this database key does not open this backup (a different instance's key?)"
    assert not target.exists()

    target.mkdir()
    (target / "something").write_text("kept\n")
    full = run(BIN / "intake", "restore", backup, "--data", target, "--db-key-file", key, cwd=tmp_path, ok=False)
    assert full.returncode == 1 and "is not empty" in full.stderr and len(full.stderr.strip().splitlines()) == 1
    assert [p.name for p in target.iterdir()] == ["something"]

    cut = tmp_path / "cut.backup"
    cut.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    short = run(BIN / "intake", "restore", cut, "--data", tmp_path / "from-cut", "--db-key-file", key, cwd=tmp_path, ok=False)
    assert short.returncode == 1 and len(short.stderr.strip().splitlines()) == 1 and "Traceback" not in short.stderr
    assert not (tmp_path / "from-cut").exists()

    inside = run(BIN / "intake", "restore", backup, "--data", tmp_path / "keyless", cwd=tmp_path, ok=False)
    assert inside.returncode == 1 and "--db-key-file" in inside.stderr
    assert not (tmp_path / "keyless").exists()


def test_the_recovery_file_follows_the_list_of_journalists(tmp_path: Path, laptop: Path):
    """Sealed at init to every journalist; after `journalist remove` the removed one cannot open
    it; a journalist added later (`journalist add`, or `init` with a new key) can, and after a key
    rotation the new key can and the old cannot. A key that is not a journalist's opens nothing,
    writes nothing."""
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        "--journalist-key", laptop / "bob.public", cwd=tmp_path)
    carol = Identity.generate("carol")
    carol.save(laptop / "carol.secret", PASSPHRASE, KDF_MIN)
    carol.public.save(laptop / "carol.public")

    def recover(name: str, out: str) -> subprocess.CompletedProcess:
        return run(BIN / "intake-keys", "recover-db-key", data / "db-key.recovery", "--key", laptop / f"{name}.secret",
                   "--passphrase-file", laptop / "passphrase", "--out", tmp_path / out, cwd=tmp_path, ok=False)

    assert recover("alice", "alice.key").returncode == 0
    assert (tmp_path / "alice.key").read_text() == key.read_text()
    refused = recover("carol", "carol.key")
    assert refused.returncode == 1 and refused.stderr.strip() == "intake-keys: error: this recovery file is not sealed to carol's key"
    assert not (tmp_path / "carol.key").exists()

    run(BIN / "intake", "journalist", "remove", "--data", data, "--db-key-file", key, "--name", "bob", cwd=tmp_path)
    assert recover("bob", "bob.key").returncode == 1 and not (tmp_path / "bob.key").exists()
    run(BIN / "intake", "journalist", "add", "--data", data, "--db-key-file", key, "--name", "carol",
        "--public-key", laptop / "carol.public", "--yes", cwd=tmp_path)
    assert recover("carol", "carol.key").returncode == 0
    assert (tmp_path / "carol.key").read_text() == key.read_text()
    dave = Identity.generate("dave")
    dave.save(laptop / "dave.secret", PASSPHRASE, KDF_MIN)
    dave.public.save(laptop / "dave.public")
    assert recover("dave", "dave.key").returncode == 1
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "dave.public", cwd=tmp_path)
    assert recover("dave", "dave.key").returncode == 0  # init with a new journalist seals it again
    again = recover("alice", "alice.key")
    assert again.returncode == 1 and "exists" in again.stderr
    assert (data / "db-key.recovery").stat().st_mode & 0o777 == 0o600

    # A key rotation (`journalist add --replace`) seals it to the new key, and no longer to the old.
    rotated = Identity.generate("alice")
    rotated.save(laptop / "alice-rotated.secret", PASSPHRASE, KDF_MIN)
    rotated.public.save(laptop / "alice-rotated.public")
    run(BIN / "intake", "journalist", "add", "--data", data, "--db-key-file", key, "--name", "alice",
        "--public-key", laptop / "alice-rotated.public", "--replace", "--yes", cwd=tmp_path)
    assert recover("alice-rotated", "rotated.key").returncode == 0
    assert (tmp_path / "rotated.key").read_text() == key.read_text()
    assert recover("alice", "old-alice.key").returncode == 1 and not (tmp_path / "old-alice.key").exists()


def test_recover_db_key_refuses_what_is_not_a_recovery_file(tmp_path: Path, laptop: Path):
    alice = Identity.load(laptop / "alice.secret", PASSPHRASE)
    not_a_key = tmp_path / "message.envelope"
    not_a_key.write_bytes(encrypt_bytes(b"x" * 65, [alice.private_key.public_key], Metadata("message", length=65)))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(300))
    for path in (not_a_key, garbage):
        done = run(BIN / "intake-keys", "recover-db-key", path, "--key", laptop / "alice.secret",
                   "--passphrase-file", laptop / "passphrase", "--out", tmp_path / "out.key", cwd=tmp_path, ok=False)
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out.key").exists()


def test_a_submission_deleted_while_its_slots_are_copied_is_left_out_and_the_backup_completes(tmp_path: Path, laptop: Path, monkeypatch):
    """The backup copies the snapshot's slots from the live file; a journalist deletes one of
    them meanwhile (its slots overwritten, the file cut): the backup copies again, without it."""
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        cwd=tmp_path)
    for _ in range(2):
        _submit(data, key, {"file": os.urandom(700_000)})
    settings = load_settings(data, db_key_file=key)
    with Store.open(settings) as store:  # the later one: its slots are at the file's end
        (last,) = [s.source_id for s in store.submissions() if max(slot for _seq, slot in slot_table.slots_of(store._conn, s.id))
                   == store._conn.execute("SELECT max(slot) FROM slots").fetchone()[0]]
    real_read, deleted = SlotsFile.read, []

    def read_while_deleting(self, slots, length):
        if not deleted:
            with Store.open(settings) as journalist:
                deleted.append(Newsroom(journalist).delete_source(last))
        return real_read(self, slots, length)

    monkeypatch.setattr(SlotsFile, "read", read_while_deleting)
    counts = make_backup(data, tmp_path / "intake.backup", db_key_file=key)
    assert deleted == [True] and counts["submissions"] == 1


def test_a_slots_file_that_lost_its_end_is_told_as_damage_not_as_deletions(tmp_path: Path, laptop: Path):
    """A slots file cut short by damage (no submission deleted) made the backup try again and
    again and then say "submissions kept being deleted while the backup was made: run it again",
    which no rerun could cure (found by a newcomer test)."""
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        cwd=tmp_path)
    _submit(data, key, {"file": os.urandom(700_000)})
    slots = slots_path(load_settings(data, db_key_file=key).db_path)
    os.truncate(slots, slots.stat().st_size - SLOT_BYTES)
    done = run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", tmp_path / "x.backup", cwd=tmp_path,
               ok=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: the slots file is shorter than the database says: restore a backup\n", done.stderr
    assert not (tmp_path / "x.backup").exists()


def test_an_upload_in_progress_is_left_out_of_the_backup(tmp_path: Path, laptop: Path):
    """docs/operator.md: uploads in progress are left out (they are not submissions yet, and
    nothing of them was acknowledged); the restored store has neither their rows nor their slots."""
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        cwd=tmp_path)
    _submit(data, key, {"file": os.urandom(700_000)})
    settings = load_settings(data, db_key_file=key, upload_chunk_bytes=64 << 10)
    with Store.open(settings) as store:
        whole_slots = store._conn.execute("SELECT count(*) FROM slots WHERE submission_id IS NOT NULL").fetchone()[0]
        recipients = store.active_recipients()
        source = store.create_source(os.urandom(32), os.urandom(32))
        sealed = encrypt_bytes(os.urandom(600_000), [r.public_key for r in recipients], Metadata("file"))
        with store.start_submission(source.id, "file", recipients) as upload:
            upload.write(sealed[:500_000])  # in flight: its slots written, not committed
            store._settle()  # those writes run beside the upload: they have ended now
            assert store.counts()["pending uploads"] == 1
            claimed = store._conn.execute("SELECT count(*) FROM slots WHERE submission_id IS NOT NULL").fetchone()[0]
            assert claimed > whole_slots  # the upload in flight holds slots of its own
            counts = make_backup(data, tmp_path / "intake.backup", db_key_file=key)
            upload.abort()
    assert counts["submissions"] == 1 and counts["pending uploads"] == 0
    restored_data = tmp_path / "restored"
    run(BIN / "intake", "restore", tmp_path / "intake.backup", "--data", restored_data, "--db-key-file", key, cwd=tmp_path)
    with Store.open(load_settings(restored_data, db_key_file=key)) as restored:
        assert restored.counts()["submissions"] == 1 and restored.counts()["pending uploads"] == 0
        assert restored._conn.execute("SELECT count(*) FROM slots WHERE submission_id IS NOT NULL").fetchone()[0] == whole_slots


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB file system, for a backup that cannot fit."""
    with small_filesystem(tmp_path / "small-disk", "256k") as path:
        yield path


def test_a_backup_to_a_place_it_cannot_write_names_that_place_in_one_line(tmp_path: Path, laptop: Path, small_disk: Path):
    """Found by a newcomer test: a missing folder gave a traceback, and a full target disk was
    reported as "the disk holding the intake database is full", sending the operator to free
    space on the server."""
    key = _key_file(tmp_path / "db.key")
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", laptop / "alice.public",
        cwd=tmp_path)
    _submit(data, key, {"a tip": os.urandom(600_000)})
    cases = {tmp_path / "missing": f"{tmp_path / 'missing'}: there is no such file or folder",
             small_disk: f"the disk holding {small_disk} is full: free some space there and try again"}
    for folder, message in cases.items():
        done = run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", folder / "x.backup", cwd=tmp_path, ok=False)
        assert done.returncode == 1 and done.stderr == f"Error: {message}\n", done.stderr
    assert list(small_disk.iterdir()) == []  # nothing half-written left behind
