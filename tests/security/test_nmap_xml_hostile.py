"""Hostile nmap XML (issue 11): numbers past 2^63, addresses that are not addresses, shapes that made memory
grow with the file. Real files written here, the real `posture import nmap` (with its forked reader), the
peak memory of the real processes."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.gen_nmap_xml import write as write_realistic
from scanner.nmap_xml import NmapXmlError, NmapXmlReader
from scanner.store import prepare_host
from tests.conftest import query, run_posture
from tests.security.measure import run_measured

HEADER = '<?xml version="1.0"?>\n<nmaprun scanner="nmap" args="nmap -oX x.xml" start="1763900000" version="7.93">\n'
FOOTER = '<runstats><finished time="1763900100" exit="success"/></runstats></nmaprun>\n'
HUGE = str(2**64)


def test_numbers_past_2_63_and_addresses_that_are_not(tmp_path: Path, store_db: Path | str) -> None:
    """Low, nmap XML: "`portid`, `conf` or `accuracy` above 2^63 (OverflowError; scan row left `running`);
    non-IP address strings and port -5 accepted". Out-of-range ports and non-addresses are dropped with a
    warning, out-of-range conf/accuracy/uptime are not stored, and the import completes."""
    xml = tmp_path / "hostile.xml"
    xml.write_text(
        HEADER + f'<host starttime="{HUGE}" endtime="1763900001"><status state="up"/>'
        '<address addr="not-an-ip" addrtype="ipv4"/><address addr="10.9.9.9" addrtype="ipv4"/>'
        '<address addr="10.9.9.10" addrtype="ipv6"/><address addr="52:54:00:zz:00:01" addrtype="mac"/><ports>'
        f'<port protocol="tcp" portid="{HUGE}"><state state="open"/><service name="ssh"/></port>'
        '<port protocol="tcp" portid="-5"><state state="open"/><service name="ssh"/></port>'
        '<port protocol="tcp" portid="70000"><state state="open"/></port>'
        f'<port protocol="tcp" portid="22"><state state="open"/><service name="ssh" product="OpenSSH" conf="{HUGE}"/>'
        f'</port></ports><os><osmatch name="Linux 5.X" accuracy="{HUGE}"><osclass vendor="Linux" osfamily="Linux"/>'
        f'</osmatch></os><uptime seconds="{HUGE}"/></host>\n' + FOOTER,
        encoding="utf-8",
    )
    db = store_db
    result = run_posture("import", "nmap", str(xml), db=db)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for warning in ("3 ports numbered outside 0-65535", "1 ipv4 addresses that are not valid",
                    "1 ipv6 addresses that are not valid", "1 mac addresses that are not valid"):  # fmt: skip
        assert f"posture: warning: hostile.xml: dropped {warning}" in result.stderr, result.stderr
    assert query(db, "SELECT status FROM scans") == [("complete",)]
    assert query(db, "SELECT port, confidence FROM services") == [(22, None)]
    assert query(db, "SELECT kind, value FROM asset_identifiers WHERE kind != 'hostname'") == [("ipv4", "10.9.9.9")]
    assert query(db, "SELECT accuracy FROM software WHERE kind = 'os'") == [(0,)]
    [(evidence,)] = query(db, "SELECT evidence FROM observations")
    assert json.loads(evidence)["uptime_seconds"] is None


def test_deep_or_nested_hosts_are_one_line_refusals(tmp_path: Path, store_db: Path | str) -> None:
    """Every parser bounds depth (issue 11, Build): 100,000 nested elements, or a <host> inside a <host>,
    are a one-line refusal (exit 2) with the scan row closed as failed, never `running`."""
    deep = tmp_path / "deep.xml"
    deep.write_text(HEADER + "<a>" * 100_000 + "</a>" * 100_000 + FOOTER, encoding="utf-8")
    nested = tmp_path / "nested.xml"
    nested.write_text(HEADER + '<host><status state="up"/><host></host></host>' + FOOTER, encoding="utf-8")
    db = store_db
    for path, words in ((deep, "elements nested over 256 deep"), (nested, "a <host> inside a <host>")):
        result = run_posture("import", "nmap", str(path), db=db)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert query(db, "SELECT status FROM scans") == [("failed",), ("failed",)]


def test_memory_is_flat_whatever_the_nesting(store_db: Path | str, tmp_path: Path) -> None:
    """Low, "Memory not flat for some XML shapes: 200k hosts wrapped in one extra element 728 MB (56 MB
    unwrapped); 300k ports on one host 559 MB". Both imports stay under 200 MB; ports past 2 x 65,536 on one
    host are dropped with a warning."""
    wrapped = tmp_path / "wrapped.xml"
    with wrapped.open("w", encoding="utf-8") as f:
        f.write(HEADER + "<wrapper>\n")
        for i in range(200_000):  # one in a thousand up, so the import is quick and the parse is the whole file
            f.write(f'<host><status state="{"up" if i % 1000 == 0 else "down"}"/>'
                    f'<address addr="10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" addrtype="ipv4"/>'
                    f'<hostnames><hostname name="h{i}.council.example" type="PTR"/></hostnames><ports>'
                    '<port protocol="tcp" portid="22"><state state="closed"/></port></ports></host>\n')  # fmt: skip
        f.write("</wrapper>\n" + FOOTER)
    ports = tmp_path / "ports.xml"
    with ports.open("w", encoding="utf-8") as f:
        f.write(HEADER + '<host><status state="up"/><address addr="10.0.0.1" addrtype="ipv4"/><ports>\n')
        for i in range(300_000):
            f.write(f'<port protocol="{("tcp", "udp", "sctp")[i // 65536 % 3]}" portid="{i % 65536}">'
                    '<state state="open"/><service name="x"/></port>\n')  # fmt: skip
        f.write("</ports></host>\n" + FOOTER)
    db = store_db
    result, peak_mib = run_measured("import", "nmap", str(wrapped), db=db)
    assert result.returncode == 0 and "200 hosts up" in result.stdout, result.stderr
    assert peak_mib < 200, peak_mib
    result, peak_mib = run_measured("import", "nmap", str(ports), db=db)
    assert result.returncode == 0 and "1 hosts up, 1 new assets, 131072 open services" in result.stdout, result.stderr
    assert "posture: warning: ports.xml: dropped 168,928 open ports over 131,072 on one host" in result.stderr
    assert peak_mib < 200, peak_mib


# ---- fuzzing: nothing but NmapXmlError -------------------------------------------------------------------------


@functools.cache
def realistic() -> bytes:
    """A real-looking three-host nmap file (bench/gen_nmap_xml.py)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "three.xml"
        write_realistic(path, hosts=3, ports_per_host=3)
        return path.read_bytes()


