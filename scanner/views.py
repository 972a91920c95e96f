"""The asset view: what the inventory currently believes about each asset, derived from observations.

Nothing here writes. Services come from the newest observation that looked at ports (a ping-only scan
does not erase them; a host agent's listeners count only where no port scan looked); the OS from the
newest observation that said anything about it, best guess first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from importlib.metadata import entry_points
from typing import Any

from scanner.store import DIRECTORY_SOURCES, NOT_NETWORK_SOURCES, Store

# The network's view of an asset's ports wins; an asset no port scan reached (a host agent's machine at
# another site) is judged by what its agent saw listening.
# The agent's flag is compared with its JSON text: `evidence` is posture's own compact JSON (Ingest), in which
# a device's string can never hold `"listening_complete":true` unescaped; the same test on both stores, no
# JSON parsing of every observation.
LATEST_PORT_OBSERVATION = """
    SELECT id, asset_id FROM (
        SELECT id, asset_id, row_number() OVER (PARTITION BY asset_id ORDER BY observed_at DESC, id DESC) AS n
        FROM observations o WHERE ports_scanned = 1
           OR (source = 'agent' AND evidence LIKE '%"listening_complete":true%'
               AND NOT EXISTS (SELECT 1 FROM observations p WHERE p.asset_id = o.asset_id AND p.ports_scanned = 1))
    ) AS latest WHERE n = 1
"""
LATEST_OS_OBSERVATION = """
    SELECT observation_id, asset_id FROM (
        SELECT s.observation_id, s.asset_id,
               row_number() OVER (PARTITION BY s.asset_id ORDER BY o.observed_at DESC, o.id DESC) AS n
        FROM software s JOIN observations o ON o.id = s.observation_id WHERE s.kind = 'os'
    ) AS latest WHERE n = 1
