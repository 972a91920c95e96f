"""The application layer's commands: `posture run` (a scheduled job through every stage), `posture
schedule` (the systemd units and the jobs' timetable) and `posture demo`. They join the root command through the
`posture.commands` entry point; the work itself is `posture.jobs`."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from posture.service import ROLES
from scanner.command import db_path, open_run_log
from scanner.compat import UTC
from scanner.config import ConfigError, register_table
from scanner.errors import ExitCode, PostureError
from scanner.jobs import load_jobs

FC = TypeVar("FC", bound=Callable[..., Any])


@click.command("run")
@click.argument("job_name", metavar="[JOB]", required=False)
@click.option("--due", is_flag=True, help="Run every job whose schedule says it is due (for a one-minute timer).")
@click.option("--queue", "queued", is_flag=True,
              help="Enqueue the job's chunks on the central PostgreSQL inventory for `posture worker`s to run, "
                   "instead of scanning here (the job names a [sites.NAME]).")  # fmt: skip
@click.option("--chunk-size", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="With --queue: addresses per queued chunk.")  # fmt: skip
@click.option("--priority", type=click.IntRange(-100, 100), default=0, show_default=True,
              help="With --queue: workers take higher priorities first.")  # fmt: skip
@click.pass_context
def run_command(ctx: click.Context, job_name: str | None, due: bool, queued: bool, chunk_size: int,
                priority: int) -> None:  # fmt: skip
    """Run a scan job from the config file: its scan (and SNMP), then the rules, the report and the
    change hook. One run of a job at a time; a crashed run leaves no lock behind. With --queue, its
    chunks go to the queue and the workers' last chunk leaves the rules, report and hook to a worker.

    \b
    Examples:
      posture run town-hall
      posture run --due            (from a one-minute timer)
      posture run annex --queue    (on the central server)
    """
    from posture.jobs import run_job
    from scanner.jobs import due as due_jobs
    from scanner.jobs import last_runs, record_result
    from scanner.runlog import say

    if (job_name is None) == (not due):
        raise PostureError("give a job name or --due", "e.g. posture run town-hall (see `posture config check`)")
    jobs, _, config = load_jobs(ctx.find_root().obj.get("config_path"))
    open_run_log(ctx, config)
    if due:
        names = due_jobs(jobs, last_runs(), datetime.now(UTC))
        if names:  # a quiet minute leaves no line: the timer fires 1,440 times a day
            say(f"{len(names)} job(s) due: {' '.join(names)}")
    else:
        if job_name not in jobs:
            raise PostureError(f"no job {str(job_name)[:64]!r} in the config file", "see `posture config check`")
        names = [str(job_name)]
    if queued:
        from posture.queue import central

        central(db_path(ctx))  # one line before any job: the queue lives on the central PostgreSQL inventory
    failed = 0
    for name in names:
        try:
            if queued:
                _enqueue(jobs[name], config, db_path(ctx), chunk_size, priority)
                continue
            run = run_job(jobs[name], config, db_path(ctx))
        except PostureError as exc:
            say(f"job {name} failed: {exc}", logging.ERROR)
            record_result(name, datetime.now(UTC), str(exc).splitlines()[0] if str(exc) else "failed")
            if not due:
                ctx.exit(int(exc.exit_code))
            failed += 1
        else:
            for line in run.lines:
                click.echo(f"{name}: {line}")
    if failed:
        ctx.exit(int(ExitCode.USAGE))


def _enqueue(job: Any, config: dict[str, Any], db: Any, chunk_size: int, priority: int) -> None:
    from posture.queue import enqueue
    from scanner.jobs import record_run
    from scanner.runlog import say

    started = datetime.now(UTC)
    done = enqueue(job, config, db, chunk_size, priority)
    record_run(job.name, started)
    say(f"job {job.name}: run {done.scan_id} queued: {done.chunks} chunk(s), {done.addresses} addresses, site "
        f"{done.site.name} (at most {done.site.cap} at once, {done.site.chunk_rate} packets/s each)")
    click.echo(f"{job.name}: scan {done.scan_id} queued: {done.chunks} chunk(s) of {done.addresses} addresses "
               f"for site {done.site.name}")  # fmt: skip


@click.command("worker")
@click.option("--site", help="Only this site's chunks (default: every site's).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Chunks this worker runs at once (each its own nmap).")  # fmt: skip
@click.option("--once", is_flag=True,
              help="Stop when no chunk is left to take, once the running ones finish (for tests and cron).")
@click.option("--max-jobs", type=click.IntRange(1), help="Stop after this many queue jobs.")
@click.option("--stalled-after", type=click.FloatRange(1, 3600), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which a worker's chunks are given to others.")  # fmt: skip
@click.option("--grace", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
              help="On SIGTERM, seconds a running chunk may take to finish before it is stopped and given back.")
@click.pass_context
def worker_command(ctx: click.Context, site: str | None, concurrency: int, once: bool, max_jobs: int | None,
                   stalled_after: float, grace: float) -> None:  # fmt: skip
    """Run queued chunks from the central PostgreSQL inventory: scan each, store it once, and after a
    run's last chunk its rules, report and change hook. SIGTERM or Ctrl-C stops it cleanly (a chunk
    still running after --grace seconds is stopped and given back to the queue); a killed worker's chunks are
    retried elsewhere once its heartbeat is older than --stalled-after.

    \b
    Examples:
      posture worker --site annex --concurrency 2
      posture worker --once
    """
    from posture.queue import WorkerSettings, central, run_worker
    from scanner.config import load_config
    from scanner.runlog import say

    config = load_config(ctx.find_root().obj.get("config_path"))
    url = central(db_path(ctx))
    open_run_log(ctx, config)
    options = WorkerSettings(site, concurrency, once, max_jobs, stalled_after, grace)
    say(f"worker started{f' for site {site}' if site else ''}, {concurrency} at once")
    ran = run_worker(url, config, options)
    say(f"worker stopped after {ran} job(s)")
    click.echo(f"worker stopped after {ran} job(s)")


@click.group("queue")
def queue_group() -> None:
    """The job queue on the central PostgreSQL inventory (README "Many sites")."""


@queue_group.command("init")
@click.pass_context
def queue_init(ctx: click.Context) -> None:
    """Create the queue's tables in the central inventory (procrastinate's schema and posture's record
    of stored chunks); nothing is changed when they are there.

    \b
    Examples:
      posture --db postgresql://posture@db.example/posture queue init
    """
    from posture.queue import init_queue

    click.echo("queue created" if init_queue(db_path(ctx)) else "the queue is there already")


@queue_group.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def queue_status_command(ctx: click.Context, fmt: str) -> None:
    """Queue depth by site (chunks to do, running, done, failed) and the queue jobs that failed for good.

    \b
    Examples:
      posture queue status
      posture queue status --format json
    """
    from posture.queue import queue_status

    status = queue_status(db_path(ctx))
    if fmt == "json":
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(f"{'SITE':<24} {'TO DO':>7} {'RUNNING':>7} {'DONE':>7} {'FAILED':>7}")
    for site, counts in sorted(status["sites"].items()):
        click.echo(f"{site:<24} {counts['todo']:>7} {counts['doing']:>7} {counts['succeeded']:>7} "
                   f"{counts['failed']:>7}")  # fmt: skip
    if not status["sites"]:
        click.echo("the queue is empty")
    for job in status["failed"]:
        args = job["args"]
        click.echo(f"failed: job {job['id']} {job['task']} run {args.get('scan_id')} chunk {args.get('seq', '-')} "
                   f"(site {job['site']}, {job['attempts']} attempt(s))")


@click.command("status")
@click.option("--stale", type=click.IntRange(1, 10_080), default=10, show_default=True,
              help="Flag a collector STALE when its last request is older than this many minutes.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def status_command(ctx: click.Context, stale: int, fmt: str) -> None:
    """For the operator of a central server: each site of the config (scope, rate, cap, collectors it
    trusts) with its queue depth, each collector (last seen, from where, chunks taken, bundles stored;
    STALE or never seen), and the queue jobs that failed for good. Without a queue (an SQLite
    inventory, or no `posture queue init` yet) it says so and shows the sites.

    \b
    Examples:
      posture status
      posture status --stale 30 --format json
    """
    from posture.status import read_status, status_lines
    from scanner.command import command_config

    status = read_status(command_config(ctx), db_path(ctx), stale)
    if fmt == "json":
        click.echo(json.dumps(status, indent=2))
        return
    for line in status_lines(status):
        click.echo(line)


@click.group("schedule")
def schedule_group() -> None:
    """Run due jobs every minute from systemd (or cron), as the `posture` service user."""


def _unit_dir_option(units: str = "posture-jobs.service and posture-jobs.timer") -> Callable[[FC], FC]:
    return click.option(
        "--unit-dir",
        "--dir",
        "unit_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/etc/systemd/system"),
        show_default=True,
        help=f"The folder of {units}.",
    )


def _system_argv(ctx: click.Context) -> list[str]:
    """This posture as a unit or crontab runs it: `posture --system`, with this command's --db and --config."""
    import shutil

    from scanner.db import is_url

    root = ctx.find_root()
    argv = [shutil.which("posture") or str(Path(sys.argv[0]).resolve()), "--system"]
    db = root.params.get("db")
    if db:  # a relative path would be read from the service's working folder, /
        argv += ["--db", str(db) if is_url(db) else str(Path(db).absolute())]
    if root.obj.get("config_path"):
        argv += ["--config", str(Path(root.obj["config_path"]).absolute())]
    return argv


