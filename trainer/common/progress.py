"""Progress with rate and ETA on stderr, for long writes and scoring runs.

On a terminal: one bar redrawn in place. Elsewhere (a pipe, a pod's log): a timestamped line
every few seconds, in the shape of the log lines (``14:22:16.167 synthetic train 5,903/8,192
(72%) 11,677 pairs/s ETA 0s``), since a redrawn bar turns into one line per redraw there.
"""

from __future__ import annotations

import sys
import time


def _stamp() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


class Progress:
    """Progress of ``total`` units of long work (quiet when total is small)."""

    def __init__(
        self, total: int, label: str, stream=None, min_total: int = 200, unit: str = "pairs"
    ):
        self.stream = stream or sys.stderr
        self.total, self.label, self.unit = total, label, unit
        self.enabled = total >= min_total
        self.terminal = getattr(self.stream, "isatty", lambda: False)()
        self.every = 0.5 if self.terminal else 5.0  # seconds between updates
        self.start = time.monotonic()
        self.last = self.start if not self.terminal else 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.every and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        figures = f"{rate:,.0f} {self.unit}/s ETA {eta:,.0f}s"
        if self.terminal:
            bar = "#" * int(30 * done / max(self.total, 1))
            end = "\n" if done >= self.total else ""
            self.stream.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} {figures}{end}")
        else:
            share = 100 * done // max(self.total, 1)
            self.stream.write(
                f"{_stamp()} {self.label} {done:,}/{self.total:,} ({share}%) {figures}\n"
            )
        self.stream.flush()
