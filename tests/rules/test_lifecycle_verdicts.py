"""The demo lab's network, storage and OT devices: each verdict with the source its dates rest on (issue 13).

The recordings are real devices (snmpsim-data); the expected rows were read by a person from the lifecycle
tables (rules/data/lifecycle/*.json), and the sources are compared with those files' own rows, so a verdict
can never cite a source other than the row that dates it. Devices the catalogue has no data for are named
(vendor, product, the firmware they state) and stay unknown: never safe, never guessed.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rules.catalogue import LIFECYCLE_DIR, Lifecycle, default_catalogue
from rules.facts import Identifier
from rules.identify import identify_fingerprint, identify_sysdescr, lifecycle, lifecycle_sources
from rules.kev import default_kev
from tests.rules.test_identify import system_of

DAY = date(2026, 11, 23)
# recording -> (catalogue product, cycle, the table file that dates it, the version the device states)
DATED = {
    "network/switch/cisco-c3560": ("cisco-ios", "12.2", "cisco-ios.json", "12.2(55)SE3"),
    "network/switch/cisco-c3750": ("cisco-ios", "12.2", "cisco-ios.json", "12.2(50)SE5"),
    "network/router/juniper-mx960-12-3r6-6": ("junos", "12.3", "junos.json", "12.3R6.6"),
    "network/router/juniper-mx960-13-3r9-13": ("junos", "13.3", "junos.json", "13.3R9.13"),
    "storage/netapp-fas3270": ("netapp-ontap-7mode", "8.2-7mode", "netapp-ontap-7mode.json", "8.2.3"),
}


def table_row(file: str, cycle: str) -> dict[str, Any]:
    """The row as the lifecycle table writes it (read here, not through the catalogue's loader)."""
    record = json.loads((Path(LIFECYCLE_DIR) / file).read_text(encoding="utf-8"))
    return next(r for r in record["releases"] if r["releaseCycle"] == cycle)


@pytest.mark.parametrize("name", sorted(DATED))
def test_end_of_life_with_the_rows_source(name: str) -> None:
    product, cycle, file, version = DATED[name]
    catalogue = default_catalogue()
    ident = identify_sysdescr(*system_of(name), catalogue)
    assert ident is not None and (ident.product, ident.cycles, ident.version) == (product, (cycle,), version)
    assert lifecycle(ident, catalogue, DAY).state is Lifecycle.END_OF_LIFE
    row = table_row(file, cycle)
    sources = lifecycle_sources(ident, catalogue)
    assert [(s["product"], s["cycle"], s["source"], s.get("quote")) for s in sources] == [
        (product, cycle, row["source"], row["quote"])
    ]
    assert sources[0]["kind"] == "third-party" and sources[0]["detail"] == row["sourceKind"]
    item = Identifier(catalogue, default_kev(), DAY).item("os", ident, "sysDescr")  # what reports and JSON carry
    assert item["lifecycle_state"] == "end-of-life" and item["lifecycle_sources"] == sources


@pytest.mark.parametrize("name", ["network/switch/cisco-c3560", "network/switch/cisco-c3750"])
def test_ios_switch_trains_say_the_date_is_the_mainlines(name: str) -> None:
    """Greenbone's 12.2 row is the *mainline* date and its note says not to apply it to 12.2(x)SE. Every 12.2
    train and every Catalyst 3560/3750 has long passed its last date of support, so end-of-life stands; but
    the identification says whose date it is (confidence medium, the evidence names the row) and the source
    carries the row's warning, so nobody reads 2007-03-19 as the SE train's end."""
    catalogue = default_catalogue()
    descr, object_id = system_of(name)
    ident = identify_sysdescr(descr, object_id, catalogue)
    assert ident is not None and ident.confidence == "medium"
    note, _, words = ident.evidence.partition(": ")
    assert note == (f"end of support dated by the row IOS 12.2 (mainline, per Greenbone); the {ident.version} "
                    "train's own date is not in the catalogue")  # fmt: skip
    assert descr.startswith(words.removesuffix("…"))  # then the device's own words
    assert "12.2(x)SE" in lifecycle_sources(ident, catalogue)[0]["note"]


def test_a_mainline_release_is_the_rows_own_and_nmaps_bare_release_is_not() -> None:
    """A 12.2 mainline release (a rebuild letter inside the parentheses, no train after them) is what the row
    dates: no caveat. nmap's "Cisco IOS 12.2" names no train: the date is said to be the mainline's."""
    catalogue = default_catalogue()
    # `show version` of an MC3810 (issmonitor/NG-NetMS Core/NGREADY/lib/NGNMS/Plugins/Core/Cisco/test/fixtures/
    # MC3810/getHardware.txt): its first lines are what the device's sysDescr carries.
    descr = ("Cisco Internetwork Operating System Software \nIOS (tm) MC3810 Software (MC3810-I5K9S-M), "
             "Version 12.2(29b), RELEASE SOFTWARE (fc1)")  # fmt: skip
    ident = identify_sysdescr(descr, None, catalogue)
    assert ident is not None and (ident.cycles, ident.version) == (("12.2",), "12.2(29b)")
    assert ident.evidence == descr and ident.confidence == "high"
    assert lifecycle(ident, catalogue, DAY).state is Lifecycle.END_OF_LIFE
    nmap = identify_fingerprint("osmatch", "Cisco IOS 12.2", None, catalogue)  # nmap-os-db's own name
    assert nmap is not None and nmap.cycles == ("12.2",) and nmap.confidence == "medium"
    assert nmap.evidence.startswith("end of support dated by the row IOS 12.2 (mainline, per Greenbone); the "
                                    "device states no train")  # fmt: skip


@pytest.mark.parametrize(
    ("name", "vendor", "product", "version"),
    [
        ("UPS/apc-8932", "APC (Schneider Electric)", "apc-nmc", "6.7.2"),  # PF:v6.7.2
        # The recorder's sysDescr is "Hikvision company products" and its MIB states no firmware: not invented.
        ("camera/hikvision-network-video-recorder", "Hikvision", "hikvision", None),
    ],
)
def test_named_but_undated_devices_stay_unknown(name: str, vendor: str, product: str, version: str | None) -> None:
    catalogue = default_catalogue()
    ident = identify_sysdescr(*system_of(name), catalogue)
    assert ident is not None and (ident.vendor, ident.product, ident.version) == (vendor, product, version)
    assert catalogue.product(product) is None  # no lifecycle data for the family
    assert lifecycle(ident, catalogue, DAY).state is Lifecycle.UNKNOWN and lifecycle_sources(ident, catalogue) == []
