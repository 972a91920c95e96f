"""SNMP against real agents: snmpsim serving recordings of real devices, and net-snmp's snmpd with a v3 user."""

from __future__ import annotations

import bz2
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.agents.snmp import SnmpCredential
from scanner.lab import SnmpdLab, SnmpSimLab, recording_path
from tests.conftest import POSTURE, assert_intact, assets_json, query, run_posture
from tests.scanner.snmp_agents import BadAgent

RECORDINGS = (
    "os/windows/XP",
    "os/windows/server-2003-5-2",
    "os/linux/unknown-001",  # RHEL 6: 668 installed packages
    "network/router/vyatta-unknown",  # 692 installed packages
    "network/firewall/netentsec-ngfw",  # 704 installed packages
    "network/switch/cisco-c3560",  # ENTITY-MIB physical inventory
)
SIM_BASE = "127.0.6."
SNMPD = ["127.0.7.1", "127.0.7.2"]
AUTH_KEY, PRIV_KEY, COMMUNITY = "lab-auth-key-8d1f", "lab-priv-key-41c2", "lab-community-77a0"


def recording(name: str) -> dict[str, tuple[str, str]]:
    """OID -> (type tag, value) as the recording file holds them."""
    path = recording_path(name)
    text = bz2.decompress(path.read_bytes()).decode("latin-1") if path.suffix == ".bz2" else path.read_text("latin-1")
    out = {}
    for line in text.splitlines():
        parts = line.split("|", 2)
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def raw_bytes(tag: str, value: str) -> bytes:
    return bytes.fromhex(value) if tag.endswith("x") else value.encode("latin-1")


@pytest.fixture(scope="module")
def simlab() -> Iterator[SnmpSimLab]:
    with SnmpSimLab(RECORDINGS, base=SIM_BASE) as lab:
        yield lab


