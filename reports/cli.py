"""The reports stage's commands, added to `posture` through the `posture.commands` entry point."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rules.cli import parse_day
from scanner.config import ConfigError, register_table
from scanner.errors import PostureError
from scanner.model import write_csv
from scanner.safefs import write_atomic

MAX_ORGANISATION = 120


def _check_organisation_table(name: str, table: dict[str, Any]) -> None:
    """A table whose one key is `organisation`: a name of 1 to MAX_ORGANISATION characters, or absent."""
    unknown = set(table) - {"organisation"}
    if unknown:
        raise ConfigError(f"unknown key in [{name}]: {sorted(unknown)[0][:40]!r} (known: organisation)",
                          sorted(unknown)[0])  # fmt: skip
    value = table.get("organisation")
    if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_ORGANISATION):
        raise ConfigError(f'[{name}] organisation must be a name of 1 to {MAX_ORGANISATION} characters, e.g. '
                          'organisation = "Example Borough Council"', "organisation")  # fmt: skip


def check_report_table(table: dict[str, Any]) -> None:
    """The config's [report]: `organisation`, the name the report's header and the procurement documents'
    author carry (none by default: a report names its organisation only when told to)."""
    _check_organisation_table("report", table)


def check_share_table(table: dict[str, Any]) -> None:
    """The config's [share]: `organisation`, the name a sector-sharing summary states (none by default: a
    summary is anonymous unless the council chooses to be named; [report]'s name is never used for it)."""
    _check_organisation_table("share", table)


def organisation(ctx: click.Context, table: str = "report") -> str | None:
    """`[report] organisation` (or another table's) from the config file (checked when it was loaded), or None."""
    from reports.stage import organisation_from
    from scanner.command import command_config

    return organisation_from(command_config(ctx), table)


register_table("report", check_report_table)
register_table("share", check_share_table)  # here, not in reports/share.py: `config check` loads this module

if TYPE_CHECKING:
    from reports.plans import Plan

on_option = click.option("--on", "on_day", metavar="YYYY-MM-DD",
                         help="Judge lifecycles, SLAs and exceptions as of this day (default: today).")  # fmt: skip


@click.command("report")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the HTML report to this file (one self-contained file: no network, no script).")
@on_option
@click.pass_context
def report(ctx: click.Context, html_path: Path, on_day: str | None) -> None:
    """Write the report for security leads: score, end-of-life cliff, top risks, inventory, findings.

    Built from the inventory and the last `posture evaluate`; run that first. Opens offline in any
    browser, prints cleanly, and can be attached to an e-mail.

    \b
    Examples:
      posture report --html report.html
      posture report --html /srv/reports/posture.html --on 2027-04-01
    """
    from reports.stage import write_report
    from scanner.command import command_config, open_store, progress_for

    day = parse_day(on_day)
    if not html_path.parent.is_dir():
        raise PostureError(f"no such folder: {html_path.parent}", "give a path in an existing folder")
    progress = progress_for(ctx, "report", "")
    with open_store(ctx, readonly=True) as store:
        try:
            result = write_report(store, html_path, command_config(ctx), day, progress.stage)
        finally:
            progress.finish()
    click.echo(f"report written: {html_path} ({len(result.assets)} assets, {len(result.findings)} open findings, "
               f"{len(result.accepted)} accepted)")  # fmt: skip
    from rules.cli import score_lines

    for line in score_lines(result.judgement.as_dict()):
        click.echo(line)


def md(value: Any, limit: int = 200) -> str:
    """A value fit for a Markdown table cell: printable, bounded, every Markdown/HTML character escaped."""
    from reports.model import clean
    from scanner.model import md_escape

    return md_escape(clean(value, limit))


