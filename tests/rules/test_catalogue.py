"""Lifecycle states from the endoflife.date catalogue, judged on a fixed day so the answers are known."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rules.catalogue import Cycle, Lifecycle, default_catalogue, status
from tests.conftest import run_posture

DAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    ("product", "cycle", "state", "eol", "extended_until"),
    [
        ("windows-server", "2008-r2-sp1", Lifecycle.END_OF_LIFE, "2020-01-14", None),  # ESU ended 2023-01-10
        ("windows-server", "2012-r2", Lifecycle.END_OF_LIFE, "2023-10-10", None),  # ESU ended 2026-10-13
        ("windows-server", "2016", Lifecycle.SECURITY_ONLY, "2027-01-12", None),
        ("windows-server", "2025", Lifecycle.SUPPORTED, "2034-11-14", None),
        ("rhel", "7", Lifecycle.EXTENDED, "2024-06-30", "2029-05-31"),  # paid ELS
        ("rhel", "6", Lifecycle.END_OF_LIFE, "2020-11-30", None),
        ("debian", "12", Lifecycle.SECURITY_ONLY, "2028-06-30", None),  # Debian LTS is free
        ("ubuntu", "18.04", Lifecycle.EXTENDED, "2023-05-31", "2028-04-01"),  # paid ESM
        ("mysql", "5.7", Lifecycle.END_OF_LIFE, "2023-10-31", None),
    ],
)
def test_states_on_a_known_day(
    product: str, cycle: str, state: Lifecycle, eol: str, extended_until: str | None
) -> None:
    found = default_catalogue().product(product)
    assert found is not None
    c = found.cycle(cycle)
    assert c is not None
    st = found.status(c, DAY)
    assert st.state == state
    assert st.eol_date == date.fromisoformat(eol)
    assert st.extended_until == (date.fromisoformat(extended_until) if extended_until else None)


def test_dates_that_are_true_false_or_missing() -> None:
    def cycle(**dates: object) -> Cycle:
        return Cycle("x", "1", "1", None, dates.get("eoas"), dates.get("eol"), dates.get("eoes"), None, False)  # type: ignore[arg-type]

    assert status(cycle(), DAY).state == Lifecycle.UNKNOWN  # no finding must never read as "safe"
    assert status(cycle(eol=True), DAY).state == Lifecycle.END_OF_LIFE
    assert status(cycle(eol=False), DAY).state == Lifecycle.NO_END_ANNOUNCED  # known, no end set
    assert status(cycle(eol=True, eoes=False), DAY).state == Lifecycle.EXTENDED
    assert status(cycle(eoas=True, eol=False), DAY).state == Lifecycle.SECURITY_ONLY


@pytest.mark.parametrize("day", [date(2000 + n // 2, 1 + 6 * (n % 2), 1) for n in range(0, 72)] + [DAY])
def test_nothing_still_in_security_support_is_called_end_of_life(day: date) -> None:
    """Issue 13 item 8: on every day of a sweep (half-yearly, 2000-2035), in every product of both data
    sets, a cycle whose security support runs past the day is never end-of-life."""
    cat = default_catalogue()
    for product in cat.products.values():
        for c in product.cycles:
            st = product.status(c, day)
            if c.eol is False or (isinstance(c.eol, date) and c.eol > day):
                assert st.state in (Lifecycle.SUPPORTED, Lifecycle.NO_END_ANNOUNCED, Lifecycle.SECURITY_ONLY), (
                    product.slug, c.name)


def test_catalogue_show_command() -> None:
    result = run_posture("catalogue", "show", "windows-server", "--on", "2026-11-23", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["data_date"] == "2026-08-22"
    by_cycle = {c["cycle"]: c for c in doc["cycles"]}
    assert by_cycle["2008-r2-sp1"]["state"] == "end-of-life"
    assert by_cycle["2008-r2-sp1"]["extended_end"] == "2023-01-10"
    assert by_cycle["2016"]["days_to_eol"] == 50
    table = run_posture("catalogue", "show", "rhel", "--on", "2026-11-23")
    assert "extended" in table.stdout and "endoflife.date as of 2026-08-22" in table.stdout
    missing = run_posture("catalogue", "show", "windows-srv")
    assert missing.returncode == 2 and "no product 'windows-srv'" in missing.stderr
    bad_day = run_posture("catalogue", "show", "rhel", "--on", "23/11/2026")
    assert bad_day.returncode == 2 and "invalid date" in bad_day.stderr


def test_catalogue_list_as_json_matches_the_table() -> None:
    listed = run_posture("catalogue", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["sources"]["endoflife.date"] == "2026-08-22"
    by_slug = {p["slug"]: p for p in doc["products"]}
    assert by_slug["junos"]["source"] == "posture lifecycle tables" and by_slug["windows"]["cycles"] > 20
    table = run_posture("catalogue", "list").stdout.splitlines()
    assert [line.split("\t")[0] for line in table] == [p["slug"] for p in doc["products"]]


def test_catalogue_update_refuses_bad_dates_and_applies_good_ones(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"slug": "rhel", "title": "RHEL", "releases": [
        {"releaseCycle": "7", "eol": "2024-06-30"}, {"releaseCycle": "6", "eol": "30/11/2020"}]}))  # fmt: skip
    result = run_posture("catalogue", "update", str(bad), env=env)
    assert result.returncode == 2
    assert "rhel cycle 6: eol '30/11/2020' is not a date" in result.stderr
    assert not (tmp_path / "data" / "posture" / "catalogue").exists()  # nothing changed

    good = tmp_path / "rhel.json"
    cycle = {"releaseCycle": "7", "label": "7", "eoas": "2019-08-06", "eol": "2024-06-30", "eoes": "2026-06-30"}
    good.write_text(json.dumps({"slug": "rhel", "title": "Red Hat Enterprise Linux", "releases": [cycle]}))
    result = run_posture("catalogue", "update", str(good), "--data-date", "2026-11-01", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(
        run_posture("catalogue", "show", "rhel", "--on", "2026-11-23", "--format", "json", env=env).stdout
    )
    assert shown["data_date"] == "2026-11-01"
    assert [(c["cycle"], c["state"]) for c in shown["cycles"]] == [("7", "end-of-life")]  # the new data wins
    untouched = json.loads(run_posture("catalogue", "show", "debian", "--format", "json", env=env).stdout)
    assert len(untouched["cycles"]) > 10


def test_no_end_announced_is_known_and_supported_not_unknown() -> None:
    """Issue 13 item 4: `eol: false` (the vendor supports it and set no end) is its own state; no dates at
    all stays unknown. Real rows: Cisco's Catalyst 1000 ("EOL no anunciado", rules/data/lifecycle) and the
    newest Windows Server cycle's eoes."""
    cat = default_catalogue()
    cisco = cat.product("cisco-hardware-eol")
    assert cisco is not None
    c1000 = cisco.cycle("catalyst-1000")
    assert c1000 is not None and cisco.status(c1000, DAY).state == Lifecycle.NO_END_ANNOUNCED
    assert status(Cycle("x", "1", "1", None, None, None, None, None, False), DAY).state == Lifecycle.UNKNOWN


