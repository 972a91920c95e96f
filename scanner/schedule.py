"""The systemd units that run due jobs as the `posture` service user, and what `schedule status` shows.

`posture schedule install` writes two units: a one-minute timer and a oneshot service running
`posture --system run --due`. The service runs as the unprivileged `posture` user with only the two
capabilities nmap's raw scans need (CAP_NET_RAW, CAP_NET_ADMIN, given as ambient capabilities so nmap,
which is not setuid, inherits them), sees the file system read-only except its own folders
(`scanner.paths.system_dirs`), and none of /home. Nothing here narrows what nmap and SNMP need: raw
and packet sockets (AF_PACKET), netlink (nmap reads the routing table), /proc/net.

Every unit written carries `MARK`, so `schedule remove` deletes those files and never a unit of the
same name someone else wrote.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from scanner.errors import PostureError
from scanner.paths import SYSTEM_USER, system_dirs
from scanner.safefs import write_atomic

SERVICE, TIMER = "posture-jobs.service", "posture-jobs.timer"
MARK = "# Written by `posture schedule install`; `posture schedule remove` deletes it."
CAPABILITIES = "CAP_NET_RAW CAP_NET_ADMIN"  # nmap -sS / -O (raw and packet sockets), nothing else
NMAP_FAMILIES = "AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET"  # nmap's raw scans, its routing table, SNMP

# Hardening that leaves nmap's raw scans and SNMP working. Left out on purpose: PrivateUsers= (the
# capabilities would hold only inside a user namespace, not on the host's network), ProcSubset=pid (nmap
# reads /proc/net/route), PrivateNetwork=, IPAddressDeny=; MemoryDenyWriteExecute= (untried with the
# libraries' libffi callbacks under a real systemd here: added when a service run has shown it safe).
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
)


def service_section(head: list[str], command: str, tail: list[str], capabilities: str = CAPABILITIES,
                    families: str = NMAP_FAMILIES) -> list[str]:  # fmt: skip
    """A [Service] section running `command` as the service user, sandboxed by HARDENING: writable only its
    own folders, with `capabilities` (none: an empty bounding set drops them all) and `families` of sockets.
    Shared by the scheduler's unit and `posture service`'s long-running ones."""
    dirs = system_dirs(Path("/"))  # a unit only ever runs on the real system
    writable = " ".join(str(dirs[k]) for k in ("data", "log"))
    return [
        "[Service]", *head, f"User={SYSTEM_USER}", f"Group={SYSTEM_USER}", "Environment=POSTURE_SYSTEM=1",
        f"ExecStart={command}", *tail,
        # systemd makes these two (owned by the user) before it sets up ReadWritePaths=
        f"StateDirectory={dirs['data'].name}", f"LogsDirectory={dirs['log'].name}", f"ReadWritePaths={writable}",
        *([f"AmbientCapabilities={capabilities}"] if capabilities else []), f"CapabilityBoundingSet={capabilities}",
        *HARDENING, f"RestrictAddressFamilies={families}",
    ]  # fmt: skip


def unit_texts(command: str) -> dict[str, str]:
    """The two units' text; `command` is the posture command line the service runs."""
    service = "\n".join([
        MARK, "[Unit]", "Description=posture: run the scan jobs that are due", "Wants=network-online.target",
        "After=network-online.target", "", *service_section(["Type=oneshot"], command, ["Nice=10"]), "",
    ])  # fmt: skip
    timer = "\n".join([
        MARK, "[Unit]", "Description=posture: look for due scan jobs every minute", "", "[Timer]",
        "OnCalendar=*-*-* *:*:00", "Persistent=true", "", "[Install]", "WantedBy=timers.target", "",
    ])  # fmt: skip
    return {SERVICE: service, TIMER: timer}


def write_units(unit_dir: Path, command: str) -> list[Path]:
    """Write both units into `unit_dir` (an existing folder); a unit of that name not written by posture
    is refused, never overwritten."""
    return write_unit_files(unit_dir, unit_texts(command), MARK)


