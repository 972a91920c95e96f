"""Identification: from what a device said (a CPE, a sysDescr) to a product, its cycle and version.

Every identification keeps the evidence it used and a confidence. When the evidence fits several cycles
(Windows build 7601 is Windows 7 SP1 and Server 2008 R2 SP1) all of them are kept, and the lifecycle is
only stated when they agree: "one of" is never silently resolved. Windows builds are matched against the
catalogue's own `latest` build numbers, so the table grows with the data, not with code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from urllib.parse import unquote

from rules import fingerprints
from rules.catalogue import ENDOFLIFE, Catalogue, Cycle, Lifecycle, Product, Status
from rules.versions import Version, tokens

# CPE vendor:product pairs nmap uses that the catalogue spells otherwise.
CPE_ALIASES = {("igor_sysoev", "nginx"): "nginx", ("f5", "nginx"): "nginx"}
# sysObjectID prefixes Microsoft uses for workstations and servers (LanManager-MIB).
WINDOWS_WORKSTATION = "1.3.6.1.4.1.311.1.1.3.1.1"
WINDOWS_SERVER = ("1.3.6.1.4.1.311.1.1.3.1.2", "1.3.6.1.4.1.311.1.1.3.1.3")

_WINDOWS = re.compile(r"Software: Windows .*?Version (\d+\.\d+) \(Build (\d+)")
_RHEL_KERNEL = re.compile(r"\b(\d+\.\d+\.\d+)-[\w.]*?\.el(\d+)(?:_\d+)?\b")
_UBUNTU = re.compile(r"\bUbuntu (\d\d\.\d\d)(?:\.\d+)?\b")
_LINUX = re.compile(r"^Linux \S+ (\d+\.\d+)(?:\.(\d+))?")
_MAINLINE_RELEASE = re.compile(r"\(\d{1,3}[a-z]?\)", re.IGNORECASE)  # IOS `12.2` + `(29b)`: no train letters after
# Clustered ONTAP (8.x Cluster-Mode, 9.x); 7-Mode and 7G are fingerprint data (rules/fingerprints/sysdescr/
# netapp.toml), dated by the catalogue's `netapp-ontap-7mode` table.
_NETAPP = re.compile(r"NetApp Release (\d{1,2}\.\d{1,2}(?:\.\d{1,2})?)(?![\w.]{0,12} 7-Mode)")


@dataclass(frozen=True)
class Identification:
    product: str  # catalogue slug, or our own name for a family the catalogue lacks
    cycles: tuple[str, ...]  # one cycle: identified; several: one of them; none: product only
    version: str | None
    confidence: str  # high, medium, low
    method: str  # the evidence: sysDescr, cpe, nmap os, nmap service, mac vendor, os-release, ...
    evidence: str
    kind: str | None = None  # os, firmware, software, hardware, when the identification says (fingerprints)
    vendor: str | None = None
    family: str | None = None  # the product family in words, when the catalogue lacks the product
    model: str | None = None  # the hardware model the device states
    category: str | None = None  # server, network, printer, ... (rules/fingerprints.py CATEGORIES)
    fingerprint: str | None = None  # the fingerprint's id, when one matched
    accuracy: int | None = None  # nmap's OS accuracy (0-100): a lower guess never beats a higher one
    note: str | None = None  # why the verdict is weaker than it looks (a kernel judged, not the firmware)


def _bounded(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cycles_for_version(catalogue: Catalogue, slug: str, version: str) -> tuple[str, ...]:
    """The cycle whose name is the longest prefix of the version (`1.22.1` is in nginx `1.22`). A version no
    finer than a cycle that others refine is "one of" them: Solaris "11" is the catalogue's `11` (11.0) or any
    of 11.1-11.4 (11.4 supported to 2031), so its state is unknown rather than the ended 11.0's; Junos "12.3"
    is 12.3, 12.3X48 or 12.3X54, all ended."""
    product = catalogue.product(slug)
    if product is None or not version:
        return ()
    v = Version(version)
    matches = [c.name for c in product.cycles if v.startswith(c.name)]
    if not matches:
        return ()
    best = max(matches, key=len)
    if len(v.parts) <= len(tokens(best)):
        return tuple(c.name for c in product.cycles if c.name == best or Version(c.name).startswith(best))
    return (best,)


def identify_cpe(cpe: str, catalogue: Catalogue) -> Identification | None:
    """`cpe:/a:igor_sysoev:nginx:1.22.1`, `cpe:/o:microsoft:windows_server_2008:r2:sp1` (fields URL-decoded)."""
    parts = [unquote(p) for p in cpe[:300].split(":")]
    if len(parts) < 4 or parts[0] != "cpe":
        return None
    part, vendor, name = parts[1].lstrip("/"), parts[2].lower(), parts[3].lower()
    version = parts[4] if len(parts) > 4 and parts[4] not in ("", "-", "*") else None
    update = [p.lower() for p in parts[5:] if p not in ("", "-", "*")]
    if vendor == "microsoft" and name.startswith("windows") and not name.startswith("windows_server"):
        return _windows_cpe(name, version, update, cpe, catalogue)
    server = re.fullmatch(r"windows_server_(\d{4})", name) if vendor == "microsoft" else None
    if server:
        cycle = "-".join([server.group(1), *([version.lower()] if version else []), *update])
        product = catalogue.product("windows-server")
        if product and product.cycle(cycle):
            return Identification("windows-server", (cycle,), None, "high", "cpe", cpe, kind="os", vendor="Microsoft")
        base = "-".join([server.group(1), *([version.lower()] if version else [])])  # 2000-sp4: the release
        near = tuple(c.name for c in product.cycles if c.name == base or c.name.startswith(base + "-sp")) if product \
            else ()  # fmt: skip
        return Identification("windows-server", near, None, "medium" if near else "low", "cpe", cpe, kind="os",
                              vendor="Microsoft")  # fmt: skip
    slug = CPE_ALIASES.get((vendor, name))
    if slug is None:
        for candidate in catalogue.products.values():
            if any(_names_product(c, part, vendor, name) for c in candidate.cpes):
                slug = candidate.slug
                break
    if slug is None:
        return None
    cycles = _cycles_for_version(catalogue, slug, version or "")
    return _dated_by_mainline(Identification(slug, cycles, version, "high" if len(cycles) == 1 else "medium", "cpe",
                                             cpe, kind="os" if part == "o" else None), catalogue)  # fmt: skip


def _names_product(catalogue_cpe: str, part: str, vendor: str, name: str) -> bool:
    """Whether a catalogue CPE (`cpe:2.3:o:vmware:esxi`, or the URI form `cpe:/o:cisco:ios` the lifecycle
    tables use) names this part, vendor and product."""
    fields = catalogue_cpe.lower().split(":")
    return fields[-2:] == [vendor, name] and part in (f.lstrip("/") for f in fields[1:-2])


# nmap's Windows CPE names (cpe:/o:microsoft:NAME) and how the catalogue labels their cycles.
WINDOWS_CPE_LABELS = {"windows_xp": "XP", "windows_vista": "Vista", "windows_7": "7", "windows_8": "8",
                      "windows_8.1": "8.1", "windows_10": "10", "windows_11": "11", "windows_nt": "NT"}  # fmt: skip
WINDOWS_CPE_SERVER = {"windows_2000": "2000", "windows_2003": "2003", "windows_2008": "2008"}  # nmap's older names


def _windows_cpe(name: str, version: str | None, update: list[str], cpe: str,
                 catalogue: Catalogue) -> Identification | None:  # fmt: skip
    """`windows_xp::sp2`, `windows_7::sp1`, `windows_10:1607`, `windows_2000`: the catalogue cycles whose label
    names that release (and service pack or feature update when the CPE gives one): "one of" when several
    fit (Windows 10 1607 has Enterprise and Home/Pro cycles); the release named but no cycle when none does
    (the catalogue has XP SP3, not SP2: the release is known, its lifecycle is not)."""
    if name in WINDOWS_CPE_SERVER:
        return identify_cpe(f"cpe:/o:microsoft:windows_server_{WINDOWS_CPE_SERVER[name]}::{':'.join(update)}",
                            catalogue)  # fmt: skip
    release = WINDOWS_CPE_LABELS.get(name)
    if release is None:
        return Identification("windows", (), None, "low", "cpe", cpe, kind="os", vendor="Microsoft")
    words = [release, *([version.lower()] if version else []), *update]
    wanted = " ".join(words).lower()
    product = catalogue.product("windows")
    cycles = tuple(c.name for c in product.cycles if f"{c.label.lower()} ".startswith(wanted + " ")
                   or c.label.lower().startswith(wanted + " (")) if product else ()  # fmt: skip
    said = " ".join([release, *(w.upper() if w.startswith("sp") else w for w in words[1:])])
    confidence = "high" if len(cycles) == 1 and len(words) > 1 else "medium"  # "windows_7": RTM or SP1
    return Identification("windows", cycles, said, confidence, "cpe", cpe, kind="os", vendor="Microsoft")


def identify_sysdescr(descr: str, object_id: str | None, catalogue: Catalogue) -> Identification | None:
    """sysDescr, with sysObjectID to tell Windows workstations from servers."""
    text = descr[:4096]
    m = _WINDOWS.search(text)
    if m:
        server = None
        if object_id and object_id.startswith(WINDOWS_WORKSTATION):
            server = False
        elif object_id and object_id.startswith(WINDOWS_SERVER):
            server = True
        return identify_windows_build(f"{m.group(1)}.{m.group(2)}", server, catalogue, "sysDescr", _bounded(text))
    m = _RHEL_KERNEL.search(text)
    if m:  # an Enterprise Linux kernel: RHEL or one of its rebuilds, which the kernel alone cannot tell apart
        return Identification("rhel", enterprise_linux(m.group(2), catalogue), m.group(1), "medium", "sysDescr",
                              _bounded(text))  # fmt: skip
    m = _UBUNTU.search(text)
    if m:
        known: tuple[str, ...] = (m.group(1),) if (p := catalogue.product("ubuntu")) and p.cycle(m.group(1)) else ()
        return Identification("ubuntu", known, m.group(1), "high" if known else "medium", "sysDescr", _bounded(text))
    m = _NETAPP.search(text)
    if m and not m.group(1).startswith("7."):  # Data ONTAP 7G is the fingerprints' (netapp.data-ontap-7g)
        cycles = _cycles_for_version(catalogue, "netapp-ontap", m.group(1))
        return Identification("netapp-ontap", cycles, m.group(1), "high" if cycles else "medium", "sysDescr",
                              _bounded(text), vendor="NetApp", family="NetApp ONTAP", category="storage")  # fmt: skip
    found = identify_fingerprint("sysdescr", text, object_id, catalogue)
    if found is not None:  # before the kernel catch-all: an appliance on Linux says what it is
        return found
    m = _LINUX.search(text)
    if m:
        version = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
        cycles = _cycles_for_version(catalogue, "linux", version)
        # Only the kernel is known (an appliance, a camera, an unnamed distribution): its branch's end of
        # support is evidence, weakly (a vendor may still patch an old kernel in its firmware).
        return Identification("linux", cycles, version, "low", "sysDescr", _bounded(text), family="Linux kernel",
                              note=KERNEL_ONLY)  # fmt: skip
    return None


KERNEL_ONLY = ("judged by its Linux kernel: the device names no firmware or distribution, and a vendor may still "
               "patch an old kernel in its firmware")
FIELD_METHODS = {"sysdescr": "sysDescr", "service": "nmap service", "osmatch": "nmap os", "software": "software name",
                 "http": "http", "mac": "mac vendor"}  # fmt: skip


def identify_fingerprint(field: str, text: str, object_id: str | None, catalogue: Catalogue) -> Identification | None:
    """The fingerprint database's first answer for a device string (see `from_fingerprint`)."""
    found = fingerprints.match(field, text, object_id)
    return from_fingerprint(found, field, text, catalogue) if found else None


