"""Importers: existing nmap XML files and the council's asset register (CSV).

Each import is one transaction: a hostile file, or one damaged before its first complete host, leaves the
inventory exactly as it was, and the scan row records why the import failed. A file damaged later (nmap's
own `</host><<host`, a scan killed mid-write) keeps every complete host before the damage: the scan row is
complete, its `error` column says where the file stopped being read, and the CLI warns.
"""

from __future__ import annotations

import csv
import gc
import ipaddress
import itertools
import json
import multiprocessing
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from scanner.errors import Interrupted, PostureError
from scanner.inputs import csv_rows, decoded_lines, header_duplicate, read_bounded
from scanner.model import MAX_FIELD, NmapRun, RegisterEntry, bound
from scanner.nmap_xml import NmapXmlError, NmapXmlReader
from scanner.proc import dies_with_parent
from scanner.store import IngestStats, PreparedHost, Store, prepare_host
from scanner.targets import HOSTNAME_RE

MAX_REGISTER_BYTES = 64 * 1024 * 1024
SNIFF_LINES = 50  # the first lines, from which the delimiter is guessed
PIPE_BATCH = 1000  # hosts per message from the reader process

# Header spellings seen in council registers and CMDB exports, after lower-casing and folding _ and -.
REGISTER_COLUMNS: dict[str, tuple[str, ...]] = {
    "address": (
        "address",
        "addresses",
        "ip",
        "ip address",
        "ip addresses",
        "ipaddress",
        "ipv4",
        "ipv4 address",
        "ipv6",
        "ipv6 address",
        "primary ip",
    ),
    "hostname": (
        "hostname",
        "hostnames",
        "host",
        "host name",
        "fqdn",
        "dns name",
        "computer name",
        "device name",
        "name",
        "asset name",
    ),
    "owner": ("owner", "asset owner", "owner team", "responsible", "responsible team", "information asset owner"),
    "business_service": ("business service", "service", "business services", "application", "system"),
    "site": ("site", "location", "building"),
    "criticality": ("criticality", "business criticality", "tier", "impact"),
    "cost_centre": ("cost centre", "cost center", "cost code", "costcentre", "costcenter", "budget code"),
}


@dataclass
class ImportResult:
    scan_id: int
    stats: IngestStats
    warnings: list[str] = field(default_factory=list)


def require_file(path: Path) -> None:
    """A file to import is there and is a file: checked by the commands before they open (or make) the
    inventory, so a mistyped path makes nothing."""
    if not path.exists():
        raise PostureError(f"no such file: {path}", "check the path")
    if not path.is_file():
        raise PostureError(f"{path} is not a file", "give the path of a file")


def _counted(hosts: Iterator[PreparedHost], progress: Callable[[int], None]) -> Iterator[PreparedHost]:
    for n, host in enumerate(hosts, 1):
        progress(n)
        yield host


