"""Bad input: each case gives one clear line on stderr, the documented exit code, and loses nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.lab import Lab
from tests.conftest import db_fingerprint, no_inventory, query, run_posture

INVENTORY_TABLES = ("assets", "asset_identifiers", "observations", "services", "software")


def inventory_fingerprint(db: Path | str) -> list[tuple[object, ...]]:
    """Every row of the inventory tables (not `scans`, where a failed import rightly leaves its row)."""
    rows: list[tuple[object, ...]] = []
    for table in INVENTORY_TABLES:
        rows += sorted(((table, *r) for r in query(db, f"SELECT * FROM {table}")), key=repr)
    return rows


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("posture: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def real_xml(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nmap XML written by a real nmap run against the lab."""
    path = tmp_path_factory.mktemp("xml") / "lab.xml"
    subprocess.run(
        ["nmap", "-n", "-sT", "-sV", "-p", lab.ports_spec, "-oX", str(path), *lab.targets],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path


def _seed(db: Path | str, real_xml: Path) -> Path | str:
    assert run_posture("import", "nmap", str(real_xml), db=db).returncode == 0
    assert query(db, "SELECT count(*) FROM assets") == [(3,)]
    return db


@pytest.fixture
def seeded_db(real_xml: Path, store_db: Path | str) -> Path | str:
    return _seed(store_db, real_xml)


def test_missing_file(seeded_db: Path | str) -> None:
    before = db_fingerprint(seeded_db)
    result = run_posture("import", "nmap", "/nonexistent/scan.xml", db=seeded_db)
    assert_one_error_line(result, 2, "no such file", "/nonexistent/scan.xml")
    assert db_fingerprint(seeded_db) == before


def test_a_missing_file_makes_no_inventory(real_xml: Path, store_db: Path | str) -> None:
    """A mistyped path is refused before the inventory is opened: none is made, and a list with one missing
    file imports none of the others either."""
    for argv in (("nmap", str(real_xml), "/nonexistent/scan.xml"), ("assets", "/nonexistent/register.csv")):
        assert_one_error_line(run_posture("import", *argv, db=store_db), 2, "no such file", argv[-1])
        assert no_inventory(store_db)


def test_truncated_xml_changes_nothing(seeded_db: Path | str, real_xml: Path, tmp_path: Path) -> None:
    """Cut inside the first host: no complete host to keep, so nothing changes (a file cut after complete
    hosts keeps them: tests/scanner/test_nmap_old_and_damaged.py)."""
    data = real_xml.read_bytes()
    truncated = tmp_path / "truncated.xml"
    truncated.write_bytes(data[: data.index(b"</host>")])
    before = inventory_fingerprint(seeded_db)
    result = run_posture("import", "nmap", str(truncated), db=seeded_db)
    assert_one_error_line(result, 2, "not well-formed", "line")
    assert inventory_fingerprint(seeded_db) == before
    status = query(seeded_db, "SELECT status, error FROM scans ORDER BY id DESC LIMIT 1")[0]
    assert status[0] == "failed" and "not well-formed" in str(status[1])


def test_external_entity_is_refused(seeded_db: Path | str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xxe = tmp_path / "xxe.xml"
    xxe.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE nmaprun [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
        '<nmaprun scanner="nmap" args="nmap" start="1700000000" version="7.93">'
        '<host><status state="up"/><address addr="127.0.0.99" addrtype="ipv4"/>'
        '<hostnames><hostname name="&xxe;" type="PTR"/></hostnames></host></nmaprun>\n'
    )
    before = inventory_fingerprint(seeded_db)
    result = run_posture("import", "nmap", str(xxe), db=seeded_db)
    assert_one_error_line(result, 2, "refused")
    assert inventory_fingerprint(seeded_db) == before
    assert "TOP-SECRET" not in repr(inventory_fingerprint(seeded_db) + query(seeded_db, "SELECT * FROM scans"))


def test_billion_laughs_is_refused_quickly(seeded_db: Path | str, tmp_path: Path) -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE nmaprun [{entities}]>\n'
        '<nmaprun scanner="nmap"><host><status state="up"/><address addr="127.0.0.98" addrtype="ipv4"/>'
        '<hostnames><hostname name="&lol9;"/></hostnames></host></nmaprun>\n'
    )
    before = inventory_fingerprint(seeded_db)
    started = time.monotonic()
    result = run_posture("import", "nmap", str(bomb), db=seeded_db, timeout=60)
    assert_one_error_line(result, 2, "refused")
    assert time.monotonic() - started < 60
    assert inventory_fingerprint(seeded_db) == before


def test_not_nmap_xml(seeded_db: Path | str, tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?><inventory><host/></inventory>")
    assert_one_error_line(run_posture("import", "nmap", str(other), db=seeded_db), 2, "not nmap XML")


def test_csv_without_address_or_hostname_column(seeded_db: Path | str, tmp_path: Path) -> None:
    register = tmp_path / "register.csv"
    register.write_text("Owner,Business Service,Site\nRevenues,Council Tax,Town Hall\n")
    before = db_fingerprint(seeded_db)
    result = run_posture("import", "assets", str(register), db=seeded_db)
    assert_one_error_line(result, 2, "no address or hostname column", "'Owner'")
    assert db_fingerprint(seeded_db) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["10.0.0.1;rm -rf /"],
        ["--", "--script=http-enum"],
        ["127.0.0.1 -sV --script=vuln"],
        ["--", "-iL/etc/passwd"],
    ],
)
def test_smuggled_targets_are_refused_before_anything_runs(seeded_db: Path | str, argv: list[str]) -> None:
    before = db_fingerprint(seeded_db)
    result = run_posture("scan", *argv, db=seeded_db)
    assert_one_error_line(result, 2, "invalid target")
    assert db_fingerprint(seeded_db) == before  # not even a scan row: nothing was started


