"""Active Directory as a discovery source (issue 14 item 1), against a real directory.

A real Samba AD domain controller (`scanner.lab.SambaDC`: `samba-tool domain provision` into a temporary
folder, TLS with a certificate openssl makes for 127.101.0.1, `samba -i` on that address), provisioned once
for the module. The test creates the computer objects over LDAPS as Administrator, with the attributes
Windows writes when it joins and logs on (userAccountControl 4096, a workstation trust account;
lastLogonTimestamp; operatingSystem, operatingSystemVersion, operatingSystemServicePack).

Where each operatingSystem / operatingSystemVersion / operatingSystemServicePack string comes from (real
directories' output, copied exactly; the search tools' ids are given where the index names no repository):
- "Windows XP Professional", "5.1 (2600)": a real computer object's attribute dump (whenCreated 2008,
  find_string id 10269307758) and real PowerShell listings; "Service Pack 3" is XP SP3's CSDVersion, which
  Windows writes to operatingSystemServicePack (MS-NRPC NL_OSVERSIONINFO_V1; "Service Pack N" as in the
  2008 R2 dump below, and "Windows 2002 Service Pack 3 2600" in a real SMB capture, id 31213604704).
- "Windows Server 2003", "5.2 (3790)", "Service Pack 1": Adldap2/Adldap2 docs/models/computer.md.
- "Windows Server 2008 R2 Standard", "6.1 (7601)", "Service Pack 1": ldapsearch of a real DC (Hack The Box
  "Active", id 5930933970; the same three strings for "CASC-DC1", id 30588326783).
- "Windows Server 2012 R2 Standard", "6.3 (9600)": ldapsearch output in an assessment write-up (id 63535749498).
- "Windows 10 Pro", "10.0 (19045)": ldapsearch of a real workstation object WS01 (id 44329360445).
- "Windows 11 Enterprise", "10.0 (26100)": MichaelGrafnetter/DSInternals
  Documentation/PowerShell/Get-ADDBAccount.md (example 3, computer PC01, with its ManagedBy).
- "Windows Server 2025 Datacenter", "10.0 (26100)": the OS caption of GitHub's windows-2025 runner image
  ("Windows Server 2025 Datacenter 10.0.26100", id 71635037230); AD's operatingSystem is the edition name
  without "Microsoft " (as "Windows Server 2019 Datacenter" / "10.0 (17763)" in windapsearch output of a
  real DC, id 24763527865).
- "Windows 10 Enterprise LTSC 2019", "10.0 (17763)": the LTSC 2019 edition name as Windows states it
  (registry ProductName, quoted in id 68401213326 and the KMS client key tables, id 19096408836).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rules.catalogue import default_catalogue
from rules.identify import identify_directory
from scanner.compat import UTC
from scanner.lab import SambaDC
from scanner.sources import Request, ad, get_source
from scanner.sources.ad import _filetime, _hostname, _text, ou_lookup, parse_url
from tests.conftest import assets_json, db_fingerprint, new_store, query, run_posture

BASE = SambaDC.BASE_DN
ANNEX = f"OU=Annex,{BASE}"
STAFF = f"OU=Staff,{BASE}"
MANAGER = f"CN=Jo Bloggs,{STAFF}"
NOW = datetime.now(UTC)

# name, operatingSystem, operatingSystemVersion, operatingSystemServicePack, expected (product, cycles)
COMPUTERS: list[tuple[str, str, str, str | None, tuple[str, tuple[str, ...]]]] = [
    ("XP01", "Windows XP Professional", "5.1 (2600)", "Service Pack 3", ("windows", ("5-sp3",))),
    ("SRV03", "Windows Server 2003", "5.2 (3790)", "Service Pack 1", ("windows-server", ("2003-sp1",))),
    ("SRV08", "Windows Server 2008 R2 Standard", "6.1 (7601)", "Service Pack 1", ("windows-server", ("2008-r2-sp1",))),
    ("SRV12", "Windows Server 2012 R2 Standard", "6.3 (9600)", None, ("windows-server", ("2012-r2",))),
    ("WS10", "Windows 10 Pro", "10.0 (19045)", None, ("windows", ("10-22h2",))),
    ("WS11", "Windows 11 Enterprise", "10.0 (26100)", None, ("windows", ("11-24h2-e",))),
    ("SRV25", "Windows Server 2025 Datacenter", "10.0 (26100)", None, ("windows-server", ("2025",))),
    ("LTSC01", "Windows 10 Enterprise LTSC 2019", "10.0 (17763)", None, ("windows", ("10-1809-e-lts",))),
]
STALE = ("OLD7", "Windows 7 Professional", "6.1 (7601)", "Service Pack 1")  # last logon 400 days ago
DISABLED = ("GONE10", "Windows 10 Pro", "10.0 (19045)", None)  # userAccountControl 4098: disabled
BAD_BUILD = ("ODD01", "Windows 10 Pro", "10.0.19045", None)  # not the "10.0 (19045)" form


def filetime(when: datetime) -> int:
    """A FILETIME (100 ns since 1601), as AD stores lastLogonTimestamp."""
    return int((when - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)


def _admin(dc: SambaDC) -> Any:
    ldap3 = ad.ldap3  # directory_db there, pyasn1 deprecation warnings silenced
    tls = ldap3.Tls(ca_certs_file=str(dc.ca_file))
    server = ldap3.Server(dc.address, port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE)
    return ldap3.Connection(server, user=dc.ADMIN, password=dc.password, auto_bind=True)


def _add_computer(conn: Any, name: str, os_name: str, version: str, sp: str | None, *,
                  parent: str = f"CN=Computers,{BASE}", uac: int = 4096, logon: datetime = NOW - timedelta(days=3),
                  **extra: Any) -> None:  # fmt: skip
    attrs = {"sAMAccountName": f"{name}$", "userAccountControl": uac, "dNSHostName": f"{name.lower()}.posture.test",
             "operatingSystem": os_name, "operatingSystemVersion": version,
             "lastLogonTimestamp": filetime(logon), **extra}  # fmt: skip
    if sp:
        attrs["operatingSystemServicePack"] = sp
    assert conn.add(f"CN={name},{parent}", ["top", "person", "organizationalPerson", "user", "computer"], attrs), \
        conn.result  # fmt: skip


@pytest.fixture(scope="module")
def samba_dc() -> Iterator[SambaDC]:
    """The DC with the test's OUs, a manager and computer objects of every kind the tests read."""
    with SambaDC() as lab:
        conn = _admin(lab)
        for ou in (ANNEX, STAFF):
            assert conn.add(ou, ["top", "organizationalUnit"]), conn.result
        assert conn.add(MANAGER, ["top", "person", "organizationalPerson", "user"],
                        {"sAMAccountName": "jbloggs", "displayName": "Jo Bloggs"}), conn.result  # fmt: skip
        for name, os_name, version, sp, _ in COMPUTERS:
            extra: dict[str, Any] = {"managedBy": MANAGER, "description": "Finance\x1b[31m kiosk"} \
                if name == "WS11" else {}  # fmt: skip
            _add_computer(conn, name, os_name, version, sp, parent=ANNEX if name == "SRV12" else f"CN=Computers,{BASE}",
                          **extra)  # fmt: skip
        _add_computer(conn, *STALE, logon=NOW - timedelta(days=400))
        _add_computer(conn, *DISABLED, uac=4098)
        _add_computer(conn, *BAD_BUILD)
        _add_computer(conn, "HUGE01", "Windows " + "X" * 10_240, "10.0 (19045)", None)
        conn.unbind()
        yield lab


