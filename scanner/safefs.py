"""Files and folders posture creates, made so that a planted symbolic link cannot redirect them.

posture runs as root and writes where it is pointed (`--out`, `--html`, a job's report and inbox), often
in folders other people can write to. So:

- every output is written whole to a temporary file created exclusively (O_EXCL | O_NOFOLLOW, a random
  name) in the target's folder, synced, then renamed over the target (`write_atomic`): a link at the
  temporary name is never followed, a link at the target itself is replaced, not written through, and a
  failed write (a full or read-only disk) keeps the old file and leaves no temporary behind;
- folders that posture moves files between are opened without following a link (`open_dir`) and each
  later step works relative to that open folder (`dir_fd`), so a link swapped in later changes nothing;
- what posture creates is private: files 0600, folders 0700 (an inventory or a report is a map of the
  estate's weaknesses). `[files] group = "NAME"` in the config shares them with one group: files 0640,
  folders 0750, owned by that group. Existing files and folders keep the modes they have.
"""

from __future__ import annotations

import errno
import grp
import os
import secrets
from collections.abc import Callable
from contextlib import suppress
from io import BytesIO, TextIOWrapper
from pathlib import Path
from typing import IO, Literal

from scanner.errors import PostureError

Content = bytes | Callable[[IO[bytes]], object]  # the bytes, or a function that writes them to a binary file

_group_name: list[Callable[[], str | None]] = [lambda: None]  # how to find the [files] group (see share_with)
_gid: list[int | None] = []  # the group id, once looked up


def share_with(group_name: Callable[[], str | None]) -> None:
    """Say how to find the group created files are shared with (the CLI: the config's [files] group). It is
    asked once, when posture first creates something: a command that creates nothing never reads it."""
    _group_name[:] = [group_name]
    _gid.clear()


def group_id(name: str) -> int:
    """The id of the group named in the config; an unknown group is a config error."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise PostureError(f"[files] group: no group named {name[:64]!r} on this machine",
                           "create it (groupadd) or fix the config file") from None  # fmt: skip


def shared_gid() -> int | None:
    """The [files] group's id, or None (files private to their owner); looked up once per process."""
    if not _gid:
        name = _group_name[0]()
        _gid.append(group_id(name) if name else None)
    return _gid[0]


def modes() -> tuple[int, int]:
    """(file mode, folder mode) for what posture creates: private, or shared with the [files] group."""
    return (0o640, 0o750) if shared_gid() is not None else (0o600, 0o700)


def _own(fd: int, mode: int | None, folder: bool = False) -> None:
    """Give a file or folder posture just made its mode (whatever the umask) and, when shared, its group.
    An explicit `mode` (a secret's 0600, a systemd unit's 0644) is used as it is, with no group."""
    if mode is None:
        mode = modes()[1 if folder else 0]
        gid = shared_gid()
        if gid is not None:
            os.fchown(fd, -1, gid)
    os.fchmod(fd, mode)


def open_dir(path: str | Path, dir_fd: int | None = None, create: bool = False) -> int:
    """A folder's descriptor, refusing a symbolic link at its last component (ELOOP, or ENOTDIR for a
    link or a file). With `create`, a missing folder is made first, with posture's folder mode."""
    if create:
        try:
            os.mkdir(path, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            create = False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    if create:
        try:
            _own(fd, None, folder=True)
        except BaseException:
            os.close(fd)
            raise
    return fd


def make_dirs(path: Path) -> None:
    """Create the missing folders of `path` (posture's data, config and state folders, a --db folder),
    each with posture's folder mode; folders that exist are left as they are."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        os.close(open_dir(folder, create=True))


def create_new(name: str | Path, dir_fd: int | None = None, mode: int | None = None, flags: int = os.O_WRONLY) -> int:
    """A new, empty file opened (`flags`: for writing): never an existing file, never through a link at
    `name` (O_CREAT | O_EXCL | O_NOFOLLOW). It is born 0600, then given its mode, so it is never more open."""
    fd = os.open(name, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        _own(fd, mode)
    except BaseException:
        os.close(fd)
        with suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    return fd


def open_append(path: Path, text_mode: Literal["a", "a+"] = "a", encoding: str | None = "utf-8") -> TextIOWrapper:
    """A log or lock file opened for appending (created with posture's mode if missing), never through a
    symbolic link at `path`. `text_mode` is "a" or "a+" (also readable)."""
    flags = os.O_APPEND | (os.O_RDWR if "+" in text_mode else os.O_WRONLY)
    try:
        fd = create_new(path, flags=flags)
    except FileExistsError:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    return open(fd, text_mode, encoding=encoding)  # noqa: PTH123 - a descriptor, not a path


def write_error(path: Path, exc: OSError) -> PostureError:
    """A failed write as one line the user can act on."""
    hint = ("free some space and run it again" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the folder, its permissions and that its disk is writable")  # fmt: skip
    return PostureError(f"could not write {path}: {exc.strerror or exc}", hint)


def write_atomic(path: Path, content: Content, mode: int | None = None) -> None:
    """Write a file whole or not at all, never through a symbolic link (see the module's notes).

    `content` is the bytes or a function writing them to a binary file (a document library's save: it
    writes to memory first, so a library never sees a disk error half-way through its own file). A link
    at `path` itself is replaced by the new file, the linked file untouched. Any OSError becomes a
    PostureError naming `path`; the temporary file is removed whatever went wrong.
    """
    path = Path(path)
    if not isinstance(content, bytes):
        buffer = BytesIO()
        content(buffer)
        content = buffer.getvalue()
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = f".{path.name[:200]}.{secrets.token_hex(8)}.tmp"
    made = False
    try:
        fd = create_new(tmp, folder, mode)
        made = True
        with open(fd, "wb") as f:  # noqa: PTH123 - a descriptor, not a path
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        made = False
        with suppress(OSError):
            os.fsync(folder)  # the rename itself survives a power cut
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if made:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
        os.close(folder)
