"""One small document model (headings, paragraphs, tables) written as Markdown, ODT or DOCX.

ODT is the UK government's open document standard; DOCX is what most councils edit. Both come from the
same model, so they say the same thing. Text goes in as text (odfpy and python-docx escape it): nothing a
device said can become markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scanner.model import md_escape
from scanner.safefs import write_atomic


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table; the cells come escaped (see `md_escape`)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, str | Table]] = field(default_factory=list)  # ("h2" | "p", text) or ("table", Table)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", Table(header, rows)))


def to_markdown(doc: Document) -> str:
    out = [f"# {md_escape(doc.title)}", ""]
    for kind, value in doc.blocks:
        if isinstance(value, Table):
            out.extend(markdown_table([md_escape(h) for h in value.header],
                                      [[md_escape(c) for c in row] for row in value.rows]))  # fmt: skip
        elif kind == "h2":
            out.append(f"## {md_escape(value)}")
        else:
            out.append(md_escape(value))
        out.append("")
    return "\n".join(out)


def write_docx(doc: Document, path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading(doc.title, level=1)
    for kind, value in doc.blocks:
        if isinstance(value, Table):
            table = document.add_table(rows=1, cols=len(value.header))
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, value.header, strict=True):
                cell.text = text
            for row in value.rows:
                for cell, text in zip(table.add_row().cells, row, strict=True):
                    cell.text = text
        elif kind == "h2":
            document.add_heading(value, level=2)
        else:
            document.add_paragraph(value)
    write_atomic(path, document.save)


def write_odt(doc: Document, path: Path) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.style import Style, TableCellProperties, TextProperties
    from odf.table import Table as OdfTable
    from odf.table import TableCell, TableColumn, TableRow
    from odf.text import H, P

    document = OpenDocumentText()
    bold = Style(name="Header", family="paragraph")
    bold.addElement(TextProperties(fontweight="bold"))
    cell_style = Style(name="Cell", family="table-cell")
    cell_style.addElement(TableCellProperties(border="0.5pt solid #000000", padding="0.05cm"))
    document.automaticstyles.addElement(bold)
    document.automaticstyles.addElement(cell_style)
    document.text.addElement(H(outlinelevel=1, text=doc.title))
    for n, (kind, value) in enumerate(doc.blocks):
        if isinstance(value, Table):
            table = OdfTable(name=f"Table{n}")
            table.addElement(TableColumn(numbercolumnsrepeated=len(value.header)))
            for row, style in [(value.header, bold), *((r, None) for r in value.rows)]:
                tr = TableRow()
                for text in row:
                    cell = TableCell(stylename=cell_style, valuetype="string")
                    cell.addElement(P(stylename=style, text=text) if style else P(text=text))
                    tr.addElement(cell)
                table.addElement(tr)
            document.text.addElement(table)
        elif kind == "h2":
            document.text.addElement(H(outlinelevel=2, text=value))
        else:
            document.text.addElement(P(text=value))
    write_atomic(path, document.save)
