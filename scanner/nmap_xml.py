"""Streaming reader for nmap's XML output, through defusedxml.

Each element is read as it ends and then let go, wherever it is nested: a `<port>` is made a `Service`
as it ends, a host's other children are read as they end, a `<host>` becomes a `HostObservation` and
goes with anything before it (so an extra wrapping element holds nothing), and the same for whatever
sits outside the hosts. Only the few elements a later one reads stay until then (a port's state,
service and scripts, a service's `<cpe>`s, an OS guess's classes), at most MAX_KEPT under any one
element; a host keeps at most MAX_SERVICES services. So memory stays flat on a file of any size and
shape (300,000 ports on one host, 200,000 hosts inside one extra element). Every `<cpe>` of a service
is kept (python-nmap keeps only the last). Entities, external references and billion-laughs bombs are
refused by defusedxml before they expand.

Every value is device- or file-supplied: numbers are read only within their real range (a port is
0-65535, a service's conf 0-10, an OS accuracy 0-100), addresses only if they are addresses. A port or
address that is not one is dropped and counted in the run's warnings; a number out of range elsewhere
is not stored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from scanner.compat import UTC
from scanner.errors import PostureError
from scanner.model import MAX_EVIDENCE, MAX_FIELD, HostObservation, NmapRun, OsMatch, Script, Service, bound

# Port states that mean something listens; closed and filtered ports are not services.
LISTENING_STATES = frozenset({"open", "open|filtered"})
MAX_OS_MATCHES = 10
MAX_SCRIPTS_PER_PORT = 20  # and per host, in <hostscript>
MAX_SCRIPT_NODES = 256  # <elem>s, and <table>s, kept under one <script> until it is read
MAX_SCRIPT_LINES = 64  # "key: value" lines kept of one script's structured output
MAX_SCRIPT_DEPTH = 8  # tables within tables read; nmap's scripts nest 2-3 deep
# Scripts whose structured output is larger by nature: (nodes, lines) kept instead. ssl-enum-ciphers lists
# every cipher of every protocol (a table and three elems each: 300 ciphers on an old server); ssl-cert's
# extensions (left out below) come before its signature and validity, and still count as nodes.
SCRIPT_BUDGETS = {"ssl-enum-ciphers": (4096, 1024), "ssl-cert": (1024, MAX_SCRIPT_LINES)}
# Parts of a script's output not kept: bulky and never read (ssl-cert's PEM, RSA modulus and extensions,
# which come before its signature algorithm and validity and would push them past the line budget).
SCRIPT_SKIPPED = {"ssl-cert": frozenset({"pem", "pubkey.modulus", "extensions", "md5"})}
SCRIPT_PARTS = frozenset({"elem", "table"})
CHUNK_BYTES = 1 << 16
MAX_DEPTH = 256  # nmap's documents nest about 10 deep; scripts' tables a few more
MAX_SERVICES = 2 * 65536  # per host: every TCP and every UDP port
MAX_KEPT = 32  # elements kept under one element until it is read (cpes, scripts, hostnames); addresses of a host
KEPT = frozenset({"state", "service", "script", "cpe", "hostname", "osmatch", "osclass"})
MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


class NmapXmlError(PostureError):
    """The file is not nmap XML we can trust: truncated, hostile or something else entirely."""


def ranged(value: str | None, low: int, high: int) -> int | None:
    """A decimal attribute as an int if it is one between `low` and `high`, else None. The digits are
    checked before int() sees them: no sign, no 5,000-digit number, no other script's digits."""
    if not value or len(value) > 20 or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if low <= number <= high else None


