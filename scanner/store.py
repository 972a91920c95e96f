"""The inventory: one SQLite file (or a PostgreSQL database), versioned schema, every fact kept with its source.

Why SQLite: a council's security lead can open the file in the sqlite3 shell or Datasette and read it, and
every stage can be run on its own; PostgreSQL (`--db postgresql://...`) serves an inventory several sites
share, through the same statements (`scanner.db` translates the few that differ). Observations are never
overwritten; the asset view (`scanner.views`) is derived from them. Writes happen in explicit transactions
that take the writer lock up front, so a process killed at any moment leaves the database as it was before
that transaction.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from scanner.compat import UTC
from scanner.db import Database, Target, connect, is_url, open_error, sqlite_uri
from scanner.errors import PostureError
from scanner.model import MAX_EVIDENCE, HostObservation, OsMatch, RegisterEntry, Service, bound, scripts_json

__all__ = ["Store", "sqlite_uri"]  # sqlite_uri: the tests' readers open a file as the store does

# Names that many machines share; matching assets on them would merge strangers.
GENERIC_HOSTNAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Sources that read a register of machines rather than the network (Active Directory): their sighting is not
# a network sighting (first/last seen stay as the network saw them), and they may merge by short name.
DIRECTORY_SOURCES = frozenset({"ad"})
NOT_NETWORK_SOURCES = DIRECTORY_SOURCES | {"import"}  # an asset only these know was never seen on the network


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_script(conn: Database, script: str) -> None:
    """Run statements one by one: `executescript` would COMMIT the migration's transaction half-way. The
    script is written for SQLite and rendered for the store (`Dialect.ddl`): SQLite runs the very text it
    always has, so existing files keep their schema byte for byte."""
    statement = ""
    for line in conn.dialect.ddl(script).splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {statement[:80]!r}")


def _schema_v1(conn: Database) -> None:
    run_script(
        conn,
        """
        CREATE TABLE scans (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,               -- nmap-scan, nmap-import, asset-register
            source TEXT NOT NULL,             -- nmap, import
            status TEXT NOT NULL,             -- running, complete, interrupted, failed
            started_at TEXT NOT NULL,
            finished_at TEXT,
            targets TEXT NOT NULL DEFAULT '[]',
            excluded TEXT NOT NULL DEFAULT '[]',
            scope TEXT NOT NULL DEFAULT '[]',
            options TEXT NOT NULL DEFAULT '{}',
            tool_version TEXT,
            input_file TEXT,
            hosts_total INTEGER NOT NULL DEFAULT 0,
            hosts_done INTEGER NOT NULL DEFAULT 0,
            hosts_up INTEGER NOT NULL DEFAULT 0,
            resumed_at TEXT,
            error TEXT,
            pid INTEGER,
            pid_start TEXT,
            machine TEXT
        );
        CREATE TABLE scan_chunks (
            scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            targets TEXT NOT NULL,            -- JSON list of addresses and CIDR blocks given to nmap
            host_count INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',   -- pending, done
            hosts_up INTEGER NOT NULL DEFAULT 0,
            finished_at TEXT,
            PRIMARY KEY (scan_id, seq)
        );
        CREATE TABLE assets (
            id INTEGER PRIMARY KEY,
            name TEXT,
            first_seen TEXT,
            last_seen TEXT,
            in_register INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            business_service TEXT,
            site TEXT,
            criticality TEXT,
            cost_centre TEXT,
            attributes TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE asset_identifiers (
            id INTEGER PRIMARY KEY,
            asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,               -- ipv4, ipv6, mac, hostname
            value TEXT NOT NULL,
            source TEXT NOT NULL,
            first_seen TEXT,
            last_seen TEXT,
            UNIQUE (asset_id, kind, value)
        );
        CREATE INDEX asset_identifiers_value ON asset_identifiers(kind, value);
        CREATE TABLE observations (
            id INTEGER PRIMARY KEY,
            scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
            asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            observed_at TEXT NOT NULL,
            address TEXT,
            ports_scanned INTEGER NOT NULL DEFAULT 0,
            evidence TEXT NOT NULL            -- JSON: what the source said of the host, bounded; its ports
                                              -- and software are rows of services/software pointing here
        );
        CREATE INDEX observations_asset ON observations(asset_id, observed_at);
        CREATE INDEX observations_scan ON observations(scan_id);
        CREATE TABLE services (
            id INTEGER PRIMARY KEY,
            observation_id INTEGER NOT NULL REFERENCES observations(id) ON DELETE CASCADE,
            scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
            asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
            port INTEGER NOT NULL,
            protocol TEXT NOT NULL,
            state TEXT NOT NULL,
            name TEXT,
            product TEXT,
            version TEXT,
            extra_info TEXT,
            tunnel TEXT,
            method TEXT,
            confidence INTEGER,
            os_type TEXT,
            device_type TEXT,
            cpes TEXT NOT NULL DEFAULT '[]',  -- JSON list: every CPE the source named
            scripts TEXT                      -- JSON object of script id -> output, when scripts ran
        );
        CREATE INDEX services_observation ON services(observation_id);
        CREATE TABLE software (
            id INTEGER PRIMARY KEY,
            observation_id INTEGER NOT NULL REFERENCES observations(id) ON DELETE CASCADE,
            scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
            asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,               -- os, application, firmware
            name TEXT NOT NULL,
            vendor TEXT,
            product TEXT,
            version TEXT,
            cpe TEXT,
            cpes TEXT NOT NULL DEFAULT '[]',
            accuracy INTEGER,
            method TEXT
        );
        CREATE INDEX software_observation ON software(observation_id);
        """,
    )


def _schema_v2(conn: Database) -> None:
    """SNMP: per-target outcome of a scan, and the extra facts SNMP gives about software."""
    run_script(
        conn,
        """
        CREATE TABLE scan_targets (
            scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
            address TEXT NOT NULL,
            method TEXT NOT NULL,             -- snmp
            status TEXT NOT NULL,             -- ok, partial, auth-failure, no-response, timeout, error
            detail TEXT,
            credential TEXT,                  -- the credential's name, never its secret
            seconds REAL,
            requests INTEGER,
            asset_id INTEGER REFERENCES assets(id) ON DELETE SET NULL,
            PRIMARY KEY (scan_id, address, method)
        );
        ALTER TABLE software ADD COLUMN extra TEXT;     -- JSON: type, install date, serial, revisions
        ALTER TABLE software ADD COLUMN raw_hex TEXT;   -- the name's bytes when they were not UTF-8
        """,
    )


def _schema_v3(conn: Database) -> None:
    """Rules: each evaluation, the findings it keeps across scans, and the exceptions register."""
    run_script(
        conn,
        """
        CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            day TEXT NOT NULL,                -- the day lifecycle states were judged on
            rules INTEGER NOT NULL DEFAULT 0,
            assets INTEGER NOT NULL DEFAULT 0,
            catalogue_date TEXT,              -- the lifecycle data's date, shown in every report
            kev_version TEXT,
            summary TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE finding_rules (            -- each rule as last evaluated: findings name it by id
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            function TEXT NOT NULL,           -- protect, detect, respond
            severity TEXT NOT NULL,
            pack TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}' -- JSON: rationale, remediation, decommission, references
        );
        CREATE TABLE finding_details (          -- what a finding is about, stored once however many share it
            id INTEGER PRIMARY KEY,
            json TEXT NOT NULL UNIQUE         -- product, version, cycle, lifecycle state, evidence
        );
        CREATE TABLE findings (
            id INTEGER PRIMARY KEY,           -- stable: asset id (high 32 bits) and a digest of rule and subject
            rule_id TEXT NOT NULL,
            asset_id INTEGER REFERENCES assets(id) ON DELETE CASCADE,
            subject TEXT NOT NULL,            -- what on the asset: "os:windows:5-sp3", "tcp/23", ""
            status TEXT NOT NULL,             -- new, open, fixed, reopened
            first_seen TEXT NOT NULL,         -- day first found
            opened_at TEXT NOT NULL,          -- day found again after a fix (= first_seen until then)
            last_seen TEXT NOT NULL,
            fixed_at TEXT,
            times_reopened INTEGER NOT NULL DEFAULT 0,
            evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
            details_id INTEGER NOT NULL REFERENCES finding_details(id)
        );
        CREATE TABLE exceptions (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL,             -- a finding id or a rule id
            until TEXT NOT NULL,              -- last day the acceptance holds
            reason TEXT NOT NULL,
            esu INTEGER NOT NULL DEFAULT 0,   -- accepted because paid extended support was bought
            created_at TEXT NOT NULL
        );
        CREATE INDEX exceptions_target ON exceptions(target);
        """,
    )


def _schema_v4(conn: Database) -> None:
    """Host-agent bundles (each imported once), and which findings changed in each evaluation (for diff)."""
    run_script(
        conn,
        """
        CREATE TABLE bundles (                  -- every agent bundle imported: a second copy is a replay
            bundle_id TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,      -- SHA-256 of the signed payload
            key_id TEXT NOT NULL,             -- the signing key (its public half is in the trust list)
            key_name TEXT,
            machine_id TEXT,
            collected_at TEXT NOT NULL,
            imported_at TEXT NOT NULL,
            file TEXT,
            scan_id INTEGER REFERENCES scans(id) ON DELETE SET NULL,
            asset_id INTEGER REFERENCES assets(id) ON DELETE SET NULL
        );
        CREATE INDEX bundles_agent ON bundles(key_id, machine_id, collected_at);
        ALTER TABLE evaluations ADD COLUMN scan_id INTEGER;  -- the newest finished scan it judged
        CREATE TABLE finding_events (           -- a finding's status change, in the evaluation that made it
            evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
            finding_id INTEGER NOT NULL,
            event TEXT NOT NULL,              -- new, reopened, fixed
            PRIMARY KEY (evaluation_id, finding_id)
        );
        """,
    )


def _schema_v5(conn: Database) -> None:
    """An index on each foreign key, so a person's query in Datasette or the sqlite3 shell ("the software of
    asset 12", "the findings of asset 12") and ON DELETE CASCADE do not read whole tables. Two are left out on
    purpose: findings.evaluation_id and findings.details_id are rewritten on every open finding at every
    evaluation, and indexing them made a repeat evaluation of 20,000 assets 56% slower (7.7 s to 12.1 s);
    nothing looks findings up by them."""
    run_script(
        conn,
        """
        CREATE INDEX services_asset ON services(asset_id);
        CREATE INDEX services_scan ON services(scan_id);
        CREATE INDEX software_asset ON software(asset_id);
        CREATE INDEX software_scan ON software(scan_id);
        CREATE INDEX scan_targets_asset ON scan_targets(asset_id);
        CREATE INDEX findings_asset ON findings(asset_id);
        CREATE INDEX bundles_asset ON bundles(asset_id);
        CREATE INDEX bundles_scan ON bundles(scan_id);
        """,
    )


# Each entry moves the schema one version up; append, never edit a released one.
MIGRATIONS: list[Callable[[Database], None]] = [_schema_v1, _schema_v2, _schema_v3, _schema_v4,
                                                          _schema_v5]  # fmt: skip
SCHEMA_VERSION = len(MIGRATIONS)


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process: with the pid, it tells a live scan from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or process_start(pid) in (None, start)


def insert_scan(conn: Database, kind: str, source: str, status: str, **fields: Any) -> int:
    """A scans row, inside the caller's transaction; list and dict fields are stored as JSON."""
    pid = os.getpid()
    row = {
        "kind": kind,
        "source": source,
        "status": status,
        "started_at": utc_now(),
        "pid": pid,
        "pid_start": process_start(pid),
        "machine": socket.gethostname()[:253],
    }
    for key, value in fields.items():
        row[key] = json.dumps(value) if isinstance(value, list | dict) else value
    sql = f"INSERT INTO scans ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) RETURNING id"
    return int(conn.execute(sql, list(row.values())).fetchone()[0])


