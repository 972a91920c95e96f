"""Stored identities: what each asset was identified as at the last evaluation (issue 12, build item 2).

`posture evaluate` identifies every asset once and writes the result here, in the same transaction as its
findings; the asset view, the report, the exports, the plans and the procurement lots read it, so none of
them identifies again and a report cannot disagree with its own findings. The lifecycle states and dates
are those of the evaluation's day.

What was identified is stored once however many assets share it (`identity_items`: 10,000 hosts running
the same OS are one row), and each asset points at its items with a role: `os` (the best-evidenced OS),
`candidate` (another OS the evidence names: a conflict, shown not resolved), `software`, `hardware`. The
pointers are one JSON list per asset (`identified_assets.items`: an estate of 100,000 hosts with twenty
programs each is 100,000 rows to write, not two million); the `identities` view lists them a row each.
These tables belong to the rules stage: `Store.migrate_stage("rules", MIGRATIONS)` creates and upgrades
them apart from the inventory's own schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from scanner.db import Database
from scanner.store import Store, run_script

ROLES = ("os", "candidate", "software", "hardware")
ITEM_COLUMNS = ("kind", "product", "label", "vendor", "family", "cycles", "version", "model", "category",
                "confidence", "method", "evidence", "lifecycle_state", "eol_date", "extended_until")  # fmt: skip
INSERT_ITEM = (f"INSERT INTO identity_items ({', '.join(ITEM_COLUMNS)}, json) "
               f"VALUES ({', '.join('?' * (len(ITEM_COLUMNS) + 1))}) "
               "ON CONFLICT(json) DO UPDATE SET json = excluded.json RETURNING id")  # fmt: skip
# PostgreSQL's text of the views (SQLite's is in the migrations as they were released): JSON through jsonb,
# string_agg for group_concat, to_hex and lpad for printf; a view's row a truth value as 0/1, as in SQLite.
_PG_JSON_ITEMS = "jsonb_array_elements(ia.items::jsonb) AS j(value)"
_PG_IDENTITIES = """
        CREATE VIEW identities AS               -- one row per asset and item: role os, candidate, software, hardware
            SELECT {evaluation} AS evaluation_id, a.asset_id, j.value ->> 0 AS role,
                   CAST(j.value ->> 1 AS bigint) AS item_id, CAST(j.value ->> 2 AS bigint) AS observation_id
            FROM identified_assets a CROSS JOIN LATERAL jsonb_array_elements(a.items::jsonb) AS j(value);
