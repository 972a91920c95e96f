"""Synthetic sector-sharing summaries (`posture.share-summary/1`) for the aggregate tests and benchmark.

Every row names a real catalogue release with its real dates (so the pooled page and the procurement
plan's --sector line read as they would for real councils); which releases a council has and how many is
drawn from a seeded random generator, so a run is the same every time. Counts are rounded and carried as
ranges exactly as the contract says: below 10 "<10" (1..9), else the nearest 5 (N-2..N+2, at least 10).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import date
from itertools import accumulate
from pathlib import Path
from typing import Any

from reports.model import financial_year
from reports.share import SIGNED_PREFIX
from rules.catalogue import default_catalogue

CATEGORIES = ("servers", "end-user", "network", "storage", "ot-iot")
KIND_OF = {"os": "os", "device": "firmware", "database": "software", "server-app": "software", "app": "software"}


@dataclass(frozen=True)
class Release:
    kind: str
    product: str
    label: str
    cycle: str
    eol: str | None
    extended: str | None
    family: str | None


def universe(size: int, seed: int = 17) -> list[Release]:
    """`size` catalogue releases with a date of end of life (the first few are the councils' usual ones:
    Windows Server 2012 R2 and 2008 R2 SP1, Windows XP SP3 and 7, RHEL 7; then hardware, then the rest)."""
    from rules.hardware import family_of

    catalogue = default_catalogue()
    chosen: list[Release] = []

    def add(product_slug: str, cycle_name: str, kind: str | None = None) -> None:
        product = catalogue.product(product_slug)
        cycle = product.cycle(cycle_name) if product else None
        if product is None or cycle is None or not isinstance(cycle.eol, date):
            return
        hardware = bool(cycle.pid_prefixes)
        extended = cycle.eoes.isoformat() if isinstance(cycle.eoes, date) else None
        chosen.append(Release("hardware" if hardware else kind or KIND_OF.get(product.category, "software"),
                              product.slug, product.title, cycle.name, cycle.eol.isoformat(), extended,
                              family_of(cycle) if hardware else None))  # fmt: skip

    for slug, name in (("windows-server", "2012-r2"), ("windows-server", "2008-r2-sp1"), ("windows", "5-sp3"),
                       ("windows", "7-sp1"), ("rhel", "7"), ("windows-server", "2016"), ("centos", "7")):
        add(slug, name, "os")
    for product in catalogue.products.values():
        for cycle in product.cycles:
            if cycle.pid_prefixes:
                add(product.slug, cycle.name)
    rest = [(p.slug, c.name) for p in catalogue.products.values() if p.category in KIND_OF for c in p.cycles
            if isinstance(c.eol, date) and not c.pid_prefixes]  # fmt: skip
    random.Random(seed).shuffle(rest)
    for slug, name in rest:
        if len(chosen) >= size:
            break
        add(slug, name)
    return chosen[:size]


def rounded(n: int) -> tuple[str, int, int]:
    """(count, count_min, count_max) for a true count n >= 1, as the contract writes it."""
    if n < 10:
        return "<10", 1, 9
    shown = 5 * ((n + 2) // 5)
    return str(shown), max(10, shown - 2), shown + 2


def row(release: Release, category: str, n: int, day: date) -> dict[str, Any]:
    count, low, high = rounded(n)
    eol = release.eol
    state = "unknown" if eol is None else "end-of-life" if eol < day.isoformat() else "supported"
    if release.extended and state == "end-of-life" and release.extended >= day.isoformat():
        state = "extended"
    return {"kind": release.kind, "product": release.product, "label": release.label, "cycle": release.cycle,
            "lifecycle_state": state, "eol_date": eol,
            "eol_financial_year": financial_year(date.fromisoformat(eol)) if eol else None,
            "extended_until": release.extended, "category": category,
            "hardware_family": release.family, "count": count, "count_min": low, "count_max": high}  # fmt: skip


def summary(rows: list[dict[str, Any]], organisation: str | None = None, period: str = "2026-12",
            day: date = date(2026, 12, 7)) -> dict[str, Any]:  # fmt: skip
    rows = sorted(rows, key=lambda r: (r["kind"], r["product"], r["cycle"] or "", r["category"],
                                       r["hardware_family"] or ""))  # fmt: skip
    return {"schema": "posture.share-summary/1", "organisation": organisation, "period": period,
            "evaluated_on": day.isoformat(), "posture_version": "0.1.0", "catalogue_date": "2026-08-22",
            "policy": {"unsupported_after": "security"}, "rules": ["protect.eol-os", "protect.eol-software"],
            "counts": {"rounding": 5, "small_below": 10}, "rows": rows}  # fmt: skip


def council(rng: random.Random, releases: list[Release], rows: int, day: date = date(2026, 12, 7)
            ) -> list[dict[str, Any]]:  # fmt: skip
    """One council's rows: `rows` distinct (release, category) pairs, popular releases more likely (the
    first of `releases` most), counts mostly small with a long tail."""
    pairs: dict[tuple[int, str], None] = {}  # in the order drawn: the same seed, the same rows
    cumulative = list(accumulate(1 / (i + 1) ** 0.7 for i in range(len(releases))))
    population = range(len(releases))
    while len(pairs) < rows:
        index = rng.choices(population, cum_weights=cumulative)[0]
        category = rng.choice(CATEGORIES[:3]) if rng.random() < 0.3 else "servers" if index % 2 == 0 else "end-user"
        pairs[index, "network" if releases[index].kind == "hardware" else category] = None
    return [row(releases[i], category, max(1, int(rng.paretovariate(1.3) * 3)), day) for i, category in pairs]


def dump(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()


def sign(path: Path, private: Any) -> None:
    """`<path>.sig` as the contract says, with a cryptography Ed25519 private key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from scanner.bundles import key_id

    data = path.read_bytes()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    envelope = {"schema": "posture.share-signature/1", "key_id": key_id(public),
                "public": base64.b64encode(public).decode(), "signed_sha256": hashlib.sha256(data).hexdigest(),
                "signature": base64.b64encode(private.sign(SIGNED_PREFIX + data)).decode()}  # fmt: skip
    path.with_name(path.name + ".sig").write_text(json.dumps(envelope, indent=1) + "\n", encoding="utf-8")


def write_councils(folder: Path, councils: int, rows: int, seed: int = 17, size: int | None = None) -> list[Path]:
    """`councils` summary files of `rows` rows each, drawn from `size` releases (default 2 x rows)."""
    rng = random.Random(seed)
    releases = universe(size or 2 * rows, seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(councils):
        path = folder / f"council-{n:04d}.json"
        path.write_bytes(dump(summary(council(rng, releases, min(rows, len(releases))))))
        paths.append(path)
    return paths
