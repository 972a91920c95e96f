"""A small council estate written as nmap XML, for `posture import nmap` (data only: nothing is scanned).

The addresses are in 10.0.0.0/8 but no packet goes there: the file is read, not scanned. Hosts are built
from plain tuples so a test states exactly which ports were open in which "scan".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

# (port, name, product, version, extrainfo, cpes, smb-protocols dialects or None). smb-protocols is a host
# script: nmap writes it in <hostscript> after the host's <ports> and <os>, never inside a <port>. SMB1's
# dialects are what nmap 7.93 lists for Windows Server 2008 R2.
Port = tuple[int, str, str, str, str, tuple[str, ...], str | None]

RDP: Port = (3389, "ms-wbt-server", "Microsoft Terminal Services", "", "", ("cpe:/o:microsoft:windows",), None)
SMB1: Port = (445, "microsoft-ds", "Microsoft Windows Server 2008 R2 microsoft-ds", "", "", (),
              "NT LM 0.12 (SMBv1) [dangerous, but default]\n202\n210")  # fmt: skip
SSH_DEBIAN: Port = (22, "ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3", "protocol 2.0",
                    ("cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"), None)  # fmt: skip
NGINX: Port = (80, "http", "nginx", "1.22.1", "", ("cpe:/a:igor_sysoev:nginx:1.22.1",), None)
MYSQL: Port = (3306, "mysql", "MySQL", "8.0.36", "", ("cpe:/a:mysql:mysql:8.0.36",), None)
TELNET: Port = (23, "telnet", "Cisco router telnetd", "", "", ("cpe:/o:cisco:ios",), None)
SSH_CISCO: Port = (22, "ssh", "Cisco SSH", "1.25", "protocol 2.0", ("cpe:/o:cisco:ios",), None)
# nmap 7.93's nmap-service-probes, `match ms-sql-s` for SQL Server 2008 R2 SP3 (p/ v/ and cpe: as nmap writes them).
MSSQL_2008R2: Port = (1433, "ms-sql-s", "Microsoft SQL Server 2008 R2", "10.50.6000; SP3", "",
                      ("cpe:/a:microsoft:sql_server:2008_r2:sp3", "cpe:/o:microsoft:windows"), None)  # fmt: skip


@dataclass
class Host:
    ip: str
    mac: str
    ports: list[Port] = field(default_factory=list)
    os: tuple[str, str, str, str] | None = None  # (name, device type, family, cpe)
    hostname: str | None = None


WINDOWS_2008 = ("Microsoft Windows Server 2008 R2 SP1", "general purpose", "Windows",
                "cpe:/o:microsoft:windows_server_2008:r2:sp1")  # fmt: skip
CISCO_SWITCH = ("Cisco Catalyst 3560 switch (IOS 12.2)", "switch", "IOS", "cpe:/o:cisco:ios:12.2")
# nmap 7.93's nmap-os-db: "Fingerprint Microsoft Windows Server 2016" (Class Microsoft | Windows | 2016) and
# "Fingerprint Linux 2.6.18 (CentOS 5.2)" (Class Linux | Linux | 2.6.X), with their CPE lines.
WINDOWS_2016 = ("Microsoft Windows Server 2016", "general purpose", "Windows", "cpe:/o:microsoft:windows_server_2016")
CENTOS_5 = ("Linux 2.6.18 (CentOS 5.2)", "general purpose", "Linux", "cpe:/o:linux:linux_kernel:2.6.18")


def write_estate(path: Path, hosts: list[Host], when: float | None = None) -> Path:
    start = int(when if when is not None else time.time())
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<nmaprun scanner="nmap" args="nmap -sV -O" '
           f'start="{start}" version="7.93" xmloutputversion="1.05">\n'
           '<scaninfo type="syn" protocol="tcp" numservices="1000" services="1-1000"/>\n']  # fmt: skip
    for h in hosts:
        out.append(f'<host starttime="{start}" endtime="{start + 1}"><status state="up" reason="arp-response"/>\n')
        out.append(f'<address addr="{h.ip}" addrtype="ipv4"/><address addr="{h.mac}" addrtype="mac"/>\n')
        if h.hostname:
            out.append(f"<hostnames><hostname name={quoteattr(h.hostname)} type=\"PTR\"/></hostnames>")
        out.append("<ports>")
        dialects = next((smb.split("\n") for *_, smb in h.ports if smb), None)
        for port, name, product, version, extra, cpes, _smb in h.ports:
            attrs = f"name={quoteattr(name)} product={quoteattr(product)}"
            attrs += f" version={quoteattr(version)}" if version else ""
            attrs += f" extrainfo={quoteattr(extra)}" if extra else ""
            out.append(f'<port protocol="tcp" portid="{port}"><state state="open" reason="syn-ack"/>'
                       f'<service {attrs} method="probed" conf="10">{"".join(f"<cpe>{c}</cpe>" for c in cpes)}'
                       "</service></port>\n")  # fmt: skip
        out.append("</ports>")
        if h.os:
            name, dtype, family, cpe = h.os
            out.append(f'<os><osmatch name={quoteattr(name)} accuracy="96" line="1"><osclass type={quoteattr(dtype)} '
                       f'vendor="x" osfamily={quoteattr(family)} accuracy="96"><cpe>{cpe}</cpe></osclass>'
                       "</osmatch></os>")  # fmt: skip
        if dialects:  # as nmap 7.93 writes it (see tests/scanner/data/samba-smb1-hostscripts.xml)
            output = "\n  dialects: " + "".join(f"\n    {d}" for d in dialects)
            elems = "".join(f"\n<elem>{escape(d)}</elem>" for d in dialects)
            out.append(f'<hostscript><script id="smb-protocols" output={quoteattr(output)}><table key="dialects">'
                       f"{elems}\n</table>\n</script></hostscript>")  # fmt: skip
        out.append("</host>\n")
    out.append(f'<runstats><finished time="{start + 5}" elapsed="5" exit="success"/>'
               f'<hosts up="{len(hosts)}" down="0" total="{len(hosts)}"/></runstats></nmaprun>\n')  # fmt: skip
    path.write_text("".join(out), encoding="utf-8")
    return path
