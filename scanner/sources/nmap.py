"""The nmap source: address chunks scanned by the real nmap (`scanner.agents.nmap`), a few at a time.

Each unit is one chunk of addresses (`ScanPlan.sized_chunks`, one address family each); `request.parallel`
chunks run at once, each its own nmap process, and each finished chunk is one batch, read lazily from its
XML by the thread that writes it. `--max-rate` caps the whole scan, so chunks running side by side share it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from scanner.agents.nmap import NmapAgent, NmapChunk
from scanner.errors import PostureError
from scanner.paths import state_dir
from scanner.sources import Batch, Progress, Request, SourceError
from scanner.store import prepare_host, process_alive, process_start


class NmapSource:
    name = "nmap"
    kind = "nmap-scan"
    noun = "hosts"
    whole = False
    resume = "posture scan --resume {scan_id}"

    def __init__(self) -> None:
        self.agent = NmapAgent()

    def check(self, request: Request) -> str | None:
        return self.agent.check()

    def units(self, request: Request) -> list[tuple[list[str], int]]:
        assert request.plan is not None, "a new nmap run is planned (scanner.targets.plan_scan)"
        return request.plan.sized_chunks(request.chunk_size)

    def describe(self, request: Request, unit: list[str]) -> list[str]:
        return self.agent.describe(request.options, unit)

    def collect(
        self, request: Request, units: list[tuple[int, list[str], int]], progress: Progress
    ) -> Generator[Batch, None, None]:
        options = dict(request.options)
        parallel = max(1, min(request.parallel, len(units)))
        if options.get("max_rate"):
            options["max_rate"] = max(1, int(options["max_rate"]) // parallel)
        partial: dict[int, int] = {}
        with scan_workdir() as workdir, ThreadPoolExecutor(parallel, thread_name_prefix="posture-chunk") as pool:
            futures: dict[Future[NmapChunk], tuple[int, int]] = {}
            try:
                for seq, targets, count in units:

                    def chunk_progress(n: int, seq: int = seq, count: int = count) -> None:
                        partial[seq] = min(n, count)

                    futures[pool.submit(self.agent.run_chunk, targets, options, workdir, chunk_progress)] = (seq, count)
                while futures:
                    done, _ = wait(list(futures), timeout=0.25, return_when=FIRST_COMPLETED)
                    for fut in done:
                        seq, count = futures.pop(fut)
                        partial.pop(seq, None)
                        try:
                            chunk = fut.result()
                        except PostureError as exc:
                            yield Batch((), unit=seq, error=f"chunk {seq + 1}: {exc}")
                            continue
                        yield Batch(map(prepare_host, chunk.observations()), done=count, unit=seq)
                    progress(sum(partial.values()))
            finally:  # an interrupt, a failure or the end: no nmap outlives the run
                if futures:
                    self.agent.cancel()
                pool.shutdown(wait=True, cancel_futures=True)

    def cancel(self) -> None:
        self.agent.cancel()

    def job_request(self, settings: dict[str, Any]) -> Request:
        raise SourceError("the nmap method takes the job's targets, ports and max_rate; it has no table of its own")


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
