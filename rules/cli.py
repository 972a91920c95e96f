"""The rules stage's commands, added to the root `posture` group through the `posture.commands` entry point."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import click

from scanner.errors import PostureError


@click.group()
def catalogue() -> None:
    """The lifecycle catalogue: release cycles and the dates their support ends (endoflife.date, MIT)."""


def _today(value: str | None) -> date:
    try:
        return date.fromisoformat(value) if value else date.today()
    except ValueError as exc:
        raise PostureError(f"invalid date {value!r}", "use YYYY-MM-DD") from exc


@catalogue.command("list")
def catalogue_list() -> None:
    """List the products in the catalogue, with the data's date."""
    from rules.catalogue import default_catalogue

    cat = default_catalogue()
    for slug, product in sorted(cat.products.items()):
        click.echo(f"{slug}\t{product.title}\t{len(product.cycles)} cycles")
    click.echo(f"data: endoflife.date as of {cat.data_date} (MIT licence)", err=True)


@catalogue.command("show")
@click.argument("product")
@click.option("--on", "on_day", metavar="YYYY-MM-DD", help="Judge the states on this day (default: today).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def catalogue_show(product: str, on_day: str | None, fmt: str) -> None:
    """Show PRODUCT's cycles with their end dates and their state today.

    States: supported, security-only, extended (paid ESU/ELS/LTSS/ESM left), end-of-life, unknown.
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
    today = _today(on_day)
    rows = []
    for cycle in found.cycles:
        st = found.status(cycle, today)
        rows.append({
            "cycle": cycle.name, "label": cycle.label, "release": _text(cycle.release),
            "active_support_end": _text(cycle.eoas), "eol": _text(cycle.eol), "extended_end": _text(cycle.eoes),
            "latest": cycle.latest, "state": str(st.state), "days_to_eol": st.days_to_eol,
        })  # fmt: skip
    if fmt == "json":
        document = {"product": found.slug, "title": found.title, "labels": found.labels,
                    "data_date": cat.data_date, "on": today.isoformat(), "cycles": rows}  # fmt: skip
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"{found.title} ({found.slug}); columns: " + ", ".join(f"{k} = {v}" for k, v in found.labels.items()))
    for r in rows:
        click.echo(
            f"{r['label']:<34} {r['state']:<14} eol {r['eol'] or '-':<10} extended {r['extended_end'] or '-':<10} "
            f"days to eol {'' if r['days_to_eol'] is None else r['days_to_eol']}"
        )
    click.echo(f"states on {today.isoformat()}; data: endoflife.date as of {cat.data_date} (MIT licence)")


def _text(value: object) -> str | None:
    if value is True:
        return "passed"
    if value is False or value is None:
        return None
    return str(value)


@catalogue.command("update")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--data-date", metavar="YYYY-MM-DD", help="When the export was taken (default: today); reports show it.")
def catalogue_update(file: Path, data_date: str | None) -> None:
    """Refresh products from an endoflife.date export (one product's JSON, or a list of them).

    Every date is checked first; a bad one is refused with its product, cycle and field, and nothing
    changes. Refreshed products are kept under ~/.local/share/posture/catalogue and laid over the bundled
    data.
    """
    from rules.catalogue import CatalogueError, update_catalogue

    if not file.is_file():
        raise PostureError(f"no such file: {file}", "give an endoflife.date product JSON file")
    day = _today(data_date).isoformat()
    try:
        slugs = update_catalogue(file, day)
    except CatalogueError as exc:
        raise PostureError(str(exc), "fix the file or export it again") from exc
    click.echo(f"catalogue updated: {', '.join(slugs)} (data as of {day})")
