"""The distribution build table (rules/data/distribution_builds.toml): every row names a release the catalogue
knows and says where its versions came from; real banners map to the releases that shipped their version.

The banners are real: Rapid7 Recog's example strings (github.com/rapid7/recog, BSD-2-Clause), collected
from public scans, in xml/ssh_banners.xml and xml/apache_os.xml, and the lab's real Debian 12 nginx.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from rules.catalogue import default_catalogue
from rules.facts import BUILDS_FILE, _possible_builds, distribution_builds
from scanner.compat import tomllib

ROW_KEYS = {"distribution", "cycle", "products", "source"}
# Program slugs of posture's own for programs the catalogue has no lifecycle data for.
OWN_SLUGS = {"openssh", "samba", "bind", "postfix", "vsftpd", "proftpd"}
VERSION = re.compile(r"^[0-9][0-9A-Za-z.+~-]{0,39}$")


def rows() -> list[dict[str, Any]]:
    return list(tomllib.loads(BUILDS_FILE.read_text(encoding="utf-8"))["build"])


def test_every_row_has_a_source_a_known_release_and_versions() -> None:
    catalogue = default_catalogue()
    seen = set()
    for number, row in enumerate(rows(), 1):
        where = f"row {number} ({row.get('distribution')} {row.get('cycle')})"
        assert set(row) == ROW_KEYS, where
        assert isinstance(row["source"], str) and len(row["source"].strip()) > 20, where
        product = catalogue.product(row["distribution"])
        assert product is not None and product.cycle(row["cycle"]) is not None, where
        assert row["products"], where
        for slug, versions in row["products"].items():
            assert slug in OWN_SLUGS or catalogue.product(slug) is not None, (where, slug)
            listed = [versions] if isinstance(versions, str) else versions
            assert listed and all(isinstance(v, str) and VERSION.match(v) for v in listed), (where, slug)
            assert len(set(listed)) == len(listed), (where, slug)
            for version in listed:
                key = (row["distribution"], row["cycle"], slug, version)
                assert key not in seen, (where, key)  # one row per release, program and version
                seen.add(key)


def test_the_loader_reads_single_versions_and_lists() -> None:
    builds = distribution_builds()
    assert ("1.22.1", "debian 12") in builds["nginx"]  # a single version
    assert {("5.6.9", "debian 8"), ("5.6.40", "debian 8")} <= set(builds["php"])  # a list
    assert all(len(pairs) == len(set(pairs)) for pairs in builds.values())


def _ssh(banner: str) -> str:
    """The version nmap reports for an OpenSSH banner, as far as posture reads it (its first word)."""
    return banner.removeprefix("OpenSSH_").split()[0]


def _http(banner: str) -> str:
    return banner.split("/", 1)[1].split()[0]


@pytest.mark.parametrize(
    ("slug", "version", "expected"),
    [
        ("openssh", _ssh("OpenSSH_6.0p1 Debian-4+deb7u2"), ["debian 7"]),
        ("openssh", _ssh("OpenSSH_6.7p1 Debian-5+deb8u8"), ["debian 8"]),
        ("openssh", _ssh("OpenSSH_7.4p1 Debian-10+deb9u1"), ["debian 9"]),
        ("openssh", _ssh("OpenSSH_6.6.1p1 Ubuntu-2ubuntu2.13"), ["ubuntu 14.04"]),  # its package is 6.6p1
        ("openssh", _ssh("OpenSSH_7.2p2 Ubuntu-4ubuntu2.7"), ["ubuntu 16.04"]),
        ("openssh", _ssh("OpenSSH_7.6p1 Ubuntu-4ubuntu0.3"), ["ubuntu 18.04"]),
        ("openssh", _ssh("OpenSSH_8.2p1 Ubuntu-4ubuntu0.1"), ["ubuntu 20.04"]),
        ("openssh", _ssh("OpenSSH_6.6.1"), ["rhel 7"]),  # RHEL's sshd drops the portable suffix
        ("apache-http-server", _http("Apache/2.4.6 (Red Hat Enterprise Linux) OpenSSL/1.0.2k-fips"), ["rhel 7"]),
        # What nmap reports for the lab's Debian 12 nginx (tests/rules/test_accuracy.py): a version more than one
        # release shipped names each of them.
        ("nginx", "1.22.1", ["debian 12", "rhel 8", "rhel 9"]),
    ],
)
def test_real_banners_name_the_releases_that_shipped_them(slug: str, version: str, expected: list[str]) -> None:
    assert list(_possible_builds(slug, version)) == expected


def test_a_version_no_release_shipped_names_none() -> None:
    assert _possible_builds("openssh", _ssh("OpenSSH_5.9")) == ()
    assert _possible_builds("openssh", None) == ()
