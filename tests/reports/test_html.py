"""The HTML report opened in headless Chromium: it renders, fetches nothing, logs nothing, runs nothing.

The inventory is a small estate imported from nmap XML plus an asset register, with a battery of hostile
strings in what devices and the register supplied (service banners, the OS name, hostnames, owners).
A tiny HTTP server on 127.0.0.1 counts requests: every payload that could fetch points at it.
"""

from __future__ import annotations

import http.server
import json
import re
import struct
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import new_store, run_posture
from tests.rules.estate import CISCO_SWITCH, RDP, SMB1, SSH_DEBIAN, WINDOWS_2008, Host, write_estate

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--enable-logging=stderr", "--v=0"]  # fmt: skip


HITS: list[str] = []  # every request the report's page made to the listener


class _Counter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        HITS.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def hostile(port: int) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    return [
        '<script>document.title="PWNED"</script>',
        f'<img src="{base}/img" onerror="document.title=\'PWNED\'">',
        '<a href="javascript:document.title=\'PWNED\'">click</a>',
        f'<svg onload="document.title=\'PWNED\'"><image href="{base}/svg"/></svg>',
        f"</style><style>body{{background:url({base}/css)}}</style>",
        f'"><link rel="stylesheet" href="{base}/link">',
        "{{7*7}} {% for x in range(9) %}x{% endfor %}",
        "\u202egnp.exe",
        "A" * 100_000,
    ]


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest, store_kind: str, listener: int,
           tmp_path_factory: pytest.TempPathFactory) -> Path:  # fmt: skip
    tmp = tmp_path_factory.mktemp("report")
    db = new_store(request, store_kind, tmp)
    bad = hostile(listener)
    telnet = [(23 + n, "telnet", payload, payload[:500], payload, (), None) for n, payload in enumerate(bad)]
    hosts = [
        Host("10.2.0.10", "00:11:22:00:01:10", [RDP, SMB1], WINDOWS_2008, hostname="fin-app01.council.example"),
        Host("10.2.0.11", "00:11:22:00:01:11", [SSH_DEBIAN, *telnet], (bad[1], "switch", "IOS", "cpe:/o:cisco:ios"),
             hostname="sw-core.council.example"),
        Host("10.2.0.12", "00:11:22:00:01:12", [telnet[0]], CISCO_SWITCH),
    ]  # fmt: skip
    assert run_posture("import", "nmap", str(write_estate(tmp / "scan.xml", hosts)), db=db).returncode == 0
    register = tmp / "register.csv"
    rows = ["IP address,Owner,Business service"] + [
        f'10.2.0.{10 + n % 3},"{payload.replace(chr(34), chr(34) * 2)}",svc' for n, payload in enumerate(bad[:3])
    ]
    register.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert run_posture("evaluate", db=db).returncode == 0
    out = tmp / "report.html"
    result = run_posture("report", "--html", str(out), db=db)
    assert result.returncode == 0, result.stderr
    return out


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((k, v or "") for k, v in attrs)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and not self.title:
            self.title = data


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHROMIUM, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_report_in_chromium_fetches_nothing_runs_nothing(report: Path, listener: int) -> None:
    HITS.clear()
    dumped = chromium("--dump-dom", report.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert ":CONSOLE" not in dumped.stderr, [line for line in dumped.stderr.splitlines() if "CONSOLE" in line][:3]
    assert HITS == []
    dom = _Dom()
    dom.feed(dumped.stdout)
    assert dom.title.startswith("posture report")  # no payload changed it
    assert not {"script", "iframe", "object", "embed", "link", "image", "img", "base", "form"} & set(dom.tags)
    # Links: only the table of contents' anchors within the page, none a device string made.
    hrefs = [v for k, v in dom.attrs if k == "href"]
    assert dom.tags.count("a") == len(hrefs) == 9 and all(h.startswith("#") for h in hrefs)
    assert dom.tags.count("svg") == 1 and dom.tags.count("style") == 1  # the chart and the stylesheet only
    assert not [k for k, _ in dom.attrs if k.startswith("on")]
    assert not [v for _, v in dom.attrs if "javascript:" in v or "127.0.0.1:" in v]
    # The strings are shown as text: escaped, bidi overrides made visible, template syntax left alone.
    assert "&lt;script&gt;document.title" in dumped.stdout and "{{7*7}}" in dumped.stdout
    assert "\u202e" not in dumped.stdout and "\ufffdgnp.exe" in dumped.stdout
    assert "A" * 1000 not in dumped.stdout  # 100 KB strings are cut short


def test_report_renders_and_has_its_sections(report: Path) -> None:
    shot = report.with_suffix(".png")
    result = chromium("--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == (1280, 2400) and shot.stat().st_size > 50_000  # a page drawn, not a blank one
    # Printed (the print stylesheet): Chromium's own PDF printer gives a real, multi-page document.
    pdf = report.with_suffix(".pdf")
    printed = chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report.as_uri())
    assert printed.returncode == 0 and pdf.read_bytes()[:5] == b"%PDF-", printed.stderr[-2000:]
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes())) >= 2
    text = report.read_text(encoding="utf-8")
    for heading in ("Executive summary", "End-of-life cliff", "Top risks", "Remediation plan", "Inventory",
                    "Findings by rule", "Accepted exceptions"):  # fmt: skip
        assert f">{heading}</h2>" in text
    assert "endoflife.date as of 2026-08-22" in text and "CISA Known Exploited Vulnerabilities catalogue" in text
    assert "@media print" in text and 'lang="en-GB"' in text and '<th scope="col">' in text
    # Windows Server 2008 R2 ended 2020-01-14: it is in the cliff's "earlier" column and a top risk.
    assert "Microsoft Windows Server 2008 R2 SP1" in text and "Operating system or firmware past end of life" in text


