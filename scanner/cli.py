"""The root `posture` command and the scanner stage's subcommands.

Commands stay thin: they parse, call the library, and print. Library errors arrive as `PostureError`
and leave as one line on stderr with the next step, and the exit code from `scanner.errors`. Later
stages (rules, reports) add their commands through the `posture.commands` entry point, so this module
never imports them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from scanner.db import Target

from scanner import __version__
from scanner.command import (
    EXIT_IF_UNREAD,
    DbTarget,
    Whole,
    command_config,
    open_run_log,
    open_store,
    print_assets,
    progress_for,
)
from scanner.compat import UTC
from scanner.config import load_config, register_table_source
from scanner.errors import NothingScanned, PostureError
from scanner.model import md_escape, printable, write_csv
from scanner.progress import ScanReporter
from scanner.safefs import share_with


class PostureGroup(click.Group):
    """Turns every PostureError raised below into one clear stderr line and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        _load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The scanner's own commands come without loading the later stages: `posture --version` and
        `posture scan` never import rules/ or reports/; a name it lacks loads the plugins once."""
        if cmd_name not in self.commands:
            _load_plugins()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except Exception as exc:  # PostgreSQL's refusal of a statement posture has not ported yet: one line
                from scanner.db import store_error

                mapped = store_error(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
        except BrokenPipeError:  # the reader left (`posture rules list | head -1`): not a failure
            _stdout_gone()
            ctx.exit(ctx.meta.get(EXIT_IF_UNREAD, 0))
        except PostureError as exc:
            # Messages quote file names, config values and device strings: no escape sequence reaches the
            # terminal (each line made printable; lines a message means to have are kept).
            text = "\n".join(printable(line, 2000) for line in str(exc).splitlines())
            click.echo(f"posture: error: {text}", err=True)
            ctx.exit(int(exc.exit_code))


@click.group(cls=PostureGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    type=DbTarget(),
    envvar="POSTURE_DB",
    help="Inventory database: an SQLite file, or a postgresql://USER@HOST:PORT/DB URL (its password in "
    "PGPASSFILE, never in the URL). Default: $POSTURE_DB, else the config's [store] url, else "
    "~/.local/share/posture/inventory.db (/var/lib/posture/inventory.db with --system).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (TOML). Default: ~/.config/posture/config.toml if it exists "
    "(/etc/posture/config.toml with --system).",
)
@click.option(
    "--system",
    is_flag=True,
    envvar="POSTURE_SYSTEM",
    help="Use the service's files: /etc/posture (config, vault key), /var/lib/posture (inventory), "
    "/var/log/posture (run log). Also POSTURE_SYSTEM=1; the scheduled units set it.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress of imports, evaluation and the report on stderr. Default: only on a terminal.",
)
@click.version_option(__version__, prog_name="posture")
@click.pass_context
def cli(ctx: click.Context, db: Target | None, config_path: Path | None, system: bool, progress: bool | None) -> None:
    """posture: find what is on your network, what it runs, and what is out of support.

    \b
    Typical first run:
      posture scan 192.168.10.0/24 --scope 192.168.0.0/16
      posture import assets register.csv
      posture assets

    \b
    Examples:
      posture demo
      sudo -u posture posture --system config check
      posture --progress import nmap big-scan.xml 2> import.log
    """
    if system:  # every path is read from scanner.paths when used; children (hooks) see it too
        os.environ["POSTURE_SYSTEM"] = "1"
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["progress"] = progress
    share_with(lambda: load_config(config_path).get("files", {}).get("group"))  # read when a file is first made


# ---- scan --------------------------------------------------------------------------------------------


def _plan(
    ctx: click.Context, targets: Sequence[str], exclude: Sequence[str], scope: Sequence[str]
) -> tuple[Any, list[str]]:
    """Targets to addresses, after exclusions, checked against --scope or the config's scope; nothing is sent."""
    request = _nmap_request(ctx, targets, exclude, scope, {})
    return request.plan, request.scope


def _nmap_request(ctx: click.Context, targets: Sequence[str], exclude: Sequence[str], scope: Sequence[str],
                  options: dict[str, Any], chunk_size: int = 256, parallel: int = 2) -> Any:  # fmt: skip
    """`scanner.scan.nmap_request` with --scope, else the config's [scan] scope."""
    from scanner.scan import nmap_request, scope_of

    scope = scope_of(scope, command_config(ctx))
    return nmap_request(list(targets), list(exclude), scope, options, chunk_size, parallel)


targets_file_option = click.option(
    "--targets-file", "-iL", "targets_file", metavar="FILE",
    help="Also scan the targets listed in FILE (nmap's -iL form: separated by spaces or lines, # comments; "
    "- reads stdin).")  # fmt: skip


def _with_file(targets: tuple[str, ...], targets_file: str | None) -> tuple[str, ...]:
    """TARGETS and those of --targets-file, checked and in order."""
    from scanner.targets import read_targets_file

    return targets + tuple(read_targets_file(targets_file)) if targets_file else targets


summary_format = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: the outcome as one JSON object on stdout (each scan's counts, statuses and errors, the assets "
    "it saw); progress and problems stay on stderr.")  # fmt: skip


def _summary_json(kind: str, summary: Any, asset_ids: list[int]) -> dict[str, Any]:
    """One scan's outcome for `--format json`: `ScanSummary` as it is, its problems named, and its assets."""
    from dataclasses import asdict

    data: dict[str, Any] = {"kind": kind, **asdict(summary)}
    data["problems"] = [{"target": t, "status": s, "detail": printable(d, 300)} for t, s, d in summary.problems]
    data["asset_ids"] = asset_ids
    return data


