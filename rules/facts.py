"""Inventory facts per asset, in the flat shape rules test: the asset, its identified items, its services.

Read in a handful of SQL passes ordered by asset, so 100,000 assets cost a few queries, not 100,000.
What a device reported is identified once per distinct string (caches), because estates repeat the same
software names thousands of times. Items (OS, firmware, software) carry their lifecycle state on the
day given, the evidence used, and the other candidates when sources disagree: a conflict is shown, never
silently resolved.

Distribution packages: a web server that reports `nginx 1.22.1` on a Debian 12 host is Debian's package,
patched by Debian for the life of Debian 12, not upstream nginx 1.22 (end of life upstream). When the host
is known to run a distribution, server programs take that distribution's lifecycle and say so.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from rules import fingerprints, tls
from rules.catalogue import Catalogue, Lifecycle, Status
from rules.hardware import MAX_MODEL, chassis, identify_hardware
from rules.identify import (
    Identification,
    display_name,
    distribution_named,
    eol_range,
    identify_cpe,
    identify_directory,
    identify_fingerprint,
    identify_fingerprints,
    identify_installed,
    identify_ntlm,
    identify_os_release,
    identify_package,
    identify_service,
    identify_smb,
    identify_software_name,
    identify_sysdescr,
    identify_windows_build,
    lifecycle,
    lifecycle_published,
    lifecycle_sources,
    months_only,
    single_cycle,
)
from rules.kev import KevCatalogue
from scanner.compat import tomllib
from scanner.store import DIRECTORY_SOURCES, NOT_NETWORK_SOURCES, Store
from scanner.views import LATEST_PORT_OBSERVATION, asset_addresses

# How much each kind of evidence is believed (issue 12 item 3): what the host states > SNMP sysDescr > the
# Windows build from SMB or NTLM (nmap's smb-os-discovery, *-ntlm-info) > a distribution package version
# (or the release a banner pins) > nmap OS detection, in nmap's accuracy order > an OS CPE on a service.
# Programs only compete with the same program.
EVIDENCE_RANK = {"os-release": 80, "registry": 70,  # a host agent: the host's own word
                 "directory": 70,  # what the host told its domain controller (AD operatingSystem): its own word
                 "release package": 65, "sysDescr": 60, "smb-os-discovery": 50, "ntlm-info": 50,  # Windows' word
                 "package build": 40, "nmap service": 40, "nmap os": 30,
                 "cpe": 20, "service cpe": 20, "package": 10, "nmap product": 10, "software name": 10,
                 "mac vendor": 5}  # fmt: skip
CONFIDENCE_RANK = {"high": 3, "medium": 2, "low": 1}
SUPPORTED_STATES = (Lifecycle.SUPPORTED, Lifecycle.NO_END_ANNOUNCED, Lifecycle.SECURITY_ONLY)  # an upgrade target
AGENT_PACKAGE_MANAGERS = frozenset({"dpkg", "rpm", "apk", "pip", "registry"})
Items = tuple[dict[str, Any], ...]  # shared, read-only item dicts (see `Identifier.item`)
# Identification reads the row's extra JSON for these methods.
EXTRA_METHODS = frozenset({"sysDescr", "os-release", "registry", "directory"})
DISTRIBUTION_SLUGS = frozenset({"debian", "ubuntu", "rhel", "centos", "rocky-linux", "almalinux", "sles",
                                "oracle-linux"})  # fmt: skip
CATEGORY_BY_PRODUCT = {
    "windows-server": "servers", "rhel": "servers", "centos": "servers", "debian": "servers", "ubuntu": "servers",
    "sles": "servers", "oracle-linux": "servers", "rocky-linux": "servers", "almalinux": "servers",
    "esxi": "servers", "netapp-ontap": "servers", "netapp-ontap-7-mode": "servers", "linux": "servers",
    "windows": "end-user", "macos": "end-user", "windows-embedded": "ot-iot",
    "cisco-ios": "network", "cisco-ios-xe": "network", "junos": "network", "fortios": "network", "panos": "network",
    "big-ip": "network",
}  # fmt: skip
# The fingerprints' device categories, in the report's groups.
REPORT_CATEGORY = {"server": "servers", "storage": "servers", "virtualisation": "servers", "bmc": "servers",
                   "network": "network", "end-user": "end-user", "mobile": "end-user", "printer": "ot-iot",
                   "ups-pdu": "ot-iot", "camera": "ot-iot", "ot-iot": "ot-iot"}  # fmt: skip
DEVICE_TYPE_CATEGORY = {
    "switch": "network", "router": "network", "firewall": "network", "WAP": "network", "load balancer": "network",
    "broadband router": "network", "printer": "ot-iot", "webcam": "ot-iot", "power-device": "ot-iot",
    "VoIP phone": "ot-iot", "media device": "ot-iot", "specialized": "ot-iot", "storage-misc": "servers",
    "general purpose": None,
}  # fmt: skip
OT_ENTERPRISES = {"318": "ot-iot", "39165": "ot-iot", "50001": "ot-iot", "9": "network", "2636": "network",
                  "789": "servers", "311": None}  # fmt: skip  # APC, Hikvision, ..., Cisco, Juniper, NetApp
SERVER_PROGRAMS = frozenset({"nginx", "apache-http-server", "tomcat", "mysql", "mariadb", "postgresql", "php",
                             "squid", "redis", "isc-dhcp", "openssl", "python", "openssh", "samba", "bind",
                             "postfix", "vsftpd", "proftpd"})  # fmt: skip


BUILDS_FILE = Path(__file__).parent / "data" / "distribution_builds.toml"


@cache
def distribution_builds() -> dict[str, list[tuple[str, str]]]:
    """product slug -> [(version or "prefix.", "debian 12")] from `data/distribution_builds.toml`, each pair once.

    A row's product names one upstream version or a list of them (a release that imported new upstream
    versions during its life shipped each of them); every row also says where it came from (`source`)."""
    out: dict[str, dict[tuple[str, str], None]] = defaultdict(dict)
    for build in tomllib.loads(BUILDS_FILE.read_text(encoding="utf-8"))["build"]:
        name = f"{build['distribution']} {build['cycle']}"
        for slug, versions in build["products"].items():
            for version in [versions] if isinstance(versions, str) else versions:
                out[slug][(version, name)] = None
    return {slug: list(pairs) for slug, pairs in out.items()}


@lru_cache(maxsize=65_536)
def _possible_builds(slug: str, version: str | None) -> tuple[str, ...]:
    """The distribution releases that shipped exactly this version (looked up once per slug and version)."""
    if not version:
        return ()
    return tuple(name for v, name in distribution_builds().get(slug, [])
                 if (version.startswith(v) if v.endswith(".") else version == v))  # fmt: skip


@dataclass
class AssetFacts:
    """One asset. Items and services are shared, read-only dicts (the same program on 10,000 hosts is
    one dict), which lets the engine judge each distinct one once; what is per asset lives here."""

    asset: dict[str, Any]
    os: dict[str, Any] | None = None  # the best-evidenced OS item
    software: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # other OS candidates, shown not resolved
    candidates: list[dict[str, Any]] = field(default_factory=list)  # the items behind `conflicts`
    hardware: list[dict[str, Any]] = field(default_factory=list)  # the device named (MAC vendor: weak)
    observations: dict[int, int] = field(default_factory=dict)  # id(item) -> the observation it came from

    def roles(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The items by their role in `identities` (rules/identities.py)."""
        return [("os", [self.os] if self.os else []), ("candidate", self.candidates), ("software", self.software),
                ("hardware", self.hardware)]  # fmt: skip


