"""One small document model (headings, paragraphs, tables) written as Markdown, ODT or DOCX.

ODT is the UK government's open document standard; DOCX is what most councils edit. Both come from the
same model, so they say the same thing, and both are laid out for pasting into a council's document: A4
landscape, British English as the language of the text and of every style, Arial, the title, author and
dates in the file's metadata, tables whose columns are as wide as their words need (`column_widths`: no word
is broken across lines), a header row in bold repeated on every page, numbers right-aligned. Text goes in
as text (odfpy and python-docx escape it): nothing a device said can become markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scanner.compat import UTC
from scanner.model import md_escape
from scanner.safefs import write_atomic

LANGUAGE = ("en", "GB")
PAGE_CM = (29.7, 21.0)  # A4 landscape: width, height
MARGIN_CM = 2.0
TEXT_WIDTH_CM = PAGE_CM[0] - 2 * MARGIN_CM
FONT = "Arial"
BODY_PT, TABLE_PT = 10, 9
CELL_PADDING_CM = 0.15  # left and right, inside each cell
HEADER_FILL = "#D9D9D9"  # light grey behind the header row
DEFAULT_AUTHOR = "posture"  # when the config names no organisation: no council name is invented

# Advance widths (thousandths of an em) of DejaVu Sans and DejaVu Sans Bold for the printable ASCII
# characters (32-126) and a few more (pound, euro, dashes, curly quotes, ellipsis, middle dot, multiplication
# sign, e acute), read from the fonts' hmtx tables (fonts-dejavu-core 2.37). DejaVu Sans
# is what LibreOffice draws "Arial" with where Arial and Liberation Sans are missing (fontconfig's
# substitute) and is wider than both, so a column wide enough for it is wide enough in Word too. A
# character not listed counts as a full em (1000, bold 1103: the widest listed), never narrower.
_EXTRA = "\u00a3\u20ac\u2013\u2014\u2018\u2019\u201c\u201d\u2026\u00b7\u00d7\u00e9"
_ASCII = "".join(chr(c) for c in range(32, 127)) + _EXTRA
_REGULAR = (
    "318 401 460 838 636 950 780 275 390 390 500 838 318 361 318 337 636 636 636 636 636 636 636 636 636 636 337 "
    "337 838 838 838 531 1000 684 686 698 770 632 575 775 752 295 295 656 557 863 748 787 603 787 695 635 611 732 "
    "684 989 685 611 685 390 337 390 838 500 500 613 635 550 635 615 352 635 634 278 278 579 278 974 634 612 635 "
    "635 411 521 392 634 592 818 592 592 525 636 337 636 838 636 636 500 1000 318 318 518 518 1000 318 838 615"
)
_BOLD = (
    "348 456 521 838 696 1002 872 306 457 457 523 838 380 415 380 365 696 696 696 696 696 696 696 696 696 696 400 "
    "400 838 838 838 580 1000 774 762 734 830 683 683 821 837 372 372 775 637 995 837 850 733 850 770 720 682 812 "
    "774 1103 771 724 725 457 365 457 838 500 500 675 716 593 716 678 435 716 712 343 343 665 343 1042 712 687 716 "
    "716 493 595 478 712 652 924 645 652 582 712 365 712 838 696 696 500 1000 380 380 657 657 1000 380 838 678"
)
WIDTHS = {False: dict(zip(_ASCII, map(int, _REGULAR.split()), strict=True)),
          True: dict(zip(_ASCII, map(int, _BOLD.split()), strict=True))}  # fmt: skip
WIDEST = {False: 1000, True: 1103}


def text_width_cm(text: str, bold: bool = False, size_pt: float = TABLE_PT) -> float:
    """How wide `text` prints on one line, in centimetres (see WIDTHS: never narrower than it prints)."""
    widths, widest = WIDTHS[bold], WIDEST[bold]
    return sum(widths.get(ch, widest) for ch in text) / 1000 * size_pt * 2.54 / 72


def markdown_table(header: list[str], rows: list[list[str]], numeric: frozenset[int] = frozenset()) -> list[str]:
    """Lines of a Markdown table; the cells come escaped (see `md_escape`); numeric columns right-aligned."""
    rule = "|" + "".join("---:|" if n in numeric else "---|" for n in range(len(header)))
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: frozenset[int] = frozenset()  # columns of numbers: right-aligned
    total: bool = False  # the last row is a total: bold
    together: bool = False  # kept on one page (a short table); else it breaks between rows, its header repeated

    def widths(self, available: float = TEXT_WIDTH_CM) -> list[float]:
        return column_widths(self, available)


@dataclass
class Document:
    title: str
    author: str | None = None  # the organisation the document is for ([report] organisation), else "posture"
    created: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    blocks: list[tuple[str, str | Table]] = field(default_factory=list)  # ("h2" | "p", text) or ("table", Table)

    @property
    def creator(self) -> str:
        return self.author or DEFAULT_AUTHOR

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]], numeric: tuple[int, ...] = (), total: bool = False,
              together: bool = False) -> None:  # fmt: skip
        self.blocks.append(("table", Table(header, rows, frozenset(numeric), total, together)))


def column_widths(table: Table, available: float = TEXT_WIDTH_CM) -> list[float]:
    """Column widths in cm, fitted to the content so that no word is broken across lines.

    Each column needs at least its longest word (header words in bold; a number or a price is one word, as
    "no price" is: it never wraps) and would like its longest cell on one line. When every column's longest
    cell fits, each gets that and the table is as wide as it needs; otherwise the table takes the whole
    width, each column its longest word and the rest shared in proportion to how much more each column's
    text would like (a long notes column wraps, a column of dates does not). Only when the longest words
    alone overflow the page (one absurdly long token) are they scaled down and broken.
    """
    pad = 2 * CELL_PADDING_CM + 0.05  # padding both sides, the borders and a little air

    def need(text: str, bold: bool, whole: bool) -> tuple[float, float]:
        line = text_width_cm(text, bold)
        return (line if whole else max(text_width_cm(w, bold) for w in text.split() or [""])), line

    shortest, longest = [], []
    for n, head in enumerate(table.header):
        whole = n in table.numeric
        cells = [need(head, True, False)] + [need(row[n], table.total and i == len(table.rows) - 1, whole)
                                             for i, row in enumerate(table.rows)]  # fmt: skip
        shortest.append(max(c[0] for c in cells) * 1.05 + pad)
        longest.append(max(c[1] for c in cells) * 1.05 + pad)
    if sum(longest) <= available:
        return longest
    if sum(shortest) <= available:
        spare, wants = available - sum(shortest), [b - a for a, b in zip(shortest, longest, strict=True)]
        return [a + spare * w / sum(wants) for a, w in zip(shortest, wants, strict=True)]
    return [available * a / sum(shortest) for a in shortest]


def to_markdown(doc: Document) -> str:
    out = [f"# {md_escape(doc.title)}", ""]
    for kind, value in doc.blocks:
        if isinstance(value, Table):
            out.extend(markdown_table([md_escape(h) for h in value.header],
                                      [[md_escape(c) for c in row] for row in value.rows], value.numeric))  # fmt: skip
        elif kind == "h2":
            out.append(f"## {md_escape(value)}")
        else:
            out.append(md_escape(value))
        out.append("")
    return "\n".join(out)


def _introduces_table(doc: Document, n: int) -> bool:
    """Whether block `n` is a paragraph right before a table: it is kept on the table's page."""
    return n + 1 < len(doc.blocks) and isinstance(doc.blocks[n + 1][1], Table)


