"""`posture fingerprints lint [DIR]`: check a fingerprint database (the shipped one, or a folder of your own)
and show every problem with its file:line. Registered through the `posture.commands` entry point; also
runnable as `python -m rules.fingerprint_cli`."""

from __future__ import annotations

from pathlib import Path

import click

from rules import fingerprints


@click.group("fingerprints")
def fingerprints_group() -> None:
    """The fingerprint database that names devices from what they say."""


@fingerprints_group.command("lint")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def lint_command(directory: Path | None) -> None:
    """Lint every file and run every example under DIRECTORY (default: the shipped database).

    \b
    Examples:
      posture fingerprints lint
    """
    root = directory or fingerprints.ROOT
    if not root.is_dir():
        raise click.UsageError(f"no such folder: {root}")
    try:
        db = fingerprints.load(root)
    except fingerprints.FingerprintError as exc:
        for problem in exc.problems:
            click.echo(f"posture: {problem}", err=True)
        raise SystemExit(2) from None
    click.echo(f"{len(db.fingerprints)} fingerprints, every example gives its result")


if __name__ == "__main__":
    fingerprints_group(prog_name="posture fingerprints")
