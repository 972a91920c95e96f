"""The rule engine: rules are data (TOML rule packs), conditions are tables of field tests, not code.

A rule file holds one pack:

    [pack]
    name = "protect"
    description = "..."

    [[rule]]
    id = "protect.eol-os"              # lower case, dots and dashes; unique across packs
    title = "Operating system past end of life"
    function = "protect"               # protect, detect or respond
    severity = "high"                  # critical, high, medium, low, info
    subject = "os"                     # asset, os, software, hardware, item, service or finding
    when = { lifecycle_state = "end-of-life" }
    when_any = [{ ... }, { ... }]      # optional: at least one of these must hold as well
    rationale = "..."
    remediation = "..."
    decommission = "..."               # optional; for end-of-life rules
    [rule.references]
    nist_csf = ["PR.PS-02"]
    ncsc_caf = ["B4.d"]
    cyber_essentials = ["Security update management"]

A test is `field = value` (equal), `field = [a, b]` (one of) or `field = { op = value }` with op one of
eq, ne, in, not_in, lt, le, gt, ge, matches (a regular expression), exists. On an item, service or finding
subject, `"asset.owner"` reaches the asset's fields. A value `"$name"` reads a setting (horizon_days,
stale_days, uptime_days from [rules]; expiry_warning_days from [tls]).

What a test means, in both interpreters (Python here; SQL in `finding_rule_sql` for finding rules):
- A missing value passes only `ne`, `not_in` and `exists = false`: no tunnel is not "ssl", so the
  cleartext rules (`tunnel = { ne = "ssl" }`) flag it. Every other test fails on it, so unknown is tested
  for by name (`exists`, `os_known`, ...) and never mistaken for safe.
- A number and a string are unequal (`eq`, `ne`, `in`, `not_in`); ordering them (`lt`, `le`, `gt`, `ge`)
  is a mistake in the rule, which fails (below). true and false are the numbers 1 and 0.
- `matches` searches the value's text (its first 4 KiB) for the regular expression.

Values are checked when the pack is loaded: `eq`/`ne` take one string, number (within 64 bits, finite)
or true/false; `in`/`not_in` a list of at most 1,000 of them; `lt`..`ge` a string or a number; `matches`
a regular expression that cannot backtrack without end (see rules/redos.py: no nested quantifiers such as
`(a+)+`); `exists` true or false. TOML dates and times, tables and nested lists are refused. Packs are
checked whole (`posture rules lint`), each error with its file, line and field, so a bad pack stops before
anything is evaluated; a rule that still fails at evaluation becomes one `posture.internal-error` finding
naming it, and the other rules run on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules import redos
from rules.catalogue import DEFAULT_POLICY, POLICIES
from rules.facts import AssetFacts
from rules.tls import FIELDS as TLS_FIELDS
from scanner.compat import tomllib
from scanner.db import Database
from scanner.model import INT64, printable  # INT64: a rule's whole numbers must fit (finding rules run in SQL)

PACKS_DIR = Path(__file__).parent / "packs"
FUNCTIONS = ("protect", "detect", "respond")
SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK = {s: n for n, s in enumerate(reversed(SEVERITIES))}
OPERATORS = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "matches", "exists")
RULE_KEYS = {"id", "title", "function", "severity", "subject", "when", "when_any", "rationale", "remediation",
             "decommission", "references"}  # fmt: skip
REQUIRED = ("id", "title", "function", "severity", "subject", "when", "rationale", "remediation")
REFERENCE_KEYS = {"nist_csf", "ncsc_caf", "cyber_essentials"}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{2,63}$")
INTERNAL_ERROR = "posture.internal-error"
MAX_LIST = 1000  # values in one `in` / `not_in` list
MAX_PACK = 1 << 20  # bytes of one pack file

ASSET_FIELDS = {
    "id", "name", "first_seen", "last_seen", "in_register", "register_loaded", "owner", "has_owner",
    "business_service", "site", "criticality", "days_since_seen", "address", "hostname", "addresses", "is_new",
    "uptime_days", "snmp_default_community", "snmp_version", "device_types", "sys_object_id", "sources", "host_scripts",
    "category", "os_known", "os_version_known", "os_guess", "os_lifecycle_state", "os_lifecycle_published",
    "os_conflicts",
    "in_directory", "directory_only", "directory_logon_days", "directory_stale", "directory_disabled", "dormant",
}  # fmt: skip
ITEM_FIELDS = {
    "kind", "product", "title", "category", "cycle", "cycles", "version", "confidence", "method", "source",
    "evidence", "lifecycle_state", "eol_date", "extended_until", "days_to_eol", "upgrade_path", "kev_count",
    "kev_ids", "kev_ransomware", "packaged_by", "lifecycle_published", "vendor", "family", "model",
}  # fmt: skip
# A device's hardware (rules/hardware.py): the item fields, and the model, vendor, family and end of sale.
HARDWARE_FIELDS = ITEM_FIELDS | {"model", "vendor", "family", "end_of_sale"}
SERVICE_FIELDS = {"port", "protocol", "state", "name", "product", "version", "extra_info", "tunnel", "smb1", "is_new",
                  "smb_signing", "ntlm_script", "ntlm_build",
                  *TLS_FIELDS}  # fmt: skip  # TLS_FIELDS: a TLS port's certificate and protocol grade (rules/tls.py)
FINDING_FIELDS = {"rule_id", "function", "severity", "status", "age_days", "sla_days", "past_sla", "accepted"}
SUBJECT_FIELDS = {
    "asset": ASSET_FIELDS,
    "os": ITEM_FIELDS,
    "software": ITEM_FIELDS,
    "hardware": HARDWARE_FIELDS,
    "item": ITEM_FIELDS,
    "service": SERVICE_FIELDS,
    "finding": FINDING_FIELDS,
}


@dataclass(frozen=True)
class Settings:
    """Thresholds rules refer to as `$name`; from the config file's [rules] table."""

    horizon_days: int = 365  # the planning horizon: end of life within this is flagged now
    stale_days: int = 30  # an asset not seen for this long is reported
    uptime_days: int = 90  # up this long means monthly patches were not installed
    sla_days: dict[str, int] = field(
        default_factory=lambda: {"critical": 14, "high": 30, "medium": 90, "low": 180, "info": 365}
    )
    unsupported_after: str = DEFAULT_POLICY  # [lifecycle]: the milestone that ends support (catalogue POLICIES)
    expiry_warning_days: int = 30  # [tls]: a certificate expiring within this many days is flagged
    min_coverage_percent: int = 90  # a function is GREEN only with this share of assets identified (rules/score.py)

    def get(self, name: str) -> Any:
        return getattr(self, name)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        table = config.get("rules", {}) if isinstance(config, dict) else {}
        if not isinstance(table, dict):
            raise RuleError("config: [rules] must be a table")
        known = {"horizon_months", "horizon_days", "stale_days", "uptime_days", "sla_days", "dirs",
                 "min_coverage_percent"}
        unknown = set(table) - known
        if unknown:
            names = ", ".join(printable(k, 40) for k in sorted(unknown))
            raise RuleError(f"config: unknown key(s) in [rules]: {names}")
        values: dict[str, Any] = {}
        if "horizon_months" in table:
            values["horizon_days"] = _positive(table["horizon_months"], "horizon_months") * 365 // 12
        for key in ("horizon_days", "stale_days", "uptime_days"):
            if key in table:
                values[key] = _positive(table[key], key)
        if "min_coverage_percent" in table:
            value = table["min_coverage_percent"]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                shown = repr(value)[:40] if isinstance(value, str | int | float | bool) else f"a {type(value).__name__}"
                raise RuleError(f"config: [rules] min_coverage_percent must be a whole number from 0 to 100, "
                                f"not {shown}")  # fmt: skip
            values["min_coverage_percent"] = value
        if "sla_days" in table:
            if not isinstance(table["sla_days"], dict):
                raise RuleError("config: [rules] sla_days must be a table of days per severity, e.g. "
                                "sla_days = { critical = 14, high = 30 }")  # fmt: skip
            sla = dict(cls().sla_days)
            for severity, days in table["sla_days"].items():
                if severity not in SEVERITIES:
                    names = ", ".join(SEVERITIES)
                    raise RuleError(f"config: [rules.sla_days] {severity[:40]!r} is not a severity ({names})")
                sla[severity] = _positive(days, f"sla_days.{severity}")
            values["sla_days"] = sla
        lifecycle = _table(config, "lifecycle", {"unsupported_after"})
        if "unsupported_after" in lifecycle:
            policy = lifecycle["unsupported_after"]
            if policy not in POLICIES:
                raise RuleError(f"config: [lifecycle] unsupported_after must be one of {', '.join(POLICIES)}, "
                                f"not {printable(str(policy), 40)}")  # fmt: skip
            values["unsupported_after"] = policy
        tls = _table(config, "tls", {"expiry_warning_days"})
        if "expiry_warning_days" in tls:
            values["expiry_warning_days"] = _positive(tls["expiry_warning_days"], "expiry_warning_days", "tls")
        return cls(**values)


