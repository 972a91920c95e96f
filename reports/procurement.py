"""The legacy-technology section of an IT procurement strategy: replacement lots, options and their costs.

Legacy = every identified OS, program or hardware family that is end of life, on paid extended support
only, or reaches end of life within the planning horizon. It is grouped into lots by release and category
(one lot: "Microsoft Windows Server 2008 R2 SP1, servers, 14 units"), the category being the identity's own
(Office 2007 is end-user software wherever it runs; an OS and a box take their machine's category).

Each lot is upgraded only where the vendor supports an in-place upgrade to a release that is supported on
the day (rules/upgrades.py: Windows Server 2008 R2 via 2012 R2 to 2025 is one, Windows Server 2003 has none),
else replaced; hardware is always replaced. A machine that is replaced (its OS has no in-place path, or
its hardware is past support) takes its end-of-life software with it: Internet Explorer 8 and Office 2007
on a Windows XP PC are not costed again, they are listed as going with the machine. The cost falls in the
UK financial year the lot reaches end of life (the current one when already past).

Costs come only from the cost table (TOML or CSV); posture invents no prices. A lot with no price shows
"no price" and is left out of the totals, which say how many lots they leave out. Every product, option and
currency in the table is checked: a mistyped slug is refused with its file and line, never ignored.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from reports.documents import Document
from reports.model import LEGACY_STATES, clean, financial_year
from reports.pool import span
from rules import identities
from rules.catalogue import Catalogue, default_catalogue
from rules.engine import Settings
from rules.facts import REPORT_CATEGORY
from rules.kev import default_kev
from rules.upgrades import PATHS_FILE, Verdict, in_place
from scanner.errors import PostureError
from scanner.inputs import csv_rows, decoded_lines, header_duplicate, key_line, load_toml, read_bounded
from scanner.model import printable
from scanner.store import Store

OPTIONS = ("upgrade", "replace", "retire", "esu_per_year")
WITH_MACHINE = "with the machine"
# ISO 4217 currency codes (Debian iso-codes 4.15, iso_4217.json), without funds, metals and test codes.
_ISO_4217 = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD
HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD
LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP
PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT
TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL
"""
CURRENCIES = frozenset(_ISO_4217.split())
SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}
SHORT_TABLE = 15  # rows: a table this short is kept on one page (the lots table, with its long reasons, never)


@dataclass
class Costs:
    currency: str = "GBP"
    horizon_years: int = 5
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # "slug", "slug.cycle" or "default"
    source: str | None = None  # the cost table's file name, for the document's sources

    def price(self, keys: list[str], option: str) -> tuple[float | None, str | None]:
        """The unit price of `option` from the most specific key that has one (then [default]), and that key."""
        for key in [*keys, "default"]:
            value = self.prices.get(key, {}).get(option)
            if value is not None:
                return value, key
        return None, None

    def money(self, value: float | None) -> str:
        """£12,900; €12,900; $12,900; CHF 12,900 (whole units: these are planning figures)."""
        if value is None:
            return "no price"
        symbol = SYMBOLS.get(self.currency)
        return f"{symbol}{value:,.0f}" if symbol else f"{self.currency} {value:,.0f}"


MAX_COSTS_BYTES = 1 << 20
PRODUCT_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")  # a catalogue slug (`posture catalogue list`)
MAX_PRICE = 1e9


