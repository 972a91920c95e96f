"""Host scripts and structured script output (issue 12, item 5).

"Host scripts and structured script output (`<hostscript>`, `<elem>`, `<table>`) kept on import and read by
identification; `protect.smbv1` reads real nmap output, and its test uses output written by a real nmap against
a real SMB server (Samba with SMB1 enabled, in the lab)."

The fast tests read nmap XML that a real nmap wrote against a real smbd (tests/scanner/data/README.md says how);
the lab test starts smbd on 127.98.0.1 and runs nmap against it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from scanner.lab import find_binary
from scanner.model import MAX_EVIDENCE
from scanner.nmap_xml import MAX_SCRIPT_LINES, MAX_SCRIPTS_PER_PORT, NmapXmlReader
from tests.conftest import assets_json, query, run_posture
from tests.scanner.smb_servers import samba

DATA = Path(__file__).parent / "data"
SMB1_XML = DATA / "samba-smb1-hostscripts.xml"
SMB2_XML = DATA / "samba-smb2-hostscripts.xml"
SMB_ADDRESS = "127.98.0.1"  # this module's own loopback address


def _import_and_evaluate(db: Path | str, xml: Path) -> list[dict[str, object]]:
    """`posture import nmap`, `posture evaluate`, then the findings as JSON."""
    for args in (("import", "nmap", str(xml)), ("evaluate",)):
        result = run_posture(*args, db=db)
        assert result.returncode == 0, result.stderr
    result = run_posture("findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def _smbv1(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [f for f in rows if f["rule_id"] == "protect.smbv1" and f["status"] in ("new", "open", "reopened")]


def test_real_hostscript_layout_is_parsed() -> None:
    """nmap 7.93's <hostscript> after <ports>: each script's id, output and its <table>/<elem> content."""
    with SMB1_XML.open("rb") as fh:
        (host,) = list(NmapXmlReader(fh))
    scripts = {s.id: s for s in host.scripts}
    assert set(scripts) == {"smb-os-discovery", "smb-protocols"}
    assert scripts["smb-protocols"].data[0] == "dialects: NT LM 0.12 (SMBv1) [dangerous, but default]"
    assert "dialects: 311" in scripts["smb-protocols"].data
    assert "lanmanager: Samba 4.17.12-Debian" in scripts["smb-os-discovery"].data
    assert "NT LM 0.12 (SMBv1)" in scripts["smb-protocols"].output
    assert [s.port for s in host.services] == [445] and host.services[0].scripts == ()
    with SMB2_XML.open("rb") as fh:
        (host,) = list(NmapXmlReader(fh))
    (smb,) = host.scripts
    assert smb.data == ("dialects: 210", "dialects: 300", "dialects: 302", "dialects: 311")


@pytest.mark.parametrize(("xml", "fires"), [(SMB1_XML, True), (SMB2_XML, False)])
def test_smbv1_rule_reads_the_real_host_script(store_db: Path | str, tmp_path: Path, xml: Path, fires: bool) -> None:
    """`protect.smbv1` fires on real nmap output listing `NT LM 0.12 (SMBv1)`, not on an SMB2/3-only server;
    the host scripts are stored in the observation's evidence and shown in the asset view."""
    db = store_db
    rows = _import_and_evaluate(db, xml)
    assert len(_smbv1(rows)) == (1 if fires else 0)
    if fires:
        assert _smbv1(rows)[0]["address"] == SMB_ADDRESS
    (evidence,) = query(db, "SELECT evidence FROM observations")
    stored = json.loads(evidence[0])["scripts"]["smb-protocols"]
    assert any(line.startswith("dialects: ") for line in stored["data"])
    (asset,) = assets_json(db)
    assert asset["host_scripts"]["smb-protocols"] == stored
    assert ("smb-os-discovery" in asset["host_scripts"]) == fires  # Samba answers it only over SMB1


def _xml(host_body: str) -> str:
    return ('<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap" start="1700000000" version="7.93">'
            '<host><status state="up"/><address addr="127.98.0.9" addrtype="ipv4"/>'
            f"{host_body}</host></nmaprun>")  # fmt: skip