def read_all(data: bytes) -> None:
    """Read a document the way an import does: every host made into rows; values within their ranges."""
    reader = NmapXmlReader(io.BytesIO(data), name="fuzz.xml")
    for host in reader:
        prepare_host(host)
        assert all(0 <= s.port <= 65535 and (s.confidence is None or 0 <= s.confidence <= 10) for s in host.services)
        assert all(0 <= o.accuracy <= 100 for o in host.os_matches)


ATTRIBUTES = ["portid", "conf", "accuracy", "addr", "starttime", "endtime", "seconds", "state", "addrtype", "protocol",
              "start", "time", "name"]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ATTRIBUTES), st.text(max_size=30) | st.integers(-(2**80), 2**80).map(str),
       st.integers(0, 10))  # fmt: skip
def test_fuzz_attribute_values(attribute: str, value: str, which: int) -> None:
    """Item 6: any value of any attribute the reader uses, in a real file, is read or refused (NmapXmlError)."""
    text = realistic().decode()
    marker = f' {attribute}="'
    at = -1
    for _ in range(which + 1):
        at = text.find(marker, at + 1)
    if at < 0:
        return
    end = text.index('"', at + len(marker))
    clean = "".join(c for c in value if c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd")
    data = (text[:at] + f" {attribute}={quoteattr(clean)}" + text[end + 1 :]).encode()
    with contextlib.suppress(NmapXmlError):
        read_all(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000) | st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=8)), max_size=6))
def test_fuzz_bytes_and_mutations(change: bytes | list[tuple[int, bytes]]) -> None:
    """Item 6: arbitrary bytes, and a real file with bytes spliced in, are read or refused (NmapXmlError)."""
    if isinstance(change, bytes):
        data = change
    else:
        data = realistic()
        for position, spliced in change:
            at = position % (len(data) + 1)
            data = data[:at] + spliced + data[at + len(spliced) // 2 :]
    with contextlib.suppress(NmapXmlError):
        read_all(data)


def test_fuzz_reader_keeps_a_real_file_whole() -> None:
    """The fuzz tests' base file is read whole: the bounds drop nothing a real scan holds."""
    hosts = list(NmapXmlReader(io.BytesIO(realistic())))
    assert len(hosts) == 3 and all(len(h.services) == 3 and h.os_matches and h.hostnames for h in hosts)
    assert not NmapXmlReader(io.BytesIO(realistic())).run.warnings


@pytest.mark.parametrize("data", [b"", b"<", b"<?xml version='1.0' encoding='nope'?><nmaprun/>", b"\xff\xfe<\x00"])
def test_odd_starts_are_refusals(data: bytes) -> None:
    """Item 6: documents that end, or cannot start, before the root element: NmapXmlError."""
    with pytest.raises(NmapXmlError):
        read_all(data)
