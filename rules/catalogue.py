"""The lifecycle catalogue: release cycles of products and the dates their support ends.

Data: endoflife.date's 464 products (MIT; `rules/data/eol/LICENSE-endoflife.date.txt`, provenance in
`SOURCE.md`), and sourced tables for what it lacks (`rules/data/lifecycle/`: Junos, Cisco IOS, ASA, NX-OS
and hardware, NetApp 7-Mode, old Linux kernels, ...; every row with its source, a quote and how solid it
is). Every cycle keeps where its dates came from (`Provenance`), so a verdict can be checked before anyone
acts on it. A lifecycle date may be a month (`2019-03`, `datePrecision`); it counts as passed only once
the month is over.
Its date columns mean different things per product (`columns.*.label`): `eol` is "Security Support" for
Windows, "Maintenance Support" for RHEL, "Premier Support" for Oracle Database; `eoes` is paid extended
support (Microsoft ESU, RHEL ELS, SLES LTSS, Ubuntu ESM) except where `FREE_EXTENDED` says otherwise. The
state machine below reads every product the same way:

    before eoas             supported (no-end-announced when the vendor has set no end: `eol: false`)
    eoas .. eol             security-only
    eol .. eoes             extended (paid) -- or security-only where the extension is free
    after eoes (or eol)     end-of-life
    no dates at all         unknown

A date of `true` means "passed, day unknown"; `false` means "no date set yet". Dates are compared with the
day of the run, never with the data's snapshot date, which every report shows.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from scanner.compat import StrEnum
from scanner.safefs import make_dirs, write_atomic

DATA_DIR = Path(__file__).parent / "data" / "eol"
LIFECYCLE_DIR = Path(__file__).parent / "data" / "lifecycle"
# Tables that complete an endoflife.date product rather than being one: their rows join its cycles (a cycle
# both list is completed field by field, the table's provenance kept).
ADDENDA = {"windows-esu-addendum": "windows", "windows-service-packs": "windows", "linux-legacy": "linux"}
FREE_EXTENDED = frozenset({"debian"})  # Debian LTS is community-run and free


class Lifecycle(StrEnum):
    SUPPORTED = "supported"
    NO_END_ANNOUNCED = "no-end-announced"  # supported, no end date set by the vendor (not the same as unknown)
    SECURITY_ONLY = "security-only"
    EXTENDED = "extended"
    END_OF_LIFE = "end-of-life"
    UNKNOWN = "unknown"


DateField = date | bool | None


def _date(value: Any) -> DateField:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value)
    if len(text) == 7:  # a month (checked by the loader against datePrecision): passed once it is over
        year, month = int(text[:4]), int(text[5:])
        return date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return date.fromisoformat(text)


def _passed(value: DateField, today: date) -> bool:
    return value is True or (isinstance(value, date) and value <= today)


@dataclass(frozen=True)
class Provenance:
    """Where a cycle's dates came from, so a security lead can check one before acting on it."""

    source: str  # a URL, or repository/path@commit
    kind: str  # vendor, third-party, third-party proposal, vendor policy
    detail: str = ""  # the source's own description ("third-party (Greenbone os_eol.inc; cites cisco.com ...)")
    quote: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v}


def source_kind(text: str) -> str:
    """The kind of a source, from the tables' free-text `sourceKind`."""
    lowered = text.lower()
    if "proposal" in lowered:
        return "third-party proposal"
    if "policy" in lowered:
        return "vendor policy"
    return "vendor" if lowered.startswith("vendor") else "third-party"