def _echo_json(store: Any, scans: list[dict[str, Any]]) -> None:
    click.echo(json.dumps({"inventory": str(store.path), "scans": scans}, indent=2))


def snmp_options(f: Any) -> Any:
    """The SNMP knobs shared by `posture snmp` and `posture scan --snmp`."""
    for option in reversed([
        click.option("--creds", "creds", multiple=True, metavar="NAME",
                     help="SNMP credential(s) from `posture creds`, tried in turn (default: v2c community "
                     "'public')."),
        click.option("--snmp-port", type=click.IntRange(1, 65535), default=161, show_default=True),
        click.option("--snmp-timeout", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
                     help="Seconds to wait for each reply."),
        click.option("--snmp-retries", type=click.IntRange(0, 10), default=1, show_default=True),
        click.option("--snmp-deadline", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
                     help="Seconds allowed per device, all requests included; a slow device is cut off."),
        click.option("--snmp-concurrency", type=click.IntRange(1, 100), default=64, show_default=True,
                     help="Requests in flight at once (above ~100 replies get lost in the receive buffer)."),
    ]):  # fmt: skip
        f = option(f)
    return f


def _snmp_run(ctx: click.Context, store: Any, addresses: list[str], targets: list[str], params: dict[str, Any],
              fmt: str = "text") -> Any:  # fmt: skip
    from scanner.scan import run_source, snmp_request
    from scanner.sources import get_source

    request = snmp_request(addresses, targets, creds=params["creds"], port=params["snmp_port"],
                           timeout=params["snmp_timeout"], retries=params["snmp_retries"],
                           deadline=params["snmp_deadline"], concurrency=params["snmp_concurrency"])  # fmt: skip
    summary = run_source(store, get_source("snmp"), request, ScanReporter("devices"))
    _snmp_said(store, summary, fmt)
    return summary


