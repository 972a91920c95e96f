"""`posture share summary`: an anonymised legacy-technology summary a council can pool with others (issue 17).

How many devices of which product, ending when: one row per (kind, catalogue product, cycle, lifecycle state,
end-of-life date, paid extended support end, asset category, hardware family) with a rounded count, from
the last finished evaluation's stored identities (rules/identities.py), so it says what the report says.

What is never in it, because naming a council's legacy systems shows where to attack: any address,
hostname, MAC, serial, owner, site, business service, banner, device label or stated version, model
number, evidence, finding or asset id. Only products the shipped catalogue names are counted (a home-grown
or rare product, or a product a council added with `posture catalogue update`, would identify it): the
label is the catalogue's title and a cycle must be one of the catalogue product's own, never what the
device said. Counts below 10 read "<10"; others are rounded to the nearest 5; each is carried as the
range the true count lies in (`count_min`..`count_max`), so an aggregator adds ranges, never guesses.
The organisation is named only when the config's [share] organisation says so.

The format is `posture.share-summary/1`: reports/schemas/share-summary.schema.json, and the contract
in the README. `--sign` writes `<out>.sig`: this machine's Ed25519 signature (scanner/bundles.py) over
`SIGNED_PREFIX` + the file's exact bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import click

from reports import model
from rules.catalogue import DEFAULT_POLICY, FREE_EXTENDED, POLICIES, Catalogue, Cycle, Lifecycle, Product
from rules.hardware import family_of
from rules.identify import split_cycle
from scanner.errors import PostureError

SCHEMA = "posture.share-summary/1"
SIGNATURE_SCHEMA = "posture.share-signature/1"
SIGNED_PREFIX = b"posture.share-summary/1\n"  # what a summary's signature covers: this, then the file's bytes
ROUNDING = 5
SMALL_BELOW = 10
ROW_KEYS = ("kind", "product", "label", "cycle", "lifecycle_state", "eol_date", "eol_financial_year",
            "extended_until", "category", "hardware_family", "count", "count_min", "count_max")  # fmt: skip
PERIOD = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2]|Q[1-4])")
RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
CATEGORY = re.compile(r"[a-z][a-z0-9-]{0,39}")
ROLE_KINDS = {"os": ("os", "firmware"), "software": ("software",), "hardware": ("hardware",)}
STATES = frozenset(str(s) for s in Lifecycle)
MAX_CYCLE = 200  # the schema's bound: "one of" a few hundred builds is no established cycle


def rounded(count: int) -> tuple[str, int, int]:
    """(shown, least, most) for a true count of at least 1: "<10" is 1..9; N >= 10 is shown rounded to the
    nearest 5, with the range of the integers that round to it (never below 10: those read "<10")."""
    if count < 1:
        raise ValueError("a row counts at least one asset")
    if count < SMALL_BELOW:
        return f"<{SMALL_BELOW}", 1, SMALL_BELOW - 1
    shown = ROUNDING * ((count + ROUNDING // 2) // ROUNDING)
    return str(shown), max(SMALL_BELOW, shown - ROUNDING // 2), shown + ROUNDING // 2


def financial_year(day: str | None) -> str | None:
    """The UK financial year (April to March) a YYYY-MM[-DD] date falls in, "2013/14" (as the eol_by_year
    view counts them); None for no date or one that is not a real date (the aggregator checks files with it)."""
    if not day:
        return None
    try:
        parsed = date.fromisoformat(day) if len(day) == 10 else date(int(day[:4]), int(day[5:7]), 1)
    except ValueError:
        return None
    return model.financial_year(parsed)


def check_period(period: str | None) -> None:
    """A period is a month (2026-12) or a quarter (2026-Q4)."""
    if period is not None and not PERIOD.fullmatch(period):
        raise PostureError(f"--period {period[:20]!r} is not a month or a quarter", "give e.g. 2026-12 or 2026-Q4")


@dataclass(frozen=True)
class Evaluation:
    """The last finished evaluation: the day, the catalogue's date, the lifecycle policy and rules it used."""

    day: date
    catalogue_date: str
    policy: str
    rule_ids: tuple[str, ...]


