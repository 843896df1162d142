"""Promises of SECURITY.md and docs/ that no test backed when docs/ASSURANCE.md was first written.
Each test names the sentence it proves; ASSURANCE.md points here."""

from __future__ import annotations

import configparser
import io
import os
import re
import signal
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from keys import bundle, bundle_reader
from keys.errors import FormatError

from intake.config import Settings
from intake.server_identity import PREVIOUS_SIGNING_FILE, SERVER_SIGNING_FILE, rotate_server_signing_key
from intake.store import Store
from intake.store.store import _open_blobs
from tests.fixtures_store import page_to_damage
from tests.fixtures_serve import REPO, ServeProcess, command_line, descendants, free_port

BIN = Path(sys.executable).parent


def _run(*args, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_deleted_rows_are_overwritten_in_both_databases(settings: Settings):
    """SECURITY.md section 2: deleted rows are overwritten (`secure_delete`) in the database, and
    in an older store's blobs database."""
    _open_blobs(settings).close()  # as a store from before the slots file has it
    with Store.open(settings) as store:
        modes = {name: conn.execute("PRAGMA secure_delete").fetchone()[0] for name, conn in store.databases()}
    assert modes == {"database": 1, "blobs database": 1}


def test_a_second_rotation_discards_the_oldest_signing_key(settings: Settings):
    """SECURITY.md section 5: rotation moves the seed to server-signing.previous.secret, "an older
    previous seed is discarded"."""
    data = settings.data_dir
    first = (data / SERVER_SIGNING_FILE).read_bytes()
    rotate_server_signing_key(data)
    second = (data / SERVER_SIGNING_FILE).read_bytes()
    assert (data / PREVIOUS_SIGNING_FILE).read_bytes() == first
    rotate_server_signing_key(data)
    assert (data / PREVIOUS_SIGNING_FILE).read_bytes() == second
    kept = [path.read_bytes() for path in data.rglob("*") if path.is_file()]
    assert not any(first.strip() in content for content in kept), "the oldest seed is still in the data dir"


def test_generate_uses_argon2id_opslimit_3_and_256_mib_by_default(tmp_path: Path):
    """SECURITY.md section 4: "`intake-keys generate` uses opslimit 3 and memlimit 256 MiB by default"."""
    (tmp_path / "passphrase").write_text("a long passphrase for the laptop\n")
    _run(BIN / "intake-keys", "generate", "--out", tmp_path / "keys", "--name", "alice",
         "--passphrase-file", tmp_path / "passphrase", cwd=tmp_path)
    header = (tmp_path / "keys" / "alice.secret").read_bytes()[:17]
    assert header[:9] == b"INTAKE-K\x01"
    assert struct.unpack(">II", header[9:]) == (3, 256 << 20)


def test_an_export_bundle_of_more_than_a_million_items_is_refused_from_its_headers():
    """SECURITY.md section 6: an item entry, "at most 1,000,000 items"; section 8: "Refuse sizes
    beyond the limits before reading the data they announce"."""
    entry = struct.pack(">BQ", bundle.ENTRY_ITEM, 1) + b"\0"
    data = bundle.EXPORT_MAGIC + bytes([bundle.VERSION]) + entry * (bundle.MAX_ITEMS + 1)
    with pytest.raises(FormatError, match="too many items"):
        bundle_reader.ExportBundle(io.BytesIO(data))
    assert bundle.MAX_ITEMS == 1_000_000


@pytest.mark.parametrize("damaged_page", ["read-by-the-check", "read-at-opening"])
def test_restore_checks_the_integrity_of_what_it_wrote_and_refuses_a_damaged_backup(tmp_path: Path, journalists, damaged_page: str):
    """docs/operator.md: `intake restore` "refuses a wrong key, a damaged or cut backup ... with one
    line, and leaves nothing behind; after writing it checks the restored store's integrity". The
    cut backup is tests/test_backup_restore.py's; here one byte of the database inside it changes,
    in a page only the integrity check reads, or in one read to open the store."""
    key = tmp_path / "db.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    data = tmp_path / "data"
    _run(BIN / "intake", "init", "--yes", "--data", data, "--db-key-file", key, "--journalist-key", journalists[0][1],
         cwd=tmp_path)
    backup = tmp_path / "intake.backup"
    _run(BIN / "intake", "backup", "--data", data, "--db-key-file", key, "--out", backup, cwd=tmp_path)

    damaged = tmp_path / "damaged.backup"
    with tarfile.open(backup) as original, tarfile.open(damaged, "w") as out:
        for member in original.getmembers():
            content = original.extractfile(member).read() if member.isfile() else None
            if member.name == "intake.db":
                offset = page_to_damage(content, bytes.fromhex(key.read_text()), tmp_path / "scratch.db",
                                        read_at_opening=damaged_page == "read-at-opening")
                content = content[:offset] + bytes([content[offset] ^ 0x01]) + content[offset + 1:]
            out.addfile(member, io.BytesIO(content) if content is not None else None)
    target = tmp_path / "restored"
    refused = _run(BIN / "intake", "restore", damaged, "--data", target, "--db-key-file", key, cwd=tmp_path, ok=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    print(f"\n[damaged backup, {damaged_page}] intake restore said: {refused.stderr.strip()}")
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert not target.exists()


@pytest.mark.slow
def test_when_intakes_own_tor_exits_intake_stops_with_status_1(settings: Settings):
    """docs/operator.md: "With intake's own tor (`launch`, `offline`), tor exiting stops intake with
    status 1 (systemd's `Restart=on-failure` brings it back)"."""
    serve = ServeProcess(["serve", "--data", str(settings.data_dir), "--port", str(free_port()),
                          "--journalist-port", str(free_port()), "--tor", "offline"])
    try:
        serve.read_until("Ctrl-C stops intake", timeout=90)
        tors = [pid for pid in descendants(serve.process.pid) if command_line(pid).split(" ")[0].endswith("tor")]
        assert len(tors) == 1, [command_line(pid) for pid in descendants(serve.process.pid)]
        os.kill(tors[0], signal.SIGKILL)
        status = serve.process.wait(timeout=60)
        output = serve.all_output()
        assert status == 1, output
        assert "Tor failed" in output and "Traceback" not in output
    finally:
        serve.stop()


def test_the_units_stop_timeout_outlasts_the_default_grace_period():
    """docs/operator.md: the grace period is 30 s by default and `deploy/intake.service` gives
    systemd `TimeoutStopSec=45s`, so systemd never kills an upload the grace period lets finish."""
    from intake.server import DEFAULT_GRACE_PERIOD

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(REPO / "deploy" / "intake.service")
    timeout = unit["Service"]["TimeoutStopSec"]
    assert timeout == "45s" and DEFAULT_GRACE_PERIOD == 30
    assert int(timeout.removesuffix("s")) > DEFAULT_GRACE_PERIOD


def test_ci_runs_exactly_the_readmes_test_command():
    """README.md: "CI (`.ci/run`) runs exactly this command" (`scripts/test`)."""
    run = (REPO / ".ci" / "run").read_text()
    commands = [line for line in run.splitlines() if line and not line.startswith("#") and not line.startswith("set ")
                and not line.startswith("cd ")]
    assert commands == ["exec scripts/test"]
    assert "&& scripts/test\n" in (REPO / "README.md").read_text()
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_a_removed_key_cannot_be_registered_again(newsroom, tmp_path: Path):
    """docs/journalists.md, "Key rotation": "A removed key cannot be registered again"."""
    from click.testing import CliRunner

    import intake.newsroom_cli  # noqa: F401  (attaches the journalist-side commands)
    from intake.cli import cli

    data = str(newsroom.settings.data_dir)
    path = tmp_path / "carried-again" / "bob.public"
    path.parent.mkdir()
    newsroom.bob.identity.public.save(path)
    removed = CliRunner().invoke(cli, ["journalist", "remove", "--data", data, "--name", "bob"])
    assert removed.exit_code == 0, removed.output
    again = CliRunner().invoke(cli, ["journalist", "add", "--data", data, "--name", "bob", "--public-key", str(path), "--yes"])
    assert again.exit_code == 1 and "Traceback" not in again.output, again.output
    print(f"\n[removed key] journalist add said: {again.output.strip()}")
    with newsroom.store() as store:
        assert bytes(newsroom.bob.identity.public.encryption_key) not in [r.public_key for r in store.active_recipients()]


def test_the_cleaner_gets_120_seconds_and_2_gib_per_step_unless_told_otherwise(tmp_path: Path):
    """docs/journalists.md, "Reading files safely": "120 seconds and 2 GiB of memory per step
    (`--time-limit`, `--memory-limit`), and one second more for every 8 MiB of the file". That the
    sandbox enforces the limits it is given is tests/test_cleaning_sandbox.py's, and how they grow
    tests/test_cleaning_media.py's; this is the default a journalist gets."""
    shown = _run(BIN / "intake-keys", "clean", "--help", cwd=tmp_path).stdout
    said = r"--time-limit SECONDS per file and step, one more for every 8 MiB of the file (default: 120)"
    assert re.search(re.escape(said).replace(r"\ ", r"\s+"), shown), shown
    assert re.search(r"--memory-limit MIB\s+address space of the cleaner \(default: 2048\)", shown), shown


@pytest.mark.slow
def test_the_tor_intake_launches_has_no_socks_port_safe_logging_and_logs_to_intakes_output(tmp_path: Path):
    """docs/operator.md, `--tor launch`: "no SOCKS port, `SafeLogging 1`, and logs that go to
    intake's output, never to disk" (asked of the running tor, in offline mode)."""
    from intake.tor import OnionServices

    services = OnionServices(tmp_path, "offline")
    try:
        services.start(tmp_path / "source.sock", tmp_path / "journalist.sock", [])
        conf = {key: services.getconf(key)[key] for key in ("SocksPort", "SafeLogging", "Log", "DisableNetwork")}
    finally:
        services.stop()
    assert conf["SocksPort"] == ["0"] and conf["SafeLogging"] == ["1"] and conf["DisableNetwork"] == ["1"]
    assert conf["Log"] and all(line.split()[-1] == "stdout" for line in conf["Log"]), conf["Log"]


def test_the_shipped_torrc_never_relays_logs_safely_and_opens_its_control_socket_to_its_group_only():
    """docs/operator.md, production step 1: deploy/torrc "turns off the SOCKS port, never relays,
    logs at `notice` with `SafeLogging 1`, and opens the control socket `/run/tor/control` to group
    `debian-tor` only" (tor itself checks the file: tests/test_tor_offline.py)."""
    options: dict[str, list[str]] = {}
    for line in (REPO / "deploy" / "torrc").read_text().splitlines():
        words = line.split("#")[0].split(None, 1)
        if words:
            options.setdefault(words[0], []).append(words[1] if len(words) > 1 else "")
    assert options["SocksPort"] == ["0"] and options["ORPort"] == ["0"] and options["DirPort"] == ["0"]
    assert options["ExitRelay"] == ["0"] and options["ClientOnly"] == ["1"]
    assert options["SafeLogging"] == ["1"] and [log.split()[0] for log in options["Log"]] == ["notice"]
    assert options["ControlPort"] == ["0"] and [s.split()[0] for s in options["ControlSocket"]] == ["/run/tor/control"]
    assert options["ControlSocketsGroupWritable"] == ["1"] and options["CookieAuthentication"] == ["1"]
    assert "RelaxDirModeCheck" in options["ControlSocket"][0] and "WorldWritable" not in options["ControlSocket"][0]


def test_publish_replaces_each_file_whole(newsroom, tmp_path: Path):
    """docs/publishing.md: `intake publish` writes into `site/`, "each file is replaced whole": a
    new file is put in place of the old one, so a web server or a mirror reading the folder meanwhile
    sees the old file or the new one, never a half-written one; nothing else is left in the folder."""
    site = tmp_path / "site"
    site.mkdir()
    old = b"an older statement, longer than the new one will be. " * 400
    (site / "onion-address.txt").write_bytes(old)
    os.link(site / "onion-address.txt", tmp_path / "what-a-reader-has-open")  # the old file, as an open reader sees it
    before = (site / "onion-address.txt").stat().st_ino
    _run(BIN / "intake", "publish", "--data", newsroom.settings.data_dir, "--out", site, cwd=tmp_path)
    assert (site / "onion-address.txt").stat().st_ino != before
    assert (tmp_path / "what-a-reader-has-open").read_bytes() == old
    statement = (site / "onion-address.txt").read_bytes()
    assert statement != old and not statement.startswith(b"an older statement")
    assert sorted(path.name for path in site.iterdir()) == sorted([
        "onion-address.txt", "onion-address.txt.sig", "server-signing-key.pem",
        "tip-line.en.html", "tip-line.en.txt", "tip-line.ru.html", "tip-line.ru.txt"])
