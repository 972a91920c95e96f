"""The lifecycle catalogue: release cycles of products and the dates their support ends.

Data: endoflife.date (MIT; `rules/data/eol/LICENSE-endoflife.date.txt`, provenance in `SOURCE.md`).
Its date columns mean different things per product (`columns.*.label`): `eol` is "Security Support" for
Windows, "Maintenance Support" for RHEL, "Premier Support" for Oracle Database; `eoes` is paid extended
support (Microsoft ESU, RHEL ELS, SLES LTSS, Ubuntu ESM) except where `FREE_EXTENDED` says otherwise. The
state machine below reads every product the same way:

    before eoas             supported
    eoas .. eol             security-only
    eol .. eoes             extended (paid) -- or security-only where the extension is free
    after eoes (or eol)     end-of-life
    no dates at all         unknown

A date of `true` means "passed, day unknown"; `false` means "no date set yet". Dates are compared with the
day of the run, never with the data's snapshot date, which every report shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data" / "eol"
FREE_EXTENDED = frozenset({"debian"})  # Debian LTS is community-run and free


class Lifecycle(StrEnum):
    SUPPORTED = "supported"
    SECURITY_ONLY = "security-only"
    EXTENDED = "extended"
    END_OF_LIFE = "end-of-life"
    UNKNOWN = "unknown"


DateField = date | bool | None


def _date(value: Any) -> DateField:
    if isinstance(value, bool) or value is None:
        return value
    return date.fromisoformat(str(value))


def _passed(value: DateField, today: date) -> bool:
    return value is True or (isinstance(value, date) and value <= today)


@dataclass(frozen=True)
class Cycle:
    product: str
    name: str
    label: str
    release: DateField
    eoas: DateField
    eol: DateField
    eoes: DateField
    latest: str | None
    lts: bool

    @classmethod
    def from_record(cls, product: str, record: dict[str, Any]) -> Cycle:
        return cls(
            product=product,
            name=str(record["releaseCycle"]),
            label=str(record.get("label") or record["releaseCycle"]),
            release=_date(record.get("releaseDate")),
            eoas=_date(record.get("eoas")),
            eol=_date(record.get("eol")),
            eoes=_date(record.get("eoes")),
            latest=str(record["latest"]) if record.get("latest") else None,
            lts=bool(record.get("lts")),
        )


@dataclass(frozen=True)
class Status:
    """A cycle's state on a day, with the date that matters next."""

    state: Lifecycle
    eol_date: date | None  # end of the support that costs nothing extra (None: not set or not known)
    extended_until: date | None  # end of paid extended support, when that is what is left
    days_to_eol: int | None


def status(cycle: Cycle, today: date, free_extended: bool = False) -> Status:
    eol = cycle.eol if isinstance(cycle.eol, date) else None
    eoes = cycle.eoes if isinstance(cycle.eoes, date) else None
    days = (eol - today).days if eol else None
    if cycle.eol is None and cycle.eoas is None and cycle.eoes is None:
        return Status(Lifecycle.UNKNOWN, None, None, None)
    if _passed(cycle.eol, today):
        extension_open = cycle.eoes is False or (eoes is not None and eoes > today)
        if extension_open:
            if free_extended:
                return Status(Lifecycle.SECURITY_ONLY, eoes, None, (eoes - today).days if eoes else None)
            return Status(Lifecycle.EXTENDED, eol, eoes, days)
        return Status(Lifecycle.END_OF_LIFE, eol or eoes, None, days)
    if _passed(cycle.eoas, today):
        return Status(Lifecycle.SECURITY_ONLY, eol, None, days)
    return Status(Lifecycle.SUPPORTED, eol, None, days)


@dataclass(frozen=True)
class Product:
    slug: str
    title: str
    category: str
    cpes: tuple[str, ...]
    labels: dict[str, str]  # what each date column means for this product
    cycles: tuple[Cycle, ...]  # newest first, as upstream lists them

    def cycle(self, name: str) -> Cycle | None:
        wanted = name.strip().lower()
        return next((c for c in self.cycles if c.name.lower() == wanted or c.label.lower() == wanted), None)

    def status(self, cycle: Cycle, today: date) -> Status:
        return status(cycle, today, free_extended=self.slug in FREE_EXTENDED)


@dataclass(frozen=True)
class Catalogue:
    products: dict[str, Product]
    data_date: str  # when the source data was taken (shown in every report)
    source: str

    def product(self, slug: str) -> Product | None:
        return self.products.get(slug.strip().lower())


def load_catalogue(directory: Path = DATA_DIR) -> Catalogue:
    index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    products: dict[str, Product] = {}
    for entry in index["products"]:
        record = json.loads((directory / f"{entry['slug']}.json").read_text(encoding="utf-8"))
        products[record["slug"]] = Product(
            slug=record["slug"],
            title=record["title"],
            category=record.get("category", ""),
            cpes=tuple(entry.get("cpe") or ()),
            labels={k: v["label"] for k, v in record.get("columns", {}).items() if v.get("shown")},
            cycles=tuple(Cycle.from_record(record["slug"], r) for r in record["releases"]),
        )
    return Catalogue(products, str(index.get("commitDate", ""))[:10], str(index.get("source", "")))


@cache
def default_catalogue() -> Catalogue:
    return load_catalogue()
