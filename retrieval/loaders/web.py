"""HTML: one section per h1-h6 heading and one per data table; also HTML-to-text for EPUB chapters and e-mail.

BeautifulSoup with lxml copes with the broken markup real pages have. The tree is
prepared first: hidden and non-content elements go, block elements get line breaks,
data tables and headings become marker strings, and the rows of what is left of tables
(one row or one column) become single lines. One pass over the strings in document order
then cuts the text into sections.

A table that lays out a page (it holds headings or other tables, or says it is for
presentation) is not data: its cells are read as the blocks of text they are.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning
from llama_index.core import Document

from .decoding import refuse_binary
from .errors import LoadError
from .grid import CELL_SEPARATOR, split_title, table_section
from .sections import HeadingTrail, Section, join_heading, one_line, to_documents

NO_TEXT_REASON = "no text: the HTML has no visible text outside scripts, styles and navigation"

# Not content: code, styling, menus, and the inline-XBRL facts block of SEC filings.
_DROPPED = ("script", "style", "nav", "noscript", "template", "head", "ix:header")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# Elements that break the flow of text: their text goes on lines of its own.
_BLOCKS = (
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div",
    "dl", "dt", "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "ol",
    "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "ul",
)  # fmt: skip
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
# Preparing the tree moves nodes, which costs BeautifulSoup a walk down the moved element's last descendants:
# a page nested 100,000 deep took ten minutes. libxml2 stops XML at 256 levels; real pages stay far below.
MAX_DEPTH = 256
# Financial tables put "$" and ")" in cells of their own; they belong to the number.
_LEADING_SYMBOL = re.compile(r"[$€£¥]")
_TRAILING_SYMBOL = re.compile(r"[)%]+")
# What a cell of a layout table holds and a data table's never does.
_LAYOUT_CONTENT = ("table", "form", *_HEADINGS)
_LAYOUT_ROLES = ("presentation", "none")
# HTML caps colspan at 1,000; a table whose spans would fill more cells than this is not read as a grid
# (a few bytes of colspan="1000" rowspan="9999" must not cost gigabytes).
MAX_SPAN = 1000
MAX_GRID_CELLS = 1_000_000
_NIL = {"-", "–", "—"}  # a dash in a column of figures is a zero
# A figure in a header row of a financial table is a year or a date, never an amount.
_AMOUNT = re.compile(r"\d,\d{3}|\d\.\d|[$€£¥]\s*\(?\d|\d\s*%")


class _Verbatim(NavigableString):
    """Text this module put in the tree (line breaks, flattened rows): emitted as is."""


class _HeadingMarker(NavigableString):
    """Stands in the tree where a heading was; its text is the heading's title."""

    level: int


class _TableMarker(NavigableString):
    """Stands in the tree where a data table was; holds the table as a section without a heading path."""

    table: Section


def load_html(path: Path) -> list[Document]:
    data = path.read_bytes()
    # BeautifulSoup decodes by itself (meta charset, BOM, guessing) but accepts any bytes.
    refuse_binary(data)
    soup = parse_html(data)
    return to_documents(html_sections(soup, HeadingTrail(), tables=True), empty_reason=NO_TEXT_REASON)


def parse_html(markup: bytes | str) -> BeautifulSoup:
    with warnings.catch_warnings():
        # XHTML (EPUB, some exports) is read as HTML on purpose: it tolerates broken markup.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    _refuse_deep_nesting(soup)
    return soup


def _refuse_deep_nesting(soup: BeautifulSoup) -> None:
    stack: list[tuple[Tag, int]] = [(soup, 0)]
    while stack:
        tag, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise LoadError(
                f"its HTML nests elements more than {MAX_DEPTH} levels deep, which no page a person wrote does: "
                "it is generated or hostile; save the text as a plain text file if it is needed"
            )
        stack.extend((child, depth + 1) for child in tag.contents if isinstance(child, Tag))


