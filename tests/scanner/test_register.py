"""The asset register (CSV): owners and services join scanned assets; odd files are read or refused clearly."""

from __future__ import annotations

from pathlib import Path

from scanner.lab import Lab
from tests.conftest import assets_json, query, run_posture


def test_register_merges_into_scanned_assets(store_db: Path | str, lab: Lab, tmp_path: Path) -> None:
    db = store_db
    ssh, http, _ = lab.daemons
    scanned = run_posture(
        "scan", ssh.address, http.address, "--ports", lab.ports_spec, "--no-os-detection", "--no-dns", db=db
    )
    assert scanned.returncode == 0, scanned.stderr
    register = tmp_path / "register.csv"
    # Excel-style: BOM, odd capitalisation, a semicolon delimiter, an extra column, a row for a machine not
    # scanned yet (by hostname only), a blank row and a row with neither address nor hostname.
    register.write_bytes(
        "\ufeffIP ADDRESS;Host Name;Owner;Business_Service;Site;Criticality;Cost Center;Warranty End\n"
        f"{ssh.address};;Revenues;Council Tax;Town Hall;high;RV100;2027-03-31\n"
        f"{http.address};web01.council.example;Digital;Website;Depot;medium;DG200;\n"
        ";cctv-nvr01.council.example;Facilities;CCTV;Depot;low;FA300;2019-01-01\n"
        ";;;;;;;\n"
        "not-an-ip;bad_name!;Nobody;;;;;\n".encode()
    )
    result = run_posture("import", "assets", str(register), db=db)
    assert result.returncode == 0, result.stderr
    assert "3 register rows, 1 new assets" in result.stdout
    assert "line 6" in result.stderr and "not an IP address" in result.stderr

    by_name = {a["hostnames"][0] if a["hostnames"] else a["addresses"][0]: a for a in assets_json(db)}
    assert len(by_name) == 3
    revenues = by_name[ssh.address]
    assert (revenues["owner"], revenues["business_service"], revenues["site"]) == (
        "Revenues",
        "Council Tax",
        "Town Hall",
    )
    assert (revenues["criticality"], revenues["cost_centre"]) == ("high", "RV100")
    assert revenues["attributes"] == {"Warranty End": "2027-03-31"}
    assert sorted(revenues["sources"]) == ["import", "nmap"]
    assert revenues["services"] and revenues["services"][0]["product"] == "OpenSSH"
    web = by_name["web01.council.example"]
    assert web["addresses"] == [http.address] and web["owner"] == "Digital"
    nvr = by_name["cctv-nvr01.council.example"]
    assert nvr["sources"] == ["import"] and nvr["services"] == [] and nvr["in_register"]

    # A later scan keeps the owner the register gave.
    again = run_posture("scan", ssh.address, "--ports", str(ssh.port), "--no-os-detection", "--no-dns", db=db)
    assert again.returncode == 0, again.stderr
    assert {a["owner"] for a in assets_json(db) if ssh.address in a["addresses"]} == {"Revenues"}
    assert query(db, "SELECT count(*) FROM assets") == [(3,)]


def test_register_in_windows_1252(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    register = tmp_path / "register.csv"
    register.write_bytes("hostname,owner,site\nlib-pc01,Libraries,Café Quarter\n".encode("cp1252"))
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert assets_json(db)[0]["site"] == "Café Quarter"


def test_assets_csv_export(lab: Lab, lab_scan_db: Path | str) -> None:
    result = run_posture("assets", "--format", "csv", db=lab_scan_db)
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("id,name,addresses,macs,hostnames,os_label,os_product")
    assert len(lines) == 1 + len(lab.daemons)
