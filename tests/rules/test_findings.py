"""Findings across scans: stable ids, new / open / fixed / reopened, exceptions, SLA, internal errors.

The inventory comes from nmap XML files of a small estate imported with the real `posture import nmap`
(see estate.py); each import stands for one scan. Everything else is the real command line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

import rules.findings
from rules.catalogue import default_catalogue
from rules.engine import SEVERITY_RANK
from rules.identify import identify_service
from scanner.db import is_url
from scanner.store import Store
from tests.conftest import POSTURE, db_fingerprint, no_inventory, query, run_posture
from tests.rules.estate import (
    CISCO_SWITCH,
    MYSQL,
    NGINX,
    RDP,
    SMB1,
    SSH_CISCO,
    SSH_DEBIAN,
    TELNET,
    WINDOWS_2008,
    Host,
    write_estate,
)

SERVER = Host("10.1.0.10", "00:11:22:00:00:10", [RDP, SMB1], WINDOWS_2008)
WEB = Host("10.1.0.11", "00:11:22:00:00:11", [SSH_DEBIAN, NGINX])
SWITCH = Host("10.1.0.12", "00:11:22:00:00:12", [TELNET, SSH_CISCO], CISCO_SWITCH)


def findings(db: Path | str, *args: str) -> list[dict[str, Any]]:
    result = run_posture("findings", "--format", "json", *args, db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def by_rule(rows: list[dict[str, Any]], rule: str, address: str | None = None) -> list[dict[str, Any]]:
    return [f for f in rows if f["rule_id"] == rule and (address is None or f["address"] == address)]


def scan(db: Path | str, tmp_path: Path, name: str, hosts: list[Host]) -> None:
    result = run_posture("import", "nmap", str(write_estate(tmp_path / f"{name}.xml", hosts)), db=db)
    assert result.returncode == 0, result.stderr


def evaluate(db: Path | str, *args: str) -> str:
    result = run_posture("evaluate", *args, db=db)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_findings_follow_the_estate_across_scans(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    scan(db, tmp_path, "one", [SERVER, WEB, SWITCH])
    assert "0 fixed" in evaluate(db)
    first = findings(db)
    # Windows Server 2008 R2 SP1 from the OS fingerprint's CPE: end of life, ESU ended too.
    eol = by_rule(first, "protect.eol-os", SERVER.ip)
    assert len(eol) == 1 and eol[0]["product"] == "windows-server" and eol[0]["cycle"] == "2008-r2-sp1"
    assert eol[0]["lifecycle_state"] == "end-of-life" and eol[0]["eol_date"] == "2020-01-14"
    assert eol[0]["status"] == "new" and eol[0]["id"].startswith("F-")
    for rule in ("protect.smbv1", "protect.rdp", "respond.eol-no-owner", "respond.kev-end-of-life"):
        assert by_rule(first, rule, SERVER.ip), rule
    assert by_rule(first, "protect.telnet", SWITCH.ip)
    assert not by_rule(first, "protect.telnet", SERVER.ip)
    # The Debian 12 web server: its OpenSSH build says Debian 12, so its nginx 1.22.1 is Debian's package.
    assert not [f for f in first if f["address"] == WEB.ip and f["lifecycle_state"] == "end-of-life"]
    required = {"id", "rule_id", "function", "severity", "status", "asset_id", "address", "hostname", "product",
                "version", "cycle", "lifecycle_state", "eol_date", "evidence"}  # fmt: skip
    assert all(required <= set(f) for f in first)

    # Same inventory again: the same ids, now "open".
    evaluate(db)
    second = findings(db)
    assert {f["id"] for f in second} == {f["id"] for f in first}
    assert {f["status"] for f in second} == {"open"}

    # The register gives the server an owner: that finding is fixed; nothing else moves.
    register = tmp_path / "register.csv"
    register.write_text(f"IP address,Owner\n{SERVER.ip},Revenues team\n", encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert "1 fixed" in evaluate(db)
    fixed = findings(db, "--status", "fixed")
    assert [f["rule_id"] for f in fixed] == ["respond.eol-no-owner"]
    assert by_rule(findings(db), "protect.eol-os", SERVER.ip)[0]["owner"] == "Revenues team"

    # Second scan: telnet closed on the switch, MySQL opened on the web server, a new host appeared.
    printer = Host("10.1.0.13", "00:11:22:00:00:13", [SSH_CISCO])
    scan(db, tmp_path, "two", [SERVER, Host(WEB.ip, WEB.mac, [SSH_DEBIAN, NGINX, MYSQL]),
                               Host(SWITCH.ip, SWITCH.mac, [SSH_CISCO], CISCO_SWITCH), printer])  # fmt: skip
    evaluate(db)
    now = findings(db)
    assert not by_rule(now, "protect.telnet")
    new_service = by_rule(now, "detect.new-service", WEB.ip)
    assert len(new_service) == 1 and "3306/tcp" in new_service[0]["evidence"]
    assert [f["address"] for f in by_rule(now, "detect.new-asset")] == [printer.ip]
    telnet_id = by_rule(first, "protect.telnet", SWITCH.ip)[0]["id"]
    assert [f["id"] for f in findings(db, "--status", "fixed", "--rule", "protect.telnet")] == [telnet_id]

    # Telnet back on: the same finding id, reopened.
    scan(db, tmp_path, "three", [SERVER, WEB, SWITCH, printer])
    evaluate(db)
    reopened = by_rule(findings(db), "protect.telnet", SWITCH.ip)
    assert [(f["id"], f["status"], f["times_reopened"]) for f in reopened] == [(telnet_id, "reopened", 1)]

    # Filters.
    assert {f["function"] for f in findings(db, "--function", "detect")} == {"detect"}
    assert {f["severity"] for f in findings(db, "--severity", "critical")} == {"critical"}


@pytest.mark.parametrize("span", [1_000, 1])
def test_an_unchanged_estate_rewrites_no_finding(tmp_path: Path, store_db: Path | str, monkeypatch: pytest.MonkeyPatch,
                                                  span: int) -> None:
    """A finding found again with the same details is left as it is (a daily run over a steady estate writes
    its changes, not every finding); what people read still says it was seen on the newest evaluation's day,
    and how many days its support has left from that day. The previous findings are read a window of asset
    ids at a time: with a window of one asset, each asset's are read (and what is left fixed) on their own
    (in-process only: POSTURE_TESTS_IN_PROCESS=0 runs the default window)."""
    monkeypatch.setattr(rules.findings._OpenBefore, "SPAN", span)
    db = store_db
    scan(db, tmp_path, "one", [SERVER, WEB, SWITCH])
    days = [(date.today() + timedelta(days=n)).isoformat() for n in range(4)]
    evaluate(db, "--on", days[0])
    evaluate(db, "--on", days[1])  # every finding found again: new becomes open
    assert "0 new" in evaluate(db, "--on", days[2])
    assert query(db, "SELECT count(*) FROM findings WHERE evaluation_id = 3") == [(0,)]
    rows = findings(db)
    assert rows and {f["status"] for f in rows} == {"open"}
    assert {f["last_seen"] for f in rows} == {days[2]} and {f["first_seen"] for f in rows} == {days[0]}
    eol = by_rule(rows, "protect.eol-os", SERVER.ip)[0]
    assert eol["days_to_eol"] == (date(2020, 1, 14) - date.fromisoformat(days[2])).days

    # RDP closed on the first asset, telnet on the last: only those findings are written (fixed), and each
    # was last seen on the previous evaluation's day.
    scan(db, tmp_path, "two", [Host(SERVER.ip, SERVER.mac, [SMB1], WINDOWS_2008), WEB,
                               Host(SWITCH.ip, SWITCH.mac, [SSH_CISCO], CISCO_SWITCH)])  # fmt: skip
    assert "2 fixed" in evaluate(db, "--on", days[3])
    written = query(db, "SELECT rule_id, status FROM findings WHERE evaluation_id = 4 ORDER BY id")
    assert written == [("protect.rdp", "fixed"), ("protect.telnet", "fixed")]
    fixed = findings(db, "--status", "fixed")
    assert {(f["rule_id"], f["last_seen"], f["fixed_at"]) for f in fixed} == {
        ("protect.rdp", days[2], days[3]), ("protect.telnet", days[2], days[3])}
    assert {f["last_seen"] for f in findings(db)} == {days[3]}


def test_exceptions_are_counted_apart_and_expire(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    scan(db, tmp_path, "one", [SERVER, SWITCH])
    evaluate(db)
    telnet = by_rule(findings(db), "protect.telnet")[0]
    until = (date.today() + timedelta(days=30)).isoformat()
    accepted = run_posture("accept", telnet["id"], "--until", until, "--reason", "switch replaced in March", db=db)
    assert accepted.returncode == 0, accepted.stderr
    whole_rule = run_posture("accept", "protect.rdp", "--until", until, "--reason", "RDP via gateway only", db=db)
    assert whole_rule.returncode == 0, whole_rule.stderr
    out = evaluate(db)
    assert "2 accepted" in out
    rows = findings(db)
    telnet_now = by_rule(rows, "protect.telnet")[0]
    assert telnet_now["accepted"] and telnet_now["accepted_until"] == until
    assert telnet_now["accepted_reason"] == "switch replaced in March"
    assert by_rule(rows, "protect.rdp")[0]["accepted"]
    assert rows[-1]["accepted"] and not rows[0]["accepted"]  # listed apart: after every open one
    # The whole order, as the store sorts it (`iter_finding_views`): accepted last, then worst first, rule,
    # asset, subject, id as shown. Several severities and both kinds of acceptance are in it.
    assert rows == sorted(rows, key=lambda f: (f["accepted"], -SEVERITY_RANK[f["severity"]], f["rule_id"],
                                               f["asset_id"] or 0, f["subject"], f["id"]))  # fmt: skip
    assert len({f["severity"] for f in rows}) > 2 and len(rows) > 5
    table = run_posture("findings", db=db).stdout
    assert "accepted exceptions (2)" in table
    # After the day passes the acceptance no longer holds: the finding counts again.
    later = (date.today() + timedelta(days=31)).isoformat()
    assert "0 accepted" in evaluate(db, "--on", later)

    # Bad acceptances: each refused with a reason, and nothing is recorded.
    before = db_fingerprint(db)
    past = run_posture("accept", telnet["id"], "--until", "2020-01-01", "--reason", "x", db=db)
    unknown = run_posture("accept", "F-000000000000", "--until", until, "--reason", "x", db=db)
    empty = run_posture("accept", telnet["id"], "--until", until, "--reason", "  ", db=db)
    esu_on_telnet = run_posture("accept", telnet["id"], "--until", until, "--reason", "x", "--esu", db=db)
    for result, words in ((past, "in the past"), (unknown, "neither a finding"), (empty, "needs a reason"),
                          (esu_on_telnet, "no paid extended support")):  # fmt: skip
        assert result.returncode == 2 and words in result.stderr, result.stderr
    assert db_fingerprint(db) == before


def test_past_sla_and_planning_horizon(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    scan(db, tmp_path, "one", [SERVER, WEB])
    evaluate(db)
    assert not by_rule(findings(db), "respond.past-sla")
    # 40 days on, the high findings (SLA 30 days) are past their SLA; the medium ones (90) are not.
    evaluate(db, "--on", (date.today() + timedelta(days=40)).isoformat())
    late = by_rule(findings(db), "respond.past-sla")
    assert late and all(f["evidence"].startswith(("a high ", "a critical ")) for f in late)
    assert all(f["subject"].startswith("finding:F-") for f in late)
    # The Debian 12 host's support (LTS) ends 2028-06-30: inside a 12-month horizon from 2027-08-01.
    config = tmp_path / "config.toml"
    config.write_text("[rules]\nhorizon_months = 12\n", encoding="utf-8")
    result = run_posture("--config", str(config), "evaluate", "--on", "2027-08-01", db=db)
    assert result.returncode == 0, result.stderr
    horizon = by_rule(findings(db), "protect.eol-within-horizon", WEB.ip)
    assert horizon and {f["product"] for f in horizon} >= {"debian"} and horizon[0]["eol_date"] == "2028-06-30"
    config.write_text("[rules]\nhorizon_months = 6\n", encoding="utf-8")
    run_posture("--config", str(config), "evaluate", "--on", "2027-08-01", db=db)
    assert not by_rule(findings(db), "protect.eol-within-horizon", WEB.ip)
    config.write_text("[rules]\nhorizon = 6\n", encoding="utf-8")
    bad = run_posture("--config", str(config), "evaluate", db=db)
    assert bad.returncode == 2 and "unknown key(s) in [rules]: horizon" in bad.stderr


def test_a_failing_rule_becomes_an_internal_error_finding(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    scan(db, tmp_path, "one", [SERVER, SWITCH])
    pack = tmp_path / "packs"
    pack.mkdir()
    (pack / "local.toml").write_text(
        '[pack]\nname = "local"\n\n[[rule]]\nid = "local.port-compare"\ntitle = "Compares a port with text"\n'
        'function = "detect"\nseverity = "low"\nsubject = "service"\nwhen = { port = { lt = "abc" } }\n'
        'rationale = "r"\nremediation = "m"\n',
        encoding="utf-8",
    )
    result = run_posture("evaluate", "--rules", str(pack), db=db)
    assert result.returncode == 0, result.stderr
    assert "rule local.port-compare failed" in result.stderr and "TypeError" in result.stderr
    rows = findings(db)
    internal = by_rule(rows, "posture.internal-error")
    assert len(internal) == 1 and "TypeError" in internal[0]["evidence"] and internal[0]["asset_id"] is None
    assert by_rule(rows, "protect.telnet")  # the other rules ran on


def test_evaluations_write_only_whole_references(tmp_path: Path) -> None:
    """evaluate writes with SQLite's foreign-key checks off (Store.transaction(check_references=False)): what
    it wrote must still pass them, and the connection must check again afterwards, also after a failure."""
    # SQLite only: SQLite's foreign-key switch (PRAGMA foreign_keys) is the subject; PostgreSQL always checks.
    db = tmp_path / "inventory.db"
    scan(db, tmp_path, "one", [SERVER, WEB, SWITCH])
    evaluate(db)
    scan(db, tmp_path, "two", [SERVER, SWITCH])  # WEB's findings fixed, the others open
    evaluate(db, "--on", (date.today() + timedelta(days=400)).isoformat())  # and findings past their SLA
    with Store.open(db) as store:
        assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert store.conn.execute("SELECT count(*) FROM findings WHERE rule_id = 'respond.past-sla'").fetchone()[0]
        try:
            with store.transaction(check_references=False) as conn:
                conn.execute("INSERT INTO findings (id, rule_id, asset_id, subject, status, first_seen, opened_at, "
                             "last_seen, evaluation_id, details_id) VALUES (1, 'x', 999999, '', 'new', '', '', '', "
                             "999999, 999999)")  # fmt: skip
                raise RuntimeError("stop")
        except RuntimeError:
            pass
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.conn.execute("SELECT count(*) FROM findings WHERE id = 1").fetchone()[0] == 0


def test_a_killed_evaluation_keeps_the_last_one_whole(store_db: Path | str, tmp_path: Path) -> None:
    """One transaction: `posture evaluate` killed (SIGKILL) while it writes a big evaluation leaves every table
    as the last finished evaluation left it, the database whole and its references valid; the next
    evaluation then runs as if the killed one had never started. It is killed once its transaction has
    written 4 MiB of log: SQLite's WAL file, PostgreSQL's write-ahead log (the server's, read by position)."""
    from bench.gen_inventory import write as write_inventory

    db = store_db
    if is_url(db):  # the generator writes an SQLite file: posture migrate copies it over
        write_inventory(tmp_path / "generated.db", assets=4000)
        copied = run_posture("migrate", "--from", str(tmp_path / "generated.db"), "--to", str(db))
        assert copied.returncode == 0, copied.stderr
    else:
        write_inventory(Path(db), assets=4000)
    evaluate(db)
    before = db_fingerprint(db)
    later = (date.today() + timedelta(days=70)).isoformat()  # every finding rewritten, past-SLA ones added
    written = _log_written(db)
    proc = subprocess.Popen([POSTURE, "--db", str(db), "evaluate", "--on", later], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # findings are going in: kill it then
            if written() > 4 << 20:
                break
            time.sleep(0.01)
        proc.kill()
    finally:
        assert proc.wait(timeout=60) == -signal.SIGKILL, "evaluate ended before it could be killed mid-write"
    assert db_fingerprint(db) == before
    if not is_url(db):  # the SQLite file itself (PostgreSQL checks every reference as it is written)
        assert query(db, "PRAGMA integrity_check") == [("ok",)] and query(db, "PRAGMA foreign_key_check") == []
    again = evaluate(db, "--on", later)
    assert again.startswith("evaluation 2 on ") and "0 fixed" in again
    assert query(db, "SELECT count(*) FROM evaluations WHERE finished_at IS NULL") == [(0,)]


def _log_written(db: Path | str) -> Callable[[], int]:
    """Bytes of write-ahead log written since now: the SQLite file's -wal, or the PostgreSQL server's log."""
    if not is_url(db):
        wal = Path(f"{db}-wal")
        return lambda: wal.stat().st_size if wal.exists() else 0
    [(start,)] = query(db, "SELECT pg_current_wal_lsn()::text")
    return lambda: int(query(db, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), ?::pg_lsn)", start)[0][0])


def test_empty_inventory_and_no_evaluation(store_db: Path | str) -> None:
    db = store_db
    none_yet = run_posture("findings", db=db)
    assert none_yet.returncode == 2 and "no inventory" in none_yet.stderr
    nothing = run_posture("evaluate", db=db)  # a mistyped --db is refused, never made (issue 15 item 7)
    assert nothing.returncode == 2 and "no inventory" in nothing.stderr and no_inventory(db)
    Store.open(db).close()  # an inventory with nothing in it yet
    result = run_posture("evaluate", db=db)
    assert result.returncode == 0 and "no assets yet" in result.stdout and "0 findings open" in result.stdout
    assert findings(db) == []


def test_hostile_and_huge_version_strings(tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    huge = (8080, "http", "nginx", "1." + "9" * 10_000, "<script>alert(1)</script>", (), None)
    scan(db, tmp_path, "one", [Host("10.1.0.20", "00:11:22:00:00:20", [huge, TELNET])])
    evaluate(db)
    rows = findings(db)
    assert by_rule(rows, "protect.telnet")
    assert all(len(json.dumps(f)) < 5_000 for f in rows)
    # The identification itself bounds what it reads, whatever reaches it.
    ident = identify_service("nginx", "1.22." + "9" * 10_000, "x" * 10_000, [], default_catalogue())
    assert ident[0].product == "nginx" and ident[0].cycles == ("1.22",)
    assert len(ident[0].version or "") <= 128 and len(ident[0].evidence) <= 512


def test_finding_rules_that_read_asset_facts(tmp_path: Path, store_db: Path | str) -> None:
    """A `finding` rule that also reads the asset runs in Python; one on finding facts alone runs in SQL:
    both give the same kind of result."""
    db = store_db
    scan(db, tmp_path, "one", [SERVER, SWITCH])
    register = tmp_path / "register.csv"
    register.write_text(f"IP address,Owner\n{SWITCH.ip},Network team\n", encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    pack = tmp_path / "packs"
    pack.mkdir()
    (pack / "local.toml").write_text(
        '[pack]\nname = "local"\n\n'
        '[[rule]]\nid = "local.unowned-high"\ntitle = "High finding on an unowned asset"\nfunction = "respond"\n'
        'severity = "high"\nsubject = "finding"\nwhen = { severity = "high", "asset.has_owner" = false }\n'
        'rationale = "r"\nremediation = "m"\n\n'
        '[[rule]]\nid = "local.any-high"\ntitle = "High finding"\nfunction = "respond"\nseverity = "info"\n'
        'subject = "finding"\nwhen = { severity = { in = ["high"] }, rule_id = { matches = "^protect[.]" } }\n'
        'rationale = "r"\nremediation = "m"\n',
        encoding="utf-8",
    )
    result = run_posture("evaluate", "--rules", str(pack), db=db)
    assert result.returncode == 0 and "failed" not in result.stderr, result.stderr
    rows = findings(db)
    high_protect = [f for f in rows if f["severity"] == "high" and f["rule_id"].startswith("protect.")]
    unowned = by_rule(rows, "local.unowned-high")
    assert unowned and {f["address"] for f in unowned} == {SERVER.ip}  # the switch has an owner now
    assert len(by_rule(rows, "local.any-high")) == len(high_protect) > 0
