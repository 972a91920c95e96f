"""Remediation and decommissioning plans and the machine exports, from a small imported estate."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from pathlib import Path

from tests.conftest import run_posture
from tests.rules.estate import CISCO_SWITCH, RDP, SMB1, SSH_CISCO, SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate

SERVER_A = Host("10.3.0.10", "00:11:22:00:03:10", [RDP, SMB1], WINDOWS_2008)
SERVER_B = Host("10.3.0.11", "00:11:22:00:03:11", [RDP], WINDOWS_2008)
WEB = Host("10.3.0.12", "00:11:22:00:03:12", [SSH_DEBIAN])
SWITCH = Host("10.3.0.13", "00:11:22:00:03:13", [TELNET, SSH_CISCO], CISCO_SWITCH)


def estate(tmp_path: Path) -> Path:
    db = tmp_path / "inventory.db"
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


def test_remediation_plan_groups_orders_and_dates(tmp_path: Path) -> None:
    db = estate(tmp_path)
    result = run_posture("plan", "remediation", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    actions = json.loads(result.stdout)
    upgrade = next(a for a in actions if a["rule_id"] == "protect.eol-os")
    assert upgrade["action"] == "Upgrade or replace 2 hosts running Microsoft Windows Server 2008 R2 SP1"
    assert upgrade["assets"] == 2 and upgrade["owners"] == ["Revenues team", "no owner"]
    assert upgrade["target_date"] == (date.today() + timedelta(days=30)).isoformat()  # high: 30-day SLA
    assert upgrade["effort_hours"] == 16.0
    telnet = next(a for a in actions if a["rule_id"] == "protect.telnet")
    assert telnet["assets"] == 1 and telnet["effort_hours"] == 0.5
    ranks = ["critical", "high", "medium", "low", "info"]
    assert [ranks.index(a["severity"]) for a in actions] == sorted(ranks.index(a["severity"]) for a in actions)
    # Among the high ones, the action touching the high-criticality server comes before the switch's telnet.
    assert actions.index(upgrade) < actions.index(telnet)
    markdown = run_posture("plan", "remediation", db=db).stdout
    assert markdown.startswith("# Remediation plan") and "| action | severity |" in markdown
    table = run_posture("plan", "remediation", "--format", "csv", db=db).stdout
    assert next(csv.reader(io.StringIO(table)))[:3] == ["action", "severity", "assets"]


def test_decommission_plan_and_hostile_owner_in_markdown(tmp_path: Path) -> None:
    db = estate(tmp_path)
    rows = json.loads(run_posture("plan", "decommission", "--format", "json", db=db).stdout)
    server = next(r for r in rows if r["address"] == SERVER_A.ip)
    assert server["still_serves"] == ["445/tcp microsoft-ds", "3389/tcp ms-wbt-server"]
    assert len(server["steps"]) == 5 and server["steps"][0].startswith("Owner sign-off")
    assert [r["sequence"] for r in rows] == list(range(1, len(rows) + 1))
    assert WEB.ip not in {r["address"] for r in rows}  # Debian 12 is supported: not a candidate
    markdown = run_posture("plan", "remediation", db=db).stdout
    assert "\\<b\\>Network\\|team\\</b\\>" in markdown and "<b>" not in markdown


def test_exports_and_no_evaluation(tmp_path: Path) -> None:
    db = estate(tmp_path)
    assets = list(csv.DictReader(io.StringIO(run_posture("export", "assets", db=db).stdout)))
    server = next(a for a in assets if a["addresses"] == SERVER_A.ip)
    assert server["os_product"] == "windows-server" and server["os_lifecycle_state"] == "end-of-life"
    assert server["owner"] == "Revenues team" and server["criticality"] == "high"
    findings = json.loads(run_posture("export", "findings", "--format", "json", db=db).stdout)
    assert {f["rule_id"] for f in findings} >= {"protect.eol-os", "protect.telnet", "protect.smbv1"}
    empty = tmp_path / "empty.db"
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "w.xml", [WEB])), db=empty).returncode == 0
    for args in (("plan", "remediation"), ("plan", "decommission"), ("export", "findings")):
        result = run_posture(*args, db=empty)
        assert result.returncode == 2 and "posture evaluate" in result.stderr