def insert_chunks(conn: Database, scan_id: int, units: list[tuple[list[str], int]]) -> None:
    """A run's units of work, (targets, how many targets), numbered in order, inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO scan_chunks (scan_id, seq, targets, host_count) VALUES (?, ?, ?, ?)",
        [(scan_id, i, json.dumps(targets), n) for i, (targets, n) in enumerate(units)],
    )


class Store:
    """An open inventory (an SQLite file or a PostgreSQL database). Use `Store.open`; close it, or use it as a
    context manager. `conn` is the `scanner.db.Database`: `?` statements on either store."""

    def __init__(self, conn: Database) -> None:
        self.conn = conn
        self.path = conn.name  # the file, or the URL without its password: what messages show
        self.readonly = conn.readonly
        self.db = conn  # `db.query` gives dict rows

    @classmethod
    def open(cls, target: Target, readonly: bool = False, create: bool = True) -> Store:
        """Open (creating when writable) and migrate; every failure becomes one line the user can act on.
        `create=False` refuses a PostgreSQL database that holds no inventory yet (a file that does not exist
        is refused by the caller, before anything is made)."""
        store = cls(connect(target, readonly))
        conn = store.conn
        try:
            version = conn.user_version()
            if version > SCHEMA_VERSION:
                raise PostureError(
                    f"{store.path} was written by a newer posture (schema {version}, this one knows "
                    f"{SCHEMA_VERSION})",
                    "upgrade posture",
                )
            if version == 0 and (readonly or not create) and is_url(target):
                raise PostureError(f"no inventory at {store.path}", "run `posture scan` or `posture import` first")
            if not readonly:
                store._migrate(version)
            elif version < SCHEMA_VERSION:
                raise PostureError(f"{store.path} needs a schema upgrade",
                                   "run any writing command, e.g. `posture scans`")  # fmt: skip
        except PostureError:
            conn.close()
            raise
        except conn.Error as exc:
            conn.close()
            raise open_error(conn, exc) from exc
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate_stage(self, stage: str, migrations: Sequence[Callable[[Database], None]]) -> bool:
        """A later stage's own tables (rules: identities), versioned apart from the inventory's so each stage
        owns its schema. Runs what is missing, each step in a transaction; False when the database is
        read-only and behind (the stage's tables are then absent or old: readers show nothing stored)."""
        stage_sql = "SELECT version FROM schema_stages WHERE stage = ?"
        try:
            row = self.conn.execute(stage_sql, [stage]).fetchone()
        except self.conn.Error:  # no stage has migrated yet
            row = None
        done = row[0] if row else 0
        if done >= len(migrations):
            return True
        if self.readonly:
            return False
        for number in range(done, len(migrations)):
            with self.transaction():
                self.conn.execute("CREATE TABLE IF NOT EXISTS schema_stages (stage TEXT PRIMARY KEY, version INTEGER)")
                if (self.conn.execute(stage_sql, [stage]).fetchone() or [0])[0] > number:
                    continue  # another process ran it meanwhile
                migrations[number](self.conn)
                self.conn.execute("INSERT INTO schema_stages (stage, version) VALUES (?, ?) ON CONFLICT(stage) "
                                  "DO UPDATE SET version = excluded.version", [stage, number + 1])  # fmt: skip
        return True

    def _migrate(self, version: int) -> None:
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                if self.conn.user_version() > number:
                    continue  # another process ran it meanwhile (read again under the writer lock)
                MIGRATIONS[number](self.conn)
                self.conn.set_user_version(number + 1)

    def transaction(self, check_references: bool = True) -> AbstractContextManager[Database]:
        """All or nothing, one writer at a time: see `scanner.db.Database.transaction`."""
        return self.conn.transaction(check_references)

    # ---- scans -------------------------------------------------------------------------------------

    def start_scan(self, kind: str, source: str, **fields: Any) -> int:
        """Record that work began, before any of it is done: a crash leaves a row that says so."""
        with self.transaction() as conn:
            return insert_scan(conn, kind, source, "running", **fields)

    def add_chunks(self, scan_id: int, units: list[tuple[list[str], int]]) -> None:
        with self.transaction() as conn:
            insert_chunks(conn, scan_id, units)

    def pending_chunks(self, scan_id: int) -> list[tuple[int, list[str], int]]:
        rows = self.conn.execute(
            "SELECT seq, targets, host_count FROM scan_chunks WHERE scan_id = ? AND status = 'pending' ORDER BY seq",
            (scan_id,),
        ).fetchall()
        return [(seq, json.loads(t), n) for seq, t, n in rows]

    def finish_scan(self, scan_id: int, status: str, error: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE scans SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, utc_now(), bound(error, MAX_EVIDENCE), scan_id),
            )

    def claim_scan(self, scan_id: int) -> None:
        """Take over an interrupted scan for resuming: this process now owns the row."""
        pid = os.getpid()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE scans SET status = 'running', resumed_at = ?, finished_at = NULL, error = NULL, "
                "pid = ?, pid_start = ?, machine = ? WHERE id = ?",
                (utc_now(), pid, process_start(pid), socket.gethostname()[:253], scan_id),
            )

    def reap_stale_scans(self) -> list[int]:
        """Mark 'running' scans whose process is gone (killed, crashed, power cut) as interrupted."""
        machine = socket.gethostname()[:253]
        rows = self.conn.execute("SELECT id, pid, pid_start, machine FROM scans WHERE status = 'running'").fetchall()
        stale = [r[0] for r in rows if r[3] == machine and not (r[1] and process_alive(r[1], r[2]))]
        if stale:
            with self.transaction() as conn:
                conn.executemany(
                    "UPDATE scans SET status = 'interrupted', error = 'the scanning process ended without "
                    "finishing (killed or crashed)' WHERE id = ? AND status = 'running'",
                    [(i,) for i in stale],
                )
        return stale

    def prune_candidates(self, keep: int | None, older_than: str | None) -> list[int]:
        """Scans to delete: beyond the newest `keep` of each kind and target list (host-agent imports: of
        each machine), or started before `older_than` (an ISO time). The newest of each is always kept, and
        so are running scans and asset-register imports (they carry the owners)."""
        groups: dict[tuple[str, str, int | None], list[tuple[int, str]]] = {}
        for scan_id, kind, targets, started, machine in self.conn.execute(
            "SELECT s.id, s.kind, s.targets, s.started_at, b.asset_id FROM scans s "
            "LEFT JOIN bundles b ON b.scan_id = s.id "
            "WHERE s.status != 'running' AND s.kind != 'asset-register' ORDER BY s.id DESC"
        ):  # host-agent bundles: each machine's own newest N (one machine's imports say nothing of another)
            key = (kind, targets if targets != "[]" else "import", machine)
            groups.setdefault(key, []).append((scan_id, started))
        doomed = []
        for scans in groups.values():
            for n, (scan_id, started) in enumerate(scans):
                if n == 0:
                    continue
                if (keep is not None and n >= keep) or (older_than is not None and started < older_than):
                    doomed.append(scan_id)
        return sorted(doomed)

    def prune(self, scan_ids: list[int]) -> int:
        """Delete scans with their observations, services and software, in one transaction. Assets and
        their first/last seen stay: the history of when a machine was first seen is never rewritten."""
        with self.transaction() as conn:
            for start in range(0, len(scan_ids), 500):
                part = scan_ids[start : start + 500]
                marks = ",".join("?" * len(part))
                for table in ("software", "services", "scan_targets", "scan_chunks", "observations"):
                    conn.execute(f"DELETE FROM {table} WHERE scan_id IN ({marks})", part)
                conn.execute(f"DELETE FROM scans WHERE id IN ({marks})", part)
        return len(scan_ids)

    def new_in_latest_scan(self) -> set[int]:
        """Assets first seen by the newest network scan or import, when an earlier one had looked too."""
        scans = [r[0] for r in self.conn.execute(
            "SELECT id FROM scans WHERE kind != 'asset-register' AND status IN ('complete', 'interrupted') "
            "ORDER BY id DESC LIMIT 2")]  # fmt: skip
        if len(scans) < 2:
            return set()
        # NOT EXISTS, not NOT IN: PostgreSQL hashes a NOT IN subquery only while it fits in work_mem, and
        # past that compares each row with every other: 500,000 assets' evaluate had waited 6 minutes on it,
        # unfinished, where NOT EXISTS (an anti-join) takes 0.4 s.
        return {r[0] for r in self.conn.execute(
            "SELECT asset_id FROM observations o WHERE scan_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM observations p WHERE p.asset_id = o.asset_id AND p.scan_id < ?)",
            [scans[0], scans[0]])}  # fmt: skip

    def assets_seen_in(self, *scan_ids: int) -> list[int]:
        """The assets that these scans observed, in id order."""
        rows = self.conn.execute(
            f"SELECT DISTINCT asset_id FROM observations WHERE scan_id IN ({','.join('?' * len(scan_ids))}) "
            "ORDER BY asset_id",
            scan_ids,
        )
        return [r[0] for r in rows]

    def scan_row(self, scan_id: int) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM scans WHERE id = ?", [scan_id]))
        return rows[0] if rows else None

    # ---- writing observations ------------------------------------------------------------------------

    def ingest(self, scan_id: int, source: str, hosts: Iterable[HostObservation], **kw: Any) -> IngestStats:
        """Write host observations inside the caller's transaction; see `Ingest`."""
        return self.ingest_prepared(scan_id, source, map(prepare_host, hosts), **kw)

    def ingest_prepared(self, scan_id: int, source: str, hosts: Iterable[PreparedHost], **kw: Any) -> IngestStats:
        with Ingest(self.conn, scan_id, source, **kw) as ingest:
            if self.conn.dialect.name == "sqlite":  # a lookup is a function call away: one host at a time
                for host in hosts:
                    ingest.add_prepared(host)
            else:  # each lookup is a round trip: the identifiers of 500 hosts are asked in two statements
                rest = iter(hosts)
                chunks = iter(lambda: list(islice(rest, 500)), [])
                for chunk in chunks:
                    ingest.index.prefetch(k for host in chunk for k in ingest.lookups(host))
                    for host in chunk:
                        ingest.add_prepared(host)
        return ingest.stats

    def apply_register(self, scan_id: int, entries: Iterable[RegisterEntry]) -> IngestStats:
        """Merge asset-register rows into assets inside the caller's transaction."""
        with Ingest(self.conn, scan_id, "import") as ingest:
            for entry in entries:
                ingest.add_register_entry(entry)
        return ingest.stats


