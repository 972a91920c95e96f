"""Process hygiene: what a child process inherits, how long it lives, and no core dumps holding secrets.

posture runs as root, may hold the vault key in its environment (`POSTURE_KEY`) and holds SNMP
communities and v3 keys in memory during a scan. So:

- A child's environment is built from an allow-list (`child_env`), never copied from ours: nmap, the
  `on_change` hook and the host agent's package listings must not see the vault key (anything in the
  environment is readable in `/proc/PID/environ` and is passed on to every grandchild). Kept: what
  programs need to run and speak the user's language (`SAFE_ENV`, `LC_*`); each caller adds the few
  names its program uses (nmap's `NMAPDIR`; the hook's journald stream, proxies and posture's own
  folder settings, so a hook can run `posture report` on the same inventory).
- A child dies with its parent (`dies_with_parent`, `PR_SET_PDEATHSIG`): a `kill -9` of posture cannot
  run any `finally`, and an orphaned nmap would go on scanning for hours with nobody reading its output.
- While secrets are in memory the process is not dumpable and its core size limit is 0
  (`protect_secrets`), so a crash (or `gcore` by another user) cannot write the keys to disk.

The prctl parts are Linux only; elsewhere they do nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

SAFE_ENV = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "TERM"})
NMAP_ENV = ("NMAPDIR",)  # nmap's data folder, when a site overrides it
HOOK_ENV = (
    "JOURNAL_STREAM", "INVOCATION_ID",  # under systemd: the hook's own output reaches the journal
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",  # a hook that posts
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",  # a hook that runs posture
    "POSTURE_DB", "POSTURE_CONFIG", "POSTURE_LOG", "POSTURE_SYSTEM",  # never POSTURE_KEY
)  # fmt: skip

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def child_env(keep: Iterable[str] = (), **overrides: str) -> dict[str, str]:
    """The environment for a child: `SAFE_ENV`, `LC_*` and the names in `keep`, then `overrides`."""
    allowed = SAFE_ENV.union(keep)
    env = {k: v for k, v in os.environ.items() if k in allowed or k.startswith("LC_")}
    env.update(overrides)
    return env


@cache
def _prctl() -> Any:
    """libc's prctl on Linux, else None; looked up once, before any fork (a child only calls it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:  # the running program's own symbols, libc's among them (find_library would run ldconfig)
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def dies_with_parent() -> Callable[[], None] | None:
    """A function for a child to run first thing (a subprocess `preexec_fn`, or the start of a forked
    child): the kernel SIGKILLs the child when this process dies. None where that is not possible.

    If this process died before the child ran it, nobody is left to signal: the child exits at once. The
    signal follows the parent *thread* that forked the child, so a child must be started by a thread
    that waits for it (posture's are). libc is looked up here, before the fork, so the child only calls.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def bind() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return bind


def protect_secrets() -> None:
    """From now on this process writes no core dump and cannot be read by ptrace or `gcore` of the same
    user: call before secrets are decrypted. Idempotent; children started later get a fresh dumpable
    flag at exec but inherit the core limit of 0."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
