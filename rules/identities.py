"""Stored identities: what each asset was identified as at the last evaluation (issue 12, build item 2).

`posture evaluate` identifies every asset once and writes the result here, in the same transaction as its
findings; the asset view, the report, the exports, the plans and the procurement lots read it, so none of
them identifies again and a report cannot disagree with its own findings. The lifecycle states and dates
are those of the evaluation's day.

What was identified is stored once however many assets share it (`identity_items`: 10,000 hosts running
the same OS are one row), and each asset points at its items with a role: `os` (the best-evidenced OS),
`candidate` (another OS the evidence names: a conflict, shown not resolved), `software`, `hardware`.
These tables belong to the rules stage: `Store.migrate_stage("rules", MIGRATIONS)` creates and upgrades
them apart from the inventory's own schema.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scanner.store import Store, run_script

ROLES = ("os", "candidate", "software", "hardware")
ITEM_COLUMNS = ("kind", "product", "label", "vendor", "family", "cycles", "version", "model", "category",
                "confidence", "method", "evidence", "lifecycle_state", "eol_date", "extended_until")  # fmt: skip


def _schema_v1(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE identity_items (           -- what was identified, once however many assets share it
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,               -- os, firmware, software, hardware
            product TEXT NOT NULL,            -- the catalogue's slug, or the family's own slug
            label TEXT NOT NULL,              -- the name people know: "Microsoft Windows XP SP3"
            vendor TEXT,
            family TEXT,
            cycles TEXT NOT NULL DEFAULT '[]',  -- JSON: one release, or the candidates ("one of")
            version TEXT,
            model TEXT,
            category TEXT,                    -- server, network, printer, ups-pdu, camera, ...
            confidence TEXT NOT NULL,
            method TEXT NOT NULL,             -- the evidence: sysDescr, nmap os, nmap service, os-release, ...
            evidence TEXT,                    -- the string it was read from (bounded)
            lifecycle_state TEXT NOT NULL,    -- as of the evaluation's day
            eol_date TEXT,
            extended_until TEXT,
            json TEXT NOT NULL UNIQUE         -- the whole item (KEV, upgrade path, packaging): what readers use
        );
        CREATE TABLE identities (
            evaluation_id INTEGER NOT NULL,
            asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
            role TEXT NOT NULL,               -- os, candidate, software, hardware
            item_id INTEGER NOT NULL REFERENCES identity_items(id),
            observation_id INTEGER,           -- the observation it came from (none for derived items)
            PRIMARY KEY (asset_id, role, item_id)
        );
        CREATE TABLE identified_assets (        -- each asset as the last evaluation saw it
            asset_id INTEGER PRIMARY KEY REFERENCES assets(id) ON DELETE CASCADE,
            evaluation_id INTEGER NOT NULL,
            category TEXT NOT NULL            -- the report's group: servers, network, end-user, ot-iot, unknown
        );
        """,
    )


# Each entry moves the rules stage's schema one version up; append, never edit a released one.
MIGRATIONS = [_schema_v1]


def ensure(store: Store) -> bool:
    """Creates or upgrades the tables; False for a read-only database that lacks them."""
    return store.migrate_stage("rules", MIGRATIONS)


class Writer:
    """Replaces the stored identities inside the evaluation's transaction, in batches."""

    BATCH = 5000

    def __init__(self, conn: sqlite3.Connection, evaluation_id: int) -> None:
        self.conn, self.evaluation_id = conn, evaluation_id
        conn.execute("DELETE FROM identities")
        conn.execute("DELETE FROM identified_assets")
        self._ids: dict[int, tuple[dict[str, Any], int]] = {}  # id(item) -> (item: kept alive, row id)
        self._rows: list[tuple[int, int, str, int, int | None]] = []
        self._assets: list[tuple[int, int, str]] = []

    def item_id(self, item: dict[str, Any]) -> int:
        known = self._ids.get(id(item))
        if known is not None:
            return known[1]
        text = json.dumps(item, sort_keys=True, default=str)
        values = [json.dumps(item.get(c)) if c == "cycles" else item.get(c) for c in ITEM_COLUMNS]
        row = self.conn.execute(
            f"INSERT INTO identity_items ({', '.join(ITEM_COLUMNS)}, json) VALUES ({', '.join('?' * 16)}) "
            "ON CONFLICT(json) DO UPDATE SET json = excluded.json RETURNING id",
            [*values, text],
        ).fetchone()
        self._ids[id(item)] = (item, int(row[0]))
        return int(row[0])

    def add(self, asset_id: int, category: str, roles: Iterable[tuple[str, list[dict[str, Any]]]],
            observations: dict[int, int]) -> None:  # fmt: skip
        self._assets.append((asset_id, self.evaluation_id, category))
        for role, items in roles:
            for item in items:
                self._rows.append((self.evaluation_id, asset_id, role, self.item_id(item), observations.get(id(item))))
        if len(self._rows) >= self.BATCH or len(self._assets) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO identities (evaluation_id, asset_id, role, item_id, "
                              "observation_id) VALUES (?, ?, ?, ?, ?)", self._rows)  # fmt: skip
        self.conn.executemany("INSERT INTO identified_assets (asset_id, evaluation_id, category) VALUES (?, ?, ?)",
                              self._assets)  # fmt: skip
        self._rows.clear()
        self._assets.clear()

    def finish(self) -> None:
        """The last batch, and items no asset points at any more dropped."""
        self.flush()
        self.conn.execute("DELETE FROM identity_items WHERE id NOT IN (SELECT item_id FROM identities)")


@dataclass
class Identified:
    """One asset as the last evaluation identified it. Items are shared dicts: never mutate them."""

    category: str = "unknown"
    os: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    software: list[dict[str, Any]] = field(default_factory=list)
    hardware: list[dict[str, Any]] = field(default_factory=list)
    observations: dict[int, int] = field(default_factory=dict)  # id(item) -> observation


def read(store: Store, asset_ids: Iterable[int] | None = None) -> dict[int, Identified]:
    """The stored identities of the given assets (all when None); empty before the first evaluation."""
    if not ensure(store):
        return {}
    wanted = None if asset_ids is None else sorted(set(asset_ids))
    found: dict[int, Identified] = {}
    items: dict[int, dict[str, Any]] = {}
    for part in _parts(wanted):
        where, params = ("", []) if part is None else (f" WHERE asset_id IN ({', '.join('?' * len(part))})", part)
        for asset_id, category in store.conn.execute(
            f"SELECT asset_id, category FROM identified_assets{where}", params
        ):
            found[asset_id] = Identified(category)
        where = where.replace("asset_id", "i.asset_id")
        for asset_id, role, item_id, observation, text in store.conn.execute(
            "SELECT i.asset_id, i.role, i.item_id, i.observation_id, t.json FROM identities i "
            f"JOIN identity_items t ON t.id = i.item_id{where} ORDER BY i.asset_id, i.rowid",  # as evaluated
            params,
        ):
            one = found.setdefault(asset_id, Identified())
            item = items.get(item_id)
            if item is None:
                item = items[item_id] = json.loads(text)
            if role == "os":
                one.os = item
            elif role in ("candidate", "software", "hardware"):
                getattr(one, "candidates" if role == "candidate" else role).append(item)
            if observation is not None:
                one.observations[id(item)] = observation
    return found


def _parts(wanted: list[int] | None, size: int = 900) -> list[list[int] | None]:
    """Asset ids in slices SQLite takes as parameters (None: every asset in one query)."""
    if wanted is None:
        return [None]
    return [wanted[i : i + size] for i in range(0, len(wanted), size)]