@lru_cache(maxsize=4096)  # assets seen by one scan share its time stamp
def _days_since(stamp: str | None, today: date) -> int | None:
    if not stamp:
        return None
    try:
        return (today - datetime.fromisoformat(stamp.replace("Z", "+00:00")).date()).days
    except ValueError:
        return None


class Identifier:
    """Identification and lifecycle with caches: the same string is looked at once per run."""

    def __init__(self, catalogue: Catalogue, kev: KevCatalogue, today: date) -> None:
        self.catalogue, self.kev, self.today = catalogue, kev, today
        self._services: dict[tuple[Any, ...], list[Identification]] = {}
        self._macs: dict[str, list[Identification]] = {}
        self._said: dict[tuple[str, str, str], Items] = {}
        self._row_items: dict[tuple[Any, ...], Items] = {}
        self._service_items: dict[tuple[Any, ...], Items] = {}
        self._states: dict[tuple[str, tuple[str, ...]], tuple[Status, bool]] = {}
        self._items: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._variants: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._packaged: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]] = {}
        self._hardware: dict[tuple[str, str, str | None, str], Items] = {}
        self._platforms: dict[int, tuple[dict[str, Any], Items]] = {}
        self.services: dict[tuple[Any, ...], dict[str, Any]] = {}

    def row_items(self, kind: str, name: str, version: str | None, cpe: str | None, cpes: str, method: str | None,
                  extra: str | None, accuracy: int | None) -> Items:  # fmt: skip
        """The shared items a software row gives (estates repeat the same rows: each is judged once)."""
        key = (kind, name, version, cpe, method, extra if method in EXTRA_METHODS else None, accuracy)
        found = self._row_items.get(key)
        if found is None:
            rows = self._identify_software(kind, name, version, cpe, cpes, method, extra, accuracy)
            found = tuple(self._hardware_item(i) if i.kind == "hardware" else self.item(_item_kind(i, kind), i,
                                                                                        method or kind)
                          for i in rows)  # fmt: skip
            if len(self._row_items) < 500_000:
                self._row_items[key] = found
        return found

    def service_items(self, product: str | None, version: str | None, extra: str | None, cpes: str, port: int,
                      protocol: str) -> Items:  # fmt: skip
        """The shared items an open port's service line gives (see `row_items`)."""
        key = (product, version, extra, cpes, port, protocol)
        found = self._service_items.get(key)
        if found is None:
            found = tuple(self.item(_item_kind(i, None), i, f"nmap {port}/{protocol}")
                          for i in self.service(product, version, extra, cpes))  # fmt: skip
            if len(self._service_items) < 200_000:
                self._service_items[key] = found
        return found

    def windows_said(self, script: str, text: str, detail: str) -> Items:
        """What Windows says of itself in an nmap script: smb-os-discovery's `os` (with its `lanmanager` as
        `detail`) or an NTLM challenge's Product_Version (with the script's id)."""
        key = (script, text, detail)
        found = self._said.get(key)
        if found is None:
            ident = (identify_smb(text, detail, self.catalogue) if script == "smb-os-discovery"
                     else identify_ntlm(text, detail, self.catalogue))  # fmt: skip
            found = (self.item("os", ident, script),) if ident else ()
            if len(self._said) < 100_000:
                self._said[key] = found
        return found

    def hardware(self, model: str, said: str, vendor: str | None, method: str) -> Items:
        """The hardware item a stated model gives (an ENTITY-MIB chassis's entPhysicalModelName, else the model
        a sysDescr or nmap OS line names), once per distinct model: see `identify_hardware`."""
        key = (model[: MAX_MODEL + 1], said[:200], vendor, method)
        found = self._hardware.get(key)
        if found is None:
            ident = identify_hardware(model, said, vendor, method, self.catalogue)
            found = (self._hardware_item(ident),) if ident else ()
            if len(self._hardware) < 100_000:
                self._hardware[key] = found
        return found

    def platform(self, os_item: dict[str, Any]) -> Items:
        """The hardware a firmware line names ("C3560" in a Cisco IOS sysDescr) when no chassis row says more:
        the family only, at low confidence; once per shared OS item."""
        found = self._platforms.get(id(os_item))
        if found is None:
            items = self.hardware(os_item["model"], "", os_item["vendor"], f"{os_item['method']} model")
            found = self._platforms[id(os_item)] = (os_item, items)  # the item kept alive: its id stays its own
        return found[1]

    def _hardware_item(self, ident: Identification) -> dict[str, Any]:
        """The shared item, with the name a buyer knows and the end of sale beside the end of support."""
        item = self.item("hardware", ident, ident.method)
        cycle = single_cycle(ident, self.catalogue)  # the hardware row it is dated by
        vendor = ident.vendor if ident.vendor and not (ident.family or "").startswith(ident.vendor) else None
        named = " ".join(x for x in (vendor, ident.family) if x)
        model = ident.model or ""
        label = f"{named} ({model})" if named and model not in named else named or model or ident.product
        return self.variant(item, label=label[:160],
                            title=ident.family or ident.model,
                            end_of_sale=cycle.shown("discontinued") if cycle else None)  # fmt: skip

    def mac(self, vendor: str) -> list[Identification]:
        """What a MAC address's vendor suggests (a camera maker's card is most likely a camera): weak."""
        found = self._macs.get(vendor)
        if found is None:
            found = identify_fingerprints("mac", vendor, None, self.catalogue)
            if len(self._macs) < 100_000:
                self._macs[vendor] = found
        return found

    def _identify_software(self, kind: str, name: str, version: str | None, cpe: str | None, cpes: str,
                           method: str | None, extra: str | None,
                           accuracy: int | None) -> list[Identification]:  # fmt: skip
        cat = self.catalogue
        ident: Identification | None
        if method == "sysDescr":
            object_id = json.loads(extra).get("sysObjectID") if extra else None
            ident = identify_sysdescr(name, object_id, cat)
            return ([ident] if ident else []) + _named_hardware(name, object_id, ident, cat)
        if kind == "os" and method in ("os-release", "registry"):  # a host agent: the host's own word
            said = json.loads(extra) if extra else {}
            if method == "os-release":
                ident = identify_os_release(str(said.get("id") or ""), said.get("version_id"), cat)
            else:
                build = str(said.get("build", "")).split(".")[0]  # the build without its update revision
                kind_of = str(said.get("installation_type", "")).lower()
                pack = said.get("service_pack")
                ident = identify_windows_build(f"{said.get('version_id', '')}.{build}", "server" in kind_of
                                               if kind_of else None, cat, "registry", name[:300],
                                               service_pack=str(pack) if pack is not None else None)  # fmt: skip
            return [ident] if ident else []
        if kind == "os" and method == "directory":  # Active Directory: name, version (build), service pack
            stated = json.loads(extra) if extra else {}
            ident = identify_directory(name, stated.get("operatingSystemVersion") or version,
                                       stated.get("operatingSystemServicePack"), cat)  # fmt: skip
            return [ident] if ident else []
        if kind == "application" and method in AGENT_PACKAGE_MANAGERS:
            ident = identify_installed(name, version, method, cat)
            return [ident] if ident else []
        if kind == "os":  # nmap: an osmatch (its name, its CPEs), or the OS a service's CPE hints at
            return self._nmap_os(name, cpe, cpes, "service cpe" if method == "service" else "nmap os", accuracy)
        if kind == "application":
            ident = identify_package(name, cat) or identify_software_name(name, cat)
            return [ident] if ident else []
        return []

    def _nmap_os(self, name: str, cpe: str | None, cpes: str, method: str,
                 accuracy: int | None) -> list[Identification]:  # fmt: skip
        """An nmap OS guess: the osmatch name's fingerprint, else its CPE; a cycle only where one names it.
        Linux kernel ranges ("Linux 3.2 - 4.9") name no release."""
        named = identify_fingerprint("osmatch", name, None, self.catalogue) if method == "nmap os" else None
        by_cpe = None
        for c in json.loads(cpes)[:8] if cpes and cpes != "[]" else ([cpe] if cpe else []):
            by_cpe = identify_cpe(c, self.catalogue)
            if by_cpe is not None:
                break
        if by_cpe is not None and by_cpe.product == "linux":
            by_cpe = Identification("linux", (), None, "low", method, name[:300])
        if named is not None and (named.cycles or by_cpe is None or not by_cpe.cycles):
            chosen = named
        elif by_cpe is not None:
            chosen = replace(by_cpe, confidence="medium" if by_cpe.confidence == "high" else by_cpe.confidence,
                             evidence=f"{name[:200]} ({by_cpe.evidence})")  # fmt: skip
        else:
            return []
        if not chosen.cycles and not chosen.version:  # nothing dated: nmap's own name says most ("Linux 3.2 - 4.9")
            chosen = replace(chosen, family=name[:80])
        return [replace(chosen, method=method, accuracy=accuracy)]

    def service(self, product: str | None, version: str | None, extra: str | None,
                cpes: str) -> list[Identification]:  # fmt: skip
        key = (product, version, extra, cpes)
        found = self._services.get(key)
        if found is None:
            found = identify_service(product, version, extra, json.loads(cpes) if cpes else [], self.catalogue)
            if len(self._services) < 100_000:
                self._services[key] = found
        return found

    def state(self, ident: Identification) -> tuple[Status, bool]:
        """The lifecycle status and whether the product has a cycle still in support (an upgrade path)."""
        key = (ident.product, ident.cycles)
        cached = self._states.get(key)
        if cached is None:
            status = lifecycle(ident, self.catalogue, self.today)
            product = self.catalogue.product(ident.product)
            upgrade = product is not None and any(
                product.status(c, self.today).state in SUPPORTED_STATES
                for c in product.cycles
            )
            cached = self._states[key] = (status, upgrade)
        return cached

    def item(self, kind: str, ident: Identification, source: str) -> dict[str, Any]:
        """The shared item for an identification (never mutate it: see `variant`)."""
        key = (kind, ident, source)
        found = self._items.get(key)
        if found is None:
            found = self._make_item(kind, ident, source)
            if len(self._items) < 500_000:
                self._items[key] = found
        return found

    def variant(self, item: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """The shared copy of an item with some fields changed (a distribution's lifecycle applied)."""
        key = (id(item), *sorted(changes.items()))
        found = self._variants.get(key)
        if found is None:
            found = self._variants[key] = {**item, **changes}
            keep = ("variant", *key)  # named first: mypy reads x[(a, *b)] as 3.11-only syntax
            self._items[keep] = item  # keeps `item` alive, so its id is never reused
        return found

    def packaged(self, item: dict[str, Any], distro: dict[str, Any] | None, named: str | None) -> dict[str, Any]:
        """A server program as the distribution host's package (`_apply_distribution`), once per program
        and distribution."""
        key = (id(item), id(distro), named)
        found = self._packaged.get(key)
        if found is None:
            found = (self._packaged_as(item, distro, named), item, distro)  # both kept alive: ids stay theirs
            if len(self._packaged) < 200_000:
                self._packaged[key] = found
        return found[0]

    def _packaged_as(self, i: dict[str, Any], distro: dict[str, Any] | None, named: str | None) -> dict[str, Any]:
        if distro is not None:
            packaged = f"{distro['product']} {distro['cycle'] or ''}".strip()
            return self.variant(i, packaged_by=packaged, lifecycle_state=distro["lifecycle_state"],
                                eol_date=distro["eol_date"], extended_until=distro["extended_until"],
                                days_to_eol=distro["days_to_eol"])  # fmt: skip
        if named is not None:  # packaged, but which release is not known: upstream dates would mislead
            return self.variant(i, packaged_by=named, **UNKNOWN_STATE)
        if possible := _possible_builds(i["product"], i["version"]):  # exactly what a distribution ships
            note = f"possibly {' or '.join(possible)} (the version matches its package)"
            return self.variant(i, packaged_by=note, confidence="low", **UNKNOWN_STATE)
        return i

    def _vendor_policy(self, product: str, state: Lifecycle) -> dict[str, Any] | None:
        """The vendor's published rule, where no table dates the release: what to ask the vendor for."""
        rule = self.catalogue.vendor_policies.get(product)
        if rule is None or state != Lifecycle.UNKNOWN:
            return None
        return {"text": rule.text, **rule.provenance.as_dict()}

    def _make_item(self, kind: str, ident: Identification, source: str) -> dict[str, Any]:
        status, upgrade = self.state(ident)
        between = eol_range(ident, self.catalogue, self.today)
        product = self.catalogue.product(ident.product)
        kev = self.kev.by_product.get(ident.product, ())
        return {
            "kind": kind,
            "product": ident.product,
            "label": display_name(ident, self.catalogue),
            "title": product.title if product else ident.family or ident.product,
            "vendor": ident.vendor,
            "family": ident.family,
            "model": ident.model,
            "category": ident.category or "",
            "fingerprint": ident.fingerprint,
            "accuracy": ident.accuracy,
            "cycle": ident.cycles[0] if len(ident.cycles) == 1 else None,
            "cycles": list(ident.cycles),
            "version": ident.version,
            "confidence": ident.confidence,
            "method": ident.method,
            "source": source,
            "evidence": ident.evidence,
            "lifecycle_state": str(status.state),
            "eol_date": status.eol_date.isoformat() if status.eol_date else None,
            "extended_until": status.extended_until.isoformat() if status.extended_until else None,
            "eol_range": [d.isoformat() for d in between] if between else None,  # "one of": first and last end
            "days_to_eol": status.days_to_eol,
            "months_only": months_only(ident, self.catalogue),  # date fields known only to the month
            "lifecycle_published": lifecycle_published(ident, self.catalogue),
            "note": ident.note,
            "vendor_policy": self._vendor_policy(ident.product, status.state),
            "lifecycle_sources": lifecycle_sources(ident, self.catalogue),  # what the dates rest on
            "upgrade_path": upgrade,
            "kev_count": len(kev),
            "kev_ids": kev,
            "kev_ransomware": self.kev.ransomware.get(ident.product, 0),
            "kev": self.kev.listed.get(ident.product),  # the ids findings show (shared: never mutate)
            "packaged_by": None,
        }


# Per asset and source, the newest observation that reported software (a later ping-only sighting
# does not erase what SNMP or -O said).
LATEST_SOFTWARE_OBSERVATIONS = """
    SELECT id FROM (
        SELECT o.id, row_number() OVER (PARTITION BY o.asset_id, o.source ORDER BY o.observed_at DESC, o.id DESC) AS n
        FROM observations o WHERE EXISTS (SELECT 1 FROM software s WHERE s.observation_id = o.id)
    ) AS newest WHERE n = 1
"""


def _asset_rows(store: Store, today: date) -> dict[int, dict[str, Any]]:
    conn = store.conn
    register_loaded = conn.execute("SELECT 1 FROM scans WHERE kind = 'asset-register' LIMIT 1").fetchone() is not None
    assets: dict[int, dict[str, Any]] = {}
    for row in conn.stream(
        "SELECT id, name, first_seen, last_seen, in_register, owner, business_service, site, criticality FROM assets"
    ):
        assets[row[0]] = {
            "id": row[0], "name": row[1], "first_seen": row[2], "last_seen": row[3], "in_register": bool(row[4]),
            "register_loaded": register_loaded, "owner": row[5], "has_owner": bool(row[5] and row[5].strip()),
            "business_service": row[6], "site": row[7], "criticality": row[8],
            "days_since_seen": _days_since(row[3], today), "address": None, "hostname": None,
            "addresses": [], "is_new": False, "uptime_days": None, "snmp_default_community": False,
            "snmp_version": None, "device_types": [], "sys_object_id": None, "sources": [],
            "host_scripts": [], "mac_vendor": None, **NO_DIRECTORY,
        }  # fmt: skip
    for asset_id, (addresses, hostname) in asset_addresses(store).items():
        a = assets.get(asset_id)
        if a is not None:
            a.update(addresses=addresses, address=addresses[0] if addresses else None, hostname=hostname)
    return assets


NO_DIRECTORY = {"in_directory": False, "directory_only": False, "directory_logon_days": None,
                "directory_stale": False, "directory_disabled": False, "dormant": False}  # fmt: skip


def _directory_evidence(a: dict[str, Any], said: Any, today: date) -> None:
    """What the directory says of the asset: how long since it logged on (its creation, if it never did),
    stale past the import's threshold (`--stale-days`, `[directory] stale_days`), disabled; its manager as the
    owner, its OU's site and service, where the register gave none (the register wins)."""
    if not isinstance(said, dict):
        return
    days = _days_since(said.get("last_logon") or said.get("created"), today)
    limit = said["stale_days"] if isinstance(said.get("stale_days"), int) else 180
    a.update(in_directory=True, directory_logon_days=days, directory_stale=days is not None and days > limit,
             directory_disabled=bool(said.get("disabled")))  # fmt: skip
    owner = said.get("owner")
    if not a["has_owner"] and isinstance(owner, str) and owner.strip():
        a.update(owner=owner[:128], has_owner=True)
    for key in ("site", "business_service"):
        if not a[key] and isinstance(said.get(key), str):
            a[key] = said[key][:128]


def _host_evidence(store: Store, assets: dict[int, dict[str, Any]], today: date) -> None:
    """Uptime, SNMP community and device types from each asset's newest observation per source; the
    directory's facts (`_directory_evidence`); and whether only the directory knows a machine (`dormant`: only
    the directory knows it and it is stale or disabled, so it is no live end-of-life machine)."""
    for asset_id, source, evidence in store.conn.stream(
        "SELECT asset_id, source, evidence FROM (SELECT asset_id, source, evidence, row_number() OVER "
        "(PARTITION BY asset_id, source ORDER BY observed_at DESC, id DESC) AS n FROM observations) AS newest "
        "WHERE n = 1"
    ):
        a = assets.get(asset_id)
        if a is None:
            continue
        a["sources"].append(source)
        try:
            ev = json.loads(evidence)
        except ValueError:
            continue
        if source == "snmp":
            system = ev.get("system") or {}
            ticks = str(system.get("sysUpTime") or "")
            if ticks.isdigit():
                a["uptime_days"] = int(ticks) // 100 // 86400
            a["snmp_default_community"] = bool(ev.get("default_community"))
            a["snmp_version"] = ev.get("snmp_version")
            a["sys_object_id"] = system.get("sysObjectID")
        elif source in DIRECTORY_SOURCES:
            _directory_evidence(a, ev.get("directory"), today)
        else:
            if isinstance(ev.get("uptime_seconds"), int) and a["uptime_days"] is None:
                a["uptime_days"] = ev["uptime_seconds"] // 86400
            a["device_types"].extend(t for t in ev.get("device_types") or [] if t not in a["device_types"])
            vendor = ev.get("mac_vendor")
            if isinstance(vendor, str) and vendor and a["mac_vendor"] is None:
                a["mac_vendor"] = vendor[:128]
    for a in assets.values():
        if a["in_directory"] and not set(a["sources"]) - NOT_NETWORK_SOURCES:
            a["directory_only"] = True
            a["dormant"] = a["directory_stale"] or a["directory_disabled"]


def _new_services(store: Store) -> set[tuple[int, int, str]]:
    """(asset, port, protocol) open in an asset's newest port scan and in none of its earlier ones."""
    conn = store.conn
    latest = f"SELECT id, asset_id FROM ({LATEST_PORT_OBSERVATION.replace('WHERE n = 1', 'WHERE n <= 2')}) AS two"
    newest: dict[int, int] = {}
    seen_before: set[int] = set()
    for obs_id, asset_id in conn.stream(latest + " ORDER BY asset_id, id DESC"):
        if asset_id in newest:
            seen_before.add(asset_id)
        else:
            newest[asset_id] = obs_id
    if not seen_before:
        return set()
    now: dict[int, set[tuple[int, str]]] = defaultdict(set)
    earlier: dict[int, set[tuple[int, str]]] = defaultdict(set)
    for asset_id, port, protocol, obs_id in conn.stream(
        f"SELECT s.asset_id, s.port, s.protocol, s.observation_id FROM services s JOIN ({latest}) l "
        "ON l.id = s.observation_id WHERE s.state = 'open'"
    ):
        if asset_id in seen_before:
            (now if newest[asset_id] == obs_id else earlier)[asset_id].add((port, protocol))
    return {(asset, port, proto) for asset, ports in now.items() for port, proto in ports - earlier[asset]}


def _speaks_smb1(result: Any) -> bool:
    """Whether a stored smb-protocols result lists SMBv1 among the dialects the server offered.

    nmap writes `<table key="dialects"><elem>NT LM 0.12 (SMBv1) [dangerous, but default]</elem>...`
    (stored as "dialects: ..." lines); only its text output is there in files from before structured output
    or in databases imported before it was kept. An SMB2/3-only server lists 2.0.2 onwards and no NT LM 0.12.
    """
    if isinstance(result, dict):
        data = result.get("data")
        if isinstance(data, list) and data:
            return any(isinstance(line, str) and line.startswith("dialects:") and SMB1_DIALECT in line
                       for line in data[:100])  # fmt: skip
        result = result.get("output")
    return isinstance(result, str) and SMB1_DIALECT in result[:20_000]


SMB1_DIALECT = "NT LM 0.12"  # the SMB1 dialect string; nmap adds "(SMBv1)" after it
SMB_PORTS = frozenset({(445, "tcp"), (139, "tcp")})


def script_elems(result: Any) -> dict[str, str]:
    """A stored script result's top-level elements (`<elem key="os">...`, kept as "key: value" lines)."""
    data = result.get("data") if isinstance(result, dict) else None
    if not isinstance(data, list):
        return {}
    pairs = (line.split(": ", 1) for line in data[:100] if isinstance(line, str) and ": " in line)
    return {k: v[:300] for k, v in pairs}


def _tls(scripts: str, today: date) -> tuple[tuple[str, Any], ...]:
    """A TLS port's certificate (ssl-cert) and protocol grade (ssl-enum-ciphers) as (field, value) pairs
    (rules/tls.py), hashable so services that share them stay one shared dict."""
    try:
        parsed = json.loads(scripts)
    except ValueError:
        parsed = None
    out: dict[str, Any] = {}
    if isinstance(parsed, dict):
        if isinstance(parsed.get("ssl-cert"), dict):
            out.update(tls.certificate(script_elems(parsed["ssl-cert"]), today))
        data = parsed["ssl-enum-ciphers"].get("data") if isinstance(parsed.get("ssl-enum-ciphers"), dict) else None
        if isinstance(data, list):
            out.update(tls.grade(data, tls.grading()))
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in out.items())