def _table(config: Any, name: str, keys: set[str]) -> dict[str, Any]:
    """A config table of the rules stage (`[lifecycle]`, `[tls]`), its keys checked: a typo is refused, never
    silently ignored."""
    table = config.get(name, {}) if isinstance(config, dict) else {}
    if not isinstance(table, dict):
        raise RuleError(f"config: [{name}] must be a table")
    unknown = set(table) - keys
    if unknown:
        names = ", ".join(printable(k, 40) for k in sorted(unknown))
        raise RuleError(f"config: unknown key(s) in [{name}]: {names}")
    return table


SETTING_NAMES = {"horizon_days", "stale_days", "uptime_days", "expiry_warning_days"}


MAX_SETTING_DAYS = 36_500  # a hundred years: more would overflow the date arithmetic of plans and findings


def _positive(value: Any, name: str, table: str = "rules") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SETTING_DAYS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # repr() of a 5,000-digit int would raise
        shown = "0 or less" if value < 1 else f"more than {MAX_SETTING_DAYS}"
    else:
        shown = repr(value)[:40] if isinstance(value, str | float | bool) else f"a {type(value).__name__}"
    raise RuleError(f"config: [{table}] {name} must be a whole number from 1 to {MAX_SETTING_DAYS}, not {shown}")


