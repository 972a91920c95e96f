"""Streaming reader for nmap's XML output, through defusedxml.

One host element is built, turned into a `HostObservation` and thrown away, so memory stays flat on a
file of any size. Every `<cpe>` of a service is kept (python-nmap keeps only the last). Entities, external
references and billion-laughs bombs are refused by defusedxml before they expand.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from scanner.errors import PostureError
from scanner.model import MAX_EVIDENCE, HostObservation, NmapRun, OsMatch, Service, bound

# Port states that mean something listens; closed and filtered ports are not services.
LISTENING_STATES = frozenset({"open", "open|filtered"})
MAX_OS_MATCHES = 10
MAX_SCRIPTS_PER_PORT = 20


class NmapXmlError(PostureError):
    """The file is not nmap XML we can trust: truncated, hostile or something else entirely."""


def epoch_to_iso(value: str | None) -> str | None:
    if not value or not value.isdigit():
        return None
    return datetime.fromtimestamp(int(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NmapXmlReader:
    """Iterate the hosts of one nmap XML document; `run` is filled in as the header and footer pass."""

    def __init__(self, source: str | IO[bytes], name: str = "nmap XML") -> None:
        self._source = source
        self._name = name
        self.run = NmapRun(args=None, version=None, started_at=None)
        self.hosts_seen = 0

    def __iter__(self) -> Iterator[HostObservation]:
        root: Any = None
        try:
            events = DET.iterparse(
                self._source, events=("start", "end"), forbid_dtd=False, forbid_entities=True, forbid_external=True
            )
            for event, elem in events:
                if event == "start":
                    if root is None:
                        root = elem
                        if elem.tag != "nmaprun":
                            raise NmapXmlError(
                                f"{self._name} is not nmap XML output (root element <{bound(elem.tag, 40)}>)",
                                "give a file written by nmap -oX",
                            )
                        self.run = NmapRun(
                            args=bound(elem.get("args"), MAX_EVIDENCE),
                            version=bound(elem.get("version"), 40),
                            started_at=epoch_to_iso(elem.get("start")),
                        )
                    continue
                tag = elem.tag
                if tag == "host":
                    self.hosts_seen += 1
                    observation = _host(elem, self.run.started_at)
                    root.clear()  # drop the finished host (and any earlier siblings): flat memory
                    if observation is not None:
                        yield observation
                elif tag == "finished":
                    self.run = NmapRun(
                        args=self.run.args,
                        version=self.run.version,
                        started_at=self.run.started_at,
                        finished_at=epoch_to_iso(elem.get("time")),
                        exit_status=bound(elem.get("exit"), 40),
                        error=bound(elem.get("errormsg"), MAX_EVIDENCE),
                    )
        except DefusedXmlException as exc:
            raise NmapXmlError(
                f"{self._name} was refused: {type(exc).__name__} (entities, DTD tricks or external references)",
                "nmap never writes these; the file has been tampered with",
            ) from exc
        except ET.ParseError as exc:
            line, column = getattr(exc, "position", (0, 0))
            raise NmapXmlError(
                f"{self._name} is not well-formed XML at line {line}, column {column}: {exc}",
                "the file is truncated or damaged; rerun nmap with -oX",
            ) from exc
        if root is None:
            raise NmapXmlError(f"{self._name} is empty", "give a file written by nmap -oX")


def _host(elem: Any, fallback_time: str | None) -> HostObservation | None:
    status_elem = elem.find("status")
    status = status_elem.get("state", "unknown") if status_elem is not None else "unknown"
    if status != "up":
        return None
    addresses: list[tuple[str, str]] = []
    mac_vendor = None
    for a in elem.iterfind("address"):
        kind, value = a.get("addrtype"), a.get("addr")
        if kind in ("ipv4", "ipv6", "mac") and value:
            value = value.lower()[:64]
            addresses.append((kind, value))
            if kind == "mac" and a.get("vendor"):
                mac_vendor = bound(a.get("vendor"), 128)
    if not addresses:
        return None
    hostnames: list[str] = []
    for h in elem.iterfind("hostnames/hostname"):
        name = h.get("name")
        if name:
            name = name.lower()[:253]
            if name not in hostnames:
                hostnames.append(name)

    ports_elem = elem.find("ports")
    services: list[Service] = []
    if ports_elem is not None:
        for p in ports_elem.iterfind("port"):
            state_elem = p.find("state")
            state = state_elem.get("state") if state_elem is not None else None
            if state not in LISTENING_STATES:
                continue
            services.append(_service(p, state))

    os_matches: list[OsMatch] = []
    for om in elem.iterfind("os/osmatch"):
        if len(os_matches) >= MAX_OS_MATCHES:
            break
        classes = om.findall("osclass")
        first = classes[0] if classes else None
        cpes = tuple(
            dict.fromkeys(bound(c.text.strip(), 256) or "" for oc in classes for c in oc.iterfind("cpe") if c.text)
        )
        os_matches.append(
            OsMatch(
                name=bound(om.get("name"), 256) or "",
                accuracy=_int(om.get("accuracy")) or 0,
                vendor=bound(first.get("vendor"), 128) if first is not None else None,
                family=bound(first.get("osfamily"), 128) if first is not None else None,
                generation=bound(first.get("osgen"), 64) if first is not None else None,
                device_type=bound(first.get("type"), 64) if first is not None else None,
                cpes=cpes,
            )
        )
    uptime = elem.find("uptime")
    return HostObservation(
        status=status,
        addresses=tuple(addresses),
        hostnames=tuple(hostnames),
        mac_vendor=mac_vendor,
        services=tuple(services),
        os_matches=tuple(os_matches),
        ports_scanned=ports_elem is not None,
        observed_at=epoch_to_iso(elem.get("endtime")) or epoch_to_iso(elem.get("starttime")) or fallback_time,
        uptime_seconds=_int(uptime.get("seconds")) if uptime is not None else None,
    )


def _service(p: Any, state: str) -> Service:
    s = p.find("service")
    scripts = tuple(
        (bound(sc.get("id"), 64) or "", bound(sc.get("output"), MAX_EVIDENCE) or "")
        for sc in p.findall("script")[:MAX_SCRIPTS_PER_PORT]
    )
    if s is None:
        return Service(
            port=_int(p.get("portid")) or 0, protocol=p.get("protocol", "tcp")[:8], state=state, scripts=scripts
        )
    return Service(
        port=_int(p.get("portid")) or 0,
        protocol=p.get("protocol", "tcp")[:8],
        state=state,
        name=bound(s.get("name"), 64),
        product=bound(s.get("product")),
        version=bound(s.get("version")),
        extra_info=bound(s.get("extrainfo")),
        tunnel=bound(s.get("tunnel"), 16),
        method=bound(s.get("method"), 16),
        confidence=_int(s.get("conf")),
        os_type=bound(s.get("ostype"), 128),
        device_type=bound(s.get("devicetype"), 64),
        cpes=tuple(dict.fromkeys(bound(c.text.strip(), 256) or "" for c in s.iterfind("cpe") if c.text)),
        scripts=scripts,
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