"""
_PG_SHOWN_ID = "'F-' || to_hex(((f.id & 4294967295) << 32) | (f.id >> 32))"
_PG_VIEWS_V3 = f"""
        CREATE VIEW asset_status AS             -- one row per asset: what it runs and whether it is supported
            SELECT a.id AS asset_id, a.name,
                   (SELECT string_agg(i.value, ', ') FROM asset_identifiers i
                    WHERE i.asset_id = a.id AND i.kind IN ('ipv4', 'ipv6')) AS addresses,
                   coalesce(ia.category, 'unknown') AS category,
                   os.label AS os, coalesce(os.lifecycle_state, 'unknown') AS lifecycle_state,
                   os.eol_date, os.extended_until,
                   (SELECT string_agg(h.label, '; ') FROM {_PG_JSON_ITEMS}
                    JOIN identity_items h ON h.id = CAST(j.value ->> 1 AS bigint)
                    WHERE j.value ->> 0 = 'hardware') AS hardware,
                   a.owner, a.site, a.business_service, a.criticality, a.last_seen
            FROM assets a
            LEFT JOIN identified_assets ia ON ia.asset_id = a.id
            LEFT JOIN identity_items os ON os.id = (
                SELECT CAST(j.value ->> 1 AS bigint) FROM {_PG_JSON_ITEMS}
                WHERE j.value ->> 0 = 'os' LIMIT 1);
        CREATE VIEW open_findings AS            -- findings not fixed, with the id `posture findings` shows
            SELECT {_PG_SHOWN_ID} AS finding, f.rule_id AS rule,
                   r.title, r.severity, r.function,
                   f.asset_id, a.name AS asset, d.json::jsonb ->> 'label' AS product,
                   d.json::jsonb ->> 'lifecycle_state' AS lifecycle_state, f.status, f.opened_at,
                   CAST(EXISTS (SELECT 1 FROM exceptions e WHERE e.until >= CAST(current_date AS text)
                           AND (upper(e.target) = upper({_PG_SHOWN_ID})
                                OR e.target = f.rule_id)) AS integer) AS accepted
            FROM findings f
            JOIN finding_rules r ON r.id = f.rule_id
            JOIN finding_details d ON d.id = f.details_id
            LEFT JOIN assets a ON a.id = f.asset_id
            WHERE f.status != 'fixed';
        CREATE VIEW eol_by_year AS              -- assets whose OS support ends, by UK financial year (April-March)
            SELECT year_from || '/' || lpad(CAST((year_from + 1) % 100 AS text), 2, '0') AS financial_year,
                   year_from, category, count(*) AS assets
            FROM (SELECT CASE WHEN CAST(substr(eol_date, 6, 2) AS INTEGER) >= 4
                              THEN CAST(substr(eol_date, 1, 4) AS INTEGER)
                              ELSE CAST(substr(eol_date, 1, 4) AS INTEGER) - 1 END AS year_from, category
                  FROM asset_status WHERE eol_date IS NOT NULL AND lifecycle_state != 'unknown') AS y
            GROUP BY year_from, category;
"""


def _schema_v1(conn: Database) -> None:
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
        CREATE TABLE identified_assets (        -- each asset as the last evaluation saw it
            asset_id INTEGER PRIMARY KEY REFERENCES assets(id) ON DELETE CASCADE,
            evaluation_id INTEGER NOT NULL,
            category TEXT NOT NULL,           -- the report's group: servers, network, end-user, ot-iot, unknown
            items TEXT NOT NULL DEFAULT '[]'  -- JSON: [role, identity_items id, observation id or null], in order
        );
        """
        + (
            _PG_IDENTITIES.format(evaluation="a.evaluation_id")
            if conn.dialect.name == "postgresql"
            else """
        CREATE VIEW identities AS               -- one row per asset and item: role os, candidate, software, hardware
            SELECT a.evaluation_id, a.asset_id, json_extract(j.value, '$[0]') AS role,
                   json_extract(j.value, '$[1]') AS item_id, json_extract(j.value, '$[2]') AS observation_id
            FROM identified_assets a, json_each(a.items) j;
        """
        ),
    )


def _schema_v2(conn: Database) -> None:
    """An asset's row is kept while its identity does not change, so a daily evaluation of an unchanged estate
    rewrites nothing: the evaluation is the last finished one, not a column every row repeats."""
    if conn.dialect.name == "postgresql":
        newest = "(SELECT max(id) FROM evaluations WHERE finished_at IS NOT NULL)"
        run_script(conn, "DROP VIEW identities;\nALTER TABLE identified_assets DROP COLUMN evaluation_id;\n"
                   + _PG_IDENTITIES.format(evaluation=newest))  # fmt: skip
        return
    run_script(
        conn,
        """
        DROP VIEW identities;
        ALTER TABLE identified_assets DROP COLUMN evaluation_id;
        CREATE VIEW identities AS               -- one row per asset and item: role os, candidate, software, hardware
            SELECT (SELECT max(id) FROM evaluations WHERE finished_at IS NOT NULL) AS evaluation_id, a.asset_id,
                   json_extract(j.value, '$[0]') AS role, json_extract(j.value, '$[1]') AS item_id,
                   json_extract(j.value, '$[2]') AS observation_id
            FROM identified_assets a, json_each(a.items) j;
        """,
    )


