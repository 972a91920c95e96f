"""The runner of every discovery source: units of work, each batch committed on its own as it arrives.

Why units and batches: a /16 takes hours; a crash, a Ctrl-C or a reboot must not throw away what was done,
and a resumed run must not redo it. The units of a run (nmap's and SNMP's address chunks, a directory) are
recorded with the run's row before anything is sent; each batch of sightings, with the "done" mark of the
unit it finishes, is written in one transaction, so the database only ever holds whole batches. The row
is marked complete, failed or interrupted at the end; a process that dies without a word leaves a row that
the next run marks interrupted (`Store.reap_stale_scans`). The sources themselves (`scanner.sources`)
never touch the database.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from scanner.db import Database
from scanner.errors import Interrupted, PostureError
from scanner.model import bound
from scanner.sources import Batch, Request, Source
from scanner.store import Ingest, Store, insert_chunks, insert_scan, utc_now


class ProgressReporter(Protocol):
    def start(self, total_hosts: int, total_chunks: int, already_done: int) -> None: ...

    def update(self, hosts_done: int) -> None: ...

    def chunk_done(self, chunks_done: int, total_chunks: int, hosts_done: int, hosts_up: int) -> None: ...

    def batch_saved(self, hosts_done: int, hosts_up: int) -> None: ...

    def finish(self) -> None: ...


@dataclass
class ScanSummary:
    """How one run of a source went; `by_status` and `problems` come from per-target outcomes (SNMP)."""

    scan_id: int
    status: str = "running"
    hosts_total: int = 0
    hosts_done: int = 0
    hosts_up: int = 0
    new_assets: int = 0
    services: int = 0
    software: int = 0
    excluded: int = 0
    errors: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # target, status, detail

    @property
    def answered(self) -> int:
        """Targets that gave an inventory: hosts up, or for per-target sources the ok and partial ones."""
        if self.by_status:
            return self.by_status.get("ok", 0) + self.by_status.get("partial", 0)
        return self.hosts_up


def start_run(store: Store, source: Source, request: Request) -> int:
    """Record the run and its units; nothing has been sent yet when this returns."""
    tool_version = source.check(request)
    units = source.units(request)
    scan_id = store.start_scan(
        source.kind,
        source.name,
        targets=request.targets,
        excluded=request.exclude,
        scope=request.scope,
        options={**request.options, "user_hostnames": request.hostnames, "chunk_size": request.chunk_size},
        tool_version=tool_version,
        hosts_total=sum(count for _, count in units),
        input_file=request.input_file,
    )
    store.add_chunks(scan_id, units)
    return scan_id


def stored_request(store: Store, scan_id: int, parallel: int) -> Request:
    """The request a recorded run was started with, to resume it."""
    row = store.scan_row(scan_id)
    assert row is not None
    options: dict[str, Any] = json.loads(row["options"] or "{}")
    hostnames: dict[str, str] = options.pop("user_hostnames", {})
    chunk_size = int(options.pop("chunk_size", 256))
    return Request(
        targets=json.loads(row["targets"] or "[]"), options=options, exclude=json.loads(row["excluded"] or "[]"),
        scope=json.loads(row["scope"] or "[]"), chunk_size=chunk_size, parallel=parallel, hostnames=hostnames,
    )  # fmt: skip


def run_source(store: Store, source: Source, request: Request, reporter: ProgressReporter) -> ScanSummary:
    """Start a run of `source` and do it all; on return or raise, the run's row says how it ended."""
    store.reap_stale_scans()
    if source.whole:
        return _run_whole(store, source, request)
    scan_id = start_run(store, source, request)
    return execute_run(store, source, scan_id, request, reporter)


def resumable_scan(store: Store, scan_id: int | None, kind: str = "nmap-scan") -> int:
    """The run to resume: the one named, or the newest interrupted or failed run of this kind."""
    what, command = ("SNMP scan", "snmp") if kind == "snmp-scan" else ("network scan", "scan")
    store.reap_stale_scans()
    if scan_id is None:
        row = store.conn.execute(
            "SELECT id FROM scans WHERE kind = ? AND status IN ('interrupted', 'failed') ORDER BY id DESC LIMIT 1",
            (kind,),
        ).fetchone()
        if row is None:
            raise PostureError(f"there is no interrupted {what} to resume",
                               f"start a new one with `posture {command} TARGET`")  # fmt: skip
        return int(row[0])
    found = store.scan_row(scan_id)
    if found is None or found["kind"] != kind:
        article = "an" if what.startswith("SNMP") else "a"
        raise PostureError(f"scan {scan_id} is not {article} {what} in this inventory", "see `posture scans`")
    if found["status"] not in ("interrupted", "failed"):
        raise PostureError(f"scan {scan_id} is {found['status']}, not interrupted", "see `posture scans`")
    return scan_id


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a scheduler stopping us, a closed terminal) stop the scan like Ctrl-C does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    with on_signals((signal.SIGTERM, signal.SIGHUP), handler):
        yield