@schedule_group.command("install")
@_unit_dir_option()
@click.option("--create-user", is_flag=True, help="As root: add the `posture` system user and its folders.")
@click.pass_context
def schedule_install(ctx: click.Context, unit_dir: Path, create_user: bool) -> None:
    """Write a systemd service and a one-minute timer that run `posture --system run --due` as the
    `posture` user, with only nmap's two capabilities and a read-only system (or, without systemd,
    print the crontab line to add). Units of those names not written by posture are left alone.

    \b
    Examples:
      sudo posture schedule install --create-user
      posture schedule install --unit-dir /tmp/units
    """
    from scanner.schedule import create_user as make_user
    from scanner.schedule import setup_commands, write_units

    command = shlex.join([*_system_argv(ctx), "run", "--due"])
    if not Path("/run/systemd/system").is_dir() and unit_dir == Path("/etc/systemd/system"):
        click.echo("no systemd here: add this line with `crontab -e -u posture`:")
        click.echo(f"* * * * * {command}")
        return
    if create_user:
        for done in make_user():
            click.echo(f"ran: {done}")
    for path in write_units(unit_dir, command):
        click.echo(f"written: {path}")
    if not create_user:
        click.echo("the service user and its folders, if not made yet (or give --create-user):")
        for argv in setup_commands():
            click.echo(f"  {shlex.join(argv)}")
    click.echo("enable with: systemctl daemon-reload && systemctl enable --now posture-jobs.timer")


