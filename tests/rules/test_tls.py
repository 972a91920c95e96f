"""TLS certificates and protocols (issue 14, item 3): nmap's ssl-cert and ssl-enum-ciphers output, read from the
inventory and judged by the protect.tls-* rules and the grading table rules/data/tls_grading.toml.

The fast tests read the XML a real nmap 7.93 wrote against a real nginx serving certificates made with the real
openssl (tests/scanner/data/tls-certificates.xml and tls-ciphers.xml; tests/rules/tls_lab.py made them, the README
there says when). The lab tests at the end run the same lab now: openssl, nginx on 127.103.0.x:443 and nmap.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from rules.tls import CERTIFICATE_RULES, GRADING_FILE, GradingError, certificate, grade, grading, parse_grading
from scanner.compat import UTC
from scanner.nmap_xml import MAX_SCRIPT_LINES, NmapXmlReader
from tests.conftest import new_store, run_posture
from tests.rules import tls_lab

DATA = Path(__file__).parents[1] / "scanner" / "data"
CERTS_XML = DATA / "tls-certificates.xml"
CIPHERS_XML = DATA / "tls-ciphers.xml"
MADE_ON = "2026-12-07"  # the day the fixtures were written: the "expiring" certificate ends ten days later
NMAP_CIPHERS_NSE = Path("/usr/share/nmap/scripts/ssl-enum-ciphers.nse")

# What each lab site must raise (and nothing else of protect.tls-*): the certificate sites, then the cipher sites.
EXPECTED = {
    "127.103.0.1": set(),  # good: signed by the test CA, a year, RSA 2048, SHA-256
    "127.103.0.2": {"protect.tls-certificate-expired"},
    "127.103.0.3": {"protect.tls-certificate-expiring"},
    "127.103.0.4": {"protect.tls-certificate-weak-signature"},
    "127.103.0.5": {"protect.tls-certificate-weak-key"},
    "127.103.0.6": {"protect.tls-certificate-self-signed"},
    "127.103.0.7": set(),  # valid from 1960 to 9999: absurd, but not expired
    "127.103.0.8": {"protect.tls-certificate-self-signed"},  # hostile subject
    "127.103.0.9": {"protect.tls-certificate-expired", "protect.tls-certificate-weak-key",
                    "protect.tls-certificate-weak-signature"},
    "127.103.0.20": {"protect.tls-insecure"},  # TLS 1.0/1.1, NULL and anonymous suites: one finding, worst level
    "127.103.0.21": set(),  # TLS 1.2+ with ECDHE and AEAD only
}


def _evaluate(db: Path | str, *xmls: Path, on: str | None = MADE_ON,
              config: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """`posture import nmap` each file, `posture evaluate`, then the open findings as JSON."""
    before = ("--config", str(config)) if config else ()
    for xml in xmls:
        result = run_posture(*before, "import", "nmap", str(xml), db=db)
        assert result.returncode == 0, result.stderr
    result = run_posture(*before, "evaluate", *(("--on", on) if on else ()), db=db)
    assert result.returncode == 0, result.stderr
    result = run_posture(*before, "findings", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def _tls_by_address(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for f in rows:
        if f["rule_id"].startswith("protect.tls-"):
            found[f["address"]].add(f["rule_id"])
    return found


def _assert_expected(rows: list[dict[str, Any]], addresses: list[str]) -> None:
    found = _tls_by_address(rows)
    for address in addresses:
        assert found.get(address, set()) == EXPECTED[address], address


def test_certificate_rules_fire_on_real_nmap_output(store_db: Path | str) -> None:
    """Expired, expiring within 30 days, SHA-1, RSA 1024 and self-signed each raise their own finding, and only
    theirs; the good certificate and the 1960-9999 one raise none. The evidence names the certificate, its expiry,
    key and signature, and the port."""
    rows = _evaluate(store_db, CERTS_XML)
    _assert_expected(rows, [a for a in EXPECTED if a.startswith("127.103.0.") and int(a.rsplit(".", 1)[1]) < 10])
    single = [f for f in rows if f["rule_id"].startswith("protect.tls-") and f["address"] != "127.103.0.9"]
    by_rule = {f["rule_id"]: f for f in single}
    expired = by_rule["protect.tls-certificate-expired"]["evidence"]
    assert expired.startswith("443/tcp https: certificate CN=expired.posture.test")
    assert "expired 2021-01-01" in expired and "key rsa 2048" in expired and "issuer CN=Posture Test CA" in expired
    assert "expires 2026-12-17" in by_rule["protect.tls-certificate-expiring"]["evidence"]
    assert "key rsa 1024" in by_rule["protect.tls-certificate-weak-key"]["evidence"]
    assert "signature sha1WithRSAEncryption" in by_rule["protect.tls-certificate-weak-signature"]["evidence"]
    assert by_rule["protect.tls-certificate-expired"]["tls"]["cert_days_left"] < 0


def test_the_plan_replaces_each_certificate_once(store_db: Path | str) -> None:
    """A certificate with three problems (expired, SHA-1, RSA 1024) is one piece of work, filed under its worst
    problem: every certificate finding is in exactly one action, and each action counts hosts once."""
    db = store_db
    rows = _evaluate(db, CERTS_XML)
    result = run_posture("plan", "remediation", "--format", "json", "--on", MADE_ON, db=db)
    assert result.returncode == 0, result.stderr
    actions = [a for a in json.loads(result.stdout) if a["rule_id"] in CERTIFICATE_RULES]
    expired = next(a for a in actions if a["rule_id"] == "protect.tls-certificate-expired")
    assert expired["action"] == ("Renew the expired TLS certificates: 2 on 2 hosts (also fixes: RSA key below 2048 "
                                 "bits, SHA-1/MD5 signature)")  # fmt: skip
    assert expired["assets"] == 2 and expired["severity"] == "high" and expired["effort_hours"] == 2.0
    weak_key = next(a for a in actions if a["rule_id"] == "protect.tls-certificate-weak-key")
    assert weak_key["assets"] == 1 and weak_key["action"].endswith(": 1 on 1 host")
    planned = [f for a in actions for f in a["findings"]]
    assert sorted(planned) == sorted(f["id"] for f in rows if f["rule_id"] in CERTIFICATE_RULES)
    assert len(planned) == len(set(planned))


def test_absurd_dates_are_read_not_trusted() -> None:
    """Year 9999 and 1960 are real dates (a certificate valid until 9999 is not expired); text that is not a
    date, month 13 or year 0 is unknown: no expiry finding either way, and the evidence shows what was sent."""
    today = date(2026, 12, 7)
    absurd = certificate({"validity.notBefore": "1960-01-01T00:00:00", "validity.notAfter": "9999-12-31T23:59:59"},
                         today)  # fmt: skip
    assert absurd["cert_not_before"] == "1960-01-01" and absurd["cert_days_left"] == (date(9999, 12, 31) - today).days
    for said in ("Can't parse; string is \"20501301\"", "2026-13-01T00:00:00", "0000-01-01T00:00:00", "", "x" * 5000):
        facts = certificate({"validity.notAfter": said, "pubkey.bits": "9" * 5000}, today)
        assert facts["cert_days_left"] is None and facts["cert_key_bits"] is None
        assert facts["cert_not_after"] in (None, f"unreadable: {said[:40]}")


def test_huge_names_are_bounded_and_self_signed_is_issuer_equals_subject() -> None:
    facts = certificate({"subject.commonName": "a" * 300, "issuer.commonName": "a" * 300}, date(2026, 12, 7))
    assert len(facts["cert_cn"]) == 200 and len(facts["cert_subject"]) == 200 and facts["cert_self_signed"]
    assert not certificate({}, date(2026, 12, 7))["cert_self_signed"]  # no subject at all is not self-signed


def test_expiry_warning_days_comes_from_the_config(request: pytest.FixtureRequest, store_kind: str,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """`[tls] expiry_warning_days`: the certificate ending in ten days is flagged at 10 and 30 days, not at 5;
    bad values are refused by `posture config check` in one line."""
    config = tmp_path / "posture.toml"
    for days, fires in ((5, False), (10, True)):
        config.write_text(f"[tls]\nexpiry_warning_days = {days}\n")
        (tmp_path / str(days)).mkdir()
        rows = _evaluate(new_store(request, store_kind, tmp_path / str(days)), CERTS_XML, config=config)
        assert ("protect.tls-certificate-expiring" in _tls_by_address(rows).get("127.103.0.3", set())) == fires
    for bad, message in (("expiry_warning_days = 0", "[tls] expiry_warning_days must be a whole number from 1"),
                         ('expiry_warning_days = "30"', "[tls] expiry_warning_days must be a whole number from 1"),
                         ("warn_days = 30", "unknown key(s) in [tls]: warn_days")):  # fmt: skip
        config.write_text(f"[tls]\n{bad}\n")
        result = run_posture("--config", str(config), "config", "check")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2
    config.write_text("[tls]\nexpiry_warning_days = 45\n")
    assert run_posture("--config", str(config), "config", "check").returncode == 0


def test_hostile_subject_is_terminal_safe_and_escaped_in_html(store_db: Path | str, tmp_path: Path) -> None:
    """A subject with markup, escape sequences and a right-to-left override: the CLI shows no control character
    and the HTML report shows the markup as text. nmap writes control bytes as `\\x1B` text; this copy of its
    file puts a real U+202E and a real tab back (XML allows both) to check posture's own defences too."""
    hostile = tmp_path / "hostile.xml"
    hostile.write_text(CERTS_XML.read_text(encoding="utf-8").replace("\\xE2\\x80\\xAE", "\u202e\t"), encoding="utf-8")
    db = store_db
    rows = _evaluate(db, hostile)
    (finding,) = [f for f in rows if f["address"] == "127.103.0.8" and f["rule_id"].startswith("protect.tls-")]
    assert "<img src=x onerror=alert(1)>" in finding["evidence"]  # kept as the server sent it, in the JSON
    table = run_posture("findings", "--rule", "protect.tls-certificate-self-signed", db=db)
    assert table.returncode == 0, table.stderr
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", table.stdout)
    report = tmp_path / "report.html"
    result = run_posture("report", "--html", str(report), db=db)
    assert result.returncode == 0, result.stderr
    html = report.read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert "\u202e" not in html


