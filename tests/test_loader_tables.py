"""Tables as table sections, per format: header first, under the heading they stand under, text around them kept.

Each test writes its own small file; the real files of every format are checked in test_loaders.py.
"""

from __future__ import annotations

import docx
import openpyxl
import pptx
import pytest
from ebooklib import epub
from odf.opendocument import OpenDocumentText
from odf.table import Table, TableCell, TableColumn, TableRow
from odf.text import H, P
from pptx.util import Inches
from test_loaders import assert_contract, tables, write

from retrieval.chunking import Chunker
from retrieval.loaders import load, web
from retrieval.loaders.sections import HeadingTrail
from retrieval.tables import parse_markdown

BANDS = [
    ["Level", "Title", "Salary band"],
    ["L3", "Engineer", "EUR 50,000 - 64,000"],
    ["L4", "Senior engineer", "EUR 65,000 - 80,000"],
]


def outline(documents) -> list[tuple[str | None, str]]:
    """(heading, text) per section, a table's text as "<table>"."""
    return [(d.metadata.get("heading"), "<table>" if d.metadata.get("table") else d.text) for d in documents]


# --- Markdown ---------------------------------------------------------------------------------

MARKDOWN = """\
# Pay

Bands are reviewed every April.

| Level | Title | Salary band |
| --- | --- | --- |
| L3 | Engineer | EUR 50,000 - 64,000 |
| L4 | Senior engineer | EUR 65,000 - 80,000 |

Bands apply from 1 May.

```text
| not | a | table |
| --- | --- | --- |
```

> | quoted | table |
> | --- | --- |
> | stays | text |

| Only one column |
| --- |
| stays text |

# Leave
"""


class TestMarkdown:
    def test_table_between_its_text(self, tmp_path):
        documents = load(write(tmp_path / "pay.md", MARKDOWN))
        assert_contract(documents)
        assert tables(documents) == [("Pay", BANDS[0], BANDS[1:])]
        assert outline(documents)[:3] == [
            ("Pay", "Bands are reviewed every April."),
            ("Pay", "<table>"),
            ("Pay", documents[2].text),
        ]
        after = documents[2].text
        assert after.startswith("Bands apply from 1 May.")
        # A fenced block, a quoted table and a one-column table are kept as the source they are.
        assert "```text\n| not | a | table |\n| --- | --- | --- |\n```" in after
        assert "> | quoted | table |" in after
        assert "| Only one column |\n| --- |\n| stays text |" in after

    def test_cells_keep_their_inline_markdown_and_escaped_pipes(self, tmp_path):
        content = "| Tool | Use |\n| --- | --- |\n| [grep](https://example.com) | find `a\\|b` |\n"
        documents = load(write(tmp_path / "tools.md", content))
        assert tables(documents) == [(None, ["Tool", "Use"], [["[grep](https://example.com)", "find `a/b`"]])]


# --- DOCX ------------------------------------------------------------------------------------


