"""Hardware lifecycle (issue 13 item 3): the model a device states -> its family -> end of sale and last
date of support, and `protect.eol-hardware`, apart from the firmware's finding.

Models are real: the snmpsim-data recordings' own ENTITY-MIB chassis rows (Catalyst 3560G WS-C3560G-48TS-E,
3750G WS-C3750G-12S-S, Nexus N5K-C5548UP, PA-5050, Arista DCS-7150S-52-CL, AIR-CT5508-K9), and the PIDs
and SKUs the catalogue's own rows quote (WS-C3560G-48PS-S from Cisco's EoX record for EOL8044,
WS-C3750X-48PF-S from the EOL10623 record, WS-C3560-48PS-S, Juniper's EX4200 SKU lists).
"""

from __future__ import annotations

import bz2
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rules.catalogue import Lifecycle, default_catalogue
from rules.engine import RuleError, parse_pack
from rules.facts import Identifier
from rules.hardware import MAX_MODEL, chassis, clean_model, identify_hardware
from rules.identify import Identification, lifecycle
from rules.kev import default_kev
from scanner.lab import SnmpSimLab, recording_path
from tests.conftest import assets_json, execute, run_posture
from tests.rules.test_identify import DAY

C3560 = "network/switch/cisco-c3560"  # chassis WS-C3560G-48TS-E, Cisco IOS 12.2(55)SE3
C3750 = "network/switch/cisco-c3750"  # chassis WS-C3750G-12S-S, Cisco IOS 12.2(50)SE5
ENT_MODEL = "1.3.6.1.2.1.47.1.1.1.1.13."  # entPhysicalModelName


def ident() -> Identifier:
    return Identifier(default_catalogue(), default_kev(), DAY)


@pytest.mark.parametrize(
    ("model", "cycle", "state", "end_of_support", "end_of_sale"),
    [
        ("WS-C3560G-48PS-S", "catalyst-3560g-3750g", Lifecycle.END_OF_LIFE, "2018-01-31", "2013-01-30"),
        ("WS-C3750X-48PF-S", "catalyst-3560x-3750x", Lifecycle.END_OF_LIFE, "2021-10-31", "2016-10-30"),
        ("WS-C3560-48PS-S", "catalyst-3560-3750-10-100", Lifecycle.END_OF_LIFE, "2015-07-31", "2010-07-05"),
        ("EX4200-48PX", "ex2200-ex3300-ex4200-ex4550", Lifecycle.END_OF_LIFE, "2024-06-30", None),
        ("EX4200-48P", "ex4200-poe-early", Lifecycle.END_OF_LIFE, "2018-06-30", None),  # not its -48PX sibling
    ],
)
def test_a_listed_model_takes_its_rows_dates(model: str, cycle: str, state: Lifecycle, end_of_support: str,
                                             end_of_sale: str | None) -> None:  # fmt: skip
    [item] = ident().hardware(model, "", None, "entPhysical")
    assert (item["kind"], item["cycle"], item["model"], item["confidence"]) == ("hardware", cycle, model, "high")
    assert item["lifecycle_state"] == str(state) and item["eol_date"] == end_of_support
    assert item["end_of_sale"] == end_of_sale
    assert item["lifecycle_sources"] and item["lifecycle_sources"][0]["cycle"] == cycle  # the date is checkable
    assert model in item["label"] and item["family"] in item["label"]


def test_catalyst_3560g_family_and_label() -> None:
    [item] = ident().hardware("WS-C3560G-48PS-S", "WS-C3560G-48TS", None, "entPhysical")
    assert item["label"] == "Cisco Systems Catalyst 3560G (WS-C3560G-48PS-S)" and item["title"] == "Catalyst 3560G"


@pytest.mark.parametrize("model", ["WS-C3750G-12S-S", "N5K-C5548UP", "PA-5050", "DCS-7150S-52-CL", "AIR-CT5508-K9"])
def test_a_model_no_row_lists_is_named_never_dated(model: str) -> None:
    """The recordings' own chassis: the catalogue lists none of them, so the state is unknown, never a guess."""
    [item] = ident().hardware(model, "", "Cisco Systems", "entPhysical")
    assert item["model"] == model and item["lifecycle_state"] == "unknown" and item["eol_date"] is None
    assert item["confidence"] == "medium"


