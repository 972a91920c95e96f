"""What the HTML report shows, computed from the inventory and the last evaluation: plain data, no markup.

The template only lays this out; every number here is defined once, so the report and its tests agree.
Device-supplied strings pass through `clean` (printable, bounded) before they reach a template, and the
template escapes them (Jinja2 autoescape): markup in a banner or hostname is shown, never run.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from reports.plans import decommission_plan, named, remediation_plan, report_view
from rules.catalogue import DEFAULT_POLICY, POLICIES, default_catalogue
from rules.engine import SEVERITIES, SEVERITY_RANK, Settings
from rules.facts import add_lifecycle
from rules.findings import finding_views
from rules.tls import CERTIFICATE_RULES, PROTOCOL_RULES
from scanner.errors import PostureError
from scanner.model import printable
from scanner.store import Store
from scanner.views import DIRECTORY_ONLY, LATEST_PORT_OBSERVATION, asset_views

CATEGORIES = ("servers", "network", "end-user", "ot-iot", "unknown")
FUNCTIONS = ("protect", "detect", "respond")
# The score: the share of assets (in %) with no open, not accepted finding of these severities.
SCORE_SEVERITIES = ("critical", "high")
MAX_TEXT = 300


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """A device string fit to show: control and bidi-override characters made visible, length bounded."""
    return printable("" if value is None else value, limit)


def financial_year(day: date) -> str:
    """UK financial year, April to March: 2026-11-23 is in 2026/27."""
    start = day.year if day.month >= 4 else day.year - 1
    return f"{start}/{str(start + 1)[2:]}"


@dataclass
class Report:
    day: date
    catalogue_date: str
    kev_version: str
    evaluation: dict[str, Any]
    assets: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    accepted: list[dict[str, Any]]
    score: int
    rag: dict[str, str]  # function -> red, amber, green
    by_severity: dict[str, int]
    coverage: dict[str, Any]
    changes: dict[str, int]
    cliff: list[dict[str, Any]]  # per financial year: counts by category
    top_risks: list[dict[str, Any]]
    rules: list[dict[str, Any]] = field(default_factory=list)  # findings grouped by rule
    actions: list[dict[str, Any]] = field(default_factory=list)  # the remediation plan (reports/plans.py)
    investigate: list[dict[str, Any]] = field(default_factory=list)  # detective findings: to look into
    plan_totals: dict[str, dict[str, Any]] = field(default_factory=dict)  # count, assets, hours of each list
    decommission: list[dict[str, Any]] = field(default_factory=list)  # decommissioning candidates
    policy: str = POLICIES[DEFAULT_POLICY]  # what "unsupported" meant in the evaluation ([lifecycle] policy)
    certificates: list[dict[str, Any]] = field(default_factory=list)  # TLS certificates with open problems
    tls_services: list[dict[str, Any]] = field(default_factory=list)  # TLS services offering what they should not
    certificates_read: int = 0  # ports whose certificate nmap's ssl-cert read in the latest scans
    windows: dict[str, Any] = field(default_factory=dict)  # the Windows estate: releases by count (`_windows`)


def _dates_from(finding: dict[str, Any]) -> str:
    """Where an end-of-life verdict's dates come from, for a reader to check before acting: "vendor,
    https://..." (the first source; a verdict over several releases lists how many more)."""
    sources = finding.get("lifecycle_sources") or []
    if not sources or finding.get("lifecycle_state") in (None, "unknown"):
        return ""
    first = sources[0]
    more = f" (+{len(sources) - 1} more)" if len(sources) > 1 else ""
    return clean(f"{first.get('kind', '')}, {first.get('source', '')}{more}", 300)