def _snmp_said(store: Any, summary: Any, fmt: str) -> None:
    """What an SNMP scan did: one line (text) or nothing here (json: the caller prints every scan at once);
    the devices that failed go to stderr either way."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.by_status.items()))
    if fmt == "text":
        click.echo(f"SNMP scan {summary.scan_id}: {summary.hosts_done} devices asked ({counts}); "
                   f"{summary.new_assets} new assets, {summary.software} software and hardware rows. "
                   f"Inventory: {store.path}")  # fmt: skip
    for address, status, detail in summary.problems[:30]:
        click.echo(f"  {address}: {status}: {printable(detail, 160)}", err=True)
    if len(summary.problems) > 30:
        click.echo(f"  ... {len(summary.problems) - 30} more in `posture scans`", err=True)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--exclude", multiple=True, metavar="TARGET", help="Addresses, networks or ranges to leave out.")
@click.option("--scope", multiple=True, metavar="CIDR", help="Refuse any target outside these networks.")
@click.option("--resume", type=Whole(0), is_flag=False, flag_value=0, default=None, metavar="[SCAN_ID]",
              help="Finish an interrupted SNMP scan (the newest one, or SCAN_ID): the chunks of devices not "
              "yet done.")  # fmt: skip
@targets_file_option
@summary_format
@snmp_options
@click.pass_context
def snmp(ctx: click.Context, /, targets: tuple[str, ...], exclude: tuple[str, ...], scope: tuple[str, ...],
         resume: int | None, targets_file: str | None, fmt: str, **params: Any) -> None:  # fmt: skip
    """Ask devices over SNMP (v1, v2c, v3) for their system, interfaces, software and hardware.

    Runs without nmap. Each device gets the credentials given with --creds in turn; its outcome (ok,
    partial, auth-failure, no-response, timeout, error) is kept in the scan record and listed at the end.
    Secrets come from the encrypted vault (`posture creds add snmp NAME`), never from the command line.

    \b
    Examples:
      posture snmp 10.20.0.0/24 --creds core-v3
      posture snmp --resume          (after Ctrl-C: the devices not yet done)
      posture snmp -iL switches.txt --creds core-v3 --format json
    """
    targets = _with_file(targets, targets_file)
    if resume is not None:
        if targets:
            raise PostureError("give either TARGETS or --resume, not both", "see `posture snmp --help`")
        from scanner.scan import execute_run, resumable_scan, stored_request
        from scanner.sources import get_source

        with open_store(ctx) as store:
            scan_id = resumable_scan(store, resume or None, "snmp-scan")
            request = stored_request(store, scan_id, 1)
            source = get_source("snmp")
            source.check(request)
            store.claim_scan(scan_id)
            summary = execute_run(store, source, scan_id, request, ScanReporter("devices"))
            if fmt == "text":
                click.echo(f"SNMP scan {summary.scan_id} {summary.status}: {summary.hosts_done} of "
                           f"{summary.hosts_total} devices done, {summary.new_assets} new assets. "
                           f"Inventory: {store.path}")  # fmt: skip
            else:
                _echo_json(store, [_summary_json("snmp", summary, store.assets_seen_in(summary.scan_id))])
        return
    if not targets:
        raise click.UsageError("give at least one TARGET, --targets-file or --resume")
    plan, _ = _plan(ctx, targets, exclude, scope)
    with open_store(ctx, create=True) as store:
        summary = _snmp_run(ctx, store, [str(a) for a in plan.addresses], list(targets), params, fmt)
        if fmt == "json":
            _echo_json(store, [_summary_json("snmp", summary, store.assets_seen_in(summary.scan_id))])
    if summary.answered == 0:
        raise NothingScanned("no device answered SNMP", "check addresses, credentials and udp/161 filtering")


@cli.command()
@click.argument("targets", nargs=-1)
@click.option(
    "--exclude", multiple=True, metavar="TARGET", help="Addresses, networks or ranges to leave out (repeatable)."
)
@click.option(
    "--scope",
    multiple=True,
    metavar="CIDR",
    help="Refuse any target outside these networks, before a packet is sent (repeatable; "
    "default: [scan] scope in the config file).",
)
@click.option("--ports", "-p", metavar="LIST", help="Ports to scan, nmap syntax: 22,80,443,8000-8100.")
@click.option("--top-ports", type=click.IntRange(1, 65535), metavar="N", help="Scan nmap's N most common ports.")
@click.option(
    "--max-rate",
    type=click.IntRange(1, 100000),
    default=100,
    show_default=True,
    help="At most this many packets per second for the whole scan (shared by chunks running at once).",
)
@click.option(
    "--timing",
    type=click.Choice(["polite", "normal", "aggressive"]),
    default="normal",
    show_default=True,
    help="nmap timing template (-T2, -T3, -T4).",
)
@click.option(
    "--printer-ports",
    is_flag=True,
    help="Also probe printer ports 515, 9100-9107 and 9999 (left alone by default: printers print "
    "whatever arrives there).",
)
@click.option(
    "--version-detection/--no-version-detection",
    default=True,
    show_default=True,
    help="Ask each open port what product and version it runs (nmap -sV).",
)
@click.option(
    "--os-detection/--no-os-detection",
    default=None,
    help="Fingerprint the OS (nmap -O). Default: on when running as root.",
)
@click.option(
    "--dns/--no-dns",
    default=True,
    show_default=True,
    help="Look up the hostname of each live host (reverse DNS, nmap's default); --no-dns is nmap -n.",
)
@click.option(
    "--scripts/--no-scripts",
    default=True,
    show_default=True,
    help="Run nmap's safe scripts that read what a host says of itself: SMB dialects and signing, the Windows "
    "build in NTLM answers, SQL Server's version, NetBIOS names, TLS certificates (see the README).",
)
@click.option(
    "--tls-ciphers",
    is_flag=True,
    help="Also list each TLS service's protocol versions and cipher suites (nmap's ssl-enum-ciphers: dozens of "
    "handshakes a port, at most 5 at once; never on printer ports; see the README).",
)
@click.option("--unprivileged", is_flag=True, help="Use TCP connect scans even as root (no raw packets, no -O).")
@click.option(
    "--chunk-size",
    type=click.IntRange(1, 65536),
    default=256,
    show_default=True,
    help="Addresses per chunk; each chunk is saved as soon as it finishes.",
)
@click.option("--parallel", type=click.IntRange(1, 32), default=2, show_default=True, help="Chunks scanned at once.")
@click.option(
    "--resume",
    type=Whole(0),
    is_flag=False,
    flag_value=0,
    default=None,
    metavar="[SCAN_ID]",
    help="Finish an interrupted scan (the newest one, or SCAN_ID) instead of starting a new one.",
)
@click.option("--dry-run", is_flag=True, help="Check the targets and show the nmap command; send nothing.")
@click.option("--snmp", "with_snmp", is_flag=True, help="Also ask every live host over SNMP (see `posture snmp`).")
@targets_file_option
@summary_format
@snmp_options
@click.pass_context
def scan(
    ctx: click.Context,
    /,
    targets: tuple[str, ...],
    exclude: tuple[str, ...],
    scope: tuple[str, ...],
    ports: str | None,
    top_ports: int | None,
    max_rate: int,
    timing: str,
    printer_ports: bool,
    version_detection: bool,
    os_detection: bool | None,
    dns: bool,
    scripts: bool,
    tls_ciphers: bool,
    unprivileged: bool,
    chunk_size: int,
    parallel: int,
    resume: int | None,
    dry_run: bool,
    with_snmp: bool,
    targets_file: str | None,
    fmt: str,
    **snmp_params: Any,
) -> None:
    """Discover hosts, open ports, products and versions with nmap, and save them in the inventory.

    TARGETS are addresses (10.0.0.5), networks (10.0.0.0/24), ranges (10.0.0.1-50 or
    10.0.0.1-10.0.0.50) or hostnames. They are validated and never reach a shell.

    \b
    Defaults are gentle, for estates of fragile legacy kit:
      - at most 100 packets per second (--max-rate), nmap's normal timing;
      - printer ports (515, 9100-9107, 9999) are left alone unless
        --printer-ports;
      - version detection on; OS detection only when run as root;
      - nmap's safe scripts on, on the scanned hosts only (--no-scripts: off);
      - large ranges go in chunks of 256 addresses, 2 at a time, each saved
        when done: a scan killed half-way keeps what it finished; --resume
        completes it.

    Exit codes: 0 hosts found, 2 bad input or setup, 3 no host answered, 130 interrupted.

    \b
    Examples:
      posture scan 10.20.0.0/24 --scope 10.20.0.0/16
      posture scan 10.20.0.1-50 --exclude 10.20.0.9 --snmp --creds core-v3
      posture scan --resume             (finish the newest interrupted scan)
      posture scan 10.20.0.0/24 --format json > outcome.json
      posture scan --targets-file sites.txt --scope 10.0.0.0/8
    """
    from scanner.scan import execute_run, resumable_scan, run_source, stored_request
    from scanner.sources import get_source

    source = get_source("nmap")
    targets = _with_file(targets, targets_file)
    if resume is not None:
        if targets:
            raise PostureError("give either TARGETS or --resume, not both", "see `posture scan --help`")
        with open_store(ctx) as store:
            scan_id = resumable_scan(store, resume or None)
            request = stored_request(store, scan_id, parallel)
            source.check(request)
            store.claim_scan(scan_id)
            summary = execute_run(store, source, scan_id, request, ScanReporter())
            _finish_scan(ctx, store, summary, with_snmp, snmp_params, fmt)
        return

    if not targets:
        raise click.UsageError("give at least one TARGET, --targets-file or --resume")
    if ports and top_ports:
        raise click.UsageError("give --ports or --top-ports, not both")
    options = {"ports": ports, "top_ports": top_ports, "version_detection": version_detection,
               "os_detection": os_detection, "privileged": False if unprivileged else None, "max_rate": max_rate,
               "timing": timing, "printer_ports": printer_ports, "dns": dns, "scripts": scripts,
               "tls_ciphers": tls_ciphers}  # fmt: skip
    request = _nmap_request(ctx, targets, exclude, scope, options, chunk_size, parallel)
    plan = request.plan
    source.describe(request, [])  # refuses what nmap must never be given (--tls-ciphers on printer ports) up front
    if dry_run:
        units = source.units(request)
        click.echo(f"{len(plan.addresses)} addresses ({plan.excluded} excluded) in {len(units)} chunk(s) of up to "
                   f"{chunk_size}")  # fmt: skip
        click.echo(" ".join(source.describe(request, units[0][0])))
        return
    with open_store(ctx, create=True) as store:
        _finish_scan(ctx, store, run_source(store, source, request, ScanReporter()), with_snmp, snmp_params, fmt)


def _finish_scan(ctx: click.Context, store: Any, summary: Any, with_snmp: bool, snmp_params: dict[str, Any],
                 fmt: str = "text") -> None:  # fmt: skip
    from scanner.views import asset_views

    ids = store.assets_seen_in(summary.scan_id)
    if fmt == "text":
        if ids:
            print_assets(asset_views(store, ids[:50]))
            if len(ids) > 50:
                click.echo(f"... and {len(ids) - 50} more: `posture assets`")
        click.echo(
            f"scan {summary.scan_id} {summary.status}: {summary.hosts_up} hosts up of {summary.hosts_done} scanned, "
            f"{summary.new_assets} new assets, {summary.services} open services. Inventory: {store.path}"
        )
    said = [_summary_json("nmap", summary, ids)]
    if with_snmp and ids:
        from scanner.scan import live_addresses

        live = live_addresses(store, summary.scan_id)
        snmp_summary = _snmp_run(ctx, store, live, live, snmp_params, fmt)
        said.append(_summary_json("snmp", snmp_summary, store.assets_seen_in(snmp_summary.scan_id)))
    if fmt == "json":
        _echo_json(store, said)
    for error in summary.errors:
        click.echo(f"posture: error: {error}", err=True)
    if summary.errors:
        raise PostureError(
            f"scan {summary.scan_id} failed in {len(summary.errors)} chunk(s)",
            f"fix the cause, then `posture scan --resume {summary.scan_id}`",
        )
    if summary.hosts_up == 0:
        raise NothingScanned("no host answered", "check the targets, routing and firewalls")


# ---- import -------------------------------------------------------------------------------------------


@cli.group("import")
def import_group() -> None:
    """Bring in facts from elsewhere: nmap XML files, the asset register."""


@import_group.command("nmap")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def import_nmap(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Import `nmap -oX` output files (streamed: any size, constant memory).

    Each file is imported whole or not at all: a tampered file changes nothing. A damaged or truncated one
    (nmap killed mid-write) keeps every complete host before the damage, with a warning saying where.

    \b
    Examples:
      posture import nmap old-scan.xml
      posture import nmap site-a/*.xml
    """
    from scanner.importers import import_nmap_xml, require_file

    for path in files:  # every path first: a mistyped one makes no inventory and imports nothing
        require_file(path)
    total = 0
    with open_store(ctx, create=True) as store:
        for path in files:
            progress = progress_for(ctx, f"{printable(path.name, 80)}", "hosts read")
            try:
                result = import_nmap_xml(store, path, progress.update)
            finally:
                progress.finish()
            total += result.stats.hosts
            for warning in result.warnings:
                click.echo(f"posture: warning: {warning}", err=True)
            click.echo(
                f"{path}: {result.stats.hosts} hosts up, {result.stats.new_assets} new assets, "
                f"{result.stats.services} open services (scan {result.scan_id})"
            )
    if total == 0:
        raise NothingScanned("the files hold no host that was up")