def test_a_sibling_of_a_listed_model_gets_the_family_and_the_row_cited_but_no_date() -> None:
    """The C3560 recording's WS-C3560G-48TS-E: the catalogue's 3560G row lists only the -24PS-S and -48PS-S, so
    its 2018 end of support is cited in the evidence and not applied to this box."""
    [item] = ident().hardware("WS-C3560G-48TS-E", "WS-C3560G-48TS", "Cisco Systems", "entPhysical")
    assert item["family"] == "Catalyst 3560G" and item["lifecycle_state"] == "unknown"
    assert "catalyst-3560g-3750g lists WS-C3560G-24PS-S, WS-C3560G-48PS-S" in item["evidence"]
    assert "not listed" in item["evidence"]


def test_a_row_without_a_date_is_never_end_of_life() -> None:
    """Catalyst 1000: Cisco has announced no end (eol false); ASA 5512-X: ended, day not published."""
    catalogue = default_catalogue()
    none_announced = Identification("cisco-hardware-eol", ("catalyst-1000",), None, "high", "entPhysical", "",
                                    kind="hardware", model="C1000-24T-4G-L")  # fmt: skip
    status = lifecycle(none_announced, catalogue, DAY)
    assert status.state is not Lifecycle.END_OF_LIFE and status.eol_date is None
    ended = Identification("cisco-hardware-eol", ("asa-5512x-5515x",), None, "high", "entPhysical", "", kind="hardware")
    assert lifecycle(ended, catalogue, DAY).state is Lifecycle.END_OF_LIFE  # the source says so, without a day


def test_the_platform_a_sysdescr_or_nmap_names_is_a_family_at_low_confidence() -> None:
    found = identify_hardware("C3560", "", "Cisco Systems", "sysDescr model", default_catalogue())
    assert found is not None and (found.family, found.confidence, found.cycles) == ("C3560", "low", ())
    [item] = ident().hardware("Catalyst 2960, 3550, or 3560", "", "Cisco Systems", "nmap os model")  # nmap-os-db
    assert item["label"] == "Cisco Systems Catalyst 2960, 3550, or 3560" and item["lifecycle_state"] == "unknown"


@pytest.mark.parametrize(
    "model",
    ["WS-C3560G-48PS-S" + "A" * 100_000, "WS-C3560G-48PS-S" * 6_000, "", "   ", " \t\r\n ", "WS-C3560\x00G-48PS-S",
     "\x1b[31mWS-C3560G-48PS-S", "WS-C3560G-48PS-S\u202e", "X" * (MAX_MODEL + 1)],
)
def test_hostile_models_are_not_models(model: str) -> None:
    assert clean_model(model) is None
    assert ident().hardware(model, "", None, "entPhysical") == ()


def test_a_model_is_cut_of_its_edge_spaces() -> None:
    """Real devices pad: the C3750 recording's SFP rows are space-padded; the chassis PID is kept as said."""
    assert clean_model("  WS-C3560G-48PS-S ") == "WS-C3560G-48PS-S"
    assert clean_model(None) is None and clean_model(12) is None


def test_the_chassis_row_is_chosen() -> None:
    rows: list[tuple[str | None, str | None]] = [
        ("not json", "x"),
        (json.dumps(["a list"]), "y"),
        (json.dumps({"model": "GLC-LH-SMD", "class": 10, "descr": "1000BaseLX SFP"}), "port"),
        (json.dumps({"model": "WS-C3750G-12S-S", "class": 3, "descr": "WS-C3750G-12S"}), "1"),
    ]
    assert chassis(rows) == ("WS-C3750G-12S-S", "WS-C3750G-12S")
    assert chassis(rows[:3]) == ("GLC-LH-SMD", "1000BaseLX SFP")  # no chassis row: the first with a model
    assert chassis([(json.dumps({"model": "   ", "class": 3}), "1")]) is None
    assert chassis([(None, None)]) is None


def test_the_pack_linter_checks_hardware_fields() -> None:
    pack = '[pack]\nname = "t"\n[[rule]]\nid = "t.hw"\ntitle = "t"\nfunction = "protect"\nseverity = "low"\n' \
           'subject = "hardware"\nrationale = "r"\nremediation = "r"\n'  # fmt: skip
    [rule] = parse_pack(pack + 'when = { model = { matches = "^WS-C" }, end_of_sale = { exists = true } }\n', "t")
    assert rule.subject == "hardware"
    with pytest.raises(RuleError, match="unknown field 'serial' for subject 'hardware'"):
        parse_pack(pack + 'when = { serial = "x" }\n', "t.toml")


# --- end to end: a real snmpsim serving the recordings, `posture snmp`, `posture evaluate` ----------------


