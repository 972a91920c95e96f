"""Known exploited vulnerabilities in `posture findings --format json` (issue 15 item 6): the CVE ids of the
product family from the shipped CISA catalogue, ransomware use marked, the catalogue's version beside them.

The estate is nmap XML imported with the real `posture import nmap` (tests/rules/estate.py); the expected ids
are read from the catalogue file itself, not from posture's code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rules.kev import KEV_FILE, KEV_LISTED, kev_text
from tests.conftest import execute, query, run_posture
from tests.rules.estate import CISCO_SWITCH, MSSQL_2008R2, RDP, SSH_CISCO, TELNET, WINDOWS_2008, Host, write_estate

CATALOGUE = json.loads(KEV_FILE.read_text(encoding="utf-8"))
SERVER = Host("10.4.0.10", "00:11:22:00:04:10", [RDP, MSSQL_2008R2], WINDOWS_2008)
SWITCH = Host("10.4.0.11", "00:11:22:00:04:11", [TELNET, SSH_CISCO], CISCO_SWITCH)


def entries(vendor: str, *prefixes: str) -> list[dict[str, Any]]:
    return [e for e in CATALOGUE["vulnerabilities"]
            if e["vendorProject"] == vendor and e["product"].startswith(prefixes)]  # fmt: skip


def judged(db: Path | str, tmp_path: Path) -> list[dict[str, Any]]:
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "s.xml", [SERVER, SWITCH])), db=db).returncode == 0
    assert run_posture("evaluate", "--on", "2026-11-23", db=db).returncode == 0
    result = run_posture("findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_findings_carry_the_cve_ids(store_db: Path | str, tmp_path: Path) -> None:
    rows = judged(store_db, tmp_path)
    windows = next(f for f in rows if f["rule_id"] == "respond.kev-end-of-life" and f["product"] == "windows-server")
    kev = windows["kev"]
    expected = entries("Microsoft", "Windows", "Win32k")
    known = {e["cveID"] for e in expected if e["knownRansomwareCampaignUse"] == "Known"}
    assert kev["catalogue"] == CATALOGUE["catalogVersion"] == "2025.08.25"
    assert kev["count"] == len(expected) and kev["ransomware"] == len(known)
    assert len(kev["cves"]) == KEV_LISTED == 50 and kev["more"] == len(expected) - 50
    # Those used by ransomware first, newest first within each group (the file's order among equal days).
    newest = sorted(expected, key=lambda e: e["dateAdded"], reverse=True)
    ranked = [e["cveID"] for e in newest if e["cveID"] in known]
    ranked += [e["cveID"] for e in newest if e["cveID"] not in known]
    assert [c["id"] for c in kev["cves"]] == ranked[:50]
    assert all(c["ransomware"] == (c["id"] in known) for c in kev["cves"])
    # Every finding about the product carries them (the details are the product's), not only the KEV rule's.
    eol = next(f for f in rows if f["rule_id"] == "protect.eol-os" and f["address"] == SERVER.ip)
    assert eol["kev"] == kev
    sql = next(f for f in rows if f["rule_id"] == "respond.kev-end-of-life" and f["product"] == "mssqlserver")
    assert sql["kev"]["cves"] == [{"id": e["cveID"], "ransomware": e["knownRansomwareCampaignUse"] == "Known"}
                                  for e in entries("Microsoft", "SQL Server")] and sql["kev"]["more"] == 0  # fmt: skip
    assert kev_text(sql["kev"]) == "CVE-2020-0618 (CISA KEV 2025.08.25)"
    ios = next(f for f in rows if f["rule_id"] == "respond.kev-end-of-life" and f["product"] == "cisco-ios")
    by_id = {e["cveID"]: e for e in CATALOGUE["vulnerabilities"]}  # IOS (with IOS XE too), never IOS XR or XE only
    assert {(by_id[c["id"]]["vendorProject"], by_id[c["id"]]["product"]) for c in ios["kev"]["cves"]} <= {
        ("Cisco", p) for p in {e["product"] for e in entries("Cisco", "IOS")} - {"IOS XR", "IOS XE", "IOS XE Software"}}
    assert ios["kev"]["count"] == len(ios["kev"]["cves"]) > 20 and ios["kev"]["more"] == 0
    assert next(f for f in rows if f["rule_id"] == "protect.telnet")["kev"] is None  # a port, not a product


def test_findings_stored_before_the_ids_were_kept(store_db: Path | str, tmp_path: Path) -> None:
    """An inventory evaluated by an older posture stored five ids and a count: shown as such, marks unknown."""
    db, rows = store_db, judged(store_db, tmp_path)
    for row_id, text in query(db, "SELECT id, json FROM finding_details"):
        details = json.loads(text)
        if details.get("kev"):
            details["kev_ids"] = [c["id"] for c in details.pop("kev")["cves"][:5]]
            execute(db, "UPDATE finding_details SET json = ? WHERE id = ?", json.dumps(details), row_id)
    result = run_posture("findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    old = next(f for f in json.loads(result.stdout) if f["rule_id"] == "respond.kev-end-of-life"
               and f["product"] == "windows-server")  # fmt: skip
    new = next(f for f in rows if f["id"] == old["id"])
    assert old["kev"] == {"catalogue": None, "count": new["kev"]["count"], "ransomware": None,
                          "cves": [{"id": c["id"], "ransomware": None} for c in new["kev"]["cves"][:5]],
                          "more": new["kev"]["count"] - 5}  # fmt: skip
    assert kev_text(old["kev"]).endswith(f"and {new['kev']['count'] - 5} more (CISA KEV)")