# ---- DOCX ------------------------------------------------------------------------------------------------


def _docx_fonts(rpr: Any, size_pt: float | None = None) -> None:
    """Arial for every script of run properties (a style's, the defaults'), instead of the theme's fonts."""
    from docx.oxml.ns import qn

    fonts = rpr.find(qn("w:rFonts"))
    if fonts is None:
        fonts = rpr.makeelement(qn("w:rFonts"), {})
        rpr.insert(0, fonts)
    for attr in list(fonts.attrib):
        del fonts.attrib[attr]
    for script in ("w:ascii", "w:hAnsi", "w:cs", "w:eastAsia"):
        fonts.set(qn(script), FONT)
    if size_pt is not None:
        for tag in ("w:sz", "w:szCs"):
            found = rpr.find(qn(tag))
            if found is None:
                found = rpr.makeelement(qn(tag), {})
                rpr.append(found)
            found.set(qn("w:val"), str(int(size_pt * 2)))


def _docx_setup(document: Any, doc: Document) -> None:
    """Page, language, fonts, styles and metadata of a new python-docx document (its template says US
    Letter, en-US, Calibri, author "python-docx", created 2013-12-23: none of that may stay)."""
    from docx.enum.section import WD_ORIENT
    from docx.enum.style import WD_STYLE_TYPE
    from docx.opc.constants import RELATIONSHIP_TYPE as RT
    from docx.oxml.ns import qn
    from docx.shared import Cm, Pt

    section = document.sections[0]
    section.orientation = WD_ORIENT.LANDSCAPE
    section.page_width, section.page_height = Cm(PAGE_CM[0]), Cm(PAGE_CM[1])
    for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
        setattr(section, side, Cm(MARGIN_CM))
    language = "-".join(LANGUAGE)
    styles = document.styles.element
    defaults = styles.find(qn("w:docDefaults")).find(qn("w:rPrDefault")).find(qn("w:rPr"))
    for lang in styles.iter(qn("w:lang")):  # the document default and any style that names a language
        for attr in ("w:val", "w:eastAsia"):
            lang.set(qn(attr), language)
    _docx_fonts(defaults, BODY_PT)
    settings = document.settings.element.find(qn("w:themeFontLang"))
    if settings is not None:
        settings.set(qn("w:val"), language)
        settings.set(qn("w:eastAsia"), language)
    for name in ("Title", "Heading 1", "Heading 2"):
        _docx_fonts(document.styles[name].element.get_or_add_rPr())
    for name, bold in (("Table Text", False), ("Table Heading", True)):
        style = document.styles.add_style(name, WD_STYLE_TYPE.PARAGRAPH)
        style.base_style = document.styles["Normal"]
        style.font.size, style.font.bold = Pt(TABLE_PT), bold
        style.paragraph_format.space_after = Pt(0)
        style.paragraph_format.line_spacing = 1.0
    # Parts of the template that describe another document: Word 2010's copy of the styles (still en-US),
    # the extended properties ("Microsoft Macintosh Word") and the template's thumbnail.
    for rid, rel in list(document.part.rels.items()):
        if rel.reltype.endswith("/stylesWithEffects"):
            document.part.drop_rel(rid)
    package = document.part.package
    for rid, rel in list(package.rels.items()):
        if rel.reltype in (RT.EXTENDED_PROPERTIES, RT.THUMBNAIL):
            package.rels.pop(rid)
    core = document.core_properties
    core.title, core.author, core.last_modified_by = doc.title, doc.creator, doc.creator
    core.subject, core.keywords, core.comments, core.category = "", "", "", ""
    core.language, core.revision = language, 1
    core.created = core.modified = doc.created.replace(tzinfo=None)  # python-docx writes naive times as UTC