def last_evaluation(store: Any) -> Evaluation:
    """The last finished evaluation, or a refusal saying what to run."""
    row = store.conn.execute("SELECT day, catalogue_date, summary FROM evaluations WHERE finished_at IS NOT NULL "
                             "ORDER BY id DESC LIMIT 1").fetchone()  # fmt: skip
    if row is None:
        raise PostureError("no evaluation yet: the summary counts what the last evaluation identified",
                           "run `posture evaluate` first")  # fmt: skip
    try:
        recorded = json.loads(row[2] or "{}")
        day = date.fromisoformat(str(row[0]))
    except ValueError:
        raise PostureError("the last evaluation's record is damaged", "run `posture evaluate` again") from None
    rule_ids = recorded.get("rule_ids") if isinstance(recorded, dict) else None
    if not isinstance(rule_ids, list):
        raise PostureError("the last evaluation did not record which rules it applied (an older posture)",
                           "run `posture evaluate` again")  # fmt: skip
    policy = recorded.get("unsupported_after")
    return Evaluation(day, str(row[1] or "")[:50], policy if policy in POLICIES else DEFAULT_POLICY,
                      tuple(str(r) for r in rule_ids))  # fmt: skip


def shared_rules(applied: tuple[str, ...]) -> list[str]:
    """The ids of the rules applied that come with posture: a council's own packs are not named (their ids
    could identify it)."""
    from rules.engine import load_rules

    built_in = {r.id for r in load_rules()}
    return sorted(r for r in set(applied) & built_in if RULE_ID.fullmatch(r))


def _cycles(item: dict[str, Any], product: Product, catalogue: Catalogue) -> list[tuple[Product, Cycle]] | None:
    """The catalogue cycles an item names ("slug/cycle" for another product's, as Windows builds do), in the
    catalogue's order; None when any of them is not a cycle of the shipped catalogue."""
    found = []
    for said in item.get("cycles") or []:
        slug, name = split_cycle(str(said), product.slug)  # no catalogue slug or cycle name holds a "/"
        owner = catalogue.products.get(slug)
        cycle = next((c for c in owner.cycles if c.name == name), None) if owner else None
        if owner is None or cycle is None:
            return None
        found.append((owner, cycle))
    order = {slug: n for n, slug in enumerate(catalogue.products)}
    return sorted(found, key=lambda pc: (pc[0].slug != product.slug, order[pc[0].slug], pc[0].cycles.index(pc[1])))


def _day(value: Any, cycle: Cycle | None) -> str | None:
    """A stored date as the catalogue states it: "2019-03" where its source gives only the month."""
    try:
        day = date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    if day is None:
        return None
    if cycle is not None:
        for name in ("eol", "eoas", "eoes", "ldos"):
            shown = cycle.shown(name) if getattr(cycle, name) == day else None
            if shown and len(shown) == 7:
                return shown
    return day.isoformat()


def _row(item: dict[str, Any], role: str, category: str, catalogue: Catalogue) -> tuple[Any, ...] | None:
    """The row an asset's item counts in, or None when the shipped catalogue does not name the product."""
    kind = item.get("kind")
    product = catalogue.products.get(str(item.get("product")))
    if kind not in ROLE_KINDS[role] or product is None or not product.title.strip():
        return None
    cycles = _cycles(item, product, catalogue)
    names = [c.name if p is product else f"{p.slug}/{c.name}" for p, c in cycles or []]
    cycle_text = " / ".join(names) if names and len(" / ".join(names)) <= MAX_CYCLE else None
    single = cycles[0][1] if cycles and len(cycles) == 1 and cycles[0][0] is product else None
    eol = _day(item.get("eol_date"), single)
    extended = _day(item.get("extended_until"), single)
    if (extended is None and single is not None and isinstance(single.eoes, date) and not item.get("packaged_by")
            and product.slug not in FREE_EXTENDED):  # the paid support's end, also once it has passed
        extended = _day(single.eoes.isoformat(), single)
    state = str(item.get("lifecycle_state"))
    return (str(kind), product.slug, product.title.strip()[:200], cycle_text,
            state if state in STATES else str(Lifecycle.UNKNOWN), eol, financial_year(eol), extended,
            category if CATEGORY.fullmatch(category) else "unknown",
            (family_of(single) or None) if kind == "hardware" and single is not None else None)  # fmt: skip