def epoch_to_iso(value: str | None) -> str | None:
    seconds = ranged(value, 0, 253402300799)  # up to the last second of year 9999
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return None


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
        self.dropped: Counter[str] = Counter()  # what was not read, and how often: the run's warnings

    def __iter__(self) -> Iterator[HostObservation]:
        try:
            yield from self._read()
        except ET.ParseError as exc:
            # Damage after whole hosts (nmap's own `</host><<host`, a scan killed mid-write): the hosts read
            # so far are complete and true, so they are kept and the damage is said; before any, refused.
            line, column = getattr(exc, "position", (0, 0))
            if not self.hosts_seen:
                raise NmapXmlError(
                    f"{self._name} is not well-formed XML at line {line}, column {column}: {exc}",
                    "the file is truncated or damaged; rerun nmap with -oX",
                ) from exc
            what = bound(str(exc).rsplit(": line ", 1)[0], 80)  # expat's words, without the position again
            damage = (f"{self._name} is damaged at line {line}, column {column} ({what}): kept the "
                      f"{self.hosts_seen:,} complete hosts before it; the rest of the file was not read")  # fmt: skip
            self.run = dataclasses.replace(self.run, damage=damage)
        except DefusedXmlException as exc:
            raise NmapXmlError(
                f"{self._name} was refused: {type(exc).__name__} (entities, DTD tricks or external references)",
                "nmap never writes these; the file has been tampered with",
            ) from exc
        except (LookupError, ValueError) as exc:  # an encoding expat does not know, or cannot read
            raise NmapXmlError(f"{self._name} cannot be read: {bound(str(exc), 200)}",
                               "nmap writes UTF-8; rerun nmap with -oX") from exc  # fmt: skip
        warnings = [f"{self._name}: dropped {n:,} {what}" for what, n in sorted(self.dropped.items())]
        if self.run.damage:
            warnings.append(self.run.damage)
        if warnings:
            self.run = dataclasses.replace(self.run, warnings=tuple(warnings))

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
        open_elements: list[Any] = [None]  # the path from the root to the element being read, under a None
        push, pop = open_elements.append, open_elements.pop
        host: _HostParts | None = None
        host_elem: Any = None
        script_nodes = {"elem": 0, "table": 0}  # kept of the script being read (each up to MAX_SCRIPT_NODES)
        node_budget = MAX_SCRIPT_NODES  # of the script being read (SCRIPT_BUDGETS)
        elem: Any
        while data:
            parser.feed(data)
            for event, elem in parser.read_events():  # type: ignore[misc]
                if event == "start":
                    push(elem)
                    if elem.tag == "host":
                        if host_elem is not None:
                            raise NmapXmlError(f"{self._name}: a <host> inside a <host>", "nmap never writes this")
                        host = _HostParts(elem, self.dropped)
                        host_elem = elem
                    elif elem.tag == "script" and getattr(open_elements[-2], "tag", None) in ("port", "hostscript"):
                        script_nodes = {"elem": 0, "table": 0}  # a new script's budget: only where nmap puts scripts
                        node_budget = SCRIPT_BUDGETS.get(elem.get("id"), (MAX_SCRIPT_NODES, 0))[0]
                    continue
                pop()
                parent = open_elements[-1]
                # A parent whose children are each read as they end (anything outside a host, a host, its
                # <ports>) loses them in bulk; elsewhere a child is kept for its parent's reading or removed.
                # Detaching an element from the tree never loses it: the events hold it, and the parser
                # still fills one that has not ended yet.
                if host is None:
                    if parent is None:
                        continue  # the root: the end of the document
                    if elem.tag == "finished":
                        self.run = dataclasses.replace(
                            self.run,
                            finished_at=epoch_to_iso(elem.get("time")),
                            exit_status=bound(elem.get("exit"), 40),
                            error=bound(elem.get("errormsg"), MAX_EVIDENCE),
                        )
                elif elem.tag in SCRIPT_PARTS and parent.tag in ("script", "table"):
                    # Tables count apart from elems, so a table ending after its many elems is still kept.
                    if script_nodes[elem.tag] < node_budget and (elem.tag == "elem" or len(elem)):
                        script_nodes[elem.tag] += 1
                        continue  # read with its script, when that ends
                    if elem.tag == "elem" or len(elem):  # an empty table is no loss
                        self.dropped[f"script <{elem.tag}>s over {node_budget} in one script"] += 1
                    parent.remove(elem)
                    continue
                elif elem.tag in KEPT and parent is not host_elem and len(parent) <= MAX_KEPT:
                    continue  # read with its parent, when that ends
                elif elem is host_elem:
                    self.hosts_seen += 1
                    observation = host.observation(self.run.started_at)
                    host = host_elem = None
                    del parent[:]  # the host, and anything before it
                    if observation is not None:
                        yield observation
                    continue
                elif parent is host_elem:
                    host.child(elem)
                elif parent.tag == "ports" and open_elements[-2] is host_elem:
                    if elem.tag == "port":
                        host.port(elem)
                else:
                    parent.remove(elem)  # of no use; found at once (the kept ones are few and first)
                    continue
                if len(parent) > MAX_KEPT:
                    del parent[:]
            if len(open_elements) > MAX_DEPTH + 1:  # checked once a chunk: open elements are all that is left in memory
                raise NmapXmlError(f"{self._name}: elements nested over {MAX_DEPTH} deep",
                                   "nmap never writes this; the file has been tampered with")  # fmt: skip
            data = self._source.read(CHUNK_BYTES)
        parser.close()