@dataclass(frozen=True)
class Cycle:
    product: str
    name: str
    label: str
    release: DateField
    eoas: DateField  # end of active support (for Cisco: end of software maintenance)
    eol: DateField  # end of the support the product's `eol` column names (usually security support)
    eoes: DateField  # end of extended support, usually paid
    latest: str | None
    lts: bool
    discontinued: DateField = None  # end of sale (hardware, Cisco software)
    ldos: DateField = None  # Cisco's last date of support
    months: frozenset[str] = frozenset()  # date fields known only to the month
    provenance: Provenance | None = None  # the row's own source; None: the product's (`Product.provenance`)
    pid_prefixes: tuple[str, ...] = ()  # hardware: the model numbers (PIDs, SKUs) a row covers
    also: tuple[Provenance, ...] = ()  # sources of dates a table added to this cycle (Windows 7 SP1's ESU end)

    @classmethod
    def from_record(cls, product: str, record: dict[str, Any]) -> Cycle:
        source = record.get("source")
        provenance = None
        if source:
            detail = str(record.get("sourceKind") or "")
            provenance = Provenance(str(source), source_kind(detail), detail, record.get("quote"), record.get("note"))
        return cls(
            product=product,
            name=str(record["releaseCycle"]),
            label=_label(record),
            release=_date(record.get("releaseDate")),
            eoas=_date(record.get("eoas")),
            eol=_date(record.get("eol")),
            eoes=_date(record.get("eoes")),
            latest=str(record["latest"]) if record.get("latest") else None,
            lts=bool(record.get("lts")),
            discontinued=_date(record.get("discontinued")),
            ldos=_date(record.get("lastDateOfSupport")),
            months=frozenset(k for k, v in (record.get("datePrecision") or {}).items() if v == "month"),
            provenance=provenance,
            pid_prefixes=tuple(str(p) for p in record.get("pidPrefixes") or ()),
        )

    def shown(self, name: str) -> str | None:
        """A date field as a person reads it: the day, the month where only that is known, or passed/unset."""
        value = getattr(self, name)
        if isinstance(value, date):
            return value.isoformat()[:7] if FIELD_OF.get(name, name) in self.months else value.isoformat()
        return {True: "passed (day not published)", False: "not announced", None: None}[value]


def _label(record: dict[str, Any]) -> str:
    """The cycle's display name; a few endoflife.date labels are unrendered Liquid templates
    (`{{'6.1.9'|split:'.'|pop|join:'.'}} TL...` for AIX): those read as the cycle's name instead."""
    label = str(record.get("label") or record["releaseCycle"])
    return str(record["releaseCycle"]) if "{{" in label or "{%" in label else label


FIELD_OF = {"release": "releaseDate", "ldos": "lastDateOfSupport"}  # Cycle attribute -> the file's field name


@dataclass(frozen=True)
class Status:
    """A cycle's state on a day, with the date that matters next."""

    state: Lifecycle
    eol_date: date | None  # end of the support that costs nothing extra (None: not set or not known)
    extended_until: date | None  # end of paid extended support, when that is what is left
    days_to_eol: int | None


POLICIES = {  # [lifecycle] unsupported_after: which milestone a council counts as "unsupported"
    "security": "the end of security support",
    "maintenance": "the end of maintenance (bug fixes)",
    "last-date-of-support": "the vendor's last date of support where one is published (Cisco LDoS)",
}
DEFAULT_POLICY = "security"


def status(cycle: Cycle, today: date, free_extended: bool = False, policy: str = DEFAULT_POLICY) -> Status:
    """A cycle's state on `today` under the council's policy (POLICIES): which milestone ends support."""
    end, active = cycle.eol, cycle.eoas
    if policy == "maintenance" and cycle.eoas is not None:
        end, active = cycle.eoas, None  # the end of maintenance is the end: no security-only stage
    elif policy == "last-date-of-support" and cycle.ldos is not None:
        end = cycle.ldos
    eol = end if isinstance(end, date) else None
    eoes = cycle.eoes if isinstance(cycle.eoes, date) else None
    days = (eol - today).days if eol else None
    if end is None and active is None and cycle.eoes is None:
        return Status(Lifecycle.UNKNOWN, None, None, None)
    if _passed(end, today):
        extension_open = cycle.eoes is False or (eoes is not None and eoes > today)
        if extension_open:
            if free_extended:
                return Status(Lifecycle.SECURITY_ONLY, eoes, None, (eoes - today).days if eoes else None)
            return Status(Lifecycle.EXTENDED, eol, eoes, days)
        return Status(Lifecycle.END_OF_LIFE, eol or eoes, None, days)
    if _passed(active, today):
        return Status(Lifecycle.SECURITY_ONLY, eol, None, days)
    if eol is None:  # supported, and the vendor has set no end (`false`): known, not unknown
        return Status(Lifecycle.NO_END_ANNOUNCED, None, None, None)
    return Status(Lifecycle.SUPPORTED, eol, None, days)