def _env(home: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
            "POSTURE_VAULT": str(home / "config" / "credentials.json")}  # fmt: skip


def _add_creds(env: dict[str, str], name: str, bind: str, password: str) -> None:
    result = run_posture("creds", "add", "ldap", name, "--stdin", env=env, input=f"{bind}\n{password}\n")
    assert result.returncode == 0, result.stderr


NMAP_XML = """<?xml version="1.0"?>
<nmaprun scanner="nmap" args="nmap -O 127.101.0.0/24" start="1700000000" version="7.93">
<host><status state="up"/><address addr="127.101.0.8" addrtype="ipv4"/>
<hostnames><hostname name="srv08.posture.test" type="PTR"/></hostnames>
<ports><port protocol="tcp" portid="445"><state state="open"/><service name="microsoft-ds"/></port></ports>
<os><osmatch name="Microsoft Windows 7 SP1" accuracy="96"><osclass type="general purpose" vendor="Microsoft"
osfamily="Windows" osgen="7" accuracy="96"><cpe>cpe:/o:microsoft:windows_7::sp1</cpe></osclass></osmatch></os></host>
<host><status state="up"/><address addr="127.101.0.9" addrtype="ipv4"/>
<hostnames><hostname name="xp01.branch.example" type="PTR"/></hostnames>
<ports><port protocol="tcp" portid="139"><state state="open"/><service name="netbios-ssn"/></port></ports></host>
<runstats><finished time="1700000100" exit="success"/></runstats></nmaprun>
"""  # the osmatch name is nmap-os-db's own ("Fingerprint Microsoft Windows 7 SP1"): a scan disagreeing