@schedule_group.command("remove")
@_unit_dir_option()
def schedule_remove(unit_dir: Path) -> None:
    """Delete the units `schedule install` wrote (only those: a unit of the same name written by
    someone else is left, and said). Stop the timer first. The user and its files are kept.

    \b
    Examples:
      sudo systemctl disable --now posture-jobs.timer
      sudo posture schedule remove
    """
    from scanner.schedule import remove_units

    _say_removed(*remove_units(unit_dir), f"no posture units in {unit_dir}")


def _say_removed(removed: list[Path], foreign: list[Path], nothing: str) -> None:
    """What a `remove` did: each unit removed, each left alone, or `nothing`; then the reload to run."""
    for path in removed:
        click.echo(f"removed: {path}")
    for path in foreign:
        click.echo(f"left alone (not written by posture): {path}")
    if not removed and not foreign:
        click.echo(nothing)
    elif removed:
        click.echo("then: systemctl daemon-reload")


@schedule_group.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def schedule_status(ctx: click.Context, fmt: str) -> None:
    """Each job's next run (from its cron schedule, local time; "due now" when `run --due` would run
    it) and when and how its last run ended. Jobs without a schedule run only when named (`posture run
    JOB`). The JSON also has the last completed run's start.

    \b
    Examples:
      posture schedule status
      sudo -u posture posture --system schedule status --format json
    """
    from scanner.jobs import last_results, last_runs
    from scanner.schedule import job_status

    jobs, _, _ = load_jobs(ctx.find_root().obj.get("config_path"))
    rows = job_status(jobs, last_runs(), last_results(), datetime.now().astimezone())
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no jobs in the config file")
        return

    def when(iso: str | None) -> str:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M") if iso else "-"

    click.echo(f"{'JOB':<20} {'NEXT RUN':<16} {'LAST ENDED':<16} RESULT")
    for row in rows:
        nxt = "due now" if row["due_now"] else when(row["next_run"]) if row["schedule"] else "when named"
        result = row["last_result"] or "-"
        if row["last_message"]:
            result = f"{result}: {row['last_message']}"
        line = f"{row['job']:<20} {nxt:<16} {when(row['last_finished']):<16} {result}"
        click.echo(line if len(line) <= 80 else line[:79] + "…")