@contextmanager
def on_signals(signals: tuple[signal.Signals, ...], handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """`handler` for these signals while the block runs, the previous handlers after; nothing off the main
    thread (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def execute_run(
    store: Store, source: Source, scan_id: int, request: Request, reporter: ProgressReporter
) -> ScanSummary:
    """Do the run's pending units; on return or raise, the run's row says how it ended."""
    row = store.scan_row(scan_id)
    assert row is not None
    # A unit cut short keeps the targets it finished (SNMP saves devices as they answer): a resume asks the rest.
    finished = {r[0] for r in store.conn.execute("SELECT address FROM scan_targets WHERE scan_id = ?", (scan_id,))}
    pending = [(seq, [t for t in targets if t not in finished], count)
               for seq, targets, count in store.pending_chunks(scan_id)]  # fmt: skip
    total_units = store.conn.execute("SELECT count(*) FROM scan_chunks WHERE scan_id = ?", (scan_id,)).fetchone()[0]
    summary = ScanSummary(
        scan_id, hosts_total=row["hosts_total"], hosts_done=row["hosts_done"], hosts_up=row["hosts_up"]
    )
    units_done = total_units - len(pending)
    partial = [0]
    reporter.start(summary.hosts_total, total_units, summary.hosts_done)

    def progress(done: int) -> None:
        partial[0] = done
        reporter.update(summary.hosts_done + partial[0])

    with signals_interrupt():
        try:
            with closing(source.collect(request, pending, progress)) as batches:
                for batch in batches:
                    if batch.error is not None:
                        summary.errors.append(batch.error)
                        continue
                    try:
                        _commit_batch(store, source.name, scan_id, batch, request.hostnames, summary)
                    except PostureError as exc:  # the unit's output could not be read (nmap failed): retried on resume
                        summary.errors.append(f"unit {batch.unit + 1 if batch.unit is not None else '?'}: {exc}")
                        continue
                    partial[0] = 0
                    reporter.batch_saved(summary.hosts_done, summary.hosts_up)
                    if batch.unit is not None:
                        units_done += 1
                        reporter.chunk_done(units_done, total_units, summary.hosts_done, summary.answered)
                    reporter.update(summary.hosts_done)
        except KeyboardInterrupt:
            source.cancel()
            reporter.finish()
            store.finish_scan(scan_id, "interrupted", "stopped by a signal; finished batches are kept")
            raise Interrupted(
                f"{source.kind} {scan_id} interrupted after {summary.hosts_done} of {summary.hosts_total} "
                f"{source.noun}; what finished is saved",
                f"resume with `{source.resume.format(scan_id=scan_id)}`" if source.resume else None,
            ) from None
        except BaseException as exc:  # a bug or a failing disk: stop the work, say so in the row, re-raise
            source.cancel()
            reporter.finish()
            with suppress(Exception):
                store.finish_scan(scan_id, "failed", f"{type(exc).__name__}: {str(exc)[:200]}")
            raise
    reporter.finish()
    summary.status = "failed" if summary.errors else "complete"
    store.finish_scan(scan_id, summary.status, "; ".join(summary.errors) or None)
    return summary


def run_unit(
    store: Store, source: Source, scan_id: int, seq: int, request: Request, claim: Callable[[Database], bool],
    then: Callable[[Database], None], progress: Callable[[int], None],
) -> ScanSummary | None:  # fmt: skip
    """One recorded unit of a run on its own (a queued chunk, `posture.queue`): collected, then written with
    its "done" mark in one transaction, the one `execute_run` writes, if `claim(conn)` (asked inside that
    transaction, under the writer lock) says no other attempt has stored it; `then(conn)` ends that
    transaction. None when one had: nothing is stored twice. A unit that failed raises a PostureError and
    stays pending; `progress` may raise to stop the work (its nmap is cancelled). The run's row is left as
    it is."""
    pending = [unit for unit in store.pending_chunks(scan_id) if unit[0] == seq]
    if not pending:
        return None
    with closing(source.collect(request, pending, progress)) as batches:
        for batch in batches:  # a network unit is one batch (`scanner.sources.nmap`)
            if batch.error is not None:
                raise PostureError(batch.error)
            return store_unit(store, source.name, scan_id, batch, request.hostnames, claim, then)
    return None


def store_unit(
    store: Store, source: str, scan_id: int, batch: Batch, user_hostnames: dict[str, str],
    claim: Callable[[Database], bool], then: Callable[[Database], None],
) -> ScanSummary | None:  # fmt: skip
    """One whole unit's batch written with its "done" mark in one transaction, if `claim(conn)` (asked in
    it, under the writer lock) says no other attempt stored it; None when one had. `then(conn)` ends the
    transaction. A queued chunk run by a worker (`run_unit`) or uploaded by a site collector (`posture
    serve`) is stored by this."""
    summary = ScanSummary(scan_id)
    with store.transaction() as conn:
        if not claim(conn):
            return None
        with conn.references_unchecked():  # not `claim` and `then`: they touch the queue's tables (triggers)
            _write_batch(conn, source, scan_id, batch, user_hostnames, summary)
        then(conn)
    return summary


def _commit_batch(
    store: Store, source: str, scan_id: int, batch: Batch, user_hostnames: dict[str, str], summary: ScanSummary
) -> None:
    """One batch, its per-target outcomes and its unit's "done" mark: one transaction."""
    with store.transaction() as conn:
        _write_batch(conn, source, scan_id, batch, user_hostnames, summary)