def _schema_v3(conn: Database) -> None:
    """Views a person can query in Datasette or the sqlite3 shell without knowing posture's JSON: each asset
    with its operating system and support status, the open findings with the id the CLI shows, and the
    end-of-life cliff by UK financial year. States and dates are as of the last evaluation's day."""
    if conn.dialect.name == "postgresql":
        run_script(conn, _PG_VIEWS_V3)
        return
    run_script(
        conn,
        """
        CREATE VIEW asset_status AS             -- one row per asset: what it runs and whether it is supported
            SELECT a.id AS asset_id, a.name,
                   (SELECT group_concat(i.value, ', ') FROM asset_identifiers i
                    WHERE i.asset_id = a.id AND i.kind IN ('ipv4', 'ipv6')) AS addresses,
                   coalesce(ia.category, 'unknown') AS category,
                   os.label AS os, coalesce(os.lifecycle_state, 'unknown') AS lifecycle_state,
                   os.eol_date, os.extended_until,
                   (SELECT group_concat(h.label, '; ') FROM json_each(ia.items) j
                    JOIN identity_items h ON h.id = json_extract(j.value, '$[1]')
                    WHERE json_extract(j.value, '$[0]') = 'hardware') AS hardware,
                   a.owner, a.site, a.business_service, a.criticality, a.last_seen
            FROM assets a
            LEFT JOIN identified_assets ia ON ia.asset_id = a.id
            LEFT JOIN identity_items os ON os.id = (
                SELECT json_extract(j.value, '$[1]') FROM json_each(ia.items) j
                WHERE json_extract(j.value, '$[0]') = 'os' LIMIT 1);
        CREATE VIEW open_findings AS            -- findings not fixed, with the id `posture findings` shows (the
                                                -- stored number's halves exchanged: rules/engine.py format_id)
            SELECT printf('F-%x', ((f.id & 4294967295) << 32) | (f.id >> 32)) AS finding, f.rule_id AS rule,
                   r.title, r.severity, r.function,
                   f.asset_id, a.name AS asset, json_extract(d.json, '$.label') AS product,
                   json_extract(d.json, '$.lifecycle_state') AS lifecycle_state, f.status, f.opened_at,
                   EXISTS (SELECT 1 FROM exceptions e WHERE e.until >= date('now')
                           AND (upper(e.target) = upper(printf('F-%x', ((f.id & 4294967295) << 32) | (f.id >> 32)))
                                OR e.target = f.rule_id)) AS accepted
            FROM findings f
            JOIN finding_rules r ON r.id = f.rule_id
            JOIN finding_details d ON d.id = f.details_id
            LEFT JOIN assets a ON a.id = f.asset_id
            WHERE f.status != 'fixed';
        CREATE VIEW eol_by_year AS              -- assets whose OS support ends, by UK financial year (April-March)
            SELECT printf('%d/%02d', year_from, (year_from + 1) % 100) AS financial_year, year_from, category,
                   count(*) AS assets
            FROM (SELECT CASE WHEN CAST(substr(eol_date, 6, 2) AS INTEGER) >= 4
                              THEN CAST(substr(eol_date, 1, 4) AS INTEGER)
                              ELSE CAST(substr(eol_date, 1, 4) AS INTEGER) - 1 END AS year_from, category
                  FROM asset_status WHERE eol_date IS NOT NULL AND lifecycle_state != 'unknown')
            GROUP BY year_from, category;
        """,
    )