def test_port_script_structured_output_is_kept(store_db: Path | str, tmp_path: Path) -> None:
    """A port script's <elem>/<table>s are kept too (nested keys joined), beside its output."""
    xml = tmp_path / "port.xml"
    xml.write_text(_xml(
        '<ports><port protocol="tcp" portid="443"><state state="open"/><service name="https"/>'
        '<script id="ssl-cert" output="Subject: commonName=intranet"><table key="subject">'
        '<elem key="commonName">intranet</elem></table><table key="validity">'
        '<elem key="notAfter">2019-01-01T00:00:00</elem></table></script></port></ports>'
    ))  # fmt: skip
    result = run_posture("import", "nmap", str(xml), db=store_db)
    assert result.returncode == 0, result.stderr
    (scripts,) = query(store_db, "SELECT scripts FROM services")
    assert json.loads(scripts[0]) == {"ssl-cert": {
        "output": "Subject: commonName=intranet",
        "data": ["subject.commonName: intranet", "validity.notAfter: 2019-01-01T00:00:00"],
    }}  # fmt: skip


HOSTILE: dict[str, Callable[[], str]] = {
    "huge output": lambda: f'<script id="x" output="{"A" * 2_000_000}"/>',
    "10,000 elems": lambda: '<script id="x" output="o"><table key="t">'
    + "<elem key='k'>v</elem>" * 10_000 + "</table></script>",
    "deep tables": lambda: '<script id="x" output="o">' + '<table key="d">' * 200 + "<elem>deep</elem>"
    + "</table>" * 200 + "</script>",
    "scripts inside tables": lambda: '<script id="x" output="o"><table key="t">'
    + ("<elem key='k'>v</elem>" * 200 + '<script id="y" output="p"/>') * 200 + "</table></script>",
    "wide and long": lambda: "".join(f'<script id="s{i}" output="o">' + f"<elem key='k'>{'B' * 50_000}</elem>" * 300
                                     + "</script>" for i in range(40)),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_hostscript_is_bounded(store_db: Path | str, tmp_path: Path, case: str) -> None:
    """A hostile hostscript (huge output, 10,000 elems, deep tables, many long scripts): bounded, no crash."""
    xml = tmp_path / "hostile.xml"
    xml.write_text(_xml(f"<hostscript>{HOSTILE[case]()}</hostscript>"))
    with xml.open("rb") as fh:
        (host,) = list(NmapXmlReader(fh))
    assert 1 <= len(host.scripts) <= MAX_SCRIPTS_PER_PORT
    for script in host.scripts:
        assert len(script.output) <= MAX_EVIDENCE
        assert len(script.data) <= MAX_SCRIPT_LINES and all(len(line) <= 400 for line in script.data)
    db = store_db
    result = run_posture("import", "nmap", str(xml), db=db)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (evidence,) = query(db, "SELECT evidence FROM observations")
    assert len(evidence[0]) < 2_000_000


def _smbd(root: Path, min_protocol: str) -> contextlib.AbstractContextManager[None]:
    """A real smbd on 127.98.0.1:445, no NetBIOS (tests/scanner/smb_servers.py), stopped however the test ends."""
    return samba(root, SMB_ADDRESS, min_protocol)


@pytest.mark.lab
@pytest.mark.parametrize(("min_protocol", "fires"), [("NT1", True), ("SMB2", False)])
def test_lab_real_nmap_against_real_smbd(tmp_path: Path, min_protocol: str, fires: bool) -> None:
    """The lab: real nmap smb-protocols against a real Samba; SMB1 enabled gives `protect.smbv1`, SMB2 minimum
    does not."""
    xml = tmp_path / "out.xml"
    with _smbd(tmp_path / "samba", min_protocol):
        result = subprocess.run(
            [find_binary("nmap", "nmap"), "-n", "-Pn", "-p445", "--script", "smb-protocols,smb-os-discovery",
             "-oX", str(xml), SMB_ADDRESS], capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "<hostscript>" in xml.read_text()
    rows = _import_and_evaluate(tmp_path / "inventory.db", xml)
    found = _smbv1(rows)
    assert len(found) == (1 if fires else 0)
    if fires:
        assert found[0]["address"] == SMB_ADDRESS
