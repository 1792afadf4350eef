"""The ruled tables of a PDF page: the grid its rules draw, read cell by cell.

A table in a report or a form is drawn: rules between its rows and columns, or boxes around its cells. PDFium
(which reads the page's text anyway) hands over the page's vector paths; their straight horizontal and vertical
segments are the edges pdfplumber's table finder (MIT; Tabula's and Nurminen's method) turns into cells and
tables; and each cell's text is PDFium's text inside the cell's box. pdfplumber's own page parse (pdfminer.six)
was the alternative: the same tables, at 0.16 s a page on these 2 cores against PDFium's hundredths
(benchmarks/README.md), which kept ingestion of the agency reports under 5 pages/s.

A table drawn without rules stays in the page's text, where PDFium keeps each row on a line. The page's text is
PDFium's less the lines the tables hold; each table takes the place of its first line, and the short line above
it, when it is one, is its caption.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from pdfplumber.table import (
    Table,
    TableSettings,
    cells_to_tables,
    edges_to_intersections,
    intersections_to_cells,
    merge_edges,
)
from pdfplumber.utils import filter_edges

from .sections import one_line

# A page that draws fewer paths than this holds no ruled table: a grid of two rows and two columns is at
# least four rules, and running headers often draw one to three.
MIN_TABLE_PATHS = 4
# A "table" with fewer filled cells is a box around a paragraph or a heading, not data.
MIN_FILLED_CELLS = 4
# The text line just above a table names it ("Table 3: Enrolment by site", "Summary of results") when it is
# this short and does not end a sentence; a longer line is the paragraph before it.
MAX_CAPTION_WORDS = 12
# A segment this close to level (in points over its length) is a rule; a diagonal or a curve's chord is not.
_LEVEL = 0.5
# Form objects nest; real pages nest a few levels, a hostile one could nest without end.
_MAX_FORM_DEPTH = 8
# Path segments read from one page before its tables are given up (its text is kept): a page of the corpus's
# reports draws at most a few thousand; a map or a chart drawn point by point is no table, and a hostile page
# of millions would hold ingestion for minutes.
MAX_SEGMENTS = 50_000
_SETTINGS = TableSettings.resolve(None)
_WORD = re.compile(r"\w+")
_Matrix = tuple[float, float, float, float, float, float]
_IDENTITY: _Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


@dataclass
class Block:
    """A part of a page in reading order: text, or a table's rows (header first) with its caption."""

    text: str = ""
    rows: list[list[str]] | None = None
    caption: str | None = None


def page_tables(page: pdfium.PdfPage, textpage: pdfium.PdfTextPage) -> list[list[list[str]]]:
    """The rows of each ruled table on the page (header first), top to bottom."""
    _, _, _, page_top = page.get_mediabox()
    count = pdfium_c.FPDFPage_CountObjects(page.raw)
    paths = list(_paths([pdfium_c.FPDFPage_GetObject(page.raw, index) for index in range(count)], _IDENTITY, 0))
    if sum(pdfium_c.FPDFPath_CountSegments(path) for path, _ in paths) > MAX_SEGMENTS:
        return []
    edges = [edge for path, matrix in paths for edge in _path_edges(path, matrix, page_top)]
    edges = filter_edges(edges, min_length=_SETTINGS.edge_min_length_prefilter)
    if len(edges) < MIN_TABLE_PATHS:
        return []
    edges = merge_edges(
        edges,
        snap_x_tolerance=_SETTINGS.snap_x_tolerance,
        snap_y_tolerance=_SETTINGS.snap_y_tolerance,
        join_x_tolerance=_SETTINGS.join_x_tolerance,
        join_y_tolerance=_SETTINGS.join_y_tolerance,
    )
    edges = filter_edges(edges, min_length=_SETTINGS.edge_min_length)
    intersections = edges_to_intersections(
        edges, _SETTINGS.intersection_x_tolerance, _SETTINGS.intersection_y_tolerance
    )
    tables = []
    for cells in cells_to_tables(intersections_to_cells(intersections)):
        grid = Table(None, cells)  # pdfplumber groups cells into rows without its page
        rows = [[_cell_text(textpage, cell, page_top) for cell in row.cells] for row in grid.rows]
        rows = [row for row in rows if any(row)]
        if sum(1 for row in rows for cell in row if cell) >= MIN_FILLED_CELLS and len(rows) >= 2:
            tables.append((grid.bbox[1], _drop_repeated_headers(rows)))
    return [rows for _, rows in sorted(tables, key=lambda table: table[0])]


def _cell_text(textpage: pdfium.PdfTextPage, cell: tuple | None, page_top: float) -> str:
    if cell is None:  # a position a spanning cell covers
        return ""
    x0, top, x1, bottom = cell
    return one_line(textpage.get_text_bounded(left=x0, bottom=page_top - bottom, right=x1, top=page_top - top))