# SQLite only: a walk of every recording (17 s) for the values read; SNMP's rows are written on both stores
# by the tests below that ask for store_db.
@pytest.fixture(scope="module")
def sim_db(simlab: SnmpSimLab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("snmpsim") / "inventory.db"
    # Generous limits: the test is about the values, and a loaded machine slows snmpsim (a big recording
    # once came back "partial" when two suites ran beside it).
    result = run_posture("snmp", *simlab.devices, "--snmp-timeout", "10", "--snmp-retries", "3",
                         "--snmp-deadline", "600", db=db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return db


@pytest.fixture(scope="module")
def snmpd() -> Iterator[SnmpdLab]:
    with SnmpdLab(SNMPD, COMMUNITY, "posture-v3", AUTH_KEY, PRIV_KEY) as lab:
        yield lab


@pytest.fixture
def vault(tmp_path: Path) -> dict[str, str]:
    """A vault of its own for the test: good and bad credentials, added through the CLI via stdin."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    adds = [
        (["good-v2c"], f"{COMMUNITY}\n"),
        (["wrong-v2c"], "not-the-community\n"),
        (["good-v3", "--version", "3", "--user", "posture-v3", "--auth-protocol", "SHA", "--priv-protocol", "AES"],
         f"{AUTH_KEY}\n{PRIV_KEY}\n"),
        (["wrong-v3", "--version", "3", "--user", "posture-v3", "--auth-protocol", "SHA", "--priv-protocol", "AES"],
         f"wrong-auth-key-000\n{PRIV_KEY}\n"),
    ]  # fmt: skip
    for args, secrets in adds:
        result = run_posture("creds", "add", "snmp", *args, "--stdin", env=env, input=secrets)
        assert result.returncode == 0, result.stderr
    return env


def software_of(db: Path | str, address: str, kind: str) -> list[tuple[str, str | None]]:
    return [
        (str(r[0]), r[1])
        for r in query(
            db,
            "SELECT s.name, s.raw_hex FROM software s JOIN observations o ON o.id = s.observation_id "
            "WHERE o.address = ? AND s.kind = ? AND o.source = 'snmp' ORDER BY s.id",
            address,
            kind,
        )
    ]


def test_recordings_give_their_exact_values(simlab: SnmpSimLab, sim_db: Path) -> None:
    statuses = dict(query(sim_db, "SELECT address, status FROM scan_targets"))
    assert statuses == dict.fromkeys(simlab.devices, "ok")
    for address, name in simlab.devices.items():
        rec = recording(name)
        installed = [raw_bytes(*v) for oid, v in rec.items() if oid.startswith("1.3.6.1.2.1.25.6.3.1.2.")]
        rows = software_of(sim_db, address, "application")
        assert len(rows) == len(installed), name  # every hrSWInstalled row, 700+ included
        evidence = json.loads(query(sim_db, "SELECT evidence FROM observations WHERE address = ?", address)[0][0])
        descr = raw_bytes(*rec["1.3.6.1.2.1.1.1.0"])
        stored = evidence["system"]["sysDescr"]
        assert stored == descr.decode("utf-8", "strict")[:4096] or evidence["system"].get("sysDescr_hex")
        assert evidence["counts"]["software"] == len(installed)


def test_known_counts_of_real_devices(simlab: SnmpSimLab, sim_db: Path) -> None:
    """Counts stated in the recordings' notes: XP 160 programs, Server 2003 31, RHEL 6 668, Vyatta 692."""
    by_name = {name: address for address, name in simlab.devices.items()}
    expected = {"os/windows/XP": 160, "os/windows/server-2003-5-2": 31, "os/linux/unknown-001": 668,
                "network/router/vyatta-unknown": 692, "network/firewall/netentsec-ngfw": 704}  # fmt: skip
    for name, count in expected.items():
        assert len(software_of(sim_db, by_name[name], "application")) == count, name


def test_strings_that_are_not_utf8_are_kept_decodable_and_marked(simlab: SnmpSimLab, sim_db: Path) -> None:
    marked = 0
    for address, name in simlab.devices.items():
        rec = recording(name)
        for oid, value in rec.items():
            if not oid.startswith("1.3.6.1.2.1.25.6.3.1.2."):
                continue
            raw = raw_bytes(*value)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                stored = dict(software_of(sim_db, address, "application"))
                text = raw.decode("cp1252", errors="replace")[:512]
                assert stored[text] == raw.hex()  # bytes kept beside the best-effort text
                marked += 1
    assert marked > 0  # the Server 2003 recording's names are GBK


def test_physical_inventory_from_entity_mib(simlab: SnmpSimLab, sim_db: Path) -> None:
    address = next(a for a, n in simlab.devices.items() if n == "network/switch/cisco-c3560")
    rec = recording("network/switch/cisco-c3560")
    serials = {raw_bytes(*v).decode() for o, v in rec.items() if o.startswith("1.3.6.1.2.1.47.1.1.1.1.11.")} - {""}
    extras = [json.loads(r[0]) for r in query(sim_db, "SELECT extra FROM software WHERE kind = 'hardware'")]
    assert serials and serials <= {e["serial"] for e in extras}
    asset = next(a for a in assets_json(sim_db) if address in a["addresses"])
    assert asset["os"]["name"].startswith("Cisco IOS Software")
    assert asset["sources"] == ["snmp"]


def test_v3_and_authentication_failures(snmpd: SnmpdLab, vault: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "inventory.db"
    ok = run_posture("snmp", SNMPD[0], "--creds", "good-v3", db=db, env=vault)
    assert ok.returncode == 0, ok.stderr
    bad = run_posture("snmp", SNMPD[1], "127.0.7.99", "--creds", "wrong-v3", "--snmp-timeout", "1", db=db, env=vault)
    assert bad.returncode == 3  # nobody answered with this credential
    wrong_community = run_posture("snmp", SNMPD[1], "--creds", "wrong-v2c", "--snmp-timeout", "1", db=db, env=vault)
    statuses = query(
        db, "SELECT scan_id, address, status, credential, detail FROM scan_targets ORDER BY scan_id, address"
    )
    assert [(s[1], s[2], s[3]) for s in statuses] == [
        (SNMPD[0], "ok", "good-v3"),
        (SNMPD[1], "auth-failure", None),
        ("127.0.7.99", "no-response", None),
        (SNMPD[1], "auth-failure", None),  # a wrong v2c community is told apart from a dead device
    ]
    assert "refused: wrong-v3" in statuses[1][4] and "refused: wrong-v2c" in statuses[3][4]
    assert "auth-failure" in wrong_community.stderr
    listing = run_posture("scans", "--devices", "2", db=db)
    assert listing.stdout.splitlines() == [
        f"{SNMPD[1]}\tauth-failure\t\tthe device answers but refused: wrong-v3",
        "127.0.7.99\tno-response\t\tno answer on udp/161",
    ]
    software = software_of(db, SNMPD[0], "application")
    assert len(software) > 50  # this machine's dpkg packages, through HOST-RESOURCES-MIB


def test_secrets_stay_secret(snmpd: SnmpdLab, vault: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "inventory.db"
    result = run_posture("snmp", SNMPD[0], "--creds", "good-v2c", "--creds", "good-v3", db=db, env=vault)
    assert result.returncode == 0, result.stderr
    listing = run_posture("creds", "list", env=vault)
    vault_dir = Path(vault["XDG_CONFIG_HOME"]) / "posture"
    for secret in (AUTH_KEY, PRIV_KEY, COMMUNITY):
        for blob in (db.read_bytes(), (vault_dir / "credentials.json").read_bytes()):
            assert secret.encode() not in blob
        assert secret not in result.stdout + result.stderr + listing.stdout + listing.stderr
        assert secret not in repr(SnmpCredential("x", "3", community=secret, auth_key=secret, priv_key=secret))
    assert oct((vault_dir / "vault.key").stat().st_mode & 0o777) == "0o600"
    assert oct((vault_dir / "credentials.json").stat().st_mode & 0o777) == "0o600"
    assert "good-v3\tsnmp v3\tuser posture-v3, auth SHA, priv AES" in listing.stdout


def test_vault_key_from_environment_and_wrong_key(snmpd: SnmpdLab, tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "POSTURE_KEY": "A" * 43 + "="}
    assert run_posture("creds", "add", "snmp", "k", "--stdin", env=env, input=f"{COMMUNITY}\n").returncode == 0
    assert not (tmp_path / "c" / "posture" / "vault.key").exists()  # the key came from the environment
    other = {**env, "POSTURE_KEY": "B" * 43 + "="}
    result = run_posture("snmp", SNMPD[0], "--creds", "k", db=tmp_path / "i.db", env=other)
    assert result.returncode == 2 and "cannot be decrypted" in result.stderr
    assert COMMUNITY not in result.stderr


def test_unknown_credential_name(tmp_path: Path) -> None:
    result = run_posture("snmp", "127.0.7.1", "--creds", "nope", db=tmp_path / "i.db",
                         env={"XDG_CONFIG_HOME": str(tmp_path)})  # fmt: skip
    assert result.returncode == 2
    assert "no SNMP credential named 'nope'" in result.stderr
    assert not (tmp_path / "i.db").exists() or query(tmp_path / "i.db", "SELECT count(*) FROM scans") == [(0,)]


def test_merge_with_nmap_results(store_db: Path | str, snmpd: SnmpdLab, vault: dict[str, str], tmp_path: Path) -> None:
    db = store_db
    result = run_posture("scan", SNMPD[0], "-p", "22", "--no-dns", "--snmp", "--creds", "good-v2c", db=db, env=vault)
    assert result.returncode == 0, result.stderr
    (asset,) = assets_json(db)
    assert asset["sources"] == ["nmap", "snmp"]
    assert query(db, "SELECT value FROM asset_identifiers WHERE kind = 'sysname'") == [("lab-snmpd",)]
    assert query(db, "SELECT kind, status FROM scans ORDER BY id") == [
        ("nmap-scan", "complete"),
        ("snmp-scan", "complete"),
    ]
    # Both went through the one runner: each recorded its units before sending and marked them done.
    assert query(db, "SELECT s.kind, c.status FROM scan_chunks c JOIN scans s ON s.id = c.scan_id ORDER BY s.id") == [
        ("nmap-scan", "done"),
        ("snmp-scan", "done"),
    ]


def test_looping_and_slow_agents_are_cut_off_others_unaffected(snmpd: SnmpdLab, vault: dict[str, str],
                                                                tmp_path: Path) -> None:  # fmt: skip
    db = tmp_path / "inventory.db"
    with BadAgent("127.0.8.1", "loop") as looping, BadAgent("127.0.8.2", "slow", delay=0.3) as slow:
        result = run_posture("snmp", "127.0.8.1", "127.0.8.2", SNMPD[0], "--creds", "good-v2c",
                             "--snmp-deadline", "4", "--snmp-timeout", "1", db=db, env=vault, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert looping.replies < 50 and slow.replies < 40  # bounded: the walks stopped by themselves
    statuses = {r[0]: (r[1], r[2]) for r in query(db, "SELECT address, status, detail FROM scan_targets")}
    assert statuses["127.0.8.1"][0] == "partial" and "non-increasing OID" in statuses["127.0.8.1"][1]
    assert statuses["127.0.8.2"][0] == "timeout" and "deadline" in statuses["127.0.8.2"][1]
    assert statuses[SNMPD[0]][0] == "ok"
    assert len(software_of(db, SNMPD[0], "application")) > 50


def test_snmp_refuses_hostile_targets(tmp_path: Path) -> None:
    result = run_posture("snmp", "127.0.0.1;id", db=tmp_path / "i.db", env={"XDG_CONFIG_HOME": os.fspath(tmp_path)})
    assert result.returncode == 2 and "invalid target" in result.stderr


def test_sigterm_mid_snmp_scan_keeps_saved_devices(
    store_db: Path | str,
    snmpd: SnmpdLab,
    vault: dict[str, str],
    tmp_path: Path,
) -> None:
    """Good devices are saved in batches; a slow one holds the scan open until the signal arrives."""
    db = store_db
    with BadAgent("127.0.8.3", "slow", delay=0.5) as slow:
        argv = [POSTURE, "--db", str(db), "snmp", SNMPD[0], SNMPD[1], "127.0.8.3", "--creds", "good-v2c",
                "--snmp-deadline", "120", "--snmp-timeout", "2"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **vault})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and slow.replies < 6:  # the good devices are done by then
            time.sleep(0.2)
        time.sleep(2.5)  # past the batch commit interval
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted" in err and b"resume with `posture snmp --resume 1`" in err  # how to finish it
    assert_intact(db)
    assert query(db, "SELECT status FROM scans") == [("interrupted",)]
    saved = dict(query(db, "SELECT address, status FROM scan_targets"))
    assert saved == {SNMPD[0]: "ok", SNMPD[1]: "ok"}  # the finished devices are kept, the slow one is not
    # Its unit (one chunk of the three addresses, as nmap would have it) is not done: a resume asks it again
    # (the slow agent is gone by now: that device times out, the others answer again) and completes the scan.
    assert query(db, "SELECT status, host_count FROM scan_chunks") == [("pending", 3)]
    resumed = run_posture("snmp", "--resume", "--snmp-timeout", "1", db=db, env=vault)
    assert resumed.returncode == 0, resumed.stderr
    assert "complete: 3 of 3 devices done" in resumed.stdout
    assert query(db, "SELECT status FROM scans") == [("complete",)]
    assert query(db, "SELECT status FROM scan_chunks") == [("done",)]
    assert dict(query(db, "SELECT address, status FROM scan_targets WHERE address = '127.0.8.3'")) == {
        "127.0.8.3": "no-response"}
    again = run_posture("snmp", "--resume", db=db, env=vault)
    assert again.returncode == 2 and "no interrupted SNMP scan to resume" in again.stderr
    assert len(software_of(db, SNMPD[0], "application")) > 50


def test_scan_and_snmp_outcomes_as_json(
    store_db: Path | str,
    snmpd: SnmpdLab,
    vault: dict[str, str],
    tmp_path: Path,
) -> None:
    """`--format json`: one JSON object on stdout per command, each scan's counts, statuses and assets; a device
    that refused or did not answer is named with its status, and the exit code is the text form's."""
    db = store_db
    both = run_posture("scan", SNMPD[0], "-p", "22", "--no-dns", "--snmp", "--creds", "good-v2c", "--format", "json",
                       db=db, env=vault)  # fmt: skip
    assert both.returncode == 0, both.stderr
    outcome = json.loads(both.stdout)  # the whole of stdout: no asset table, no summary line
    nmap, snmp = outcome["scans"]
    assert outcome["inventory"] == str(db)
    assert (nmap["kind"], nmap["status"], nmap["hosts_up"], nmap["services"]) == ("nmap", "complete", 1, 0)
    assert (snmp["kind"], snmp["by_status"], snmp["problems"]) == ("snmp", {"ok": 1}, [])
    assert nmap["asset_ids"] == snmp["asset_ids"] == [asset["id"] for asset in assets_json(db)]
    assert snmp["software"] > 50 and snmp["scan_id"] == nmap["scan_id"] + 1

    refused = run_posture("snmp", SNMPD[1], "127.0.7.99", "--creds", "wrong-v2c", "--snmp-timeout", "1",
                          "--format", "json", db=db, env=vault)  # fmt: skip
    assert refused.returncode == 3, refused.stderr  # nobody answered, as in text
    (scan,) = json.loads(refused.stdout)["scans"]
    assert scan["by_status"] == {"auth-failure": 1, "no-response": 1} and scan["asset_ids"] == []
    assert [(p["target"], p["status"]) for p in scan["problems"]] == [(SNMPD[1], "auth-failure"),
                                                                       ("127.0.7.99", "no-response")]
    assert "auth-failure" in refused.stderr  # people still read the problems on stderr
