"""A progress bar with users/s and ETA on a terminal; periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tokenmigration.cli.output import duration
from tokenmigration.local_driver import RunSummary


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, quiet: bool = False) -> None:
        self.stream = stream
        self.width = width
        self.quiet = quiet
        self.interactive = stream.isatty()
        self._last_line = 0.0
        self._drawn = False

    def __call__(self, summary: RunSummary) -> None:
        if self.quiet:
            return
        if summary.phase == "indexing sessions":
            self._emit(f"{summary.kind}: indexing Express sessions, {summary.keys_seen:,} keys read", final=False)
            return
        total = summary.total_users or 0
        done = summary.processed_users
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        failures = f"  failed {summary.failed_users:,}" if summary.failed_users else ""
        line = (f"{summary.kind} [{bar}] {fraction * 100:5.1f}%  {done:,}/{total:,} users  "
                f"{summary.rate:,.0f} users/s  ETA {duration(summary.eta_seconds)}{failures}")
        self._emit(line, final=bool(total) and done >= total)

    def _emit(self, line: str, final: bool) -> None:
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._drawn = True
            return
        now = time.monotonic()
        if final or self._last_line == 0.0 or now - self._last_line >= 5:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_line = now

    def note(self, line: str) -> None:
        """A line of its own above the bar (a retry, a stop), even when quiet: the operator must see those."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"tokenmigration: {line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