def _paths(objects: list, outer: _Matrix, depth: int):
    """Every path object among ``objects`` and inside their forms, with the matrix that places it on the page."""
    for obj in objects:
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_PATH:
            yield obj, _times(_matrix(obj), outer)
        elif kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < _MAX_FORM_DEPTH:
            inner = [pdfium_c.FPDFFormObj_GetObject(obj, i) for i in range(pdfium_c.FPDFFormObj_CountObjects(obj))]
            yield from _paths(inner, _times(_matrix(obj), outer), depth + 1)


def _path_edges(path, matrix: _Matrix, page_top: float):
    x, y = ctypes.c_float(), ctypes.c_float()
    points: list[tuple[float, float]] = []
    start: tuple[float, float] | None = None
    for index in range(pdfium_c.FPDFPath_CountSegments(path)):
        segment = pdfium_c.FPDFPath_GetPathSegment(path, index)
        pdfium_c.FPDFPathSegment_GetPoint(segment, x, y)
        point = _apply(matrix, x.value, y.value)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_MOVETO or start is None:
            yield from _segments(points, page_top)
            points, start = [point], point
            continue
        if kind == pdfium_c.FPDF_SEGMENT_BEZIERTO:
            yield from _segments(points, page_top)
            points = [point]  # a curve is no rule, but the next straight segment starts where it ends
        else:
            points.append(point)
        if pdfium_c.FPDFPathSegment_GetClose(segment):
            points.append(start)
    yield from _segments(points, page_top)


def _segments(points: list[tuple[float, float]], page_top: float):
    for (x0, y0), (x1, y1) in pairwise(points):
        if abs(y1 - y0) <= _LEVEL and abs(x1 - x0) > _LEVEL:
            left, right = min(x0, x1), max(x0, x1)
            top = page_top - y0
            yield {"x0": left, "x1": right, "top": top, "bottom": top, "width": right - left, "height": 0.0,
                   "orientation": "h", "object_type": "line"}  # fmt: skip
        elif abs(x1 - x0) <= _LEVEL and abs(y1 - y0) > _LEVEL:
            top, bottom = page_top - max(y0, y1), page_top - min(y0, y1)
            yield {"x0": x0, "x1": x0, "top": top, "bottom": bottom, "width": 0.0, "height": bottom - top,
                   "orientation": "v", "object_type": "line"}  # fmt: skip


def _matrix(obj) -> _Matrix:
    matrix = pdfium_c.FS_MATRIX()
    if not pdfium_c.FPDFPageObj_GetMatrix(obj, matrix):
        return _IDENTITY
    return (matrix.a, matrix.b, matrix.c, matrix.d, matrix.e, matrix.f)


def _times(inner: _Matrix, outer: _Matrix) -> _Matrix:
    """The matrix that applies ``inner`` then ``outer`` (PDF's row-vector convention)."""
    a, b, c, d, e, f = inner
    A, B, C, D, E, F = outer
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def _apply(matrix: _Matrix, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = matrix
    return (a * x + c * y + e, b * x + d * y + f)


def blocks(text: str, tables: list[list[list[str]]]) -> list[Block]:
    """The page's text cut around its tables: each table where its first line was, the rest as text."""
    lines = text.splitlines()
    result: list[Block] = []
    start = 0
    for rows in tables:
        first, last = _span(lines, start, rows)
        if first is None:
            result.append(Block(rows=rows))
            continue
        before = lines[start:first]
        caption = _caption(before[-1]) if before else None
        result.append(Block(text="\n".join(before)))
        result.append(Block(rows=rows, caption=caption))
        start = last + 1
    result.append(Block(text="\n".join(lines[start:])))
    return result


def _caption(line: str) -> str | None:
    line = line.strip()
    if not line or len(line.split()) > MAX_CAPTION_WORDS or line.endswith((".", ",", ";")):
        return None
    return line


def _span(lines: list[str], start: int, rows: list[list[str]]) -> tuple[int | None, int]:
    """The first and last of the lines from ``start`` whose words all come from the table's cells."""
    words = Counter(word for row in rows for cell in row for word in _WORD.findall(cell.lower()))
    first = last = None
    for index in range(start, len(lines)):
        line_words = Counter(_WORD.findall(lines[index].lower()))
        if not line_words:
            continue
        if line_words <= words:
            words -= line_words
            first = index if first is None else first
            last = index
        elif first is not None and not words:
            break
    return first, last if last is not None else start


def _drop_repeated_headers(rows: list[list[str]]) -> list[list[str]]:
    """A header row printed again inside the table (after a page or column break) is not data."""
    header = rows[0]
    return [header] + [row for row in rows[1:] if row != header]