ENDOFLIFE = "endoflife.date"
ENDOFLIFE_DETAIL = "endoflife.date (community-maintained, MIT)"


@dataclass(frozen=True)
class Product:
    slug: str
    title: str
    category: str
    cpes: tuple[str, ...]
    labels: dict[str, str]  # what each date column means for this product
    cycles: tuple[Cycle, ...]  # newest first, as upstream lists them
    provenance: Provenance | None = None  # where the cycles without their own source came from
    source: str = ENDOFLIFE  # the data set: endoflife.date or posture's lifecycle tables (`Catalogue.sources`)
    policy: str = DEFAULT_POLICY  # the milestone that ends support (`Catalogue.with_policy`)

    def cycle(self, name: str) -> Cycle | None:
        wanted = name.strip().lower()
        return next((c for c in self.cycles if c.name.lower() == wanted or c.label.lower() == wanted), None)

    def status(self, cycle: Cycle, today: date) -> Status:
        return status(cycle, today, free_extended=self.slug in FREE_EXTENDED, policy=self.policy)

    def provenance_of(self, cycle: Cycle) -> Provenance | None:
        return cycle.provenance or self.provenance


@dataclass(frozen=True)
class Catalogue:
    products: dict[str, Product]
    data_date: str  # when the source data was taken (shown in every report)
    source: str
    sources: dict[str, str] = field(default_factory=dict)  # data set -> its date (`catalogue list` shows each)
    policy: str = DEFAULT_POLICY
    vendor_policies: dict[str, VendorPolicy] = field(default_factory=dict)  # product slug -> its vendor's rule

    def with_policy(self, policy: str) -> Catalogue:
        """The catalogue judging every cycle under the council's policy (`[lifecycle] unsupported_after`)."""
        if policy not in POLICIES:
            raise CatalogueError(f"unknown lifecycle policy {policy[:40]!r} (one of {', '.join(POLICIES)})")
        if policy == self.policy:
            return self
        products = {slug: replace(p, policy=policy) for slug, p in self.products.items()}
        return replace(self, products=products, policy=policy)

    def product(self, slug: str) -> Product | None:
        return self.products.get(slug.strip().lower())

    def hardware(self, model: str) -> tuple[Product, Cycle] | None:
        """The hardware row whose model prefix (a Cisco PID, a Juniper SKU) the model starts with, longest
        prefix first: "WS-C2960X-48FPD-L" is a Catalyst 2960-X."""
        wanted = model.strip().upper()
        best: tuple[int, Product, Cycle] | None = None
        for product in self.products.values():
            for cycle in product.cycles:
                for prefix in cycle.pid_prefixes:
                    if wanted.startswith(prefix.upper()) and (best is None or len(prefix) > best[0]):
                        best = (len(prefix), product, cycle)
        return (best[1], best[2]) if best else None


class CatalogueError(ValueError):
    """A catalogue file that cannot be trusted; the message names the file, product, cycle and field."""


# Date-valued fields of a release row, as the files spell them; a month (YYYY-MM) only where `datePrecision`
# says so.
DATE_FIELDS = ("releaseDate", "eoas", "eol", "eoes", "discontinued", "lastDateOfSupport", "latestReleaseDate",
               "technicalGuidance", "announced", "endOfVulnSecuritySupport", "armBegin", "oneYearSupportLastOrderDay",
               "esuYear3Begins")  # fmt: skip