def import_nmap_xml(
    store: Store, path: Path, progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Stream an `nmap -oX` file into the inventory, all or nothing (up to any damage after complete hosts,
    see the module's docstring); `progress(hosts)` after every host read (the caller decides what to show:
    scanner/progress.py)."""
    require_file(path)
    scan_id = store.start_scan("nmap-import", "nmap", input_file=str(path))
    note: list[str] = []
    with _recorded(store, scan_id, path, note), _no_gc_pauses(), store.transaction() as conn:
        reader = ForkedNmapXmlReader(path)
        hosts = iter(reader) if progress is None else _counted(iter(reader), progress)
        stats = store.ingest_prepared(scan_id, "nmap", hosts)
        conn.execute(
            "UPDATE scans SET hosts_done = ?, hosts_up = ?, hosts_total = ?, tool_version = ?, options = ? "
            "WHERE id = ?",
            (
                reader.hosts_seen,
                stats.hosts,
                reader.hosts_seen,
                reader.run.version,
                json.dumps({"nmap_command": reader.run.args}),
                scan_id,
            ),
        )
        if reader.run.damage:
            note.append(reader.run.damage)
    return ImportResult(scan_id, stats, list(reader.run.warnings))


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """An import allocates millions of short-lived tuples and no cycles: the cyclic collector only costs
    time here (about a tenth of the import), so it waits until the import is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _recorded(store: Store, scan_id: int, path: Path, note: list[str] | None = None) -> Iterator[None]:
    """Close the import's scan row as complete, failed or interrupted, whatever happens inside; a complete
    row keeps what `note` holds by then (the damage a partly read file had) in its `error` column."""
    try:
        yield
    except PostureError as exc:
        store.finish_scan(scan_id, "failed", exc.message)
        raise
    except KeyboardInterrupt:
        store.finish_scan(scan_id, "interrupted", "stopped by a signal; nothing from this file was kept")
        raise Interrupted(f"import of {path} interrupted; nothing from it was kept") from None
    except Exception as exc:  # a surprise still closes the scan row: never left `running`
        store.finish_scan(scan_id, "failed", f"{type(exc).__name__}: {exc}"[:MAX_FIELD])
        raise PostureError(f"import of {path} failed ({type(exc).__name__}); nothing from it was kept",
                           "this is a bug in posture; please report it with the file") from exc  # fmt: skip
    store.finish_scan(scan_id, "complete", "; ".join(note) if note else None)


def _parse_into_pipe(path: str, name: str, pipe: Connection, parent_end: Connection,
                     bind_to_parent: Callable[[], None] | None) -> None:  # fmt: skip
    """Child process: parse the file and send hosts in batches; errors travel as messages, not tracebacks.

    First it makes sure it cannot outlive the parent: it closes its copy of the pipe's reading end (the
    fork gave it one; while it is open a write never fails, so after a `kill -9` of the parent the child
    blocked in a full pipe for ever) and asks to be killed with the parent (`bind_to_parent`)."""
    parent_end.close()
    if bind_to_parent is not None:
        bind_to_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    try:
        with open(path, "rb") as fh:  # noqa: PTH123 - a plain binary stream for the parser
            reader = NmapXmlReader(fh, name=name)
            batch: list[PreparedHost] = []
            gc.disable()  # parsing makes no reference cycles; collecting now and then is enough (-10%)
            for host in reader:
                batch.append(prepare_host(host))
                if len(batch) >= PIPE_BATCH:
                    pipe.send(("hosts", batch))
                    batch = []
                    gc.collect(0)
            pipe.send(("hosts", batch))
            pipe.send(("done", reader.run, reader.hosts_seen))
    except PostureError as exc:
        pipe.send(("error", exc.message, exc.hint))
    except Exception as exc:  # anything else still ends as one clear line in the parent
        pipe.send(("error", f"could not read {name}: {type(exc).__name__}: {exc}", None))
    finally:
        pipe.close()


class ForkedNmapXmlReader:
    """Read an nmap XML file in a child process, handing hosts over as rows ready to write.

    Why: in one process an import is parse time plus write time; with the parse in a child, the parent
    writes to SQLite while the child parses the next hosts, and a 20,000-host import takes about 40% less
    time on two cores (bench/run.py import). Threads do not help: SQLite gives the GIL back for each row.
    The child sends plain tuples (`prepare_host`): objects would cost more to unpickle than to parse.
    Memory stays flat: the pipe holds a few batches and the child blocks when the parent falls behind.
    """

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name or path.name
        self.run = NmapRun(args=None, version=None, started_at=None)
        self.hosts_seen = 0

    def __iter__(self) -> Iterator[PreparedHost]:
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_parse_into_pipe, args=(str(self.path), self.name, sender, receiver, dies_with_parent()),
            name="posture-xml-reader", daemon=True,
        )  # fmt: skip
        child.start()
        sender.close()
        try:
            while True:
                try:
                    message = receiver.recv()
                except EOFError:
                    raise NmapXmlError(f"the reader of {self.name} stopped without finishing") from None
                if message[0] == "hosts":
                    yield from message[1]
                elif message[0] == "done":
                    self.run, self.hosts_seen = message[1], message[2]
                    return
                else:
                    raise NmapXmlError(message[1], message[2])
        finally:
            if child.is_alive():
                child.terminate()
            child.join()
            receiver.close()


def _fold(header: str) -> str:
    return re.sub(r"[\s_\-]+", " ", header.strip().lower())


