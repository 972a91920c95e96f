"""Write a large, realistic nmap XML file (deterministic): the input of the import benchmark.

The hosts are addresses on paper only: nothing is scanned, the file is just data.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import quoteattr

SERVICES = [
    (22, "ssh", "OpenSSH", "7.4", "protocol 2.0", ["cpe:/a:openbsd:openssh:7.4", "cpe:/o:linux:linux_kernel"]),
    (80, "http", "Apache httpd", "2.4.6", "(CentOS)", ["cpe:/a:apache:http_server:2.4.6"]),
    (443, "http", "nginx", "1.14.2", "", ["cpe:/a:igor_sysoev:nginx:1.14.2"]),
    (445, "microsoft-ds", "Microsoft Windows Server 2008 R2 microsoft-ds", "", "", ["cpe:/o:microsoft:windows"]),
    (3389, "ms-wbt-server", "Microsoft Terminal Services", "", "", ["cpe:/o:microsoft:windows"]),
    (23, "telnet", "Cisco router telnetd", "", "", ["cpe:/o:cisco:ios"]),
    (161, "snmp", "SNMPv1 server", "", "public", []),
    (21, "ftp", "vsftpd", "2.0.8 or later", "", ["cpe:/a:vsftpd:vsftpd"]),
    (1433, "ms-sql-s", "Microsoft SQL Server 2008 R2", "10.50.1600", "RTM", ["cpe:/a:microsoft:sql_server:2008_r2"]),
    (8080, "http-proxy", "Apache Tomcat", "7.0.70", "", ["cpe:/a:apache:tomcat:7.0.70"]),
]
OSES = [
    (
        "Microsoft Windows Server 2008 R2 SP1",
        "Microsoft",
        "Windows",
        "2008",
        "cpe:/o:microsoft:windows_server_2008:r2:sp1",
    ),
    ("Linux 3.10 - 4.11", "Linux", "Linux", "3.X", "cpe:/o:linux:linux_kernel:3"),
    ("Cisco IOS 12.2", "Cisco", "IOS", "12.X", "cpe:/o:cisco:ios:12.2"),
]


def write(path: Path, hosts: int = 20_000, ports_per_host: int = 5, seed: int = 7) -> int:
    """Write the file; returns the number of open ports written."""
    rng = random.Random(seed)
    total_ports = 0
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
        out.write('<?xml-stylesheet href="file:///usr/bin/../share/nmap/nmap.xsl" type="text/xsl"?>\n')
        out.write(
            '<nmaprun scanner="nmap" args="nmap -sS -sV -O -oX big.xml 10.0.0.0/16" start="1763900000" '
            'version="7.93" xmloutputversion="1.05">\n'
            '<scaninfo type="syn" protocol="tcp" numservices="1000" services="1-1000"/>\n'
        )
        for i in range(hosts):
            addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"  # data only: never scanned
            total_ports += _host(out, addr, i, rng, ports_per_host)
        out.write(
            '<runstats><finished time="1763909000" timestr="x" elapsed="9000" exit="success"/>'
            f'<hosts up="{hosts}" down="0" total="{hosts}"/></runstats>\n</nmaprun>\n'
        )
    return total_ports


def _host(out: TextIO, addr: str, i: int, rng: random.Random, ports: int, mac: str | None = None) -> int:
    """One host that is up, as nmap -sS -sV -O writes it: a MAC, a PTR name, `ports` open ports with
    service versions, an OS match. Returns `ports`."""
    mac = mac or f"00:1A:2B:{rng.randrange(256):02X}:{(i >> 8) & 255:02X}:{i & 255:02X}"
    out.write(f'<host starttime="{1763900000 + i // 50}" endtime="{1763900001 + i // 50}">')
    out.write('<status state="up" reason="arp-response" reason_ttl="0"/>\n')
    out.write(f'<address addr="{addr}" addrtype="ipv4"/>\n<address addr="{mac}" addrtype="mac" vendor="Dell"/>\n')
    out.write(f'<hostnames><hostname name="host{i}.council.example" type="PTR"/></hostnames>\n<ports>')
    out.write(f'<extraports state="closed" count="{1000 - ports}"><extrareasons reason="reset" '
              f'count="{1000 - ports}"/></extraports>\n')  # fmt: skip
    for port, name, product, version, extra, cpes in rng.sample(SERVICES, ports):
        attrs = f"name={quoteattr(name)} product={quoteattr(product)}"
        if version:
            attrs += f" version={quoteattr(version)}"
        if extra:
            attrs += f" extrainfo={quoteattr(extra)}"
        out.write(
            f'<port protocol="tcp" portid="{port}"><state state="open" reason="syn-ack" reason_ttl="64"/>'
            f'<service {attrs} method="probed" conf="10">' + "".join(f"<cpe>{c}</cpe>" for c in cpes)
            + "</service></port>\n"
        )
    name, vendor, family, gen, cpe = OSES[i % len(OSES)]
    out.write(
        f'</ports><os><portused state="open" proto="tcp" portid="22"/><osmatch name="{name}" accuracy="95" '
        f'line="1"><osclass type="general purpose" vendor="{vendor}" osfamily="{family}" osgen="{gen}" '
        f'accuracy="95"><cpe>{cpe}</cpe></osclass></osmatch></os>\n'
        f'<uptime seconds="{rng.randrange(10**7)}" lastboot="Mon Nov 10 10:00:00 2025"/>'
        '<times srtt="300" rttvar="100" to="100000"/></host>\n'
    )
    return ports


def chunk_xml(targets: list[str], up: float = 0.4) -> bytes:
    """nmap's XML for one scanned chunk (the scale benchmark's collectors upload it instead of running nmap):
    of the chunk's addresses, about `up` of them answer (deterministic by address, as in an office /24),
    each with 1-5 open ports; the rest are down and, as nmap writes them without -v, not listed."""
    import io
    import ipaddress

    out = io.StringIO()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
    out.write(f'<nmaprun scanner="nmap" args="nmap -sS -sV -O -oX - {" ".join(targets)}" start="1763900000" '
              'version="7.93" xmloutputversion="1.05">\n'
              '<scaninfo type="syn" protocol="tcp" numservices="1000" services="1-1000"/>\n')  # fmt: skip
    total = alive = 0
    for target in targets:
        for address in ipaddress.ip_network(target, strict=False):
            i = int(address) & 0xFFFFFF
            rng = random.Random(i)
            total += 1
            if rng.random() < up:
                alive += 1
                mac = f"00:1A:2B:{i >> 16:02X}:{(i >> 8) & 255:02X}:{i & 255:02X}"  # one per address
                _host(out, str(address), i, rng, rng.randint(1, 5), mac)
    out.write('<runstats><finished time="1763909000" timestr="x" elapsed="9000" exit="success"/>'
              f'<hosts up="{alive}" down="{total - alive}" total="{total}"/></runstats>\n</nmaprun>\n')  # fmt: skip
    return out.getvalue().encode()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("big.xml")
    print(f"{write(target)} open ports written to {target}")