def _signing(scripts: dict[str, Any]) -> str | None:
    """Whether an SMB server requires message signing: "required", "not-required" or None (not asked).

    smb2-security-mode gives one line a dialect (`311: Message signing enabled but not required`, `... enabled
    and required`, `... is disabled and not required!`); smb-security-mode, over SMB1, `message_signing:
    required`, `supported` or `disabled`. Any dialect that lets a client go unsigned is "not-required".
    """
    smb2 = scripts.get("smb2-security-mode")
    lines = smb2.get("data") if isinstance(smb2, dict) else None
    said = ["required" if "and required" in line else "not-required"
            for line in (lines if isinstance(lines, list) else [])[:20] if isinstance(line, str) and "signing" in line]
    smb1 = script_elems(scripts.get("smb-security-mode")).get("message_signing")
    if smb1 is not None:
        said.append("required" if smb1 == "required" else "not-required")
    if not said:
        return None
    return "not-required" if "not-required" in said else "required"


_NTLM_BUILD = re.compile(r"\d{1,2}\.\d{1,2}\.\d{3,5}")


class PortScripts(NamedTuple):
    """What a port's stored scripts (services.scripts) say that rules and identification read."""

    smb1: bool = False  # smb-protocols lists SMBv1
    ntlm_script: str | None = None  # the *-ntlm-info script that answered (rdp-ntlm-info ...)
    ntlm_build: str | None = None  # its Product_Version, `10.0.17763`
    mssql: tuple[tuple[str, str | None, int], ...] = ()  # ms-sql-info's instances (`mssql_versions`)