@pytest.fixture(scope="module")
def directory_db(samba_dc: SambaDC, store_kind: str, request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """nmap sightings and the register first, then `posture import ad`, then `posture evaluate` (on each store)."""
    dc = samba_dc
    home = tmp_path_factory.mktemp("directory")
    env = _env(home)
    db = new_store(request, store_kind, home)
    log = home / "posture.log"
    config = home / "config.toml"
    config.write_text(f'[log]\nfile = "{log}"\n[directory]\nstale_days = 180\n'
                      f'ou_sites = {{ "{ANNEX}" = "Annex" }}\n')  # fmt: skip
    _add_creds(env, "lab", dc.ADMIN, dc.password)
    xml = home / "scan.xml"
    xml.write_text(NMAP_XML)
    register = home / "register.csv"
    register.write_text("hostname,owner\nws10.posture.test,Register Owner\n")
    steps = [("import", "nmap", str(xml)), ("import", "ad", f"ldaps://{dc.address}", "--creds", "lab",
                                             "--ca-file", str(dc.ca_file)),
             ("import", "assets", str(register)), ("evaluate",)]  # fmt: skip
    outputs = []
    for args in steps:
        result = run_posture("--config", str(config), *args, db=db, env=env)
        assert result.returncode == 0, (args, result.stderr)
        outputs.append(result)
    findings = run_posture("findings", "--format", "json", db=db, env=env)
    assert findings.returncode == 0, findings.stderr
    table = run_posture("assets", db=db, env={**env, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    by_name = {}
    for a in assets_json(db):
        for h in a["hostnames"]:
            by_name[h] = a
    return {"db": db, "env": env, "home": home, "log": log, "import": outputs[1], "assets": by_name,
            "findings": json.loads(findings.stdout), "table": table.stdout}  # fmt: skip


def _rules_on(directory_db: dict[str, Any], host: str) -> set[str]:
    asset_id = directory_db["assets"][host]["id"]
    return {f["rule_id"] for f in directory_db["findings"] if f["asset_id"] == asset_id}


@pytest.mark.parametrize(("name", "expected"), [(c[0], c[4]) for c in COMPUTERS])
def test_directory_names_the_release(directory_db: dict[str, Any], name: str,
                                     expected: tuple[str, tuple[str, ...]]) -> None:  # fmt: skip
    """Each computer's operatingSystem AND build give its cycle: 26100 is Windows 11 24H2 (Enterprise: `-e`)
    on a client and Server 2025 on a server; 17763 LTSC is `10-1809-e-lts`; service packs narrow 2003."""
    asset = directory_db["assets"][f"{name.lower()}.posture.test"]
    os_ = asset["os"]
    assert (os_["product"], os_["cycle"]) == (expected[0], expected[1][0])
    assert os_["method"] == "directory"
    assert "ad" in asset["sources"]


def test_stale_and_disabled_objects(directory_db: dict[str, Any]) -> None:
    """A computer not seen logging on for 180 days, and a disabled one, get `detect.stale-directory-object`;
    only the directory knows them, so Windows 7 (end of life) is not a live end-of-life machine there; XP,
    which logged on three days ago, is."""
    assert "detect.stale-directory-object" in _rules_on(directory_db, "old7.posture.test")
    assert "protect.eol-os" not in _rules_on(directory_db, "old7.posture.test")
    assert "detect.stale-directory-object" in _rules_on(directory_db, "gone10.posture.test")
    assert "detect.stale-directory-object" not in _rules_on(directory_db, "ws10.posture.test")
    assert "protect.eol-os" in _rules_on(directory_db, "xp01.posture.test")
    old7 = directory_db["assets"]["old7.posture.test"]
    assert old7["directory"]["stale"] is True and old7["note"] == "in directory, not seen on the network"
    assert old7["last_seen"] is None  # a directory entry is not a network sighting
    # The register was loaded: a machine the network showed and the register lacks is flagged; an object only
    # the directory knows is not (it is reported as directory-only, and may be long gone).
    assert "detect.not-in-register" in _rules_on(directory_db, "srv08.posture.test")
    assert "detect.not-in-register" not in _rules_on(directory_db, "old7.posture.test")



def test_report_windows_estate_counts_the_directory(directory_db: dict[str, Any], tmp_path: Path) -> None:
    """Issue 14 item 4: the report's Windows estate section counts releases the directory named (XP among them,
    end of life) and the stale or disabled objects and the directory-only ones, as the findings and the asset
    view have them."""
    html = tmp_path / "report.html"
    result = run_posture("report", "--html", str(html), db=directory_db["db"], env=directory_db["env"])
    assert result.returncode == 0, result.stderr
    page = html.read_text(encoding="utf-8")
    section = page[page.index('<h2 id="windows">'):page.index('<section aria-labelledby="certificates">')]
    stale = {f["asset_id"] for f in directory_db["findings"] if f["rule_id"] == "detect.stale-directory-object"}
    only = [a for a in directory_db["assets"].values() if a["note"] == "in directory, not seen on the network"]
    assert len(stale) >= 2 and only
    assert (f"Active Directory: {len(stale)} computer objects not seen logging on for a long time, or disabled"
            in section and f"; {len(only)} in the directory but not seen on the network." in section)
    xp = next(row for row in section.split("<tr>") if "Windows XP" in row)
    assert "end-of-life" in xp

def test_merge_with_scanned_assets(directory_db: dict[str, Any]) -> None:
    """SRV08 merges with the nmap asset of the same DNS name (the directory's Server 2008 R2 ranks above
    nmap's Windows 7 guess, which is kept as a conflict); XP01 with the nmap asset whose reverse name is in
    another zone, by short name. Neither shows the directory-only note."""
    srv08 = directory_db["assets"]["srv08.posture.test"]
    assert sorted(srv08["sources"]) == ["ad", "nmap"] and srv08["addresses"] == ["127.101.0.8"]
    assert srv08["os"]["cycle"] == "2008-r2-sp1"
    assert [c["product"] for c in srv08["os"]["conflicts"]] == ["windows"]
    xp = directory_db["assets"]["xp01.posture.test"]
    assert "xp01.branch.example" in xp["hostnames"] and xp["addresses"] == ["127.101.0.9"]
    assert srv08["note"] is None and xp["note"] is None and xp["seen_on_network"] is True
    assert query(directory_db["db"], "SELECT count(DISTINCT asset_id) FROM asset_identifiers WHERE value IN "
                 "('srv08.posture.test', '127.101.0.8', 'xp01.posture.test', '127.101.0.9')") == [(2,)]


def test_owner_site_and_view(directory_db: dict[str, Any]) -> None:
    """managedBy is resolved to the manager's displayName and shown as owner where the register has none;
    the register's owner wins; the OU maps to a site; directory-only assets say so in `posture assets`."""
    ws11 = directory_db["assets"]["ws11.posture.test"]
    assert (ws11["owner"], ws11["owner_source"]) == ("Jo Bloggs", "directory")
    assert ws11["directory"]["description"] == "Finance\x1b[31m kiosk"  # stored as said; shown terminal-safe
    ws10 = directory_db["assets"]["ws10.posture.test"]
    assert (ws10["owner"], ws10["owner_source"]) == ("Register Owner", "register")
    assert directory_db["assets"]["srv12.posture.test"]["site"] == "Annex"
    assert "in directory, not seen on the network" in directory_db["table"]
    assert "\x1b" not in directory_db["table"]


def test_malformed_build_and_hostile_values(directory_db: dict[str, Any]) -> None:
    """"10.0.19045" is not AD's form: no crash, the release is unknown and the reason is kept. A 10 KB
    operatingSystem is bounded."""
    odd = directory_db["assets"]["odd01.posture.test"]["os"]
    assert odd["product"] == "windows" and odd["cycle"] is None and odd["lifecycle_state"] == "unknown"
    notes = [json.loads(r[0]).get("note") for r in query(directory_db["db"], "SELECT json FROM identity_items "
                                 "WHERE method = 'directory' AND evidence LIKE '%10.0.19045''%'")]  # fmt: skip
    assert notes == ["operatingSystemVersion '10.0.19045' is not a Windows version and build such as "
                     "'10.0 (19045)': the release is unknown"]  # fmt: skip
    huge = directory_db["assets"]["huge01.posture.test"]
    assert len(huge["directory"]["operatingSystem"]) <= 256 and len(huge["os"]["name"]) <= 256


def test_vault_secret_never_leaks(directory_db: dict[str, Any], samba_dc: SambaDC) -> None:
    """The bind password is in no file posture wrote in clear (database, log, vault), no scan option, and
    was never on a command line (it went through stdin)."""
    dc = samba_dc
    secret = dc.password.encode()
    home: Path = directory_db["home"]
    for path in home.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    (options,) = query(directory_db["db"], "SELECT options FROM scans WHERE source = 'ad'")
    assert dc.password not in options[0] and json.loads(options[0])["creds"] == "lab"
    vault = json.loads((home / "config" / "credentials.json").read_text())
    assert vault["credentials"]["lab"]["kind"] == "ldap" and dc.ADMIN not in json.dumps(vault)


def test_referrals_counted_not_followed(directory_db: dict[str, Any]) -> None:
    """Samba answers a subtree search of the domain with referrals to its DNS partitions: counted, never
    followed (the referred host could be outside the scope and would get the password)."""
    assert "not followed" in directory_db["import"].stdout


def test_paged_batches_memory_flat(samba_dc: SambaDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One batch per page of the paged search (page size 3 here), the last one finishing the unit."""
    dc = samba_dc
    env = _env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _add_creds(env, "lab", dc.ADMIN, dc.password)
    source = get_source("ad")
    request = Request([f"ldaps://{dc.address}"], {"creds": "lab", "ca_file": str(dc.ca_file), "page_size": 3})
    batches = [(b, list(b.hosts)) for b in source.collect(request, source_units(source, request), lambda n: None)]
    assert len(batches) >= 5 and all(len(hosts) <= 3 for _, hosts in batches)
    assert [b.unit for b, _ in batches[:-1]] == [None] * (len(batches) - 1)
    assert (batches[-1][0].unit, batches[-1][0].done) == (0, 1)
    assert sum(len(hosts) for _, hosts in batches) == len(COMPUTERS) + 5  # + stale, disabled, odd, huge, the DC


def source_units(source: Any, request: Request) -> list[tuple[int, list[str], int]]:
    return [(seq, targets, count) for seq, (targets, count) in enumerate(source.units(request))]


BAD_INPUT = {
    "wrong password": (["--creds", "wrong"], "refused the bind"),
    "unreachable server": (["--creds", "lab", "--url", "ldaps://127.101.0.2"], "cannot reach"),
    "untrusted certificate": (["--creds", "lab", "--no-ca"], "not trusted"),
    "certificate for another name": (["--creds", "lab", "--url", "ldaps://[::ffff:127.101.0.1]"], "does not name"),
    "missing base DN": (["--creds", "lab", "--base-dn", f"OU=Nowhere,{BASE}"], "does not exist"),
    "plain ldap": (["--creds", "lab", "--url", "ldap://127.101.0.1"], "in clear"),
    "unknown credential": (["--creds", "nobody"], "no LDAP credential"),
    # The server's name is resolved and checked against the scope before the password goes anywhere.
    "server outside the scope": (["--creds", "lab", "--scope", "10.0.0.0/8"], "(127.101.0.1) is outside the scope"),
    "a name resolving outside": (["--creds", "lab", "--scope", "127.101.0.0/16", "--url", "ldaps://localhost"],
                                 "localhost (127.0.0.1"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_one_line_nothing_written(samba_dc: SambaDC, tmp_path: Path, case: str) -> None:
    """Each refusal: one `posture: error:` line, exit 2, and the inventory untouched (here: an existing
    database keeps every row; none is created where there was none)."""
    dc = samba_dc
    env = _env(tmp_path)
    _add_creds(env, "lab", dc.ADMIN, dc.password)
    _add_creds(env, "wrong", dc.ADMIN, "not-the-password")
    args, expected = BAD_INPUT[case]
    url = f"ldaps://{dc.address}"
    if "--url" in args:
        url = args[args.index("--url") + 1]
        args = args[: args.index("--url")]
    ca = [] if "--no-ca" in args else ["--ca-file", str(dc.ca_file)]
    args = [a for a in args if a != "--no-ca"]
    db = tmp_path / "inventory.db"
    run_posture("import", "assets", str(_register(tmp_path)), db=db, env=env)
    before = db_fingerprint(db)
    result = run_posture("import", "ad", url, *args, *ca, db=db, env=env, timeout=90)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posture: error:") and expected in lines[0], result.stderr
    assert db_fingerprint(db) == before
    fresh = tmp_path / "never.db"
    assert run_posture("import", "ad", url, *args, *ca, db=fresh, env=env, timeout=90).returncode == 2
    assert not fresh.exists()


def test_a_server_inside_the_scope_is_read(samba_dc: SambaDC, tmp_path: Path) -> None:
    """--scope, or the config's [scan] scope, holding the DC: the import runs as without one (pinned to the
    address that was checked, the certificate still checked against the URL's name)."""
    dc = samba_dc
    env = _env(tmp_path)
    _add_creds(env, "lab", dc.ADMIN, dc.password)
    config = tmp_path / "config.toml"
    config.write_text('[scan]\nscope = ["127.101.0.0/24"]\n', encoding="utf-8")
    result = run_posture("--config", str(config), "import", "ad", f"ldaps://{dc.address}", "--creds", "lab",
                         "--ca-file", str(dc.ca_file), db=tmp_path / "i.db", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{len(COMPUTERS) + 5} computer objects" in result.stdout
    config.write_text('[scan]\nscope = ["192.168.0.0/16"]\n', encoding="utf-8")
    refused = run_posture("--config", str(config), "import", "ad", f"ldaps://{dc.address}", "--creds", "lab",
                          "--ca-file", str(dc.ca_file), db=tmp_path / "i.db", env=env)  # fmt: skip
    assert refused.returncode == 2 and "outside the scope (192.168.0.0/16)" in refused.stderr, refused.stderr


def _register(tmp_path: Path) -> Path:
    path = tmp_path / "register.csv"
    path.write_text("hostname,owner\nsomething.example,Someone\n")
    return path


@pytest.mark.parametrize("transport", [["--starttls"], ["--insecure-ldap"]])
def test_ldap_with_starttls_or_knowingly_plain(samba_dc: SambaDC, tmp_path: Path, transport: list[str]) -> None:
    """ldap:// works with StartTLS (certificate verified) and, knowingly, with --insecure-ldap."""
    dc = samba_dc
    env = _env(tmp_path)
    _add_creds(env, "lab", dc.ADMIN, dc.password)
    result = run_posture("import", "ad", f"ldap://{dc.address}", "--creds", "lab", "--ca-file", str(dc.ca_file),
                         *transport, db=tmp_path / "i.db", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{len(COMPUTERS) + 5} computer objects" in result.stdout


# ---- no directory needed ---------------------------------------------------------------------------------


def test_identify_directory_table() -> None:
    """Name and build together; LTSB, IoT LTSC, SAC Server (no year in its name), a build the catalogue
    lacks, a service pack it lacks, a non-Windows object."""
    cat = default_catalogue()
    cases = {
        ("Windows 10 Enterprise 2016 LTSB", "10.0 (14393)", None): ("windows", ("10-1607-e-lts",)),
        ("Windows 10 IoT Enterprise LTSC", "10.0 (19044)", None): ("windows", ("10-21h2-iot-lts",)),
        ("Windows 11 Pro", "10.0 (26100)", None): ("windows", ("11-24h2-w",)),
        ("Windows Server 2019 Datacenter", "10.0 (17763)", None): ("windows-server", ("2019",)),
        ("Windows Server Datacenter", "10.0 (17763)", None): ("windows-server", ("1809-sac",)),
        ("Windows 10 Pro", "10.0 (99999)", None): ("windows", ()),
        ("Windows XP Professional", "5.1 (2600)", "Service Pack 2"): ("windows", ("5-sp2",)),  # dated since
        ("Windows XP Professional", "5.1 (2600)", "Service Pack 3"): ("windows", ("5-sp3",)),  # stop 15
        ("Windows XP Professional", "5.1 (2600)", "Service Pack 4"): ("windows", ()),  # no such pack: a note
    }
    for said, (product, cycles) in cases.items():
        found = identify_directory(*said, cat)
        assert found is not None and (found.product, found.cycles) == (product, cycles), said
        assert (found.note is None) == bool(cycles)
    assert identify_directory("Samba", "4.17.12-Debian", None, cat) is None


def test_hostile_attribute_values() -> None:
    """NUL bytes, invalid UTF-8 and 10 KB values are cleaned and bounded; a hostname must be a DNS name;
    FILETIME "never" and nonsense are no date."""
    assert _text([b"Windows\x00 XP"]) == "Windows XP"
    assert _text([b"\xff\xfe"]) == "\ufffd\ufffd"
    assert len(_text([b"A" * 20_000]) or "") == 256
    assert _hostname("WS01.Corp.Example") == "ws01.corp.example"
    assert _hostname("evil\x1b[31m.example") is None and _hostname("a" * 300) is None
    assert _filetime([b"0"]) is None and _filetime([b"9223372036854775807"]) is None
    assert _filetime([b"99999999999999999999999"]) is None and _filetime([b"-5"]) is None
    assert _filetime([b"133000000000000000"]) == "2022-06-18T04:26:40Z"
    assert ou_lookup("OU=Desk, OU=Annex,DC=x", {"ou=annex,dc=x": "Annex", "DC=x": "HQ"}) == "Annex"


@pytest.mark.parametrize("url", ["http://dc", "ldaps://", "ldaps://u:p@dc", "ldaps://dc/x?y", "ldaps://dc:99999"])
def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(Exception, match="not an LDAP URL"):
        parse_url(url)


@pytest.mark.parametrize(("table", "fine"), [
    ('[directory]\nstale_days = 90\nou_sites = { "OU=Annex,DC=corp,DC=example" = "Annex" }\n', True),
    ("[directory]\nstale_days = 0\n", False),
    ('[directory]\nou_sites = { "not a dn" = "X" }\n', False),
    ('[directory]\nou_services = { "OU=A,DC=b" = 5 }\n', False),
    ("[directory]\nfollow_referrals = true\n", False),
])  # fmt: skip
def test_config_check_directory_table(tmp_path: Path, table: str, fine: bool) -> None:
    config = tmp_path / "config.toml"
    config.write_text(table)
    result = run_posture("--config", str(config), "config", "check")
    assert (result.returncode == 0) == fine, result.stderr
    if not fine:
        assert result.returncode == 2 and result.stderr.startswith("posture: error:")
        assert f"{config}:" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_creds_list_and_no_secret_in_argv(tmp_path: Path) -> None:
    """`creds add ldap` reads the bind name and password from stdin; `creds list` names it, shows neither."""
    env = _env(tmp_path)
    _add_creds(env, "corp", "CN=svc-posture,OU=Service,DC=corp,DC=example", "S3cret!pass")
    listed = run_posture("creds", "list", env=env)
    assert listed.returncode == 0 and "corp\tldap" in listed.stdout
    assert "S3cret" not in listed.stdout and "svc-posture" not in listed.stdout
    raw = (tmp_path / "config" / "credentials.json").read_bytes()
    assert b"S3cret" not in raw and b"svc-posture" not in raw
    assert (tmp_path / "config" / "credentials.json").stat().st_mode & 0o077 == 0


def test_scan_job_reads_the_directory(samba_dc: SambaDC, tmp_path: Path) -> None:
    """A scan job with `methods = ["ad"]` and its [jobs.NAME.ad] table runs the same import (then the rules)."""
    dc = samba_dc
    env = _env(tmp_path)
    _add_creds(env, "lab", dc.ADMIN, dc.password)
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.directory]\nmethods = ["ad"]\n[jobs.directory.ad]\nurl = "ldaps://{dc.address}"\n'
                      f'creds = "lab"\nca_file = "{dc.ca_file}"\nstale_days = 90\n'
                      f'ou_sites = {{ "{ANNEX}" = "Annex" }}\n')  # fmt: skip
    db = tmp_path / "i.db"
    assert run_posture("--config", str(config), "config", "check", env=env).returncode == 0
    result = run_posture("--config", str(config), "run", "directory", db=db, env=env)
    assert result.returncode == 0, result.stderr
    assert query(db, "SELECT count(*) FROM observations WHERE source = 'ad'") == [(len(COMPUTERS) + 5,)]
    sites = [a["site"] for a in assets_json(db) if "srv12.posture.test" in a["hostnames"]]
    assert sites == ["Annex"]
    # The job's scope binds its directory server as it binds its targets.
    config.write_text(config.read_text(encoding="utf-8").replace("[jobs.directory]\n",
                                                                 '[jobs.directory]\nscope = ["10.0.0.0/8"]\n'),
                      encoding="utf-8")  # fmt: skip
    refused = run_posture("--config", str(config), "run", "directory", db=db, env=env)
    assert refused.returncode == 2 and "is outside the scope (10.0.0.0/8)" in refused.stderr, refused.stderr


@pytest.mark.parametrize(("table", "words"), [
    ('url = "ldaps://dc"\n', "needs url and creds"),
    ('url = "ldaps://dc"\ncreds = "x"\nfollow = true\n', "unknown key 'follow'"),
    ('url = "ldap://dc"\ncreds = "x"\n', "in clear"),
    ('url = "ldaps://dc"\ncreds = "x"\nstale_days = -1\n', "stale_days"),
])  # fmt: skip
def test_scan_job_ad_table_checked(tmp_path: Path, table: str, words: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.directory]\nmethods = ["ad"]\n[jobs.directory.ad]\n{table}')
    result = run_posture("--config", str(config), "config", "check")
    assert result.returncode == 2 and words in result.stderr, result.stderr


def _sighting(name: str) -> Any:
    from scanner.model import HostObservation
    from scanner.store import prepare_host

    return prepare_host(HostObservation("directory", (), (name,), directory={"name": name.split(".")[0]}))


def test_short_name_merge_is_careful(tmp_path: Path) -> None:
    """By short name only when the DNS name matched nothing, only one asset has it, that asset has no DNS name
    from the directory already (PC01 of a second domain is another machine), and never on localhost."""
    from scanner.model import HostObservation
    from scanner.store import Ingest, Store

    with Store.open(tmp_path / "i.db") as store:
        scan = store.start_scan("test", "nmap")
        with store.transaction() as conn, Ingest(conn, scan, "nmap") as ingest:
            for address, name in (("10.0.0.1", "pc01.branch.example"), ("10.0.0.2", "localhost"),
                                  ("10.0.0.3", "twin.a.example"), ("10.0.0.4", "twin.b.example"),
                                  ("10.0.0.5", "pc02-old.branch.example"), ("10.0.0.6", "pc03")):  # fmt: skip
                ingest.add(HostObservation("up", (("ipv4", address),), (name,)))
        with store.transaction() as conn, Ingest(conn, scan, "ad") as ingest:
            merged = []
            for name in ("pc01.dom1.example", "pc01.dom2.example", "localhost.dom1.example", "twin.dom1.example",
                         "pc02.dom1.example", "pc03.dom1.example"):  # fmt: skip
                ingest.add_prepared(_sighting(name))
                merged.append(ingest.last_asset_id)
        assert merged[0] == 1  # PC01 of dom1: the scanned pc01.branch.example
        assert merged[1] not in (1, merged[0])  # PC01 of dom2: a machine of its own
        assert merged[2] != 2 and merged[3] not in (3, 4)  # never localhost; twin is ambiguous
        assert merged[4] != 5 and merged[5] == 6  # pc02-old is not pc02; a bare "pc03" is pc03


def test_short_name_lookup_is_one_index_range(tmp_path: Path) -> None:
    """The short-name lookup reads one range of the (kind, value) index, not every hostname: written with an
    OR around the range, SQLite scanned them all for each computer object and a 50,000-object import took
    20x ldapsearch's time (bench/run.py ad)."""
    from scanner.store import _BY_SHORT_NAME, Store

    with Store.open(tmp_path / "i.db") as store:
        plan = " ".join(str(row[-1]) for row in store.conn.execute(f"EXPLAIN QUERY PLAN {_BY_SHORT_NAME}",
                                                                   ("pc01", "pc01/", "pc01", "pc01.")))  # fmt: skip
    assert "USING INDEX asset_identifiers_value (kind=? AND value>? AND value<?)" in plan, plan