def test_report_refuses_without_an_evaluation(store_db: Path | str, tmp_path: Path) -> None:
    db = store_db
    host = Host("10.2.0.20", "00:11:22:00:02:20", [SSH_DEBIAN])
    assert run_posture("import", "nmap", str(write_estate(tmp_path / "x.xml", [host])), db=db).returncode == 0
    result = run_posture("report", "--html", str(tmp_path / "r.html"), db=db)
    assert result.returncode == 2 and "posture evaluate" in result.stderr and not (tmp_path / "r.html").exists()
    missing = run_posture("report", "--html", str(tmp_path / "nope" / "r.html"), db=db)
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    # The asset view reads what the last evaluation identified (issue 12 item 2): it never identifies itself.
    before = json.loads(run_posture("assets", "--format", "json", db=db).stdout)[0]["os"] or {}
    assert before.get("product") != "debian"
    assert run_posture("evaluate", db=db).returncode == 0
    assert json.loads(run_posture("assets", "--format", "json", db=db).stdout)[0]["os"]["product"] == "debian"


def test_windows_estate_counts_releases_with_their_dates(store_db: Path | str, tmp_path: Path) -> None:
    """Issue 14 item 4: the report's "Windows estate" gives each release by count with its end of support and
    its ESU's end (kept even once passed: Server 2008 R2 SP1's ESU ended 2023-01-10, endoflife.date's `eoes`),
    and counts Windows machines whose release nothing told apart (an RDP port's CPE alone)."""
    xml = write_estate(tmp_path / "scan.xml", [
        Host("10.9.0.1", "00:11:22:00:00:01", [RDP, SMB1], WINDOWS_2008),
        Host("10.9.0.2", "00:11:22:00:00:02", [RDP, SMB1], WINDOWS_2008),
        Host("10.9.0.3", "00:11:22:00:00:03", [RDP]),
        Host("10.9.0.4", "00:11:22:00:00:04", [SSH_DEBIAN]),
    ])  # fmt: skip
    db, html = store_db, tmp_path / "w.html"
    for args in (("import", "nmap", str(xml)), ("evaluate", "--on", "2026-12-07"),
                 ("report", "--html", str(html), "--on", "2026-12-07")):  # fmt: skip
        result = run_posture(*args, db=db)
        assert result.returncode == 0, result.stderr
    page = html.read_text(encoding="utf-8")
    section = page[page.index('<h2 id="windows">'):page.index('<section aria-labelledby="certificates">')]
    text = re.sub(r"<[^>]+>", " ", section)
    assert "3 Windows machines; 2 run a release whose support has ended; 1 could not be told apart" in text
    row = re.findall(r"<tr>.*?</tr>", section.split("<tbody>")[1])
    assert len(row) == 1 and all(s in row[0] for s in ("Windows Server 2008 R2 SP1", ">2<", "end-of-life",
                                                       "2020-01-14", "2023-01-10"))  # fmt: skip