class RuleError(ValueError):
    """A rule pack that cannot be used; the message names the file, line and field."""


Test = Callable[[dict[str, Any], dict[str, Any]], bool]
Condition = tuple[str, str, Any]  # (field, operator, value): one checked test, settings filled in


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per loaded rule
class Rule:
    id: str
    title: str
    function: str
    severity: str
    subject: str
    when: dict[str, Any]
    when_any: tuple[dict[str, Any], ...]
    rationale: str
    remediation: str
    decommission: str | None
    references: dict[str, tuple[str, ...]]
    pack: str
    source: str  # file:line, for `rules show` and error messages
    tests: tuple[Test, ...] = field(compare=False, repr=False, default=())
    any_tests: tuple[tuple[Test, ...], ...] = field(compare=False, repr=False, default=())
    conditions: tuple[Condition, ...] = field(compare=False, repr=False, default=())
    any_conditions: tuple[tuple[Condition, ...], ...] = field(compare=False, repr=False, default=())

    def matches(self, subject: dict[str, Any], asset: dict[str, Any], start: int = 0) -> bool:
        """Every test of `when` (from the `start`-th: those before it are known to hold) and one group of
        `when_any`, each in order, stopping at the first that fails. Loops, not all() over generators: this
        runs a million times an evaluation."""
        for test in self.tests[start:] if start else self.tests:
            if not test(subject, asset):
                return False
        if not self.any_tests:
            return True
        for group in self.any_tests:
            for test in group:
                if not test(subject, asset):
                    break
            else:
                return True
        return False

    def subject_tests(self) -> int:
        """How many of `when`'s tests, from the first, read only the subject (none for an asset rule): their
        verdict on a shared subject holds on every asset that has it."""
        if self.subject == "asset":
            return 0
        return next((n for n, c in enumerate(self.conditions) if c[0].startswith("asset.")), len(self.conditions))

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "function": self.function, "severity": self.severity,
            "subject": self.subject, "when": self.when, "when_any": list(self.when_any),
            "rationale": self.rationale, "remediation": self.remediation, "decommission": self.decommission,
            "references": {k: list(v) for k, v in self.references.items()}, "pack": self.pack, "source": self.source,
        }  # fmt: skip


