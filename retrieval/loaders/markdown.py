"""Markdown: one section per heading, split on the parser's view of the document, and one per table.

Headings and GFM pipe tables come from markdown-it-py's tokens and their source line ranges
(``token.map``), so a ``#`` or ``|`` line inside a fenced code block is text, not a heading or a
table. Text sections keep their Markdown source (lists, code) since that reads well to a model;
a table is handed on as rows, so its chunks keep its header.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from llama_index.core import Document
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .decoding import decode_text
from .grid import table_section
from .sections import HeadingTrail, Section, one_line, to_documents

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


@dataclass
class _Table:
    rows: list[list[str]]
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
    for block in _blocks(lines, body_start):
        if isinstance(block, _Table):
            if (table := table_section(block.rows, trail.path)) is None:
                continue  # a one-column "table" reads better as the Markdown source it is
            sections.append(_section(lines, position, block.first_line, trail))
            sections.append(table)
        elif block.title.strip():
            sections.append(_section(lines, position, block.first_line, trail))
            trail.enter(block.level, block.title)
        else:
            continue  # a bare "#" line cuts nothing; it stays in the text
        position = block.end_line
    sections.append(_section(lines, position, len(lines), trail))
    reason = FRONT_MATTER_ONLY_REASON if body_start and text.strip() else NO_TEXT_REASON
    return to_documents(sections, empty_reason=reason)


def _section(lines: list[str], start: int, end: int, trail: HeadingTrail) -> Section:
    return Section(text="\n".join(lines[start:end]), heading=trail.path)


def _blocks(lines: list[str], body_start: int) -> list[_Heading | _Table]:
    """Headings and top-level tables in file order."""
    # The parser sees only the body; its line numbers are shifted back afterwards.
    tokens = MarkdownIt("commonmark").enable("table").parse("\n".join(lines[body_start:]))
    blocks: list[_Heading | _Table] = []
    for index, token in enumerate(tokens):
        if token.map is None:
            continue
        first, end = token.map
        if token.type == "heading_open":
            blocks.append(
                _Heading(
                    level=int(token.tag[1:]),
                    title=_plain(tokens[index + 1]),
                    first_line=first + body_start,
                    end_line=end + body_start,
                )
            )
        # A table inside a list or quote keeps its prefixes in the source; it stays text there.
        elif token.type == "table_open" and token.level == 0:
            rows = _table_rows(tokens, index)
            blocks.append(_Table(rows=rows, first_line=first + body_start, end_line=end + body_start))
    return blocks


def _table_rows(tokens: list[Token], start: int) -> list[list[str]]:
    """Cells of the table opening at ``tokens[start]``, as inline Markdown (links and emphasis kept)."""
    rows: list[list[str]] = []
    for token in tokens[start + 1 :]:
        if token.type == "table_close":
            break
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and rows:
            rows[-1].append(one_line(token.content))
    return rows


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
