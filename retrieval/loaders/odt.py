"""ODT: one section per heading (text:h), with paragraphs, lists and tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from llama_index.core import Document
from odf import teletype
from odf.element import Element
from odf.namespaces import TABLENS, TEXTNS
from odf.opendocument import load as load_opendocument

from .guards import check_zip
from .sections import HeadingTrail, Section, one_line, to_documents

NO_TEXT_REASON = "no text: the ODT has no paragraphs or tables with text"
CELL_SEPARATOR = " | "

_HEADING = (TEXTNS, "h")
_PARAGRAPH = (TEXTNS, "p")
_TABLE = (TABLENS, "table")
_ROW = (TABLENS, "table-row")
_CELL = (TABLENS, "table-cell")
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


def _sections(body: Element) -> list[Section]:
    trail = HeadingTrail()
    sections: list[Section] = []
    lines: list[str] = []
    for kind, level, text in _blocks(body):
        if kind == "heading":
            if text:  # an empty heading is spacing, not a new section
                sections.append(Section(text="\n".join(lines), heading=trail.path))
                lines.clear()
                trail.enter(level, text)
        else:
            lines.append(text)
    sections.append(Section(text="\n".join(lines), heading=trail.path))
    return sections


def _blocks(parent: Element) -> Iterator[tuple[str, int, str]]:
    """(kind, heading level, text) for each heading, paragraph and table row, in order."""
    for node in _elements(parent):
        if node.qname == _HEADING:
            yield "heading", _level(node), one_line(teletype.extractText(node))
        elif node.qname == _PARAGRAPH:
            if text := teletype.extractText(node).strip():
                yield "text", 0, text
        elif node.qname == _TABLE:
            for line in _table_lines(node):
                yield "text", 0, line
        elif node.qname in _CONTAINERS:
            yield from _blocks(node)


def _level(heading: Element) -> int:
    try:
        return int(heading.attributes.get(_OUTLINE_LEVEL, 1))
    except (TypeError, ValueError):
        return 1


def _table_lines(table: Element) -> Iterator[str]:
    for row in _rows(table):
        cells = [_cell_text(cell) for cell in _elements(row) if cell.qname == _CELL]
        if line := CELL_SEPARATOR.join(c for c in cells if c):
            yield line


def _rows(table: Element) -> Iterator[Element]:
    for node in _elements(table):
        if node.qname == _ROW:
            yield node
        elif node.qname in _CONTAINERS:
            yield from _rows(node)


def _cell_text(cell: Element) -> str:
    parts = [text for _, _, text in _blocks(cell)]
    return one_line(" ".join(parts))


def _elements(parent: Element) -> Iterator[Element]:
    return (child for child in parent.childNodes if child.nodeType == child.ELEMENT_NODE)