TEXT_FIELDS = ("releaseCycle", "label", "latest", "codename", "source", "quote", "sourceKind", "sourceAlt",
               "vendorUrlCited", "note", "ltsSource", "ltsQuote", "quoteAlt", "conflict")  # fmt: skip
RELEASE_FIELDS = frozenset({*DATE_FIELDS, *TEXT_FIELDS, "lts", "datePrecision", "pidPrefixes"})
PRODUCT_FIELDS = frozenset({"slug", "sourceFile", "title", "category", "group", "alternateSlugs", "identifiers",
                            "columns", "releasePolicyLink", "releases", "draftNotes"})  # fmt: skip


def _check_release(release: Any, n: int, slug: str, where: str) -> str:
    """A release row's problems, each naming file, product, cycle and field; its cycle name when sound."""
    if not isinstance(release, dict) or release.get("releaseCycle") in (None, ""):
        raise CatalogueError(f"{where}: {slug} release #{n + 1} has no releaseCycle")
    name = str(release["releaseCycle"])
    at = f"{where}: {slug} cycle {name[:40]}"
    unknown = sorted(set(release) - RELEASE_FIELDS)
    if unknown:
        raise CatalogueError(f"{at}: unknown field {unknown[0][:40]!r}")
    precision = release.get("datePrecision") or {}
    if not isinstance(precision, dict) or any(k not in DATE_FIELDS or v not in ("day", "month")
                                              for k, v in precision.items()):  # fmt: skip
        raise CatalogueError(f"{at}: datePrecision must map date fields to 'day' or 'month'")
    for key in DATE_FIELDS:
        value = release.get(key)
        if value is None or (isinstance(value, bool) and key != "releaseDate"):
            continue
        text = str(value)
        month = precision.get(key) == "month"
        try:
            if isinstance(value, bool) or (len(text) != (7 if month else 10)):
                raise ValueError(text)
            date.fromisoformat(text + "-01" if month else text)
        except ValueError as exc:
            what = "a month (YYYY-MM)" if month else "a date (YYYY-MM-DD)"
            if not month and len(text) == 7:
                what += "; a month where a day is required (set datePrecision to say so)"
            raise CatalogueError(f"{at}: {key} {text[:40]!r} is not {what}") from exc
    prefixes = release.get("pidPrefixes")
    if prefixes is not None and (not isinstance(prefixes, list) or not all(isinstance(p, str) and p.strip()
                                                                              for p in prefixes)):  # fmt: skip
        raise CatalogueError(f"{at}: pidPrefixes must be a list of model prefixes")
    return name


def parse_product(record: dict[str, Any], cpes: tuple[str, ...] = (), where: str = "",
                  provenance: Provenance | None = None, source: str = ENDOFLIFE) -> Product:  # fmt: skip
    """One product in endoflife.date's extract format (or a lifecycle table, the same format with a source
    per row), every field checked before anything is kept."""
    if not isinstance(record, dict):
        raise CatalogueError(f"{where}: a product is a JSON object")
    try:
        slug = str(record["slug"])
        releases = record["releases"]
    except (KeyError, TypeError) as exc:
        raise CatalogueError(f"{where}: a product needs 'slug' and 'releases'") from exc
    unknown = sorted(set(record) - PRODUCT_FIELDS)
    if unknown:
        raise CatalogueError(f"{where}: {slug}: unknown field {unknown[0][:40]!r}")
    if not isinstance(releases, list):
        raise CatalogueError(f"{where}: {slug}: releases must be a list")
    seen: set[str] = set()
    for n, release in enumerate(releases):
        name = _check_release(release, n, slug, where)
        if name.lower() in seen:
            raise CatalogueError(f"{where}: {slug} cycle {name[:40]}: listed twice")
        seen.add(name.lower())
    return Product(
        slug=slug,
        title=str(record.get("title") or slug),
        category=str(record.get("category", "")),
        cpes=tuple(cpes)
        or tuple(i["cpe"] for i in record.get("identifiers", []) if isinstance(i, dict) and "cpe" in i),
        labels={k: v["label"] for k, v in record.get("columns", {}).items() if isinstance(v, dict) and v.get("shown")},
        cycles=tuple(Cycle.from_record(slug, r) for r in releases),
        provenance=provenance or Provenance(f"https://endoflife.date/{slug}", "third-party", ENDOFLIFE_DETAIL),
        source=source,
    )


