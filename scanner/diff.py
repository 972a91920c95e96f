"""What changed between two scans: assets new and gone, and for assets in both, OS, MAC, services and
installed programs. (Findings that appeared or cleared come from the rules stage, through the
`posture.diff_details` entry point, so this module never reads what rules/ owns.)

An asset is "gone" only if the later scan looked where it was (its address is inside the later scan's
targets): an asset outside a smaller scan is not gone, just not looked at. Imports have no targets, so
everything the earlier one saw counts as looked at. A job run's change hook compares the run's scans
together with the scans before them in the same way (`run_baseline`, `compare`). Read-only: nothing here
writes.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from scanner.errors import PostureError
from scanner.model import printable
from scanner.store import Store
from scanner.targets import IPNetwork, parse_target


@dataclass
class Seen:
    """What one scan saw of one asset."""

    addresses: set[str] = field(default_factory=set)
    macs: set[str] = field(default_factory=set)
    os: str | None = None
    ports_scanned: bool = False
    services: dict[str, str] = field(default_factory=dict)  # "tcp/22" -> "OpenSSH 9.2p1"
    software: dict[str, str] = field(default_factory=dict)  # installed program -> version (agent, SNMP)


FINISHED_SCANS = (
    "SELECT s.id, s.kind, b.asset_id, s.targets FROM scans s LEFT JOIN bundles b ON b.scan_id = s.id "
    "WHERE s.kind != 'asset-register' AND (s.status = 'complete' OR (s.status = 'interrupted' "
    "AND EXISTS (SELECT 1 FROM observations o WHERE o.scan_id = s.id))) ORDER BY s.id DESC"
)


def _finished(store: Store) -> list[tuple[int, tuple[str, int | None], str]]:
    """Finished scans, newest first: (id, (kind, the machine of a host-agent bundle), targets as stored).
    An interrupted scan counts only if it saved something: one stopped before its first chunk would
    otherwise be the baseline of the next diff, and every asset would read as new."""
    return [(i, (kind, machine), targets) for i, kind, machine, targets in store.conn.execute(FINISHED_SCANS)]


def default_pair(store: Store) -> tuple[int, int]:
    """The two newest finished scans of the same kind (a scan, an SNMP scan, an import; two bundles of the
    same machine)."""
    rows = [(i, kind) for i, kind, _ in _finished(store)]
    for n, (newest, kind) in enumerate(rows):
        older = next((r[0] for r in rows[n + 1 :] if r[1] == kind), None)
        if older is not None:
            return older, newest
    raise PostureError("there are not two finished scans of the same kind to compare", "see `posture scans`")


def run_baseline(store: Store, scan_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """What a job run is compared with: (the baseline scans, the run's finished scans among `scan_ids`).

    Each finished scan of the run is paired with the newest finished scan of the same kind from before the
    run (the same machine's for a bundle), preferring one of the same target list: two jobs scanning two
    ranges with nmap are then compared each with its own last run. A kind the run made for the first time
    has none: what it saw is new unless another baseline scan saw it.
    """
    rows = _finished(store)
    wanted = set(scan_ids)
    run = [r for r in rows if r[0] in wanted]
    if not run:
        return [], []
    first = min(r[0] for r in run)
    before = [r for r in rows if r[0] < first]
    older = set()
    for _, kind, targets in run:
        of_kind = [(i, t) for i, k, t in before if k == kind]
        match = next((i for i, t in of_kind if t == targets), of_kind[0][0] if of_kind else None)
        if match is not None:
            older.add(match)
    return sorted(older), sorted(r[0] for r in run)




def _seen(store: Store, scan_ids: Sequence[int]) -> dict[int, Seen]:
    """What these scans saw of each asset, together (a job run's nmap and SNMP scans: services from one,
    software from the other)."""
    conn = store.conn
    out: dict[int, Seen] = defaultdict(Seen)
    in_scans = f"scan_id {conn.dialect.in_list}"
    scans = conn.dialect.list_param(scan_ids)
    for asset_id, address, ports_scanned, evidence in conn.execute(
        f"SELECT asset_id, address, ports_scanned, evidence FROM observations WHERE {in_scans}", [scans]
    ):
        s = out[asset_id]
        if address:
            s.addresses.add(address)
        s.ports_scanned |= bool(ports_scanned)
        try:
            said = json.loads(evidence)
            s.ports_scanned |= bool(said.get("listening_complete"))  # a host agent lists every listener
            for kind, value in said.get("addresses", []):
                (s.macs if kind == "mac" else s.addresses).add(value)
        except (ValueError, TypeError, AttributeError):
            pass  # evidence without addresses (SNMP keeps them elsewhere)
    for asset_id, name in conn.execute(
        f"SELECT asset_id, name FROM software WHERE {in_scans} AND kind = 'os' ORDER BY accuracy DESC NULLS LAST, id",
        [scans],
    ):
        if out[asset_id].os is None:
            out[asset_id].os = printable(name.splitlines()[0] if name else "", 120)
    for asset_id, port, protocol, product, version in conn.execute(
        f"SELECT asset_id, port, protocol, product, version FROM services WHERE {in_scans} AND state = 'open'",
        [scans],
    ):
        out[asset_id].services[f"{protocol}/{port}"] = printable(" ".join(x for x in (product, version) if x), 120)
    for asset_id, name, version in conn.execute(
        f"SELECT asset_id, name, version FROM software WHERE {in_scans} AND kind = 'application'", [scans]
    ):
        out[asset_id].software[printable(name, 120)] = printable(version or "", 60)
    return dict(out)


def _covered(store: Store, scan_ids: Sequence[int]) -> list[IPNetwork] | None:
    """The later scans' target networks, or None when one had none (an import: it covers everything).
    A host-agent bundle looked at its own machine only, and a directory read lists computers, not what is
    on a network: neither covers a network, so neither makes an asset "gone"."""
    nets: list[IPNetwork] = []
    for scan_id in scan_ids:
        row = store.conn.execute("SELECT targets, kind FROM scans WHERE id = ?", [scan_id]).fetchone()
        if row and row[1] in ("agent-import", "directory-import"):
            continue
        specs = json.loads(row[0]) if row and row[0] else []
        found: list[IPNetwork] = []
        for spec in specs:
            try:
                found.extend(parse_target(str(spec), resolve=False).networks)
            except PostureError:
                continue  # a hostname: its address is not known without a lookup
        if not found:
            return None
        nets += found
    return nets


def _software_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    installed = {n: after[n] for n in sorted(after.keys() - before.keys())}
    removed = {n: before[n] for n in sorted(before.keys() - after.keys())}
    changed = {n: {"before": before[n], "after": after[n]} for n in sorted(before.keys() & after.keys())
               if before[n] != after[n]}  # fmt: skip
    for key, value in (("installed", installed), ("removed", removed), ("changed", changed)):
        if value:
            out[key] = value
    return out


def diff_scans(store: Store, older: int, newer: int) -> dict[str, Any]:
    """`posture diff`: two scans compared."""
    for scan_id in (older, newer):
        if store.scan_row(scan_id) is None:
            raise PostureError(f"no scan {scan_id}", "see `posture scans`")
    return {"older": older, "newer": newer, **compare(store, [older], [newer])}


def compare(store: Store, older: Sequence[int], newer: Sequence[int]) -> dict[str, Any]:
    """Assets new, gone (and not looked at) and changed between what the `older` scans saw together and
    what the `newer` ones did. No older scan (a job's first run): everything the newer ones saw is new."""
    before, after = _seen(store, older), _seen(store, newer)
    nets = _covered(store, newer)

    def looked_at(s: Seen) -> bool:
        if nets is None:
            return True
        if not nets:
            return False
        for a in s.addresses:
            try:
                ip = ipaddress.ip_address(a)
            except ValueError:
                continue
            if any(ip in n for n in nets):
                return True
        return False

    names = dict(store.conn.execute("SELECT id, name FROM assets").fetchall())
    changed = []
    for asset_id in sorted(before.keys() & after.keys()):
        b, a = before[asset_id], after[asset_id]
        change: dict[str, Any] = {}
        if b.os and a.os and b.os != a.os:
            change["os"] = {"before": b.os, "after": a.os}
        if b.macs and a.macs and b.macs != a.macs:
            change["macs"] = {"before": sorted(b.macs), "after": sorted(a.macs)}
        if b.ports_scanned and a.ports_scanned:
            opened = sorted(a.services.keys() - b.services.keys())
            closed = sorted(b.services.keys() - a.services.keys())
            both = sorted(a.services.keys() & b.services.keys())
            versions = {p: {"before": b.services[p], "after": a.services[p]} for p in both
                        if a.services[p] != b.services[p]}  # fmt: skip
            if opened:
                change["opened"] = {p: a.services[p] for p in opened}
            if closed:
                change["closed"] = {p: b.services[p] for p in closed}
            if versions:
                change["versions"] = versions
        if b.software and a.software:  # both scans listed the programs: compare them
            software = _software_changes(b.software, a.software)
            if software:
                change["software"] = software
        if change:
            changed.append({"asset_id": asset_id, "name": printable(names.get(asset_id) or "", 120), **change})

    def brief(asset_id: int, seen: Seen) -> dict[str, Any]:
        return {"asset_id": asset_id, "name": printable(names.get(asset_id) or "", 120),
                "addresses": sorted(seen.addresses)}  # fmt: skip

    return {
        "new": [brief(i, after[i]) for i in sorted(after.keys() - before.keys())],
        "gone": [brief(i, before[i]) for i in sorted(before.keys() - after.keys()) if looked_at(before[i])],
        "not_looked_at": sorted(i for i in before.keys() - after.keys() if not looked_at(before[i])),
        "changed": changed,
    }


def with_details(store: Store, older: int | Sequence[int], newer: int | Sequence[int], **extra: Any) -> dict[str, Any]:
    """What later stages add to a comparison, through the `posture.diff_details` entry point (the rules
    stage: the findings that appeared and cleared). `older` and `newer` are the scan ids compared (an id
    each for `posture diff`, lists for a job run); `extra` is passed on (a job run: `evaluations`)."""
    out: dict[str, Any] = {}
    for ep in entry_points(group="posture.diff_details"):
        out.update(ep.load()(store, older, newer, **extra))
    return out