def load_costs(path: Path | None, catalogue: Catalogue | None = None) -> Costs:
    """A cost table: TOML (`[products.SLUG] upgrade = 1200`) or CSV (`product,option,unit_price`).

    Every key and value is checked for its type and range, every product against the catalogue (a slug, or
    `slug.cycle` for one release or hardware family) and the currency against ISO 4217; the first problem
    is refused in one line that names the file and line.
    """
    if path is None:
        return Costs()
    catalogue = catalogue or default_catalogue()
    if path.suffix.lower() == ".csv":
        return _csv_costs(path, catalogue)
    data, text = load_toml(path, MAX_COSTS_BYTES, "cost table")

    def at(*keys: str, table: bool = False) -> str:
        """FILE:LINE of a key (`at("products", slug, option)`) or a table header (`table=True`)."""
        if table:
            return f"{path}:{key_line(text, keys)}"
        return f"{path}:{key_line(text, keys[:-1] or keys, keys[-1] if len(keys) > 1 else None)}"

    unknown = sorted(set(data) - {"currency", "horizon_years", "products", "default"})
    if unknown:
        raise PostureError(f"{at(unknown[0])}: unknown key {unknown[0][:40]!r}",
                           "use currency, horizon_years, [default] and [products.SLUG]")  # fmt: skip
    costs = Costs(source=path.name)
    currency = data.get("currency", "GBP")
    if not isinstance(currency, str) or currency not in CURRENCIES:
        shown = repr(currency[:40]) if isinstance(currency, str) else f"a {type(currency).__name__}"
        raise PostureError(f"{at('currency')}: unknown currency {shown} (an ISO 4217 code is needed)",
                           'e.g. currency = "GBP" (or "EUR", "USD", "CHF")')  # fmt: skip
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
    tables: list[tuple[str, tuple[str, ...], Any]] = [("default", ("default",), data.get("default", {}))]
    for product, table in products.items():
        tables.append((product, ("products", product), table))
        if isinstance(table, dict):  # [products.windows-server."2003-sp2"]: one release's prices
            tables.extend((f"{product}.{cycle}", ("products", product, cycle), sub)
                          for cycle, sub in table.items() if isinstance(sub, dict))  # fmt: skip
    for product, keys, table in tables:
        key: str | None = None  # the key being checked, for the line of an error
        try:
            if product != "default":
                _product(product, catalogue)
            if not isinstance(table, dict):
                raise PostureError("must be a table of prices", "e.g. replace = 4500")
            for key, value in table.items():
                if isinstance(value, dict) and len(keys) == 2:
                    continue  # a release's own table, checked on its own
                costs.prices.setdefault(product, {})[_option(key)] = _amount(value)
        except PostureError as exc:
            name = "[default]" if product == "default" else f"[products.{printable(product, 64)}]"
            shown = f"{name} {printable(key, 40)}" if key else name
            where = at(*keys, key) if key else at(*keys, table=True)
            raise PostureError(f"{where}: {shown}: {exc.message}", exc.hint) from None
    return costs


def _csv_costs(path: Path, catalogue: Catalogue) -> Costs:
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
    costs = Costs(source=path.name)
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        cell = {name: row[i].strip() if i < len(row) else "" for name, i in index.items()}
        try:
            product = "default" if cell["product"] == "default" else _product(cell["product"], catalogue)
            costs.prices.setdefault(product, {})[_option(cell["option"])] = _amount(cell["unit_price"])
        except PostureError as exc:
            raise PostureError(f"{where}:{line}: {exc.message}", exc.hint) from None
    return costs


# The checks of one name or value; the caller adds the file and line.


def _product(name: str, catalogue: Catalogue) -> str:
    """A product the catalogue knows (`slug`), or one of its releases or hardware families (`slug.cycle`)."""
    if not PRODUCT_RE.match(name):
        raise PostureError(f"{name[:40]!r} is not a product name (lower-case letters, digits, - . _ +)",
                           "use the slugs of `posture catalogue list`, e.g. windows-server")  # fmt: skip
    slug, _, cycle = name.partition(".")
    product = catalogue.product(slug)
    if product is None:
        near = difflib.get_close_matches(slug, list(catalogue.products), n=1)
        raise PostureError(f"unknown product {slug[:40]!r}",
                           f"did you mean {near[0]!r}?" if near else "see `posture catalogue list`")  # fmt: skip
    if cycle and product.cycle(cycle) is None:
        near = difflib.get_close_matches(cycle, [c.name for c in product.cycles], n=1)
        hint = f"did you mean {slug}.{near[0]}?" if near else f"see `posture catalogue show {slug}`"
        raise PostureError(f"{slug} has no release {cycle[:40]!r}", hint)
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
    number: int
    product: str  # the catalogue slug; hardware: "slug.cycle" (priced per family)
    cycle: str | None
    title: str  # the release as people know it ("Microsoft Windows Server 2003 SP2")
    category: str
    quantity: int
    earliest_eol: str | None
    extended_until: str | None
    states: list[str]
    blockers: list[str]
    path: str  # the in-place upgrade path, or why the lot is replaced
    options: dict[str, float | None]  # option -> total for the lot (None: no price)
    recommended: str  # upgrade or replace
    cost: float | None
    price_from: str | None  # the cost table's key the recommended price came from
    financial_year: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Component:
    """End-of-life software on machines that are replaced: it goes with the machine, not costed again."""

    product: str
    cycle: str | None
    title: str
    category: str
    quantity: int
    earliest_eol: str | None
    machines: list[int]  # the numbers of the lots that replace its machines


