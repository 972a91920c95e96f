"""Identification accuracy over every snmpsim-data recording and over the real lab daemons.

EXPECTED was written by reading each recording's sysDescr and sysObjectID (a person, not the code):
every recording posture identifies must be listed here with the right product and cycle, every listed one
must still be identified, and everything else must come out as unknown, never as a guess. The lifecycle
states are the catalogue's dates on DAY, checked by hand against the vendors' published dates for these
releases (Windows XP and Server 2003 ended 2014 and 2015, RHEL 6 ELS 2024, RHEL 7 is in paid ELS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from rules.catalogue import Lifecycle, default_catalogue
from rules.identify import identify_sysdescr, lifecycle
from scanner.lab import DEMO_RECORDINGS, Lab, SnmpSimLab, snmpsim_data_dir
from tests.conftest import assets_json, run_posture
from tests.rules.test_identify import system_of

DAY = date(2026, 11, 23)
# recording -> (product, cycles, lifecycle state on DAY). Cycles () = family known, release not: unknown.
EXPECTED: dict[str, tuple[str, tuple[str, ...], Lifecycle]] = {
    "os/windows/XP": ("windows", ("5-sp3",), Lifecycle.END_OF_LIFE),
    "os/windows/server-2003-5-2": ("windows-server", ("2003-sp2", "2003-sp1", "2003"), Lifecycle.END_OF_LIFE),
    # An .el6/.el7 kernel is RHEL or a rebuild: one of them. All EL6 ones have ended; for EL7 they differ
    # (RHEL 7 in paid ELS, CentOS 7 ended, Oracle Linux 7 in extended support): unknown, not a guess.
    "os/linux/unknown-001": ("rhel", ("rhel/6", "centos/6", "oracle-linux/6"), Lifecycle.END_OF_LIFE),
    "os/linux/unknown-006": ("rhel", ("rhel/7", "centos/7", "oracle-linux/7"), Lifecycle.UNKNOWN),
    "network/appliance/tripplite-poweralert": ("ubuntu", ("16.04",), Lifecycle.END_OF_LIFE),
    "network/switch/cisco-c3560": ("cisco-ios", ("12.2",), Lifecycle.UNKNOWN),  # no sourced dates for classic IOS
    "network/switch/cisco-c3750": ("cisco-ios", ("12.2",), Lifecycle.UNKNOWN),
    "network/router/juniper-mx960-12-3r6-6": ("junos", ("12.3",), Lifecycle.UNKNOWN),
    "network/router/juniper-mx960-13-3r9-13": ("junos", ("13.3",), Lifecycle.UNKNOWN),
    "network/router/juniper-mx960-16-1r6-7-a": ("junos", ("16.1",), Lifecycle.UNKNOWN),
    "network/router/juniper-mx960-16-1r6-7-b": ("junos", ("16.1",), Lifecycle.UNKNOWN),
    "storage/netapp-fas3270": ("netapp-ontap-7-mode", ("8.2.3",), Lifecycle.UNKNOWN),
    "storage/netapp-ontap-8-2-3": ("netapp-ontap-7-mode", ("8.2.3",), Lifecycle.UNKNOWN),
}
# Over SNMP posture reads the installed packages as well: this machine's `centos-release-7-3.1611` package
# says CentOS 7, which the kernel alone could not (CentOS 7 ended on 2024-06-30, with no paid extension).
# Likewise its `redhat-release-server-6Server` package says RHEL 6.
OVER_SNMP = {
    "os/linux/unknown-006": ("centos", ("7",), Lifecycle.END_OF_LIFE),
    "os/linux/unknown-001": ("rhel", ("6",), Lifecycle.END_OF_LIFE),
}
# Linux kernels named in a sysDescr: the family is right, but a kernel is no OS release (appliances,
# cameras): posture names the family and leaves the lifecycle unknown.
LINUX_FAMILY_ONLY = {
    "UPS/huawei-gse200m", "camera/semac-ipcam-500", "network/appliance/ucdavis-sic",
    "network/firewall/sangfor-ad1800-fp2", "network/firewall/sangfor-vad1", "os/linux/ibm-x3550-m3",
    "os/linux/sangfor", "os/linux/slackware", "os/linux/unknown-002", "os/linux/unknown-003",
    "os/linux/unknown-004", "os/linux/unknown-005", "os/linux/unknown-007", "os/linux/unknown-008",
    "os/linux/zte-embsys-cgel",
}  # fmt: skip


def all_recordings() -> list[str]:
    root = snmpsim_data_dir()
    names = [str(p.relative_to(root)).removesuffix(".bz2").removesuffix(".snmprec") for p in root.rglob("*.snmprec*")]
    return sorted(names)


def test_every_recording_is_identified_correctly_or_counted_unknown() -> None:
    catalogue = default_catalogue()
    recordings = all_recordings()
    assert len(recordings) == 116  # snmpsim-data 1.0.1: if it grows, read the new ones and extend EXPECTED
    identified, correct, family_only, unknown = [], [], [], []
    for name in recordings:
        descr, object_id = system_of(name)
        ident = identify_sysdescr(descr, object_id, catalogue)
        if ident is None:
            unknown.append(name)
            continue
        if not ident.cycles:
            family_only.append(name)
            assert name in LINUX_FAMILY_ONLY and ident.product == "linux", (name, ident)
            assert lifecycle(ident, catalogue, DAY).state is Lifecycle.UNKNOWN
            continue
        identified.append(name)
        assert name in EXPECTED, f"{name} identified as {ident.product} {ident.cycles}: not in the reviewed table"
        product, cycles, state = EXPECTED[name]
        assert (ident.product, ident.cycles) == (product, cycles), name
        got = lifecycle(ident, catalogue, DAY).state
        assert got is state, (name, got)
        correct.append(name)
    assert set(identified) == set(EXPECTED)  # nothing reviewed has stopped being identified
    assert set(family_only) == LINUX_FAMILY_ONLY
    # The figures of the closing note: 13 identified, 13 correct, 15 family only, 88 unknown.
    assert (len(identified), len(correct), len(family_only), len(unknown)) == (13, 13, 15, 88)


@pytest.fixture(scope="module")
def demo_sims() -> Iterator[SnmpSimLab]:
    with SnmpSimLab(DEMO_RECORDINGS, base="127.0.9.") as sims:
        yield sims


def test_end_to_end_over_snmp_and_nmap(demo_sims: SnmpSimLab, lab: Lab, tmp_path: Path) -> None:
    """The same verdicts through a real SNMP scan of the demo recordings and a real nmap scan of the lab's
    Debian daemons, in the asset view and in the findings: nothing supported is called end-of-life."""
    db = tmp_path / "inventory.db"
    snmp = run_posture("snmp", *demo_sims.devices, "--snmp-timeout", "5", db=db)
    assert snmp.returncode == 0, snmp.stderr
    scan = run_posture("scan", *lab.targets, "--ports", lab.ports_spec, "--no-dns", db=db)
    assert scan.returncode == 0, scan.stderr
    assets = {a["addresses"][0]: a for a in assets_json(db)}
    for address, name in demo_sims.devices.items():
        os_ = assets[address]["os"] or {}
        if name in EXPECTED:
            product, cycles, state = {**EXPECTED, **OVER_SNMP}[name]
            assert os_["product"] == product and tuple(os_["cycles"]) == cycles, (name, os_)
            assert os_["lifecycle_state"] == str(state), (name, os_)  # holds until RHEL 7's ELS ends in 2029
        else:
            assert os_.get("lifecycle_state") in (None, "unknown"), (name, os_)
    ssh, web, ftp = (assets[a] for a in lab.targets)
    # OpenSSH's banner names its Debian 12 build: the host is Debian 12, supported (LTS) until 2028-06-30.
    assert ssh["os"]["product"] == "debian" and ssh["os"]["cycle"] == "12"
    assert ssh["os"]["lifecycle_state"] in ("supported", "security-only")
    # nginx 1.22.1 is end of life upstream but is Debian 12's patched package: not a verdict of end of life.
    nginx = next(s for s in web["software"] if s["product"] == "nginx")
    assert nginx["cycle"] == "1.22" and nginx["lifecycle_state"] == "unknown" and "debian 12" in nginx["packaged_by"]
    assert ftp["os"] is None or ftp["os"]["lifecycle_state"] != "end-of-life"

    evaluated = run_posture("evaluate", db=db)
    assert evaluated.returncode == 0, evaluated.stderr
    findings = json.loads(run_posture("findings", "--format", "json", db=db).stdout)
    eol = {(f["address"], f["product"]) for f in findings if f["lifecycle_state"] == "end-of-life"}
    lab_addresses = set(lab.targets)
    assert not {a for a, _ in eol} & lab_addresses  # nothing on the supported Debian hosts is called end-of-life
    sim_eol = {demo_sims.devices[a] for a, _ in eol if a in demo_sims.devices}
    judged = {**EXPECTED, **OVER_SNMP}
    assert sim_eol == {n for n, (_, _, s) in judged.items() if s is Lifecycle.END_OF_LIFE and n in DEMO_RECORDINGS}
    # The kernel's "one of RHEL 7, CentOS 7, Oracle Linux 7" agrees with the release package: no conflict.
    centos = next(a for a, n in demo_sims.devices.items() if n == "os/linux/unknown-006")
    assert assets[centos]["os"]["method"] == "release package" and assets[centos]["os"]["conflicts"] == []
