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

Run: .venv/bin/python bench/allocator.py [--rounds 5] [--messages 300] [--large-mib 64]
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

from intake.memory_wiping import WIPING_ENVIRONMENT, collect_request_garbage, freeze_startup_objects, missing_wiping  # noqa: E402

TARGET = 0.85


def workload(messages: int, large_mib: int) -> dict[str, float]:
    """Runs in the child: returns messages/s and MiB/s of the large upload."""
    from tests.fixtures_app import csrf_token, make_instance, post_upload, start_as_new_source, upload_body

    with tempfile.TemporaryDirectory() as tmp:
        instance = make_instance(Path(tmp), journalist_count=3)
        client = instance.app.test_client()
        start_as_new_source(client)
        token = csrf_token(client.get("/submit").text)
        wiped = not missing_wiping(os.environ)
        if wiped:
            freeze_startup_objects()
        started = time.perf_counter()
        for n in range(messages):
            body, content_type = upload_body(token, message=f"message {n}: short and to the point")
            assert post_upload(client, body, content_type).status_code in (302, 303)
            if wiped:
                collect_request_garbage()
        small = messages / (time.perf_counter() - started)
        content = os.urandom(1 << 20) * large_mib
        body, content_type = upload_body(token, files=[("large.bin", content, "application/octet-stream")])
        del content
        started = time.perf_counter()
        assert post_upload(client, body, content_type).status_code in (302, 303)
        if wiped:
            collect_request_garbage()
        large = large_mib / (time.perf_counter() - started)
    return {"messages_per_s": small, "mib_per_s": large}


def run_child(wiped: bool, messages: int, large_mib: int) -> dict[str, float]:
    env = {name: value for name, value in os.environ.items() if name not in WIPING_ENVIRONMENT}
    if wiped:
        env.update(WIPING_ENVIRONMENT)
    result = subprocess.run([sys.executable, __file__, "--child", str(messages), str(large_mib)],
                            env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}..{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(workload(*args.child)))
        return

    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for round_number in range(args.rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        for wiped in order:
            results[wiped].append(run_child(wiped, args.messages, args.large_mib))
    print(f"allocator: {args.rounds} paired rounds, {args.messages} messages + one {args.large_mib} MiB upload each")
    for key, label in (("messages_per_s", "small messages/s"), ("mib_per_s", "large upload MiB/s")):
        wiped = [r[key] for r in results[True]]
        plain = [r[key] for r in results[False]]
        ratios = [w / p for w, p in zip(wiped, plain)]
        verdict = "" if statistics.median(ratios) >= TARGET else "   MISSED"
        print(f"  {label:20} wiped {summary(wiped)}   not wiped {summary(plain)}")
        print(f"  {'':20} ratio {summary(ratios)}x   target >= {TARGET}x{verdict}")


if __name__ == "__main__":
    main()