def test_ciphers_are_graded_one_finding_per_service_worst_first(store_db: Path | str) -> None:
    """The nginx with TLS 1.0 (and NULL, anonymous and RSA-key-exchange suites) gets one protect.tls-insecure
    finding whose evidence lists every problem, worst first; the TLS 1.2+ ECDHE-only nginx gets none."""
    rows = _evaluate(store_db, CIPHERS_XML)
    _assert_expected(rows, ["127.103.0.20", "127.103.0.21"])
    (legacy,) = [f for f in rows if f["rule_id"] == "protect.tls-insecure"]
    evidence = legacy["evidence"]
    assert evidence.startswith("443/tcp https: TLSv1.0, TLSv1.1, TLSv1.2 offered: NULL cipher suites")
    order = [evidence.index(x) for x in ("NULL cipher", "anonymous key exchange", "TLS 1.0 offered", "TLS 1.1 offered",
                                         "without forward secrecy")]  # fmt: skip
    assert order == sorted(order)
    assert legacy["tls"]["tls_grade"] == "insecure"


def _nmap_documented_lines() -> list[str]:
    """ssl-enum-ciphers' own @output example (RC4 and 3DES, which this machine's OpenSSL 3 cannot serve) as the
    stored lines nmap's XML would give: "TLSv1.0.ciphers.name: TLS_RSA_WITH_RC4_128_SHA"."""
    if not NMAP_CIPHERS_NSE.exists():
        pytest.skip("nmap's ssl-enum-ciphers.nse is not installed")
    text = NMAP_CIPHERS_NSE.read_text(encoding="utf-8")
    block = text[text.index("-- @output"): text.index("-- @xmloutput")]
    lines, protocol = [], ""
    for line in block.splitlines():
        if m := re.match(r"^-- \|\s+(TLSv1\.[0-3]|SSLv3):", line):
            protocol = m[1]
        elif (m := re.match(r"^-- \|\s+(TLS_[A-Z0-9_]+) \(", line)) and protocol:
            lines.append(f"{protocol}.ciphers.name: {m[1]}")
    return lines


