"""Identification on what real devices said: recorded sysDescr/sysObjectID and nmap's CPEs.

Each recording's expected product and cycle is stated here by a person who read the recording; the test
reads the sysDescr from the recording file itself, so the evidence is the device's own words.
"""

from __future__ import annotations

import bz2
from datetime import date

import pytest

from rules.catalogue import Lifecycle, Status, default_catalogue
from rules.identify import identify_cpe, identify_software_name, identify_sysdescr, lifecycle
from scanner.lab import recording_path

DAY = date(2026, 11, 23)
EXPECTED = {
    "os/windows/XP": ("windows", ("5-sp3", "5-sp2", "5-sp1", "5"), Lifecycle.END_OF_LIFE),  # build 2600: any SP
    "os/windows/server-2003-5-2": ("windows-server", ("2003-sp2", "2003-sp1", "2003"), Lifecycle.END_OF_LIFE),
    # An .el6/.el7 kernel is RHEL or a rebuild: one of them. All EL6 ones have ended; for EL7 they differ
    # (RHEL 7 in paid ELS, CentOS 7 ended, Oracle Linux 7 in extended support): unknown, not a guess.
    "os/linux/unknown-001": ("rhel", ("rhel/6", "centos/6", "oracle-linux/6"), Lifecycle.END_OF_LIFE),
    "os/linux/unknown-006": ("rhel", ("rhel/7", "centos/7", "oracle-linux/7"), Lifecycle.UNKNOWN),
    "network/switch/cisco-c3560": ("cisco-ios", ("12.2",), Lifecycle.END_OF_LIFE),  # rules/data/lifecycle
    "network/router/juniper-mx960-12-3r6-6": ("junos", ("12.3",), Lifecycle.END_OF_LIFE),
    # NetApp's 7-Mode table: 8.2.x 7-Mode is in "self support", its end passed, the day not published.
    "storage/netapp-fas3270": ("netapp-ontap-7mode", ("8.2-7mode",), Lifecycle.END_OF_LIFE),
}


def system_of(name: str) -> tuple[str, str | None]:
    """sysDescr and sysObjectID as the recording holds them (its lines are in OID order: stop after them)."""
    path = recording_path(name)
    values = {}
    with bz2.open(path, "rt", encoding="latin-1") if path.suffix == ".bz2" else path.open(encoding="latin-1") as stream:
        for line in stream:
            oid, _, rest = line.rstrip("\r\n").partition("|")
            tag, _, value = rest.partition("|")
            if oid in ("1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0"):
                try:
                    values[oid] = bytes.fromhex(value).decode("utf-8", "replace") if tag.endswith("x") else value
                except ValueError:  # a few recordings tag plain text as hex
                    values[oid] = value
            if len(values) == 2 or oid.startswith("1.3.6.1.2.1.1.3"):
                break
    return values.get("1.3.6.1.2.1.1.1.0", ""), values.get("1.3.6.1.2.1.1.2.0")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_devices(name: str) -> None:
    product, cycles, state = EXPECTED[name]
    descr, object_id = system_of(name)
    found = identify_sysdescr(descr, object_id, default_catalogue())
    assert found is not None
    assert (found.product, found.cycles) == (product, cycles)
    assert lifecycle(found, default_catalogue(), DAY).state == state
    words = found.evidence.removesuffix("…")  # the device's own words, after a note on whose date dates them
    assert words and (descr.startswith(words) or descr.startswith(words.partition(": ")[2]))


def test_windows_build_shared_by_client_and_server_stays_one_of() -> None:
    cat = default_catalogue()
    descr = "Hardware: x86 Family 6 - Software: Windows Version 6.1 (Build 7601 Multiprocessor Free)"
    both = identify_sysdescr(descr, None, cat)
    assert both is not None and set(both.cycles) == {"windows/7-sp1", "windows-server/2008-r2-sp1"}
    assert both.confidence == "low"
    assert lifecycle(both, cat, DAY).state == Lifecycle.END_OF_LIFE  # both are, so it can be said
    server = identify_sysdescr(descr, "1.3.6.1.4.1.311.1.1.3.1.2", cat)
    assert server is not None and (server.product, server.cycles) == ("windows-server", ("2008-r2-sp1",))


