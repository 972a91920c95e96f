"""Evaluations and findings: rules applied to the inventory, kept across scans with a status each.

A finding is one rule matching one subject ("tcp/23", "os:windows:5-sp3") of one asset. Its id is the
asset's id and a digest of rule and subject, so the same problem keeps its id from one evaluation to the
next and can be tracked, accepted and counted. Status:

    new        found by this evaluation for the first time
    open       found by this evaluation and the one before
    fixed      found before, not found now
    reopened   found now after having been fixed

The whole evaluation is one transaction: a killed evaluation leaves the previous findings as they were.
Only what changed is written: a finding found again with the same details is not touched (its row says
when it last changed; an open finding was last seen on the newest evaluation's day), so a daily run over
a steady estate writes its few changes, not 1.5 million rows (and PostgreSQL keeps no dead copy of each).
The rest streams in batches and SQLite works out each status (UPSERT) from what the table holds; what a
finding is about (product, lifecycle, evidence) is stored once per distinct subject, without the day it
was judged on (`days_to_eol` is worked out when the finding is read). Accepted findings (the exceptions
register) keep their status and are counted apart, never hidden; an acceptance past its `until` day simply
stops applying.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cache
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

from rules import evidence, identities, score
from rules.catalogue import DEFAULT_POLICY, Catalogue
from rules.engine import (
    HALF,
    INTERNAL_ERROR,
    SEVERITY_RANK,
    SQL_SWAPPED_ID,
    Evaluator,
    Hit,
    Rule,
    Settings,
    finding_rule_sql,
    format_id,
    reads_asset,
    sql_functions,
    subject_key,
    swap_halves,
)
from rules.facts import Identifier, load_facts
from rules.kev import KevCatalogue
from rules.tls import FIELDS as TLS_FIELDS
from rules.tls import evidence as tls_evidence
from scanner.db import Database, Dialect
from scanner.errors import PostureError
from scanner.model import INT64, printable
from scanner.store import Store, utc_now
from scanner.views import asset_addresses

OPEN_STATES = ("new", "open", "reopened")
# Nothing that changes with the day alone: a finding's details then stay the same row while nothing changes.
DETAIL_ITEM_FIELDS = ("kind", "product", "label", "title", "version", "cycle", "cycles", "lifecycle_state", "eol_date",
                      "extended_until", "confidence", "method", "packaged_by", "kev_count",
                      "kev", "months_only", "lifecycle_sources", "vendor_policy", "note")  # fmt: skip
HARDWARE_DETAIL_FIELDS = ("vendor", "family", "model", "end_of_sale")
DETAIL_SERVICE_FIELDS = ("port", "protocol", "name", "product", "version", "extra_info")
BATCH = 20_000


def finding_number(rule_id: str, asset_id: int | None, subject: str) -> int:
    """Stable across evaluations: the asset's id in the high 32 bits (so two assets never share a number,
    and an evaluation writes in key order) and a 31-bit digest of the whole key (rule, asset, subject) in
    the low ones. The id people see exchanges the halves (rules/engine.py `format_id`): the digest first,
    so one rule's findings on different assets differ in their first characters (`F-3a91c2d400000004`,
    `F-1f07e9b100000005`), where version 3 and earlier showed F-497ed9bcf and F-597ed9bcf. The rules
    stage's migration v4 renumbers stored findings."""
    return ((asset_id or 0) << HALF) | _digest(f"{rule_id}\x00{asset_id or 0}\x00{subject}".encode())


def _digest(key: bytes) -> int:
    """The low half of a finding's number: 31 bits of the key's BLAKE2b digest."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") >> 1


FINDING_ID = re.compile(r"F-([0-9a-fA-F]{1,16})")


def parse_id(text: str) -> int | None:
    """A finding id as `format_id` writes it: F- and hex digits of either case (F-2D6 is F-2d6), within
    SQLite's INTEGER. Anything else is not a finding id (None): no 0x, no sign, no spaces, no 17th digit."""
    match = FINDING_ID.fullmatch(text)
    shown = int(match[1], 16) if match else None
    if shown is None or shown not in INT64:
        return None
    number = swap_halves(shown)
    return number if number in INT64 else None


@cache
def _tested(rule: Rule) -> tuple[str, ...]:
    """The fields a rule tests, each once."""
    return tuple(dict.fromkeys([*rule.when, *(n for w in rule.when_any for n in w)]))


def _asset_evidence(rule: Rule, asset: dict[str, Any]) -> str:
    """The asset facts the rule tested, in plain words (rules/evidence.py): what made it match."""
    return evidence.say([n.removeprefix("asset.") for n in _tested(rule)], asset)


OS_SUMMARY = ("product", "cycle", "lifecycle_state", "label")  # what an asset finding's details say of its OS


