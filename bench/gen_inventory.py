"""Write a large synthetic inventory for the evaluation benchmark: N assets, 20 software rows each.

Each asset has an SNMP sighting (a sysDescr and 18 installed programs from a pool of real-world names,
some end of life, some not identifiable) and an nmap sighting (an OS guess and three open services), so
`posture evaluate` does its real work: identification, lifecycle, every rule, findings written.
Rows go straight in with executemany, in the schema `Store.open` creates; this is data, not a scan.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scanner.store import Store

SYSDESCRS = [
    ("Hardware: x86 Family 6 Model 63 Stepping 2 AT/AT COMPATIBLE - Software: Windows Version 5.2 (Build 3790 "
     "Multiprocessor Free)", "1.3.6.1.4.1.311.1.1.3.1.2"),
    ("Hardware: Intel64 Family 6 Model 85 Stepping 7 AT/AT COMPATIBLE - Software: Windows Version 6.3 (Build 9600 "
     "Multiprocessor Free)", "1.3.6.1.4.1.311.1.1.3.1.2"),
    ("Hardware: Intel64 Family 6 Model 158 Stepping 10 AT/AT COMPATIBLE - Software: Windows Version 6.1 (Build 7601 "
     "Multiprocessor Free)", "1.3.6.1.4.1.311.1.1.3.1.1"),
    ("Linux app01 3.10.0-1160.el7.x86_64 #1 SMP Mon Oct 19 16:18:59 UTC 2020 x86_64", "1.3.6.1.4.1.8072.3.2.10"),
    ("Linux db02 4.18.0-513.el8.x86_64 #1 SMP Fri Sep 29 05:21:10 EDT 2023 x86_64", "1.3.6.1.4.1.8072.3.2.10"),
    ("Cisco IOS Software, C3560 Software (C3560-IPSERVICESK9-M), Version 12.2(55)SE3, RELEASE SOFTWARE (fc1)",
     "1.3.6.1.4.1.9.1.617"),
    ("APC Web/SNMP Management Card (MB:v4.1.0 PF:v6.7.2 PN:apc_hw05_aos_672.bin)", "1.3.6.1.4.1.318.1.3.4.6"),
    ("Linux cam 2.6.18_pro500-davinci #1 Tue Sep 30 18:43:24 CST 2014 armv5tejl", "1.3.6.1.4.1.8072.3.2.10"),
]  # fmt: skip
PROGRAMS = [
    "Microsoft Office Professional Plus 2010", "Microsoft Office Standard 2016", "Mozilla Firefox 115.0 ESR",
    "Mozilla Firefox 78.0", "Python 2.7.18", "Python 3.11.7", "Microsoft SQL Server 2008 R2",
    "Microsoft .NET Framework 4.8", "Microsoft .NET Framework 3.5 SP1", "Windows Internet Explorer 8",
    "Adobe Acrobat Reader DC", "7-Zip 19.00 (x64)", "Google Chrome", "Notepad++ (64-bit x64)", "VLC media player",
    "Microsoft Visual C++ 2010  x64 Redistributable - 10.0.40219", "Sophos Endpoint Agent", "Citrix Workspace 2203",
    "Java 8 Update 202", "Security Update for Microsoft Office 2010 (KB4484373) 32-Bit Edition",
    "Microsoft Edge", "Zoom", "PuTTY release 0.76 (64-bit)", "WinSCP 5.19.2", "Crystal Reports Runtime 13.0.22",
    "Revenues Client 4.2", "Capita One Revenues", "Northgate iWorld Client", "Idox Uniform 10", "Civica APP",
]  # fmt: skip
SERVICES = [
    (22, "ssh", "OpenSSH", "7.4", "protocol 2.0", '["cpe:/a:openbsd:openssh:7.4"]'),
    (80, "http", "nginx", "1.20.1", None, '["cpe:/a:igor_sysoev:nginx:1.20.1"]'),
    (443, "http", "Microsoft IIS httpd", "8.5", None, '["cpe:/a:microsoft:internet_information_services:8.5"]'),
    (3389, "ms-wbt-server", "Microsoft Terminal Services", None, None, '["cpe:/o:microsoft:windows"]'),
    (23, "telnet", "Cisco router telnetd", None, None, '["cpe:/o:cisco:ios"]'),
    (445, "microsoft-ds", "Microsoft Windows Server 2008 R2 - 2012 microsoft-ds", None, None, "[]"),
    (3306, "mysql", "MySQL", "5.7.44", None, '["cpe:/a:mysql:mysql:5.7.44"]'),
]
NMAP_OS = [
    ("Microsoft Windows Server 2008 R2 SP1", "cpe:/o:microsoft:windows_server_2008:r2:sp1"),
    ("Linux 3.10 - 4.11", "cpe:/o:linux:linux_kernel:3"),
    ("Cisco Catalyst 3560 switch (IOS 12.2)", "cpe:/o:cisco:ios:12.2"),
]


def write(path: Path, assets: int = 100_000, programs_per_asset: int = 18, seed: int = 11) -> int:
    """Write the inventory; returns the number of software rows (20 per asset with the defaults)."""
    rng = random.Random(seed)
    with Store.open(path) as store:
        conn = store.conn
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        now = "2026-11-20T10:00:00Z"
        conn.execute("INSERT INTO scans (id, kind, source, status, started_at) VALUES (1, 'snmp-scan', 'snmp', "
                     "'complete', ?), (2, 'nmap-scan', 'nmap', 'complete', ?)", [now, now])  # fmt: skip
        conn.executemany(
            "INSERT INTO assets (id, name, first_seen, last_seen, in_register, owner) VALUES (?, ?, ?, ?, ?, ?)",
            ((i, f"host{i}", now, now, int(i % 3 == 0), "ICT" if i % 3 == 0 else None) for i in range(1, assets + 1)),
        )
        conn.executemany(
            "INSERT INTO asset_identifiers (asset_id, kind, value, source, first_seen, last_seen) "
            "VALUES (?, 'ipv4', ?, 'nmap', ?, ?)",
            ((i, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now, now) for i in range(1, assets + 1)),
        )
        software = 0
        batch_obs: list[tuple[object, ...]] = []
        batch_sw: list[tuple[object, ...]] = []
        batch_svc: list[tuple[object, ...]] = []
        for i in range(1, assets + 1):
            snmp_obs, nmap_obs = 2 * i - 1, 2 * i
            descr, oid = SYSDESCRS[i % len(SYSDESCRS)]
            system = {"sysDescr": descr, "sysObjectID": oid, "sysUpTime": str(rng.randrange(10**10))}
            evidence = {"status": "ok", "snmp_version": "2c", "default_community": i % 10 == 0, "system": system}
            batch_obs.append((snmp_obs, 1, i, "snmp", now, json.dumps(evidence), 0))
            batch_obs.append((nmap_obs, 2, i, "nmap", now, '{"device_types": []}', 1))
            batch_sw.append((snmp_obs, 1, i, "os", descr, "[]", "sysDescr", json.dumps({"sysObjectID": oid}), None))
            for name in rng.sample(PROGRAMS, programs_per_asset):
                batch_sw.append((snmp_obs, 1, i, "application", name, "[]", "hrSWInstalled", None, None))
            os_name, cpe = NMAP_OS[i % len(NMAP_OS)]
            batch_sw.append((nmap_obs, 2, i, "os", os_name, json.dumps([cpe]), "nmap-osmatch", None, cpe))
            software += programs_per_asset + 2
            for port, name, product, version, extra, cpes in rng.sample(SERVICES, 3):
                batch_svc.append((nmap_obs, 2, i, port, "tcp", "open", name, product, version, extra, cpes))
            if len(batch_sw) > 200_000 or i == assets:
                conn.executemany("INSERT INTO observations (id, scan_id, asset_id, source, observed_at, evidence, "
                                 "ports_scanned) VALUES (?, ?, ?, ?, ?, ?, ?)", batch_obs)  # fmt: skip
                conn.executemany("INSERT INTO software (observation_id, scan_id, asset_id, kind, name, cpes, method, "
                                 "extra, cpe) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch_sw)  # fmt: skip
                conn.executemany("INSERT INTO services (observation_id, scan_id, asset_id, port, protocol, state, "
                                 "name, product, version, extra_info, cpes) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                 batch_svc)  # fmt: skip
                batch_obs, batch_sw, batch_svc = [], [], []
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return software


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("inventory.db")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    programs = int(sys.argv[3]) if len(sys.argv) > 3 else 18
    print(f"{write(target, assets=count, programs_per_asset=programs)} software rows written to {target}")