def _attrs(elem: Any, limit: int = MAX_FIELD) -> dict[str, str]:
    """An element's attributes, each bounded (one pass, not one call per field: imports are hot)."""
    return {k: v if len(v) <= limit else bound(v, limit) or "" for k, v in elem.attrib.items()}


def _cpes(elem: Any) -> tuple[str, ...]:
    found = [c.text.strip()[:256] for c in elem if c.tag == "cpe" and c.text]
    return tuple(dict.fromkeys(found)) if len(found) > 1 else tuple(found)


def _address(kind: str | None, value: str | None) -> str | None:
    """An <address> value if it is one of its kind (canonical form), else None."""
    if not value or len(value) > 64:
        return None
    if kind == "mac":
        value = value.lower()
        return value if MAC_RE.fullmatch(value) else None
    if kind == "ipv4":
        try:  # inet_pton takes only the canonical dotted quad, and is ten times quicker than ipaddress
            socket.inet_pton(socket.AF_INET, value)
        except OSError:
            return None
        return value
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(ip) if ip.version == 6 else None


class _HostParts:
    """What has been read of one <host> so far: each child is read as it ends, then dropped."""

    __slots__ = ("addresses", "dropped", "elem", "hostnames", "mac_vendor", "os_matches", "ports_scanned", "scripts",
                 "services", "status", "uptime")  # fmt: skip

    def __init__(self, elem: Any, dropped: Counter[str]) -> None:
        self.elem = elem
        self.dropped = dropped
        self.status = "unknown"
        self.addresses: list[tuple[str, str]] = []
        self.hostnames: list[str] = []
        self.services: list[Service] = []
        self.os_matches: list[OsMatch] = []
        self.mac_vendor: str | None = None
        self.uptime: int | None = None
        self.ports_scanned = False
        self.scripts: list[Script] = []

    def port(self, p: Any) -> None:
        service = _service(p)
        if service is None:
            if p.get("portid") is not None and ranged(p.get("portid"), 0, 65535) is None:
                self.dropped["ports numbered outside 0-65535"] += 1
        elif len(self.services) >= MAX_SERVICES:
            self.dropped[f"open ports over {MAX_SERVICES:,} on one host"] += 1
        else:
            self.services.append(service)

    def child(self, child: Any) -> None:
        tag = child.tag
        if tag == "ports":
            self.ports_scanned = True
        elif tag == "address":
            kind = child.get("addrtype")
            if kind in ("ipv4", "ipv6", "mac"):
                value = _address(kind, child.get("addr"))
                if value is None:
                    self.dropped[f"{kind} addresses that are not valid"] += 1
                elif len(self.addresses) >= MAX_KEPT:
                    self.dropped[f"addresses over {MAX_KEPT} on one host"] += 1
                else:
                    self.addresses.append((kind, value))
                    if kind == "mac" and child.get("vendor"):
                        self.mac_vendor = bound(child.get("vendor"), 128)
        elif tag == "status":
            self.status = bound(child.get("state", "unknown"), 40) or "unknown"
        elif tag == "hostnames":
            for h in child:
                name = (h.get("name") or "").lower()[:253]
                if name and name not in self.hostnames and len(self.hostnames) < MAX_KEPT:
                    self.hostnames.append(name)
        elif tag == "os":
            self.os_matches = _os_guesses(child)
        elif tag == "uptime":
            self.uptime = ranged(child.get("seconds"), 0, 10**10)
        elif tag == "hostscript":  # nmap writes SMB, NetBIOS and MS-SQL results here, after <ports>
            self.scripts = [_script(s) for s in child if s.tag == "script"][:MAX_SCRIPTS_PER_PORT]

    def observation(self, fallback_time: str | None) -> HostObservation | None:
        if self.status != "up" or not self.addresses:
            return None
        elem = self.elem
        return HostObservation(
            status=self.status,
            addresses=tuple(self.addresses),
            hostnames=tuple(self.hostnames) or script_hostnames(self.scripts),
            mac_vendor=self.mac_vendor,
            services=tuple(self.services),
            os_matches=tuple(self.os_matches),
            ports_scanned=self.ports_scanned,
            observed_at=epoch_to_iso(elem.get("endtime")) or epoch_to_iso(elem.get("starttime")) or fallback_time,
            uptime_seconds=self.uptime,
            scripts=tuple(self.scripts),
        )


_DNS_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?){0,8}")
_NETBIOS_NAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,14}")  # a computer's NetBIOS name as a host label
_NBSTAT_NAME = re.compile(r"NetBIOS name: ([^,\s]{1,15}),")