@pytest.mark.parametrize(
    ("policy", "on", "state"),
    [
        # Cisco IOS 15.9 (rules/data/lifecycle/cisco-ios.json): end of SW maintenance 2027-07-28, security
        # support to 2029-07-27. On 2028-01-01 the maintenance policy calls it unsupported, the default not.
        ("security", "2028-01-01", Lifecycle.SECURITY_ONLY),
        ("maintenance", "2028-01-01", Lifecycle.END_OF_LIFE),
        ("security", "2027-01-01", Lifecycle.SUPPORTED),
        ("maintenance", "2027-01-01", Lifecycle.SUPPORTED),
        ("security", "2030-01-01", Lifecycle.END_OF_LIFE),
    ],
)
def test_the_policy_moves_verdicts_as_documented(policy: str, on: str, state: Lifecycle) -> None:
    """`[lifecycle] unsupported_after`: "maintenance" ends support at the end of maintenance, "security" (the
    default) at the end of security support; "last-date-of-support" at Cisco's LDoS where one is given."""
    cat = default_catalogue().with_policy(policy)
    ios = cat.product("cisco-ios")
    assert ios is not None
    c159 = ios.cycle("15.9")
    assert c159 is not None and c159.eoas == date(2027, 7, 28)
    assert ios.status(c159, date.fromisoformat(on)).state == state
    ldos = Cycle("x", "1", "1", None, None, date(2025, 1, 1), None, None, False, ldos=date(2027, 1, 1))
    assert status(ldos, DAY, policy="last-date-of-support").state == Lifecycle.SUPPORTED
    assert status(ldos, DAY).state == Lifecycle.END_OF_LIFE


def test_a_policy_setting_with_an_unknown_value_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "posture.toml"
    config.write_text('[lifecycle]\nunsupported_after = "whenever"\n')
    result = run_posture("--config", str(config), "config", "check")
    assert result.returncode == 2
    assert "unsupported_after must be one of security, maintenance, last-date-of-support" in result.stderr
    config.write_text('[lifecycle]\nunsupported_after = "maintenance"\n')
    assert run_posture("--config", str(config), "config", "check").returncode == 0