LIFECYCLE = "posture lifecycle tables"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path.name}: not a readable JSON file ({exc})") from exc


def _lifecycle(directory: Path) -> tuple[list[Product], str]:
    """The sourced tables: one product per file, its provenance the product's policy page."""
    index = _read_json(directory / "index.json")
    found = []
    for name in index["files"]:
        record = _read_json(directory / name)
        link = str(record.get("releasePolicyLink") or "") if isinstance(record, dict) else ""
        policy = Provenance(link, "vendor policy", "the vendor's lifecycle policy page") if link else None
        found.append(parse_product(record, where=name, provenance=policy, source=LIFECYCLE))
    return found, str(index.get("dataDate", ""))


@dataclass(frozen=True)
class VendorPolicy:
    """A vendor's rule where it publishes no table (Arista: 36 months per EOS train; Aruba: 5 years after
    end of sale; Axis: 6 years after discontinuation), with its source."""

    vendor: str
    products: tuple[str, ...]
    months: int
    after: str  # the date field the months count from: releaseDate or discontinued
    text: str
    provenance: Provenance

    def derive(self, cycle: Cycle) -> Cycle:
        """A cycle with no end date but the date the policy counts from gets the policy's end, labelled so."""
        start = cycle.release if self.after == "releaseDate" else cycle.discontinued
        if cycle.eol is not None or not isinstance(start, date):
            return cycle
        month = start.month - 1 + self.months
        year, month = start.year + month // 12, month % 12 + 1
        end = date(year, month, min(start.day, calendar.monthrange(year, month)[1]))  # 31 March + 1 month: 30 April
        note = f"derived from the vendor's policy: {self.months} months after {self.after}"
        return replace(cycle, eol=end, provenance=replace(self.provenance, note=note))


def _policies(path: Path) -> dict[str, VendorPolicy]:
    """product slug -> its vendor's policy (rules/data/lifecycle/policies.json); each needs a source."""
    found: dict[str, VendorPolicy] = {}
    for n, entry in enumerate(_read_json(path).get("policies", [])):
        try:
            kind = str(entry["sourceKind"])
            policy = VendorPolicy(str(entry["vendor"]), tuple(entry["products"]), int(entry["months"]),
                                  str(entry["after"]), str(entry["text"]),
                                  Provenance(str(entry["source"]), "vendor policy", kind, entry.get("quote"),
                                             entry.get("note")))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogueError(f"{path.name}: policy #{n + 1} needs vendor, products, months, after, text, "
                                 f"source and sourceKind ({exc})") from exc  # fmt: skip
        if policy.after not in ("releaseDate", "discontinued") or not policy.provenance.source:
            raise CatalogueError(f"{path.name}: policy #{n + 1}: after must be releaseDate or discontinued")
        found.update(dict.fromkeys(policy.products, policy))
    return found


