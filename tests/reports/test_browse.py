"""The database people can read (issue 16 item 3): views, indexes, and `posture browse` (a real Datasette)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.db import is_url
from tests.conftest import POSTURE, SQLITE_ONLY, new_store, query, run_posture
from tests.rules.estate import CISCO_SWITCH, RDP, SMB1, SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate

HOSTS = [
    Host("10.8.0.10", "00:11:22:00:08:10", [RDP, SMB1], WINDOWS_2008, hostname="rev-app01.council.example"),
    Host("10.8.0.11", "00:11:22:00:08:11", [RDP], WINDOWS_2008, hostname="hr-db01.council.example"),
    Host("10.8.0.12", "00:11:22:00:08:12", [SSH_DEBIAN], hostname="web01.council.example"),
    Host("10.8.0.13", "00:11:22:00:08:13", [TELNET], CISCO_SWITCH),
    Host("10.8.0.14", "00:11:22:00:08:14", []),
]


@pytest.fixture(scope="module")
def db(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    tmp = tmp_path_factory.mktemp("browse")
    path = new_store(request, store_kind, tmp)
    assert run_posture("import", "nmap", str(write_estate(tmp / "scan.xml", HOSTS)), db=path).returncode == 0
    register = tmp / "register.csv"
    register.write_text("IP address,Owner\n10.8.0.10,Revenues team\n10.8.0.13,Network team\n", encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=path).returncode == 0
    result = run_posture("accept", "protect.telnet", "--until", "2999-01-01", "--reason", "isolated VLAN", db=path)
    assert result.returncode == 0, result.stderr
    assert run_posture("evaluate", db=path).returncode == 0
    return path


def test_views_answer_the_auditors_questions(db: Path | str) -> None:
    status = {r[0]: r[1:] for r in query(db, "SELECT addresses, os, lifecycle_state, owner FROM asset_status")}
    assert status["10.8.0.10"] == ("Microsoft Windows Server 2008 R2 SP1", "end-of-life", "Revenues team")
    assert status["10.8.0.12"][0].startswith("Debian 12")
    assert status["10.8.0.14"] == (None, "unknown", None)  # not identified: said so, not hidden
    found = query(db, "SELECT finding, rule, asset, accepted FROM open_findings ORDER BY finding")
    cli = json.loads(run_posture("findings", "--format", "json", db=db).stdout)
    assert {f[0] for f in found} >= {f["id"] for f in cli}  # the id a person sees is the view's
    assert all(accepted == 1 for _, rule, _, accepted in found if rule == "protect.telnet")
    assert ("2019/20", "servers", 2) in query(db, "SELECT financial_year, category, assets FROM eol_by_year")


def _unindexed_foreign_keys(db: Path | str) -> list[str]:
    """table.column of each foreign key that is not the first column of an index (a primary key is one)."""
    if is_url(db):
        return [f"{t}.{c}" for t, c in query(db, """
            SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'f' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid
                                                    AND i.indkey[0] = c.conkey[1])""")]  # fmt: skip
    conn = sqlite3.connect(db)
    missing = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        firsts = {conn.execute(f"PRAGMA index_info('{i[1]}')").fetchone()[2] for i in
                  conn.execute(f"PRAGMA index_list('{table}')")}  # fmt: skip
        primary = [c[1] for c in conn.execute(f"PRAGMA table_info('{table}')") if c[5] == 1]
        for fk in conn.execute(f"PRAGMA foreign_key_list('{table}')"):
            if fk[3] not in firsts and primary[:1] != [fk[3]]:
                missing.append(f"{table}.{fk[3]}")
    conn.close()
    return missing


def test_every_foreign_key_a_query_follows_is_indexed(db: Path | str) -> None:
    """Each foreign key has an index whose first column it is, but the two findings columns every
    evaluation rewrites (measured: a repeat evaluation 56% slower with them; see scanner/store.py v5)."""
    assert sorted(_unindexed_foreign_keys(db)) == ["findings.details_id", "findings.evaluation_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (127.0.0.1, started by the test)
        return json.loads(response.read())


@pytest.fixture
def datasette(db: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([POSTURE, "--db", str(db), "browse", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/-/versions.json")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "Datasette did not start"
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@pytest.mark.lab
@SQLITE_ONLY  # `posture browse` is Datasette over the SQLite file, by design
def test_browse_serves_the_canned_queries_read_only(db: Path, datasette: str) -> None:
    before = db.read_bytes()
    name = db.stem
    owners = _get(f"{datasette}/{name}/unsupported_by_owner.json?_shape=array")
    windows = "Microsoft Windows Server 2008 R2 SP1"
    assert {(r["owner"], r["os"], r["assets"]) for r in owners} >= {("Revenues team", windows, 1),
                                                                    ("no owner", windows, 1)}  # fmt: skip
    coverage = _get(f"{datasette}/{name}/unknown_coverage.json?_shape=array")
    unknown = {r["category"]: r["not_identified"] for r in coverage}
    assert unknown["unknown"] >= 1 and sum(unknown.values()) == query(
        db, "SELECT count(*) FROM asset_status WHERE lifecycle_state = 'unknown'")[0][0]
    soon = _get(f"{datasette}/{name}/eol_next_12_months.json")
    assert soon["columns"] == ["asset_id", "name", "addresses", "os", "eol_date", "owner"]
    meta = _get(f"{datasette}/-/metadata.json")
    assert "Unsupported systems by owner" in json.dumps(meta)
    assert meta["databases"][name]["tables"]["asset_status"]["columns"]["lifecycle_state"].startswith("supported")
    # No writes: Datasette refuses anything but a read, and the file is unchanged.
    with pytest.raises(urllib.error.HTTPError):
        _get(f"{datasette}/{name}.json?sql=DELETE+FROM+assets")
    assert db.read_bytes() == before
    # Only this machine's loopback address 127.0.0.1 listens, not the whole of 127/8 or the network.
    port = int(datasette.rsplit(":", 1)[1])
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.2", port))


def test_browse_refuses_without_views_or_datasette_files(tmp_path: Path) -> None:
    # SQLite only: `posture browse` is Datasette over the SQLite file, by design.
    db = tmp_path / "inventory.db"
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "x.xml", HOSTS[:1])), db=db).returncode == 0
    result = run_posture("browse", db=db)
    assert result.returncode == 2 and "run `posture evaluate` once" in result.stderr
