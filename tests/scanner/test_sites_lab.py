"""The sites lab (tests/scanner/sites_lab.py) is what its docstring says: each site sees its own daemons and
the central server, not the other site; the TLS certificate verifies against the lab's CA only; a server in
the central namespace reaches PostgreSQL through its unix socket; a cut link is cut and a restored one works;
and nothing is left behind, whether a test fails inside the lab or the lab fails to start."""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.errors import PostureError
from scanner.lab import PostgresLab
from scanner.model import HostObservation
from scanner.nmap_xml import NmapXmlReader
from tests.conftest import POSTURE, assets_json
from tests.scanner.sites_lab import SERVER_PORT, SITES, SitesLab, in_netns, namespaces, socket_url

pytestmark = pytest.mark.lab

# A stand-in for `posture serve`: HTTPS with the lab's certificate on 0.0.0.0:SERVER_PORT.
HTTPS_SERVER = """
import http.server, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = http.server.HTTPServer(("0.0.0.0", int(sys.argv[3])), http.server.SimpleHTTPRequestHandler)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""
# GET the URL, verifying the server against the CA file if one is given (else the system's CAs).
HTTPS_CLIENT = """
import ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2] if len(sys.argv) > 2 else None)
try:
    print(urllib.request.urlopen(sys.argv[1], context=context, timeout=10).status)
except urllib.error.URLError as exc:
    print(exc.reason)
    sys.exit(3)