def mssql_versions(result: Any, port: int = 1433) -> tuple[tuple[str, str | None, int], ...]:
    """ms-sql-info's instances (`<table key="Version">` under each instance) as nmap's -sV would write their
    service line, (product, version, port): `Microsoft SQL Server 2005`, `9.00.4053; SP3+` (nselib/mssql.lua,
    PopulateNmapPortVersion), so the service fingerprints (rules/fingerprints/service/microsoft-sql.toml) read
    the script's form and the probe's alike. `port`: where the instance listens unless it says ("TCP port")."""
    data = result.get("data") if isinstance(result, dict) else None
    if not isinstance(data, list):
        return ()
    instances: dict[str, dict[str, str]] = defaultdict(dict)
    for line in data[:100]:
        if isinstance(line, str) and ": " in line and "." in line.split(": ", 1)[0]:
            path, value = line.split(": ", 1)
            instance, key = path.rsplit(".", 1)
            instances[instance.removesuffix(".Version")][key] = value[:100]
    out: list[tuple[str, str | None, int]] = []
    for v in list(instances.values())[:8]:
        product, number, level = v.get("Product"), v.get("number"), v.get("Service pack level")
        if not product or not product.startswith("Microsoft SQL Server"):
            continue
        version = f"{number}{'; ' + level if level else ''}{'+' if v.get('Post-SP patches applied') == 'Yes' else ''}"
        listens = v.get("TCP port", "")
        at = int(listens) if listens.isdigit() and 0 < int(listens) < 65536 else port
        out.append((product, version if number else None, at))
    return tuple(dict.fromkeys(out))


