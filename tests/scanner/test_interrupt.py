"""A scan killed at any moment leaves a consistent database; earlier scans stay intact; --resume finishes it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import POSTURE, assert_intact, query, run_posture

# Eight loopback addresses (each answers), two per chunk, one chunk at a time, 200 ports at 100 packets/s:
# every chunk takes a few seconds, so there is time to strike between chunks and inside one.
SLOW_SCAN = ["--chunk-size", "2", "--parallel", "1", "--ports", "1-200", "--max-rate", "100",
             "--no-version-detection", "--no-os-detection", "--unprivileged", "--no-dns"]  # fmt: skip


def start_scan(db: Path | str, targets: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    with (tmp_path / "scan.log").open("wb") as log:
        return subprocess.Popen([POSTURE, "--db", str(db), "scan", targets, *SLOW_SCAN], stdout=log, stderr=log)


def wait_for_chunks(
    db: Path | str, scan_id: int, count: int, proc: subprocess.Popen[bytes], limit: float = 120
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the scan ended before it could be interrupted"
        try:
            done = query(db, "SELECT count(*) FROM scan_chunks WHERE scan_id = ? AND status = 'done'", scan_id)
        except Exception:  # the schema may not exist yet in the first instants
            done = [(0,)]
        if done[0][0] >= count:
            return
        time.sleep(0.1)
    pytest.fail(f"{count} chunk(s) were not saved within {limit}s")


def assert_consistent(db: Path | str, scan_id: int) -> None:
    assert_intact(db)
    # Only whole chunks: every observation of this scan belongs to a chunk marked done, and vice versa.
    done_up = query(
        db, "SELECT coalesce(sum(hosts_up), 0) FROM scan_chunks WHERE scan_id = ? AND status = 'done'", scan_id
    )
    observed = query(db, "SELECT count(*) FROM observations WHERE scan_id = ?", scan_id)
    assert done_up == observed
    counted = query(db, "SELECT hosts_up FROM scans WHERE id = ?", scan_id)
    assert counted == observed


@pytest.fixture
def db_with_history(store_db: Path | str) -> tuple[Path | str, list[tuple[object, ...]]]:
    """An inventory holding one finished scan, whose rows must survive whatever happens next."""
    db = store_db
    assert run_posture("scan", "127.0.4.1", "--ports", "22", "--unprivileged", "--no-dns", db=db).returncode == 0
    return db, history(db)


def history(db: Path | str) -> list[tuple[object, ...]]:
    """The first scan's own rows: they must read the same after anything later scans go through."""
    return query(db, "SELECT * FROM observations WHERE scan_id = 1") + query(db, "SELECT * FROM scans WHERE id = 1")


@pytest.mark.lab
def test_sigkill_mid_scan_then_resume(
    db_with_history: tuple[Path | str, list[tuple[object, ...]]],
    tmp_path: Path,
) -> None:
    db, earlier = db_with_history
    proc = start_scan(db, "127.0.2.1-8", tmp_path)
    wait_for_chunks(db, 2, 1, proc)
    time.sleep(0.7)  # strike inside the next chunk, not on its boundary
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    assert_consistent(db, 2)
    done = query(db, "SELECT count(*) FROM scan_chunks WHERE scan_id = 2 AND status = 'done'")[0][0]
    assert 1 <= done < 4
    assert query(db, "SELECT status FROM scans WHERE id = 2") == [("running",)]  # nobody could say otherwise yet
    listing = run_posture("scans", "--format", "json", db=db)
    assert '"status": "interrupted"' in listing.stdout  # the next command notices the dead process
    assert history(db) == earlier

    resumed = run_posture("scan", "--resume", db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert query(db, "SELECT status, hosts_done, hosts_up FROM scans WHERE id = 2") == [("complete", 8, 8)]
    addresses = [r[0] for r in query(db, "SELECT address FROM observations WHERE scan_id = 2 ORDER BY address")]
    assert addresses == [f"127.0.2.{i}" for i in range(1, 9)]  # each address once: no chunk scanned twice
    assert_consistent(db, 2)


@pytest.mark.lab
def test_sigterm_mid_scan_marks_it_interrupted(
    db_with_history: tuple[Path | str, list[tuple[object, ...]]], tmp_path: Path
) -> None:
    db, earlier = db_with_history
    proc = start_scan(db, "127.0.3.1-8", tmp_path)
    wait_for_chunks(db, 2, 1, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    output = (tmp_path / "scan.log").read_text()
    assert "interrupted" in output and "--resume 2" in output
    assert query(db, "SELECT status FROM scans WHERE id = 2") == [("interrupted",)]
    assert_consistent(db, 2)
    assert history(db) == earlier
    # The scan's nmap was stopped with it, not left running on its own.
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", "nmap.*127.0.3."], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
    # Running a new scan afterwards works and leaves the interrupted one as it was.
    again = run_posture("scan", "127.0.3.1", "--ports", "22", "--unprivileged", "--no-dns", db=db)
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT status FROM scans WHERE id = 2") == [("interrupted",)]
