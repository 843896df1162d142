"""What gets installed is what the hashed locks pin, by the same commands everywhere.

The locks are made by scripts/lock (pip-compile) from pyproject.toml; these tests say when a
lock no longer matches pyproject.toml (run scripts/lock), and that scripts/venv, the deploy
script and the docs install the same way: hashes required, nothing resolved at install time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.lockfiles import LOCKS, REPO, canonical, installed_releases, read_lock

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent


def _requirements(specs: list[str]) -> list[Requirement]:
    return [Requirement(spec) for spec in specs]


@pytest.mark.parametrize(("lock", "specs"), [
    ("build", PYPROJECT["build-system"]["requires"]),
    ("runtime", PYPROJECT["project"]["dependencies"]),
    ("test", PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]),
])
def test_each_lock_pins_what_pyproject_asks_for(lock, specs):
    pins = read_lock(lock)
    stale = [str(r) for r in _requirements(specs) if canonical(r.name) not in pins or pins[canonical(r.name)].version not in r.specifier]
    assert stale == [], f"requirements/{lock}.txt does not satisfy {stale}: run scripts/lock"


def test_the_runtime_lock_has_packaging_which_gunicorns_gevent_worker_imports():
    # gunicorn does not declare it; without it the server dies at start (issue 8).
    assert "packaging" in read_lock("runtime")
    gunicorn_needs = [spec for spec in requires("gunicorn") or [] if "extra ==" not in spec]
    assert "packaging" not in {canonical(r.name) for r in _requirements(gunicorn_needs)}


def test_the_test_lock_is_the_runtime_lock_plus_the_test_extras():
    runtime, test = read_lock("runtime"), read_lock("test")
    assert {name: test.get(name) for name in runtime} == runtime
    extras = {canonical(r.name) for r in _requirements(PYPROJECT["project"]["optional-dependencies"]["test"])}
    assert extras <= set(test) - set(runtime)


def test_build_tools_are_pinned_once():
    # setuptools goes in first from build.txt; the other locks must not ask for another one.
    build = read_lock("build")
    for lock in ("runtime", "test"):
        pins = read_lock(lock)
        assert {name: pins[name] for name in build if name in pins} == {name: build[name] for name in build if name in pins}


def _pip_commands(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if " -m pip install " in line]


def test_scripts_venv_the_deploy_and_the_docs_install_the_same_way():
    venv = _pip_commands((REPO / "scripts" / "venv").read_text().replace('"$lock"', "requirements/runtime.txt"))
    assert venv == [
        ".venv/bin/python -m pip install -q --require-hashes -r requirements/build.txt",
        ".venv/bin/python -m pip install -q --require-hashes --no-build-isolation -r requirements/runtime.txt",
        ".venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .",
    ]
    deploy = (REPO / "deploy" / "setup-debian.sh").read_text()
    deploy = deploy.replace('"$PREFIX/.venv/bin/python"', ".venv/bin/python").replace('"$PREFIX/', '"').replace('"$PREFIX"', ".")
    assert [command.replace('"', "") for command in _pip_commands(deploy)] == venv
    docs = _pip_commands((REPO / "docs" / "operator.md").read_text())
    assert docs == [command.replace(" -q", "") for command in venv]


def test_the_installed_venv_holds_what_the_test_lock_pins():
    """This venv (scripts/venv test) has each locked release."""
    installed = installed_releases(BIN / "python")
    pins = {**read_lock("build"), **read_lock("test")}
    assert {name: installed.get(name) for name in pins} == {name: pin.version for name, pin in pins.items()}


def test_locks_are_made_by_scripts_lock():
    for lock in sorted(LOCKS.glob("*.txt")):
        assert "#    scripts/lock\n" in lock.read_text(), lock.name


def test_a_non_editable_install_refuses_to_serve_and_says_why(tmp_path):
    """What `pip install .` leaves: the packages without deploy/ beside them (so no gunicorn.conf.py)."""
    site = tmp_path / "site-packages"
    for package in ("intake", "keys"):
        shutil.copytree(REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site), "INTAKE_TOR": "none"}
    done = subprocess.run([BIN / "python", "-c", "from intake.cli import main; main()", "demo", "--dir", str(tmp_path / "demo")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"Error: {site}/deploy/gunicorn.conf.py is missing: install intake from its "
                                                    "source tree (pip install -e, as deploy/setup-debian.sh does)")