def identify_fingerprints(field: str, text: str, object_id: str | None, catalogue: Catalogue) -> list[Identification]:
    """Every kind the fingerprint database names in a string: a banner's program and the OS it shipped with."""
    return [from_fingerprint(found, field, text, catalogue) for found in fingerprints.match_all(field, text, object_id)]


def from_fingerprint(found: fingerprints.Fingerprinted, field: str, text: str, catalogue: Catalogue) -> Identification:
    """A fingerprint's match as an identification. A catalogue product keeps only a cycle the catalogue has
    (by name, else the longest prefix of the version); "one of" cycles only those the catalogue has; a family
    the catalogue lacks, or one whose sourced table lacks the release, keeps the cycle the device states,
    and its lifecycle stays unknown."""
    cycles: tuple[str, ...] = (found.cycle,) if found.cycle else ()
    product = catalogue.product(found.product)
    if found.cycles:
        cycles = tuple(c for c in found.cycles if _known_cycle(catalogue, c))
    elif product is not None and not (found.cycle and product.cycle(found.cycle)):
        labelled = [c.name for c in product.cycles
                    if found.cycle and c.label.lower().startswith(found.cycle.lower() + " ")]  # fmt: skip
        # labels carry code names ("2008 R2 'Kilimanjaro'"): a cycle the label starts with, else by version
        cycles = tuple(labelled[:1]) or _cycles_for_version(catalogue, found.product, found.version or "")
        if not cycles and found.cycle and product.source != ENDOFLIFE:  # a sourced table lists some releases
            cycles = (found.cycle,)  # only: the release is kept, its lifecycle stays unknown
    elif product is not None and found.cycle and (named := product.cycle(found.cycle)) is not None:
        cycles = (named.name,)  # found by name or by label: the cycle's name is what is stored
    ident = Identification(found.product, cycles, found.version, found.confidence, FIELD_METHODS[field],
                           _bounded(text), found.kind, found.vendor, found.family, found.model, found.category,
                           found.id)  # fmt: skip
    return _dated_by_mainline(ident, catalogue)


