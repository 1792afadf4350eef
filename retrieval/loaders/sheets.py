"""Tabular files: XLSX (one section per sheet) and CSV (one section)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import openpyxl
from llama_index.core import Document

from .decoding import decode_text
from .errors import LoadError
from .guards import check_zip
from .sections import Section, one_line, to_documents

CELL_SEPARATOR = " | "
NO_TEXT_REASON = "no text: every sheet is empty"
CSV_NO_TEXT_REASON = "no text: the CSV has no values"

# csv.Sniffer runs regexes over its sample; a bounded sample keeps it fast on big files.
_SNIFF_CHARS = 16 * 1024
_SNIFF_DELIMITERS = ",;\t|"


def load_xlsx(path: Path) -> list[Document]:
    check_zip(path, "XLSX")
    # read_only streams rows instead of building every cell; data_only gives cached
    # formula results (what the user sees) instead of formula source.
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sections = [Section(text="\n".join(_sheet_lines(sheet)), heading=sheet.title) for sheet in workbook.worksheets]
    finally:
        workbook.close()
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _sheet_lines(sheet) -> Iterator[str]:
    # A stale <dimension> (e.g. A1:XFD1048576) would pad every row to 16k columns.
    sheet.reset_dimensions()
    for row in sheet.iter_rows(values_only=True):
        if line := CELL_SEPARATOR.join(_cells(row)):
            yield line


def _cells(values: Iterable[object]) -> Iterator[str]:
    for value in values:
        if value is None:
            continue
        if text := one_line(_format(value)):
            yield text


def _format(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores every number as a float; 13.0 reads as 13
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def load_csv(path: Path) -> list[Document]:
    text = decode_text(path.read_bytes())
    # newline="" keeps line endings so quoted values may span lines, as csv requires.
    rows = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    try:
        header = next(rows, [])
        lines = [line for row in rows if (line := _record(header, row))]
    except csv.Error as exc:
        if "field limit" not in str(exc):
            raise
        raise LoadError(
            f"not a readable CSV: a value in it is longer than {csv.field_size_limit():,} characters, which no "
            "real table has (an unclosed quote can make one); check its quotes, or save it as text (.txt)"
        ) from exc
    if not lines:
        # A header-only file still names its columns, which is worth indexing.
        lines = [CELL_SEPARATOR.join(c.strip() for c in header if c.strip())]
    return to_documents([Section(text="\n".join(lines))], empty_reason=CSV_NO_TEXT_REASON)


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # a cut-off last line confuses the sniffer
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS)
    except csv.Error:
        return csv.excel


def _record(header: list[str], row: list[str]) -> str:
    """``col: value; col: value`` so each value keeps its column's meaning when chunked."""
    pairs = []
    for index, value in enumerate(row):
        value = one_line(value)
        if not value:
            continue
        name = one_line(header[index]) if index < len(header) else ""
        pairs.append(f"{name or f'column {index + 1}'}: {value}")
    return "; ".join(pairs)
