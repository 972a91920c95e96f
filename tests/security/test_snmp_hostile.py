"""Issue 11, SNMP: a hostile device is one `error` device (or its bad value bounded), never a crashed batch.

The devices are fake SNMPv2c agents on real UDP sockets (127.92.1.x), speaking BER built by hand in
`tests/security/snmp_fake.py`, beside an honest agent in the same `posture snmp` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.agents.snmp_wire import MAX_STRING, WireError, decode_response
from scanner.db import is_url
from scanner.lab import SnmpdLab
from scanner.model import MAX_EVIDENCE, TRUNCATION_MARK
from tests.conftest import query, run_posture
from tests.security.snmp_fake import FakeAgent, integer, octets, system_mib, tlv

HOSTILE, HONEST = "127.92.1.1", "127.92.1.2"
HUGE = b"\x7f" + b"\xff" * 1999  # a 2,000-byte positive number: 4,800 decimal digits


def _hostile_timeticks(mib: dict[str, bytes]) -> None:
    mib["1.3.6.1.2.1.1.3.0"] = tlv(0x43, HUGE)  # sysUpTime


def _hostile_iftype(mib: dict[str, bytes]) -> None:
    mib["1.3.6.1.2.1.2.2.1.3.2"] = tlv(0x02, HUGE)  # ifType of eth0


def _hostile_counter64(mib: dict[str, bytes]) -> None:
    mib["1.3.6.1.2.1.2.2.1.5.2"] = tlv(0x46, HUGE)  # ifSpeed as a 16,000-bit Counter64


def _iftype_as_string(mib: dict[str, bytes]) -> None:
    mib["1.3.6.1.2.1.2.2.1.3.2"] = octets(b"\xff" * 300)  # a string where a number belongs
    mib["1.3.6.1.2.1.2.2.1.8.2"] = tlv(0x06, bytes((43, 6, 1)))  # and an OID where ifOperStatus belongs


def _huge_oid_arc(mib: dict[str, bytes]) -> None:
    mib["1.3.6.1.2.1.1.2.0"] = tlv(0x06, bytes((43,)) + b"\xff" * 200 + b"\x7f")  # one 1,400-bit arc


def _long_ip_address(mib: dict[str, bytes]) -> None:
    mib["1.3.6.1.2.1.4.20.1.1.10.0.0.1"] = tlv(0x40, b"\x0a" * 6000)  # 18,000 characters as text


@pytest.mark.parametrize(
    "make_hostile",
    [_hostile_timeticks, _hostile_iftype, _hostile_counter64, _iftype_as_string, _huge_oid_arc, _long_ip_address],
)
def test_hostile_device_does_not_crash_the_scan(make_hostile: object, store_db: Path | str) -> None:
    """High #3 "One hostile SNMP device crashes the whole scan": "An agent answering a 2,000-byte TimeTicks
    (or INTEGER in ifType): ValueError (Python's 4,300-digit limit), the scan row left `running`, 0 devices
    saved, the honest device in the same batch lost." Also other over-wide values of the same kind."""
    mib = system_mib(name="hostile-host")
    make_hostile(mib)  # type: ignore[operator]
    db = store_db
    with FakeAgent(HOSTILE, mib), FakeAgent(HONEST, system_mib()):
        result = run_posture("snmp", HOSTILE, HONEST, "--snmp-timeout", "1", "--snmp-retries", "0", db=db, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert query(db, "SELECT status FROM scans") == [("complete",)]
    statuses = dict(query(db, "SELECT address, status FROM scan_targets"))
    assert statuses[HONEST] == "ok"
    assert statuses[HOSTILE] in ("error", "ok")  # refused, or saved with the bad value bounded or dropped
    honest = query(db, "SELECT s.name FROM software s JOIN observations o ON o.id = s.observation_id "
                       "WHERE o.address = ? AND s.kind = 'application' ORDER BY s.name", HONEST)  # fmt: skip
    assert honest == [("bash-5.1",), ("openssh-server-8.4p1",), ("openssl-1.1.1k",)]
    for (evidence,) in query(db, "SELECT evidence FROM observations"):
        assert len(evidence) < 16 * 1024  # whatever was kept of the hostile device is bounded
    assert query(db, "SELECT hosts_done, hosts_up FROM scans") == [(2, 1 + (statuses[HOSTILE] == "ok"))]


def test_device_strings_are_bounded(store_db: Path | str) -> None:
    """High #3's general rule: "Bound every string from the device as well." A 60 KB sysDescr (UTF-8,
    3 octets a character) and 20 KB package names are cut, marked, and still read as UTF-8."""
    mib = system_mib(descr="€" * 20000, name="chatty")
    for i in range(1, 4):
        mib[f"1.3.6.1.2.1.25.6.3.1.2.{i}"] = octets(f"pkg{i}-" + "x" * 20000)
    db = store_db
    with FakeAgent(HOSTILE, mib):
        result = run_posture("snmp", HOSTILE, "--snmp-timeout", "2", db=db, timeout=120)
    assert result.returncode == 0, result.stderr
    (evidence,) = query(db, "SELECT evidence FROM observations")[0]
    system = json.loads(evidence)["system"]
    assert system["sysDescr"] == "€" * (MAX_EVIDENCE - len(TRUNCATION_MARK)) + TRUNCATION_MARK
    assert "sysDescr_hex" not in system  # cut on a character boundary, so still UTF-8
    names = [r[0] for r in query(db, "SELECT name FROM software WHERE kind = 'application'")]
    assert len(names) == 3 and all(len(n) == 512 and n.endswith(TRUNCATION_MARK) for n in names)


def _response(value: bytes) -> bytes:
    bind = tlv(0x30, tlv(0x06, bytes((43, 6, 1, 2, 1, 1, 1, 0))) + value)
    pdu = tlv(0xA2, integer(7) + integer(0) + integer(0) + tlv(0x30, bind))
    return tlv(0x30, integer(1) + octets(b"public") + pdu)


def test_wire_decoder_bounds_widths() -> None:
    """High #3's general rule: "every BER decode bounds integer width and size"; strings are cut at
    MAX_STRING octets, numbers wider than 64 bits and 33-bit OID arcs are refused."""
    assert decode_response(_response(tlv(0x46, b"\x00" + b"\xff" * 8)))[3][0][1] == 2**64 - 1
    for wide in (tlv(0x02, HUGE[:10]), tlv(0x43, HUGE), tlv(0x06, b"\x2b\x90\x80\x80\x80\x00")):
        with pytest.raises(WireError):
            decode_response(_response(wide))
    with pytest.raises(WireError):  # the request id itself
        decode_response(tlv(0x30, integer(1) + octets(b"p") + tlv(0xA2, tlv(0x02, HUGE) + integer(0) + integer(0))))
    assert decode_response(_response(octets(b"a" * 60000)))[3][0][1] == b"a" * MAX_STRING


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tag=st.sampled_from([0x02, 0x04, 0x06, 0x40, 0x41, 0x42, 0x43, 0x44, 0x46, 0x05, 0x80, 0x99]),
    body=st.binary(max_size=3000),
)
def test_wire_decoder_fuzz(tag: int, body: bytes) -> None:
    """High #3's general rule, as a property: any value a device sends decodes to a bounded value or is
    a `WireError`; nothing else escapes, and every number fits 64 bits."""
    try:
        _, _, _, binds = decode_response(_response(tlv(tag, body)))
    except WireError:
        return
    ((_, value),) = binds
    if isinstance(value, int):
        assert -(2**63) <= value < 2**64
        json.dumps(value)  # the integer prints (no 4,300-digit limit)
    elif value is not None:
        assert len(value) <= 4 * MAX_STRING


V3_USER, AUTH_KEY, PRIV_KEY, COMMUNITY = "posture-v3", "auth-key-5e3a", "priv-key-90c1", "community-27b4"
NON_ASCII_KEY = "ключ-секрет-1"


@pytest.mark.parametrize(
    ("args", "secrets"),
    [
        (["--user", V3_USER, "--auth-protocol", "SHA", "--priv-protocol", "AES"], f"{NON_ASCII_KEY}\n{PRIV_KEY}\n"),
        (["--user", V3_USER, "--auth-protocol", "SHA", "--priv-protocol", "AES"], f"{AUTH_KEY}\nkey€€€€€€€€\n"),
        (["--user", "usér-ünïcode", "--auth-protocol", "SHA"], f"{AUTH_KEY}\n"),
    ],
    ids=["auth-key", "priv-key", "user"],
)
def test_creds_add_refuses_keys_pysnmp_cannot_use(args: list[str], secrets: str, tmp_path: Path) -> None:
    """Low "A non-ASCII SNMPv3 key is accepted by `creds add`; then every device ends `error` and later
    credentials are never tried": `creds add` now refuses it in one line, exit 2, and saves nothing."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = run_posture("creds", "add", "snmp", "bad", "--version", "3", *args, "--stdin", env=env, input=secrets)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("posture: error: SNMPv3 ") and "printable ASCII" in line
    assert NON_ASCII_KEY not in result.stderr
    assert not (tmp_path / "config" / "posture" / "credentials.json").exists()


SNMPD = "127.92.2.1"


@pytest.fixture(scope="module")
def snmpd() -> Iterator[SnmpdLab]:
    """A real net-snmp agent of this file's own, on this file's own address (not the shared lab's)."""
    with SnmpdLab([SNMPD], COMMUNITY, V3_USER, AUTH_KEY, PRIV_KEY, sysname="children-snmpd") as lab:
        yield lab


def test_a_credential_that_errors_does_not_stop_the_next(snmpd: SnmpdLab, store_db: Path | str,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """Low "A non-ASCII SNMPv3 key is accepted by `creds add`; then every device ends `error` and later
    credentials are never tried": a vault that already holds such a key (saved by an older posture) no
    longer stops the next credential; the device is saved through it, and the key is never printed."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    legacy = (
        "import scanner.vault as v\nfrom scanner.agents.snmp import SnmpCredential as C\n"
        "v.check_v3 = lambda cred: None  # what an older posture did: no check\n"
        f"v.add_snmp(C('legacy-v3', '3', user={V3_USER!r}, auth_protocol='SHA', auth_key={NON_ASCII_KEY!r}, "
        f"priv_protocol='AES', priv_key={PRIV_KEY!r}))\n"
    )
    subprocess.run([sys.executable, "-c", legacy], env={**os.environ, **env}, check=True, timeout=60)
    added = run_posture("creds", "add", "snmp", "good-v2c", "--stdin", env=env, input=f"{COMMUNITY}\n")
    assert added.returncode == 0, added.stderr
    db = store_db

    result = run_posture("snmp", SNMPD, "--creds", "legacy-v3", "--creds", "good-v2c", "--snmp-timeout", "2",
                         db=db, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert query(db, "SELECT status, credential FROM scan_targets") == [("ok", "good-v2c")]
    assert query(db, "SELECT value FROM asset_identifiers WHERE kind = 'sysname'") == [("children-snmpd",)]

    alone = run_posture("snmp", SNMPD, "--creds", "legacy-v3", "--snmp-timeout", "2", db=db, env=env)
    assert alone.returncode == 3, alone.stderr  # nothing answered: a device error, not a crash
    (status, detail) = query(db, "SELECT status, detail FROM scan_targets WHERE scan_id = 2")[0]
    assert status == "error" and detail.startswith("legacy-v3: ")
    for output in (result.stdout + result.stderr, alone.stdout + alone.stderr):
        assert NON_ASCII_KEY not in output and "Traceback" not in output
    assert NON_ASCII_KEY not in _every_row(db)
    assert is_url(db) or NON_ASCII_KEY.encode() not in Path(db).read_bytes()  # nor anywhere in the SQLite file


def _every_row(db: Path | str) -> str:
    """Every row of every table of the inventory, as text."""
    tables = query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                   if is_url(db) else "SELECT name FROM sqlite_master WHERE type = 'table'")  # fmt: skip
    return "\n".join(repr(row) for (table,) in tables for row in query(db, f"SELECT * FROM {table}"))