def _line_of(text: str, rule_index: int, key: str | None) -> int:
    """The line of the n-th [[rule]] (or of `key` inside it), for error messages that point somewhere."""
    lines = text.splitlines()
    headers = [n for n, line in enumerate(lines) if line.strip().startswith("[[rule]]")]
    if rule_index >= len(headers):
        return 1
    start = headers[rule_index]
    end = headers[rule_index + 1] if rule_index + 1 < len(headers) else len(lines)
    if key:
        pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*[=.]|[{{,]\s*"?{re.escape(key)}"?\s*=')
        for n in range(start, end):
            if pattern.search(lines[n]):
                return n + 1
    return start + 1


def _get(path: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    if path.startswith("asset."):
        name = path[6:]
        return lambda subject, asset: asset.get(name)
    return lambda subject, asset: subject.get(path)


def _compare(op: str, actual: Any, expected: Any) -> bool:
    """One comparison, as the module docstring defines it (a missing value passes only ne and not_in;
    ordering a number against text raises TypeError, which makes the rule an internal error)."""
    if actual is None:
        return op in ("ne", "not_in") and expected is not None
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    if op == "lt":
        return bool(actual < expected)
    if op == "le":
        return bool(actual <= expected)
    if op == "gt":
        return bool(actual > expected)
    if op == "ge":
        return bool(actual >= expected)
    raise RuleError(f"unknown operator {op}")


def search(pattern: re.Pattern[str] | str, value: Any) -> bool:
    """`matches`: the pattern found in the value's text, of which only the first 4 KiB is read (so a
    pattern that slipped past rules/redos.py still cannot run long on a device's banner)."""
    return value is not None and re.search(pattern, str(value)[: redos.MATCH_LIMIT]) is not None


def _value_problem(value: Any) -> str | None:
    """Why `value` cannot be compared, or None: a string, a whole number within 64 bits, a finite number,
    true or false (a TOML date or time, a table or a list cannot)."""
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if value in INT64 else "a whole number beyond 64 bits (at most 9223372036854775807)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    kind = "a table" if isinstance(value, dict) else "a list" if isinstance(value, list) else "a TOML date or time"
    return f"{kind} cannot be compared (give a string, a number or true/false)"


def _compile_test(field_name: str, spec: Any, settings: Settings,
                  fail: Callable[[str, str], None]) -> list[Condition]:  # fmt: skip
    """`x = v`, `x = [..]` or `x = { op = v, ... }` (several operators must all hold: a range)."""
    if isinstance(spec, list):
        spec = {"in": spec}
    elif not isinstance(spec, dict):
        spec = {"eq": spec}
    if not spec:
        fail(field_name, f"a test on {field_name!r} needs an operator")
    return [_check_op(field_name, op, value, settings, fail) for op, value in spec.items()]


def _check_op(field_name: str, op: str, value: Any, settings: Settings,
              fail: Callable[[str, str], None]) -> Condition:  # fmt: skip
    """One operator's argument, checked for its type (and a setting's name filled in by its value)."""
    if op not in OPERATORS:
        fail(field_name, f"unknown operator {op!r} on {field_name!r} (use {', '.join(OPERATORS)})")
    if isinstance(value, str) and value.startswith("$"):
        if value[1:] not in SETTING_NAMES:
            fail(field_name, f"unknown setting {value!r} (use ${', $'.join(sorted(SETTING_NAMES))})")
        value = settings.get(value[1:])
    where = f"{op!r} on {field_name!r}"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or len(value) > MAX_LIST:
            fail(field_name, f"{where} needs a list of at most {MAX_LIST:,} values")
        problems = [p for v in value if (p := _value_problem(v))]
        if problems:
            fail(field_name, f"{where}: {problems[0]}")
    elif op == "matches":
        if not isinstance(value, str):
            fail(field_name, f"{where} needs a regular expression string")
        refused = redos.problem(value)
        if refused:
            fail(field_name, f"bad regular expression on {field_name!r}: {refused}")
    elif op == "exists":
        if not isinstance(value, bool):
            fail(field_name, f"'exists' on {field_name!r} takes true or false")
    elif op in ("lt", "le", "gt", "ge") and isinstance(value, bool):
        fail(field_name, f"{where} needs a number or a string")
    elif problem := _value_problem(value):
        fail(field_name, f"{where}: {problem}")
    return field_name, op, value


def _test(condition: Condition) -> Test:
    """The Python interpreter of one checked condition."""
    field_name, op, expected = condition
    get = _get(field_name)
    if op == "matches":
        pattern = re.compile(expected)
        return lambda s, a: search(pattern, get(s, a))
    if op == "exists":
        return lambda s, a: (get(s, a) not in (None, "", [])) is expected
    return lambda s, a: _compare(op, get(s, a), expected)


def _compile_when(when: Any, subject: str, settings: Settings, key: str,
                  fail: Callable[[str, str], None]) -> tuple[Condition, ...]:  # fmt: skip
    if not isinstance(when, dict) or not when:
        fail(key, f'{key!r} must be a table of field tests, e.g. {{ lifecycle_state = "end-of-life" }}')
    conditions = []
    for name, spec in when.items():
        known = SUBJECT_FIELDS[subject]
        bare = name[6:] if name.startswith("asset.") and subject != "asset" else name
        fields = ASSET_FIELDS if name.startswith("asset.") and subject != "asset" else known
        if bare not in fields:
            fail(name, f"unknown field {name!r} for subject {subject!r} (fields: {', '.join(sorted(known))})")
        conditions.extend(_compile_test(name, spec, settings, fail))
    return tuple(conditions)


def parse_pack(text: str, where: str, settings: Settings | None = None) -> list[Rule]:
    """One pack file's rules, every field checked; the first problem raises RuleError with file:line."""
    settings = settings or Settings()
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
        raise RuleError(f"{where}: not valid TOML: {str(exc)[:200]}") from exc
    unknown_top = set(data) - {"pack", "rule"}
    if unknown_top:
        raise RuleError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown_top))} (use [pack] and [[rule]])")
    pack = data.get("pack", {})
    if not isinstance(pack, dict) or not isinstance(pack.get("name"), str) or not pack["name"]:
        raise RuleError(f'{where}:1: a pack needs [pack] name = "..."')
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RuleError(f"{where}: the pack has no [[rule]] tables")
    rules = []
    for index, raw in enumerate(raw_rules):

        def fail(key: str | None, message: str, index: int = index) -> None:
            raise RuleError(f"{where}:{_line_of(text, index, key)}: rule #{index + 1}: {message}")

        unknown = set(raw) - RULE_KEYS
        if unknown:
            fail(sorted(unknown)[0], f"unknown field(s) {', '.join(sorted(unknown))} "
                                     f"(a rule has {', '.join(sorted(RULE_KEYS))})")  # fmt: skip
        for key in REQUIRED:
            if key not in raw:
                fail(None, f"missing field {key!r}")
        for key in ("id", "title", "function", "severity", "subject", "rationale", "remediation"):
            if not isinstance(raw[key], str) or not raw[key].strip():
                fail(key, f"{key!r} must be a non-empty string")
        if not ID_RE.match(raw["id"]):
            fail("id", f"id {raw['id'][:70]!r} must be lower case letters, digits, dots and dashes (3-64)")
        if raw["function"] not in FUNCTIONS:
            fail("function", f"function {raw['function'][:40]!r} is not one of {', '.join(FUNCTIONS)}")
        if raw["severity"] not in SEVERITIES:
            fail("severity", f"severity {raw['severity'][:40]!r} is not one of {', '.join(SEVERITIES)}")
        if raw["subject"] not in SUBJECT_FIELDS:
            fail("subject", f"subject {raw['subject'][:40]!r} is not one of {', '.join(SUBJECT_FIELDS)}")
        refs = raw.get("references", {})
        if not isinstance(refs, dict) or set(refs) - REFERENCE_KEYS:
            fail("references", f"references take {', '.join(sorted(REFERENCE_KEYS))}, each a list of strings")
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in refs.values()):
            fail("references", "each reference is a list of strings")
        decommission = raw.get("decommission")
        if decommission is not None and not isinstance(decommission, str):
            fail("decommission", "'decommission' must be a string")
        conditions = _compile_when(raw["when"], raw["subject"], settings, "when", fail)
        when_any = raw.get("when_any", [])
        if not isinstance(when_any, list):
            fail("when_any", "'when_any' must be a list of tables")
        any_conditions = tuple(_compile_when(w, raw["subject"], settings, "when_any", fail) for w in when_any)
        rules.append(Rule(
            id=raw["id"], title=raw["title"].strip(), function=raw["function"], severity=raw["severity"],
            subject=raw["subject"], when=raw["when"], when_any=tuple(when_any), rationale=raw["rationale"].strip(),
            remediation=raw["remediation"].strip(), decommission=decommission.strip() if decommission else None,
            references={k: tuple(v) for k, v in refs.items()}, pack=pack["name"],
            source=f"{where}:{_line_of(text, index, None)}", tests=tuple(map(_test, conditions)),
            any_tests=tuple(tuple(map(_test, group)) for group in any_conditions), conditions=conditions,
            any_conditions=any_conditions,
        ))  # fmt: skip
    return rules