@import_group.command("assets")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_context
def import_assets(ctx: click.Context, file: Path) -> None:
    """Import the asset register (CSV): owners, business services, sites, criticality.

    \b
    Columns are matched case-insensitively; at least one of:
      address (or "IP address", ip)
      hostname (or host, fqdn, "computer name", name)
    and any of:
      owner, "business service", site, criticality, "cost centre"

    Other columns are kept as attributes. Rows match existing assets by address,
    then hostname.

    \b
    Examples:
      posture import assets register.csv
    """
    from scanner.importers import import_register, require_file

    require_file(file)  # before the inventory is opened (or made)
    with open_store(ctx, create=True) as store:
        result = import_register(store, file)
    for warning in result.warnings[:20]:
        click.echo(f"posture: warning: {warning}", err=True)
    if len(result.warnings) > 20:
        click.echo(f"posture: warning: ... {len(result.warnings) - 20} more warnings", err=True)
    click.echo(
        f"{file}: {result.stats.hosts} register rows, {result.stats.new_assets} new assets (scan {result.scan_id})"
    )


@import_group.command("bundle")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--max-size", type=click.IntRange(1, 4096), default=64, show_default=True, metavar="MIB",
              help="Refuse bundles larger than this, before reading them.")  # fmt: skip
@click.pass_context
def import_bundle(ctx: click.Context, files: tuple[Path, ...], max_size: int) -> None:
    """Import host-agent bundles (`posture agent collect`), each merged into the asset it describes.

    Every bundle is checked before anything is written: signed by a trusted key (`posture keys trust`),
    unchanged since signing, not too large, not imported before (a replay), and decrypted with this
    site's key when sealed to it. A refused bundle changes nothing and is named with the reason; the
    others are imported, and the exit code is 2 if any was refused.

    \b
    Examples:
      posture import bundle host.bundle
      posture import bundle /srv/inbox/*.bundle
    """
    from scanner.bundles import import_files
    from scanner.runlog import say

    open_run_log(ctx)
    with open_store(ctx, create=True) as store:
        refused = import_files(store, files, max_size * 2**20, say).refused
    if refused:
        raise PostureError(f"{len(refused)} of {len(files)} bundle(s) refused; nothing of those was written",
                           "see the reasons above")  # fmt: skip