def _dated_by_mainline(ident: Identification, catalogue: Catalogue) -> Identification:
    """A release dated by a table's *mainline* row (Cisco IOS 12.2 "mainline, per Greenbone") while the device
    runs a train of it (`12.2(55)SE3`) or does not say which (nmap's "IOS 12.2"): the row's date is the
    mainline's, not the train's. The verdict may still hold (every 12.2 train has ended), but the evidence
    says whose date it is and the confidence is at most medium; a mainline release (`12.2(29b)`: a rebuild
    letter inside the parentheses, no train after them) is the row's own."""
    found = _cycles(ident, catalogue)
    if len(found) != 1 or "mainline" not in found[0][1].label.lower():
        return ident
    cycle, version = found[0][1], ident.version or ""
    rest = version[len(cycle.name) :] if version.lower().startswith(cycle.name.lower()) else ""
    if _MAINLINE_RELEASE.fullmatch(rest):
        return ident
    train = f"the {version} train's own date" if rest else "the device states no train, whose own date"
    note = f"end of support dated by the row {cycle.label}; {train} is not in the catalogue"
    confidence = "medium" if ident.confidence == "high" else ident.confidence
    return replace(ident, confidence=confidence, evidence=_bounded(f"{note}: {ident.evidence}"))


def _known_cycle(catalogue: Catalogue, name: str) -> bool:
    slug, cycle = split_cycle(name, "")
    product = catalogue.product(slug)
    return product is not None and product.cycle(cycle) is not None


def split_cycle(name: str, product: str) -> tuple[str, str]:
    """A candidate cycle as (product, cycle): "windows-server/2016" names its product, "7" is `product`'s."""
    slug, _, cycle = name.rpartition("/")
    return (slug, cycle) if slug else (product, cycle)


