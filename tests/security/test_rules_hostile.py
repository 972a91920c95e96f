"""Hostile rule packs and hostile banners against the rule engine (issue 11, "Rule packs" and "two interpreters").

Every test runs the real `posture` command on real pack files in a folder and a real inventory built with
`posture import nmap` from nmap XML (tests/rules/estate.py), except where a test must reach past the
loader on purpose (it says so).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import time
from datetime import date
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from rules import redos
from rules.catalogue import default_catalogue
from rules.engine import (
    FINDING_FIELDS,
    OPERATORS,
    Rule,
    RuleError,
    Settings,
    finding_rule_sql,
    load_rules,
    parse_pack,
    search,
    sql_functions,
)
from rules.findings import evaluate
from rules.kev import default_kev
from scanner.db import SqliteDatabase
from scanner.store import Store
from tests.conftest import SQLITE_ONLY, copy_store, db_fingerprint, new_store, run_posture
from tests.rules.estate import SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate

HOSTS = [
    Host("10.9.0.1", "00:11:22:33:09:01", [TELNET, SSH_DEBIAN], WINDOWS_2008, "old-server"),
    Host("10.9.0.2", "00:11:22:33:09:02", [TELNET]),
]


def rule_text(rule_id: str, subject: str, when: str) -> str:
    return (f'[[rule]]\nid = "{rule_id}"\ntitle = "t"\nfunction = "detect"\nseverity = "low"\n'
            f'subject = "{subject}"\nwhen = {when}\nrationale = "r"\nremediation = "m"\n')  # fmt: skip


def pack(directory: Path, *rules: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "local.toml").write_text('[pack]\nname = "local"\n\n' + "\n".join(rules), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def estate_db(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    """A real inventory, built once (on each store): nmap XML imported, then evaluated with the built-in packs."""
    home = tmp_path_factory.mktemp("estate")
    env = {f"XDG_{k}_HOME": str(home / k.lower()) for k in ("DATA", "CONFIG", "STATE")}
    db = new_store(request, store_kind, home)
    xml = write_estate(home / "estate.xml", HOSTS)
    assert run_posture("import", "nmap", str(xml), db=db, env=env).returncode == 0
    assert run_posture("evaluate", db=db, env=env).returncode == 0
    return db


@pytest.fixture
def evaluated_db(request: pytest.FixtureRequest, estate_db: Path | str, tmp_path: Path) -> Path | str:
    """This test's own copy of the inventory."""
    return copy_store(request, estate_db, tmp_path)


