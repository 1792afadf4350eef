"""PDF: the text of each page in reading order, its ruled tables as tables, under the outline's headings.

PDFium (pypdfium2, Apache-2.0 / BSD) reads the text: the engine Chrome renders PDFs with, about ten times
faster than pypdf on the corpus's reports (0.004 s a page against 0.04 s) and with no stream limits of its
own, which made pypdf refuse ordinary SEC filings as decompression bombs. What a page inflates to is
checked before PDFium parses it (``pdf_guard``). Ruled tables come from the page's rules (``pdf_tables``), a page
without a text layer from OCR (``ocr``), and running headers, footers and page numbers are removed
(``running_lines``). Every section keeps its page number; its heading is the outline's path at that page,
or, in a file without an outline, the numbered headings ("5.1 Inclusion criteria") its text shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from llama_index.core import Document

from .errors import LoadError
from .grid import form_lines, is_form, split_title, table_section, text_lines, tidy_rows
from .guards import current_limits, short_reason
from .pdf_guard import ENCRYPTED_REASON, check_inflation
from .pdf_tables import MIN_TABLE_PATHS, blocks, page_tables
from .running_lines import running_lines, running_words, strip_running
from .sections import HeadingTrail, Section, join_heading, to_documents

NO_TEXT_REASON = "no extractable text: the PDF may be scanned images; OCR is not configured"
NO_TEXT_AFTER_OCR_REASON = "no extractable text: its pages hold no text layer, and OCR read no words in their images"

_DAMAGED = " (the file may be truncated or damaged; export or download it again)"
# A PDF header may follow a little junk; readers accept it within the first kilobyte.
_HEADER_WINDOW = 1024
# A page with fewer characters of text is treated as a scan when it shows an image (a page number or a
# stamp on a scanned page is often real text).
_MIN_PAGE_CHARS = 20
# "5.1 Inclusion criteria", "12 REFERENCES", "3.2.1. Dosing": a short numbered line without a final full stop.
_NUMBERED_HEADING = re.compile(r"^((?:\d{1,2}\.){0,3}\d{1,2})\.?\s+([A-Z][^\n]{2,80})$")
_PDF_DATE = re.compile(r"^D:(\d{4})(\d{2})(\d{2})")
# Titles that word processors write for themselves, not for the document.
_TOOL_TITLE = re.compile(r"^(microsoft (word|powerpoint|excel) - |untitled|document\d*$)", re.IGNORECASE)


def load_pdf(path: Path) -> list[Document]:
    _check_header(path)
    check_inflation(path)
    pdf = _open(path)
    try:
        pages = [_page(pdf, index) for index in range(len(pdf))]
        headings = _outline_headings(pdf, len(pages))
        title, created = _file_metadata(pdf, path)
        scanned = [number for number, page in enumerate(pages, 1) if page.needs_ocr]
        ocr_done = bool(scanned) and current_limits().ocr
        if ocr_done:
            _read_scans(pdf, pages, scanned)
    except LoadError:
        raise
    except pdfium.PdfiumError as exc:
        raise LoadError(f"not a readable PDF: {short_reason(exc, path)}{_DAMAGED}") from exc
    finally:
        pdf.close()
    running = running_lines([page.text for page in pages])
    sections: list[Section] = []
    trail = HeadingTrail() if not any(headings) else None
    for number, page in enumerate(pages, 1):
        for block in blocks(page.text, page.tables):
            heading = trail.path if trail else headings[number - 1]
            if block.rows is not None:
                sections.append(_table(block.rows, join_heading(heading, block.caption), number))
            elif trail:
                sections += _numbered_sections(strip_running(block.text, running), number, trail)
            else:
                sections.append(Section(strip_running(block.text, running), heading, number))
    reason = NO_TEXT_AFTER_OCR_REASON if ocr_done else NO_TEXT_REASON
    return to_documents(
        sections,
        empty_reason=reason,
        title=title,
        created=created,
        running=running_words([page.text for page in pages], running),
    )


def _table(rows: list[list[str]], heading: str | None, page: int) -> Section:
    """A ruled grid as the other formats' tables are kept (title row into the heading, header first); a form
    (labels and their values side by side, as on an accident report) or a one-column box as text lines."""
    rows = tidy_rows(rows)
    title, body = split_title(rows)
    if is_form(body):
        return Section("\n".join(form_lines(body)), join_heading(heading, title), page)
    return table_section(rows, heading, page) or Section("\n".join(text_lines(rows)), heading, page)


@dataclass
class _Page:
    text: str
    tables: list[list[list[str]]]  # each table's rows, header first
    images: int

    @property
    def needs_ocr(self) -> bool:
        return len(self.text.strip()) < _MIN_PAGE_CHARS and self.images > 0


def _open(path: Path) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise LoadError(ENCRYPTED_REASON) from exc
        raise LoadError(f"not a readable PDF: {short_reason(exc, path)}{_DAMAGED}") from exc


def _page(pdf: pdfium.PdfDocument, index: int) -> _Page:
    page = pdf[index]
    try:
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
            kinds = [
                pdfium_c.FPDFPageObj_GetType(pdfium_c.FPDFPage_GetObject(page.raw, i))
                for i in range(pdfium_c.FPDFPage_CountObjects(page.raw))
            ]
            drawn = kinds.count(pdfium_c.FPDF_PAGEOBJ_PATH) + kinds.count(pdfium_c.FPDF_PAGEOBJ_FORM)
            tables = page_tables(page, textpage) if drawn >= MIN_TABLE_PATHS and text.strip() else []
        finally:
            textpage.close()
        return _Page(
            text=text,
            tables=tables,
            images=kinds.count(pdfium_c.FPDF_PAGEOBJ_IMAGE) + kinds.count(pdfium_c.FPDF_PAGEOBJ_FORM),
        )
    finally:
        page.close()


def _read_scans(pdf: pdfium.PdfDocument, pages: list[_Page], numbers: list[int]) -> None:
    from .ocr import page_reader  # onnxruntime and the OCR models load only for files that need them

    reader = page_reader()
    for number in numbers:
        page = pdf[number - 1]
        try:
            pages[number - 1].text = reader.read(page)
        finally:
            page.close()


def _outline_headings(pdf: pdfium.PdfDocument, count: int) -> list[str | None]:
    """Per page, the path of outline entries that have begun by that page."""
    entries = []
    for item in pdf.get_toc(max_depth=6):
        destination = item.get_dest()
        index = destination.get_index() if destination is not None else None
        if index is not None and 0 <= index < count and (title := item.get_title().strip()):
            entries.append((index, item.level, title))
    headings: list[str | None] = [None] * count
    if not entries:
        return headings
    trail = HeadingTrail()
    entries.sort(key=lambda entry: entry[0])  # stable: entries on one page keep the outline's order
    position = 0
    for page in range(count):
        while position < len(entries) and entries[position][0] <= page:
            _, level, title = entries[position]
            trail.enter(level + 1, title)
            position += 1
        headings[page] = trail.path
    return headings


def _numbered_sections(text: str, page: int, trail: HeadingTrail) -> list[Section]:
    sections = []
    lines: list[str] = []
    heading = trail.path
    for line in text.splitlines():
        match = _NUMBERED_HEADING.match(line.strip())
        if match and not match.group(2).rstrip().endswith((".", ",", ";")):
            if lines:
                sections.append(Section("\n".join(lines), heading, page))
                lines = []
            trail.enter(match.group(1).count(".") + 1, line.strip())
            heading = trail.path
            continue
        lines.append(line)
    sections.append(Section("\n".join(lines), heading, page))
    return sections


def _file_metadata(pdf: pdfium.PdfDocument, path: Path) -> tuple[str | None, str | None]:
    """The title and creation date the file records, where they are the document's and not a tool's."""
    metadata = pdf.get_metadata_dict(skip_empty=True)
    title = " ".join(metadata.get("Title", "").split())
    if _TOOL_TITLE.match(title) or title.lower() in (path.stem.lower(), path.name.lower()) or len(title) < 4:
        title = None
    created = None
    if match := _PDF_DATE.match(metadata.get("CreationDate", "")):
        try:
            created = date(*(int(part) for part in match.groups())).isoformat()
        except ValueError:
            created = None
    return title or None, created


def _check_header(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(_HEADER_WINDOW)
    if b"%PDF-" not in head:
        raise LoadError(
            "not a readable PDF: there is no %PDF- header, so it is another format renamed to .pdf or a damaged file"
        )