def _docx_table(document, rows: list[list[str]]):
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for row, values in zip(table.rows, rows, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    return table


class TestDocx:
    def test_table_with_caption_between_its_text(self, tmp_path):
        document = docx.Document()
        document.add_heading("Pay", level=1)
        document.add_paragraph("Bands are reviewed every April.")
        document.add_paragraph("Table 1: Salary bands", style="Caption")
        _docx_table(document, BANDS)
        document.add_paragraph("Bands apply from 1 May.")
        document.add_heading("Leave", level=1)
        document.add_paragraph("Twenty-five days.")
        path = tmp_path / "pay.docx"
        document.save(str(path))

        documents = load(path)
        assert_contract(documents)
        assert outline(documents) == [
            ("Pay", "Bands are reviewed every April."),
            ("Pay > Table 1: Salary bands", "<table>"),
            ("Pay", "Bands apply from 1 May."),
            ("Leave", "Twenty-five days."),
        ]
        assert tables(documents) == [("Pay > Table 1: Salary bands", BANDS[0], BANDS[1:])]

    def test_caption_after_the_table(self, tmp_path):
        document = docx.Document()
        _docx_table(document, BANDS)
        document.add_paragraph("Salary bands 2026", style="Caption")
        document.add_paragraph("Closing text.")
        path = tmp_path / "after.docx"
        document.save(str(path))
        assert outline(load(path)) == [("Salary bands 2026", "<table>"), (None, "Closing text.")]

    def test_merged_cells_repeated_headers_title_rows_and_nested_tables(self, tmp_path):
        document = docx.Document()
        table = _docx_table(
            document,
            [
                ["Salary bands", "", ""],
                ["Level", "Title", "Salary band"],
                ["L3", "Engineer", "EUR 50,000 - 64,000"],
                ["Level", "Title", "Salary band"],  # the header again, as on a new page
                ["L4", "Senior engineer", ""],
            ],
        )
        table.cell(0, 0).merge(table.cell(0, 2))  # a title over the table
        table.cell(4, 1).merge(table.cell(4, 2))  # one value over two columns
        inner = table.cell(4, 1).add_table(rows=1, cols=2)
        inner.cell(0, 0).text, inner.cell(0, 1).text = "from", "65,000"
        path = tmp_path / "merged.docx"
        document.save(str(path))

        ((heading, header, rows),) = tables(load(path))
        assert heading == "Salary bands"
        assert header == ["Level", "Title", "Salary band"]
        assert rows == [["L3", "Engineer", "EUR 50,000 - 64,000"], ["L4", "Senior engineer from, 65,000", ""]]

    def test_one_column_or_one_row_tables_stay_text(self, tmp_path):
        document = docx.Document()
        document.add_paragraph("Before.")
        _docx_table(document, [["Note"], ["Bring your badge."]])
        _docx_table(document, [["Phone", "555-0100"]])
        document.add_paragraph("After.")
        path = tmp_path / "boxes.docx"
        document.save(str(path))
        assert outline(load(path)) == [(None, "Before.\nNote\nBring your badge.\nPhone | 555-0100\nAfter.")]

    def test_a_long_table_is_chunked_between_rows_with_its_header(self, tmp_path):
        document = docx.Document()
        document.add_heading("Pay", level=1)
        _docx_table(document, [BANDS[0]] + [[f"L{n}", f"Title {n}", f"EUR {n},000"] for n in range(60)])
        path = tmp_path / "long.docx"
        document.save(str(path))

        chunks = Chunker(str.split, chunk_size=60, chunk_overlap=10).split(load(path))
        assert len(chunks) > 3
        for text, metadata in chunks:
            assert metadata == {"heading": "Pay", "table": True}
            assert parse_markdown(text)[0] == BANDS[0]


# --- HTML --------------------------------------------------------------------------------------

HTML = """<html><body>
<h1>Pay</h1>
<p>Bands are reviewed every April.</p>
<table>
<caption>Salary bands</caption>
<thead><tr><th>Level</th><th>Title</th><th>Salary band</th></tr></thead>
<tbody>
<tr><td>L3</td><td>Engineer</td><td>EUR 50,000 - 64,000</td></tr>
<tr><th>Level</th><th>Title</th><th>Salary band</th></tr>
<tr><td>L4</td><td>Senior engineer</td><td>EUR 65,000 - 80,000</td></tr>
</tbody>
</table>
<p>Bands apply from 1 May.</p>
<table><tr><td>•</td><td>A bullet set out as a table.</td></tr></table>
<h2>Office</h2>
<table role="presentation"><tr><td><p>Left column text.</p></td><td><p>Right column text.</p></td></tr></table>
<table>
<tr><td><h3>Contacts</h3><p>Ask HR.</p></td></tr>
<tr><td><table><tr><th>Name</th><th>Phone</th></tr><tr><td>Ada</td><td>555-0100</td></tr></table></td></tr>
</table>
</body></html>
"""


class TestHtml:
    def test_tables_headers_captions_and_layout(self, tmp_path):
        documents = load(write(tmp_path / "pay.html", HTML))
        assert_contract(documents)
        assert outline(documents) == [
            ("Pay", "Bands are reviewed every April."),
            ("Pay > Salary bands", "<table>"),
            ("Pay", "Bands apply from 1 May.\n• | A bullet set out as a table."),
            ("Pay > Office", "Left column text.\nRight column text."),  # a layout table is text
            ("Pay > Office > Contacts", "Ask HR."),  # a heading inside a layout table still cuts
            ("Pay > Office > Contacts", "<table>"),  # and a data table inside one is a table
        ]
        assert tables(documents) == [
            ("Pay > Salary bands", BANDS[0], BANDS[1:]),  # the header repeated inside is dropped
            ("Pay > Office > Contacts", ["Name", "Phone"], [["Ada", "555-0100"]]),
        ]

    def test_spans_are_repeated(self, tmp_path):
        page = """<table>
        <tr><th rowspan="2">Office</th><th colspan="2">Staff</th></tr>
        <tr><th>2025</th><th>2026</th></tr>
        <tr><td rowspan="2">Bergen Lake</td><td>110</td><td>120</td></tr>
        <tr><td colspan="2">closed for the summer</td></tr>
        </table>"""
        ((_, header, rows),) = tables(load(write(tmp_path / "spans.html", page)))
        assert header == ["Office", "Staff 2025", "Staff 2026"]  # two <th> rows are one header
        assert rows == [
            ["Bergen Lake", "110", "120"],
            ["Bergen Lake", "closed for the summer", "closed for the summer"],
        ]

    def test_financial_table_without_th(self, tmp_path):
        page = """<table>
        <tr><td></td><td></td><td colspan="3">Year ended December 31,</td></tr>
        <tr><td></td><td></td><td colspan="2">2025</td><td></td><td colspan="2">2024</td></tr>
        <tr><td>Revenue</td><td></td><td>$</td><td>1,200</td><td></td><td>$</td><td>1,000</td></tr>
        <tr><td>Net loss</td><td></td><td></td><td>(300</td><td>)</td><td></td><td>(50</td><td>)</td></tr>
        </table>"""
        ((heading, header, rows),) = tables(load(write(tmp_path / "10k.html", page)))
        assert heading == "Year ended December 31,"  # a row of one spanned cell titles the table
        assert header == ["", "2025", "2024"]
        assert rows == [["Revenue", "$1,200", "$1,000"], ["Net loss", "(300)", "(50)"]]

    def test_spans_past_the_limit_leave_the_table_as_text(self, tmp_path, monkeypatch):
        monkeypatch.setattr(web, "MAX_GRID_CELLS", 100)
        page = '<table><tr><td colspan="1000">a</td></tr><tr><td>b</td><td>c</td></tr></table>'
        documents = load(write(tmp_path / "wide.html", page))
        assert outline(documents) == [(None, "a\nb | c")]

    def test_email_bodies_keep_rows_as_lines(self):
        # Their callers join sections' text, which a table section has none of.
        text = web.html_to_text("<p>Hi</p><table><tr><th>A</th><th>B</th></tr><tr><td>1</td><td>2</td></tr></table>")
        assert text == "Hi\nA | B\n1 | 2"
        sections = web.html_sections(web.parse_html(HTML), HeadingTrail())
        assert all(section.rows is None for section in sections)


# --- EPUB ------------------------------------------------------------------------------------


def test_epub_chapters_keep_their_tables(tmp_path):
    book = epub.EpubBook()
    book.set_identifier("handbook-2026")
    book.set_title("Staff handbook")
    chapters = []
    # The pay chapter goes on in a second file under the same heading: its text joins, its table stays a table.
    for name, body in (
        ("pay.xhtml", HTML.split("<h2>Office</h2>")[0] + "</body></html>"),
        ("pay-2.xhtml", "<html><body><p>Bands are published on the intranet.</p></body></html>"),
    ):
        chapter = epub.EpubHtml(title="Pay", file_name=name, content=body)
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters[:1]
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    path = tmp_path / "handbook.epub"
    epub.write_epub(str(path), book)

    documents = load(path)
    assert_contract(documents)
    assert outline(documents) == [
        ("Pay", "Bands are reviewed every April."),
        ("Pay > Salary bands", "<table>"),
        ("Pay", "Bands apply from 1 May.\n• | A bullet set out as a table.\n\nBands are published on the intranet."),
    ]
    assert tables(documents) == [("Pay > Salary bands", BANDS[0], BANDS[1:])]


# --- PPTX ------------------------------------------------------------------------------------


class TestPptx:
    def test_table_on_a_slide(self, tmp_path):
        presentation = pptx.Presentation()
        slide = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
        slide.shapes.title.text = "Salary bands"
        slide.shapes.add_textbox(Inches(1), Inches(1.5), Inches(6), Inches(0.5)).text_frame.text = "Reviewed in April."
        shape = slide.shapes.add_table(4, 3, Inches(1), Inches(2), Inches(8), Inches(2))
        shape.table.cell(1, 0).merge(shape.table.cell(2, 0))  # one level over two rows
        shape.table.cell(3, 1).merge(shape.table.cell(3, 2))  # one title over two columns
        rows = [*BANDS, ["L5", "Staff engineer", ""]]
        for row, values in zip(shape.table.rows, rows, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                if not cell.is_spanned:
                    cell.text = value
        slide.notes_slide.notes_text_frame.text = "Mention the May date."
        second = presentation.slides.add_slide(presentation.slide_layouts[5])
        second.shapes.title.text = "Questions"
        path = tmp_path / "pay.pptx"
        presentation.save(str(path))

        documents = load(path)
        assert_contract(documents)
        assert [(d.metadata.get("page"), h, text) for d, (h, text) in zip(documents, outline(documents))] == [
            (1, "Salary bands", "Salary bands\nReviewed in April."),
            (1, "Salary bands", "<table>"),
            (1, "Salary bands", "Notes: Mention the May date."),
            (2, "Questions", "Questions"),
        ]
        ((_, header, body),) = tables(documents)
        assert header == BANDS[0]
        # The merged level holds for both rows; the merged title is read once.
        assert body == [
            ["L3", "Engineer", "EUR 50,000 - 64,000"],
            ["L3", "Senior engineer", "EUR 65,000 - 80,000"],
            ["L5", "Staff engineer", ""],
        ]


# --- XLSX and CSV -------------------------------------------------------------------------------


class TestSheets:
    def test_sheet_with_a_title_row(self, tmp_path):
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.title = "Pay"
        sheet.append(["Salary bands 2026"])
        for row in BANDS:
            sheet.append(row)
        path = tmp_path / "pay.xlsx"
        workbook.save(path)
        assert tables(load(path)) == [("Pay > Salary bands 2026", BANDS[0], BANDS[1:])]

    def test_numbers_first_are_named_by_column_letters_and_empty_columns_go(self, tmp_path):
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.title = "Readings"
        sheet["B2"], sheet["D2"] = 10.0, 2.5
        sheet["B3"], sheet["D3"] = 11.0, 2.75
        sheet.cell(row=4, column=700, value="far right")  # a wide, sparse sheet
        path = tmp_path / "readings.xlsx"
        workbook.save(path)
        assert tables(load(path)) == [
            ("Readings", ["B", "D", "ZX"], [["10", "2.5", ""], ["11", "2.75", ""], ["", "", "far right"]])
        ]

    def test_year_headers_are_headers(self, tmp_path):
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(["Item", 2025, 2026])
        sheet.append(["Revenue", 1200, 1350])
        path = tmp_path / "years.xlsx"
        workbook.save(path)
        assert tables(load(path))[0][1:] == (["Item", "2025", "2026"], [["Revenue", "1200", "1350"]])

    def test_one_column_sheet_is_text(self, tmp_path):
        workbook = openpyxl.Workbook()
        for value in ("Checklist", "Badge", "Laptop"):
            workbook.active.append([value])
        path = tmp_path / "list.xlsx"
        workbook.save(path)
        assert outline(load(path)) == [("Sheet", "Checklist\nBadge\nLaptop")]

    @pytest.mark.parametrize(
        ("content", "header", "rows"),
        [
            ("Level,Title\nL3,Engineer\n", ["Level", "Title"], [["L3", "Engineer"]]),
            ("\n\n1,2.5\n2,3.5\n", ["A", "B"], [["1", "2.5"], ["2", "3.5"]]),
        ],
    )
    def test_csv(self, tmp_path, content, header, rows):
        documents = load(write(tmp_path / "data.csv", content))
        assert_contract(documents)
        assert tables(documents) == [(None, header, rows)]


# --- ODT ---------------------------------------------------------------------------------------


class TestOdt:
    def test_table_between_its_text(self, tmp_path):
        document = OpenDocumentText()
        document.text.addElement(H(outlinelevel=1, text="Pay"))
        document.text.addElement(P(text="Bands are reviewed every April."))
        table = Table(name="Bands")
        table.addElement(TableColumn(numbercolumnsrepeated=3))
        for values in BANDS:
            row = TableRow()
            for value in values:
                cell = TableCell()
                cell.addElement(P(text=value))
                row.addElement(cell)
            table.addElement(row)
        document.text.addElement(table)
        document.text.addElement(P(text="Bands apply from 1 May."))
        path = tmp_path / "pay.odt"
        document.save(str(path))

        documents = load(path)
        assert_contract(documents)
        assert outline(documents) == [
            ("Pay", "Bands are reviewed every April."),
            ("Pay", "<table>"),
            ("Pay", "Bands apply from 1 May."),
        ]
        assert tables(documents) == [("Pay", BANDS[0], BANDS[1:])]
