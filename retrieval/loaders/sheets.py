"""Tabular files: XLSX (one table per sheet) and CSV (one table).

A sheet is read as one table: its first row with text is the header when it reads like one (mostly
words), else the columns are named by their letters, as the spreadsheet shows them. A first row of
one cell above a wider table is its title. Columns with nothing in them are left out, so a sheet
whose used range runs far to the right costs nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import openpyxl
from llama_index.core import Document
from openpyxl.utils import get_column_letter

from .decoding import decode_text
from .errors import LoadError
from .grid import filled_columns, select_columns, table_section, text_lines
from .guards import check_zip
from .sections import Section, one_line, to_documents

NO_TEXT_REASON = "no text: every sheet is empty"
CSV_NO_TEXT_REASON = "no text: the CSV has no values"

# csv.Sniffer runs regexes over its sample; a bounded sample keeps it fast on big files.
_SNIFF_CHARS = 16 * 1024
_SNIFF_DELIMITERS = ",;\t|"
# A value, not a name: a number, amount, percentage or date. A year stays a name, as in "2023" over a column.
_VALUE = re.compile(r"[-+(]?[$€£¥]?\s*[\d.,]+\s*%?\)?|\d{4}-\d\d-\d\d.*|\d\d?[./]\d\d?[./]\d{2,4}")
_YEAR = re.compile(r"(19|20)\d\d")


def load_xlsx(path: Path) -> list[Document]:
    check_zip(path, "XLSX")
    # read_only streams rows instead of building every cell; data_only gives cached
    # formula results (what the user sees) instead of formula source.
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sections = [section for sheet in workbook.worksheets for section in _sheet_sections(sheet)]
    finally:
        workbook.close()
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _sheet_sections(sheet) -> list[Section]:
    # A stale <dimension> (e.g. A1:XFD1048576) would pad every row to 16k columns.
    sheet.reset_dimensions()
    rows = [[_format(value) for value in row] for row in sheet.iter_rows(values_only=True)]
    return _table_sections(rows, sheet.title)


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores every number as a float; 13.0 reads as 13
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return one_line(str(value))


def _table_sections(rows: Sequence[Sequence[str]], heading: str | None) -> list[Section]:
    """One table section, or the rows as lines of text when they are a list or a single row."""
    rows = [row for row in rows if any(row)]
    columns = filled_columns(rows)
    grid = select_columns(rows, columns)
    table = table_section(_with_header(grid, columns), heading, repeated_headers=True)
    if table is not None:
        return [table]
    lines = text_lines(grid)
    return [Section(text="\n".join(lines), heading=heading)] if lines else []


def _with_header(grid: list[list[str]], columns: list[int]) -> list[list[str]]:
    """The grid with a header first: its first row past any title, or the columns' letters."""
    start = next((index for index, row in enumerate(grid) if sum(1 for cell in row if cell) > 1), len(grid))
    if start == len(grid) or _reads_as_header(grid[start]):
        return grid
    letters = [get_column_letter(column + 1) for column in columns]
    return [*grid[:start], letters, *grid[start:]]


def _reads_as_header(row: Iterable[str]) -> bool:
    cells = [cell for cell in row if cell]
    names = sum(1 for cell in cells if _YEAR.fullmatch(cell) or not _VALUE.fullmatch(cell))
    return names * 2 > len(cells)


def load_csv(path: Path) -> list[Document]:
    text = decode_text(path.read_bytes())
    # newline="" keeps line endings so quoted values may span lines, as csv requires.
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    try:
        rows = [[one_line(value) for value in row] for row in reader]
    except csv.Error as exc:
        if "field limit" not in str(exc):
            raise
        raise LoadError(
            f"not a readable CSV: a value in it is longer than {csv.field_size_limit():,} characters, which no "
            "real table has (an unclosed quote can make one); check its quotes, or save it as text (.txt)"
        ) from exc
    return to_documents(_table_sections(rows, None), empty_reason=CSV_NO_TEXT_REASON)


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # a cut-off last line confuses the sniffer
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS)
    except csv.Error:
        return csv.excel