# A host observation turned into plain rows, minus the ids only the writer can give (observation, scan,
# asset): ips, macs, hostnames, observed_at, ports_scanned, evidence, service rows, software rows.
# Plain tuples, because they cross a process boundary in `importers` and unpickle ten times faster than
# objects.
PreparedHost = tuple[
    list[str], list[str], list[str], str | None, bool, dict[str, Any], list[tuple[Any, ...]], list[tuple[Any, ...]]
]


DIRECTORY_OS_ATTRIBUTES = ("operatingSystem", "operatingSystemVersion", "operatingSystemServicePack")


def prepare_host(host: HostObservation) -> PreparedHost:
    """Everything about a host's rows that does not depend on the inventory (so it can run anywhere)."""
    # Host-level facts only: each port and OS guess is a row of its own (services, software) that points
    # at this observation, so repeating them here would only double the import's work.
    evidence: dict[str, Any] = {
        "status": host.status,
        "addresses": [list(a) for a in host.addresses],
        "hostnames": list(host.hostnames),
        "mac_vendor": host.mac_vendor,
        "uptime_seconds": host.uptime_seconds,
        "open_ports": len(host.services),
        "device_types": list(dict.fromkeys(o.device_type for o in host.os_matches if o.device_type)),
    }
    # Service rows follow Service's fields, then its CPEs and scripts as JSON (see the INSERT in flush). A
    # script is stored as its output, or as {"output", "data"} when it gave structured output (Script.as_json);
    # host scripts go in the observation's evidence the same way, under "scripts": no new column.
    services = [
        (*s[:12], _json_tuple(s.cpes), json.dumps(scripts_json(s.scripts)) if s.scripts else None)
        for s in host.services
    ]
    if host.scripts:  # host scripts (smb-protocols, smb-os-discovery, ...): facts of the host, not of a port
        evidence["scripts"] = scripts_json(host.scripts)
    directory_os = None
    if host.directory is not None:  # the directory's facts, like host scripts: in the evidence, no new column
        evidence["directory"] = host.directory
        # Its OS row carries the three attributes as stated, for identification (name and build together).
        directory_os = json.dumps({k: host.directory.get(k) for k in DIRECTORY_OS_ATTRIBUTES})
    oses = [
        ("os", o.name, o.vendor, o.family, o.generation, o.cpes[0] if o.cpes else None, _json_tuple(o.cpes),
         o.accuracy, o.method, directory_os if o.method == "directory" else None, None)
        for o in (list(host.os_matches) or _os_hints(host.services))
    ]  # fmt: skip
    return (
        host.ips, host.macs, list(host.hostnames), host.observed_at, host.ports_scanned,
        evidence, services, oses,
    )  # fmt: skip


