"""Progress of long local work (imports, evaluation, the report) on stderr.

Shown on a terminal as one line rewritten in place; silent when stderr is not a terminal (cron, a pipe, a
log) unless asked for with `posture --progress`, since a scheduled job's log should hold outcomes, not
ticks; `--no-progress` silences a terminal too. Lines come at most every `every` items or `seconds`,
whichever is first, so a fast import does not spend its time writing and a slow one is never silent for long.
Scans have their own reporter (scanner/cli.py `_Reporter`): a chunk saved is an outcome worth a log line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts items done and says so on stderr; `enabled=False` makes every call a no-op."""

    def __init__(self, what: str, noun: str, total: int | None = None, *, enabled: bool,
                 every: int = 1000, seconds: float = 2.0, stream: TextIO | None = None) -> None:  # fmt: skip
        self.what, self.noun, self.total, self.enabled = what, noun, total, enabled
        self.every, self.seconds = every, seconds
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self._shown_at = time.monotonic()
        self._shown_done = 0
        self._started = self._shown_at
        self._width = 0  # of the line last written in place, to blank what a shorter one leaves

    def update(self, done: int) -> None:
        """`done` items so far; writes a line when `every` more are done or `seconds` have passed."""
        self.done = done
        if not self.enabled or done == self._shown_done:
            return
        now = time.monotonic()
        if done - self._shown_done >= self.every or now - self._shown_at >= self.seconds:
            self._shown_at, self._shown_done = now, done
            self._write(self._line(now))

    def stage(self, text: str) -> None:
        """A named step of work that has no count (the report: reading, building, writing)."""
        if self.enabled:
            self._write(f"posture: {self.what}: {text}")

    def finish(self) -> None:
        """Ends a line written in place, so the command's own output starts on a clean line."""
        if self.enabled and self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _line(self, now: float) -> str:
        total = f" of {self.total:,}" if self.total else ""
        rate = self.done / max(now - self._started, 1e-6)
        eta = ""
        if self.total and self.done < self.total and rate > 0:
            left = int((self.total - self.done) / rate)
            eta = f", about {left // 60}:{left % 60:02d} left"
        return f"posture: {self.what}: {self.done:,}{total} {self.noun}{eta}"

    def _write(self, line: str) -> None:
        if self.tty:
            line = line[:200]
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def wanted(choice: bool | None) -> bool:
    """`posture --progress` / `--no-progress` as given, else on only when stderr is a terminal."""
    return sys.stderr.isatty() if choice is None else choice