def _text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class _Details:
    """Each finding's details as a row of `finding_details`, written once per distinct JSON text. The rows
    stored already are known by a digest of their text from the start: a run that finds what the last one
    found asks the store nothing (on PostgreSQL each question is a round trip, and an upsert a dead row)."""

    def __init__(self, conn: Database) -> None:
        self.conn = conn
        stored = conn.execute("SELECT id, json FROM finding_details")
        self._stored = {_text_digest(text): row_id for row_id, text in stored}
        # A new text is numbered here and written before the findings that name it (`write`), in batches: the
        # evaluation holds the writer lock, so the numbers are its own (an upsert each was a round trip).
        self._next = max(self._stored.values(), default=0) + 1
        self._new: list[tuple[int, str]] = []
        # (id(shared subject), protocols first) -> (subject, row id)
        self._by_subject: dict[tuple[int, bool], tuple[dict[str, Any], int]] = {}
        self._by_text: dict[str, int] = {}
        self._by_asset_values: dict[tuple[Any, ...], int] = {}
        # rule -> (its subject is shared, a TLS port's protocols lead its evidence): asked once per rule
        self._how: dict[Rule, tuple[bool, bool]] = {}
        self._by_finding: dict[tuple[Any, ...], int] = {}  # (severity, rule id, SLA) -> row id

    def row(self, text: str) -> int:
        found = self._by_text.get(text)
        if found is None:
            digest = _text_digest(text)
            found = self._stored.get(digest)
            if found is None:
                found = self._stored[digest] = self._next
                self._next += 1
                self._new.append((found, text))
            if len(self._by_text) < 200_000:
                self._by_text[text] = found
        return found

    def write(self) -> None:
        """The rows numbered since the last write (before any finding naming them is written)."""
        if self._new:
            self.conn.executemany("INSERT INTO finding_details (id, json) VALUES (?, ?)", self._new)
            self._new.clear()

    def __call__(self, hit: Hit) -> int:
        kind, s = hit.rule.subject, hit.subject
        how = self._how.get(hit.rule)
        if how is None:
            # A TLS port's evidence leads with what the rule tested: its protocols, or its certificate.
            tls = kind == "service" and any(n.startswith("tls_") for n in _tested(hit.rule))
            how = self._how[hit.rule] = (kind in ("os", "software", "item", "service", "hardware"), tls)
        if how[0]:  # shared subjects: once each
            protocols_first = how[1]
            cached = self._by_subject.get((id(s), protocols_first))
            if cached is None:
                cached = (s, self.row(json.dumps(self._shared(kind, s, protocols_first), default=str)))
                if len(self._by_subject) < 200_000:
                    self._by_subject[(id(s), protocols_first)] = cached
            return cached[1]
        if kind == "finding":  # which finding is in the subject ("finding:F-..."); its age in the findings table
            return self.finding(s["severity"], s["rule_id"], s["sla_days"])
        asset = hit.asset or {}
        os_summary = asset.get("os_summary") or {}
        try:  # the same tested values give the same details: look them up instead of encoding again
            key = (hit.rule.id, *(asset.get(n.removeprefix("asset.")) for n in _tested(hit.rule)), *os_summary.values())
            found = self._by_asset_values.get(key)
        except TypeError:  # a list among the values: not hashable, encode it
            key, found = None, None
        if found is None:
            found = self.row(json.dumps({"evidence": _asset_evidence(hit.rule, asset), "os": os_summary or None}))
            if key is not None and len(self._by_asset_values) < 200_000:
                self._by_asset_values[key] = found
        return found

    def finding(self, severity: str, rule_id: str, sla_days: int) -> int:
        """The details of a finding about a finding open past its SLA: one row per severity, rule and SLA."""
        said = (severity, rule_id, sla_days)
        found = self._by_finding.get(said)
        if found is None:
            text = f"a {severity} {rule_id} finding, open longer than its SLA of {sla_days} days"
            found = self.row(json.dumps({"evidence": text}))
            if len(self._by_finding) < 200_000:
                self._by_finding[said] = found
        return found

    @staticmethod
    def _shared(kind: str, s: dict[str, Any], protocols_first: bool = False) -> dict[str, Any]:
        if kind == "service":
            said = s.get("ntlm_build") and f"({s.get('ntlm_script')}: Windows build {s['ntlm_build']})"
            parts = (f"{s['port']}/{s['protocol']}", s.get("name"), s.get("product"), s.get("version"), said)
            said = " ".join(str(x) for x in parts if x)
            if "cert_cn" not in s and "tls_grade" not in s:
                return {"service": {k: s.get(k) for k in DETAIL_SERVICE_FIELDS}, "evidence": said}
            return {"service": {k: s.get(k) for k in DETAIL_SERVICE_FIELDS},  # a TLS port: what to act on
                    "tls": {k: s.get(k) for k in TLS_FIELDS},
                    "evidence": f"{said}: {tls_evidence(s, protocols_first)}"}  # fmt: skip
        extra = {k: s.get(k) for k in HARDWARE_DETAIL_FIELDS} if kind == "hardware" else {}
        return {**{k: s.get(k) for k in DETAIL_ITEM_FIELDS}, **extra,
                "evidence": evidence.said_by(s.get("method"), s.get("evidence"))}  # fmt: skip


@dataclass
class EvaluationSummary:
    evaluation_id: int
    day: str
    assets: int = 0
    rules: int = 0
    open: int = 0
    new: int = 0
    reopened: int = 0
    fixed: int = 0
    accepted: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    catalogue_date: str = ""
    kev_version: str = ""
    unsupported_after: str = DEFAULT_POLICY  # the lifecycle policy the verdicts used (the report states it)
    score: dict[str, Any] = field(default_factory=dict)  # rules/score.py Judgement.as_dict()


def active_exceptions(store: Store, day: date) -> dict[str, dict[str, Any]]:
    """target (finding or rule id) -> the acceptance that holds on `day` (the latest-ending one)."""
    out: dict[str, dict[str, Any]] = {}
    for target, until, reason, esu in store.conn.execute(
        "SELECT target, until, reason, esu FROM exceptions WHERE until >= ? ORDER BY until", [day.isoformat()]
    ):
        number = parse_id(target)  # one spelling of each finding id (older versions stored it as typed)
        out[format_id(number) if number is not None else target] = {"until": until, "reason": reason,
                                                                    "esu": bool(esu)}  # fmt: skip
    return out


# Found again: same id, first_seen kept; found after a fix: reopened; found twice in one evaluation (two
# items with the same subject): written once. The day and the evaluation are the same for every row of a
# run, so they are written into the statement (`_Writer`) and each row binds only what differs.
UPSERT = """
    INSERT INTO findings (id, rule_id, asset_id, subject, status, first_seen, opened_at, last_seen, evaluation_id,
                          details_id)
    {rows}
    ON CONFLICT(id) DO UPDATE SET
        status = CASE WHEN findings.evaluation_id = excluded.evaluation_id THEN findings.status
                      WHEN findings.status = 'fixed' THEN 'reopened' ELSE 'open' END,
        opened_at = CASE WHEN findings.status = 'fixed' AND findings.evaluation_id != excluded.evaluation_id
                         THEN excluded.opened_at ELSE findings.opened_at END,
        times_reopened = findings.times_reopened
                         + CASE WHEN findings.status = 'fixed' AND findings.evaluation_id != excluded.evaluation_id
                                THEN 1 ELSE 0 END,
        fixed_at = NULL, last_seen = excluded.last_seen, evaluation_id = excluded.evaluation_id,
        details_id = excluded.details_id
"""


UPSERT_VALUES = "VALUES (?, ?, ?, ?, 'new', {day}, {day}, {day}, {evaluation}, ?)"


def upsert(rows: str, day: str, evaluation: int) -> str:
    """UPSERT for `rows` (UPSERT_VALUES) on `day` (a date's text) in `evaluation`."""
    return UPSERT.replace("{rows}", rows).format(day=f"'{date.fromisoformat(day).isoformat()}'",
                                                 evaluation=int(evaluation))  # fmt: skip