def pack_files(extra_dirs: Iterable[Path] = ()) -> list[Path]:
    files = sorted(PACKS_DIR.glob("*.toml"))
    for directory in extra_dirs:
        if not directory.is_dir():
            raise RuleError(f"{directory}: not a directory of rule packs")
        found = sorted(directory.glob("*.toml"))
        if not found:
            raise RuleError(f"{directory}: no *.toml rule packs in it")
        files.extend(found)
    return files


def load_rules(extra_dirs: Iterable[Path] = (), settings: Settings | None = None) -> list[Rule]:
    """The built-in packs and any from --rules DIR; ids must be unique across all of them."""
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in pack_files(extra_dirs):
        if not path.is_file():  # a FIFO or a device would block the read, or never end
            raise RuleError(f"{path}: not a regular file")
        try:
            with path.open("rb") as file:
                text = file.read(MAX_PACK + 1).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(f"{path}: cannot read ({exc})") from exc
        if len(text) > MAX_PACK:
            raise RuleError(f"{path}: a rule pack is at most {MAX_PACK // 1024:,} KiB")
        where = path.name if path.parent == PACKS_DIR else str(path)
        for rule in parse_pack(text, where, settings):
            if rule.id in seen:
                raise RuleError(f"{rule.source}: rule id {rule.id!r} is already used at {seen[rule.id]}")
            seen[rule.id] = rule.source
            rules.append(rule)
    return rules


