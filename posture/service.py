"""systemd units for the long-running parts of a multi-site estate (issue 18 item 5): `posture serve` (the
central HTTPS API), `posture worker` (runs queued chunks) and `posture collector` (at a site).

Why a `posture service` group and not a flag of `schedule install`: the scheduler's units are a oneshot and a
timer that every single-machine install wants; these are daemons, one role or two per machine (a central
server runs serve and worker, a site runs a collector), each installed and removed on its own. They share the
scheduler's sandbox (`scanner.schedule.service_section`: the `posture` user, POSTURE_SYSTEM=1, a read-only
system but its own folders, the same HARDENING) and its rule that only units posture wrote are replaced or
removed (their first line is MARK).

What differs, and why:
- `Type=exec`, `Restart=on-failure` after RestartSec: a daemon that dies (the database restarting, a bug) comes
  back; a clean stop does not.
- `KillMode=mixed`: SIGTERM goes to posture alone, not to nmap beside it, so the worker's `--grace` lets a
  running chunk finish (systemd's default would kill nmap at once and fail the chunk); anything left is
  killed at `TimeoutStopSec`, which is that grace plus time to stop nmap and give the chunk back.
- worker and collector run nmap: the scheduler's two capabilities and socket families, exactly.
- serve needs no capability at all (an empty bounding set) and no packet sockets; a `--listen` port below
  1024 adds CAP_NET_BIND_SERVICE and nothing else. It reads its TLS files under /etc/posture (read-only
  is enough: they must be readable by the `posture` user).
"""

from __future__ import annotations

import re
from pathlib import Path

from scanner.errors import PostureError
from scanner.schedule import CAPABILITIES, NMAP_FAMILIES, remove_unit_files, service_section, write_unit_files

ROLES = ("serve", "worker", "collector")
MARK = "# Written by `posture service install`; `posture service remove` deletes it."
DEFAULT_LISTEN = "0.0.0.0:8443"  # `posture serve`'s default ([serve] listen)
GRACE = 30  # seconds the worker's unit gives a running chunk on stop (its --grace)
STOP_MARGIN = 30  # then seconds to stop nmap and give the chunk back, before systemd kills what is left
SERVE_FAMILIES = "AF_INET AF_INET6 AF_UNIX AF_NETLINK"  # sockets, and netlink for getaddrinfo's interfaces
_SAFE_ARG = re.compile(r"[A-Za-z0-9_@%+=:,./?&\[\]-]{1,1000}")
_LISTEN = re.compile(r"(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(?P<port>[0-9]{1,5})")

_DESCRIPTIONS = {
    "serve": "posture: the central HTTPS API for site collectors",
    "worker": "posture: run queued scan chunks from the central inventory",
    "collector": "posture: this site's collector (pulls chunks from the central server, uploads results)",
}


def unit_name(role: str) -> str:
    return f"posture-{role}.service"


def unit_arg(arg: str) -> str:
    """One word of an ExecStart= line: systemd reads `%` as a specifier and `$` as a variable, and splits
    at spaces; a word with anything but plain path, URL and option characters is refused in one line."""
    if not _SAFE_ARG.fullmatch(arg):
        raise PostureError(f"{arg[:80]!r} cannot go into a systemd unit as it is (spaces, quotes or $)",
                           "use a path or URL of letters, digits and / . _ - : @ ? & = only")  # fmt: skip
    return arg.replace("%", "%%")


def listen_port(listen: str) -> int:
    """The port of a `HOST:PORT` (`[v6]:PORT`) listen address; a malformed one is refused in one line."""
    found = _LISTEN.fullmatch(listen)
    if not found or not 1 <= int(found["port"]) <= 65535:
        raise PostureError(f"listen address {listen[:80]!r} is not HOST:PORT", 'e.g. --listen 0.0.0.0:8443')
    return int(found["port"])


def unit_text(role: str, argv: list[str], listen: str) -> str:
    """The unit running `argv` (posture's command line, the role's subcommand and its options) as `role`;
    `listen` decides whether the server may bind a port below 1024."""
    command = " ".join(unit_arg(a) for a in argv)
    stop = GRACE + STOP_MARGIN if role != "serve" else STOP_MARGIN
    head = ["Type=exec", "Restart=on-failure", "RestartSec=10", "KillMode=mixed", f"TimeoutStopSec={stop}"]
    if role == "serve":
        capabilities = "CAP_NET_BIND_SERVICE" if listen_port(listen) < 1024 else ""
        section = service_section(head, command, [], capabilities, SERVE_FAMILIES)
    else:
        section = service_section(head, command, ["Nice=10"], CAPABILITIES, NMAP_FAMILIES)
    after = "network-online.target" + (" postgresql.service" if role != "collector" else "")
    return "\n".join([
        MARK, "[Unit]", f"Description={_DESCRIPTIONS[role]}", "Wants=network-online.target", f"After={after}", "",
        *section, "", "[Install]", "WantedBy=multi-user.target", "",
    ])  # fmt: skip


def role_argv(role: str, base: list[str], listen: str | None, site: str | None, concurrency: int | None) -> list[str]:
    """The command line the role's unit runs: `base` (posture --system [--db] [--config]), then the role."""
    if role == "serve":
        return [*base, "serve", *(["--listen", listen] if listen else [])]
    if role == "worker":
        return [*base, "worker", "--grace", str(GRACE), *(["--site", site] if site else []),
                *(["--concurrency", str(concurrency)] if concurrency else [])]  # fmt: skip
    return [*base, "collector"]


def install(unit_dir: Path, role: str, argv: list[str], listen: str) -> Path:
    """Write the role's unit into `unit_dir`; one of that name not written by posture is refused."""
    [path] = write_unit_files(unit_dir, {unit_name(role): unit_text(role, argv, listen)}, MARK)
    return path


def remove(unit_dir: Path, role: str) -> tuple[list[Path], list[Path]]:
    """Delete the role's unit if posture wrote it: (removed, left alone because someone else's)."""
    return remove_unit_files(unit_dir, (unit_name(role),), MARK)
