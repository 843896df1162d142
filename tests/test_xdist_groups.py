"""scripts/test relies on pytest-xdist's --dist loadgroup: tests marked xdist_group("timing")
(time or memory bounds) run on one worker, one at a time, never beside each other. pytest 9.2
broke that without a word (pytest-xdist issue 1386): every group was spread over both workers,
and timing tests ran two at once. pyproject.toml keeps pytest below 9.2; this test says so if
an upgrade breaks it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")

@pytest.mark.parametrize("n", range(8))
def test_one_of_a_group(n):
    with open(os.path.join(os.environ["WHERE_THEY_RAN"], f"{n}.worker"), "w") as mark:
        mark.write(os.environ["PYTEST_XDIST_WORKER"])
"""


def _outside_any_xdist_worker(**extra: str) -> dict[str, str]:
    """This environment without what xdist gives its workers (this test may run in one)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}, **extra}


def test_a_groups_tests_all_run_on_one_worker(tmp_path: Path):
    (tmp_path / "test_grouped.py").write_text(_GROUPED)
    where = tmp_path / "where"
    where.mkdir()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                           "--rootdir", str(tmp_path), "test_grouped.py"],
                          cwd=tmp_path, env=_outside_any_xdist_worker(WHERE_THEY_RAN=str(where)), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    marks = list(where.glob("*.worker"))
    assert len(marks) == 8
    workers = {mark.read_text() for mark in marks}
    assert len(workers) == 1, f"one group's tests ran on {sorted(workers)}"
