"""Hardware identification: the model a device states (its ENTITY-MIB chassis, else the model a sysDescr or
an nmap OS line names) -> a hardware family and, where the catalogue dates it, its end of sale and last
date of support.

The box has a lifecycle of its own beside its firmware's: a Catalyst 3560G may run a current IOS and be out
of hardware support, and the reverse. Cisco PIDs and Juniper SKUs are found by the catalogue's model
prefixes (`Catalogue.hardware`). A model no row lists gets no date, even when a row dates its siblings (the
catalogue's Catalyst 3560G row names WS-C3560G-24PS-S and -48PS-S only): the family is named, the sibling
row is cited in the evidence, and the state stays unknown, so a box is never called end-of-life on a date
its source does not give.

Device strings are hostile: a model is at most `MAX_MODEL` printable characters (no real PID is longer);
anything else is not a model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rules.catalogue import Catalogue, Cycle, Product
from rules.identify import Identification

MAX_MODEL = 64  # the longest model looked at: PIDs and SKUs are under 30 characters
CHASSIS = 3  # entPhysicalClass chassis(3) (RFC 6933)
# Sourced hardware tables name no vendor of their own.
TABLE_VENDORS = {"cisco-hardware-eol": "Cisco Systems", "juniper-ex-hardware": "Juniper Networks"}
_MODEL = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,62}[\x21-\x7e])?")  # printable ASCII, no edge spaces
_STEM = re.compile(r"^[A-Z]{0,12}-?[A-Z]{0,4}\d[\w+]{0,12}-")  # a PID's family stem: WS-C3560G-, EX4200-


def clean_model(value: Any) -> str | None:
    """A stated model as it can be looked up, or None (empty, only spaces, too long, or not printable)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if len(text) <= MAX_MODEL and _MODEL.fullmatch(text) else None


def chassis(rows: list[tuple[str | None, str | None]]) -> tuple[str, str] | None:
    """(model, description) of the device's chassis among its ENTITY-MIB rows (their `extra` JSON and name):
    the first chassis-class row with a model, else the first row with a model."""
    first = None
    for extra, name in rows:
        try:
            facts = json.loads(extra) if extra else {}
        except ValueError:
            continue
        model = clean_model(facts.get("model")) if isinstance(facts, dict) else None
        if model is None:
            continue
        said = str(facts.get("descr") or name or "")[:200]
        if facts.get("class") == CHASSIS:
            return model, said
        first = first or (model, said)
    return first


def family_of(cycle: Cycle) -> str:
    """A hardware row's family as a buyer reads it: its label before any bracketed note
    ("Catalyst 3560G (and 3750G per bulletin path; ...)" -> "Catalyst 3560G")."""
    return cycle.label.split(" (", 1)[0].removeprefix("Row ").strip('"')[:80]


def _siblings(model: str, catalogue: Catalogue) -> list[tuple[Product, Cycle]]:
    """Hardware rows that list other models of the same family stem (WS-C3560G-48TS-E: the WS-C3560G- row)."""
    m = _STEM.match(model.upper())
    if m is None:
        return []
    stem = m.group(0)
    return [(p, c) for p in catalogue.products.values() for c in p.cycles
            if any(x.upper().startswith(stem) for x in c.pid_prefixes)]  # fmt: skip


def identify_hardware(model: str, said: str, vendor: str | None, method: str,
                      catalogue: Catalogue) -> Identification | None:  # fmt: skip
    """The hardware a stated model names. `said` is what the device calls it (entPhysicalDescr), `vendor`
    its manufacturer (or the sysObjectID's enterprise), `method` the evidence: `entPhysical` (the chassis's
    own model), else `sysDescr model` / `nmap os model` (the platform a firmware line names: low confidence)."""
    found = clean_model(model)
    if found is None:
        return None
    evidence = f"model {found}" + (f" ({said[:120]})" if said and said != found else "")
    listed = catalogue.hardware(found)
    if listed is not None:
        product, cycle = listed
        return Identification(product.slug, (cycle.name,), None, "high" if method == "entPhysical" else "medium",
                              method, evidence, kind="hardware", vendor=TABLE_VENDORS.get(product.slug, vendor),
                              family=family_of(cycle), model=found, category="network")  # fmt: skip
    siblings = _siblings(found, catalogue)
    family = family_of(siblings[0][1]) if len(siblings) == 1 else None
    if siblings:
        rows = "; ".join(f"{p.slug} {c.name} lists {', '.join(c.pid_prefixes[:4])}" for p, c in siblings[:3])
        evidence += f"; not listed in the catalogue, which dates other models of its family ({rows})"
    if family is None and method != "entPhysical":
        family = found  # the platform the firmware line names ("C3560")
    return Identification("hardware", (), None, "medium" if method == "entPhysical" else "low", method,
                          evidence[:300], kind="hardware", vendor=vendor, family=family, model=found,
                          category="network" if siblings else None)  # fmt: skip

