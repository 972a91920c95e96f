"""Scan jobs from the config file: what to scan, how, and when; due-ness, one-at-a-time locks, last runs.

    [jobs.town-hall]
    targets = ["10.20.0.0/24"]
    scope = ["10.20.0.0/16"]
    methods = ["nmap", "snmp"]        # discovery sources (`scanner.sources`); nmap is the default
    creds = ["core-v3"]               # credential names from `posture creds`
    max_rate = 100
    scripts = true                    # nmap's safe scripts (default); false is `posture scan --no-scripts`
    tls_ciphers = false               # true adds ssl-enum-ciphers (`posture scan --tls-ciphers`)
    schedule = "30 2 * * 1-5"         # cron: 02:30 on weekdays
    report = "/srv/posture/town-hall.html"
    on_change = "/usr/local/bin/notify-security"   # gets a JSON summary on stdin when something changed

    [jobs.annex-agents]
    inbox = "/srv/posture/inbox"      # host-agent bundles arrive here (a share, a mail drop)
    schedule = "*/15 * * * *"

A job with an inbox imports the bundles there (`posture import bundle`), moving each to `imported/` or
`refused/` (with a `.reason` file) so the next run does not meet it again; a file written in the last
minute is left for the next run, as it may still be arriving.

A job runs as `posture scan` would with those options (the same validation: targets never reach a
shell). The lock is an flock on a file, so a crashed run never leaves it held.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scanner.compat import UTC
from scanner.errors import PostureError
from scanner.inputs import key_line
from scanner.model import printable
from scanner.paths import state_dir
from scanner.safefs import create_new, make_dirs, open_append, open_dir, write_atomic
from scanner.sources import FILE_SOURCES, NETWORK_SOURCES, get_source, source_names
from scanner.targets import check_target, parse_target, validate_ports

JOB_KEYS = {"targets", "exclude", "scope", "methods", "creds", "max_rate", "ports", "schedule", "report",
            "on_change", "dns", "allow_overlap", "inbox", "scripts", "tls_ciphers", "site"}  # fmt: skip
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Job:
    name: str
    targets: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("nmap",)
    creds: tuple[str, ...] = ()
    max_rate: int = 100
    ports: str | None = None
    schedule: str | None = None
    report: str | None = None
    on_change: tuple[str, ...] = ()
    dns: bool = True
    allow_overlap: bool = False
    inbox: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()  # (source, its request) for the methods with a table of their own
    scripts: bool = True
    tls_ciphers: bool = False
    site: str | None = None  # a [sites.NAME] of the config: the queue's site (`posture run JOB --queue`)

    def scan_options(self) -> dict[str, Any]:
        """The job's keys as options of its scan (`scanner.scan.nmap_request`, over the scan command's
        defaults). Its targets stay data, never parsed as options: nothing goes through an argument list."""
        return {"max_rate": self.max_rate, "ports": self.ports, "dns": self.dns, "scripts": self.scripts,
                "tls_ciphers": self.tls_ciphers}  # fmt: skip


SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")  # short: it names a queue and its NOTIFY channel


@dataclass(frozen=True)
class Site:
    """A site the queue scans: `scope` bounds every chunk enqueued for it (and is checked again by the
    worker before nmap runs), `max_rate` is its packets per second in all, shared by the `cap` chunks that
    may run at once there."""

    name: str
    scope: tuple[str, ...]
    max_rate: int = 100
    cap: int = 2
    # The collectors allowed to take this site's chunks (`posture collector`): key id -> (name, raw Ed25519
    # public key), from `collectors = ["posture-ed25519 BASE64 NAME", ...]`. None listed: workers scan it.
    collectors: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def chunk_rate(self) -> int:
        """Each running chunk's share of the site's rate budget (nmap --max-rate)."""
        return max(1, self.max_rate // self.cap)


def parse_site(name: str, table: object) -> Site:
    """One [sites.NAME] table, checked; a PostureError names the first problem."""
    from scanner.targets import parse_target

    if not SITE_RE.match(name):
        raise PostureError("a site name is lower case letters, digits, - and _ (at most 24)")
    if not isinstance(table, dict):
        raise PostureError("must be a table with scope, max_rate and cap")
    unknown = sorted(set(table) - {"scope", "max_rate", "cap", "collectors"})
    if unknown:
        raise PostureError(f"unknown key {unknown[0][:40]!r} (a site has scope, max_rate, cap, collectors)")
    scope = table.get("scope")
    if not isinstance(scope, list) or not scope or not all(isinstance(s, str) for s in scope):
        raise PostureError('scope must be a list of networks, e.g. scope = ["10.30.0.0/16"]')
    for spec in scope:
        parse_target(spec, resolve=False)
    max_rate, cap = table.get("max_rate", 100), table.get("cap", 2)
    for key, value, top in (("max_rate", max_rate, 100_000), ("cap", cap, 64)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise PostureError(f"{key} must be a whole number from 1 to {top}")
    return Site(name, tuple(scope), max_rate, cap, _collector_keys(table.get("collectors", [])))


def _collector_keys(lines: object) -> dict[str, tuple[str, bytes]]:
    """`collectors = ["posture-ed25519 BASE64 NAME", ...]` (the line `posture keys list` prints at the
    collector) as key id -> (name, raw public key); each line needs a name, and names are unique."""
    from scanner.bundles import SIGNING_PREFIX, key_id, parse_public_line

    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise PostureError(f'collectors must be a list of key lines, e.g. collectors = ["{SIGNING_PREFIX} ... NAME"]')
    keys: dict[str, tuple[str, bytes]] = {}
    for line in lines:
        raw = parse_public_line(line, SIGNING_PREFIX)
        parts = line.split()
        name = " ".join(parts[2:])[:64]
        if not name:
            raise PostureError("each collector's key line ends with a name for it (the comment after the key)")
        if key_id(raw) in keys or name in {n for n, _ in keys.values()}:
            raise PostureError(f"collector {name!r} is listed twice")
        keys[key_id(raw)] = (name, raw)
    return keys


def all_sites(config: dict[str, Any]) -> dict[str, Site]:
    """Every [sites.NAME] of the config, by name in order; a PostureError names the first bad one."""
    sites = {}
    for name, table in sorted(config.get("sites", {}).items()):
        try:
            sites[name] = parse_site(name, table)
        except PostureError as exc:
            raise PostureError(f"[sites.{name[:40]}]: {exc.message}", exc.hint) from None
    return sites


def site_of(config: dict[str, Any], name: str) -> Site:
    """The config's [sites.NAME], or a PostureError saying it is not there."""
    table = config.get("sites", {}).get(name)
    if table is None:
        raise PostureError(f"no site {name[:40]!r} in the config file",
                           'add a [sites.NAME] table (README "Many sites")')  # fmt: skip
    return parse_site(name, table)