@dataclass(slots=True)
class Hit:
    """One rule matching one subject of one asset (or of no asset, for internal errors)."""

    rule: Rule
    asset: dict[str, Any] | None
    subject: dict[str, Any]
    key: str  # what on the asset the finding is about: "os:windows:5-sp3", "tcp/23", ...


def subject_key(kind: str, subject: dict[str, Any]) -> str:
    if kind in ("os", "software", "item"):
        return f"{subject['kind']}:{subject['product']}:{subject['cycle'] or '|'.join(subject['cycles'])}"
    if kind == "hardware":
        return f"hardware:{subject['product']}:{subject['model'] or subject['cycle'] or ''}"
    if kind == "service":
        return f"{subject['protocol']}/{subject['port']}"
    return ""


def _subjects(kind: str, facts: AssetFacts) -> list[dict[str, Any]]:
    if kind == "asset":
        return [facts.asset]
    if kind == "service":
        return facts.services
    if kind == "software":
        return facts.software
    if kind == "hardware":
        return facts.hardware
    if kind == "os":
        return [facts.os] if facts.os is not None else []
    return [facts.os, *facts.software] if facts.os is not None else facts.software


def reads_asset(rule: Rule) -> bool:
    return any(k.startswith("asset.") for w in (rule.when, *rule.when_any) for k in w)


