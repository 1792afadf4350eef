"""Sections of a file and their conversion to llama-index documents."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from llama_index.core import Document

from retrieval.tables import to_markdown

from .errors import LoadError

HEADING_SEPARATOR = " > "

_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except newline
_BLANK_RUNS = re.compile(r"\n{3,}")
# A "word" this long is encoded data (base64, a minified script, a hex dump), never prose: the embedder reads it
# as one unknown token, so it would be stored as one huge chunk, or cut a character at a time (35 s a megabyte).
# Chinese or Japanese paragraphs run without spaces too, but not for 10,000 characters.
MAX_RUN_CHARS = 10_000
# The lookbehind starts a match only where a run starts, so a long run shorter than the limit is scanned once.
_OVERLONG_RUN = re.compile(rf"(?<!\S)\S{{{MAX_RUN_CHARS + 1},}}")


@dataclass
class Section:
    """One natural part of a file: a page, a slide, a sheet, a heading's text, or one table.

    A table comes as ``rows`` (the first its header, cells as text) and no ``text``; its ``heading`` is the
    heading path it stands under, with its caption last where it has one.
    """

    text: str = ""
    heading: str | None = None
    page: int | None = None
    rows: list[list[str]] | None = None


class HeadingTrail:
    """The path of headings above the current position, e.g. ``Leave > Sick leave``.

    A heading of level N closes every open heading of level N or deeper, so the trail
    follows the document's outline even when levels are skipped (h1 then h3).
    """

    def __init__(self, root: str | None = None) -> None:
        self._open: list[tuple[int, str]] = []
        if root:
            # A title that stands above every heading in the file (DOCX "Title").
            self._open.append((0, root))

    def enter(self, level: int, title: str) -> None:
        title = one_line(title)
        if not title:
            # Empty heading paragraphs are layout, not outline; they must not cut the trail.
            return
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        self._open.append((level, title))

    @property
    def path(self) -> str | None:
        return HEADING_SEPARATOR.join(title for _, title in self._open) or None


def join_heading(*parts: str | None) -> str | None:
    """Join heading parts, skipping empty ones; ``None`` when nothing is left."""
    return HEADING_SEPARATOR.join(p for p in parts if p) or None


def one_line(text: str) -> str:
    """Collapse all whitespace (tabs in Word headings, newlines in HTML) to single spaces."""
    return " ".join(text.split())


def tidy(text: str) -> str:
    """Normalise spacing inside lines and drop blank-line runs, keeping line structure."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def to_documents(
    sections: Iterable[Section],
    *,
    empty_reason: str,
    title: str | None = None,
    created: str | None = None,
    running: str | None = None,
) -> list[Document]:
    """Drop empty sections and encoded-data runs; refuse a file that yields no text at all.

    ``title`` and ``created`` (an ISO date): what the file's own metadata says of the whole document, where a
    loader can tell it from a tool's default; ``running``: what its running headers and footers say of it. All
    are kept on the first section for ``retrieval.document_info``.
    """
    documents = []
    dropped = 0
    for section in sections:
        if section.rows is not None:
            section = _table_section(section)
        text, runs = _OVERLONG_RUN.subn("", section.text)
        dropped += runs
        text = text.strip()
        if not text:
            continue
        metadata: dict[str, object] = {}
        if section.page is not None:
            metadata["page"] = section.page
        if section.heading:
            metadata["heading"] = section.heading
        if section.rows is not None:
            metadata["table"] = True
        documents.append(Document(text=text, metadata=metadata))
    if not documents:
        if dropped:
            raise LoadError(
                f"no text: it holds only {dropped} run(s) of more than {MAX_RUN_CHARS:,} characters without a space "
                "or line break, which is encoded data (base64, minified code), not text to search"
            )
        raise LoadError(empty_reason)
    for key, value in (("document_title", title), ("document_created", created), ("document_running", running)):
        if value:
            documents[0].metadata[key] = value
    return documents


def _table_section(section: Section) -> Section:
    """A table as the chunker keeps it: a Markdown grid. A header alone, or one row, is a line of text."""
    rows = [list(row) for row in section.rows or []]  # cells come as single lines; to_markdown tidies them
    rows = [row for row in rows if any(row)]
    if len(rows) < 2 or max(len(row) for row in rows) < 2:
        return Section(text="\n".join(" ".join(row) for row in rows), heading=section.heading, page=section.page)
    return Section(text=to_markdown(rows), heading=section.heading, page=section.page, rows=rows)