@import_group.command("ad")
@click.argument("url")
@click.option("--creds", "creds_name", required=True, metavar="NAME",
              help="LDAP credential from `posture creds add ldap NAME` (bind name and password).")
@click.option("--base-dn", metavar="DN", help="Search under this DN (default: the server's defaultNamingContext).")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="Trust the server's certificate if this CA signed it (default: the system's CAs).")
@click.option("--starttls", is_flag=True, help="ldap:// upgraded with StartTLS (instead of ldaps://).")
@click.option("--insecure-ldap", is_flag=True, help="Allow plain ldap:// with no TLS: the password crosses in clear.")
@click.option("--stale-days", type=Whole(1, 36500), metavar="N",
              help="A computer not seen logging on for N days is stale (default: [directory] stale_days, else 180).")
@click.option("--scope", multiple=True, metavar="CIDR",
              help="Refuse a server whose name resolves outside these networks (default: [scan] scope).")
@click.pass_context
def import_ad(ctx: click.Context, url: str, creds_name: str, base_dn: str | None, ca_file: Path | None,
              starttls: bool, insecure_ldap: bool, stale_days: int | None, scope: tuple[str, ...]) -> None:  # fmt: skip
    """Import computer objects from Active Directory over LDAP: names, OS and build, last logon, owner.

    \b
    Examples:
      posture creds add ldap corp-ad          (bind name, then password: prompted)
      posture import ad ldaps://dc1.corp.example --creds corp-ad \\
        --ca-file corp-ca.pem

    ldaps:// (or ldap:// with --starttls); the server's certificate is verified; plain ldap:// is refused
    unless --insecure-ldap. Referrals are never followed. A refusal (wrong password, unreachable server,
    untrusted certificate, unknown base DN) writes nothing. Each computer merges with a scanned asset of
    the same DNS name, else the same short name; the OU maps to a site or business service through the
    config's [directory] ou_sites and ou_services. With a scope (--scope or [scan] scope), a server whose
    name resolves outside it is refused before the password is sent.
    """
    from scanner.scan import run_source, scope_of
    from scanner.sources import get_source

    config = command_config(ctx)
    settings = {  # the config's [directory] (OU maps, stale_days), then this command's options
        **config.get("directory", {}),
        "url": url, "creds": creds_name, "base_dn": base_dn, "ca_file": str(ca_file.absolute()) if ca_file else None,
        "starttls": starttls, "insecure_ldap": insecure_ldap, "stale_days": stale_days,
    }  # fmt: skip
    source: Any = get_source("ad")
    request = source.job_request({k: v for k, v in settings.items() if v is not None})  # as a job's [jobs.X.ad]
    request.scope = scope_of(scope, config)
    source.open(request)  # every refusal (bind, certificate, base DN) before the inventory is touched
    try:
        with open_store(ctx, create=True) as store:
            summary = run_source(store, source, request, ScanReporter(noun=source.noun))
            details = [r[0] for r in store.conn.execute(
                "SELECT detail FROM scan_targets WHERE scan_id = ?", (summary.scan_id,))]  # fmt: skip
    finally:
        source.cancel()
    click.echo(f"directory import {summary.scan_id} {summary.status}: {summary.hosts_up} computer objects, "
               f"{summary.new_assets} new assets. Inventory: {store.path}")  # fmt: skip
    for detail in details:
        click.echo(f"  {printable(detail or '', 300)}")
    if summary.hosts_up == 0:
        raise NothingScanned("the directory holds no computer object there", "check --base-dn")


# ---- credentials ---------------------------------------------------------------------------------------


@cli.group()
def creds() -> None:
    """Encrypted credentials for SNMP, referred to by name (`--creds NAME`).

    Secrets are prompted for without echo (or read from stdin with --stdin), sealed with AES-256-GCM under
    a key in ~/.config/posture/vault.key (mode 0600) or $POSTURE_KEY, and never shown again.
    """


def _secret(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise PostureError(f"stdin ended before the {prompt}", "give one secret per line")
        value = line.rstrip("\r\n")
    else:
        value = click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)
    if not value:
        raise PostureError(f"the {prompt} is empty")
    return str(value)


