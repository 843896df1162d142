"""Paired rounds for every bench: two contenders alternate (A B, B A, A B, ...) so that
the machine's load, which comes and goes, falls on both; each figure is printed as
median [min..max] of the rounds, with the ratio of each pair, and MISSED next to a
target that the median does not meet. Not a bench itself: the others import it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


def spread(values: list[float], digits: int = 2) -> str:
    """'median [min..max]'."""
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a fraction q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q) - 1)]


def verdict(value: float, target: float | None, better: str) -> str:
    """'' when ``value`` meets ``target`` (``better``: 'higher' or 'lower'), else '   MISSED'."""
    if target is None:
        return ""
    met = value >= target if better == "higher" else value <= target
    return "" if met else "   MISSED"


def seconds(fn: Callable[[], object], repeat: int = 1) -> float:
    """Median seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Paired:
    """One figure: contender A against contender B, the ratio read as B / A."""

    def __init__(self, title: str, a: str, b: str, *, unit: str = "s", scale: float = 1.0, digits: int = 2):
        self.title, self.labels, self.unit, self.scale, self.digits = title, (a, b), unit, scale, digits
        self.a: list[float] = []
        self.b: list[float] = []

    def add(self, a: float, b: float) -> None:
        """One round's figures (already in ``unit``, e.g. from a bench that measures itself)."""
        self.a.append(a)
        self.b.append(b)

    def run(self, a: Callable[[], object], b: Callable[[], object], *, rounds: int, repeat: int = 1) -> None:
        """Time ``a`` and ``b`` alternately, ``rounds`` times each (the order flips every round)."""
        for number in range(rounds):
            if number % 2 == 0:
                first = seconds(a, repeat)
                second = seconds(b, repeat)
                self.add(first * self.scale, second * self.scale)
            else:
                second = seconds(b, repeat)
                first = seconds(a, repeat)
                self.add(first * self.scale, second * self.scale)

    @property
    def ratios(self) -> list[float]:
        """B / A of each round; a baseline of 0 (a machine with no idle time, say) gives 1 for 0 and inf otherwise."""
        return [b / a if a else (1.0 if b == 0 else math.inf) for a, b in zip(self.a, self.b)]

    def report(self, *, target: float | None = None, better: str = "lower", target_text: str = "") -> float:
        """Print the figure; returns the median ratio B / A."""
        width = max(len(label) for label in self.labels)
        print(f"{self.title}: {len(self.a)} paired rounds, median [min..max]")
        for label, values in zip(self.labels, (self.a, self.b)):
            print(f"  {label:<{width}}  {spread(values, self.digits)} {self.unit}")
        ratio = statistics.median(self.ratios)
        text = f"   target {target_text}" if target_text else ""
        print(f"  {'ratio ' + self.labels[1] + ' / ' + self.labels[0]}: {spread(self.ratios)}x{text}{verdict(ratio, target, better)}")
        return ratio
