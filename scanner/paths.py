"""Where posture keeps its files: XDG base directories for a person, /etc/posture and /var/lib/posture
for the service (`--system`), each overridable by flag or environment. Every path is decided here."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scanner.errors import PostureError

SYSTEM_USER = "posture"  # the service user `posture schedule install` runs the jobs as


def system_mode() -> bool:
    """True under `posture --system` or `POSTURE_SYSTEM=1` (the scheduled units set it): the service
    layout below, not the per-user XDG folders a person at a shell gets."""
    return os.environ.get("POSTURE_SYSTEM", "").strip().lower() in {"1", "true", "yes", "on"}


def system_root() -> Path:
    """Where the system layout is rooted: `/`. `POSTURE_SYSTEM_ROOT` exists for the tests only (so they
    never write to the real /etc or /var); it is not a setting for a real install."""
    return Path(os.environ.get("POSTURE_SYSTEM_ROOT") or "/")


def system_dirs(root: Path | None = None) -> dict[str, Path]:
    """The service's folders: config and the vault key in /etc/posture, inventory and run state in
    /var/lib/posture, the run log in /var/log/posture. The one list the units' ReadWritePaths= and
    `schedule install --create-user` use too."""
    base = system_root() if root is None else root
    return {"config": base / "etc" / "posture", "data": base / "var" / "lib" / "posture",
            "log": base / "var" / "log" / "posture"}  # fmt: skip


def data_dir() -> Path:
    if system_mode():
        return system_dirs()["data"]
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "posture"


def config_dir() -> Path:
    if system_mode():
        return system_dirs()["config"]
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "posture"


def state_dir() -> Path:
    """Run state (jobs' last runs, their locks, nmap's output): `$XDG_STATE_HOME/posture`, or
    /var/lib/posture/state as a service."""
    if system_mode():
        return system_dirs()["data"] / "state"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "posture"


def log_dir() -> Path:
    """The run log's folder: the state folder for a person, /var/log/posture as a service."""
    return system_dirs()["log"] if system_mode() else state_dir()


def default_db_path() -> Path:
    """`POSTURE_DB` wins over the XDG default, so a scheduler can point every command at one file."""
    env = os.environ.get("POSTURE_DB")
    return Path(env) if env else data_dir() / "inventory.db"


def default_config_path() -> Path:
    env = os.environ.get("POSTURE_CONFIG")
    return Path(env) if env else config_dir() / "config.toml"


def read_regular_file(path: Path, max_bytes: int, what: str = "a file", hint: str = "is it the right file?",
                      follow_links: bool = True) -> bytes:  # fmt: skip
    """The bytes of `path` if it is a regular file of at most `max_bytes` (`what` it should be, and the
    `hint` for one too large, go in the refusal); else a PostureError saying why.

    Outside files can be anything: a FIFO would block the read until some writer came (forever, for an
    unattended job) and a device never ends, so the file's type is checked from its metadata before it is
    opened, opened without blocking, and checked again on the open descriptor (it may have been swapped in
    between). The size is checked before reading, and the read stops one byte past the limit. With
    `follow_links` false (a folder other people drop files in) a symbolic link is refused, at the check and
    at the open (O_NOFOLLOW), so a link swapped in after the check is not followed either.
    """
    not_regular = PostureError(f"{path}: not a regular file", "give the file itself, not a folder, FIFO or device")
    try:
        if not stat.S_ISREG((path.stat() if follow_links else path.lstat()).st_mode):
            raise not_regular
        nofollow = 0 if follow_links else os.O_NOFOLLOW
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | nofollow)
        with open(fd, "rb") as f:  # noqa: PTH123 - an already opened descriptor
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise not_regular
            size = info.st_size
            data = f.read(max_bytes + 1) if size <= max_bytes else b""
    except OSError as exc:
        raise PostureError(f"{path}: cannot read it: {exc.strerror or exc}", "check the path") from None
    if size > max_bytes or len(data) > max_bytes:
        raise PostureError(f"{path}: {max(size, len(data)) / 2**20:.0f} MiB is over the {max_bytes / 2**20:.0f} MiB "
                           f"limit for {what}", hint)  # fmt: skip
    return data