def html_sections(soup: BeautifulSoup, trail: HeadingTrail, *, tables: bool = False) -> list[Section]:
    """Cut the visible text into sections; ``trail`` may carry headings from a previous file.

    With ``tables``, each data table is a table section of its own; without, its rows are lines of text
    (for callers that join sections' text, which a table section has none of).
    """
    _prepare(soup, tables=tables)
    sections: list[Section] = []
    parts: list[str] = []
    for piece in _pieces(soup):
        if isinstance(piece, _HeadingMarker):
            sections.append(Section(text=_lines(parts), heading=trail.path))
            parts.clear()
            trail.enter(piece.level, str(piece))
        elif isinstance(piece, _TableMarker):
            sections.append(Section(text=_lines(parts), heading=trail.path))
            parts.clear()
            piece.table.heading = join_heading(trail.path, piece.table.heading)
            sections.append(piece.table)
        else:
            parts.append(piece)
    sections.append(Section(text=_lines(parts), heading=trail.path))
    return sections


def html_to_text(markup: bytes | str) -> str:
    """All visible text of an HTML fragment (an e-mail body), headings as plain lines."""
    soup = parse_html(markup)
    _prepare(soup)
    return _lines(f"\n{piece}\n" if isinstance(piece, _HeadingMarker) else piece for piece in _pieces(soup))


def _lines(parts: Iterator[str] | list[str]) -> str:
    """Blocks joined by single newlines, with spacing inside each line normalised."""
    lines = (" ".join(line.split()) for line in "".join(parts).splitlines())
    return "\n".join(line for line in lines if line)


def _prepare(soup: BeautifulSoup, *, tables: bool = False) -> None:
    for tag in [*soup.find_all(_DROPPED), *soup.find_all(style=_HIDDEN_STYLE)]:
        if not tag.decomposed:  # may sit inside one removed a moment ago
            tag.decompose()
    # Line breaks go in first, so text taken from cells and headings keeps word boundaries
    # ("Chapter I<br>The Sun" is "Chapter I The Sun") without padding inline tags.
    for tag in soup.find_all(_BLOCKS + _HEADINGS):
        tag.insert_before(_Verbatim("\n"))
        tag.insert_after(_Verbatim("\n"))
    if tables:
        _mark_tables(soup)
    _flatten_table_rows(soup)
    _mark_headings(soup)


def _mark_tables(soup: BeautifulSoup) -> None:
    """Data tables become table markers; layout tables become plain blocks of text."""
    found = soup.find_all("table")
    # Decided before any table changes: once an inner table is a marker, its outer one no longer shows it.
    layout = _layout_tables(soup, found)
    # Innermost first (reverse document order), so a data table inside a layout table is already a marker.
    for table in reversed(found):
        if id(table) in layout:
            _unwrap_layout(table)
        elif (section := _table(table)) is not None:
            marker = _TableMarker("")
            marker.table = section
            table.replace_with(marker)
        # else: one row or one column; its rows become lines of text with the others


def _layout_tables(soup: BeautifulSoup, tables: list[Tag]) -> set[int]:
    """ids of the tables that lay out a page: they say so, or hold headings, forms or other tables."""
    # One walk up from each such element, instead of a search through every table for them.
    holding: set[int] = set()
    for tag in soup.find_all(_LAYOUT_CONTENT):
        for parent in tag.parents:
            if parent.name != "table":
                continue
            if id(parent) in holding:
                break  # and every table around it, marked on an earlier walk
            holding.add(id(parent))
    return holding | {id(table) for table in tables if table.get("role") in _LAYOUT_ROLES}


def _owner(tag: Tag) -> Tag | None:
    """The table a row or cell belongs to."""
    return next((parent for parent in tag.parents if parent.name == "table"), None)


def _cells(tr: Tag) -> list[Tag]:
    return [cell for cell in tr.children if isinstance(cell, Tag) and cell.name in ("td", "th")]


def _unwrap_layout(table: Tag) -> None:
    # Renamed, not unwrapped: moving the cells' content would cost a walk of each (see MAX_DEPTH).
    for tag in table.find_all(("tr", "td", "th")):
        if _owner(tag) is table:
            tag.insert_before(_Verbatim("\n"))
            tag.insert_after(_Verbatim("\n"))
            tag.name = "div"


