"""DOCX: one section per heading, and one per table, in document order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import docx
from docx.document import Document as WordDocument
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph
from llama_index.core import Document

from .grid import table_section, text_lines
from .guards import check_zip
from .sections import HeadingTrail, Section, join_heading, one_line, to_documents

NO_TEXT_REASON = "no text: the DOCX has no paragraphs or tables with text (it may hold only images)"

_HEADING_STYLE = re.compile(r"Heading ([1-9])")
_CAPTION_STYLE = "caption"

Block = Paragraph | Table


def load_docx(path: Path) -> list[Document]:
    check_zip(path, "DOCX")
    document = docx.Document(str(path))
    return to_documents(_sections(document), empty_reason=NO_TEXT_REASON)


def _sections(document: WordDocument) -> list[Section]:
    style_names = _paragraph_style_names(document)
    blocks: list[Block] = list(document.iter_inner_content())
    # Looked up once: a paragraph's style id is an XPath query, and both captions and headings need it.
    styles = [style_names.get(block._p.style or "") if isinstance(block, Paragraph) else None for block in blocks]
    rows = {index: _table_rows(block) for index, block in enumerate(blocks) if isinstance(block, Table)}
    # Headed by their title row alone for now; the heading path they stand under is known only in the walk.
    tables = {index: table for index, cells in rows.items() if (table := table_section(cells, None))}
    captions = _captions(blocks, set(tables), styles)
    caption_paragraphs = {index for index, _ in captions.values()}
    trail = HeadingTrail()
    sections: list[Section] = []
    lines: list[str] = []

    def close_section() -> None:
        if lines:
            sections.append(Section(text="\n".join(lines), heading=trail.path))
            lines.clear()

    for index, block in enumerate(blocks):
        if isinstance(block, Table):
            if table := tables.get(index):
                close_section()
                caption = captions[index][1] if index in captions else None
                title = table.heading if table.heading != caption else None
                table.heading = join_heading(trail.path, caption, title)
                sections.append(table)
            else:
                lines.extend(text_lines(rows[index]))
            continue
        if index in caption_paragraphs:
            continue  # it names its table, in that table's heading
        level = _heading_level(styles[index])
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


def _captions(blocks: Sequence[Block], tables: set[int], styles: Sequence[str | None]) -> dict[int, tuple[int, str]]:
    """Table index -> (paragraph index, text) of the "Caption" paragraph that names it.

    Word puts a table's caption above it by default, so a caption between two tables names the one
    below; one right after a table names it only when nothing above already does.
    """
    captions: dict[int, tuple[int, str]] = {}
    for index, block in enumerate(blocks):
        # The style first: a paragraph's text is built from its runs, which costs on a long handbook.
        if (styles[index] or "").lower() != _CAPTION_STYLE or not isinstance(block, Paragraph):
            continue
        if not (text := one_line(block.text)):
            continue
        if index + 1 in tables:
            captions[index + 1] = (index, text)
        elif index - 1 in tables and index - 1 not in captions:
            captions[index - 1] = (index, text)
    return captions


def _table_rows(table: Table) -> list[list[str]]:
    """Cell texts row by row; a merged cell's text once, at its first column, so columns stay aligned."""
    rows = []
    for row in table.rows:
        texts: list[str] = []
        previous = None
        for cell in row.cells:
            # python-docx reports a horizontally merged cell once per grid column it covers.
            texts.append("" if cell._tc is previous else _cell_text(cell))
            previous = cell._tc
        rows.append(texts)
    return rows


def _nested_table_text(table: Table) -> str:
    # Inside a cell of a table kept as a grid, a "|" would read as a column of the outer table.
    rows = ([_cell_text(cell) for cell in _distinct_cells(row.cells)] for row in table.rows)
    return "; ".join(", ".join(cell for cell in row if cell) for row in rows if any(row))


def _distinct_cells(cells: Sequence[_Cell]) -> list[_Cell]:
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
            # A nested table is flattened into its cell so the outer row stays one row.
            parts.append(_nested_table_text(block))
    return one_line(" ".join(p for p in parts if p))
