"""A council estate for the procurement tests, built the way posture builds one: an nmap XML import and
signed host-agent bundles, each read by the real `posture` command, then `posture evaluate`.

- Three Windows XP SP3 PCs, each a host-agent bundle whose programs are the Uninstall names of the
  snmpsim-data 1.0.1 recording os/windows/XP (hrSWInstalledName: "Windows Internet Explorer 8", "Microsoft
  .NET Framework 4 Client Profile", "Python 2.7.3", "Python 2.6.1", "Microsoft .NET Framework 3.5 SP1") and
  "Microsoft Office Enterprise 2007" from the recording os/windows/server-2003-5-2. The OS values are what
  Windows XP SP3's CurrentVersion key holds (ProductName "Microsoft Windows XP", CurrentVersion 5.1,
  CurrentBuildNumber 2600, CSDVersion "Service Pack 3"). No program version is given: the recordings state
  none, and none is invented.
- A Windows 7 SP1 PC (CurrentVersion 6.1, build 7601, "Service Pack 1", InstallationType "Client").
- A Windows Server 2008 R2 SP1 file server: the agent's own Windows code path over the registry recording
  tests/scanner/data/ws2008r2.reg (Office 2010, SQL Server 2008 R2, Firefox 52 ESR, Java 8, Adobe Reader X).
- A CentOS 7 host: a bundle with os-release ID=centos VERSION_ID=7 and CentOS 7's openssl package
  (1.0.2k-26.el7_9, the last CentOS 7 update).
- nmap: two Windows Server 2008 R2 SP1 and one Windows Server 2003 SP2 (osmatch names and CPEs from nmap
  7.93's nmap-os-db), and a Debian 12 host with nginx (tests/rules/estate.py).

The addresses are documentation-style 10.x addresses: nothing is scanned, the files are read.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from scanner.bundles import make_bundle, write_bundle
from scanner.hostagent import PAYLOAD_FORMAT, RegExport, collect_windows
from tests.conftest import run_posture
from tests.rules.estate import NGINX, RDP, SSH_DEBIAN, WINDOWS_2008, Host, write_estate

WINDOWS_2003 = ("Microsoft Windows Server 2003 SP2", "general purpose", "Windows",
                "cpe:/o:microsoft:windows_server_2003::sp2")  # fmt: skip
XP = {"platform": "windows", "id": "windows", "pretty_name": "Microsoft Windows XP", "version_id": "5.1",
      "build": "2600", "service_pack": "Service Pack 3"}  # fmt: skip
WINDOWS_7 = {"platform": "windows", "id": "windows", "pretty_name": "Windows 7 Professional", "version_id": "6.1",
             "build": "7601", "service_pack": "Service Pack 1", "installation_type": "Client"}  # fmt: skip
CENTOS_7 = {"platform": "linux", "id": "centos", "version_id": "7", "pretty_name": "CentOS Linux 7 (Core)"}
XP_PROGRAMS = ["Windows Internet Explorer 8", "Microsoft .NET Framework 4 Client Profile",
               "Microsoft Office Enterprise 2007", "Python 2.7.3", "Python 2.6.1",
               "Microsoft .NET Framework 3.5 SP1"]  # fmt: skip
REGISTRY = Path(__file__).parent.parent / "scanner" / "data" / "ws2008r2.reg"
COSTS = """currency = "GBP"
horizon_years = 5
[default]
replace = 2000
retire = 150
[products.windows-server]
upgrade = 1200
replace = 4500
esu_per_year = 900
[products.windows]
replace = 900
[products.office]
upgrade = 350
"""
ORGANISATION = "Example Borough Council"


def _payload(name: str, address: str, mac: str, os_info: dict[str, Any], programs: list[str]) -> dict[str, Any]:
    return {"format": PAYLOAD_FORMAT, "bundle_id": uuid.uuid4().hex, "collected_at": "2026-12-01T09:00:00Z",
            "agent_version": "test", "host": {"machine_id": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                                              "hostnames": [name], "addresses": [["ipv4", address]], "macs": [mac]},
            "os": os_info, "packages": [{"manager": "registry", "name": p, "version": "", "vendor": ""}
                                        for p in programs], "listening": [], "warnings": []}  # fmt: skip


def build(tmp: Path, db: Path | str | None = None) -> tuple[Path | str, Path, Path]:
    """(database, config naming the organisation, cost table), with this process's and posture's XDG
    folders under `tmp` (the agent keys are made there: nothing is written outside it). The inventory is
    `db` (a file or a PostgreSQL URL), else `tmp/inventory.db`."""
    home = tmp / "home"
    with pytest.MonkeyPatch.context() as env:
        for name in ("DATA", "CONFIG", "STATE"):
            env.setenv(f"XDG_{name}_HOME", str(home / name.lower()))
        for name in ("POSTURE_DB", "POSTURE_KEY", "POSTURE_CONFIG", "POSTURE_VAULT"):
            env.delenv(name, raising=False)
        db = db or tmp / "inventory.db"
        assert run_posture("keys", "generate").returncode == 0
        keys = home / "config" / "posture" / "keys"
        assert run_posture("keys", "trust", str(keys / "signing.pub"), "--name", "self").returncode == 0
        hosts = [Host("10.6.0.10", "00:11:22:00:06:10", [RDP], WINDOWS_2008),
                 Host("10.6.0.11", "00:11:22:00:06:11", [RDP], WINDOWS_2008),
                 Host("10.6.0.12", "00:11:22:00:06:12", [RDP], WINDOWS_2003),
                 Host("10.6.0.13", "00:11:22:00:06:13", [SSH_DEBIAN, NGINX])]  # fmt: skip
        assert run_posture("import", "nmap", str(write_estate(tmp / "scan.xml", hosts)), db=db).returncode == 0
        payloads = [_payload(f"pc-xp-{n}", f"10.6.1.{n}", f"00:11:22:00:07:0{n}", XP, XP_PROGRAMS) for n in (1, 2, 3)]
        payloads.append(_payload("pc-w7-1", "10.6.1.7", "00:11:22:00:07:07", WINDOWS_7, []))
        payloads.append(_payload("app-c7-1", "10.6.2.1", "00:11:22:00:08:01", CENTOS_7, []))
        payloads[-1]["packages"] = [{"manager": "rpm", "name": "openssl", "version": "1.0.2k-26.el7_9",
                                     "arch": "x86_64"}]  # fmt: skip
        server = collect_windows(RegExport(REGISTRY), "fs-2008-1")
        server["host"].update(addresses=[["ipv4", "10.6.3.1"]], macs=["00:11:22:00:09:01"])
        payloads.append(server)
        bundles = []
        for n, payload in enumerate(payloads):
            bundles.append(tmp / f"host{n}.bundle")
            write_bundle(bundles[-1], make_bundle(payload))
        imported = run_posture("import", "bundle", *map(str, bundles), db=db)
        assert imported.returncode == 0, imported.stderr
        config = tmp / "config.toml"
        config.write_text(f'[rules]\nhorizon_months = 48\n[report]\norganisation = "{ORGANISATION}"\n',
                          encoding="utf-8")  # fmt: skip
        evaluated = run_posture("--config", str(config), "evaluate", db=db)
        assert evaluated.returncode == 0, evaluated.stderr
    costs = tmp / "costs.toml"
    costs.write_text(COSTS, encoding="utf-8")
    return db, config, costs