def _schema_v4(conn: Database) -> None:
    """Finding ids people can type (rules/findings.py `finding_number`): every stored finding renumbered,
    with what points at it (finding_events, the exceptions accepted by id, the subjects of findings about
    findings: `respond.past-sla`'s "finding:F-..."), so history and acceptances carry over unchanged."""
    from rules.engine import format_id
    from rules.findings import FINDING_ID, finding_number

    def old_id(text: str) -> int | None:  # as version 3 wrote it: F- and the number's hex digits, as they are
        match = FINDING_ID.fullmatch(text.strip())
        return int(match[1], 16) if match else None

    rows = conn.execute("SELECT id, rule_id, asset_id, subject FROM findings ORDER BY asset_id, id").fetchall()
    new_of: dict[int, int] = {}
    taken: dict[int | None, set[int]] = {}

    def number(rule_id: str, asset_id: int | None, subject: str) -> int:
        n = finding_number(rule_id, asset_id, subject)
        used = taken.setdefault(asset_id, set())
        while n in used:
            n += 1
        used.add(n)
        return n

    moved = []
    about_findings = []
    for old, rule_id, asset_id, subject in rows:
        if str(subject).startswith("finding:"):
            about_findings.append((old, rule_id, asset_id, subject))
        else:
            new_of[old] = number(rule_id, asset_id, subject)
            moved.append((old, new_of[old], subject))
    for old, rule_id, asset_id, subject in about_findings:
        target = old_id(subject.removeprefix("finding:"))
        renamed = f"finding:{format_id(new_of[target])}" if target in new_of else subject
        new_of[old] = number(rule_id, asset_id, renamed)
        moved.append((old, new_of[old], renamed))
    run_script(conn, "CREATE TEMP TABLE finding_renumber (old INTEGER PRIMARY KEY, new INTEGER NOT NULL, "
               "subject TEXT);")  # fmt: skip
    conn.executemany("INSERT INTO finding_renumber VALUES (?, ?, ?)", moved)
    # Through negative ids: a new number may equal another row's old one until that row has moved too.
    conn.execute("UPDATE findings SET id = -id")
    conn.execute("UPDATE findings SET subject = (SELECT subject FROM finding_renumber WHERE old = -findings.id), "
                 "id = (SELECT new FROM finding_renumber WHERE old = -findings.id)")  # fmt: skip
    conn.execute("UPDATE finding_events SET finding_id = -finding_id")
    conn.execute("UPDATE finding_events SET finding_id = coalesce((SELECT new FROM finding_renumber "
                 "WHERE old = -finding_events.finding_id), -finding_id)")  # fmt: skip
    for exception_id, target in conn.execute("SELECT id, target FROM exceptions").fetchall():
        was = old_id(target)
        if was is not None and was in new_of:
            conn.execute("UPDATE exceptions SET target = ? WHERE id = ?", [format_id(new_of[was]), exception_id])
    conn.execute("DROP TABLE finding_renumber")


# Each entry moves the rules stage's schema one version up; append, never edit a released one.
MIGRATIONS = [_schema_v1, _schema_v2, _schema_v3, _schema_v4]
# Not stored: it changes every day, so storing it would rewrite every row each evaluation (`read` derives it).
DAILY = "days_to_eol"


def ensure(store: Store) -> bool:
    """Creates or upgrades the tables; False for a read-only database that lacks them."""
    return store.migrate_stage("rules", MIGRATIONS)