def summary_rows(store: Any, catalogue: Catalogue) -> list[dict[str, Any]]:
    """The rows: distinct assets per row key, rounded, sorted as the contract says."""
    from rules import identities

    counts: Counter[tuple[Any, ...]] = Counter()
    for one in identities.read(store).values():
        keys = set()
        for role, items in (("os", [one.os] if one.os else []), ("software", one.software),
                            ("hardware", one.hardware)):  # fmt: skip
            for item in items:
                key = _row(item, role, one.category, catalogue)
                if key is not None:
                    keys.add(key)
        counts.update(keys)
    rows = []
    for key in sorted(counts, key=lambda k: (k[0], k[1], k[3] or "", k[8], k[9] or "", *(str(x) for x in k))):
        shown, least, most = rounded(counts[key])
        rows.append(dict(zip(ROW_KEYS, (*key, shown, least, most), strict=True)))
    return rows


def build_summary(store: Any, organisation: str | None, period: str | None) -> dict[str, Any]:
    """The summary document (`posture.share-summary/1`) of the last finished evaluation."""
    from rules.catalogue import load_catalogue
    from scanner import __version__

    check_period(period)
    evaluation = last_evaluation(store)
    shipped = load_catalogue().with_policy(evaluation.policy)  # never `catalogue update`'s own products
    return {
        "schema": SCHEMA,
        "organisation": organisation,
        "period": period or evaluation.day.isoformat()[:7],
        "evaluated_on": evaluation.day.isoformat(),
        "posture_version": __version__,
        "catalogue_date": evaluation.catalogue_date or shipped.data_date,
        "policy": {"unsupported_after": evaluation.policy},
        "rules": shared_rules(evaluation.rule_ids),
        "counts": {"rounding": ROUNDING, "small_below": SMALL_BELOW},
        "rows": summary_rows(store, shipped),
    }