def test_month_precision_dates_pass_only_once_the_month_is_over() -> None:
    """QNAP's notice gives months (rules/data/lifecycle/qnap-qts.json, datePrecision): `2022-10` is not passed
    on 2022-10-15, passed on 2022-11-01, and is shown as the month."""
    qnap = default_catalogue().product("qnap-qts")
    assert qnap is not None
    month = next(c for c in qnap.cycles if "eol" in c.months)
    assert month.eol == date(2022, 10, 31) and month.shown("eol") == "2022-10"
    assert qnap.status(month, date(2022, 10, 15)).state != Lifecycle.END_OF_LIFE
    assert qnap.status(month, date(2022, 11, 1)).state == Lifecycle.END_OF_LIFE


GOOD_ROW = {"releaseCycle": "1.0", "releaseDate": "2020-01-01", "eol": "2030-01-01", "label": "1.0",
            "source": "https://example.invalid/doc", "quote": "support ends 2030-01-01", "sourceKind": "vendor"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"eol": "2030-13-01"}, "cycle 1.0: eol '2030-13-01' is not a date (YYYY-MM-DD)"),
        ({"eol": "2030-01"}, "cycle 1.0: eol '2030-01' is not a date (YYYY-MM-DD); a month where a day is required"),
        ({"eol": "2030-01", "datePrecision": {"eol": "month"}}, None),
        ({"eol": "2030-01-05", "datePrecision": {"eol": "month"}},
         "cycle 1.0: eol '2030-01-05' is not a month (YYYY-MM)"),
        ({"endOfLife": "2030-01-01"}, "cycle 1.0: unknown field 'endOfLife'"),
        ({"pidPrefixes": "WS-C2960"}, "cycle 1.0: pidPrefixes must be a list of model prefixes"),
    ],
)  # fmt: skip
def test_a_bad_table_names_file_product_cycle_and_field(tmp_path: Path, row: dict[str, Any],
                                                        message: str | None) -> None:  # fmt: skip
    """Issue 13 "Bad input": a bad date, a month where a day is required, an unknown column: the file,
    product, cycle and field named, exit 2, and nothing loaded (the bundled catalogue stays as it was)."""
    table = tmp_path / "acme-os.json"
    table.write_text(json.dumps({"slug": "acme-os", "title": "Acme OS", "releases": [{**GOOD_ROW, **row}]}))
    home = {"XDG_DATA_HOME": str(tmp_path / "data")}
    result = run_posture("catalogue", "update", str(table), "--data-date", "2026-12-01", env=home)
    if message is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2 and f"acme-os.json: acme-os {message}" in result.stderr, result.stderr
    assert not (tmp_path / "data" / "posture" / "catalogue" / "acme-os.json").exists()


def test_a_cycle_listed_twice_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "acme-os.json"
    table.write_text(json.dumps({"slug": "acme-os", "releases": [GOOD_ROW, {**GOOD_ROW, "eol": "2031-01-01"}]}))
    result = run_posture("catalogue", "update", str(table), env={"XDG_DATA_HOME": str(tmp_path / "data")})
    assert result.returncode == 2 and "acme-os.json: acme-os cycle 1.0: listed twice" in result.stderr


def test_every_shipped_file_loads_with_its_provenance() -> None:
    """Issue 13 items 1 and 8: all 464 endoflife.date products and every sourced table load; every table's
    cycle carries its own source and kind, every endoflife.date cycle its product's page."""
    cat = default_catalogue()
    endoflife = [p for p in cat.products.values() if p.source == "endoflife.date"]
    tables = [p for p in cat.products.values() if p.source != "endoflife.date"]
    assert len(endoflife) == 464 and len(tables) == 15  # 17 tables, two of them joined into linux and windows
    for product in tables:
        for cycle in product.cycles:
            where = product.provenance_of(cycle)
            assert where is not None and where.source and where.kind, (product.slug, cycle.name)
    linux = cat.product("linux")
    assert linux is not None and linux.cycle("2.6.32") is not None  # linux-legacy joined
    # endoflife.date's few unrendered Liquid labels (ibm-aix, cos, mongodb) read as the cycle's name
    assert not [c.label for p in cat.products.values() for c in p.cycles if "{{" in c.label or "{%" in c.label]
    win7 = cat.product("windows").cycle("7-sp1")  # type: ignore[union-attr]
    assert win7 is not None and win7.eoes == date(2023, 1, 10) and win7.also