def _derived_recording(tmp: Path) -> Path:
    """The C3560 recording with its chassis entPhysicalModelName set to WS-C3560G-48PS-S, the PID Cisco's EoX
    record for bulletin EOL8044 names (the catalogue row's own quote); every other answer as recorded.
    Returned without its suffix, as `SnmpSimLab` takes recordings."""
    original = f"{ENT_MODEL}1001|4x|{b'WS-C3560G-48TS-E'.hex()}"
    text = bz2.decompress(recording_path(C3560).read_bytes()).decode("latin-1")
    assert text.count(original) == 1
    path = tmp / "c3560-48ps"
    path.with_suffix(".snmprec").write_text(text.replace(original, f"{ENT_MODEL}1001|4|WS-C3560G-48PS-S"),
                                            encoding="latin-1")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpSimLab]:
    derived = _derived_recording(tmp_path_factory.mktemp("recordings"))
    with SnmpSimLab((C3560, C3750, str(derived)), base="127.86.0.", first=2) as lab:
        yield lab


def _scan(sims: SnmpSimLab, addresses: list[str], db: Path | str) -> dict[str, dict[str, Any]]:
    done = run_posture("snmp", *addresses, "--snmp-timeout", "5", db=db)
    assert done.returncode == 0, done.stderr
    evaluated = run_posture("evaluate", db=db)
    assert evaluated.returncode == 0, evaluated.stderr
    return {a["addresses"][0]: a for a in assets_json(db)}


def _findings(db: Path | str) -> list[dict[str, Any]]:
    found = run_posture("findings", "--format", "json", db=db)
    assert found.returncode == 0, found.stderr
    result: list[dict[str, Any]] = json.loads(found.stdout)
    return result


def test_recorded_catalysts_name_their_chassis_and_are_never_called_end_of_life(
        sims: SnmpSimLab, store_db: Path | str) -> None:  # fmt: skip
    """The real C3560 and C3750: the chassis model comes from ENTITY-MIB, with its source; the catalogue lists
    neither PID, so no hardware verdict (their IOS 12.2 still gets its own)."""
    db = store_db
    addresses = [a for a, name in sims.devices.items() if name in (C3560, C3750)]
    assets = _scan(sims, addresses, db)
    got = {sims.devices[a]: assets[a]["hardware"] for a in addresses}
    [c3560], [c3750] = got[C3560], got[C3750]
    assert (c3560["model"], c3560["family"], c3560["method"], c3560["lifecycle_state"]) == (
        "WS-C3560G-48TS-E", "Catalyst 3560G", "entPhysical", "unknown")  # fmt: skip
    assert c3560["vendor"] == "Cisco Systems" and "model WS-C3560G-48TS-E" in c3560["evidence"]
    assert (c3750["model"], c3750["lifecycle_state"], c3750["eol_date"]) == ("WS-C3750G-12S-S", "unknown", None)
    findings = _findings(db)
    assert not [f for f in findings if f["rule_id"] == "protect.eol-hardware"]
    assert {f["rule_id"] for f in findings} >= {"protect.eol-os"}  # the firmware keeps its own finding

    # Hostile chassis rows in the stored inventory (as a broken or malicious agent could write them): a 100 KB
    # model, a model of spaces, an escape sequence, JSON that is not an object: no hardware, no traceback.
    for bad in ({"model": "WS-C3560G-48PS-S" + "A" * 100_000, "class": 3}, {"model": "      ", "class": 3},
                {"model": "\x1b[2J\x1b[31mWS-C3560G-48PS-S", "class": 3}, ["WS-C3560G-48PS-S"], "{"):  # fmt: skip
        execute(db, "UPDATE software SET extra = ? WHERE kind = 'hardware'",
                bad if isinstance(bad, str) else json.dumps(bad))  # fmt: skip
        again = run_posture("evaluate", db=db)
        assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
        [asset] = [a for a in assets_json(db) if sims.devices.get(a["addresses"][0]) == C3560]
        # No chassis left: the platform its sysDescr names ("C3560 Software"), the family only, weakly.
        [platform] = asset["hardware"]
        assert (platform["method"], platform["model"], platform["confidence"], platform["lifecycle_state"]) == (
            "sysDescr model", "C3560", "low", "unknown"), (bad, platform)  # fmt: skip
        assert platform["label"] == "Cisco Systems C3560"


