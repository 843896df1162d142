"""Reading the hashed lock files in requirements/ (made by scripts/lock with pip-compile)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"

# A pin and its hashes: `name==version \` then `--hash=sha256:... \` lines, then `# via` comments.
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<hashes>(?:[ \t]*\\\n[ \t]+--hash=sha256:[0-9a-f]{64})+)", re.MULTILINE)


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def canonical(name: str) -> str:
    """The name as package indexes compare it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(name: str, locks: Path = LOCKS) -> dict[str, Pin]:
    """requirements/NAME.txt as {canonical name: pin}; every requirement line must be a hashed pin."""
    text = (locks / f"{name}.txt").read_text()
    pins = {canonical(m["name"]): Pin(m["version"], frozenset(re.findall(r"sha256:([0-9a-f]{64})", m["hashes"])))
            for m in _PIN.finditer(text)}
    requirement_lines = [line for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    assert len(requirement_lines) == len(pins), f"requirements/{name}.txt has lines that are not hashed pins"
    return pins


def installed_releases(python: Path) -> dict[str, str]:
    """{canonical name: version} of what the venv of `python` holds (editable installs included)."""
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True).stdout
    return {canonical(d["name"]): d["version"] for d in json.loads(listed)}
