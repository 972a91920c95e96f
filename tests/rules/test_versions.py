"""Version ordering on the strings real devices report."""

from __future__ import annotations

import pytest

from rules.versions import Version


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("12.2(55)SE3", "12.2(55)SE5"),
        ("12.2(55)SE5", "12.2(58)SE1"),
        ("12.2(58)SE1", "15.0(2)SE"),
        ("7.4", "7.4p1"),
        ("7.4p1", "8.0p1"),
        ("1.0.2", "1.0.2k"),
        ("1.0.2k", "1.0.2u"),
        ("1.0.2u", "1.1.0"),
        ("10.0.14393", "10.0.17763"),
        ("6.1.7600", "6.1.7601"),
        ("2.0.0-rc1", "2.0.0"),
        ("2.0.0beta2", "2.0.0rc1"),
        ("9.2p1 Debian 2+deb12u3", "9.2p1 Debian 2+deb12u10"),
        ("5.1", "5.10"),
    ],
)
def test_order(older: str, newer: str) -> None:
    assert Version(older) < Version(newer)
    assert Version(newer) > Version(older)
    assert Version(older) != Version(newer)


def test_equal_and_cycle_membership() -> None:
    assert Version("12.2(55)SE5") == Version("12.2(55)se5")
    assert Version("12.2(55)SE5").startswith("12.2")
    assert not Version("12.4(15)T").startswith("12.2")
    assert Version("10.0.17763.1").startswith("10.0.17763")


def test_huge_version_string_is_bounded() -> None:
    big = Version("1." * 5000)
    assert len(big.text) == 128 and len(big.parts) == 64  # only the first 128 characters are read
    assert big > Version("1")