class _Found(NamedTuple):
    """A finding as it is the same on every asset that has it (one rule, one subject, one details row), with
    the parts of its number's key around the asset's id (`finding_number`) encoded once."""

    rule_id: str
    subject: str
    details_id: int
    before: bytes  # "rule\x00"
    after: bytes  # "\x00subject"
    said: tuple[str, str]  # (rule id, subject): what holds a number on an asset
    counted: tuple[str, str]  # (rule id, severity)
    unsafe: bool  # a critical or high finding (rules/score.py)

    @classmethod
    def of(cls, rule_id: str, severity: str, subject: str, details_id: int) -> _Found:
        return cls(rule_id, subject, details_id, f"{rule_id}\x00".encode(), f"\x00{subject}".encode(),
                   (rule_id, subject), (rule_id, severity), severity in score.SCORE_SEVERITIES)  # fmt: skip


class _Writer:
    """Batches findings into the open transaction; counts what is accepted and what is not.

    What a rule finds on a shared subject is the same on every asset (Evaluator.shared), so it is made into
    `_Found`s once; per asset only the number (a digest over the asset's id) and one row of five values are
    made for each (`write`): 1.5 million findings of 100,000 assets are 1.5 million such steps, no objects."""

    def __init__(self, conn: Database, evaluation_id: int, day: str,
                 exceptions: dict[str, dict[str, Any]], functions: dict[str, str]) -> None:  # fmt: skip
        self.conn = conn
        self.functions = functions  # rule id -> protect | detect | respond, for the score (rules/score.py)
        self.counted: dict[tuple[str, str], int] = {}  # (rule id, severity) -> findings open and not accepted
        self.unsafe: set[int] = set()  # assets with an open, not accepted critical or high finding
        self.details = _Details(conn)
        self.accepted_ids = {n for t in exceptions if (n := parse_id(t)) is not None}
        self.accepted_rules = {t for t in exceptions if not t.startswith("F-")}
        self.accepted = 0
        self.batch: list[tuple[int, str, int | None, str, int]] = []
        # Open findings not yet found again (id -> details row): one found with the same details is left as
        # it is. The asset rules' come from `before` as the assets come; the others are set by `evaluate`.
        self.previous: dict[int, int] = {}
        self.before: _OpenBefore | None = None
        # The day as a date's own text and the evaluation as a number: nothing else goes into the statement.
        self.upsert = upsert(UPSERT_VALUES, day, evaluation_id)
        self._asset: int | None = None
        # id(Evaluator.shared's list) -> (that list, its findings)
        self._shared: dict[int, tuple[list[tuple[Rule, str]], list[_Found]]] = {}
        self._found: dict[tuple[str, str, int], _Found] = {}  # (rule id, subject, details row) -> the finding
        # (rule, id(shared subject)) -> (the subject, kept alive so its id stays its own; the finding)
        self._on_subject: dict[tuple[Rule, int], tuple[dict[str, Any], _Found]] = {}
        self._taken: dict[int, tuple[str, str]] = {}  # number -> (rule id, subject), on the asset being written

    def add(self, rule_id: str, severity: str, asset_id: int | None, subject: str, details_id: int) -> None:
        self.write(asset_id, (_Found.of(rule_id, severity, subject, details_id),))

    def add_many(self, rule_id: str, severity: str, rows: Iterable[tuple[int | None, str, int]]) -> None:
        """One rule's findings (asset, subject, details row), in asset order: written an asset at a time,
        the rule's part of each number encoded once (the 600,000 past-SLA findings of a large estate)."""
        before, counted, unsafe = f"{rule_id}\x00".encode(), (rule_id, severity), severity in score.SCORE_SEVERITIES
        for asset_id, group in groupby(rows, key=itemgetter(0)):
            self.write(asset_id, [_Found(rule_id, subject, details_id, before, f"\x00{subject}".encode(),
                                         (rule_id, subject), counted, unsafe) for _, subject, details_id in group])

    def write(self, asset_id: int | None, found: Iterable[_Found]) -> None:
        """The findings of one asset (or of none): each one's number, whether it is accepted, its row."""
        high = (asset_id or 0) << HALF
        if asset_id != self._asset:
            self._asset, self._taken = asset_id, {}
            if self.before is not None and high >= self.before.upto:
                self.previous = self.before.reach(high)
        taken, batch, accepted_ids, accepted_rules = self._taken, self.batch, self.accepted_ids, self.accepted_rules
        counted, middle, previous = self.counted, str(asset_id or 0).encode(), self.previous
        for rule_id, subject, details_id, before, after, said, key, unsafe in found:
            number = high | _digest(before + middle + after)  # finding_number
            while (holder := taken.setdefault(number, said)) is not said and holder != said:  # a digest clash
                number += 1  # the next digest: the low half has room (31 bits used)
            if number in accepted_ids or rule_id in accepted_rules:
                self.accepted += 1
            else:
                counted[key] = counted.get(key, 0) + 1
                if unsafe and asset_id is not None:
                    self.unsafe.add(asset_id)
            if previous.pop(number, None) != details_id:  # new, reopened or changed: written; else as it is
                batch.append((number, rule_id, asset_id, subject, details_id))
        if len(batch) >= BATCH:
            self.flush()

    @property
    def severities(self) -> Counter[str]:
        """Findings open and not accepted, by severity (in the order each severity was first found)."""
        out: Counter[str] = Counter()
        for (_, severity), n in self.counted.items():
            out[severity] += n
        return out

    @property
    def worst(self) -> dict[str, str | None]:
        """function -> the worst severity open and not accepted (in the order each function was first found)."""
        out: dict[str, str | None] = {}
        for rule_id, severity in self.counted:
            function = self.functions.get(rule_id)
            if function is not None:
                out[function] = score.worse(out.get(function), severity)
        return out

    def shared(self, subject: dict[str, Any], matches: list[tuple[Rule, str]], asset: dict[str, Any],
               errors: dict[str, str]) -> list[_Found]:  # fmt: skip
        """The findings of the subject-only rules that match a shared subject (Evaluator.shared): made at the
        subject's first asset, kept while `matches` is alive. Once a rule has failed, each match goes the long
        way (no details for the failed rule's)."""
        if errors:
            return [self.found(Hit(rule, asset, subject, key)) for rule, key in matches if rule.id not in errors]
        cached = self._shared.get(id(matches))
        if cached is None:
            cached = (matches, [_Found.of(rule.id, rule.severity, key, self.details(Hit(rule, asset, subject, key)))
                                for rule, key in matches])  # fmt: skip
            if len(self._shared) < 1_000_000:
                self._shared[id(matches)] = cached
        return cached[1]

    def matched(self, rule: Rule, asset: dict[str, Any], subject: dict[str, Any]) -> _Found:
        """The finding of a match of Evaluator.assess_asset. On a shared subject it is the same on every asset
        that has it (its details are the subject's): made once per rule and subject; on the asset itself,
        once per details row (`found`)."""
        if subject is asset:
            return self.found(Hit(rule, asset, subject, ""))
        cached = self._on_subject.get((rule, id(subject)))
        if cached is None:
            hit = Hit(rule, asset, subject, subject_key(rule.subject, subject))
            cached = (subject, _Found.of(rule.id, rule.severity, hit.key, self.details(hit)))
            if len(self._on_subject) < 1_000_000:
                self._on_subject[(rule, id(subject))] = cached
        return cached[1]

    def found(self, hit: Hit) -> _Found:
        """The finding of one hit, made once per rule, subject and details row."""
        rule, details_id = hit.rule, self.details(hit)
        said = (rule.id, hit.key, details_id)
        found = self._found.get(said)
        if found is None:
            found = _Found.of(rule.id, rule.severity, hit.key, details_id)
            if len(self._found) < 200_000:
                self._found[said] = found
        return found

    def flush(self) -> None:
        """Write the batch in id order (a stable sort: a finding found twice is written once, with its last
        details, as writing it twice would leave it): an asset's findings then go in at the end of the table
        one after another, a tenth cheaper than in rule order."""
        self.details.write()
        self.batch.sort(key=itemgetter(0))
        self.conn.upsert_many(self.upsert, list({row[0]: row for row in self.batch}.values()))
        self.batch.clear()


