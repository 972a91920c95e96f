"""A lab of real daemons on loopback addresses, for tests, benchmarks and the demo.

Real sshd, nginx and vsftpd binaries from the distribution, each on its own 127.0.0.x address and an
unprivileged port, configured from a temporary folder: nmap fingerprints the real thing, not a mock. The
expected product and version are read from the installed binaries, so a test compares nmap's answer with
the truth on this machine rather than with a string written into the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from scanner.errors import PostureError

if TYPE_CHECKING:
    import psycopg


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


def stop_processes(processes: list[subprocess.Popen[Any]]) -> None:
    """Each asked to stop (SIGTERM) at once, then waited for; one still there after 10 s is killed."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a daemon started with `start_new_session=True` and everything it forked (smbd, nmbd and nginx
    fork workers): SIGTERM to its process group, SIGKILL if it has not gone in ten seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def address_on_lo(address: str) -> Iterator[None]:
    """Samba binds only to an address an interface has: give lo `address` for the block, then take it back.
    (nginx, sshd and nmap need nothing: all of 127.0.0.0/8 answers on lo.)"""
    have = f" {address}/" in subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True,
                                            text=True, check=True).stdout  # fmt: skip
    if not have:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    try:
        yield
    finally:
        if not have:
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


def nginx_config(root: Path, servers: str) -> Path:
    """An nginx.conf for an unprivileged foreground nginx whose every file is under `root`, serving the
    given `server { ... }` blocks."""
    temp = root / "nginx-tmp"
    temp.mkdir(parents=True, exist_ok=True)
    config = root / "nginx.conf"
    config.write_text(
        f"daemon off;\npid {root / 'nginx.pid'};\nerror_log {root / 'nginx-error.log'};\nworker_processes 1;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;\n"
        f"  fastcgi_temp_path {temp}/fcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;\n"
        f"{servers}}}\n"
    )
    return config


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