def _windows_cycles(catalogue: Catalogue, slugs: list[str], fits: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(slug, cycle) of the catalogue's Windows cycles whose `latest` build number `fits`."""
    return [(product.slug, c.name) for product in filter(None, map(catalogue.product, slugs))
            for c in product.cycles if c.latest and fits(c.latest)]  # fmt: skip


def identify_windows_build(build: str, server: bool | None, catalogue: Catalogue, method: str,
                           evidence: str, shared: tuple[str, ...] = (),
                           service_pack: str | None = None) -> Identification:  # fmt: skip
    """A Windows build (`6.1.7601`) against the catalogue's own build numbers; `server` (None: not known)
    narrows it to Windows Server or the desktop editions; `shared`: other builds the statement may stand for;
    `service_pack`, when the host states it (the registry's CSDVersion, "" for none), narrows the cycles one
    build stands for (every XP service pack is build 2600). Builds shared by several cycles stay "one of"."""
    slugs = ["windows", "windows-server"] if server is None else ["windows-server" if server else "windows"]
    builds = shared or (build,)
    found = _windows_cycles(catalogue, slugs, lambda latest: any(Version(latest).startswith(b) for b in builds))
    if service_pack is not None:
        kept, _ = _by_service_pack([f"{s}/{c}" for s, c in found], service_pack, "")
        found = [(s, c) for s, c in found if f"{s}/{c}" in kept] or found
    products = {s for s, _ in found}
    if len(products) == 1:
        confidence = "high" if len(found) == 1 else "medium"
        return Identification(found[0][0], tuple(c for _, c in found), build, confidence, method, evidence)
    return Identification("windows", tuple(f"{s}/{c}" for s, c in found), build, "low", method, evidence)


# Windows as it names itself over SMB (nmap's smb-os-discovery `os` and `lanmanager` elements): "Windows
# Server 2003 3790 Service Pack 2" beside "Windows Server 2003 5.2". Samba answers "Windows 6.1" with a
# lanmanager of "Samba 4.17.12-Debian": that is Samba, never Windows 7.
_SMB_OS = re.compile(r"^(?P<name>Windows\b[\w ().,-]{0,80}?) (?:build )?(?P<build>\d{4,5})"
                     r"(?: Service Pack (?P<sp>\d))?$")  # fmt: skip


def identify_smb(os_text: str, lanmanager: str | None, catalogue: Catalogue) -> Identification | None:
    """smb-os-discovery: the edition, build and service pack Windows states over SMB (ranked below what the
    host states through an agent, above nmap's guesses). The build picks the catalogue's cycles (by their
    own `latest` build numbers), the service pack narrows them; the edition names it when no cycle does."""
    said = os_text.strip()[:200]
    if "samba" in (lanmanager or "").lower() or "samba" in said.lower():
        return None
    m = _SMB_OS.match(said)
    if m is None:
        return None
    slug = "windows-server" if "server" in m["name"].lower() else "windows"
    cycles = [c for _, c in _windows_cycles(catalogue, [slug], lambda latest: latest.split(".")[2:3] == [m["build"]])]
    named = [c for c in cycles if c.split("-")[0] in m["name"].split()]  # "Server 2019", not 1809 SAC
    narrowed = [c for c in named or cycles if m["sp"] and c.endswith(f"sp{m['sp']}")]
    cycles = narrowed or named or cycles
    return Identification(slug, tuple(cycles), None, "high" if len(cycles) == 1 else "medium", "smb-os-discovery",
                          f"smb-os-discovery: {said}", kind="os", vendor="Microsoft", family=said)  # fmt: skip


# Releases delivered as an "enablement package" on an earlier one share its core files, and an NTLM challenge
# states the build of that core: every Windows 10 from 2004 to 22H2 answers 10.0.19041 (Microsoft, "Windows
# 10, version 22H2 ... shares a common core operating system and an identical set of system files" with
# 2004, 20H2, 21H1 and 21H2: the 19041 family; 1909 likewise on 1903's 18362; Windows 11 23H2 on 22H2's 22621;
# 25H2 on 24H2's 26100). The build an NTLM challenge states -> the builds of the releases it may be.
NTLM_SHARED_BUILDS = {
    "10.0.18362": ("10.0.18362", "10.0.18363"),
    "10.0.19041": ("10.0.19041", "10.0.19042", "10.0.19043", "10.0.19044", "10.0.19045"),
    "10.0.22621": ("10.0.22621", "10.0.22631"),
    "10.0.26100": ("10.0.26100", "10.0.26200"),
}


def identify_ntlm(product_version: str, script: str, catalogue: Catalogue) -> Identification | None:
    """An NTLM challenge's Product_Version (nmap's rdp-, http-, smtp-...-ntlm-info: `10.0.17763`): the
    Windows build, desktop or server not told apart, and every release built on the same core ("one of")."""
    m = re.fullmatch(r"(\d{1,2}\.\d{1,2}\.\d{3,5})", product_version.strip()[:32])
    if m is None:
        return None
    build = m.group(1)
    found = identify_windows_build(build, None, catalogue, "ntlm-info", f"{script}: Product_Version {build}",
                                   NTLM_SHARED_BUILDS.get(build, ()))  # fmt: skip
    return replace(found, kind="os", vendor="Microsoft")


# Active Directory's operatingSystemVersion as Windows writes it (MS-NRPC NL_OSVERSIONINFO_V1 turned into
# "major.minor (build)"): "6.1 (7601)", "10.0 (26100)".
_DIRECTORY_VERSION = re.compile(r"(\d{1,2})\.(\d{1,2}) \((\d{3,5})\)")
_SERVICE_PACK = re.compile(r"Service Pack (\d)")
_EDITION_SUFFIXES = ("-iot-lts", "-e-lts", "-iot", "-e", "-w")


def _edition_suffix(name: str) -> str:
    """The catalogue's cycle suffix for a client edition: LTSC/LTSB and IoT LTSC have their own dates
    (`-e-lts`, `-iot-lts`), Enterprise and Education the longer `-e` servicing, Home and Pro `-w`."""
    words = name.lower().split()
    lts = "ltsc" in words or "ltsb" in words
    if "iot" in words:
        return "-iot-lts" if lts else "-iot"
    if lts:
        return "-e-lts"
    return "-e" if "enterprise" in words or "education" in words else "-w"


def _by_service_pack(cycles: list[str], service_pack: str | None, name: str) -> tuple[list[str], str | None]:
    """The cycles a stated service pack keeps ("Service Pack 2": XP's 5-sp2 of the four XP cycles build 2600
    stands for); none stated (an empty CSDVersion or operatingSystemServicePack): the release without one.
    With a note when the catalogue lacks the pack stated."""
    pack = _SERVICE_PACK.search(service_pack or "")
    if not any("-sp" in c for c in cycles):
        return cycles, None
    stated = [c for c in cycles if c.endswith(f"-sp{pack[1]}")] if pack else [c for c in cycles if "-sp" not in c]
    note = f"{name} {pack[0]} is not in the catalogue (it lists {', '.join(cycles)})" if pack and not stated else None
    return stated, note


def identify_directory(os_name: str, os_version: str | None, service_pack: str | None,
                       catalogue: Catalogue) -> Identification | None:  # fmt: skip
    """What a domain-joined computer told its domain controller (operatingSystem, operatingSystemVersion,
    operatingSystemServicePack): the host's own word. The name AND the build give the cycle, because builds
    collide: 10.0 (26100) is Windows 11 24H2 on a client and Server 2025 on a server; 10.0 (17763) is
    Server 2019 or Windows 10 1809, whose LTSC edition has its own dates. The name picks the product
    (Server or not), the edition (LTSC, IoT, Enterprise, Pro) and the Server year; the service pack narrows
    Server 2003's and XP's cycles. A build that is not one gives the product with no cycle and says why."""
    name = os_name.strip()[:200]
    if not name.lower().startswith("windows"):
        return None  # "Samba", "Mac OS X", a Linux joined with sssd: not Windows' statement of itself
    server = "server" in name.lower()
    slug = "windows-server" if server else "windows"
    said = (os_version or "").strip()[:64]
    evidence = _bounded(f"directory: operatingSystem {name!r}, operatingSystemVersion {said!r}"
                        + (f", operatingSystemServicePack {service_pack.strip()[:64]!r}" if service_pack else ""))
    found = _DIRECTORY_VERSION.fullmatch(said)
    if found is None:
        return Identification(slug, (), None, "low", "directory", evidence, kind="os", vendor="Microsoft",
                              family=name[:80], note=f"operatingSystemVersion {said[:40]!r} is not a Windows "
                              "version and build such as '10.0 (19045)': the release is unknown")  # fmt: skip
    build = ".".join(found.groups())
    parts = build.split(".")
    cycles = [c for _, c in _windows_cycles(catalogue, [slug], lambda latest: latest.split(".")[:3] == parts)]
    if server:  # the year the name states ("Server 2019") against SAC releases of the same build (no year)
        named = [c for c in cycles if c.split("-")[0] in name.split()]
        cycles = named or [c for c in cycles if c.endswith(("-sac", "-ac"))] or cycles
    else:
        suffix = _edition_suffix(name)
        suffixed = [c for c in cycles if c.endswith(suffix)]
        plain = [c for c in cycles if not c.endswith(_EDITION_SUFFIXES)]
        cycles = suffixed or plain or cycles
    cycles, note = _by_service_pack(cycles, service_pack, name)
    if not cycles and note is None:
        note = f"build {build} of {name} is not in the catalogue"
    confidence = "high" if len(cycles) == 1 else "medium" if cycles else "low"
    return Identification(slug, tuple(cycles), build, confidence, "directory", evidence, kind="os",
                          vendor="Microsoft", family=name[:80], note=note)  # fmt: skip


# os-release ID values (os-release(5)) of the distributions the catalogue has.
OS_RELEASE_SLUGS = {"debian": "debian", "ubuntu": "ubuntu", "rhel": "rhel", "centos": "centos", "rocky": "rocky-linux",
                    "almalinux": "almalinux", "ol": "oracle-linux", "sles": "sles", "sled": "sles"}  # fmt: skip


def identify_os_release(os_id: str, version_id: str | None, catalogue: Catalogue) -> Identification | None:
    """The host's own word (a host agent's /etc/os-release): the release is stated, not guessed."""
    os_id = os_id.strip().lower()[:64]
    if not os_id:
        return None
    slug = OS_RELEASE_SLUGS.get(os_id, os_id)
    version = (version_id or "").strip()[:32] or None
    product = catalogue.product(slug)
    cycles: tuple[str, ...] = ()
    if product is not None and version:
        cycles = (version,) if product.cycle(version) else _cycles_for_version(catalogue, slug, version)
    evidence = f"os-release ID={os_id} VERSION_ID={version or ''}"
    return Identification(slug, cycles, version, "high" if cycles else "medium", "os-release", evidence)


# Installed packages as a host agent lists them (name and version apart): dpkg and apk names of programs
# the catalogue knows. rpm names go through `identify_package`, the registry's through the `software` fingerprints.
INSTALLED_PACKAGES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^nginx$"), "nginx"),
    (re.compile(r"^apache2$"), "apache-http-server"),
    (re.compile(r"^openssl3?$"), "openssl"),
    (re.compile(r"^squid$"), "squid"),
    (re.compile(r"^redis(-server)?$"), "redis"),
    (re.compile(r"^mariadb(-server)?$"), "mariadb"),
    (re.compile(r"^mysql-server$"), "mysql"),
    (re.compile(r"^isc-dhcp-server$"), "isc-dhcp"),
    (re.compile(r"^postgresql-?\d+$"), "postgresql"),  # the server itself, not the `postgresql` meta-package
    (re.compile(r"^php\d+(\.\d+)?$"), "php"),
    (re.compile(r"^python3(\.\d+)?$"), "python"),
    (re.compile(r"^tomcat\d+$"), "tomcat"),
]
_PACKAGE_VERSION = re.compile(r"^(?:\d+:)?(\d+(?:\.\d+)*[a-z]?)")  # epoch off; upstream version up to the revision