def evaluate(store: Store, rules: list[Rule], catalogue: Catalogue, kev: KevCatalogue, day: date,
             settings: Settings, progress: Callable[[int], None] | None = None) -> EvaluationSummary:  # fmt: skip
    """Apply the rules to every asset and record the findings, all in one transaction."""
    evaluator = Evaluator(rules)
    catalogue = catalogue.with_policy(settings.unsupported_after)
    ident = Identifier(catalogue, kev, day)
    day_text = day.isoformat()
    exceptions = active_exceptions(store, day)
    summary = EvaluationSummary(0, day_text, rules=len(rules), catalogue_date=catalogue.data_date,
                                kev_version=kev.version, unsupported_after=settings.unsupported_after)  # fmt: skip
    wants_assets = any(map(reads_asset, evaluator.finding_rules))  # else asset facts need not be kept
    assets: dict[int, dict[str, Any]] = {}
    try:
        identities.ensure(store)
        # Every reference written below is to a row read or written in this transaction, and nothing is
        # deleted that another row references: SQLite need not check each of a million findings' three.
        with store.transaction(check_references=False) as conn:
            # Numbered after the last one, under the writer lock, as SQLite's rowid is: an evaluation that
            # failed or was killed leaves no gap on PostgreSQL either (its identity sequence would skip one).
            evaluation_id = summary.evaluation_id = int(conn.execute(
                "INSERT INTO evaluations (id, started_at, day, rules, catalogue_date, kev_version, scan_id) "
                "VALUES ((SELECT coalesce(max(id), 0) + 1 FROM evaluations), ?, ?, ?, ?, ?, "
                "(SELECT max(id) FROM scans WHERE status IN ('complete', 'interrupted'))) RETURNING id",
                [utc_now(), day_text, len(rules), catalogue.data_date, kev.version],
            ).fetchone()[0])  # fmt: skip
            _record_rules(conn, rules)
            writer = _Writer(conn, evaluation_id, day_text, exceptions, {r.id: r.function for r in rules})
            # Open findings as the previous evaluation left them: those of the asset rules, then those that
            # the finding rules and failed rules make after the assets (`later`), each fixed when not found.
            later_rules = conn.dialect.list_param([INTERNAL_ERROR, *(r.id for r in evaluator.finding_rules)])
            last = conn.execute("SELECT id, day FROM evaluations WHERE finished_at IS NOT NULL AND id < ? "
                                "ORDER BY id DESC LIMIT 1", [evaluation_id]).fetchone() or (0, day_text)  # fmt: skip
            fix = _Fixer(conn, evaluation_id, day_text, last[1])
            writer.before = _OpenBefore(conn, later_rules, fix)
            later = writer.before.made_later()
            identified = identities.Writer(conn)
            known: set[int] = set()  # assets whose OS release and support status are known (rules/score.py)
            for facts in load_facts(store, ident):
                summary.assets += 1
                if score.is_identified(facts.os):
                    known.add(facts.asset["id"])
                identified.add(facts.asset["id"], facts.asset["category"], facts.roles(), facts.observations)
                if facts.os is not None:
                    facts.asset["os_summary"] = {k: facts.os[k] for k in OS_SUMMARY}
                if wants_assets:
                    assets[facts.asset["id"]] = facts.asset
                found = [f for subject, matches in evaluator.shared(facts) if matches
                         for f in writer.shared(subject, matches, facts.asset, evaluator.errors)]  # fmt: skip
                found += [writer.matched(rule, facts.asset, subject) for rule, subject in evaluator.assess_asset(facts)]
                writer.write(facts.asset["id"], found)
                if progress is not None and summary.assets % 100 == 0:  # the caller throttles what it shows
                    progress(summary.assets)
            writer.flush()
            identified.finish()
            summary.fixed = writer.before.finish()
            writer.before = None
            # Found again unchanged: no longer new or reopened (only the last evaluation made findings so; the
            # row keeps the evaluation that did). Then every finding not fixed is this evaluation's, as the
            # finding rules read them.
            conn.execute("UPDATE findings SET status = 'open' "
                         "WHERE evaluation_id = ? AND status IN ('new', 'reopened')", [last[0]])
            writer.previous = later
            if evaluator.finding_rules:  # findings about findings (past SLA) look at what is open now
                _finding_rules(conn, evaluator, writer, day, settings, exceptions, assets)
            for rule_id, message in evaluator.errors.items():  # a broken rule is a finding, not a crash
                details = writer.details.row(json.dumps({"evidence": message, "rule": rule_id}))
                writer.add(INTERNAL_ERROR, "medium", None, rule_id, details)
            writer.flush()
            summary.fixed += fix(later)
            conn.execute(  # this evaluation's changes, kept so `posture diff` can say what appeared and cleared
                "INSERT INTO finding_events (evaluation_id, finding_id, event) SELECT evaluation_id, id, status "
                "FROM findings WHERE evaluation_id = ? AND status IN ('new', 'reopened', 'fixed')",
                [evaluation_id],
            )
            counted = conn.execute(  # sums, not GROUP BY status: that sorted every open finding first
                "SELECT count(*), sum(CASE WHEN status = 'new' THEN 1 ELSE 0 END), "
                "sum(CASE WHEN status = 'reopened' THEN 1 ELSE 0 END) FROM findings WHERE status != 'fixed'"
            ).fetchone()
            summary.open, summary.new, summary.reopened = (int(n or 0) for n in counted)
            summary.accepted, summary.by_severity = writer.accepted, dict(writer.severities)
            summary.errors = dict(evaluator.errors)
            summary.score = score.judge(summary.assets, len(known), len(writer.unsafe & known), writer.worst,
                                        settings.min_coverage_percent).as_dict()  # fmt: skip
            record = {k: v for k, v in asdict(summary).items() if k != "evaluation_id"}
            record["rule_ids"] = sorted(r.id for r in rules)  # what was applied (the sharing summary names it)
            conn.execute(
                "UPDATE evaluations SET finished_at = ?, assets = ?, summary = ? WHERE id = ?",
                [utc_now(), summary.assets, json.dumps(record), evaluation_id],
            )
    except store.conn.Error as exc:
        raise PostureError(f"could not record the evaluation: {exc}", "nothing changed; check the database") from exc
    return summary


