"""The legacy-technology section of an IT procurement strategy: replacement lots, options and their costs.

Legacy = every identified OS or program that is end of life, on paid extended support only, or reaches
end of life within the planning horizon. It is grouped into lots by product and asset category (one lot:
"Windows Server 2008 R2, servers, 14 units"), each with its end-of-life dates, its blockers (no owner, no
supported upgrade path, exploited vulnerabilities), and the options with their costs from the user's cost
table: upgrade (only where a supported release exists), replace, retire, or buy extended support (only
where the vendor sells it, until its end). The recommended option is the cheapest one that ends the risk
(upgrade, else replace); its cost falls in the UK financial year the lot reaches end of life (the current
one when already past), and the total cost of ownership adds any extended support bought meanwhile.

Costs come only from the cost table (TOML or CSV); posture invents no prices. A product with no price
is shown with "no price" and left out of the totals, which say how many lots they leave out.
"""

from __future__ import annotations

import csv
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from reports.documents import Document
from reports.model import clean, financial_year
from rules.catalogue import default_catalogue
from rules.engine import Settings
from rules.facts import Identifier, load_facts
from rules.kev import default_kev
from scanner.errors import PostureError
from scanner.store import Store

OPTIONS = ("upgrade", "replace", "retire", "esu_per_year")
LEGACY_STATES = ("end-of-life", "extended")


@dataclass
class Costs:
    currency: str = "GBP"
    horizon_years: int = 5
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # product slug or "default" -> option

    def price(self, product: str, option: str) -> float | None:
        for key in (product, "default"):
            value = self.prices.get(key, {}).get(option)
            if value is not None:
                return value
        return None


def load_costs(path: Path | None) -> Costs:
    """A cost table: TOML (`[products.SLUG] upgrade = 1200`) or CSV (`product,option,unit_price`)."""
    if path is None:
        return Costs()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PostureError(f"cannot read the cost table {path}: {exc}", "give a UTF-8 TOML or CSV file") from exc
    costs = Costs()
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = {f.strip().lower() for f in reader.fieldnames or []}
        if {"product", "option", "unit_price"} - columns:
            raise PostureError(f"{path}: a CSV cost table needs the columns product, option, unit_price",
                               "e.g. windows-server,replace,4500")  # fmt: skip
        for n, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            costs.prices.setdefault(row["product"], {})[_option(row["option"], f"{path}:{n}")] = _amount(
                row["unit_price"], f"{path}:{n}")  # fmt: skip
        return costs
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PostureError(f"{path} is not valid TOML: {exc}", "fix the file") from exc
    unknown = set(data) - {"currency", "horizon_years", "products", "default"}
    if unknown:
        raise PostureError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}",
                           "use currency, horizon_years, [default] and [products.SLUG]")  # fmt: skip
    costs.currency = str(data.get("currency", "GBP"))[:8]
    years = data.get("horizon_years", 5)
    if not isinstance(years, int) or isinstance(years, bool) or not 1 <= years <= 20:
        raise PostureError(f"{path}: horizon_years must be a whole number from 1 to 20", "e.g. horizon_years = 5")
    costs.horizon_years = years
    tables = {"default": data.get("default", {}), **dict(data.get("products", {}))}
    for product, table in tables.items():
        if not isinstance(table, dict):
            raise PostureError(f"{path}: [products.{product}] must be a table", "e.g. replace = 4500")
        costs.prices[product] = {_option(k, f"{path} [{product}]"): _amount(v, f"{path} [{product}] {k}")
                                 for k, v in table.items()}  # fmt: skip
    return costs


def _option(name: str, where: str) -> str:
    if name not in OPTIONS:
        raise PostureError(f"{where}: unknown option {name[:40]!r}", f"use {', '.join(OPTIONS)}")
    return name


def _amount(value: Any, where: str) -> float:
    try:
        amount = float(value)
    except (TypeError, ValueError) as exc:
        raise PostureError(f"{where}: {str(value)[:40]!r} is not a price", "give a number, e.g. 4500") from exc
    if not 0 <= amount < 1e9:
        raise PostureError(f"{where}: {amount} is not a sensible price", "give a number from 0")
    return amount


