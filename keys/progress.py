"""A progress bar on stderr for long decryptions, standard library only."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from keys.i18n import _
from keys.told import N_

DECIMAL_MARK = N_(".")  # "," in Russian

SHOW_ABOVE = 16 << 20  # bundles smaller than this finish before a bar helps


class Progress:
    """Counts bytes towards ``total`` and redraws one line at most every 0.1 s."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None, width: int = 30):
        self.total = max(total, 1)
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = total >= SHOW_ABOVE and self._stream.isatty()
        self.enabled = enabled
        self._width = width
        self._last_draw = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled and time.monotonic() - self._last_draw >= 0.1:
            self._draw()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        done, total = (f"{amount / 2**20:.1f}".replace(".", _(DECIMAL_MARK)) for amount in (self.done, self.total))
        self._stream.write(f"\r[{bar}] {fraction:4.0%} " + _("{done}/{total} MiB").format(done=done, total=total))
        self._stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