def read_register(path: Path) -> tuple[list[RegisterEntry], list[str]]:
    """Parse an asset register; returns the entries and one warning per skipped row or value.

    The file is read by `scanner.inputs` (UTF-8 or Windows-1252 line by line, no cell over 128 Ki
    characters or across lines); a malformed row or two columns of one meaning refuse the whole file,
    naming the line, before anything is imported.
    """
    where = str(path)
    lines = decoded_lines(read_bounded(path, MAX_REGISTER_BYTES, "register"), where)
    sample = list(itertools.islice(lines, SNIFF_LINES))
    if not any(line.strip() for line in sample):
        raise PostureError(f"{path} is empty", "give a CSV with a header row")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff("\n".join(sample)[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv_rows(itertools.chain(sample, lines), where, dialect)
    header_line, header = next(rows, (1, []))
    mapping, attributes = _register_columns(header, f"{where}:{header_line}")
    entries: list[RegisterEntry] = []
    warnings: list[str] = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        values: dict[str, str] = {}
        for i, cell in enumerate(row):
            if i in mapping and cell.strip():
                values[mapping[i]] = cell.strip()
        addresses, hostnames = (
            _addresses(values.get("address", ""), line, warnings),
            _hostnames(values.get("hostname", ""), line, warnings),
        )
        if not addresses and not hostnames:
            warnings.append(f"line {line}: no valid address or hostname; row skipped")
            continue
        entries.append(
            RegisterEntry(
                line=line,
                addresses=tuple(addresses),
                hostnames=tuple(hostnames),
                owner=bound(values.get("owner")),
                business_service=bound(values.get("business_service")),
                site=bound(values.get("site")),
                criticality=bound(values.get("criticality"), 64),
                cost_centre=bound(values.get("cost_centre"), 64),
                attributes={
                    attributes[i]: bound(cell.strip(), MAX_FIELD) or ""
                    for i, cell in enumerate(row)
                    if i in attributes and cell.strip()
                },
            )
        )
    return entries, warnings


def _register_columns(header: list[str], where: str) -> tuple[dict[int, str], dict[int, str]]:
    """Column index -> register field, and -> attribute name; two columns of one meaning are refused."""
    mapping: dict[int, str] = {}
    attributes: dict[int, str] = {}
    meanings: list[str | None] = []
    for i, name in enumerate(header):
        folded = _fold(name)
        field_name = next((f for f, names in REGISTER_COLUMNS.items() if folded in names), None)
        if field_name:
            mapping[i] = field_name
        elif folded:
            attributes[i] = bound(name.strip(), 64) or name
        meanings.append(field_name or (f"attribute {attributes[i]}" if i in attributes else None))
    twice = header_duplicate(meanings)
    if twice:
        a, b = twice
        raise PostureError(f"{where}: columns {a + 1} ({bound(header[a].strip(), 40)!r}) and {b + 1} "
                           f"({bound(header[b].strip(), 40)!r}) both hold the {meanings[a]}",
                           "keep one of them, or rename one")  # fmt: skip
    if "address" not in mapping.values() and "hostname" not in mapping.values():
        shown = ", ".join(repr(bound(h, 40)) for h in header[:12])
        raise PostureError(
            f"{where}: no address or hostname column (header: {shown})",
            "name a column 'address' (or 'IP address') or 'hostname'",
        )
    return mapping, attributes


def _split(cell: str) -> Iterator[str]:
    return (part for part in re.split(r"[;,\s]+", cell) if part)


def _addresses(cell: str, line: int, warnings: list[str]) -> list[str]:
    out: list[str] = []
    for part in _split(cell):
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            warnings.append(f"line {line}: {bound(part, 60)!r} is not an IP address; ignored")
    return out


def _hostnames(cell: str, line: int, warnings: list[str]) -> list[str]:
    out: list[str] = []
    for part in _split(cell):
        if HOSTNAME_RE.match(part):
            out.append(part.rstrip(".").lower())
        else:
            warnings.append(f"line {line}: {bound(part, 60)!r} is not a hostname; ignored")
    return out


def import_register(store: Store, path: Path) -> ImportResult:
    """Merge the asset register into the inventory: owners and services reach every later report."""
    entries, warnings = read_register(path)
    if not entries:
        raise PostureError(f"{path} has no usable rows", "; ".join(warnings[:3]) or "add rows under the header")
    scan_id = store.start_scan("asset-register", "import", input_file=str(path), hosts_total=len(entries))
    with _recorded(store, scan_id, path), store.transaction() as conn:
        stats = store.apply_register(scan_id, entries)
        conn.execute("UPDATE scans SET hosts_done = ?, hosts_up = ? WHERE id = ?", (len(entries), stats.hosts, scan_id))
    return ImportResult(scan_id, stats, warnings)
