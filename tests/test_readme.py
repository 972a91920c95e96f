"""README.md must stay true: its commands are the ones CI runs and the first one works as shown."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_posture

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-1] == test_command


@pytest.mark.lab
def test_first_command_runs_the_demo(tmp_path: Path) -> None:
    """The README's first command, minus the install it starts with (done already to run these tests)."""
    first = readme_commands()[0]
    assert first == "bash scripts/bootstrap.sh --demo && .venv/bin/posture demo"
    assert (ROOT / "scripts" / "bootstrap.sh").exists()
    result = run_posture("demo", db=tmp_path / "demo.db", timeout=600, env={"COLUMNS": "300"}, process=True)
    assert result.returncode == 0, result.stderr
    assert "nmap found 3 hosts with 3 services; SNMP asked 9 devices" in result.stdout
    for named in ("Cisco IOS 12.2(55)SE3 on a C3560", "NetApp Data ONTAP 7-Mode 8.2.3", "Juniper Junos",
                  "Red Hat Enterprise Linux 6", "nginx"):  # fmt: skip
        assert named in result.stdout
    assert f"Inventory: {tmp_path / 'demo.db'}" in result.stdout
    # It ends with its report beside its inventory and the exact commands to look at what it found (issue 15
    # item 7: following the README without --db read an empty default inventory). Each one works as printed.
    report = tmp_path / "demo-report.html"
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert f"report written: {report} (12 assets" in result.stdout
    ending = result.stdout[result.stdout.index("Look at what the demo found:"):].splitlines()[1:]
    assert ending[0].split("   (")[0].endswith(str(report))  # xdg-open REPORT, or its file:// address
    for line, says in zip(ending[1:3], (r"findings \(\d+\)", "# Remediation plan"), strict=True):
        printed = shlex.split(line.split("   (")[0])
        assert printed[1:3] == ["--db", str(tmp_path / "demo.db")] and printed[3] in ("findings", "plan")
        shown = subprocess.run(printed, capture_output=True, text=True, timeout=120, check=False)
        assert shown.returncode == 0 and re.search(says, shown.stdout), shown.stderr
    # The rules ran on what the demo found: Windows XP, Server 2003, RHEL 6, CentOS 7, the Junos and Cisco IOS
    # 12.2 devices are past end of life.
    assert re.search(r"evaluation 1 on \d{4}-\d\d-\d\d: 12 assets, 35 rules; \d+ findings open", result.stdout)
    # Names people know, with the lifecycle beside them (issue 12 item 4): never a slug or a raw sysDescr.
    rows = {line.split("│")[4].strip(): line.split("│")[5].strip() for line in result.stdout.splitlines()
            if line.count("│") > 6}  # fmt: skip
    # The recorded XP states build 2600 and no service pack: any of XP's, all ended (Microsoft's own dates).
    assert rows["Microsoft Windows XP (SP3, SP2, SP1 or no service pack)"] == ("end-of-life (eol 2005-08-30 to "
                                                                             "2014-04-08)")  # fmt: skip
    assert rows["Red Hat Enterprise Linux 6"] == "end-of-life (eol 2020-11-30)"
    assert rows["Juniper Junos 12.3R6.6 on a mx960"] == "end-of-life (eol 2016-07-31)"  # rules/data/lifecycle
    findings = run_posture("findings", "--rule", "protect.eol-os", "--format", "json", db=tmp_path / "demo.db")
    assert findings.returncode == 0, findings.stderr
    judged = json.loads(findings.stdout)
    assert {f["product"] for f in judged} >= {"windows", "windows-server", "rhel", "centos", "junos", "cisco-ios"}
    junos = next(f for f in judged if f["product"] == "junos")  # each verdict carries where its dates come from
    assert junos["lifecycle_sources"] and junos["lifecycle_sources"][0]["source"].startswith("http")


@pytest.mark.lab
def test_scan_of_this_machine(tmp_path: Path) -> None:
    """The README's other first step: `posture scan 127.0.0.1` (named in /etc/hosts: no DNS query leaves)."""
    assert ".venv/bin/posture scan 127.0.0.1" in (ROOT / "README.md").read_text()
    result = run_posture("scan", "127.0.0.1", db=tmp_path / "inventory.db")
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1" in result.stdout
    assert re.search(r"scan 1 complete: 1 hosts up of 1 scanned, 1 new assets", result.stdout)