class _OpenBefore:
    """The open findings as the previous evaluation left them. The asset rules' are read a window of asset ids
    at a time as the assets come (in id order: `load_facts`), before any of theirs is written: memory stays
    flat however many there are. Those left in a window when the next one is read were not found again."""

    SPAN = 1_000  # asset ids per window

    def __init__(self, conn: Database, later_rules: Any, fix: _Fixer) -> None:
        self.conn, self.later_rules, self.fix = conn, later_rules, fix
        self.upto = 0  # findings below this id have been read
        self.rows: dict[int, int] = {}  # the window's open findings not found again: id -> details row
        self.fixed = 0

    def _open(self, where: str, params: list[Any]) -> dict[int, int]:
        """id -> details row of the open findings matching `where`."""
        return dict(self.conn.execute(f"SELECT id, details_id FROM findings WHERE status != 'fixed' AND {where}",
                                      [*params, self.later_rules]))  # fmt: skip

    def made_later(self) -> dict[int, int]:
        """The open findings of the finding rules and failed rules (made after the assets): read whole."""
        return self._open(f"rule_id {self.conn.dialect.in_list}", [])

    def _read(self, end: int) -> dict[int, int]:
        """Fix what is left of the window, then read the one up to `end`."""
        self.fixed += self.fix(self.rows)
        rows = self._open(f"id >= ? AND id < ? AND NOT (rule_id {self.conn.dialect.in_list})", [self.upto, end])
        self.upto = end
        return rows

    def reach(self, high: int) -> dict[int, int]:
        """The window from the asset whose findings start at `high` on (the writer pops what it finds)."""
        self.rows = self._read(high + (self.SPAN << HALF))
        return self.rows

    def finish(self) -> int:
        """Fix what is left, in the last window and on every asset after it; how many were fixed in all."""
        self.rows = self._read(INT64.stop - 1)  # the largest id SQLite binds (no asset reaches it)
        self.fixed += self.fix(self.rows)
        self.rows = {}
        return self.fixed


class _Fixer:
    """Marks fixed the open findings an evaluation did not find again. Each was last seen on the previous
    evaluation's day: every open finding was found by it (one evaluation judges the whole inventory)."""

    def __init__(self, conn: Database, evaluation_id: int, day: str, last_day: str) -> None:
        self.conn, self.row = conn, (day, last_day, evaluation_id)

    def __call__(self, left: dict[int, int]) -> int:
        self.conn.executemany("UPDATE findings SET status = 'fixed', fixed_at = ?, last_seen = ?, evaluation_id = ? "
                              "WHERE id = ?", [(*self.row, number) for number in sorted(left)])  # fmt: skip
        return len(left)


def _finding_rules(conn: Database, evaluator: Evaluator, writer: _Writer, day: date,
                   settings: Settings, exceptions: dict[str, dict[str, Any]],
                   assets: dict[int, dict[str, Any]]) -> None:  # fmt: skip
    """Rules about findings. A finding's facts (FINDING_FIELDS) follow from its rule, status, the day it was
    opened and whether it is accepted, so they are worked out once per distinct combination of those
    (`FINDING_GROUPS`: a few dozen, however many findings); a rule is tested on those, in SQL where it
    tests only finding facts, and the findings of the combinations it matches are then read by those four
    values (`_findings_in`). A rule that reads asset facts is tested in Python on each finding."""
    accepted, listed = _accepted(exceptions, conn.dialect)
    sla = f"CASE r.severity {' '.join('WHEN ? THEN ?' for _ in settings.sla_days)} ELSE 365 END"
    by_severity = [x for pair in settings.sla_days.items() for x in pair]
    skip = conn.dialect.list_param([r.id for r in evaluator.finding_rules])
    conn.execute("DROP TABLE IF EXISTS finding_groups")
    conn.execute(FINDING_GROUPS.format(sla=sla if by_severity else "365", accepted=accepted,
                                       age_days=conn.dialect.age_days("g.opened_at"), in_list=conn.dialect.in_list),
                 [day.isoformat(), *by_severity, *listed, skip])  # fmt: skip
    in_python = []
    raised = sql_functions(conn)
    columns = [c for c in FINDING_FACT_KEYS if c not in ("id", "asset_id")]  # a group's facts
    facts = {g[:4]: dict(zip(columns, g[4:], strict=True)) for g in conn.execute(
        f"SELECT {GROUP_KEY}, {', '.join(columns)} FROM finding_groups")}  # fmt: skip
    for rule in evaluator.finding_rules:
        compiled = finding_rule_sql(rule, conn.dialect.name)
        by_group = compiled is None and not reads_asset(rule)  # a finding rule tests no finding's id (FINDING_FIELDS)
        if compiled is None and not by_group:
            in_python.append(rule)
            continue
        raised.clear()
        try:  # what writer.found would make of each finding as a Hit, without making one for each
            where, params = compiled or _groups_marked(conn, rule, facts)
            sql = f"SELECT {GROUP_KEY}, severity, sla_days FROM finding_groups WHERE {where}"
            groups = {g[:4]: g for g in conn.execute(sql, params)}
            details = {key: writer.details.finding(g[4], key[0], g[5]) for key, g in groups.items()}
            writer.add_many(rule.id, rule.severity, (
                (asset_id, f"finding:{format_id(finding_id)}", details[key])
                for finding_id, asset_id, key in _findings_in(conn, accepted, listed, where, params)))  # fmt: skip
        except Exception as exc:  # any failure of one rule must not stop the run (as in the Python back-end)
            cause = raised[-1] if raised else exc
            evaluator.errors[rule.id] = f"{type(cause).__name__}: {str(cause)[:300]}"
    if in_python:
        every = _findings_in(conn, accepted, listed)
        findings = ({"id": finding_id, **facts[key], "asset_id": asset_id} for finding_id, asset_id, key in every)
        evaluator.finding_rules = in_python
        for hit in evaluator.assess_findings(findings, assets):
            writer.write(hit.subject["asset_id"], (writer.found(hit),))
    conn.execute("DROP TABLE finding_groups")


