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
    assert "IPAddressAllow=localhost" in unit and "IPAddressDeny=any" in unit
