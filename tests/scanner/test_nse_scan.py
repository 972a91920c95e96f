"""nmap's safe scripts in every scan (issue 14, item 2): the real `posture scan` against real Samba servers.

Each server is a real smbd (and nmbd, for nbstat) that the test starts on its own address of 127.102.0.0/16
(tests/scanner/smb_servers.py): SMB1 enabled; SMB2/3 only with signing offered but not required; SMB2/3 only
with signing required. What nmap's scripts said is stored, read into facts and rules, and turned into plan
actions. The scripts stay inside the scan's scope and under its rate cap, and `--dry-run` shows them.
`--tls-ciphers`' connections are counted at real nginx TLS servers on 127.106.0.0/16, through a counting
relay: how many at once, and none to a printer port.

rdp-ntlm-info, http-ntlm-info and ms-sql-info need Windows servers, which are not run here: their tests read
tests/scanner/data/nse-windows-scripts.xml, nmap's own documented output and public scan output (see
tests/scanner/data/README.md).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from scanner.agents.nmap import (
    SAFE_SCRIPTS,
    SCRIPT_CONNECTIONS,
    TLS_CIPHERS_PER_PORT,
    TLS_CIPHERS_SCRIPT,
    find_nmap,
)
from scanner.compat import UTC
from scanner.jobs import parse_jobs
from tests.conftest import assets_json, new_store, query, run_posture
from tests.rules.tls_lab import Site, make_certificates, nginx
from tests.scanner.counting_relay import CountingRelay
from tests.scanner.smb_servers import samba

DATA = Path(__file__).parent / "data"
WINDOWS_XML = DATA / "nse-windows-scripts.xml"
SCRIPT_DB = Path("/usr/share/nmap/scripts/script.db")
SMB1 = "127.102.1.1"  # SMB1 enabled, signing not required, nmbd answering nbstat
SMB2_OPEN = "127.102.2.1"  # SMB2/3 only, signing offered but not required, nmbd answering nbstat
SMB2_SIGNED = "127.102.3.1"  # SMB2/3 only, signing required
RATE_HOST = "127.102.4.1"  # the rate and scope test's server
OUTSIDE = "127.102.5.1"  # never a target: a listener here must hear nothing


def _findings(db: Path | str) -> list[dict[str, object]]:
    assert run_posture("evaluate", db=db).returncode == 0
    result = run_posture("findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return [f for f in rows if f["status"] in ("new", "open", "reopened")]


def _command(result_stdout: str) -> str:
    return result_stdout.strip().splitlines()[-1]


# ---- the script set and the command line ---------------------------------------------------------------


def _categories() -> dict[str, set[str]]:
    """nmap's own script database: script -> its categories."""
    found = {}
    for m in re.finditer(r'filename = "([\w-]+)\.nse", categories = \{([^}]*)\}', SCRIPT_DB.read_text()):
        found[m.group(1)] = set(re.findall(r'"(\w+)"', m.group(2)))
    return found


def test_default_scripts_are_safe_and_none_intrusive() -> None:
    """Every default script is in nmap's "safe" category and none is "intrusive" or "broadcast" (a broadcast
    script would reach hosts the scan was not given); ssl-enum-ciphers is "intrusive", hence opt-in."""
    categories = _categories()
    for script in SAFE_SCRIPTS:
        assert "safe" in categories[script], script
        assert not categories[script] & {"intrusive", "broadcast", "dos", "exploit", "brute", "vuln"}, script
    assert "intrusive" in categories[TLS_CIPHERS_SCRIPT]