def identify_installed(name: str, version: str | None, manager: str, catalogue: Catalogue) -> Identification | None:
    """A package a host agent listed: dpkg/apk by name, rpm as `name-version-release`, Windows programs by
    their display name."""
    name = name.strip()[:256]
    if manager == "rpm":
        return identify_package(f"{name}-{version or ''}", catalogue)
    if manager == "registry":
        return identify_software_name(name, catalogue)
    if manager not in ("dpkg", "apk"):
        return None
    slug = next((s for pattern, s in INSTALLED_PACKAGES if pattern.match(name)), None)
    m = _PACKAGE_VERSION.match(version or "")
    if slug is None or not m:
        return None
    cycles = _cycles_for_version(catalogue, slug, m.group(1))
    return Identification(slug, cycles, m.group(1), "high" if cycles else "medium", "package",
                          f"{manager}: {name} {version}"[:300])  # fmt: skip


EL_FAMILY = ("rhel", "centos", "oracle-linux", "rocky-linux", "almalinux")


def enterprise_linux(major: str, catalogue: Catalogue) -> tuple[str, ...]:
    """Every distribution with an `elN` release N in the catalogue: "one of" them, as `slug/cycle`."""
    return tuple(f"{slug}/{major}" for slug in EL_FAMILY if (p := catalogue.product(slug)) and p.cycle(major))


