"""Issue 18's test topology: a central namespace, two sites joined to it by links a test can cut, each site
with a LAN of real daemons of its own, and a TLS certificate for the central server.

Every address is 10.181.0.0/16 and lives only inside namespaces this module creates (named `pst-XXXX-...`,
XXXX random per lab); nothing is ever sent from the machine's own namespace to them.

                                      central  C  (posture serve: 0.0.0.0:8443, so C's 127.0.0.1 too)
                             to-a 10.181.1.1/30        to-b 10.181.2.1/30
                                   |  link "a"              |  link "b"        (lab.cut / lab.restore)
                       uplink 10.181.1.2/30        uplink 10.181.2.2/30
                               site A                     site B               (the collectors run here)
                       lan 10.181.11.1/24          lan 10.181.12.1/24
                                   |                          |
                        eth0 10.181.11.2/24        eth0 10.181.12.2/24
                               A-lan                      B-lan
                       sshd :22, nginx :80         sshd :2222, vsftpd :21     (scanner.lab's real daemons)

- Each site's default route points at C, and C does not forward: a site reaches the central server's
  address on its own link and nothing of the other site (as separate firewalled sites would).
- `cut("a")` sets C's end of site A's link down: A's own interface keeps its address and routes, and what
  it sends vanishes (timeouts, not an immediate error), as when a WAN link fails. `restore("a")` brings it
  up and waits for both ends to be up again.
- PostgreSQL stays in the machine's namespace; a server in C reaches it through its unix socket (files are
  not namespaced): `socket_url(postgres)` gives the URL, PGPASSFILE (`postgres.env`) the password.
- TLS: `folder/ca.pem` (a CA made here), `folder/cert.pem` and `folder/key.pem` (0600), the server's
  certificate for IP 127.0.0.1, 10.181.1.1 and 10.181.2.1.

From a test (all `lab` tests, run under the lab's flock):

    from tests.scanner.sites_lab import SERVER_PORT, SitesLab, socket_url  # the fixture `sites_lab` is in conftest

    def test_collectors(sites_lab: SitesLab, postgres: PostgresLab) -> None:
        lab = sites_lab
        server = lab.exec(lab.central, [POSTURE, "--db", socket_url(postgres), "serve", ...,  # serve's options
                          "--tls-cert", str(lab.cert), "--tls-key", str(lab.key)], env=postgres.env)
        lab.wait_listening(lab.central, "127.0.0.1", SERVER_PORT, server)
        a = lab.sites["a"]   # a.ns, a.server_url, a.target ("10.181.11.2"), a.scope, a.daemons, a.ports
        lab.exec(a.ns, [POSTURE, "collector", "--server", a.server_url, "--site", "a", "--ca", str(lab.ca)])
        lab.cut("a"); ...; lab.restore("a")

`exec(ns, argv, env=..., **popen_kw)` starts a process in a namespace (a Popen, stopped at teardown);
`run(ns, argv)` runs one to its end (nmap, a client); `reachable(ns, address, port)` and
`wait_listening(ns, ...)` try TCP from inside a namespace; `in_netns(ns, call)` runs any call there.
The `sites_lab` fixture is module-scoped (under a second to build): a test that cuts a link restores it.
Teardown stops what `exec` started and the daemons, kills every process left in every namespace
(`ip netns pids`), and deletes the namespaces, whatever happened before.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest

from scanner.errors import PostureError
from scanner.lab import Lab, LabDaemon, PostgresLab, _wait_listening, stop_processes

SERVER_PORT = 8443
PREFIX = "pst-"
T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, call: Callable[[], T]) -> T:
    """`call()` in a thread that has joined namespace `ns`: a socket it opens is ns's. setns(2) moves only
    the calling thread (and Python 3.11 has no os.setns), so the test process itself never leaves its own."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome.append(call())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise PostureError(f"ip {' '.join(args)}: {done.stderr.strip()[:300]}")
    return done.stdout


def namespaces() -> set[str]:
    """The names `ip netns list` shows now."""
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def socket_url(postgres: PostgresLab, url: str | None = None) -> str:
    """`url` (default the lab's; a `pg_database` URL works too: its database is kept) through the server's
    unix socket instead of TCP: libpq's `host=` naming the socket's folder. The passfile has a line for it."""
    database = urllib.parse.urlsplit(url or postgres.url).path.lstrip("/") or postgres.DATABASE
    query = urllib.parse.urlencode({"host": str(postgres.socket_dir), "port": str(postgres.port)})
    return f"postgresql://{postgres.USER}@/{database}?{query}"


