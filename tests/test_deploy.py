"""The deploy/ files are real configuration: score and parse them as the system would."""

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is part of Debian's systemd")
@pytest.mark.parametrize("unit", sorted(DEPLOY.glob("*.service")), ids=lambda p: p.name)
def test_service_units_are_hardened(unit):
    assert exposure(unit) <= 2.0


def test_service_unit_gets_the_database_key_as_an_encrypted_credential():
    unit = (DEPLOY / "intake.service").read_text()
    assert "LoadCredentialEncrypted=intake-db-key:" in unit


DEBIAN_TOR_UNIT = Path("/lib/systemd/system/tor@default.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not DEBIAN_TOR_UNIT.is_file(),
                    reason="needs systemd-analyze and Debian's tor package (its tor@default.service)")
def test_debian_tor_unit_with_intakes_drop_in_is_hardened(tmp_path: Path):
    """Debian's unit alone scores 6.8; with deploy/tor-hardening.conf, installed where
    setup-debian.sh puts it, the tor holding the source onion key is as confined as intake."""
    units = tmp_path / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(DEBIAN_TOR_UNIT, units)
    assert exposure_of("tor@default.service", tmp_path) > 6
    drop_in = tmp_path / "etc" / "systemd" / "system" / "tor@default.service.d" / "intake-hardening.conf"
    drop_in.parent.mkdir(parents=True)
    shutil.copy(DEPLOY / "tor-hardening.conf", drop_in)
    assert exposure_of("tor@default.service", tmp_path) <= 2.0
    assert "install -o root -g root -m 0644 \"$PREFIX/deploy/tor-hardening.conf\" \"$TOR_DROPIN\"" in (DEPLOY / "setup-debian.sh").read_text()
    assert "TOR_DROPIN=/etc/systemd/system/tor@default.service.d/intake-hardening.conf" in (DEPLOY / "setup-debian.sh").read_text()


def exposure_of(unit: str, root: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True, text=True, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_shipped_torrc_does_not_enable_tors_seccomp_sandbox():
    """`Sandbox 1` makes `systemctl reload tor` kill tor 0.4.9 with onion-service directories."""
    lines = [line.split("#")[0].split() for line in (DEPLOY / "torrc").read_text().splitlines()]
    assert not any(words and words[0].lower() == "sandbox" and words[1:] != ["0"] for words in lines)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tor") is None, reason="needs Debian's tor")
@pytest.mark.parametrize("sandbox", [0, 1])
def test_why_the_torrc_has_no_sandbox_a_reload_kills_a_sandboxed_tor(tmp_path: Path, sandbox: int):
    """What deploy/torrc's comment says, measured: with an onion-service directory, SIGHUP
    (`systemctl reload tor`) ends a tor running `Sandbox 1`; without it tor reloads and lives."""
    hs_dir = tmp_path / "hs"
    hs_dir.mkdir(mode=0o700)
    torrc = tmp_path / "torrc"
    torrc.write_text(f"DataDirectory {tmp_path / 'data'}\nDisableNetwork 1\nSocksPort 0\nSandbox {sandbox}\n"
                     f"Log notice file {tmp_path / 'log'}\nHiddenServiceDir {hs_dir}\nHiddenServicePort 80 127.0.0.1:9\n")
    tor = subprocess.Popen(["tor", "-f", str(torrc), "--RunAsDaemon", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (hs_dir / "hostname").exists() and time.monotonic() < deadline and tor.poll() is None:
            time.sleep(0.2)
        assert (hs_dir / "hostname").exists(), (tmp_path / "log").read_text()
        tor.send_signal(signal.SIGHUP)
        try:
            tor.wait(10)
        except subprocess.TimeoutExpired:
            pass
        assert (tor.poll() is None) == (sandbox == 0), (tmp_path / "log").read_text()
    finally:
        tor.kill()
        tor.wait()


def _unit_lines(name: str) -> list[str]:
    return [line.strip() for line in (DEPLOY / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_service_unit_serves_on_unix_sockets_only_where_the_torrc_points():
    from intake.listeners import SOCKET_NAMES

    lines = _unit_lines("intake.service")
    (exec_start,) = [line for line in lines if line.startswith("ExecStart=")]
    assert "--port" not in exec_start and "--journalist-port" not in exec_start  # no TCP listener
    assert "RestrictAddressFamilies=AF_UNIX" in lines  # no IP socket can even be made
    assert "IPAddressDeny=any" in lines and not any(line.startswith("IPAddressAllow=") for line in lines)
    assert "PrivateNetwork=yes" in lines
    assert "RuntimeDirectory=intake" in lines and "--socket-dir /run/intake" in exec_start
    torrc_ports = [line for line in _unit_lines("torrc") if line.startswith("HiddenServicePort")]
    assert torrc_ports == [f"HiddenServicePort 80 unix:/run/intake/{SOCKET_NAMES['source']}"]
    apparmor = _unit_lines("apparmor-system_tor")
    for name in SOCKET_NAMES.values():
        assert f"/{{,var/}}run/intake/{name} rw," in apparmor


@pytest.mark.skipif(shutil.which("apparmor_parser") is None or not Path("/etc/apparmor.d/system_tor").exists(),
                    reason="needs Debian's apparmor and tor packages")
def test_apparmor_addition_parses_inside_debians_system_tor_profile(tmp_path):
    """deploy/apparmor-system_tor as /etc/apparmor.d/local/system_tor: the parser accepts the profile."""
    root = tmp_path / "apparmor.d"
    shutil.copytree("/etc/apparmor.d", root, symlinks=True, ignore=shutil.ignore_patterns("local", "disable", "force-complain"))
    (root / "local").mkdir()
    shutil.copy(DEPLOY / "apparmor-system_tor", root / "local" / "system_tor")
    result = subprocess.run(["apparmor_parser", "--skip-kernel-load", "--skip-cache", "--base", str(root),
                             "--Include", str(root), str(root / "system_tor")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _systemd_settings(path: Path, section: str) -> dict[str, str]:
    """A unit or journald file's settings of one section, as systemd reads them (the last one wins)."""
    settings, current = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line and not line.startswith(("#", ";")) and "=" in line:
            name, value = line.split("=", 1)
            settings[name.strip()] = value.strip()
    return settings


def test_the_service_logs_to_a_namespace_kept_in_memory_for_about_a_day():
    """SECURITY.md, "The service's log": the journal's times must not reach a seized disk. The
    container test proves it on a booted system; this reads what every install gets."""
    assert _systemd_settings(DEPLOY / "intake.service", "Service").get("LogNamespace") == "intake"
    journal = _systemd_settings(DEPLOY / "journald@intake.conf", "Journal")
    assert journal["Storage"] == "volatile"
    assert journal["MaxFileSec"] == "1day" and journal["MaxRetentionSec"] == "1day"
    assert journal["RuntimeMaxUse"].endswith("M") and not any(name.startswith("ForwardTo") and value != "no"
                                                               for name, value in journal.items())
    setup = (DEPLOY / "setup-debian.sh").read_text()
    assert "JOURNALD_CONF=/etc/systemd/journald@intake.conf" in setup
    assert '"$PREFIX/deploy/journald@intake.conf" "$JOURNALD_CONF"' in setup
