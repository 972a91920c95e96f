"""Plans built from the open findings: remediation actions a team can execute, what to investigate, and
decommissioning.

Remediation gives one action per fix and set of assets, so no asset is counted twice for the same work:

- A machine whose operating system, firmware or hardware is past end of life, has only paid extended support
  left or ends within the planning horizon is in ONE action ("Upgrade or replace 14 hosts running Windows
  Server 2012 R2"), whichever rules said so: the rules become the action's reasons (known exploited
  vulnerabilities, no supported release to upgrade to, no owner, past its SLA) and the action has one
  effort. The software of a machine past end of life goes with it ("also removes: Python 2.7"); only
  software on machines that stay gives "Upgrade Python 2.7 on 3 hosts".
- A supported product with known exploited vulnerabilities (CISA KEV) gives "check the fixes are
  installed", with its CVE ids; every action about a known-exploited product lists them.
- A host's configuration problem is one action per rule (SMB answers on 139 and 445 alike), a service's per
  rule and product, a TLS certificate once under its worst problem.
- Detective findings (a new asset, one not in the register, a coverage gap) are not remediation: they make
  the "to investigate" list.

Each action has owners (from the asset register; assets without one are listed as "no owner"), a target
date from the SLA of its worst severity counted from when its oldest finding opened, and an effort
estimate. Actions are ordered by severity, then the highest criticality among their assets, then exposure
(open services).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from rules.engine import SEVERITY_RANK, Settings
from rules.findings import finding_views
from rules.kev import kev_text
from rules.tls import CERTIFICATE_RULES
from scanner.model import printable
from scanner.store import Store
from scanner.views import asset_views

# Hours of work per asset, by the kind of fix (a planning figure, shown with the plan).
EFFORT_HOURS = {"upgrade-os": 8.0, "upgrade-software": 2.0, "patch": 2.0, "configuration": 0.5, "change": 1.0,
                "investigate": 1.0, "certificate": 1.0}  # fmt: skip  # a certificate: per certificate, not per host
# Rules whose fix is to upgrade or replace what they are about: the machine, for its operating system,
# firmware or hardware; the program, for software. Each names the reason it adds to the action, in this order.
LIFECYCLE_RULES = {
    "respond.kev-end-of-life": "known exploited vulnerabilities (CISA KEV)",
    "protect.eol-os": "past end of life",
    "protect.eol-software": "past end of life",
    "protect.eol-hardware": "hardware past its last date of support",
    "respond.decommission-candidate": "no supported release to upgrade to",
    "protect.extended-support-only": "only paid extended support left",
    "protect.eol-within-horizon": "end of life within the planning horizon",
    "respond.eol-no-owner": "no owner",
}  # fmt: skip
# Of those, the ones that say it is past end of life now: a machine they name is being replaced now, and
# the software on it goes with it.
END_OF_LIFE_RULES = ("respond.kev-end-of-life", "protect.eol-os", "protect.eol-software", "protect.eol-hardware",
                     "respond.decommission-candidate")  # fmt: skip
KEV_FAMILY = "respond.kev-family"  # supported, with known exploited vulnerabilities: check the fixes are in
KEV_RULES = ("respond.kev-end-of-life", KEV_FAMILY)
PAST_SLA = "respond.past-sla"  # about another finding: a reason of that finding's action, not an action
MACHINE_SUBJECTS = ("os:", "firmware:", "hardware:")  # what a machine is; "software:" is on it
# Host configuration problems fixed once per host, whatever ports show them (SMB answers on 139 and 445 alike):
# one action per rule, counting hosts, named by what to do.
HOST_ACTIONS = {"protect.smbv1": "Disable SMBv1", "protect.smb-signing-not-required": "Require SMB signing"}
SERVICE_SUBJECT = re.compile(r"^(tcp|udp|sctp)/\d+$")  # a finding about a port: a configuration change
CRITICALITY = {"critical": 3, "high": 2, "medium": 1}
HOSTS_SHOWN = 10  # hosts named in a table cell; the JSON has them all
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
    kind: str  # what is done, one of EFFORT_HOURS: upgrade-os, upgrade-software, patch, configuration, ...
    fix: str  # the fix and what it is applied to: each asset is in at most one action per fix
    rule_id: str  # its worst finding's rule
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
    reasons: list[str] = field(default_factory=list)  # "no owner (1 of 2 hosts)", "past its SLA"
    also_removes: list[str] = field(default_factory=list)  # software of the machines being replaced
    kev: list[dict[str, Any]] = field(default_factory=list)  # per known-exploited product: its CVE ids
    hosts: list[str] = field(default_factory=list)  # each asset's address and name, in `assets` order

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.what, "kind": self.kind, "fix": self.fix, "rule_id": self.rule_id,
            "rule_ids": sorted({f["rule_id"] for f in self.findings}), "severity": self.severity,
            "assets": len(self.assets), "asset_ids": self.assets, "hosts": self.hosts, "owners": self.owners,
            "target_date": self.target_date, "effort_hours": self.effort_hours, "reasons": self.reasons,
            "also_removes": self.also_removes, "kev": self.kev, "findings": [f["id"] for f in self.findings],
        }  # fmt: skip


@dataclass
class Plan:
    actions: list[Action]  # remediation, worst first
    investigate: list[Action]  # detective findings: to look into, not to fix

    def totals(self) -> dict[str, dict[str, Any]]:
        """Per list: how many items, how many distinct assets, how many hours (the sum of the items'), and
        that as a sentence ("5 actions on 3 assets, 26 hours")."""
        out = {}
        for name, noun, rows in (("actions", "action", self.actions), ("investigate", "item", self.investigate)):
            assets, hours = len({a for r in rows for a in r.assets}), sum(r.effort_hours for r in rows)
            text = f"{_many(len(rows), noun)} on {_many(assets, 'asset')}, {_many(hours, 'hour')}"
            out[name] = {"count": len(rows), "assets": assets, "hours": hours, "text": text}
        return out


def named(finding: dict[str, Any]) -> str:
    """What a finding is about as people name it ("Microsoft Windows Server 2008 R2 SP1"); findings stored
    before names existed fall back to the product and release."""
    if finding.get("label"):
        return str(finding["label"])
    return " ".join(str(x) for x in (finding["product"], finding["cycle"] or finding["version"]) if x)


def _host(asset_id: int, asset: dict[str, Any] | None, finding: dict[str, Any]) -> str:
    """An asset as a person finds it: "10.5.0.10 rev-app01.council.example" (its address and name)."""
    address = (asset["addresses"] or [None])[0] if asset else finding["address"]
    name = asset["name"] if asset else finding["hostname"]
    return " ".join(dict.fromkeys(str(x) for x in (address, name) if x)) or f"asset {asset_id}"


def _many(count: float, noun: str) -> str:
    """ "1 host", "2 hosts", "0.5 hours"."""
    return f"{count:g} {noun if count == 1 else noun + 's'}"


def _hosts(count: int) -> str:
    return _many(count, "host")


def _verb(kind: str, rule_id: str, title: str, name: str, count: int, hardware: bool) -> str:
    if kind == "upgrade-os":
        return f"Replace {_hosts(count)} on {name} hardware" if hardware else \
            f"Upgrade or replace {_hosts(count)} running {name}"  # fmt: skip
    if kind == "upgrade-software":
        return f"Upgrade {name} on {_hosts(count)}"
    if kind == "patch":
        return f"Check the fixes for the known exploited vulnerabilities of {name} are installed on {_hosts(count)}"
    if rule_id in HOST_ACTIONS:
        return f"{HOST_ACTIONS[rule_id]} on {_hosts(count)}"
    return f"{title}: {name} ({_hosts(count)})" if name else f"{title}: {_hosts(count)}"


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
    return f"{CERTIFICATE_RULES[rule_id][1]}: {count} on {_hosts(hosts)}{also}"


def _machines(findings: list[dict[str, Any]]) -> dict[int, tuple[str, bool, bool]]:
    """asset -> (the machine's name in its action, named by its hardware, past end of life now) for every
    asset with a lifecycle finding about its operating system, firmware or hardware: the one machine action
    each such asset is in, whichever rules raised it."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        if f["rule_id"] in LIFECYCLE_RULES and f["asset_id"] is not None and \
                str(f["subject"]).startswith(MACHINE_SUBJECTS):  # fmt: skip
            found[f["asset_id"]].append(f)
    out = {}
    for asset_id, items in found.items():
        system = [f for f in items if not str(f["subject"]).startswith("hardware:")]
        name = min(named(f) for f in system or items)  # one OS per asset; of several boards, the first
        out[asset_id] = (name, not system, any(f["rule_id"] in END_OF_LIFE_RULES for f in items))
    return out


def _place(f: dict[str, Any], machines: dict[int, tuple[str, bool, bool]],
           worst: dict[tuple[Any, str], str]) -> tuple[str, str, str]:  # fmt: skip
    """(kind, target, name) of the action a finding belongs to. The fix is the kind and target together,
    so an asset is in one action per fix: one machine action; one per program, certificate or rule."""
    rule_id, subject, name = f["rule_id"], str(f["subject"]), named(f)
    if f["function"] == "detect":
        return "investigate", f"{rule_id} {name}".strip(), name
    if rule_id in CERTIFICATE_RULES:
        return "certificate", worst[(f["asset_id"], subject)], ""
    if rule_id in LIFECYCLE_RULES or rule_id == KEV_FAMILY:
        machine = machines.get(f["asset_id"])  # its software goes with a machine past end of life
        if machine and (machine[2] or (rule_id != KEV_FAMILY and subject.startswith(MACHINE_SUBJECTS))):
            return "upgrade-os", "", machine[0]
        return ("patch" if rule_id == KEV_FAMILY else "upgrade-software"), name, name
    if rule_id in HOST_ACTIONS:
        return "configuration", rule_id, ""
    kind = "configuration" if SERVICE_SUBJECT.match(subject) else "change"
    return kind, f"{rule_id} {name}".strip(), name


def _share(text: str, assets: set[Any], total: int) -> str:
    """"no owner" when it is true of every asset of the action, else "no owner (1 of 2 hosts)"."""
    return text if len(assets) >= total else f"{text} ({len(assets)} of {_hosts(total)})"


REASON_OF = {**LIFECYCLE_RULES, KEV_FAMILY: LIFECYCLE_RULES["respond.kev-end-of-life"]}


def _reasons(items: list[dict[str, Any]], total: int, overdue: set[str]) -> list[str]:
    """Why the action is due, in LIFECYCLE_RULES order, each with the share of its assets it is true of."""
    found: dict[str, set[Any]] = {text: set() for text in REASON_OF.values()}  # in order
    for f in items:
        if f["rule_id"] in REASON_OF:
            found[REASON_OF[f["rule_id"]]].add(f["asset_id"])
    found["past its SLA"] = {f["asset_id"] for f in items if f["id"] in overdue}
    return [_share(text, assets, total) for text, assets in found.items() if assets]


def _components(items: list[dict[str, Any]], total: int) -> list[str]:
    """The software a machine action removes with the machines: "Python 2.7", "Office 2007 (1 of 3 hosts)"."""
    found: dict[str, set[Any]] = defaultdict(set)
    for f in items:
        if str(f["subject"]).startswith("software:"):
            found[named(f)].add(f["asset_id"])
    return [_share(name, found[name], total) for name in sorted(found)]


def _known_exploited(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each known-exploited product of the action with its CVE ids (rules/kev.py `listing`): the machine's
    own first, then its software, by name."""
    found: dict[str, tuple[bool, dict[str, Any]]] = {}
    for f in items:
        if f["rule_id"] in KEV_RULES and f.get("kev") and named(f) not in found:
            found[named(f)] = (str(f["subject"]).startswith("software:"), {"product": named(f), **f["kev"]})
    return [kev for _, kev in sorted(found.values(), key=lambda k: (k[0], k[1]["product"]))]


def plan_inputs(store: Store, day: date) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The asset view and the findings as judged on `day`: what both plans are made from (read once)."""
    return asset_views(store), finding_views(store, day)


def remediation_plan(asset_rows: list[dict[str, Any]], findings: list[dict[str, Any]], settings: Settings) -> Plan:
    """Open, not accepted findings as actions, worst first, and the detective ones as things to investigate."""
    assets = {a["id"]: a for a in asset_rows}
    live = [f for f in findings if not f["accepted"]]
    overdue = {str(f["subject"]).removeprefix("finding:") for f in live if f["rule_id"] == PAST_SLA}
    live = [f for f in live if f["rule_id"] != PAST_SLA]
    machines, worst = _machines(live), _worst_certificate_problem(live)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in live:
        groups[_place(f, machines, worst)].append(f)
    plan = Plan([], [])
    for (kind, target, name), items in groups.items():
        asset_ids = sorted({f["asset_id"] for f in items if f["asset_id"] is not None})
        lead = max(items, key=lambda f: (SEVERITY_RANK[f["severity"]], str(f["subject"]).startswith(MACHINE_SUBJECTS)))
        severity = lead["severity"]
        opened = min(f["opened_at"] for f in items)
        due = date.fromisoformat(opened[:10]) + timedelta(days=settings.sla_days.get(severity, 365))
        count = len(asset_ids) or len(items)
        if kind == "certificate":  # the work is per certificate
            units = len({(f["asset_id"], f["subject"]) for f in items})
            what = _certificates(target, items, len(asset_ids))
        else:
            hardware = kind == "upgrade-os" and machines[asset_ids[0]][1]
            units, what = len(asset_ids), _verb(kind, lead["rule_id"], lead["title"], name, count, hardware)
        place: dict[int, str] = {}
        for f in items:
            if f["asset_id"] is not None and f["asset_id"] not in place:
                place[f["asset_id"]] = _host(f["asset_id"], assets.get(f["asset_id"]), f)
        action = Action(
            kind=kind, fix=f"{kind}:{target}" if target else kind, rule_id=lead["rule_id"], title=lead["title"],
            severity=severity, what=what, findings=items, assets=asset_ids,
            owners=sorted({assets[a]["owner"] or "no owner" for a in asset_ids if a in assets}) or ["no owner"],
            target_date=due.isoformat(), effort_hours=EFFORT_HOURS[kind] * max(units, 1),
            criticality=max((CRITICALITY.get((assets[a]["criticality"] or "").lower(), 0) for a in asset_ids
                             if a in assets), default=0),
            exposure=sum(len(assets[a]["services"]) for a in asset_ids if a in assets),
            reasons=_reasons(items, count, overdue),
            also_removes=_components(items, count) if kind == "upgrade-os" else [],
            kev=_known_exploited(items), hosts=[place[a] for a in asset_ids],
        )  # fmt: skip
        (plan.investigate if kind == "investigate" else plan.actions).append(action)
    for rows in (plan.actions, plan.investigate):
        rows.sort(key=lambda a: (-SEVERITY_RANK[a.severity], -a.criticality, -a.exposure, a.target_date, a.what))
    return plan


def kev_lines(action: dict[str, Any]) -> list[str]:
    """An action's known exploited vulnerabilities, one line per product: "Internet Explorer 8: CVE-... (CISA
    KEV 2025.08.25)"."""
    return [f"{k['product']}: {kev_text(k)}" for k in action["kev"]]


def report_view(plan: Plan) -> dict[str, Any]:
    """The plan as the HTML report's fields (reports/model.py `Report`): device strings made printable and
    bounded; the hosts cut to HOSTS_SHOWN with the rest counted."""

    def row(a: Action) -> dict[str, Any]:
        d = a.as_dict()
        shown = [printable(h, 120) for h in a.hosts[:HOSTS_SHOWN]]
        return {**d, "action": printable(a.what, 300), "owners": [printable(o, 80) for o in a.owners],
                "reasons": [printable(r, 200) for r in a.reasons],
                "also_removes": [printable(c, 200) for c in a.also_removes],
                "kev": [{**k, "product": printable(k["product"], 160),
                         "cves": [{**c, "id": printable(c["id"], 40)} for c in k["cves"]]} for k in a.kev],
                "hosts": shown, "more_hosts": max(0, len(a.hosts) - HOSTS_SHOWN)}  # fmt: skip

    return {"actions": [row(a) for a in plan.actions], "investigate": [row(a) for a in plan.investigate],
            "plan_totals": plan.totals()}  # fmt: skip


def decommission_plan(asset_rows: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assets that are candidates for retirement, riskiest first, with what they still serve and the steps.
    What makes a machine one is its operating system, firmware or hardware: an old program on a supported
    machine is upgraded or removed (the remediation plan), the machine is not retired for it."""
    assets = {a["id"]: a for a in asset_rows}
    reasons: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        if f["rule_id"] in DECOMMISSION_RULES and f["asset_id"] in assets and \
                str(f["subject"]).startswith(MACHINE_SUBJECTS):  # fmt: skip
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