@pytest.mark.parametrize(
    ("cpe", "product", "cycles"),
    [
        ("cpe:/a:igor_sysoev:nginx:1.22.1", "nginx", ("1.22",)),
        ("cpe:/o:microsoft:windows_server_2008:r2:sp1", "windows-server", ("2008-r2-sp1",)),
        ("cpe:/o:microsoft:windows_server_2003::sp2", "windows-server", ("2003-sp2",)),
        ("cpe:/a:apache:http_server:2.4.6", "apache-http-server", ("2.4",)),
        ("cpe:/a:openssl:openssl:1.0.2k", "openssl", ("1.0.2",)),
        ("cpe:/o:linux:linux_kernel", "linux", ()),
        # The lifecycle tables write their CPEs in the URI form: nmap's Cisco IOS and Junos CPEs reach them.
        ("cpe:/o:cisco:ios:12.2", "cisco-ios", ("12.2",)),
        ("cpe:/o:juniper:junos:12.3r6.6", "junos", ("12.3",)),
        # A release no finer than a cycle others refine is one of them (Solaris 11: 11.0 or an 11.x update).
        ("cpe:/o:oracle:solaris:11", "oracle-solaris", ("11.4", "11.3", "11.2", "11.1", "11")),
    ],
)
def test_cpes(cpe: str, product: str, cycles: tuple[str, ...]) -> None:
    found = identify_cpe(cpe, default_catalogue())
    assert found is not None and (found.product, found.cycles) == (product, cycles)


@pytest.mark.parametrize(
    ("descr", "product", "cycles", "version"),
    [  # Recog's snmp_sysdescr.xml examples (7-Mode and 7G) and ONTAP's own version string (REST `version.full`)
        ("NetApp Release 8.1RC2 7-Mode: Thu Oct 27 19:26:06 PDT 2011", "netapp-ontap-7mode", ("8.1-7mode",), "8.1RC2"),
        ("NetApp Release 7.2.4: Fri Nov 16 00:34:57 PST 2007", "netapp-data-ontap-7g", ("7.2",), "7.2.4"),
        ("NetApp Release 9.13.1P6: Tue Dec 05 16:06:25 UTC 2023", "netapp-ontap", ("9.13.1",), "9.13.1"),
    ],
)  # fmt: skip
def test_netapp_modes_are_told_apart(descr: str, product: str, cycles: tuple[str, ...], version: str) -> None:
    """A release candidate of 7-Mode is 7-Mode (not clustered ONTAP 8.1), 7G is not ONTAP 9; an 8.1 7-Mode
    release the 7-Mode table lacks keeps its stated cycle, its lifecycle unknown (never guessed)."""
    cat = default_catalogue()
    found = identify_sysdescr(descr, "1.3.6.1.4.1.789.2.3", cat)
    assert found is not None and (found.product, found.cycles, found.version) == (product, cycles, version)
    assert found.category == "storage" and found.vendor == "NetApp"
    if product != "netapp-ontap":
        assert lifecycle(found, cat, DAY).state == Lifecycle.UNKNOWN


def test_a_coarse_release_is_dated_only_when_every_candidate_agrees() -> None:
    """nmap's "Solaris 11" may be 11.4, supported to 2031: never end-of-life for the catalogue's 11.0; its
    "Junos 12.3" is 12.3 or an X train of it, all ended: end-of-life, with no single date."""
    cat = default_catalogue()
    solaris = identify_cpe("cpe:/o:oracle:solaris:11", cat)
    assert solaris is not None and lifecycle(solaris, cat, DAY).state == Lifecycle.UNKNOWN
    junos = identify_cpe("cpe:/o:juniper:junos:12.3", cat)
    assert junos is not None and "12.3x48" in junos.cycles and junos.confidence == "medium"
    assert lifecycle(junos, cat, DAY) == Status(Lifecycle.END_OF_LIFE, None, None, None)


def test_unknown_is_unknown_never_safe() -> None:
    cat = default_catalogue()
    assert identify_cpe("cpe:/a:openbsd:openssh:9.2p1", cat) is None  # no lifecycle data: not identified
    assert identify_sysdescr("APC Web/SNMP Management Card", None, cat) is None
    kernel = identify_cpe("cpe:/o:linux:linux_kernel", cat)
    assert kernel is not None and lifecycle(kernel, cat, DAY).state == Lifecycle.UNKNOWN
    assert identify_cpe("cpe:/a:x:y:" + "9" * 10_000, cat) is None


