"""What every stage's commands share: the inventory --db names (refused where there is none), whole-number
options, the exit code kept through a closed pipe, progress as --progress wants it, the run log, tables and
the asset table.

The scanner's, the rules' and the reports' command modules all use these; none of them imports another
stage's command module to get them (scanner/cli.py is the root command and the scanner's own commands).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from scanner.config import load_config
from scanner.db import Target, is_url
from scanner.errors import PostureError
from scanner.model import INT64, printable
from scanner.paths import default_db_path


class Whole(click.IntRange):
    """A whole-number option or argument within [low, high] (at most SQLite's INTEGER), refused like every
    other bad input: one `posture: error:` line and exit 2, not a traceback or click's usage block."""

    name = "whole number"

    def __init__(self, low: int = 1, high: int = INT64[-1]) -> None:
        super().__init__(low, high)

    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        name = param.get_error_hint(ctx) if param is not None and ctx is not None else "value"
        if len(message) > 120:  # the value is quoted in it: keep its start and the reason
            message = f"{message[:40]}…{message[-70:]}"
        raise PostureError(f"invalid {name}: {message}", "see --help")


EXIT_IF_UNREAD = "posture.exit_if_unread"


def exit_if_unread(ctx: click.Context, code: int) -> None:
    """The exit code a command has decided before printing (evaluate's --fail-on gate): kept when the reader
    leaves early, so `posture evaluate --fail-on high | head` cannot turn open findings into a pass."""
    ctx.meta[EXIT_IF_UNREAD] = code


class DbTarget(click.ParamType[Target, Any]):
    """--db: a file (a Path), or a postgresql:// URL kept as it was typed (a Path would fold its `//`)."""

    name = "path or postgresql:// URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Target:
        if isinstance(value, Path) or is_url(value):
            return value  # type: ignore[no-any-return]
        return Path(value)


def db_path(ctx: click.Context) -> Target:
    """The inventory: --db, else POSTURE_DB, else the config's [store] url, else the XDG (or --system) default
    file."""
    given = ctx.find_root().params.get("db")
    if given:
        return given  # type: ignore[no-any-return]
    url = command_config(ctx).get("store", {}).get("url")
    return str(url) if url else default_db_path()


def open_store(ctx: click.Context, readonly: bool = False, create: bool = False) -> Any:
    """Open the inventory named by --db / POSTURE_DB / the XDG default (for this and later stages).

    Only the commands that fill an inventory (scan, snmp, import, demo, run) pass `create`; every other one
    refuses a path that does not exist, so a mistyped --db never becomes an empty inventory that a CI gate
    (`evaluate --fail-on high`) or a report reads as "nothing wrong".
    """
    from scanner.paths import data_dir
    from scanner.store import Store

    path = db_path(ctx)
    if is_url(path):
        return Store.open(path, readonly=readonly, create=create)
    path = Path(path)
    if not create and not path.exists():
        demo = data_dir() / "demo.db"
        if ctx.find_root().params.get("db"):  # --db or POSTURE_DB
            raise PostureError(f"no inventory at {path}", "give --db the file that `posture scan`, `posture import` "
                               f"or `posture demo` wrote; the demo's is {demo}")  # fmt: skip
        raise PostureError(f"no inventory at {path}, the default: nothing was scanned or imported into it",
                           f"run `posture scan` or `posture import` first, or give --db the file to read; the "
                           f"demo's is {demo}")  # fmt: skip
    return Store.open(path, readonly=readonly)


def progress_for(ctx: click.Context, what: str, noun: str, total: int | None = None) -> Any:
    """A `scanner.progress.Progress` as `posture --progress/--no-progress` (else: a terminal) wants it."""
    from scanner.progress import Progress, wanted

    return Progress(what, noun, total, enabled=wanted(ctx.find_root().obj.get("progress")))


def command_config(ctx: click.Context) -> dict[str, Any]:
    """The checked config this invocation names (`posture --config`, else the default file): read from disk
    each time, so a command that needs it in several places should ask once."""
    return load_config(ctx.find_root().obj.get("config_path"))


def open_run_log(ctx: click.Context, config: dict[str, Any] | None = None) -> None:
    """Start the run log (`scanner.runlog`) where the config's [log] file says, for unattended commands."""
    from scanner.runlog import open_log

    if config is None:
        config = command_config(ctx)
    open_log(config.get("log", {}).get("file"))


def table_console() -> Any:
    """A console for tables: the terminal's width, or $COLUMNS (default 160) in a pipe or log."""
    import os

    from rich.console import Console

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "") or 160)
    return Console(highlight=False, soft_wrap=False, width=width)


def _first_line(text: str, limit: int) -> str:
    """A device's multi-line banner (sysDescr) shown as its first line, cut short: tables stay readable."""
    line = (text.splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _support(os_: dict[str, Any]) -> str:
    """"end-of-life (eol 2014-04-08)", from the rules stage's fields (blank without them); "one of" several
    releases shows the range of their end dates, never the first as if it were the answer."""
    state = os_.get("lifecycle_state")
    if not state:
        return ""
    span = os_.get("eol_range")
    when = os_.get("eol_date") or (f"{span[0]} to {span[1]}" if span else None)
    return f"{state} (eol {when})" if when else state


def print_assets(assets: list[dict[str, Any]]) -> None:
    """The asset table of `posture assets`, a scan and the demo: a line per asset, device strings escaped."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_lines=False)
    for column in ("id", "address", "name", "os", "support", "services", "owner", "last seen"):
        # An address or a day folded over two lines is unreadable in 80 columns: those never wrap.
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "address", "last seen"))
    for a in assets:
        os_ = a["os"] or {}
        services = ", ".join(
            f"{s['port']}/{s['protocol']} {' '.join(x for x in (s['product'], s['version']) if x) or s['name'] or ''}"
            for s in a["services"][:8]
        ) + (f" (+{len(a['services']) - 8})" if len(a["services"]) > 8 else "")
        table.add_row(
            *(
                escape(printable(v))
                for v in (
                    a["id"],
                    ", ".join(a["addresses"][:2]),
                    a["name"] or "",
                    # The name people know once identified ("Microsoft Windows XP SP3"), else what it said.
                    os_.get("label") or _first_line(os_.get("name") or "unknown", 48),
                    _support(os_) or ("unknown" if "software" in a else ""),  # rules ran, found no OS
                    services or a.get("note") or "",  # a directory-only asset: "in directory, not seen..."
                    a["owner"] or "",
                    (a["last_seen"] or "")[:10],  # the day: the full time is in --format json/csv
                )
            )
        )
    table_console().print(table)
