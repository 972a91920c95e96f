"""The procurement DOCX and ODT as a buyer sees them: rendered to PDF by LibreOffice (headless, run for
real) and read back with poppler's pdfinfo and pdftotext.

Issue 15 item 5: the DOCX had ten equal 0.6-inch columns in portrait, words broken mid-syllable ("Micr osoft
Wind ows Serve r"), the header row neither repeated nor bold, US Letter, en-US, author "python-docx",
created 2013-12-23; the ODT had no page layout or language.

A word broken across lines comes out of pdftotext as two words that are not words of the document ("Micr",
"osoft"). So every word pdftotext finds on the pages (by its bounding boxes: `-bbox`) must be a whole
whitespace-separated word of the document's own text, read from the DOCX and ODT structure (every
paragraph and every table cell). LibreOffice does not hyphenate unless told to, so a word can only be
broken where a column is narrower than the word.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import docx
import pytest
from odf import teletype
from odf.opendocument import load
from odf.table import TableCell
from odf.text import H, P

from tests.conftest import new_store, run_posture
from tests.reports.procurement_estate import ORGANISATION, build

LOTS_HEADER = re.compile(r"No\.\s+Lot\s+Category\s+Units\s+End of\s+Action\s+Cost\s+Financial\s+Why")
LOTS_ROW = re.compile(r"^\s*\d+\s+\S.*\s(?:replace|upgrade)\s+(?:£[\d,]+|no)\s")  # a row of the lots table


@pytest.fixture(scope="module")
def rendered(request: pytest.FixtureRequest, store_kind: str,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:  # fmt: skip
    """The council estate's DOCX and ODT, and LibreOffice's PDF of each (one soffice run for both)."""
    tmp = tmp_path_factory.mktemp("render")
    db, config, costs = build(tmp, new_store(request, store_kind, tmp))
    files = {}
    for fmt in ("docx", "odt"):
        path = tmp / f"strategy-{fmt}.{fmt}"
        made = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), "--format", fmt,
                           "--out", str(path), db=db)  # fmt: skip
        assert made.returncode == 0, made.stderr
        files[fmt] = path
    out = tmp / "pdf"
    profile = tmp / "soffice-profile"  # its own profile: never the user's, never shared with a running soffice
    converted = subprocess.run(
        ["soffice", f"-env:UserInstallation={profile.as_uri()}", "--headless", "--convert-to", "pdf", "--outdir",
         str(out), *map(str, files.values())],
        capture_output=True, text=True, timeout=180, check=False, env={"HOME": str(tmp), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    return {fmt: (path, out / f"{path.stem}.pdf") for fmt, path in files.items()}


def pdf(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=True).stdout


def document_words(path: Path) -> set[str]:
    """Every whitespace-separated word of the document's text: paragraphs and table cells."""
    if path.suffix == ".docx":
        document = docx.Document(str(path))
        texts = [p.text for p in document.paragraphs]
        texts += [cell.text for table in document.tables for row in table.rows for cell in row.cells]
    else:
        opened = load(str(path))
        texts = [teletype.extractText(p) for kind in (H, P) for p in opened.text.getElementsByType(kind)]
        texts += [teletype.extractText(c) for c in opened.text.getElementsByType(TableCell)]
    return {word for text in texts for word in text.split()}


@pytest.mark.parametrize("fmt", ["docx", "odt"])
def test_a4_landscape_with_metadata(rendered: dict[str, tuple[Path, Path]], fmt: str) -> None:
    _, rendered_pdf = rendered[fmt]
    info = pdf("pdfinfo", "-f", "1", "-l", "99", str(rendered_pdf))
    sizes = re.findall(r"Page +\d+ size: +([\d.]+) x ([\d.]+) pts \(A4\)", info)
    pages = int(re.search(r"Pages: +(\d+)", info).group(1))  # type: ignore[union-attr]
    assert len(sizes) == pages >= 2
    assert all(round(float(w)) == 842 and round(float(h)) == 595 for w, h in sizes)  # A4, landscape
    assert re.search(r"Title: +Legacy technology: replacement lots \(\d{4}-\d\d-\d\d\)\n", info)
    assert f"Author:          {ORGANISATION}\n" in info
    assert b"/Lang(en-GB)" in rendered_pdf.read_bytes()  # the document language LibreOffice read


@pytest.mark.parametrize("fmt", ["docx", "odt"])
def test_no_word_is_broken_across_lines(rendered: dict[str, tuple[Path, Path]], fmt: str) -> None:
    source, rendered_pdf = rendered[fmt]
    words = document_words(source)
    printed = re.findall(r"<word [^>]*>([^<]*)</word>", pdf("pdftotext", "-bbox", str(rendered_pdf), "-"))
    printed = [w.replace("&amp;", "&").replace("&apos;", "'").replace("&quot;", '"') for w in printed]
    assert len(printed) > 300
    broken = [w for w in printed if w not in words]
    assert not broken, f"words that are not the document's (broken across lines?): {broken[:20]}"


@pytest.mark.parametrize("fmt", ["docx", "odt"])
def test_lots_header_repeats_on_every_page_of_the_table(rendered: dict[str, tuple[Path, Path]], fmt: str) -> None:
    _, rendered_pdf = rendered[fmt]
    pages = pdf("pdftotext", "-layout", str(rendered_pdf), "-").split("\f")
    with_rows = [n for n, page in enumerate(pages) if any(LOTS_ROW.match(line) for line in page.splitlines())]
    assert len(with_rows) >= 2, "the lots table should span pages for this test to mean something"
    for n in with_rows:
        lines = pages[n].splitlines()
        header = next((i for i, line in enumerate(lines) if LOTS_HEADER.search(line)), None)
        first_row = next(i for i, line in enumerate(lines) if LOTS_ROW.match(line))
        assert header is not None and header < first_row, f"page {n + 1}: lots rows without the header row above"
    eight = "".join(pages)
    assert sum(1 for line in eight.splitlines() if LOTS_ROW.match(line)) == 8  # every lot, once