NO_SCRIPTS = PortScripts()


def port_scripts(scripts: str | None) -> PortScripts:
    """A port's scripts (services.scripts, JSON), read once for everything facts take from them."""
    if not scripts or not any(k in scripts for k in ("smb-protocols", "ntlm-info", "ms-sql-info")):
        return NO_SCRIPTS
    try:
        found = json.loads(scripts)
    except ValueError:
        return NO_SCRIPTS
    if not isinstance(found, dict):
        return NO_SCRIPTS
    ntlm_script = ntlm_build = None
    for script, result in found.items():
        build = script_elems(result).get("Product_Version", "").strip() if str(script).endswith("ntlm-info") else ""
        if _NTLM_BUILD.fullmatch(build):
            ntlm_script, ntlm_build = str(script)[:40], build
            break
    return PortScripts(_speaks_smb1(found.get("smb-protocols")), ntlm_script, ntlm_build,
                       mssql_versions(found.get("ms-sql-info")))  # fmt: skip


class HostScripts(NamedTuple):
    """What an asset's host scripts (`<hostscript>`) of its newest port scan say, for its SMB ports and its OS."""

    smb1: set[int]  # assets whose smb-protocols lists SMBv1
    signing: dict[int, str]  # asset -> "required" / "not-required" (`_signing`)
    said: dict[int, list[tuple[Items, int]]]  # asset -> (what smb-os-discovery and ms-sql-info name, observation)


