"""The procurement section: lots, upgrade or replace, software that goes with replaced machines, costs from
a cost table, totals by financial year and per option; MD, CSV, and the ODT and DOCX files read back with
odfpy and python-docx (their rendering by LibreOffice: test_procurement_render.py)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from pathlib import Path

import docx
import pytest
from docx.oxml.ns import qn
from odf import teletype
from odf.namespaces import DCNS, FONS, METANS, STYLENS
from odf.opendocument import load
from odf.style import DefaultStyle, PageLayoutProperties, TextProperties
from odf.table import Table, TableHeaderRows, TableRow

from reports.documents import Document, column_widths, text_width_cm
from reports.model import financial_year
from reports.procurement import Costs, Lot, Procurement
from scanner.compat import UTC
from tests.conftest import new_store, run_posture
from tests.reports.procurement_estate import ORGANISATION, build
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


def estate(tmp_path: Path, db: Path | str | None = None) -> tuple[Path | str, Path, Path]:
    """A small estate (two Windows Server 2008 R2, one Debian 12 with nginx): (db, config, costs). The
    inventory is `db` (a file or a PostgreSQL URL), else `tmp_path/inventory.db`."""
    db = db or tmp_path / "inventory.db"
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


Estate = tuple[Path | str, Path, Path]  # (db, config, costs)


@pytest.fixture(scope="module")
def council(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Estate:
    """The realistic estate of procurement_estate.py, built once for the module (on each store)."""
    tmp = tmp_path_factory.mktemp("council")
    return build(tmp, new_store(request, store_kind, tmp))


def plan_csv(council: Estate, *extra: str) -> dict[tuple[str, str], dict[str, str]]:
    db, config, costs = council
    result = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), "--format", "csv",
                         *extra, db=db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {(r["product"], r["cycle"]): r for r in csv.DictReader(io.StringIO(result.stdout))}


def test_upgrade_only_where_an_in_place_path_exists(council: Estate) -> None:
    """Issue 15 item 5: "Upgrade £1,200" was offered for Windows Server 2003, which has no in-place path."""
    rows = plan_csv(council)
    server_2003 = rows[("windows-server", "2003-sp2")]
    assert (server_2003["recommended"], server_2003["cost"], server_2003["upgrade"]) == ("replace", "4500.00", "")
    assert "no in-place upgrade to a supported release" in server_2003["path"]
    server_2008 = rows[("windows-server", "2008-r2-sp1")]  # two from nmap, one from its agent
    assert (server_2008["quantity"], server_2008["recommended"], server_2008["cost"]) == ("3", "upgrade", "3600.00")
    assert server_2008["path"].startswith("in place to Microsoft Windows Server 2025 via Microsoft Windows Server 2012")
    windows_7 = rows[("windows", "7-sp1")]  # its in-place target, Windows 10, is itself past free support
    assert windows_7["recommended"] == "replace"
    assert "Windows 10 22H2, itself on paid extended support" in windows_7["path"]
    centos = rows[("centos", "7")]
    assert centos["recommended"] == "upgrade" and "Red Hat Enterprise Linux 8" in centos["path"]
    assert centos["cost"] == "" and "no supported release" not in centos["blockers"]  # no price given: none made up
    debian = rows[("debian", "12")]  # its nginx is Debian's package: it goes with the OS, no lot of its own
    assert not any(product == "nginx" for product, _ in rows)
    assert (debian["earliest_eol"], debian["financial_year"]) == ("2028-06-30", "2028/29")
    assert debian["recommended"] == "upgrade"
    assert server_2008["financial_year"] == financial_year(date.today())  # already past: this year


def test_software_goes_with_the_machine_it_runs_on(council: Estate) -> None:
    """Issue 15 item 5: Python 2.6/2.7, .NET 4.0, IE8 and Office 2007 on PCs being replaced each fell back to
    `[default] replace = 2000`; Office 2007 was categorised "servers"."""
    rows = plan_csv(council)
    xp = rows[("windows", "5-sp3")]
    assert (xp["number"], xp["quantity"], xp["recommended"], xp["cost"]) == ("1", "3", "replace", "2700.00")
    riders = {key: r for key, r in rows.items() if r["recommended"] == "with the machine"}
    assert set(riders) == {("internet-explorer", "8"), ("dotnetfx", "4.0"), ("dotnetfx", "3.5-sp1"),
                           ("office", "2007"), ("python", "2.7"), ("python", "2.6")}  # fmt: skip
    for rider in riders.values():
        assert (rider["quantity"], rider["cost"], rider["goes_with"], rider["category"]) == ("3", "", "1", "end-user")
    office_2010 = rows[("office", "2010")]  # on the Server 2008 R2 being upgraded: a lot, end-user software
    assert (office_2010["category"], office_2010["recommended"]) == ("end-user", "upgrade")
    assert office_2010["cost"] == "350.00"
    sql = rows[("mssqlserver", "10.50-sp3")]  # SQL Server 2008 R2 SP3 upgrades in place to 2017
    assert sql["category"] == "servers" and sql["recommended"] == "upgrade" and "SQL Server 2017" in sql["path"]
    lots = [r for r in rows.values() if r["number"]]
    total = sum(float(r["cost"]) for r in lots if r["cost"])
    assert total == 2700 + 4500 + 900 + 3600 + 350  # XP, 2003, Windows 7, 2008 R2, Office 2010: nothing twice
    db, config, costs = council
    markdown = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), db=db).stdout
    assert "| 2026/27 | 7 | 11 | 2 | £3,950 | £8,100 | £12,050 |" in markdown
    assert "| 2028/29 | 1 | 1 | 1 | £0 | £0 | £0 |" in markdown  # Debian 12: upgrade path, no upgrade price
    assert "| Total | 8 | 12 | 3 | £3,950 | £8,100 | £12,050 |" in markdown
    assert "| Upgrade where an in-place path exists, else replace (recommended) | 5 | 3 | £12,050 |" in markdown
    assert "| Replace every lot | 8 | 0 | £29,600 |" in markdown
    assert "3 lots without a price in the cost table are not in these totals" in markdown
    assert "Prepared for Example Borough Council by posture on" in markdown


def test_the_readme_cost_table(council: Estate, tmp_path: Path) -> None:
    """README's example cost table works as it says: a release's own prices before its product's."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    example = tmp_path / "costs.toml"
    block = readme.split("# costs.toml (or CSV", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    example.write_text(block, encoding="utf-8")
    rows = plan_csv((council[0], council[1], example))
    assert rows[("windows-server", "2003-sp2")]["cost"] == "6000.00"  # [products.windows-server."2003-sp2"]
    assert rows[("windows-server", "2008-r2-sp1")]["cost"] == "3600.00"  # [products.windows-server] upgrade


def test_cost_of_ownership_per_option() -> None:
    """Each option over the horizon: one-off prices once; extended support per year while it is sold, then
    the recommended option at its end when that falls inside the horizon; a missing price is counted apart."""
    day = date(2026, 12, 7)

    def lot(number: int, cost: float | None, options: dict[str, float | None], extended: str | None) -> Lot:
        return Lot(number, "windows-server", "2016", f"lot {number}", "servers", 1, "2027-01-12", extended, [], [], "",
                   options, "upgrade", cost, "windows-server", "2026/27")  # fmt: skip

    lots = [lot(1, 1000.0, {"upgrade": 1000.0, "replace": 3000.0, "retire": 100.0, "extended support": 2700.0},
                "2029-10-13"),  # three years of support sold, ending inside five years: then upgrade
            lot(2, 800.0, {"upgrade": 800.0, "replace": 2000.0, "retire": None, "extended support": 4500.0},
                "2035-01-01"),  # sold beyond the horizon: support only
            lot(3, None, {"replace": None, "retire": 50.0}, None)]  # fmt: skip
    plan = Procurement(day, Costs(horizon_years=5), lots, [])
    assert plan.tco() == [
        ("Upgrade where an in-place path exists, else replace (recommended)", 1800.0, 2, 1),
        ("Replace every lot", 5000.0, 2, 1),
        ("Extended support where sold, then the recommended option", 2700.0 + 1000.0 + 4500.0, 2, 1),
        ("Retire every lot", 150.0, 2, 1),
    ]


def test_currency_is_formatted_as_buyers_write_it() -> None:
    assert [Costs(currency=c).money(12900) for c in ("GBP", "EUR", "USD", "CHF")] == [
        "£12,900", "€12,900", "$12,900", "CHF 12,900"]  # fmt: skip
    assert Costs().money(None) == "no price"


def test_bad_cost_tables_name_file_and_line(store_db: Path | str, tmp_path: Path) -> None:
    """Issue 15 item 5: "a mistyped product slug in costs.toml is silently ignored"."""
    db, _, _ = estate(tmp_path, store_db)
    cases = {
        "slug.toml": ('currency = "GBP"\n\n[products.windows-sever]\nreplace = 10\n',
                      "slug.toml:3: [products.windows-sever]: unknown product 'windows-sever' (did you mean "
                      "'windows-server'?)"),
        "release.toml": ('[products.windows-server."2003-sp9"]\nreplace = 10\n',
                         "release.toml:1: [products.windows-server.2003-sp9]: windows-server has no release "
                         "'2003-sp9'"),
        "option.toml": ("[products.windows-server]\nupgrade = 5\nrefurbish = 10\n",
                        "option.toml:3: [products.windows-server] refurbish: unknown option 'refurbish'"),
        "currency.toml": ('horizon_years = 5\ncurrency = "GBR"\n', "currency.toml:2: unknown currency 'GBR'"),
        "price.toml": ('[default]\nreplace = "a lot"\n', "price.toml:2: [default] replace: 'a lot' is not a price"),
        "broken.toml": ("[default\n", "not valid TOML"),
        "columns.csv": ("product,price\nwindows-server,10\n", "needs the columns product, option, unit_price"),
        "slug.csv": ("product,option,unit_price\nwindows-server,replace,10\nofice,upgrade,5\n",
                     "slug.csv:3: unknown product 'ofice' (did you mean 'office'?)"),
    }  # fmt: skip
    for name, (text, words) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = run_posture("plan", "procurement", "--costs", str(path), db=db)
        assert result.returncode == 2 and words in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    good = tmp_path / "good.csv"
    good.write_text("product,option,unit_price\nwindows-server,upgrade,1000\nwindows-server.2008-r2-sp1,upgrade,800\n",
                    encoding="utf-8")  # fmt: skip
    result = run_posture("plan", "procurement", "--costs", str(good), "--format", "csv", db=db)
    assert result.returncode == 0 and ",upgrade,1600.00," in result.stdout  # the release's own price wins
    swiss = tmp_path / "swiss.toml"
    swiss.write_text('currency = "CHF"\n[products.windows-server]\nupgrade = 6450\n', encoding="utf-8")
    shown = run_posture("plan", "procurement", "--costs", str(swiss), db=db).stdout
    assert "| Total | 1 | 2 | 0 | CHF 12,900 | CHF 0 | CHF 12,900 |" in shown
    no_out = run_posture("plan", "procurement", "--format", "docx", db=db)
    assert no_out.returncode == 2 and "--out" in no_out.stderr


def test_odt_and_docx_metadata_layout_and_tables(council: Estate, tmp_path: Path) -> None:
    """A4 landscape, en-GB, real title, the council as author, today's dates; the header row bold and
    repeated (DOCX w:tblHeader, ODT table:table-header-rows), numbers right-aligned."""
    db, config, costs = council
    odt, docx_path = tmp_path / "strategy.odt", tmp_path / "strategy.docx"
    before = datetime.now(UTC).replace(microsecond=0)
    for path in (odt, docx_path):
        result = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs),
                             "--format", path.suffix[1:], "--out", str(path), db=db)  # fmt: skip
        assert result.returncode == 0, result.stderr
    after = datetime.now(UTC)

    document = docx.Document(str(docx_path))
    core = document.core_properties
    assert core.title.startswith("Legacy technology: replacement lots") and core.author == ORGANISATION
    assert core.language == "en-GB" and core.comments == "" and core.last_modified_by == ORGANISATION
    for stamp in (core.created, core.modified):
        assert before <= stamp.replace(tzinfo=UTC) <= after
    section = document.sections[0]
    assert section.page_width is not None and section.page_height is not None
    assert (round(section.page_width.cm, 1), round(section.page_height.cm, 1)) == (29.7, 21.0)
    assert section.orientation == 1  # WD_ORIENT.LANDSCAPE
    defaults = document.styles.element.find(qn("w:docDefaults"))
    assert {e.get(qn("w:val")) for e in document.styles.element.iter(qn("w:lang"))} == {"en-GB"}
    assert defaults.find(f"{qn('w:rPrDefault')}/{qn('w:rPr')}/{qn('w:rFonts')}").get(qn("w:ascii")) == "Arial"
    assert document.paragraphs[0].text == core.title
    lots = next(t for t in document.tables if t.rows[0].cells[0].text == "No.")
    header = lots.rows[0]
    assert [c.text for c in header.cells][:4] == ["No.", "Lot", "Category", "Units"]
    assert header._tr.trPr is not None and header._tr.trPr.find(qn("w:tblHeader")) is not None
    assert all(p.style.name == "Table Heading" and p.style.font.bold for c in header.cells for p in c.paragraphs)
    first = lots.rows[1].cells
    assert (first[1].text, first[3].text, first[6].text) == ("Microsoft Windows XP SP3", "3", "£2,700")
    assert first[6].paragraphs[0].alignment == 2 and first[1].paragraphs[0].alignment is None  # RIGHT; left
    widths = [c.width.cm for c in lots.columns if c.width is not None]
    assert widths[-1] == max(widths) and abs(sum(widths) - 25.7) < 0.01  # "Why" takes what the rest leave

    opened = load(str(odt))
    meta = {(e.qname[0], e.qname[1]): teletype.extractText(e) for e in opened.meta.childNodes}
    assert meta[(DCNS, "title")] == core.title and meta[(DCNS, "creator")] == ORGANISATION
    assert meta[(METANS, "initial-creator")] == ORGANISATION and meta[(DCNS, "language")] == "en-GB"
    created = datetime.fromisoformat(meta[(METANS, "creation-date")].replace("Z", "+00:00"))
    assert before <= created <= after and meta[(DCNS, "date")] == meta[(METANS, "creation-date")]
    [layout] = opened.automaticstyles.getElementsByType(PageLayoutProperties)
    assert (layout.attributes[(STYLENS, "print-orientation")], layout.attributes[(FONS, "page-width")],
            layout.attributes[(FONS, "page-height")]) == ("landscape", "29.7cm", "21.0cm")  # fmt: skip
    [default] = opened.styles.getElementsByType(DefaultStyle)
    [words] = default.getElementsByType(TextProperties)
    assert (words.attributes[(FONS, "language")], words.attributes[(FONS, "country")]) == ("en", "GB")
    tables = {t.getAttribute("name"): t for t in opened.getElementsByType(Table)}
    lots_odt = next(t for t in tables.values()
                    if teletype.extractText(t.getElementsByType(TableHeaderRows)[0]).startswith("No.Lot"))  # fmt: skip
    rows = [[teletype.extractText(c) for c in row.childNodes] for row in lots_odt.getElementsByType(TableRow)]
    assert rows[0][:4] == ["No.", "Lot", "Category", "Units"] and rows[1][1] == "Microsoft Windows XP SP3"
    assert len(rows) == 9  # the header and eight lots