def test_dry_run_shows_the_scripts_beside_the_rate_cap_and_printer_guard(tmp_path: Path) -> None:
    """`--dry-run` shows the script arguments; the printer ports stay excluded and the rate cap stays; nothing
    is written. `--no-scripts` drops them, `--tls-ciphers` adds ssl-enum-ciphers."""
    db = tmp_path / "inventory.db"
    result = run_posture("scan", f"{SMB1}/30", "--dry-run", db=db)
    assert result.returncode == 0, result.stderr
    command = _command(result.stdout)
    assert f"--script {','.join(SAFE_SCRIPTS)} --script-timeout 2m" in command
    assert "--exclude-ports 515,9100-9107,9999" in command and "--max-rate 100" in command
    assert "--script-args" not in command  # no newtargets: scripts add no target of their own
    bare = _command(run_posture("scan", SMB1, "--dry-run", "--no-scripts", db=db).stdout)
    assert "--script" not in bare and "--max-rate 100" in bare
    ciphers = _command(run_posture("scan", SMB1, "--dry-run", "--no-scripts", "--tls-ciphers", db=db).stdout)
    assert "--script ssl-enum-ciphers --script-timeout 2m" in ciphers and "--exclude-ports" in ciphers
    both = _command(run_posture("scan", SMB1, "--dry-run", "--tls-ciphers", db=db).stdout)
    assert f"--script {','.join(SAFE_SCRIPTS)},ssl-enum-ciphers " in both
    assert not db.exists()


def test_tls_ciphers_never_on_printer_ports(tmp_path: Path) -> None:
    """`--tls-ciphers` with `--printer-ports`: one line, exit 2, no scan row, no nmap run."""
    db = tmp_path / "inventory.db"
    result = run_posture("scan", SMB1, "--tls-ciphers", "--printer-ports", db=db)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "never runs on printer ports" in result.stderr
    assert not db.exists()


def test_job_keys_scripts_and_tls_ciphers(tmp_path: Path) -> None:
    """A job's `scripts = false` / `tls_ciphers = true` reach its scan's options (as `--no-scripts` /
    `--tls-ciphers` would); anything but true or false is refused at its line."""
    text = '[jobs.annex]\ntargets = ["10.20.0.0/24"]\nscripts = false\ntls_ciphers = true\n'
    (job,) = parse_jobs({"jobs": {"annex": {"targets": ["10.20.0.0/24"], "scripts": False, "tls_ciphers": True}}},
                        text, "config.toml").values()  # fmt: skip
    assert (job.scan_options()["scripts"], job.scan_options()["tls_ciphers"]) == (False, True)
    (default,) = parse_jobs({"jobs": {"annex": {"targets": ["10.20.0.0/24"]}}}, text, "config.toml").values()
    assert (default.scan_options()["scripts"], default.scan_options()["tls_ciphers"]) == (True, False)
    config = tmp_path / "config.toml"
    config.write_text('[jobs.annex]\ntargets = ["10.20.0.0/24"]\nscripts = "yes"\n')
    result = run_posture("--config", str(config), "config", "check")
    assert result.returncode == 2 and "config.toml:3: jobs.annex: scripts is true or false" in result.stderr


# ---- Windows-only scripts: nmap's documented and public output ----------------------------------------