def installed_names(name: str) -> list[str]:
    path = recording_path(name)
    text = bz2.decompress(path.read_bytes()).decode("latin-1")
    names = []
    for line in text.splitlines():
        oid, _, rest = line.partition("|")
        tag, _, value = rest.partition("|")
        if oid.startswith("1.3.6.1.2.1.25.6.3.1.2."):
            raw = bytes.fromhex(value) if tag.endswith("x") else value.encode("latin-1")
            names.append(raw.decode("cp1252", errors="replace"))
    return names


def test_installed_software_of_recorded_windows_hosts() -> None:
    """Every distinct product the XP and Server 2003 recordings list, with its state on the day."""
    cat = default_catalogue()
    found = {}
    for name in ("os/windows/XP", "os/windows/server-2003-5-2"):
        for program in installed_names(name):
            ident = identify_software_name(program, cat)
            if ident is not None:
                found[(ident.product, ident.version)] = (ident.cycles, lifecycle(ident, cat, DAY).state)
    assert found == {
        ("internet-explorer", "8"): (("8",), Lifecycle.END_OF_LIFE),
        ("dotnetfx", "1.1"): ((), Lifecycle.UNKNOWN),  # older than the catalogue: unknown, not "fine"
        ("dotnetfx", "2.0"): ((), Lifecycle.UNKNOWN),
        ("dotnetfx", "3.5 SP1"): (("3.5-sp1",), Lifecycle.SUPPORTED),  # supported to 2029: never called EOL
        ("dotnetfx", "4.0"): (("4.0",), Lifecycle.END_OF_LIFE),
        ("firefox", "19"): ((), Lifecycle.UNKNOWN),
        ("python", "2.4"): ((), Lifecycle.UNKNOWN),
        ("python", "2.6"): (("2.6",), Lifecycle.END_OF_LIFE),
        ("python", "2.7"): (("2.7",), Lifecycle.END_OF_LIFE),
        ("office", "2007"): (("2007",), Lifecycle.END_OF_LIFE),
    }


@pytest.mark.parametrize(
    "program",
    ["Security Update for Windows Internet Explorer 8 (KB2497640)", "Python 2.7 py2exe-0.6.9",
     "Microsoft Office Word MUI (Chinese (Simplified)) 2007", "Microsoft .NET Framework 2.0 Language Pack - CHS"],
)  # fmt: skip
def test_updates_and_add_ons_are_not_the_product(program: str) -> None:
    assert identify_software_name(program, default_catalogue()) is None


def test_sql_server_by_label() -> None:
    found = identify_software_name("Microsoft SQL Server 2008 R2", default_catalogue())
    assert found is not None and found.product == "mssqlserver" and len(found.cycles) == 1
    assert lifecycle(found, default_catalogue(), DAY).state == Lifecycle.END_OF_LIFE


def test_conflicting_os_evidence_is_kept_and_agreeing_evidence_is_not_a_conflict() -> None:
    from rules.facts import Identifier, _choose
    from rules.identify import Identification
    from rules.kev import default_kev

    cat = default_catalogue()
    ident = Identifier(cat, default_kev(), DAY)
    descr, oid = system_of("os/windows/XP")
    xp = ident.item("os", identify_sysdescr(descr, oid, cat) or pytest.fail("XP not identified"), "sysDescr")
    fingerprint = ident.item(
        "os", Identification("windows-server", ("2008-r2-sp1",), None, "medium", "nmap os", "cpe:/o:x"), "nmap"
    )
    best, conflicts = _choose([fingerprint, xp])
    assert best is xp  # the device's own words beat a fingerprint guess
    assert [(c["product"], c["cycles"], c["method"]) for c in conflicts] == [
        ("windows-server", ["2008-r2-sp1"], "nmap os")
    ]
    el7 = ident.item("os", Identification("rhel", ("rhel/7", "centos/7"), None, "medium", "sysDescr", "x"), "sysDescr")
    centos = ident.item("os", Identification("centos", ("7",), "7", "high", "release package", "y"), "hrSWInstalled")
    assert _choose([el7, centos]) == (centos, [])