@dataclass
class Lot:
    product: str
    title: str
    category: str
    releases: list[str]
    quantity: int
    earliest_eol: str | None
    extended_until: str | None
    states: list[str]
    blockers: list[str]
    options: dict[str, float | None]  # option -> total for the lot (None: no price)
    recommended: str
    cost: float | None
    financial_year: str
    tco: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def procurement_lots(store: Store, day: date, settings: Settings, costs: Costs) -> list[Lot]:
    ident = Identifier(default_catalogue(), default_kev(), day)
    horizon = settings.horizon_days
    grouped: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for facts in load_facts(store, ident):
        items = [facts.os] if facts.os is not None else []
        # A program packaged by the distribution goes with the OS: upgrading the OS is the remedy.
        for item in items + [s for s in facts.software if not s["packaged_by"]]:
            soon = item["days_to_eol"] is not None and item["days_to_eol"] <= horizon
            if item["lifecycle_state"] in LEGACY_STATES or (item["lifecycle_state"] != "unknown" and soon):
                grouped[(item["product"], facts.asset["category"])].append((item, facts.asset))
    lots = []
    current = financial_year(day)
    for (product, category), members in grouped.items():
        items = [i for i, _ in members]
        assets = {a["id"]: a for _, a in members}
        quantity = len(assets)
        eols = sorted(i["eol_date"] for i in items if i["eol_date"])
        extended = sorted(i["extended_until"] for i in items if i["extended_until"])
        blockers = []
        unowned = sum(1 for a in assets.values() if not a["has_owner"])
        if unowned:
            blockers.append(f"{unowned} without an owner")
        if not any(i["upgrade_path"] for i in items):
            blockers.append("no supported release to upgrade to")
        if any(i["kev_count"] for i in items):
            blockers.append("exploited vulnerabilities (CISA KEV) in this product family")
        options: dict[str, float | None] = {}
        for option in ("upgrade", "replace", "retire"):
            if option == "upgrade" and "no supported release to upgrade to" in blockers:
                continue
            unit = costs.price(product, option)
            options[option] = None if unit is None else unit * quantity
        if extended:
            years = max(1, -(-(date.fromisoformat(extended[-1]) - day).days // 365))
            unit = costs.price(product, "esu_per_year")
            options["extended support"] = None if unit is None else unit * quantity * min(years, costs.horizon_years)
        # The option that ends the risk at the lowest known price: upgrade where one exists, else replace.
        priced = [o for o in ("upgrade", "replace") if options.get(o) is not None]
        recommended = priced[0] if priced else "upgrade" if "upgrade" in options else "replace"
        cost = options.get(recommended)
        fy = financial_year(date.fromisoformat(eols[0])) if eols else current
        fy = max(fy, current)
        tco = None if cost is None else cost + (options.get("extended support") or 0.0)
        lots.append(Lot(
            product=product, title=clean(items[0]["title"], 80), category=category,
            releases=sorted({i["cycle"] or "/".join(i["cycles"]) or (i["version"] or "?") for i in items}),
            quantity=quantity, earliest_eol=eols[0] if eols else None,
            extended_until=extended[-1] if extended else None,
            states=sorted({i["lifecycle_state"] for i in items}), blockers=blockers, options=options,
            recommended=recommended, cost=cost, financial_year=fy, tco=tco,
        ))  # fmt: skip
    lots.sort(key=lambda lot: (lot.earliest_eol or "9999", lot.product, lot.category))
    return lots


def totals(lots: list[Lot]) -> dict[str, Any]:
    by_year: dict[str, float] = defaultdict(float)
    for lot in lots:
        if lot.cost is not None:
            by_year[lot.financial_year] += lot.cost
    return {
        "by_financial_year": dict(sorted(by_year.items())),
        "total": sum(by_year.values()),
        "tco": sum(lot.tco or 0.0 for lot in lots),
        "unpriced_lots": sum(1 for lot in lots if lot.cost is None),
    }


def _money(value: float | None, currency: str) -> str:
    return "no price" if value is None else f"{currency} {value:,.0f}"


def procurement_document(lots: list[Lot], costs: Costs, day: date) -> Document:
    """The section as a document: lots, options and costs, totals by financial year, sources."""
    sums = totals(lots)
    cur = costs.currency
    doc = Document(f"Legacy technology: replacement lots ({day.isoformat()})")
    doc.paragraph(
        f"{len(lots)} lots covering {sum(lot.quantity for lot in lots)} units of technology that is past end of "
        f"life, on paid extended support only, or reaches end of life within the planning horizon. Costs come "
        f"from the council's cost table ({cur}); the recommended option ends the risk at the lowest cost "
        "(upgrade where a supported release exists, else replace)."
    )
    doc.heading("Lots")
    doc.table(
        ["lot", "category", "releases", "units", "end of life", "blockers", "options", "recommended", "cost",
         "financial year"],
        [[lot.title, lot.category, ", ".join(lot.releases), str(lot.quantity),
          (lot.earliest_eol or "unknown")
          + (f"; extended support until {lot.extended_until}" if lot.extended_until else ""),
          "; ".join(lot.blockers) or "none",
          "; ".join(f"{k} {_money(v, cur)}" for k, v in lot.options.items()),
          lot.recommended, _money(lot.cost, cur), lot.financial_year] for lot in lots],
    )  # fmt: skip
    doc.heading("Totals by financial year (April to March)")
    doc.table(["financial year", "cost"], [[fy, _money(v, cur)] for fy, v in sums["by_financial_year"].items()])
    doc.paragraph(
        f"Total {_money(sums['total'], cur)}; total cost of ownership over {costs.horizon_years} years, with the "
        f"extended support bought until replacement, {_money(sums['tco'], cur)}."
        + (f" {sums['unpriced_lots']} lots have no price in the cost table and are not in these totals."
           if sums["unpriced_lots"] else "")
    )  # fmt: skip
    doc.heading("Sources")
    doc.paragraph(
        f"Inventory and findings: posture, judged on {day.isoformat()}. Lifecycle dates: endoflife.date as of "
        f"{default_catalogue().data_date} (MIT licence). Exploited vulnerabilities: CISA KEV catalogue "
        f"{default_kev().version} (CC0)."
    )
    return doc


def lots_rows(lots: list[Lot]) -> tuple[list[str], list[list[str]]]:
    """The lots flattened for CSV."""
    header = ["product", "title", "category", "releases", "quantity", "earliest_eol", "extended_until",
              "blockers", "recommended", "cost", "financial_year", "tco"]  # fmt: skip
    rows = [[lot.product, lot.title, lot.category, " ".join(lot.releases), str(lot.quantity), lot.earliest_eol or "",
             lot.extended_until or "", "; ".join(lot.blockers), lot.recommended,
             "" if lot.cost is None else f"{lot.cost:.2f}", lot.financial_year,
             "" if lot.tco is None else f"{lot.tco:.2f}"] for lot in lots]  # fmt: skip
    return header, rows