def _groups_marked(conn: Database, rule: Rule, facts: dict[tuple[Any, ...], dict[str, Any]]) -> tuple[str, list[Any]]:
    """A rule on finding facts that SQL cannot test here (PostgreSQL: finding_rule_sql), tested in Python on
    each group of findings (a few dozen) rather than on each finding: the groups it matches are marked, and
    the WHERE clause that selects them."""
    conn.execute("UPDATE finding_groups SET hit = 0")
    marked = [key for key, group in facts.items() if rule.matches(group, {})]
    conn.executemany("UPDATE finding_groups SET hit = 1 "
                     "WHERE rule_id = ? AND status = ? AND opened_at = ? AND accepted = ?", marked)  # fmt: skip
    return "hit = 1", []


def _findings_in(conn: Database, accepted: str, listed: list[str], where: str = "1 = 1",
                 params: Sequence[Any] = ()) -> Iterator[tuple[int, int | None, tuple[Any, ...]]]:  # fmt: skip
    """(id, asset, group) of the open findings whose group (GROUP_KEY) is one of `finding_groups` matching
    `where`, in id order, read in pages so memory stays flat (findings written meanwhile belong to the
    finding rules, whose groups are not among them)."""
    sql = FINDINGS_IN.format(accepted=accepted, key=GROUP_KEY, where=where)
    last = -1
    while True:
        page = conn.execute(sql, [*listed, last, *params, BATCH]).fetchall()
        if not page:
            return
        last = page[-1][0]
        for row in page:
            yield row[0], row[1], row[2:]


def _accepted(exceptions: dict[str, dict[str, Any]], dialect: Dialect) -> tuple[str, list[Any]]:
    """Whether a finding (`f`) is accepted, in SQL (0 or 1), and its parameters. Without exceptions nothing
    is accepted: 0, not two empty lists searched for every finding."""
    ids = [n for t in exceptions if (n := parse_id(t)) is not None]
    rules = [t for t in exceptions if not t.startswith("F-")]
    if not ids and not rules:
        return "0", []
    return (dialect.truth(f"f.id {dialect.in_list} OR f.rule_id {dialect.in_list}"),
            [dialect.list_param(ids), dialect.list_param(rules)])  # fmt: skip


# Facts of the open findings (all this evaluation's, once the others are fixed), as columns named like the
# `finding` subject's fields.
FINDING_FACT_KEYS = ("id", "rule_id", "function", "severity", "status", "age_days", "sla_days", "past_sla",
                     "accepted", "asset_id")  # fmt: skip
# What a finding's facts follow from; one row of `finding_groups` for each distinct value of it. The SLA is a
# CASE over the severities (settings), age and SLA are reckoned as `posture findings` shows them.
GROUP_KEY = "rule_id, status, opened_at, accepted"
FINDING_GROUPS = """
    CREATE TEMP TABLE finding_groups AS
    SELECT rule_id, status, opened_at, accepted, function, severity, age_days, sla_days,
           age_days > sla_days AS past_sla, 0 AS hit
    FROM (
        SELECT g.rule_id, g.status, g.opened_at, g.accepted, r.function, r.severity,
               {age_days} AS age_days,
               {sla} AS sla_days
        FROM (SELECT DISTINCT f.rule_id, f.status, f.opened_at, {accepted} AS accepted FROM findings f
              WHERE f.status != 'fixed'
              AND NOT (f.rule_id {in_list})) g
        JOIN finding_rules r ON r.id = g.rule_id
    ) AS grouped
"""
FINDINGS_IN = """
    SELECT id, asset_id, rule_id, status, opened_at, accepted FROM (
        SELECT f.id, f.asset_id, f.rule_id, f.status, f.opened_at, {accepted} AS accepted FROM findings f
        WHERE f.status != 'fixed' AND f.id > ?
    ) AS o
    WHERE (rule_id, status, opened_at, accepted) IN (SELECT {key} FROM finding_groups WHERE {where})
    ORDER BY id LIMIT ?
"""


def _record_rules(conn: Database, rules: list[Rule]) -> None:
    internal = ("Rule failed to evaluate", "detect", "medium", "posture", "{}")
    rows = [(r.id, r.title, r.function, r.severity, r.pack,
             json.dumps({"rationale": r.rationale, "remediation": r.remediation, "decommission": r.decommission,
                         "references": {k: list(v) for k, v in r.references.items()}}))
            for r in rules] + [(INTERNAL_ERROR, *internal)]  # fmt: skip
    conn.executemany(
        "INSERT INTO finding_rules (id, title, function, severity, pack, detail) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET title = excluded.title, function = excluded.function, "
        "severity = excluded.severity, pack = excluded.pack, detail = excluded.detail",
        rows,
    )




def _asset_places(store: Store) -> dict[int, tuple[str | None, str | None, str | None]]:
    """asset id -> (newest address, newest hostname, owner) as the inventory holds them now."""
    known = asset_addresses(store)
    places = {}
    for asset_id, owner in store.conn.execute("SELECT id, owner FROM assets"):
        addresses, hostname = known.get(asset_id, ([], None))
        places[asset_id] = (addresses[0] if addresses else None, hostname, owner)
    return places


def _kev(details: dict[str, Any]) -> dict[str, Any] | None:
    """The product family's known exploited vulnerabilities (rules/kev.py `listing`), or None. Findings
    evaluated before the ids were kept carry only a count and five ids, without the catalogue's version or
    the ransomware marks: shown as they are (null marks), until the next `posture evaluate`."""
    if "kev" in details:
        return details["kev"] if isinstance(details["kev"], dict) else None
    count, ids = details.get("kev_count"), details.get("kev_ids")
    if not isinstance(count, int) or count <= 0 or not isinstance(ids, list):
        return None
    return {"catalogue": None, "count": count, "ransomware": None,
            "cves": [{"id": str(i), "ransomware": None} for i in ids], "more": max(0, count - len(ids))}  # fmt: skip


def finding_views(store: Store, day: date, statuses: tuple[str, ...] = OPEN_STATES) -> list[dict[str, Any]]:
    """Findings in the documented JSON shape (README: `posture findings --format json`), worst first."""
    return list(iter_finding_views(store, day, statuses))


