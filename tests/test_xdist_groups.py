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


_REPORT_MARKS = """
def pytest_collection_finish(session):
    for item in session.items:
        group = item.get_closest_marker("xdist_group")
        print("ITEM", item.nodeid, group.args[0] if group else "-",
              *(bool(item.get_closest_marker(name)) for name in ("alone", "by_itself")))
"""
REPO = Path(__file__).resolve().parents[1]


def test_the_alone_part_runs_two_groups_side_by_side_and_the_floods_by_themselves(tmp_path: Path):
    """scripts/test's second run (--part alone: marked alone, not by_itself) has two workers: each
    of its tests must be in the private Tor network's group or the abuse group, or it would run
    beside either. Its third run (--part by-itself) holds only the login floods, which fill both
    cores."""
    (tmp_path / "report_marks.py").write_text(_REPORT_MARKS)
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "report_marks",
                           "tests"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=_outside_any_xdist_worker(PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    items = [(nodeid, group, alone == "True", by_itself == "True") for nodeid, group, alone, by_itself in
             (line.removeprefix("ITEM ").rsplit(" ", 3) for line in done.stdout.splitlines() if line.startswith("ITEM "))]
    assert len(items) > 1000
    second_run = [(nodeid, group) for nodeid, group, alone, by_itself in items if alone and not by_itself]
    assert second_run and {group for _, group in second_run} == {"tornet", "abuse"}, second_run
    assert {nodeid.split("::")[0] for nodeid, group in second_run if group == "tornet"} == {
        str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_tornet*.py")}
    by_itself = [(nodeid, alone) for nodeid, _, alone, flag in items if flag]
    assert all(alone for _, alone in by_itself)  # by_itself only within the alone part
    assert {nodeid.split("[")[0] for nodeid, _ in by_itself} == {
        "tests/test_abuse.py::test_genuine_logins_go_through_while_one_circuit_floods_the_login_form"}
