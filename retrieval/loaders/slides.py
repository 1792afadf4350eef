"""PPTX: one section per slide (page = slide number, heading = slide title), and one per table on it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pptx
from llama_index.core import Document
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.shapes.base import BaseShape
from pptx.slide import Slide
from pptx.table import Table

from .grid import table_section, text_lines
from .guards import check_zip
from .sections import Section, one_line, to_documents

NO_TEXT_REASON = "no text: the slides hold no text, tables or notes (they may be only images)"


def load_pptx(path: Path) -> list[Document]:
    check_zip(path, "PPTX")
    presentation = pptx.Presentation(str(path))
    sections = [
        section
        for number, slide in enumerate(presentation.slides, start=1)
        for section in _slide_sections(slide, number)
    ]
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _title(slide: Slide) -> str | None:
    title = slide.shapes.title
    if title is None or not title.has_text_frame:
        return None
    return one_line(title.text_frame.text) or None


def _slide_sections(slide: Slide, number: int) -> list[Section]:
    """The slide's text and tables in shape order, its notes last."""
    title = _title(slide)
    sections: list[Section] = []
    lines: list[str] = []

    def close_text() -> None:
        if lines:
            sections.append(Section(text="\n".join(lines), heading=title, page=number))
            lines.clear()

    for item in _shape_items(slide.shapes):
        if isinstance(item, str):
            lines.append(item)
        elif table := table_section(item, title, page=number):
            close_text()
            sections.append(table)
        else:
            lines.extend(text_lines(item))
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            lines.append("Notes: " + notes.text.strip())
    close_text()
    if any(section.rows for section in sections):
        # The title alone says nothing its tables' heading does not.
        sections = [section for section in sections if section.rows or one_line(section.text) != title]
    return sections


def _shape_items(shapes: Iterable[BaseShape]) -> Iterator[str | list[list[str]]]:
    """Text of each text shape, and the rows of each table, in shape order."""
    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_items(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            yield _table_rows(shape.table)
        elif shape.has_text_frame:
            text = shape.text_frame.text.strip()
            if text:
                yield text


def _table_rows(table: Table) -> list[list[str]]:
    """Cell texts; a merged cell's text once across, but in every row it spans down, where it holds for each."""
    # A spanned cell's own text is left over from before the merge; the origin holds the merged text.
    rows = [["" if cell.is_spanned else one_line(cell.text) for cell in row.cells] for row in table.rows]
    for top, row in enumerate(table.rows):
        for column, cell in enumerate(row.cells):
            if cell.is_merge_origin:
                for below in range(top + 1, min(top + cell.span_height, len(rows))):
                    rows[below][column] = rows[top][column]
    return rows