def findings(db: Path | str) -> list[dict[str, Any]]:
    result = run_posture("findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# ---- issue item "Rule packs": operator arguments and patterns are checked by lint and by the loader -----

BAD_ARGUMENTS = [
    # (subject, when, words of the one error line)
    ("service", "{ port = { eq = [1, 2] } }", ["'eq' on 'port'", "a list cannot be compared"]),
    ("service", "{ port = { in = [{ a = 1 }] } }", ["'in' on 'port'", "a table cannot be compared"]),
    ("service", "{ port = { eq = 07:32:00 } }", ["'eq' on 'port'", "a TOML date or time"]),
    ("service", "{ port = { eq = 12345678901234567890 } }", ["'eq' on 'port'", "beyond 64 bits"]),
    ("finding", "{ age_days = { eq = 12345678901234567890 } }", ["'eq' on 'age_days'", "beyond 64 bits"]),
    ("finding", "{ age_days = { eq = [1, 2] } }", ["'eq' on 'age_days'", "a list"]),
    ("finding", "{ age_days = { not_in = [1979-05-27] } }", ["'not_in' on 'age_days'", "a TOML date or time"]),
    ("finding", "{ age_days = { gt = nan } }", ["'gt' on 'age_days'", "not a finite number"]),
    ("finding", "{ age_days = { lt = true } }", ["'lt' on 'age_days'", "needs a number or a string"]),
    ("finding", "{ age_days = { in = 5 } }", ["'in' on 'age_days'", "needs a list"]),
    ("service", "{ port = { exists = 1 } }", ["'exists' on 'port' takes true or false"]),
    ("service", '{ product = { matches = "^(a+)+$" } }', ["bad regular expression on 'product'", "nested"]),
    ("service", '{ product = { matches = "(a|a)+" } }', ["bad regular expression on 'product'", "alternative"]),
    ("service", '{ product = { matches = "(.*a){20}" } }', ["bad regular expression on 'product'", "nested"]),
    ("service", '{ product = { matches = ".*foo.*bar" } }', ["bad regular expression on 'product'", "in a row"]),
    ("service", "{ product = { matches = 5 } }", ["'matches' on 'product' needs a regular expression string"]),
    ("service", "{ port = " + "9" * 5000 + " }", ["not valid TOML"]),
]


@pytest.mark.parametrize(("subject", "when", "words"), BAD_ARGUMENTS)
def test_lint_refuses_bad_operator_arguments(tmp_path: Path, evaluated_db: Path | str, subject: str, when: str,
                                             words: list[str]) -> None:  # fmt: skip
    """Issue 11, Rule packs: "`{eq=[1,2]}`, `{in=[{a=1}]}`, a TOML time value, a 20-digit `eq` pass lint and
    then make every evaluation fail"; "`product={matches="^(a+)+$"}` against a 35-character banner ran past
    60 s". Each is now refused by `posture rules lint` (exit 2, file:line and the reason), and evaluate
    with the same pack stops before writing anything."""
    directory = pack(tmp_path / "packs", rule_text("local.bad", subject, when))
    result = run_posture("rules", "lint", str(directory))
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posture: error: "), result.stderr
    assert f"{directory / 'local.toml'}:" in lines[0]
    if "TOML" not in words[0]:
        assert "local.toml:10: rule #1: " in lines[0]  # the `when` line of the rule
    for word in words:
        assert word in lines[0], lines[0]
    before = db_fingerprint(evaluated_db)
    evaluated = run_posture("evaluate", "--rules", str(directory), db=evaluated_db)
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr
    assert db_fingerprint(evaluated_db) == before


def test_a_pack_that_is_a_fifo_or_huge_is_refused_at_once(tmp_path: Path) -> None:
    """Issue 11, Build: "Every parser of outside data (... TOML ...) bounds ... size": a FIFO named like a
    pack would block `rules lint` (and every evaluate) for ever; a 2 MiB pack is refused unread."""
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "evil.toml")
    result = run_posture("rules", "lint", str(fifo_dir), timeout=30)
    assert result.returncode == 2 and "not a regular file" in result.stderr and "Traceback" not in result.stderr
    huge = pack(tmp_path / "huge", rule_text("local.ok", "service", "{ port = 23 }") + "#" * (2 << 20) + "\n")
    result = run_posture("rules", "lint", str(huge), timeout=30)
    assert result.returncode == 2 and "at most 1,024 KiB" in result.stderr


def test_hostile_banner_against_the_pattern_that_ran_past_60_seconds(store_db: Path | str, tmp_path: Path) -> None:
    """Issue 11, Rule packs: "`product={matches="^(a+)+$"}` against a 35-character banner ran past 60 s".
    The device's banner is real (imported from nmap XML); the pack with that pattern is refused at once,
    and a safe pattern over the same banner, or over 1 MiB of it, answers at once (4 KiB are read)."""
    db = store_db
    banner = (8080, "http", "a" * 35 + "!", "", "", (), None)
    xml = write_estate(tmp_path / "hostile.xml", [Host("10.9.0.3", "00:11:22:33:09:03", [banner])])
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    evil = pack(tmp_path / "evil", rule_text("local.redos", "service", '{ product = { matches = "^(a+)+$" } }'))
    started = time.monotonic()
    refused = run_posture("evaluate", "--rules", str(evil), db=db, timeout=60)
    assert refused.returncode == 2 and "nested quantifiers" in refused.stderr
    safe = pack(tmp_path / "safe", rule_text("local.aaa", "service", '{ product = { matches = "^a+!$" } }'))
    assert run_posture("evaluate", "--rules", str(safe), db=db, timeout=60).returncode == 0
    assert time.monotonic() - started < 30
    assert [f["rule_id"] for f in findings(db)].count("local.aaa") == 1
    # What a scanner bounds today it may not bound tomorrow: the engine reads 4 KiB of any value.
    started = time.monotonic()
    assert not search("a+b", "a" * (1 << 20))
    assert time.monotonic() - started < 5