def test_grading_of_nmap_documented_output() -> None:
    """RC4 is insecure and 3DES deprecated: the grade is insecure, RC4 listed before 3DES and TLS 1.0."""
    lines = _nmap_documented_lines()
    assert "TLSv1.0.ciphers.name: TLS_RSA_WITH_RC4_128_MD5" in lines
    graded = grade(lines, grading())
    assert graded["tls_grade"] == "insecure" and graded["tls_protocols"] == ["TLSv1.0", "TLSv1.2"]
    problems = graded["tls_problems"]
    assert problems[0].startswith("RC4 cipher suites (TLS_ECDHE_ECDSA_WITH_RC4_128_SHA")
    assert [p.split(" (")[0] for p in problems[1:]] == ["TLS 1.0 offered", "3DES cipher suites",
                                                         "key exchange without forward secrecy"]  # fmt: skip
    tls13 = grade(["TLSv1.3.ciphers.name: TLS_AKE_WITH_AES_128_GCM_SHA256"], grading())
    assert tls13 == {"tls_grade": "recommended", "tls_protocols": ["TLSv1.3"], "tls_problems": []}
    assert grade(["SSLv3.ciphers.name: TLS_RSA_EXPORT_WITH_RC4_40_MD5"], grading())["tls_problems"][:3] == [
        "SSL 3.0 offered", "export-grade cipher suites (TLS_RSA_EXPORT_WITH_RC4_40_MD5)",
        "RC4 cipher suites (TLS_RSA_EXPORT_WITH_RC4_40_MD5)"]  # fmt: skip


