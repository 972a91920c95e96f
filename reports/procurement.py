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

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from reports.documents import Document
from reports.model import clean, financial_year
from rules import identities
from rules.catalogue import default_catalogue
from rules.engine import Settings
from rules.kev import default_kev
from scanner.errors import PostureError
from scanner.inputs import csv_rows, decoded_lines, header_duplicate, key_line, load_toml, read_bounded
from scanner.model import printable
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


MAX_COSTS_BYTES = 1 << 20
PRODUCT_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")  # a catalogue slug (`posture catalogue list`)
MAX_PRICE = 1e9


def load_costs(path: Path | None) -> Costs:
    """A cost table: TOML (`[products.SLUG] upgrade = 1200`) or CSV (`product,option,unit_price`).

    Every key and value is checked for its type and range; the first problem is refused in one line that
    names the file and the key (TOML) or line (CSV).
    """
    if path is None:
        return Costs()
    if path.suffix.lower() == ".csv":
        return _csv_costs(path)
    data, text = load_toml(path, MAX_COSTS_BYTES, "cost table")

    def at(*keys: str) -> str:
        """FILE:LINE of a key (`at("products", slug, option)`) for the error messages."""
        return f"{path}:{key_line(text, keys[:-1] or keys, keys[-1] if len(keys) > 1 else None)}"

    unknown = sorted(set(data) - {"currency", "horizon_years", "products", "default"})
    if unknown:
        raise PostureError(f"{at(unknown[0])}: unknown key {unknown[0][:40]!r}",
                           "use currency, horizon_years, [default] and [products.SLUG]")  # fmt: skip
    costs = Costs()
    currency = data.get("currency", "GBP")
    if not isinstance(currency, str) or not 1 <= len(currency) <= 8 or not currency.isprintable():
        raise PostureError(f"{at('currency')}: currency must be a short name (at most 8 characters)",
                           'e.g. currency = "GBP"')  # fmt: skip
    costs.currency = currency
    years = data.get("horizon_years", 5)
    if not isinstance(years, int) or isinstance(years, bool) or not 1 <= years <= 20:
        raise PostureError(f"{at('horizon_years')}: horizon_years must be a whole number from 1 to 20",
                           "e.g. horizon_years = 5")  # fmt: skip
    costs.horizon_years = years
    products = data.get("products", {})
    if not isinstance(products, dict):
        raise PostureError(f"{at('products')}: products must be tables, one per product, like "
                           "[products.windows-server]", "e.g. [products.windows-server] replace = 4500")  # fmt: skip
    for product, table in [("default", data.get("default", {})), *products.items()]:
        keys = ("default",) if product == "default" else ("products", product)
        key: str | None = None  # the key being checked, for the line of an error
        try:
            if product != "default":
                _product(product)
            if not isinstance(table, dict):
                raise PostureError("must be a table of prices", "e.g. replace = 4500")
            for key, value in table.items():
                costs.prices.setdefault(product, {})[_option(key)] = _amount(value)
        except PostureError as exc:
            name = "[default]" if product == "default" else f"[products.{printable(product, 64)}]"
            shown = f"{name} {printable(key, 40)}" if key else name
            raise PostureError(f"{at(*keys, *([key] if key else []))}: {shown}: {exc.message}", exc.hint) from None
    return costs


def _csv_costs(path: Path) -> Costs:
    where = str(path)
    rows = csv_rows(decoded_lines(read_bounded(path, MAX_COSTS_BYTES, "cost table"), where), where)
    _, header = next(rows, (1, []))
    columns = [name.strip().lower() or None for name in header]
    twice = header_duplicate(columns)
    if twice:
        raise PostureError(f"{where}:1: columns {twice[0] + 1} and {twice[1] + 1} have the same name",
                           "keep one of them")  # fmt: skip
    if {"product", "option", "unit_price"} - set(columns):
        raise PostureError(f"{where}: a CSV cost table needs the columns product, option, unit_price",
                           "e.g. windows-server,replace,4500")  # fmt: skip
    index = {name: columns.index(name) for name in ("product", "option", "unit_price")}
    costs = Costs()
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        cell = {name: row[i].strip() if i < len(row) else "" for name, i in index.items()}
        try:
            product = "default" if cell["product"] == "default" else _product(cell["product"])
            costs.prices.setdefault(product, {})[_option(cell["option"])] = _amount(cell["unit_price"])
        except PostureError as exc:
            raise PostureError(f"{where}:{line}: {exc.message}", exc.hint) from None
    return costs


# The checks of one name or value; the caller adds the file and line.


def _product(name: str) -> str:
    if not PRODUCT_RE.match(name):
        raise PostureError(f"{name[:40]!r} is not a product name (lower-case letters, digits, - . _ +)",
                           "use the slugs of `posture catalogue list`, e.g. windows-server")  # fmt: skip
    return name


