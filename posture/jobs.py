"""One run of a scheduled job: its scan (and SNMP), its other sources, its inbox of agent bundles, then the
rules, the report and the change hook, each through its stage's library.

Only this module knows the three stages together. A job asks for nothing a command line could not: its scan
is `scanner.scan.nmap_request` with the job's keys over the scan command's defaults, checked against the
job's scope, else the config's [scan] scope, exactly as `posture scan` checks it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scanner.compat import UTC
from scanner.db import Target
from scanner.errors import NothingScanned, PostureError
from scanner.jobs import Job
from scanner.runlog import say
from scanner.store import Store


@dataclass
class JobRun:
    """What one run did: the scans it made (what its change hook compares with the ones before) and what
    the command prints when it ends."""

    job: Job
    scans: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def run_job(job: Job, config: dict[str, Any], db: Target) -> JobRun:
    """Run `job` against the inventory at `db` (made on the first run). One run of a job at a time
    (`job_lock`); a missing hook program or report folder fails before anything is scanned. Its result is
    recorded for `posture schedule status`; a PostureError says why it failed (the caller records it)."""
    from scanner.change import newest_evaluation
    from scanner.jobs import job_lock, job_problems, record_run

    problems = job_problems(job)
    if problems:
        raise PostureError("; ".join(problems), "fix them (`posture config check` lists them)")
    run = JobRun(job)
    started = datetime.now(UTC)
    with job_lock(job.name):
        with Store.open(db) as store:
            evaluation_before = newest_evaluation(store)
        what = [f"targets {' '.join(job.targets)}, methods {' '.join(job.methods)}"] if job.targets else []
        say(f"job {job.name} started: " + "; ".join([*what, *([f"inbox {job.inbox}"] if job.inbox else [])]))
        nothing = False
        if job.targets:
            try:
                _scan(run, config, db)
            except NothingScanned as exc:
                nothing = True
                say(f"job {job.name}: {exc}", logging.WARNING)
        _other_sources(run, config, db)
        bundles = _import_inbox(run, Path(job.inbox), db) if job.inbox else {}
        record_run(job.name, started)
        conclude(run, config, db, started, evaluation_before, nothing, bundles)
    return run


def conclude(run: JobRun, config: dict[str, Any], db: Target, started: datetime, evaluation_before: int,
             nothing: bool = False, bundles: dict[str, int] | None = None) -> None:  # fmt: skip
    """A job's part after its scans: the rules, the report, the change hook, the recorded result. `posture
    run` does it at once; a queued job's last chunk leaves it to a final queued task (`posture.queue`)."""
    from scanner.jobs import record_result

    job = run.job
    today = date.today()
    _evaluate(run, config, db, today)
    report_path = None
    if job.report:
        from reports.stage import write_report

        with Store.open(db, readonly=True) as store:
            written = write_report(store, Path(job.report), config, today)
        report_path = str(Path(job.report).absolute())
        run.lines.append(f"report written: {job.report} ({len(written.assets)} assets, "
                         f"{len(written.findings)} open findings)")  # fmt: skip
    summary = _change_summary(run, db, started, nothing, bundles or {}, evaluation_before, report_path)
    if job.on_change and summary["changed"]:
        _hook(job, summary)
    counts = summary["counts"]
    say(f"job {job.name} finished: {counts['new_assets']} new, {counts['gone_assets']} gone, "
        f"{counts['changed_assets']} changed assets; {counts['new_findings']} new, "
        f"{counts['fixed_findings']} fixed findings")
    record_result(job.name, datetime.now(UTC))


def _scan(run: JobRun, config: dict[str, Any], db: Target) -> None:
    """The job's nmap scan, then SNMP on the hosts it found up when its methods include snmp."""
    from scanner.progress import ScanReporter
    from scanner.scan import live_addresses, nmap_request, run_source, scope_of, snmp_request
    from scanner.sources import get_source

    job = run.job
    request = nmap_request(list(job.targets), list(job.exclude), scope_of(job.scope, config), job.scan_options())
    source = get_source("nmap")
    source.describe(request, [])  # refuses what nmap must never be given, before anything is sent
    with Store.open(db) as store:
        summary = run_source(store, source, request, ScanReporter())
        run.scans.append(summary.scan_id)
        run.lines.append(f"scan {summary.scan_id} {summary.status}: {summary.hosts_up} hosts up of "
                         f"{summary.hosts_done} scanned, {summary.new_assets} new assets, {summary.services} "
                         "open services")  # fmt: skip
        if "snmp" in job.methods and store.assets_seen_in(summary.scan_id):
            live = live_addresses(store, summary.scan_id)
            snmp = run_source(store, get_source("snmp"), snmp_request(live, creds=list(job.creds)),
                              ScanReporter("devices"))  # fmt: skip
            run.scans.append(snmp.scan_id)
            counts = ", ".join(f"{n} {status}" for status, n in sorted(snmp.by_status.items()))
            run.lines.append(f"SNMP scan {snmp.scan_id}: {snmp.hosts_done} devices asked ({counts})")
    for error in summary.errors:
        say(f"job {job.name}: scan error: {error}", logging.ERROR)
    if summary.errors:
        raise PostureError(f"scan {summary.scan_id} failed in {len(summary.errors)} chunk(s)",
                           f"fix the cause, then `posture scan --resume {summary.scan_id}`")  # fmt: skip
    if summary.hosts_up == 0:
        raise NothingScanned("no host answered", "check the targets, routing and firewalls")


def _other_sources(run: JobRun, config: dict[str, Any], db: Target) -> None:
    """The sources a job names with a table of their own (a directory), each bound by the job's scope."""
    from scanner.progress import ScanReporter
    from scanner.scan import run_source, scope_of
    from scanner.sources import get_source

    job = run.job
    for method, request in job.settings:
        request.scope = scope_of(job.scope, config)  # binds its directory server as it binds its targets
        source = get_source(method)
        with Store.open(db) as store:
            summary = run_source(store, source, request, ScanReporter(noun=source.noun))
        run.scans.append(summary.scan_id)
        say(f"job {job.name}: {method}: {summary.hosts_up} {source.noun} read, "
            f"{summary.new_assets} new assets (scan {summary.scan_id})")


def _import_inbox(run: JobRun, inbox: Path, db: Target) -> dict[str, int]:
    """Import the settled bundles of a job's inbox and file each away as imported or refused."""
    from scanner.bundles import DEFAULT_MAX_BYTES, import_files
    from scanner.jobs import Inbox

    with Inbox(inbox) as box:  # never through a symbolic link planted in it
        ready, waiting, odd = box.entries(time.time())
        for name in waiting:
            say(f"inbox: {name} is still arriving; next run")
        for name in odd:
            say(f"inbox: {name} is not a regular file (a link, a folder, a pipe); left alone", logging.WARNING)
        if not ready:
            return {"bundles_imported": 0, "bundles_refused": 0}
        with Store.open(db) as store:
            outcome = import_files(store, [inbox / name for name in ready], DEFAULT_MAX_BYTES, say, follow_links=False)
        run.scans.extend(done.scan_id for done in outcome.imported)
        for done in outcome.imported:
            box.file_away(done.path.name, "imported")
        for path, reason in outcome.refused:
            box.file_away(path.name, "refused", reason)
    return {"bundles_imported": len(outcome.imported), "bundles_refused": len(outcome.refused)}


def _evaluate(run: JobRun, config: dict[str, Any], db: Target, day: date) -> None:
    from rules.stage import evaluate_inventory

    with Store.open(db) as store:
        summary = evaluate_inventory(store, config, day)
    for rule_id, message in summary.errors.items():
        say(f"job {run.job.name}: rule {rule_id} failed and was skipped: {message}", logging.WARNING)
    run.lines.append(f"evaluation {summary.evaluation_id} on {summary.day}: {summary.assets} assets, "
                     f"{summary.rules} rules")  # fmt: skip


def _change_summary(run: JobRun, db: Target, started: datetime, nothing: bool, bundles: dict[str, int],
                    evaluation_before: int, report: str | None) -> dict[str, Any]:  # fmt: skip
    """What the on_change hook gets on stdin (`scanner.change`, README "The change hook")."""
    from scanner.change import change_summary

    with Store.open(db, readonly=True) as store:
        return change_summary(store, job=run.job.name, started=started, scans=list(run.scans),
                              evaluation_before=evaluation_before, report=report, nothing_answered=nothing,
                              bundles=bundles)  # fmt: skip


def _hook(job: Job, summary: dict[str, Any]) -> None:
    """The job's on_change program, with the change summary on stdin and none of posture's secrets in its
    environment; a program that exits non-zero is said, not fatal (the run itself succeeded)."""
    from scanner.proc import HOOK_ENV, child_env, dies_with_parent

    try:
        done = subprocess.run(list(job.on_change), input=json.dumps(summary), text=True, timeout=300,
                              capture_output=True, check=False, env=child_env(HOOK_ENV),
                              preexec_fn=dies_with_parent())  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostureError(f"job {job.name}: on_change could not run: {exc}", "check the command") from exc
    if done.returncode != 0:
        say(f"job {job.name}: on_change exited {done.returncode}", logging.WARNING)
    else:
        say(f"job {job.name}: on_change ran")