def _write_batch(
    conn: Database, source: str, scan_id: int, batch: Batch, user_hostnames: dict[str, str],
    summary: ScanSummary,
) -> None:  # fmt: skip
    with Ingest(conn, scan_id, source, user_hostnames=user_hostnames, fallback_time=utc_now()) as ingest:
        assets: list[int] = []
        hosts = batch.hosts
        if conn.dialect.name != "sqlite":  # a lookup is a round trip: a chunk's are asked in two statements
            hosts = list(hosts)
            ingest.index.prefetch(k for host in hosts for k in ingest.lookups(host))
        for i, host in enumerate(hosts):
            ingest.add_prepared(host, batch.sysnames[i] if i < len(batch.sysnames) else (),
                                batch.machine_ids[i] if i < len(batch.machine_ids) else ())  # fmt: skip
            assets.append(ingest.last_asset_id)
    if batch.record is not None:
        batch.record(conn, scan_id, assets)
    if batch.outcomes:
        conn.executemany(
            "INSERT INTO scan_targets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(scan_id, o.target, source, o.status, bound(o.detail, 512), o.credential,
              None if o.seconds is None else round(o.seconds, 3), o.requests,
              None if o.host is None else assets[o.host]) for o in batch.outcomes],
        )  # fmt: skip
    if batch.unit is not None:
        conn.execute(
            "UPDATE scan_chunks SET status = 'done', hosts_up = ?, finished_at = ? WHERE scan_id = ? AND seq = ?",
            (len(assets), utc_now(), scan_id, batch.unit),
        )
    conn.execute(
        "UPDATE scans SET hosts_done = hosts_done + ?, hosts_up = hosts_up + ?, "
        "tool_version = coalesce(?, tool_version) WHERE id = ?",
        (batch.done, ingest.stats.hosts, batch.tool_version, scan_id),
    )
    summary.hosts_done += batch.done
    summary.hosts_up += ingest.stats.hosts
    summary.new_assets += ingest.stats.new_assets
    summary.services += ingest.stats.services
    summary.software += ingest.stats.software
    for o in batch.outcomes:
        summary.by_status[o.status] = summary.by_status.get(o.status, 0) + 1
        if o.status != "ok":
            summary.problems.append((o.target, o.status, o.detail or ""))


