"""Every benchmark still runs: each is started at a tiny size and must finish and print figures.

The figures at these sizes mean nothing; the full runs are `.venv/bin/python bench/NAME.py`.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMALL_RUNS = {
    "envelope.py": ["--size-mib", "4", "--big-mib", "8", "--runs", "2", "--sources", "20"],
    "ingest.py": ["--size-mib", "4", "--large-mib", "8", "--repeat", "1"],
    "returning.py": ["--clients", "2", "--seconds", "1", "--flooders", "2", "--rounds", "2"],
    "export.py": ["--submissions", "50", "--sources", "5", "--rounds", "2"],
    "store.py": ["--mib", "4", "--messages", "20", "--rounds", "2"],
    "allocator.py": ["--rounds", "1", "--messages", "5", "--large-mib", "1"],
    "memory.py": ["--rounds", "1", "--uploads", "3", "--file-kib", "64"],
    "senders.py": ["--senders", "3", "--kib", "4", "--key-senders", "2", "--seconds", "0.5", "--rounds", "1"],
    "journalist.py": ["--small", "30", "--medium", "40", "--large", "60", "--rounds", "2", "--page-loads", "2"],
}
LIBRARIES = {"paired.py"}  # imported by the benches, not run


def test_every_benchmark_has_a_smoke_run():
    assert sorted(p.name for p in (ROOT / "bench").glob("*.py") if not p.name.endswith("_app.py") and p.name not in LIBRARIES) == sorted(SMALL_RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("bench", sorted(SMALL_RUNS))
def test_benchmark_runs_and_prints_figures(bench):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / bench), *SMALL_RUNS[bench]],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert any(ch.isdigit() for ch in result.stdout)


def test_a_baseline_of_zero_gives_a_ratio_not_a_crash(capsys):
    """A loaded machine has no idle time at all: the senders bench divided by that 0 (CI, 2026-12-02)."""
    sys.path.insert(0, str(ROOT))
    from bench.paired import Paired

    idle = Paired("machine idle", "plain", "intake", unit="%")
    idle.add(0.0, 0.0)
    idle.add(0.0, 12.5)
    idle.add(10.0, 5.0)
    assert idle.ratios == [1.0, float("inf"), 0.5]
    assert idle.report() == 1.0
    assert "inf" in capsys.readouterr().out