@click.group("service")
def service_group() -> None:
    """systemd units for the daemons of many sites (README "Many sites"): `posture serve` and `posture
    worker` on the central server, `posture collector` at a site; hardened as the scheduler's units."""


ROLE = click.Choice(ROLES)


@service_group.command("install")
@click.argument("role", type=ROLE)
@_unit_dir_option("posture-ROLE.service")
@click.option("--listen", metavar="HOST:PORT",
              help="serve: the address to listen on, passed to `posture serve` (default: the config's [serve] "
                   "listen, else 0.0.0.0:8443); a port below 1024 gives the unit CAP_NET_BIND_SERVICE.")  # fmt: skip
@click.option("--site", help="worker: only this site's chunks.")
@click.option("--concurrency", type=click.IntRange(1, 64), help="worker: chunks at once.")
@click.pass_context
def service_install(ctx: click.Context, role: str, unit_dir: Path, listen: str | None, site: str | None,
                    concurrency: int | None) -> None:  # fmt: skip
    """Write posture-ROLE.service: the role as a daemon running `posture --system ROLE` as the `posture`
    user (restarted when it fails; a worker's running chunk gets 30 s to finish when it stops), with
    this command's --db and --config. A unit of that name not written by posture is left alone. Make the
    user first: `posture schedule install --create-user`, or the commands it prints.

    \b
    Examples:
      sudo posture service install serve
      sudo posture service install worker --site annex --concurrency 2
      posture service install collector --unit-dir /tmp/units
    """
    from posture.service import DEFAULT_LISTEN, install, listen_port, role_argv, unit_name
    from scanner.command import command_config
    from scanner.jobs import site_of

    if (listen and role != "serve") or ((site or concurrency) and role != "worker"):
        raise PostureError("--listen is for serve, --site and --concurrency for worker",
                           "see `posture service install --help`")  # fmt: skip
    config = command_config(ctx)
    if site:
        site_of(config, site)
    if listen:
        listen_port(listen)
    configured = config.get("serve", {}).get("listen") if isinstance(config.get("serve"), dict) else None
    argv = role_argv(role, _system_argv(ctx), listen, site, concurrency)
    path = install(unit_dir, role, argv, listen or str(configured or DEFAULT_LISTEN))
    click.echo(f"written: {path}")
    click.echo(f"enable with: systemctl daemon-reload && systemctl enable --now {unit_name(role)}")


