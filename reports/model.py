"""What the HTML report shows, computed from the inventory and the last evaluation: plain data, no markup.

The template only lays this out; every number here is defined once, so the report and its tests agree.
Device-supplied strings pass through `clean` (printable, bounded) before they reach a template, and the
template escapes them (Jinja2 autoescape): markup in a banner or hostname is shown, never run.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from reports.plans import SERVICE_SUBJECT, decommission_plan, named, remediation_plan, report_view
from rules import evidence
from rules import score as scoring
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
MAX_TEXT = 300
# The risk of a group of findings (one rule, one product): severity x criticality x exposure.
RISK_SEVERITY = {"critical": 8.0, "high": 4.0, "medium": 2.0, "low": 1.0, "info": 0.5}  # each step doubles
RISK_CRITICALITY = {"critical": 4, "high": 3, "medium": 2, "low": 1}  # none stated counts as medium
RISK_FORMULA = ("risk = severity (critical 8, high 4, medium 2, low 1, info 0.5) x the highest criticality "
                "among its hosts in the asset register (critical 4, high 3, medium 2, low 1; none stated "
                "counts as medium: unknown is not safe) x exposure (1 + log10(1 + the open services on its "
                "hosts))")


_LINE_BREAKS = re.compile(r"[\r\n\t]+")


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """A device string fit to show: line breaks and tabs as one space (a sysDescr's "...(fc1)\r\nTechnical
    Support" reads as words, not as two replacement marks), other control and bidi-override characters made
    visible, length bounded."""
    return printable(_LINE_BREAKS.sub(" ", "" if value is None else str(value)), limit)


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
    score: int  # rules/score.py: identified assets without an open critical/high finding, over all assets
    rag: dict[str, str]  # function -> red, amber, green
    by_severity: dict[str, int]
    judgement: scoring.Judgement  # the score's and RAG's reasons, and how many assets are identified
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
    organisation: str = ""  # [report] organisation: the header names it only when the config does
    scope: dict[str, Any] = field(default_factory=dict)  # the scans the report covers (`_scope`)
    risk_formula: str = RISK_FORMULA


def _dates_from(finding: dict[str, Any]) -> str:
    """Where an end-of-life verdict's dates come from, for a reader to check before acting: "vendor,
    https://..." (the first source; a verdict over several releases lists how many more)."""
    sources = finding.get("lifecycle_sources") or []
    if not sources or finding.get("lifecycle_state") in (None, "unknown"):
        return ""
    first = sources[0]
    more = f" (+{len(sources) - 1} more)" if len(sources) > 1 else ""
    return clean(f"{first.get('kind', '')}, {first.get('source', '')}{more}", 300)


def build_report(store: Store, day: date, settings: Settings, organisation: str | None = None) -> Report:
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
    judgement = _judge(assets, open_findings, settings)
    rules_detail = {r[0]: (r[1], r[2], r[3], json.loads(r[4])) for r in store.conn.execute(
        "SELECT id, title, function, severity, detail FROM finding_rules")}  # fmt: skip
    groups = _groups(open_findings, assets, rules_detail)
    return Report(
        day=day,
        organisation=clean(organisation or "", 120),
        scope=_scope(store),
        catalogue_date=str(evaluation[2] or default_catalogue().data_date),
        policy=POLICIES.get(str(json.loads(evaluation[4] or "{}").get("unsupported_after")), POLICIES[DEFAULT_POLICY]),
        kev_version=str(evaluation[3] or ""),
        evaluation={"id": evaluation[0], "day": evaluation[1], "finished_at": evaluation[5]},
        assets=[_asset_row(a) for a in assets],
        findings=open_findings,
        accepted=accepted,
        score=judgement.score,
        rag=judgement.rag,
        judgement=judgement,
        by_severity={s: by_severity.get(s, 0) for s in SEVERITIES},
        changes=_changes(store, json.loads(evaluation[4] or "{}")),
        cliff=_cliff(assets, day),
        top_risks=groups[:10],
        windows=_windows(assets, open_findings),
        certificates=_certificates(open_findings),
        tls_services=_tls_services(open_findings),
        certificates_read=store.conn.execute(
            f"SELECT count(*) FROM services s JOIN ({LATEST_PORT_OBSERVATION}) l ON l.id = s.observation_id "
            "WHERE s.state = 'open' AND s.scripts LIKE '%\"ssl-cert\"%'").fetchone()[0],
        rules=_by_rule(groups, rules_detail),
        **report_view(remediation_plan(assets, every, settings)),  # actions, investigate, plan_totals
        decommission=[{**c, "name": clean(c["name"], 80), "owner": clean(c["owner"], 80),
                       "runs": [clean(r, 80) for r in c["runs"]],
                       "still_serves": [clean(x, 60) for x in c["still_serves"]]}
                      for c in decommission_plan(assets, every)],
    )  # fmt: skip


SCOPE_TARGETS = 12  # targets named in the header; the rest counted
SCAN_KINDS = {  # a run's kind as the header names it: (one, several)
    "nmap-scan": ("nmap scan", "nmap scans"), "nmap-import": ("nmap import", "nmap imports"),
    "snmp-scan": ("SNMP inventory", "SNMP inventories"), "agent-import": ("host agent bundle", "host agent bundles"),
    "directory-import": ("Active Directory read", "Active Directory reads"),
    "asset-register": ("asset register import", "asset register imports"),
}  # fmt: skip


def _scope(store: Store) -> dict[str, Any]:
    """What the report covers, for its header: the runs (scans, imports, directory reads) whose sightings are
    each asset's latest, the window in which those sightings were made (when the hosts were seen, not when
    a file was imported), and the runs' targets. A report never claims more than it shows."""
    latest = ("SELECT scan_id, observed_at FROM (SELECT scan_id, observed_at, row_number() OVER (PARTITION BY "
              "asset_id, source ORDER BY observed_at DESC, id DESC) AS n FROM observations) AS newest "
              "WHERE n = 1")  # fmt: skip
    seen = store.conn.execute(  # an asset register's rows are not sightings: they do not widen the window
        f"SELECT min(l.observed_at), max(l.observed_at) FROM ({latest}) l JOIN scans s ON s.id = l.scan_id "
        "WHERE s.kind != 'asset-register'").fetchone()  # fmt: skip
    rows = store.conn.execute(
        f"SELECT kind, targets FROM scans WHERE id IN (SELECT scan_id FROM ({latest}) AS l) ORDER BY id").fetchall()
    kinds: Counter[str] = Counter(str(r[0]) for r in rows)
    targets: list[str] = []
    for row in rows:
        try:
            said = json.loads(row[1] or "[]")
        except ValueError:
            said = []
        for t in said if isinstance(said, list) else []:
            if isinstance(t, str) and t not in targets:
                targets.append(t)
    return {
        "runs": len(rows), "from": str(seen[0] or ""), "to": str(seen[1] or ""),
        "kinds": ", ".join(f"{n} {SCAN_KINDS.get(k, (clean(k, 40), clean(k, 40)))[n != 1]}"
                           for k, n in sorted(kinds.items())),
        "targets": [clean(t, 60) for t in targets[:SCOPE_TARGETS]],
        "more_targets": max(0, len(targets) - SCOPE_TARGETS),
    }  # fmt: skip


def _judge(assets: list[dict[str, Any]], findings: list[dict[str, Any]], settings: Settings) -> scoring.Judgement:
    """The score and RAG (rules/score.py) over the report's own day: open, not accepted findings."""
    known = {a["id"] for a in assets if scoring.is_identified(a["os"])}
    worst: dict[str, str | None] = {}
    for f in findings:
        worst[f["function"]] = scoring.worse(worst.get(f["function"]), f["severity"])
    unsafe = {f["asset_id"] for f in findings if f["severity"] in scoring.SCORE_SEVERITIES}
    return scoring.judge(len(assets), len(known), len(unsafe & known), worst, settings.min_coverage_percent)


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


LEGACY_STATES = ("end-of-life", "extended")  # support ended, or only paid extended support left
SOFTWARE_LISTED = 8  # legacy programs named per asset in the inventory; the rest counted


def _asset_row(a: dict[str, Any]) -> dict[str, Any]:
    """An inventory row: the operating system as posture identified it (its label, the name people know),
    what the device or scan said underneath as evidence; legacy software named, the rest counted."""
    os_ = a["os"] or {}
    label = os_.get("label") or " ".join(x for x in (os_.get("product"), os_.get("cycle")) if x)
    # what the source that named it said (an unidentified asset: what its scan said, if anything)
    said = (evidence.said_by(os_.get("method"), os_["evidence"]) if os_.get("evidence") else
            f"scan said: {os_['name']}" if os_.get("name") and not label else "")  # fmt: skip
    software = a.get("software", [])
    legacy = [s for s in software if s["lifecycle_state"] in LEGACY_STATES]
    return {
        "id": a["id"],
        "address": clean(", ".join(a["addresses"][:2]), 80),
        "name": clean(a["name"], 80),
        "category": a.get("category") or "unknown",
        "label": clean(label, 120),
        "said": "" if said == label else clean(said, 120),
        "state": os_.get("lifecycle_state") or "unknown",
        "eol_date": os_.get("eol_date"),
        "legacy": [{"product": clean(s["label"], 80), "state": s["lifecycle_state"]} for s in legacy[:SOFTWARE_LISTED]],
        "other_software": len(software) - min(len(legacy), SOFTWARE_LISTED),
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


DECOMMISSION_LISTED = 200  # candidates listed in the report; all of them: `posture plan decommission`
HOSTS_LISTED = 100  # hosts listed in one group of the report; the rest: `posture findings --rule ...`
OWNERS_LISTED = 5


def _groups(findings: list[dict[str, Any]], assets: list[dict[str, Any]],
            rules: dict[str, tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
    """Open findings grouped as people act on them: one group per (rule, product and release), its hosts
    counted and listed (the first HOSTS_LISTED), ranked by RISK_FORMULA, riskiest first."""
    by_id = {a["id"]: a for a in assets}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        grouped[(f["rule_id"], named(f))].append(f)
    out = []
    for (rule_id, what), items in grouped.items():
        title, function, severity, detail = rules.get(rule_id, (rule_id, "", items[0]["severity"], {}))
        hosts = sorted({f["asset_id"] for f in items if f["asset_id"] is not None})
        host_assets = [by_id[h] for h in hosts if h in by_id]
        criticality = max((RISK_CRITICALITY.get((a.get("criticality") or "").lower(), 2) for a in host_assets),
                          default=2)  # fmt: skip
        services = sum(len(a["services"]) for a in host_assets)
        risk = RISK_SEVERITY.get(severity, 0.5) * criticality * (1 + math.log10(1 + services))
        owners = sorted({clean(f["owner"], 80) if f["owner"] else "no owner" for f in items})
        lead = items[0]
        common = clean(lead["evidence"])
        rows = [{"id": f["id"], "status": f["status"], "address": clean(f["address"] or "", 80),
                 "hostname": clean(f["hostname"] or "", 120), "owner": clean(f["owner"] or "") or "no owner",
                 "port": _place(f)["port"] if SERVICE_SUBJECT.match(str(f["subject"])) else "",
                 "evidence": clean(f["evidence"])}
                for f in sorted(items, key=lambda f: (f["address"] or "", f["id"]))[:HOSTS_LISTED]]  # fmt: skip
        out.append({
            "rule_id": rule_id, "title": clean(title), "function": function, "severity": severity,
            "what": clean(what, 200), "state": lead["lifecycle_state"], "eol_date": lead["eol_date"],
            "dates_from": _dates_from(lead), "note": clean(lead.get("note") or "", 300),
            "hosts": len(hosts), "findings": len(items), "owners": owners[:OWNERS_LISTED],
            "more_owners": max(0, len(owners) - OWNERS_LISTED), "risk": round(risk, 1),
            "evidence": common, "same_evidence": all(r["evidence"] == common for r in rows),
            "rows": rows, "more": max(0, len(items) - HOSTS_LISTED),
            "remediation": detail.get("remediation", ""),
            "kev": _kev(lead.get("kev")),
        })  # fmt: skip
    out.sort(key=lambda g: (-g["risk"], -SEVERITY_RANK.get(g["severity"], 0), -g["hosts"], g["rule_id"], g["what"]))
    return out


def _kev(kev: dict[str, Any] | None) -> dict[str, Any] | None:
    """A product's known exploited vulnerabilities as the report lists them (rules/kev.py `listing`)."""
    if not kev or not kev.get("count"):
        return None
    return {"count": kev["count"], "ransomware": kev.get("ransomware"), "more": kev.get("more") or 0,
            "catalogue": clean(kev.get("catalogue") or "", 40),
            "cves": [{"id": clean(c.get("id"), 40), "ransomware": bool(c.get("ransomware"))}
                     for c in (kev.get("cves") or [])]}  # fmt: skip


def _by_rule(groups: list[dict[str, Any]],
             rules: dict[str, tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
    """The findings section: each rule once (why, fix, references), with its groups, riskiest first."""
    by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in groups:
        by_rule[g["rule_id"]].append(g)
    out = []
    for rule_id, items in by_rule.items():
        title, function, severity, detail = rules.get(rule_id, (rule_id, "", items[0]["severity"], {}))
        out.append({
            "id": rule_id, "title": title, "function": function, "severity": severity,
            "count": sum(g["findings"] for g in items), "hosts": sum(g["hosts"] for g in items),
            "rationale": detail.get("rationale", ""), "remediation": detail.get("remediation", ""),
            "decommission": detail.get("decommission"), "references": detail.get("references", {}),
            "groups": items,
        })  # fmt: skip
    out.sort(key=lambda r: (-SEVERITY_RANK.get(r["severity"], 0), -r["count"], r["id"]))
    return out