def load_jobs(config_path: Path | None) -> tuple[dict[str, Job], Path, dict[str, Any]]:
    """The config file's jobs, checked (credential names against the vault), the file's path, its data."""
    from scanner.config import read_config
    from scanner.vault import list_credentials

    config = read_config(config_path)
    known_creds = {r["name"] for r in list_credentials()}
    return parse_jobs(config.data, config.text, str(config.path), known_creds), config.path, config.data


def _line(text: str, job: str, key: str | None) -> int:
    return key_line(text, ("jobs", job), key)


def _target_problem(target: str) -> str | None:
    """Why a job's target is refused, or None.

    The one place each job target is checked, for `config check` and `run` alike (issue 11, item 7), by the
    validator `posture scan` uses (`scanner.targets.check_target`): an address, network, range or hostname,
    never a string starting with "-" that the scan's command line could take for an option.
    """
    try:
        check_target(target)
    except PostureError as exc:
        return exc.message
    return None


def parse_jobs(data: dict[str, Any], text: str, where: str, known_creds: set[str] | None = None) -> dict[str, Job]:
    """Every [jobs.NAME] table, each key checked; errors name the file, line and key."""
    raw = data.get("jobs", {})
    if not isinstance(raw, dict):
        raise PostureError(f"{where}: [jobs] must hold tables like [jobs.town-hall]", "see the README")
    jobs: dict[str, Job] = {}
    for name, table in raw.items():

        def fail(key: str | None, message: str, name: str = name) -> PostureError:
            shown = printable(name, 64)  # a job name that fails NAME_RE may hold escape sequences
            return PostureError(f"{where}:{_line(text, name, key)}: jobs.{shown}: {message}", "fix the config file")

        if not NAME_RE.match(name):
            raise fail(None, "a job name is lower case letters, digits, - and _ (at most 63)")
        if not isinstance(table, dict):
            raise fail(None, "must be a table")
        unknown = sorted(set(table) - JOB_KEYS - (set(source_names()) - set(FILE_SOURCES)))
        if unknown:
            raise fail(unknown[0], f"unknown key {unknown[0]!r} (a job has {', '.join(sorted(JOB_KEYS))})")
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("targets", "exclude", "scope", "methods", "creds"):
            value = table.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise fail(key, f"{key} must be a list of strings")
            lists[key] = tuple(value)
        for target in lists["targets"]:
            problem = _target_problem(target)
            if problem:
                raise fail("targets", problem)
        methods = lists["methods"] or ("nmap",)
        unknown = sorted(set(methods) - set(source_names()) | (set(methods) & set(FILE_SOURCES)))
        if unknown:
            known = ", ".join(n for n in source_names() if n not in FILE_SOURCES)
            raise fail("methods", f"unknown method {unknown[0][:40]!r} (methods are {known}; bundles come "
                       "through `inbox`)")  # fmt: skip
        own = [m for m in methods if m not in NETWORK_SOURCES]
        if not lists["targets"] and not table.get("inbox") and not own:
            raise fail("targets", "a job needs targets (to scan), an inbox (of agent bundles) or a source "
                       "with its own table (e.g. [jobs.NAME.ad])")  # fmt: skip
        settings: list[tuple[str, Any]] = []
        for method in sorted(set(source_names()) & set(table)):
            if method not in methods:
                raise fail(method, f"[jobs.{printable(name, 64)}.{method}] is given but {method!r} is not among "
                           "this job's methods")  # fmt: skip
        for method in [*own, *(m for m in NETWORK_SOURCES if m in table)]:
            if not isinstance(table.get(method), dict):
                raise fail("methods", f"method {method!r} needs its table [jobs.{printable(name, 64)}.{method}]")
            try:  # a network source refuses a table of its own: it takes the job's targets
                settings.append((method, get_source(method).job_request(table[method])))
            except PostureError as exc:
                raise fail(method, exc.message) from None
        if known_creds is not None:
            missing = [c for c in lists["creds"] if c not in known_creds]
            if missing:
                raise fail("creds", f"unknown credential {missing[0]!r} (see `posture creds list`)")
        max_rate = table.get("max_rate", 100)
        if not isinstance(max_rate, int) or isinstance(max_rate, bool) or not 1 <= max_rate <= 100_000:
            raise fail("max_rate", "max_rate is packets per second, 1 to 100000")
        schedule = table.get("schedule")
        if schedule is not None and not _cron_ok(schedule):
            raise fail("schedule", f"{repr(schedule)[:60]} is not a cron expression that comes round "
                       "(e.g. \"30 2 * * 1-5\")")  # fmt: skip
        for key in ("report", "ports", "inbox", "site"):
            if key in table and not isinstance(table[key], str):
                raise fail(key, f"{key} must be a string")
        if "site" in table and table["site"] not in data.get("sites", {}):
            raise fail("site", f"no [sites.{printable(table['site'], 40)}] table in the config")
        if "ports" in table:
            try:
                validate_ports(table["ports"])
            except PostureError as exc:
                raise fail("ports", exc.message) from None
        on_change = table.get("on_change")
        if on_change is not None and (not isinstance(on_change, str) or not on_change.strip()):
            raise fail("on_change", "on_change is a command line")
        try:
            hook = tuple(shlex.split(on_change)) if on_change else ()
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise fail("on_change", f"on_change is not a valid command line: {exc}") from None
        for key in ("dns", "allow_overlap", "scripts", "tls_ciphers"):
            if key in table and not isinstance(table[key], bool):
                raise fail(key, f"{key} is true or false")
        jobs[name] = Job(
            name=name, targets=lists["targets"], exclude=lists["exclude"], scope=lists["scope"], methods=methods,
            creds=lists["creds"], max_rate=max_rate, ports=table.get("ports"), schedule=schedule,
            report=table.get("report"), on_change=hook,
            dns=table.get("dns", True), allow_overlap=table.get("allow_overlap", False), inbox=table.get("inbox"),
            settings=tuple(settings),
            scripts=table.get("scripts", True), tls_ciphers=table.get("tls_ciphers", False), site=table.get("site"),
        )  # fmt: skip
    _check_overlaps(jobs, text, where)
    return jobs


