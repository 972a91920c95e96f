"""The nmap discovery agent: runs the real nmap binary, reads its XML with our streaming reader.

Why not python-nmap's `PortScanner.scan`: it shlex-splits the hosts string (options can ride in on a
target), keeps only the last CPE of each port, holds the whole XML in memory, parses it without
defusedxml, and gives no handle on the nmap process, so an interrupted scan could not stop its nmap.
Here the argv is a list built from validated parts, nmap writes `-oX` to a file that is streamed, and
every nmap process is known and can be stopped. Each nmap gets an allow-listed environment (never the
vault key) and dies with posture, even after a `kill -9` (`scanner.proc`). python-nmap remains the
yardstick in `bench/`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.agents import ProgressCallback
from scanner.errors import PostureError
from scanner.model import HostObservation
from scanner.nmap_xml import NmapXmlReader
from scanner.proc import NMAP_ENV, child_env, dies_with_parent

# Printers (LPD, JetDirect raw printing, 9999 admin) print whatever arrives on these ports: a scan of a
# council's print fleet would otherwise waste paper and can hang old firmware.
PRINTER_PORTS = "515,9100-9107,9999"
# nmap scripts run with every scan unless `--no-scripts` (README, "Scripts"): each is in nmap's "safe" category
# and none is "intrusive" (nmap's script.db). They ask a host what it says of itself in a few connections to
# ports the scan found open or to the host's own SMB, NetBIOS (UDP 137) and SQL Server Browser (UDP 1434)
# ports: the SMB dialects (SMBv1) and signing, the
# Windows build in an NTLM challenge (RDP, HTTP, SMTP), SQL Server's version and service pack, NetBIOS and
# DNS names, and each TLS service's certificate. None takes targets from elsewhere (no broadcast, prerule or
# `newtargets`), so scripts stay on the scan's own addresses.
SAFE_SCRIPTS = ("smb-protocols", "smb-security-mode", "smb2-security-mode", "smb-os-discovery", "nbstat",
                "rdp-ntlm-info", "http-ntlm-info", "smtp-ntlm-info", "ms-sql-info", "ssl-cert")  # fmt: skip
# Opt-in (`--tls-ciphers`): nmap files ssl-enum-ciphers under "intrusive", as it makes one TLS handshake per
# cipher suite and protocol version (dozens of connections a TLS port), so it never runs by default and never
# beside --printer-ports (and --exclude-ports keeps them from every scan without it).
# nmap has no rate for script traffic (--max-rate covers host discovery and the port scan only). What bounds
# it is NSE's socket lock (nse_nsock.cc): at most --max-parallelism + 1 script threads hold connections at
# once, 20 + 1 when it is not given (posture does not give it: it would also cap the port scan's outstanding
# probes, and a cap low enough to matter would slow host discovery below --max-rate). ssl-enum-ciphers runs
# one thread per protocol version (SSLv3 to TLS 1.3: 5) for each TLS port, each making one handshake after
# another. So: at most 5 handshakes at once to a TLS port and SCRIPT_CONNECTIONS at once per nmap process
# (one per chunk scanned at once, --parallel); --timing polite (nmap's -T2, which sets --max-parallelism 1)
# makes that 2. tests/scanner/test_nse_scan.py counts them at real nginx servers.
TLS_CIPHERS_SCRIPT = "ssl-enum-ciphers"
TLS_CIPHERS_PER_PORT = 5
SCRIPT_CONNECTIONS = 21
SCRIPT_TIMEOUT = "2m"  # a script a host holds open (a tarpit) is stopped, the rest of the scan goes on
TIMING = {"paranoid": 0, "sneaky": 1, "polite": 2, "normal": 3, "aggressive": 4}
DEFAULT_OPTIONS: dict[str, Any] = {
    "ports": None,
    "top_ports": None,
    "version_detection": True,
    "os_detection": None,  # None: when privileged
    "privileged": None,  # None: when root
    "max_rate": 100,
    "timing": "normal",
    "printer_ports": False,
    "host_timeout": "30m",
    "dns": True,
    "scripts": True,
    "tls_ciphers": False,
}
CAP_NET_RAW = 13  # linux/capability.h
_HOSTS_DONE = re.compile(rb"(\d+) hosts? completed")


def find_nmap() -> str:
    path = shutil.which("nmap")
    if not path:
        raise PostureError("nmap is not installed (not found on PATH)", "install it: apt-get install nmap")
    return path


def can_send_raw() -> bool:
    """Root, or a process holding CAP_NET_RAW in its effective set: the `posture` service user gets it
    from its unit's AmbientCapabilities=, and nmap (not setuid) inherits it, so raw scans (-sS, -O) work
    there too, with --privileged telling nmap not to judge by its user id."""
    if os.geteuid() == 0:
        return True
    try:
        return has_net_raw(Path("/proc/self/status").read_text(encoding="ascii", errors="replace"))
    except OSError:
        return False


def has_net_raw(proc_status: str) -> bool:
    """Does a /proc/PID/status text give CAP_NET_RAW in the effective set (`CapEff:`, hexadecimal)?"""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
            except (IndexError, ValueError):
                return False
    return False


def nmap_args(options: dict[str, Any]) -> list[str]:
    """nmap options (no targets, no output flags) from posture's options; every value was validated."""
    o = {**DEFAULT_OPTIONS, **options}
    privileged = o["privileged"] if o["privileged"] is not None else can_send_raw()
    args = ["-sS" if privileged else "-sT"]
    if o["version_detection"]:
        args.append("-sV")
    os_detection = o["os_detection"] if o["os_detection"] is not None else privileged
    if os_detection and privileged:
        args += ["-O", "--osscan-limit"]
    if o["ports"]:
        args += ["-p", str(o["ports"])]
    elif o["top_ports"]:
        args += ["--top-ports", str(int(o["top_ports"]))]
    if not o["printer_ports"]:
        args += ["--exclude-ports", PRINTER_PORTS]
    args += [f"-T{TIMING[o['timing']]}"]
    if o["max_rate"]:
        args += ["--max-rate", str(int(o["max_rate"]))]
    if not o["dns"]:
        args.append("-n")
    if o["host_timeout"]:
        args += ["--host-timeout", str(o["host_timeout"])]
    args += script_args(o)
    if privileged and os.geteuid() != 0:
        args.append("--privileged")
    return args


