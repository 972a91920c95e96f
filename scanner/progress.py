"""Progress of long local work (imports, evaluation, the report) on stderr.

Shown on a terminal as one line rewritten in place; silent when stderr is not a terminal (cron, a pipe, a
log) unless asked for with `posture --progress`, since a scheduled job's log should hold outcomes, not
ticks; `--no-progress` silences a terminal too. Lines come at most every `every` items or `seconds`,
whichever is first, so a fast import does not spend its time writing and a slow one is never silent for long.
Scans have their own reporter (`ScanReporter`): a live bar on a terminal, and in a log a line per chunk
saved, since a chunk saved is an outcome worth a log line (it is what `--resume` starts from).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import click


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


class ScanReporter:
    """Progress on stderr: a live bar on a terminal, one line per chunk in a log or pipe.

    The ETA is this run's average pace applied to what is left: chunks finish in bursts, which makes a
    recent-speed estimate (rich's own) swing wildly.
    """

    def __init__(self, noun: str = "addresses") -> None:
        self.tty = sys.stderr.isatty()
        self.noun = noun  # addresses (nmap), devices (SNMP: saved in batches), objects (a directory)
        self.devices = noun == "devices"
        self._said = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._started = time.monotonic()
        self._first = 0
        self._total = 0

    def _eta(self, done: int) -> str:
        if done <= self._first:
            return "-:--:--"
        seconds = (time.monotonic() - self._started) * (self._total - done) / (done - self._first)
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"

    def start(self, total_hosts: int, total_chunks: int, already_done: int) -> None:
        self._started, self._first, self._total = time.monotonic(), already_done, total_hosts
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("scanning" if self.noun != "objects" else "reading"), BarColumn(), MofNCompleteColumn(),
                TextColumn("hosts" if self.noun == "addresses" else self.noun),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("scan", total=total_hosts, completed=already_done, eta="-:--:--")
        elif self.devices:
            click.echo(f"posture: asking {total_hosts} devices over SNMP", err=True)
        elif self.noun == "objects":
            click.echo("posture: reading the directory", err=True)
        else:
            click.echo(f"posture: scanning {total_hosts} addresses in {total_chunks} chunk(s)", err=True)

    def update(self, hosts_done: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=hosts_done, eta=self._eta(hosts_done))

    def batch_saved(self, hosts_done: int, hosts_up: int) -> None:
        """After every batch: a directory has no address count to show, so say how many objects are in."""
        if self.noun == "objects" and time.monotonic() - self._said > 5:
            self._said = time.monotonic()
            click.echo(f"posture: {hosts_up:,} objects saved", err=True)

    def chunk_done(self, chunks_done: int, total_chunks: int, hosts_done: int, hosts_up: int) -> None:
        if self.noun == "objects":
            return
        if self._progress is None and self.devices:
            click.echo(
                f"posture: {hosts_done} of {self._total} devices saved, {hosts_up} answered, "
                f"ETA {self._eta(hosts_done)}",
                err=True,
            )
        elif self._progress is None:
            click.echo(
                f"posture: chunk {chunks_done}/{total_chunks} saved: {hosts_done} of {self._total} addresses done, "
                f"{hosts_up} up, ETA {self._eta(hosts_done)}",
                err=True,
            )

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
