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
from scanner.model import MAX_EVIDENCE, MAX_FIELD, HostObservation, NmapRun, OsMatch, Service, bound

# Port states that mean something listens; closed and filtered ports are not services.
LISTENING_STATES = frozenset({"open", "open|filtered"})
MAX_OS_MATCHES = 10
MAX_SCRIPTS_PER_PORT = 20
CHUNK_BYTES = 1 << 16


class NmapXmlError(PostureError):
    """The file is not nmap XML we can trust: truncated, hostile or something else entirely."""


def epoch_to_iso(value: str | None) -> str | None:
    if not value or not value.isdigit():
        return None
    return datetime.fromtimestamp(int(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Recorder:
    """A file wrapper that keeps what it hands out, so the same bytes can be parsed a second time."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.kept: list[bytes] = []

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.kept.append(data)
        return data


def _gate(fh: IO[bytes]) -> tuple[Any, bytes] | None:
    """Let defusedxml read the prolog; return the root element and the bytes it consumed.

    Entities can only be declared in the prolog, before the root element starts. defusedxml reads the
    document up to the root's start tag and refuses any entity declaration or external reference there;
    once it has passed, nothing later can declare one (an undeclared `&x;` is a plain parse error), so the
    rest is read by the C-accelerated parser. defusedxml's own iterparse runs the pure-Python parser over
    the whole file and would make an import twice as slow.
    """
    recorder = _Recorder(fh)
    gate = DET.iterparse(recorder, events=("start",), forbid_dtd=False, forbid_entities=True, forbid_external=True)
    first = next(iter(gate), None)
    return None if first is None else (first[1], b"".join(recorder.kept))


class NmapXmlReader:
    """Iterate the hosts of one nmap XML document; `run` is filled in as the header and footer pass."""

    def __init__(self, source: IO[bytes], name: str = "nmap XML") -> None:
        self._source = source
        self._name = name
        self.run = NmapRun(args=None, version=None, started_at=None)
        self.hosts_seen = 0

    def __iter__(self) -> Iterator[HostObservation]:
        try:
            yield from self._read()
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

    def _read(self) -> Iterator[HostObservation]:
        gated = _gate(self._source)
        if gated is None:
            raise NmapXmlError(f"{self._name} is empty", "give a file written by nmap -oX")
        header, data = gated
        if header.tag != "nmaprun":
            raise NmapXmlError(
                f"{self._name} is not nmap XML output (root element <{bound(header.tag, 40)}>)",
                "give a file written by nmap -oX",
            )
        self.run = NmapRun(
            args=bound(header.get("args"), MAX_EVIDENCE),
            version=bound(header.get("version"), 40),
            started_at=epoch_to_iso(header.get("start")),
        )
        parser: ET.XMLPullParser[Any] = ET.XMLPullParser(events=("start", "end"))
        root: Any = None
        elem: Any
        while data:
            parser.feed(data)
            for event, elem in parser.read_events():  # type: ignore[misc]
                if event == "start":
                    if root is None:
                        root = elem
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
            data = self._source.read(CHUNK_BYTES)
        parser.close()


def _attrs(elem: Any, limit: int = MAX_FIELD) -> dict[str, str]:
    """An element's attributes, each bounded (one pass, not one call per field: imports are hot)."""
    return {k: v if len(v) <= limit else bound(v, limit) or "" for k, v in elem.attrib.items()}


def _cpes(elem: Any) -> tuple[str, ...]:
    found = [c.text.strip()[:256] for c in elem if c.tag == "cpe" and c.text]
    return tuple(dict.fromkeys(found)) if len(found) > 1 else tuple(found)


def _host(elem: Any, fallback_time: str | None) -> HostObservation | None:
    status = "unknown"
    addresses: list[tuple[str, str]] = []
    hostnames: list[str] = []
    services: list[Service] = []
    os_matches: list[OsMatch] = []
    mac_vendor = None
    uptime = None
    ports_scanned = False
    for child in elem:
        tag = child.tag
        if tag == "ports":
            ports_scanned = True
            for p in child:
                if p.tag == "port":
                    service = _service(p)
                    if service is not None:
                        services.append(service)
        elif tag == "address":
            kind, value = child.get("addrtype"), child.get("addr")
            if kind in ("ipv4", "ipv6", "mac") and value:
                addresses.append((kind, value.lower()[:64]))
                if kind == "mac" and child.get("vendor"):
                    mac_vendor = bound(child.get("vendor"), 128)
        elif tag == "status":
            status = child.get("state", "unknown")
        elif tag == "hostnames":
            for h in child:
                name = (h.get("name") or "").lower()[:253]
                if name and name not in hostnames:
                    hostnames.append(name)
        elif tag == "os":
            os_matches = [_os_match(om) for om in child if om.tag == "osmatch"][:MAX_OS_MATCHES]
        elif tag == "uptime":
            uptime = _int(child.get("seconds"))
    if status != "up" or not addresses:
        return None
    return HostObservation(
        status=status,
        addresses=tuple(addresses),
        hostnames=tuple(hostnames),
        mac_vendor=mac_vendor,
        services=tuple(services),
        os_matches=tuple(os_matches),
        ports_scanned=ports_scanned,
        observed_at=epoch_to_iso(elem.get("endtime")) or epoch_to_iso(elem.get("starttime")) or fallback_time,
        uptime_seconds=uptime,
    )


def _os_match(om: Any) -> OsMatch:
    classes = [c for c in om if c.tag == "osclass"]
    first = _attrs(classes[0], 128) if classes else {}
    cpes = tuple(dict.fromkeys(c for oc in classes for c in _cpes(oc)))
    return OsMatch(
        name=bound(om.get("name"), 256) or "",
        accuracy=_int(om.get("accuracy")) or 0,
        vendor=first.get("vendor"),
        family=first.get("osfamily"),
        generation=first.get("osgen"),
        device_type=first.get("type"),
        cpes=cpes,
    )


def _service(p: Any) -> Service | None:
    """A listening port as a Service; None for closed or filtered ports, which are not services."""
    state = None
    service = None
    scripts: list[tuple[str, str]] = []
    for child in p:
        tag = child.tag
        if tag == "state":
            state = child.get("state")
        elif tag == "service":
            service = child
        elif tag == "script" and len(scripts) < MAX_SCRIPTS_PER_PORT:
            scripts.append((bound(child.get("id"), 64) or "", bound(child.get("output"), MAX_EVIDENCE) or ""))
    if state not in LISTENING_STATES:
        return None
    assert state is not None
    port, protocol = _int(p.get("portid")) or 0, p.get("protocol", "tcp")[:8]
    if service is None:
        return Service(port, protocol, state, scripts=tuple(scripts))
    a = service.attrib
    if any(len(v) > MAX_FIELD for v in a.values()):
        a = _attrs(service)
    get = a.get
    # Positional, in Service's field order: this runs once per open port of every import.
    return Service(
        port, protocol, state, get("name"), get("product"), get("version"), get("extrainfo"), get("tunnel"),
        get("method"), _int(get("conf")), get("ostype"), get("devicetype"), _cpes(service), tuple(scripts),
    )  # fmt: skip


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