class _ProcessLab:
    """What every lab shares: a temporary folder, the processes started in it, and a clean stop."""

    PREFIX = "posture-lab-"

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def _root(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix=self.PREFIX)
        return Path(self._dir.name)

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a program in the foreground, its messages to a log file (a pipe would fill and stall it)."""
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._processes.append(process)
        return process

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        stop_processes(self._processes)
        self._processes.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class Lab(_ProcessLab):
    """Start the daemons on enter, stop them (and remove their files) on exit."""

    KINDS = ("ssh", "http", "ftp")

    def __init__(
        self,
        addresses: tuple[str, str, str] = ("127.0.0.21", "127.0.0.22", "127.0.0.23"),
        ports: tuple[int, int, int] = (2222, 8080, 2121),
    ) -> None:
        super().__init__()
        self.addresses = addresses
        self.ports = ports
        self.daemons: list[LabDaemon] = []

    def __enter__(self) -> Lab:
        root = self._root()
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

    def stop(self) -> None:
        super().stop()
        self.daemons.clear()

    @property
    def targets(self) -> list[str]:
        return [d.address for d in self.daemons]

    @property
    def ports_spec(self) -> str:
        return ",".join(str(d.port) for d in self.daemons)

    def _start_ssh(self, root: Path, address: str, port: int) -> LabDaemon:
        sshd = find_binary("sshd", "openssh-server")
        key = root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        config = root / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress {address}\nHostKey {key}\nPidFile {root / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        )
        proc = self._spawn([sshd, "-D", "-e", "-f", str(config)], root / "ssh.log")
        version = _installed_version(["ssh", "-V"], r"OpenSSH_([0-9][^ ,]*)")
        return LabDaemon("ssh", address, port, "OpenSSH", version, proc)

    def _start_http(self, root: Path, address: str, port: int) -> LabDaemon:
        nginx = find_binary("nginx", "nginx-light")
        server = f"  server {{ listen {address}:{port}; location / {{ return 200 'posture lab\\n'; }} }}\n"
        config = nginx_config(root, server)
        proc = self._spawn([nginx, "-c", str(config), "-p", str(root)], root / "http.log")
        version = _installed_version([nginx, "-v"], r"nginx/([0-9.]+)")
        return LabDaemon("http", address, port, "nginx", version, proc)

    def _start_ftp(self, root: Path, address: str, port: int) -> LabDaemon:
        vsftpd = find_binary("vsftpd", "vsftpd")
        empty = root / "vsftpd-empty"
        empty.mkdir(mode=0o755)
        config = root / "vsftpd.conf"
        config.write_text(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address={address}\nlisten_port={port}\nbackground=NO\n"
            f"anonymous_enable=NO\nlocal_enable=NO\npasv_enable=NO\nsecure_chroot_dir={empty}\n"
            "seccomp_sandbox=NO\n"
        )
        config.chmod(0o600)
        proc = self._spawn([vsftpd, str(config)], root / "ftp.log")
        return LabDaemon("ftp", address, port, "vsftpd", None, proc)


def snmpsim_data_dir() -> Path:
    """Where pip put the snmpsim-data recordings (the `demo` extra)."""
    try:
        import snmpsim_data  # type: ignore[import-untyped]
    except ImportError as exc:
        raise PostureError(
            "the SNMP recordings are not installed", "install the demo extra: pip install 'posture-scanner[demo]'"
        ) from exc
    return Path(snmpsim_data.__file__).parent / "data"


def recording_path(name: str) -> Path:
    """The file of a recording named like `os/windows/XP` (the path under snmpsim-data, no extension)."""
    base = snmpsim_data_dir() / name
    for suffix in (".snmprec.bz2", ".snmprec"):
        if base.with_name(base.name + suffix).exists():
            return base.with_name(base.name + suffix)
    raise PostureError(f"no recording named {name!r} in snmpsim-data")


# Real devices recorded by the snmpsim-data project, chosen for a council-like estate.
DEMO_RECORDINGS = (
    "os/windows/XP",
    "os/windows/server-2003-5-2",
    "os/linux/unknown-001",  # RHEL 6 (2.6.32-573.el6)
    "os/linux/unknown-006",  # CentOS 7 (3.10.0-514.el7; its centos-release package says which EL7)
    "network/switch/cisco-c3560",
    "network/router/juniper-mx960-12-3r6-6",
    "storage/netapp-fas3270",
    "UPS/apc-8932",
    "camera/hikvision",
)


class SnmpSimLab(_ProcessLab):
    """snmpsim serving real device recordings, one recording per loopback address, community `public`.

    One simulator process per device: snmpsim picks a recording by community, and every device of a
    real estate answers to its own address with the same community, which one process cannot mimic.
    """

    def __init__(self, recordings: tuple[str, ...] = DEMO_RECORDINGS, base: str = "127.0.1.", first: int = 1,
                 port: int = 161) -> None:  # fmt: skip
        super().__init__()
        self.devices = {f"{base}{first + i}": name for i, name in enumerate(recordings)}
        self.port = port

    def __enter__(self) -> SnmpSimLab:
        responder = shutil.which("snmpsim-command-responder") or str(
            Path(sys.executable).parent / "snmpsim-command-responder"
        )
        if not Path(responder).exists():
            raise PostureError(
                "snmpsim is not installed", "install the demo extra: pip install 'posture-scanner[demo]'"
            )
        root = self._root()
        env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
        try:
            for address, name in self.devices.items():
                source = recording_path(name)
                data, cache = root / address / "data", root / address / "cache"
                data.mkdir(parents=True)
                cache.mkdir()
                target = data / ("public" + "".join(source.suffixes[-2:] if source.suffix == ".bz2" else [".snmprec"]))
                shutil.copyfile(source, target)
                self._spawn(
                    [responder, f"--data-dir={data}", f"--cache-dir={cache}",
                     f"--agent-udpv4-endpoint={address}:{self.port}"],
                    root / address / "log", env,
                )  # fmt: skip
            for address, proc in zip(self.devices, self._processes, strict=True):
                _wait_snmp(address, self.port, proc, root / address / "log")
        except BaseException:
            self.stop()
            raise
        return self


def _wait_snmp(
    address: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0, community: str = "public"
) -> None:
    """Poll with a real SNMP GET of sysDescr until the simulator has indexed its recording and answers."""
    import asyncio

    from scanner.agents.snmp import SnmpCollector, SnmpCredential, SnmpOptions, SnmpResult

    credential = SnmpCredential("lab", "2c", community=community)

    async def ask() -> bool:
        collector = await SnmpCollector.create(SnmpOptions(port=port, timeout=0.5, retries=0))
        try:
            await collector._request("get", None, collector._auth(credential), None, ["1.3.6.1.2.1.1.1.0"],
                                     SnmpResult(address))  # fmt: skip
            return True
        except Exception:  # not answering yet
            return False
        finally:
            collector.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PostureError(f"SNMP agent for {address} exited: {log.read_text(errors='replace')[-300:]}")
        if asyncio.run(ask()):
            return
        time.sleep(0.2)
    raise PostureError(f"SNMP agent for {address} did not answer within {timeout:.0f}s")


class SnmpdLab(_ProcessLab):
    """A real net-snmp `snmpd` answering on many loopback addresses (v2c community and an SNMPv3 user).

    For tests of v3 and authentication failures, and for benchmarks: snmpsim is single-threaded Python
    and would measure itself; snmpd is C. One snmpd listened on only 133 of 200 addresses here (no error
    said why), so each process serves at most 100.
    """

    PER_PROCESS = 100

    def __init__(self, addresses: list[str], community: str, v3_user: str, auth_key: str, priv_key: str,
                 port: int = 161, sysname: str = "lab-snmpd") -> None:  # fmt: skip
        super().__init__()
        self.addresses = addresses
        self.port = port
        self._community = community
        self._common = (
            f"rocommunity {community} 127.0.0.0/8\n"
            f'createUser {v3_user} SHA "{auth_key}" AES "{priv_key}"\n'
            f"rouser {v3_user} priv\nsysName {sysname}\nsysLocation posture test lab\n"
        )

    def __enter__(self) -> SnmpdLab:
        snmpd = find_binary("snmpd", "snmpd")
        try:
            for n in range(0, len(self.addresses), self.PER_PROCESS):
                group = self.addresses[n : n + self.PER_PROCESS]
                root = self._root() / str(n)
                root.mkdir()
                config = root / "snmpd.conf"
                # snmpd cuts long config lines: a few dozen addresses per agentAddress line.
                config.write_text("".join(
                    f"agentAddress {','.join(f'udp:{a}:{self.port}' for a in group[i : i + 25])}\n"
                    for i in range(0, len(group), 25)
                ) + self._common)  # fmt: skip
                config.chmod(0o600)
                env = {**os.environ, "SNMP_PERSISTENT_DIR": str(root / "persist")}
                process = self._spawn(
                    [snmpd, "-f", "-C", "-c", str(config), "-m", "", "-I", "-smux", "-Lf", str(root / "snmpd.log"),
                     "-p", str(root / "pid")],
                    root / "out", env,
                )  # fmt: skip
                for address in (group[0], group[-1]):
                    _wait_snmp(address, self.port, process, root / "snmpd.log", 30, self._community)
        except BaseException:
            self.stop()
            raise
        return self


def find_binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        raise PostureError(f"{name} is not installed", f"apt-get install {package}")
    return path


class SambaDC(_ProcessLab):
    """A real Active Directory domain controller (Samba's `samba` AD DC) on one loopback address, for the
    directory tests and `bench/run.py ad`.

    Provisioned into a temporary folder (`samba-tool domain provision`, no DNS, a few seconds), with a TLS
    certificate made by openssl for its address and signed by a CA of its own (`ca_file`), serving LDAP only
    (389 and 636) on `address`, given to lo for the lab's life. `ldap server require strong auth = no` lets
    a test show plain LDAP working with --insecure-ldap; every other setting is Samba's default.
    """

    PREFIX = "posture-ad-"
    REALM = "POSTURE.TEST"
    BASE_DN = "DC=posture,DC=test"
    ADMIN = "Administrator@POSTURE.TEST"

    def __init__(self, address: str = "127.101.0.1") -> None:
        super().__init__()
        self.address = address
        self.password = "Lab-" + os.urandom(9).hex() + "!a1"  # Samba's complexity rules: case, digit, symbol
        self._server: subprocess.Popen[bytes] | None = None
        self._added_address = False

    @property
    def root(self) -> Path:
        return self._root()

    @property
    def ca_file(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def conf(self) -> Path:
        return self.root / "dc" / "etc" / "smb.conf"

    @property
    def sam_ldb(self) -> Path:
        return self.root / "dc" / "private" / "sam.ldb"

    def __enter__(self) -> SambaDC:
        try:
            self._address_on_lo()
            self._provision()
            self._certificate()
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, argv: list[str], timeout: float = 180) -> None:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise PostureError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-400:]}")

    def _address_on_lo(self) -> None:
        shown = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
        if f" {self.address}/" not in shown.stdout:
            self._run(["ip", "addr", "add", f"{self.address}/32", "dev", "lo"])
            self._added_address = True

    def _provision(self) -> None:
        target = self.root / "dc"
        self._run([find_binary("samba-tool", "samba"), "domain", "provision", f"--realm={self.REALM}",
                   "--domain=POSTURE", "--server-role=dc", "--dns-backend=NONE", f"--targetdir={target}",
                   f"--adminpass={self.password}", "--host-name=labdc",
                   f"--option=interfaces = {self.address}", "--option=bind interfaces only = yes"])  # fmt: skip

    def _certificate(self) -> None:
        tls = self.root / "tls"
        tls.mkdir()
        openssl = find_binary("openssl", "openssl")
        self._run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tls / "ca.key"),
                   "-out", str(self.ca_file), "-days", "2", "-subj", "/CN=posture lab CA"])  # fmt: skip
        self._run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tls / "dc.key"),
                   "-out", str(tls / "dc.csr"), "-subj", "/CN=labdc.posture.test"])  # fmt: skip
        (tls / "ext.cnf").write_text(f"subjectAltName=IP:{self.address},DNS:labdc.posture.test\n")
        self._run([openssl, "x509", "-req", "-in", str(tls / "dc.csr"), "-CA", str(self.ca_file), "-CAkey",
                   str(tls / "ca.key"), "-CAcreateserial", "-out", str(tls / "dc.pem"), "-days", "2",
                   "-extfile", str(tls / "ext.cnf")])  # fmt: skip
        (tls / "dc.key").chmod(0o600)  # Samba refuses a private key others can read
        dc = self.root / "dc"
        settings = {
            "server services": "ldap", "tls enabled": "yes", "tls keyfile": tls / "dc.key",
            "tls certfile": tls / "dc.pem", "tls cafile": self.ca_file, "log file": dc / "log.%m",
            "pid directory": dc / "run", "ncalrpc dir": dc / "ncalrpc", "winbindd socket directory": dc / "winbindd",
            "ldap server require strong auth": "no",
        }  # fmt: skip
        lines = [line for line in self.conf.read_text().splitlines() if "server services" not in line]
        at = lines.index("[global]") + 1
        lines[at:at] = [f"\t{key} = {value}" for key, value in settings.items()]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the DC (its own process group: `samba` forks workers) and wait for LDAPS."""
        log = self.root / "samba.log"
        with log.open("ab") as out:
            self._server = subprocess.Popen(
                [find_binary("samba", "samba"), "-i", "--no-process-group", "-s", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_listening(self.address, 636, self._server, log, timeout=60)

    def stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        deadline = time.monotonic() + 10  # its workers too: one still writing would race the folder's removal
        try:
            while time.monotonic() < deadline:
                os.killpg(server.pid, signal.SIGKILL if time.monotonic() > deadline - 5 else 0)
                time.sleep(0.05)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self.stop_server()
        if self._added_address:
            subprocess.run(["ip", "addr", "del", f"{self.address}/32", "dev", "lo"], capture_output=True, check=False)
            self._added_address = False
        super().stop()

    def add_ldif_offline(self, ldif: Path) -> None:
        """Add the entries of an LDIF file straight into the stopped DC's sam.ldb, in one transaction, with
        Samba's own Python bindings (the system python3's `samba` package: Samba's module stack fills in
        objectSid, objectGUID and the rest as an LDAP add would, so the objects are the same).

        Opened with the options Samba's provision and join use to load a database in bulk: `batch_mode`
        turns off ldb's per-operation index sub-transaction, whose bookkeeping grew with the objects already
        added (each further 1,000 took about 4 s more: 5,000 in 48 s, so 50,000 over an hour). Without it a
        failed add may leave the transaction's index half-changed, so the whole transaction must be
        cancelled, which this one is on any error. `transaction_index_cache_size` is the join's value.
        With both, 1,000 objects take 1-2 s at any size measured."""
        script = (
            "import sys\n"
            "from samba.auth import system_session\nfrom samba.param import LoadParm\nfrom samba.samdb import SamDB\n"
            "lp = LoadParm(); lp.load(sys.argv[1])\n"
            "db = SamDB(url=sys.argv[2], session_info=system_session(), lp=lp,\n"
            "           options=['batch_mode:1', 'transaction_index_cache_size:200000'])\n"
            "db.transaction_start()\n"
            "try:\n    db.add_ldif(open(sys.argv[3]).read())\nexcept BaseException:\n"
            "    db.transaction_cancel()\n    raise\nelse:\n    db.transaction_commit()\n"
        )  # fmt: skip
        self._run(["/usr/bin/python3", "-c", script, str(self.conf), str(self.sam_ldb), str(ldif)], timeout=7200)


def postgres_bindir() -> Path:
    """The newest PostgreSQL server's programs: Debian keeps initdb and postgres in /usr/lib/postgresql/N/bin,
    off PATH (its pg_ctlcluster wrappers manage system clusters, which a lab must not touch)."""
    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres") if p.parts[-3].isdigit()]
    if debian:
        return max(debian, key=lambda bindir: int(bindir.parts[-2]))
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise PostureError("the PostgreSQL server is not installed", "apt-get install postgresql")


def free_port(address: str) -> int:
    """A TCP port nothing listens on at `address` now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _private_file(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """A new file only its owner can read (born 0600, never through a link), given to `owner` (uid, gid)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class PostgresLab(_ProcessLab):
    """A real PostgreSQL server of the lab's own: `initdb` into a temporary folder, the server listening on one
    loopback address and a free port (and a unix socket in that folder), one password-authenticated role.

    - Who runs it: the server refuses to run as root, so under root it runs as the `postgres` user that
      Debian's package makes (the lab's folder is given to that user); otherwise as the calling user.
    - Authentication: the role `posture` with a random password, which initdb reads from a 0600 file (never
      the command line; the file is removed after). pg_hba.conf accepts only scram-sha-256, on the socket
      and from 127.0.0.0/8. Clients read the password from `passfile` (libpq's PGPASSFILE format, 0600), so
      `url` carries none.
    - Speed over durability: fsync, synchronous commit and full-page writes are off (a throwaway server).
    - Collation C: text compares byte by byte, as SQLite's BINARY collation does.
    - The server runs in the foreground as this process's child, not through `pg_ctl start`: pg_ctl hands the
      server to PID 1 to reap, and where PID 1 reaps nothing (as in some containers) every stopped
      server would stay a zombie. Readiness is read from postmaster.pid, as `pg_ctl -w` reads it; stop is a
      fast shutdown (SIGINT) and a wait, after which the folder is removed.
    """

    PREFIX = "posture-pg-"
    USER = "posture"
    DATABASE = "posture"

    def __init__(self, address: str = "127.107.0.1", port: int | None = None) -> None:
        super().__init__()
        self.address = address
        self.port = port or free_port(address)
        self.password = secrets.token_urlsafe(24)
        self._bin = postgres_bindir()
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self._root()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def passfile(self) -> Path:
        """The client's password file (host:port:database:user:password), for PGPASSFILE or `passfile=`."""
        return self.root / "client.pgpass"

    @property
    def url(self) -> str:
        """Where the database is, without the password (it is in `passfile`)."""
        return f"postgresql://{self.USER}@{self.address}:{self.port}/{self.DATABASE}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process (psql, posture) needs in its environment to authenticate with `url`."""
        return {"PGPASSFILE": str(self.passfile)}

    @property
    def tag(self) -> str:
        """A name in the command line of every process of this server (the postmaster's through its data
        folder, the others' titles through cluster_name): `pgrep -f TAG` finds them all, orphans too."""
        return self.root.name

    @property
    def pid(self) -> int | None:
        """The server's (postmaster's) process id, while it runs."""
        return self._server.pid if self._server is not None else None

    def connect(self, **options: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """A psycopg connection to the lab's database over TCP, authenticated from `passfile` (unless
        `password=` is given); `options` go to `psycopg.connect` (autocommit=True, dbname=...)."""
        try:
            import psycopg
        except ImportError as exc:
            hint = "install the postgres extra: pip install 'posture-scanner[postgres]'"
            raise PostureError("psycopg is not installed", hint) from exc
        options.setdefault("passfile", str(self.passfile))
        options.setdefault("connect_timeout", 10)
        return psycopg.connect(self.url, **options)

    def __enter__(self) -> PostgresLab:
        try:
            self._initdb()
            self.start()
            self._run([str(self._bin / "createdb"), "-h", str(self.socket_dir), "-p", str(self.port),
                       "-U", self.USER, self.DATABASE], as_server=False)  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def _owner(self) -> tuple[int, int] | None:
        """(uid, gid) to run the server as when this process is root: the server refuses root."""
        if os.geteuid() != 0:
            return None
        try:
            record = pwd.getpwnam("postgres")
        except KeyError:
            raise PostureError("there is no `postgres` user to run the lab's server as",
                               "apt-get install postgresql (it makes the user)") from None  # fmt: skip
        return record.pw_uid, record.pw_gid

    def _as_server(self) -> dict[str, Any]:
        """Popen's keywords that run a program as the server's user, with no supplementary groups."""
        owner = self._owner()
        return {} if owner is None else {"user": owner[0], "group": owner[1], "extra_groups": []}

    def _run(self, argv: list[str], as_server: bool = True) -> None:
        """A server program (initdb) as the server's user, or a client (createdb) as this process with `env`."""
        how = self._as_server() if as_server else {"env": {**os.environ, **self.env}}
        done = subprocess.run(argv, capture_output=True, timeout=120, check=False, **how)
        if done.returncode != 0:
            raise PostureError(f"{Path(argv[0]).name} failed: {done.stderr.decode(errors='replace')[-400:]}")

    def _initdb(self) -> None:
        root, owner = self.root, self._owner()
        self.socket_dir.mkdir(mode=0o700)
        if owner is not None:
            for folder in (root, self.socket_dir):
                os.chown(folder, *owner)
        secret = root / "initdb.pw"
        _private_file(secret, self.password + "\n", owner)
        try:
            self._run([str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", self.USER, f"--pwfile={secret}",
                       "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
                       "--no-instructions"])  # fmt: skip
        finally:
            secret.unlink()
        _private_file(self.passfile, "".join(f"{host}:{self.port}:*:{self.USER}:{self.password}\n"
                                             for host in (self.address, self.socket_dir)))  # fmt: skip
        (self.data_dir / "pg_hba.conf").write_text(
            "# the lab's only ways in: the role's password, on the socket or from loopback\n"
            "local all all scram-sha-256\nhost all all 127.0.0.0/8 scram-sha-256\n"
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# posture lab\nlisten_addresses = '{self.address}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\nunix_socket_permissions = 0700\n"
                f"cluster_name = '{self.tag}'\npassword_encryption = scram-sha-256\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.root / "postgres.log"
        with log.open("ab") as out:
            self._server = subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(self.data_dir)], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, **self._as_server(),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise PostureError(f"the lab's PostgreSQL exited: {log.read_text(errors='replace')[-400:]}")
            with contextlib.suppress(OSError):  # line 8 of postmaster.pid: the server's state
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
                if len(lines) > 7 and lines[7].strip() == "ready":
                    return
            time.sleep(0.05)
        raise PostureError("the lab's PostgreSQL did not become ready within 60 s")

    def stop_server(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, nothing waits for clients); the server exits only after
        all its children have. Past 30 s, SIGKILL to the server and its children (each of them is a session
        of its own, so no signal to a process group would reach them)."""
        server, self._server = self._server, None
        if server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(child), signal.SIGKILL)
            server.kill()
            server.wait(10)

    def stop(self) -> None:
        self.stop_server()
        super().stop()
