"""PPTX: one section per slide (page = slide number, heading = slide title)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pptx
from llama_index.core import Document
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.shapes.base import BaseShape
from pptx.slide import Slide
from pptx.table import Table

from .guards import check_zip
from .sections import Section, one_line, to_documents

NO_TEXT_REASON = "no text: the slides hold no text, tables or notes (they may be only images)"
CELL_SEPARATOR = " | "


def load_pptx(path: Path) -> list[Document]:
    check_zip(path, "PPTX")
    presentation = pptx.Presentation(str(path))
    sections = [
        Section(text=_slide_text(slide), heading=_title(slide), page=number)
        for number, slide in enumerate(presentation.slides, start=1)
    ]
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _title(slide: Slide) -> str | None:
    title = slide.shapes.title
    if title is None or not title.has_text_frame:
        return None
    return one_line(title.text_frame.text) or None


def _slide_text(slide: Slide) -> str:
    lines = list(_shape_lines(slide.shapes))
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            lines.append("Notes: " + notes.text.strip())
    return "\n".join(lines)


def _shape_lines(shapes: Iterable[BaseShape]) -> Iterator[str]:
    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_lines(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            yield from _table_lines(shape.table)
        elif shape.has_text_frame:
            text = shape.text_frame.text.strip()
            if text:
                yield text


def _table_lines(table: Table) -> Iterator[str]:
    for row in table.rows:
        # Cells covered by a merge repeat nothing useful; the merge origin holds the text.
        cells = [one_line(cell.text) for cell in row.cells if not cell.is_spanned]
        if line := CELL_SEPARATOR.join(c for c in cells if c):
            yield line
