"""CISA's Known Exploited Vulnerabilities (CC0; `rules/data/kev/`), listed per lifecycle product family.

KEV names a vendor and a product family, not versions, so posture says "this family has vulnerabilities
exploited in the wild" and lets the rules combine that with the lifecycle: on an end-of-life system those
holes will never be patched. Each family's CVE ids (those used in ransomware campaigns marked) travel with
its findings and plans, with the catalogue's version beside them (`listing`). The mapping from KEV's names
to catalogue slugs below is posture's own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

KEV_FILE = Path(__file__).parent / "data" / "kev" / "known_exploited_vulnerabilities.json"

# slug -> (vendorProject, product pattern). Windows components (Win32k, SMBv1, ...) are Windows.
KEV_PRODUCTS: dict[str, tuple[str, str]] = {
    "windows": ("Microsoft", r"^(Windows|Win32k)\b"),
    "windows-server": ("Microsoft", r"^(Windows|Win32k)\b"),
    "windows-embedded": ("Microsoft", r"^(Windows|Win32k)\b"),
    "internet-explorer": ("Microsoft", r"Internet Explorer"),
    "office": ("Microsoft", r"^(Office|Word|Excel|PowerPoint|Outlook)\b"),
    "msexchange": ("Microsoft", r"^Exchange"),
    "sharepoint": ("Microsoft", r"SharePoint"),
    "mssqlserver": ("Microsoft", r"SQL Server"),
    "dotnetfx": ("Microsoft", r"\.NET Framework"),
    "cisco-ios": ("Cisco", r"^IOS(?! X[RE])\b"),
    "cisco-ios-xe": ("Cisco", r"IOS XE|IOS and IOS XE|IOS, "),
    "junos": ("Juniper", r"Junos"),
    "linux": ("Linux", r"^Kernel$"),
    "apache-http-server": ("Apache", r"^HTTP Server$"),
    "tomcat": ("Apache", r"^Tomcat$"),
    "log4j": ("Apache", r"Log4j"),
    "esxi": ("VMware", r"ESXi"),
    "vcenter": ("VMware", r"vCenter"),
    "fortios": ("Fortinet", r"FortiOS"),
    "panos": ("Palo Alto Networks", r"PAN-OS"),
    "big-ip": ("F5", r"BIG-IP"),
    "confluence": ("Atlassian", r"Confluence"),
    "jira-software": ("Atlassian", r"Jira"),
    "firefox": ("Mozilla", r"Firefox"),
    "chrome": ("Google", r"^Chrom"),
    "php": ("PHP", r"PHP"),
    "drupal": ("Drupal", r"(?i)core"),
    "veeam-backup-and-replication": ("Veeam", r"Backup"),
    "citrix-vad": ("Citrix", r"Virtual Apps|Workspace"),
    "redis": ("Redis", r"Redis"),
}


@dataclass(frozen=True)
class KevCatalogue:
    version: str  # catalogVersion, shown in reports beside the lifecycle data's date
    by_product: dict[str, tuple[str, ...]]  # slug -> CVE ids, newest first
    ransomware: dict[str, int]  # slug -> entries known to be used in ransomware campaigns
    # slug -> what findings, plans and reports show: `listing` (the version, the count, the ids listed)
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)


# CVE ids listed per product: enough for every family but Windows (179 in 2025.08.25) and Chrome (63); the
# rest are counted ("and 129 more") and found in the catalogue itself by vendor and product.
KEV_LISTED = 50


def listing(version: str, entries: list[tuple[str, bool]]) -> dict[str, Any]:
    """The KEV evidence of a product family as findings carry it (README, `findings --format json`):
    {"catalogue": version, "count": n, "ransomware": m, "cves": [{"id", "ransomware"}], "more": n - listed}.
    `entries` is (CVE id, used in ransomware campaigns) newest first; those used by ransomware are listed
    first, so a bounded list never leaves out the ones most likely to hurt."""
    ranked = sorted(entries, key=lambda e: not e[1])  # stable: newest first within each group
    cves = [{"id": cve, "ransomware": used} for cve, used in ranked[:KEV_LISTED]]
    return {"catalogue": version, "count": len(entries), "ransomware": sum(used for _, used in entries),
            "cves": cves, "more": max(0, len(entries) - KEV_LISTED)}  # fmt: skip


def kev_text(kev: dict[str, Any] | None) -> str:
    """One line for a table cell or a plan: "CVE-2017-0144 (ransomware), CVE-2024-38112, and 129 more (CISA
    KEV 2025.08.25)"; empty when the product has none. Reads findings stored before the ransomware mark
    (`ransomware` null) as well."""
    if not kev or not kev.get("count"):
        return ""
    ids = [f"{c['id']} (ransomware)" if c.get("ransomware") else str(c["id"]) for c in kev.get("cves") or []]
    if kev.get("more"):
        ids.append(f"and {kev['more']} more")
    source = f" (CISA KEV {kev['catalogue']})" if kev.get("catalogue") else " (CISA KEV)"
    return ", ".join(ids) + source


def load_kev(path: Path = KEV_FILE) -> KevCatalogue:
    data = json.loads(path.read_text(encoding="utf-8"))
    version = str(data.get("catalogVersion", ""))
    patterns = {slug: (vendor, re.compile(p)) for slug, (vendor, p) in KEV_PRODUCTS.items()}
    entries: dict[str, list[tuple[str, bool]]] = {slug: [] for slug in patterns}
    for entry in sorted(data["vulnerabilities"], key=lambda e: e.get("dateAdded", ""), reverse=True):
        vendor, product = str(entry.get("vendorProject", "")), str(entry.get("product", ""))
        for slug, (want_vendor, pattern) in patterns.items():
            if vendor == want_vendor and pattern.search(product):
                entries[slug].append((str(entry["cveID"]), entry.get("knownRansomwareCampaignUse") == "Known"))
    return KevCatalogue(
        version,
        {slug: tuple(cve for cve, _ in found) for slug, found in entries.items()},
        {slug: sum(used for _, used in found) for slug, found in entries.items()},
        {slug: listing(version, found) for slug, found in entries.items() if found},
    )


@cache
def default_kev() -> KevCatalogue:
    return load_kev()
