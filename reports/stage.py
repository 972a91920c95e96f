"""The reports stage as a library: the HTML report of an evaluated inventory, with the settings and the
organisation name a config file gives. `posture report` and a scheduled job (`posture.jobs`) call it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from scanner.errors import PostureError
from scanner.store import Store


def organisation_from(config: dict[str, Any], table: str = "report") -> str | None:
    """`[report] organisation` (or another table's) of a loaded, checked config, or None."""
    name = config.get(table, {}).get("organisation")
    return name.strip() if isinstance(name, str) else None


def require_evaluation(store: Store) -> None:
    """Every report reads the last evaluation: none is a clear error, not an empty "all green" page."""
    if store.conn.execute("SELECT 1 FROM evaluations LIMIT 1").fetchone() is None:
        raise PostureError("no evaluation yet", "run `posture evaluate` first")


def write_report(store: Store, path: Path, config: dict[str, Any], day: date,
                 stage: Callable[[str], None] = lambda _: None) -> Any:  # fmt: skip
    """Write the HTML report to `path` (its folder must exist); the `reports.html.Report` it holds."""
    from reports.html import write_html
    from rules.stage import settings_from

    if not path.parent.is_dir():
        raise PostureError(f"no such folder: {path.parent}", "give a path in an existing folder")
    require_evaluation(store)
    return write_html(store, path, day, settings_from(config), organisation_from(config), stage)
