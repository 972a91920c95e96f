"""The job queue on the central PostgreSQL inventory: a job's scan chunks become queue jobs that workers run.

Why procrastinate (MIT, the issue names it): a queue on the database the inventory already lives on, so
nothing else to run or back up; a job is taken with `SELECT ... FOR UPDATE SKIP LOCKED` (two workers never
take the same chunk), with retries, priorities, `lock`s (at most one running job per lock), worker
heartbeats, and deferral inside the caller's own transaction (`connection=`), which is what makes a run's
row, its chunks and its queue jobs all or nothing here.

- `posture queue init` applies procrastinate's schema and posture's tables (`queue_ingests`, and for site
  collectors `collectors` and `collector_uploads`). Not the store's migrations: the scanner stage must not
  depend on an optional library of the application layer, and procrastinate's schema has its own versions
  and upgrade scripts (`procrastinate schema --apply`); a queue is only wanted on a central server.
- `posture run JOB --queue` (`enqueue`): the job's targets checked against its scope and its site's scope,
  then in one transaction a scans row ('queued'), its chunks (`scanner.scan`'s chunking) and one
  `scan_chunk` job per chunk, on the site's queue, with priority, and lock `site:N` where N is the chunk's
  number modulo the site's `cap`: at most `cap` chunks run at once at a site, each with nmap's
  `--max-rate` at the site's budget divided by `cap`.
- `scan_chunk` checks the chunk's targets against both scopes again, runs the one chunk through
  `scanner.scan.run_unit` and writes it in one transaction with its `queue_ingests` row, keyed by (run,
  chunk): a retried chunk whose earlier attempt committed stores nothing; a killed attempt committed nothing.
  The chunk that leaves none pending defers `finish_run` in that same transaction, on CENTRAL_QUEUE.
- A site with collectors (`[sites.NAME] collectors`) is never scanned by a worker: its chunks are handed
  to its collectors by `posture serve` (posture/serve.py), which stores their results the same way.
- `finish_run` marks the run complete (or failed) and does the job's rules, report and change hook once.
- `posture worker`: procrastinate's worker, plus a sweep that gives back the chunks of workers whose
  heartbeat stopped (killed, power cut) to be retried elsewhere, as many times as the retry bound allows.

Traps met (procrastinate 3.10): a job with a lock waits behind every *earlier* job of that lock still to do,
even one scheduled later (a retry's back-off): a retry holds its slot for RETRY_WAIT seconds. A job that
was running when its worker died stays `doing` and keeps its lock until someone retries it: nothing does
that by itself (this module's sweep does). Sync deferral with `connection=` needs the sync connector: the
worker's async pool would take the sync connection for an async one. Sync tasks run in threads: a SIGTERM
stops the worker after its grace period only if the task looks at `should_abort` (the chunk's progress
callback does, and its nmap is stopped). A worker told not to wait (`--once`) stops as soon as a fetch
finds nothing, even while it runs a chunk: with a grace period it would abort that chunk, so it has none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import procrastinate
from procrastinate import exceptions as queue_errors
from procrastinate.app import WorkerOptions as ProcrastinateOptions
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job as QueueJob
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from scanner.db import Database, Target, is_url
from scanner.errors import PostureError
from scanner.jobs import Job, Site, site_of
from scanner.runlog import say
from scanner.store import Store, insert_chunks, insert_scan, utc_now

# The runs' final tasks (`finish_run`): workers take them, never collectors. No site's queue has a dot.
CENTRAL_QUEUE = "posture.central"
MAX_ATTEMPTS = 3  # a chunk runs at most this many times (a failure, a stalled or stopped worker)
RETRY_WAIT = 5  # seconds before a failed chunk is tried again (it holds its lock slot meanwhile)
NOT_CENTRAL = "the queue needs the central PostgreSQL inventory"
INGESTS_DDL = """
CREATE TABLE IF NOT EXISTS queue_ingests (
    scan_id bigint NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    queue_job bigint NOT NULL,  -- procrastinate's job id
    attempt integer NOT NULL,   -- 0 for the first attempt
    worker text NOT NULL,       -- host:pid of the worker that stored it
    stored_at text NOT NULL,
    PRIMARY KEY (scan_id, seq)
);
CREATE TABLE IF NOT EXISTS collectors (
    key_id text PRIMARY KEY,     -- `scanner.bundles.key_id` of its Ed25519 signing key
    site text NOT NULL,          -- the [sites.NAME] whose `collectors` list trusts the key
    name text NOT NULL,          -- that list's comment for the key (bounded)
    first_seen text NOT NULL,
    last_seen text NOT NULL,     -- its last signed request the server accepted
    address text,                -- where that request came from, as the server saw it
    worker_id bigint,            -- its row in procrastinate_workers (the server heartbeats it for the collector)
    version text,                -- the posture version it said it runs (bounded)
    chunks_taken bigint NOT NULL DEFAULT 0,
    bundles_stored bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS collector_uploads (
    digest text PRIMARY KEY,     -- SHA-256 of the uploaded bundle's bytes: a re-upload is a no-op
    key_id text NOT NULL,
    scan_id bigint NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    attempt integer NOT NULL,
    received_at text NOT NULL,
    stored integer NOT NULL      -- 1 stored; 0 kept out (the chunk stored already, or nmap's error)
);
"""
QUEUE_TABLES = ("procrastinate_jobs", "queue_ingests", "collectors", "collector_uploads")

# The tasks' app; a worker gives it its connector (`_work`). Deferring goes through `_defer`.
app = procrastinate.App(connector=procrastinate.PsycopgConnector())


class Refused(PostureError):
    """A chunk that must not run (outside its scope, its run gone): failed at once, never retried."""


class ChunkRetry(BaseRetryStrategy):
    """Bounded retries, with a short wait; a refusal is final."""

    def get_retry_decision(self, *, exception: BaseException, job: QueueJob) -> RetryDecision | None:
        if isinstance(exception, Refused) or job.attempts + 1 >= MAX_ATTEMPTS:
            return None
        return RetryDecision(retry_in={"seconds": RETRY_WAIT})


def queue_name(site: str) -> str:
    return f"posture-{site}"


def central(db: Target) -> str:
    """The PostgreSQL URL of the inventory, or the one-line refusal of an SQLite store."""
    if not is_url(db):
        raise PostureError(NOT_CENTRAL, "give --db postgresql://... or the config's [store] url")
    return str(db)


def has_queue(conn: Database) -> bool:
    return all(conn.execute("SELECT to_regclass(?) IS NOT NULL", (t,)).fetchone()[0] for t in QUEUE_TABLES)


def need_queue(store: Store) -> None:
    if not has_queue(store.conn):
        raise PostureError(f"{store.path} has no queue yet", "run `posture queue init` once")


def init_queue(db: Target) -> bool:
    """procrastinate's schema and posture's queue tables (INGESTS_DDL), in one transaction; False when they
    were all there already. Run again after an upgrade, it adds the tables a newer version has."""
    from procrastinate.schema import SchemaManager

    with Store.open(central(db)) as store, store.transaction() as conn:
        if has_queue(conn):
            return False
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
            conn.raw.execute(SchemaManager.get_schema())
        conn.raw.execute(INGESTS_DDL)
    return True


def _defer(conn: Database, task: str, priority: int, **options: Any) -> Callable[..., int]:
    """A queue job inserted by posture's own connection, inside its open transaction: committed with the
    rows it stands for, or not at all. The sync connector is never opened (the job goes through
    `connection`): in a worker the async pool would take this sync connection for an async one."""
    from procrastinate.manager import JobManager
    from procrastinate.tasks import configure_task

    manager = JobManager(procrastinate.SyncPsycopgConnector())
    return configure_task(name=task, job_manager=manager, priority=priority, connection=conn.raw, **options).defer


@dataclass
class Enqueued:
    scan_id: int
    chunks: int
    addresses: int
    site: Site


def enqueue(job: Job, config: dict[str, Any], db: Target, chunk_size: int = 256, priority: int = 0) -> Enqueued:
    """The job's chunks as queue jobs; refused in one line (nothing queued) when a target lies outside the
    job's scope or its site's, or when the store is not the central PostgreSQL one."""
    from scanner.change import newest_evaluation
    from scanner.scan import nmap_request, scope_of
    from scanner.sources import get_source

    url = central(db)
    if not job.targets or job.inbox or job.settings or set(job.methods) != {"nmap"}:
        raise PostureError(f"job {job.name}: the queue runs nmap jobs only (targets, methods = [\"nmap\"])",
                           f"run it without --queue: posture run {job.name}")  # fmt: skip
    if not job.site:
        raise PostureError(f"job {job.name} names no site", 'add site = "NAME" to it and a [sites.NAME] table')
    site = site_of(config, job.site)
    options = job.scan_options()
    options["max_rate"] = max(1, min(job.max_rate, site.max_rate) // site.cap)
    request = nmap_request(list(job.targets), list(job.exclude), scope_of(job.scope, config), options, chunk_size, 1)
    nmap_request(list(job.targets), list(job.exclude), list(site.scope), options, chunk_size, 1)  # the site's too
    source = get_source("nmap")
    source.describe(request, [])  # refuses what nmap must never be given
    units = source.units(request)
    with Store.open(url) as store:
        need_queue(store)
        evaluation_before = newest_evaluation(store)
        with store.transaction() as conn:  # under the writer lock: two enqueues of one job cannot both pass
            _no_run_in_the_queue(conn, job.name)
            scan_id = insert_scan(
                conn, source.kind, source.name, "queued", targets=request.targets, excluded=request.exclude,
                scope=request.scope, hosts_total=sum(n for _, n in units),
                options={**request.options, "user_hostnames": request.hostnames, "chunk_size": chunk_size},
            )  # fmt: skip
            insert_chunks(conn, scan_id, units)
            run = {"scan_id": scan_id, "site": site.name, "job": job.name, "started": utc_now(),
                   "evaluation_before": evaluation_before}  # fmt: skip
            for seq in range(len(units)):
                _defer(conn, "scan_chunk", priority, queue=queue_name(site.name),
                       lock=f"{site.name}:{seq % site.cap}")(seq=seq, **run)  # fmt: skip
    return Enqueued(scan_id, len(units), sum(n for _, n in units), site)


def _no_run_in_the_queue(conn: Database, job: str) -> None:
    """One run of a job in the queue at a time, as `posture run` allows one at a time on one machine: a daily
    timer whose site has been cut off for two days must not pile up three runs of the same addresses."""
    left = conn.execute("SELECT (args->>'scan_id')::bigint, count(*) FILTER (WHERE task_name = 'scan_chunk') "
                        "FROM procrastinate_jobs WHERE args->>'job' = ? AND status IN ('todo', 'doing') "
                        "GROUP BY 1 ORDER BY 1 LIMIT 1", (job,)).fetchone()  # fmt: skip
    if left is not None:
        raise PostureError(f"its run {left[0]} is still in the queue ({left[1]} chunk(s) left): "
                           "not queued again", "`posture status` shows its chunks; queue the job once it ends")


def _worker_name() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}"


def scope_check(targets: list[str], scopes: list[tuple[str, list[str]]]) -> None:
    """Each of the chunk's targets inside every scope given, else Refused (checked again by the worker)."""
    from scanner.targets import parse_networks, parse_target, plan_scan

    for what, scope in scopes:
        try:
            plan_scan([parse_target(t, resolve=False) for t in targets], (), parse_networks(scope, what))
        except PostureError as exc:
            raise Refused(f"{what}: {exc.message}") from None


@app.task(name="scan_chunk", pass_context=True, retry=ChunkRetry())
def scan_chunk(context: JobContext, scan_id: int, seq: int, site: str, job: str, started: str,
               evaluation_before: int) -> str:  # fmt: skip
    """One chunk of a queued run: checked, scanned, stored once. A chunk that fails for good is marked
    failed; the last chunk to end, either way, defers `finish_run`, so every run ends."""
    url, config = context.additional_context["db"], context.additional_context["config"]
    queue_job = context.job
    run = {"scan_id": scan_id, "job": job, "started": started, "evaluation_before": evaluation_before}

    def finish_if_last(conn: Database) -> None:
        finish_if_last_chunk(conn, run, queue_job.priority)

    try:
        if queue_job.attempts >= MAX_ATTEMPTS:  # given back by a sweep once too often
            raise Refused(f"run {scan_id} chunk {seq}: out of attempts ({MAX_ATTEMPTS})")
        where = site_of(config, site)
        if where.collectors:  # its network is reached from the site only; never from here
            raise Refused(f"site {site} is scanned by its collectors (`posture collector`), not by workers")
        with Store.open(url) as store:
            summary = _scan_chunk(context, store, scan_id, seq, where, finish_if_last)
    except Exception as exc:
        if isinstance(exc, Refused) or queue_job.attempts + 1 >= MAX_ATTEMPTS:
            with Store.open(url) as store:
                fail_chunk(store, run, seq, queue_job.priority)
        raise
    if summary is None:
        return f"run {scan_id} chunk {seq}: stored by an earlier attempt"
    return f"run {scan_id} chunk {seq}: {summary.hosts_up} hosts up, {summary.services} services"


def finish_if_last_chunk(conn: Database, run: dict[str, Any], priority: int) -> None:
    """In the transaction that ends one of the run's chunks: if none is left pending, the run's
    `finish_run` is deferred in it (only the transaction that ends the last one ever sees none left)."""
    left = conn.execute("SELECT count(*) FROM scan_chunks WHERE scan_id = ? AND status = 'pending'",
                        (run["scan_id"],)).fetchone()[0]  # fmt: skip
    if left == 0:
        _defer(conn, "finish_run", priority, queue=CENTRAL_QUEUE)(**run)


def fail_chunk(store: Store, run: dict[str, Any], seq: int, priority: int) -> None:
    """A chunk that failed for good: marked failed (if still pending), and the run finished if it was the last."""
    with store.transaction() as conn:
        if conn.execute("UPDATE scan_chunks SET status = 'failed', finished_at = ? WHERE scan_id = ? AND seq = ? "
                        "AND status = 'pending' RETURNING seq", (utc_now(), run["scan_id"], seq)).fetchone():
            finish_if_last_chunk(conn, run, priority)


def _scan_chunk(context: JobContext, store: Store, scan_id: int, seq: int, site: Site,
                then: Callable[[Database], None]) -> Any:  # fmt: skip
    """The chunk's targets checked against the run's scope and the site's (as this worker's config has it),
    its nmap at the site's rate share, its hosts and its `queue_ingests` row written in one transaction."""
    from scanner.scan import run_unit, stored_request
    from scanner.sources import get_source

    queue_job = context.job
    row = store.scan_row(scan_id)
    found = store.conn.execute("SELECT targets FROM scan_chunks WHERE scan_id = ? AND seq = ?",
                               (scan_id, seq)).fetchone()  # fmt: skip
    if row is None or found is None:
        raise Refused(f"run {scan_id} chunk {seq} is not in the inventory (pruned?)")
    scope_check(json.loads(found[0]), [("the run's scope", json.loads(row["scope"] or "[]")),
                                        (f"site {site.name}'s scope", list(site.scope))])  # fmt: skip
    request = stored_request(store, scan_id, parallel=1)
    request.options["max_rate"] = min(int(request.options.get("max_rate") or site.chunk_rate), site.chunk_rate)

    def claim(conn: Database) -> bool:
        stored = conn.execute("INSERT INTO queue_ingests VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                              "RETURNING seq", (scan_id, seq, queue_job.id, queue_job.attempts, _worker_name(),
                                                utc_now())).fetchone()  # fmt: skip
        return stored is not None

    def progress(_: int) -> None:
        if context.should_abort():
            raise queue_errors.JobAborted(f"chunk {seq} of run {scan_id} stopped")

    return run_unit(store, get_source("nmap"), scan_id, seq, request, claim, then, progress)


@app.task(name="finish_run", pass_context=True, retry=ChunkRetry())
def finish_run(context: JobContext, scan_id: int, job: str, started: str, evaluation_before: int) -> str:
    """The run's row marked complete (failed if a chunk failed for good), then the job's rules, report and
    change hook. The row is marked in a transaction of its own, and the rest cannot share it (the rules
    write an evaluation; the hook is a program): a worker killed between the two leaves a marked row, and
    this task's retry (its attempts above 0) does the rest again, rules, report and hook. So the hook runs
    at least once, and twice only when a worker died after it had started."""
    from posture.jobs import JobRun, conclude
    from scanner.jobs import parse_jobs

    url, config = context.additional_context["db"], context.additional_context["config"]
    with Store.open(url) as store, store.transaction() as conn:
        failed = conn.execute("SELECT count(*) FROM scan_chunks WHERE scan_id = ? AND status != 'done'",
                              (scan_id,)).fetchone()[0]  # fmt: skip
        status = "failed" if failed else "complete"
        updated = conn.execute("UPDATE scans SET status = ?, finished_at = ?, error = ? WHERE id = ? AND "
                               "status = 'queued' RETURNING id", (status, utc_now(),
                               f"{failed} chunk(s) failed" if failed else None, scan_id)).fetchone()  # fmt: skip
    retried = context.job.attempts > 0
    if updated is None and not retried:
        return f"run {scan_id} was finished already"
    jobs = parse_jobs(config, "", "the worker's config")
    if job not in jobs:
        return f"run {scan_id} {status}; job {job} is no longer in the worker's config: no rules or report"
    run = JobRun(jobs[job], scans=[scan_id])
    try:
        conclude(run, config, url, datetime.fromisoformat(started.replace("Z", "+00:00")), evaluation_before)
    except Exception as exc:  # the run is stored and marked: this part is not retried, and shows as failed
        raise Refused(f"run {scan_id} {status}, but job {job}'s rules, report or hook failed: "
                      f"{type(exc).__name__}: {str(exc)[:300]}") from exc  # fmt: skip
    return f"run {scan_id} {status}; " + "; ".join(run.lines)


async def sweep(stalled_after: float) -> int:
    """Give back the jobs of workers whose heartbeat stopped, to be run elsewhere."""
    manager = app.job_manager
    given = 0
    for stalled in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        try:  # past MAX_ATTEMPTS the task itself marks its chunk failed (`scan_chunk`)
            await manager.retry_job(stalled)
        except queue_errors.ConnectorException:  # another worker's sweep took it first
            continue
        given += 1
        say(f"queue: job {stalled.id} ({stalled.task_name}) of a stalled worker given back")
    return given


class _RunLog(logging.Handler):
    """procrastinate's lines into posture's run log, one line each: a job's outcome (with its error's first
    line, never a traceback: posture's log holds no exception text beyond that) and its warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not str(getattr(record, "action", "")).startswith("job_"):
            return
        text = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            text += f": {type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"
        say(f"queue: {text}", max(logging.INFO, record.levelno))


@dataclass
class WorkerSettings:
    site: str | None = None
    concurrency: int = 1
    once: bool = False
    max_jobs: int | None = None
    stalled_after: float = 30.0
    grace: float = 10.0  # seconds a stopping worker lets running chunks finish before it stops their nmap
    # (a `once` worker stops as soon as it finds nothing to take: it lets its running chunks finish)


def run_worker(db: Target, config: dict[str, Any], options: WorkerSettings) -> int:
    """Run chunks until stopped (SIGTERM, SIGINT), or `once` until none is left, or `max_jobs` done; the
    number of jobs this worker ran."""
    url = central(db)
    queues = worker_queues(config, options.site)
    with Store.open(url) as store:
        need_queue(store)
    return asyncio.run(_work(url, config, options, queues))


def worker_queues(config: dict[str, Any], site: str | None) -> list[str]:
    """The queues a worker takes jobs from: its site's (or every site's whose network it scans: those
    without collectors) and the runs' final tasks; never a collector site's chunks."""
    from scanner.jobs import all_sites

    if site is not None:
        if site_of(config, site).collectors:
            raise PostureError(f"site {site} is scanned by its collectors", "run `posture collector` at that site")
        return [queue_name(site), CENTRAL_QUEUE]
    scanned = [name for name, each in all_sites(config).items() if not each.collectors]
    return [*(queue_name(name) for name in scanned), CENTRAL_QUEUE]


async def _work(url: str, config: dict[str, Any], options: WorkerSettings, queues: list[str]) -> int:
    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=2 + options.concurrency,
                                               kwargs={"application_name": "posture worker"})  # fmt: skip
    done = [0]

    async def count(call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: Any) -> Any:
        try:
            return await call_next()
        finally:
            done[0] += 1
            if options.max_jobs is not None and done[0] >= options.max_jobs:
                worker.stop()

    logger = logging.getLogger("procrastinate")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(_RunLog())
    with app.replace_connector(connector):
        async with app.open_async():
            await sweep(options.stalled_after)

            async def sweeping() -> None:
                while True:
                    await asyncio.sleep(max(1.0, options.stalled_after / 2))
                    await sweep(options.stalled_after)

            worker_options: ProcrastinateOptions = {
                "concurrency": options.concurrency, "wait": not options.once, "name": _worker_name(),
                "additional_context": {"db": url, "config": config},
                "update_heartbeat_interval": max(0.5, options.stalled_after / 3),
                "stalled_worker_timeout": options.stalled_after,
                "fetch_job_polling_interval": 2.0, "worker_middleware": [count],
            }  # fmt: skip
            worker_options["queues"] = queues
            if not options.once:  # else procrastinate's default: running jobs finish, however long they take
                worker_options["shutdown_graceful_timeout"] = options.grace
            sweeper = asyncio.create_task(sweeping())
            try:
                await app.run_worker_async(**worker_options)
            finally:
                sweeper.cancel()
    return done[0]


FINAL_TASKS = "(final tasks)"  # how the runs' final tasks (CENTRAL_QUEUE) are shown beside the sites


def _site_label(queue: str) -> str:
    return FINAL_TASKS if queue == CENTRAL_QUEUE else queue.removeprefix("posture-")


def queue_status(db: Target) -> dict[str, Any]:
    """Queue depth by site (jobs to do, running, failed), the runs' final tasks as FINAL_TASKS, and the
    failed jobs, read from procrastinate's table on posture's own connection."""
    with Store.open(central(db), readonly=True) as store:
        need_queue(store)
        by_site: dict[str, dict[str, int]] = {}
        for name, status, n in store.conn.execute(
            "SELECT queue_name, status, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            site = _site_label(name)
            by_site.setdefault(site, {"todo": 0, "doing": 0, "succeeded": 0, "failed": 0})[str(status)] = int(n)
        failed = [
            {"id": r[0], "site": _site_label(r[1]), "task": r[2], "args": json.loads(r[3]),
             "attempts": r[4]}
            for r in store.conn.execute(
                "SELECT id, queue_name, task_name, args::text, attempts FROM procrastinate_jobs "
                "WHERE status = 'failed' ORDER BY id"
            )
        ]
    return {"sites": by_site, "failed": failed}

