"""Plans built from the open findings: remediation actions a team can execute, and decommissioning.

Remediation groups findings into actions by what has to be done (a rule and, for lifecycle rules, the
product and release): "Upgrade 14 hosts from Windows Server 2012 R2", "Telnet exposed on 6 devices". Each
action has owners (from the asset register; assets without one are listed as "no owner"), a target date
from the SLA of its severity counted from when its oldest finding opened, and an effort estimate. Actions
are ordered by severity, then the highest criticality among their assets, then exposure (open services).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from rules.engine import SEVERITY_RANK, Settings
from rules.findings import finding_views
from rules.tls import CERTIFICATE_RULES
from scanner.store import Store
from scanner.views import asset_views

# Hours of work per asset, by the kind of action (a planning figure, shown with the plan).
EFFORT_HOURS = {"upgrade-os": 8.0, "upgrade-software": 2.0, "configuration": 0.5, "investigate": 1.0,
                "certificate": 1.0}  # fmt: skip  # a certificate: per certificate, not per host
EFFORT_BY_RULE = {
    "protect.eol-os": "upgrade-os", "protect.extended-support-only": "upgrade-os",
    "respond.decommission-candidate": "upgrade-os", "respond.kev-end-of-life": "upgrade-os",
    "protect.eol-software": "upgrade-software", "protect.eol-within-horizon": "upgrade-software",
    "respond.kev-family": "upgrade-software",
}  # fmt: skip
# Host configuration problems fixed once per host, whatever ports show them (SMB answers on 139 and 445 alike):
# one action per rule, counting hosts, named by what to do.
HOST_ACTIONS = {"protect.smbv1": "Disable SMBv1", "protect.smb-signing-not-required": "Require SMB signing"}
SERVICE_SUBJECT = re.compile(r"^(tcp|udp|sctp)/\d+$")  # a finding about a port: a configuration change
CRITICALITY = {"critical": 3, "high": 2, "medium": 1}
DECOMMISSION_RULES = ("respond.decommission-candidate", "respond.eol-no-owner", "respond.kev-end-of-life")
DECOMMISSION_STEPS = (
    "Owner sign-off (or, with no owner, the service's senior responsible owner)",
    "Migrate or archive its data under the retention schedule",
    "Securely sanitise its storage media (NCSC guidance on secure sanitisation)",
    "Remove it from the network, DNS, DHCP reservations and monitoring",
    "Update the asset register and cancel its licences and support contracts",
)


@dataclass
class Action:
    rule_id: str
    title: str
    severity: str
    what: str
    findings: list[dict[str, Any]]
    assets: list[int]
    owners: list[str]
    target_date: str
    effort_hours: float
    criticality: int
    exposure: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.what, "rule_id": self.rule_id, "severity": self.severity, "assets": len(self.assets),
            "asset_ids": self.assets, "owners": self.owners, "target_date": self.target_date,
            "effort_hours": self.effort_hours, "findings": [f["id"] for f in self.findings],
        }  # fmt: skip


def named(finding: dict[str, Any]) -> str:
    """What a finding is about as people name it ("Microsoft Windows Server 2008 R2 SP1"); findings stored
    before names existed fall back to the product and release."""
    if finding.get("label"):
        return str(finding["label"])
    return " ".join(str(x) for x in (finding["product"], finding["cycle"] or finding["version"]) if x)


def _verb(rule_id: str, title: str, product: str | None, count: int) -> str:
    noun = "host" if count == 1 else "hosts"
    if rule_id in HOST_ACTIONS:
        return f"{HOST_ACTIONS[rule_id]} on {count} {noun}"
    if rule_id in ("protect.eol-os", "protect.extended-support-only", "respond.decommission-candidate") and product:
        return f"Upgrade or replace {count} {noun} running {product}"
    if rule_id in ("protect.eol-software", "protect.eol-within-horizon") and product:
        return f"Upgrade {product} on {count} {noun}"
    if product:
        return f"{title}: {product} ({count} {noun})"
    return f"{title}: {count} {noun}"


def _worst_certificate_problem(findings: list[dict[str, Any]]) -> dict[tuple[Any, str], str]:
    """(asset, port) -> the worst certificate rule raised there (CERTIFICATE_RULES order): replacing the
    certificate fixes its other problems too, so it is counted in that one action only."""
    order = list(CERTIFICATE_RULES)
    worst: dict[tuple[Any, str], str] = {}
    for f in findings:
        if f["rule_id"] in CERTIFICATE_RULES:
            key = (f["asset_id"], f["subject"])
            if key not in worst or order.index(f["rule_id"]) < order.index(worst[key]):
                worst[key] = f["rule_id"]
    return worst


def _certificates(rule_id: str, items: list[dict[str, Any]], hosts: int) -> str:
    """"Renew the expired TLS certificates: 2 on 2 hosts (also fixes: SHA-1/MD5 signature)"."""
    count = len({(f["asset_id"], f["subject"]) for f in items})
    others = sorted({CERTIFICATE_RULES[f["rule_id"]][0] for f in items if f["rule_id"] != rule_id})
    also = f" (also fixes: {', '.join(others)})" if others else ""
    return f"{CERTIFICATE_RULES[rule_id][1]}: {count} on {hosts} {'host' if hosts == 1 else 'hosts'}{also}"


def plan_inputs(store: Store, day: date) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The asset view and the findings as judged on `day`: what both plans are made from (read once)."""
    return asset_views(store), finding_views(store, day)


