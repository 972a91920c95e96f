"""A large generated nmap file (the benchmark's generator): counts, progress, every CPE, one transaction."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from bench.gen_nmap_xml import write
from tests.conftest import query, run_posture


def test_large_import_reports_progress_and_keeps_everything(tmp_path: Path, store_db: Path | str) -> None:
    xml = tmp_path / "big.xml"
    ports = write(xml, hosts=12_000, ports_per_host=3)
    db = store_db  # an SQLite file, or PostgreSQL with --store=postgresql
    result = run_posture("--progress", "import", "nmap", str(xml), db=db)
    assert result.returncode == 0, result.stderr
    # Not a terminal, asked for: a line per 1,000 hosts (or 2 s), each count larger than the last.
    counts = [int(line.split(": ")[2].split(" ")[0].replace(",", "")) for line in result.stderr.splitlines()
              if line.startswith("posture: big.xml: ")]
    assert len(counts) >= 12 and counts[-1] >= 11_000, result.stderr
    assert all(0 < later - earlier <= 1000 for earlier, later in pairwise([0, *counts])), result.stderr
    assert f"12000 hosts up, 12000 new assets, {ports} open services" in result.stdout
    assert query(db, "SELECT count(*) FROM services") == [(ports,)]
    assert query(db, "SELECT count(DISTINCT value) FROM asset_identifiers WHERE kind = 'mac'") == [(12_000,)]
    # The generator gives OpenSSH two CPEs, as nmap does on Debian: both are kept.
    assert query(db, "SELECT DISTINCT cpes FROM services WHERE port = 22") == [
        ('["cpe:/a:openbsd:openssh:7.4", "cpe:/o:linux:linux_kernel"]',)
    ]
    # Importing it again adds observations to the same assets: identity by MAC.
    again = run_posture("import", "nmap", str(xml), db=db)
    assert again.returncode == 0 and "hosts read" not in again.stderr  # not a terminal, not asked: silent
    assert query(db, "SELECT count(*) FROM assets") == [(12_000,)]
    assert query(db, "SELECT count(*) FROM observations") == [(24_000,)]
