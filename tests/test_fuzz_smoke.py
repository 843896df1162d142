"""Every fuzzing harness still runs: each is started for a short while from its seed corpus
and must finish without a crash. The campaigns (a million executions and more per harness)
are `scripts/fuzz --runs N`, recorded in docs/ASSURANCE.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))

from run import HARNESSES, fuzz  # noqa: E402


def test_every_harness_has_seeds():
    for harness in HARNESSES:
        assert any((ROOT / "fuzz" / "corpus" / harness).iterdir()), harness


@pytest.mark.slow
@pytest.mark.parametrize("harness", HARNESSES)
def test_harness_runs_briefly_without_a_crash(harness: str):
    figures = fuzz(harness, runs=2000, seconds=None)
    assert figures["ok"], figures["tail"]
    assert figures["execs"] >= 2000 and figures["cov"]


def test_the_runner_refuses_an_unknown_harness():
    result = subprocess.run([sys.executable, str(ROOT / "fuzz" / "run.py"), "no-such-harness"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def regressions() -> list[Path]:
    return sorted((ROOT / "fuzz" / "regressions").iterdir())


@pytest.mark.parametrize("crash", regressions(), ids=lambda path: path.name)
def test_every_crash_the_fuzzers_found_stays_fixed(crash: Path):
    # A regression file is named HARNESS-what-it-was; its harness must now take it cleanly.
    harness = next(name for name in sorted(HARNESSES, key=len, reverse=True) if crash.name.startswith(name + "-"))
    module = __import__(harness)
    module.test_one_input(crash.read_bytes())
