"""A scan job: chunks scanned with bounded parallelism, each committed on its own as it finishes.

Why chunks: a /16 takes hours; a crash, a Ctrl-C or a reboot must not throw away what was done, and a
resumed scan must not redo it. Each chunk's results and its "done" mark are written in one transaction,
so the database only ever holds whole chunks. The scan row is written before any packet is sent and
marked complete, failed or interrupted at the end; a process that dies without a word leaves a row that
the next run marks interrupted (`Store.reap_stale_scans`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from scanner.agents import DiscoveryAgent
from scanner.errors import Interrupted, PostureError
from scanner.paths import state_dir
from scanner.store import Store, process_alive, process_start, utc_now
from scanner.targets import ScanPlan


class ProgressReporter(Protocol):
    def start(self, total_hosts: int, total_chunks: int, already_done: int) -> None: ...

    def update(self, hosts_done: int) -> None: ...

    def chunk_done(self, chunks_done: int, total_chunks: int, hosts_done: int, hosts_up: int) -> None: ...

    def finish(self) -> None: ...


@dataclass
class ScanSummary:
    scan_id: int
    status: str = "running"
    hosts_total: int = 0
    hosts_done: int = 0
    hosts_up: int = 0
    new_assets: int = 0
    services: int = 0
    excluded: int = 0
    errors: list[str] = field(default_factory=list)


def start_scan(
    store: Store,
    agent: DiscoveryAgent,
    plan: ScanPlan,
    options: dict[str, Any],
    *,
    targets: list[str],
    exclude: list[str],
    scope: list[str],
    chunk_size: int,
) -> int:
    """Record the scan and its chunks; nothing has been sent yet when this returns."""
    tool_version = agent.check()
    sized = plan.sized_chunks(chunk_size)
    chunks, sizes = [specs for specs, _ in sized], [count for _, count in sized]
    scan_id = store.start_scan(
        "nmap-scan",
        agent.name,
        targets=targets,
        excluded=exclude,
        scope=scope,
        options={**options, "user_hostnames": plan.hostnames, "chunk_size": chunk_size},
        tool_version=tool_version,
        hosts_total=len(plan.addresses),
    )
    store.add_chunks(scan_id, chunks, sizes)
    return scan_id


def resumable_scan(store: Store, scan_id: int | None) -> int:
    """The scan to resume: the one named, or the newest interrupted or failed network scan."""
    store.reap_stale_scans()
    if scan_id is None:
        row = store.conn.execute(
            "SELECT id FROM scans WHERE kind = 'nmap-scan' AND status IN ('interrupted', 'failed') "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise PostureError("there is no interrupted scan to resume", "start a new one with `posture scan TARGET`")
        return int(row[0])
    found = store.scan_row(scan_id)
    if found is None or found["kind"] != "nmap-scan":
        raise PostureError(f"scan {scan_id} is not a network scan in this inventory", "see `posture scans`")
    if found["status"] not in ("interrupted", "failed"):
        raise PostureError(f"scan {scan_id} is {found['status']}, not interrupted", "see `posture scans`")
    return scan_id


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a scheduler stopping us, a closed terminal) stop the scan like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _machine() -> str:
    """This machine, short and safe in a folder name (a state folder may be shared over NFS)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@contextmanager
