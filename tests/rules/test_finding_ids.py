"""Finding ids people can type (issue 16 item 4): different first characters per asset, unique prefixes
accepted, ambiguous ones refused, and an inventory numbered the old way renumbered with its history."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

from rules.engine import format_id
from rules.findings import finding_number, parse_id
from scanner.store import Store
from tests.conftest import execute, query, run_posture
from tests.rules.estate import RDP, SMB1, WINDOWS_2008, Host, write_estate

HOSTS = [Host(f"10.9.1.{n}", f"00:11:22:00:19:{n:02x}", [RDP, SMB1], WINDOWS_2008) for n in range(1, 5)]


def estate(db: Path | str, tmp_path: Path) -> Path | str:
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "scan.xml", HOSTS)), db=db).returncode == 0
    assert run_posture("evaluate", db=db).returncode == 0
    return db


def findings(db: Path | str) -> list[dict[str, object]]:
    result = run_posture("findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_one_rule_on_several_assets_differs_at_the_start(store_db: Path | str, tmp_path: Path) -> None:
    eol = [str(f["id"]) for f in findings(estate(store_db, tmp_path)) if f["rule_id"] == "protect.eol-os"]
    assert len(eol) == 4 and len({i[:6] for i in eol}) == 4  # "F-" and four hex digits already tell them apart
    assert all(len(i) >= 12 for i in eol)


def test_accept_takes_a_unique_prefix_and_refuses_an_ambiguous_one(store_db: Path | str, tmp_path: Path) -> None:
    db = estate(store_db, tmp_path)
    target = next(str(f["id"]) for f in findings(db) if f["rule_id"] == "protect.eol-os")
    result = run_posture("accept", target[:10], "--until", "2027-06-30", "--reason", "PO 4411", db=db)
    assert result.returncode == 0, result.stderr
    assert target in result.stdout
    assert [r[0] for r in query(db, "SELECT target FROM exceptions")] == [target]
    # A second finding whose number shares the first one's digest (on another asset): constructed,
    # since a 30-bit clash between two real findings is too rare to meet in a test.
    number = parse_id(target)
    assert number is not None
    execute(db, "INSERT INTO findings (id, rule_id, asset_id, subject, status, first_seen, opened_at, last_seen, "
            "evaluation_id, details_id) SELECT ?, rule_id, NULL, subject, 'open', first_seen, opened_at, "
            "last_seen, evaluation_id, details_id FROM findings WHERE id = ?",
            (0xFFFF << 32) | (number & 0xFFFFFFFF), number)  # fmt: skip
    ambiguous = run_posture("accept", target[:10], "--until", "2027-06-30", "--reason", "PO 4411", db=db)
    assert ambiguous.returncode == 2 and "is ambiguous" in ambiguous.stderr and target in ambiguous.stderr


def _old_number(rule_id: str, asset_id: int | None, subject: str) -> int:
    """How version 3 and earlier numbered a finding (asset id high, a digest of rule and subject low)."""
    digest = int.from_bytes(hashlib.blake2b(f"{rule_id}\x00{subject}".encode(), digest_size=4).digest(), "big")
    return ((asset_id or 0) << 32) | digest


def _number_the_old_way(db: Path | str) -> dict[str, str]:
    """Rewrite an inventory as stop 13's code left it: old numbers, subjects, events, exceptions, and the
    rules stage at version 3. Returns new id -> old id."""
    rows = query(db, "SELECT id, rule_id, asset_id, subject FROM findings")
    old_of: dict[int, int] = {}
    moved = []
    for new, rule_id, asset_id, subject in sorted(rows, key=lambda r: str(r[3]).startswith("finding:")):
        if str(subject).startswith("finding:"):
            pointed = parse_id(subject.removeprefix("finding:"))
            assert pointed is not None
            subject = f"finding:F-{old_of[pointed]:x}"  # version 3 showed the number as it is
        old_of[new] = _old_number(rule_id, asset_id, subject)
        moved.append((old_of[new], subject, new))
    with Store.open(db) as store, store.transaction() as conn:
        conn.execute("UPDATE findings SET id = -id")
        conn.executemany("UPDATE findings SET id = ?, subject = ? WHERE id = -?", moved)
        conn.execute("UPDATE finding_events SET finding_id = -finding_id")
        conn.executemany("UPDATE finding_events SET finding_id = ? WHERE finding_id = -?",
                         [(old, new) for new, old in old_of.items()])  # fmt: skip
        for (target,) in conn.execute("SELECT target FROM exceptions").fetchall():
            number = parse_id(target)
            if number is not None:
                conn.execute("UPDATE exceptions SET target = ? WHERE target = ?", [f"F-{old_of[number]:x}", target])
        conn.execute("UPDATE schema_stages SET version = 3 WHERE stage = 'rules'")
    return {format_id(new): f"F-{old:x}" for new, old in old_of.items()}


def test_an_inventory_numbered_the_old_way_is_renumbered_with_its_history(store_db: Path | str,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    db = estate(store_db, tmp_path)
    later = (date.today() + timedelta(days=60)).isoformat()
    assert run_posture("evaluate", "--on", later, db=db).returncode == 0  # findings past their SLA appear
    before = {str(f["id"]): f for f in findings(db)}
    assert any(f["rule_id"] == "respond.past-sla" for f in before.values())
    accepted = next(i for i, f in before.items() if f["rule_id"] == "protect.smbv1")
    result = run_posture("accept", accepted, "--until", "2999-01-01", "--reason", "isolated", db=db)
    assert result.returncode == 0, result.stderr
    old = _number_the_old_way(db)
    assert old[accepted] != accepted
    assert run_posture("evaluate", "--on", later, db=db).returncode == 0  # migrates, then evaluates
    after = {str(f["id"]): f for f in findings(db)}
    assert set(after) == set(before)  # the same ids as before the round trip: nothing lost, nothing new
    changed = [(i, before[i]["status"], after[i]["status"], before[i]["first_seen"], after[i]["first_seen"])
               for i in after if after[i]["status"] == "new" or after[i]["first_seen"] != before[i]["first_seen"]]
    assert changed == []
    assert after[accepted]["accepted"] is True
    for f in after.values():
        number = parse_id(str(f["id"]))
        assert number == finding_number(str(f["rule_id"]), f["asset_id"], str(f["subject"]))  # type: ignore[arg-type]
