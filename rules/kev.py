"""CISA's Known Exploited Vulnerabilities (CC0; `rules/data/kev/`), counted per lifecycle product family.

KEV names a vendor and a product family, not versions, so posture says "this family has vulnerabilities
exploited in the wild" and lets the rules combine that with the lifecycle: on an end-of-life system those
holes will never be patched. The mapping from KEV's names to catalogue slugs below is posture's own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

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


def load_kev(path: Path = KEV_FILE) -> KevCatalogue:
    data = json.loads(path.read_text(encoding="utf-8"))
    patterns = {slug: (vendor, re.compile(p)) for slug, (vendor, p) in KEV_PRODUCTS.items()}
    by_product: dict[str, list[str]] = {slug: [] for slug in patterns}
    ransomware = dict.fromkeys(patterns, 0)
    for entry in sorted(data["vulnerabilities"], key=lambda e: e.get("dateAdded", ""), reverse=True):
        vendor, product = str(entry.get("vendorProject", "")), str(entry.get("product", ""))
        for slug, (want_vendor, pattern) in patterns.items():
            if vendor == want_vendor and pattern.search(product):
                by_product[slug].append(str(entry["cveID"]))
                ransomware[slug] += entry.get("knownRansomwareCampaignUse") == "Known"
    return KevCatalogue(str(data.get("catalogVersion", "")), {k: tuple(v) for k, v in by_product.items()}, ransomware)


@cache
def default_kev() -> KevCatalogue:
    return load_kev()
