"""`posture diff`: what changed between two scans, and what was simply not looked at."""

from __future__ import annotations

import json
from pathlib import Path

from scanner.lab import Lab
from tests.conftest import SQLITE_ONLY, run_posture
from tests.rules.estate import CISCO_SWITCH, MYSQL, NGINX, RDP, SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate


def test_diff_of_two_imports(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    web = Host("10.6.0.11", "00:11:22:00:06:11", [SSH_DEBIAN, NGINX])
    server = Host("10.6.0.10", "00:11:22:00:06:10", [RDP], WINDOWS_2008)
    switch = Host("10.6.0.12", "00:11:22:00:06:12", [TELNET], CISCO_SWITCH)
    first = write_estate(tmp_path / "one.xml", [web, server, switch])
    newer_nginx = (80, "http", "nginx", "1.24.0", "", (), None)
    second = write_estate(tmp_path / "two.xml", [
        Host(web.ip, web.mac, [SSH_DEBIAN, newer_nginx, MYSQL]),  # nginx upgraded, MySQL opened
        Host(server.ip, server.mac, [], ("Microsoft Windows Server 2016", "general purpose", "Windows",
                                         "cpe:/o:microsoft:windows_server_2016")),  # RDP closed, OS changed
        Host("10.6.0.13", "00:11:22:00:06:13", [SSH_DEBIAN]),  # new; the switch is gone
    ])  # fmt: skip
    for xml in (first, second):
        assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    result = run_posture("diff", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert [n["addresses"] for n in d["new"]] == [["10.6.0.13"]]
    assert [g["addresses"] for g in d["gone"]] == [[switch.ip]]
    changes = {c["asset_id"]: c for c in d["changed"]}
    web_change = next(c for c in changes.values() if "opened" in c and "tcp/3306" in c["opened"])
    assert web_change["versions"] == {"tcp/80": {"before": "nginx 1.22.1", "after": "nginx 1.24.0"}}
    server_change = next(c for c in changes.values() if "closed" in c)
    assert list(server_change["closed"]) == ["tcp/3389"]
    assert server_change["os"] == {"before": "Microsoft Windows Server 2008 R2 SP1",
                                   "after": "Microsoft Windows Server 2016"}  # fmt: skip
    table = run_posture("diff", "1", "2", db=db).stdout
    assert "scan 1 -> scan 2: 1 new, 1 gone, 2 changed" in table and "opened tcp/3306 MySQL 8.0.36" in table
    markdown = run_posture("diff", "--format", "md", db=db).stdout
    assert markdown.startswith("# Changes, scan 1 to scan 2")
    for bad, words in ((("diff", "1"), "give two scan ids"), (("diff", "1", "99"), "no scan 99")):
        refused = run_posture(*bad, db=db)
        assert refused.returncode == 2 and words in refused.stderr


# SQLite only: three real scans (40 s); the diff's SQL runs on PostgreSQL in test_diff_of_two_imports.
@SQLITE_ONLY
def test_a_smaller_scan_does_not_make_assets_gone(store_db: Path | str, lab: Lab, tmp_path: Path) -> None:
    db = store_db
    everything = run_posture("scan", *lab.targets, "--ports", lab.ports_spec, "--no-dns", db=db)
    assert everything.returncode == 0, everything.stderr
    one = run_posture("scan", lab.targets[0], "--ports", lab.ports_spec, "--no-dns", db=db)
    assert one.returncode == 0, one.stderr
    d = json.loads(run_posture("diff", "--format", "json", db=db).stdout)
    assert d["gone"] == [] and len(d["not_looked_at"]) == 2 and d["new"] == []
    lonely = tmp_path / "none.db"
    assert run_posture("scan", lab.targets[0], "--ports", lab.ports_spec, "--no-dns", db=lonely).returncode == 0
    refused = run_posture("diff", db=lonely)
    assert refused.returncode == 2 and "not two finished scans" in refused.stderr


def test_a_directory_read_covers_no_network(tmp_path: Path) -> None:
    """A directory import after a network scan lists computers, not what answered on a network: comparing the
    two must not call every scanned asset gone (scanner.diff._covered). Rows as the runner writes them."""
    from scanner.diff import _covered
    from scanner.store import Store, insert_scan

    with Store.open(tmp_path / "d.db") as store, store.transaction() as conn:
        nmap = insert_scan(conn, "nmap-scan", "nmap", "complete", targets=["10.9.0.0/24"])
        directory = insert_scan(conn, "directory-import", "ad", "complete", targets=["ldaps://dc1.example.test"])
        bundle = insert_scan(conn, "agent-import", "agent", "complete", targets=[])
    with Store.open(tmp_path / "d.db") as store:
        assert [str(n) for n in _covered(store, [nmap]) or []] == ["10.9.0.0/24"]
        assert _covered(store, [directory]) == [] and _covered(store, [bundle]) == []
        assert [str(n) for n in _covered(store, [nmap, directory, bundle]) or []] == ["10.9.0.0/24"]  # a job run
