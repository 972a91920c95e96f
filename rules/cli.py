"""The rules stage's commands, added to the root `posture` group through the `posture.commands` entry point."""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import click

from rules.catalogue import ENDOFLIFE, LIFECYCLE, Catalogue, Cycle
from scanner.config import ConfigError, register_table
from scanner.errors import ExitCode, PostureError
from scanner.migrate import register_stage


@click.group()
def catalogue() -> None:
    """The lifecycle catalogue: release cycles and the dates their support ends (endoflife.date, MIT)."""


FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)  # days posture can judge, plan and report on


def parse_day(value: str | None) -> date:
    """A YYYY-MM-DD option (today when not given) within FIRST_DAY..LAST_DAY, or a clear error: reports
    count years ahead of the day and SLAs days back from it, which year 1 or 9999 would overflow."""
    try:
        day = date.fromisoformat(value) if value else date.today()
    except ValueError as exc:
        raise PostureError(f"invalid date {str(value)[:40]!r}", "use YYYY-MM-DD") from exc
    if not FIRST_DAY <= day <= LAST_DAY:
        raise PostureError(f"the day {day.isoformat()} is out of range",
                           f"give a day from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}")  # fmt: skip
    return day


@catalogue.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json: {sources: {data set: date}, products: [{slug, title, category, cycles, source}]}.")
def catalogue_list(fmt: str) -> None:
    """List the products in the catalogue, with the data's date.

    \b
    Examples:
      posture catalogue list
      posture catalogue list | grep -i cisco
      posture catalogue list --format json | jq '.products | length'
    """
    from rules.catalogue import default_catalogue

    cat = default_catalogue()
    if fmt == "json":
        products = [{"slug": slug, "title": p.title, "category": p.category, "cycles": len(p.cycles),
                     "source": p.source} for slug, p in sorted(cat.products.items())]  # fmt: skip
        click.echo(json.dumps({"sources": cat.sources, "products": products}, indent=2))
        return
    for slug, product in sorted(cat.products.items()):
        click.echo(f"{slug}\t{product.title}\t{len(product.cycles)} cycles\t{product.source}")
    click.echo(f"data: {_sources(cat)}", err=True)


def _sources(cat: Catalogue) -> str:
    """Each data set with its date: "endoflife.date as of 2026-08-22 (MIT licence); posture lifecycle ..."."""
    notes = {ENDOFLIFE: " (MIT licence)", LIFECYCLE: " (rules/data/lifecycle/SOURCES.md: a source per row)"}
    return "; ".join(f"{name} as of {day}{notes.get(name, '')}" for name, day in cat.sources.items())