def _docx_table(document: Any, table: Table) -> None:
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml.ns import qn
    from docx.shared import Cm

    widths = table.widths()
    grid = document.add_table(rows=1 + len(table.rows), cols=len(table.header))
    grid.style = document.styles["Table Grid"]
    grid.alignment = WD_TABLE_ALIGNMENT.LEFT
    grid.autofit = False  # w:tblLayout fixed: the widths as given, not refitted by Word
    props = grid._tbl.tblPr
    width = props.find(qn("w:tblW"))  # the table's width: its columns', not "auto"
    if width is not None:
        width.set(qn("w:type"), "dxa")
        width.set(qn("w:w"), str(sum(round(w / 2.54 * 1440) for w in widths)))
    margins = props.makeelement(qn("w:tblCellMar"), {})
    for side in ("w:left", "w:right"):
        margins.append(margins.makeelement(qn(side), {qn("w:w"): str(round(CELL_PADDING_CM / 2.54 * 1440)),
                                                      qn("w:type"): "dxa"}))  # fmt: skip
    look = props.find(qn("w:tblLook"))  # the schema's order: tblCellMar comes just before tblLook
    if look is None:
        props.append(margins)
    else:
        look.addprevious(margins)
    for column, width in zip(grid.columns, widths, strict=True):
        column.width = Cm(width)
    last, whole = len(table.rows), table.together
    for r, (row, cells) in enumerate(zip(grid.rows, [table.header, *table.rows], strict=True)):
        trpr = row._tr.get_or_add_trPr()
        trpr.append(trpr.makeelement(qn("w:cantSplit"), {}))  # a row never parts across two pages
        if r == 0:
            trpr.append(trpr.makeelement(qn("w:tblHeader"), {}))  # repeated at the top of every page
        for n, (cell, text, width) in enumerate(zip(row.cells, cells, widths, strict=True)):
            cell.width = Cm(width)
            if r == 0:
                tcpr = cell._tc.get_or_add_tcPr()
                tcpr.append(tcpr.makeelement(qn("w:shd"), {qn("w:val"): "clear", qn("w:color"): "auto",
                                                           qn("w:fill"): HEADER_FILL.lstrip("#")}))  # fmt: skip
            paragraph = cell.paragraphs[0]
            paragraph.style = document.styles["Table Heading" if r == 0 else "Table Text"]
            if n in table.numeric:
                paragraph.alignment = WD_ALIGN_PARAGRAPH.RIGHT
            paragraph.paragraph_format.keep_with_next = whole and r < last  # how Word keeps a table on one page
            run = paragraph.add_run(text)
            if table.total and r == last:
                run.bold = True