@creds.command("add")
@click.argument("kind", type=click.Choice(["snmp", "ldap"]))
@click.argument("name")
@click.option("--version", "snmp_version", type=click.Choice(["1", "2c", "3"]), default="2c", show_default=True)
@click.option("--user", help="SNMPv3 user name.")
@click.option(
    "--auth-protocol",
    type=click.Choice(["SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5"]),
    help="SNMPv3 authentication (the key is prompted for).",
)
@click.option(
    "--priv-protocol",
    type=click.Choice(["AES", "AES192", "AES256", "DES"]),
    help="SNMPv3 privacy (the key is prompted for).",
)
@click.option("--context", default="", help="SNMPv3 context name.")
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read the secret(s) from stdin, one per line (community; or auth key then privacy key; for ldap the "
    "bind name, then the password).",
)
def creds_add(kind: str, name: str, snmp_version: str, user: str | None, auth_protocol: str | None,
              priv_protocol: str | None, context: str, from_stdin: bool) -> None:  # fmt: skip
    """Add (or replace) the credential NAME.

    \b
    Examples:
      posture creds add snmp core-v2c                  (community: prompted)
      posture creds add ldap corp-ad                   (bind name, password)

    ldap is a simple-bind account for `posture import ad`: the bind name (a DN, or user@domain) and its
    password, both sealed; read-only rights to computer objects are enough.
    """
    from scanner.agents.snmp import SnmpCredential
    from scanner.vault import add_ldap, add_snmp, check_name

    check_name(name)
    if kind == "ldap":
        if user or auth_protocol or priv_protocol or context:
            raise click.UsageError("--user, the protocols and --context are for SNMP credentials")
        if from_stdin:
            bind_name = sys.stdin.readline().rstrip("\r\n")
        else:
            bind_name = str(click.prompt("bind name (DN or user@domain)", err=True)).strip()
        add_ldap(name, bind_name, _secret("password", from_stdin))
        click.echo(f"credential {name!r} saved (LDAP simple bind)")
        return
    if snmp_version == "3":
        if not user:
            raise click.UsageError("SNMPv3 needs --user")
        if priv_protocol and not auth_protocol:
            raise click.UsageError("SNMPv3 privacy needs --auth-protocol too")
        if len(context.encode()) > 32:
            raise click.UsageError("an SNMPv3 context name is at most 32 octets")
        auth_key = _secret("authentication key", from_stdin) if auth_protocol else None
        priv_key = _secret("privacy key", from_stdin) if priv_protocol else None
        cred = SnmpCredential(name, "3", user=user, auth_protocol=auth_protocol, auth_key=auth_key,
                              priv_protocol=priv_protocol, priv_key=priv_key, context=context)  # fmt: skip
    else:
        if user or auth_protocol or priv_protocol:
            raise click.UsageError("--user and the protocols are for --version 3")
        cred = SnmpCredential(name, snmp_version, community=_secret("community", from_stdin))
    add_snmp(cred)
    click.echo(f"credential {name!r} saved (SNMP v{snmp_version})")


@creds.command("list")
def creds_list() -> None:
    """List credential names and their settings (never the secrets).

    \b
    Examples:
      posture creds list
    """
    from scanner.vault import list_credentials

    rows = list_credentials()
    if not rows:
        click.echo("no credentials yet: `posture creds add snmp NAME`")
    for r in rows:
        if r["kind"] == "ldap":
            click.echo(f"{r['name']}\tldap")
            continue
        detail = (
            f"user {r['user']}, auth {r['auth_protocol']}, priv {r['priv_protocol']}" if r["version"] == "3" else ""
        )
        click.echo(f"{r['name']}\t{r['kind']} v{r['version']}\t{detail}".rstrip())


@creds.command("remove")
@click.argument("name")
def creds_remove(name: str) -> None:
    """Remove the credential NAME.

    \b
    Examples:
      posture creds remove legacy-v2c
    """
    from scanner.vault import remove

    remove(name)
    click.echo(f"credential {name!r} removed")


# ---- views --------------------------------------------------------------------------------------------

ASSET_CSV_COLUMNS = [
    "id",
    "name",
    "addresses",
    "macs",
    "hostnames",
    "os_label",
    "os_product",
    "os_version",
    "os_cpe",
    "os_cycle",
    "os_lifecycle_state",
    "os_eol_date",
    "services",
    "first_seen",
    "last_seen",
    "sources",
    "owner",
    "business_service",
    "site",
    "criticality",
    "cost_centre",
]


def _asset_csv_row(a: dict[str, Any]) -> list[Any]:
    os_ = a["os"] or {}
    return [
        a["id"],
        a["name"],
        " ".join(a["addresses"]),
        " ".join(a["macs"]),
        " ".join(a["hostnames"]),
        os_.get("label"),
        os_.get("product") or os_.get("name"),
        os_.get("version"),
        os_.get("cpe"),
        os_.get("cycle"),
        os_.get("lifecycle_state"),
        os_.get("eol_date"),
        " ".join(f"{s['port']}/{s['protocol']}" for s in a["services"]),
        a["first_seen"],
        a["last_seen"],
        " ".join(a["sources"]),
        a["owner"],
        a["business_service"],
        a["site"],
        a["criticality"],
        a["cost_centre"],
    ]


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def assets(ctx: click.Context, fmt: str) -> None:
    """List the assets in the inventory: addresses, OS and its lifecycle, services, owner, last seen.

    \b
    Examples:
      posture assets
      posture assets --format csv > assets.csv
    """
    from scanner.views import asset_rows

    with open_store(ctx, readonly=True) as store:
        rows = asset_rows(store)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        write_csv(sys.stdout, ASSET_CSV_COLUMNS, (_asset_csv_row(a) for a in rows))
    elif rows:
        print_assets(rows)
    else:
        click.echo("the inventory has no assets yet: run `posture scan TARGET` or `posture import`")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--limit", type=Whole(), default=50, show_default=True)