def build_report(store: Store, day: date, settings: Settings) -> Report:
    evaluation = store.conn.execute(
        "SELECT id, day, catalogue_date, kev_version, summary, finished_at FROM evaluations "
        "WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if evaluation is None:
        raise PostureError("no evaluation yet: the report shows findings", "run `posture evaluate` first")
    assets = asset_views(store)
    add_lifecycle(store, assets)
    every = finding_views(store, day)
    open_findings = [f for f in every if not f["accepted"]]
    accepted = [f for f in every if f["accepted"]]
    by_severity = Counter(f["severity"] for f in open_findings)
    hit = {f["asset_id"] for f in open_findings if f["severity"] in SCORE_SEVERITIES}
    score = round(100 * (len(assets) - len(hit & {a["id"] for a in assets})) / len(assets)) if assets else 100
    rules_detail = {r[0]: (r[1], r[2], r[3], json.loads(r[4])) for r in store.conn.execute(
        "SELECT id, title, function, severity, detail FROM finding_rules")}  # fmt: skip
    return Report(
        day=day,
        catalogue_date=str(evaluation[2] or default_catalogue().data_date),
        policy=POLICIES.get(str(json.loads(evaluation[4] or "{}").get("unsupported_after")), POLICIES[DEFAULT_POLICY]),
        kev_version=str(evaluation[3] or ""),
        evaluation={"id": evaluation[0], "day": evaluation[1], "finished_at": evaluation[5]},
        assets=[_asset_row(a) for a in assets],
        findings=open_findings,
        accepted=accepted,
        score=score,
        rag=_rag(open_findings),
        by_severity={s: by_severity.get(s, 0) for s in SEVERITIES},
        coverage=_coverage(assets),
        changes=_changes(store, json.loads(evaluation[4] or "{}")),
        cliff=_cliff(assets, day),
        top_risks=_top_risks(open_findings, assets, rules_detail),
        windows=_windows(assets, open_findings),
        certificates=_certificates(open_findings),
        tls_services=_tls_services(open_findings),
        certificates_read=store.conn.execute(
            f"SELECT count(*) FROM services s JOIN ({LATEST_PORT_OBSERVATION}) l ON l.id = s.observation_id "
            "WHERE s.state = 'open' AND instr(s.scripts, '\"ssl-cert\"')").fetchone()[0],
        rules=_by_rule(open_findings, rules_detail),
        **report_view(remediation_plan(assets, every, settings)),  # actions, investigate, plan_totals
        decommission=[{**c, "name": clean(c["name"], 80), "owner": clean(c["owner"], 80),
                       "runs": [clean(r, 80) for r in c["runs"]],
                       "still_serves": [clean(x, 60) for x in c["still_serves"]]}
                      for c in decommission_plan(assets, every)],
    )  # fmt: skip


def _rag(findings: list[dict[str, Any]]) -> dict[str, str]:
    """Red: a critical or high finding open; amber: a medium one; green: nothing above low."""
    out = {}
    for function in FUNCTIONS:
        worst = max((SEVERITY_RANK[f["severity"]] for f in findings if f["function"] == function), default=-1)
        if worst >= SEVERITY_RANK["high"]:
            out[function] = "red"
        else:
            out[function] = "amber" if worst >= SEVERITY_RANK["medium"] else "green"
    return out


def _coverage(assets: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of assets whose OS release and lifecycle are known: unknown is never counted as safe."""
    total = len(assets)
    os_known = sum(1 for a in assets if a["os"] and a["os"].get("lifecycle_state") not in (None, "unknown"))
    return {"assets": total, "known": os_known, "unknown": total - os_known,
            "percent": round(100 * os_known / total) if total else 0}  # fmt: skip


def _changes(store: Store, summary: dict[str, Any]) -> dict[str, int]:
    return {
        "new_assets": len(store.new_in_latest_scan()),
        "new_findings": int(summary.get("new", 0)),
        "fixed_findings": int(summary.get("fixed", 0)),
        "reopened_findings": int(summary.get("reopened", 0)),
    }


def _cliff(assets: list[dict[str, Any]], day: date) -> list[dict[str, Any]]:
    """Assets whose OS reaches end of life, per UK financial year from the past to five years ahead."""
    years: dict[str, Counter[str]] = defaultdict(Counter)
    current = financial_year(day)
    for a in assets:
        os_ = a["os"] or {}
        eol = os_.get("eol_date")
        if not eol or os_.get("lifecycle_state") == "unknown":
            continue
        fy = financial_year(date.fromisoformat(eol))
        label = "earlier" if fy < current and os_.get("lifecycle_state") == "end-of-life" else fy
        years[label][a.get("category") or "unknown"] += 1
    start = int(current[:4])
    labels = ["earlier"] + [f"{y}/{str(y + 1)[2:]}" for y in range(start, start + 6)]
    return [{"year": y, **{c: years[y].get(c, 0) for c in CATEGORIES}, "total": sum(years[y].values())} for y in labels]


def _asset_row(a: dict[str, Any]) -> dict[str, Any]:
    os_ = a["os"] or {}
    return {
        "id": a["id"],
        "address": clean(", ".join(a["addresses"][:2]), 80),
        "name": clean(a["name"], 80),
        "category": a.get("category") or "unknown",
        "os": clean((os_.get("name") or "").splitlines()[0] if os_.get("name") else "unknown", 120),
        # The name people know ("Microsoft Windows XP SP3"), never a slug (issue 12 item 4); once.
        "product": "" if os_.get("label") and os_.get("label") == (os_.get("name") or "").strip() else
                   clean(os_.get("label") or " ".join(x for x in (os_.get("product"), os_.get("cycle")) if x), 120),
        "state": os_.get("lifecycle_state") or "unknown",
        "eol_date": os_.get("eol_date"),
        "software": [
            {"product": clean(s["label"], 80),
             "cycle": clean(s["cycle"] or "", 30),
             "state": s["lifecycle_state"],
             "eol_date": s["eol_date"]}
            for s in a.get("software", [])[:20]
        ],
        # The box itself, where the device states its model: it has a lifecycle of its own beside the OS's.
        "hardware": [
            {"product": clean(h["label"], 100),
             "state": h["lifecycle_state"],
             "eol_date": h["eol_date"],
             "end_of_sale": h.get("end_of_sale")}
            for h in a.get("hardware", []) if h.get("model")
        ][:3],
        "sources": ", ".join(a["sources"]),
        "owner": clean(a["owner"], 80) if a["owner"] else "",
    }


def _place(f: dict[str, Any]) -> dict[str, str]:
    """Where a service finding is: the host and "443/tcp" (its subject is "tcp/443")."""
    protocol, _, port = str(f["subject"]).partition("/")
    return {"host": clean(" ".join(x for x in (f["address"], f["hostname"]) if x), 160), "port": f"{port}/{protocol}"}


WINDOWS_PRODUCTS = ("windows", "windows-server", "windows-embedded", "windows-server-core", "windows-nano-server")


def _windows(assets: list[dict[str, Any]], findings: list[dict[str, Any]]) -> dict[str, Any]:
    """The Windows estate as a council's auditor asks for it: each release by count, with its end of support
    and its paid extended support (ESU) where there is one, the oldest first; how many machines look like
    Windows but could not be told apart (nmap's guess alone names no release); and the directory's stale or
    disabled computer objects (open `detect.stale-directory-object` findings) and those only it knows."""
    releases: Counter[tuple[str, str, str, str]] = Counter()
    unnamed = 0
    catalogue = default_catalogue()
    for a in assets:
        os_ = a["os"] or {}
        if os_.get("product") in WINDOWS_PRODUCTS and (os_.get("cycle") or os_.get("cycles")):
            label = os_.get("label") or " ".join(x for x in (os_.get("product"), os_.get("cycle")) if x)
            # The ESU's end even once it has passed (the item keeps it only while it is what is left).
            product = catalogue.products.get(os_["product"])
            cycle = product.cycle(os_.get("cycle") or "") if product else None
            esu = os_.get("extended_until") or (cycle.eoes.isoformat() if cycle and isinstance(cycle.eoes, date)
                                                 else "")  # fmt: skip
            releases[(clean(label, 120), os_.get("lifecycle_state") or "unknown", os_.get("eol_date") or "",
                      esu)] += 1  # fmt: skip
        elif "windows" in str(os_.get("name") or "").lower():
            unnamed += 1
    rows = [{"release": r, "state": s, "eol_date": e, "extended_until": x, "count": n}
            for (r, s, e, x), n in releases.items()]  # fmt: skip
    rows.sort(key=lambda w: (w["eol_date"] or "9999", w["release"]))
    stale = {f["asset_id"] for f in findings if f["rule_id"] == "detect.stale-directory-object"}
    return {"releases": rows, "total": sum(releases.values()) + unnamed, "unnamed": unnamed,
            "unsupported": sum(w["count"] for w in rows if w["state"] == "end-of-life"), "stale": len(stale),
            "directory_only": sum(1 for a in assets if a.get("note") == DIRECTORY_ONLY)}  # fmt: skip


def _certificates(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per certificate with an open problem (not accepted): where it is, whose name it carries, who
    issued it, when it ends, its key and signature, and its problems, worst first; worst certificates first."""
    order = list(CERTIFICATE_RULES)
    rows: dict[tuple[Any, str], dict[str, Any]] = {}
    for f in findings:
        t = f.get("tls") or {}
        if f["rule_id"] not in CERTIFICATE_RULES or "cert_cn" not in t:
            continue
        row = rows.get((f["asset_id"], f["subject"]))
        if row is None:
            days = t.get("cert_days_left")
            row = rows[(f["asset_id"], f["subject"])] = {
                **_place(f), "cn": clean(t.get("cert_cn") or t.get("cert_subject") or "(none)", 200),
                "issuer": "self-signed" if t.get("cert_self_signed") else
                          clean(t.get("cert_issuer_cn") or t.get("cert_issuer") or "unknown", 200),
                "expiry": clean(t.get("cert_not_after") or "unknown", 60),
                "when": "" if not isinstance(days, int) else f"expired {-days} days ago" if days < 0 else
                        f"in {days} days",
                "key": clean(" ".join(str(x) for x in (t.get("cert_key_type"), t.get("cert_key_bits")) if x)
                             or "unknown", 40),
                "signature": clean(t.get("cert_sig_algo") or "unknown", 80), "rules": [],
            }  # fmt: skip
        row["rules"].append(f["rule_id"])
    out = []
    for row in rows.values():
        ranks = sorted(order.index(r) for r in row.pop("rules"))
        out.append({**row, "problems": [CERTIFICATE_RULES[order[n]][0] for n in ranks], "rank": ranks[0]})
    out.sort(key=lambda r: (r["rank"], r["host"], r["port"]))
    return out


def _tls_services(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TLS services that offer protocols or cipher suites the grading table flags, worst first."""
    out = [{**_place(f), "grade": clean((f.get("tls") or {}).get("tls_grade") or "", 20),
            "problems": [clean(p, 300) for p in ((f.get("tls") or {}).get("tls_problems") or [])[:12]]}
           for f in findings if f["rule_id"] in PROTOCOL_RULES]  # fmt: skip
    out.sort(key=lambda r: (r["grade"] != "insecure", r["host"], r["port"]))
    return out


def _top_risks(findings: list[dict[str, Any]], assets: list[dict[str, Any]],
               rules: dict[str, tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
    """The ten worst open findings: severity first, then the asset's criticality, then exposure (services)."""
    crit = {a["id"]: (a.get("criticality") or "").lower() for a in assets}
    exposure = {a["id"]: len(a["services"]) for a in assets}
    weight = {"critical": 3, "high": 2, "medium": 1}
    ranked = sorted(findings, key=lambda f: (-SEVERITY_RANK[f["severity"]], -weight.get(crit.get(f["asset_id"], ""), 0),
                                             -exposure.get(f["asset_id"], 0), f["id"]))  # fmt: skip
    return [{**f, "title": clean(f["title"]), "evidence": clean(f["evidence"]), "owner": clean(f["owner"] or ""),
             "address": clean(f["address"] or "", 80), "hostname": clean(f["hostname"] or "", 120),
             "remediation": rules.get(f["rule_id"], ("", "", "", {}))[3].get("remediation", "")}
            for f in ranked[:10]]  # fmt: skip


def _by_rule(findings: list[dict[str, Any]],
             rules: dict[str, tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        grouped[f["rule_id"]].append(f)
    out = []
    for rule_id, items in grouped.items():
        title, function, severity, detail = rules.get(rule_id, (rule_id, "", "", {}))
        out.append({
            "id": rule_id, "title": title, "function": function, "severity": severity, "count": len(items),
            "rationale": detail.get("rationale", ""), "remediation": detail.get("remediation", ""),
            "decommission": detail.get("decommission"), "references": detail.get("references", {}),
            "findings": [{"id": f["id"], "address": clean(f["address"] or "", 80), "owner": clean(f["owner"] or ""),
                          "what": clean(named(f)),
                          "state": f["lifecycle_state"], "evidence": clean(f["evidence"]), "status": f["status"],
                          "dates_from": _dates_from(f), "note": clean(f.get("note") or "", 300)}
                         for f in items[:200]],
            "more": max(0, len(items) - 200),
        })  # fmt: skip
    out.sort(key=lambda r: (-SEVERITY_RANK.get(r["severity"], 0), -r["count"], r["id"]))
    return out