class Evaluator:
    """Applies rules to assets; a rule that raises is switched off for the run and reported once.

    Items and services are shared between assets (see facts.AssetFacts), so a rule that reads only its
    subject is judged once per distinct subject: 100,000 hosts with the same Office 2010 cost one test.
    """

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = [r for r in rules if r.subject != "finding"]
        self.finding_rules = [r for r in rules if r.subject == "finding"]
        self.errors: dict[str, str] = {}
        local = [r for r in self.rules if r.subject != "asset" and not reads_asset(r)]
        self._asset_rules = [r for r in self.rules if r not in local]
        # Which subject-only rules look at each kind of shared subject.
        self._local = {
            "os": [r for r in local if r.subject in ("os", "item")],
            "software": [r for r in local if r.subject in ("software", "item")],
            "service": [r for r in local if r.subject == "service"],
            "hardware": [r for r in local if r.subject == "hardware"],
        }
        # (kind, id(subject)) -> (subject, [(rule, key), ...]); holding the subject keeps its id unique
        self._cache: dict[tuple[str, int], tuple[dict[str, Any], list[tuple[Rule, str]]]] = {}
        # A rule that reads the asset too, on a shared subject: its leading subject-only tests are judged once
        # per subject (`_leads_of`), the rest of its tests per asset.
        self._leading = {r: r.subject_tests() for r in self._asset_rules}
        self._lead_kinds: dict[str, list[Rule]] = {}  # subject kind -> those rules, in order
        for rule in self._asset_rules:
            if rule.subject != "asset":
                self._lead_kinds.setdefault(rule.subject, []).append(rule)
        # (kind, id(subject)) -> (subject, [(rule, the test to start from), ...])
        self._lead_cache: dict[tuple[str, int], tuple[dict[str, Any], list[tuple[Rule, int]]]] = {}

    def _matches_of(self, kind: str, subject: dict[str, Any]) -> list[tuple[Rule, str]]:
        cached = self._cache.get((kind, id(subject)))
        if cached is None:
            found = []
            for rule in self._local[kind]:
                if rule.id in self.errors:
                    continue
                try:
                    if rule.matches(subject, {}):
                        found.append((rule, subject_key(rule.subject, subject)))
                except Exception as exc:  # any failure of one rule must not stop the run
                    self.errors[rule.id] = f"{type(exc).__name__}: {str(exc)[:300]}"
            cached = (subject, found)
            if len(self._cache) < 1_000_000:
                self._cache[(kind, id(subject))] = cached
        return cached[1]

    def shared(self, facts: AssetFacts) -> Iterator[tuple[dict[str, Any], list[tuple[Rule, str]]]]:
        """Each shared subject of the asset (its programs, services, hardware, OS) with the (rule, key) of
        each subject-only rule that matches it: one list per subject for the whole run, the same object
        every time (a caller may key its own cache on it while holding it). A rule in `errors` may still be
        listed: skip it."""
        for s in facts.software:
            yield s, self._matches_of("software", s)
        for s in facts.services:
            yield s, self._matches_of("service", s)
        for h in facts.hardware:
            yield h, self._matches_of("hardware", h)
        if facts.os is not None:
            yield facts.os, self._matches_of("os", facts.os)

    def _leads_of(self, kind: str, subject: dict[str, Any]) -> list[tuple[Rule, int]]:
        """The asset-reading rules on `kind` whose leading subject-only tests hold on this shared subject, each
        with the test its per-asset check starts from; judged once per subject. A rule whose leading tests
        raise is listed from its first test, so the check on the asset raises as it would have there."""
        cached = self._lead_cache.get((kind, id(subject)))
        if cached is None:
            leads = []
            for rule in self._lead_kinds[kind]:
                leading = self._leading[rule]
                try:
                    if all(test(subject, {}) for test in rule.tests[:leading]):
                        leads.append((rule, leading))
                except Exception:  # judged again on the asset, where the failure is reported
                    leads.append((rule, 0))
            cached = (subject, leads)
            if len(self._lead_cache) < 1_000_000:
                self._lead_cache[(kind, id(subject))] = cached
        return cached[1]

    def assess_asset(self, facts: AssetFacts) -> Iterator[tuple[Rule, dict[str, Any]]]:
        """(rule, subject) for each match of the rules that read the asset (asset rules, and rules on a
        subject that test the asset too), rule by rule in order, each over its subjects in order; the
        subject-only rules' come from `shared`. Only the subjects whose subject-only tests hold (`_leads_of`)
        are checked against the asset."""
        asset = facts.asset
        candidates: dict[Rule, list[tuple[dict[str, Any], int]]] = {}
        for kind in self._lead_kinds:
            for subject in _subjects(kind, facts):
                for rule, start in self._leads_of(kind, subject):
                    candidates.setdefault(rule, []).append((subject, start))
        for rule in self._asset_rules:
            if rule.id in self.errors:
                continue
            try:
                for subject, start in [(asset, 0)] if rule.subject == "asset" else candidates.get(rule, ()):
                    if rule.matches(subject, asset, start):
                        yield rule, subject
            except Exception as exc:  # any failure of one rule must not stop the run
                self.errors[rule.id] = f"{type(exc).__name__}: {str(exc)[:300]} (asset {asset.get('id')})"

    def assess_findings(self, findings: Iterable[dict[str, Any]], assets: dict[int, dict[str, Any]]) -> Iterator[Hit]:
        """`finding` rules over a stream of findings (each read once)."""
        for finding in findings:
            asset = assets.get(finding["asset_id"]) or {}
            for rule in self.finding_rules:
                if rule.id in self.errors:
                    continue
                try:
                    matched = rule.matches(finding, asset)
                except Exception as exc:  # any failure of one rule must not stop the run
                    self.errors[rule.id] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    continue
                if matched:
                    yield Hit(rule, asset or None, finding, f"finding:{format_id(finding['id'])}")


HALF = 32  # a finding's number: its asset's id in the high half, a digest of its whole key in the low half
LOW = (1 << HALF) - 1


def swap_halves(number: int) -> int:
    """The two 32-bit halves of a finding's number exchanged: the id people see shows the digest first, so
    one rule's findings on different assets differ in their first characters, while the database keeps the
    asset first, so an evaluation writes its findings in key order (written in random order, 1.5 million
    findings took the evaluation of 100,000 assets from 34 s to 51 s). Its own inverse."""
    return ((number & LOW) << HALF) | (number >> HALF)


