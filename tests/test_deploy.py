"""The deploy/ files are real configuration: score and parse them as the system would."""

import re
import shutil
import subprocess
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