def test_the_grading_table_is_data_with_its_source_and_is_checked() -> None:
    """Every entry has a level and a problem; a bad level, a pattern that could backtrack without end or a
    missing source stops `posture rules lint` (and evaluation) with the entry named."""
    table = grading()
    assert table.source["url"] == "https://www.ncsc.gov.uk/guidance/using-tls-to-protect-data"
    assert {"SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"} == set(table.protocols)
    assert {c.id for c in table.ciphers} >= {"null", "anonymous", "export", "rc4", "3des", "no-forward-secrecy"}
    text = GRADING_FILE.read_text(encoding="utf-8")
    for broken, message in ((text.replace('level = "deprecated"', 'level = "meh"', 1), "level 'meh'"),
                            (text.replace('pattern = "_RC4_"', 'pattern = "(_+)+RC4"'), "bad pattern"),
                            (text.replace("[source]", "[origin]"), "needs exactly"),
                            (text.replace('problem = "TLS 1.0 offered"\n', ""), "needs its problem")):  # fmt: skip
        with pytest.raises(GradingError, match=re.escape(message)):
            parse_grading(broken, "tls_grading.toml")
    result = run_posture("rules", "lint")
    assert result.returncode == 0 and "TLS grading table: 6 protocols, 7 cipher checks" in result.stdout


def test_script_output_is_kept_whole_where_it_is_read() -> None:
    """ssl-enum-ciphers keeps every cipher line (beyond the usual line budget); ssl-cert keeps its subject,
    key, signature and validity but not its PEM, modulus or extensions."""
    with CIPHERS_XML.open("rb") as fh:
        reader = NmapXmlReader(fh)
        hosts = list(reader)
    assert not reader.dropped
    scripts = {s.id: s for h in hosts for svc in h.services for s in svc.scripts if h.addresses[0][1].endswith(".20")}
    assert len(scripts["ssl-enum-ciphers"].data) > MAX_SCRIPT_LINES
    assert scripts["ssl-enum-ciphers"].data[-1] == "least strength: F"
    kept = {line.split(": ", 1)[0] for line in scripts["ssl-cert"].data}
    assert {"pubkey.type", "pubkey.bits", "sig_algo", "validity.notAfter", "subject.commonName"} <= kept
    assert not kept & {"pem", "pubkey.modulus", "md5"} and not any(k.startswith("extensions") for k in kept)


# The lab: real openssl, real nginx on 127.103.0.x, real nmap (tests/rules/tls_lab.py).


