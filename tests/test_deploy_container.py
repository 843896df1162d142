"""deploy/setup-debian.sh, run for real: a fresh Debian bookworm booted with systemd as PID 1
in a systemd-nspawn container (loopback only), the script run there as root, then checks that
intake.service and the hardened tor@default.service run and serve, survive reloads and a second run,
and that a backup restored with --restore on "another machine" (new credential key) has the same
onion address (tests/container/check-setup.sh).

The Debian tree (mmdebstrap from Debian's mirror) and the wheels the script installs (pip,
offline in the container, from a wheelhouse) are cached under $INTAKE_TEST_CACHE
(/var/cache/intake-tests by default) and reused; each run boots a throwaway copy.
Measured here (2 cores): first run ~1.5 min (mmdebstrap 19 s, where debootstrap took 46 s, and a
wheel download); then ~1 min. A CI machine is new each time, so it always pays the first run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from keys.identity import KDF_MIN, Identity

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("INTAKE_TEST_CACHE", "/var/cache/intake-tests"))
MIRROR = "http://deb.debian.org/debian"
# What a Debian server has before the script runs, plus what the script installs itself (tor,
# python3-venv), so the test needs no network inside the container.
# (procps: /bin/kill, which the units' ExecReload= run, as on any standard Debian install.)
PACKAGES = "systemd,systemd-sysv,dbus,procps,tor,python3-venv,adduser,ca-certificates"
CHECKS = [
    "first-run", "intake-active", "tor-active", "tor-unprivileged", "serves", "same-source-address",
    "log-in-memory-only", "admin-status", "admin-refuses-private-tmp", "key-recovery", "reset-login", "tor-exposure", "intake-exposure", "tor-survives-reload",
    "intake-reload", "second-run", "intake-active-again", "serves-again", "new-address-after-a-leak",
    "backup", "recover-db-key", "restore-run", "restored-intake-active", "restored-serves", "restored-same-source-address",
    "restored-same-address", "restored-store", "restored-key-stays-out",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a container needs root"),
    pytest.mark.skipif(not (shutil.which("systemd-nspawn") and shutil.which("mmdebstrap")),
                       reason="needs Debian's systemd-container and mmdebstrap"),
]

TEST_UNIT = """\
[Unit]
Description=intake: run deploy/setup-debian.sh and check what it set up
After=multi-user.target

[Service]
Type=oneshot
Environment=PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_DISABLE_PIP_VERSION_CHECK=1
ExecStart=/bin/bash /check/check-setup.sh
ExecStopPost=/bin/systemctl --no-block poweroff
TimeoutStartSec=900
"""


def _debian_tree() -> Path:
    tree = CACHE / f"debian-bookworm-{hashlib.sha256(PACKAGES.encode()).hexdigest()[:8]}"
    if not (tree / "usr" / "lib" / "systemd" / "systemd").exists():
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial), MIRROR],
                       check=True, stdout=subprocess.DEVNULL, timeout=1200)
        partial.rename(tree)
    return tree


def _wheelhouse() -> Path:
    """Every wheel the script's pip commands install, keyed by what decides them."""
    lock = REPO / "requirements" / "runtime.txt"
    inputs = [REPO / "pyproject.toml"] + ([lock] if lock.is_file() else [])
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in inputs)).hexdigest()[:16]
    wheels = CACHE / f"wheels-{digest}"
    if not (wheels / "complete").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        wanted = ["-r", str(lock)] if lock.is_file() else [str(REPO)]
        for what in (wanted, ["pip", "setuptools>=77", "wheel"]):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(wheels), *what],
                           check=True, timeout=900, cwd=REPO)
        (wheels / "complete").touch()
    return wheels


def test_setup_script_deploys_a_running_tip_line_on_fresh_debian(tmp_path: Path):
    tree, wheels = _debian_tree(), _wheelhouse()
    keys, results = tmp_path / "keys", tmp_path / "results"
    keys.mkdir()
    results.mkdir()
    alice = Identity.generate("alice")  # her laptop's files: the secret key recovers the database key
    alice.public.save(keys / "alice.public")
    alice.save(keys / "alice.secret", "a passphrase for the test laptop", KDF_MIN)
    (keys / "passphrase").write_text("a passphrase for the test laptop\n")
    unit = tmp_path / "intake-test.service"
    unit.write_text(TEST_UNIT)
    command = [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network", "--ephemeral",
        "--directory", str(tree), "--boot",
        f"--bind={results}:/results", f"--bind-ro={REPO}:/src", f"--bind-ro={wheels}:/wheels",
        f"--bind-ro={keys}:/keys", f"--bind-ro={REPO / 'tests' / 'container'}:/check",
        f"--bind-ro={unit}:/etc/systemd/system/intake-test.service",
        "--", "systemd.wants=intake-test.service",
    ]
    booted = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200)
    log = (results / "log").read_text() if (results / "log").exists() else booted.stdout[-4000:] + booted.stderr
    verdict = (results / "verdict").read_text().split("\n") if (results / "verdict").exists() else []
    assert "finished" in verdict, log[-6000:]
    assert [line for line in verdict if line.startswith(("ok ", "FAIL "))] == [f"ok {name}" for name in CHECKS], log[-6000:]