@catalogue.command("show")
@click.argument("product")
@click.option("--on", "on_day", metavar="YYYY-MM-DD", help="Judge the states on this day (default: today).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def catalogue_show(product: str, on_day: str | None, fmt: str) -> None:
    """Show PRODUCT's cycles with their end dates and their state today.

    States: supported, security-only, extended (paid ESU/ELS/LTSS/ESM left), end-of-life, unknown.

    \b
    Examples:
      posture catalogue show windows-server
      posture catalogue show junos --on 2027-04-01
    """
    from rules.catalogue import default_catalogue

    cat = default_catalogue()
    found = cat.product(product)
    if found is None:
        close = [s for s in cat.products if product.lower() in s]
        raise PostureError(
            f"no product {product[:60]!r} in the catalogue",
            f"did you mean {', '.join(close[:5])}?" if close else "see `posture catalogue list`",
        )
    today = parse_day(on_day)
    rows: list[dict[str, Any]] = []
    for cycle in found.cycles:
        st = found.status(cycle, today)
        source = found.provenance_of(cycle)
        rows.append({
            "cycle": cycle.name, "label": cycle.label, "release": _text(cycle, "release"),
            "active_support_end": _text(cycle, "eoas"), "eol": _text(cycle, "eol"),
            "extended_end": _text(cycle, "eoes"), "end_of_sale": _text(cycle, "discontinued"),
            "last_date_of_support": _text(cycle, "ldos"), "model_prefixes": list(cycle.pid_prefixes),
            "latest": cycle.latest, "state": str(st.state), "days_to_eol": st.days_to_eol,
            "months_only": sorted(cycle.months), "source": source.as_dict() if source else None,
            "also": [p.as_dict() for p in cycle.also],
        })  # fmt: skip
    if fmt == "json":
        document = {"product": found.slug, "title": found.title, "labels": found.labels, "data": found.source,
                    "data_date": cat.sources.get(found.source, cat.data_date), "on": today.isoformat(),
                    "source": found.provenance.as_dict() if found.provenance else None, "cycles": rows}  # fmt: skip
        click.echo(json.dumps(document, indent=2))
        return
    columns = ", ".join(f"{k} = {v}" for k, v in found.labels.items())
    click.echo(textwrap.fill(f"{found.title} ({found.slug}); columns: {columns}", 80, subsequent_indent="  "))
    if found.provenance:
        click.echo(textwrap.fill(f"source: {_source_line(found.provenance.as_dict())}", 80, subsequent_indent="  "))
    click.echo(f"{'cycle':<26} {'state':<16} {'ends':<10} {'extended':<10} {'days':>6}")
    for r in rows:
        days = "" if r["days_to_eol"] is None else str(r["days_to_eol"])
        click.echo(f"{r['label'][:26]:<26} {r['state']:<16} {(r['eol'] or '-')[:10]:<10} "
                   f"{(r['extended_end'] or '-')[:10]:<10} {days:>6}")  # fmt: skip
        own = [r["source"]] if r["source"] and r["source"] != (found.provenance and found.provenance.as_dict()) else []
        for where in own + r["also"]:
            click.echo(textwrap.fill(f"source: {_source_line(where)}", 80, initial_indent="    ",
                                     subsequent_indent="      ", break_long_words=True))  # fmt: skip
    click.echo(textwrap.fill(f"states on {today.isoformat()}; data: {_sources(cat)}", 80))


def _source_line(where: dict[str, Any]) -> str:
    quote = f' "{where["quote"][:100]}"' if where.get("quote") else ""
    return f"{where['kind']}, {where['source']}{quote}"


def _text(cycle: Cycle, field: str) -> str | None:
    """A date as `catalogue show` gives it: the day, the month where only that is known, "passed"."""
    value = getattr(cycle, field)
    if value is True:
        return "passed"
    if value is False or value is None:
        return None
    return cycle.shown(field)


@catalogue.command("update")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--data-date", metavar="YYYY-MM-DD", help="When the export was taken (default: today); reports show it.")
def catalogue_update(file: Path, data_date: str | None) -> None:
    """Refresh or add products: an endoflife.date export (one product's JSON, or a list of them) or a
    sourced lifecycle table (the same format with `source`, `quote` and `sourceKind` on every row, see
    rules/data/lifecycle/README.md).

    Every field is checked first; a bad one is refused with its file, product, cycle and field, and nothing
    changes. Refreshed products are kept under ~/.local/share/posture/catalogue and laid over the bundled
    data.

    \b
    Examples:
      posture catalogue update products/windows.json --data-date 2026-12-01
      posture catalogue update my-tables/fortigate.json
    """
    from rules.catalogue import CatalogueError, update_catalogue

    if not file.is_file():
        raise PostureError(f"no such file: {file}", "give an endoflife.date product JSON file")
    day = parse_day(data_date).isoformat()
    try:
        slugs = update_catalogue(file, day)
    except CatalogueError as exc:
        raise PostureError(str(exc), "fix the file or export it again") from exc
    click.echo(f"catalogue updated: {', '.join(slugs)} (data as of {day})")


# ---- rules, evaluate, findings, accept ---------------------------------------------------------------

rules_option = click.option(
    "--rules",
    "rule_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Also load the *.toml rule packs in DIR (repeatable), beside the built-in ones.",
)


def check_rules_table(table: dict[str, Any]) -> None:
    """The config's [rules], checked whenever the config file is loaded (`scanner.config`), so `config check`
    and every command agree; one key at a time, so the error names the key's line."""
    dirs = table.get("dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) and d.strip() for d in dirs):
        raise ConfigError('[rules] dirs must be a list of folders, e.g. dirs = ["/etc/posture/rules"]', "dirs")
    _check_settings("rules", table)


def check_lifecycle_table(table: dict[str, Any]) -> None:
    """The config's [lifecycle] (which milestone counts as unsupported), checked like [rules]."""
    _check_settings("lifecycle", table)


def check_tls_table(table: dict[str, Any]) -> None:
    """The config's [tls] (how many days before expiry a certificate is flagged), checked like [rules]."""
    _check_settings("tls", table)


def _check_settings(name: str, table: dict[str, Any]) -> None:
    from rules.engine import RuleError, Settings

    for key, value in table.items():
        try:
            Settings.from_config({name: {key: value}})
        except RuleError as exc:
            raise ConfigError(str(exc).removeprefix("config: "), key) from None


register_table("rules", check_rules_table)


def _identity_migrations() -> list[Any]:
    """The rules stage's own tables (`posture migrate` makes them on PostgreSQL), loaded when asked for."""
    from rules.identities import MIGRATIONS

    return list(MIGRATIONS)


register_stage("rules", _identity_migrations)
register_table("lifecycle", check_lifecycle_table)
register_table("tls", check_tls_table)


def rule_settings(ctx: click.Context) -> Any:
    """The [rules] settings of the config file (horizon, SLAs, ...), or a clear error."""
    from rules.stage import settings_from
    from scanner.command import command_config

    return settings_from(command_config(ctx))


def _load(ctx: click.Context, rule_dirs: tuple[Path, ...], config: dict[str, Any] | None = None) -> Any:
    from rules.stage import rules_from
    from scanner.command import command_config

    return rules_from(command_config(ctx) if config is None else config, rule_dirs)


@click.group("rules")
def rules_group() -> None:
    """The protect / detect / respond rule packs (TOML data; see `posture rules show ID`)."""


@rules_group.command("list")
@rules_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def rules_list(ctx: click.Context, rule_dirs: tuple[Path, ...], fmt: str) -> None:
    """List every rule: id, function, severity, subject and title.

    \b
    Examples:
      posture rules list
      posture rules list --format json
    """
    rules = _load(ctx, rule_dirs)
    if fmt == "json":
        click.echo(json.dumps([r.describe() for r in rules], indent=2))
        return
    for r in rules:
        click.echo(f"{r.id:<34} {r.function:<8} {r.severity:<8} {r.subject:<8} {r.title}")
    click.echo(f"{len(rules)} rules", err=True)


@rules_group.command("show")
@click.argument("rule_id")
@rules_option
@click.pass_context
def rules_show(ctx: click.Context, rule_id: str, rule_dirs: tuple[Path, ...]) -> None:
    """Show one rule whole: its condition, rationale, remediation and framework references.

    \b
    Examples:
      posture rules show protect.eol-os
    """
    rules = _load(ctx, rule_dirs)
    rule = next((r for r in rules if r.id == rule_id), None)
    if rule is None:
        from difflib import get_close_matches

        close = get_close_matches(rule_id, [r.id for r in rules], n=3, cutoff=0.7)
        raise PostureError(f"no rule {rule_id[:64]!r}", f"did you mean {', '.join(close[:5])}?" if close else
                           "see `posture rules list`")  # fmt: skip
    d = rule.describe()
    click.echo(f"{d['id']}: {d['title']}")
    click.echo(f"  function {d['function']}, severity {d['severity']}, subject {d['subject']} ({d['source']})")
    any_of = f" and any of {json.dumps(d['when_any'])}" if d["when_any"] else ""
    click.echo(f"  when {json.dumps(d['when'])}{any_of}")
    for key in ("rationale", "remediation", "decommission"):
        if d[key]:
            click.echo(f"  {key}: {d[key]}")
    for key, values in d["references"].items():
        click.echo(f"  {key}: {', '.join(values)}")


@rules_group.command("lint")
@click.argument("dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def rules_lint(ctx: click.Context, dirs: tuple[Path, ...]) -> None:
    """Check rule packs (the built-in ones, and those in DIRS): syntax, fields, operators and the types of
    their values, patterns that could backtrack without end (rules/redos.py), unique ids; the TLS
    grading table (rules/data/tls_grading.toml) the same way, and the evidence phrases
    (rules/data/evidence.toml: known asset facts and placeholders).

    Exits 2 with FILE:LINE and the field at the first problem.

    \b
    Examples:
      posture rules lint
      posture rules lint /etc/posture/rules
    """
    rules = _load(ctx, dirs)
    from rules import evidence
    from rules.engine import ASSET_FIELDS
    from rules.tls import grading

    table = grading()
    problems = evidence.lint(evidence.table(), ASSET_FIELDS)
    if problems:
        raise PostureError(f"{evidence.PHRASES_FILE}: {problems[0]}", "fix the evidence phrase table")
    click.echo(f"ok: {len(rules)} rules in {len({r.pack for r in rules})} packs; TLS grading table: "
               f"{len(table.protocols)} protocols, {len(table.ciphers)} cipher checks; "
               f"{len(evidence.phrases())} evidence phrases")  # fmt: skip


def summary_lines(summary: Any) -> list[str]:
    """An evaluation's summary as `posture evaluate` prints it (the demo prints it too)."""
    severities = ", ".join(f"{summary.by_severity[s]} {s}" for s in ("critical", "high", "medium", "low", "info")
                           if summary.by_severity.get(s))  # fmt: skip
    return [
        f"evaluation {summary.evaluation_id} on {summary.day}: {summary.assets} assets, {summary.rules} rules; "
        f"{summary.open} findings open",
        f"  {summary.new} new, {summary.reopened} reopened, {summary.fixed} fixed, {summary.accepted} accepted",
        *([f"  not accepted: {severities}"] if severities else []),
        *score_lines(summary.score),
        f"lifecycle data: endoflife.date as of {summary.catalogue_date}; CISA KEV {summary.kev_version}",
    ]


def score_lines(judgement: dict[str, Any]) -> list[str]:
    """The score as the CLI prints it: the number, what it counts, and each function's RAG with its reason
    (an estate posture could not identify reads 0/100 and AMBER "insufficient data", never GREEN)."""
    if not judgement:
        return []
    why = [f"  {f} {judgement['rag'][f].upper()}: {judgement['why'][f]}" for f in judgement["rag"]]
    return [
        f"score {judgement['score']}/100: {judgement['safe']} of {judgement['assets']} assets safe "
        "(identified, no critical/high open)",
        f"  identified: {judgement['identified']} of {judgement['assets']}; the others count as not safe",
        *why,
    ]


@click.command("evaluate")
@rules_option
@click.option(
    "--on",
    "on_day",
    metavar="YYYY-MM-DD",
    help="Judge lifecycles as of this day instead of today (what-if; findings are recorded on that day).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["critical", "high", "medium", "low", "info"]),
    help="Exit 1 when a finding of this severity or worse is open and not accepted (for CI and cron).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: the summary as one JSON object (counts, severities, score and RAG with reasons).")
@click.pass_context
def evaluate_command(ctx: click.Context, rule_dirs: tuple[Path, ...], on_day: str | None, fail_on: str | None,
                     fmt: str) -> None:  # fmt: skip
    """Apply the rules to the inventory and record the findings (new, open, fixed, reopened).

    Run after each scan or import. Lifecycle data: the bundled endoflife.date catalogue (its date is
    printed) and CISA's KEV list. A rule that fails is reported as an internal-error finding; the others
    run on.

    \b
    Examples:
      posture evaluate
      posture evaluate --fail-on high      (exit 1 for CI or cron)
      posture evaluate --on 2027-04-01     (what-if: as of that day)
      posture evaluate --format json | jq .score
    """
    from dataclasses import asdict

    from rules.stage import evaluate_inventory
    from scanner.command import command_config, exit_if_unread, open_store, progress_for

    config = command_config(ctx)
    rules = _load(ctx, rule_dirs, config)
    day = parse_day(on_day)
    with open_store(ctx) as store:
        total = store.conn.execute("SELECT count(*) FROM assets").fetchone()[0]
        progress = progress_for(ctx, "evaluate", "assets", total)
        try:
            summary = evaluate_inventory(store, config, day, rules, progress.update)
        finally:
            progress.finish()
    worst: list[str] = []
    if fail_on is not None:
        from rules.engine import SEVERITY_RANK

        worst = [s for s, n in summary.by_severity.items() if n and SEVERITY_RANK[s] >= SEVERITY_RANK[fail_on]]
    if worst:
        exit_if_unread(ctx, int(ExitCode.FINDINGS))
    if fmt == "json":
        click.echo(json.dumps(asdict(summary), indent=2))
    else:
        if summary.assets == 0:
            click.echo("the inventory has no assets yet: run `posture scan TARGET` or `posture import` first")
        for line in summary_lines(summary):
            click.echo(line)
    for rule_id, message in summary.errors.items():
        click.echo(f"posture: warning: rule {rule_id} failed and was skipped: {message}", err=True)
    if worst:
        click.echo(f"posture: findings at or above {fail_on} are open: {', '.join(sorted(worst))}", err=True)
        ctx.exit(int(ExitCode.FINDINGS))


FINDING_CSV_COLUMNS = ["id", "rule_id", "function", "severity", "status", "accepted", "accepted_until", "asset_id",
                       "address", "hostname", "owner", "product", "version", "cycle", "lifecycle_state", "eol_date",
                       "evidence", "first_seen", "last_seen"]  # fmt: skip


@click.command("findings")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option(
    "--function",
    "functions",
    multiple=True,
    type=click.Choice(["protect", "detect", "respond"]),
    help="Only this function (repeatable).",
)
@click.option(
    "--severity",
    "severities",
    multiple=True,
    type=click.Choice(["critical", "high", "medium", "low", "info"]),
    help="Only this severity (repeatable).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["new", "open", "reopened", "fixed"]),
    help="Only this status (repeatable). Default: new, open and reopened.",
)
@click.option("--rule", "rule_ids", multiple=True, help="Only this rule id (repeatable).")
@click.pass_context
def findings_command(ctx: click.Context, fmt: str, functions: tuple[str, ...], severities: tuple[str, ...],
                     statuses: tuple[str, ...], rule_ids: tuple[str, ...]) -> None:  # fmt: skip
    """List the findings of the last evaluation, worst first; accepted ones are listed apart.

    Run `posture evaluate` first. JSON fields are listed in the README.

    \b
    Examples:
      posture findings --severity high
      posture findings --rule protect.eol-os --format csv
      posture findings --status fixed --format json
    """
    from rules.findings import OPEN_STATES, iter_finding_views
    from scanner.command import open_store
    from scanner.model import write_csv, write_json_list

    with open_store(ctx, readonly=True) as store:
        if store.conn.execute("SELECT 1 FROM evaluations LIMIT 1").fetchone() is None:
            raise PostureError("no evaluation yet", "run `posture evaluate`")
        rows = (  # streamed from the store to the output: JSON and CSV of millions hold one at a time
            f
            for f in iter_finding_views(store, date.today(), statuses or OPEN_STATES)
            if (not functions or f["function"] in functions)
            and (not severities or f["severity"] in severities)
            and (not rule_ids or f["rule_id"] in rule_ids)
        )
        if fmt == "json":
            write_json_list(sys.stdout, rows)
        elif fmt == "csv":
            write_csv(sys.stdout, FINDING_CSV_COLUMNS, ([f[c] for c in FINDING_CSV_COLUMNS] for f in rows))
        else:
            _print_findings(list(rows))


def _print_findings(rows: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from scanner.command import table_console
    from scanner.model import printable

    console = table_console()
    for accepted in (False, True):
        part = [f for f in rows if f["accepted"] is accepted]
        if accepted and not part:
            continue
        table = Table(title=f"accepted exceptions ({len(part)})" if accepted else f"findings ({len(part)})")
        for column in ("id", "severity", "status", "rule", "asset", "what", "evidence"):
            table.add_column(column, overflow="fold")
        for f in part:
            name = f["label"] or " ".join(str(x) for x in (f["product"], f["cycle"] or f["version"]) if x)
            what = " ".join(str(x) for x in (name, f["lifecycle_state"], f["eol_date"] and f"eol {f['eol_date']}")
                            if x)  # fmt: skip
            asset = f"{f['asset_id'] or ''} {f['address'] or ''} {f['hostname'] or ''}".strip()
            status = f["status"] + (f" until {f['accepted_until']}" if accepted else "")
            evidence = ((f["evidence"] or "").splitlines() or [""])[0][:100]
            table.add_row(*(escape(printable(v)) for v in (f["id"], f["severity"], status, f["rule_id"], asset, what,
                                                          evidence)))  # fmt: skip
        console.print(table)


@click.command("accept")
@click.argument("target", metavar="FINDING_OR_RULE")
@click.option("--until", "until", required=True, metavar="YYYY-MM-DD", help="Last day the acceptance holds.")
@click.option("--reason", required=True, help="Why the risk is accepted (shown in every report).")
@click.option("--esu", is_flag=True, help="Accepted because paid extended support covers it (ends by the ESU's end).")
@rules_option
@click.pass_context
def accept_command(ctx: click.Context, target: str, until: str, reason: str, esu: bool,
                   rule_dirs: tuple[Path, ...]) -> None:  # fmt: skip
    """Record an exception: a finding (F-...) or a whole rule accepted until a day, with a reason.

    Accepted findings are still counted and shown, apart; when the day passes they count again.

    \b
    Examples:
      posture accept F-2a1b7c2d1e --until 2027-03-31 --reason "PO 4411"
      posture accept protect.telnet --until 2027-01-31 --reason "isolated VLAN"
      posture accept F-2a1b7c2d1e --until 2027-01-10 --esu --reason "ESU bought"
    """
    from rules.findings import accept
    from scanner.command import open_store

    day = parse_day(until)
    with open_store(ctx) as store:
        rule_ids = {r.id for r in _load(ctx, rule_dirs)}
        note = accept(store, target, day, reason, esu, rule_ids, date.today())
    click.echo(note)