REDOS_REFUSED = ["^(a+)+$", "(a*)*", "(a|a)+", "(a|aa)+$", "(.*a){20}", "(x+x+)+y", "(a{1,10}){1,10}$",
                 ".*.*x", ".*foo.*bar", r"\w+\d+", "(a|b|ab)*c", "x{0,1000}x{0,1000}",
                 "a" * 1001]  # fmt: skip
REDOS_ALLOWED = ["^vnc", "^protect[.]", r"\d+\.\d+", r"(\d{1,3}\.){3}\d{1,3}", '"[^"]*"[^"]*"', "foo.*bar",
                 r".*\d{1,3}", r"^OpenSSH[_ ](\d+)\.(\d+)", "(ftp|http)+", "(ab+)+", "(?i)^cisco ios"]  # fmt: skip


@pytest.mark.parametrize("pattern", REDOS_REFUSED)
def test_patterns_that_backtrack_without_end_are_refused(pattern: str) -> None:
    """Issue 11, Build: "Rule lint ... rejects patterns with nested quantifiers" (rules/redos.py)."""
    assert redos.problem(pattern) is not None


@pytest.mark.parametrize("pattern", REDOS_ALLOWED)
def test_ordinary_patterns_pass_and_stay_fast_on_hostile_text(pattern: str) -> None:
    """The patterns lint lets through answer quickly on the text most likely to hurt them."""
    assert redos.problem(pattern) is None
    started = time.monotonic()
    for hostile in ("a" * 5000 + "!", "1" * 5000 + "x", "foo" * 2000, '"' * 5000, "ab" * 2500 + "c"):
        search(pattern, hostile)
    assert time.monotonic() - started < 5


# ---- a rule that fails at evaluation: one internal-error finding, the others run on ---------------------


def test_a_rule_that_fails_at_evaluation_is_one_internal_error(tmp_path: Path, evaluated_db: Path | str) -> None:
    """Issue 11, Rule packs: "... make every evaluation fail (the README promises one internal-error finding
    and the other rules still run)". Lint cannot know a field's type, so ordering a number against text
    passes it and fails at evaluation: once in Python (a service rule) and once in SQL (a finding rule).
    Each becomes one `posture.internal-error` finding naming it; the built-in rules and a good local rule
    still produce theirs."""
    directory = pack(
        tmp_path / "packs",
        rule_text("local.port-text", "service", '{ port = { lt = "abc" } }'),
        rule_text("local.age-text", "finding", '{ age_days = { gt = "abc" } }'),
        rule_text("local.telnet", "service", "{ port = 23 }"),
        rule_text("local.high", "finding", '{ severity = "high" }'),
    )
    assert run_posture("rules", "lint", str(directory)).returncode == 0  # nothing lint can see
    result = run_posture("evaluate", "--rules", str(directory), db=evaluated_db)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "rule local.port-text failed" in result.stderr and "rule local.age-text failed" in result.stderr
    rows = findings(evaluated_db)
    internal = {f["subject"]: f for f in rows if f["rule_id"] == "posture.internal-error"}
    assert set(internal) == {"local.port-text", "local.age-text"}
    assert all("TypeError" in f["evidence"] and f["asset_id"] is None for f in internal.values())
    rule_ids = [f["rule_id"] for f in rows]
    assert rule_ids.count("local.telnet") == 2 and rule_ids.count("protect.telnet") == 2
    # 10.9.0.2's telnet CPE (cpe:/o:cisco:ios) names Cisco IOS without its release: lifecycle unknown.
    assert "local.high" in rule_ids and "detect.lifecycle-unknown" in rule_ids


