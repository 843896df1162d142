"""Run the coverage-guided fuzzing harnesses (atheris, libFuzzer) and print their figures.

    scripts/fuzz [--runs N | --seconds S] [HARNESS ...]     (all harnesses when none is named)

Each harness starts from its seed corpus in fuzz/corpus/NAME (read only; what the
fuzzer finds goes to a scratch corpus) and stops after N executions or S seconds.
A crash's input is kept under fuzz/crashes/ and the run exits 1. Prints one line per
harness: executions, edges covered (cov), features (ft), corpus size, crashes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
HARNESSES = sorted(p.stem for p in FUZZ.glob("*.py") if p.stem not in {"common", "run", "make_seeds"})
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")


def fuzz(harness: str, runs: int | None, seconds: int | None) -> dict[str, object]:
    crashes = FUZZ / "crashes"
    crashes.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"intake-fuzz-{harness}-") as scratch:
        limits = [f"-runs={runs}"] if runs is not None else []
        limits += [f"-max_total_time={seconds}"] if seconds is not None else []
        dictionary = FUZZ / f"{harness}.dict"
        limits += [f"-dict={dictionary}"] if dictionary.is_file() else []
        command = [sys.executable, str(FUZZ / f"{harness}.py"), *limits, "-print_final_stats=1",
                   f"-artifact_prefix={crashes}/{harness}-", "-rss_limit_mb=2048", scratch, str(FUZZ / "corpus" / harness)]
        result = subprocess.run(command, cwd=FUZZ, capture_output=True, text=True, errors="replace")
    output = result.stdout + result.stderr
    done, execs = _DONE.search(output), _EXECS.search(output)
    return {
        "harness": harness,
        "ok": result.returncode == 0,
        "execs": int(execs[1]) if execs else 0,
        "cov": int(done[2]) if done else None,
        "ft": int(done[3]) if done else None,
        "corpus": int(done[4]) if done else None,
        "tail": "" if result.returncode == 0 else output[-3000:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--runs", type=int, help="executions per harness")
    limit.add_argument("--seconds", type=int, help="seconds per harness")
    parser.add_argument("harnesses", nargs="*", choices=[[], *HARNESSES], metavar="HARNESS", help=", ".join(HARNESSES))
    args = parser.parse_args()
    runs = args.runs if args.runs is not None or args.seconds is not None else 10_000
    failed = False
    print(f"{'harness':12} {'executions':>12} {'cov':>6} {'ft':>6} {'corpus':>7}  result")
    for harness in args.harnesses or HARNESSES:
        figures = fuzz(harness, runs, args.seconds)
        verdict = "ok" if figures["ok"] else "CRASH (input kept in fuzz/crashes/)"
        print(f"{harness:12} {figures['execs']:>12,} {figures['cov']!s:>6} {figures['ft']!s:>6} {figures['corpus']!s:>7}  {verdict}",
              flush=True)
        if not figures["ok"]:
            failed = True
            print(figures["tail"], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