def _complete(base: Product, addendum: Product) -> Product:
    """An endoflife.date product with a table's rows joined: a cycle both list takes the table's dates
    where it has them (its source listed in `also`), a cycle only the table lists is added after the others."""
    cycles = list(base.cycles)
    for extra in addendum.cycles:
        extra = replace(extra, product=base.slug)
        at = next((n for n, c in enumerate(cycles) if c.name == extra.name), None)
        if at is None:
            cycles.append(extra)
            continue
        mine = cycles[at]  # only dates join: a table's `false` ("no ESU") must not read as "not announced yet"
        changes = {k: getattr(extra, k) for k in ("release", "eoas", "eol", "eoes", "discontinued", "ldos")
                   if isinstance(getattr(extra, k), date)}  # fmt: skip
        if changes:
            also = (*mine.also, extra.provenance) if extra.provenance else mine.also
            cycles[at] = replace(mine, **changes, months=mine.months | extra.months, also=also)
    return replace(base, cycles=tuple(cycles))


def load_catalogue(directory: Path = DATA_DIR, overrides: Path | None = None,
                   lifecycle: Path | None = LIFECYCLE_DIR) -> Catalogue:  # fmt: skip
    """The bundled data (endoflife.date, then the sourced tables), with any products refreshed by
    `posture catalogue update` laid over it. Any bad file stops the load: nothing is half loaded."""
    index = _read_json(directory / "index.json")
    products: dict[str, Product] = {}
    for entry in index["products"]:
        path = directory / f"{entry['slug']}.json"
        products[entry["slug"]] = parse_product(_read_json(path), tuple(entry.get("cpe") or ()), path.name)
    data_date = str(index.get("commitDate", ""))[:10]
    sources = {ENDOFLIFE: data_date}
    vendor_policies: dict[str, VendorPolicy] = {}
    if lifecycle is not None and (lifecycle / "index.json").exists():
        tables, tables_date = _lifecycle(lifecycle)
        sources[LIFECYCLE] = tables_date
        if (lifecycle / "policies.json").exists():
            vendor_policies = _policies(lifecycle / "policies.json")
        for table in tables:
            target = ADDENDA.get(table.slug)
            if target is not None and target in products:
                products[target] = _complete(products[target], table)
            else:
                products[table.slug] = table
    if overrides is not None and (overrides / "updates.json").exists():
        updates = _read_json(overrides / "updates.json")
        for slug, meta in updates.items():
            path = overrides / f"{slug}.json"
            known = products.get(slug)
            record = _read_json(path)
            sourced = isinstance(record, dict) and any(isinstance(r, dict) and r.get("source")
                                                       for r in record.get("releases") or [])  # fmt: skip
            kind = known.source if known else LIFECYCLE if sourced else ENDOFLIFE
            policy_page = known.provenance if known and known.source != ENDOFLIFE else None
            product = parse_product(record, known.cpes if known else (), path.name, policy_page, kind)
            products[slug] = product
            data_date = max(data_date, str(meta.get("data_date", ""))[:10])
            sources[product.source] = max(sources.get(product.source, ""), str(meta.get("data_date", ""))[:10])
    for slug, rule in vendor_policies.items():
        if slug in products:
            products[slug] = replace(products[slug], cycles=tuple(rule.derive(c) for c in products[slug].cycles))
    return Catalogue(products, data_date, str(index.get("source", "")), sources, vendor_policies=vendor_policies)


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
    _catalogue_for.cache_clear()
    return [p.slug for p in products]


def _write(path: Path, text: str) -> None:
    """Replace a file whole (a crash leaves the old one), so the catalogue is never half-written."""
    write_atomic(path, text.encode())


def default_catalogue() -> Catalogue:
    """The catalogue for this user's data folder, loaded once while that folder's updates stay the same:
    a process that outlives a `catalogue update`, or serves another user's folder, reads the new data."""
    overrides = overrides_dir()
    try:
        stamp = (overrides / "updates.json").stat()
        state = (stamp.st_mtime_ns, stamp.st_size, stamp.st_ino)
    except OSError:
        state = None
    return _catalogue_for(overrides, state)


@lru_cache(maxsize=4)
def _catalogue_for(overrides: Path, state: tuple[int, int, int] | None) -> Catalogue:
    """`state` is only the cache key: the update record's identity, rewritten whole by each update."""
    return load_catalogue(overrides=overrides)

