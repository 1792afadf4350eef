"""DOCX: one section per heading, with tables in document order."""

from __future__ import annotations

import re
from pathlib import Path

import docx
from docx.document import Document as WordDocument
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph
from llama_index.core import Document

from .guards import check_zip
from .sections import HeadingTrail, Section, one_line, to_documents

NO_TEXT_REASON = "no text: the DOCX has no paragraphs or tables with text (it may hold only images)"

_HEADING_STYLE = re.compile(r"Heading ([1-9])")
CELL_SEPARATOR = " | "


def load_docx(path: Path) -> list[Document]:
    check_zip(path, "DOCX")
    document = docx.Document(str(path))
    return to_documents(_sections(document), empty_reason=NO_TEXT_REASON)


def _sections(document: WordDocument) -> list[Section]:
    style_names = _paragraph_style_names(document)
    trail = HeadingTrail()
    sections: list[Section] = []
    lines: list[str] = []

    def close_section() -> None:
        if lines:
            sections.append(Section(text="\n".join(lines), heading=trail.path))
            lines.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.extend(_table_lines(block))
            continue
        level = _heading_level(style_names.get(block._p.style or ""))
        if level is not None and one_line(block.text):
            close_section()
            trail.enter(level, block.text)
        elif text := block.text.strip():
            lines.append(text)
    close_section()
    return sections


def _paragraph_style_names(document: WordDocument) -> dict[str, str]:
    # Resolving ``paragraph.style`` searches the style table on every call, which costs
    # seconds on a long handbook; reading the style id and mapping it once does not.
    return {style.style_id: style.name for style in document.styles if style.name}


def _heading_level(style_name: str | None) -> int | None:
    if not style_name:
        return None
    if style_name == "Title":
        return 0
    match = _HEADING_STYLE.fullmatch(style_name)
    return int(match.group(1)) if match else None


def _table_lines(table: Table) -> list[str]:
    lines = []
    for row in table.rows:
        cells = [_cell_text(cell) for cell in _distinct_cells(row.cells)]
        if line := CELL_SEPARATOR.join(c for c in cells if c):
            lines.append(line)
    return lines


def _distinct_cells(cells: list[_Cell]) -> list[_Cell]:
    """A horizontally merged cell is reported once per grid column; keep it once."""
    distinct: list[_Cell] = []
    for cell in cells:
        if not distinct or cell._tc is not distinct[-1]._tc:
            distinct.append(cell)
    return distinct


def _cell_text(cell: _Cell) -> str:
    parts = []
    for block in cell.iter_inner_content():
        if isinstance(block, Paragraph):
            parts.append(block.text.strip())
        else:
            # A nested table is flattened into its cell so the outer row stays one line.
            parts.append("; ".join(_table_lines(block)))
    return one_line(" ".join(p for p in parts if p))