def _host_scripts(store: Store, assets: dict[int, dict[str, Any]], ident: Identifier) -> HostScripts:
    """Each asset's host scripts (`<hostscript>`) from its newest port scan, as `host_scripts` (their ids).
    SMBv1 and signing are host scripts (nmap never puts them on a port), so what they say goes on the asset's
    SMB ports; smb-os-discovery names Windows, ms-sql-info (in nmap's host layout) SQL Server."""
    found = HostScripts(set(), {}, defaultdict(list))
    for asset_id, obs, evidence in store.conn.stream(
        f"SELECT o.asset_id, o.id, o.evidence FROM observations o JOIN ({LATEST_PORT_OBSERVATION}) l "
        "ON l.id = o.id WHERE o.evidence LIKE '%\"scripts\"%'"
    ):
        try:
            scripts = json.loads(evidence).get("scripts")
        except (ValueError, AttributeError):
            continue
        if not isinstance(scripts, dict):
            continue
        if asset_id in assets:
            assets[asset_id]["host_scripts"] = sorted(str(k) for k in scripts)[:100]
        if _speaks_smb1(scripts.get("smb-protocols")):
            found.smb1.add(asset_id)
        if signing := _signing(scripts):
            found.signing[asset_id] = signing
        elems = script_elems(scripts.get("smb-os-discovery"))
        if elems.get("os") and (items := ident.windows_said("smb-os-discovery", elems["os"],
                                                            elems.get("lanmanager") or "")):  # fmt: skip
            found.said[asset_id].append((items, obs))
        for product, version, port in mssql_versions(scripts.get("ms-sql-info")):
            if items := ident.service_items(product, version, None, "", port, "tcp"):
                found.said[asset_id].append((items, obs))
    return found


def _category(a: dict[str, Any], os_item: dict[str, Any] | None, hardware: list[dict[str, Any]]) -> str:
    """The report's group: from the OS (its product, else its fingerprint's category), nmap's device types,
    the sysObjectID's enterprise, and last the MAC vendor's usual kind of device."""
    if os_item and os_item["product"] in CATEGORY_BY_PRODUCT:
        return CATEGORY_BY_PRODUCT[os_item["product"]]
    if os_item and os_item["category"] in REPORT_CATEGORY:
        return REPORT_CATEGORY[os_item["category"]]
    for device_type in a["device_types"]:
        if DEVICE_TYPE_CATEGORY.get(device_type):
            return str(DEVICE_TYPE_CATEGORY[device_type])
    oid = a["sys_object_id"] or ""
    if oid.startswith("1.3.6.1.4.1."):
        enterprise = oid.split(".")[6]
        if OT_ENTERPRISES.get(enterprise):
            return str(OT_ENTERPRISES[enterprise])
    return next((REPORT_CATEGORY[h["category"]] for h in hardware if h["category"] in REPORT_CATEGORY), "unknown")


def _rank(item: dict[str, Any]) -> tuple[int, int, int, bool]:
    return (EVIDENCE_RANK.get(item["method"], 0), item["accuracy"] or 0, CONFIDENCE_RANK[item["confidence"]],
            bool(item["cycles"]))  # fmt: skip


def _choose(oses: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The best-evidenced OS, and the candidates that name another release (its conflicts, listed).

    Only nmap's most accurate guesses take part: its lower guesses are alternatives nmap itself ranked
    below, never evidence against its first (an Android 4.1 at 85% is not a conflict of Linux at 95%).
    A weaker source that narrows the best one's "one of" (IIS 10 says Windows 10, 11 or Server 2016+;
    nmap says Server 2016) gives the answer within it."""
    if len(oses) < 2:  # most assets: one OS named, nothing to weigh
        return (oses[0] if oses else None), []
    top = max((i["accuracy"] or 0 for i in oses if i["method"] == "nmap os"), default=0)
    oses = [i for i in oses if i["method"] != "nmap os" or (i["accuracy"] or 0) >= top]
    best = max(oses, key=_rank)
    tied = [i for i in oses if i["method"] == "nmap os"]  # nmap's guesses at its top accuracy
    if best in tied and len({frozenset(_releases(i)) for i in tied}) > 1:
        # They disagree ("Linux 5.0 - 5.2" and "Linux 3.1", both at 95%): none names the release, so a guess
        # that names none wins over one that merely names a cycle (a Debian 12 host was called end of life).
        best = next((i for i in tied if not i["cycles"]), best)
    releases = {id(i): _releases(i) for i in oses}
    within = releases[id(best)]
    narrower = [i for i in oses if i["cycles"] and len(releases[id(i)]) < len(within) and releases[id(i)] <= within]
    if narrower:
        best = min(narrower, key=lambda i: (len(i["cycles"]), [-r for r in _rank(i)]))
    chosen = releases[id(best)]
    return best, [i for i in oses if i is not best and i["cycles"] and not releases[id(i)] & chosen]


def _conflict(item: dict[str, Any]) -> dict[str, Any]:
    return {"product": item["product"], "label": item["label"], "cycles": item["cycles"], "method": item["method"],
            "evidence": item["evidence"][:200]}  # fmt: skip


def _releases(item: dict[str, Any]) -> set[str]:
    """An item's candidate releases as `slug/cycle`: "one of rhel/7, centos/7" agrees with "centos 7"."""
    return {c if "/" in c else f"{item['product']}/{c}" for c in item["cycles"]}


def _key(item: dict[str, Any]) -> tuple[Any, ...]:
    """Items with the same key name the same thing: the best-evidenced one is kept."""
    return (item["kind"], item["product"], tuple(item["cycles"]), item["version"])


