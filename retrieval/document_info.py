"""What a document says about itself: its title and organisation, and the period or date it states.

A passage from the middle of a report rarely names whose report it is or which year it covers ("the Agency",
"this fiscal year"), so every chunk is searched with this line in front of it, and the payload keeps the
period so that a question naming one can prefer the documents of that period (``retrieval.periods``).
Everything comes from the document itself: the title its file records (where that is not a tool's default),
its opening words (a title page names the organisation, the title and the date), what its running headers and
footers repeat on every page (often the organisation and the edition, where the cover is a regulator's form), and
dates written there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llama_index.core import Document

from retrieval.periods import Period, find_period
from retrieval.tables import searchable

# The opening words that stand for the title page: enough for an organisation, a title and a date.
HEAD_WORDS = 24
# A title page is short lines; the first line longer than this is the document's prose beginning (words that
# would then stand in front of every chunk, making them all look alike).
TITLE_LINE_WORDS = 12
# Of a document that opens with prose (or a title on one long line), only this many first words are taken.
FIRST_LINE_WORDS = 16
# The text a period or date is looked for in: the title page and a little more.
_PERIOD_WINDOW = 1500
_PAGE_LABEL = re.compile(r"^(page\s*)?\d+(\s*(of|/)\s*\d+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class DocumentContext:
    title: str
    period: Period | None = None

    @property
    def context(self) -> str:
        """The line every chunk of the document is searched with."""
        if self.period and self.period.label.lower() not in self.title.lower():
            return f"{self.title} ({self.period.label})"
        return self.title

    def payload(self) -> dict:
        period = self.period
        return {
            "title": self.title,
            "period": period.label if period else None,
            "years": list(period.years) if period else [],
            "dated": period.dated if period else None,
            "context": self.context,
        }


def describe(sections: list[Document], path: Path) -> DocumentContext:
    """A paginated file (PDF, slides) opens on a title page, which names the organisation its recorded title
    often leaves out; a file with headings names itself in its top heading, and its opening is already text."""
    first = sections[0].metadata if sections else {}
    recorded = first.get("document_title")
    head = _head(sections)
    paginated = first.get("page") is not None
    title = _title(recorded, head if paginated else None, first.get("heading"), path)
    running = first.get("document_running")
    if running and not set(_words(running)) <= set(_words(title)):
        # Often the organisation and the edition, where the title page's opening lines did not name them.
        title = f"{title} | {running}"
    if paginated:
        opening = " ".join(section.text for section in sections[:3])[:_PERIOD_WINDOW]
        period = find_period(" ".join(filter(None, [recorded, opening, running])))
    else:
        period = find_period(title) if title != path.stem else None
        period = period or find_period(head, bare_years=False)
    period = period or find_period(first.get("document_created") or "")
    return DocumentContext(title=title, period=period)


def _head(sections: list[Document]) -> str:
    """The title page's short lines up to the first line of prose, skipping page labels ("Page 1 of 4")."""
    words: list[str] = []
    for section in sections[:3]:
        # A cover sheet laid out as a grid ("Study topic | Phase II clinical study of ...") is read row by row.
        for line in (searchable(section.text) if section.metadata.get("table") else section.text).splitlines():
            line = " ".join(line.split()).strip("#|*_ ")
            if not line or _PAGE_LABEL.match(line):
                continue
            if len(line.split()) > TITLE_LINE_WORDS:
                return " ".join(words or line.split()[:FIRST_LINE_WORDS])
            words += line.split()
            if len(words) >= HEAD_WORDS:
                return " ".join(words[:HEAD_WORDS])
    return " ".join(words)


def _title(recorded: str | None, head: str | None, heading: str | None, path: Path) -> str:
    """The recorded title with the title page's words it lacks (often the organisation), else those words.

    A file's top heading stands for its title where the file records none.
    """
    top = heading.split(" > ")[0] if heading else None
    named = next((name for name in (recorded, top) if name and re.search(r"[^\W\d_]{3}", name)), None)
    if not named:
        return head or path.stem
    known = set(_words(named))
    if head and not set(_words(head)) <= known:
        return f"{named}: {head}"
    return named


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]{3,}", text.lower())
