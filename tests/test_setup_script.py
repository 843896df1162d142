"""deploy/setup-debian.sh: it parses, passes shellcheck, agrees with the unit and torrc it
installs, and relies only on what intake really supports. It is never run here (it would
configure this machine's system tor)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from intake.cli import cli
from intake.config import load_settings
from intake.store import MissingDatabaseKeyError, Store

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SCRIPT = DEPLOY / "setup-debian.sh"


def _script_variable(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SCRIPT.read_text(), re.MULTILINE)
    assert match, name
    value = match.group(1).strip('"')
    return re.sub(r"\$(\w+)", lambda m: _script_variable(m.group(1)), value)


def test_setup_scripts_are_valid_shell():
    for script, shell in ((SCRIPT, "bash"), (DEPLOY / "intake-admin", "sh")):
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is Debian's package `shellcheck`")
def test_setup_scripts_pass_shellcheck():
    done = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT), str(DEPLOY / "intake-admin")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_setup_script_installs_what_the_unit_and_torrc_expect():
    unit = (DEPLOY / "intake.service").read_text()
    torrc = (DEPLOY / "torrc").read_text()
    prefix, data, cred = _script_variable("PREFIX"), _script_variable("DATA"), _script_variable("CRED")
    assert f"ExecStart={prefix}/.venv/bin/intake serve --data {data} --tor system" in unit
    assert f"{prefix}/.venv/bin/intake " in (DEPLOY / "intake-admin").read_text()
    assert f"LoadCredentialEncrypted=intake-db-key:{cred}" in unit
    assert f"HiddenServiceDir {_script_variable('TOR_HS_DIR')}/" in torrc
    assert "StateDirectory=intake" in unit and data == "/var/lib/intake"


def test_setup_script_pipes_the_database_key_into_systemd_creds_only():
    text = SCRIPT.read_text()
    (generation,) = [line for line in text.splitlines() if "token_hex" in line]
    following = text[text.index(generation):].splitlines()[1]
    assert following.strip().startswith("| systemd-creds encrypt --name=intake-db-key - ")
    assert "db.key" not in text and "--db-key-file" not in text
    # init (and every admin command) reads the key as the service does: systemd decrypts it.
    admin = (DEPLOY / "intake-admin").read_text()
    assert f"LoadCredentialEncrypted=intake-db-key:{_script_variable('CRED')}" in admin
    # init runs without a terminal (systemd-run): the script asks to confirm the fingerprints itself.
    assert '"$ADMIN" init --yes --data "$DATA"' in text and "Does each journalist read the same fingerprint" in text


def test_init_with_a_systemd_credential_writes_no_key_into_the_data_dir(tmp_path: Path, journalists, monkeypatch):
    """What the script's `systemd-run -p LoadCredentialEncrypted=... intake init` relies on."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / "intake-db-key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(cli, ["init", "--yes", "--data", str(data_dir), "--journalist-key", str(journalists[0][1])])
    assert result.exit_code == 0, result.output
    assert not (data_dir / "db.key").exists()
    with Store.open(load_settings(data_dir)) as store:
        assert store.counts()["journalists"] == 1
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(MissingDatabaseKeyError):
        load_settings(data_dir)


@pytest.mark.parametrize(("out", "said"), [
    ("/tmp/export.bundle", "is in a private temporary folder, removed when the command ends"),
    ("/var/tmp/intake.backup", "is in a private temporary folder, removed when the command ends"),
    ("export.bundle", "give --out as an absolute path"),
    ("//tmp/x.bundle", "is in a private temporary folder"),
    ("/var/../tmp/x.bundle", "is in a private temporary folder"),
    ("/var/lib/intake/x.bundle", "is in the data dir"),
])
def test_intake_admin_refuses_an_out_file_that_would_be_lost_or_land_in_the_data_dir(out: str, said: str):
    """intake-admin runs intake with a private /tmp (PrivateTmp=yes) in the data dir: an export written
    to /tmp was gone when it ended, marked exported all the same (found by a newcomer test). The
    refusal comes before systemd-run, so it is tested here; the container test runs it as deployed."""
    for argv in (["export", "--out", out], ["backup", f"--out={out}"]):
        done = subprocess.run(["sh", str(DEPLOY / "intake-admin"), *argv], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and said in done.stderr and done.stdout == "", done.stderr