# SQLite only: the forged condition is what SQLite's SQL back-end runs (finding_rule_sql); PostgreSQL tests finding
# rules in Python, whose internal errors test_a_rule_that_fails_at_evaluation_is_one_internal_error covers.
@SQLITE_ONLY
@pytest.mark.parametrize("bad", [("eq", [1, 2]), ("eq", 2**70), ("in", [{"a": 1}]), ("ge", dt_time(7, 32))])
def test_what_lint_refuses_is_still_one_internal_error_when_it_gets_through(evaluated_db: Path | str,
                                                                            bad: tuple[str, Any]) -> None:  # fmt: skip
    """Issue 11, Rule packs: the values that used to pass lint made the SQL back-end fail the whole
    evaluation ("could not record the evaluation", or an OverflowError traceback). Lint refuses them now;
    to prove the evaluator itself holds, the condition is put into a loaded rule past the loader (in
    process), and the evaluation records one internal-error finding and every other finding."""
    op, value = bad
    text = '[pack]\nname = "local"\n' + rule_text("local.age", "finding", "{ age_days = { ge = 0 } }")
    good = parse_pack(text, "local.toml")
    broken = dataclasses.replace(good[0], conditions=(("age_days", op, value),))
    ok = dataclasses.replace(good[0], id="local.still-runs")
    rules = [*load_rules(), broken, ok]
    with Store.open(evaluated_db) as store:
        summary = evaluate(store, rules, default_catalogue(), default_kev(), date.today(), Settings())
    assert list(summary.errors) == ["local.age"]
    rows = findings(evaluated_db)
    assert [f["subject"] for f in rows if f["rule_id"] == "posture.internal-error"] == ["local.age"]
    assert "local.still-runs" in {f["rule_id"] for f in rows} and "protect.telnet" in {f["rule_id"] for f in rows}


# ---- issue item "two interpreters": one meaning, one truth table, both back-ends -------------------------

MISSING = object()  # the key is absent (Python); in SQL there is no absent column, so it is NULL too
ERROR = "error"  # the rule fails: an internal-error finding

# (field, operator, expected, a matching value, a non-matching value, a value of the wrong type, and the
# result for that). The documented meaning (rules/engine.py): a missing or null value passes only ne, not_in
# and exists = false; a number and text are unequal, and ordering them is an error; matches searches the
# value's text; true and false are 1 and 0.
ROWS: list[tuple[str, str, Any, Any, Any, Any, Any]] = [
    ("age_days", "eq", 5, 5, 6, "5", False),
    ("age_days", "ne", 5, 6, 5, "5", True),
    ("age_days", "in", [5, 7], 7, 6, "7", False),
    ("age_days", "not_in", [5, 7], 6, 5, "5", True),
    ("age_days", "lt", 6, 5, 6, "5", ERROR),
    ("age_days", "le", 5, 5, 6, "5", ERROR),
    ("age_days", "gt", 4, 5, 4, "5", ERROR),
    ("age_days", "ge", 5, 5.0, 4, "5", ERROR),
    ("age_days", "eq", "5", "5", "6", 5, False),
    ("age_days", "in", ["5"], "5", "6", 5, False),
    ("age_days", "lt", "6", "5", "7", 5, ERROR),
    ("age_days", "matches", "^1", 15, 51, "1x", True),
    ("age_days", "exists", True, 0, "", "x", True),
    ("age_days", "exists", False, "", 0, "x", False),
    ("severity", "eq", "high", "high", "low", 1, False),
    ("severity", "ne", "high", "low", "high", 1, True),
    ("severity", "in", ["high", 2], 2, "2", 2.5, False),
    ("severity", "not_in", ["high"], "low", "high", 0, True),
    ("severity", "lt", "m", "high", "medium", 1, ERROR),
    ("severity", "matches", "^hi", "high", "xhigh", 5, False),
    ("accepted", "eq", True, 1, 0, "true", False),
    ("accepted", "ne", False, 1, 0, "0", True),
]
PASSES_MISSING = {"ne", "not_in"}
CASES = [
    pytest.param(f, op, expected, value, result, id=f"{f}-{op}-{expected}-{label}")
    for f, op, expected, matching, other, wrong, wrong_result in ROWS
    for label, value, result in [
        ("missing", MISSING, op in PASSES_MISSING or (op == "exists" and expected is False)),
        ("null", None, op in PASSES_MISSING or (op == "exists" and expected is False)),
        ("matching", matching, True),
        ("non-matching", other, False),
        ("wrong type", wrong, wrong_result),
    ]
]
# Each case also runs with the column's affinity in rules/findings.py FINDING_GROUPS (age_days is a CAST to
# INTEGER, severity a TEXT column), so SQLite's own conversions ("5" = 5 in an INTEGER column) are tested.
AFFINITY = {"age_days": "INTEGER", "severity": "TEXT"}


def finding_rule(field: str, op: str, expected: Any) -> Rule:
    """`field = { op = expected }` as a `finding` rule, through the real TOML loader and its checks."""
    when = "{ " + field + " = { " + op + " = " + json.dumps(expected) + " } }"
    return parse_pack('[pack]\nname = "t"\n' + rule_text("t.rule", "finding", when), "t.toml")[0]


