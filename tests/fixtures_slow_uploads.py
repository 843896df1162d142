"""Many slow uploads at once, as over Tor, and the memory they hold in a server's workers.

Used by tests/test_memory_in_flight.py and bench/memory.py. One thread drives every
upload (non-blocking sockets): each sends its request head, then its body in pieces
at a steady rate, and reads its answer at the end.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

# Every answer is due this long after the last upload's last byte (they come in under a second here).
ANSWER_SECONDS = 30


def workers_rss_mib(pids: list[int]) -> float:
    """Resident memory of these processes together, MiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


@dataclass
class SlowUpload:
    head: bytes  # request line and headers
    body: bytes
    content: bytes = b""  # the file in the body, to compare with what was stored
    sock: socket.socket | None = None
    sent: int = 0
    answer: bytes = b""  # empty if none came
    timed_out: bool = False  # none came in time (else: the server closed the connection)


@dataclass
class SlowUploads:
    """Sends every upload's body `piece` bytes at a time, all of them every `every` seconds."""

    port: int
    uploads: list[SlowUpload]
    piece: int
    every: float
    rss_samples: list[float] = field(default_factory=list)
    stuck_threads: dict[int, list[str]] = field(default_factory=dict)

    def run(self, pids: list[int], sample_at: float) -> None:
        """Send everything; sample the workers' RSS when `sample_at` of the bodies is sent (0..1)."""
        for upload in self.uploads:
            upload.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            upload.sock.sendall(upload.head)
        longest = max(len(upload.body) for upload in self.uploads)
        sampled = False
        for offset in range(0, longest, self.piece):
            started = time.monotonic()
            for upload in self.uploads:
                chunk = upload.body[offset : offset + self.piece]
                if chunk:
                    upload.sock.sendall(chunk)
                    upload.sent += len(chunk)
            if not sampled and offset >= sample_at * longest:
                self.rss_samples.append(workers_rss_mib(pids))
                sampled = True
            time.sleep(max(0.0, self.every - (time.monotonic() - started)))
        deadline = time.monotonic() + ANSWER_SECONDS
        for upload in self.uploads:
            upload.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                upload.answer = upload.sock.recv(200)  # empty: the server closed without an answer
            except TimeoutError:  # left empty too: the caller's assertion says which and how many
                upload.timed_out = True
                self.stuck_threads = self.stuck_threads or threads_of(pids)
            upload.sock.close()

    def unanswered(self) -> str:
        """Which uploads got no answer, why, and what the workers' threads were doing then."""
        waited = [n for n, upload in enumerate(self.uploads) if upload.timed_out]
        closed = [n for n, upload in enumerate(self.uploads) if not upload.answer and not upload.timed_out]
        return (f"of {len(self.uploads)} uploads, {len(waited)} unanswered {ANSWER_SECONDS} s after the last byte"
                f" (numbers {waited[:20]}), {len(closed)} closed without an answer (numbers {closed[:20]});"
                f" the workers' threads then: {self.stuck_threads}")


def threads_of(pids: list[int]) -> dict[int, list[str]]:
    """Each process's threads: name, scheduler state and the kernel function it sleeps in."""
    threads: dict[int, list[str]] = {}
    for pid in pids:
        threads[pid] = []
        try:
            tasks = sorted(Path(f"/proc/{pid}/task").iterdir())
        except OSError:  # the process is gone (a worker that died, say)
            continue
        for task in tasks:
            try:
                name = (task / "comm").read_text().strip()
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                wchan = (task / "wchan").read_text().strip()
            except OSError:  # the thread ended meanwhile
                continue
            threads[pid].append(f"{name} {state} {wchan}")
    return threads


def random_content(size: int) -> bytes:
    return os.urandom(size)