def scan_workdir() -> Iterator[str]:
    """A private folder for one scan's nmap output, removed when the scan ends, and removed by the next
    scan if this process is killed.

    Why not only a TemporaryDirectory: SIGKILL (the OOM killer, `kill -9`, a power-cut VM) runs no
    `finally`, and each chunk's XML (hosts, banners, open ports) would stay in /tmp for good. So the
    folders live under posture's own state folder, named after the owning process (pid, its kernel start
    time, the machine), and every scan first removes the folders whose process is gone.
    """
    parent = state_dir() / "scans"
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise PostureError(f"cannot make the scan folder {parent}: {exc.strerror}", "check XDG_STATE_HOME") from exc
    machine = _machine()
    for old in parent.glob("scan-*"):
        parts = old.name.split("-")
        if len(parts) < 5 or parts[3] != machine or not parts[1].isdigit() or not old.is_dir() or old.is_symlink():
            continue
        if not process_alive(int(parts[1]), None if parts[2] == "x" else parts[2]):
            shutil.rmtree(old, ignore_errors=True)
    pid = os.getpid()
    workdir = tempfile.mkdtemp(prefix=f"scan-{pid}-{process_start(pid) or 'x'}-{machine}-", dir=parent)
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def execute_scan(
    store: Store, agent: DiscoveryAgent, scan_id: int, parallel: int, reporter: ProgressReporter
) -> ScanSummary:
    """Run the scan's pending chunks; on return or raise, the scan row says how it ended."""
    row = store.scan_row(scan_id)
    assert row is not None
    options: dict[str, Any] = json.loads(row["options"])
    user_hostnames: dict[str, str] = options.pop("user_hostnames", {})
    options.pop("chunk_size", None)
    pending = store.pending_chunks(scan_id)
    parallel = max(1, min(parallel, len(pending)))
    if options.get("max_rate"):
        # --max-rate caps the whole scan, not each chunk: chunks running side by side share it.
        options["max_rate"] = max(1, int(options["max_rate"]) // parallel)
    total_chunks = store.conn.execute("SELECT count(*) FROM scan_chunks WHERE scan_id = ?", (scan_id,)).fetchone()[0]
    summary = ScanSummary(
        scan_id, hosts_total=row["hosts_total"], hosts_done=row["hosts_done"], hosts_up=row["hosts_up"]
    )
    partial: dict[int, int] = {}
    chunks_done = total_chunks - len(pending)
    reporter.start(summary.hosts_total, total_chunks, summary.hosts_done)

    with signals_interrupt(), scan_workdir() as workdir:
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="posture-chunk")
        futures: dict[Future[Any], tuple[int, int]] = {}
        try:
            for seq, targets, count in pending:

                def progress(n: int, seq: int = seq, count: int = count) -> None:
                    partial[seq] = min(n, count)

                futures[pool.submit(agent.run_chunk, targets, options, workdir, progress)] = (seq, count)
            while futures:
                done, _ = wait(list(futures), timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in done:
                    seq, count = futures.pop(fut)
                    partial.pop(seq, None)
                    try:
                        result = fut.result()
                        _commit_chunk(store, agent.name, scan_id, seq, count, result, user_hostnames, summary)
                    except PostureError as exc:
                        summary.errors.append(f"chunk {seq + 1}: {exc}")
                        continue
                    chunks_done += 1
                    reporter.chunk_done(chunks_done, total_chunks, summary.hosts_done, summary.hosts_up)
                reporter.update(summary.hosts_done + sum(partial.values()))
        except KeyboardInterrupt:
            agent.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            store.finish_scan(scan_id, "interrupted", "stopped by a signal; finished chunks are kept")
            reporter.finish()
            raise Interrupted(
                f"scan {scan_id} interrupted after {summary.hosts_done} of {summary.hosts_total} hosts; "
                "finished chunks are saved",
                f"resume with `posture scan --resume {scan_id}`",
            ) from None
        except BaseException as exc:  # a bug or a failing disk: stop nmap, say so in the scan row, re-raise
            agent.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            reporter.finish()
            with suppress(Exception):
                store.finish_scan(scan_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        pool.shutdown(wait=True)
    reporter.finish()
    summary.status = "failed" if summary.errors else "complete"
    store.finish_scan(scan_id, summary.status, "; ".join(summary.errors) or None)
    return summary


def _commit_chunk(
    store: Store,
    source: str,
    scan_id: int,
    seq: int,
    count: int,
    result: Any,
    user_hostnames: dict[str, str],
    summary: ScanSummary,
) -> None:
    with store.transaction() as conn:
        stats = store.ingest(scan_id, source, result.observations(), user_hostnames=user_hostnames)
        conn.execute(
            "UPDATE scan_chunks SET status = 'done', hosts_up = ?, finished_at = ? WHERE scan_id = ? AND seq = ?",
            (stats.hosts, utc_now(), scan_id, seq),
        )
        conn.execute(
            "UPDATE scans SET hosts_done = hosts_done + ?, hosts_up = hosts_up + ?, "
            "tool_version = coalesce(?, tool_version) WHERE id = ?",
            (count, stats.hosts, result.tool_version, scan_id),
        )
    summary.hosts_done += count
    summary.hosts_up += stats.hosts
    summary.new_assets += stats.new_assets
    summary.services += stats.services
