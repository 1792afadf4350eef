"""Tables as the product keeps them: a Markdown grid to show and quote, ``column: value`` records to search.

A loader hands over rows (the first one the header); the chunk stores them as a Markdown table, so a source
shows as a table and a model reads the grid it knows. What the embedder and BM25 read is each row as
``column: value; column: value`` instead: a figure in a row means nothing without its column's name
("Salary band" for "EUR 65,000 - 80,000"), and a grid's pipes and dashes are noise to both.
A long table is split between rows, and every piece carries the header again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_RULE_CELL = set("-: ")


def to_markdown(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first the header) as a Markdown table, every row padded to the widest."""
    width = max(len(row) for row in rows)
    cells = [[_cell(value) for value in row] + [""] * (width - len(row)) for row in rows]
    header, body = cells[0], cells[1:]
    lines = [_line(header), _line(["---"] * width)] + [_line(row) for row in body]
    return "\n".join(lines)


def parse_markdown(text: str) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of a Markdown table; None when the text is not one table."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 2 or not all(line.startswith("|") for line in lines) or not _is_rule(lines[1]):
        return None
    header = _cells(lines[0])
    return header, [_cells(line) for line in lines[2:]]


def records(text: str) -> list[str]:
    """Each row of a Markdown table as ``column: value; ...``: what a row says, for search and quoting."""
    table = parse_markdown(text)
    if table is None:
        return []
    header, rows = table
    return [record(header, row) for row in rows]


def record(header: Sequence[str], row: Sequence[str]) -> str:
    pairs = []
    for number, value in enumerate(row):
        if not value:
            continue
        name = header[number] if number < len(header) and header[number] else ""
        pairs.append(f"{name}: {value}" if name and name != value else value)
    return "; ".join(pairs)


def searchable(text: str) -> str:
    """A table chunk as its records; any other text as it is."""
    rows = records(text)
    return "\n".join(rows) if rows else text


def split_rows(text: str, max_tokens: int, count_tokens: Callable[[str], list]) -> list[str]:
    """A Markdown table cut between rows into pieces of about ``max_tokens`` (as searched), header on each.

    A single row longer than the budget stays whole: cutting it would part values from their columns.
    """
    table = parse_markdown(text)
    if table is None:
        return [text]
    header, rows = table
    pieces: list[str] = []
    current: list[list[str]] = []
    used = 0
    for row in rows:
        cost = len(count_tokens(record(header, row))) + 1
        if current and used + cost > max_tokens:
            pieces.append(to_markdown([header, *current]))
            current, used = [], 0
        current.append(row)
        used += cost
    if current or not pieces:
        pieces.append(to_markdown([header, *current]))
    return pieces


def _cell(value: str) -> str:
    # A pipe inside a cell would start a new column when the grid is read back.
    return " ".join(str(value).split()).replace("|", "/")


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _is_rule(line: str) -> bool:
    cells = _cells(line)
    return bool(cells) and all(cell and set(cell) <= _RULE_CELL and "-" in cell for cell in cells)