def to_json(summary: dict[str, Any]) -> bytes:
    return (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode()


def to_csv(summary: dict[str, Any]) -> bytes:
    """The rows as CSV (posture's CSV writer: cells a spreadsheet shows as text); the file-level fields are
    in the descriptor (`datapackage`)."""
    from scanner.model import write_csv

    buffer = io.StringIO(newline="")
    write_csv(buffer, ROW_KEYS, ([row[k] for k in ROW_KEYS] for row in summary["rows"]))
    return buffer.getvalue().encode()


def datapackage(summary: dict[str, Any], csv_name: str) -> bytes:
    """The Frictionless Data package descriptor beside a CSV summary: the table's columns, and the file-level
    fields under "posture"."""
    strings = {k: {"name": k, "type": "string"} for k in ROW_KEYS}
    fields = [
        {**strings["kind"], "constraints": {"required": True, "enum": ["os", "firmware", "software", "hardware"]}},
        {**strings["product"], "constraints": {"required": True}},
        {**strings["label"], "constraints": {"required": True}},
        strings["cycle"],
        {**strings["lifecycle_state"], "constraints": {"required": True}},
        {**strings["eol_date"], "description": "YYYY-MM-DD, or YYYY-MM where only the month is published"},
        {**strings["eol_financial_year"], "description": "UK financial year (April-March) of eol_date"},
        {**strings["extended_until"], "description": "end of paid extended support"},
        {**strings["category"], "constraints": {"required": True}},
        strings["hardware_family"],
        {**strings["count"], "description": '"<10", or the count rounded to the nearest 5'},
        {"name": "count_min", "type": "integer", "constraints": {"required": True, "minimum": 1}},
        {"name": "count_max", "type": "integer", "constraints": {"required": True, "minimum": 1}},
    ]
    resource = {"name": "rows", "path": csv_name, "profile": "tabular-data-resource", "format": "csv",
                "mediatype": "text/csv", "encoding": "utf-8", "schema": {"fields": fields, "missingValues": [""]}}
    descriptor = {
        "profile": "tabular-data-package",
        "name": "posture-share-summary",
        "resources": [resource],
        "posture": {k: v for k, v in summary.items() if k != "rows"},
    }
    return (json.dumps(descriptor, indent=1, ensure_ascii=False) + "\n").encode()


def signature(data: bytes) -> bytes:
    """The `<out>.sig` file: this machine's Ed25519 signature over SIGNED_PREFIX + the summary's bytes."""
    from scanner.bundles import sign_detached

    kid, public, signed = sign_detached(SIGNED_PREFIX + data)
    document = {"schema": SIGNATURE_SCHEMA, "key_id": kid, "public": public,
                "signed_sha256": hashlib.sha256(data).hexdigest(), "signature": signed}  # fmt: skip
    return (json.dumps(document, indent=1) + "\n").encode()


def _target(path: Path) -> Path:
    """A file posture may write: in an existing folder, not a folder, and never a symbolic link."""
    if path.is_symlink():
        raise PostureError(f"{path} is a symbolic link", "give the path of a regular file")
    if path.is_dir():
        raise PostureError(f"{path} is a folder", "give a file name, e.g. summary.json")
    if not path.parent.is_dir():
        raise PostureError(f"no such folder: {path.parent}", "give a path in an existing folder")
    return path


@click.command("summary")
@click.option("--out", "out", required=True, metavar="FILE",
              help="Write the summary to FILE (`-`: print the JSON).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]),
              help="json (the default) or csv (the rows, with FILE.datapackage.json beside them); "
                   "a FILE ending .csv means csv.")  # fmt: skip
@click.option("--period", metavar="YYYY-MM|YYYY-Qn",
              help="The period the summary stands for (default: the month of the last evaluation).")
@click.option("--sign", is_flag=True,
              help="Sign the JSON with this machine's Ed25519 key (`posture keys generate`): FILE.sig beside it.")
@click.pass_context
def summary_command(ctx: click.Context, out: str, fmt: str | None, period: str | None, sign: bool) -> None:
    """Write an anonymised summary of this inventory for pooling with other councils: how many devices of
    which catalogue product, cycle and category, ending in which UK financial year.

    Built from the last `posture evaluate`. Never in it: addresses, names, MACs, serials, owners, sites,
    services, models, versions or anything a device said; only products the catalogue names. Counts under
    10 read "<10", others are rounded to the nearest 5, each with its range. Anonymous unless the config
    sets [share] organisation.

    \b
    Examples:
      posture share summary --out summary.json
      posture share summary --out summary.json --period 2026-Q4 --sign
      posture share summary --out summary.csv
      posture share summary --out - | jq '.rows | length'
    """
    from reports.cli import organisation
    from scanner.command import open_store
    from scanner.safefs import write_atomic

    chosen = fmt or ("csv" if out.lower().endswith(".csv") else "json")
    if out == "-" and (chosen == "csv" or sign):
        raise PostureError("--out - prints the JSON summary only",
                           "give --out FILE for CSV (with its descriptor) or for --sign")  # fmt: skip
    if sign and chosen == "csv":
        raise PostureError("--sign signs the JSON summary (what an aggregator reads)", "drop --format csv")
    check_period(period)
    path = None if out == "-" else _target(Path(out))
    extra = {} if path is None else {"sig": path.with_name(path.name + ".sig"),
                                     "datapackage": path.with_name(path.name + ".datapackage.json")}  # fmt: skip
    for other in extra.values():
        if other.is_symlink() or other.is_dir():
            raise PostureError(f"{other} is a symbolic link or a folder", "remove it, or give another --out")
    name = organisation(ctx, "share")
    with open_store(ctx, readonly=True) as store:
        summary = build_summary(store, name, period)
    data = to_json(summary) if chosen == "json" else to_csv(summary)
    if path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    signed = signature(data) if sign else None  # before anything is written: no key, nothing written
    write_atomic(path, data)
    if chosen == "csv":
        write_atomic(extra["datapackage"], datapackage(summary, path.name))
    if signed is not None:
        write_atomic(extra["sig"], signed)
    named = f"named {name!r}" if name else "anonymous"
    click.echo(f"summary written: {path} ({len(summary['rows'])} rows, {named}, period {summary['period']})")
    if chosen == "csv":
        click.echo(f"descriptor: {extra['datapackage']}")
    if signed is not None:
        click.echo(f"signature: {extra['sig']}")
