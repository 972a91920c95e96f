"""The change hook's JSON (issue 15 item 9): one versioned shape, checked against the JSON Schema shipped in the
package, on a first run (nothing to compare with), a later one, a run that scanned nothing, and hostile names.

Built here from real imports and real evaluations (the `posture` command) with `scanner.change` called on the
database; tests/scanner/test_jobs.py checks what a real job's hook program reads on stdin.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

from scanner.change import SCHEMA_FILE, SCHEMA_ID, change_summary, newest_evaluation
from scanner.compat import UTC
from scanner.store import Store
from tests.conftest import run_posture
from tests.rules.estate import CISCO_SWITCH, MYSQL, NGINX, RDP, SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate


def check_change(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` is a posture.change/1 document (raises with the first difference otherwise); returns it."""
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))).validate(doc)
    assert doc["schema"] == SCHEMA_ID
    return doc


def summary(db: Path | str, scans: list[int], before: int, **kw: Any) -> dict[str, Any]:
    with Store.open(db, readonly=True) as store:
        doc = change_summary(store, job="town-hall", started=datetime.now(UTC), scans=scans, evaluation_before=before,
                             report=kw.get("report"), nothing_answered=False, bundles={})  # fmt: skip
    return check_change(json.loads(json.dumps(doc)))  # what the hook reads: JSON, not Python objects


def evaluate(db: Path | str) -> int:
    assert run_posture("evaluate", db=db).returncode == 0
    with Store.open(db, readonly=True) as store:
        return newest_evaluation(store)


def test_first_later_and_empty_runs_have_one_shape(store_db: Path | str, tmp_path: Path) -> None:
    db = store_db
    web = Host("10.6.0.11", "00:11:22:00:06:11", [SSH_DEBIAN, NGINX], hostname="web01.council.example")
    server = Host("10.6.0.10", "00:11:22:00:06:10", [RDP], WINDOWS_2008)
    switch = Host("10.6.0.12", "00:11:22:00:06:12", [TELNET], CISCO_SWITCH)
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "one.xml", [web, server, switch])),
                       db=db).returncode == 0  # fmt: skip
    first = summary(db, [1], 0, report="/srv/posture/town-hall.html")  # before any evaluation: nothing known
    assert (first["evaluation"], first["findings"], first["score"]) == (None, None, None)
    assert {a["lifecycle_state"] for a in first["assets"]["new"]} == {None}

    one = evaluate(db)
    first = summary(db, [1], 0, report="/srv/posture/town-hall.html")
    assert (first["scans"], first["compared_with"], first["evaluation"]) == ([1], [], one)
    assert first["report"] == "/srv/posture/town-hall.html" and first["changed"]
    assert first["counts"]["new_assets"] == 3 and first["assets"]["gone"] == first["assets"]["changed"] == []
    assert "every asset seen is new" in first["notes"][0]
    by_address = {a["addresses"][0]: a for a in first["assets"]["new"]}  # the stored identities, by name
    assert by_address["10.6.0.10"]["os"] == "Microsoft Windows Server 2008 R2 SP1"
    assert by_address["10.6.0.10"]["lifecycle_state"] == "end-of-life"
    assert by_address["10.6.0.11"]["name"] == "web01.council.example"
    eol = next(f for f in first["findings"]["appeared"] if f["rule_id"] == "protect.eol-os")
    assert (eol["address"], eol["product"], eol["cycle"]) == ("10.6.0.10", "windows-server", "2008-r2-sp1")
    assert first["counts"]["new_findings"] == len(first["findings"]["appeared"])
    assert first["score"]["rag"].keys() == {"protect", "detect", "respond"} and first["score"]["assets"] == 3

    second = write_estate(tmp_path / "two.xml", [
        Host(web.ip, web.mac, [SSH_DEBIAN, NGINX, MYSQL], hostname=web.hostname),  # MySQL opened
        Host(server.ip, server.mac, [], WINDOWS_2008),  # RDP closed
        Host("10.6.0.13", "00:11:22:00:06:13", [SSH_DEBIAN]),  # new; the switch is gone
    ])  # fmt: skip
    assert run_posture("import", "nmap", str(second), db=db).returncode == 0
    two = evaluate(db)
    later = summary(db, [2], one)
    assert (later["scans"], later["compared_with"], later["evaluation"], later["notes"]) == ([2], [1], two, [])
    assert [a["addresses"] for a in later["assets"]["new"]] == [["10.6.0.13"]]
    assert [a["addresses"] for a in later["assets"]["gone"]] == [["10.6.0.12"]]
    assert later["assets"]["gone"][0]["os"] and later["assets"]["gone"][0]["lifecycle_state"]
    changes = {a["addresses"][0]: a["changes"] for a in later["assets"]["changed"]}
    assert changes["10.6.0.11"] == {"opened": {"tcp/3306": "MySQL 8.0.36"}}
    assert changes["10.6.0.10"] == {"closed": {"tcp/3389": "Microsoft Terminal Services"}}
    assert [(f["rule_id"], f["address"]) for f in later["findings"]["cleared"]] == [("protect.rdp", "10.6.0.10")]
    assert {(f["rule_id"], f["address"]) for f in later["findings"]["appeared"]} == {
        ("detect.new-service", "10.6.0.11"), ("detect.new-asset", "10.6.0.13")}  # fmt: skip
    assert later["counts"]["fixed_findings"] == len(later["findings"]["cleared"])

    idle = summary(db, [], two)  # a run that saved no scan and made no evaluation: the same shape, nothing in it
    assert (idle["scans"], idle["assets"], idle["findings"], idle["changed"]) == (
        [], {"new": [], "gone": [], "changed": []}, None, False)  # fmt: skip
    assert idle["score"] == later["score"]  # the newest evaluation's, whichever run made it
    assert any("findings unknown" in n for n in idle["notes"]) and any("no finished scan" in n for n in idle["notes"])


def test_device_strings_are_bounded(store_db: Path | str, tmp_path: Path) -> None:
    """A hostname of 253 characters, a product of control characters and markup: cut to 200, printable."""
    from tests.scanner.test_hostile_strings import HOSTILE_PRODUCT, hostile_xml

    db = store_db
    assert run_posture("import", "nmap", str(hostile_xml(tmp_path)), db=db).returncode == 0
    base = Host("127.0.0.77", "00:11:22:00:07:77", [(80, "http", HOSTILE_PRODUCT + "\u202e" * 300, "1", "", (),
                                                       None)], hostname="b" * 250)  # fmt: skip
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "b.xml", [base])), db=db).returncode == 0
    doc = summary(db, [2], evaluate(db))  # the schema says 200 characters at most for every device string
    [asset] = doc["assets"]["changed"]
    assert len(asset["name"]) == 200 and asset["name"].endswith("…")
    text = json.dumps(doc, ensure_ascii=False)
    assert "\u202e" not in text and "\x1b" not in text


def test_readme_documents_every_field() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("#### The change hook") :]
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    for name in [*schema["properties"], *schema["properties"]["counts"]["properties"]]:
        assert f"`{name}`" in section, name
    assert "scanner/schemas/change.schema.json" in section and f"`{SCHEMA_ID}`" in section
