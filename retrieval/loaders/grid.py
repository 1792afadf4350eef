"""A table's cells as every loader hands them on: tidy rows, and the call whether they make a table at all.

Each loader reads its format's table into a plain grid of cell strings; the rules for what is left of it
are the same for every format, so they live here. A grid that is one row or one column once its empty
rows and columns are gone is a list or a line of layout, not a table: it stays text in the flow, as
``a | b | c`` lines, so it does not cut the text around it into pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .sections import HEADING_SEPARATOR, Section, join_heading, one_line

CELL_SEPARATOR = " | "
# A row of one merged cell above a table names it; a longer one is a note, and stays in the table.
MAX_TITLE_CHARS = 200
# Bullets and footnote or item numbers ("•", "(1)", "2.", "a)") in a column of their own lay out a list.
_NUMBERING = r"(\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})"
_LIST_MARKER = re.compile(rf"[•·▪◦●○■□✓✔*–—-]|\({_NUMBERING}\)|{_NUMBERING}[.)]")


def filled_columns(rows: Sequence[Sequence[str]]) -> list[int]:
    """Indices of the columns with text in at least one row."""
    width = max((len(row) for row in rows), default=0)
    return [column for column in range(width) if any(column < len(row) and row[column] for row in rows)]


def tidy_rows(rows: Iterable[Sequence[str]]) -> list[list[str]]:
    """Rows and columns without text dropped; every row as wide as the others.

    Cells come in on one line already (each loader's cell reader sees to it): a sheet of a million
    cells should not be split and joined again here.
    """
    filled = [row for row in rows if any(row)]
    return select_columns(filled, filled_columns(filled))


def select_columns(rows: Sequence[Sequence[str]], columns: list[int]) -> list[list[str]]:
    """Only ``columns`` of each row, a short row padded with empty cells."""
    if columns == list(range(len(columns))) and all(len(row) == len(columns) for row in rows):
        return [list(row) for row in rows]  # the common case, at a tenth of the cost
    return [[row[column] if column < len(row) else "" for column in columns] for row in rows]


def is_table(rows: Sequence[Sequence[str]]) -> bool:
    """Tidy rows that hold a header and at least one row, in at least two columns."""
    return len(rows) >= 2 and max(len(row) for row in rows) >= 2


def is_form(rows: Sequence[Sequence[str]]) -> bool:
    """Whether the grid lays out a form: labels ending in a colon, each followed by its value ("Age: | 60")."""
    labels = [cell for row in rows for cell in row[0::2] if cell]
    return len(labels) >= 2 and sum(label.endswith(":") for label in labels) >= 0.6 * len(labels)


def form_lines(rows: Iterable[Sequence[str]]) -> list[str]:
    """A form's rows as lines of ``label value`` pairs ("Certificate: Private; Age: 60, Male")."""
    lines = []
    for row in rows:
        pairs = [" ".join(part for part in pair if part) for pair in zip(row[0::2], row[1::2], strict=False)]
        if len(row) % 2:
            pairs.append(row[-1])
        if line := "; ".join(pair for pair in pairs if pair):
            lines.append(line)
    return lines


def text_lines(rows: Iterable[Sequence[str]]) -> list[str]:
    """Rows that are not a table, as the lines of text they were before tables were kept as tables."""
    lines = (CELL_SEPARATOR.join(cell for cell in (one_line(c) for c in row) if cell) for row in rows)
    return [line for line in lines if line]


def table_section(
    rows: Sequence[Sequence[str]],
    heading: str | None,
    page: int | None = None,
    header_rows: int = 1,
    *,
    repeated_headers: bool = False,
) -> Section | None:
    """The table ``rows`` make under ``heading``, its title row (if any) last in the heading; None if no table.

    ``header_rows`` leading rows (after any title) are the header: several are read as one, column by
    column ("Year ended December 31," over "2023" is "Year ended December 31, 2023"). Rows that repeat
    them are dropped unless ``repeated_headers`` keeps them (in a sheet they start the next block).
    """
    rows = tidy_rows(rows)
    title, rows = split_title(rows)
    if not is_table(rows) or _is_list(rows):
        return None
    header_rows = max(1, min(header_rows, len(rows) - 1))
    headers = rows[:header_rows]
    # A long document table repeats its heading rows on every printed page; read as data they are noise.
    body = [row for row in rows[header_rows:] if repeated_headers or row not in headers]
    if not body:
        return None
    if title and heading and title == heading.rsplit(HEADING_SEPARATOR, 1)[-1]:
        title = None  # a sheet or slide titled as its table already
    return Section(rows=[_merged_header(headers), *body], heading=join_heading(heading, title), page=page)


def _is_list(rows: list[list[str]]) -> bool:
    return len(rows[0]) == 2 and all(_LIST_MARKER.fullmatch(row[0]) for row in rows)


def split_title(rows: list[list[str]]) -> tuple[str | None, list[list[str]]]:
    """Leading rows of one merged cell (reported once or once per column it covers) are the table's title."""
    titles: list[str] = []
    rest = rows
    while rest and len(rest[0]) >= 2 and len({cell for cell in rest[0] if cell}) == 1:
        titles.append(next(cell for cell in rest[0] if cell))
        rest = rest[1:]
    title = " ".join(titles)
    if not titles or len(title) > MAX_TITLE_CHARS:
        return None, rows
    return title, tidy_rows(rest)


def _merged_header(headers: list[list[str]]) -> list[str]:
    if len(headers) == 1:
        return headers[0]
    merged = []
    for parts in zip(*headers, strict=True):
        words: list[str] = []
        for part in parts:
            if part and (not words or words[-1] != part):
                words.append(part)
        merged.append(" ".join(words))
    return merged
