"""Asset identity across sightings: same machine, one asset; a new MAC at an old address, another asset.

MAC addresses only show on a shared link, so this test builds one: two network namespaces joined by a
veth pair, addresses 10.99.0.1 (the scanner) and 10.99.0.2 (the host). nmap runs inside the scanner's
namespace; nothing is sent from the machine's own namespace, and the namespaces are removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import assets_json, query, run_posture


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Link:
    scanner_ns: str
    host_ns: str
    host_if: str

    def set_host_mac(self, mac: str) -> None:
        ip("-n", self.host_ns, "link", "set", self.host_if, "down")
        ip("-n", self.host_ns, "link", "set", self.host_if, "address", mac)
        ip("-n", self.host_ns, "link", "set", self.host_if, "up")

    def scan(self, db: Path | str) -> subprocess.CompletedProcess[str]:
        return run_posture("scan", "10.99.0.2", "-p", "22", "--no-dns", db=db, netns=self.scanner_ns)


@pytest.fixture
def link() -> Iterator[Link]:
    tag = str(os.getpid() % 100000)
    scanner_ns, host_ns = f"posture-s{tag}", f"posture-h{tag}"
    scanner_if, host_if = f"pvs{tag}", f"pvh{tag}"
    ip("netns", "add", scanner_ns)
    ip("netns", "add", host_ns)
    try:
        ip("link", "add", scanner_if, "type", "veth", "peer", "name", host_if)
        ip("link", "set", scanner_if, "netns", scanner_ns)
        ip("link", "set", host_if, "netns", host_ns)
        for ns, dev, addr in ((scanner_ns, scanner_if, "10.99.0.1/24"), (host_ns, host_if, "10.99.0.2/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield Link(scanner_ns, host_ns, host_if)
    finally:
        for ns in (scanner_ns, host_ns):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_same_mac_same_asset_new_mac_new_asset(store_db: Path | str, link: Link, tmp_path: Path) -> None:
    db = store_db
    link.set_host_mac("02:00:5e:00:00:aa")
    for _ in range(2):
        result = link.scan(db)
        assert result.returncode == 0, result.stderr
    assets = assets_json(db)
    assert len(assets) == 1
    assert assets[0]["macs"] == ["02:00:5e:00:00:aa"]
    assert assets[0]["addresses"] == ["10.99.0.2"]

    link.set_host_mac("02:00:5e:00:00:bb")  # another machine now answers at 10.99.0.2
    result = link.scan(db)
    assert result.returncode == 0, result.stderr
    assets = assets_json(db)
    assert len(assets) == 2
    assert sorted(a["macs"][0] for a in assets) == ["02:00:5e:00:00:aa", "02:00:5e:00:00:bb"]
    old, new = sorted(assets, key=lambda a: a["id"])
    assert old["last_seen"] <= new["first_seen"]

    # The register names the address; it belongs to the machine answering there now.
    register = tmp_path / "register.csv"
    register.write_text("IP Address,Owner\n10.99.0.2,Revenues\n")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    owners = {a["macs"][0]: a["owner"] for a in assets_json(db)}
    assert owners == {"02:00:5e:00:00:aa": None, "02:00:5e:00:00:bb": "Revenues"}
    assert query(db, "SELECT count(*) FROM assets") == [(2,)]
