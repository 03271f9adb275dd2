"""A one-line progress bar with rate and ETA on stderr, for long writes and scoring runs."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on stderr for long work (quiet when total is small)."""

    def __init__(
        self, total: int, label: str, stream=sys.stderr, min_total: int = 200, unit: str = "pairs"
    ):
        self.total, self.label, self.stream, self.unit = total, label, stream, unit
        self.enabled = total >= min_total
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        frac = done / max(self.total, 1)
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * frac)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {done}/{self.total} {rate:,.0f} {self.unit}/s "
            f"ETA {eta:,.0f}s"
        )
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
