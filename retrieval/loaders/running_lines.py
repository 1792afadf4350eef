"""Running headers, footers and page numbers: the lines a paginated file repeats at the edge of its pages.

They say nothing a reader asks about, and repeated in every chunk they make all chunks of a report look
alike to the embedder. A line is running when, with its digits masked ("Page 12 of 40" -> "page # of #"),
it opens or closes many of the file's pages; a line that is only a page number goes on any page.

What they do say is whose document it is and which edition ("Apple Inc. | Q3 2023 Form 10-Q | 12"), which a page
in the middle of the report says nowhere else: ``running_words`` keeps that once, for the document's line
(retrieval.document_info).
"""

from __future__ import annotations

import re
from collections import Counter

# Lines looked at from each edge of a page: a header or footer is one or two lines.
EDGE_LINES = 2
# Share of the pages a line must open or close on to be running, and the least number of pages.
MIN_SHARE = 0.3
MIN_PAGES = 3
_DIGITS = re.compile(r"\d+")
# Of the running lines' words, at most this many go into the document's line (a footer can be a whole disclaimer).
RUNNING_WORDS = 16
_PAGE_NUMBER = re.compile(r"^(page\s*)?[-–\s]*#[-–\s]*((of|/)\s*#)?$|^[ivxlc]+$")


def running_lines(pages: list[str]) -> set[str]:
    """The masked lines that open or close enough of these pages to be running headers or footers."""
    counts: Counter[str] = Counter()
    for page in pages:
        counts.update({_mask(line) for line in _edges(page.splitlines())})
    needed = max(MIN_PAGES, MIN_SHARE * len(pages))
    return {line for line, count in counts.items() if count >= needed and line}


def running_words(pages: list[str], running: set[str]) -> str:
    """The words the running lines repeat on every page they are on, headers before footers: the page number and
    other words that change from page to page are left out."""
    seen: dict[str, list[list[str]]] = {}  # by masked line, in the order first met
    for page in pages:
        for line in _edges(page.splitlines()):
            mask = _mask(line)
            if mask in running and not _PAGE_NUMBER.match(mask):
                seen.setdefault(mask, []).append(line.split())
    words: list[str] = []
    for lines in seen.values():
        counts = Counter(word for line in lines for word in set(line))
        words += [word for word in lines[0] if 2 * counts[word] >= len(lines) and any(c.isalnum() for c in word)]
    return " ".join(words[:RUNNING_WORDS])


def strip_running(text: str, running: set[str]) -> str:
    """The text without running lines and page numbers at its edges."""
    lines = text.splitlines()
    edges = _edge_indices(lines)
    return "\n".join(
        line
        for index, line in enumerate(lines)
        if index not in edges or not (_mask(line) in running or _PAGE_NUMBER.match(_mask(line)))
    )


def _edges(lines: list[str]) -> list[str]:
    return [lines[index] for index in _edge_indices(lines)]


def _edge_indices(lines: list[str]) -> set[int]:
    filled = [index for index, line in enumerate(lines) if line.strip()]
    return set(filled[:EDGE_LINES] + filled[-EDGE_LINES:])


def _mask(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.lower().split()))
