"""`posture migrate`: an SQLite inventory copied into an empty PostgreSQL database, and the copy proved.

Why a command of its own: a council that outgrows one machine keeps its history (every scan, finding,
exception and identity). The target's schema is made by posture's own migrations (the inventory's and each
later stage's, `STAGES`), then every table is copied with COPY in dependency order, in one transaction (a
failure leaves the target as empty as it was), and each identity sequence is moved past the copied ids.
The proof: each table's row count and a checksum of its rows, read back from both stores and computed the
same way (rows in primary-key order, each value as Python reads it), printed side by side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.db import Database, connect
from scanner.errors import PostureError
from scanner.store import NUL, Store

# A later stage's migrations by stage name (rules: its identities), registered by the stage when its commands
# load, so the scanner never imports it.
STAGES: dict[str, Callable[[], Sequence[Callable[[Database], None]]]] = {}


def register_stage(name: str, migrations: Callable[[], Sequence[Callable[[Database], None]]]) -> None:
    STAGES[name] = migrations


@dataclass
class TableProof:
    table: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def same(self) -> bool:
        return (self.source_rows, self.source_sum) == (self.target_rows, self.target_sum)


def _tables(source: Database) -> list[str]:
    """The source's tables, each after the tables it references (its foreign keys)."""
    names = [r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                          "'sqlite%' AND name != 'schema_stages' ORDER BY name")]  # fmt: skip
    needs = {t: {r[2] for r in source.execute(f"PRAGMA foreign_key_list({t})")} - {t} for t in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [t for t in names if t not in ordered and needs[t] <= set(ordered)]
        if not ready:
            raise PostureError("the inventory's tables reference each other in a cycle", "report this")
        ordered += ready
    return ordered


def _key(source: Database, table: str) -> tuple[list[str], str]:
    """(the columns to copy, the ORDER BY of the checksum: the primary key, else every column)."""
    info = source.execute(f"PRAGMA table_info({table})").fetchall()
    columns = [r[1] for r in info]
    key = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] or columns
    return columns, ", ".join(key)


def _checksum(db: Database, table: str, columns: list[str], order: str) -> tuple[int, str]:
    """(rows, SHA-256 of the rows in key order): the same code reads both stores. NUL characters do not
    count (the copy removes them: PostgreSQL's text cannot hold them)."""
    digest, rows = hashlib.sha256(), 0
    for row in db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"):
        rows += 1
        digest.update(repr(tuple(v.replace(NUL, "") if isinstance(v, str) else v for v in row)).encode())
    return rows, digest.hexdigest()[:16]


def migrate(source_path: Path, url: str, progress: Callable[[str], None] = lambda _: None) -> list[TableProof]:
    """Copy the inventory at `source_path` into the empty PostgreSQL database at `url`; the proof per table."""
    target = connect(url)
    try:  # its schema alone (a copy that failed after making it) is still empty
        held = target.user_version() and any(
            target.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in ("scans", "assets", "evaluations"))
    finally:
        target.close()
    if held:
        raise PostureError(f"{target.name} already holds an inventory: posture migrate fills an empty database",
                           "create an empty one: CREATE DATABASE name LOCALE 'C' TEMPLATE template0")  # fmt: skip
    with Store.open(source_path, readonly=True) as src:
        stages = {}
        if src.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_stages'").fetchone():
            stages = dict(src.conn.execute("SELECT stage, version FROM schema_stages WHERE stage != 'inventory'"))
        for stage, version in stages.items():
            if stage not in STAGES or len(STAGES[stage]()) != version:
                raise PostureError(f"{source_path}'s {stage} tables are at version {version}, which this posture "
                                   "cannot make on PostgreSQL", "open the file once with this posture's "
                                   "`posture evaluate`, then migrate it")  # fmt: skip
        tables = _tables(src.conn)
        with Store.open(url) as dst:
            for stage in stages:
                dst.migrate_stage(stage, STAGES[stage]())
            proofs = _copy(src.conn, dst.conn, tables, progress)
    return proofs


def _copy(src: Database, dst: Database, tables: list[str], progress: Callable[[str], None]) -> list[TableProof]:
    keys = {t: _key(src, t) for t in tables}
    with dst.transaction():
        for table in tables:
            columns, _ = keys[table]
            writable = {r[0] for r in dst.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ? AND is_generated = 'NEVER'", [table])}  # fmt: skip
            missing = [c for c in columns if c not in writable]
            if missing:
                raise PostureError(f"the PostgreSQL {table} table has no column {missing[0]}", "report this")
            progress(table)
            with dst.raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                    copy.write_row(_clean(row))
            sequence = dst.execute("SELECT pg_get_serial_sequence(?, 'id')", [table]).fetchone()[0] \
                if "id" in columns else None  # fmt: skip
            if sequence:  # the next id given there follows the copied ones
                dst.execute(f"SELECT setval(?, coalesce(max(id), 0) + 1, false) FROM {table}", [sequence])
    proofs = []
    for table in tables:
        columns, order = keys[table]
        (n, a), (m, b) = _checksum(src, table, columns, order), _checksum(dst, table, columns, order)
        proofs.append(TableProof(table, n, m, a, b))
    return proofs


def _clean(row: Sequence[Any]) -> Sequence[Any]:
    """A row PostgreSQL's text can hold: an inventory written before NUL characters were removed at ingestion
    may hold some (the checksum leaves them out on both sides)."""
    for value in row:
        if isinstance(value, str) and NUL in value:
            return [v.replace(NUL, "") if isinstance(v, str) else v for v in row]
    return row
