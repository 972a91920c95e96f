"""Device-supplied strings are hostile: stored bounded and as given, shown without being interpreted."""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

from scanner.model import MAX_FIELD, TRUNCATION_MARK, printable
from tests.conftest import assets_json, query, run_posture

# XML cannot carry control characters (nmap writes them as the text "\x1b"), so the escape-sequence case
# is checked on `printable` directly; SNMP strings arrive as raw bytes and can carry them.
HOSTILE_PRODUCT = "\\x1b]0;pwned [bold red]rich markup[/] <script>alert(1)</script> {{7*7}} \u202egnp.exe"


def hostile_xml(tmp_path: Path) -> Path:
    huge = "A" * 100_000
    path = tmp_path / "hostile.xml"
    path.write_text(
        '<?xml version="1.0"?>\n<nmaprun scanner="nmap" args="nmap -sV" start="1763900000" version="7.93">\n'
        '<host><status state="up"/><address addr="127.0.0.77" addrtype="ipv4"/>'
        f"<hostnames><hostname name={quoteattr('evil' + 'x' * 400)} type='PTR'/></hostnames><ports>"
        '<port protocol="tcp" portid="80"><state state="open"/>'
        f'<service name="http" product={quoteattr(HOSTILE_PRODUCT)} version={quoteattr(huge)} method="probed">'
        f"<cpe>cpe:/a:evil:{huge}</cpe></service>"
        f'<script id="http-title" output={quoteattr(huge)}/></port></ports></host>\n'
        '<runstats><finished time="1763900001" exit="success"/></runstats></nmaprun>\n',
        encoding="utf-8",
    )
    return path


def test_hostile_banner_is_bounded_stored_and_not_interpreted(store_db: Path | str, tmp_path: Path) -> None:
    db = store_db
    assert run_posture("import", "nmap", str(hostile_xml(tmp_path)), db=db).returncode == 0

    service = assets_json(db)[0]["services"][0]
    assert service["product"] == HOSTILE_PRODUCT  # stored as the device said it, never rewritten
    assert len(service["version"]) == MAX_FIELD and service["version"].endswith(TRUNCATION_MARK)
    assert all(len(c) <= 256 for c in service["cpe"])
    scripts = json.loads(query(db, "SELECT scripts FROM services")[0][0])
    assert len(scripts["http-title"]) <= 4096
    assert max(len(str(r[0])) for r in query(db, "SELECT value FROM asset_identifiers")) <= 253

    table = run_posture("assets", db=db, env={"COLUMNS": "1000"})  # wide enough that no cell folds
    assert table.returncode == 0
    assert "\u202e" not in table.stdout  # a right-to-left override cannot reorder what follows on screen
    assert "[bold red]rich markup[/] <script>" in table.stdout  # markup printed as text, not applied


def test_printable_removes_terminal_control_sequences() -> None:
    shown = printable("\x1b]0;pwned\x07\x1b[2Jok\u202eexe\x9b31m" + "x" * 500)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in shown)
    assert "ok" in shown and len(shown) == 200


def test_nul_characters_are_removed_once_at_ingestion(store_db: Path | str) -> None:
    """A NUL character in a device's strings (an SNMP octet string, an agent's JSON, a register cell: nmap's
    XML cannot hold one) is removed where every host is ingested (`Ingest.add_prepared`), on both stores:
    PostgreSQL's text refuses NUL and its jsonb refuses the escaped `\\u0000`, so one such string would fail a
    whole import there, and the two stores must hold the same. The rest of each string is kept."""
    from scanner.model import HostObservation, OsMatch, Script, Service
    from scanner.store import Store

    host = HostObservation(
        status="up", addresses=(("ipv4", "127.107.9.9"),), hostnames=("nul\x00host.example",), ports_scanned=True,
        services=(Service(161, "udp", "open", "snmp", "Acme\x00 agent", "1.0\x00", cpes=("cpe:/a:acme:\x00agent",),
                          scripts=(Script("snmp-sysdescr", "Acme\x00OS 1.0", ("data: x\x00y",)),)),),
        os_matches=(OsMatch("Acme\x00OS 1.0", 90, "Acme", "AcmeOS\x00"),),
        scripts=(Script("nbstat", "NetBIOS name: PC\x0001"),),
    )  # fmt: skip
    with Store.open(store_db) as store:
        scan_id = store.start_scan("nmap-import", "nmap")
        with store.transaction():
            store.ingest(scan_id, "nmap", [host])
        store.finish_scan(scan_id, "complete")
    [asset] = assets_json(store_db)
    assert asset["hostnames"] == ["nulhost.example"]
    [service] = asset["services"]
    assert (service["product"], service["version"], service["cpe"]) == ("Acme agent", "1.0", ["cpe:/a:acme:agent"])
    assert asset["os"]["name"] == "AcmeOS 1.0" and asset["os"]["product"] == "AcmeOS"
    assert asset["host_scripts"] == {"nbstat": "NetBIOS name: PC01"}
    scripts = json.loads(query(store_db, "SELECT scripts FROM services")[0][0])
    assert scripts == {"snmp-sysdescr": {"output": "AcmeOS 1.0", "data": ["data: xy"]}}
    for table, column in (("observations", "evidence"), ("services", "scripts"), ("services", "cpes"),
                          ("software", "cpes"), ("asset_identifiers", "value"), ("software", "name")):  # fmt: skip
        assert query(store_db, f"SELECT count(*) FROM {table} WHERE {column} LIKE ?", "%\\u0000%") == [(0,)]