@click.option(
    "--devices",
    "devices_of",
    type=Whole(),
    metavar="SCAN_ID",
    help="Instead, list how each device of SNMP scan SCAN_ID ended (ok, auth-failure, ...).",
)
@click.pass_context
def scans(ctx: click.Context, fmt: str, limit: int, devices_of: int | None) -> None:
    """List scans and imports, newest first, with how each ended (complete, interrupted, failed).

    \b
    Examples:
      posture scans --limit 10
      posture scans --devices 12   (each device of SNMP scan 12)
    """
    from scanner.views import scan_views

    with open_store(ctx) as store:
        store.reap_stale_scans()
        if devices_of is not None:
            targets = list(store.db.query(
                "SELECT address, method, status, detail, credential, seconds, requests, asset_id FROM scan_targets "
                "WHERE scan_id = ? ORDER BY status != 'ok', address", [devices_of]))  # fmt: skip
            if fmt == "json":
                click.echo(json.dumps(targets, indent=2))
            for t in targets if fmt == "table" else []:
                click.echo(f"{t['address']}\t{t['status']}\t{t['credential'] or ''}\t{printable(t['detail'] or '')}")
            if not targets:
                raise PostureError(f"scan {devices_of} asked no devices over SNMP", "see `posture scans`")
            return
        rows = scan_views(store, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for column in ("id", "kind", "status", "started", "finished", "targets / file", "hosts up", "done/total"):
        table.add_column(column, overflow="fold")
    for r in rows:
        what = " ".join(r["targets"]) or r["input_file"] or ""
        table.add_row(
            *(
                escape(printable(v))
                for v in (
                    r["id"],
                    r["kind"],
                    r["status"],
                    r["started_at"],
                    r["finished_at"] or "",
                    what[:80],
                    r["hosts_up"],
                    f"{r['hosts_done']}/{r['hosts_total']}",
                )
            )
        )
    Console(highlight=False).print(table)


@cli.command()
@click.argument("scans_to_compare", metavar="[SCAN_A SCAN_B]", nargs=-1, type=Whole())
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.pass_context
def diff(ctx: click.Context, scans_to_compare: tuple[int, ...], fmt: str) -> None:
    """What changed between two scans (default: the two newest of the same kind): assets new and gone;
    per asset the OS, MACs, services opened and closed, versions changed, programs installed, removed and
    changed; and the findings that appeared or cleared (including "crossed end of life since the last
    scan") between the evaluations made after each scan.

    An asset counts as gone only if the newer scan covered its address.

    \b
    Examples:
      posture diff                  (the two newest scans of a kind)
      posture diff 12 15 --format md
    """
    from scanner.diff import default_pair, diff_scans, with_details

    if len(scans_to_compare) not in (0, 2):
        raise PostureError("give two scan ids, or none", "e.g. posture diff 12 15 (see `posture scans`)")
    with open_store(ctx, readonly=True) as store:
        older, newer = scans_to_compare if scans_to_compare else default_pair(store)
        result = diff_scans(store, older, newer)
        result.update(with_details(store, older, newer))
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    lines = _diff_lines(result)
    if fmt == "md":
        click.echo(f"# Changes, scan {older} to scan {newer}\n")
        for line in lines[1:]:
            click.echo("- " + md_escape(line))
        click.echo(f"\n{lines[0]}")
        return
    for line in lines:
        click.echo(printable(line, 2000))


def _diff_lines(result: dict[str, Any]) -> list[str]:
    """The diff as lines, a summary first: for the table (plain) and Markdown (escaped) outputs."""
    found = result.get("findings")
    head = (f"scan {result['older']} -> scan {result['newer']}: {len(result['new'])} new, "
            f"{len(result['gone'])} gone, {len(result['changed'])} changed")  # fmt: skip
    if found:
        head += f"; findings {len(found['appeared'])} appeared, {len(found['cleared'])} cleared"
    lines = [head]
    for label, rows in (("new", result["new"]), ("gone", result["gone"])):
        lines += [f"{label}: {r['asset_id']} {' '.join(r['addresses'])} {r['name']}".rstrip() for r in rows]
    for c in result["changed"]:
        parts = []
        if "os" in c:
            parts.append(f"os {c['os']['before']!r} -> {c['os']['after']!r}")
        if "macs" in c:
            parts.append(f"mac {' '.join(c['macs']['before'])} -> {' '.join(c['macs']['after'])}")
        parts += [f"opened {p} {v}".rstrip() for p, v in c.get("opened", {}).items()]
        parts += [f"closed {p}" for p in c.get("closed", {})]
        parts += [f"{p} {v['before']} -> {v['after']}" for p, v in c.get("versions", {}).items()]
        software = c.get("software", {})
        parts += [f"installed {n} {v}".rstrip() for n, v in software.get("installed", {}).items()]
        parts += [f"removed {n}" for n in software.get("removed", {})]
        parts += [f"{n} {v['before']} -> {v['after']}" for n, v in software.get("changed", {}).items()]
        lines.append(f"changed: {c['asset_id']} {c['name']}: " + "; ".join(parts))
    for label, rows in (("appeared", found["appeared"]), ("cleared", found["cleared"])) if found else ():
        for f in rows:
            crossed = " (crossed end of life since the last scan)" if f.get("crossed_eol") else ""
            lines.append(f"finding {label}: {f['id']} {f['severity']} {f['rule_id']} on {f['asset_id']} {f['name']}: "
                         f"{f['evidence']}{crossed}")  # fmt: skip
    if result.get("findings_note"):
        lines.append(f"findings: {result['findings_note']}")
    return lines


@cli.command()
@click.option("--keep", type=Whole(), help="Keep the newest N scans of each kind and target list.")
@click.option("--older-than", "older_than", type=Whole(1, 36525), metavar="DAYS",
              help="Delete scans started more than DAYS days ago.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, and delete nothing.")
@click.pass_context
def prune(ctx: click.Context, keep: int | None, older_than: int | None, dry_run: bool) -> None:
    """Delete old scans and their sightings, keeping the asset history.

    Assets, their owners and when each was first and last seen stay as they are; so do findings. The
    newest scan of each kind and target list, running scans and asset-register imports are never deleted.

    \b
    Examples:
      posture prune --keep 10 --dry-run
      posture prune --older-than 400
    """
    from datetime import timedelta

    if keep is None and older_than is None:
        raise PostureError("say what to keep", "give --keep N, --older-than DAYS, or both")
    cutoff = None
    if older_than is not None:
        cutoff = (datetime.now(UTC) - timedelta(days=older_than)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open_store(ctx) as store:
        store.reap_stale_scans()
        doomed = store.prune_candidates(keep, cutoff)
        if dry_run:
            click.echo(f"would delete {len(doomed)} scans: {' '.join(map(str, doomed)) or '-'}")
            return
        store.prune(doomed)
    click.echo(f"deleted {len(doomed)} scans" + (f": {' '.join(map(str, doomed))}" if doomed else ""))


@cli.command()
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The SQLite inventory to copy.")
@click.option("--to", "target", required=True, metavar="URL",
              help="An empty PostgreSQL database: postgresql://USER@HOST:PORT/DB (the password in PGPASSFILE).")
def migrate(source: Path, target: str) -> None:
    """Copy an SQLite inventory into an empty PostgreSQL database, and prove the copy.

    Every scan, observation, finding, exception and identity goes over in one transaction (a failure leaves
    the database empty); then each table's row count and checksum are read back from both and printed side
    by side. A database that already holds an inventory is refused.

    \b
    Examples:
      posture migrate --from inventory.db --to postgresql://posture@db/posture
    """
    from scanner.db import is_url
    from scanner.migrate import migrate as copy_inventory

    if not is_url(target):
        raise PostureError(f"--to {printable(target, 80)} is not a postgresql:// URL",
                           "give an empty PostgreSQL database, e.g. postgresql://posture@db.example/posture")
    _load_plugins()  # later stages register the migrations of their own tables (rules: identities)
    proofs = copy_inventory(source, target, lambda table: click.echo(f"copying {table}", err=True))
    width = max(len(p.table) for p in proofs)
    click.echo(f"{'table':<{width}}  {'rows':>9}  {'copied':>9}  {'checksum':<16}  {'copy checksum':<16}  same")
    for p in proofs:
        click.echo(f"{p.table:<{width}}  {p.source_rows:>9}  {p.target_rows:>9}  {p.source_sum:<16}  "
                   f"{p.target_sum:<16}  {'yes' if p.same else 'NO'}")  # fmt: skip
    different = [p.table for p in proofs if not p.same]
    if different:
        raise PostureError(f"the copy differs from {source} in {', '.join(different)}", "report this; keep the file")
    click.echo(f"{len(proofs)} tables, {sum(p.target_rows for p in proofs)} rows: the copy matches {source}")


# ---- jobs --------------------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """The config file (TOML): [scan], [log], [files], [directory], [store], [sites.NAME] and [jobs.NAME],
    and the later stages' [rules], [lifecycle], [tls], [report], [share], [serve] and [collector]. `config
    check` validates every table; the README documents their keys."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config file: every table and key (the same check every command makes when it loads
    the file), each job's targets, cron schedule and credential names, and what would fail only after
    a scan: each on_change program exists and is executable, each report's folder exists and is
    writable (for the user running the check: run it as the jobs' user).

    Exits 2 with FILE:LINE and the key at the first problem in the file, or with every hook and report
    problem, one a line.

    \b
    Examples:
      posture config check
      sudo -u posture posture --system config check
    """
    from scanner.jobs import job_problems, load_jobs

    jobs, path, _ = load_jobs(ctx.obj.get("config_path"))
    for job in jobs.values():  # targets, exclusions and scope checked as a scan would check them
        if job.targets:
            _plan(ctx, job.targets, job.exclude, job.scope)
    problems = [p for job in jobs.values() for p in job_problems(job)]
    if problems:
        raise PostureError(f"{path}:\n" + "\n".join(problems), "fix the config file, or the programs and folders")
    click.echo(f"ok: {path} ({len(jobs)} jobs: {', '.join(sorted(jobs)) or 'none'})")


_plugins_loaded = False


def _load_plugins() -> None:
    """Commands of later stages (rules, reports) register here through the `posture.commands` entry point,
    once, when a command asks for them (importlib.metadata and the stages cost start-up time)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="posture.commands"):
        command = ep.load()
        if isinstance(command, click.Command) and ep.name not in cli.commands:
            cli.add_command(command, ep.name)


register_table_source(_load_plugins)  # their config tables ([rules], [report], ...) come with their commands


def _stdout_gone() -> None:
    """Point stdout at /dev/null, so the output still buffered and the interpreter's last flush go nowhere
    instead of raising BrokenPipeError again (Python's documented recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main() -> None:
    """The console script. A reader that stops early (`| head`) ends the command quietly with exit 0, also
    when the pipe breaks only at the last flush; any other exit code (1: findings at --fail-on) is kept."""
    try:
        cli(prog_name="posture")
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_gone()
        raise


@cli.command("man")
def man_command() -> None:
    """Print posture's manual page (troff), made from every command's help, plugins included.

    \b
    Examples:
      posture man > posture.1 && man -l posture.1
      posture man | gzip > /usr/local/share/man/man1/posture.1.gz
    """
    from scanner.manpage import render

    _load_plugins()
    click.echo(render(cli), nl=False)