@pytest.fixture(scope="module")
def windows_db(store_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    db = new_store(request, store_kind, tmp_path_factory.mktemp("windows"))
    result = run_posture("import", "nmap", str(WINDOWS_XML), db=db)
    assert result.returncode == 0, result.stderr
    assert run_posture("evaluate", db=db).returncode == 0
    return db


def _by_address(db: Path | str) -> dict[str, dict[str, Any]]:
    return {str(a["addresses"][0]): a for a in assets_json(db)}


# build -> the releases it must stay "one of" (issue 14: "Windows 10 2004-22H2 all report 19041").
SHARED_BUILDS = {
    "192.0.2.11": ("10.0.14393", {"windows-server/2016", "windows/10-1607-e-lts"}),
    "192.0.2.12": ("10.0.19041", {"windows/10-2004", "windows/10-20h2-e", "windows/10-21h1", "windows/10-21h2-e",
                                  "windows/10-22h2"}),
    "192.0.2.13": ("10.0.17763", {"windows-server/2019", "windows/10-1809-e-lts"}),
    "192.0.2.15": ("10.0.26100", {"windows-server/2025", "windows/11-24h2-e"}),
}


@pytest.mark.parametrize("address", sorted(SHARED_BUILDS))
def test_ntlm_build_shared_by_releases_stays_one_of(windows_db: Path | str, address: str) -> None:
    """rdp-ntlm-info's Product_Version names a build several releases share: the OS stays "one of" all of
    them (desktop and server not told apart), never the first that fits."""
    build, must = SHARED_BUILDS[address]
    os_item = _by_address(windows_db)[address]["os"]
    assert isinstance(os_item, dict) and os_item["product"] == "windows" and os_item["version"] == build
    assert must <= set(os_item["cycles"]), os_item["cycles"]


def test_ntlm_build_of_one_release_names_it(windows_db: Path | str) -> None:
    """10.0.20348 is Windows Server 2022 alone; http-ntlm-info's 5.0.2195 (nmap's @xmloutput) is Windows 2000."""
    found = _by_address(windows_db)
    assert (found["192.0.2.14"]["os"] or {}).get("product") == "windows-server"
    assert (found["192.0.2.14"]["os"] or {}).get("cycles") == ["2022"]
    assert (found["192.0.2.16"]["os"] or {}).get("cycles") == ["2000"]


def test_ms_sql_info_names_version_and_service_pack(windows_db: Path | str) -> None:
    """ms-sql-info in both of nmap's layouts (host script, from its @xmloutput; port script, from a public
    scan) reaches the SQL Server fingerprints: 2005 SP3+ is cycle 9.00-sp3, 2019 RTM is 15.0."""
    found = _by_address(windows_db)
    host = {(s["version"], tuple(s["cycles"])) for s in found["192.0.2.17"]["software"]}
    assert ("9.00.4053", ("9.00-sp3",)) in host and ("8.00.760", ()) in host
    port = [(s["product"], s["cycles"]) for s in found["192.0.2.18"]["software"]]
    assert port == [("mssqlserver", ["15.0"])]


def test_rdp_exposed_names_the_build(windows_db: Path | str) -> None:
    """`protect.rdp` fires on each RDP port, and its evidence carries the Windows build rdp-ntlm-info read."""
    rdp = {f["address"]: f for f in _findings(windows_db) if f["rule_id"] == "protect.rdp"}
    for address, (build, _) in SHARED_BUILDS.items():
        assert f"rdp-ntlm-info: Windows build {build}" in str(rdp[address]["evidence"])
    assert "192.0.2.16" not in rdp  # http-ntlm-info alone is no RDP


# ---- real Samba servers, the real `posture scan` ---------------------------------------------------------


# SQLite only: three Samba servers and a scan (65 s) for what the scripts said; a real scan's rows on
# PostgreSQL: test_store_both.py, test_a_network_scan_into_postgresql.
@pytest.fixture(scope="module")
def smb_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `posture scan` (default scripts) of the three servers, each on its own address."""
    root = tmp_path_factory.mktemp("samba")
    db = root / "inventory.db"
    with (samba(root / "smb1", SMB1, "NT1", netbios_name="LABSMB1", netbios=True),
          samba(root / "open", SMB2_OPEN, "SMB2", netbios_name="LABSMB2", netbios=True),
          samba(root / "signed", SMB2_SIGNED, "SMB2", signing="mandatory", netbios_name="LABSMB3")):  # fmt: skip
        result = run_posture("scan", SMB1, SMB2_OPEN, SMB2_SIGNED, "--ports", "139,445", "--no-dns", db=db)
    assert result.returncode == 0, result.stderr
    return db


def test_scan_stores_what_the_scripts_said(smb_scan: Path) -> None:
    """The host scripts of a real scan are stored with their structured output: SMB1's dialects and SMB1
    signing, SMB2 signing on every server."""
    found = _by_address(smb_scan)
    smb1 = found[SMB1]["host_scripts"]
    assert isinstance(smb1, dict)
    assert "dialects: NT LM 0.12 (SMBv1) [dangerous, but default]" in smb1["smb-protocols"]["data"]
    assert "message_signing: disabled" in smb1["smb-security-mode"]["data"]
    assert smb1["nbstat"].startswith("NetBIOS name: LABSMB1,")
    assert found[SMB2_OPEN]["host_scripts"]["smb2-security-mode"]["data"] == [
        "311: Message signing enabled but not required"]
    assert found[SMB2_SIGNED]["host_scripts"]["smb2-security-mode"]["data"] == [
        "311: Message signing enabled and required"]
    assert not any("NT LM 0.12" in line for a in (SMB2_OPEN, SMB2_SIGNED)
                   for line in found[a]["host_scripts"]["smb-protocols"]["data"])  # fmt: skip


def test_scan_names_hosts_from_their_own_answers(smb_scan: Path) -> None:
    """With no DNS name (--no-dns), a host is named by smb-os-discovery's FQDN (Samba's is this machine's
    host name) or, where only nbstat answered, by its NetBIOS name, lower-cased; a server that answered
    neither keeps its address as its name."""
    found = _by_address(smb_scan)
    fqdn = next(line.split(": ", 1)[1] for line in found[SMB1]["host_scripts"]["smb-os-discovery"]["data"]
                if line.startswith("fqdn: "))  # fmt: skip
    assert found[SMB1]["hostnames"] == [fqdn.lower()]
    assert found[SMB2_OPEN]["hostnames"] == ["labsmb2"] and found[SMB2_OPEN]["name"] == "labsmb2"
    assert found[SMB2_SIGNED]["hostnames"] == [] and found[SMB2_SIGNED]["name"] == SMB2_SIGNED


def test_scan_findings_smbv1_and_signing(smb_scan: Path) -> None:
    """On a real scan: `protect.smbv1` on the SMB1 server only; `protect.smb-signing-not-required` on both
    servers that let a client go unsigned, never on the one that requires signing."""
    rows = _findings(smb_scan)
    by_rule: dict[str, set[str]] = {}
    for f in rows:
        by_rule.setdefault(str(f["rule_id"]), set()).add(str(f["address"]))
    assert by_rule["protect.smbv1"] == {SMB1}
    assert by_rule["protect.smb-signing-not-required"] == {SMB1, SMB2_OPEN}


def test_plan_has_one_action_per_host_problem(smb_scan: Path) -> None:
    """The remediation plan: one "Disable SMBv1" action and one "Require SMB signing" action, counting
    hosts once each."""
    _findings(smb_scan)
    result = run_posture("plan", "remediation", "--format", "json", db=smb_scan)
    assert result.returncode == 0, result.stderr
    actions = {a["rule_id"]: a for a in json.loads(result.stdout)}
    assert actions["protect.smbv1"]["action"] == "Disable SMBv1 on 1 host"
    assert actions["protect.smb-signing-not-required"]["action"] == "Require SMB signing on 2 hosts"
    assert actions["protect.smb-signing-not-required"]["assets"] == 2


# ---- scope and rate with scripts on ---------------------------------------------------------------------


class _Listener:
    """Real sockets on an address no scan targets: TCP 445 and 139 counting connections, UDP 137 counting
    datagrams. Anything heard here came from a script that left the scan's targets."""

    def __init__(self, address: str) -> None:
        self.heard: list[str] = []
        self.stop = threading.Event()
        self.tcp = [socket.create_server((address, port)) for port in (139, 445)]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # nmbd binds 0.0.0.0:137 beside it
        self.udp.bind((address, 137))
        for s in [*self.tcp, self.udp]:
            s.settimeout(0.1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for s in self.tcp:
                try:
                    conn, peer = s.accept()
                    conn.close()
                    self.heard.append(f"tcp from {peer}")
                except TimeoutError:
                    pass
            try:
                _, peer = self.udp.recvfrom(2048)
                self.heard.append(f"udp from {peer}")
            except TimeoutError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for s in [*self.tcp, self.udp]:
            s.close()


@pytest.fixture
def outside() -> Iterator[_Listener]:
    listener = _Listener(OUTSIDE)
    try:
        yield listener
    finally:
        listener.close()


def test_scripts_stay_in_scope_and_under_the_rate_cap(tmp_path: Path, outside: _Listener) -> None:
    """With the default scripts on: a target outside --scope is refused before anything is sent; a scan of
    the SMB1 server (nbstat, smb-os-discovery and the rest all run) never reaches another address; and the
    port scan still keeps --max-rate: 60 ports at 10 packets a second take at least 6 seconds."""
    db = tmp_path / "inventory.db"
    refused = run_posture("scan", OUTSIDE, "--scope", "127.102.4.0/24", db=db)
    assert refused.returncode == 2 and "outside the scope" in refused.stderr
    with samba(tmp_path / "samba", RATE_HOST, "NT1", netbios_name="LABRATE", netbios=True):
        started = time.monotonic()
        result = run_posture("scan", RATE_HOST, "--scope", "127.102.4.0/24", "--ports", "420-479", "--max-rate", "10",
                             "--no-dns", "--no-os-detection", "--no-version-detection", db=db)  # fmt: skip
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    (evidence,) = query(db, "SELECT evidence FROM observations")
    scripts = json.loads(evidence[0])["scripts"]
    assert {"smb-protocols", "smb-os-discovery", "nbstat", "smb2-security-mode"} <= set(scripts)
    assert took >= 6.0, took
    time.sleep(0.3)
    assert outside.heard == []


# ---- TLS: ssl-cert by default, ssl-enum-ciphers with --tls-ciphers ----------------------------------------

TLS_HOST = "127.102.8.1"


@contextlib.contextmanager
def _nginx_tls(root: Path) -> Iterator[None]:
    """A real nginx serving TLS on TLS_HOST:443 with a certificate openssl makes for the test (tls_lab's)."""
    sites = [Site("intranet", TLS_HOST)]
    root.mkdir(parents=True, exist_ok=True)
    make_certificates(root, sites, datetime.now(UTC))
    with nginx(root, sites):
        yield


@pytest.mark.lab
def test_tls_scripts_are_stored(tmp_path: Path) -> None:
    """ssl-cert runs in every scan; ssl-enum-ciphers only with --tls-ciphers. Both are stored on the port
    (services.scripts) by the existing parser, for the certificate and cipher rules to read."""
    plain, ciphers = tmp_path / "plain.db", tmp_path / "ciphers.db"
    with _nginx_tls(tmp_path / "nginx"):
        for db, extra in ((plain, ()), (ciphers, ("--tls-ciphers",))):
            result = run_posture("scan", TLS_HOST, "--ports", "443", "--no-dns", "--no-os-detection", *extra, db=db)
            assert result.returncode == 0, result.stderr
    (stored,) = query(plain, "SELECT scripts FROM services WHERE port = 443")
    scripts = json.loads(stored[0])
    assert "subject.commonName: intranet.posture.test" in scripts["ssl-cert"]["data"]
    assert "ssl-enum-ciphers" not in scripts
    (stored,) = query(ciphers, "SELECT scripts FROM services WHERE port = 443")
    enum = json.loads(stored[0])["ssl-enum-ciphers"]
    assert "TLSv1.2:" in enum["output"] and "least strength: A" in enum["output"]


# ---- how many handshakes --tls-ciphers makes at once, counted at real nginx servers -------------------------
# nginx on 127.106.0.x:443; in front of each, a counting relay (tests/scanner/counting_relay.py) on 127.106.1.x
# (and 127.106.2.1 for the printer-port test). The scan's targets are the relays' addresses.

CAP_SITES = [Site(f"cap{n}", f"127.106.0.{n}") for n in range(1, 7)]  # 6 TLS ports: 30 cipher threads, over 21
CAP_ROUTES = {(f"127.106.1.{n}", 443): (f"127.106.0.{n}", 443) for n in range(1, 7)}
PRINTER_HOST = "127.106.2.1"  # TLS on 443 and on the printer port 9100, the same nginx behind both


@pytest.fixture(scope="module")
def cap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("tls-cap")
    make_certificates(root, CAP_SITES, datetime.now(UTC))
    with nginx(root, CAP_SITES):
        yield


def _stored_ciphers(db: Path) -> dict[str, bool]:
    return {address: TLS_CIPHERS_SCRIPT in json.loads(scripts or "{}") for address, scripts in query(
        db, "SELECT i.value, s.scripts FROM services s JOIN asset_identifiers i ON i.asset_id = s.asset_id "
        "AND i.kind = 'ipv4' WHERE s.port = 443")}  # fmt: skip


# Counted at the server, a thread's new connection sometimes arrives a fraction of a millisecond before the
# ones it takes over from have closed: up to two more than nmap's limit, for that instant (seen with --timing
# polite in about one run in three when other scripts or version detection ran too; not with ssl-enum-ciphers
# alone).
HANDOVER = 2


@pytest.mark.lab
@pytest.mark.parametrize(("extra", "per_port", "total"), [
    (("--no-scripts",), TLS_CIPHERS_PER_PORT, SCRIPT_CONNECTIONS),  # ssl-enum-ciphers alone: 5 a port, 21 in all
    ((), None, SCRIPT_CONNECTIONS),  # with the default scripts, which share the limit (ssl-cert on each port)
    (("--timing", "polite"), None, 2),  # nmap -T2 sets --max-parallelism 1: two script threads at once
], ids=["ciphers-alone", "default-scripts", "polite"])  # fmt: skip
def test_tls_ciphers_handshakes_are_capped(
    tmp_path: Path, cap_servers: None, extra: tuple[str, ...], per_port: int | None, total: int
) -> None:
    """nmap has no rate for scripts; what bounds ssl-enum-ciphers is NSE's limit on script threads holding
    connections (README, "Scripts"). Counted at six real nginx TLS servers (30 cipher threads wanting to
    connect): never more than 5 handshakes at once to one port (one thread per protocol version) and at most
    21 script connections at once in all, though each port took dozens; with --timing polite, 2. Every
    port's cipher list was still read and stored. Version detection is off: it is not script traffic."""
    db = tmp_path / "inventory.db"
    with CountingRelay(CAP_ROUTES) as relay:
        result = run_posture("scan", *(host for host, _ in CAP_ROUTES), "--ports", "443", "--no-dns",
                             "--no-os-detection", "--no-version-detection", "--tls-ciphers", *extra, db=db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _stored_ciphers(db) == {host: True for host, _ in CAP_ROUTES}
    counts = relay.counts
    assert all(n > 4 * TLS_CIPHERS_PER_PORT for n in counts.accepted.values()), counts  # dozens a port
    if per_port is not None:
        assert max(counts.peak.values()) <= per_port, counts
    assert counts.peak_total <= total + HANDOVER, counts


@pytest.mark.lab
def test_tls_ciphers_never_reach_a_printer_port(tmp_path: Path, cap_servers: None) -> None:
    """A TLS service on printer port 9100 beside one on 443: `posture scan --ports 443,9100 --tls-ciphers`
    enumerates 443's ciphers and sends nothing to 9100 (--exclude-ports keeps it out of the scan, so no script
    reaches it). The same nginx answers on 9100, and nmap given that port (with --allports, as nmap's own
    version detection leaves 9100-9107 alone too) enumerates it there: the test would see a script that got
    through."""
    routes = {(PRINTER_HOST, 443): (CAP_SITES[0].address, 443), (PRINTER_HOST, 9100): (CAP_SITES[0].address, 443)}
    db = tmp_path / "inventory.db"
    with CountingRelay(routes) as relay:
        result = run_posture("scan", PRINTER_HOST, "--ports", "443,9100", "--no-dns", "--no-os-detection",
                             "--tls-ciphers", db=db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert relay.counts.accepted[(PRINTER_HOST, 9100)] == 0, relay.counts
    assert relay.counts.accepted[(PRINTER_HOST, 443)] > 4 * TLS_CIPHERS_PER_PORT, relay.counts
    assert _stored_ciphers(db) == {PRINTER_HOST: True}
    assert query(db, "SELECT count(*) FROM services WHERE port = 9100") == [(0,)]
    with CountingRelay(routes) as relay:
        plain = subprocess.run([find_nmap(), "-n", "-Pn", "-sT", "-sV", "--allports", "-p", "9100", "--script",
                                TLS_CIPHERS_SCRIPT, PRINTER_HOST], capture_output=True, text=True, timeout=300,
                               check=False)  # fmt: skip
    assert plain.returncode == 0 and "ssl-enum-ciphers:" in plain.stdout, plain.stdout
    assert relay.counts.accepted[(PRINTER_HOST, 9100)] > 4 * TLS_CIPHERS_PER_PORT, relay.counts


def _host_xml(hostscripts: str) -> str:
    return ('<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap" start="1700000000" version="7.93">'
            '<host><status state="up"/><address addr="192.0.2.40" addrtype="ipv4"/><hostnames/>'
            f"<hostscript>{hostscripts}</hostscript></host></nmaprun>")  # fmt: skip


HOSTILE_NAMES = {
    "escape sequences": '<script id="smb-os-discovery" output="o"><elem key="fqdn">\\x1b[2Jevil.example</elem>'
    '</script><script id="nbstat" output="NetBIOS name: \\x1b[31mRED, NetBIOS user: x"/>',
    "10 KB name": f'<script id="smb-os-discovery" output="o"><elem key="fqdn">{"a" * 10_000}.example</elem></script>',
    "spaces and quotes": '<script id="nbstat" output="NetBIOS name: A B&quot;C, NetBIOS user: x"/>',
    "too many labels": '<script id="smb-os-discovery" output="o"><elem key="fqdn">' + "a." * 20 + "b</elem></script>",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_hostile_names_from_scripts_are_not_taken(store_db: Path | str, tmp_path: Path, case: str) -> None:
    """A name a host states of itself becomes its hostname only when it is a valid DNS or NetBIOS name: escape
    sequences, a 10 KB name, spaces or 20 labels give none, and the import goes on (the text stays in the
    stored script output, bounded)."""
    xml = tmp_path / "host.xml"
    xml.write_text(_host_xml(HOSTILE_NAMES[case]))
    db = store_db
    result = run_posture("import", "nmap", str(xml), db=db)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (asset,) = assets_json(db)
    assert asset["hostnames"] == [] and asset["name"] == "192.0.2.40"


def test_smb2_only_names_come_from_nbstat(tmp_path: Path) -> None:
    """nbstat's NetBIOS name (Samba's real answer, as stored by test_scan_stores_what_the_scripts_said) names a
    host smb-os-discovery could not ask (SMB2 only); Samba's `LABSMB\\x00` server name loses its `\\x00`."""
    xml = tmp_path / "host.xml"
    xml.write_text(_host_xml(
        '<script id="nbstat" output="NetBIOS name: LABSMB2, NetBIOS user: &lt;unknown&gt;, NetBIOS MAC: '
        '000000000000 (Xerox)"/>'))  # fmt: skip
    db = tmp_path / "inventory.db"
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    assert assets_json(db)[0]["hostnames"] == ["labsmb2"]
    xml.write_text(_host_xml('<script id="smb-os-discovery" output="o"><elem key="server">LABSMB\\x00</elem>'
                             "</script>"))  # fmt: skip
    db2 = tmp_path / "two.db"
    assert run_posture("import", "nmap", str(xml), db=db2).returncode == 0
    assert assets_json(db2)[0]["hostnames"] == ["labsmb"]