@dataclass
class IngestStats:
    hosts: int = 0
    new_assets: int = 0
    services: int = 0
    software: int = 0


_FIND = ("SELECT asset_id FROM asset_identifiers WHERE kind = ? AND value = ? "
         "ORDER BY last_seen DESC NULLS LAST, id DESC LIMIT 1")
# `short` itself or a name starting with `short.`, as one range of the (kind, value) index: [short, short/)
# holds both ("." sorts just before "/") and the OR only filters inside it. Written as `value = ? OR a range`,
# SQLite read every hostname for each lookup: a 50,000-object directory import took 20x ldapsearch's time.
_BY_SHORT_NAME = (
    "SELECT DISTINCT asset_id FROM asset_identifiers WHERE kind IN ('hostname', 'sysname') "
    "AND value >= ? AND value < ? AND (value = ? OR value >= ?) LIMIT 2"
)
_FIND_NAME = (
    "SELECT asset_id FROM asset_identifiers WHERE kind IN ('hostname', 'sysname') AND value = ? "
    "ORDER BY last_seen DESC NULLS LAST, id DESC LIMIT 1"
)


class IdentityIndex:
    """Which asset an address, MAC or hostname belongs to.

    Matching order: a known MAC wins; then an address, unless the asset there has MACs and this sighting
    brings a different one (another machine now answers at that address); then a non-generic hostname or
    sysName under the same MAC rule. No match makes a new asset. Lookups go to SQLite (the identifiers'
    index), so memory does not grow with the inventory; what the running batch added and has not written
    yet is held in `pending` until `Ingest.flush` writes it.
    """

    def __init__(self, conn: Database) -> None:
        self.conn = conn
        self.known: dict[tuple[str, str], int | None] = {}  # asked ahead (`prefetch`); None: not there
        self.pending: dict[tuple[str, str], int] = {}
        self.pending_macs: set[int] = set()
        self.pending_directory_named: set[int] = set()  # assets a directory gave a DNS name in this batch

    def remember(self, asset_id: int, kind: str, value: str) -> None:
        if kind == "mac":
            self.pending_macs.add(asset_id)
        if kind in ("hostname", "sysname"):
            if value in GENERIC_HOSTNAMES:
                return
            kind = "name"
        elif kind == "ipv6":
            kind = "ipv4"  # one namespace for addresses: the value tells the family
        self.pending[(kind, value)] = asset_id

    def written(self) -> None:
        """The pending identifiers are in the table now (and what was asked ahead may have changed)."""
        self.known.clear()
        self.pending.clear()
        self.pending_macs.clear()
        self.pending_directory_named.clear()

    def prefetch(self, keys: Iterable[tuple[str, str]]) -> None:
        """PostgreSQL: the answers `_find` would give for these keys, in two statements rather than a round
        trip each (the same order: newest last_seen, then highest id). Forgotten when a batch is written."""
        self.known = dict.fromkeys(k for k in keys if NUL not in k[1])
        names = sorted(v for k, v in self.known if k == "name")
        pairs = sorted(("ipv6" if k == "ipv4" and ":" in v else k, v) for k, v in self.known if k != "name")
        if names:
            for value, asset_id in self.conn.execute(
                "SELECT DISTINCT ON (value) value, asset_id FROM asset_identifiers WHERE kind IN ('hostname', "
                "'sysname') AND value = ANY(?) ORDER BY value, last_seen DESC NULLS LAST, id DESC", [names]
            ):  # fmt: skip
                self.known[("name", value)] = asset_id
        if pairs:
            kinds, values = [k for k, _ in pairs], [v for _, v in pairs]
            for kind, value, asset_id in self.conn.execute(
                "SELECT DISTINCT ON (kind, value) kind, value, asset_id FROM asset_identifiers WHERE (kind, value) "
                "IN (SELECT * FROM unnest(CAST(? AS text[]), CAST(? AS text[]))) "
                "ORDER BY kind, value, last_seen DESC NULLS LAST, id DESC", [kinds, values]
            ):  # fmt: skip
                self.known[("ipv4" if kind == "ipv6" else kind, value)] = asset_id

    def _find(self, kind: str, value: str) -> int | None:
        hit = self.pending.get((kind, value))
        if hit is not None:
            return hit
        if (kind, value) in self.known:
            return self.known[(kind, value)]
        params: tuple[str, ...]
        if kind == "name":
            sql, params = _FIND_NAME, (value,)
        else:
            sql, params = _FIND, ("ipv6" if kind == "ipv4" and ":" in value else kind, value)
        row = self.conn.execute(sql, params).fetchone()
        return int(row[0]) if row else None

    def _has_macs(self, asset_id: int) -> bool:
        if asset_id in self.pending_macs:
            return True
        row = self.conn.execute(
            "SELECT 1 FROM asset_identifiers WHERE asset_id = ? AND kind = 'mac' LIMIT 1", (asset_id,)
        ).fetchone()
        return row is not None

    def by_short_name(self, short: str) -> int | None:
        """The one asset whose hostname or sysName is `short` or starts with `short.`, for a directory sighting
        whose DNS name matched nothing (reverse DNS in another zone, a sysName without the domain). Never a
        generic name, never when two assets share the short name, never an asset the directory already names
        by a DNS name (that one did not match: two computer objects in two domains are two machines)."""
        short = short.lower()
        if not short or "." in short or short in GENERIC_HOSTNAMES or short in ("localhost", "ip6-localhost"):
            return None
        rows = self.conn.execute(_BY_SHORT_NAME, (short, short + "/", short, short + ".")).fetchall()
        if len(rows) != 1:
            return None
        asset_id = int(rows[0][0])
        if asset_id in self.pending_directory_named:
            return None
        marks = ",".join("?" * len(DIRECTORY_SOURCES))
        dotted = self.conn.dialect.contains("value", "'.'")
        named = self.conn.execute(
            f"SELECT 1 FROM asset_identifiers WHERE asset_id = ? AND kind = 'hostname' AND source IN ({marks}) "
            f"AND {dotted} LIMIT 1", (asset_id, *sorted(DIRECTORY_SOURCES))
        ).fetchone()
        return None if named else asset_id

    def match(self, ips: Iterable[str], macs: list[str], hostnames: Iterable[str],
              machine_ids: Sequence[str] = ()) -> int | None:  # fmt: skip
        for machine_id in machine_ids:  # a host agent's machine-id names one machine, whatever its addresses
            asset_id = self._find("machine-id", machine_id)
            if asset_id is not None:
                return asset_id
        for mac in macs:
            asset_id = self._find("mac", mac)
            if asset_id is not None:
                return asset_id
        for kind, values in (("ipv4", ips), ("name", hostnames)):
            for value in values:
                if kind == "name" and value in GENERIC_HOSTNAMES:
                    continue
                asset_id = self._find(kind, value)
                if asset_id is not None and not (macs and self._has_macs(asset_id)):
                    return asset_id
        return None


