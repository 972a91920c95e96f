"""Discovery sources: one interface, one registry. Adding a source is adding one module here and one line
to `REGISTRY`.

A source turns a request (targets and options) into sightings of hosts; it never touches the database.
The runner (`scanner.scan.run_source`) owns everything else, the same way for every source: the scan row
written before anything is sent, the units of work recorded so an interrupted run resumes where it
stopped, one transaction per batch (a run killed at any moment leaves whole batches and a row that says
how it ended), progress, Ctrl-C and SIGTERM. `posture scan`, `posture snmp`, `posture import ad`, scan
jobs (`methods = [...]`) and the demo all go through that one path.

Why units: nmap works on chunks of 256 addresses and SNMP on the same chunks, so a /16 killed after an
hour resumes with the chunks not yet done; a directory is one unit (re-reading it is cheap and whole).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from scanner.db import Database
from scanner.errors import PostureError
from scanner.store import PreparedHost
from scanner.targets import ScanPlan

# name -> "module:Class". The name is the scan row's `source`, a job's method and the CLI's word for it.
REGISTRY: dict[str, str] = {
    "nmap": "scanner.sources.nmap:NmapSource",
    "snmp": "scanner.sources.snmp:SnmpSource",
    "ad": "scanner.sources.ad:DirectorySource",
    "agent": "scanner.sources.bundle:BundleSource",  # host-agent bundles (`posture import bundle`, a job's inbox)
}


class SourceError(PostureError):
    """The root of every discovery source's errors: a tool missing, a target refused, a server that said no.

    One clear line for the user (exit 2); the run's row records it."""


class Outcome(NamedTuple):
    """How one target of a unit ended, for sources that report per target (SNMP: ok, auth-failure,
    timeout...): a `scan_targets` row. `host` is the index in the batch's hosts of what it said, if anything."""

    target: str
    status: str
    detail: str | None = None
    credential: str | None = None
    seconds: float | None = None
    requests: int | None = None
    host: int | None = None


class Batch(NamedTuple):
    """Sightings committed together, in one transaction, with the progress they stand for.

    `unit` is the unit of work this batch finishes (its seq), or None when more batches of the same unit
    follow; `done` the targets it finished (counted into the run's progress and `scans.hosts_done`);
    `error` says the unit failed (it stays pending, so a resume tries it again). A device's own name
    (SNMP sysName) goes in `sysnames`, not among the hostnames: it is matched the same way but is not DNS.
    `record` writes the source's own rows in the batch's transaction, given the connection, the run's id and
    the assets its hosts went to (a bundle's replay record); raising a SourceError there refuses the batch:
    it is rolled back whole and counted as an error of the run."""

    hosts: Iterable[PreparedHost]  # may be lazy: read in the thread that writes them
    done: int = 0
    unit: int | None = None
    outcomes: Sequence[Outcome] = ()
    tool_version: str | None = None
    error: str | None = None
    sysnames: Sequence[Sequence[str]] = ()  # per host, in the order of `hosts`: the names a device gives itself
    machine_ids: Sequence[Sequence[str]] = ()  # per host: the machine-id a host agent read
    record: Callable[[Database, int, list[int]], None] | None = None


@dataclass
class Request:
    """What to collect from. `targets` are as the user gave them (addresses and networks, a directory URL,
    files); `addresses` their expansion after --exclude and --scope, for network sources; `options` the
    source's own settings, already validated (they are stored in the scan row, so nothing secret: a
    credential is named, and the source reads it from the vault)."""

    targets: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    chunk_size: int = 256
    parallel: int = 2
    hostnames: dict[str, str] = field(default_factory=dict)  # address -> the name the user typed
    input_file: str | None = None  # a file source's file, for the run's row
    plan: ScanPlan | None = None  # a new network run's addresses, chunked by family (not stored: the units are)


Progress = Callable[[int], None]  # targets of the running units finished so far (partial progress)


class Source(Protocol):
    name: str  # registry key
    kind: str  # the scan row's kind, e.g. "nmap-scan"
    noun: str  # what one target is, for progress lines: "hosts", "devices", "objects"
    # True for a run that is one small read (a bundle): the runner reads it first and writes its row and its
    # rows in one transaction, so a refusal or a full disk leaves nothing. False: row first, batch by batch.
    whole: bool
    # How an interrupted run is finished ("posture scan --resume {scan_id}"), or None when it is run again.
    resume: str | None

    def check(self, request: Request) -> str | None:
        """Fail with a SourceError if this source cannot run here or with these options; return the
        version of its tool or library for the scan row. Nothing is sent to a target."""
        ...

    def units(self, request: Request) -> list[tuple[list[str], int]]:
        """The run split into units of work, (targets, how many targets they stand for), recorded before
        anything is sent."""
        ...

    def describe(self, request: Request, unit: list[str]) -> list[str]:
        """The command (or its equivalent) one unit would run, for --dry-run; never a secret."""
        ...

    def collect(
        self, request: Request, units: list[tuple[int, list[str], int]], progress: Progress
    ) -> Generator[Batch, None, None]:
        """Do the pending units (seq, targets, count), yielding batches as they are ready. Runs in the
        caller's thread between batches; may use its own threads. A KeyboardInterrupt may arrive at any
        yield: the runner then calls `cancel`."""
        ...

    def cancel(self) -> None:
        """Stop all work in flight (called from the main thread on an interrupt or a failure)."""
        ...

    def job_request(self, settings: dict[str, Any]) -> Request:
        """A scan job's `[jobs.NAME.<source>]` table as a request, each key checked (SourceError naming the
        key). Network sources (nmap, snmp) take the job's own targets instead and refuse a table."""
        ...


# Sources that work on the job's and the command line's addresses (`targets`, `--scope`, chunks); the others
# are told what to read by their own settings.
NETWORK_SOURCES = ("nmap", "snmp")
FILE_SOURCES = ("agent",)  # read files named on the command line or found in a job's inbox, not a job method


def source_names() -> list[str]:
    return sorted(REGISTRY)


def get_source(name: str) -> Source:
    """A fresh source object (a source holds the state of one run: its processes, its sockets)."""
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise SourceError(f"no discovery source {name[:40]!r}", f"known sources: {', '.join(source_names())}") from None
    made: Source = getattr(importlib.import_module(module), cls)()
    return made