# Package names as rpm or dpkg list them (hrSWInstalled on Linux: `openssl-1.0.1e-42.el6`): the release
# package names the distribution; a few packages are programs the catalogue knows.
_RELEASE_PACKAGE = re.compile(
    r"^(centos|redhat|oraclelinux|rocky|almalinux)-release-(?:server-|workstation-)?(\d+)(?:[.\-]|Server|$)"
)
RELEASE_SLUGS = {"centos": "centos", "redhat": "rhel", "oraclelinux": "oracle-linux", "rocky": "rocky-linux",
                 "almalinux": "almalinux"}  # fmt: skip
_PACKAGE = re.compile(r"^(openssl|python3?|httpd|nginx|php|mariadb-server|mysql-server|postgresql-server|tomcat|"
                      r"squid|redis)-(\d+(?:\.\d+)*[a-z]?)-[\w.]+$")  # fmt: skip
PACKAGE_SLUGS = {"openssl": "openssl", "python": "python", "python3": "python", "httpd": "apache-http-server",
                 "nginx": "nginx", "php": "php", "mariadb-server": "mariadb", "mysql-server": "mysql",
                 "postgresql-server": "postgresql", "tomcat": "tomcat", "squid": "squid", "redis": "redis"}  # fmt: skip


def identify_package(name: str, catalogue: Catalogue) -> Identification | None:
    """An rpm/dpkg package name: the distribution's release package, or a program with its version."""
    text = name.strip()[:256]
    m = _RELEASE_PACKAGE.match(text)
    if m:
        slug = RELEASE_SLUGS[m.group(1)]
        product = catalogue.product(slug)
        release: tuple[str, ...] = (m.group(2),) if product and product.cycle(m.group(2)) else ()
        return Identification(slug, release, m.group(2), "high", "release package", text)
    m = _PACKAGE.match(text)
    if m:
        slug = PACKAGE_SLUGS[m.group(1)]
        cycles = _cycles_for_version(catalogue, slug, m.group(2))
        return Identification(slug, cycles, m.group(2), "high" if cycles else "medium", "package", text)
    return None