"""


DIRECTORY_ONLY = "in directory, not seen on the network"
# What the asset view shows of a directory's computer object (the rest stays in the observation's evidence).
DIRECTORY_VIEW_FIELDS = ("dn", "name", "dNSHostName", "operatingSystem", "operatingSystemVersion",
                         "operatingSystemServicePack", "last_logon", "password_last_set", "created", "disabled",
                         "stale", "owner", "description", "ou", "site", "business_service")  # fmt: skip


def directory_objects(store: Store) -> dict[int, dict[str, Any]]:
    """asset id -> what the newest directory sighting (Active Directory) said of it."""
    marks = ",".join("?" * len(DIRECTORY_SOURCES))
    out: dict[int, dict[str, Any]] = {}
    for asset_id, evidence in store.conn.execute(
        "SELECT asset_id, evidence FROM (SELECT asset_id, evidence, row_number() "
        "OVER (PARTITION BY asset_id ORDER BY observed_at DESC, id DESC) AS n FROM observations "
        f"WHERE source IN ({marks})) AS newest WHERE n = 1", sorted(DIRECTORY_SOURCES)
    ):  # fmt: skip
        said = json.loads(evidence) if evidence else None
        found = said.get("directory") if isinstance(said, dict) else None
        if isinstance(found, dict):
            out[asset_id] = {k: found.get(k) for k in DIRECTORY_VIEW_FIELDS}
    return out


def asset_addresses(store: Store) -> dict[int, tuple[list[str], str | None]]:
    """asset id -> (its addresses, IPv4 first and newest first; its newest hostname)."""
    out: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for asset_id, kind, value in store.conn.execute(
        "SELECT asset_id, kind, value FROM asset_identifiers WHERE kind IN ('ipv4', 'ipv6', 'hostname') "
        "ORDER BY asset_id, kind = 'ipv6', last_seen DESC NULLS LAST, id"
    ):
        out[asset_id][1 if kind == "hostname" else 0].append(value)
    return {a: (addresses, names[0] if names else None) for a, (addresses, names) in out.items()}


def asset_views(store: Store, asset_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """One dict per asset in the documented JSON shape (see README: `posture assets --format json`)."""
    conn = store.conn
    where, params = "", []
    if asset_ids is not None:
        where = f"WHERE id IN ({','.join('?' * len(asset_ids))})"
        params = list(asset_ids)
    assets = conn.execute(
        "SELECT id, name, first_seen, last_seen, in_register, owner, business_service, site, criticality, "
        f"cost_centre, attributes FROM assets {where} ORDER BY id",
        params,
    ).fetchall()

    identifiers: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for asset_id, kind, value in conn.execute(
        "SELECT asset_id, kind, value FROM asset_identifiers ORDER BY asset_id, last_seen DESC NULLS LAST, id"
    ):
        identifiers[asset_id][kind].append(value)

    sources: dict[int, list[str]] = defaultdict(list)
    for asset_id, source in conn.execute(
        "SELECT DISTINCT asset_id, source FROM observations ORDER BY asset_id, source"
    ):
        sources[asset_id].append(source)

    services: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(
        f"SELECT s.asset_id, s.port, s.protocol, s.state, s.name, s.product, s.version, s.extra_info, s.cpes "
        f"FROM services s JOIN ({LATEST_PORT_OBSERVATION}) l ON l.id = s.observation_id ORDER BY s.asset_id, "
        "s.protocol, s.port"
    ):
        services[row[0]].append(
            {
                "port": row[1],
                "protocol": row[2],
                "state": row[3],
                "name": row[4],
                "product": row[5],
                "version": row[6],
                "extra_info": row[7],
                "cpe": json.loads(row[8]),
            }
        )

    # Host scripts (smb-protocols, smb-os-discovery, nbstat, ...) of the newest port scan, as stored.
    host_scripts: dict[int, dict[str, Any]] = {}
    for asset_id, evidence in conn.execute(
        "SELECT o.asset_id, o.evidence FROM observations o "
        f"JOIN ({LATEST_PORT_OBSERVATION}) l ON l.id = o.id WHERE o.evidence LIKE '%\"scripts\"%'"
    ):
        scripts = json.loads(evidence).get("scripts")
        if scripts:
            host_scripts[asset_id] = scripts

    oses: dict[int, dict[str, Any]] = {}
    for row in conn.execute(
        f"SELECT s.asset_id, s.name, s.vendor, s.product, s.version, s.cpe, s.cpes, s.accuracy, s.method "
        f"FROM software s JOIN ({LATEST_OS_OBSERVATION}) l ON l.observation_id = s.observation_id "
        "WHERE s.kind = 'os' ORDER BY s.asset_id, s.accuracy DESC NULLS LAST, s.id"
    ):
        oses.setdefault(
            row[0],
            {
                "name": row[1],
                "vendor": row[2],
                "product": row[3],
                "version": row[4],
                "cpe": row[5],
                "cpes": json.loads(row[6]),
                "accuracy": row[7],
                "method": row[8],
            },
        )

    directory = directory_objects(store)
    out: list[dict[str, Any]] = []
    for a in assets:
        ids = identifiers.get(a[0], {})
        src = list(sources.get(a[0], []))
        said = directory.get(a[0]) or {}
        # The register's owner, site and service win; where it says nothing, the directory's (managedBy, OU).
        owner, site, service = (a[5] or said.get("owner"), a[7] or said.get("site"),
                                a[6] or said.get("business_service"))  # fmt: skip
        out.append(
            {
                "id": a[0],
                "name": a[1],
                "addresses": ids.get("ipv4", []) + ids.get("ipv6", []),
                "macs": ids.get("mac", []),
                "hostnames": ids.get("hostname", []),
                "machine_ids": ids.get("machine-id", []),
                "os": oses.get(a[0]),
                "services": services.get(a[0], []),
                "host_scripts": host_scripts.get(a[0], {}),
                "first_seen": a[2],
                "last_seen": a[3],
                "sources": src,
                "in_register": bool(a[4]),
                "owner": owner,
                "owner_source": None if owner is None else "register" if a[5] else "directory",
                "business_service": service,
                "site": site,
                "criticality": a[8],
                "cost_centre": a[9],
                "attributes": json.loads(a[10]),
                "directory": directory.get(a[0]),
                "seen_on_network": bool(set(src) - NOT_NETWORK_SOURCES),
                "note": DIRECTORY_ONLY if a[0] in directory and not set(src) - NOT_NETWORK_SOURCES else None,
            }
        )
    return out


def scan_views(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    rows = store.db.query(
        "SELECT id, kind, source, status, started_at, finished_at, targets, input_file, hosts_total, hosts_done, "
        "hosts_up, tool_version, error FROM scans ORDER BY id DESC LIMIT ?",
        [limit],
    )
    out = []
    for r in rows:
        r["targets"] = json.loads(r["targets"])
        out.append(r)
    return out


def asset_rows(store: Store, asset_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """The asset view with what later stages add to it through the `posture.asset_details` entry point (the
    rules stage: the identified OS, software and hardware, with their lifecycle)."""
    rows = asset_views(store, asset_ids)
    for ep in entry_points(group="posture.asset_details"):
        ep.load()(store, rows)
    return rows
