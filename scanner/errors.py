"""Exit codes and the one error type the CLI turns into a single clear line.

Exit codes are defined here once, for every stage: scripts and schedulers depend on them.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FINDINGS = 1  # findings at or above --fail-on
    USAGE = 2  # bad input, bad configuration, missing tool
    NOTHING_SCANNED = 3  # the scan ran but found no live host, or nothing could be imported
    INTERRUPTED = 130  # stopped by a signal; what finished is kept, the scan is marked interrupted


class PostureError(Exception):
    """An error the user can act on: `message` says what is wrong, `hint` the next step."""

    def __init__(self, message: str, hint: str | None = None, exit_code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NothingScanned(PostureError):
    """The work ran and is recorded, but there is nothing to show for it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, ExitCode.NOTHING_SCANNED)


class Interrupted(PostureError):
    """A signal stopped the work; finished chunks are committed and the scan row says so."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, ExitCode.INTERRUPTED)