def make_tls(folder: Path, addresses: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `addresses` (IP SANs) signed by it, valid for two days: ca.pem,
    cert.pem and key.pem (born 0600) in `folder`. The CA's key is never written. Extensions as Python 3.13's
    VERIFY_X509_STRICT asks (critical CA constraints, key usages, key identifiers)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posture sites lab CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    def usage(**on: bool) -> x509.KeyUsage:
        names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
        return x509.KeyUsage(**{name: on.get(name, False) for name in names})

    def builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2)))  # fmt: skip

    ca = (builder(ca_name, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posture serve")])
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (builder(server_name, server_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


class _NamespacedDaemons(Lab):
    """scanner.lab's real daemons (its configurations and installed-version reading), each started inside
    namespace `ns` on `address`; `services` is (kind, port) pairs, kind one of Lab.KINDS."""

    def __init__(self, ns: str, address: str, services: tuple[tuple[str, int], ...]) -> None:
        super().__init__()
        self.ns, self.address, self.services = ns, address, services

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return super()._spawn(["ip", "netns", "exec", self.ns, *argv], log, env)  # ip execs: same process

    def __enter__(self) -> _NamespacedDaemons:
        root = self._root()
        try:
            for kind, port in self.services:
                daemon: LabDaemon = getattr(self, f"_start_{kind}")(root, self.address, port)
                self.daemons.append(daemon)
                assert daemon.process is not None
                in_netns(self.ns, partial(_wait_listening, self.address, port, daemon.process, root / f"{kind}.log"))
        except BaseException:
            self.stop()
            raise
        return self


@dataclass(frozen=True)
class SiteSpec:
    """A site: `number` n gives its link 10.181.n.0/30 and its LAN 10.181.(10+n).0/24."""

    name: str
    number: int
    services: tuple[tuple[str, int], ...]


# Different daemons on different ports, so a scan tells the sites apart.
SITES = (SiteSpec("a", 1, (("ssh", 22), ("http", 80))), SiteSpec("b", 2, (("ssh", 2222), ("ftp", 21))))


@dataclass
class Site:
    name: str
    ns: str  # the site's namespace: its collector runs here
    lan_ns: str  # its daemons' host
    link: str  # C's end of the site's link (an interface in the central namespace)
    server_address: str  # C's address on the link: where the site's collector finds the server
    address: str  # the site's address on its link
    target: str  # the LAN host the site's collector scans
    scope: str  # the site's scope
    daemons: list[LabDaemon] = field(default_factory=list)

    @property
    def server_url(self) -> str:
        return f"https://{self.server_address}:{SERVER_PORT}/"

    @property
    def ports(self) -> list[int]:
        return [d.port for d in self.daemons]


class SitesLab:
    """The topology of the module docstring, built on enter and removed on exit (see there)."""

    def __init__(self, sites: tuple[SiteSpec, ...] = SITES, folder: Path | None = None) -> None:
        self.tag = secrets.token_hex(2)
        self.central = f"{PREFIX}{self.tag}-c"
        self.specs = sites
        self.sites: dict[str, Site] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="posture-sites-")
            folder = Path(self._tmp.name)
        self.folder = folder
        self.ca, self.cert, self.key = (self.folder / n for n in ("ca.pem", "cert.pem", "key.pem"))
        self.namespaces: list[str] = []  # those created, in order: exactly what teardown deletes
        self._processes: list[subprocess.Popen[Any]] = []
        self._daemons: list[_NamespacedDaemons] = []

    def __enter__(self) -> SitesLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _add_ns(self, name: str) -> str:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def _veth(self, ns1: str, if1: str, addr1: str, ns2: str, if2: str, addr2: str) -> None:
        """A veth pair made straight inside the two namespaces (never a name in the machine's own)."""
        ip("-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
        for ns, dev, addr in ((ns1, if1, addr1), (ns2, if2, addr2)):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")

    def _build(self) -> None:
        self._add_ns(self.central)
        self.run(self.central, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], check=True)  # sites stay apart
        servers = ["127.0.0.1"]
        for spec in self.specs:
            n = spec.number
            site = Site(spec.name, self._add_ns(f"{PREFIX}{self.tag}-{spec.name}"),
                        self._add_ns(f"{PREFIX}{self.tag}-{spec.name}-lan"), f"to-{spec.name}",
                        f"10.181.{n}.1", f"10.181.{n}.2", f"10.181.{10 + n}.2", f"10.181.{10 + n}.0/24")  # fmt: skip
            self._veth(self.central, site.link, f"{site.server_address}/30", site.ns, "uplink", f"{site.address}/30")
            self._veth(site.ns, "lan", f"10.181.{10 + n}.1/24", site.lan_ns, "eth0", f"{site.target}/24")
            ip("-n", site.ns, "route", "add", "default", "via", site.server_address)
            daemons = _NamespacedDaemons(site.lan_ns, site.target, spec.services)
            self._daemons.append(daemons)
            daemons.__enter__()
            site.daemons = list(daemons.daemons)
            self.sites[spec.name] = site
            servers.append(site.server_address)
        make_tls(self.folder, servers)

    def exec(
        self, ns: str, argv: list[str], env: dict[str, str] | None = None, **popen_kw: Any
    ) -> subprocess.Popen[Any]:
        """Start `argv` inside namespace `ns` with the tests' environment (os.environ, which carries the
        test's XDG folders and PYTHONPATH, as run_posture gives a posture in a namespace) plus `env`. Stopped
        at teardown if still running; stdin is /dev/null unless given."""
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env={**os.environ, **(env or {})}, **popen_kw)
        self._processes.append(process)
        return process

    def run(self, ns: str, argv: list[str], timeout: float = 120, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `argv` inside `ns` to its end (nmap, a client), its output captured as text."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                              check=check, env={**os.environ, **(env or {})})  # fmt: skip

    def wait_listening(self, ns: str, address: str, port: int, process: subprocess.Popen[Any],
                       log: Path | None = None, timeout: float = 30) -> None:  # fmt: skip
        """Wait until something accepts TCP connections on address:port inside `ns`; a PostureError (with
        the end of `log`, if given) if `process` exits first or time runs out."""
        in_netns(ns, partial(_wait_listening, address, port, process, log or self.folder / "no-log", timeout))

    def reachable(self, ns: str, address: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from `ns` to address:port is accepted within `timeout`."""

        def attempt() -> bool:
            with socket.create_connection((address, port), timeout):
                return True

        try:
            return in_netns(ns, attempt)
        except OSError:
            return False

    def cut(self, site: str) -> None:
        """Site `site`'s link down at C's end: what the site sends towards C vanishes."""
        ip("-n", self.central, "link", "set", self.sites[site].link, "down")

    def restore(self, site: str, timeout: float = 10) -> None:
        """The link up again, once both its ends say so."""
        s = self.sites[site]
        ip("-n", self.central, "link", "set", s.link, "up")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [json.loads(ip("-j", "-n", ns, "link", "show", "dev", dev))[0].get("operstate")
                      for ns, dev in ((self.central, s.link), (s.ns, "uplink"))]  # fmt: skip
            if states == ["UP", "UP"]:
                return
            time.sleep(0.05)
        raise PostureError(f"site {site}'s link did not come up within {timeout:.0f}s")

    def close(self) -> None:
        """Stop what exec started and the daemons (politely: SIGTERM, then SIGKILL past 10 s), then kill
        whatever is left in each namespace and delete it: the namespaces go whatever the stops did."""
        try:
            stop_processes(self._processes)
            for daemons in self._daemons:
                daemons.stop()
        finally:
            self._processes.clear()
            self._daemons.clear()
            for ns in reversed(self.namespaces):
                self._empty(ns)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            self.namespaces.clear()
            if self._tmp is not None:
                self._tmp.cleanup()

    @staticmethod
    def _empty(ns: str) -> None:
        """SIGKILL every process in `ns` (a daemon's forked workers, a child of an exec'ed program) until
        none is left: `ip netns del` would leave them running, holding the namespace."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
            if not pids.split():
                return
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.05)


@pytest.fixture(scope="module")
def sites_lab() -> Iterator[SitesLab]:
    """The two-site topology of this module's docstring, for one test module."""
    with SitesLab() as lab:
        yield lab