def script_hostnames(scripts: list[Script]) -> tuple[str, ...]:
    """A name for a host that has no DNS name, from what it says of itself: smb-os-discovery's FQDN (`fqdn`),
    else its NetBIOS computer name (smb-os-discovery's `server`, else nbstat's `NetBIOS name: LABSMB, ...`).

    Only a name that is a valid DNS name (at most 9 labels) or NetBIOS name (15 characters) is taken,
    lower-cased as nmap's names are; anything else (control characters, spaces, a 1 MB answer) stays in the
    script's stored output only. Samba writes the NetBIOS name with a trailing `\\x00`, which is cut.
    """
    by_id = {s.id: s for s in scripts}
    elems = dict(line.split(": ", 1) for line in (by_id["smb-os-discovery"].data if "smb-os-discovery" in by_id
                                                   else ()) if ": " in line)  # fmt: skip
    nbstat = _NBSTAT_NAME.match(by_id["nbstat"].output[:200]) if "nbstat" in by_id else None
    candidates = ((elems.get("fqdn"), _DNS_NAME), (elems.get("server"), _NETBIOS_NAME),
                  (nbstat.group(1) if nbstat else None, _NETBIOS_NAME))  # fmt: skip
    for name, shape in candidates:
        name = (name or "").removesuffix("\\x00").lower()
        if name and shape.fullmatch(name) and name not in ("localhost", "workgroup"):
            return (name,)
    return ()


def _os_guesses(os_elem: Any) -> list[OsMatch]:
    """A host's OS guesses from `<os>`, in either of nmap's layouts, best first.

    From nmap 5.20 each `<osmatch>` holds its `<osclass>`es (with `<cpe>`s). Before, the classes sat beside
    the matches, each with the accuracy of its best match: a class goes with the first match of its
    accuracy, as the newer layout would have written it, and a class with no such match is a guess of its
    own. Either way a class without a `<cpe>` (nmap 4.x wrote none) gets the one nmap writes now, where
    OLD_CLASS_CPES knows it, so identification reads both layouts the same way.
    """
    matches = [om for om in os_elem if om.tag == "osmatch"]
    loose = [oc for oc in os_elem if oc.tag == "osclass"]  # the pre-5.20 layout
    if not loose:
        return [_os_match(om.get("name"), om.get("accuracy"), [oc for oc in om if oc.tag == "osclass"])
                for om in matches[:MAX_OS_MATCHES]]  # fmt: skip
    paired: dict[int, list[Any]] = {}
    alone: list[Any] = []
    for oc in loose:
        home = next((i for i, om in enumerate(matches) if om.get("accuracy") == oc.get("accuracy")), None)
        if home is None:
            alone.append(oc)
        else:
            paired.setdefault(home, []).append(oc)
    guesses = [_os_match(om.get("name"), om.get("accuracy"), paired.get(i, [])) for i, om in enumerate(matches)]
    guesses += [_os_match(_class_name(oc), oc.get("accuracy"), [oc]) for oc in alone]
    guesses.sort(key=lambda g: -g.accuracy)  # stable: nmap's own order within one accuracy
    return guesses[:MAX_OS_MATCHES]


def _class_name(oc: Any) -> str:
    return " ".join(v for v in (oc.get("vendor"), oc.get("osfamily"), oc.get("osgen")) if v)


# The CPE nmap 5.20+ writes for an OS class, for the classes of older files (which have no <cpe>):
# (vendor, osfamily, osgen) as nmap-os-db's `Class` lines spell them, lower-cased -> the CPE nmap-os-db gives
# that class (without a version nmap's generation does not name: 12.X -> ios:12). Each row is checked against
# nmap's own database by tests/scanner/test_nmap_old_and_damaged.py. Only families of old estates are here.
OLD_CLASS_CPES: dict[tuple[str, str, str], str] = {
    ("microsoft", "windows", "nt"): "cpe:/o:microsoft:windows_nt",
    ("microsoft", "windows", "2000"): "cpe:/o:microsoft:windows_2000",
    ("microsoft", "windows", "xp"): "cpe:/o:microsoft:windows_xp",
    ("microsoft", "windows", "2003"): "cpe:/o:microsoft:windows_server_2003",
    ("microsoft", "windows", "vista"): "cpe:/o:microsoft:windows_vista",
    ("microsoft", "windows", "2008"): "cpe:/o:microsoft:windows_server_2008",
    ("microsoft", "windows", "7"): "cpe:/o:microsoft:windows_7",
    ("cisco", "ios", "11.x"): "cpe:/o:cisco:ios:11",
    ("cisco", "ios", "12.x"): "cpe:/o:cisco:ios:12",
    ("sun", "solaris", "8"): "cpe:/o:sun:sunos:5.8",
    ("sun", "solaris", "9"): "cpe:/o:sun:sunos:5.9",
    ("sun", "solaris", "10"): "cpe:/o:sun:sunos:5.10",
    ("oracle", "solaris", "10"): "cpe:/o:oracle:solaris:10",
    ("oracle", "solaris", "11"): "cpe:/o:oracle:solaris:11",
    ("ibm", "aix", "5.x"): "cpe:/o:ibm:aix:5",
    ("ibm", "aix", "6.x"): "cpe:/o:ibm:aix:6",
    ("hp", "hp-ux", "11.x"): "cpe:/o:hp:hp-ux:11",
}


