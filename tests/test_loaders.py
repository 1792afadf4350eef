"""Tests for retrieval.loaders: real files of every format, small synthetic files, bad input."""

from __future__ import annotations

import random
import re
import time
from email.message import EmailMessage
from pathlib import Path

import docx
import pytest
from odf.opendocument import OpenDocumentText
from odf.text import H, P
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from retrieval.loaders import (
    SUPPORTED_SUFFIXES,
    Limits,
    LoadError,
    UnsupportedFileType,
    guards,
    load,
    web,
)
from retrieval.loaders import sections as loader_sections
from retrieval.tables import parse_markdown, records

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "corpus"
FORMATS = SHARED / "formats"
NTSB = SHARED / "ntsb_aviation_reports_pdf"
SAMPLES = ROOT / "samples"

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data is absent: real-format loader tests need it"
)


def texts(documents) -> str:
    return "\n".join(d.text for d in documents)


def headings(documents) -> list[str | None]:
    return [d.metadata.get("heading") for d in documents]


def section_with(documents, phrase: str):
    matches = [d for d in documents if phrase in d.text]
    assert matches, f"{phrase!r} is in no section"
    return matches[0]


def tables(documents) -> list[tuple[str | None, list[str], list[list[str]]]]:
    """(heading, header, rows) of each table section, in file order."""
    found = []
    for document in documents:
        if document.metadata.get("table"):
            header, rows = parse_markdown(document.text)
            found.append((document.metadata.get("heading"), header, rows))
    return found


def table_with(documents, cell: str):
    """(heading, header, rows) of the first table with ``cell`` in its header or rows."""
    for heading, header, rows in tables(documents):
        if cell in header or any(cell in row for row in rows):
            return heading, header, rows
    raise AssertionError(f"{cell!r} is in no table")


def assert_contract(documents) -> None:
    """What every loader promises about the sections it returns."""
    assert documents
    for document in documents:
        assert document.text == document.text.strip() and document.text
        assert set(document.metadata) <= {
            "page",
            "heading",
            "table",
            "document_title",
            "document_created",
            "document_running",
        }
        if "table" in document.metadata:
            assert document.metadata["table"] is True
            assert parse_markdown(document.text) is not None, "a table section is one Markdown table"
        if "page" in document.metadata:
            assert isinstance(document.metadata["page"], int) and document.metadata["page"] >= 1
        if "heading" in document.metadata:
            assert isinstance(document.metadata["heading"], str) and document.metadata["heading"]


def make_pdf(path: Path, pages: list[str]) -> Path:
    sheet = canvas.Canvas(str(path), pagesize=A4)
    for text in pages:
        sheet.drawString(72, 720, text)
        sheet.showPage()
    sheet.save()
    return path


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


# --- real files -------------------------------------------------------------------------