def write_unit_files(unit_dir: Path, texts: dict[str, str], mark: str) -> list[Path]:
    """Write each unit (its text's first line is `mark`) into `unit_dir`, all or none: a unit of one of those
    names that `mark` does not open is refused, never overwritten."""
    if not unit_dir.is_dir():
        raise PostureError(f"no such folder: {unit_dir}", "give --unit-dir an existing folder")
    for name in texts:
        if (unit_dir / name).exists() and not ours(unit_dir / name, mark):
            raise PostureError(f"{unit_dir / name} exists and was not written by posture; left as it is",
                               "move it away, or give --unit-dir another folder")  # fmt: skip
    for name, text in texts.items():
        write_atomic(unit_dir / name, text.encode(), mode=0o644)  # systemd's units are world-readable
    return [unit_dir / name for name in texts]


def ours(path: Path, mark: str = MARK) -> bool:
    """Was this unit file written by posture (its first line is `mark`)? A link is never ours."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return f.readline(len(mark) + 2).rstrip(b"\n") == mark.encode()
    except OSError:
        return False


def remove_units(unit_dir: Path) -> tuple[list[Path], list[Path]]:
    """Delete the units `schedule install` wrote in `unit_dir`: (removed, left alone because someone else's)."""
    return remove_unit_files(unit_dir, (SERVICE, TIMER), MARK)


def remove_unit_files(unit_dir: Path, names: tuple[str, ...], mark: str) -> tuple[list[Path], list[Path]]:
    """Delete the units of these names that `mark` opens: (removed, left alone because someone else's)."""
    removed: list[Path] = []
    foreign: list[Path] = []
    for name in names:
        path = unit_dir / name
        if not path.exists() and not path.is_symlink():
            continue
        if not ours(path, mark):
            foreign.append(path)
            continue
        try:
            path.unlink()
        except OSError as exc:
            raise PostureError(f"cannot remove {path}: {exc.strerror}", "run it as root") from None
        removed.append(path)
    return removed, foreign


def setup_commands() -> list[list[str]]:
    """What makes the service user and its folders (config and vault key 0700, owned by the user)."""
    dirs = system_dirs(Path("/"))
    return [
        ["useradd", "--system", "--user-group", "--home-dir", str(dirs["data"]), "--no-create-home",
         "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        ["install", "-d", "-o", SYSTEM_USER, "-g", SYSTEM_USER, "-m", "0700", *(str(d) for d in dirs.values())],
    ]  # fmt: skip


def create_user() -> list[str]:
    """Run `setup_commands` (as root only); the user is made only if missing. The command lines run."""
    if os.geteuid() != 0:
        raise PostureError("--create-user needs root",
                           "run it with sudo, or run these yourself: "
                           + "; ".join(shlex.join(c) for c in setup_commands()))  # fmt: skip
    done = []
    for command in setup_commands():
        if command[0] == "useradd" and _user_exists():
            continue
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostureError(f"{shlex.join(command)} failed: {result.stderr.strip()[:200]}", "fix it and run again")
        done.append(shlex.join(command))
    return done


def _user_exists() -> bool:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True


def job_status(jobs: dict[str, Any], runs: dict[str, str], results: dict[str, dict[str, str]],
               now: datetime) -> list[dict[str, Any]]:  # fmt: skip
    """Per job: its schedule, whether `run --due` would run it now, its next run time (the same cron
    reading as `scanner.jobs.due`), its last completed run's start (a failed run is not one: the job
    stays due) and how its last attempt ended."""
    from croniter import croniter

    from scanner.jobs import due

    due_now = set(due(jobs, runs, now))
    out = []
    for name, job in sorted(jobs.items()):
        nxt = croniter(job.schedule, now).get_next(datetime) if job.schedule else None
        result = results.get(name, {})
        out.append({"job": name, "schedule": job.schedule, "due_now": name in due_now,
                    "next_run": nxt.isoformat() if nxt else None, "last_run": runs.get(name),
                    "last_finished": result.get("finished"), "last_result": result.get("result"),
                    "last_message": result.get("message")})  # fmt: skip
    return out