def test_author_is_posture_without_an_organisation(store_db: Path | str, tmp_path: Path) -> None:
    db, _, costs = estate(tmp_path, store_db)
    path = tmp_path / "strategy.docx"
    assert run_posture("plan", "procurement", "--costs", str(costs), "--format", "docx", "--out", str(path),
                       db=db).returncode == 0  # fmt: skip
    document = docx.Document(str(path))
    assert document.core_properties.author == "posture"
    assert document.paragraphs[1].text.startswith("Prepared by posture on")  # no council name invented


def test_column_widths_fit_the_longest_word() -> None:
    """Every column is at least as wide as its longest word (so LibreOffice and Word never break one), a
    price never wraps, and the table stays within the landscape text width."""
    doc = Document("t")
    doc.table(["No.", "Lot", "Cost", "Why"],
              [["1", "Microsoft Windows Server 2003 SP2", "no price", "in place to Microsoft Windows Server 2025 " * 6],
               ["2", "Internationalisation-heavy-token", "£12,900", "short"]], numeric=(0, 2))  # fmt: skip
    table = doc.blocks[0][1]
    assert not isinstance(table, str)
    widths = column_widths(table)
    assert abs(sum(widths) - 25.7) < 0.01
    assert widths[1] > text_width_cm("Internationalisation-heavy-token") + 0.3
    assert widths[2] > text_width_cm("no price") + 0.3 and widths[3] == max(widths)