def test_option_smuggled_without_separator_is_a_usage_error(seeded_db: Path | str) -> None:
    result = run_posture("scan", "--script=http-enum", db=seeded_db)
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_target_outside_scope_is_refused(seeded_db: Path | str) -> None:
    before = db_fingerprint(seeded_db)
    result = run_posture("scan", "127.0.1.7", "--scope", "127.0.0.0/24", db=seeded_db)
    assert_one_error_line(result, 2, "outside the scope")
    assert db_fingerprint(seeded_db) == before


def test_scope_from_config_file(seeded_db: Path | str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[scan]\nscope = ["127.0.0.0/24"]\n')
    result = run_posture("--config", str(config), "scan", "127.0.1.7", db=seeded_db)
    assert_one_error_line(result, 2, "outside the scope", "127.0.0.0/24")
    config.write_text("[scan\nscope = ")
    assert_one_error_line(run_posture("--config", str(config), "scan", "127.0.0.7", db=seeded_db), 2, "not valid TOML")


@pytest.fixture
def empty_netns() -> Iterator[str]:
    """A network namespace with no interface up and no route: every network in it is unreachable."""
    name = f"posture-empty-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_unreachable_network(seeded_db: Path | str, empty_netns: str) -> None:
    before = inventory_fingerprint(seeded_db)
    # 10.99.0.0/24 exists only as an idea inside a namespace with no route out: no packet leaves the machine.
    result = run_posture("scan", "10.99.0.5", "-p", "22", "--no-dns", db=seeded_db, netns=empty_netns)
    assert_one_error_line(result, 3, "no host answered")
    assert inventory_fingerprint(seeded_db) == before
    assert query(seeded_db, "SELECT status, hosts_up FROM scans ORDER BY id DESC LIMIT 1") == [("complete", 0)]


def test_unresolvable_hostname(seeded_db: Path | str, empty_netns: str) -> None:
    """Resolved inside a namespace with no route, so the lookup fails here and no query leaves the machine."""
    before = db_fingerprint(seeded_db)
    result = run_posture("scan", "no-such-host.invalid", db=seeded_db, netns=empty_netns)
    assert_one_error_line(result, 2, "cannot resolve hostname 'no-such-host.invalid'")
    assert db_fingerprint(seeded_db) == before


def test_nmap_not_installed(seeded_db: Path | str) -> None:
    before = db_fingerprint(seeded_db)
    result = run_posture("scan", "127.0.0.1", db=seeded_db, env={"PATH": str(Path(sys.executable).parent)})
    assert_one_error_line(result, 2, "nmap is not installed", "apt-get install nmap")
    assert db_fingerprint(seeded_db) == before


def test_database_that_is_not_sqlite(tmp_path: Path) -> None:
    bogus = tmp_path / "inventory.db"
    content = b"this is a spreadsheet, not a database\n" * 100
    bogus.write_bytes(content)
    register = tmp_path / "register.csv"
    register.write_text("address\n10.0.0.1\n", encoding="utf-8")
    for argv in (["scan", "127.0.0.1"], ["assets"], ["import", "assets", str(register)]):
        assert_one_error_line(run_posture(*argv, db=bogus), 2, "not an SQLite database")
    assert bogus.read_bytes() == content


@pytest.fixture
def read_only_db(real_xml: Path, tmp_path: Path) -> Iterator[Path]:
    """A real inventory on a filesystem mounted read-only (root ignores file modes, not mount flags): an
    SQLite file's case, so this one stays on SQLite."""
    seeded = _seed(tmp_path / "inventory.db", real_xml)
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        shutil.copy(seeded, mount / "inventory.db")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "inventory.db"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_read_only_database(read_only_db: Path, real_xml: Path) -> None:
    before = read_only_db.read_bytes()
    assert_one_error_line(run_posture("import", "nmap", str(real_xml), db=read_only_db), 2, "read-only")
    assert_one_error_line(run_posture("scan", "127.0.0.1", "-p", "22", db=read_only_db), 2, "read-only")
    listing = run_posture("assets", "--format", "json", db=read_only_db)  # reading still works
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count('"id"') == 3
    assert read_only_db.read_bytes() == before


def test_views_of_a_missing_database(tmp_path: Path) -> None:
    result = run_posture("assets", db=tmp_path / "absent.db")
    assert_one_error_line(result, 2, "no inventory at")
    assert not (tmp_path / "absent.db").exists()