def _table(table: Tag) -> Section | None:
    """A data table as a section headed by its caption, or None where it is no table (one row, one column)."""
    trs = _rows(table)
    grid = _grid(trs)
    if grid is None:
        return None
    marked = [(row, head) for row, head in zip(_without_spacer_columns(grid), _head_rows(trs)) if any(row)]
    title, rows = split_title([row for row, _ in marked])
    marked = marked[len(marked) - len(rows) :]  # a title row is not a header row
    header_rows = next((index for index, (_, head) in enumerate(marked) if not head), len(marked))
    if _numeric(rows):
        header_rows = max(header_rows, _more_header_rows(rows))
    caption = next((child for child in table.children if isinstance(child, Tag) and child.name == "caption"), None)
    caption_text = one_line(caption.get_text()) if caption is not None else None
    return table_section(rows, join_heading(caption_text, title), header_rows=header_rows)


def _grid(trs: list[Tag]) -> list[list[str]] | None:
    """Cell texts by row and column, a spanned cell's text in every position it covers; None past the limit."""
    grid: list[list[str]] = []
    below: dict[int, tuple[str, int]] = {}  # column -> (text, rows still covered) of cells spanning down
    cells = 0
    for tr in trs:
        row: list[str] = []
        for cell in _cells(tr):
            _fill_from_above(row, below)
            text = one_line(cell.get_text())
            across, down = _span(cell, "colspan"), _span(cell, "rowspan")
            for _ in range(across):
                if down > 1:
                    below[len(row)] = (text, down - 1)
                row.append(text)
            cells += across * down
            if cells > MAX_GRID_CELLS:
                return None
        _fill_from_above(row, below)
        # Spans running down past a row that ends early still cover their columns.
        while below and max(below) >= len(row):
            row.append("")
            _fill_from_above(row, below)
        grid.append(row)
    return grid


def _fill_from_above(row: list[str], below: dict[int, tuple[str, int]]) -> None:
    """Continue ``row`` with the cells of rows above that span down into it at its current end."""
    while len(row) in below:
        text, left = below.pop(len(row))
        if left > 1:
            below[len(row)] = (text, left - 1)
        row.append(text)


def _rows(table: Tag) -> list[Tag]:
    """The table's own rows (directly or in thead, tbody, tfoot), not a nested table's."""
    return [tr for tr in table.find_all("tr") if _owner(tr) is table]


def _span(cell: Tag, attribute: str) -> int:
    try:
        return min(max(int(str(cell.get(attribute, "1")).strip()), 1), MAX_SPAN)
    except ValueError:
        return 1


def _head_rows(trs: list[Tag]) -> list[bool]:
    """For each row, whether it is a heading row: in <thead>, or of <th> cells only."""
    flags = []
    for tr in trs:
        cells = _cells(tr)
        in_head = tr.parent is not None and tr.parent.name == "thead"
        flags.append(bool(cells) and (in_head or all(cell.name == "th" for cell in cells)))
    return flags


def _numeric(rows: list[list[str]]) -> bool:
    """Mostly figures right of the first column: a financial table, whose heading rows name no row."""
    cells = [cell for row in rows[1:] for cell in row[1:] if cell]
    figures = sum(cell in _NIL or any(char.isdigit() for char in cell) for cell in cells)
    return bool(cells) and figures >= 0.6 * len(cells)


def _more_header_rows(rows: list[list[str]]) -> int:
    """Header rows of a financial table: the first, and each next one that holds no amounts where the row
    above spans a heading over several columns ("2021" over "High" and "Low") or the row leaves its
    first cell empty."""
    count = 1
    while count < len(rows) - 1:
        row, above = rows[count], rows[count - 1]
        spanned = any(left and left == right for left, right in pairwise(above))
        if any(_AMOUNT.search(cell) for cell in row) or not (spanned or not row[0]):
            break
        count += 1
    return count