def iter_finding_views(store: Store, day: date, statuses: tuple[str, ...] = OPEN_STATES) -> Iterator[dict[str, Any]]:
    """`finding_views` one at a time, in its order, sorted by the store: nothing else may be asked of the
    store until the last is read. The findings of 500,000 assets (7.4 million) were a list sorted in Python
    and one JSON text: 24 GB and 3 minutes for `posture findings --format json`."""
    exceptions = active_exceptions(store, day)
    places = _asset_places(store)
    details_of = dict(store.conn.execute(
        "SELECT id, json FROM finding_details WHERE id IN (SELECT DISTINCT details_id FROM findings)"))  # fmt: skip
    parsed: dict[int, dict[str, Any]] = {}
    newest = store.conn.execute("SELECT day FROM evaluations WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1")
    seen_now = (newest.fetchone() or [None])[0]  # when every finding not fixed was last seen
    marks = ",".join("?" * len(statuses))
    dialect = store.conn.dialect
    accepted, accepted_params = _accepted(exceptions, dialect)
    rank = " ".join(f"WHEN '{severity}' THEN {n}" for severity, n in SEVERITY_RANK.items())
    # Accepted apart and last, then the worst severity, rule, asset, subject and the id as shown: the whole
    # order, so either store lists the same findings the same way (text sorts by bytes on both: C collation).
    for row in store.conn.stream(
        "SELECT f.id, f.rule_id, r.function, r.severity, f.status, f.asset_id, r.title, f.first_seen, f.opened_at, "
        "f.last_seen, f.fixed_at, f.times_reopened, f.details_id, f.subject FROM findings f "
        f"JOIN finding_rules r ON r.id = f.rule_id WHERE f.status IN ({marks}) "
        f"ORDER BY {'' if accepted == '0' else accepted + ', '}CASE r.severity {rank} ELSE 0 END DESC, f.rule_id, "
        "coalesce(f.asset_id, 0), "
        f"f.subject, {dialect.shown_id(SQL_SWAPPED_ID.replace('id', 'f.id'))}",
        [*statuses, *accepted_params],
    ):
        details = parsed.get(row[12])
        if details is None:
            details = parsed[row[12]] = json.loads(details_of.get(row[12], "{}"))
        fid = format_id(row[0])
        exception = exceptions.get(fid) or exceptions.get(row[1])
        address, hostname, owner = places.get(row[5], (None, None, None))
        last_seen = row[9] if row[4] == "fixed" or seen_now is None else seen_now
        yield {
            "id": fid, "rule_id": row[1], "title": row[6], "function": row[2], "severity": row[3],
            "status": row[4], "accepted": exception is not None,
            "accepted_until": exception["until"] if exception else None,
            "accepted_reason": exception["reason"] if exception else None,
            "accepted_esu": exception["esu"] if exception else False,
            "asset_id": row[5], "address": address, "hostname": hostname, "owner": owner, "subject": row[13],
            "product": details.get("product"), "label": details.get("label"), "version": details.get("version"),
            "cycle": details.get("cycle"),
            "cycles": details.get("cycles"), "lifecycle_state": details.get("lifecycle_state"),
            "eol_date": details.get("eol_date"), "extended_until": details.get("extended_until"),
            "days_to_eol": _days_to(details.get("eol_date"), last_seen, details.get("days_to_eol")),
            "evidence": details.get("evidence"),
            "lifecycle_sources": details.get("lifecycle_sources") or [],
            "vendor_policy": details.get("vendor_policy"), "note": details.get("note"), "tls": details.get("tls"),
            "kev": _kev(details),
            "first_seen": row[7], "opened_at": row[8], "last_seen": last_seen, "fixed_at": row[10],
            "times_reopened": row[11],
        }  # fmt: skip


def _days_to(eol_date: Any, day: str, stored: Any) -> int | None:
    """Days from the day a finding was last seen to its end of support, as the catalogue counts them
    (rules/catalogue.py `status`). Details written before they left the day out carry their own count."""
    try:
        return (date.fromisoformat(str(eol_date)) - date.fromisoformat(day[:10])).days if eol_date else None
    except ValueError:
        return stored if isinstance(stored, int) else None


MIN_PREFIX = 6  # hex digits of a finding id's prefix that `accept` looks up


def _by_prefix(store: Store, typed: str, number: int) -> int:
    """The finding a typed id names: itself when it exists, else the one finding not yet fixed whose id
    starts with the typed digits (at least MIN_PREFIX of them); two or more is refused, never guessed."""
    if store.conn.execute("SELECT 1 FROM findings WHERE id = ?", [number]).fetchone():
        return number
    digits = typed[2:].lower()
    if len(digits) < MIN_PREFIX:
        return number
    shown = store.conn.dialect.shown_id(SQL_SWAPPED_ID)
    found = [r[0] for r in store.conn.execute(
        f"SELECT id FROM findings WHERE status != 'fixed' AND {shown} LIKE ? || '%' ORDER BY id LIMIT 4",
        ["F-" + digits])]  # fmt: skip
    if len(found) > 1:
        shown = ", ".join(format_id(n) for n in found[:3])
        raise PostureError(f"{typed[:40]} is ambiguous: it starts {'more than 3' if len(found) > 3 else len(found)} "
                           f"findings ({shown})", "type more of the id, as `posture findings` shows it")  # fmt: skip
    return found[0] if found else number