def format_id(number: int) -> str:
    """A finding's id as users see and type it: F- and the hex digits of its number, halves exchanged."""
    return f"F-{swap_halves(number):x}"


# The number `format_id` shows, in SQL, for lookups that match ids as the CLI shows them: the store's
# `Dialect.shown_id` of it is the F-... text (printf on SQLite, to_hex on PostgreSQL; the same digits).
SQL_SWAPPED_ID = "((id & 4294967295) << 32) | (id >> 32)"


SQL_ORDER = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
SQL_NUMBER, SQL_TEXT = "('integer', 'real')", "('text')"


def _sql_condition(name: str, op: str, value: Any, params: list[Any]) -> str:
    """One condition in SQL with `_compare`'s meaning: each comparison first checks the column's type, so
    SQLite's type affinity never makes "5" equal 5 and NULL never leaks out of a NOT; ordering a value of
    the other type calls `_compare` itself (posture_compare), which fails as the Python side does."""
    if op == "matches":
        params.append(value)
        return f"regexp(?, {name})"
    if op == "exists":
        return f"({name} IS NOT NULL AND {name} != '')" if value else f"({name} IS NULL OR {name} = '')"
    if op in ("in", "not_in"):
        numbers = [int(v) if isinstance(v, bool) else v for v in value if not isinstance(v, str)]
        texts = [v for v in value if isinstance(v, str)]
        parts = [f"(typeof({name}) IN {kinds} AND {name} IN ({','.join('?' * len(vs))}))"
                 for kinds, vs in ((SQL_NUMBER, numbers), (SQL_TEXT, texts)) if vs]  # fmt: skip
        params.extend([*numbers, *texts])
        inside = " OR ".join(parts) or "0"
        return f"({inside})" if op == "in" else f"NOT ({inside})"
    kinds = SQL_TEXT if isinstance(value, str) else SQL_NUMBER
    value = int(value) if isinstance(value, bool) else value
    if op in ("eq", "ne"):
        params.append(value)
        return f"{'' if op == 'eq' else 'NOT '}(typeof({name}) IN {kinds} AND {name} = ?)"
    params.extend([value, op, value])
    return (f"(CASE WHEN {name} IS NULL THEN 0 WHEN typeof({name}) IN {kinds} THEN {name} {SQL_ORDER[op]} ? "
            f"ELSE posture_compare(?, {name}, ?) END)")  # fmt: skip


def sql_functions(conn: Database) -> list[Exception]:
    """Register what `finding_rule_sql`'s conditions call: the Python interpreter's own `search` and
    `_compare`. Returns a list that collects what posture_compare raised (SQLite reports only "user-defined
    function raised exception"), for the internal-error finding."""
    raised: list[Exception] = []

    def compare(op: str, actual: Any, expected: Any) -> bool:
        try:
            return _compare(op, actual, expected)
        except Exception as exc:
            raised.append(exc)
            raise

    if conn.dialect.name == "sqlite":  # PostgreSQL never runs them: `finding_rule_sql` gives it None
        conn.raw.create_function("regexp", 2, search, deterministic=True)
        conn.raw.create_function("posture_compare", 3, compare, deterministic=True)
    return raised


def finding_rule_sql(rule: Rule, dialect: str = "sqlite") -> tuple[str, list[Any]] | None:
    """A `finding` rule's condition as an SQL WHERE clause over the finding facts (same meaning as
    `Rule.matches`, with the functions of `sql_functions`), so it runs inside SQLite over millions of
    findings; None when it needs asset facts, or on another store than SQLite (`dialect`): PostgreSQL's
    `~` is not Python's `re` (`\\b` is a backspace there) and its functions would need PL/Python, so the
    Python interpreter tests such rules there. Column names come only from FINDING_FIELDS (checked when the
    pack was loaded); values are parameters."""
    if reads_asset(rule) or dialect != "sqlite":
        return None
    params: list[Any] = []

    def all_of(conditions: tuple[Condition, ...]) -> str:
        for name, _, _ in conditions:
            if name not in FINDING_FIELDS:
                raise RuleError(f"{rule.source}: unknown finding field {name!r}")
        return " AND ".join(_sql_condition(n, op, v, params) for n, op, v in conditions) or "1"

    where = all_of(rule.conditions)
    if rule.any_conditions:
        where += " AND (" + " OR ".join(f"({all_of(g)})" for g in rule.any_conditions) + ")"
    return where, params
