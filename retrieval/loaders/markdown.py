"""Markdown: one section per heading, split on the parser's view of the document.

Headings come from markdown-it-py's tokens and their source line ranges (``token.map``),
so a ``#`` line inside a fenced code block is text, not a heading. Each section keeps
its Markdown source (lists, tables, code) since that reads well to a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from llama_index.core import Document
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .decoding import decode_text
from .sections import HeadingTrail, Section, to_documents

NO_TEXT_REASON = "no text: the Markdown file holds only whitespace"
# A page of front matter alone (a redirect, a stub) is not empty, it just has nothing to read.
FRONT_MATTER_ONLY_REASON = "no text: the Markdown file holds only front matter (a redirect or stub page)"

_FRONT_MATTER_FENCE = "---"
_FRONT_MATTER_END = ("---", "...")


@dataclass
class _Heading:
    level: int
    title: str
    first_line: int  # 0-based, inclusive
    end_line: int  # 0-based, exclusive


def load_markdown(path: Path) -> list[Document]:
    # Split only where markdown-it sees line breaks, so its line numbers index this list.
    text = decode_text(path.read_bytes())
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    title, body_start = _front_matter(lines)
    trail = HeadingTrail(root=title)
    sections = []
    position = body_start
    for heading in _headings(lines, body_start):
        if not heading.title.strip():
            continue  # a bare "#" line cuts nothing; it stays in the text
        sections.append(_section(lines, position, heading.first_line, trail))
        trail.enter(heading.level, heading.title)
        position = heading.end_line
    sections.append(_section(lines, position, len(lines), trail))
    reason = FRONT_MATTER_ONLY_REASON if body_start and text.strip() else NO_TEXT_REASON
    return to_documents(sections, empty_reason=reason)


def _section(lines: list[str], start: int, end: int, trail: HeadingTrail) -> Section:
    return Section(text="\n".join(lines[start:end]), heading=trail.path)


def _headings(lines: list[str], body_start: int) -> list[_Heading]:
    # The parser sees only the body; its line numbers are shifted back afterwards.
    tokens = MarkdownIt("commonmark").parse("\n".join(lines[body_start:]))
    headings = []
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None:
            continue
        first, end = token.map
        headings.append(
            _Heading(
                level=int(token.tag[1:]),
                title=_plain(tokens[index + 1]),
                first_line=first + body_start,
                end_line=end + body_start,
            )
        )
    return headings


def _plain(inline: Token) -> str:
    """Heading text without Markdown markup (``**Leave**`` -> ``Leave``)."""
    if not inline.children:
        return inline.content
    text = "".join(c.content for c in inline.children if c.type in ("text", "code_inline"))
    return text or inline.content


def _front_matter(lines: list[str]) -> tuple[str | None, int]:
    """YAML front matter: its ``title`` heads the file and its lines are not body text.

    Without this, a front matter block would parse as a rule plus a setext heading.
    """
    if not lines or lines[0].strip() != _FRONT_MATTER_FENCE:
        return None, 0
    for index in range(1, len(lines)):
        if lines[index].strip() in _FRONT_MATTER_END:
            try:
                data = yaml.safe_load("\n".join(lines[1:index]))
            except yaml.YAMLError:
                return None, 0  # not front matter after all: treat the lines as Markdown
            if data is not None and not isinstance(data, dict):
                return None, 0  # a rule and a paragraph, not metadata
            title = (data or {}).get("title")
            return (title if isinstance(title, str) and title.strip() else None), index + 1
    return None, 0