WINDOWS_SP = re.compile(r"\bSP(\d)\b")  # "Windows Server 2003 SP2"; "SP1 or SP2" names no one service pack


def _os_match(name: str | None, accuracy: str | None, classes: list[Any]) -> OsMatch:
    first = _attrs(classes[0], 128) if classes else {}
    found: list[str] = []
    for oc in classes:
        cpes = _cpes(oc)
        if not cpes:
            key = (oc.get("vendor", ""), oc.get("osfamily", ""), oc.get("osgen", ""))
            old = OLD_CLASS_CPES.get((key[0][:40].lower(), key[1][:40].lower(), key[2][:40].lower()))
            packs = WINDOWS_SP.findall((name or "")[:256]) if old and old.startswith("cpe:/o:microsoft:") else []
            cpes = (f"{old}::sp{packs[0]}" if len(packs) == 1 else old,) if old else ()  # as nmap writes it
        found.extend(cpes)
    return OsMatch(
        name=bound(name, 256) or "",
        accuracy=ranged(accuracy, 0, 100) or 0,
        vendor=first.get("vendor"),
        family=first.get("osfamily"),
        generation=first.get("osgen"),
        device_type=first.get("type"),
        cpes=tuple(dict.fromkeys(found)),
    )


def _service(p: Any) -> Service | None:
    """A listening port as a Service; None for closed or filtered ports, which are not services."""
    state = None
    service = None
    scripts: list[Script] = []
    for child in p:
        tag = child.tag
        if tag == "state":
            state = child.get("state")
        elif tag == "service":
            service = child
        elif tag == "script" and len(scripts) < MAX_SCRIPTS_PER_PORT:
            scripts.append(_script(child))
    port = ranged(p.get("portid"), 0, 65535)
    if state not in LISTENING_STATES or port is None:
        return None
    assert state is not None
    protocol = p.get("protocol", "tcp")[:8]
    if service is None:
        return Service(port, protocol, state, scripts=tuple(scripts))
    a = service.attrib
    if any(len(v) > MAX_FIELD for v in a.values()):
        a = _attrs(service)
    get = a.get
    # Positional, in Service's field order: this runs once per open port of every import.
    return Service(
        port, protocol, state, get("name"), get("product"), get("version"), get("extrainfo"), get("tunnel"),
        get("method"), ranged(get("conf"), 0, 10), get("ostype"), get("devicetype"), _cpes(service), tuple(scripts),
    )  # fmt: skip


def _script(elem: Any) -> Script:
    """A `<script>`: id, output, and its `<elem>`/`<table>` content as bounded "key: value" lines."""
    lines: list[str] = []
    script_id = bound(elem.get("id"), 64) or ""
    limit = SCRIPT_BUDGETS.get(script_id, (0, MAX_SCRIPT_LINES))[1]
    _flatten(elem, "", 0, lines, limit, SCRIPT_SKIPPED.get(script_id, frozenset()))
    return Script(script_id, bound(elem.get("output"), MAX_EVIDENCE) or "", tuple(lines))


def _flatten(table: Any, prefix: str, depth: int, lines: list[str], limit: int, skipped: frozenset[str]) -> None:
    """Append a table's elems as "a.b: value" lines (keys joined down the tables; an unkeyed elem takes its
    table's key, so smb-protocols gives one "dialects: ..." line a dialect); deeper than MAX_SCRIPT_DEPTH,
    past `limit` lines and the `skipped` paths are left out."""
    for child in table:
        if len(lines) >= limit:
            return
        key = bound(child.get("key"), 64) or ""
        path = f"{prefix}.{key}" if prefix and key else key or prefix
        if path in skipped:
            continue
        if child.tag == "elem":
            text = bound((child.text or "").strip(), 256) or ""
            lines.append(f"{path}: {text}" if path else text)
        elif child.tag == "table" and depth < MAX_SCRIPT_DEPTH:
            _flatten(child, path, depth + 1, lines, limit, skipped)