def remediation_plan(asset_rows: list[dict[str, Any]], findings: list[dict[str, Any]],
                     settings: Settings) -> list[Action]:  # fmt: skip
    """Open, not accepted findings grouped into actions, worst first."""
    assets = {a["id"]: a for a in asset_rows}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    live = [f for f in findings if not f["accepted"] and f["rule_id"] != "respond.past-sla"]  # overdue: a property
    worst = _worst_certificate_problem(live)
    for f in live:
        # one action per thing as people name it; a certificate once, under its worst problem; per rule for a
        # host's configuration
        if f["rule_id"] in CERTIFICATE_RULES:
            groups[(worst[(f["asset_id"], f["subject"])], "")].append(f)
        else:
            groups[(f["rule_id"], "" if f["rule_id"] in HOST_ACTIONS else named(f))].append(f)
    actions = []
    for (rule_id, _), items in groups.items():
        asset_ids = sorted({f["asset_id"] for f in items if f["asset_id"] is not None})
        owners = sorted({assets[a]["owner"] or "no owner" for a in asset_ids if a in assets}) or ["no owner"]
        lead = next(f for f in items if f["rule_id"] == rule_id)
        severity = max((f["severity"] for f in items), key=SEVERITY_RANK.__getitem__)
        opened = min(f["opened_at"] for f in items)
        target = date.fromisoformat(opened[:10]) + timedelta(days=settings.sla_days.get(severity, 365))
        if rule_id in CERTIFICATE_RULES:  # the work is per certificate
            kind, units = "certificate", len({(f["asset_id"], f["subject"]) for f in items})
            what = _certificates(rule_id, items, len(asset_ids))
        else:
            by_subject = "configuration" if SERVICE_SUBJECT.match(lead["subject"]) else "investigate"
            kind, units = EFFORT_BY_RULE.get(rule_id, by_subject), len(asset_ids)
            what = _verb(rule_id, lead["title"], named(lead) or None, len(asset_ids) or len(items))
        actions.append(Action(
            rule_id=rule_id, title=lead["title"], severity=severity, what=what,
            findings=items, assets=asset_ids, owners=owners, target_date=target.isoformat(),
            effort_hours=EFFORT_HOURS[kind] * max(units, 1),
            criticality=max((CRITICALITY.get((assets[a]["criticality"] or "").lower(), 0) for a in asset_ids
                             if a in assets), default=0),
            exposure=sum(len(assets[a]["services"]) for a in asset_ids if a in assets),
        ))  # fmt: skip
    actions.sort(key=lambda a: (-SEVERITY_RANK[a.severity], -a.criticality, -a.exposure, a.target_date, a.what))
    return actions


def decommission_plan(asset_rows: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assets that are candidates for retirement, riskiest first, with what they still serve and the steps."""
    assets = {a["id"]: a for a in asset_rows}
    reasons: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        if f["rule_id"] in DECOMMISSION_RULES and f["asset_id"] in assets:
            reasons[f["asset_id"]].append(f)
    out = []
    for asset_id, items in reasons.items():
        a = assets[asset_id]
        worst = max(SEVERITY_RANK[f["severity"]] for f in items)
        out.append({
            "asset_id": asset_id, "address": (a["addresses"] or [None])[0], "name": a["name"],
            "owner": a["owner"] or "no owner", "last_seen": a["last_seen"],
            "why": sorted({f["title"] for f in items}),
            "runs": sorted({named(f) for f in items if f["product"]}),
            "still_serves": [f"{s['port']}/{s['protocol']} {s['name'] or ''}".strip() for s in a["services"]],
            "steps": list(DECOMMISSION_STEPS), "severity_rank": worst,
        })  # fmt: skip
    # Riskiest first; among equals, what serves least goes first (fewest dependants to move).
    out.sort(key=lambda c: (-c["severity_rank"], len(c["still_serves"]), c["asset_id"]))
    for n, c in enumerate(out, start=1):
        c["sequence"] = n
        del c["severity_rank"]
    return out
