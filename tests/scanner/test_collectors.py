"""Site collectors and `posture serve` (issue 18 item 3 and 4) on loopback: a real PostgreSQL, `posture serve`
over TLS with a certificate this test makes, a real `posture collector` process (keys, vault and outbox in a
home of its own) running real nmap against lab daemons of this test's own (127.110.0.21-23), and the server's
refusals of what a collector must not do. The two-site version in network namespaces, with a link cut, is
tests/scanner/test_collector_sites.py."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.lab import Lab, free_port
from tests.conftest import POSTURE, query, run_posture
from tests.scanner.sites_lab import make_tls

pytestmark = pytest.mark.lab
NET = "127.110.0.0/16"
SERVER = "127.110.0.1"


@pytest.fixture(scope="module")
def site_lab() -> Iterator[Lab]:
    """sshd, nginx and vsftpd on three addresses of this test's own range."""
    with Lab(addresses=("127.110.0.21", "127.110.0.22", "127.110.0.23")) as running:
        yield running


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
    (tmp_path / "tls").mkdir()
    ca, cert, key = make_tls(tmp_path / "tls", [SERVER])
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

    # The operator's view: the collector seen just now, its chunks and bundles.
    status = run_posture("--config", str(config), "status", db=pg_database)
    assert status.returncode == 0, status.stderr
    [row] = [line.split() for line in status.stdout.splitlines() if line.startswith("annex-collector-1 ")]
    assert row[1] == "lab" and row[-3:] == ["ok", "3", "3"], status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 80

    # The run's final task is a worker's (the server only serves collectors); a worker never takes the
    # site's chunks, as the site is its collectors'.
    worker = run_posture("--config", str(config), "worker", "--once", db=pg_database, process=True)
    assert worker.returncode == 0, worker.stderr
    assert query(pg_database, "SELECT status FROM scans") == [("complete",)]
    refused = run_posture("--config", str(config), "worker", "--site", "lab", "--once", db=pg_database,
                          process=True)  # fmt: skip
    assert refused.returncode == 2 and "site lab is scanned by its collectors" in refused.stderr

    # Metrics, in Prometheus' text format, to loopback only; health says the database answers.
    code, text = central.get("/metrics")
    assert code == 200
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