def test_a_listed_pid_gives_the_hardware_finding_apart_from_the_firmware(sims: SnmpSimLab, store_db: Path | str,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    """The C3560 recording answering as a WS-C3560G-48PS-S (see `_derived_recording`): Catalyst 3560G, end of
    sale 2013-01-30, last date of support 2018-01-31, with the row's source, in the asset view and in a
    `protect.eol-hardware` finding beside (not instead of) the IOS 12.2 one."""
    db = store_db
    [address] = [a for a, name in sims.devices.items() if name.endswith("c3560-48ps")]
    [hardware] = _scan(sims, [address], db)[address]["hardware"]
    assert (hardware["product"], hardware["cycle"], hardware["family"], hardware["model"]) == (
        "cisco-hardware-eol", "catalyst-3560g-3750g", "Catalyst 3560G", "WS-C3560G-48PS-S")  # fmt: skip
    assert (hardware["lifecycle_state"], hardware["eol_date"], hardware["end_of_sale"]) == (
        "end-of-life", "2018-01-31", "2013-01-30")  # fmt: skip
    assert hardware["method"] == "entPhysical" and hardware["lifecycle_sources"][0]["source"].startswith("https://")
    findings = _findings(db)
    [eol_hw] = [f for f in findings if f["rule_id"] == "protect.eol-hardware"]
    assert eol_hw["label"] == "Cisco Systems Catalyst 3560G (WS-C3560G-48PS-S)" and eol_hw["eol_date"] == "2018-01-31"
    assert eol_hw["lifecycle_sources"] and eol_hw["subject"] == "hardware:cisco-hardware-eol:WS-C3560G-48PS-S"
    [eol_os] = [f for f in findings if f["rule_id"] == "protect.eol-os"]
    assert eol_os["product"] == "cisco-ios"  # the firmware's verdict stays its own
    shown = run_posture("rules", "show", "protect.eol-hardware", db=db)
    assert shown.returncode == 0 and "firmware may be current" in shown.stdout

    # The procurement lot a buyer needs: the family, its end of sale and support, priced by its own key.
    costs = tmp_path / "costs.toml"
    costs.write_text('[products."cisco-hardware-eol.catalyst-3560g-3750g"]\nreplace = 2500\n', encoding="utf-8")
    plan = run_posture("plan", "procurement", "--format", "csv", "--costs", str(costs), db=db)
    assert plan.returncode == 0, plan.stderr
    lots = {row["product"]: row for row in csv.DictReader(io.StringIO(plan.stdout))}
    lot = lots["cisco-hardware-eol.catalyst-3560g-3750g"]
    assert lot["title"] == "Catalyst 3560G hardware (end of sale 2013-01-30)" and lot["quantity"] == "1"
    assert (lot["earliest_eol"], lot["recommended"], lot["cost"]) == ("2018-01-31", "replace", "2500.00")
    ios = lots["cisco-ios"]  # the switch is replaced: its IOS 12.2 goes with it, not costed again (issue 15)
    assert (ios["recommended"], ios["cost"], ios["goes_with"]) == ("with the machine", "", lot["number"])
    html = tmp_path / "report.html"
    assert run_posture("report", "--html", str(html), db=db).returncode == 0
    page = html.read_text(encoding="utf-8")
    assert "hardware: Cisco Systems Catalyst 3560G (WS-C3560G-48PS-S)" in page
    assert "(end of sale 2013-01-30) (last date of support 2018-01-31)" in page


@pytest.mark.parametrize(
    ("descr", "cycle", "state", "end_of_support"),
    [  # rules/fingerprints/sysdescr/zz-hardware-models.toml's real examples (LibreNMS's and Recog's test data)
        ("SonicWALL TZ 210 (SonicOS Enhanced 5.9.1.6-5o)", "tz-210", "end-of-life", "2017-05-30"),
        ("SonicWALL TZ 670 (SonicOS 7.1.3-7015-R6965)", "tz-670", "unknown", None),  # not in the vendor's table
    ],
)
def test_a_model_named_in_a_sysdescr_is_dated_by_a_table_keyed_by_name(descr: str, cycle: str, state: str,
                                                                      end_of_support: str | None) -> None:  # fmt: skip
    """SonicWall's table is keyed by model name: the sysDescr names the box beside its SonicOS, each judged apart."""
    items = ident().row_items("os", descr, None, None, "[]", "sysDescr", '{"sysObjectID": "1.3.6.1.4.1.8741.1"}', None)
    [firmware] = [i for i in items if i["kind"] != "hardware"]
    [box] = [i for i in items if i["kind"] == "hardware"]
    assert firmware["product"] == "sonicos"
    assert (box["product"], box["cycle"], box["lifecycle_state"], box["eol_date"]) == (
        "sonicwall-tz", cycle, state, end_of_support)  # fmt: skip
    assert box["label"] == f"SonicWall TZ ({box['model']})"
