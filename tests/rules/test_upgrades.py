"""rules/data/upgrade_paths.toml: every row names releases the catalogue has and says where it comes from;
the verdicts a buyer reads for the releases issue 15 names."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from rules.catalogue import default_catalogue
from rules.identify import split_cycle
from rules.upgrades import PATHS_FILE, in_place, paths
from scanner.compat import tomllib

DAY = date(2026, 12, 7)


def test_every_row_names_catalogue_releases_and_a_source() -> None:
    catalogue = default_catalogue()
    for row in paths():
        product = catalogue.product(row.product)
        assert product is not None, row.product
        names = [c.name for c in product.cycles]
        for start in row.starts:
            assert any(row.covers(n) for n in names if n == start or start.endswith("*")), (row.product, start)
        for step in [*row.via, *([row.to] if row.to else [])]:
            slug, cycle = split_cycle(step, row.product)
            owner = catalogue.product(slug)
            assert owner is not None and owner.cycle(cycle) is not None, (row.product, step)
        assert len(row.source) > 20 and (row.to or row.text), row


def test_every_row_cites_its_document_on_one_line_with_its_own_words() -> None:
    """UPGRADE-SOURCES.md says where each quote was read; here: each row names a URL and quotes the page."""
    rows = tomllib.loads(PATHS_FILE.read_text(encoding="utf-8"))
    entries = [*rows.get("path", []), *rows.get("none", [])]
    assert len(entries) == len(paths())
    for entry in entries:
        source, quote = entry["source"], entry.get("quote", "")
        assert "https://" in source and "\n" not in source, source
        assert quote and "\n" not in quote and len(quote) <= 200, entry


def test_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "upgrade_paths.toml"
    table.write_text('[[none]]\nproduct = "python"\nfrom = ["2.7"]\nwhy = "w"\nsource = "s"\nqoute = "q"\n', "utf-8")
    with pytest.raises(ValueError, match="unknown key 'qoute'"):
        paths(table)


def test_verdicts() -> None:
    catalogue = default_catalogue()

    def said(product: str, cycle: str | None) -> tuple[bool, str]:
        verdict = in_place(product, cycle, DAY, catalogue)
        return verdict.upgrade, verdict.text

    assert said("windows-server", "2003-sp2")[0] is False  # the issue: "Upgrade £1,200" offered for 2003
    assert said("windows-server", "2008-r2-sp1") == (True, "in place to Microsoft Windows Server 2025 via Microsoft "
        "Windows Server 2012 R2, from Standard, Enterprise or Web Server (to 2012 R2 Standard or Datacenter) or "
        "Datacenter (to Datacenter only), in the same language; roles that cannot upgrade in place are "
        "migrated")  # fmt: skip
    upgrade, text = said("windows", "7-sp1")  # the path existed; its target is now past free support
    assert not upgrade and text.startswith("its in-place upgrade leads to Microsoft Windows 10 22H2, itself on paid")
    # Windows 11 takes Windows 10 from version 2004 on, an Enterprise edition to Enterprise ('Windows 11 requirements')
    assert said("windows", "10-1909-e") == (False, "no in-place upgrade path known for this release")
    enterprise, home = (in_place("windows", cycle, DAY, catalogue) for cycle in ("10-21h2-e", "10-22h2"))
    assert "Windows 11 25H2 (E)" in enterprise.text and "Windows 11 25H2 (W)" in home.text
    assert said("windows", "5-sp3")[0] is False and said("python", "2.7")[0] is False
    assert said("centos", "7")[0] is True and said("dotnetfx", "4.0")[0] is True
    assert said("cisco-ios", "12.2") == (False, "no in-place upgrade path known for this release")
    assert said("windows-server", None) == (False, "release not known exactly: no in-place path can be stated")
