"""README.md must stay true: its commands are the ones CI runs and the first one works as shown."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import run_posture

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-1] == test_command


def test_first_command_runs_the_demo(tmp_path: Path) -> None:
    """The README's first command, minus the install it starts with (done already to run these tests)."""
    first = readme_commands()[0]
    assert first == "bash scripts/bootstrap.sh --demo && .venv/bin/posture demo"
    assert (ROOT / "scripts" / "bootstrap.sh").exists()
    result = run_posture("demo", db=tmp_path / "demo.db", timeout=600, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "nmap found 3 hosts with 3 services; SNMP asked 9 devices" in result.stdout
    for banner in ("Cisco IOS Software, C3560", "NetApp Release 8.2.3 7-Mode", "JUNOS", "2.6.32-573.el6", "nginx"):
        assert banner in result.stdout
    assert f"Inventory: {tmp_path / 'demo.db'}" in result.stdout


def test_scan_of_this_machine(tmp_path: Path) -> None:
    """The README's other first step: `posture scan 127.0.0.1` (named in /etc/hosts: no DNS query leaves)."""
    assert ".venv/bin/posture scan 127.0.0.1" in (ROOT / "README.md").read_text()
    result = run_posture("scan", "127.0.0.1", db=tmp_path / "inventory.db")
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1" in result.stdout
    assert re.search(r"scan 1 complete: 1 hosts up of 1 scanned, 1 new assets", result.stdout)