"""


@pytest.fixture(scope="module")
def server(sites_lab: SitesLab) -> Iterator[subprocess.Popen[bytes]]:
    """The HTTPS stand-in running in the central namespace for this module's tests."""
    lab = sites_lab
    process = lab.exec(lab.central, [sys.executable, "-c", HTTPS_SERVER, str(lab.cert), str(lab.key), str(SERVER_PORT)],
                       cwd=lab.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    lab.wait_listening(lab.central, "127.0.0.1", SERVER_PORT, process)
    yield process
    process.terminate()
    process.wait(10)


def nmap(lab: SitesLab, ns: str, *args: str) -> list[HostObservation]:
    """A real nmap run inside `ns`, its XML read by posture's reader."""
    done = lab.run(ns, ["nmap", "-n", "-oX", "-", *args], timeout=300)
    assert done.returncode == 0, done.stderr
    return list(NmapXmlReader(io.BytesIO(done.stdout.encode())))


def open_ports(hosts: list[HostObservation]) -> dict[int, tuple[str | None, str | None]]:
    return {s.port: (s.product, s.version) for h in hosts for s in h.services if s.state == "open"}


def test_each_site_sees_its_own_daemons_and_not_the_others(sites_lab: SitesLab) -> None:
    lab = sites_lab
    every_port = ",".join(str(p) for site in lab.sites.values() for p in site.ports)
    for site in lab.sites.values():
        seen = open_ports(nmap(lab, site.ns, "-sV", "--version-light", "-p", every_port, site.target))
        assert sorted(seen) == sorted(site.ports)
        for daemon in site.daemons:
            product, version = seen[daemon.port]
            assert product == daemon.product
            assert daemon.version is None or (version or "").startswith(daemon.version)
        assert ipaddress.ip_address(site.target) in ipaddress.ip_network(site.scope)
    assert sorted(lab.sites["a"].ports) != sorted(lab.sites["b"].ports)  # a scan tells the sites apart

    a, b = lab.sites["a"], lab.sites["b"]
    assert [h.status for h in nmap(lab, a.ns, "-sn", a.target)] == ["up"]
    assert nmap(lab, a.ns, "-sn", b.target) == []  # nmap lists no host that did not answer
    assert open_ports(nmap(lab, a.ns, "-Pn", "--max-retries", "1", "-p", every_port, b.target)) == {}


def test_each_site_reaches_the_central_server_on_its_link(sites_lab: SitesLab, server: subprocess.Popen[bytes]) -> None:
    lab = sites_lab
    for site in lab.sites.values():
        assert open_ports(nmap(lab, site.ns, "-Pn", "-p", str(SERVER_PORT), site.server_address)) == {
            SERVER_PORT: (None, None)
        }
    assert lab.reachable(lab.central, "127.0.0.1", SERVER_PORT)  # posture serve's 0.0.0.0 covers C's loopback


def test_the_certificate_verifies_against_the_lab_ca_only(sites_lab: SitesLab, server: subprocess.Popen[bytes]) -> None:
    from cryptography import x509

    lab = sites_lab
    assert lab.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(lab.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(map(str, sans.get_values_for_type(x509.IPAddress))) == ["10.181.1.1", "10.181.2.1", "127.0.0.1"]

    clients = [(site.ns, site.server_url) for site in lab.sites.values()]
    for ns, url in [*clients, (lab.central, f"https://127.0.0.1:{SERVER_PORT}/")]:
        trusted = lab.run(ns, [sys.executable, "-c", HTTPS_CLIENT, url, str(lab.ca)], timeout=60)
        assert (trusted.returncode, trusted.stdout.strip()) == (0, "200"), trusted.stderr
        refused = lab.run(ns, [sys.executable, "-c", HTTPS_CLIENT, url], timeout=60)
        assert refused.returncode == 3, refused.stderr
        assert "certificate verify failed" in refused.stdout
    # The certificate names addresses only: a name for the same server does not match it.
    other = lab.run(lab.central, [sys.executable, "-c", HTTPS_CLIENT, f"https://localhost:{SERVER_PORT}/",
                                  str(lab.ca)], timeout=60)  # fmt: skip
    assert other.returncode == 3
    assert "localhost" in other.stdout


CONNECT = """
import sys
import psycopg
with psycopg.connect(sys.argv[1], connect_timeout=5) as conn:
    print(*conn.execute("SELECT inet_server_addr() IS NULL, current_database()").fetchone())
"""


def test_the_central_namespace_reaches_postgresql_through_its_socket(
    sites_lab: SitesLab, postgres: PostgresLab, pg_database: str
) -> None:
    lab = sites_lab
    url = socket_url(postgres)
    assert "@/posture?host=" in url and str(postgres.port) in url
    done = lab.run(lab.central, [sys.executable, "-c", CONNECT, url], env=postgres.env, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "True posture"), done.stderr  # no server address: a socket
    # TCP to the server's loopback address is the machine's, not C's: nothing listens there inside C.
    tcp = lab.run(lab.central, [sys.executable, "-c", CONNECT, postgres.url], env=postgres.env, timeout=60)
    assert tcp.returncode != 0
    assert "refused" in tcp.stderr

    # posture's own connection code, on a test's fresh database (pg_database put PGPASSFILE in os.environ,
    # which exec and run pass on)
    fresh = socket_url(postgres, pg_database)
    assert fresh.split("?")[0].endswith("/" + pg_database.rsplit("/", 1)[1])
    posture_connect = ("import sys\nfrom scanner.db import connect\ndb = connect(sys.argv[1], readonly=True)\n"
                       "print(db.execute('SELECT current_database()').fetchone()[0])\n")  # fmt: skip
    done = lab.run(lab.central, [sys.executable, "-c", posture_connect, fresh], timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, pg_database.rsplit("/", 1)[1]), done.stderr


def test_a_cut_link_is_cut_and_a_restored_one_works(sites_lab: SitesLab, server: subprocess.Popen[bytes]) -> None:
    lab = sites_lab
    a, b = lab.sites["a"], lab.sites["b"]
    assert lab.reachable(a.ns, a.server_address, SERVER_PORT)
    lab.cut("a")
    try:
        with pytest.raises(TimeoutError):  # what A sends vanishes: no refusal, no "unreachable" either
            in_netns(a.ns, lambda: socket.create_connection((a.server_address, SERVER_PORT), 2).close())
        assert not lab.reachable(a.ns, a.server_address, SERVER_PORT)
        assert lab.reachable(b.ns, b.server_address, SERVER_PORT)  # the other site is not affected
        assert lab.reachable(a.ns, a.target, a.ports[0])  # nor the site's own LAN
    finally:
        lab.restore("a")
    assert lab.reachable(a.ns, a.server_address, SERVER_PORT, timeout=5)
    done = lab.run(a.ns, [sys.executable, "-c", HTTPS_CLIENT, a.server_url, str(lab.ca)], timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "200")


def test_posture_runs_in_a_site_with_the_tests_environment(sites_lab: SitesLab, tmp_path: Path) -> None:
    """`exec`/`run` give a program the test's environment: the installed posture of this tree (PYTHONPATH)
    with the test's own XDG folders; inside site A it scans A's LAN."""
    lab, a = sites_lab, sites_lab.sites["a"]
    seen = lab.run(a.ns, [sys.executable, "-c", "import os; print(os.environ['XDG_DATA_HOME'])"])
    assert seen.stdout.strip() == os.environ["XDG_DATA_HOME"]
    db = tmp_path / "inventory.db"
    ports = ",".join(map(str, a.ports))
    done = lab.run(a.ns, [POSTURE, "--db", str(db), "scan", a.target, "-p", ports, "--no-dns"], timeout=300)
    assert done.returncode == 0, done.stderr
    (asset,) = assets_json(db)
    assert asset["addresses"] == [a.target]


def _gone(pid: int) -> bool:
    """No such process, or only its zombie waiting for a parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_nothing_is_left_when_a_test_fails_inside_the_lab() -> None:
    before = namespaces()
    with pytest.raises(RuntimeError, match="the test failed"), SitesLab() as lab:
        made, folder = set(lab.namespaces), lab.folder
        assert made <= namespaces() and len(made) == 5
        tracked = lab.exec(lab.sites["a"].lan_ns, ["sleep", "600"])
        # a process exec never saw: the shell's background child, left in site B's namespace
        stray = lab.run(lab.sites["b"].ns, ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"])
        stray_pid = int(stray.stdout)
        daemon_pids = [d.process.pid for site in lab.sites.values() for d in site.daemons if d.process]
        raise RuntimeError("the test failed")
    assert namespaces() == before
    assert not made & namespaces()
    assert tracked.poll() is not None
    assert all(_gone(pid) for pid in [stray_pid, *daemon_pids])
    assert not folder.exists()


def test_nothing_is_left_when_the_lab_fails_to_start() -> None:
    """The same site twice: its second namespace cannot be made, after the first site's namespaces, links
    and daemons were; all go."""
    before = namespaces()
    with pytest.raises(PostureError, match="File exists"):
        SitesLab(sites=(SITES[0], SITES[0])).__enter__()
    assert namespaces() == before