def accept(store: Store, target: str, until: date, reason: str, esu: bool, rule_ids: set[str], today: date) -> str:
    """Record an exception for a finding id or a rule id; returns what was accepted, for the user."""
    target = target.strip()
    reason = " ".join(reason.split())
    if not reason:
        raise PostureError("an exception needs a reason", 'e.g. --reason "replacement ordered, PO 4411"')
    if len(reason) > 1000:
        raise PostureError("the reason is longer than 1,000 characters", "summarise it and reference a document")
    if until < today:
        raise PostureError(f"--until {until.isoformat()} is in the past", "give a future day")
    number = parse_id(target)
    row = None
    if number is not None:
        number = _by_prefix(store, target, number)
        target = format_id(number)  # stored as `posture findings` shows it, so every reader finds it
        row = store.conn.execute(
            "SELECT f.rule_id, d.json FROM findings f JOIN finding_details d ON d.id = f.details_id WHERE f.id = ?",
            [number],
        ).fetchone()
    elif target.startswith("F-"):
        raise PostureError(f"{target[:64]!r} is not a finding id",
                           "a finding id is F- and up to 16 hex digits, as `posture findings` shows it")  # fmt: skip
    if row is None and target not in rule_ids:
        raise PostureError(f"{target[:64]!r} is neither a finding id nor a rule id",
                           "see `posture findings` (ids start with F-) or `posture rules list`")  # fmt: skip
    if esu:
        if row is None:
            raise PostureError("--esu applies to one finding (one system's extended support), not a whole rule",
                               "give the finding id")  # fmt: skip
        extended = json.loads(row[1]).get("extended_until")
        if not extended:
            raise PostureError(f"{target} has no paid extended support period in the catalogue",
                               "accept it without --esu, with the reason")  # fmt: skip
        if until.isoformat() > extended:
            raise PostureError(f"extended support for {target} ends on {extended}; an ESU acceptance cannot outlast it",
                               f"use --until {extended} or earlier")  # fmt: skip
    with store.transaction() as conn:
        added = conn.execute(
            "INSERT INTO exceptions (target, until, reason, esu, created_at) VALUES (?, ?, ?, ?, ?)",
            [target, until.isoformat(), reason, int(esu), utc_now()],
        ).rowcount
    if added != 1:  # "accepted" is said only of what was recorded
        raise PostureError(f"nothing was recorded for {target}", "check the database")
    what = f"finding {target} ({row[0]})" if row else f"every finding of rule {target}"
    return f"accepted {what} until {until.isoformat()}" + (" (extended support)" if esu else "")


EOL_RULES = ("protect.eol-os", "protect.eol-software")


def _evaluation_for(conn: Database, scan_id: int, before: int | None) -> tuple[int, str] | None:
    """The newest evaluation that judged the inventory with `scan_id` in it and nothing from `before` on."""
    row = conn.execute(
        "SELECT id, day FROM evaluations WHERE finished_at IS NOT NULL AND scan_id >= ? AND scan_id < ? "
        "ORDER BY id DESC LIMIT 1",
        [scan_id, before if before is not None else 2**62],
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _was_supported(detail: dict[str, Any], day: str) -> bool:
    """Whether the finding's product cycle was still in some kind of support on `day` (by the catalogue)."""
    from rules.catalogue import Lifecycle, default_catalogue

    product = default_catalogue().product(str(detail.get("product")))
    cycle = product.cycle(str(detail.get("cycle"))) if product and detail.get("cycle") else None
    if product is None or cycle is None:
        return False
    return product.status(cycle, date.fromisoformat(day)).state != Lifecycle.END_OF_LIFE


def finding_changes(store: Store, older: int | Sequence[int], newer: int | Sequence[int],
                    evaluations: tuple[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """The `posture.diff_details` hook: findings that appeared and cleared between two scans, on the assets
    either scan saw. It compares the evaluation made after each scan (before the next one came in); an
    end-of-life finding on an asset the older scan saw, whose product cycle was still supported on the
    older evaluation's day, is marked `crossed_eol`: nothing on the machine changed, the calendar did.

    A job run passes lists of scan ids (the scans it is compared with, and its own) and `evaluations`: the
    newest evaluation before the run (0: none) and the run's own. Those two are compared over every asset,
    so what the change hook lists agrees with the run's evaluation counts (a finding the calendar brought,
    on an asset no scan of the run looked at, is one of them).
    """
    conn = store.conn
    olders = [older] if isinstance(older, int) else list(older)
    assets: list[int] | None = None  # None: every asset
    if evaluations is None:
        assert isinstance(older, int) and isinstance(newer, int)
        later = conn.execute("SELECT min(id) FROM scans WHERE id > ? AND status IN ('complete', 'interrupted')",
                             [newer]).fetchone()[0]  # fmt: skip
        found, after = _evaluation_for(conn, older, newer), _evaluation_for(conn, newer, later)
        if found is None or after is None:
            which = older if found is None else newer
            return {"findings": None, "findings_note": f"no evaluation after scan {which}: run `posture evaluate`"}
        before = found
        assets = store.assets_seen_in(older, newer)
    else:
        row = conn.execute("SELECT id, day FROM evaluations WHERE id = ?", [evaluations[0]]).fetchone()
        before, after = (int(row[0]), str(row[1])) if row else (0, ""), (evaluations[1], "")
    seen_before = set(store.assets_seen_in(*olders)) if olders and before[0] else set()
    first: dict[int, str] = {}
    last: dict[int, str] = {}
    on_assets = f"AND f.asset_id {conn.dialect.in_list} " if assets is not None else ""
    for finding_id, event in conn.execute(
        "SELECT e.finding_id, e.event FROM finding_events e JOIN findings f ON f.id = e.finding_id "
        f"WHERE e.evaluation_id > ? AND e.evaluation_id <= ? {on_assets}ORDER BY e.evaluation_id",
        [before[0], after[0], *([conn.dialect.list_param(assets)] if assets is not None else [])],
    ):
        first.setdefault(finding_id, event)
        last[finding_id] = event
    # Open before the range = its first event in it is "fixed"; open after = its last one is not. A finding
    # that came and went inside the range (or went and came back) changed nothing between the two scans.
    last = {f: e for f, e in last.items() if (e == "fixed") == (first[f] == "fixed")}
    appeared, cleared = [], []
    for fid, rule_id, severity, asset_id, subject, name, details in conn.execute(
        "SELECT f.id, f.rule_id, r.severity, f.asset_id, f.subject, a.name, d.json FROM findings f "
        "JOIN finding_rules r ON r.id = f.rule_id JOIN finding_details d ON d.id = f.details_id "
        f"LEFT JOIN assets a ON a.id = f.asset_id WHERE f.id {conn.dialect.in_list} "
        "ORDER BY f.asset_id NULLS FIRST, f.rule_id",
        [conn.dialect.list_param(last)],
    ):
        detail = json.loads(details)
        entry = {"id": format_id(fid), "rule_id": rule_id, "severity": severity, "asset_id": asset_id,
                 "name": printable(name or "", 120), "subject": printable(subject, 120),
                 **{k: None if detail.get(k) is None else printable(detail[k], 120)
                    for k in ("product", "label", "version", "cycle")},
                 "evidence": printable(detail.get("evidence") or "", 200), "crossed_eol": False}  # fmt: skip
        if last[fid] == "fixed":
            cleared.append(entry)
            continue
        entry["crossed_eol"] = rule_id in EOL_RULES and asset_id in seen_before and _was_supported(detail, before[1])
        appeared.append(entry)
    return {"findings": {"evaluations": [before[0], after[0]], "appeared": appeared, "cleared": cleared}}
