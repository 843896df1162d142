"""scripts/laptop-bundle: a USB-stick folder that installs intake-keys with no network, then decrypts.

The folder is written here (pip downloads PyNaCl and its dependencies from the
configured index); then, inside a network namespace with no network at all
(``unshare -n``: only a loopback, down), install.sh makes a fresh venv with
Debian's Python and installs from the folder alone, and the installed
``intake-keys`` decrypts an export bundle.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.fixtures_keys import Source, Submission, build_export

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LAPTOP_PYTHON = "/usr/bin/python3"


def offline(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", *argv], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def stick(tmp_path_factory) -> Path:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.fail("this test needs `unshare -n` (util-linux, and root or user namespaces)")
    out = tmp_path_factory.mktemp("usb") / "intake-keys"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "laptop-bundle"), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_the_folder_holds_hash_locked_wheels_an_install_script_debian_packages_and_checksums(stick):
    names = sorted(str(p.relative_to(stick)) for p in stick.rglob("*") if p.is_file())
    wheels = [n for n in names if n.startswith("wheels/")]
    assert {"README.txt", "SHA256SUMS", "debian-packages.txt", "install.sh", "requirements.txt"} <= set(names)
    assert [re.split(r"-\d", Path(w).name)[0].lower() for w in wheels] == ["cffi", "intake_keys", "pycparser", "pynacl"]
    requirements = (stick / "requirements.txt").read_text().splitlines()
    assert len(requirements) == len(wheels) and all(re.fullmatch(r"[a-z0-9-]+==\S+ --hash=sha256:[0-9a-f]{64}", r) for r in requirements)
    assert set((stick / "debian-packages.txt").read_text().split()) == {"mat2", "bubblewrap", "ffmpeg", "python3-venv"}
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=stick, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(names) - 1
    install = (stick / "install.sh").read_text()
    assert "--no-index" in install and "--require-hashes" in install
    subprocess.run(["shellcheck", str(stick / "install.sh")], check=True)


def test_the_keys_wheel_holds_keys_and_nothing_of_the_server(stick):
    import zipfile

    (wheel,) = (stick / "wheels").glob("intake_keys-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "keys/cli.py" in names and "keys/cleaning/sandbox.py" in names
    assert {"keys/locale/ru/LC_MESSAGES/intake-keys.mo", "keys/locale/ru/LC_MESSAGES/argparse.mo"} <= set(names)
    assert not [n for n in names if n.startswith("intake/")]


def test_it_installs_and_decrypts_with_no_network(stick, tmp_path, alice, alice_files):
    (tmp_path / "export.bundle").write_bytes(build_export([Source("src-1", "brave otter", [Submission("message", "Встреча в среду.\n".encode())])], [alice]))
    venv = tmp_path / "laptop-venv"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": LAPTOP_PYTHON, "LANG": "C.UTF-8"}
    installed = offline("sh", str(stick / "install.sh"), str(venv), env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"intake-keys installed: {venv}/bin/intake-keys" in installed.stdout
    assert "also install the Debian packages" not in installed.stdout  # mat2, bwrap and ffmpeg are all here
    decrypted = offline(
        str(venv / "bin" / "intake-keys"), "decrypt", str(tmp_path / "export.bundle"), "--key", str(alice_files.secret),
        "--passphrase-file", str(alice_files.passphrase_file), "--out", str(tmp_path / "out"), env=env,
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr
    assert (tmp_path / "out" / "brave otter" / "2026-11-28 message.txt").read_text() == "Встреча в среду.\n"
    # The journalists' guide promises Russian (--lang ru): the laptop is where they use the tool.
    russian = offline(str(venv / "bin" / "intake-keys"), "--lang", "ru", "--help", env=env)
    assert russian.returncode == 0 and "Офлайн-инструменты журналиста intake" in russian.stdout, russian.stdout
    no_server = offline(str(venv / "bin" / "python"), "-c", "import flask", env=env)
    assert no_server.returncode != 0  # the server's dependencies are not there: keys only
    # The release, which says whether this toolkit reads what the server writes (docs/journalists.md).
    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    version = offline(str(venv / "bin" / "intake-keys"), "--version", env=env)
    assert (version.returncode, version.stdout, version.stderr) == (0, f"intake-keys {release}\n", "")
    # Installed again into the same folder, the stick's wheels replace what is there, even under the
    # same release number (pip would otherwise keep the installed files).
    (installed_cli,) = venv.glob("lib/python*/site-packages/keys/cli.py")
    original = installed_cli.read_bytes()
    installed_cli.write_text("raise SystemExit('an older toolkit')\n")
    again = offline("sh", str(stick / "install.sh"), str(venv), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert installed_cli.read_bytes() == original


def test_a_tampered_stick_is_refused_before_anything_is_installed(stick, tmp_path):
    copy = tmp_path / "stick"
    shutil.copytree(stick, copy)
    (wheel,) = (copy / "wheels").glob("intake_keys-*.whl")
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    venv = tmp_path / "venv"
    result = offline("sh", str(copy / "install.sh"), str(venv), env={"PATH": "/usr/bin:/bin", "PYTHON": LAPTOP_PYTHON, "HOME": str(tmp_path)})
    assert result.returncode != 0 and "not the ones written" in result.stderr
    assert not venv.exists()