def _rows_out(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt == "csv":
        write_csv(sys.stdout, columns, ([row.get(c) for c in columns] for row in rows))
        return
    from reports.documents import markdown_table

    cells = [[md("; ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v))
              for v in (row.get(c) for c in columns)] for row in rows]  # fmt: skip
    click.echo("\n".join(markdown_table(columns, cells)))


@click.group("plan")
def plan() -> None:
    """Plans from the open findings (after `posture evaluate`).

    \b
      posture plan remediation                 # the actions, worst first, with hours and target dates
      posture plan investigate --format csv    # new or unregistered assets, coverage gaps: to look into
      posture plan decommission --format json  # retirement candidates and the steps
      posture plan procurement --costs costs.toml --format docx --out legacy.docx
    """


# Columns of the actions (and of the list to investigate) in CSV and Markdown; JSON has every field.
ACTION_COLUMNS = ["action", "severity", "assets", "owners", "target_date", "effort_hours", "rule_id", "reasons",
                  "also_removes"]  # fmt: skip
CSV_EXTRA = ["known_exploited", "hosts"]
INVESTIGATE_COLUMNS = ["action", "severity", "assets", "hosts", "owners", "target_date", "effort_hours", "rule_id",
                       "reasons"]  # fmt: skip


def _plan(ctx: click.Context, on_day: str | None) -> tuple[date, Plan]:
    from reports.plans import plan_inputs, remediation_plan

    day = parse_day(on_day)
    with _open(ctx) as (store, settings):
        return day, remediation_plan(*plan_inputs(store, day), settings)


def _table_rows(rows: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Rows for CSV and Markdown: the CVE ids as text, a line per product; lists as one cell, items apart; a
    Markdown cell names the first hosts and counts the rest (the JSON and the CSV have them all)."""
    from reports.plans import HOSTS_SHOWN, kev_lines

    out = []
    for row in rows:
        hosts = row["hosts"]
        if fmt == "md" and len(hosts) > HOSTS_SHOWN:
            hosts = [*hosts[:HOSTS_SHOWN], f"and {len(hosts) - HOSTS_SHOWN} more"]
        row = {**row, "hosts": hosts, "known_exploited": kev_lines(row)}
        # a CSV cell holds a list with its items apart ("Revenues team; no owner"), as Markdown shows it
        out.append({k: "; ".join(map(str, v)) if fmt == "csv" and isinstance(v, list) else v for k, v in row.items()})
    return out


@plan.command("remediation")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@on_option
@click.pass_context
def plan_remediation(ctx: click.Context, fmt: str, on_day: str | None) -> None:
    """Actions a team can execute, worst first: what, why, how many assets, owners, target date, effort.

    One action per fix and set of assets: a machine past end of life is in one "Upgrade or replace" action
    whatever rules flagged it (known exploited, no owner, no upgrade path, past its SLA are its reasons),
    with the software on it ("also removes"); an asset is never counted twice for the same fix. Actions
    about products with known exploited vulnerabilities list their CVE ids (CISA KEV). New assets and
    coverage gaps are not remediation: see `posture plan investigate`.

    Target dates follow the SLA per severity (config [rules] sla_days) from when the oldest finding of
    the action opened. Effort is a planning estimate in hours per asset: an OS upgrade or replacement 8,
    a software upgrade 2, checking the fixes of known exploited vulnerabilities 2, a service's
    configuration 0.5, another change to a host 1, a TLS certificate 1 (per certificate).

    \b
    Examples:
      posture plan remediation
      posture plan remediation --format csv > actions.csv
    """
    from reports.plans import kev_lines

    day, plan_ = _plan(ctx, on_day)
    actions = [a.as_dict() for a in plan_.actions]
    if fmt == "json":
        _rows_out(actions, [], fmt)
        return
    if fmt == "csv":
        _rows_out(_table_rows(actions, fmt), ACTION_COLUMNS + CSV_EXTRA, fmt)
        return
    totals = plan_.totals()
    done, later = totals["actions"], totals["investigate"]
    click.echo(f"# Remediation plan, {day.isoformat()}\n")
    click.echo(f"{done['text']} estimated (each asset counted once per fix).\n")
    _rows_out(_table_rows(actions, fmt), ACTION_COLUMNS, fmt)
    exploited = [a for a in actions if a["kev"]]
    if exploited:
        click.echo("\n## Known exploited vulnerabilities (CISA KEV)\n")
        click.echo("CVE ids per product, those used in ransomware campaigns first and marked; check each fix "
                   "is installed, or that the product is gone.\n")  # fmt: skip
        for a in exploited:
            click.echo(f"- {md(a['action'], 300)}")
            for line in kev_lines(a):
                click.echo(f"  - {md(line, 4000)}")
    if later["count"]:
        click.echo(f"\nTo investigate (not remediation): {later['text']}: `posture plan investigate`.")


@plan.command("investigate")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@on_option
@click.pass_context
def plan_investigate(ctx: click.Context, fmt: str, on_day: str | None) -> None:
    """What to look into rather than fix: the detective findings (a new asset or service, an asset not in
    the register or not seen lately, an operating system or release not identified, support dates not
    published, a long uptime), one row per rule and product with its hosts, owners, a target date from
    the SLA and an estimate (1 hour per asset). The same fields as `plan remediation`.

    \b
    Examples:
      posture plan investigate
      posture plan investigate --format json
    """
    day, plan_ = _plan(ctx, on_day)
    rows = [a.as_dict() for a in plan_.investigate]
    if fmt == "md":
        totals = plan_.totals()["investigate"]
        click.echo(f"# To investigate, {day.isoformat()}\n")
        click.echo(f"{totals['text']} estimated.\n")
    _rows_out(rows if fmt == "json" else _table_rows(rows, fmt), INVESTIGATE_COLUMNS if fmt != "json" else [], fmt)


@plan.command("decommission")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@on_option
@click.pass_context
def plan_decommission(ctx: click.Context, fmt: str, on_day: str | None) -> None:
    """Candidates for retirement (end of life with no upgrade path, no owner, exploited and unpatchable):
    what each still serves, when it was last seen, and the steps, in sequence (riskiest first).

    \b
    Examples:
      posture plan decommission
      posture plan decommission --format csv
    """
    from reports.plans import DECOMMISSION_STEPS, decommission_plan, plan_inputs

    day = parse_day(on_day)
    with _open(ctx) as (store, _):
        rows = decommission_plan(*plan_inputs(store, day))
    if fmt == "md":
        click.echo(f"# Decommissioning plan, {day.isoformat()}\n")
        click.echo("Steps for each asset, in order: " + "; ".join(f"{n}. {s}" for n, s in
                                                                 enumerate(DECOMMISSION_STEPS, 1)) + ".\n")  # fmt: skip
    columns = ["sequence", "asset_id", "address", "name", "owner", "runs", "why", "still_serves", "last_seen"]
    _rows_out(rows, columns if fmt != "json" else [], fmt)


@plan.command("procurement")
@click.option("--format", "fmt", type=click.Choice(["md", "odt", "docx", "csv"]), default="md", show_default=True)
@click.option("--costs", "costs_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Cost table: TOML ([products.SLUG] upgrade/replace/retire/esu_per_year) or CSV "
                   "(product,option,unit_price). Without it, options are listed without prices.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (required for odt and docx; md and csv go to standard output otherwise).")
@click.option("--sector", "sector_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A pooled.json from `posture share aggregate`: each lot says when other councils have the "
                   "same release ending in the same financial year (a joint purchase may be possible).")
@on_option
@click.pass_context
def plan_procurement(ctx: click.Context, fmt: str, costs_path: Path | None, out_path: Path | None,
                     sector_path: Path | None, on_day: str | None) -> None:  # fmt: skip
    """The legacy-technology section of a procurement strategy: replacement lots by release and category,
    quantities, end-of-life dates, upgrade (only where an in-place path exists) or replace, costs, totals by
    UK financial year and the cost of ownership per option. ODT and DOCX are A4 landscape, en-GB, authored
    by the config's [report] organisation.

    \b
    Examples:
      posture plan procurement --costs costs.toml
      posture plan procurement --costs costs.toml --format docx --out legacy.docx
      posture plan procurement --costs costs.toml --sector pooled/pooled.json
    """
    from reports.documents import to_markdown, write_docx, write_odt
    from reports.pool import load_pooled
    from reports.procurement import load_costs, lots_rows, procurement_document, procurement_plan, sector_lines

    if fmt in ("odt", "docx") and out_path is None:
        raise PostureError(f"--format {fmt} writes a file", f"add --out strategy.{fmt}")
    if out_path is not None and not out_path.parent.is_dir():
        raise PostureError(f"no such folder: {out_path.parent}", "give a path in an existing folder")
    day = parse_day(on_day)
    costs = load_costs(costs_path)
    pooled = load_pooled(sector_path) if sector_path is not None else None
    with _open(ctx) as (store, settings):
        plan = procurement_plan(store, day, settings, costs, organisation(ctx))
    if sector_path is not None and pooled is not None:
        plan.sector, plan.sector_source = sector_lines(plan.lots, pooled, day), sector_path.name
    what = f"{len(plan.lots)} lots, {len(plan.components)} going with replaced machines"
    if fmt in ("odt", "docx"):
        assert out_path is not None
        (write_odt if fmt == "odt" else write_docx)(procurement_document(plan), out_path)
        click.echo(f"written: {out_path} ({what})")
        return
    if fmt == "csv":
        buffer = io.StringIO()
        header, rows = lots_rows(plan)
        write_csv(buffer, header, rows)
        text = buffer.getvalue()
    else:
        text = to_markdown(procurement_document(plan))
    if out_path is None:
        click.echo(text, nl=False)
    else:
        write_atomic(out_path, text.encode())
        click.echo(f"written: {out_path} ({what})")


EXPORT_COLUMNS = {
    "assets": ["id", "name", "addresses", "macs", "hostnames", "category", "os_label", "os_product",
               "os_cycle", "os_lifecycle_state", "os_eol_date", "owner", "business_service", "site", "criticality",
               "first_seen", "last_seen", "sources"],
    "findings": ["id", "rule_id", "title", "function", "severity", "status", "accepted", "accepted_until",
                 "asset_id", "address", "hostname", "owner", "product", "version", "cycle", "lifecycle_state",
                 "eol_date", "evidence", "first_seen", "last_seen"],
}  # fmt: skip


@click.command("export")
@click.argument("what", type=click.Choice(["assets", "findings"]))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.pass_context
def export(ctx: click.Context, what: str, fmt: str) -> None:
    """Assets or open findings for a CMDB or ticketing tool (columns listed in the README).

    \b
    Examples:
      posture export assets --format csv > assets.csv
      posture export findings --format json
    """
    from rules.facts import add_lifecycle
    from rules.findings import finding_views
    from scanner.views import asset_views

    with _open(ctx) as (store, _):
        if what == "findings":
            rows = finding_views(store, date.today())
        else:
            rows = asset_views(store)
            add_lifecycle(store, rows)
            for r in rows:
                os_ = r["os"] or {}
                r.update({f"os_{k}": os_.get(k) for k in ("label", "product", "cycle", "lifecycle_state", "eol_date")})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        _rows_out(rows, EXPORT_COLUMNS[what], "csv")


@contextmanager
def _open(ctx: click.Context) -> Iterator[tuple[Any, Any]]:
    from reports.stage import require_evaluation
    from rules.cli import rule_settings
    from scanner.command import open_store

    with open_store(ctx, readonly=True) as store:
        require_evaluation(store)
        yield store, rule_settings(ctx)
