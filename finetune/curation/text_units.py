"""The pieces curation judges: a document's blocks (paragraphs) and lines, normalised so that copies compare equal."""

from __future__ import annotations

import re

_BLANK_LINES = re.compile(r"\n\s*\n")
_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
# List markers and quote marks in front of a line say nothing about whether two lines are the same.
_LINE_MARKERS = re.compile(r"^\s*(?:[-*+>]|\d+[.)])\s+")


def blocks(text: str) -> list[str]:
    """The text's paragraphs: runs of lines between blank lines (how loaders and Markdown separate them)."""
    return [block for block in _BLANK_LINES.split(text) if block.strip()]


def join_blocks(parts: list[str]) -> str:
    return "\n\n".join(part.strip("\n") for part in parts if part.strip())


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normal_line(line: str) -> str:
    """A line as it repeats: case, spacing, list markers and numbers masked ("Page 3 of 9" == "page 7 of 12")."""
    return _SPACE.sub(" ", _DIGITS.sub("0", _LINE_MARKERS.sub("", line))).strip().lower()


def normal_block(block: str) -> str:
    return " ".join(words(block))


def is_heading(line: str) -> bool:
    return line.lstrip().startswith("#")


def excerpt(text: str, limit: int = 240) -> str:
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