def _cron_ok(schedule: object) -> bool:
    """Five cron fields that croniter accepts and that name a time that comes round ("0 0 31 2 *" passes
    croniter's syntax check, then makes every `run --due` fail)."""
    from croniter import croniter

    if not isinstance(schedule, str) or len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        return False
    try:
        croniter(schedule, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception:  # croniter's own errors (CroniterBadDateError, ...) are not one family
        return False
    return True


def _check_overlaps(jobs: dict[str, Job], text: str, where: str) -> None:
    """Two jobs scanning the same addresses double the load on fragile kit: refused unless allowed."""
    nets = {}
    for name, job in jobs.items():
        # Offline: every command loads the config, and none should wait on DNS for it. Hostname targets
        # stand for no network here (their addresses are known when the job runs); the rest are checked.
        nets[name] = [n for t in job.targets for n in parse_target(t, resolve=False).networks]
    names = list(nets)  # in file order: the later job is the one reported
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if jobs[a].allow_overlap and jobs[b].allow_overlap:
                continue
            if any(x.overlaps(y) for x in nets[a] for y in nets[b] if x.version == y.version):
                raise PostureError(
                    f"{where}:{_line(text, b, 'targets')}: jobs.{b}: its targets overlap those of jobs.{a}",
                    "scan each network in one job, or set allow_overlap = true in both",
                )


def due(jobs: dict[str, Job], last_runs: dict[str, str], now: datetime) -> list[str]:
    """Jobs whose schedule has a run time after their last run and not after now (a job never run is due
    at its first scheduled time after the epoch of its definition: at once)."""
    from croniter import croniter

    out = []
    for name, job in sorted(jobs.items()):
        if not job.schedule:
            continue
        last = last_runs.get(name)
        since = datetime.fromisoformat(last) if last else now.replace(year=now.year - 1)
        if croniter(job.schedule, since).get_next(datetime) <= now:
            out.append(name)
    return out


def last_runs() -> dict[str, str]:
    path = state_dir() / "jobs.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def record_run(name: str, started: datetime) -> None:
    runs = last_runs()
    runs[name] = started.astimezone(UTC).isoformat()
    make_dirs(state_dir())
    write_atomic(state_dir() / "jobs.json", json.dumps(runs, indent=2).encode())


def last_results() -> dict[str, dict[str, str]]:
    """Each job's last outcome as `record_result` left it (for `posture schedule status`)."""
    try:
        data = json.loads((state_dir() / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: {a: b for a, b in v.items() if isinstance(b, str)} for k, v in data.items() if isinstance(v, dict)}


def record_result(name: str, finished: datetime, error: str | None = None) -> None:
    """Note how a job's run ended: "ok", or "failed" with the one-line reason (already made printable)."""
    results = last_results()
    results[name] = {"finished": finished.astimezone(UTC).isoformat(), "result": "failed" if error else "ok",
                     **({"message": printable(error, 300)} if error else {})}  # fmt: skip
    make_dirs(state_dir())
    write_atomic(state_dir() / "results.json", json.dumps(results, indent=2).encode())


def job_problems(job: Job) -> list[str]:
    """What would make the job fail after its scan: an on_change program that is missing or not
    executable, a report folder that is missing or not writable. `config check` says them up front."""
    import shutil

    problems = []
    if job.on_change:
        program = job.on_change[0]
        found = shutil.which(program) if "/" not in program else program
        path = Path(found) if found else None
        if path is None or not path.exists():
            problems.append(f"jobs.{job.name}: on_change: {printable(program, 120)} does not exist"
                            + ("" if "/" in program else " on PATH"))  # fmt: skip
        elif not path.is_file() or not os.access(path, os.X_OK):
            problems.append(f"jobs.{job.name}: on_change: {printable(program, 120)} is not an executable file")
    if job.report:
        folder = Path(job.report).absolute().parent  # as the run writes it
        if not folder.is_dir():
            problems.append(f"jobs.{job.name}: report: the folder {printable(str(folder), 120)} does not exist")
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"jobs.{job.name}: report: the folder {printable(str(folder), 120)} is not writable")
    return problems


@contextmanager
def job_lock(name: str) -> Iterator[None]:
    """One run of a job at a time. flock is released by the kernel when the holder dies: no stale locks."""
    path = state_dir() / "locks" / f"{name}.lock"
    try:
        make_dirs(path.parent)
        handle = open_append(path, "a+")  # never through a symbolic link planted at its name
    except OSError as exc:
        raise PostureError(f"cannot open the lock file {path}: {exc.strerror}",
                           "check the state folder; a symbolic link there is refused") from None  # fmt: skip
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip()[:20]
            raise PostureError(f"job {name} is already running (pid {holder or 'unknown'})",
                               "wait for it to finish") from exc  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


SETTLE_SECONDS = 60  # a bundle younger than this may still be arriving over a share


class Inbox:
    """A job's inbox, opened without following a symbolic link, with its `imported/` and `refused/` folders.

    posture runs as root and others write here, so every look and move works relative to the open
    folders (openat-style), never by path: a link planted at an entry, at `imported/` or `refused/` or at
    a `.reason` file is never followed. A linked `imported/` or `refused/` stops the job before anything is
    imported or moved; an entry that is not a regular file (a link, a FIFO, a folder) is left alone.
    """

    FOLDERS = ("imported", "refused")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folders: dict[str, int] = {}
        try:
            self.fd = open_dir(path)
        except OSError as exc:
            what = "a symbolic link" if path.is_symlink() else f"not a folder ({exc.strerror})"
            raise PostureError(f"the inbox {path} is {what}", "create it, or give the job its real path") from None
        try:
            for name in self.FOLDERS:
                self.folders[name] = self._folder(name)
        except BaseException:
            self.close()
            raise

    def _folder(self, name: str) -> int:
        try:
            return open_dir(name, self.fd, create=True)
        except OSError as exc:
            raise PostureError(f"the inbox's {name}/ in {self.path} is not a real folder (a symbolic link?): "
                               f"{exc.strerror}; nothing was imported or moved",
                               f"remove it; posture makes {name}/ itself") from None  # fmt: skip

    def close(self) -> None:
        for fd in [*self.folders.values(), self.fd]:
            os.close(fd)
        self.folders.clear()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entries(self, now: float) -> tuple[list[str], list[str], list[str]]:
        """Names of the bundles ready to import, of those too new to trust as complete, and of entries
        left alone because they are not regular files (never followed, never read)."""
        ready: list[str] = []
        waiting: list[str] = []
        odd: list[str] = []
        for name in sorted(os.listdir(self.fd)):  # noqa: PTH208 - the open folder, not a path
            if name.startswith(".") or name in self.FOLDERS:
                continue
            try:
                st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            if not stat.S_ISREG(st.st_mode):
                odd.append(name)
            else:
                (ready if now - st.st_mtime >= SETTLE_SECONDS else waiting).append(name)
        return ready, waiting, odd

    def file_away(self, name: str, folder: str, reason: str | None = None) -> str | None:
        """Move a handled bundle into `folder`/ under a free name, with its reason beside it if refused (a
        new file: a link planted at the name is skipped, never written through). The new name, or None if
        the bundle has gone meanwhile."""
        into = self.folders[folder]
        stem, suffix = Path(name).stem, Path(name).suffix
        try:
            for n in range(1000):
                target = f"{stem}.{n}{suffix}" if n else name
                if _taken(target, into):
                    continue
                if reason is not None:
                    try:
                        fd = create_new(f"{target}.reason", into)
                    except FileExistsError:
                        continue  # something (a planted link?) has the reason's name: never written through
                    with open(fd, "wb") as f:  # noqa: PTH123 - a descriptor, not a path
                        f.write(reason.encode() + b"\n")
                try:
                    os.replace(name, target, src_dir_fd=self.fd, dst_dir_fd=into)
                except OSError:
                    if reason is not None:
                        with suppress(OSError):
                            os.unlink(f"{target}.reason", dir_fd=into)
                    raise
                return target
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PostureError(f"could not move {name} into {self.path / folder}: {exc.strerror}",
                               "check the inbox's folders, their permissions and free space") from None  # fmt: skip
        raise PostureError(f"{self.path / folder} has a thousand files named like {name}", "clear it out")


def _taken(name: str, dir_fd: int) -> bool:
    """Is there an entry (of any kind, a dangling link too) called `name` in the open folder?"""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
