"""The score and RAG cannot call an estate safe that posture could not identify (issue 15 item 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rules.score import judge
from tests.conftest import run_posture
from tests.rules.estate import MYSQL, NGINX, SSH_DEBIAN, Host, write_estate


def test_unidentified_estate_scores_zero_and_is_never_green() -> None:
    j = judge(assets=20, identified=0, unsafe_identified=0, worst={})
    assert j.score == 0 and j.safe == 0 and j.unknown == 20
    assert set(j.rag.values()) == {"amber"}
    assert all(w.startswith("insufficient data: 0 of 20") for w in j.why.values())


def test_coverage_bar_is_a_floor_and_findings_outrank_it() -> None:
    # 89.6% identified is below a 90% bar (rounding would call it 90%)
    below = judge(assets=1000, identified=896, unsafe_identified=0, worst={}, min_coverage_percent=90)
    assert below.coverage_percent == 90 and set(below.rag.values()) == {"amber"}
    at = judge(assets=1000, identified=900, unsafe_identified=0, worst={"detect": "low"}, min_coverage_percent=90)
    assert at.rag == {"protect": "green", "detect": "green", "respond": "green"} and at.score == 90
    red = judge(assets=10, identified=1, unsafe_identified=1, worst={"protect": "critical", "detect": "medium"})
    assert red.rag == {"protect": "red", "detect": "amber", "respond": "amber"}
    assert red.why["detect"] == "a medium finding is open" and red.why["respond"].startswith("insufficient data")
    assert red.score == 0


def test_empty_inventory_is_not_safe() -> None:
    j = judge(assets=0, identified=0, unsafe_identified=0, worst={})
    assert j.score == 0 and set(j.rag.values()) == {"amber"} and j.why["protect"] == "insufficient data: no assets"


def test_report_and_cli_of_an_unidentified_estate(store_db: Path | str, tmp_path: Path) -> None:
    """Web and database servers whose operating system nmap did not name: the evaluation's summary, the
    report's tiles and its text say 0/100 and "insufficient data", and no tile is green."""
    db = store_db
    hosts = [Host(f"10.15.0.{n}", f"00:11:22:00:15:{n:02x}", [NGINX, MYSQL]) for n in range(1, 6)]
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "scan.xml", hosts)), db=db).returncode == 0
    result = run_posture("evaluate", db=db)
    assert result.returncode == 0, result.stderr
    assert "score 0/100: 0 of 5 assets safe (identified, no critical/high open)\n  identified: 0 of 5;" in result.stdout
    assert "  protect AMBER: insufficient data: 0 of 5 assets identified (0% < 90%)\n" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # the score's lines fit a terminal
    as_json = run_posture("evaluate", "--format", "json", db=db)
    assert as_json.returncode == 0, as_json.stderr
    judged = json.loads(as_json.stdout)["score"]
    assert (judged["score"], judged["identified"], judged["unknown"], judged["rag"]["protect"]) == (0, 0, 5, "amber")
    assert judged["why"]["detect"].startswith("insufficient data") and "definition" in judged
    html_path = tmp_path / "report.html"
    result = run_posture("report", "--html", str(html_path), db=db)
    assert result.returncode == 0, result.stderr
    assert "score 0/100: 0 of 5 assets safe" in result.stdout
    html = html_path.read_text(encoding="utf-8")
    tiles = re.findall(r'<div class="tile ([a-z]+)">', html)
    assert tiles == ["amber", "amber", "amber"]
    assert "GREEN" not in html and html.count("insufficient data") >= 3
    assert "<strong>0 / 100</strong>" in html


def test_identified_estate_can_be_green(store_db: Path | str, tmp_path: Path) -> None:
    """The other side: a Debian 12 host identified from its SSH banner and nothing above low open is GREEN
    (a bar nothing can pass would be as useless as one everything passes)."""
    db = store_db
    host = Host("10.15.1.1", "00:11:22:00:16:01", [SSH_DEBIAN])
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "scan.xml", [host])), db=db).returncode == 0
    register = tmp_path / "register.csv"
    register.write_text("IP address,Owner,Criticality\n10.15.1.1,Digital team,low\n", encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    result = run_posture("evaluate", "--on", "2025-01-10", db=db)
    assert result.returncode == 0, result.stderr
    assert "score 100/100: 1 of 1 assets safe" in result.stdout and "identified: 1 of 1" in result.stdout
    assert "  protect GREEN: nothing above low open" in result.stdout
