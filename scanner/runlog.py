"""The run log: what unattended work (scheduled jobs, bundle imports, agent runs) did, for later reading.

Each line goes to stderr (journald keeps a service's stderr; under systemd, detected by
`JOURNAL_STREAM`, lines carry an sd-daemon `<N>` priority prefix so `journalctl -p warning` works) and
to a log file with a time stamp: `$POSTURE_LOG`, else `log_file` in the config's `[log]` table, else
`$XDG_STATE_HOME/posture/posture.log` (/var/log/posture/posture.log as a service), rotated at 5 MiB
with three old files kept.

Only messages made for the log are written: no argument list, environment or exception traceback, so
no secret (an SNMP community, a key) can reach a line. Device strings are made printable and bounded.
"""

from __future__ import annotations

import logging
import os
import sys
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path

from scanner.model import printable
from scanner.paths import log_dir
from scanner.safefs import make_dirs, open_append

LOG = logging.getLogger("posture.run")
PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}
_FILE_HANDLER: list[RotatingFileHandler] = []


class _LogFile(RotatingFileHandler):
    """The rotating log, each file created with posture's mode (0600, or 0640 shared with the [files]
    group) and never opened through a symbolic link planted at its name."""

    def _open(self) -> TextIOWrapper:
        return open_append(Path(self.baseFilename), encoding=self.encoding)


def log_path(configured: str | None = None) -> Path:
    env = os.environ.get("POSTURE_LOG")
    if env:
        return Path(env)
    return Path(configured).expanduser() if configured else log_dir() / "posture.log"


def open_log(configured: str | None = None) -> Path | None:
    """Start writing the log file. Once open, the same file stays open; a command that names another file
    (a long-lived process running commands for several configs, or tests run in one process) closes the
    old one first, so a line never lands in another run's log. A log that cannot be opened is said on
    stderr and the work goes on: losing the log must not lose the scan."""
    path = log_path(configured)
    if _FILE_HANDLER and _FILE_HANDLER[0].baseFilename == os.path.abspath(path):  # noqa: PTH100 (logging's own form)
        return path
    close_log()
    try:
        make_dirs(path.parent)
        handler = _LogFile(path, maxBytes=5 * 2**20, backupCount=3, encoding="utf-8")
    except OSError as exc:
        print(f"posture: warning: cannot write the log {path}: {exc.strerror or exc}", file=sys.stderr)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    _FILE_HANDLER.append(handler)
    return path


def close_log() -> None:
    """Stop writing the log file (lines still go to stderr)."""
    while _FILE_HANDLER:
        handler = _FILE_HANDLER.pop()
        LOG.removeHandler(handler)
        handler.close()


def say(message: str, level: int = logging.INFO) -> None:
    """One line to stderr (journald-ready) and, when open, to the log file."""
    line = printable(message, 2000)
    prefix = f"<{PRIORITY.get(level, 6)}>" if os.environ.get("JOURNAL_STREAM") else ""
    print(f"{prefix}posture: {line}", file=sys.stderr, flush=True)
    if _FILE_HANDLER:
        LOG.log(level, line)
