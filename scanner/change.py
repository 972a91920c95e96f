"""The change hook's JSON: what a job's `on_change` program reads on stdin after a run.

One versioned shape on every run, first or later, with or without findings (`schema` is SCHEMA_ID; the
JSON Schema beside this module, `schemas/change.schema.json`, states it field by field and the README
explains it). A hook is a program someone wrote against that shape: a first run that sent
`{"new": [{"asset_id": 1}]}` and a later one that sent names and addresses broke it.

What changed is this run's scans against the scans before it (`scanner.diff.run_baseline`: the newest
earlier scan of each kind the run made), so a run that scanned nothing reports no asset change instead of
repeating the last one; the findings that appeared and cleared are those between the newest evaluation
before the run and the run's own (from the rules stage, through `posture.diff_details`). Asset names,
OS labels and lifecycle states come from the stored identities through `posture.asset_details`: this
module never imports the rules stage. Every string a device supplied is made printable and cut short.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from scanner.diff import compare, run_baseline, with_details
from scanner.model import printable
from scanner.store import Store, utc_now
from scanner.views import asset_rows

SCHEMA_ID = "posture.change/1"
SCHEMA_FILE = Path(__file__).parent / "schemas" / "change.schema.json"
MAX_TEXT = 200  # any device string (names, OS labels, banners, program names), in characters
MAX_ADDRESSES = 32  # per asset: a router's hundred interface addresses would drown the rest
SCORE_FIELDS = ("score", "assets", "identified", "unknown", "coverage_percent", "min_coverage_percent", "rag", "why")
COUNTS = ("new_assets", "gone_assets", "changed_assets", "new_findings", "fixed_findings", "reopened_findings",
          "crossed_eol", "bundles_imported", "bundles_refused")  # fmt: skip
CHUNK = 5000  # asset ids per lookup (one bound parameter each: SQLite allows 32,766)


def newest_evaluation(store: Store) -> int:
    """The id of the newest finished evaluation (0: none yet): a run's baseline for findings."""
    row = store.conn.execute("SELECT max(id) FROM evaluations WHERE finished_at IS NOT NULL").fetchone()
    return int(row[0] or 0)


def change_summary(store: Store, *, job: str, started: datetime, scans: list[int], evaluation_before: int,
                   report: str | None, nothing_answered: bool, bundles: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """The hook's document for one run of `job`: `scans` are the ids of the scans it made,
    `evaluation_before` the newest evaluation when it started (`newest_evaluation`)."""
    older, newer = run_baseline(store, scans)
    diff = compare(store, older, newer)
    notes = []
    evaluation = newest_evaluation(store)
    ran = evaluation > evaluation_before  # the run's own evaluation (the rules stage ran)
    findings: dict[str, Any] | None = None
    if ran:
        findings = with_details(store, older, newer, evaluations=(evaluation_before, evaluation)).get("findings")
    if findings is None:
        notes.append("no evaluation in this run (is the rules stage installed?): findings unknown")
    row = store.conn.execute("SELECT summary FROM evaluations WHERE id = ?", [evaluation]).fetchone()
    judged = json.loads(row[0]) if row else {}
    score = judged.get("score")
    if not newer:
        notes.append("this run saved no finished scan: no asset was compared")
    elif not older:
        notes.append("nothing to compare with (the first run of these scans): every asset seen is new")

    finding_assets = [f["asset_id"] for part in ("appeared", "cleared") for f in (findings or {}).get(part, [])]
    ids = sorted({*(a["asset_id"] for part in ("new", "gone", "changed") for a in diff[part]),
                  *(i for i in finding_assets if i is not None)})  # fmt: skip
    rows = {r["id"]: r for n in range(0, len(ids), CHUNK) for r in asset_rows(store, ids[n : n + CHUNK])}

    def asset(entry: dict[str, Any]) -> dict[str, Any]:
        return _asset(rows.get(entry["asset_id"]), entry)

    def changed(entry: dict[str, Any]) -> dict[str, Any]:
        return {**asset(entry), "changes": {k: v for k, v in entry.items() if k not in ("asset_id", "name")}}

    def finding(entry: dict[str, Any]) -> dict[str, Any]:
        addresses = (rows.get(entry["asset_id"]) or {}).get("addresses") or []
        return {**entry, "address": addresses[0] if addresses else None}

    assets = {"new": [asset(a) for a in diff["new"]], "gone": [asset(a) for a in diff["gone"]],
              "changed": [changed(c) for c in diff["changed"]]}  # fmt: skip
    found = None if findings is None else {k: [finding(f) for f in findings[k]] for k in ("appeared", "cleared")}
    counts = dict.fromkeys(COUNTS, 0)
    counts.update({
        "new_assets": len(diff["new"]), "gone_assets": len(diff["gone"]), "changed_assets": len(diff["changed"]),
        "crossed_eol": sum(1 for f in (findings or {}).get("appeared", []) if f.get("crossed_eol")), **bundles,
    })  # fmt: skip
    if ran:
        counts.update({"new_findings": judged.get("new", 0), "fixed_findings": judged.get("fixed", 0),
                       "reopened_findings": judged.get("reopened", 0)})  # fmt: skip
    return {
        "schema": SCHEMA_ID,
        "job": job,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "time": utc_now(),
        "scans": newer,
        "compared_with": older,
        "evaluation": evaluation if ran else None,
        "report": report,
        "nothing_answered": nothing_answered,
        "changed": any(counts.values()),
        "counts": counts,
        "score": {k: score.get(k) for k in SCORE_FIELDS} if isinstance(score, dict) else None,
        "assets": _bounded(assets),
        "findings": _bounded(found),
        "notes": notes,
    }


def _asset(row: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """An asset as the hook sees it: id, name, addresses, the OS people know it by and its lifecycle."""
    row = row or {}
    os_ = row.get("os") or {}
    raw = (str(os_.get("name") or "").splitlines() or [""])[0]
    state = os_.get("lifecycle_state") or ("unknown" if "software" in row else None)  # rules ran, found no OS
    return {
        "id": entry["asset_id"],
        "name": row.get("name") or entry.get("name") or None,
        "addresses": (row.get("addresses") or entry.get("addresses") or [])[:MAX_ADDRESSES],
        "os": os_.get("label") or raw or None,
        "lifecycle_state": state,  # None: no evaluation has judged it yet
    }


def _bounded(value: Any) -> Any:
    """Every string in `value` (keys too: program names, ports) printable and at most MAX_TEXT characters."""
    if isinstance(value, str):
        return printable(value, MAX_TEXT)
    if isinstance(value, dict):
        return {_bounded(k): _bounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    return value
