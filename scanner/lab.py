"""A lab of real daemons on loopback addresses, for tests, benchmarks and the demo.

Real sshd, nginx and vsftpd binaries from the distribution, each on its own 127.0.0.x address and an
unprivileged port, configured from a temporary folder: nmap fingerprints the real thing, not a mock. The
expected product and version are read from the installed binaries, so a test compares nmap's answer with
the truth on this machine rather than with a string written into the test.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from scanner.errors import PostureError


@dataclass
class LabDaemon:
    kind: str
    address: str
    port: int
    product: str  # as nmap names it
    version: str | None  # upstream version of the installed binary, None where nmap cannot tell it
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def _installed_version(argv: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, (out.stdout + out.stderr).decode("utf-8", "replace"))
    return m.group(1) if m else None


def _wait_listening(address: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log.read_text(errors="replace") if log.exists() else ""
            raise PostureError(f"lab daemon on {address}:{port} exited: {err.strip()[:300]}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    raise PostureError(f"lab daemon on {address}:{port} did not start listening within {timeout:.0f}s")


class Lab:
    """Start the daemons on enter, stop them (and remove their files) on exit."""

    KINDS = ("ssh", "http", "ftp")

    def __init__(
        self,
        addresses: tuple[str, str, str] = ("127.0.0.21", "127.0.0.22", "127.0.0.23"),
        ports: tuple[int, int, int] = (2222, 8080, 2121),
    ) -> None:
        self.addresses = addresses
        self.ports = ports
        self.daemons: list[LabDaemon] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Lab:
        self._dir = tempfile.TemporaryDirectory(prefix="posture-lab-")
        root = Path(self._dir.name)
        try:
            for kind, address, port in zip(self.KINDS, self.addresses, self.ports, strict=True):
                daemon = getattr(self, f"_start_{kind}")(root, address, port)
                self.daemons.append(daemon)
                assert daemon.process is not None
                _wait_listening(address, port, daemon.process, root / f"{kind}.log")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        for d in self.daemons:
            if d.process is not None and d.process.poll() is None:
                d.process.terminate()
                try:
                    d.process.wait(5)
                except subprocess.TimeoutExpired:
                    d.process.kill()
                    d.process.wait(5)
        self.daemons.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def targets(self) -> list[str]:
        return [d.address for d in self.daemons]

    @property
    def ports_spec(self) -> str:
        return ",".join(str(d.port) for d in self.daemons)

    @staticmethod
    def _spawn(argv: list[str], root: Path, kind: str) -> subprocess.Popen[bytes]:
        """Start a daemon in the foreground, its messages to a log file (a pipe would fill and stall it)."""
        with (root / f"{kind}.log").open("wb") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def _binary(name: str, package: str) -> str:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if not path:
            raise PostureError(f"{name} is not installed", f"apt-get install {package}")
        return path

    def _start_ssh(self, root: Path, address: str, port: int) -> LabDaemon:
        sshd = self._binary("sshd", "openssh-server")
        key = root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        config = root / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress {address}\nHostKey {key}\nPidFile {root / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        )
        proc = self._spawn([sshd, "-D", "-e", "-f", str(config)], root, "ssh")
        version = _installed_version(["ssh", "-V"], r"OpenSSH_([0-9][^ ,]*)")
        return LabDaemon("ssh", address, port, "OpenSSH", version, proc)

    def _start_http(self, root: Path, address: str, port: int) -> LabDaemon:
        nginx = self._binary("nginx", "nginx-light")
        (root / "nginx-tmp").mkdir()
        temp = root / "nginx-tmp"
        config = root / "nginx.conf"
        config.write_text(
            f"daemon off;\npid {root / 'nginx.pid'};\nerror_log {root / 'nginx-error.log'};\nworker_processes 1;\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log off; client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;\n"
            f"  fastcgi_temp_path {temp}/fcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;\n"
            f"  server {{ listen {address}:{port}; location / {{ return 200 'posture lab\\n'; }} }} }}\n"
        )
        proc = self._spawn([nginx, "-c", str(config), "-p", str(root)], root, "http")
        version = _installed_version([nginx, "-v"], r"nginx/([0-9.]+)")
        return LabDaemon("http", address, port, "nginx", version, proc)

    def _start_ftp(self, root: Path, address: str, port: int) -> LabDaemon:
        vsftpd = self._binary("vsftpd", "vsftpd")
        empty = root / "vsftpd-empty"
        empty.mkdir(mode=0o755)
        config = root / "vsftpd.conf"
        config.write_text(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address={address}\nlisten_port={port}\nbackground=NO\n"
            f"anonymous_enable=NO\nlocal_enable=NO\npasv_enable=NO\nsecure_chroot_dir={empty}\n"
            "seccomp_sandbox=NO\n"
        )
        config.chmod(0o600)
        proc = self._spawn([vsftpd, str(config)], root, "ftp")
        return LabDaemon("ftp", address, port, "vsftpd", None, proc)