class Ingest:
    """Batched writer of observations: ids are allocated here, rows go out with executemany.

    It relies on the caller holding the write lock (`Store.transaction`), which is what makes
    allocating ids from max(id) safe and the whole batch atomic.
    """

    BATCH = 2000

    def __init__(
        self,
        conn: Database,
        scan_id: int,
        source: str,
        user_hostnames: dict[str, str] | None = None,
        fallback_time: str | None = None,
    ) -> None:
        self.conn = conn
        self.scan_id = scan_id
        self.source = source
        self.user_hostnames = user_hostnames or {}
        self.fallback_time = fallback_time or utc_now()
        self.index = IdentityIndex(conn)
        self.stats = IngestStats()
        self._next_asset = (conn.execute("SELECT coalesce(max(id), 0) FROM assets").fetchone()[0]) + 1
        self._next_obs = (conn.execute("SELECT coalesce(max(id), 0) FROM observations").fetchone()[0]) + 1
        self._new_assets: list[tuple[Any, ...]] = []
        self._seen: dict[int, tuple[str, str, str | None]] = {}
        self._identifiers: list[tuple[Any, ...]] = []
        self._observations: list[tuple[Any, ...]] = []
        self._services: list[tuple[Any, ...]] = []
        self._software: list[tuple[Any, ...]] = []
        self.last_asset_id = 0

    def _asset_for(
        self,
        ips: list[str],
        macs: list[str],
        hostnames: list[str],
        when: str,
        sysnames: Sequence[str] = (),
        sighting: bool = True,
        machine_ids: Sequence[str] = (),
    ) -> int:
        """The asset these identifiers belong to (made if new). `sighting`: the asset was seen on the network
        now; a register row is not a sighting, so it leaves first_seen/last_seen alone (NULL if never seen)."""
        asset_id = self.index.match(ips, macs, [*hostnames, *sysnames], machine_ids)
        if asset_id is None and self.source in DIRECTORY_SOURCES:  # DNS name first, then the short name
            shorts = dict.fromkeys(h.split(".")[0] for h in hostnames)
            asset_id = next(filter(None, map(self.index.by_short_name, shorts)), None)
        name = next((h for h in [*hostnames, *sysnames] if h not in GENERIC_HOSTNAMES), None) or (
            ips[0] if ips else None
        )
        if asset_id is None:
            asset_id = self._next_asset
            self._next_asset += 1
            self._new_assets.append((asset_id, name, when if sighting else None, when if sighting else None))
            self.stats.new_assets += 1
        elif sighting:
            first, last, old_name = self._seen.get(asset_id, (when, when, None))
            self._seen[asset_id] = (min(first, when), max(last, when), name or old_name)
        for kind, values in (("ipv4", ips), ("mac", macs), ("hostname", hostnames), ("sysname", sysnames),
                             ("machine-id", machine_ids)):  # fmt: skip
            for value in values:
                real_kind = "ipv6" if kind == "ipv4" and ":" in value else kind
                self.index.remember(asset_id, real_kind, value)
                if real_kind == "hostname" and "." in value and self.source in DIRECTORY_SOURCES:
                    self.index.pending_directory_named.add(asset_id)
                self._identifiers.append((asset_id, real_kind, value, self.source, when, when))
        return asset_id

    def add(self, host: HostObservation) -> None:
        self.add_prepared(prepare_host(host))

    def lookups(self, prepared: PreparedHost) -> Iterator[tuple[str, str]]:
        """The `IdentityIndex._find` keys matching this host asks, for `IdentityIndex.prefetch`."""
        ips, macs, hostnames = prepared[:3]
        yield from (("mac", m) for m in macs)
        yield from (("ipv4", ip) for ip in ips)
        named = [*hostnames, *filter(None, map(self.user_hostnames.get, ips))]
        yield from (("name", h) for h in named if h not in GENERIC_HOSTNAMES)

    def add_prepared(
        self, prepared: PreparedHost, sysnames: Sequence[str] = (), machine_ids: Sequence[str] = ()
    ) -> None:
        """Give the host its asset and ids, and buffer its rows; written in batches by `flush`.

        Returns nothing; `last_asset_id` tells the caller which asset the sighting went to.
        """
        if _holds_nul(prepared, sysnames, machine_ids):
            prepared, sysnames, machine_ids = without_nul((prepared, sysnames, machine_ids))
        ips, macs, hostnames, when, ports_scanned, evidence, services, oses = prepared
        when = when or self.fallback_time
        for ip in ips:
            given = self.user_hostnames.get(ip)
            if given and given not in hostnames:
                hostnames.append(given)
        asset_id = self._asset_for(ips, macs, hostnames, when, sysnames, machine_ids=machine_ids,
                                   sighting=self.source not in DIRECTORY_SOURCES)
        self.last_asset_id = asset_id
        obs_id = self._next_obs
        self._next_obs += 1
        ids = (obs_id, self.scan_id, asset_id)
        said = json.dumps(evidence, separators=(",", ":"))
        if JSON_NUL in said:
            said = json.dumps(without_nul(evidence), separators=(",", ":"))
        self._observations.append((*ids, self.source, when, ips[0] if ips else None, int(ports_scanned), said))
        self._services.extend((*ids, *row) for row in services)
        self._software.extend((*ids, *row) for row in oses)
        self.stats.hosts += 1
        self.stats.services += len(services)
        self.stats.software += len(oses)
        if len(self._observations) >= self.BATCH:
            self.flush()

    def add_register_entry(self, entry: RegisterEntry) -> None:
        when = self.fallback_time
        ips = list(entry.addresses)
        hostnames = list(entry.hostnames)
        asset_id = self._asset_for(ips, [], hostnames, when, sighting=False)
        self.flush()  # the asset row must exist before the register fields are set on it
        self.conn.execute(
            "UPDATE assets SET in_register = 1, owner = ?, business_service = ?, site = ?, criticality = ?, "
            "cost_centre = ?, attributes = ?, name = coalesce(?, name) WHERE id = ?",
            (
                entry.owner,
                entry.business_service,
                entry.site,
                entry.criticality,
                entry.cost_centre,
                json.dumps(entry.attributes),
                hostnames[0] if hostnames else None,
                asset_id,
            ),
        )
        evidence = {
            "register_line": entry.line,
            "addresses": ips,
            "hostnames": hostnames,
            "owner": entry.owner,
            "business_service": entry.business_service,
            "site": entry.site,
            "criticality": entry.criticality,
            "cost_centre": entry.cost_centre,
            "attributes": entry.attributes,
        }
        self.conn.execute(
            "INSERT INTO observations (id, scan_id, asset_id, source, observed_at, address, ports_scanned, evidence) "
            "VALUES (?, ?, ?, 'import', ?, ?, 0, ?)",
            (self._next_obs, self.scan_id, asset_id, when, ips[0] if ips else None, json.dumps(evidence)),
        )
        self._next_obs += 1
        self.stats.hosts += 1

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """Write what is left, unless an error is on its way to the caller's rollback."""
        if exc_type is None:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows, in an order that keeps foreign keys satisfied."""
        seen = [(f, f, la, la, n, a) for a, (f, la, n) in self._seen.items()]
        least, greatest = self.conn.dialect.least, self.conn.dialect.greatest
        batch = [
            ("INSERT INTO assets (id, name, first_seen, last_seen) VALUES (?, ?, ?, ?)", self._new_assets),
            (f"UPDATE assets SET first_seen = {least}(coalesce(first_seen, ?), ?), "
             f"last_seen = {greatest}(coalesce(last_seen, ?), ?), name = coalesce(?, name) WHERE id = ?", seen),
            ("INSERT INTO asset_identifiers (asset_id, kind, value, source, first_seen, last_seen) "
             "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (asset_id, kind, value) DO UPDATE SET "
             f"first_seen = {least}(asset_identifiers.first_seen, excluded.first_seen), "
             f"last_seen = {greatest}(asset_identifiers.last_seen, excluded.last_seen)",
             self._identifiers),
            ("INSERT INTO observations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._observations),
            ("INSERT INTO services (observation_id, scan_id, asset_id, port, protocol, state, name, product, "
             "version, extra_info, tunnel, method, confidence, os_type, device_type, cpes, scripts) "
             "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self._services),
            ("INSERT INTO software (observation_id, scan_id, asset_id, kind, name, vendor, product, version, "
             "cpe, cpes, accuracy, method, extra, raw_hex) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self._software),
        ]  # fmt: skip
        for sql, rows in batch:
            if rows:
                self.conn.executemany(sql, rows)
        for rows in (self._new_assets, self._identifiers, self._observations, self._services, self._software):
            rows.clear()
        self._seen.clear()
        self.index.written()


NUL, JSON_NUL = "\x00", "\\u0000"


def _holds_nul(prepared: PreparedHost, *more: Sequence[str]) -> bool:
    """Whether a device put a NUL character in any of the host's strings (SNMP octet strings, an agent's
    JSON, a register cell; nmap's XML cannot hold one). JSON texts among the rows hold it escaped. Asked of
    every host, so it only looks: about 3 us for a host with five ports. The evidence is looked at as the JSON
    text it becomes (`Ingest.add_prepared`)."""
    ips, macs, hostnames, _, _, _, services, oses = prepared
    for values in (ips, macs, hostnames, *more, *services, *oses):
        for v in values:
            if v.__class__ is str and (NUL in v or JSON_NUL in v):
                return True
    return False


def without_nul(value: Any) -> Any:
    """`value` with every NUL character removed from its strings, JSON texts included (decoded, cleaned and
    encoded again): PostgreSQL's text refuses NUL, and its jsonb refuses `\\u0000`, so one such value would
    fail a whole import there. Removed on both stores, so both hold the same."""
    if isinstance(value, str):
        if JSON_NUL in value and value[:1] in ("[", "{"):
            with suppress(ValueError):
                return json.dumps(without_nul(json.loads(value)))
        return value.replace(NUL, "")
    if isinstance(value, list | tuple):
        return type(value)(without_nul(v) for v in value)
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value


def _os_hints(services: tuple[Service, ...]) -> list[OsMatch]:
    """Without OS detection, services still hint at the OS (ostype, cpe:/o:...): keep that, marked weak."""
    cpes = tuple(dict.fromkeys(c for s in services for c in s.cpes if c.startswith("cpe:/o:")))
    os_type = next((s.os_type for s in services if s.os_type), None)
    if not cpes and not os_type:
        return []
    name = os_type or cpes[0].split(":")[3].replace("_", " ")
    return [OsMatch(name=name, accuracy=0, family=os_type, cpes=cpes, method="service")]


_JSON_CACHE: dict[tuple[str, ...], str] = {}


def _json_tuple(values: tuple[str, ...]) -> str:
    """JSON for a CPE list; an estate repeats the same few lists, so they are encoded once (bounded memo)."""
    cached = _JSON_CACHE.get(values)
    if cached is None:
        cached = json.dumps(list(values))
        if len(_JSON_CACHE) < 4096:
            _JSON_CACHE[values] = cached
    return cached