def _without_spacer_columns(grid: list[list[str]]) -> list[list[str]]:
    """Columns as a reader sees them: no empty or spanned-copy columns, "$" and ")" glued to their figure.

    Filings set a currency sign, a figure and a closing bracket in cells of their own, with empty
    spacer cells between, and span headings over all of them.
    """
    width = max((len(row) for row in grid), default=0)
    columns = [[row[index] if index < len(row) else "" for row in grid] for index in range(width)]
    columns = [column for column in columns if any(column)]
    index = 0
    while index < len(columns):
        column = columns[index]
        after = columns[index + 1] if index + 1 < len(columns) else None
        before = columns[index - 1] if index else None
        if after is not None and _only_symbols(column, after, _LEADING_SYMBOL):
            columns[index + 1] = [_glue(a, b) for a, b in zip(column, after, strict=True)]
            del columns[index]
        elif before is not None and _only_symbols(column, before, _TRAILING_SYMBOL):
            columns[index - 1] = [_glue(a, b) for a, b in zip(before, column, strict=True)]
            del columns[index]
            index -= 1
        elif _only_copies(column, before, after):
            del columns[index]
        else:
            index += 1
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def _only_symbols(column: list[str], neighbour: list[str], symbol: re.Pattern[str]) -> bool:
    """Each cell a lone symbol, empty, or a copy of the neighbour's (a heading spanned over both)."""
    kept = [cell for cell, other in zip(column, neighbour, strict=True) if cell and cell != other]
    return bool(kept) and all(symbol.fullmatch(cell) for cell in kept)


def _glue(left: str, right: str) -> str:
    """Two cells of one row read as one: "$" and "1,200", "(300" and ")", or a heading spanned over both."""
    if left == right:
        return left
    if _LEADING_SYMBOL.fullmatch(left) or _TRAILING_SYMBOL.fullmatch(right):
        return left + right
    return " ".join(part for part in (left, right) if part)


def _only_copies(column: list[str], before: list[str] | None, after: list[str] | None) -> bool:
    """Every filled cell repeats its neighbour's in the same row: what a colspan leaves behind."""
    for row, cell in enumerate(column):
        if cell and not ((before and before[row] == cell) or (after and after[row] == cell)):
            return False
    return True


def _flatten_table_rows(soup: BeautifulSoup) -> None:
    # Innermost rows first (reverse document order), so a nested table is already one
    # string when its outer row is read. Empty spacer cells, common in filings, vanish.
    for row in reversed(soup.find_all("tr")):
        cells = [one_line(cell.get_text()) for cell in row.find_all(("td", "th"), recursive=False)]
        row.replace_with(_Verbatim(CELL_SEPARATOR.join(_joined_symbols(cells)) + "\n"))


def _joined_symbols(cells: list[str]) -> list[str]:
    """Drop empty cells; glue lone currency signs and closing brackets to their number."""
    joined: list[str] = []
    pending = ""
    for cell in cells:
        if not cell:
            continue
        if _LEADING_SYMBOL.fullmatch(cell):
            pending += cell
        elif _TRAILING_SYMBOL.fullmatch(cell) and joined and not pending:
            joined[-1] += cell
        else:
            joined.append(pending + cell)
            pending = ""
    if pending:
        joined.append(pending)
    return joined


def _mark_headings(soup: BeautifulSoup) -> None:
    for tag in soup.find_all(_HEADINGS):
        if tag.decomposed or tag.parent is None:
            continue  # sat inside a heading that was already replaced
        title = one_line(tag.get_text())
        if not title:
            tag.decompose()  # an empty heading (an anchor, an image) starts nothing
            continue
        marker = _HeadingMarker(title)
        marker.level = int(tag.name[1])
        tag.replace_with(marker)


def _pieces(soup: BeautifulSoup) -> Iterator[str]:
    """Strings in document order: comments, doctypes and CDATA are skipped.

    Source whitespace, newlines included, is one space as a browser shows it (except in
    <pre>); the line structure comes from the _Verbatim breaks around blocks.
    """
    for node in soup.descendants:
        if isinstance(node, (_Verbatim, _HeadingMarker, _TableMarker)):
            yield node
        elif type(node) is NavigableString:
            if "\n" in node and _inside_pre(node):
                yield str(node)
            else:
                yield _WHITESPACE.sub(" ", node)


def _inside_pre(node: NavigableString) -> bool:
    return any(isinstance(parent, Tag) and parent.name == "pre" for parent in node.parents)