def identify_software_name(name: str, catalogue: Catalogue) -> Identification | None:
    """An installed program's name (hrSWInstalledName, a Windows DisplayName): the `software` fingerprints
    (rules/fingerprints/software/), the cycle by name or by the catalogue's label."""
    found = identify_fingerprint("software", name.strip()[:256], None, catalogue)
    return replace(found, confidence="medium") if found is not None and not found.cycles else found


# nmap service product strings (`-sV`) of families the catalogue knows, lower-cased.
SERVICE_PRODUCTS = {
    "nginx": "nginx",
    "apache httpd": "apache-http-server",
    "apache tomcat": "tomcat",
    "apache tomcat/coyote jsp engine": "tomcat",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "postgresql db": "postgresql",
    "redis key-value store": "redis",
    "mongodb": "mongodb",
    "squid http proxy": "squid",
    "php": "php",
    "vmware esxi": "esxi",
    "vmware esxi soap api": "esxi",
    "isc dhcpd": "isc-dhcp",
}
# Distribution builds named in a banner ("OpenSSH 9.2p1 Debian 2+deb12u3", "nginx 1.20.1 ... el7").
_DEBIAN_BUILD = re.compile(r"\bdeb(\d{1,2})u\d+")
_EL_BUILD = re.compile(r"\.el(\d{1,2})(?:_\d+)?\b")
DISTRIBUTIONS = {"debian": "debian", "ubuntu": "ubuntu", "red hat": "rhel", "centos": "centos", "rocky": "rocky-linux",
                 "almalinux": "almalinux", "suse": "sles", "oracle linux": "oracle-linux"}  # fmt: skip


def service_line(product: str | None, version: str | None, extra: str | None) -> str:
    """nmap's VERSION column, as nmap prints it: `product version (extrainfo)` (the `service` field's text)."""
    line = " ".join(x for x in (product, version) if x)
    return f"{line} ({extra})" if extra else line


def identify_service(product: str | None, version: str | None, extra: str | None, cpes: list[str],
                     catalogue: Catalogue) -> list[Identification]:  # fmt: skip
    """What an nmap service line names: the program (by CPE, else by fingerprint, else by product string),
    what its banner bundles (PHP, OpenSSL), the OS it shipped with (IIS 7.5: Windows 7 or Server 2008 R2)
    and the distribution that built it when the banner says so (a `deb12u3` build is Debian 12's package)."""
    found: list[Identification] = []
    text = service_line(product, version, extra)[:512]
    for cpe in cpes[:8]:
        ident = identify_cpe(cpe, catalogue)
        if ident is not None and ident.product != "linux":  # a kernel CPE on a service names no version
            found.append(ident)
    for ident in identify_fingerprints("service", text, None, catalogue) if text else []:
        same = next((i for i, f in enumerate(found) if f.product == ident.product), None)
        if same is None:
            found.append(ident)
        elif not found[same].cycles and ident.cycles:  # the banner pins what the CPE left open
            found[same] = ident
    slug = SERVICE_PRODUCTS.get((product or "").strip().lower()[:80])
    if slug and not any(i.product == slug for i in found):
        v = (version or "").split()[0][:128] if version else ""
        cycles = _cycles_for_version(catalogue, slug, v)
        found.append(Identification(slug, cycles, v or None, "high" if cycles else "low", "nmap product", text))
    m = _DEBIAN_BUILD.search(text)
    if m and not any(i.product == "debian" for i in found):
        found.append(Identification("debian", (m.group(1),), None, "medium", "package build", text))
    m = _EL_BUILD.search(text)
    if m and not any(i.product == "rhel" for i in found):
        found.append(Identification("rhel", (m.group(1),), None, "medium", "package build", text))
    return found


def distribution_named(text: str) -> str | None:
    """The distribution a banner or extra-info names (`Debian 2+deb12u3`, `Ubuntu 3ubuntu0.10`), if any."""
    lowered = text[:512].lower()
    return next((slug for word, slug in DISTRIBUTIONS.items() if word in lowered), None)


def _join_title(title: str, label: str) -> str:
    """`Microsoft Windows` + `XP SP3`; `Microsoft Windows Server` + `Windows Server 2003 SP2` (the label
    repeats the title's end: said once)."""
    words, said = title.split(), label.split()
    overlap = max((k for k in range(1, min(len(words), len(said)) + 1) if words[-k:] == said[:k]), default=0)
    return " ".join(words[: len(words) - overlap] + said)


def _shared_words(labels: list[str]) -> int:
    """How many leading words every label has in common ("Microsoft Windows XP SP3", "Microsoft Windows XP": 3)."""
    split = [label.split() for label in labels]
    common = 0
    while all(len(w) > common for w in split) and len({w[common] for w in split}) == 1:
        common += 1
    return common


def _one_of(labels: list[str]) -> str:
    """"Microsoft Windows Server 2003 (SP2, SP1 or no service pack)"; "CentOS 7, Oracle Linux 7 or RHEL 7"."""
    split = [label.split() for label in labels]
    common = _shared_words(labels)
    if common == 0:
        return ", ".join(labels[:-1]) + " or " + labels[-1]
    rests = [" ".join(w[common:]).strip("()") or "no service pack" for w in split]
    return " ".join(split[0][:common]) + " (" + ", ".join(rests[:-1]) + " or " + rests[-1] + ")"