@service_group.command("remove")
@click.argument("role", type=ROLE)
@_unit_dir_option("posture-ROLE.service")
def service_remove(role: str, unit_dir: Path) -> None:
    """Delete posture-ROLE.service if `service install` wrote it (someone else's is left, and said).
    Stop it first; the user and its files are kept.

    \b
    Examples:
      sudo systemctl disable --now posture-worker.service
      sudo posture service remove worker
    """
    from posture.service import remove

    _say_removed(*remove(unit_dir, role), f"no posture-{role}.service in {unit_dir}")


@click.command("demo")
@click.option("--keep-running", is_flag=True, help="Leave the lab up after the scan, until Ctrl-C.")
@click.pass_context
def demo_command(ctx: click.Context, keep_running: bool) -> None:
    """Start a lab of real recorded devices on this machine, scan it, and show what posture found.

    \b
    The lab lives on loopback addresses only and stops when the command ends:
      - snmpsim serving recordings of real devices (Windows XP and Server
        2003, RHEL 6, CentOS 7, Cisco IOS, Junos, NetApp, an APC UPS, a
        Hikvision camera) on 127.0.1.1-9, community 'public';
      - real sshd, nginx and vsftpd on 127.0.1.21-23 for nmap to fingerprint.

    Results go to their own inventory (~/.local/share/posture/demo.db unless
    --db is given), never mixed with a real one, and its report to
    demo-report.html beside it. Needs the demo extra (pip install
    'posture-scanner[demo]') and, for udp/161, root.

    \b
    Examples:
      posture demo
      posture --db /tmp/demo.db demo --keep-running
    """
    import time
    from datetime import date

    from reports.stage import write_report
    from rules.cli import summary_lines
    from rules.stage import evaluate_inventory
    from scanner.command import command_config, print_assets
    from scanner.db import is_url
    from scanner.demo import demo_lab, scan_demo, snmp_port
    from scanner.paths import data_dir
    from scanner.progress import ScanReporter
    from scanner.store import Store
    from scanner.views import asset_rows

    root = ctx.find_root()
    if is_url(root.params.get("db")):
        raise PostureError("the demo writes an SQLite file of its own, never a PostgreSQL inventory",
                           "run it without --db (or with --db FILE)")  # fmt: skip
    db = Path(root.params.get("db") or data_dir() / "demo.db")
    config = command_config(ctx)
    click.echo("posture demo: starting the lab (real daemons and recorded devices on 127.0.1.x)...", err=True)
    with demo_lab(snmp_port()) as (lab, sim), Store.open(db) as store:
        run = scan_demo(store, lab, sim, ScanReporter(), ScanReporter("devices"))
        # The rules evaluate first: the table shows what they identified, and their summary follows.
        evaluation = evaluate_inventory(store, config, date.today())
        print_assets(asset_rows(store, store.assets_seen_in(run.nmap.scan_id, run.snmp.scan_id)))
        counts = ", ".join(f"{n} {status}" for status, n in sorted(run.snmp.by_status.items()))
        click.echo(
            f"nmap found {run.nmap.hosts_up} hosts with {run.nmap.services} services; SNMP asked "
            f"{run.snmp.hosts_done} devices ({counts}) and read {run.snmp.software} software and hardware rows."
        )
        for line in summary_lines(evaluation):
            click.echo(line)
        click.echo(f"Inventory: {db}")
        html = db.with_name("demo-report.html")
        written = write_report(store, html, config, date.today())
        click.echo(f"report written: {html} ({len(written.assets)} assets, {len(written.findings)} open findings, "
                   f"{len(written.accepted)} accepted)")  # fmt: skip
        _look_at(db, html)
        if keep_running:
            click.echo("The lab is up (Ctrl-C to stop): try `snmpwalk -v2c -c public 127.0.1.1 system`", err=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


def _look_at(db: Path, html: Path) -> None:
    """The demo's last lines: the exact commands that show what it found."""
    import shutil

    found = shutil.which("posture")  # the commands as the user can type them: `posture` if that is this one
    prog = "posture" if found and Path(found).resolve() == Path(sys.argv[0]).resolve() else sys.argv[0]
    base = f"{shlex.quote(prog)} --db {shlex.quote(str(db))}"
    opener = f"xdg-open {shlex.quote(str(html))}" if shutil.which("xdg-open") else html.absolute().as_uri()
    click.echo("Look at what the demo found:")
    for line in (f"{opener}   (the report: open it in a browser)", f"{base} findings   (worst first)",
                 f"{base} plan remediation   (what to do, by whom, by when)",
                 f"{base} assets --format json | less   (everything it found)"):  # fmt: skip
        click.echo(f"  {line}")


# ---- site collectors: `posture serve` (central) and `posture collector` (at a site) ------------------

_SERVE_KEYS: dict[str, tuple[type, ...]] = {
    "listen": (str,), "tls_cert": (str,), "tls_key": (str,), "plain_http": (bool,), "stalled_after": (int, float),
    "metrics_from": (list,),
}  # fmt: skip
_COLLECTOR_KEYS: dict[str, tuple[type, ...]] = {
    "server": (str,), "site": (str,), "scope": (list,), "ca": (str,), "encrypt_to": (str,), "outbox": (str,),
    "poll": (int, float),
}  # fmt: skip


def _check_keys(name: str, keys: dict[str, tuple[type, ...]]) -> Callable[[dict[str, Any]], None]:
    """The check of a [serve] or [collector] table: known keys, each of its type; lists of strings."""

    def check(table: dict[str, Any]) -> None:
        for key, value in table.items():
            kinds = keys.get(key)
            if kinds is None:
                raise ConfigError(f"[{name}] unknown key {key[:40]!r} ([{name}] has {', '.join(sorted(keys))})", key)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ConfigError(f"[{name}] {key} must be a {' or '.join(k.__name__ for k in kinds)}", key)
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{name}] {key} must be a list of strings", key)

    return check


