"""Real nmap against real daemons: posture must report each daemon's product and installed version."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from scanner.lab import Lab
from tests.conftest import assets_json, query, run_posture


def _by_address(assets: list[dict]) -> dict[str, dict]:
    return {a["addresses"][0]: a for a in assets}


def test_scan_reports_product_and_version_of_each_daemon(lab: Lab, lab_scan_db: Path | str) -> None:
    found = _by_address(assets_json(lab_scan_db))
    for daemon in lab.daemons:
        asset = found[daemon.address]
        service = next(s for s in asset["services"] if s["port"] == daemon.port)
        assert service["product"] == daemon.product
        if daemon.version:
            # nmap's version carries the distribution suffix ("9.2p1 Debian 2+deb12u3"); the upstream part
            # must be the one installed on this machine.
            assert service["version"].split()[0] == daemon.version
        assert service["state"] == "open"
        assert service["protocol"] == "tcp"


def test_asset_json_has_the_documented_fields(lab: Lab, lab_scan_db: Path | str) -> None:
    for asset in assets_json(lab_scan_db):
        for key in ("id", "addresses", "macs", "hostnames", "os", "services", "first_seen", "last_seen", "sources"):
            assert key in asset
        assert asset["sources"] == ["nmap"]
        assert asset["first_seen"] <= asset["last_seen"]
        for service in asset["services"]:
            assert set(service) >= {"port", "protocol", "name", "product", "version", "cpe"}
        if asset["os"] is not None:  # -O runs as root; without it the OS comes from service CPEs
            assert set(asset["os"]) >= {"product", "version", "cpe"}


def test_every_cpe_of_a_service_is_kept(lab: Lab, lab_scan_db: Path | str) -> None:
    """Debian's OpenSSH banner gives nmap two CPEs (OpenSSH and the Linux kernel); python-nmap keeps one."""
    ssh = next(d for d in lab.daemons if d.kind == "ssh")
    asset = _by_address(assets_json(lab_scan_db))[ssh.address]
    cpes = next(s for s in asset["services"] if s["port"] == ssh.port)["cpe"]
    assert any(c.startswith("cpe:/a:openbsd:openssh") for c in cpes)
    assert "cpe:/o:linux:linux_kernel" in cpes


def test_scan_records_and_observations(lab: Lab, lab_scan_db: Path | str) -> None:
    rows = query(lab_scan_db, "SELECT kind, status, hosts_total, hosts_done, hosts_up, tool_version FROM scans")
    assert rows[0][:5] == ("nmap-scan", "complete", 3, 3, 3)
    assert str(rows[0][5]).startswith("7.")
    evidence = [json.loads(str(r[0])) for r in query(lab_scan_db, "SELECT evidence FROM observations")]
    assert sorted(e["addresses"][0][1] for e in evidence) == sorted(lab.targets)
    listing = run_posture("scans", db=lab_scan_db)
    assert listing.returncode == 0 and "complete" in listing.stdout


def test_rescan_keeps_identity_and_history(store_db: Path | str, lab: Lab, tmp_path: Path) -> None:
    db = store_db
    ssh = next(d for d in lab.daemons if d.kind == "ssh")
    for _ in range(2):
        result = run_posture("scan", ssh.address, "--ports", str(ssh.port), "--no-os-detection", "--no-dns", db=db)
        assert result.returncode == 0, result.stderr
    assets = assets_json(db)
    assert len(assets) == 1
    assert query(db, "SELECT count(*) FROM observations") == [(2,)]
    first, last = query(db, "SELECT min(observed_at), max(observed_at) FROM observations")[0]
    assert assets[0]["first_seen"] == first and assets[0]["last_seen"] == last


def test_import_of_xml_written_by_real_nmap(store_db: Path | str, lab: Lab, tmp_path: Path) -> None:
    xml = tmp_path / "lab.xml"
    subprocess.run(
        [shutil.which("nmap") or "nmap", "-n", "-sT", "-sV", "-p", lab.ports_spec, "-oX", str(xml), *lab.targets],
        check=True,
        capture_output=True,
        timeout=300,
    )
    db = store_db
    result = run_posture("import", "nmap", str(xml), db=db)
    assert result.returncode == 0, result.stderr
    assert "3 hosts up" in result.stdout
    found = _by_address(assets_json(db))
    for daemon in lab.daemons:
        service = next(s for s in found[daemon.address]["services"] if s["port"] == daemon.port)
        assert service["product"] == daemon.product
    # Importing the same file again adds observations to the same assets, never duplicates assets.
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    assert len(assets_json(db)) == 3
    assert query(db, "SELECT count(*) FROM observations") == [(6,)]


def test_dry_run_shows_the_command_and_sends_nothing(tmp_path: Path) -> None:
    db = tmp_path / "inv.db"
    result = run_posture("scan", "127.0.0.0/30", "--dry-run", "--top-ports", "50", db=db)
    assert result.returncode == 0, result.stderr
    assert "4 addresses" in result.stdout
    assert "--exclude-ports 515,9100-9107,9999" in result.stdout
    assert "--max-rate 100" in result.stdout
    assert not db.exists()
