"""EPUB: chapters in reading (spine) order, cut at their HTML headings.

ebooklib reads the container and spine; each chapter is XHTML, handled by the HTML
loader's sectioning. The heading trail carries over from one chapter file to the next,
because books often split one chapter across several files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import ebooklib
from ebooklib import epub
from llama_index.core import Document

from .guards import check_zip
from .sections import HeadingTrail, Section, to_documents
from .web import html_sections, parse_html

NO_TEXT_REASON = "no text: the EPUB's chapters hold no text (it may hold only images)"
_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def load_epub(path: Path) -> list[Document]:
    check_zip(path, "EPUB")
    # The NCX is EPUB 2's table of contents; ebooklib warns about reading it and the
    # navigation it gives is reached through ``book.toc`` either way.
    book = epub.read_epub(str(path), options={"ignore_ncx": True})
    toc_titles = _toc_titles(book.toc)
    trail = HeadingTrail()
    sections: list[Section] = []
    for item in _spine_documents(book):
        soup = parse_html(item.get_content())
        title = toc_titles.get(item.get_name())
        if title and soup.find(_HEADING_TAGS) is None:
            # A chapter file without heading tags is named only by the table of contents.
            trail.enter(1, title)
        for section in html_sections(soup, trail, tables=True):
            joinable = sections and not sections[-1].rows and not section.rows
            if joinable and sections[-1].heading == section.heading:
                # The same chapter continued in the next file: keep it one section.
                sections[-1].text = f"{sections[-1].text}\n\n{section.text}".strip()
            else:
                sections.append(section)
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _spine_documents(book: epub.EpubBook) -> Iterable[epub.EpubItem]:
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is not None and item.get_type() == ebooklib.ITEM_DOCUMENT:
            yield item


def _toc_titles(toc: Iterable[object]) -> dict[str, str]:
    """File name -> title of the first table-of-contents entry pointing into that file."""
    titles: dict[str, str] = {}
    for entry in toc:
        children: Iterable[object] = ()
        if isinstance(entry, tuple):
            entry, children = entry
        href = getattr(entry, "href", None)
        title = getattr(entry, "title", None)
        if href and title:
            titles.setdefault(href.split("#", 1)[0], title)
        for name, child_title in _toc_titles(children).items():
            titles.setdefault(name, child_title)
    return titles