@dataclass
class Procurement:
    day: date
    costs: Costs
    lots: list[Lot]
    components: list[Component]
    organisation: str | None = None
    sector: dict[int, str] = field(default_factory=dict)  # lot number -> the pooled data's joint-purchase line
    sector_source: str | None = None  # the pooled file's name, when --sector was given

    def totals(self) -> dict[str, Any]:
        by_year: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for lot in self.lots:
            row = by_year[lot.financial_year]
            row["lots"] += 1
            row["units"] += lot.quantity
            if lot.cost is None:
                row["unpriced"] += 1
            else:
                row[lot.recommended] += lot.cost
                row["total"] += lot.cost
        return {
            "by_financial_year": {fy: dict(v) for fy, v in sorted(by_year.items())},
            "total": sum(lot.cost for lot in self.lots if lot.cost is not None),
            "unpriced_lots": sum(1 for lot in self.lots if lot.cost is None),
        }

    def tco(self) -> list[tuple[str, float, int, int]]:
        """(option, total over the horizon, lots priced, lots without a price) for each way of ending the risk.

        One-off prices count once; extended support counts per year for the years it is sold within the
        horizon, and where it ends inside the horizon the recommended option is still bought at its end."""
        end = self.day + timedelta(days=round(365.25 * self.costs.horizon_years))
        lines: list[tuple[str, list[float | None]]] = [
            ("Upgrade where an in-place path exists, else replace (recommended)", [lot.cost for lot in self.lots]),
            ("Replace every lot", [lot.options.get("replace") for lot in self.lots]),
        ]
        with_esu: list[float | None] = []
        for lot in self.lots:
            if "extended support" not in lot.options:
                with_esu.append(lot.cost)
                continue
            esu = lot.options["extended support"]
            ends_inside = lot.extended_until is not None and date.fromisoformat(lot.extended_until) <= end
            after = lot.cost if ends_inside else 0.0
            with_esu.append(None if esu is None or after is None else esu + after)
        if any("extended support" in lot.options for lot in self.lots):
            lines.append(("Extended support where sold, then the recommended option", with_esu))
        lines.append(("Retire every lot", [lot.options.get("retire") for lot in self.lots]))
        return [(name, sum(v for v in values if v is not None), sum(v is not None for v in values),
                 sum(v is None for v in values)) for name, values in lines]  # fmt: skip


def procurement_plan(store: Store, day: date, settings: Settings, costs: Costs,
                     organisation: str | None = None) -> Procurement:  # fmt: skip
    """The lots, the software that goes with replaced machines, and their costs."""
    catalogue = default_catalogue().with_policy(settings.unsupported_after)
    horizon = settings.horizon_days
    owners = {asset_id: bool(owner and owner.strip()) for asset_id, owner in store.conn.execute(
        "SELECT id, owner FROM assets")}  # fmt: skip
    verdicts: dict[tuple[str, str | None], Verdict] = {}

    def verdict(item: dict[str, Any]) -> Verdict:
        if item["kind"] == "hardware":
            return Verdict(False, "hardware past its support is replaced, never upgraded")
        key = (item["product"], item["cycle"])
        if key not in verdicts:
            verdicts[key] = in_place(item["product"], item["cycle"], day, catalogue)
        return verdicts[key]

    members: dict[tuple[str, str, str], list[tuple[dict[str, Any], int]]] = defaultdict(list)
    riders: dict[tuple[str, str, str], list[tuple[dict[str, Any], int]]] = defaultdict(list)
    machine_of: dict[int, tuple[str, str, str]] = {}  # asset -> the lot that replaces it
    for asset_id, found in identities.read(store).items():
        hardware = [i for i in found.hardware if i.get("cycle") and _legacy(i, day, horizon)]
        os_item = found.os if found.os is not None and _legacy(found.os, day, horizon) else None
        # A program packaged by the distribution goes with the OS: upgrading the OS is the remedy.
        software = [s for s in found.software if not s["packaged_by"] and _legacy(s, day, horizon)]
        machine = hardware[0] if hardware else os_item if os_item and not verdict(os_item).upgrade else None
        for item in [*hardware, *([os_item] if os_item else []), *software]:
            key = _lot_key(item, found.category)
            if machine is not None and item is not machine and item["kind"] != "hardware":
                riders[key].append((item, asset_id))
            else:
                members[key].append((item, asset_id))
                if item is machine:
                    machine_of[asset_id] = key
    built = [(key, _lot(key, group, owners, verdict(group[0][0]), costs, day)) for key, group in members.items()]
    built.sort(key=lambda pair: (pair[1].earliest_eol or "9999", pair[1].title, pair[1].category))
    number = {key: n for n, (key, _) in enumerate(built, 1)}
    lots = [lot for _, lot in built]
    for key, lot in built:
        lot.number = number[key]
    components = []
    for key, group in riders.items():
        items = [i for i, _ in group]
        eols = sorted(i["eol_date"] for i in items if i["eol_date"])
        machines = sorted({number[machine_of[a]] for _, a in group if machine_of.get(a) in number})
        components.append(Component(items[0]["product"], items[0]["cycle"], clean(items[0]["label"], 80), key[2],
                                    len({a for _, a in group}), eols[0] if eols else None, machines))  # fmt: skip
    components.sort(key=lambda c: (c.title, c.category))
    return Procurement(day, costs, lots, components, organisation)


