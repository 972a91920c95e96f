"""Rule packs: the built-in ones load and lint clean; bad packs are refused with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.engine import FUNCTIONS, load_rules
from tests.conftest import no_inventory, run_posture

GOOD = """[pack]
name = "council"

[[rule]]
id = "council.telnet-anywhere"
title = "Telnet anywhere"
function = "protect"
severity = "high"
subject = "service"
when = { name = "telnet" }
rationale = "Clear text."
remediation = "Turn it off."
[rule.references]
ncsc_caf = ["B4.b"]
"""


def pack_dir(tmp_path: Path, text: str, name: str = "local.toml") -> Path:
    directory = tmp_path / "packs"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_built_in_packs_cover_every_function_with_references() -> None:
    rules = load_rules()
    assert {r.function for r in rules} == set(FUNCTIONS)
    assert len(rules) >= 20
    for r in rules:
        assert all(r.references.get(k) for k in ("nist_csf", "ncsc_caf", "cyber_essentials")), r.id
    assert all(r.decommission for r in rules if r.id in ("protect.eol-os", "respond.decommission-candidate"))
    result = run_posture("rules", "lint")
    assert result.returncode == 0 and f"ok: {len(rules)} rules in 3 packs" in result.stdout


def test_extra_pack_is_listed_shown_and_used(tmp_path: Path) -> None:
    directory = pack_dir(tmp_path, GOOD)
    listed = run_posture("rules", "list", "--rules", str(directory))
    assert listed.returncode == 0 and "council.telnet-anywhere" in listed.stdout
    shown = run_posture("rules", "show", "council.telnet-anywhere", "--rules", str(directory))
    assert shown.returncode == 0 and "ncsc_caf: B4.b" in shown.stdout and "local.toml:4" in shown.stdout
    missing = run_posture("rules", "show", "protect.telnt")
    assert missing.returncode == 2 and "did you mean protect.telnet" in missing.stderr


BAD = [
    # (pack text, words the error must hold)
    (GOOD.replace('severity = "high"', 'severity = "high'), ["local.toml", "not valid TOML", "line 8"]),
    (
        GOOD.replace('title = "Telnet anywhere"', 'title = "Telnet anywhere"\nowner = "me"'),
        ["local.toml:7", "unknown field(s) owner"],
    ),
    (GOOD.replace('function = "protect"', 'function = "prevent"'), ["local.toml:7", "function 'prevent'"]),
    (
        GOOD.replace('when = { name = "telnet" }', 'when = { colour = "red" }'),
        ["local.toml:10", "unknown field 'colour' for subject 'service'"],
    ),
    (
        GOOD.replace('when = { name = "telnet" }', "when = { port = { about = 23 } }"),
        ["local.toml:10", "unknown operator 'about'"],
    ),
    (
        GOOD.replace('when = { name = "telnet" }', 'when = { port = { gt = "$horizon" } }'),
        ["unknown setting '$horizon'"],
    ),
    (
        GOOD.replace('when = { name = "telnet" }', 'when = { product = { matches = "(" } }'),
        ["bad regular expression on 'product'"],
    ),
    (GOOD.replace('id = "council.telnet-anywhere"', 'id = "protect.telnet"'), ["already used at protect.toml"]),
    (GOOD.replace('rationale = "Clear text."\n', ""), ["local.toml:4", "missing field 'rationale'"]),
    (GOOD.replace('subject = "service"', 'subject = "printer"'), ["subject 'printer' is not one of"]),
    (GOOD.replace('[pack]\nname = "council"\n', ""), ["a pack needs [pack] name"]),
]


@pytest.mark.parametrize(("text", "words"), BAD)
def test_bad_packs_are_refused_with_where_and_what(store_db: Path | str, tmp_path: Path, text: str,
                                                   words: list[str]) -> None:  # fmt: skip
    directory = pack_dir(tmp_path, text)
    result = run_posture("rules", "lint", str(directory))
    assert result.returncode == 2
    for word in words:
        assert word in result.stderr, result.stderr
    # The same pack given to evaluate stops it before anything is written.
    db = store_db
    evaluated = run_posture("evaluate", "--rules", str(directory), db=db)
    assert evaluated.returncode == 2 and no_inventory(db)


def test_rules_dir_that_is_not_a_pack_dir(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no *.toml rule packs" in run_posture("rules", "lint", str(empty)).stderr
    assert "not a directory" in run_posture("rules", "list", "--rules", str(tmp_path / "nope")).stderr