def script_args(options: dict[str, Any]) -> list[str]:
    """The `--script` arguments the options ask for (none with `--no-scripts` and no `--tls-ciphers`)."""
    scripts = [*(SAFE_SCRIPTS if options.get("scripts", True) else ()),
               *((TLS_CIPHERS_SCRIPT,) if options.get("tls_ciphers") else ())]  # fmt: skip
    if options.get("tls_ciphers") and options.get("printer_ports"):
        raise PostureError("--tls-ciphers never runs on printer ports (dozens of handshakes to a port that prints "
                           "what arrives)", "give --tls-ciphers and --printer-ports in separate scans")
    return ["--script", ",".join(scripts), "--script-timeout", SCRIPT_TIMEOUT] if scripts else []


def chunk_args(options: dict[str, Any], targets: list[str], xml_path: str) -> list[str]:
    """nmap's arguments for one chunk. A chunk holds one address family (`ScanPlan.sized_chunks`): an IPv6
    one runs with `-6`, without which nmap skips IPv6 targets and says only "0 hosts up"."""
    family = ["-6"] if any(":" in t for t in targets) else []
    return [*nmap_args(options), *family, "--stats-every", "2s", "-oX", xml_path, *targets]


@dataclass
class NmapChunk:
    xml_path: Path
    tool_version: str | None = None

    def observations(self) -> Iterator[HostObservation]:
        """Read the chunk's XML once; the file goes as soon as it is read (a /16 makes hundreds)."""
        try:
            with self.xml_path.open("rb") as fh:
                reader = NmapXmlReader(fh, name=f"nmap output {self.xml_path.name}")
                yield from reader
        finally:
            self.xml_path.unlink(missing_ok=True)
        self.tool_version = reader.run.version
        if reader.run.exit_status not in (None, "success"):
            raise PostureError(f"nmap failed: {reader.run.error or reader.run.exit_status}")


def _drain(proc: subprocess.Popen[bytes], keep: list[bytes], limit: int = 65536) -> None:
    """Read nmap's stderr to the end (so nmap never blocks on a full pipe), keeping only the start."""
    assert proc.stderr is not None
    kept = 0
    for line in proc.stderr:
        if kept < limit:
            keep.append(line)
            kept += len(line)


class NmapAgent:
    name = "nmap"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._cancelled = False

    def check(self) -> str:
        out = subprocess.run([find_nmap(), "-V"], capture_output=True, check=False, timeout=30,
                             env=child_env(NMAP_ENV)).stdout  # fmt: skip
        m = re.search(rb"Nmap version (\S+)", out)
        return m.group(1).decode() if m else "unknown"

    def describe(self, options: dict[str, Any], targets: list[str]) -> list[str]:
        return ["nmap", *chunk_args(options, targets, "FILE")]

    def run_chunk(
        self, targets: list[str], options: dict[str, Any], workdir: str, progress: ProgressCallback
    ) -> NmapChunk:
        handle, name = tempfile.mkstemp(prefix="chunk-", suffix=".xml", dir=workdir)
        os.close(handle)
        xml_path = Path(name)
        argv = [find_nmap(), *chunk_args(options, targets, str(xml_path))]
        with self._lock:
            if self._cancelled:
                raise PostureError("scan cancelled")
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    env=child_env(NMAP_ENV), preexec_fn=dies_with_parent())  # fmt: skip
            self._running.add(proc)
        stderr: list[bytes] = []
        drain = threading.Thread(target=_drain, args=(proc, stderr), daemon=True)
        drain.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                m = _HOSTS_DONE.search(line)
                if m:
                    progress(int(m.group(1)))
            code = proc.wait()
        finally:
            drain.join()
            for pipe in (proc.stdout, proc.stderr):  # a long-lived process (a worker) must not leak them
                if pipe is not None:
                    pipe.close()
            with self._lock:
                self._running.discard(proc)
        if self._cancelled:
            raise PostureError("scan cancelled")
        if code != 0:
            message = b"".join(stderr).decode("utf-8", "replace").strip().splitlines()
            text = next((m for m in message if not m.startswith("WARNING")), message[0] if message else "")
            raise PostureError(f"nmap exited with code {code}: {text[:300]}", "check the targets and options")
        return NmapChunk(xml_path)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for proc in self._running:
                if proc.poll() is None:
                    proc.terminate()
