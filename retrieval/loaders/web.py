"""HTML: one section per h1-h6 heading; also HTML-to-text for EPUB chapters and e-mail.

BeautifulSoup with lxml copes with the broken markup real pages have. The tree is
prepared first: hidden and non-content elements go, block elements get line breaks,
table rows become single lines and headings become marker strings. One pass over the
strings in document order then cuts the text into sections.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning
from llama_index.core import Document

from .decoding import refuse_binary
from .errors import LoadError
from .sections import HeadingTrail, Section, one_line, to_documents

NO_TEXT_REASON = "no text: the HTML has no visible text outside scripts, styles and navigation"
CELL_SEPARATOR = " | "

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


class _Verbatim(NavigableString):
    """Text this module put in the tree (line breaks, flattened rows): emitted as is."""


class _HeadingMarker(NavigableString):
    """Stands in the tree where a heading was; its text is the heading's title."""

    level: int


def load_html(path: Path) -> list[Document]:
    data = path.read_bytes()
    # BeautifulSoup decodes by itself (meta charset, BOM, guessing) but accepts any bytes.
    refuse_binary(data)
    soup = parse_html(data)
    return to_documents(html_sections(soup, HeadingTrail()), empty_reason=NO_TEXT_REASON)


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


def html_sections(soup: BeautifulSoup, trail: HeadingTrail) -> list[Section]:
    """Cut the visible text into sections; ``trail`` may carry headings from a previous file."""
    _prepare(soup)
    sections: list[Section] = []
    parts: list[str] = []
    for piece in _pieces(soup):
        if isinstance(piece, _HeadingMarker):
            sections.append(Section(text=_lines(parts), heading=trail.path))
            parts.clear()
            trail.enter(piece.level, str(piece))
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


def _prepare(soup: BeautifulSoup) -> None:
    for tag in [*soup.find_all(_DROPPED), *soup.find_all(style=_HIDDEN_STYLE)]:
        if not tag.decomposed:  # may sit inside one removed a moment ago
            tag.decompose()
    # Line breaks go in first, so text taken from cells and headings keeps word boundaries
    # ("Chapter I<br>The Sun" is "Chapter I The Sun") without padding inline tags.
    for tag in soup.find_all(_BLOCKS + _HEADINGS):
        tag.insert_before(_Verbatim("\n"))
        tag.insert_after(_Verbatim("\n"))
    _flatten_table_rows(soup)
    _mark_headings(soup)


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
        if isinstance(node, (_Verbatim, _HeadingMarker)):
            yield node
        elif type(node) is NavigableString:
            if "\n" in node and _inside_pre(node):
                yield str(node)
            else:
                yield _WHITESPACE.sub(" ", node)


def _inside_pre(node: NavigableString) -> bool:
    return any(isinstance(parent, Tag) and parent.name == "pre" for parent in node.parents)
