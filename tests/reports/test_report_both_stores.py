"""The same inventory on SQLite and on PostgreSQL gives the same findings, plans and HTML report, byte for
byte (issue 18, "two stores, one code"). The scans are real nmap output (tests/scanner/data); the
PostgreSQL database is a fresh one on the tests' own server (fixture `pg_database`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_posture
from tests.scanner.test_store_both import DATA, REAL_SCANS


def outputs(db: Path | str, tmp_path: Path, name: str) -> dict[str, str]:
    """What a person reads after two evaluations of the same scans 40 days apart (past-SLA findings too)."""
    for scan in REAL_SCANS:
        assert run_posture("import", "nmap", str(DATA / scan), db=db).returncode == 0
    for day in ("2026-12-01", "2027-01-10"):
        evaluated = run_posture("evaluate", "--on", day, db=db)
        assert evaluated.returncode == 0, evaluated.stderr
    (tmp_path / name).mkdir()
    report = tmp_path / name / "report.html"
    every = [x for status in ("new", "open", "reopened", "fixed") for x in ("--status", status)]
    commands = {"findings": ["findings", "--format", "json", *every], "plan": ["plan", "remediation"],
                "decommission": ["plan", "decommission"], "procurement": ["plan", "procurement"],
                "report": ["report", "--html", str(report)]}  # fmt: skip
    out = {}
    for key, argv in commands.items():
        result = run_posture(*argv, db=db)
        assert result.returncode == 0, (key, result.stderr)
        out[key] = result.stdout
    out["html"] = report.read_text(encoding="utf-8")
    return out


@pytest.mark.lab
def test_the_same_report_from_either_store(pg_database: str, tmp_path: Path) -> None:
    lite, pg = outputs(tmp_path / "inventory.db", tmp_path, "lite"), outputs(pg_database, tmp_path, "pg")
    assert '"protect.eol-os"' in lite["findings"] and '"respond.past-sla"' in lite["findings"]
    assert len(lite["html"]) > 50_000
    for key in lite:
        said = (pg[key].replace(pg_database, "DB").replace(str(tmp_path / "pg"), "DIR"),
                lite[key].replace(str(tmp_path / "inventory.db"), "DB").replace(str(tmp_path / "lite"), "DIR"))
        assert said[0] == said[1], key