def _run_whole(store: Store, source: Source, request: Request) -> ScanSummary:
    """A source whose run is one small read (a bundle): read first, then its row, its units and its rows in
    one transaction, so a refusal or a full disk leaves nothing at all (there is nothing in flight that a
    row written beforehand would have to account for)."""
    tool_version = source.check(request)
    units = source.units(request)
    with closing(source.collect(request, [(i, t, n) for i, (t, n) in enumerate(units)], lambda _: None)) as read:
        batches = [b._replace(hosts=list(b.hosts)) for b in read]
    summary = ScanSummary(0, hosts_total=sum(n for _, n in units))
    with store.transaction() as conn:
        summary.scan_id = insert_scan(
            conn, source.kind, source.name, "running", targets=request.targets, options=request.options,
            tool_version=tool_version, hosts_total=summary.hosts_total, input_file=request.input_file,
        )  # fmt: skip
        insert_chunks(conn, summary.scan_id, units)
        for batch in batches:
            _write_batch(conn, source.name, summary.scan_id, batch, request.hostnames, summary)
        conn.execute("UPDATE scans SET status = 'complete', finished_at = ? WHERE id = ?", (utc_now(), summary.scan_id))
    summary.status = "complete"
    return summary


# What `posture scan` does when no option says otherwise; a job's own keys (`scanner.jobs.Job`) override
# some of these. One table, so the command and a job can never disagree on a default.
NMAP_DEFAULTS: dict[str, Any] = {
    "ports": None,
    "top_ports": None,
    "version_detection": True,
    "os_detection": None,  # on when running as root
    "privileged": None,  # raw packets when root
    "max_rate": 100,
    "timing": "normal",
    "printer_ports": False,
    "dns": True,
    "scripts": True,
    "tls_ciphers": False,
}
SNMP_DEFAULTS: dict[str, Any] = {"creds": [], "port": 161, "timeout": 2.0, "retries": 1, "deadline": 60.0,
                                 "concurrency": 64}  # fmt: skip


def scope_of(given: Sequence[str], config: dict[str, Any]) -> list[str]:
    """The networks a run may touch: those given (--scope, a job's scope), else the config's [scan] scope."""
    return list(given) or list(config.get("scan", {}).get("scope", []))


def nmap_request(
    targets: list[str],
    exclude: list[str],
    scope: list[str],
    options: dict[str, Any],
    chunk_size: int = 256,
    parallel: int = 2,
) -> Request:
    """A network scan's request: the targets expanded, less the exclusions, every address checked against
    `scope` (the caller's --scope, else the config's [scan] scope); `options` over NMAP_DEFAULTS, ports
    checked. Nothing is sent; a target outside the scope or a bad port list is a PostureError."""
    from scanner.targets import parse_networks, parse_target, plan_scan, validate_ports

    unknown = set(options) - set(NMAP_DEFAULTS)
    if unknown:
        raise PostureError(f"unknown scan option(s): {', '.join(sorted(unknown))}")
    settings = {**NMAP_DEFAULTS, **options}
    if settings["ports"]:
        settings["ports"] = validate_ports(settings["ports"])
    scope_nets = parse_networks(scope, "--scope")
    plan = plan_scan([parse_target(t) for t in targets], parse_networks(exclude, "--exclude"), scope_nets)
    if not plan.addresses:
        raise PostureError("every target address is excluded; nothing to scan", "check --exclude")
    return Request(list(targets), settings, exclude=list(exclude), scope=[str(n) for n in scope_nets],
                   chunk_size=chunk_size, parallel=parallel, hostnames=plan.hostnames, plan=plan)  # fmt: skip


def snmp_request(addresses: list[str], targets: list[str] | None = None, **options: Any) -> Request:
    """An SNMP run's request for `addresses` (already checked against the scope), `options` over
    SNMP_DEFAULTS (`creds` names vault entries: the secrets stay in the vault)."""
    unknown = set(options) - set(SNMP_DEFAULTS)
    if unknown:
        raise PostureError(f"unknown SNMP option(s): {', '.join(sorted(unknown))}")
    settings = {**SNMP_DEFAULTS, **options}
    settings["creds"] = list(settings["creds"])
    return Request(list(targets or addresses), settings, addresses=list(addresses))


def live_addresses(store: Store, scan_id: int) -> list[str]:
    """The addresses a scan saw up: what `scan --snmp` and a job's SNMP step ask next."""
    rows = store.conn.execute("SELECT DISTINCT address FROM observations WHERE scan_id = ? AND address IS NOT NULL",
                              (scan_id,))  # fmt: skip
    return [r[0] for r in rows]
