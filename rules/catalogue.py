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

from scanner.safefs import make_dirs, write_atomic

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


class CatalogueError(ValueError):
    """A catalogue file that cannot be trusted; the message names the file, product, cycle and field."""


DATE_FIELDS = ("releaseDate", "eoas", "eol", "eoes")


def parse_product(record: dict[str, Any], cpes: tuple[str, ...] = (), where: str = "") -> Product:
    """One product in endoflife.date's extract format, every date checked."""
    try:
        slug = str(record["slug"])
        releases = record["releases"]
    except (KeyError, TypeError) as exc:
        raise CatalogueError(f"{where}: a product needs 'slug' and 'releases'") from exc
    cycles = []
    for n, release in enumerate(releases):
        name = release.get("releaseCycle") if isinstance(release, dict) else None
        if name is None:
            raise CatalogueError(f"{where}: {slug} release #{n + 1} has no releaseCycle")
        for key in DATE_FIELDS:
            value = release.get(key)
            if value is None or isinstance(value, bool):
                continue
            try:
                date.fromisoformat(str(value))
            except ValueError as exc:
                raise CatalogueError(f"{where}: {slug} cycle {name}: {key} {str(value)[:40]!r} is not a date") from exc
        cycles.append(Cycle.from_record(slug, release))
    return Product(
        slug=slug,
        title=str(record.get("title") or slug),
        category=str(record.get("category", "")),
        cpes=tuple(cpes)
        or tuple(i["cpe"] for i in record.get("identifiers", []) if isinstance(i, dict) and "cpe" in i),
        labels={k: v["label"] for k, v in record.get("columns", {}).items() if isinstance(v, dict) and v.get("shown")},
        cycles=tuple(cycles),
    )


def load_catalogue(directory: Path = DATA_DIR, overrides: Path | None = None) -> Catalogue:
    """The bundled data, with any products refreshed by `posture catalogue update` laid over it."""
    index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    products: dict[str, Product] = {}
    for entry in index["products"]:
        path = directory / f"{entry['slug']}.json"
        products[entry["slug"]] = parse_product(
            json.loads(path.read_text(encoding="utf-8")), tuple(entry.get("cpe") or ()), path.name
        )
    data_date = str(index.get("commitDate", ""))[:10]
    if overrides is not None and (overrides / "updates.json").exists():
        updates = json.loads((overrides / "updates.json").read_text(encoding="utf-8"))
        for slug, meta in updates.items():
            path = overrides / f"{slug}.json"
            product = parse_product(
                json.loads(path.read_text(encoding="utf-8")), products[slug].cpes if slug in products else (), path.name
            )
            products[slug] = product
            data_date = max(data_date, str(meta.get("data_date", ""))[:10])
    return Catalogue(products, data_date, str(index.get("source", "")))


def overrides_dir() -> Path:
    from scanner.paths import data_dir

    return data_dir() / "catalogue"


def update_catalogue(file: Path, data_date: str) -> list[str]:
    """Check an endoflife.date product file (one product, or a list) and lay it over the bundled data."""
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{file}: not a readable JSON file ({exc})") from exc
    records = document if isinstance(document, list) else [document]
    products = [parse_product(r, where=file.name) for r in records]
    target = overrides_dir()
    make_dirs(target)
    updates_path = target / "updates.json"
    updates = json.loads(updates_path.read_text(encoding="utf-8")) if updates_path.exists() else {}
    for record, product in zip(records, products, strict=True):
        _write(target / f"{product.slug}.json", json.dumps(record))
        updates[product.slug] = {"data_date": data_date, "source": str(file)}
    _write(updates_path, json.dumps(updates, indent=2))
    default_catalogue.cache_clear()
    return [p.slug for p in products]


def _write(path: Path, text: str) -> None:
    """Replace a file whole (a crash leaves the old one), so the catalogue is never half-written."""
    write_atomic(path, text.encode())


@cache
def default_catalogue() -> Catalogue:
    return load_catalogue(overrides=overrides_dir())
