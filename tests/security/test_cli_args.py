"""Hostile command-line arguments (issue 11, "CLI"): each is one `posture: error:` line and exit 2.

The inventory is real: nmap XML (tests/rules/estate.py) imported with `posture import nmap`, then
`posture evaluate`, so there are scans and findings to aim at. Every attack runs the installed `posture`.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.conftest import copy_store, db_fingerprint, new_store, query, run_posture
from tests.rules.estate import SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate

FUTURE = (date.today() + timedelta(days=30)).isoformat()
TWENTY_DIGITS = "9" * 20


@pytest.fixture(scope="module")
def estate_db(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    """Built once per module (on each store), in its own XDG folders."""
    home = tmp_path_factory.mktemp("estate")
    env = {f"XDG_{k}_HOME": str(home / k.lower()) for k in ("DATA", "CONFIG", "STATE")}
    db = new_store(request, store_kind, home)
    hosts = [Host("10.8.0.1", "00:11:22:33:08:01", [TELNET, SSH_DEBIAN], WINDOWS_2008, "server")]
    assert run_posture("import", "nmap", str(write_estate(home / "estate.xml", hosts)), db=db, env=env).returncode == 0
    assert run_posture("evaluate", db=db, env=env).returncode == 0
    return db


@pytest.fixture
def db(request: pytest.FixtureRequest, estate_db: Path | str, tmp_path: Path) -> Path | str:
    return copy_store(request, estate_db, tmp_path)


ATTACKS = [
    # (argv, words of the error line); "{tmp}" is this test's folder
    (["accept", "F-" + "1" * 17, "--until", FUTURE, "--reason", "r"], ["is not a finding id"]),
    (["accept", "F-" + "a" * 18, "--until", FUTURE, "--reason", "r"], ["is not a finding id"]),
    (["accept", "F-ffffffffffffffff", "--until", FUTURE, "--reason", "r"], ["is not a finding id"]),
    (["accept", "F-0x2d617618b", "--until", FUTURE, "--reason", "r"], ["is not a finding id"]),
    (["accept", "F-2D6176180000000B", "--until", FUTURE, "--reason", "r"],
     ["'F-2d6176180000000b' is neither a finding id"]),
    (["accept", "protect.telnet", "--until", "9999-12-31", "--reason", "r"], ["out of range"]),
    (["diff", TWENTY_DIGITS, "1"], ["[SCAN_A SCAN_B]", "not in the range"]),
    (["diff", "0", "1"], ["not in the range"]),
    (["scans", "--devices", TWENTY_DIGITS], ["--devices", "not in the range"]),
    (["scans", "--limit", TWENTY_DIGITS], ["--limit", "not in the range"]),
    (["scans", "--limit", "1" * 5000], ["--limit", "not a valid whole number"]),
    (["scan", "--resume", TWENTY_DIGITS], ["--resume", "not in the range"]),
    (["prune", "--older-than", "99999999999"], ["--older-than", "not in the range"]),
    (["prune", "--keep", TWENTY_DIGITS], ["--keep", "not in the range"]),
    (["report", "--on", "0001-01-01", "--html", "{tmp}/report.html"], ["0001-01-01 is out of range"]),
    (["evaluate", "--on", "0001-01-01"], ["0001-01-01 is out of range"]),
]


@pytest.mark.parametrize(("argv", "words"), ATTACKS, ids=[" ".join(a[:3])[:40] for a, _ in ATTACKS])
def test_hostile_arguments_are_one_line_and_exit_2(db: Path | str, tmp_path: Path, argv: list[str],
                                                   words: list[str]) -> None:  # fmt: skip
    """Issue 11, CLI: "`accept F-` + 17-18 hex digits, `diff 99999999999999999999 1`, `scans
    --devices|--limit`, `scan --resume` with 20 digits, `prune --older-than 99999999999`, `report --on
    0001-01-01`: tracebacks. `accept F-2D617618B` (upper case) or `F-0x...` prints "accepted" but nothing is
    accepted." Each is refused in one line, with exit 2, and the inventory is left as it was."""
    before = db_fingerprint(db)
    result = run_posture(*(a.replace("{tmp}", str(tmp_path)) for a in argv), db=db, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("posture: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "accepted" not in result.stdout
    assert db_fingerprint(db) == before
    assert not (tmp_path / "report.html").exists()


def test_finding_ids_are_accepted_in_either_case_and_only_as_shown(db: Path | str) -> None:
    """Issue 11, CLI: "`accept F-2D617618B` (upper case) or `F-0x...` prints "accepted" but nothing is
    accepted". Hex digits are case-insensitive, so an upper-case id is the finding: it is accepted and
    `findings` shows it accepted. `F-0x` + the same digits is not an id: refused, nothing recorded."""
    rows = json.loads(run_posture("findings", "--format", "json", db=db).stdout)
    finding = next(f for f in rows if f["rule_id"] == "protect.telnet")
    digits = finding["id"][2:]
    refused = run_posture("accept", "F-0x" + digits, "--until", FUTURE, "--reason", "r", db=db)
    assert refused.returncode == 2 and "is not a finding id" in refused.stderr and "accepted" not in refused.stdout
    assert query(db, "SELECT count(*) FROM exceptions") == [(0,)]
    accepted = run_posture("accept", "F-" + digits.upper(), "--until", FUTURE, "--reason", "replacing it", db=db)
    assert accepted.returncode == 0, accepted.stderr
    assert f"accepted finding {finding['id']} (protect.telnet)" in accepted.stdout
    assert query(db, "SELECT target FROM exceptions") == [(finding["id"],)]
    after = json.loads(run_posture("findings", "--format", "json", db=db).stdout)
    shown = next(f for f in after if f["id"] == finding["id"])
    assert shown["accepted"] is True and shown["accepted_reason"] == "replacing it"
    assert "0 accepted" not in run_posture("evaluate", db=db).stdout  # the evaluation counts it accepted too
