"""In-place upgrade paths (data/upgrade_paths.toml): whether a release can be upgraded where it runs to a
supported one, or must be replaced.

The catalogue's `upgrade_path` (rules/facts.py) says only that a product still has a supported release;
Windows Server 2003 has one (2025) but no way to reach it in place. This table says which releases do, by
which steps and on whose word, and the catalogue judges each target on the day: a path whose target has
itself reached end of life (Windows 7 to Windows 10) stops being offered without an edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from rules.catalogue import Catalogue, Lifecycle
from rules.facts import SUPPORTED_STATES
from rules.identify import Identification, display_name, split_cycle
from scanner.compat import tomllib

PATHS_FILE = Path(__file__).parent / "data" / "upgrade_paths.toml"
KEYS = {"path": {"product", "from", "to", "via", "needs", "source", "quote"},
        "none": {"product", "from", "why", "source", "quote"}}  # fmt: skip
STATE_WORDS = {Lifecycle.EXTENDED: "on paid extended support only", Lifecycle.END_OF_LIFE: "end of life",
               Lifecycle.UNKNOWN: "of unknown support"}  # fmt: skip


@dataclass(frozen=True)
class Row:
    product: str
    starts: tuple[str, ...]  # cycles; "10-*" = every cycle starting "10-"
    to: str | None  # None: a [[none]] row
    via: tuple[str, ...]
    text: str  # `needs` of a path, `why` of a none
    source: str

    def covers(self, cycle: str) -> bool:
        return any(cycle == s or (s.endswith("*") and cycle.startswith(s[:-1])) for s in self.starts)


@dataclass(frozen=True)
class Verdict:
    """Whether the release upgrades in place, and the words a buyer reads beside it."""

    upgrade: bool
    text: str
    source: str | None = None


def _row(entry: dict[str, Any], kind: str, n: int) -> Row:
    where = f"{PATHS_FILE.name}: [[{kind}]] {n}"
    unknown = set(entry) - KEYS[kind]
    if unknown:  # a misspelt `qoute` or `neds` would otherwise be dropped without a word
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    product, starts, source = entry.get("product"), entry.get("from"), entry.get("source")
    if not (isinstance(product, str) and isinstance(starts, list) and starts and isinstance(source, str) and source):
        raise ValueError(f"{where}: needs product, from (a list) and source")
    if not isinstance(entry.get("quote", ""), str):
        raise ValueError(f"{where}: quote is the document's own words, as text")
    to = entry.get("to") if kind == "path" else None
    text = entry.get("needs" if kind == "path" else "why", "")
    via = entry.get("via", [])
    if (kind == "path" and not isinstance(to, str)) or not isinstance(text, str) or not isinstance(via, list):
        raise ValueError(f"{where}: a path needs `to`; needs, why and via are text, text and a list")
    if kind == "none" and not text:
        raise ValueError(f"{where}: a none row says why")
    if len(via) > 1:
        raise ValueError(f"{where}: at most one step before the target (see the file's header)")
    return Row(product, tuple(map(str, starts)), to, tuple(map(str, via)), text, source)


@cache
def paths(path: Path = PATHS_FILE) -> tuple[Row, ...]:
    """Every row of the table, paths and nones, in file order."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - {"path", "none"}
    if unknown:
        raise ValueError(f"{path.name}: unknown table {sorted(unknown)[0]!r}")
    return tuple(_row(e, kind, n) for kind in ("path", "none") for n, e in enumerate(data.get(kind, []), 1))


def release_name(slug: str, cycle: str, catalogue: Catalogue) -> str:
    """"Microsoft Windows Server 2012 R2" for ("windows-server", "2012-r2"): the name people know."""
    return display_name(Identification(slug, (cycle,), None, "high", "upgrade path", ""), catalogue)


def in_place(product: str, cycle: str | None, day: date, catalogue: Catalogue) -> Verdict:
    """The verdict for one release on `day`: upgrade (with the steps and what they need) or replace (why)."""
    if not cycle:
        return Verdict(False, "release not known exactly: no in-place path can be stated")
    row = next((r for r in paths() if r.product == product and r.covers(cycle)), None)
    if row is None:
        return Verdict(False, "no in-place upgrade path known for this release")
    if row.to is None:
        return Verdict(False, row.text, row.source)
    slug, target = split_cycle(row.to, product)
    owner = catalogue.product(slug)
    found = owner.cycle(target) if owner else None
    name = release_name(slug, target, catalogue)
    if owner is None or found is None:
        return Verdict(False, f"the in-place target {name} is not in the lifecycle catalogue")
    state = owner.status(found, day).state
    if state not in SUPPORTED_STATES:
        said = STATE_WORDS.get(state, str(state))
        return Verdict(False, f"its in-place upgrade leads to {name}, itself {said} on {day.isoformat()}", row.source)
    steps = [release_name(*split_cycle(v, product), catalogue) for v in row.via]
    text = f"in place to {name}" + (f" via {', '.join(steps)}" if steps else "")
    return Verdict(True, text + (f", {row.text}" if row.text else ""), row.source)
