"""Lifecycle states from the endoflife.date catalogue, judged on a fixed day so the answers are known."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

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
    assert status(cycle(eol=False), DAY).state == Lifecycle.SUPPORTED
    assert status(cycle(eol=True, eoes=False), DAY).state == Lifecycle.EXTENDED
    assert status(cycle(eoas=True, eol=False), DAY).state == Lifecycle.SECURITY_ONLY


def test_nothing_supported_today_is_called_end_of_life() -> None:
    """Every cycle whose security support runs past the day must not be end-of-life, in every product."""
    cat = default_catalogue()
    for product in cat.products.values():
        for c in product.cycles:
            st = product.status(c, DAY)
            if c.eol is False or (isinstance(c.eol, date) and c.eol > DAY):
                assert st.state in (Lifecycle.SUPPORTED, Lifecycle.SECURITY_ONLY), (product.slug, c.name)


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
