"""A finding's evidence reads in plain words (issue 15 item 2), from rules/data/evidence.toml."""

from __future__ import annotations

import json
from pathlib import Path

from rules import evidence
from rules.engine import ASSET_FIELDS, load_rules
from rules.facts import EVIDENCE_RANK
from tests.conftest import run_posture
from tests.rules.estate import NGINX, SSH_DEBIAN, Host, write_estate


def test_every_asset_fact_the_built_in_rules_test_has_a_phrase() -> None:
    assert evidence.lint(evidence.table(), ASSET_FIELDS) == []
    assert set(EVIDENCE_RANK) <= set(evidence.table()[evidence.METHODS])  # every identification method in words
    tested = set()
    for rule in load_rules():
        names = [*rule.when, *(n for w in rule.when_any for n in w)]
        for name in names:
            if rule.subject == "asset" or name.startswith("asset."):
                tested.add(name.removeprefix("asset."))
    assert tested and tested <= set(evidence.phrases()), tested - set(evidence.phrases())


def test_lint_names_unknown_facts_and_placeholders() -> None:
    problems = evidence.lint({"no_such_fact": {"true": "x"}, "is_new": {"true": "seen {nowhere}"}}, ASSET_FIELDS)
    assert problems == ["[no_such_fact]: not an asset fact", "[is_new] true: unknown placeholder {nowhere}"]


def test_phrases_fill_values_and_fall_back_to_the_raw_pair() -> None:
    asset = {"snmp_version": "2c", "days_since_seen": 41, "os_known": False, "os_guess": "Linux 3.2 - 4.9 at 95%",
             "custom": 7, "register_loaded": True, "in_register": False}
    said = evidence.say(["snmp_version", "days_since_seen", "os_known", "custom", "register_loaded", "in_register"],
                        asset)  # fmt: skip
    assert said == ("answers SNMP v2c (community string sent in clear, no encryption); not seen for 41 days; "
                    "operating system not identified: nmap's best guess was Linux 3.2 - 4.9 at 95%; custom=7; "
                    "not in the asset register")  # fmt: skip


def test_hostile_values_are_bounded_and_printable() -> None:
    said = evidence.say(["os_known"], {"os_known": False, "os_guess": "\x1b[31mevil\u202e" + "x" * 5000})
    assert "\x1b" not in said and "\u202e" not in said and len(said) <= evidence.MAX_EVIDENCE


def test_evaluated_findings_say_what_they_found(store_db: Path | str, tmp_path: Path) -> None:
    """Real findings from an imported scan: a device nmap guessed (at 96%, an osmatch no fingerprint names)
    and a new host in the second scan read as sentences, not `os_known=False`."""
    db = store_db
    # nmap 7.93 nmap-os-db: "Fingerprint Crestron XPanel control system", Class Crestron | 2-Series, its CPE.
    crestron = ("Crestron XPanel control system", "specialized", "2-Series", "cpe:/o:crestron:2_series")
    first = [Host("10.16.0.1", "00:11:22:00:17:01", [NGINX], crestron)]
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "a.xml", first, when=1_700_000_000)),
                       db=db).returncode == 0  # fmt: skip
    second = [*first, Host("10.16.0.2", "00:11:22:00:17:02", [SSH_DEBIAN])]
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "b.xml", second, when=1_700_086_400)),
                       db=db).returncode == 0  # fmt: skip
    assert run_posture("evaluate", db=db).returncode == 0
    found = json.loads(run_posture("findings", "--format", "json", db=db).stdout)
    said = {(f["rule_id"], f["address"]): f["evidence"] for f in found}
    assert said[("detect.os-unknown", "10.16.0.1")] == (
        "operating system not identified: nmap's best guess was Crestron XPanel control system at 96%")
    assert said[("detect.new-asset", "10.16.0.2")] == "first seen in the latest scan, not in the one before"
    assert not any("=" in text for (rule, _), text in said.items() if rule.startswith("detect."))