@pytest.fixture(scope="module")
def lab_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One nmap run (ssl-cert and ssl-enum-ciphers) against every lab site, as issue 14 describes it."""
    root = tmp_path_factory.mktemp("tls-lab")
    sites = tls_lab.certificate_sites(datetime.now(UTC)) + tls_lab.cipher_sites()
    return tls_lab.run(root, sites, "ssl-cert,ssl-enum-ciphers", root / "out.xml", datetime.now(UTC))


def test_lab_real_nginx_certificates_and_ciphers(store_db: Path | str, lab_xml: Path) -> None:
    """Every site raises exactly its findings when judged today (the certificates were made now): the
    certificate sites serve TLS 1.2+ with ECDHE suites, so only their certificates are at fault."""
    rows = _evaluate(store_db, lab_xml, on=None)
    _assert_expected(rows, list(EXPECTED))
    graded = {f["address"]: f["tls"] for f in rows if f["rule_id"].startswith("protect.tls-")}
    assert graded["127.103.0.2"]["tls_grade"] == "recommended"  # its protocols were graded too, and are fine


def test_the_report_lists_each_certificate_problem_once(store_db: Path | str, tmp_path: Path) -> None:
    """The report's Certificates section: one row per certificate with a problem (host, port, CN, issuer, expiry,
    key, signature, its problems worst first), the good and the 1960-9999 certificates not among them; the TLS
    protocol problems below it."""
    db = store_db
    _evaluate(db, CERTS_XML, CIPHERS_XML)
    report = tmp_path / "report.html"
    assert run_posture("report", "--html", str(report), "--on", MADE_ON, db=db).returncode == 0
    html = report.read_text(encoding="utf-8")
    section = html[html.index('<section aria-labelledby="certificates">'):]
    section = section[: section.index("</section>")]
    assert "in the latest scans: 11; with an open problem: 7, worst first" in section
    rows = re.findall(r"<tr><td data-label=\"service\".*?</tr>", section)
    assert len(rows) == 7 + 1  # seven certificates, one TLS service
    oldest = next(r for r in rows if "oldest.posture.test" in r)
    for shown in ("127.103.0.9<br>443/tcp", "Posture Test CA", "2018-01-01", "rsa 1024<br>sha1WithRSAEncryption",
                  "expired; RSA key below 2048 bits; SHA-1/MD5 signature"):  # fmt: skip
        assert shown in oldest
    assert rows[0].count("expired") and "expires soon" in rows[6]  # worst first
    assert "good.posture.test" not in section and "absurd.posture.test" not in section
    assert "insecure" in rows[7] and "TLS 1.0 offered" in rows[7] and "modern.posture.test" not in section


@pytest.mark.parametrize(("service", "category", "fires"), [
    ({"name": "https", "port": 443}, "servers", True),
    ({"name": "http", "tunnel": "ssl", "port": 8080}, "unknown", True),
    ({"name": "imaps", "port": 993}, "end-user", True),
    ({"name": "https", "port": 443}, "network", False),  # a switch's management page: the vendor's default
    ({"name": "https", "port": 443}, "ot-iot", False),  # a printer's or a UPS card's
    ({"name": "ms-wbt-server", "port": 3389}, "servers", False),  # RDP's own certificate: not a service users browse
])  # fmt: skip
def test_self_signed_counts_only_where_users_reach(service: dict[str, Any], category: str, fires: bool) -> None:
    """How protect.tls-certificate-self-signed decides "a service users reach": a web, mail or directory TLS port
    on an asset that is not a network or OT/IoT device."""
    from rules.engine import load_rules

    (rule,) = [r for r in load_rules() if r.id == "protect.tls-certificate-self-signed"]
    subject = {"protocol": "tcp", "cert_self_signed": True, **service}
    assert rule.matches(subject, {"category": category}) == fires
    assert not rule.matches({**subject, "cert_self_signed": False}, {"category": category})


def test_hostile_script_output_stays_bounded(store_db: Path | str, tmp_path: Path) -> None:
    """A certificate with 200 extensions still shows its signature and validity (the extensions are not kept);
    an ssl-enum-ciphers answer of 1,500 suites is cut at its line budget, and both import without a crash. (nmap
    tries only the suites it knows, under 2,000 tables on every protocol; more is a forged file, whose tables
    past the node budget are dropped with a warning.)"""
    extensions = "".join(f'<table><elem key="name">X{n}</elem><elem key="value">{"v" * 300}</elem></table>'
                         for n in range(200))  # fmt: skip
    suites = "".join(f'<table><elem key="name">TLS_RSA_WITH_NULL_{n}</elem></table>' for n in range(1500))
    xml = tmp_path / "hostile.xml"
    xml.write_text(
        '<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap" start="1796618804" version="7.93"><host>'
        '<status state="up"/><address addr="127.103.9.9" addrtype="ipv4"/><ports><port protocol="tcp" portid="443">'
        '<state state="open"/><service name="https"/><script id="ssl-cert" output="x">'
        '<table key="subject"><elem key="commonName">many</elem></table><table key="pubkey"><elem key="type">rsa'
        f'</elem><elem key="bits">1024</elem></table><table key="extensions">{extensions}</table>'
        '<elem key="sig_algo">md5WithRSAEncryption</elem><table key="validity"><elem key="notAfter">2020-01-01T00:00:00'
        '</elem></table></script><script id="ssl-enum-ciphers" output="y"><table key="TLSv1.0"><table key="ciphers">'
        f"{suites}</table></table></script></port></ports></host></nmaprun>"
    )
    with xml.open("rb") as fh:
        reader = NmapXmlReader(fh)
        (host,) = list(reader)
    assert not reader.dropped
    scripts = {s.id: s for s in host.services[0].scripts}
    assert "sig_algo: md5WithRSAEncryption" in scripts["ssl-cert"].data
    assert len(scripts["ssl-enum-ciphers"].data) == 1024
    rows = _evaluate(store_db, xml)
    assert _tls_by_address(rows)["127.103.9.9"] == {
        "protect.tls-certificate-expired", "protect.tls-certificate-weak-key", "protect.tls-certificate-weak-signature",
        "protect.tls-insecure"}  # fmt: skip
    forged = tmp_path / "forged.xml"
    forged.write_text(xml.read_text().replace(suites, suites * 4))
    with forged.open("rb") as fh:
        reader = NmapXmlReader(fh)
        assert len(list(reader)) == 1
    assert reader.dropped["script <table>s over 4096 in one script"] > 0
