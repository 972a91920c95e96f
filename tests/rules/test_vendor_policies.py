"""Vendor policies as rules (issue 13 item 2) and named-but-undated families (item 5).

The Axis string is the real sysDescr of an AXIS P5534-E camera that rules/fingerprints/sysdescr/axis.toml
carries as its example (source named there)."""

from __future__ import annotations

from datetime import date

from rules.catalogue import Cycle, Lifecycle, default_catalogue
from rules.facts import Identifier
from rules.identify import identify_sysdescr, lifecycle_published
from rules.kev import default_kev

AXIS_P5534 = "; AXIS P5534-E; PTZ Dome Network Camera; 5.40.9.2; May 15 2012 09:50; 188.1; 1;"
DAY = date(2026, 12, 7)


def test_every_vendor_policy_has_a_source_and_a_quote_or_note() -> None:
    """"No rule without a source": Arista, Aruba and Axis, each with the page it was read from."""
    rules = default_catalogue().vendor_policies
    assert {r.vendor for r in rules.values()} == {"Arista Networks", "Aruba Networks (HPE)", "Axis Communications"}
    for rule in rules.values():
        assert rule.provenance.source.startswith("https://") and rule.provenance.kind == "vendor policy"
        assert rule.provenance.quote or rule.provenance.note


def test_a_named_undated_camera_says_what_to_ask_and_counts_unknown() -> None:
    cat = default_catalogue()
    ident = identify_sysdescr(AXIS_P5534, None, cat)
    assert ident is not None and ident.product.startswith("axis")
    assert not lifecycle_published(ident, cat)
    item = Identifier(cat, default_kev(), DAY).item("os", ident, "snmp")
    assert item["lifecycle_state"] == "unknown" and item["lifecycle_published"] is False
    assert item["vendor_policy"]["text"].startswith("Axis supports a discontinued product for up to 6 years")
    assert "axis.com" in item["vendor_policy"]["source"]


def test_a_policy_derives_a_date_only_from_a_date_the_catalogue_holds() -> None:
    """Aruba: 5 years after end of sale. A model with an end-of-sale date gets its end, labelled as derived
    from the policy; one without stays undated (never a guessed date)."""
    rule = default_catalogue().vendor_policies["arubaos"]
    sold_until = Cycle("arubaos", "7010", "7010", None, None, None, None, None, False, discontinued=date(2020, 3, 31))
    derived = rule.derive(sold_until)
    assert derived.eol == date(2025, 3, 31)
    assert derived.provenance is not None and derived.provenance.kind == "vendor policy"
    assert derived.provenance.note == "derived from the vendor's policy: 60 months after discontinued"
    undated = Cycle("arubaos", "7210", "7210", None, None, None, None, None, False)
    assert rule.derive(undated) == undated
    assert default_catalogue().product("arista-eos").cycle("4.26").eol == date(2024, 4, 15)  # type: ignore[union-attr]


def test_no_end_announced_is_not_unknown_for_the_not_published_rule() -> None:
    """A catalogue product whose release is listed is "published" even with no end set yet."""
    cat = default_catalogue()
    hw = cat.product("cisco-hardware-eol")
    assert hw is not None and hw.status(hw.cycle("catalyst-1000"), DAY).state == Lifecycle.NO_END_ANNOUNCED  # type: ignore[arg-type]
