"""The scanner stage's data model: what a discovery agent hands to the inventory.

Frozen dataclasses, so an observation cannot be edited after it was made: the inventory keeps facts as
they were seen, and everything else (the asset view, findings) is derived from them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

# Device-supplied strings are hostile and unbounded; these caps keep one chatty banner from bloating the
# database or a report. The cut is marked so nobody mistakes a bounded value for the whole one.
INT64 = range(-(2**63), 2**63)  # SQLite's INTEGER: whole numbers beyond it cannot be stored or looked up
MAX_FIELD = 512
MAX_EVIDENCE = 4096
TRUNCATION_MARK = "…[truncated]"


def bound(value: str | None, limit: int = MAX_FIELD) -> str | None:
    """Cut a device-supplied string to `limit` characters, marking the cut."""
    if value is None:
        return None
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


# C0 and C1 controls (terminal escape sequences) and the bidirectional overrides that reorder text on screen.
_CONTROL = dict.fromkeys(
    [*range(0, 32), 127, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)], "\ufffd"
)


MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")  # what can make markup or break a Markdown table cell


def md_escape(text: str) -> str:
    """Markdown that shows a device string as text: every character that could make markup escaped."""
    return MD_SPECIAL.sub(r"\\\1", text)


def printable(value: object, limit: int = 200) -> str:
    """A device string made safe for a terminal: control characters (escape sequences) replaced, cut short."""
    text = str(value)
    return (text if len(text) <= limit else text[: limit - 1] + "…").translate(_CONTROL)


# Keep tab, LF and CR inside a cell (a quoted CSV cell may hold lines); every other control goes.
_CSV_CONTROL = dict.fromkeys([c for c in _CONTROL if c not in (9, 10, 13)])
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text (CWE-1236): a leading formula character gets a `'` (as OWASP
    advises) and control characters (terminal escapes) are removed. Numbers stay numbers; a list is one cell.

    Why: owners from the register, sysNames and hostnames come from people and devices; `=HYPERLINK(...)`
    in `posture export assets` ran as a formula in the spreadsheet of whoever opened it.
    """
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = (" ".join(map(str, value)) if isinstance(value, list) else str(value)).translate(_CSV_CONTROL)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(stream: TextIO, header: Sequence[str], rows: Iterable[Iterable[object]]) -> None:
    """The one CSV writer of every CSV posture writes: header, then rows, each cell through `csv_cell`."""
    writer = csv.writer(stream)
    writer.writerow([csv_cell(h) for h in header])
    writer.writerows([csv_cell(v) for v in row] for row in rows)


def write_json_list(stream: TextIO, items: Iterable[object]) -> None:
    """The text of `json.dumps(list(items), indent=2)` and a newline, written an item at a time: a list of
    millions is never all in memory, as its items nor as one text."""
    stream.write("[")
    first = True
    for item in items:
        stream.write("\n  " if first else ",\n  ")
        stream.write(json.dumps(item, indent=2).replace("\n", "\n  "))  # strings hold no raw newline: escaped
        first = False
    stream.write("]\n" if first else "\n]\n")


class Script(NamedTuple):
    """One NSE script's result: its id, its text output, and its structured output (`<elem>`, `<table>`)
    flattened to "key: value" lines (nested keys joined with "."), each bounded, at most MAX_SCRIPT_LINES (more
    for the few scripts in nmap_xml.SCRIPT_BUDGETS)."""

    id: str
    output: str
    data: tuple[str, ...] = ()

    def as_json(self) -> str | dict[str, Any]:
        """How a script is stored: its output, or output and data when the script gave structured output."""
        return {"output": self.output, "data": list(self.data)} if self.data else self.output


def scripts_json(scripts: tuple[Script, ...]) -> dict[str, str | dict[str, Any]]:
    """Scripts as one JSON object, script id -> `Script.as_json()` (services.scripts, a host's evidence)."""
    return {s.id: s.as_json() for s in scripts}


class Service(NamedTuple):
    """One port as nmap saw it, with every CPE nmap named (python-nmap would keep only the last).

    A NamedTuple rather than a frozen dataclass: just as immutable, and five times cheaper to build, which
    counts when an import makes a hundred thousand of them.
    """

    port: int
    protocol: str
    state: str
    name: str | None = None
    product: str | None = None
    version: str | None = None
    extra_info: str | None = None
    tunnel: str | None = None
    method: str | None = None
    confidence: int | None = None
    os_type: str | None = None
    device_type: str | None = None
    cpes: tuple[str, ...] = ()
    scripts: tuple[Script, ...] = ()


class OsMatch(NamedTuple):
    """One operating-system guess: an nmap osmatch/osclass, or a hint taken from a service's CPE."""

    name: str
    accuracy: int
    vendor: str | None = None
    family: str | None = None
    generation: str | None = None
    device_type: str | None = None
    cpes: tuple[str, ...] = ()
    method: str = "osmatch"


@dataclass(frozen=True, slots=True)
class HostObservation:
    """Everything one source said about one host at one time.

    `ports_scanned` tells a ping-only sighting (no port list at all) from a host that had no open ports,
    so the asset view never reads "no services" out of a scan that did not look.
    """

    status: str
    addresses: tuple[tuple[str, str], ...]  # (kind, value): kind is ipv4, ipv6 or mac
    hostnames: tuple[str, ...] = ()
    mac_vendor: str | None = None
    services: tuple[Service, ...] = ()
    os_matches: tuple[OsMatch, ...] = ()
    ports_scanned: bool = False
    observed_at: str | None = None
    uptime_seconds: int | None = None
    scripts: tuple[Script, ...] = ()  # host scripts (<hostscript>): smb-protocols, smb-os-discovery, nbstat...
    # What a directory (Active Directory) records of the computer beyond its names and OS: last logon, password
    # age, disabled, owner, OU (scanner/sources/ad.py); bounded strings, JSON-ready. Stored in the evidence.
    directory: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def ips(self) -> list[str]:
        return [v for k, v in self.addresses if k in ("ipv4", "ipv6")]

    @property
    def macs(self) -> list[str]:
        return [v for k, v in self.addresses if k == "mac"]


@dataclass(frozen=True, slots=True)
class NmapRun:
    """The header and footer of one nmap run: who ran what, when, and whether it finished."""

    args: str | None
    version: str | None
    started_at: str | None
    finished_at: str | None = None
    exit_status: str | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()  # what the reader dropped (a port numbered 70000, an address "not-an-ip")
    damage: str | None = None  # where a damaged or truncated file stopped being read; the hosts before it are kept


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """One row of an imported asset register (the council's CMDB or spreadsheet)."""

    line: int
    addresses: tuple[str, ...]
    hostnames: tuple[str, ...]
    owner: str | None = None
    business_service: str | None = None
    site: str | None = None
    criticality: str | None = None
    cost_centre: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