def _option(name: str) -> str:
    if name not in OPTIONS:
        raise PostureError(f"unknown option {name[:40]!r}", f"use {', '.join(OPTIONS)}")
    return name


def _amount(value: Any) -> float:
    """A unit price from 0 to under a billion: a TOML number, or a number written in a CSV cell."""
    amount: float | None = None
    if isinstance(value, str):
        try:
            amount = float(value)
        except ValueError:
            amount = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        amount = float(value) if abs(value) < 2 * MAX_PRICE else MAX_PRICE  # float() of a huge int overflows
    if amount is None or not 0 <= amount < MAX_PRICE:
        if isinstance(value, str):
            shown = repr(value[:40])
        elif isinstance(value, int | float):  # repr() of a 5,000-digit int would raise
            shown = repr(value) if abs(value) < 1e15 else "a number that large"
        else:
            shown = f"a {type(value).__name__}"
        raise PostureError(f"{shown} is not a price", "give a number from 0 to 999,999,999, e.g. 4500")
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
    horizon = settings.horizon_days
    owners = {asset_id: bool(owner and owner.strip()) for asset_id, owner in store.conn.execute(
        "SELECT id, owner FROM assets")}  # fmt: skip
    grouped: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for asset_id, found in identities.read(store).items():
        asset = {"id": asset_id, "has_owner": owners.get(asset_id, False)}
        items = [found.os] if found.os is not None else []
        # A program packaged by the distribution goes with the OS: upgrading the OS is the remedy.
        for item in items + [s for s in found.software if not s["packaged_by"]]:
            if _legacy(item, day, horizon):
                grouped[(item["product"], found.category)].append((item, asset))
        for item in found.hardware:  # one lot per hardware family: "Catalyst 3560G", priced by its own key
            if item.get("cycle") and _legacy(item, day, horizon):
                grouped[(f"{item['product']}.{item['cycle']}", found.category)].append((item, asset))
    lots = []
    current = financial_year(day)
    for (product, category), members in grouped.items():
        items = [i for i, _ in members]
        assets = {a["id"]: a for _, a in members}
        quantity = len(assets)
        eols = sorted(i["eol_date"] for i in items if i["eol_date"])  # "one of" has none: never its first date
        extended = sorted(i["extended_until"] for i in items if i["extended_until"])
        hardware = items[0]["kind"] == "hardware"  # a box is replaced, never upgraded
        blockers = []
        unowned = sum(1 for a in assets.values() if not a["has_owner"])
        if unowned:
            blockers.append(f"{unowned} without an owner")
        if not hardware and not any(i["upgrade_path"] for i in items):
            blockers.append("no supported release to upgrade to")
        if any(i["kev_count"] for i in items):
            blockers.append("exploited vulnerabilities (CISA KEV) in this product family")
        options: dict[str, float | None] = {}
        for option in ("upgrade", "replace", "retire"):
            if option == "upgrade" and (hardware or "no supported release to upgrade to" in blockers):
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
            product=product, title=clean(_lot_title(items[0]), 80), category=category,
            releases=sorted({i["label"] for i in items}),  # the names people know (issue 12 item 4)
            quantity=quantity, earliest_eol=eols[0] if eols else None,
            extended_until=extended[-1] if extended else None,
            states=sorted({i["lifecycle_state"] for i in items}), blockers=blockers, options=options,
            recommended=recommended, cost=cost, financial_year=fy, tco=tco,
        ))  # fmt: skip
    lots.sort(key=lambda lot: (lot.earliest_eol or "9999", lot.product, lot.category))
    return lots


def _legacy(item: dict[str, Any], day: date, horizon: int) -> bool:
    """End of life, extended support only, or a known end within the planning horizon."""
    eol = item["eol_date"]
    soon = eol is not None and (date.fromisoformat(eol) - day).days <= horizon
    return bool(item["lifecycle_state"] in LEGACY_STATES or (item["lifecycle_state"] != "unknown" and soon))


def _lot_title(item: dict[str, Any]) -> str:
    """A lot's name: the product's title; for hardware the family and what it is, with its end of sale
    ("Catalyst 3560G hardware (end of sale 2013-01-30)"), as a buyer needs it."""
    if item["kind"] != "hardware":
        return str(item["title"])
    sale = f" (end of sale {item['end_of_sale']})" if item.get("end_of_sale") else ""
    return f"{item.get('family') or item['title']} hardware{sale}"


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
    rows = [[lot.product, lot.title, lot.category, "; ".join(lot.releases), str(lot.quantity), lot.earliest_eol or "",
             lot.extended_until or "", "; ".join(lot.blockers), lot.recommended,
             "" if lot.cost is None else f"{lot.cost:.2f}", lot.financial_year,
             "" if lot.tco is None else f"{lot.tco:.2f}"] for lot in lots]  # fmt: skip
    return header, rows
