"""`posture report --html FILE`: one self-contained HTML file for security leads.

No request leaves the page: styles are inline, the chart is inline SVG, there is no script, font or image
from anywhere, and a Content-Security-Policy forbids fetching anything even if a device string slipped
through. One autoescaping Jinja2 environment renders every template (see `environment`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from reports.model import CATEGORIES, DECOMMISSION_LISTED, HOSTS_LISTED, Report, build_report, clean
from rules.engine import Settings
from scanner.safefs import write_atomic
from scanner.store import Store

CATEGORY_COLOURS = {"servers": "#1d4f91", "network": "#2e7d32", "end-user": "#8e6c00", "ot-iot": "#a03030",
                    "unknown": "#5f5f5f"}  # fmt: skip


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clean"] = clean
    return env


def render_html(report: Report) -> str:
    peak = max((row["total"] for row in report.cliff), default=0)
    return environment().get_template("report.html.j2").render(
        r=report, categories=CATEGORIES, colours=CATEGORY_COLOURS, peak=max(peak, 1), hosts_listed=HOSTS_LISTED,
        decommission_listed=DECOMMISSION_LISTED,
    )


def write_html(store: Store, path: Path, day: date, settings: Settings, organisation: str | None = None,
               stage: Callable[[str], None] = lambda _: None) -> Report:  # fmt: skip
    """Build, render and write the report; `stage` is told each step (a large estate takes a while)."""
    stage("reading the inventory and the last evaluation")
    report = build_report(store, day, settings, organisation)
    stage(f"rendering {len(report.assets):,} assets and {len(report.findings):,} open findings")
    text = render_html(report)
    stage(f"writing {len(text) / 2**20:,.1f} MiB")
    write_atomic(path, text.encode())  # whole or not at all; never through a link
    return report
