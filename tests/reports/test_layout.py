"""The report as readers see it (issue 15 item 8): Chromium at 1366 and 390 px and printed to PDF.

A probe page (the test's own, not the report, which allows no script) holds the report in a 390 px frame
and lists every element that sticks out to the right, outside the boxes deliberately left to scroll
sideways (the inventory, the cliff's figures, any table that is not laid out as cards). The PDF is read
back with poppler: A4 pages, the cliff's chart on the page of its heading, and no address broken across
lines.
Set POSTURE_SHOTS=DIR to keep the screenshots and the PDF for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import new_store, run_posture
from tests.reports import test_html as html_tests
from tests.rules.estate import CISCO_SWITCH, NGINX, RDP, SMB1, SSH_DEBIAN, TELNET, WINDOWS_2008, Host, write_estate

HOSTS = [
    Host("10.7.0.10", "00:11:22:00:07:10", [RDP, SMB1], WINDOWS_2008, hostname="revenues-app01.council.example"),
    Host("10.7.0.11", "00:11:22:00:07:11", [RDP], WINDOWS_2008, hostname="hr-db01.council.example"),
    Host("10.7.0.12", "00:11:22:00:07:12", [SSH_DEBIAN, NGINX], hostname="web01.council.example"),
    Host("10.7.0.13", "00:11:22:00:07:13", [TELNET], CISCO_SWITCH, hostname="sw-core-01.council.example"),
    Host("10.7.0.14", "00:11:22:00:07:14", [NGINX]),
]
PROBE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="%s" style="width:390px;height:900px;border:0"></iframe>
<script>
window.addEventListener("load", () => {
  const d = document.getElementById("f").contentDocument;
  const edge = d.documentElement.clientWidth + 1;
  const scrolls = e => {
    for (; e; e = e.parentElement) if (["auto", "scroll"].includes(getComputedStyle(e).overflowX)) return true;
    return false;
  };
  const out = e => e.getBoundingClientRect().right > edge && !scrolls(e.parentElement);
  const wide = [...d.querySelectorAll("body *")].filter(e => out(e) && !out(e.parentElement))
    .map(e => e.tagName + "." + e.className + ": " + e.textContent.trim().slice(0, 60));
  document.body.setAttribute("data-result", JSON.stringify({client: d.documentElement.clientWidth, wide: wide}));
});
</script></body></html>"""


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return html_tests.chromium(*args, timeout=180)


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("layout")
    db = new_store(request, store_kind, tmp)
    config = tmp / "config.toml"
    config.write_text('[report]\norganisation = "Example Borough Council"\n', encoding="utf-8")
    assert run_posture("import", "nmap", str(write_estate(tmp / "scan.xml", HOSTS)), db=db).returncode == 0
    register = tmp / "register.csv"
    register.write_text("IP address,Owner,Criticality\n10.7.0.10,Revenues and Benefits,high\n"
                        "10.7.0.13,Network team,medium\n", encoding="utf-8")  # fmt: skip
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    assert run_posture("evaluate", db=db).returncode == 0
    out = tmp / "report.html"
    result = run_posture("--config", str(config), "report", "--html", str(out), db=db)
    assert result.returncode == 0, result.stderr
    return out


def _keep(*paths: Path) -> None:
    shots = os.environ.get("POSTURE_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy(p, Path(shots) / p.name)


def test_header_names_the_organisation_scope_and_contents(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "<h1>Cyber posture and legacy technology report: Example Borough Council</h1>" in html
    assert "Covers 1 asset register import, 1 nmap import: hosts seen between" in html
    assert re.findall(r'<a href="#([a-z]+)">', html) == ["summary", "cliff", "risks", "plan", "windows",
                                                         "certificates", "inventory", "findings", "accepted"]
    for anchor in re.findall(r'<a href="#([a-z]+)">', html):
        assert f'id="{anchor}"' in html


def test_screenshots_at_1366_and_390(report: Path) -> None:
    shots = []
    for width in (1366, 390):
        shot = report.with_name(f"report-{width}.png")
        result = chromium("--hide-scrollbars", f"--window-size={width},2600", f"--screenshot={shot}", report.as_uri())
        assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
        assert struct.unpack(">II", shot.read_bytes()[16:24]) == (width, 2600)
        shots.append(shot)
    _keep(*shots)


def test_nothing_sticks_out_at_390_px(report: Path) -> None:
    probe = report.with_name("probe.html")
    probe.write_text(PROBE % report.name, encoding="utf-8")
    result = chromium("--allow-file-access-from-files", "--window-size=390,900", "--dump-dom", probe.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'data-result="([^"]*)"', result.stdout)
    assert found, result.stdout[-2000:]
    said = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert said["client"] <= 390 and said["wide"] == []


def test_printed_on_a4_with_the_chart_by_its_heading_and_addresses_whole(report: Path) -> None:
    pdf = report.with_suffix(".pdf")
    printed = chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report.as_uri())
    assert printed.returncode == 0 and pdf.exists(), printed.stderr[-2000:]
    _keep(pdf)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+59[45]\.\d+ x 841\.\d+ pts \(A4\)", info), info
    pages = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout.split("\f")  # fmt: skip
    cliff = next(p for p in pages if "reaches end of life, by UK financial year" in p)  # the heading's paragraph
    assert "ot-iot" in cliff and "earlier" in cliff  # the chart's legend and axis: on the heading's page
    text = "\n".join(pages)
    # Groups of findings are closed <details> on screen; on paper every one prints whole (::details-content).
    ids = set(re.findall(r"F-[0-9a-f]{6,}", report.read_text(encoding="utf-8")))
    assert ids and ids <= set(re.findall(r"F-[0-9a-f]{6,}", text)), ids - set(re.findall(r"F-[0-9a-f]{6,}", text))
    for host in HOSTS:  # each address whole on one line wherever it is printed
        assert re.search(rf"(?<![\d.]){re.escape(host.ip)}(?![\d])", text), host.ip
        assert not re.search(rf"{re.escape(host.ip.rsplit('.', 1)[0])}\.?\s*\n\s*\.?\d", text)


def test_device_line_breaks_read_as_spaces_and_escapes_stay_visible() -> None:
    """A Cisco sysDescr's "(fc1)\\r\\nTechnical Support" reads as words in the report; an escape sequence
    is still shown, never passed on."""
    from reports.model import clean

    shown = clean("RELEASE SOFTWARE (fc1)\r\nTechnical Support:\thttp://www.cisco.com \x1b[31m")
    assert shown.startswith("RELEASE SOFTWARE (fc1) Technical Support: http://www.cisco.com ")
    assert "\x1b" not in shown and "\r" not in shown and "\n" not in shown