def _lot_key(item: dict[str, Any], asset_category: str) -> tuple[str, str, str]:
    """(price key, release, category): hardware is priced per family (`slug.cycle`); software takes the
    category its identity gives (Office is end-user software wherever it runs), an OS or a box its machine's."""
    if item["kind"] == "hardware":
        return f"{item['product']}.{item['cycle']}", item["cycle"], asset_category
    category = asset_category
    if item["kind"] not in ("os", "firmware"):
        category = REPORT_CATEGORY.get(item.get("category") or "", asset_category)
    return item["product"], item["cycle"] or item["label"], category


def _lot(key: tuple[str, str, str], members: list[tuple[dict[str, Any], int]], owners: dict[int, bool],
         verdict: Verdict, costs: Costs, day: date) -> Lot:  # fmt: skip
    product, _, category = key
    items = [i for i, _ in members]
    first = items[0]
    hardware = first["kind"] == "hardware"
    assets = {a for _, a in members}
    quantity = len(assets)
    eols = sorted(i["eol_date"] for i in items if i["eol_date"])  # "one of" has none: never its first date
    extended = sorted(i["extended_until"] for i in items if i["extended_until"])
    blockers = []
    unowned = sum(1 for a in assets if not owners.get(a, False))
    if unowned:
        blockers.append(f"{unowned} without an owner")
    if not hardware and not verdict.upgrade and not any(i["upgrade_path"] for i in items):  # rules/facts.py
        blockers.append("no supported release of this product")
    if any(i["kev_count"] for i in items):
        blockers.append("exploited vulnerabilities (CISA KEV) in this product family")
    release = [f"{product}.{first['cycle']}"] if first["cycle"] else []
    keys = [product, product.split(".")[0]] if hardware else [*release, product]  # most specific first
    options: dict[str, float | None] = {}
    price_from: dict[str, str | None] = {}
    for option in ("upgrade", "replace", "retire"):
        if option == "upgrade" and not verdict.upgrade:
            continue
        unit, price_from[option] = costs.price(keys, option)
        options[option] = None if unit is None else unit * quantity
    if extended and date.fromisoformat(extended[-1]) > day:  # extended support still on sale
        years = min(costs.horizon_years, max(1, -(-(date.fromisoformat(extended[-1]) - day).days // 365)))
        unit, _ = costs.price(keys, "esu_per_year")
        options["extended support"] = None if unit is None else unit * quantity * years
    recommended = "upgrade" if verdict.upgrade else "replace"
    fy = max(financial_year(date.fromisoformat(eols[0])) if eols else "", financial_year(day))
    return Lot(
        number=0, product=product, cycle=first["cycle"], title=clean(_lot_title(first), 80), category=category,
        quantity=quantity, earliest_eol=eols[0] if eols else None, extended_until=extended[-1] if extended else None,
        states=sorted({i["lifecycle_state"] for i in items}), blockers=blockers, path=verdict.text,
        options=options, recommended=recommended, cost=options.get(recommended), price_from=price_from[recommended],
        financial_year=fy,
    )  # fmt: skip


def _legacy(item: dict[str, Any], day: date, horizon: int) -> bool:
    """End of life, extended support only, or a known end within the planning horizon."""
    eol = item["eol_date"]
    soon = eol is not None and (date.fromisoformat(eol) - day).days <= horizon
    return bool(item["lifecycle_state"] in LEGACY_STATES or (item["lifecycle_state"] != "unknown" and soon))


def _lot_title(item: dict[str, Any]) -> str:
    """A lot's name: the release as people know it; for hardware the family and what it is, with its end of
    sale ("Catalyst 3560G hardware (end of sale 2013-01-30)"), as a buyer needs it."""
    if item["kind"] != "hardware":
        return str(item["label"])
    sale = f" (end of sale {item['end_of_sale']})" if item.get("end_of_sale") else ""
    return f"{item.get('family') or item['title']} hardware{sale}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _long_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"  # 7 December 2026, as British documents write it


def procurement_document(plan: Procurement) -> Document:
    """The section as a document: summary by financial year, cost of ownership per option, the lots, their
    options and prices, the software that goes with replaced machines, and the sources."""
    costs, lots, day = plan.costs, plan.lots, plan.day
    money = costs.money
    sums = plan.totals()
    doc = Document(f"Legacy technology: replacement lots ({day.isoformat()})", author=plan.organisation)
    prepared = f"Prepared for {plan.organisation} by posture" if plan.organisation else "Prepared by posture"
    doc.paragraph(f"{prepared} on {_long_date(day)}.")
    riders = sum(c.quantity for c in plan.components)
    doc.paragraph(
        f"{_count(len(lots), 'lot')} covering {_count(sum(lot.quantity for lot in lots), 'unit')} of technology "
        "that is past end of "
        "life, on paid extended support only, or reaches end of life within the planning horizon. A lot is "
        "upgraded only where the vendor supports an in-place upgrade to a release that is supported today; "
        "otherwise it is replaced. Prices come from the council's cost table "
        f"({costs.currency}); posture invents none."
        + (f" {_count(riders, 'end-of-life program')} on machines that are replaced go with the machine (listed "
           "below) and are not costed again." if riders else "")
    )  # fmt: skip
    doc.heading("Summary by financial year (April to March)")
    years = sums["by_financial_year"]
    doc.table(
        ["Financial year", "Lots", "Units", "Lots without a price", "Upgrade", "Replace", "Total"],
        [*([fy, f"{v['lots']:.0f}", f"{v['units']:.0f}", f"{v.get('unpriced', 0.0):.0f}",
            money(v.get("upgrade", 0.0)), money(v.get("replace", 0.0)), money(v.get("total", 0.0))]
           for fy, v in years.items()),
         ["Total", str(len(lots)), str(sum(lot.quantity for lot in lots)), str(sums["unpriced_lots"]),
          money(sum(v.get("upgrade", 0.0) for v in years.values())),
          money(sum(v.get("replace", 0.0) for v in years.values())), money(sums["total"])]],
        numeric=(1, 2, 3, 4, 5, 6), total=True, together=True,
    )  # fmt: skip
    if sums["unpriced_lots"]:
        doc.paragraph(f"{_count(sums['unpriced_lots'], 'lot')} without a price in the cost table "
                      f"{'is' if sums['unpriced_lots'] == 1 else 'are'} not in these totals.")
    doc.heading(f"Total cost of ownership over {costs.horizon_years} years, per option")
    doc.table(["Option", "Lots priced", "Lots without a price", "Total"],
              [[name, str(priced), str(unpriced), money(total)] for name, total, priced, unpriced in plan.tco()],
              numeric=(1, 2, 3), together=True)  # fmt: skip
    doc.heading("Lots")
    doc.table(
        ["No.", "Lot", "Category", "Units", "End of support", "Action", "Cost", "Financial year", "Why"],
        [[str(lot.number), lot.title, lot.category, str(lot.quantity), lot.earliest_eol or "unknown",
          lot.recommended, money(lot.cost), lot.financial_year, "; ".join([lot.path, *lot.blockers])]
         for lot in lots],
        numeric=(0, 3, 6),
    )  # fmt: skip
    doc.heading("Options and prices per lot")
    doc.table(
        ["No.", "Lot", "Upgrade", "Replace", "Retire", "Extended support", "Priced from"],
        [[str(lot.number), lot.title, money(lot.options["upgrade"]) if "upgrade" in lot.options else "no path",
          money(lot.options["replace"]), money(lot.options["retire"]),
          (f"{money(lot.options['extended support'])} until {lot.extended_until}"
           if "extended support" in lot.options else "not sold"),
          _price_key(lot.price_from)] for lot in lots],
        numeric=(0, 2, 3, 4), together=len(lots) <= SHORT_TABLE,
    )  # fmt: skip
    if plan.sector_source is not None:
        doc.heading("Joint purchase with other councils")
        doc.paragraph(f"From the pooled sector data ({plan.sector_source}): councils with the same release "
                      "ending in the same financial year as a lot. Numbers are ranges, and only releases that "
                      "enough councils share are published in the pooled data.")  # fmt: skip
        shared = [[str(lot.number), lot.title, plan.sector[lot.number]] for lot in lots if lot.number in plan.sector]
        if shared:  # a table: kept with its introduction on one page, and pasted whole into a buyer's document
            doc.table(["Lot", "Release", "Other councils in the pooled data"], shared, numeric=(0,),
                      together=len(shared) <= SHORT_TABLE)  # fmt: skip
        else:
            doc.paragraph("No lot's release ends in the same financial year for other councils in the pooled data.")
    if plan.components:
        doc.heading("Goes with a replaced machine")
        doc.paragraph("End-of-life software on machines that the lots above replace. It is not costed again: "
                      "include it in those machines' replacement (a supported version, or its successor).")
        doc.table(["Software", "Category", "Units", "End of support", "Goes with lot"],
                  [[c.title, c.category, str(c.quantity), c.earliest_eol or "unknown",
                    ", ".join(map(str, c.machines))] for c in plan.components], numeric=(2,),
                  together=len(plan.components) <= SHORT_TABLE)  # fmt: skip
    doc.heading("Sources")
    doc.paragraph(
        f"Inventory and findings: posture, judged on {day.isoformat()}. Lifecycle dates: endoflife.date as of "
        f"{default_catalogue().data_date} (MIT licence). Exploited vulnerabilities: CISA KEV catalogue "
        f"{default_kev().version} (CC0). In-place upgrade paths: posture's {PATHS_FILE.name}, from the vendors' "
        f"upgrade documentation. Prices: {costs.source or 'no cost table given'}."
        + (f" Sector data: {plan.sector_source} (posture share aggregate)." if plan.sector_source else "")
    )
    return doc


def sector_lines(lots: list[Lot], rows: list[dict[str, Any]], day: date) -> dict[int, str]:
    """Lot number -> a line when the pooled sector data (`posture share aggregate`'s pooled.json rows) has
    other councils with the lot's release ending in the lot's financial year: a joint purchase may be
    possible. A pooled row's year is reckoned as a lot's is: its end of life's year, or this one when past.
    Where several categories match, the lot's own category first, then the most devices."""
    current = financial_year(day)
    index: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["cycle"] is not None:  # a row without a release cannot be the same need
            product = f"{row['product']}.{row['cycle']}" if row["kind"] == "hardware" else row["product"]
            index[product, row["cycle"]].append(row)
    lines = {}
    for lot in lots:
        same = [r for r in index.get((lot.product, lot.cycle or ""), [])
                if max(r["eol_financial_year"] or "", current) == lot.financial_year]  # fmt: skip
        if same:
            best = max(same, key=lambda r: (r["category"] == lot.category, r["count_min"]))
            devices = span(best["count_min"], best["count_max"])
            when = ("ending in" if best["eol_financial_year"] == lot.financial_year
                    else "past its end, due in")  # fmt: skip
            lines[lot.number] = (f"{best['organisations']} councils also have {clean(best['release'], 80)} "
                                 f"{when} {lot.financial_year} ({devices} devices): a joint purchase may be "
                                 "possible")  # fmt: skip
    return lines


def _price_key(key: str | None) -> str:
    return "no price" if key is None else "[default]" if key == "default" else key


def lots_rows(plan: Procurement) -> tuple[list[str], list[list[str]]]:
    """The lots flattened for CSV, then the software that goes with replaced machines (recommended
    "with the machine", no cost, `goes_with` naming the lots that replace its machines); `sector`: the pooled
    data's line for a lot (`--sector`), else empty."""
    header = ["number", "product", "cycle", "title", "category", "quantity", "earliest_eol", "extended_until",
              "recommended", "cost", "financial_year", "upgrade", "replace", "retire", "extended_support",
              "path", "blockers", "goes_with", "sector"]  # fmt: skip

    def amount(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    rows = [[str(lot.number), lot.product, lot.cycle or "", lot.title, lot.category, str(lot.quantity),
             lot.earliest_eol or "", lot.extended_until or "", lot.recommended, amount(lot.cost), lot.financial_year,
             *(amount(lot.options.get(o)) for o in ("upgrade", "replace", "retire", "extended support")),
             lot.path, "; ".join(lot.blockers), "", plan.sector.get(lot.number, "")] for lot in plan.lots]  # fmt: skip
    rows += [["", c.product, c.cycle or "", c.title, c.category, str(c.quantity), c.earliest_eol or "", "",
              WITH_MACHINE, "", "", "", "", "", "", "", "", " ".join(map(str, c.machines)), ""]
             for c in plan.components]  # fmt: skip
    return header, rows
