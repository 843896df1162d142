"""What wiping freed memory costs (intake.memory_wiping: PYTHONMALLOC=malloc, MALLOC_PERTURB_,
glibc's per-thread cache off, and a cycle collection after each request with a body).

The allocator settings are read when an interpreter starts, so each round runs the same
workload in a fresh child interpreter, once with the settings and once without, the two
alternating (A B B A ...). The wiped child also does what a worker does: it freezes the
app's startup objects and collects reference cycles after each upload. Both run today's
code, so buffers the code wipes itself (keys.wiping) are in both. The workload is the server's own code through the Flask test
client (no network, so the allocator's cost is not hidden behind I/O): a new source, then
small messages posted back to back, then one large upload, encrypted to 3 journalist keys
and stored durably.

Figures (median [min..max] of the paired rounds):
  small messages/s, wiped vs not      target >= 0.85x
  large upload MiB/s, wiped vs not    target >= 0.85x

With --levers the rounds run the settings one on top of the other instead (not wiped;
PYTHONMALLOC=malloc + MALLOC_PERTURB_; glibc's per-thread cache off; cycles collected),
each against not wiped, to show what each one costs.

Run: .venv/bin/python bench/allocator.py [--rounds 5] [--messages 300] [--large-mib 64] [--levers]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from intake.memory_wiping import WIPING_ENVIRONMENT, collect_request_garbage, freeze_startup_objects  # noqa: E402

TARGET = 0.85
_CACHE = "GLIBC_TUNABLES"
# Each step adds to the one before; the last is what a worker runs with.
STEPS: dict[str, tuple[dict[str, str], bool]] = {
    "not wiped": ({}, False),
    "PYTHONMALLOC + MALLOC_PERTURB_": ({name: value for name, value in WIPING_ENVIRONMENT.items() if name != _CACHE}, False),
    "+ per-thread cache off": (WIPING_ENVIRONMENT, False),
    "+ cycles collected (wiped)": (WIPING_ENVIRONMENT, True),
}
WIPED = "+ cycles collected (wiped)"


def workload(messages: int, large_mib: int, collect: bool) -> dict[str, float]:
    """Runs in the child: returns messages/s and MiB/s of the large upload."""
    from tests.fixtures_app import csrf_token, make_instance, post_upload, start_as_new_source, upload_body

    with tempfile.TemporaryDirectory() as tmp:
        instance = make_instance(Path(tmp), journalist_count=3)
        client = instance.app.test_client()
        start_as_new_source(client)
        token = csrf_token(client.get("/submit").text)
        if collect:
            freeze_startup_objects()
        started = time.perf_counter()
        for n in range(messages):
            body, content_type = upload_body(token, message=f"message {n}: short and to the point")
            assert post_upload(client, body, content_type).status_code in (302, 303)
            if collect:
                collect_request_garbage()
        small = messages / (time.perf_counter() - started)
        content = os.urandom(1 << 20) * large_mib
        body, content_type = upload_body(token, files=[("large.bin", content, "application/octet-stream")])
        del content
        started = time.perf_counter()
        assert post_upload(client, body, content_type).status_code in (302, 303)
        if collect:
            collect_request_garbage()
        large = large_mib / (time.perf_counter() - started)
    return {"messages_per_s": small, "mib_per_s": large}


def run_child(step: str, messages: int, large_mib: int) -> dict[str, float]:
    settings, collect = STEPS[step]
    env = {name: value for name, value in os.environ.items() if name not in WIPING_ENVIRONMENT}
    env.update(settings)
    result = subprocess.run([sys.executable, __file__, "--child", str(messages), str(large_mib), str(int(collect))],
                            env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}..{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--levers", action="store_true", help="every step of the settings, each against not wiped")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        messages, large_mib, collect = args.child
        print(json.dumps(workload(messages, large_mib, bool(collect))))
        return

    steps = list(STEPS) if args.levers else [WIPED, "not wiped"]
    results: dict[str, list[dict[str, float]]] = {step: [] for step in steps}
    for round_number in range(args.rounds):
        for step in steps if round_number % 2 == 0 else steps[::-1]:
            results[step].append(run_child(step, args.messages, args.large_mib))
    print(f"allocator: {args.rounds} paired rounds, {args.messages} messages + one {args.large_mib} MiB upload each")
    for key, label in (("messages_per_s", "small messages/s"), ("mib_per_s", "large upload MiB/s")):
        plain = [r[key] for r in results["not wiped"]]
        print(f"  {label:20} not wiped {summary(plain)}")
        for step in (step for step in steps if step != "not wiped"):
            values = [r[key] for r in results[step]]
            ratios = [value / base for value, base in zip(values, plain)]
            target = ""
            if step == WIPED:  # the target is for what a worker runs with
                target = f"   target >= {TARGET}x" + ("" if statistics.median(ratios) >= TARGET else "   MISSED")
            print(f"  {'':20} {step} {summary(values)}   ratio {summary(ratios)}x{target}")


if __name__ == "__main__":
    main()
