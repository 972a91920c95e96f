"""The inventory on both stores: an SQLite file and a PostgreSQL database (issue 18, "two stores, one code").

Every test here runs the real `posture` commands against a real store of each kind: the PostgreSQL one is a
fresh database on the tests' own server (`scanner.lab.PostgresLab`, fixture `pg_database`), reached by a
URL without a password (PGPASSFILE holds it). The nmap files are real nmap output (tests/scanner/data).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.gen_nmap_xml import write as write_nmap_xml
from scanner.paths import default_db_path
from tests.conftest import POSTURE, assets_json, db_fingerprint, query, run_posture

DATA = Path(__file__).parent / "data"
REAL_SCANS = ("nmap793-3hosts.xml", "nmap551-windows-2003.xml", "nse-windows-scripts.xml",
              "samba-smb2-hostscripts.xml", "tls-certificates.xml")  # fmt: skip


def scans_json(db: Path | str) -> list[dict[str, Any]]:
    result = run_posture("scans", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    scans: list[dict[str, Any]] = json.loads(result.stdout)
    return scans


def _without_times(scans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k not in ("started_at", "finished_at")} for s in scans]


def test_import_list_and_reimport(store_db: Path | str) -> None:
    """A real nmap file imported, its assets and scan listed, then imported again: the same assets and
    identifiers (a re-import adds a scan and its observations, never a second asset), on either store."""
    xml = DATA / "nmap793-3hosts.xml"
    first = run_posture("import", "nmap", str(xml), db=store_db)
    assert first.returncode == 0, first.stderr
    assert "3 hosts up, 3 new assets" in first.stdout
    assets = assets_json(store_db)
    assert [a["addresses"] for a in assets] == [["127.97.0.1"], ["127.97.0.2"], ["127.97.0.3"]]
    assert {s["product"] for a in assets for s in a["services"]} == {"SimpleHTTPServer"}
    [scan] = scans_json(store_db)
    assert (scan["kind"], scan["status"], scan["hosts_up"]) == ("nmap-import", "complete", 3)
    table = run_posture("assets", db=store_db, env={"COLUMNS": "200"})
    assert table.returncode == 0 and "127.97.0.3" in table.stdout

    identifiers = query(store_db, "SELECT asset_id, kind, value FROM asset_identifiers ORDER BY 1, 2, 3")
    again = run_posture("import", "nmap", str(xml), db=store_db)
    assert again.returncode == 0, again.stderr
    assert "3 hosts up, 0 new assets" in again.stdout
    assert assets_json(store_db) == assets  # the same file says the same: the asset view is unchanged
    assert query(store_db, "SELECT asset_id, kind, value FROM asset_identifiers ORDER BY 1, 2, 3") == identifiers
    assert [s["status"] for s in scans_json(store_db)] == ["complete", "complete"]
    assert query(store_db, "SELECT count(*) FROM observations") == [(6,)]


def test_a_killed_import_leaves_the_store_as_it_was(store_db: Path | str, tmp_path: Path) -> None:
    """`posture import nmap` killed (SIGKILL) in the middle of a 40,000-host file: the import is one
    transaction, so the store holds what it held before (the interrupted scan's own row aside), the next
    command marks that scan interrupted, and the store takes the next import (no lock left behind)."""
    assert run_posture("import", "nmap", str(DATA / "nmap793-3hosts.xml"), db=store_db).returncode == 0
    before = db_fingerprint(store_db)
    big = tmp_path / "big.xml"
    write_nmap_xml(big, hosts=40_000)
    proc = subprocess.Popen([POSTURE, "--db", str(store_db), "import", "nmap", str(big)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if query(store_db, "SELECT count(*) FROM scans WHERE status = 'running'") == [(1,)]:
                break
            time.sleep(0.05)
        time.sleep(1.5)  # well inside the file: hosts are being written in the import's transaction
        assert proc.poll() is None, "the import ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert query(store_db, "SELECT count(*) FROM observations") == [(3,)]  # nothing of the big file
    assert query(store_db, "SELECT count(*) FROM assets") == [(3,)]
    assert [s["status"] for s in scans_json(store_db)] == ["interrupted", "complete"]  # noticed, said
    after = run_posture("import", "nmap", str(DATA / "nmap551-windows-2003.xml"), db=store_db)
    assert after.returncode == 0, after.stderr
    assert before != db_fingerprint(store_db)


def test_the_two_stores_hold_and_show_the_same(pg_database: str, tmp_path: Path) -> None:
    """Five real nmap files (plain, Windows with SMB host scripts, TLS certificates) imported into an SQLite
    file and into PostgreSQL: the asset view, the scan list and `posture diff` read the same from both."""
    lite = tmp_path / "inventory.db"
    for name in REAL_SCANS:
        for db in (lite, pg_database):
            done = run_posture("import", "nmap", str(DATA / name), db=db)
            assert done.returncode == 0, done.stderr
    assert assets_json(pg_database) == assets_json(lite)
    assert _without_times(scans_json(pg_database)) == _without_times(scans_json(lite))
    diffs = [run_posture("diff", db=db) for db in (lite, pg_database)]
    assert diffs[0].returncode == diffs[1].returncode and diffs[0].stdout == diffs[1].stdout
    for table in ("assets", "asset_identifiers", "observations", "services", "software"):
        assert query(pg_database, f"SELECT count(*) FROM {table}") == query(lite, f"SELECT count(*) FROM {table}")


def test_store_refusals_are_one_line(pg_database: str, postgres: Any) -> None:
    """A PostgreSQL --db that cannot be used is refused in one line that never shows a password: a wrong
    password given in the URL, a database that holds no inventory for a reader, and `posture browse`."""
    host = pg_database.split("@", 1)[1]
    wrong = run_posture("assets", db=f"postgresql://posture:not-the-password@{host}", env={"PGPASSFILE": "/dev/null"})
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "not-the-password" not in wrong.stderr and "password authentication failed" in wrong.stderr
    empty = run_posture("assets", db=pg_database)
    assert empty.returncode == 2 and "no inventory at" in empty.stderr and "Traceback" not in empty.stderr
    browse = run_posture("browse", db=pg_database)
    assert browse.returncode == 2 and "not PostgreSQL" in browse.stderr


def test_evaluate_and_findings_on_postgresql(pg_database: str) -> None:
    """`posture evaluate` and `posture findings` on PostgreSQL give what they give on SQLite."""
    assert run_posture("import", "nmap", str(DATA / "nmap551-windows-2003.xml"), db=pg_database).returncode == 0
    evaluated = run_posture("evaluate", db=pg_database)
    assert evaluated.returncode == 0, evaluated.stderr
    findings = run_posture("findings", "--format", "json", db=pg_database)
    assert findings.returncode == 0, findings.stderr
    assert {f["rule_id"] for f in json.loads(findings.stdout)} >= {"protect.eol-os"}


def test_migrate_copies_an_inventory_and_proves_it(pg_database: str, tmp_path: Path) -> None:
    """`posture migrate` copies an evaluated SQLite inventory (scans, findings, an exception, identities)
    into an empty PostgreSQL database: every table's row count and checksum agree, the asset view and the
    findings read the same from both, new ids follow the copied ones, and a second run is refused (exit 2, one
    line) because the target now holds an inventory."""
    lite = tmp_path / "inventory.db"
    for name in REAL_SCANS:
        assert run_posture("import", "nmap", str(DATA / name), db=lite).returncode == 0
    assert run_posture("evaluate", db=lite).returncode == 0
    assert run_posture("accept", "protect.eol-os", "--until", "2099-01-01", "--reason", "replacement ordered",
                       db=lite).returncode == 0  # fmt: skip
    moved = run_posture("migrate", "--from", str(lite), "--to", pg_database)
    assert moved.returncode == 0, moved.stderr
    rows = {line.split()[0]: line.split() for line in moved.stdout.splitlines()[1:-1]}
    assert {"assets", "findings", "exceptions", "identity_items", "finding_events"} <= set(rows)
    assert all(r[1] == r[2] and r[3] == r[4] and r[5] == "yes" for r in rows.values()), moved.stdout
    assert rows["findings"][1] != "0" and rows["exceptions"][1] == "1"
    assert assets_json(pg_database) == assets_json(lite)
    findings = [json.loads(run_posture("findings", "--format", "json", db=db).stdout) for db in (lite, pg_database)]
    assert findings[0] == findings[1] and findings[0]
    after = run_posture("import", "nmap", str(DATA / "nmap793-3hosts.xml"), db=pg_database)
    assert after.returncode == 0 and f"(scan {len(REAL_SCANS) + 1})" in after.stdout, after.stdout + after.stderr
    again = run_posture("migrate", "--from", str(lite), "--to", pg_database)
    assert again.returncode == 2 and "already holds an inventory" in again.stderr
    assert again.stderr.count("\n") == 1


def test_the_config_names_the_postgresql_store(pg_database: str, tmp_path: Path) -> None:
    """`[store] url` in the config is the inventory when neither --db nor POSTURE_DB is given; `config
    check` refuses a URL that is not PostgreSQL's, on its line."""
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{pg_database}"\n', encoding="utf-8")
    imported = run_posture("--config", str(config), "import", "nmap", str(DATA / "nmap793-3hosts.xml"))
    assert imported.returncode == 0, imported.stderr
    assert len(assets_json(pg_database)) == 3
    assert not default_db_path().exists()  # in PostgreSQL, not in the default file
    listed = run_posture("--config", str(config), "scans", "--format", "json")
    assert listed.returncode == 0 and [s["kind"] for s in json.loads(listed.stdout)] == ["nmap-import"]
    config.write_text('[store]\nurl = "mysql://db.example/posture"\n', encoding="utf-8")
    refused = run_posture("--config", str(config), "config", "check")
    assert refused.returncode == 2 and f"{config}:2: [store] takes one key, url" in refused.stderr


def test_the_two_stores_match_machines_alike(pg_database: str, tmp_path: Path) -> None:
    """Which asset a sighting belongs to (a MAC wins; an address taken over by another MAC is another
    machine; a name follows its machine) is decided alike on both stores, though PostgreSQL asks for the
    identifiers of 500 hosts at a time (`IdentityIndex.prefetch`) and SQLite one at a time."""
    from tests.rules.estate import NGINX, SSH_DEBIAN, Host, write_estate

    day = 1_765_000_000
    scans = [
        [Host("10.9.0.1", "00:11:22:00:09:01", [SSH_DEBIAN], hostname="app-01.example"),
         Host("10.9.0.2", "00:11:22:00:09:02", [NGINX], hostname="web-01.example")],
        [Host("10.9.0.1", "00:11:22:00:09:99", [NGINX]),  # another machine answers at .1
         Host("10.9.0.5", "00:11:22:00:09:02", [NGINX], hostname="web-01.example"),  # web-01 moved
         Host("10.9.0.6", "00:11:22:00:09:06", [SSH_DEBIAN], hostname="app-01.example")],  # a new MAC, old name
        [Host("10.9.0.1", "00:11:22:00:09:01", [SSH_DEBIAN], hostname="app-01.example")],  # the first is back
    ]  # fmt: skip
    lite = tmp_path / "inventory.db"
    for n, hosts in enumerate(scans):
        xml = write_estate(tmp_path / f"scan{n}.xml", hosts, when=day + n * 86_400)
        for db in (lite, pg_database):
            assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    assets = assets_json(lite)
    assert assets_json(pg_database) == assets
    assert len(assets) == 4 and any(a["macs"] == ["00:11:22:00:09:02"] and len(a["addresses"]) == 2 for a in assets)


def test_a_second_writer_waits_then_says_busy(pg_database: str, postgres: Any) -> None:
    """One writer at a time on PostgreSQL too: while another session holds posture's writer lock (the
    transaction-scoped advisory lock every writing transaction takes), an import waits POSTURE_DB_TIMEOUT
    (the session's lock_timeout) and is refused in the same line as on SQLite, writing nothing."""
    from scanner.db import WRITER_LOCK

    xml = str(DATA / "nmap793-3hosts.xml")
    assert run_posture("import", "nmap", xml, db=pg_database).returncode == 0
    with postgres.connect(dbname=pg_database.rsplit("/", 1)[1], autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [WRITER_LOCK])
        started = time.monotonic()
        busy = run_posture("import", "nmap", xml, db=pg_database, env={"POSTURE_DB_TIMEOUT": "1"})
        waited = time.monotonic() - started
        other.execute("ROLLBACK")
    assert busy.returncode == 2 and "is busy: another posture run is writing to it" in busy.stderr, busy.stderr
    assert "waited 1 s" in busy.stderr and 1 <= waited < 30
    assert query(pg_database, "SELECT count(*) FROM scans") == [(1,)]  # not even the second scan's row
    assert run_posture("import", "nmap", xml, db=pg_database).returncode == 0  # the lock is free again


def test_a_network_scan_into_postgresql(lab_scan_postgresql: str, lab_scan_sqlite: Path) -> None:
    """`posture scan` of the lab's real daemons (sshd, nginx, vsftpd) straight into PostgreSQL: its chunks,
    the scan row and the asset view hold what the same scan wrote into an SQLite file."""
    pg_database = lab_scan_postgresql
    [scan] = scans_json(pg_database)
    [expected] = scans_json(lab_scan_sqlite)
    assert (scan["kind"], scan["status"], scan["hosts_up"]) == (expected["kind"], "complete", expected["hosts_up"])
    assert query(pg_database, "SELECT count(*), min(status) FROM scan_chunks") == query(
        lab_scan_sqlite, "SELECT count(*), min(status) FROM scan_chunks")

    def seen(db: Path | str) -> list[tuple[list[str], list[tuple[int, str | None, str | None]]]]:
        return [(a["addresses"], [(s["port"], s["product"], s["version"]) for s in a["services"]])
                for a in assets_json(db)]  # fmt: skip

    assert seen(pg_database) == seen(lab_scan_sqlite)


def test_reference_checks_are_left_off_only_where_the_role_may(
    pg_database: str, postgres: Any, tmp_path: Path
) -> None:
    """Evaluate's transaction, and the rows of a queued chunk (`references_unchecked`), skip PostgreSQL's
    per-row reference checks (session_replication_role, as SQLite's evaluate turns its foreign keys off) only
    for a role that may set it: the tests' superuser, or a role granted it. A plain role keeps the checks
    and gets the same findings; the setting ends with the transaction (or the part). The second evaluation
    (after a second real scan changed the estate) runs on two copies of one database, once each way, and the
    two finding tables match row for row."""
    import secrets

    from scanner.db import connect

    for name in ("nmap551-windows-2003.xml", "nse-windows-scripts.xml"):
        assert run_posture("import", "nmap", str(DATA / name), db=pg_database).returncode == 0
        if name.startswith("nmap551"):
            assert run_posture("evaluate", db=pg_database).returncode == 0
    source = pg_database.rsplit("/", 1)[1]
    role, password = f"plain_{source}", secrets.token_urlsafe(16)
    checked = f"{source}_checked"
    with postgres.connect(autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {checked} TEMPLATE {source}")
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        with postgres.connect(dbname=checked, autocommit=True) as conn:
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        passfile = tmp_path / "plain.pgpass"
        passfile.write_text(f"{postgres.address}:{postgres.port}:*:{role}:{password}\n")
        passfile.chmod(0o600)
        plain_url = pg_database.rsplit("/", 1)[0].replace("posture@", f"{role}@") + f"/{checked}"

        def replication_role(url: str) -> list[str]:
            """The setting inside a transaction with and without the reference checks, then after them; then
            inside a part of a transaction without them (`references_unchecked`: a queued chunk's rows), and
            after that part in the same transaction."""
            db = connect(url)
            try:
                seen = []
                for check in (True, False):
                    with db.transaction(check_references=check):
                        seen.append(db.execute("SHOW session_replication_role").fetchone()[0])
                seen.append(db.execute("SHOW session_replication_role").fetchone()[0])
                with db.transaction():
                    with db.references_unchecked():
                        seen.append(db.execute("SHOW session_replication_role").fetchone()[0])
                    seen.append(db.execute("SHOW session_replication_role").fetchone()[0])
                return seen
            finally:
                db.close()

        may = ["origin", "replica", "origin", "replica", "origin"]
        assert replication_role(pg_database) == may  # the tests' role: a superuser
        os.environ["PGPASSFILE"], before = str(passfile), os.environ["PGPASSFILE"]
        try:
            assert replication_role(plain_url) == ["origin"] * 5
            with postgres.connect(autocommit=True) as admin:
                admin.execute(f"GRANT SET ON PARAMETER session_replication_role TO {role}")
            assert replication_role(plain_url) == may
            with postgres.connect(autocommit=True) as admin:
                admin.execute(f"REVOKE SET ON PARAMETER session_replication_role FROM {role}")
            plain = run_posture("evaluate", db=plain_url, env={"PGPASSFILE": str(passfile)})
        finally:
            os.environ["PGPASSFILE"] = before
        assert plain.returncode == 0, plain.stderr
        unchecked = run_posture("evaluate", db=pg_database)
        assert unchecked.returncode == 0, unchecked.stderr
        assert plain.stdout == unchecked.stdout
        rows = ("SELECT id, rule_id, asset_id, subject, status, times_reopened, evaluation_id, details_id "
                "FROM findings ORDER BY id")  # fmt: skip
        found = query(pg_database, rows)
        assert len(found) > 5 and {r[4] for r in found} >= {"open", "new"}
        assert query(f"{pg_database.rsplit('/', 1)[0]}/{checked}", rows) == found
    finally:
        with postgres.connect(autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {checked} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_upsert_many_gives_what_row_by_row_gives(store_db: Path | str) -> None:
    """`Database.upsert_many` (on PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT): bound
    values and constants (one with a comma in its quotes) land in their columns, a conflict updates the row
    as the statement says, two calls in one transaction and a call in the next one work (the staged table is
    emptied after each and dropped with the transaction), and no rows is nothing. The same on both stores."""
    from scanner.db import connect

    db = connect(store_db)
    try:
        with db.transaction():
            db.execute("CREATE TABLE scratch (k bigint PRIMARY KEY, a text, n bigint, d text)")
        upsert = ("INSERT INTO scratch (k, a, n, d) VALUES (?, ?, 1, 'x, y') "
                  "ON CONFLICT(k) DO UPDATE SET n = scratch.n + excluded.n, a = excluded.a")  # fmt: skip
        with db.transaction():
            db.upsert_many(upsert, [(1, "a"), (2, "b")])
            db.upsert_many(upsert, [(2, "c"), (3, "d")])
            db.upsert_many(upsert, [])
        with db.transaction():
            db.upsert_many(upsert, [(3, "e")])
        rows = [tuple(r) for r in db.execute("SELECT k, a, n, d FROM scratch ORDER BY k").fetchall()]
    finally:
        db.close()
    assert rows == [(1, "a", 1, "x, y"), (2, "c", 2, "x, y"), (3, "e", 2, "x, y")]
