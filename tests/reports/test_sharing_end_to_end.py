"""Issue 17 end to end: twelve synthetic councils (generated nmap XML, signed agent bundles, hostile asset
registers: tests/reports/councils.py) each write a signed summary; an aggregator pools them with their keys
trusted. The pooled outputs name no council's machines, add the councils' ranges up exactly, publish only
rows five or more councils share, and give nothing away when one council's file is left out and the two
pooled tables are subtracted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rules.catalogue import default_catalogue
from tests.conftest import new_store, run_posture
from tests.reports.councils import Council, build_councils
from tests.reports.test_pool import row_key

Key = tuple[Any, ...]


@pytest.fixture(scope="module")
def shared(request: pytest.FixtureRequest, store_kind: str,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Council], list[Path], Path]:  # fmt: skip
    """The councils, their signed summaries (each with its .sig) and a file of their trusted keys."""
    root = tmp_path_factory.mktemp("sector")
    councils = build_councils(root / "councils", store=lambda folder: new_store(request, store_kind, folder))
    files, lines = [], []
    for n, council in enumerate(councils):
        out = root / "inbox" / f"summary-{n:02d}.json"
        out.parent.mkdir(exist_ok=True)
        made = run_posture("--config", str(council.config), "share", "summary", "--out", str(out), "--sign",
                           db=council.db, env=council.env)  # fmt: skip
        assert made.returncode == 0, made.stderr
        files.append(out)
        lines.append((council.folder / "home" / "config" / "posture" / "keys" / "signing.pub").read_text())
    trusted = root / "trusted.txt"
    trusted.write_text("# the sector's councils\n" + "".join(lines), encoding="utf-8")
    return councils, files, trusted


def _pool(files: list[Path], trusted: Path, out: Path) -> dict[str, Any]:
    done = run_posture("share", "aggregate", *map(str, files), "--out", str(out), "--trusted", str(trusted))
    assert done.returncode == 0, done.stderr
    pooled: dict[str, Any] = json.loads((out / "pooled.json").read_text(encoding="utf-8"))
    return pooled


def test_pooled_rows_add_up_and_name_no_machine(shared: tuple[list[Council], list[Path], Path],
                                                tmp_path: Path) -> None:  # fmt: skip
    councils, files, trusted = shared
    pooled = _pool(files, trusted, tmp_path / "pooled")
    assert pooled["rows"], "twelve councils share Windows 7 and CentOS 7: something must be published"
    ranges: dict[Key, list[int]] = {}
    for path in files:
        for row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            low_high_orgs = ranges.setdefault(row_key(row), [0, 0, 0])
            low_high_orgs[0] += row["count_min"]
            low_high_orgs[1] += row["count_max"]
            low_high_orgs[2] += 1
    for row in pooled["rows"]:
        low, high, orgs = ranges[row_key(row)]
        assert (row["count_min"], row["count_max"], row["organisations"]) == (low, high, orgs), row
        assert orgs >= 5 and low >= 10  # the default thresholds
    page = (tmp_path / "pooled" / "opportunities.html").read_text(encoding="utf-8")
    needs = page.split("Largest needs", 1)[1].split("<h2", 1)[0]
    assert "support ends" in needs and "not known" not in needs and "no end date" not in needs  # needs end
    unknown = [r for r in pooled["rows"] if r["due_date"] is None and "unknown" in r["lifecycle_states"]]
    assert unknown and "dates not known: ask the vendor" in page  # never "no end date announced" for these
    published = {row_key(r) for r in pooled["rows"]}
    assert published == {k for k, (low, _, orgs) in ranges.items() if orgs >= 5 and low >= 10}
    outputs = b"".join(p.read_bytes() for p in (tmp_path / "pooled").iterdir())
    catalogue = default_catalogue()  # a release's name is the aggregator's catalogue's, even where a device
    named = {r[field] for r in pooled["rows"] for field in ("label", "release")  # calls itself alike
             if catalogue.product(r["product"]) is not None}  # fmt: skip
    assert sum(len(c.identifying) for c in councils) > 500  # addresses, names, MACs, owners, sites, serials
    for council in councils:
        for text in council.identifying:
            if not any(text in name for name in named):  # "Microsoft Windows XP" is no council's secret
                assert text.encode() not in outputs, (council.name, text)


def test_leaving_one_council_out_reveals_only_its_own_ranges(shared: tuple[list[Council], list[Path], Path],
                                                             tmp_path: Path) -> None:  # fmt: skip
    """The subtraction attack, for every council: pool all, pool all but one, subtract. Each row published in
    both differs by exactly that council's own range for it (what its file already said, never narrower), and
    a row hidden in either table contributes to no figure of that table."""
    _, files, trusted = shared
    everyone = _pool(files, trusted, tmp_path / "all")
    rows_all = {row_key(r): r for r in everyone["rows"]}
    for n, left_out in enumerate(files):
        others = _pool([f for f in files if f != left_out], trusted, tmp_path / f"without-{n:02d}")
        own = {row_key(r): r for r in json.loads(left_out.read_text(encoding="utf-8"))["rows"]}
        for key, row in {row_key(r): r for r in others["rows"]}.items():
            assert key in rows_all  # adding a council never hides a row
            whole = rows_all[key]
            difference = (whole["count_min"] - row["count_min"], whole["count_max"] - row["count_max"])
            mine = own.get(key)
            assert difference == ((mine["count_min"], mine["count_max"]) if mine else (0, 0)), key
        for table in (everyone, others):  # totals are sums of the published rows and nothing else
            for total in table["totals"]:
                rows = [r for r in table["rows"] if r["due_financial_year"] == total["financial_year"]]
                assert (total["count_min"], total["count_max"]) == (sum(r["count_min"] for r in rows),
                                                                    sum(r["count_max"] for r in rows))


def test_a_tampered_or_unsigned_summary_is_refused(shared: tuple[list[Council], list[Path], Path],
                                                   tmp_path: Path) -> None:  # fmt: skip
    _, files, trusted = shared
    copies = []
    for path in files:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        shutil.copy(path.with_name(path.name + ".sig"), copy.with_name(copy.name + ".sig"))
        copies.append(copy)
    copies[3].write_bytes(copies[3].read_bytes().replace(b'"count_max": 9', b'"count_max": 8', 1))
    tampered = run_posture("share", "aggregate", *map(str, copies), "--out", str(tmp_path / "o1"),
                           "--trusted", str(trusted))  # fmt: skip
    assert tampered.returncode == 2 and "tampered" in tampered.stderr and copies[3].name in tampered.stderr
    assert not (tmp_path / "o1" / "pooled.json").exists()
    shutil.copy(files[3], copies[3])
    copies[5].with_name(copies[5].name + ".sig").unlink()
    unsigned = run_posture("share", "aggregate", *map(str, copies), "--out", str(tmp_path / "o2"),
                           "--trusted", str(trusted))  # fmt: skip
    assert unsigned.returncode == 2 and "unsigned" in unsigned.stderr, unsigned.stderr
