"""The reports stage's commands, added to `posture` through the `posture.commands` entry point."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from scanner.errors import PostureError


@click.command("report")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the HTML report to this file (one self-contained file: no network, no script).")
@click.option("--on", "on_day", metavar="YYYY-MM-DD", help="Judge lifecycles and exceptions as of this day.")
@click.pass_context
def report(ctx: click.Context, html_path: Path, on_day: str | None) -> None:
    """Write the report for security leads: score, end-of-life cliff, top risks, inventory, findings.

    Built from the inventory and the last `posture evaluate`; run that first. Opens offline in any
    browser, prints cleanly, and can be attached to an e-mail.
    """
    from reports.html import write_html
    from scanner.cli import open_store

    try:
        day = date.fromisoformat(on_day) if on_day else date.today()
    except ValueError as exc:
        raise PostureError(f"invalid date {on_day!r}", "use YYYY-MM-DD") from exc
    if not html_path.parent.is_dir():
        raise PostureError(f"no such folder: {html_path.parent}", "give a path in an existing folder")
    with open_store(ctx, readonly=True) as store:
        result = write_html(store, html_path, day)
    click.echo(f"report written: {html_path} ({len(result.assets)} assets, {len(result.findings)} open findings, "
               f"{len(result.accepted)} accepted; score {result.score}/100)")  # fmt: skip
