"""Remediation and decommissioning plans and the machine exports, from a small imported estate."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scanner.compat import UTC
from tests.conftest import assets_json, new_store, run_posture
from tests.rules.estate import (
    CENTOS_5,
    CISCO_SWITCH,
    MSSQL_2008R2,
    RDP,
    SMB1,
    SSH_CISCO,
    SSH_DEBIAN,
    TELNET,
    WINDOWS_2008,
    WINDOWS_2016,
    Host,
    write_estate,
)

SERVER_A = Host("10.3.0.10", "00:11:22:00:03:10", [RDP, SMB1], WINDOWS_2008)
SERVER_B = Host("10.3.0.11", "00:11:22:00:03:11", [RDP], WINDOWS_2008)
WEB = Host("10.3.0.12", "00:11:22:00:03:12", [SSH_DEBIAN])
SWITCH = Host("10.3.0.13", "00:11:22:00:03:13", [TELNET, SSH_CISCO], CISCO_SWITCH)


def estate(db: Path | str, tmp_path: Path) -> Path | str:
    xml = write_estate(tmp_path / "scan.xml", [SERVER_A, SERVER_B, WEB, SWITCH])
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    register = tmp_path / "register.csv"
    register.write_text(
        "IP address,Owner,Criticality\n"
        f"{SERVER_A.ip},Revenues team,high\n{SWITCH.ip},<b>Network|team</b>,medium\n",
        encoding="utf-8",
    )
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert run_posture("evaluate", db=db).returncode == 0
    return db


def test_remediation_plan_groups_orders_and_dates(store_db: Path | str, tmp_path: Path) -> None:
    db = estate(store_db, tmp_path)
    result = run_posture("plan", "remediation", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    actions = json.loads(result.stdout)
    upgrade = next(a for a in actions if "protect.eol-os" in a["rule_ids"] and "Windows" in a["action"])
    assert upgrade["action"] == "Upgrade or replace 2 hosts running Microsoft Windows Server 2008 R2 SP1"
    assert upgrade["assets"] == 2 and upgrade["owners"] == ["Revenues team", "no owner"]
    # Known exploited (critical, 14-day SLA) as well as past end of life (high): the worst sets the date.
    assert upgrade["severity"] == "critical" and upgrade["rule_id"] == "respond.kev-end-of-life"
    assert upgrade["target_date"] == (date.today() + timedelta(days=14)).isoformat()
    assert upgrade["effort_hours"] == 16.0
    telnet = next(a for a in actions if a["rule_id"] == "protect.telnet")
    assert telnet["assets"] == 1 and telnet["effort_hours"] == 0.5
    ranks = ["critical", "high", "medium", "low", "info"]
    assert [ranks.index(a["severity"]) for a in actions] == sorted(ranks.index(a["severity"]) for a in actions)
    # The servers' critical action comes before the switch's telnet (high).
    assert actions.index(upgrade) < actions.index(telnet)
    markdown = run_posture("plan", "remediation", db=db).stdout
    assert markdown.startswith("# Remediation plan") and "| action | severity |" in markdown
    table = run_posture("plan", "remediation", "--format", "csv", db=db).stdout
    assert next(csv.reader(io.StringIO(table)))[:3] == ["action", "severity", "assets"]


def test_decommission_plan_and_hostile_owner_in_markdown(store_db: Path | str, tmp_path: Path) -> None:
    db = estate(store_db, tmp_path)
    rows = json.loads(run_posture("plan", "decommission", "--format", "json", db=db).stdout)
    server = next(r for r in rows if r["address"] == SERVER_A.ip)
    assert server["still_serves"] == ["445/tcp microsoft-ds", "3389/tcp ms-wbt-server"]
    assert len(server["steps"]) == 5 and server["steps"][0].startswith("Owner sign-off")
    assert [r["sequence"] for r in rows] == list(range(1, len(rows) + 1))
    assert WEB.ip not in {r["address"] for r in rows}  # Debian 12 is supported: not a candidate
    markdown = run_posture("plan", "remediation", db=db).stdout
    assert "\\<b\\>Network\\|team\\</b\\>" in markdown and "<b>" not in markdown


def test_exports_and_no_evaluation(request: pytest.FixtureRequest, store_kind: str, store_db: Path | str,
                                   tmp_path: Path) -> None:  # fmt: skip
    db = estate(store_db, tmp_path)
    assets = list(csv.DictReader(io.StringIO(run_posture("export", "assets", db=db).stdout)))
    server = next(a for a in assets if a["addresses"] == SERVER_A.ip)
    assert server["os_product"] == "windows-server" and server["os_lifecycle_state"] == "end-of-life"
    assert server["owner"] == "Revenues team" and server["criticality"] == "high"
    findings = json.loads(run_posture("export", "findings", "--format", "json", db=db).stdout)
    assert {f["rule_id"] for f in findings} >= {"protect.eol-os", "protect.telnet", "protect.smbv1"}
    (tmp_path / "empty").mkdir()
    empty = new_store(request, store_kind, tmp_path / "empty")
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "w.xml", [WEB])), db=empty).returncode == 0
    for args in (("plan", "remediation"), ("plan", "decommission"), ("export", "findings")):
        result = run_posture(*args, db=empty)
        assert result.returncode == 2 and "posture evaluate" in result.stderr


# A realistic estate (nmap's own strings, tests/rules/estate.py), judged on DAY and again on LATER, when the
# high and critical findings are past their SLA: an end-of-life Windows Server 2008 R2 with no owner, SMBv1 and
# SQL Server 2008 R2 on it (known exploited), another one with an owner; SQL Server 2008 R2 on a Windows Server
# 2016 that stays; CentOS 5 (end of life with no release to upgrade to: eol-os and decommission-candidate both
# fire); a Cisco IOS 12.2 switch with telnet; and a Debian web server that appeared in the second scan.
EOL_NO_OWNER = Host("10.3.0.20", "00:11:22:00:03:20", [RDP, SMB1, MSSQL_2008R2], WINDOWS_2008)
EOL_OWNED = Host("10.3.0.21", "00:11:22:00:03:21", [RDP], WINDOWS_2008)
STAYS = Host("10.3.0.22", "00:11:22:00:03:22", [RDP, MSSQL_2008R2], WINDOWS_2016)
CENTOS = Host("10.3.0.23", "00:11:22:00:03:23", [], CENTOS_5)
CORE_SWITCH = Host("10.3.0.24", "00:11:22:00:03:24", [TELNET, SSH_CISCO], CISCO_SWITCH)
NEW_WEB = Host("10.3.0.25", "00:11:22:00:03:25", [SSH_DEBIAN])
DAY, LATER = "2026-11-23", "2027-01-05"
KEV = json.loads((Path(__file__).parents[2] / "rules" / "data" / "kev" / "known_exploited_vulnerabilities.json")
                 .read_text(encoding="utf-8"))  # fmt: skip
KEV_BY_ID = {e["cveID"]: e for e in KEV["vulnerabilities"]}


@pytest.fixture(scope="module")
def council(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    tmp = tmp_path_factory.mktemp("council")
    db = new_store(request, store_kind, tmp)
    first = [EOL_NO_OWNER, EOL_OWNED, STAYS, CENTOS, CORE_SWITCH]
    scanned = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp()
    for name, hosts, when in (("1.xml", first, scanned), ("2.xml", [*first, NEW_WEB], scanned + 86_400)):
        assert run_posture("import", "nmap", str(write_estate(tmp / name, hosts, when=when)), db=db).returncode == 0
    register = tmp / "register.csv"
    register.write_text("IP address,Owner,Criticality\n10.3.0.21,Revenues team,high\n10.3.0.22,Finance team,medium\n"
                        "10.3.0.24,Network team,medium\n", encoding="utf-8")  # fmt: skip
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    for day in (DAY, LATER):
        assert run_posture("evaluate", "--on", day, db=db).returncode == 0
    return db


def plan_json(db: Path | str, which: str = "remediation") -> list[dict[str, Any]]:
    result = run_posture("plan", which, "--format", "json", "--on", LATER, db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_one_action_per_fix_and_asset(council: Path | str) -> None:
    """Issue 15 item 4: an end-of-life machine is in one action whichever rules fired (CentOS 5 was listed twice,
    under eol-os and decommission-candidate; a Server 2008 R2 in up to five actions), its software goes with
    it, and no asset is counted twice for the same fix."""
    actions = plan_json(council)
    ids = {a["addresses"][0]: a["id"] for a in assets_json(council)}
    by_action = {a["action"]: a for a in actions}
    centos = [a for a in actions if "CentOS" in a["action"]]
    assert [a["action"] for a in centos] == ["Upgrade or replace 1 host running CentOS 5"]
    assert centos[0]["reasons"] == ["past end of life", "no supported release to upgrade to", "no owner",
                                    "past its SLA"]  # fmt: skip
    assert set(centos[0]["rule_ids"]) == {"protect.eol-os", "respond.decommission-candidate", "respond.eol-no-owner"}
    server = by_action["Upgrade or replace 2 hosts running Microsoft Windows Server 2008 R2 SP1"]
    assert server["asset_ids"] == sorted([ids[EOL_NO_OWNER.ip], ids[EOL_OWNED.ip]])
    assert server["severity"] == "critical" and server["effort_hours"] == 16.0 and server["kind"] == "upgrade-os"
    assert server["reasons"] == ["known exploited vulnerabilities (CISA KEV)", "past end of life",
                                 "no owner (1 of 2 hosts)", "past its SLA"]  # fmt: skip
    assert server["also_removes"] == ["Microsoft SQL Server 2008 R2 'Kilimanjaro' SP3 (1 of 2 hosts)"]
    # The SQL Server on the machine that stays is its own upgrade; the one on the replaced machine is not.
    sql = by_action["Upgrade Microsoft SQL Server 2008 R2 'Kilimanjaro' SP3 on 1 host"]
    assert sql["asset_ids"] == [ids[STAYS.ip]] and sql["effort_hours"] == 2.0
    assert {a["kind"] for a in actions if ids[EOL_NO_OWNER.ip] in a["asset_ids"]} == {"upgrade-os", "configuration"}
    assert [a["action"] for a in actions if a["kind"] == "configuration" and ids[EOL_NO_OWNER.ip] in a["asset_ids"]] \
        == ["Disable SMBv1 on 1 host", "Remote Desktop exposed: 3 hosts"]  # fmt: skip
    assert [a["action"] for a in actions if a["rule_id"] == "protect.telnet"] == ["Telnet exposed: 1 host"]
    # Detective findings are not remediation.
    assert not [a for a in actions if a["rule_id"].startswith("detect.") or "detect" in " ".join(a["rule_ids"])]
    # No asset twice for the same fix; no software upgrade or patch on a machine being replaced.
    seen: dict[str, set[int]] = {}
    for a in actions:
        assert not seen.setdefault(a["fix"], set()) & set(a["asset_ids"]), a
        seen[a["fix"]] |= set(a["asset_ids"])
        assert a["effort_hours"] == {"upgrade-os": 8.0, "upgrade-software": 2.0, "patch": 2.0, "configuration": 0.5,
                                     "change": 1.0}[a["kind"]] * a["assets"]  # fmt: skip
    replaced = {ids[h.ip] for h in (EOL_NO_OWNER, EOL_OWNED, CENTOS, CORE_SWITCH)}
    assert seen["upgrade-os"] == replaced | {ids[STAYS.ip]}  # Server 2016: its end of life is within the horizon
    assert not replaced & {i for a in actions if a["kind"] in ("upgrade-software", "patch") for i in a["asset_ids"]}
    # The totals add up, in every format.
    hours = sum(a["effort_hours"] for a in actions)
    markdown = run_posture("plan", "remediation", "--on", LATER, db=council).stdout
    assert f"{len(actions)} actions on 5 assets, {hours:g} hours estimated" in markdown
    table = list(csv.DictReader(io.StringIO(run_posture("plan", "remediation", "--format", "csv", "--on", LATER,
                                                        db=council).stdout)))  # fmt: skip
    assert sum(float(r["effort_hours"]) for r in table) == hours and len(table) == len(actions)
    assert table[0]["owners"] == "Revenues team; no owner" and table[0]["also_removes"] == server["also_removes"][0]


def test_investigate_list(council: Path | str) -> None:
    """Detective findings make their own list, with the hosts to look at; `plan remediation` points to it."""
    rows = plan_json(council, "investigate")
    new = next(r for r in rows if r["rule_id"] == "detect.new-asset")
    assert new["action"] == "New asset since the last scan: 1 host" and new["hosts"] == [NEW_WEB.ip]
    assert new["kind"] == "investigate" and new["effort_hours"] == 1.0
    assert {r["rule_id"] for r in rows} <= {"detect.new-asset", "detect.not-in-register", "detect.stale-asset"}
    hours = sum(r["effort_hours"] for r in rows)
    markdown = run_posture("plan", "remediation", "--on", LATER, db=council).stdout
    assert f"To investigate (not remediation): {len(rows)} items" in markdown and f"{hours:g} hours" in markdown
    listed = run_posture("plan", "investigate", "--on", LATER, db=council).stdout
    assert listed.startswith("# To investigate") and f"| {NEW_WEB.ip} |" in listed
    table = run_posture("plan", "investigate", "--format", "csv", "--on", LATER, db=council).stdout
    assert next(csv.reader(io.StringIO(table)))[:4] == ["action", "severity", "assets", "hosts"]


def test_known_exploited_cves_in_the_plan(council: Path | str) -> None:
    """Issue 15 item 6: each action about a known-exploited product lists its CVE ids from the shipped CISA
    catalogue, ransomware use marked, the catalogue's version beside them; the patch action for a supported
    Windows Server 2016 ("check that the fixes for the listed CVEs are installed") lists them too."""
    actions = plan_json(council)
    server = next(a for a in actions if a["action"].endswith("running Microsoft Windows Server 2008 R2 SP1"))
    windows, sql = server["kev"]
    assert (windows["product"], sql["product"]) == ("Microsoft Windows Server 2008 R2 SP1",
                                                    "Microsoft SQL Server 2008 R2 'Kilimanjaro' SP3")  # fmt: skip
    expected = [e for e in KEV["vulnerabilities"] if e["vendorProject"] == "Microsoft"
                and (e["product"].startswith("Windows") or e["product"].startswith("Win32k"))]  # fmt: skip
    assert windows["catalogue"] == KEV["catalogVersion"] and windows["count"] == len(expected) > 50
    assert len(windows["cves"]) == 50 and windows["more"] == len(expected) - 50
    assert windows["ransomware"] == sum(e["knownRansomwareCampaignUse"] == "Known" for e in expected)
    for cve in windows["cves"] + sql["cves"]:
        assert cve["ransomware"] == (KEV_BY_ID[cve["id"]]["knownRansomwareCampaignUse"] == "Known")
    marks = [c["ransomware"] for c in windows["cves"]]
    assert marks == sorted(marks, reverse=True)  # those used by ransomware first
    assert [c["id"] for c in sql["cves"]] == ["CVE-2020-0618"]
    patch = next(a for a in actions if a["kind"] == "patch")
    assert patch["action"] == ("Check the fixes for the known exploited vulnerabilities of Microsoft Windows Server "
                               "2016 are installed on 1 host")  # fmt: skip
    assert [c["id"] for c in patch["kev"][0]["cves"]] == [c["id"] for c in windows["cves"]]
    markdown = run_posture("plan", "remediation", "--on", LATER, db=council).stdout
    first = windows["cves"][0]["id"]
    assert f"{first} (ransomware)" in markdown and f"and {windows['more']} more (CISA KEV {KEV['catalogVersion']})" \
        in markdown  # fmt: skip
    table = list(csv.DictReader(io.StringIO(run_posture("plan", "remediation", "--format", "csv", "--on", LATER,
                                                        db=council).stdout)))  # fmt: skip
    assert "CVE-2020-0618 (CISA KEV" in next(r for r in table if r["action"] == sql_action(actions))["known_exploited"]


def sql_action(actions: list[dict[str, Any]]) -> str:
    return next(a["action"] for a in actions if a["kind"] == "upgrade-software")


def test_decommissioning_is_about_machines(council: Path | str) -> None:
    """A supported machine with an old, exploited program is not a retirement candidate (the program is
    upgraded, in the remediation plan); the end-of-life machines are, each once, named by their system."""
    rows = json.loads(run_posture("plan", "decommission", "--format", "json", "--on", LATER, db=council).stdout)
    assert sorted(r["address"] for r in rows) == [EOL_NO_OWNER.ip, EOL_OWNED.ip, CENTOS.ip, CORE_SWITCH.ip]
    server = next(r for r in rows if r["address"] == EOL_NO_OWNER.ip)
    assert server["runs"] == ["Microsoft Windows Server 2008 R2 SP1"]
    assert server["why"] == ["End-of-life product with known exploited vulnerabilities",
                             "End-of-life system with no owner"]  # fmt: skip