register_table("serve", _check_keys("serve", _SERVE_KEYS))
register_table("collector", _check_keys("collector", _COLLECTOR_KEYS))


@click.command("serve")
@click.option("--listen", help="ADDRESS:PORT to listen on ([serve] listen; default 0.0.0.0:8443).")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="The server's certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="Its private key (PEM).")
@click.option("--plain-http", is_flag=True, default=None,
              help="No TLS: only on a loopback address, behind a reverse proxy that terminates TLS.")
@click.option("--stalled-after", type=click.FloatRange(5, 3600), default=None,
              help="Seconds without a request from a collector before its chunks go to another (default 90).")
@click.pass_context
def serve_command(ctx: click.Context, listen: str | None, tls_cert: Path | None, tls_key: Path | None,
                  plain_http: bool | None, stalled_after: float | None) -> None:  # fmt: skip
    """Serve site collectors: hand out each site's queued chunks to the collectors its config trusts, take
    their signed results into the central PostgreSQL inventory, and report health (/healthz) and queue
    metrics (/metrics, Prometheus). Settings come from the config's [serve] table; options override it.
    A site's collectors are the key lines in its [sites.NAME] collectors list.

    \b
    Examples:
      posture serve --tls-cert /etc/posture/cert.pem --tls-key key.pem
      posture serve --listen 127.0.0.1:8080 --plain-http     # behind nginx
    """
    from posture.queue import central
    from posture.serve import ServeSettings, serve
    from scanner.config import load_config

    config = load_config(ctx.find_root().obj.get("config_path"))
    url = central(db_path(ctx))
    open_run_log(ctx, config)
    table = config.get("serve", {})
    settings = ServeSettings()
    settings.listen = listen or table.get("listen", settings.listen)
    cert, key = tls_cert or table.get("tls_cert"), tls_key or table.get("tls_key")
    settings.tls_cert, settings.tls_key = (Path(cert) if cert else None), (Path(key) if key else None)
    settings.plain_http = bool(plain_http if plain_http is not None else table.get("plain_http", False))
    settings.stalled_after = float(stalled_after or table.get("stalled_after", settings.stalled_after))
    settings.metrics_from = tuple(table.get("metrics_from", settings.metrics_from))
    serve(url, config, settings)


