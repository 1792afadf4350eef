"""ODT: one section per heading (text:h), with paragraphs and lists, and one per table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llama_index.core import Document
from odf import teletype
from odf.element import Element
from odf.namespaces import TABLENS, TEXTNS
from odf.opendocument import load as load_opendocument

from .grid import table_section, text_lines
from .guards import check_zip
from .sections import HeadingTrail, Section, one_line, to_documents

NO_TEXT_REASON = "no text: the ODT has no paragraphs or tables with text"

_HEADING = (TEXTNS, "h")
_PARAGRAPH = (TEXTNS, "p")
_TABLE = (TABLENS, "table")
_ROW = (TABLENS, "table-row")
_CELL = (TABLENS, "table-cell")
_COVERED_CELL = (TABLENS, "covered-table-cell")  # under a merged cell: its text is the merged one's
_COLUMNS_REPEATED = (TABLENS, "number-columns-repeated")
# Spreadsheet-style runs of empty cells repeat thousands of times; a text table is never that wide.
MAX_REPEAT = 1024
_OUTLINE_LEVEL = (TEXTNS, "outline-level")
# Containers whose children are read as if they stood in the body (lists, sections,
# table row groups); anything else (tracked changes, declarations) is skipped.
_CONTAINERS = {
    (TEXTNS, "list"),
    (TEXTNS, "list-item"),
    (TEXTNS, "list-header"),
    (TEXTNS, "section"),
    (TABLENS, "table-header-rows"),
    (TABLENS, "table-rows"),
    (TABLENS, "table-row-group"),
}


def load_odt(path: Path) -> list[Document]:
    check_zip(path, "ODT")
    document = load_opendocument(str(path))
    return to_documents(_sections(document.text), empty_reason=NO_TEXT_REASON)


@dataclass
class _Block:
    kind: str  # "heading", "text" or "table"
    text: str = ""
    level: int = 0
    rows: list[list[str]] | None = None


def _sections(body: Element) -> list[Section]:
    trail = HeadingTrail()
    sections: list[Section] = []
    lines: list[str] = []

    def close_section() -> None:
        sections.append(Section(text="\n".join(lines), heading=trail.path))
        lines.clear()

    for block in _blocks(body):
        if block.kind == "heading":
            if block.text:  # an empty heading is spacing, not a new section
                close_section()
                trail.enter(block.level, block.text)
        elif block.kind == "table":
            if table := table_section(block.rows or [], trail.path):
                close_section()
                sections.append(table)
            else:
                lines.extend(text_lines(block.rows or []))
        else:
            lines.append(block.text)
    close_section()
    return sections


def _blocks(parent: Element) -> Iterator[_Block]:
    """Each heading, paragraph and table, in order."""
    for node in _elements(parent):
        if node.qname == _HEADING:
            yield _Block("heading", one_line(teletype.extractText(node)), _level(node))
        elif node.qname == _PARAGRAPH:
            if text := teletype.extractText(node).strip():
                yield _Block("text", text)
        elif node.qname == _TABLE:
            yield _Block("table", rows=_table_rows(node))
        elif node.qname in _CONTAINERS:
            yield from _blocks(node)


def _level(heading: Element) -> int:
    try:
        return int(heading.attributes.get(_OUTLINE_LEVEL, 1))
    except (TypeError, ValueError):
        return 1


def _table_rows(table: Element) -> list[list[str]]:
    rows = []
    for row in _rows(table):
        cells: list[str] = []
        for cell in _elements(row):
            if cell.qname not in (_CELL, _COVERED_CELL):
                continue
            text = _cell_text(cell) if cell.qname == _CELL else ""
            cells.extend([text] * _repeat(cell))
        rows.append(cells)
    return rows


def _repeat(cell: Element) -> int:
    try:
        return min(max(int(cell.attributes.get(_COLUMNS_REPEATED, 1)), 1), MAX_REPEAT)
    except (TypeError, ValueError):
        return 1


def _rows(table: Element) -> Iterator[Element]:
    for node in _elements(table):
        if node.qname == _ROW:
            yield node
        elif node.qname in _CONTAINERS:
            yield from _rows(node)


def _cell_text(cell: Element) -> str:
    # A nested table is flattened into its cell so the outer row stays one row.
    parts = [
        "; ".join(", ".join(c for c in row if c) for row in block.rows) if block.rows else block.text
        for block in _blocks(cell)
    ]
    return one_line(" ".join(part for part in parts if part))


def _elements(parent: Element) -> Iterator[Element]:
    return (child for child in parent.childNodes if child.nodeType == child.ELEMENT_NODE)
