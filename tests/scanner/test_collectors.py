"""Site collectors and `posture serve` (issue 18 item 3 and 4) on loopback: a real PostgreSQL, `posture serve`
over TLS with a certificate this test makes, a real `posture collector` process (keys, vault and outbox in a
home of its own) running real nmap against lab daemons of this test's own (127.110.0.21-23), and the server's
refusals of what a collector must not do. The two-site version in network namespaces, with a link cut, is
tests/scanner/test_collector_sites.py."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.lab import Lab
from tests.conftest import POSTURE, query, run_posture

pytestmark = pytest.mark.lab
NET = "127.110.0.0/16"
SERVER = "127.110.0.1"


@pytest.fixture(scope="module")
def site_lab() -> Iterator[Lab]:
    """sshd, nginx and vsftpd on three addresses of this test's own range."""
    with Lab(addresses=("127.110.0.21", "127.110.0.22", "127.110.0.23")) as running:
        yield running


def make_tls(folder: Path, addresses: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `addresses` (IP SANs), made here: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posture test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "central")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]),
                           critical=False).sign(ca_key, hashes.SHA256()))  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    paths[2].chmod(0o600)
    return paths


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class Central:
    db: str
    config: Path
    url: str
    ca: Path
    process: subprocess.Popen[str]

    def get(self, path: str) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(self.url + path, context=context, timeout=10) as response:  # noqa: S310 - https to the test's own server
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def home(tmp_path: Path, name: str) -> dict[str, str]:
    """A machine of its own: config (keys, trust), state (outbox) and vault key."""
    base = tmp_path / name
    env = {**os.environ, "XDG_CONFIG_HOME": str(base / "config"), "XDG_STATE_HOME": str(base / "state"),
           "XDG_DATA_HOME": str(base / "data")}  # fmt: skip
    made = subprocess.run([POSTURE, "keys", "generate"], env=env, capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    return env


def signing_line(env: dict[str, str], name: str) -> str:
    """The collector's public line as `posture keys list` prints it, its comment replaced by `name`."""
    line = (Path(env["XDG_CONFIG_HOME"]) / "posture" / "keys" / "signing.pub").read_text(encoding="utf-8")
    return " ".join([*line.split()[:2], name])


def write_config(path: Path, targets: list[str], ports: str, collectors: list[str], scope: str = NET) -> Path:
    path.write_text(
        f'[sites.lab]\nscope = ["{scope}"]\nmax_rate = 300\ncap = 2\ncollectors = {json.dumps(collectors)}\n\n'
        f"[jobs.lab]\ntargets = {json.dumps(targets)}\nports = \"{ports}\"\ndns = false\nsite = \"lab\"\n"
        "max_rate = 200\n",
        encoding="utf-8",
    )
    return path


def start_central(db: str, config: Path, tmp_path: Path, stalled_after: float = 6) -> Central:
    ca, cert, key = make_tls(tmp_path / "tls", (SERVER,))
    port = free_port(SERVER)
    process = subprocess.Popen(
        [POSTURE, "--db", db, "--config", str(config), "serve", "--listen", f"{SERVER}:{port}", "--tls-cert",
         str(cert), "--tls-key", str(key), "--stalled-after", str(stalled_after)],
        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    central = Central(db, config, f"https://{SERVER}:{port}", ca, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if central.get("/healthz")[0] == 200:
                return central
        except OSError:
            time.sleep(0.2)
    raise AssertionError("posture serve did not answer /healthz")


@pytest.fixture
def central_stopped() -> Iterator[list[Central]]:
    started: list[Central] = []
    yield started
    for central in started:
        central.process.terminate()
        try:
            _, log = central.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            central.process.kill()
            _, log = central.process.communicate()
        print("posture serve's log:\n" + log)


def collector(central: Central, env: dict[str, str], *args: str, scope: str = NET) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [POSTURE, "collector", "--server", central.url + "/", "--site", "lab", "--scope", scope, "--ca",
         str(central.ca), "--poll", "0.5", "--once", "--patience", "20", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_collector_scans_its_site_through_the_server(site_lab: Lab, pg_database: str, tmp_path: Path,
                                                       central_stopped: list[Central]) -> None:  # fmt: skip
    """Three chunks queued for a site; a collector that never touches the database takes them over HTTPS,
    scans, uploads signed results: each stored once, the collector seen, and a worker ends the run."""
    site = home(tmp_path, "site")
    config = write_config(tmp_path / "central.toml", site_lab.targets, site_lab.ports_spec,
                          [signing_line(site, "annex-collector-1")])  # fmt: skip
    assert run_posture("--config", str(config), "queue", "init", db=pg_database, process=True).returncode == 0
    queued = run_posture("--config", str(config), "run", "lab", "--queue", "--chunk-size", "1", db=pg_database,
                         process=True)  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    central = start_central(pg_database, config, tmp_path)
    central_stopped.append(central)

    ran = collector(central, site)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "collector stopped after 3 chunk(s)"
    assert "postgresql" not in ran.stderr.lower() and pg_database not in ran.stderr

    assert query(pg_database, "SELECT seq, status FROM scan_chunks ORDER BY seq") == [(0, "done"), (1, "done"),
                                                                                     (2, "done")]  # fmt: skip
    assert [r[0] for r in query(pg_database, "SELECT worker FROM queue_ingests ORDER BY seq")] == [
        f"annex-collector-1 ({r[0]})" for r in query(pg_database, "SELECT key_id FROM collectors")] * 3
    assert query(pg_database, "SELECT count(*), sum(stored) FROM collector_uploads") == [(3, 3)]
    assert query(pg_database, "SELECT site, name, chunks_taken, bundles_stored FROM collectors") == [
        ("lab", "annex-collector-1", 3, 3)]
    addresses = {r[0] for r in query(pg_database, "SELECT value FROM asset_identifiers WHERE kind = 'ipv4'")}
    assert addresses == set(site_lab.targets)
    assert query(pg_database, "SELECT task_name, status, queue_name FROM procrastinate_jobs ORDER BY id") == [
        ("scan_chunk", "succeeded", "posture-lab")] * 3 + [("finish_run", "todo", "posture.central")]

    # The run's final task is a worker's (the server only serves collectors); a worker never takes the
    # site's chunks, as the site is its collectors'.
    worker = run_posture("--config", str(config), "worker", "--once", db=pg_database, process=True)
    assert worker.returncode == 0, worker.stderr
    assert query(pg_database, "SELECT status FROM scans") == [("complete",)]
    refused = run_posture("--config", str(config), "worker", "--site", "lab", "--once", db=pg_database,
                          process=True)  # fmt: skip
    assert refused.returncode == 2 and "site lab is scanned by its collectors" in refused.stderr

    # Metrics, in Prometheus' text format, to loopback only; health says the database answers.
    status, text = central.get("/metrics")
    assert status == 200
    assert 'posture_queue_jobs{queue="posture-lab",status="succeeded"} 3' in text.splitlines()
    assert any(line.startswith('posture_collector_last_seen_seconds{site="lab",collector="annex-collector-1"')
               for line in text.splitlines())  # fmt: skip
    assert 'posture_serve_requests_total{endpoint="results",outcome="200"} 3' in text.splitlines()
    assert central.get("/healthz") == (200, '{"status":"ok","database":"ok"}')


def test_untrusted_key_and_out_of_scope_refused(site_lab: Lab, pg_database: str, tmp_path: Path,
                                                central_stopped: list[Central]) -> None:  # fmt: skip
    """A collector whose key the site does not list is refused at its first request; a trusted collector
    whose own scope is narrower than the site's refuses the chunk outside it before nmap runs, and says so
    to the server, which counts the attempt."""
    site, stranger = home(tmp_path, "site"), home(tmp_path, "stranger")
    inside, outside = site_lab.addresses[0], site_lab.addresses[1]
    config = write_config(tmp_path / "central.toml", [inside, outside], "22", [signing_line(site, "annex")])
    assert run_posture("--config", str(config), "queue", "init", db=pg_database, process=True).returncode == 0
    assert run_posture("--config", str(config), "run", "lab", "--queue", "--chunk-size", "1", db=pg_database,
                       process=True).returncode == 0  # fmt: skip
    central = start_central(pg_database, config, tmp_path)
    central_stopped.append(central)

    refused = collector(central, stranger)
    assert refused.returncode == 2
    assert "the server refused this collector (403): key " in refused.stderr
    assert "is not a collector of this site" in refused.stderr
    assert query(pg_database, "SELECT count(*) FROM collectors") == [(0,)]

    narrow = collector(central, site, scope=f"{inside}/32")
    assert narrow.returncode == 0, narrow.stderr
    assert f"chunk 1 refused: target '{outside}' ({outside}/32) lies outside the scope {inside}/32; nothing was " \
           "scanned" in narrow.stderr
    assert "nmap on 1 target(s)" in narrow.stderr
    chunks = dict(query(pg_database, "SELECT seq, status FROM scan_chunks"))
    assert chunks == {0: "done", 1: "pending"}  # tried again later, up to the bound, then failed
    assert {r[0] for r in query(pg_database, "SELECT value FROM asset_identifiers WHERE kind = 'ipv4'")} == {inside}
    assert query(pg_database, "SELECT seq, stored FROM collector_uploads ORDER BY seq") == [(0, 1), (1, 0)]
    assert query(pg_database, "SELECT attempts FROM procrastinate_jobs WHERE (args->>'seq')::int = 1") == [(1,)]
