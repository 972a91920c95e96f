"""Golden files: every report format from a fixed inventory judged on a fixed day must not change unnoticed.

After an intended change, regenerate with `POSTURE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/reports/test_golden.py`, read the diff, and commit the files with the change.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from scanner.compat import UTC
from tests.conftest import new_store, run_posture
from tests.rules.estate import (
    CISCO_SWITCH,
    MYSQL,
    NGINX,
    RDP,
    SMB1,
    SSH_CISCO,
    SSH_DEBIAN,
    TELNET,
    WINDOWS_2008,
    Host,
    write_estate,
)

GOLDEN = Path(__file__).parent / "golden"
DAY = "2026-11-23"
SCANNED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp()
COSTS = '[default]\nreplace = 2000\nretire = 150\n[products.windows-server]\nupgrade = 1200\nreplace = 4500\n'


@pytest.fixture(scope="module")
def estate(request: pytest.FixtureRequest, store_kind: str,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path | str, Path]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("golden")
    db = new_store(request, store_kind, tmp)
    hosts = [
        Host("10.5.0.10", "00:11:22:00:05:10", [RDP, SMB1], WINDOWS_2008, hostname="rev-app01.council.example"),
        Host("10.5.0.11", "00:11:22:00:05:11", [RDP], WINDOWS_2008, hostname="hr-db01.council.example"),
        Host("10.5.0.12", "00:11:22:00:05:12", [SSH_DEBIAN, NGINX, MYSQL], hostname="web01.council.example"),
        Host("10.5.0.13", "00:11:22:00:05:13", [TELNET, SSH_CISCO], CISCO_SWITCH, hostname="sw-core.council.example"),
    ]
    xml = write_estate(tmp / "scan.xml", hosts, when=SCANNED)
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    register = tmp / "register.csv"
    register.write_text("IP address,Owner,Business service,Criticality\n"
                        "10.5.0.10,Revenues team,Council tax,high\n10.5.0.13,Network team,Core network,high\n",
                        encoding="utf-8")  # fmt: skip
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert run_posture("evaluate", "--on", DAY, db=db).returncode == 0
    costs = tmp / "costs.toml"
    costs.write_text(COSTS, encoding="utf-8")
    return db, costs


CASES = {
    "remediation.md": ("plan", "remediation", "--on", DAY),
    "remediation.csv": ("plan", "remediation", "--format", "csv", "--on", DAY),
    "decommission.md": ("plan", "decommission", "--on", DAY),
    "investigate.md": ("plan", "investigate", "--on", DAY),
    "procurement.md": ("plan", "procurement", "--costs", "{costs}", "--on", DAY),
    "procurement.csv": ("plan", "procurement", "--costs", "{costs}", "--format", "csv", "--on", DAY),
    "report.html": ("report", "--html", "{out}", "--on", DAY),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, estate: tuple[Path | str, Path], tmp_path: Path) -> None:
    db, costs = estate
    out = tmp_path / name
    args = [a.format(costs=costs, out=out) for a in CASES[name]]
    result = run_posture(*args, db=db)
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8") if out.exists() else result.stdout
    golden = GOLDEN / name
    if os.environ.get("POSTURE_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}: run with POSTURE_UPDATE_GOLDEN=1 once and review it"
    assert text == golden.read_text(encoding="utf-8"), f"{name} differs from its golden file"
