"""No silent empty database (issue 15 item 7): a command that reads the inventory refuses a path that does not
exist, with one line naming it and the fix, and creates nothing. `posture --db typo.db evaluate --fail-on high`
used to make an empty typo.db and exit 0, so a cron or CI gate passed on a typo.

Only the commands that fill an inventory make one (scan, snmp, import, demo, run); the ones that need no
inventory (credentials, keys, config, catalogue, rules, fingerprints, schedule) make none either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_posture

READERS = [
    ("evaluate", "--fail-on", "high"),
    ("findings",),
    ("accept", "F-1", "--until", "2099-01-01", "--reason", "replacement ordered"),
    ("report", "--html", "{tmp}/report.html"),
    ("plan", "remediation"),
    ("plan", "decommission"),
    ("plan", "procurement"),
    ("export", "assets"),
    ("export", "findings", "--format", "json"),
    ("assets",),
    ("scans",),
    ("diff",),
    ("prune", "--keep", "1"),
    ("scan", "--resume"),  # nothing to resume in an inventory that is not there
    ("snmp", "--resume"),
]
NO_INVENTORY = [
    ("creds", "list"),
    ("keys", "list"),
    ("config", "check"),
    ("catalogue", "show", "rhel"),
    ("rules", "list"),
    ("fingerprints", "lint"),
    ("schedule", "install", "--dir", "{tmp}"),
]


def default_db() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "posture" / "inventory.db"


def argv(command: tuple[str, ...], tmp_path: Path) -> list[str]:
    return [part.replace("{tmp}", str(tmp_path)) for part in command]


def created(tmp_path: Path) -> list[Path]:
    """Every file a command left behind: in the test's folder and in posture's data folder."""
    data = Path(os.environ["XDG_DATA_HOME"])
    return sorted(p for folder in (tmp_path, data) if folder.exists() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_mistyped_db_is_refused_and_not_created(command: tuple[str, ...], tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    result = run_posture(*argv(command, tmp_path), db=typo)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"posture: error: no inventory at {typo} (give --db the file that `posture scan`, `posture import` or "
        f"`posture demo` wrote; the demo's is {default_db().with_name('demo.db')})"]  # fmt: skip
    assert created(tmp_path) == []


@pytest.mark.parametrize("command", [("evaluate", "--fail-on", "high"), ("report", "--html", "{tmp}/r.html"),
                                     ("findings",), ("assets",)], ids=" ".join)  # fmt: skip
def test_the_default_inventory_is_refused_when_there_is_none(command: tuple[str, ...], tmp_path: Path) -> None:
    """Following the README after `posture demo` without --db: no "report written (0 assets ...)", exit 0."""
    result = run_posture(*argv(command, tmp_path))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"posture: error: no inventory at {default_db()}, the default: nothing was scanned")
    assert "`posture scan` or `posture import` first, or give --db" in line and "demo.db" in line
    assert created(tmp_path) == []


def test_posture_db_variable_is_held_to_the_same_rule(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    result = run_posture("evaluate", env={"POSTURE_DB": str(typo)})
    assert result.returncode == 2 and f"no inventory at {typo} (give --db" in result.stderr
    assert not typo.exists()


@pytest.mark.parametrize("command", NO_INVENTORY, ids=" ".join)
def test_commands_without_an_inventory_make_none(command: tuple[str, ...], tmp_path: Path) -> None:
    given = tmp_path / "given.db"
    for db in (given, None):
        result = run_posture(*argv(command, tmp_path), db=db)
        assert result.returncode == 0, result.stderr
    assert not given.exists() and not default_db().exists()


def test_filling_commands_make_the_inventory(tmp_path: Path) -> None:
    """An import makes it; then every reader opens it (the refusal is about a missing file, nothing else)."""
    register = tmp_path / "register.csv"
    register.write_text("address,owner\n10.6.0.10,Finance\n", encoding="utf-8")
    db = tmp_path / "new.db"
    assert run_posture("import", "assets", str(register), db=db).returncode == 0 and db.exists()
    for command in (("assets",), ("scans",), ("evaluate",), ("findings",)):
        result = run_posture(*command, db=db)
        assert result.returncode == 0, (command, result.stderr)
