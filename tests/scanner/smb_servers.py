"""Real Samba smbd (and nmbd) servers for the NSE tests, each on its own loopback address of 127.102.0.0/16.

Copied from tests/scanner/test_hostscripts.py's startup (a minimal smb.conf with every state folder under
the test's own folder, `--foreground --no-process-group`, the whole process group stopped at the end),
with the address, the lowest protocol, the signing setting and NetBIOS (nmbd, for nbstat) as parameters.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from scanner.lab import _wait_listening, address_on_lo, find_binary, stop_group


def smb_conf(root: Path, address: str, min_protocol: str, signing: str, netbios: bool, netbios_name: str) -> Path:
    """A minimal smb.conf for one address: `signing` is Samba's `server signing` (default, mandatory)."""
    dirs = {name: root / name for name in ("lock", "state", "cache", "pid", "private", "ncalrpc")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    conf = root / "smb.conf"
    conf.write_text(
        "[global]\n"
        f"server min protocol = {min_protocol}\nserver signing = {signing}\n"
        f"interfaces = {address}/32\nbind interfaces only = yes\ndisable netbios = {'no' if netbios else 'yes'}\n"
        "smb ports = 445\nserver role = standalone server\nworkgroup = POSTURELAB\n"
        f"netbios name = {netbios_name}\n"
        f"lock directory = {dirs['lock']}\nstate directory = {dirs['state']}\ncache directory = {dirs['cache']}\n"
        f"pid directory = {dirs['pid']}\nprivate dir = {dirs['private']}\nncalrpc dir = {dirs['ncalrpc']}\n"
        f"log file = {root / 'log.%m'}\n"
    )
    return conf


def _wait_udp_bound(address: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until something holds UDP address:port (nmbd binds after it has read its configuration)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((address, port))
            except OSError:
                return  # taken: nmbd has it
        time.sleep(0.05)
    raise AssertionError(f"nmbd did not bind {address}:{port}: {log.read_text(errors='replace')[-300:]}")


@contextlib.contextmanager
def samba(root: Path, address: str, min_protocol: str, signing: str = "default", netbios: bool = False,
          netbios_name: str = "LABSMB") -> Iterator[None]:
    """A real smbd on address:445 (and nmbd on UDP 137 when `netbios`), stopped however the test ends."""
    root.mkdir(parents=True, exist_ok=True)
    conf = smb_conf(root, address, min_protocol, signing, netbios, netbios_name)
    common = ["--foreground", "--no-process-group", "--debug-stdout", "-d1", "-s", str(conf)]
    with address_on_lo(address), contextlib.ExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []

        @stack.callback
        def stop_all() -> None:
            for proc in reversed(procs):
                stop_group(proc)

        for name in ("smbd", "nmbd") if netbios else ("smbd",):
            log = root / f"{name}.log"
            out = stack.enter_context(log.open("wb"))
            proc = subprocess.Popen([find_binary(name, "samba"), *common], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            procs.append(proc)
            if name == "smbd":
                _wait_listening(address, 445, proc, log)
            else:
                _wait_udp_bound(address, 137, proc, log)
        yield
