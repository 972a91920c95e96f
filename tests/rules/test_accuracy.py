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
from tests.conftest import SQLITE_ONLY, assets_json, run_posture
from tests.rules.test_identify import system_of

DAY = date(2026, 11, 23)
U = Lifecycle.UNKNOWN
# recording -> (product, cycles, lifecycle state on DAY). Cycles () = family known, release not: unknown.
EXPECTED: dict[str, tuple[str, tuple[str, ...], Lifecycle]] = {
    # Build 2600 is every XP service pack's; the sysDescr names none: one of them (all ended), as for 2003.
    "os/windows/XP": ("windows", ("5-sp3", "5-sp2", "5-sp1", "5"), Lifecycle.END_OF_LIFE),
    "os/windows/server-2003-5-2": ("windows-server", ("2003-sp2", "2003-sp1", "2003"), Lifecycle.END_OF_LIFE),
    # An .el6/.el7 kernel is RHEL or a rebuild: one of them. All EL6 ones have ended; for EL7 they differ
    # (RHEL 7 in paid ELS, CentOS 7 ended, Oracle Linux 7 in extended support): unknown, not a guess.
    "os/linux/unknown-001": ("rhel", ("rhel/6", "centos/6", "oracle-linux/6"), Lifecycle.END_OF_LIFE),
    "os/linux/unknown-006": ("rhel", ("rhel/7", "centos/7", "oracle-linux/7"), Lifecycle.UNKNOWN),
    "network/appliance/tripplite-poweralert": ("ubuntu", ("16.04",), Lifecycle.END_OF_LIFE),
    # rules/data/lifecycle: Greenbone's 12.2 mainline date (every 12.2 train and these platforms have ended
    # too; the identification says the date is the mainline's, at medium confidence, since these run the
    # 12.2(x)SE switch train) and Juniper's Junos table as two scanner vendors transcribe it.
    "network/switch/cisco-c3560": ("cisco-ios", ("12.2",), Lifecycle.END_OF_LIFE),
    "network/switch/cisco-c3750": ("cisco-ios", ("12.2",), Lifecycle.END_OF_LIFE),
    "network/router/juniper-mx960-12-3r6-6": ("junos", ("12.3",), Lifecycle.END_OF_LIFE),
    "network/router/juniper-mx960-13-3r9-13": ("junos", ("13.3",), Lifecycle.END_OF_LIFE),
    "network/router/juniper-mx960-16-1r6-7-a": ("junos", ("16.1",), Lifecycle.END_OF_LIFE),
    "network/router/juniper-mx960-16-1r6-7-b": ("junos", ("16.1",), Lifecycle.END_OF_LIFE),
    # NetApp's 7-Mode table: 8.2.x 7-Mode ended ("self support"), the day not published.
    "storage/netapp-fas3270": ("netapp-ontap-7mode", ("8.2-7mode",), Lifecycle.END_OF_LIFE),
    "storage/netapp-ontap-8-2-3": ("netapp-ontap-7mode", ("8.2-7mode",), Lifecycle.END_OF_LIFE),
    # The fingerprint database (rules/fingerprints/sysdescr). Every one is unknown, each for a stated reason:
    # - the catalogue has no lifecycle data for the family (APC, Eaton, Vertiv, Hikvision, Hanwha, H3C and
    #   Huawei VRP, ArubaOS, Ruckus, ZTE, D-Link, HPE ProCurve and Onboard Administrator, Isilon, AIX on a
    #   machine that does not say its release, ...: "vendor support not published here");
    # - the family is catalogued but not the release the device runs: Arista EOS 4.20 (the table has 4.26),
    #   NX-OS 5.2/6.0 (its table starts at 9.2; the stated release is kept as `<release>-nxos`);
    # - the device names the family but not its release: Brocade Fabric OS, Cisco IOS's long name alone,
    #   FortiOS, PAN-OS. Cycles () = family (and model) named, release not.
    "UPS/apc-7902b": ("apc-nmc", ("6.7",), U),  # PF:v6.7.2, MN:AP7902B
    "UPS/apc-8641": ("apc-nmc", ("6.7",), U),
    "UPS/apc-8932": ("apc-nmc", ("6.7",), U),
    "UPS/eastpower-istars-swv053": ("eastpower-istars", (), U),  # iStars_SWV053
    "UPS/eaton-93e-80": ("eaton-ups", (), U),  # EATON 93E 80
    "UPS/eaton-9px-partial": ("eaton-ups", (), U),  # no sysDescr; sysObjectID 705.1 (MGE UPS MIB)
    "UPS/emerson-network-power": ("vertiv-ups-agent", (), U),
    "UPS/ingrasys-power-switch": ("webpower-pro", (), U),  # WebPower Pro II Mini Card v5.27
    "UPS/phoenixtec-power": ("phoenixtec-ups", (), U),  # "My Kert UPS", sysObjectID 935.1.1.1
    "UPS/vertiv-power": ("vertiv-liebert-agent", (), U),  # "Uninitialized", sysObjectID 476.1.42
    "bmc/hp-onboard-administrator": ("hpe-onboard-administrator", (), U),
    "camera/hikvision-network-video-recorder": ("hikvision", (), U),
    "camera/samsung-ipolis": ("hanwha-wisenet", (), U),
    "camera/wds-ips-1022": ("wrd-ipsensor", (), U),
    "cloud/arista-dcs-7150s-52-cl": ("arista-eos", ("4.20",), U),  # EOS 4.20.5F on a DCS-7150S-52-CL
    "iot/geist-temperature-sensor": ("geist-monitor", (), U),  # owner's text; sysObjectID 21239
    "network/appliance/cisco-controller": ("cisco-aireos", (), U),
    "network/appliance/cisco-ucs-6100": ("cisco-nx-os", ("5.2-nxos",), U),  # Version 5.2(3)N2(2.28g)
    "network/appliance/cisco-ucs-6100-k9": ("cisco-nx-os", ("5.2-nxos",), U),
    "network/appliance/cisco-unknown-01": ("cisco-ios", (), U),  # the long name alone, no release
    "network/appliance/empirical-hw-mgmt": ("huawei-ibmc", (), U),  # sysObjectID 2011.2.235
    "network/appliance/huawei-ism": ("huawei-oceanstor", (), U),  # "ISM SNMP Agent", 2011.2.91
    "network/appliance/infosec-nsae-6500": ("infosec-nsae", (), U),  # Rel.NSAE.8.4.0.8
    "network/appliance/meru-networks-controller": ("meru-controller", (), U),
    "network/appliance/nsfocus-ads": ("nsfocus-ads", (), U),
    "network/appliance/vss-monitoring-optimizer-2400-span": ("vss-optimizer", (), U),
    "network/firewall/clavister-amaranten": ("clavister-cos", ("8.90",), U),  # Amaranten Firewall 8.90.07.01
    "network/firewall/fortinet-xcu": ("fortios", (), U),  # host name only; FortiGate model OID 12356.101.1
    "network/firewall/netentsec-ngfw": ("netentsec-ngfw", (), U),
    "network/firewall/nsfocus-osms": ("nsfocus-osms", (), U),
    "network/firewall/paloalto-pa-5000": ("panos", (), U),  # PA-5000, PAN-OS release not stated
    "network/firewall/topsec-ngfw4000-uf": ("topsec-ngfw", (), U),
    "network/firewall/venus-unknown-001": ("venustech-vsos", (), U),  # "FIREWALL", sysObjectID 15227
    "network/firewall/venus-vsos-v0600r0705b20180507": ("venustech-vsos", (), U),
    "network/firewall/venus-vsos-v070060600": ("venustech-vsos", (), U),
    "network/router/brocade-unknown-001": ("brocade-fos", (), U),  # an address as sysDescr; SW-MIB OID
    "network/router/cisco-unmarked-0": ("cisco-ios", (), U),
    "network/router/huawei-acu2": ("huawei-vrp", ("V200R007C20",), U),  # VRP 5.170 (ACU2 V200R007C20SPC200)
    "network/router/huawei-s5720": ("huawei-vrp", ("V200R007C00",), U),
    "network/router/ruijie-n18010": ("ruijie-rgos", (), U),
    "network/router/vyatta-unknown": ("vyatta", (), U),  # "Vyatta unknown-version"
    "network/switch/bdcom-s5612": ("bdcom-os", (), U),
    "network/switch/brocade-ds-5100b": ("brocade-fos", (), U),
    "network/switch/brocade-fiber-channel": ("brocade-fos", (), U),
    "network/switch/brocade-icx6430-24": ("ruckus-fastiron", ("08.0.30",), U),  # IronWare 08.0.30tT311
    "network/switch/cisco-n5000": ("cisco-nx-os", ("6.0-nxos",), U),  # Version 6.0(2)N2(3)
    "network/switch/cisco-n5000-uk9": ("cisco-nx-os", ("6.0-nxos",), U),
    "network/switch/cts-media-converter": ("cts-media-converter", (), U),
    "network/switch/dcrs-5980-28t-dc": ("dcn-switch", (), U),
    "network/switch/dcs-3726c": ("dcn-switch", (), U),
    "network/switch/dlink-des3038": ("dlink-switch", (), U),  # DES-3028
    "network/switch/dlink-des3200": ("dlink-switch", (), U),
    "network/switch/dptech-dpx800-a5": ("dptech-conplat", (), U),
    "network/switch/h3c-comware-7-1-075": ("h3c-comware", ("7.1",), U),  # Software Version 7.1.075
    "network/switch/h3c-comware-lsq1wcmd0": ("h3c-comware", (), U),  # Release 2509P61 only
    "network/switch/h3c-comware-lsq1wcmd0-2509p61": ("h3c-comware", (), U),
    "network/switch/h3c-e528-1": ("h3c-comware", ("5.20",), U),  # Software Version 5.20, Release 1513P62
    "network/switch/h3c-e528-2": ("h3c-comware", ("5.20",), U),
    "network/switch/h3c-wx6103": ("h3c-comware", (), U),
    "network/switch/hpe-procurve-516733-b21": ("hpe-procurve", ("Z.14",), U),  # revision Z.14.31
    "network/switch/huawei-s12704": ("huawei-vrp", (), U),  # "S12704", Huawei sysObjectID
    "network/switch/maipu-sm4200-16gef8ge-ac": ("maipu-switch", (), U),
    "network/switch/metel-poe-box": ("metel-poe-switch", (), U),
    "network/switch/ruijie-s5750-24gt12sfp": ("ruijie-rgos", (), U),
    "network/switch/zte-zrx10": ("zte-zxros", (), U),
    "network/switch/zte-zxr10-5250": ("zte-zxros", (), U),
    "network/wifi/aruba-7010": ("arubaos", ("8.3",), U),  # ArubaOS (MODEL: Aruba7010), Version 8.3.0.0
    "network/wifi/aruba-7020": ("arubaos", ("8.3",), U),  # (its sysDescr says Aruba7010 too)
    "network/wifi/aruba-7210": ("arubaos", ("6.5",), U),
    "network/wifi/juniper-wlc2800": ("juniper-wlc", ("9.0",), U),  # WLC2800 9.0.3.5 REL
    "network/wifi/ruckus-smartcell-gateway": ("ruckus-smartzone", (), U),
    "network/wifi/ruijie-m18000": ("ruijie-rgos", (), U),
    "network/wifi/sangfor-wac": ("sangfor-wac", (), U),  # "Linux Wac", Sangfor sysObjectID
    "network/wifi/sangfor-wac-2": ("sangfor-wac", (), U),
    "network/wifi/ubiquiti-m5": ("ubiquiti-airos", (), U),  # a kernel line; UBNT airMAX OID 41112.1.4
    "os/linux/ibm-power-chrp": ("ibm-aix", (), U),  # "IBM PowerPC CHRP Computer", AIX release cut off
    "storage/isilon-onefs": ("isilon-onefs", ("7.2",), U),  # OneFS v7.2.1.0
}
# The version each device states, where it states one (written from the recordings' own strings).
STATED_VERSIONS = {
    "UPS/apc-7902b": "6.7.2", "UPS/eastpower-istars-swv053": "053", "UPS/ingrasys-power-switch": "5.27",
    "cloud/arista-dcs-7150s-52-cl": "4.20.5F", "network/appliance/cisco-ucs-6100": "5.2(3)N2(2.28g)",
    "network/appliance/infosec-nsae-6500": "8.4.0.8", "network/firewall/clavister-amaranten": "8.90.07.01",
    "network/firewall/topsec-ngfw4000-uf": "V3.2073N.2060N_NGFW.1",
    "network/firewall/venus-vsos-v0600r0705b20180507": "V0600R0705B20180507",
    "network/firewall/venus-vsos-v070060600": "V0700R0600", "network/router/huawei-acu2": "V200R007C20SPC200",
    "network/switch/bdcom-s5612": "2.1.1B", "network/switch/brocade-icx6430-24": "08.0.30tT311",
    "network/switch/cisco-c3560": "12.2(55)SE3", "network/switch/cisco-n5000": "6.0(2)N2(3)",
    "network/switch/dcrs-5980-28t-dc": "7.0.3.1", "network/switch/dptech-dpx800-a5": "V100R004B01D007P02PATCH03",
    "network/switch/h3c-comware-7-1-075": "7.1.075 Release 7751P01", "network/switch/h3c-wx6103": "Release 2509P33",
    "network/switch/h3c-e528-1": "5.20 Release 1513P62", "network/switch/hpe-procurve-516733-b21": "Z.14.31",
    "network/switch/maipu-sm4200-16gef8ge-ac": "6.0.222.39", "network/switch/metel-poe-box": "60.7050",
    "network/switch/zte-zrx10": "V1.01.10.B19P06", "network/switch/zte-zxr10-5250": "V2.05.11B19",
    "network/wifi/aruba-7210": "6.5.1.6", "network/wifi/juniper-wlc2800": "9.0.3.5",
    "network/router/juniper-mx960-13-3r9-13": "13.3R9.13", "storage/isilon-onefs": "7.2.1.0",
    "storage/netapp-fas3270": "8.2.3",
}  # fmt: skip
# Over SNMP posture reads the installed packages as well: this machine's `centos-release-7-3.1611` package
# says CentOS 7, which the kernel alone could not (CentOS 7 ended on 2024-06-30, with no paid extension).
# Likewise its `redhat-release-server-6Server` package says RHEL 6.
OVER_SNMP = {
    "os/linux/unknown-006": ("centos", ("7",), Lifecycle.END_OF_LIFE),
    "os/linux/unknown-001": ("rhel", ("6",), Lifecycle.END_OF_LIFE),
}
# Only a Linux kernel named in a sysDescr (appliances, cameras, unnamed distributions): posture judges the
# kernel's branch (rules/data/lifecycle/linux-legacy.json and endoflife.date), with low confidence. All of
# these run branches whose support ended.
KERNEL_ONLY = {
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


def test_every_recording_is_identified_correctly_or_counted_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    """Every recording: the reviewed product and cycles, the version it states, nothing supported called
    end-of-life, and the rest counted unknown. Prints identified / right / unknown per category."""
    catalogue = default_catalogue()
    recordings = all_recordings()
    assert len(recordings) == 116  # snmpsim-data 1.0.1: if it grows, read the new ones and extend EXPECTED
    identified: list[str] = []
    dated: list[str] = []  # a lifecycle state other than unknown
    correct: list[str] = []
    family_only: list[str] = []
    unknown: list[str] = []
    per_category: dict[str, list[int]] = {}
    for name in recordings:
        descr, object_id = system_of(name)
        ident = identify_sysdescr(descr, object_id, catalogue)
        tally = per_category.setdefault(name.split("/")[0], [0, 0, 0])
        if ident is None:
            unknown.append(name)
            tally[2] += 1
            continue
        tally[0] += 1
        if name in KERNEL_ONLY:
            assert ident.product == "linux" and ident.confidence == "low", (name, ident)
            assert ident.note and ident.note.startswith("judged by its Linux kernel"), (name, ident)  # the reason
            assert ident.version and ident.cycles and ident.version.startswith(ident.cycles[0]), (name, ident)
            assert lifecycle(ident, catalogue, DAY).state is Lifecycle.END_OF_LIFE
            identified.append(name)
            dated.append(name)
            correct.append(name)
            tally[1] += 1
            continue
        assert name in EXPECTED, f"{name} identified as {ident.product} {ident.cycles}: not in the reviewed table"
        (identified if ident.cycles else family_only).append(name)
        product, cycles, state = EXPECTED[name]
        assert (ident.product, ident.cycles) == (product, cycles), (name, ident)
        assert ident.version == STATED_VERSIONS.get(name, ident.version), (name, ident.version)
        got = lifecycle(ident, catalogue, DAY).state
        assert got is state, (name, got)
        if got is not Lifecycle.UNKNOWN:
            dated.append(name)
        correct.append(name)
        tally[1] += 1
    assert set(identified) | set(family_only) == set(EXPECTED) | KERNEL_ONLY  # nothing reviewed lost
    with capsys.disabled():
        print("\ncategory        identified  right  unknown")
        for category, (found, right, missing) in sorted(per_category.items()):
            print(f"{category:15} {found:10} {right:6} {missing:8}")
        print(f"dated verdicts: {len(dated)}")
    # 105 of 116 named (49 with a release, 56 the family only), every one right; 11 say nothing usable.
    assert (len(identified), len(correct), len(family_only), len(unknown)) == (49, 105, 56, 11)
    # 27 with a lifecycle verdict (all end-of-life: Windows, RHEL/CentOS 6, Ubuntu 16.04, Cisco IOS 12.2,
    # Junos, NetApp 7-Mode and 15 bare kernels); nothing supported among them.
    assert len(dated) == 27


@pytest.fixture(scope="module")
def demo_sims() -> Iterator[SnmpSimLab]:
    with SnmpSimLab(DEMO_RECORDINGS, base="127.0.9.") as sims:
        yield sims


# SQLite only: two real scans (40 s) whose rows PostgreSQL stores alike (test_store_both.py: the same scan,
# the same machines matched); the verdicts are read from those rows by the same Python on either store.
@SQLITE_ONLY
def test_end_to_end_over_snmp_and_nmap(demo_sims: SnmpSimLab, lab: Lab, store_db: Path | str) -> None:
    """The same verdicts through a real SNMP scan of the demo recordings and a real nmap scan of the lab's
    Debian daemons, in the asset view and in the findings: nothing supported is called end-of-life."""
    db = store_db
    snmp = run_posture("snmp", *demo_sims.devices, "--snmp-timeout", "5", db=db)
    assert snmp.returncode == 0, snmp.stderr
    scan = run_posture("scan", *lab.targets, "--ports", lab.ports_spec, "--no-dns", db=db)
    assert scan.returncode == 0, scan.stderr
    evaluated = run_posture("evaluate", db=db)  # identifies every asset once; the asset view reads that
    assert evaluated.returncode == 0, evaluated.stderr
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