def display_name(ident: Identification, catalogue: Catalogue) -> str:
    """The name a person knows (issue 12 item 4): the catalogue's title and cycle label ("Microsoft Windows
    XP SP3"), else the family and the version the device states ("Cisco IOS 12.2(55)SE3 on a C3560"); several
    candidate releases read "A or B" (up to three, or five service packs of one release: "Microsoft Windows XP
    (SP3, SP2, SP1 or no service pack)"), else the family and "one of N releases"."""
    product = catalogue.product(ident.product)
    title = product.title if product else ident.family or ident.product
    labels = []
    for name in ident.cycles:
        slug, cycle_name = split_cycle(name, ident.product)
        owner = catalogue.product(slug)
        cycle = owner.cycle(cycle_name) if owner else None
        if owner and cycle and owner.source == ENDOFLIFE:
            labels.append(_join_title(owner.title, cycle.label))
        else:  # the sourced tables label rows for their readers ("IOS 12.4 (mainline, per Greenbone)")
            labels.append(f"{ident.family or title} {cycle_name}")
    if not labels and not ident.version and ident.family:
        text = ident.family  # what the evidence calls it ("Linux 5.0 - 5.2": nmap's kernel range)
    elif len(labels) == 1:
        text = labels[0]
        if ident.version and (product is None or product.source != ENDOFLIFE) and ident.version not in text:
            text = f"{ident.family or title} {ident.version}"
    elif 1 < len(labels) <= 3 or (len(labels) <= 5 and _shared_words(labels) > len(title.split())):
        text = _one_of(list(dict.fromkeys(labels)))  # up to five service packs of one release read as one name
    else:
        text = f"{title} {ident.version}" if ident.version else title
        if labels:
            text += f" (one of {len(labels)} releases)"
    if ident.model and ident.model not in text:
        text += f" on a {ident.model}"
    return text[:160]


def lifecycle(ident: Identification, catalogue: Catalogue, today: date) -> Status:
    """The state shared by every candidate cycle; unknown when they disagree or the catalogue lacks them.
    "One of" several cycles has no single end date (see `eol_range`): its dates stay unset."""
    statuses = _statuses(ident, catalogue, today)
    if not statuses or len({s.state for s in statuses}) != 1:
        return Status(Lifecycle.UNKNOWN, None, None, None)
    if len(statuses) > 1:
        return Status(statuses[0].state, None, None, None)
    return statuses[0]


def eol_range(ident: Identification, catalogue: Catalogue, today: date) -> tuple[date, date] | None:
    """The earliest and latest end of support among "one of" several candidate cycles (Server 2003 RTM,
    SP1 or SP2: 2007-04-10 to 2015-07-14); None for one cycle or when a candidate's date is not known."""
    statuses = _statuses(ident, catalogue, today)
    dates = [s.eol_date for s in statuses]
    if len(statuses) < 2 or any(d is None for d in dates):
        return None
    known = [d for d in dates if d is not None]
    return min(known), max(known)


def _statuses(ident: Identification, catalogue: Catalogue, today: date) -> list[Status]:
    """Each candidate cycle's status; empty when the catalogue lacks the product or any candidate."""
    return [owner.status(cycle, today) for owner, cycle in _cycles(ident, catalogue)]


def _cycles(ident: Identification, catalogue: Catalogue) -> list[tuple[Product, Cycle]]:
    """Each candidate cycle with its product; empty when the catalogue lacks the product or any candidate."""
    product = catalogue.product(ident.product)
    if product is None or not ident.cycles:
        return []
    found = []
    for name in ident.cycles:
        slug, cycle_name = split_cycle(name, ident.product)
        owner = catalogue.product(slug) or product
        cycle = owner.cycle(cycle_name)
        if cycle is None:
            return []
        found.append((owner, cycle))
    return found


def lifecycle_sources(ident: Identification, catalogue: Catalogue) -> list[dict[str, Any]]:
    """Where the dates of a verdict come from, each source once: the product and cycle, the source (URL or
    repository file), its kind (vendor, third-party, third-party proposal, vendor policy), its quote."""
    found: list[dict[str, Any]] = []
    for owner, cycle in _cycles(ident, catalogue):
        for where in (owner.provenance_of(cycle), *cycle.also):
            entry = {"product": owner.slug, "cycle": cycle.name, **where.as_dict()} if where else None
            if entry and entry not in found:
                found.append(entry)
    return found


def lifecycle_published(ident: Identification, catalogue: Catalogue) -> bool:
    """Whether the catalogue dates this family and the release the device states: False for a family it
    lacks (APC cards, iLO, JetDirect: "ask the vendor") or a release its sourced table does not list."""
    return catalogue.product(ident.product) is not None and (not ident.cycles or bool(_cycles(ident, catalogue)))


def single_cycle(ident: Identification, catalogue: Catalogue) -> Cycle | None:
    """The one catalogue cycle an identification names (None for "one of" several, or none known)."""
    found = _cycles(ident, catalogue)
    return found[0][1] if len(found) == 1 else None


def months_only(ident: Identification, catalogue: Catalogue) -> list[str]:
    """The date fields of the identified cycle known only to the month (its end shows as "2022-10")."""
    cycle = single_cycle(ident, catalogue)
    return sorted(cycle.months) if cycle else []