def python_backend(rule: Rule, field: str, value: Any) -> Any:
    try:
        return rule.matches({} if value is MISSING else {field: value}, {})
    except Exception:
        return ERROR


def sql_backend(rule: Rule, field: str, value: Any, affinity: str) -> Any:
    """The rule's WHERE clause over a one-row table; None when `affinity` would change the stored value
    (the facts query never holds such a value in such a column)."""
    # SQLite only: PostgreSQL runs every finding rule in Python (finding_rule_sql gives it no SQL).
    compiled = finding_rule_sql(rule)
    assert compiled is not None
    where, params = compiled
    conn = sqlite3.connect(":memory:")
    try:
        sql_functions(SqliteDatabase(conn, Path(":memory:"), readonly=False))
        columns = ", ".join(f"{n} {affinity if n == field else ''}" for n in sorted(FINDING_FIELDS))
        conn.execute(f"CREATE TABLE facts ({columns})")
        stored = None if value is MISSING else value
        conn.execute(f"INSERT INTO facts ({field}) VALUES (?)", [stored])
        if conn.execute(f"SELECT {field} FROM facts").fetchone()[0] != stored:
            return None
        try:
            return bool(conn.execute(f"SELECT count(*) FROM facts WHERE {where}", params).fetchone()[0])
        except sqlite3.Error:
            return ERROR
    finally:
        conn.close()


@pytest.mark.parametrize(("field", "op", "expected", "value", "result"), CASES)
def test_both_backends_give_the_documented_answer(field: str, op: str, expected: Any, value: Any,
                                                 result: Any) -> None:  # fmt: skip
    """Issue 11: "The rule language has two interpreters that disagree: `not_in` on a missing value matches
    in the Python one (rules/engine.py) and not in the SQL one; the docstring "missing data never passes a
    comparison" contradicts `_compare`. One meaning, checked by one truth-table test run against both
    back-ends." The meaning kept is the one the built-in packs rely on (`tunnel = { ne = "ssl" }` flags a
    service with no tunnel): missing passes ne and not_in only; the docstring now says so."""
    rule = finding_rule(field, op, expected)
    in_python = python_backend(rule, field, value)
    in_sql = sql_backend(rule, field, value, "")  # no affinity: the value exactly as Python has it
    with_affinity = sql_backend(rule, field, value, AFFINITY.get(field, ""))
    assert in_python == in_sql == result, (in_python, in_sql)
    assert with_affinity in (None, result)


# ---- fuzz: any argument is refused by the loader, or both back-ends agree on it ---------------------------

SCALARS = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=12), st.dates(), st.times())
ANYTHING = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.sampled_from("abc"), inner, max_size=2)),
                        max_leaves=6)  # fmt: skip
NEAR = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -0.0, 2.0, 1e300]), st.booleans(),
                 st.text(alphabet="ab1.^$*+()|", max_size=5))  # fmt: skip
VALUES = st.one_of(NEAR, st.lists(NEAR, max_size=4), ANYTHING)  # mostly what a pack would hold, some of anything
ACTUALS = st.one_of(st.none(), NEAR.filter(lambda v: not isinstance(v, bool)), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False), st.text(max_size=12))  # fmt: skip

def toml(value: Any) -> str:
    """A TOML inline value (what a pack author could write)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@given(field=st.sampled_from(["age_days", "severity"]), op=st.sampled_from(list(OPERATORS)), value=VALUES,
       actual=ACTUALS)  # fmt: skip
@hypothesis_settings(max_examples=400, deadline=None)
def test_fuzz_an_argument_is_refused_or_means_the_same_in_both(field: str, op: str, value: Any, actual: Any) -> None:
    """Issue 11, Build: "Rule lint checks types of every operator's argument", and one meaning in both
    interpreters: whatever a pack says, the loader refuses it with a RuleError, or the Python and the SQL
    back-end give the same answer (or both fail) on any value."""
    text = '[pack]\nname = "f"\n' + rule_text("f.rule", "finding", "{ " + field + " = { " + op + " = " +
                                               toml(value) + " } }")  # fmt: skip
    try:
        rule = parse_pack(text, "f.toml")[0]
    except RuleError:
        return
    assert python_backend(rule, field, actual) == sql_backend(rule, field, actual, "")
