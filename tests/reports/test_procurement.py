"""The procurement section: lots, options, costs from a cost table, totals by financial year; MD, CSV,
ODT (read back with odfpy) and DOCX (read back with python-docx)."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import docx
from odf import teletype
from odf.opendocument import load
from odf.table import Table, TableRow

from reports.model import financial_year
from tests.conftest import run_posture
from tests.rules.estate import NGINX, RDP, SSH_DEBIAN, WINDOWS_2008, Host, write_estate

COSTS = """currency = "GBP"
horizon_years = 5
[default]
replace = 2000
[products.windows-server]
upgrade = 1200
replace = 4500
esu_per_year = 900
"""


def estate(tmp_path: Path) -> tuple[Path, Path, Path]:
    db = tmp_path / "inventory.db"
    hosts = [Host("10.4.0.10", "00:11:22:00:04:10", [RDP], WINDOWS_2008),
             Host("10.4.0.11", "00:11:22:00:04:11", [RDP], WINDOWS_2008),
             Host("10.4.0.12", "00:11:22:00:04:12", [SSH_DEBIAN, NGINX])]  # fmt: skip
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "scan.xml", hosts)), db=db).returncode == 0
    config = tmp_path / "config.toml"
    config.write_text("[rules]\nhorizon_months = 48\n", encoding="utf-8")  # Debian 12 (2028-06-30) falls inside
    assert run_posture("--config", str(config), "evaluate", db=db).returncode == 0
    costs = tmp_path / "costs.toml"
    costs.write_text(COSTS, encoding="utf-8")
    return db, config, costs


def test_lots_costs_and_totals(tmp_path: Path) -> None:
    db, config, costs = estate(tmp_path)
    with_config = ("--config", str(config))
    result = run_posture(*with_config, "plan", "procurement", "--costs", str(costs), "--format", "csv", db=db)
    assert result.returncode == 0, result.stderr
    lots = {r["product"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    windows = lots["windows-server"]
    assert (windows["quantity"], windows["earliest_eol"]) == ("2", "2020-01-14")
    assert windows["releases"] == "Microsoft Windows Server 2008 R2 SP1"  # the name people know
    assert windows["recommended"] == "upgrade" and windows["cost"] == "2400.00"  # 2 x 1,200
    assert windows["financial_year"] == financial_year(date.today())  # already past: this year
    debian = lots["debian"]  # the nginx on it is Debian's package: it goes with the OS, no lot of its own
    assert "nginx" not in lots and debian["earliest_eol"] == "2028-06-30" and debian["financial_year"] == "2028/29"
    assert debian["recommended"] == "replace" and debian["cost"] == "2000.00"  # only a default replace price
    markdown = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), db=db).stdout
    assert "| 2028/29 | GBP 2,000 |" in markdown and "Total GBP 4,400" in markdown
    unpriced = run_posture("--config", str(config), "plan", "procurement", db=db).stdout
    assert "2 lots have no price in the cost table" in unpriced


def test_odt_and_docx_read_back(tmp_path: Path) -> None:
    db, config, costs = estate(tmp_path)
    odt, docx_path = tmp_path / "strategy.odt", tmp_path / "strategy.docx"
    for fmt, path in (("odt", odt), ("docx", docx_path)):
        result = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), "--format", fmt,
                             "--out", str(path), db=db)  # fmt: skip
        assert result.returncode == 0, result.stderr
    document = docx.Document(str(docx_path))
    assert document.paragraphs[0].text.startswith("Legacy technology: replacement lots")
    table = document.tables[0]
    assert [c.text for c in table.rows[0].cells][:4] == ["lot", "category", "releases", "units"]
    assert {r.cells[0].text for r in table.rows[1:]} == {"Microsoft Windows Server", "Debian"}
    opened = load(str(odt))
    tables = opened.getElementsByType(Table)
    rows = [[teletype.extractText(c) for c in row.childNodes] for row in tables[0].getElementsByType(TableRow)]
    assert rows[0][:4] == ["lot", "category", "releases", "units"] and len(rows) == 3
    assert any(r[0] == "Microsoft Windows Server" and r[3] == "2" for r in rows)
    assert "Total GBP 4,400" in teletype.extractText(opened.text)


def test_bad_cost_tables_and_options(tmp_path: Path) -> None:
    db, _, _ = estate(tmp_path)
    cases = {
        "unknown.toml": ('[products.windows-server]\nrefurbish = 10\n', "unknown option 'refurbish'"),
        "price.toml": ('[default]\nreplace = "a lot"\n', "is not a price"),
        "broken.toml": ("[default\n", "not valid TOML"),
        "columns.csv": ("product,price\nwindows-server,10\n", "needs the columns product, option, unit_price"),
    }
    for name, (text, words) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = run_posture("plan", "procurement", "--costs", str(path), db=db)
        assert result.returncode == 2 and words in result.stderr, (name, result.stderr)
    good = tmp_path / "good.csv"
    good.write_text("product,option,unit_price\nwindows-server,upgrade,1000\n", encoding="utf-8")
    result = run_posture("plan", "procurement", "--costs", str(good), "--format", "csv", db=db)
    assert result.returncode == 0 and ",2000.00," in result.stdout
    no_out = run_posture("plan", "procurement", "--format", "docx", db=db)
    assert no_out.returncode == 2 and "--out" in no_out.stderr