def _dedupe(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _dedupe_keyed([(_key(i), i) for i in items])


def _dedupe_keyed(keyed: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, i in keyed:
        kept = seen.get(key)
        if kept is None or EVIDENCE_RANK.get(i["method"], 0) > EVIDENCE_RANK.get(kept["method"], 0):
            seen[key] = i
    return list(seen.values())


UNKNOWN_STATE = {"lifecycle_state": str(Lifecycle.UNKNOWN), "eol_date": None, "extended_until": None,
                 "days_to_eol": None}  # fmt: skip


def _apply_distribution(software: list[dict[str, Any]], os_item: dict[str, Any] | None, named: str | None,
                        ident: Identifier) -> tuple[list[dict[str, Any]], dict[int, int]]:  # fmt: skip
    """Server programs on a distribution host are that distribution's packages: its lifecycle applies.
    `named` is the distribution a service banner names. Returns the programs and, for each one rewritten,
    id(rewritten) -> id(original) (its observation is the original's)."""
    distro = os_item if os_item and os_item["product"] in DISTRIBUTION_SLUGS else None
    out, origin = [], {}
    for i in software:
        changed = ident.packaged(i, distro, named) if i["product"] in SERVER_PROGRAMS else i
        out.append(changed)
        if changed is not i:
            origin[id(changed)] = id(i)
    return out, origin


class _Group(NamedTuple):
    """The items one row, service line or script gives, sorted by role once per run (the same tuple of
    items recurs on thousands of assets). `items` keeps the tuple alive, so its id names it."""

    items: Items
    os: Items  # OS and firmware items: they compete for the asset's OS
    software: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...]  # (dedupe key, item)
    hardware: Items
    serves: bool  # a server program a distribution may have packaged is among the software


def _group(items: Items) -> _Group:
    return _Group(items, tuple(i for i in items if i["kind"] in ("os", "firmware")),
                  tuple((_key(i), i) for i in items if i["kind"] == "software"),
                  tuple(i for i in items if i["kind"] == "hardware"),
                  any(i["kind"] == "software" and i["product"] in SERVER_PROGRAMS for i in items))  # fmt: skip


class _Groups(dict[int, _Group]):
    """id(items tuple) -> its group, bounded (past the bound a group is made again for each use)."""

    def of(self, items: Items) -> _Group:
        found = self.get(id(items))
        if found is None:
            found = _group(items)
            if len(self) < 200_000:
                self[id(items)] = found
        return found


def _judge_os(groups: list[_Group]) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """The OS among the groups' OS and firmware items (see `_choose`), its candidates and their conflicts."""
    oses = [i for g in groups for i in g.os]
    os_item, candidates = _choose(_dedupe(oses) if len(oses) > 1 else oses)
    return os_item, candidates, [_conflict(c) for c in candidates]


def load_facts(store: Store, ident: Identifier) -> Iterator[AssetFacts]:
    """Every asset's facts, in id order. Rows are read in a few passes and identified through caches; an
    asset's items arrive as groups (the shared tuple one row or service line gives), and the same groups on
    another asset are judged once."""
    today = ident.today
    assets = _asset_rows(store, today)
    for asset_id in store.new_in_latest_scan():
        if asset_id in assets:
            assets[asset_id]["is_new"] = True
    _host_evidence(store, assets, today)
    host_scripts = _host_scripts(store, assets, ident)
    windows_said = host_scripts.said
    new_services = _new_services(store)
    services: dict[int, list[dict[str, Any]]] = defaultdict(list)
    # asset -> group, observation, group, observation, ...: what the hosts and devices reported, then what
    # their services say. Flat, and an observation id repeated row after row is one int object: a million
    # rows held as (group, observation) tuples cost 80 MB more.
    found_items: dict[int, list[Any]] = defaultdict(list)
    service_items: dict[int, list[Any]] = defaultdict(list)
    shared = ident.services
    rows = store.conn.stream(
        "SELECT s.asset_id, s.port, s.protocol, s.state, s.name, s.product, s.version, s.extra_info, s.tunnel, "
        f"s.cpes, s.scripts, s.observation_id FROM services s JOIN ({LATEST_PORT_OBSERVATION}) l "
        "ON l.id = s.observation_id WHERE s.state = 'open'"
    )
    groups = _Groups()
    lines: dict[tuple[Any, ...], _Group] = {}  # (product, version, extra, cpes, port, protocol) -> its group
    for asset_id, port, protocol, state, name, product, version, extra, tunnel, cpes, scripts, obs in rows:
        port_said = port_scripts(scripts)
        smb = (port, protocol) in SMB_PORTS
        smb1 = (smb and asset_id in host_scripts.smb1) or port_said.smb1
        signing = host_scripts.signing.get(asset_id) if smb else None
        tls_facts = _tls(scripts, today) if scripts and "ssl-" in scripts else ()
        key = (port, protocol, name, product, version, extra, tunnel, smb1, (asset_id, port, protocol) in new_services,
               signing, port_said.ntlm_script, port_said.ntlm_build, tls_facts)  # fmt: skip
        service = shared.get(key)
        if service is None:
            service = dict(zip(SERVICE_KEYS, key[:-1], strict=True))
            service.update((k, list(v) if isinstance(v, tuple) else v) for k, v in tls_facts)
            service["state"] = state
            if len(shared) < 200_000:
                shared[key] = service
        services[asset_id].append(service)
        line = (product, version, extra, cpes, port, protocol)
        group = lines.get(line)
        if group is None:
            group = groups.of(ident.service_items(*line))
            if len(lines) < 200_000:
                lines[line] = group
        if group.items:
            service_items[asset_id] += (group, obs)
        if port_said is NO_SCRIPTS:  # most ports: no script said anything more
            continue
        said_items = [ident.windows_said("ntlm-info", port_said.ntlm_build, port_said.ntlm_script or "")
                      if port_said.ntlm_build else ()]  # fmt: skip
        # ms-sql-info's instance on this port: identified as this port, whatever port it names
        said_items += [ident.service_items(sql, sql_version, None, "", port, protocol)
                       for sql, sql_version, _ in port_said.mssql]  # fmt: skip
        for items in said_items:
            if items:
                service_items[asset_id] += (groups.of(items), obs)

    seen: dict[tuple[Any, ...], _Group] = {}  # the row without asset and observation -> its group
    guesses: dict[int, tuple[int, str]] = {}  # asset -> nmap's most accurate OS guess, said in evidence
    entities: dict[int, list[tuple[int, str | None, str]]] = defaultdict(list)  # asset -> (obs, extra, name)
    for row in store.conn.stream(
        "SELECT s.asset_id, s.observation_id, s.kind, s.name, s.version, s.cpe, s.cpes, s.method, s.extra, "
        f"s.accuracy FROM software s WHERE s.observation_id IN ({LATEST_SOFTWARE_OBSERVATIONS}) "
        "AND s.kind IN ('os', 'application', 'hardware')"
    ):
        if row[2] == "hardware":  # ENTITY-MIB rows: a few per device, the chassis chosen below
            entities[row[0]].append((row[1], row[8], row[3]))
            continue
        if row[7] == "osmatch" and row[3] and (row[9] or 0) > guesses.get(row[0], (-1, ""))[0]:
            guesses[row[0]] = (row[9] or 0, row[3])
        key = row[2:]
        group = seen.get(key)
        if group is None:
            group = groups.of(ident.row_items(*key))
            if len(seen) < 500_000:
                seen[key] = group
        if group.items:
            found = found_items[row[0]]
            obs = row[1]
            found += (group, found[-1] if found and found[-1] == obs else obs)

    for asset_id, stated in entities.items():
        _add_chassis(asset_id, stated, assets, ident, groups, found_items)

    judged: dict[tuple[int, ...], tuple[Any, ...]] = {}  # ids of the OS groups -> (OS, candidates, conflicts, groups)
    for asset_id in sorted(assets):
        a = assets.pop(asset_id)  # handed over: the caller decides whether to keep it
        said = [x for items, obs in windows_said.pop(asset_id, []) for x in (groups.of(items), obs)]
        flat = found_items.pop(asset_id, []) + said + service_items.pop(asset_id, [])
        pairs: list[tuple[_Group, int]] = list(zip(flat[::2], flat[1::2], strict=True))
        os_groups = [g for g, _ in pairs if g.os]
        os_key = tuple(id(g.items) for g in os_groups)
        chosen = judged.get(os_key)
        if chosen is None:
            chosen = (*_judge_os(os_groups), os_groups)  # the groups kept alive: their ids stay theirs
            if len(judged) < 100_000:
                judged[os_key] = chosen
        os_item, candidates, conflicts = chosen[0], chosen[1], chosen[2]
        keyed = [pair for g, _ in pairs for pair in g.software]
        programs = _dedupe_keyed(keyed) if len(keyed) > 1 else [i for _, i in keyed]
        svc = services.pop(asset_id, [])
        observations = {id(item): obs for g, obs in pairs for item in g.items}
        if any(g.serves for g, _ in pairs):
            extra_info = " ".join(s["extra_info"] for s in svc if s["extra_info"])
            named = distribution_named(extra_info) if extra_info else None
            programs, origin = _apply_distribution(programs, os_item, named, ident)
            for changed, original in origin.items():
                observations[changed] = observations[original]
        hardware = [i for g, _ in pairs for i in g.hardware]
        if len(hardware) > 1:
            hardware = _dedupe(hardware)
        if os_item is not None and os_item["model"] and not hardware:  # no chassis stated: the platform named
            hardware = list(ident.platform(os_item))
            if hardware and id(os_item) in observations:
                observations[id(hardware[0])] = observations[id(os_item)]
        if a["mac_vendor"]:
            hardware += [ident.item("hardware", found, "mac") for found in ident.mac(a["mac_vendor"])]
        a["category"] = _category(a, os_item, hardware)
        a["os_known"] = os_item is not None
        a["os_version_known"] = os_item is not None and bool(os_item["cycles"])
        a["os_lifecycle_state"] = os_item["lifecycle_state"] if os_item else str(Lifecycle.UNKNOWN)
        a["os_lifecycle_published"] = bool(os_item and os_item["lifecycle_published"])
        a["os_conflicts"] = len(candidates)
        guess = guesses.pop(asset_id, None)
        a["os_guess"] = f"{guess[1][:120]} at {guess[0]}%" if guess else None
        yield AssetFacts(a, os_item, programs, svc, conflicts, candidates, hardware, observations)


def _named_hardware(descr: str, object_id: str | None, found: Identification | None,
                    catalogue: Catalogue) -> list[Identification]:  # fmt: skip
    """The hardware model a sysDescr names beside its firmware (rules/fingerprints/sysdescr/zz-hardware-models)."""
    return [h for h in identify_fingerprints("sysdescr", descr[:4096], object_id, catalogue)
            if h.kind == "hardware" and (found is None or h.fingerprint != found.fingerprint)]  # fmt: skip


def _add_chassis(asset_id: int, rows: list[tuple[int, str | None, str]], assets: dict[int, dict[str, Any]],
                 ident: Identifier, groups: _Groups, found_items: dict[int, list[Any]]) -> None:  # fmt: skip
    """The asset's ENTITY-MIB chassis as a hardware item (rules/hardware.py), among what it reported."""
    picked = chassis([(extra, name) for _, extra, name in rows])
    a = assets.get(asset_id)
    if picked is None or a is None:
        return
    vendor = _manufacturer(rows) or fingerprints.database().vendor_of(a["sys_object_id"])
    items = ident.hardware(picked[0], picked[1], vendor, "entPhysical")
    if items:
        found_items[asset_id] += (groups.of(items), rows[0][0])


def _manufacturer(rows: list[tuple[int, str | None, str]]) -> str | None:
    """entPhysicalMfgName of the first row that states one (most devices leave it empty)."""
    for _, extra, _ in rows:
        try:
            said = json.loads(extra).get("manufacturer") if extra else None
        except (ValueError, AttributeError):
            continue
        if isinstance(said, str) and said.strip():
            return said.strip()[:80]
    return None


def _item_kind(found: Identification, row_kind: str | None) -> str:
    """os, software, firmware or hardware: what the identification says, else a distribution or an OS row
    is the OS and everything else a program."""
    if found.kind is not None:
        return found.kind
    return "os" if row_kind == "os" or found.product in DISTRIBUTION_SLUGS else "software"


SERVICE_KEYS = ("port", "protocol", "name", "product", "version", "extra_info", "tunnel", "smb1", "is_new",
                "smb_signing", "ntlm_script", "ntlm_build")


ITEM_VIEW_FIELDS = ("product", "label", "title", "vendor", "model", "cycle", "cycles", "version", "lifecycle_state",
                    "eol_date", "eol_range", "extended_until", "days_to_eol", "confidence", "method", "source",
                    "packaged_by", "evidence")  # fmt: skip


# A device's hardware shows its family, end of sale, the evidence (the model and where it was stated) and
# the sources of its dates.
HARDWARE_VIEW_FIELDS = (*ITEM_VIEW_FIELDS, "family", "end_of_sale", "lifecycle_sources")


def add_lifecycle(store: Store, rows: list[dict[str, Any]]) -> None:
    """The `posture.asset_details` hook: the identified OS, software and hardware, with lifecycle, as the last
    evaluation stored them (rules/identities.py; nothing is identified here).

    `os` keeps what the source said (name, cpe, accuracy) and gains the catalogue's `product`, `label`,
    `cycle`, `lifecycle_state`, `eol_date` (...) and the other candidates (`conflicts`); `software` and
    `hardware` list the identified programs and devices the same way. Before any evaluation, nothing.
    """
    from rules import identities

    stored = identities.read(store, [r["id"] for r in rows])
    for row in rows:
        found = stored.get(row["id"])
        if found is None:
            continue
        row["category"] = found.category
        os_item = found.os
        if os_item is not None:
            row["os"] = {**(row["os"] or {"name": os_item["label"]}), **{k: os_item.get(k) for k in ITEM_VIEW_FIELDS},
                         "conflicts": [_conflict(c) for c in found.candidates]}  # fmt: skip
        elif row["os"] is not None:
            row["os"] = {**row["os"], "cycle": None, "lifecycle_state": str(Lifecycle.UNKNOWN), "eol_date": None}
        row["software"] = [{k: i.get(k) for k in ITEM_VIEW_FIELDS} for i in found.software]
        row["hardware"] = [{k: i.get(k) for k in HARDWARE_VIEW_FIELDS} for i in found.hardware]
