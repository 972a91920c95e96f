"""Progress of imports, evaluation and the report (scanner/progress.py): rewritten in place on a real
pseudo-terminal, silent in a pipe or log unless `posture --progress`, never on stdout."""

from __future__ import annotations

import re
from pathlib import Path

from bench.gen_nmap_xml import write
from tests.conftest import POSTURE, on_a_terminal, run_posture


def stderr_on_a_terminal(*args: str, out: Path) -> str:
    """Run posture with stderr on a real pseudo-terminal (stdout into `out`); everything stderr showed."""
    with out.open("wb") as stdout:
        return on_a_terminal([POSTURE, *args], {"TERM": "xterm", "COLUMNS": "80"}, stdout=stdout)


def test_import_evaluate_and_report_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    xml = tmp_path / "site.xml"
    write(xml, hosts=3000, ports_per_host=1)
    db = str(tmp_path / "inventory.db")
    shown = stderr_on_a_terminal("--db", db, "import", "nmap", str(xml), out=tmp_path / "import.out")
    # One line rewritten in place (carriage returns, no newline between ticks), blanked at the end.
    assert "\rposture: site.xml: 1,000 hosts read" in shown and "3,000 hosts read" in shown, shown
    assert "hosts read\n" not in shown.replace("\r\n", "\n") and shown.rstrip(" ").endswith("\r"), repr(shown)
    assert "hosts read" not in (tmp_path / "import.out").read_text()  # stdout keeps only the outcome

    shown = stderr_on_a_terminal("--db", db, "evaluate", out=tmp_path / "evaluate.out")
    # Ticks come every 1,000 assets or 2 s, whichever is first: which counts show depends on the machine.
    assert re.search(r"\rposture: evaluate: [1-9][\d,]* of 3,000 assets", shown), repr(shown)
    shown = stderr_on_a_terminal("--db", db, "report", "--html", str(tmp_path / "r.html"), out=tmp_path / "report.out")
    assert "posture: report: rendering 3,000 assets" in shown and "writing" in shown, repr(shown)
    assert "report written" in (tmp_path / "report.out").read_text()

    quiet = stderr_on_a_terminal("--db", db, "--no-progress", "evaluate", out=tmp_path / "quiet.out")
    assert "posture: evaluate:" not in quiet, repr(quiet)


def test_a_log_gets_progress_lines_only_when_asked(store_db: Path | str, tmp_path: Path) -> None:
    xml = tmp_path / "site.xml"
    write(xml, hosts=2500, ports_per_host=1)
    db = store_db
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    silent = run_posture("evaluate", db=db)
    assert silent.returncode == 0 and "posture: evaluate:" not in silent.stderr, silent.stderr
    logged = run_posture("--progress", "evaluate", db=db)
    lines = [line for line in logged.stderr.splitlines() if line.startswith("posture: evaluate:")]
    assert lines and lines[0].startswith("posture: evaluate: 1,000 of 2,500 assets"), logged.stderr
    assert "\r" not in logged.stderr  # a log gets whole lines
    report = run_posture("--progress", "report", "--html", str(tmp_path / "r.html"), db=db)
    assert [line.split(":")[2].split()[0] for line in report.stderr.splitlines()] == ["reading", "rendering",
                                                                                      "writing"], report.stderr