@needs_shared
class TestRealFormats:
    def test_docx_tables(self):
        documents = load(FORMATS / "docx-tables.docx")
        assert_contract(documents)
        assert tables(documents) == [
            (None, ["Header Col 1", "Header Col 2"], [["Lorem ipsum", "A link example"]]),
            (None, ["a", ">b<", "c"], [["d", "e, f; g&t, h", "i"], ["j", "k", "l"]]),  # nested: inside its cell
            (None, ["a", "b", ""], [["a", "c", "d"], ["e", "", "d"]]),  # a merged cell counts once
        ]
        # Tables come in document order, after the paragraph that introduces them.
        kinds = [d.text if not d.metadata.get("table") else "<table>" for d in documents]
        assert kinds == [
            "Simple uniform table", "<table>", "Nested Table", "<table>", "Table with merged cells", "<table>"
        ]  # fmt: skip

    def test_docx_long_handbook(self):
        started = time.perf_counter()
        documents = load(FORMATS / "handbook-872p.docx")
        elapsed = time.perf_counter() - started
        assert_contract(documents)
        assert elapsed < 10, f"818k-character DOCX took {elapsed:.1f} s"
        assert len(documents) > 200
        assert sum(len(d.text) for d in documents) > 700_000
        duties = section_with(documents, "fiduciary responsibility to the bankruptcy estate")
        assert duties.metadata["heading"] == ("CHAPTER 1 – INTRODUCTION > C. STATUTORY DUTIES OF A STANDING TRUSTEE")
        assert (
            "CHAPTER 3 - ADMINISTRATION OF CHAPTER 13 CASES > A. INITIAL REVIEW OF CHAPTER 13 CASES"
            " > 1. CONFLICTS OF INTEREST"
        ) in headings(documents)
        table = section_with(documents, "11 U.S.C. § 343 11 U.S.C. § 344 | Examination of the Debtor")
        assert table.metadata["heading"].endswith("9. INVOCATION OF FIFTH AMENDMENT BY THE DEBTOR")

    def test_html_10k(self):
        documents = load(FORMATS / "example-10k.html")
        assert_contract(documents)
        text = texts(documents)
        assert "Galaxy Gaming" in text
        assert "Total revenue | 19,984,378 | 10,230,316" in text
        assert "Total assets | $40,452,705 | $30,574,594" in text
        assert "0000013156" not in text  # the hidden inline-XBRL header is not content
        assert len(tables(documents)) >= 40
        _, header, rows = table_with(documents, "Total revenue")
        assert header == ["", "2021", "2020"]  # spacer and "$" cells are gone, the sign is on the figure
        assert ["Licensing fees", "$19,984,378", "$10,230,316"] in rows
        _, header, _ = table_with(documents, "March 31,")  # "2021" spans "High ($)" and "Low ($)"
        assert header == ["Quarter Ended", "2021 High ($)", "2021 Low ($)", "2020 High ($)", "2020 Low ($)"]
        # Bullets and footnotes set out as one-row tables stay text.
        assert "• | Expand the number of markets we serve;" in section_with(documents, "Expand the number").text

    def test_rtf(self):
        documents = load(FORMATS / "fake-doc.rtf")
        assert_contract(documents)
        assert "My First Heading" in documents[0].text
        assert "Row 2, Cell 2" in documents[0].text

    @pytest.mark.parametrize("name", ["fake-email-attachment.eml", "fake-email-attachment.msg"])
    def test_email_with_attachment(self, name):
        documents = load(FORMATS / name)
        assert_contract(documents)
        message, attachment = documents
        assert message.metadata == {"heading": "Fake email with attachment"}
        assert "Mallori Harrell" in message.text
        assert "Subject: Fake email with attachment" in message.text
        assert "Lots of whitespace" in message.text
        assert attachment.metadata == {"heading": "Fake email with attachment > fake-attachment.txt"}
        assert attachment.text == "Hey this is a fake attachment!"

    def test_eml_plain(self):
        documents = load(FORMATS / "family-day.eml")
        assert_contract(documents)
        assert headings(documents) == ["Family Day"]
        assert "petting zoo, funnel cake" in documents[0].text
        assert "Date: Wed, 21 Dec 2022 10:28:53 -0600" in documents[0].text

    def test_pptx_table(self):
        documents = load(FORMATS / "fake-power-point-table.pptx")
        assert_contract(documents)
        assert [d.metadata["page"] for d in documents] == [1]
        assert tables(documents) == [
            (
                "A Slide with a Table",
                ["Column 1", "Column 2", "Column 3"],
                [["Red", "Green", "Blue"], ["Purple", "Orange", "Yellow"], ["Tangerine", "Pink", "Aqua"]],
            )
        ]

    def test_pptx_slides(self):
        documents = load(FORMATS / "sample-presentation.pptx")
        assert_contract(documents)
        assert [d.metadata["page"] for d in documents] == [1, 2, 3, 4]
        assert headings(documents)[1] == "This is the first content slide"
        assert "With a sub-bullet" in documents[1].text
        assert documents[3].metadata == {"page": 4, "heading": "This is kinda backwards, huh?", "table": True}
        assert tables(documents)[0][1:] == (
            ["Table", "A", "B", "C"],
            [["1", "A1", "B1", "C1"], ["2", "A2", "B2", "C2"]],
        )

    def test_odt(self):
        documents = load(FORMATS / "fake.odt")
        assert_contract(documents)
        text = texts(documents)
        assert "Lorem ipsum dolor sit amet." in text
        assert tables(documents) == [
            (
                None,
                ["Header row", "Mon", "Wed", "Fri"],
                [["Color", "Blue", "Red", "Green"], ["Time", "1pm", "2pm", "3pm"], ["Leader", "Sarah", "Mark", "Ryan"]],
            )
        ]

    def test_xlsx_sheets(self):
        documents = load(FORMATS / "stanley-cups.xlsx")
        assert_contract(documents)
        assert headings(documents) == ["Stanley Cups", "Stanley Cups Since 67"]
        # The title row above each table repeats the sheet's name; the header is the row below it.
        (_, first_header, first), (_, second_header, second) = tables(documents)
        assert first_header == second_header == ["Team", "Location", "Stanley Cups"]
        assert ["Maple Leafs", "TOR", "13"] in first  # 13.0 in the file reads as 13
        assert ["Maple Leafs", "TOR", "0"] in second

    def test_xlsx_sparse_rows(self):
        documents = load(FORMATS / "xlsx-subtable-cases.xlsx")
        assert_contract(documents)
        assert headings(documents) == ["Sheet1"]
        ((_, header, rows),) = tables(documents)
        assert header == ["a", "b", "", ""]  # column C has text further down; no column is empty throughout
        assert ["c", "d", "", "e"] in rows and ["", "2. e", "", ""] in rows
        assert all(any(row) for row in rows)
        assert rows.count(["a", "b", "", ""]) == 2  # in a sheet, a row like the header starts the next block

    def test_epub(self):
        documents = load(FORMATS / "winter-sports.epub")
        assert_contract(documents)
        rules = section_with(documents, "The puck shall be made of india-rubber")
        assert rules.metadata["heading"] == (
            "WINTER SPORTS IN SWITZERLAND > CHAPTER V ICE-HOCKEY > Rules of Match Play"
        )
        chapters = [h for h in headings(documents) if h and "CHAPTER" in h]
        assert chapters[0].endswith("CHAPTER I THE SUN-SEEKER")
        assert any("CHAPTER VIII FOR PARENTS AND GUARDIANS" in h for h in chapters)

    def test_ntsb_pdfs(self):
        reports = sorted(NTSB.glob("*.pdf"))
        assert len(reports) >= 20
        for report in reports:
            documents = load(report)
            assert_contract(documents)
            # Each page's text in page order; the report's ruled form as "label value" lines, each value beside its
            # label rather than a grid whose "header" would be the form's first field.
            pages = [d.metadata["page"] for d in documents]
            assert pages == sorted(pages) and set(pages) == set(range(1, max(pages) + 1)), report.name
            text = "\n".join(d.text for d in documents)
            assert re.search(r"^(.+; )?Certificate: \S", text, re.MULTILINE), report.name
            assert sum(len(d.text) for d in documents) > 2000, report.name
            assert "National Transportation Safety Board" in documents[0].text

    def test_ntsb_known_phrase(self):
        documents = load(NTSB / "20080124X00101.pdf")
        assert "Location: Alton, NH" in documents[0].text
        assert "failure to maintain clearance above a frozen lake" in documents[0].text

    def test_truncated_real_files_raise_only_load_error(self, tmp_path):
        for source in sorted(FORMATS.iterdir()):
            if source.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            data = source.read_bytes()
            half = write(tmp_path / f"half{source.suffix}", data[: len(data) // 2])
            try:
                assert_contract(load(half))  # text formats may still read
            except LoadError:
                pass


def _sample_files() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    return sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("path", _sample_files(), ids=lambda p: str(p.relative_to(SAMPLES)))
def test_project_samples_load(path):
    assert_contract(load(path))


# --- small synthetic files ----------------------------------------------------------------


MARKDOWN = """\
---
title: Employee handbook
owner: HR
---
Welcome to the company.

# Leave

All staff get leave.

## Sick leave

Call your manager before 9:00.

```bash
# this is a shell comment, not a heading
echo done
```

## Annual leave
Twenty-five days a year.

Travel
======
Book through the portal.
"""


class TestMarkdown:
    def test_heading_paths(self, tmp_path):
        documents = load(write(tmp_path / "handbook.md", MARKDOWN))
        assert_contract(documents)
        assert headings(documents) == [
            "Employee handbook",
            "Employee handbook > Leave",
            "Employee handbook > Leave > Sick leave",
            "Employee handbook > Leave > Annual leave",
            "Employee handbook > Travel",
        ]
        assert documents[0].text == "Welcome to the company."
        assert "owner: HR" not in texts(documents)  # front matter is metadata, not text

    def test_hash_in_code_fence_is_text(self, tmp_path):
        documents = load(write(tmp_path / "handbook.markdown", MARKDOWN))
        sick = section_with(documents, "# this is a shell comment, not a heading")
        assert sick.metadata["heading"] == "Employee handbook > Leave > Sick leave"
        assert "echo done" in sick.text

    def test_windows_line_ends_and_odd_breaks(self, tmp_path):
        content = "# One\r\nform\x0cfeed and\u2028separator\r\n# Two\r\nlast\r\n"
        documents = load(write(tmp_path / "crlf.md", content))
        assert [(d.metadata["heading"], d.text) for d in documents] == [
            ("One", "form\x0cfeed and\u2028separator"),
            ("Two", "last"),
        ]

    def test_without_front_matter_or_headings(self, tmp_path):
        documents = load(write(tmp_path / "note.md", "---\n\nJust a rule above, then text.\n"))
        assert [(d.metadata, d.text) for d in documents] == [({}, "---\n\nJust a rule above, then text.")]


class TestPlainText:
    def test_utf8(self, tmp_path):
        documents = load(write(tmp_path / "note.txt", "  Café opens at 8.\n\n"))
        assert [(d.metadata, d.text) for d in documents] == [({}, "Café opens at 8.")]

    def test_utf8_bom(self, tmp_path):
        documents = load(write(tmp_path / "note.txt", b"\xef\xbb\xbfHello"))
        assert documents[0].text == "Hello"

    def test_utf16_with_bom(self, tmp_path):
        documents = load(write(tmp_path / "note.txt", "Grüße aus Zürich".encode("utf-16")))
        assert documents[0].text == "Grüße aus Zürich"

    def test_legacy_encoding(self, tmp_path):
        text = "Le café est ouvert à huit heures. " * 20
        documents = load(write(tmp_path / "note.txt", text.encode("cp1252")))
        assert "café est ouvert à huit" in documents[0].text

    def test_only_whitespace(self, tmp_path):
        with pytest.raises(LoadError, match="no text"):
            load(write(tmp_path / "blank.txt", "  \n\t\n"))

    def test_a_page_of_front_matter_alone_says_so(self, tmp_path):
        with pytest.raises(LoadError, match="only front matter"):
            load(write(tmp_path / "moved.md", "---\ntitle: Travel\nredirect_to: /travel/\n---\n\n"))


class TestCsv:
    def test_rows_name_their_columns(self, tmp_path):
        documents = load(write(tmp_path / "teams.csv", "Team,City,Cups\nBlues,STL,1\nLeafs,TOR,13\n"))
        assert_contract(documents)
        assert documents[0].metadata == {"table": True}
        assert records(documents[0].text) == ["Team: Blues; City: STL; Cups: 1", "Team: Leafs; City: TOR; Cups: 13"]

    def test_sniffs_semicolons_and_keeps_quoted_newlines(self, tmp_path):
        content = 'name;note\nAda;"first line\nsecond line"\nBob;\n'
        documents = load(write(tmp_path / "notes.csv", content))
        assert records(documents[0].text) == ["name: Ada; note: first line second line", "name: Bob"]

    def test_header_only(self, tmp_path):
        documents = load(write(tmp_path / "empty.csv", "a,b,c\n"))
        assert documents[0].text == "a | b | c"


class TestSyntheticOffice:
    def test_docx_heading_path_and_tables(self, tmp_path):
        document = docx.Document()
        document.add_paragraph("Employee handbook", style="Title")
        document.add_paragraph("Intro text.")
        document.add_heading("Leave", level=1)
        document.add_heading("Sick leave", level=2)
        document.add_paragraph("Call in before 9:00.")
        table = document.add_table(rows=2, cols=2)
        for row, values in zip(table.rows, [("Days", "Pay"), ("1-5", "100%")]):
            for cell, value in zip(row.cells, values):
                cell.text = value
        document.add_paragraph("After the table.")
        document.add_heading("Travel", level=1)
        document.add_paragraph("Book through the portal.")
        path = tmp_path / "handbook.docx"
        document.save(str(path))

        documents = load(path)
        assert_contract(documents)
        assert [(d.metadata.get("heading"), d.text) for d in documents] == [
            ("Employee handbook", "Intro text."),
            ("Employee handbook > Leave > Sick leave", "Call in before 9:00."),
            ("Employee handbook > Leave > Sick leave", "| Days | Pay |\n| --- | --- |\n| 1-5 | 100% |"),
            ("Employee handbook > Leave > Sick leave", "After the table."),
            ("Employee handbook > Travel", "Book through the portal."),
        ]

    def test_odt_headings(self, tmp_path):
        document = OpenDocumentText()
        document.text.addElement(P(text="Preamble."))
        document.text.addElement(H(outlinelevel=1, text="Leave"))
        document.text.addElement(H(outlinelevel=2, text="Sick leave"))
        document.text.addElement(P(text="Call in before 9:00."))
        document.text.addElement(H(outlinelevel=1, text="Travel"))
        document.text.addElement(P(text="Book through the portal."))
        path = tmp_path / "handbook.odt"
        document.save(str(path))

        documents = load(path)
        assert [(d.metadata.get("heading"), d.text) for d in documents] == [
            (None, "Preamble."),
            ("Leave > Sick leave", "Call in before 9:00."),
            ("Travel", "Book through the portal."),
        ]


HTML = """<!doctype html>
<html><head><title>Ignored</title><style>p { color: red }</style></head>
<body>
<nav><a href="/">Home</a> | <a href="/hr">HR</a></nav>
<script>var secret = "not content";</script>
<h1>Product <em>FAQ</em></h1>
<p>Read this   first.</p>
<h2>Battery</h2>
<p>It lasts<br>40 minutes.</p>
<div style="display: none">hidden text</div>
<h3>Charging</h3>
<table><tr><th>Charger</th><th>Time</th></tr><tr><td>Fast</td><td>55 min</td></tr></table>
<h2>Support</h2>
<ul><li>Email us</li><li>Call us</li></ul>
</body></html>
"""


class TestHtml:
    def test_sections_and_cleanup(self, tmp_path):
        documents = load(write(tmp_path / "faq.html", HTML))
        assert_contract(documents)
        assert [(d.metadata.get("heading"), d.text) for d in documents] == [
            ("Product FAQ", "Read this first."),
            ("Product FAQ > Battery", "It lasts\n40 minutes."),
            ("Product FAQ > Battery > Charging", "| Charger | Time |\n| --- | --- |\n| Fast | 55 min |"),
            ("Product FAQ > Support", "Email us\nCall us"),
        ]

    def test_htm_suffix_and_no_visible_text(self, tmp_path):
        page = "<html><body><script>x()</script><nav>Menu</nav></body></html>"
        with pytest.raises(LoadError, match="no text"):
            load(write(tmp_path / "empty.htm", page))


class TestSyntheticEmail:
    def test_html_only_body_and_attachments(self, tmp_path):
        message = EmailMessage()
        message["Subject"] = "Quarterly notes"
        message["From"] = "Ada <ada@example.com>"
        message["To"] = "team@example.com"
        message.set_content("<p>Hello <b>team</b>,</p><p>see attached.</p>", subtype="html")
        message.add_attachment(
            b"# Agenda\n\nShip the drone.\n",
            maintype="text",
            subtype="markdown",
            filename="notes.md",
        )
        message.add_attachment(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", filename="logo.png")
        message.add_attachment(b"Plan B.", maintype="text", subtype="plain", filename="C:\\Users\\ada\\plan.txt")
        message.add_attachment(b"", maintype="application", subtype="pdf", filename="../../empty.pdf")
        path = write(tmp_path / "notes.eml", bytes(message))

        documents = load(path)
        assert_contract(documents)
        assert headings(documents) == [
            "Quarterly notes",
            "Quarterly notes > notes.md > Agenda",
            "Quarterly notes > plan.txt",  # the sender's folders are not part of the name
        ]
        assert "From: Ada <ada@example.com>" in documents[0].text
        assert "Hello team,\nsee attached." in documents[0].text
        assert documents[1].text == "Ship the drone."


class TestPdf:
    def test_pages(self, tmp_path):
        documents = load(make_pdf(tmp_path / "two.pdf", ["First page text.", "Second page text."]))
        assert [(d.metadata["page"], d.text) for d in documents] == [(1, "First page text."), (2, "Second page text.")]

    def test_blank_pages_are_dropped(self, tmp_path):
        writer = PdfWriter(clone_from=make_pdf(tmp_path / "one.pdf", ["Only text."]))
        writer.add_blank_page()
        path = tmp_path / "with-blank.pdf"
        writer.write(path)
        assert [d.metadata["page"] for d in load(path)] == [1]

    def test_empty_user_password_is_opened(self, tmp_path):
        writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Readable anyway."]))
        writer.encrypt(user_password="", owner_password="owner")
        path = tmp_path / "protected.pdf"
        writer.write(path)
        assert PdfReader(path).is_encrypted
        assert load(path)[0].text == "Readable anyway."


# --- bad input ------------------------------------------------------------------------------


def assert_load_error(path: Path, reason: str) -> LoadError:
    return assert_load_error_with(path, None, reason)


def assert_load_error_with(path: Path, limits: Limits | None, reason: str) -> LoadError:
    with pytest.raises(LoadError) as caught:
        load(path, limits)
    message = str(caught.value)
    assert reason in message
    assert str(path.parent) not in message, "the caller adds the path, the reason must not"
    return caught.value


class TestBadInput:
    @pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
    def test_empty_file(self, tmp_path, suffix):
        assert_load_error(write(tmp_path / f"empty{suffix}", b""), "empty file")

    def test_truncated_pdf(self, tmp_path):
        data = make_pdf(tmp_path / "full.pdf", ["Some text here."] * 3).read_bytes()
        path = write(tmp_path / "truncated.pdf", data[: len(data) // 2])
        assert_load_error(path, "not a readable PDF: ")

    def test_encrypted_pdf(self, tmp_path):
        writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Top secret."]))
        writer.encrypt("secret")
        path = tmp_path / "encrypted.pdf"
        writer.write(path)
        assert_load_error(path, "encrypted PDF: decrypt it first")

    def test_pdf_without_text(self, tmp_path):
        writer = PdfWriter()
        writer.add_blank_page(width=595, height=842)
        path = tmp_path / "scan.pdf"
        writer.write(path)
        error = assert_load_error(path, "no extractable text")
        assert str(error) == ("no extractable text: the PDF may be scanned images; OCR is not configured")

    def test_text_named_pdf(self, tmp_path):
        assert_load_error(write(tmp_path / "fake.pdf", "just some words\n" * 10), "not a readable PDF: ")

    @pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx", ".odt", ".epub"])
    def test_text_named_as_zip_format(self, tmp_path, suffix):
        kind = suffix[1:].upper()
        assert_load_error(write(tmp_path / f"fake{suffix}", "just some words\n" * 10), f"not a readable {kind}: ")

    @pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx", ".odt", ".epub"])
    def test_zip_without_the_expected_parts(self, tmp_path, suffix):
        import zipfile

        path = tmp_path / f"other{suffix}"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not an office document")
        assert_load_error(path, f"not a readable {suffix[1:].upper()}: ")

    def test_text_named_msg(self, tmp_path):
        assert_load_error(write(tmp_path / "fake.msg", "just some words\n" * 10), "not a readable MSG: ")

    @pytest.mark.parametrize("suffix", [".txt", ".md", ".csv", ".rtf", ".eml", ".html"])
    def test_binary_named_as_text(self, tmp_path, suffix):
        data = random.Random(7).randbytes(4096)
        assert_load_error(
            write(tmp_path / f"noise{suffix}", data),
            "not a text file: the bytes are binary or in an unknown encoding",
        )

    def test_control_characters_without_nul(self, tmp_path):
        data = bytes(range(1, 9)) * 200
        assert_load_error(write(tmp_path / "noise.txt", data), "not a text file")

    @pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
    def test_random_bytes_raise_only_load_error(self, tmp_path, suffix):
        path = write(tmp_path / f"noise{suffix}", random.Random(suffix).randbytes(2048))
        with pytest.raises(LoadError):
            load(path)

    def test_unsupported_suffix(self, tmp_path):
        error = assert_load_error(write(tmp_path / "data.xyz", "text"), "unsupported file type .xyz")
        assert isinstance(error, UnsupportedFileType)
        for suffix in (".pdf", ".docx", ".md", ".eml"):
            assert suffix in str(error)

    def test_missing_path(self, tmp_path):
        error = assert_load_error(tmp_path / "missing.pdf", "no such file")
        assert str(error) == "no such file"

    def test_directory(self, tmp_path):
        folder = tmp_path / "folder.md"
        folder.mkdir()
        assert str(assert_load_error(folder, "is a directory")) == "is a directory"

    def test_oversized_file(self, tmp_path, monkeypatch):
        monkeypatch.setattr(guards, "MAX_FILE_BYTES", 10)
        assert_load_error(write(tmp_path / "big.txt", "x" * 100), "file too large")

    def test_zip_that_expands_too_far(self, tmp_path, monkeypatch):
        import zipfile

        monkeypatch.setattr(guards, "MAX_UNZIPPED_BYTES", 1000)
        path = tmp_path / "bomb.docx"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("word/document.xml", "<" * 100_000)
        assert_load_error(path, "expand to")

    def test_rtf_that_is_not_rtf(self, tmp_path):
        assert_load_error(write(tmp_path / "plain.rtf", "plain words"), "not a readable RTF")

    def test_text_with_nul_bytes_says_so(self, tmp_path):
        assert_load_error(write(tmp_path / "nul.txt", b"words\x00 and more words\n" * 20), "it holds NUL bytes")

    @pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
    def test_utf16_without_bom_is_read(self, tmp_path, encoding):
        path = write(tmp_path / "wide.txt", "Fire drills are on Mondays.\n".encode(encoding))
        assert load(path)[0].text == "Fire drills are on Mondays."

    def test_encoded_data_runs_are_dropped_and_a_file_of_nothing_else_is_refused(self, tmp_path):
        blob = "QUJD" * 3000  # 12,000 characters without a space
        assert load(write(tmp_path / "mixed.md", f"Prose stays.\n\n{blob}\n"))[0].text == "Prose stays."
        assert_load_error(write(tmp_path / "blob.txt", blob), "encoded data")
        near = "x" * loader_sections.MAX_RUN_CHARS  # at the limit: kept
        assert load(write(tmp_path / "near.txt", near))[0].text == near

    def test_html_nested_past_the_limit(self, tmp_path):
        depth = web.MAX_DEPTH + 10
        path = write(tmp_path / "deep.html", "<p>Top</p>" + "<div>" * depth + "x" + "</div>" * depth)
        assert_load_error(path, f"more than {web.MAX_DEPTH} levels deep")

    def test_zip_member_that_leaves_the_archive(self, tmp_path):
        import zipfile

        path = tmp_path / "slip.docx"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("../../evil.sh", "rm -rf /")
        assert_load_error(path, "a path that leads out of the archive")

    def test_zip_member_that_expands_like_a_bomb(self, tmp_path, monkeypatch):
        import zipfile

        monkeypatch.setattr(guards, "ZIP_RATIO_GRACE_BYTES", 1024 * 1024)
        path = tmp_path / "bomb.xlsx"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (2 * 1024 * 1024))
        assert_load_error(path, "more than 100 times, as a zip bomb does")

    def test_limits_hold_for_one_load_and_the_attachments_it_reads(self, tmp_path):
        path = write(tmp_path / "note.txt", "ten words of text about nothing in particular at all")
        assert_load_error_with(
            path, Limits(10, 1000, file_setting="ASSISTANT_MAX_FILE_MB"), "raise ASSISTANT_MAX_FILE_MB"
        )
        assert_load_error_with(path, Limits(1000, 20), "too much text: 52 characters, limit 20")
        assert load(path)[0].text.startswith("ten words")  # the defaults again once that load is over
        message = EmailMessage()
        message["Subject"] = "Report"
        message.set_content("See the attachment.")
        message.add_attachment(b"word " * 1000, maintype="text", subtype="plain", filename="long.txt")
        mail = write(tmp_path / "mail.eml", bytes(message))
        assert "Report > long.txt" not in headings(load(mail, Limits(100_000, 1000)))  # over the limit: left out
        assert "Report > long.txt" in headings(load(mail))

    def test_symlink_loop(self, tmp_path):
        (tmp_path / "loop.md").symlink_to("loop.md")
        assert_load_error(tmp_path / "loop.md", "symlink loop")


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == frozenset(
        {
            ".pdf",
            ".docx",
            ".pptx",
            ".xlsx",
            ".html",
            ".htm",
            ".md",
            ".markdown",
            ".txt",
            ".csv",
            ".eml",
            ".msg",
            ".epub",
            ".odt",
            ".rtf",
        }
    )
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)


def test_suffix_is_case_insensitive(tmp_path):
    assert load(write(tmp_path / "NOTE.TXT", "upper-case suffix"))[0].text == "upper-case suffix"