class Writer:
    """Writes the stored identities inside the evaluation's transaction, in batches: a row only where the
    asset's identity changed (an unchanged estate writes nothing)."""

    BATCH = 5000

    def __init__(self, conn: Database) -> None:
        self.conn = conn
        self._ids: dict[int, tuple[dict[str, Any], int]] = {}  # id(item) -> (item: kept alive, row id)
        self._assets: list[tuple[int, str, str]] = []
        self._seen: list[int] = []
        self._heads: dict[str, dict[int, str]] = {role: {} for role in ROLES}  # items stay alive in `_ids`

    def item_id(self, item: dict[str, Any]) -> int:
        known = self._ids.get(id(item))
        if known is not None:
            return known[1]
        text = json.dumps({k: v for k, v in item.items() if k != DAILY}, sort_keys=True, default=str)
        values = [json.dumps(item.get(c)) if c == "cycles" else item.get(c) for c in ITEM_COLUMNS]
        row = self.conn.execute(INSERT_ITEM, [*values, text]).fetchone()
        self._ids[id(item)] = (item, int(row[0]))
        return int(row[0])

    def add(self, asset_id: int, category: str, roles: Iterable[tuple[str, list[dict[str, Any]]]],
            observations: dict[int, int]) -> None:  # fmt: skip
        parts = []
        for role, found in roles:
            heads = self._heads[role]
            for item in found:
                head = heads.get(id(item))
                if head is None:  # the JSON of [role, item id, written once per role and item
                    head = heads[id(item)] = f'["{role}",{self.item_id(item)},'
                obs = observations.get(id(item))
                parts.append(f"{head}{'null' if obs is None else obs}]")
        self._assets.append((asset_id, category, f"[{','.join(parts)}]"))
        self._seen.append(asset_id)
        if len(self._assets) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        self.conn.upsert_many(  # each asset once: unique by the conflict target
            "INSERT INTO identified_assets (asset_id, category, items) VALUES (?, ?, ?) ON CONFLICT(asset_id) "
            "DO UPDATE SET category = excluded.category, items = excluded.items "
            "WHERE identified_assets.category != excluded.category OR identified_assets.items != excluded.items",
            self._assets,
        )
        self._assets.clear()

    def finish(self) -> None:
        """The last batch; then the rows of assets this evaluation did not see, and items no asset points at."""
        self.flush()
        dialect = self.conn.dialect
        self.conn.execute(f"DELETE FROM identified_assets WHERE {dialect.not_in_ids('identified_assets.asset_id')}",
                          [dialect.list_param(self._seen)])  # fmt: skip
        used = dialect.list_param(sorted(row for _, row in self._ids.values()))
        self.conn.execute(f"DELETE FROM identity_items WHERE {dialect.not_in_ids('identity_items.id')}", [used])


def _evaluation_day(store: Store) -> date | None:
    """The day of the evaluation the stored identities are from: the last one that finished."""
    row = store.conn.execute("SELECT day FROM evaluations WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1")
    found = row.fetchone()
    try:
        return date.fromisoformat(found[0]) if found else None
    except (TypeError, ValueError):
        return None


@dataclass
class Identified:
    """One asset as the last evaluation identified it. Items are shared dicts: never mutate them."""

    category: str = "unknown"
    os: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    software: list[dict[str, Any]] = field(default_factory=list)
    hardware: list[dict[str, Any]] = field(default_factory=list)


def read(store: Store, asset_ids: Iterable[int] | None = None) -> dict[int, Identified]:
    """The stored identities of the given assets (all when None); empty before the first evaluation."""
    if not ensure(store):
        return {}
    wanted = None if asset_ids is None else sorted(set(asset_ids))
    found: dict[int, Identified] = {}
    pointers: dict[int, list[list[Any]]] = {}
    for part in _parts(wanted):
        where, params = ("", []) if part is None else (f" WHERE asset_id IN ({', '.join('?' * len(part))})", part)
        for asset_id, category, items in store.conn.execute(
            f"SELECT asset_id, category, items FROM identified_assets{where}", params
        ):
            found[asset_id] = Identified(category)
            pointers[asset_id] = json.loads(items)
    needed = sorted({p[1] for listed in pointers.values() for p in listed})
    day = _evaluation_day(store) if needed else None
    items_by_id: dict[int, dict[str, Any]] = {}
    for part in _parts(needed):
        ids = part or []
        marks = ", ".join("?" * len(ids))
        for item_id, text in store.conn.execute(f"SELECT id, json FROM identity_items WHERE id IN ({marks})", ids):
            item = items_by_id[item_id] = json.loads(text)
            eol = item.get("eol_date")
            item[DAILY] = (date.fromisoformat(eol) - day).days if eol and day else None
    for asset_id, listed in pointers.items():
        one = found[asset_id]
        for role, item_id, _ in listed:
            item = items_by_id.get(item_id)
            if item is None:
                continue
            if role == "os":
                one.os = item
            elif role in ("candidate", "software", "hardware"):
                getattr(one, "candidates" if role == "candidate" else role).append(item)
    return found


def _parts(wanted: list[int] | None, size: int = 900) -> list[list[int] | None]:
    """Asset ids in slices SQLite takes as parameters (None: every asset in one query)."""
    if wanted is None:
        return [None]
    return [wanted[i : i + size] for i in range(0, len(wanted), size)]