def test_the_server_checks_every_request_and_result(site_lab: Lab, pg_database: str, tmp_path: Path,
                                                    central_stopped: list[Central],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """What a collector sends is checked before anything is stored: unsigned, replayed and stale requests,
    tampered bundles, a result for a chunk that is not its site's, one with a host nobody asked about, an
    oversized body; a result uploaded twice is a no-op, and a second result for a stored chunk is kept out.
    The requests are made here with the collector's own code and keys; the results hold real nmap output."""
    import base64
    import hashlib

    import httpx

    from posture.collector import Client, CollectorSettings, scan
    from posture.wire import API, MAX_UPLOAD, check_offer, chunk_payload, request_message, signed_headers
    from scanner.agents.nmap import NmapAgent
    from scanner.bundles import make_bundle, own_public_keys, sign_detached

    server_keys = run_posture("keys", "generate", process=True)  # the server's own (it unseals sealed results)
    assert server_keys.returncode == 0, server_keys.stderr
    server_x25519 = own_public_keys()["encryption"]
    site = home(tmp_path, "site")
    first, other, third = site_lab.addresses
    config = write_config(tmp_path / "central.toml", [first, third], site_lab.ports_spec,
                          [signing_line(site, "annex")])  # fmt: skip
    assert run_posture("--config", str(config), "queue", "init", db=pg_database, process=True).returncode == 0
    assert run_posture("--config", str(config), "run", "lab", "--queue", "--chunk-size", "1", db=pg_database,
                       process=True).returncode == 0  # fmt: skip
    central = start_central(pg_database, config, tmp_path)
    central_stopped.append(central)
    for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):  # this process is the collector now
        monkeypatch.setenv(key, site[key])
    client = Client(CollectorSettings(central.url, "lab", (NET,), central.ca))
    raw = httpx.Client(base_url=central.url, verify=ssl.create_default_context(cafile=str(central.ca)))
    take = API + "/take"

    assert raw.post(take, content=b"{}", headers={"x-posture-site": "lab"}).status_code == 401
    headers = signed_headers("POST", take, "lab", b"{}")
    forged = {**headers, "x-posture-signature": base64.b64encode(bytes(64)).decode()}
    assert raw.post(take, content=b"{}", headers=forged).status_code == 401
    assert raw.post(take, content=b'{"x": 1}', headers=headers).status_code == 401  # the body is signed too
    old, nonce = str(int(time.time()) - 3600), os.urandom(16).hex()
    _, _, signature = sign_detached(request_message("POST", take, "lab", old, nonce, b"{}"))
    stale = raw.post(take, content=b"{}", headers={**headers, "x-posture-time": old, "x-posture-nonce": nonce,
                                                   "x-posture-signature": signature})  # fmt: skip
    assert stale.status_code == 401 and "more than 300 s from the server's" in stale.json()["error"]
    answered = raw.post(take, content=b"{}", headers=headers)
    assert answered.status_code == 200
    assert raw.post(take, content=b"{}", headers=headers).status_code == 409  # the same request again
    offer = check_offer(answered.json(), [NET])
    assert offer.targets == [first] and offer.options["ports"] == site_lab.ports_spec

    agent = NmapAgent()
    xml, error = scan(offer, agent, client)
    assert error is None and xml is not None and f'addr="{first}"'.encode() in xml
    good = make_bundle(chunk_payload(offer, "lab", xml, None))

    def upload(body: bytes) -> tuple[int, dict[str, object]]:
        status, content = client.post("/results", body)
        return status, json.loads(content)

    envelope = json.loads(good)
    packed = bytearray(base64.b64decode(envelope["payload"]))
    packed[-9] ^= 1
    tampered = json.dumps({**envelope, "payload": base64.b64encode(bytes(packed)).decode()}).encode()
    status, answer = upload(tampered)
    assert status == 422 and "tampered" in str(answer["error"])
    status, answer = upload(make_bundle({**chunk_payload(offer, "lab", xml, None), "seq": 7}))
    assert status == 422 and "is not a chunk of site lab" in str(answer["error"])
    # Real nmap output, but of a host this chunk did not ask about.
    elsewhere = agent.run_chunk([other], offer.options, str(tmp_path), lambda _: None)
    foreign = elsewhere.xml_path.read_bytes()
    status, answer = upload(make_bundle(chunk_payload(offer, "lab", foreign, None)))
    assert status == 422 and f"host {other} is not among the chunk's targets" in str(answer["error"])
    too_big = raw.post(API + "/results", content=b"x" * (MAX_UPLOAD + 1),
                       headers=signed_headers("POST", API + "/results", "lab", b""))  # fmt: skip
    assert too_big.status_code == 413
    assert query(pg_database, "SELECT count(*) FROM observations") == [(0,)]

    assert upload(good) == (200, {"stored": True, "why": "run 1 chunk 0: 1 hosts up, 1 services"})
    assert upload(good) == (200, {"stored": False, "why": "uploaded before: nothing to do"})
    again = make_bundle(chunk_payload(offer, "lab", xml, None))  # another attempt's result for the same chunk
    assert hashlib.sha256(again).digest() != hashlib.sha256(good).digest()
    assert upload(again) == (200, {"stored": False, "why": "run 1 chunk 0 was stored already by another attempt"})
    assert query(pg_database, "SELECT count(*) FROM observations") == [(1,)]

    # The next chunk's result sealed to the server's X25519 key: unsealed there, then checked the same way.
    status, content = client.post("/take", b"{}")
    second = check_offer(json.loads(content), [NET])
    xml, error = scan(second, agent, client)
    assert error is None and xml is not None
    sealed = make_bundle(chunk_payload(second, "lab", xml, None), encrypt_to=server_x25519)
    assert json.loads(sealed)["format"] == "posture-sealed/1" and third.encode() not in sealed
    assert upload(sealed) == (200, {"stored": True, "why": "run 1 chunk 1: 1 hosts up, 1 services"})
    assert {r[0] for r in query(pg_database, "SELECT value FROM asset_identifiers WHERE kind = 'ipv4'")} == {
        first, third}
    assert query(pg_database, "SELECT count(*), sum(stored) FROM collector_uploads") == [(3, 2)]
    client.close()
    raw.close()
