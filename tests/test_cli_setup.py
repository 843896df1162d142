"""`intake init`, `status`, `serve --no-tor` and `demo`; settings and the data dir's secrets."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from keys.envelope import Metadata, encrypt_bytes
from keys.identity import Identity
from keys.server_key import ServerPublicKey

from intake.cli import cli, demo_instructions
from intake.config import load_settings
from intake.server import prepare_data_dir
from intake.server_identity import load_server_signing_key
from intake.setup import DEMO_JOURNALIST_DIR, SetupError, ensure_demo_instance, init_data_dir
from intake.store import JournalistExistsError, MissingDatabaseKeyError, NotInitialisedError, Store
from tests.fixtures_store import make_journalist
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]
INTAKE = [sys.executable, "-c", "from intake.cli import main; main()"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _write_key(path: Path, key: bytes) -> Path:
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def test_init_makes_a_private_data_dir_and_registers_journalists(tmp_path: Path, journalists):
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(cli, ["init", "--yes", "--data", str(data_dir), "--db-key-in-data-dir"]
                                + [a for _, p in journalists for a in ("--journalist-key", str(p))])
    assert result.exit_code == 0, result.output
    assert "journalists: 3" in result.output
    assert _mode(data_dir) == 0o700
    for name in ("db.key", "instance.secret", "intake.db"):
        assert _mode(data_dir / name) == 0o600, name
    # SECURITY.md §2: every file 0600 and every folder 0700, but the server's public key (made to be shown).
    for path in data_dir.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o644 if path.name == "server-signing.public" else 0o600
        assert _mode(path) == expected, (path.relative_to(data_dir), oct(_mode(path)))
    settings = load_settings(data_dir)
    with Store.open(settings) as store:
        assert {j.name for j in store.journalists()} == {"alice", "bob", "carol"}
        alice = next(j for j in store.journalists() if j.name == "alice")
        assert alice.fingerprint == journalists[0][0].public.fingerprint
    assert settings.db_key.hex() not in result.output and settings.db_key.hex() not in repr(settings)
    assert settings.instance_secret.hex() not in repr(settings)


def test_init_shows_each_fingerprint_and_asks_to_confirm_them(tmp_path: Path, journalists):
    data_dir = tmp_path / "data"
    args = ["init", "--data", str(data_dir), "--db-key-in-data-dir"] + [a for _, p in journalists for a in ("--journalist-key", str(p))]
    refused = CliRunner().invoke(cli, args, input="n\n")
    assert refused.exit_code == 1 and not data_dir.exists()
    for identity, _ in journalists:
        assert f"Fingerprint of {identity.name}'s key: {identity.public.fingerprint}" in refused.output
    confirmed = CliRunner().invoke(cli, args, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    server = ServerPublicKey.load(data_dir / "server-signing.public")
    assert f"Server key fingerprint: {server.fingerprint}" in confirmed.output
    assert server == ServerPublicKey.from_seed(bytes(load_server_signing_key(data_dir)))


def test_init_again_keeps_the_key_and_adds_new_journalists(settings, tmp_path: Path):
    key_before = (settings.data_dir / "db.key").read_bytes()
    _, dave = make_journalist(tmp_path, "dave")
    init_data_dir(settings.data_dir, [dave])
    assert (settings.data_dir / "db.key").read_bytes() == key_before
    with Store.open(settings) as store:
        assert store.counts()["journalists"] == 4


def test_init_refuses_a_known_name_with_another_key(settings, tmp_path: Path):
    impostor_dir = tmp_path / "impostor"
    impostor_dir.mkdir()
    _, impostor = make_journalist(impostor_dir, "alice")
    before = _digest(settings.data_dir)
    with pytest.raises(JournalistExistsError):
        init_data_dir(settings.data_dir, [impostor])
    assert _digest(settings.data_dir) == before


def test_init_with_a_bad_journalist_key_file_creates_nothing(tmp_path: Path):
    bad = tmp_path / "bad.public"
    bad.write_text("not a key\n")
    runner = CliRunner()
    for path in (bad, tmp_path / "missing.public"):
        result = runner.invoke(cli, ["init", "--yes", "--data", str(tmp_path / "data"), "--journalist-key", str(path)])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "data").exists()


def test_init_without_journalists_is_refused(tmp_path: Path):
    with pytest.raises(SetupError):
        init_data_dir(tmp_path / "data", [])
    assert not (tmp_path / "data").exists()


def test_init_with_the_wrong_key_changes_nothing(settings, tmp_path: Path):
    wrong = _write_key(tmp_path / "wrong.key", os.urandom(32))
    _, dave = make_journalist(tmp_path, "dave")
    before = _digest(settings.data_dir)
    result = CliRunner().invoke(cli, ["init", "--yes", "--data", str(settings.data_dir), "--journalist-key", str(dave), "--db-key-file", str(wrong)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: the database key does not open this database (wrong key, or not an intake database)"
    assert _digest(settings.data_dir) == before


def test_init_with_a_missing_key_on_an_existing_dir_changes_nothing(settings):
    (settings.data_dir / "db.key").unlink()
    before = _digest(settings.data_dir)
    with pytest.raises(MissingDatabaseKeyError):
        init_data_dir(settings.data_dir, [])
    assert _digest(settings.data_dir) == before


@pytest.mark.parametrize("lost", ["intake.db", "instance.secret"])
def test_an_instance_that_lost_its_database_or_secret_is_called_damaged_and_init_refuses_it(settings, lost: str):
    """Found by a newcomer test: with intake.db gone, every command said "not an intake data dir:
    run intake init", and init made an empty store at the same onion addresses, every source's
    account and document gone, the slots file orphaned. A lost file calls for the backup."""
    (settings.data_dir / lost).unlink()
    before = _digest(settings.data_dir)
    status = CliRunner().invoke(cli, ["status", "--data", str(settings.data_dir)])
    assert status.exit_code == 1
    assert status.output.strip() == (f"Error: {settings.data_dir} holds an intake instance whose {lost} is missing:"
                                     " restore it from a backup into a new folder (`intake restore`); `intake init` cannot"
                                     " bring it back")
    _, dave = make_journalist(settings.data_dir.parent, "dave")
    init = CliRunner().invoke(cli, ["init", "--yes", "--data", str(settings.data_dir), "--journalist-key", str(dave)])
    assert init.exit_code == 1 and init.output == status.output
    assert _digest(settings.data_dir) == before


def test_an_init_cut_short_before_its_database_is_taken_up_again(tmp_path: Path, journalists):
    """A first init killed after its instance secret and signing key but before the database (a
    hostile review: every command then called the dir damaged, and no backup existed)."""
    data_dir = tmp_path / "data"
    args = ["init", "--yes", "--data", str(data_dir), "--db-key-in-data-dir", "--journalist-key", str(journalists[0][1])]
    assert CliRunner().invoke(cli, args).exit_code == 0
    for path in data_dir.iterdir():  # all but what init writes before the database
        if path.name not in ("instance.secret", "db.key", "server-signing.secret", "server-signing.public"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not (data_dir / "intake.db").exists() and not (data_dir / "db-key.recovery").exists()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert load_settings(data_dir).db_path.is_file()


def test_key_file_outside_the_data_dir_is_used_and_needed(tmp_path: Path, journalists):
    key_file = _write_key(tmp_path / "db-key", os.urandom(32))
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, [journalists[0][1]], db_key_file=key_file)
    assert not (data_dir / "db.key").exists()
    with Store.open(load_settings(data_dir, db_key_file=key_file)) as store:
        assert store.counts()["journalists"] == 1
    with pytest.raises(MissingDatabaseKeyError):
        load_settings(data_dir)


def test_systemd_credential_holds_the_key(tmp_path: Path, journalists, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    _write_key(credentials / "intake-db-key", os.urandom(32))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, [journalists[0][1]])
    assert not (data_dir / "db.key").exists()
    assert load_settings(data_dir).db_key == bytes.fromhex((credentials / "intake-db-key").read_text())


def test_key_file_readable_by_others_is_refused(settings):
    (settings.data_dir / "db.key").chmod(0o644)
    with pytest.raises(MissingDatabaseKeyError, match="chmod 600"):
        load_settings(settings.data_dir)


def test_uninitialised_dir_is_reported(tmp_path: Path):
    with pytest.raises(NotInitialisedError):
        load_settings(tmp_path)
    result = CliRunner().invoke(cli, ["status", "--data", str(tmp_path / "none")])
    assert result.exit_code == 1 and "intake init" in result.output


def test_status_prints_counts(settings, source):
    result = CliRunner().invoke(cli, ["status", "--data", str(settings.data_dir)])
    assert result.exit_code == 0
    counts = ["sources: 1", "submissions: 0", "replies: 0", "journalists: 3", "pending uploads: 0"]
    assert result.output.splitlines()[: len(counts)] == counts  # journalist-side details may follow


def test_status_with_the_wrong_key_is_one_line_and_changes_nothing(settings, tmp_path: Path):
    wrong = _write_key(tmp_path / "wrong.key", os.urandom(32))
    before = _digest(settings.data_dir)
    result = subprocess.run(
        INTAKE + ["status", "--data", str(settings.data_dir), "--db-key-file", str(wrong)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["Error: the database key does not open this database (wrong key, or not an intake database)"]
    assert _digest(settings.data_dir) == before


def test_settings_derive_separate_secrets(settings):
    assert len(settings.flask_secret_key) == 32 and len(settings.codename_salt) == 16
    assert settings.codename_salt not in settings.flask_secret_key
    assert settings.instance_secret not in (settings.flask_secret_key, settings.codename_salt)


def test_overrides_replace_defaults(settings):
    tuned = load_settings(settings.data_dir, kdf_queue=1, session_minutes=5)
    assert (tuned.kdf_queue, tuned.session_minutes) == (1, 5)
    with pytest.raises(TypeError):
        load_settings(settings.data_dir, no_such_setting=1)


_ORPHAN = """
import os, sys
from pathlib import Path
from intake.config import load_settings
from intake.store import Store
settings = load_settings(Path(sys.argv[1]))
store = Store.open(settings)
upload = store.start_submission(store.create_source(b"o" * 32, b"p" * 32).id, "file", store.active_recipients())
upload.write(os.urandom(2 * settings.upload_chunk_bytes + 5))  # chunks stored, whatever the chunk size
store._settle()  # they are stored beside the upload: the first one's pending row is in now
os._exit(9)  # dies without aborting, as a killed worker would
"""


def test_serve_preparation_removes_uploads_orphaned_by_a_dead_worker(settings):
    subprocess.run([sys.executable, "-c", _ORPHAN, str(settings.data_dir)], cwd=REPO, timeout=60)
    with Store.open(settings) as store:
        assert store.counts()["pending uploads"] == 1
    assert prepare_data_dir(settings.data_dir)["pending uploads"] == 0


def test_demo_instance_is_labelled_reused_and_usable(tmp_path: Path):
    first = ensure_demo_instance(tmp_path)
    public_before = first.public_key_file.read_bytes()
    second = ensure_demo_instance(tmp_path)
    assert second == first and first.public_key_file.read_bytes() == public_before
    assert first.journalist_dir.name == DEMO_JOURNALIST_DIR == "demo-journalist-DO-NOT-USE-IN-PRODUCTION"
    assert "DO NOT USE IT IN PRODUCTION" in (first.journalist_dir / "README.txt").read_text()
    assert _mode(first.secret_key_file) == 0o600 and _mode(first.passphrase_file) == 0o600
    identity = Identity.load(first.secret_key_file, first.passphrase_file.read_text().strip())
    with Store.open(load_settings(first.data_dir)) as store:
        (recipient,) = store.active_recipients()
    assert recipient.public_key == bytes(identity.private_key.public_key)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(INTAKE + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_until(process: subprocess.Popen, marker: str) -> str:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError("the command ended before printing " + repr(marker) + ": " + process.stderr.read())


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(40)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_serve_prints_its_url_serves_and_stops_on_sigterm(settings):
    port = free_port()
    process = _start(["serve", "--data", str(settings.data_dir), "--no-tor", "--port", str(port),
                      "--journalist-port", str(free_port())], REPO)
    try:
        output = _read_until(process, "Ctrl-C")
        url = f"http://127.0.0.1:{port}/"
        assert url in output
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    finally:
        code = _stop(process)
    assert code == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.slow
def test_demo_sets_itself_up_and_prints_where_to_submit_and_how_to_decrypt(tmp_path: Path):
    port = free_port()
    process = _start(["demo", "--dir", str(tmp_path / "demo"), "--port", str(port),
                      "--journalist-port", str(free_port())], tmp_path)
    try:
        output = _read_until(process, "Ctrl-C stops the server")
        url = f"http://127.0.0.1:{port}/"
        assert f"Submit a tip:  {url}" in output
        assert "intake-keys decrypt" in output and "--passphrase-file" in output and "intake export" in output
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    finally:
        assert _stop(process) == 0
    assert (tmp_path / "demo" / DEMO_JOURNALIST_DIR / "journalist.secret").is_file()
    assert load_settings(tmp_path / "demo" / "data").db_path.is_file()


@pytest.mark.slow
def test_demo_export_and_decrypt_commands_work_as_printed_and_again_at_the_next_run(tmp_path: Path):
    """The printed commands, copied as they are, work; and at the next `intake demo` (a newcomer
    test: the export refused to overwrite the first run's bundle) they work again."""
    info = ensure_demo_instance(tmp_path / "demo")
    for run in range(2):
        tip = f"the demo tip of run {run} ".encode() + os.urandom(8).hex().encode()
        with Store.open(load_settings(info.data_dir)) as store:
            recipients = store.active_recipients()
            source = store.create_source(os.urandom(32), os.urandom(32))
            with store.start_submission(source.id, "message", recipients) as upload:
                upload.write(encrypt_bytes(tip, [r.public_key for r in recipients], Metadata("message", length=len(tip))))
                upload.commit()
        instructions = demo_instructions(info, "http://127.0.0.1:8080/", "http://127.0.0.1:8081/")
        commands = [line.strip() for line in instructions.splitlines() if line.startswith("    ")]
        assert [command.split()[1] for command in commands] == ["export", "decrypt", "journalist"]
        for command in commands[:2]:
            # Printed relative to where `intake demo` ran; run them from there, as a person would.
            done = subprocess.run(command, shell=True, cwd=Path.cwd(), capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        decrypted = [p.read_bytes() for p in (tmp_path / "demo" / "decrypted").rglob("*") if p.is_file()]
        assert any(tip in data for data in decrypted)
    login = subprocess.run(commands[2], shell=True, cwd=Path.cwd(), capture_output=True, text=True, timeout=120)
    assert login.returncode == 0 and "otpauth://totp/" in login.stdout, login.stderr


def test_a_demo_that_never_ran_tor_can_be_backed_up(tmp_path: Path):
    """`intake demo --no-tor` left a data dir without onion keys, and `intake backup` refused it
    as incomplete (found by a newcomer test): every instance gets its onion keys when made."""
    info = ensure_demo_instance(tmp_path / "demo")
    assert sorted(path.name for path in (info.data_dir / "onion").iterdir()) == ["journalist.key", "source.key"]
    done = subprocess.run([str(Path(sys.executable).parent / "intake"), "backup", "--data", str(info.data_dir), "--out",
                           str(tmp_path / "demo.backup")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and (tmp_path / "demo.backup").is_file(), done.stderr


def test_init_makes_a_private_server_signing_key_that_stays(tmp_path):
    from intake.server_identity import load_server_signing_key, server_signing_path

    _, alice_public_file = make_journalist(tmp_path, "alice")
    init_data_dir(tmp_path / "data", [alice_public_file], key_in_data_dir=True)
    path = server_signing_path(tmp_path / "data")
    assert path.stat().st_mode & 0o077 == 0
    first = load_server_signing_key(tmp_path / "data").verify_key
    init_data_dir(tmp_path / "data", [alice_public_file])  # re-running init keeps the key
    assert load_server_signing_key(tmp_path / "data").verify_key == first