def write_docx(doc: Document, path: Path) -> None:
    import docx

    document = docx.Document()
    _docx_setup(document, doc)
    document.add_heading(doc.title, level=0)
    for n, (kind, value) in enumerate(doc.blocks):
        if isinstance(value, Table):
            _docx_table(document, value)
            document.add_paragraph()  # a table is followed by a paragraph: two tables never merge
        elif kind == "h2":
            document.add_heading(value, level=2)
        else:
            paragraph = document.add_paragraph(value)
            paragraph.paragraph_format.keep_with_next = _introduces_table(doc, n)
    write_atomic(path, document.save)


# ---- ODT -------------------------------------------------------------------------------------------------


def write_odt(doc: Document, path: Path) -> None:
    from odf import dc, meta
    from odf.opendocument import OpenDocumentText
    from odf.style import (
        DefaultStyle,
        FontFace,
        MasterPage,
        PageLayout,
        PageLayoutProperties,
        ParagraphProperties,
        Style,
        TableCellProperties,
        TableColumnProperties,
        TableProperties,
        TableRowProperties,
        TextProperties,
    )
    from odf.table import Table as OdfTable
    from odf.table import TableCell, TableColumn, TableHeaderRows, TableRow
    from odf.text import H, P

    document = OpenDocumentText()
    stamp = doc.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for element in (dc.Title(text=doc.title), dc.Creator(text=doc.creator), meta.InitialCreator(text=doc.creator),
                    meta.CreationDate(text=stamp), dc.Date(text=stamp), dc.Language(text="-".join(LANGUAGE))):
        document.meta.addElement(element)  # fmt: skip
    document.fontfacedecls.addElement(FontFace(name=FONT, fontfamily=FONT, fontfamilygeneric="swiss",
                                               fontpitch="variable"))  # fmt: skip
    language, country = LANGUAGE
    words = {"language": language, "country": country, "languageasian": language, "countryasian": country,
             "languagecomplex": language, "countrycomplex": country}  # fmt: skip
    default = DefaultStyle(family="paragraph")
    default.addElement(TextProperties(fontname=FONT, fontsize=f"{BODY_PT}pt", **words))
    document.styles.addElement(default)

    def style(name: str, family: str, *props: Any, **attrs: Any) -> Style:
        made = Style(name=name, family=family, **attrs)
        for prop in props:
            made.addElement(prop)
        (document.styles if family == "paragraph" else document.automaticstyles).addElement(made)
        return made

    layout = PageLayout(name="A4Landscape")
    layout.addElement(PageLayoutProperties(pagewidth=f"{PAGE_CM[0]}cm", pageheight=f"{PAGE_CM[1]}cm",
                                           printorientation="landscape", margin=f"{MARGIN_CM}cm"))  # fmt: skip
    document.automaticstyles.addElement(layout)
    document.masterstyles.addElement(MasterPage(name="Standard", pagelayoutname=layout))
    body = style("Text_20_body", "paragraph", ParagraphProperties(marginbottom="0.2cm"), displayname="Text body")
    keep = style("Table_20_introduction", "paragraph", ParagraphProperties(marginbottom="0.2cm", keepwithnext="always"),
                 parentstylename=body, displayname="Table introduction")  # fmt: skip
    title = style("Title", "paragraph", TextProperties(fontsize="20pt", fontweight="bold"),
                  ParagraphProperties(marginbottom="0.3cm"), masterpagename="Standard")  # fmt: skip
    heading = style("Heading_20_2", "paragraph", TextProperties(fontsize="13pt", fontweight="bold"),
                    ParagraphProperties(margintop="0.4cm", marginbottom="0.2cm", keepwithnext="always"),
                    displayname="Heading 2")  # fmt: skip
    cell_text: dict[tuple[bool, bool], Style] = {}
    for bold in (False, True):
        for right in (False, True):
            cell_text[(bold, right)] = style(
                f"Table_{'Heading' if bold else 'Contents'}{'_Right' if right else ''}", "paragraph",
                TextProperties(fontsize=f"{TABLE_PT}pt", **({"fontweight": "bold"} if bold else {})),
                ParagraphProperties(textalign="end" if right else "start"),
            )
    edges = {"border": "0.5pt solid #000000", "paddingleft": f"{CELL_PADDING_CM}cm",
             "paddingright": f"{CELL_PADDING_CM}cm", "paddingtop": "0.04cm", "paddingbottom": "0.04cm"}
    cell_style = style("Cell", "table-cell", TableCellProperties(**edges))
    head_style = style("HeadCell", "table-cell", TableCellProperties(backgroundcolor=HEADER_FILL, **edges))
    row_style = style("Row", "table-row", TableRowProperties(keeptogether="always"))  # never parted across pages

    document.text.addElement(P(stylename=title, text=doc.title))
    for n, (kind, value) in enumerate(doc.blocks):
        if isinstance(value, Table):
            widths = value.widths()
            table_style = style(f"Table{n}", "table", TableProperties(
                width=f"{sum(widths):.3f}cm", align="left", bordermodel="collapsing", marginbottom="0.3cm",
                maybreakbetweenrows="false" if value.together else "true"))
            table = OdfTable(name=f"Table{n}", stylename=table_style)
            for c, width in enumerate(widths):
                column = style(f"Table{n}.C{c}", "table-column", TableColumnProperties(columnwidth=f"{width:.3f}cm"))
                table.addElement(TableColumn(stylename=column))
            last = len(value.rows)
            for r, cells in enumerate([value.header, *value.rows]):
                tr = TableRow(stylename=row_style)
                for c, text in enumerate(cells):
                    cell = TableCell(stylename=head_style if r == 0 else cell_style, valuetype="string")
                    bold = r == 0 or (value.total and r == last)
                    cell.addElement(P(stylename=cell_text[(bold, c in value.numeric)], text=text))
                    tr.addElement(cell)
                if r == 0:
                    header = TableHeaderRows()  # repeated at the top of every page
                    header.addElement(tr)
                    table.addElement(header)
                else:
                    table.addElement(tr)
            document.text.addElement(table)
        elif kind == "h2":
            document.text.addElement(H(outlinelevel=2, stylename=heading, text=value))
        else:
            document.text.addElement(P(stylename=keep if _introduces_table(doc, n) else body, text=value))
    write_atomic(path, document.save)