@click.command("collector")
@click.option("--server", help="The central server, https://HOST:PORT/ ([collector] server).")
@click.option("--site", help="This collector's site ([collector] site).")
@click.option("--scope", multiple=True, help="Networks this collector may scan ([collector] scope); repeatable.")
@click.option("--ca", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The CA certificate (PEM) that signed the server's; default: the system's.")
@click.option("--outbox", type=click.Path(path_type=Path, dir_okay=False),
              help="Where results wait while the server is unreachable (an SQLite file; default in the state folder).")
@click.option("--poll", type=click.FloatRange(0.2, 3600), default=None,
              help="Seconds between asks when there is nothing to do (default 30).")
@click.option("--once", is_flag=True, help="Stop when the server has nothing for this site and the outbox is empty.")
@click.option("--patience", type=click.FloatRange(0, 86400), default=300.0, show_default=True,
              help="With --once: seconds the server may stay unreachable before the collector stops (results kept).")
@click.option("--max-chunks", type=click.IntRange(1), help="Stop after scanning this many chunks.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Seconds to wait for the server's answer before the link counts as down.")
@click.pass_context
def collector_command(ctx: click.Context, server: str | None, site: str | None, scope: tuple[str, ...],
                      ca: Path | None, outbox: Path | None, poll: float | None, once: bool, patience: float,
                      max_chunks: int | None, timeout: float) -> None:  # fmt: skip
    """Scan a site for the central server: take the site's chunks over HTTPS (outbound only), check each
    against this collector's own scope, run nmap, and upload each result as a signed bundle. Results wait in
    a local outbox while the link is down and go up in order once it is back. Signs with this machine's
    signing key (`posture keys generate`): put its line (`posture keys list`) in the server's
    [sites.NAME] collectors. Settings come from the config's [collector] table; options override it.

    \b
    Examples:
      posture collector --server https://hq/ --site annex --scope 10.30.0.0/16
      posture collector --once --ca /etc/posture/tls/central-ca.pem
    """
    from posture.collector import CollectorSettings, run_collector
    from scanner.config import load_config
    from scanner.jobs import SITE_RE

    config = load_config(ctx.find_root().obj.get("config_path"))
    open_run_log(ctx, config)
    table = config.get("collector", {})
    chosen_server, chosen_site = server or table.get("server"), site or table.get("site")
    if not chosen_server or not chosen_site:
        raise PostureError("the collector needs its server and its site", "give --server and --site, or [collector]")
    if not SITE_RE.match(chosen_site):
        raise PostureError("a site name is lower case letters, digits, - and _ (at most 24)")
    given_ca = ca or (Path(table["ca"]) if table.get("ca") else None)
    settings = CollectorSettings(
        chosen_server, chosen_site, tuple(scope or table.get("scope", ())), given_ca, table.get("encrypt_to"),
        outbox or (Path(table["outbox"]) if table.get("outbox") else None),
        float(poll or table.get("poll", 30.0)), once, patience, max_chunks, timeout,
    )  # fmt: skip
    scanned = run_collector(settings)
    click.echo(f"collector stopped after {scanned} chunk(s)")
