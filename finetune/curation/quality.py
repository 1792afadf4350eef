"""Measures of whether text is prose worth learning: for a block, its markup and its letters; for a document, its
length, how much of it repeats itself, and its language."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

from .text_units import words

# A Markdown link: its text is what a reader sees, its target is not.
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
# Template tags and HTML comments: site machinery, never shown as such.
_MACHINERY = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|<!--.*?-->", re.DOTALL)
# A contents line: a title, dot leaders, a page number.
_CONTENTS_LINE = re.compile(r"(?:\.\s?){4,}\s*\(?[\divxlc]{1,5}\)?\s*$", re.IGNORECASE)
# A Markdown table's column rules and header underline: layout, not content.
_TABLE_RULES = re.compile(r"\|(?:\s*:?-{3,}:?\s*\|)*")
# Blocks shorter than this are too small to judge by their characters (a figure's label, "Yes").
JUDGED_CHARACTERS = 20


def strip_markup(block: str) -> str:
    """The block as a reader sees it: links as their text, template tags and HTML comments gone."""
    return _MACHINERY.sub("", _LINK.sub(r"\1", block))


def markup(block: str) -> str:
    """What `strip_markup` takes out of the block (link brackets and targets, tags), for counting."""
    pieces = [match.group(0).replace(match.group(1), "", 1) for match in _LINK.finditer(block)]
    return " ".join(pieces + _MACHINERY.findall(_LINK.sub(r"\1", block)))


def link_share(block: str) -> tuple[int, float]:
    """(links, share of the visible words that are link text): a block that is nothing but links is navigation."""
    links = _LINK.findall(block)
    visible = len(words(strip_markup(block)))
    return len(links), (sum(len(words(text)) for text in links) / visible if visible else 0.0)


def text_share(block: str) -> float | None:
    """Letters and digits among the characters a reader sees, a table's rules (pipes, dashes of the header line)
    aside; None when the block is too short to tell. Digits count: a table of figures is what staff ask about,
    where extraction garbage is runs of symbols."""
    visible = [char for char in _TABLE_RULES.sub(" ", strip_markup(block)) if not char.isspace()]
    if len(visible) < JUDGED_CHARACTERS:
        return None
    return sum(char.isalnum() for char in visible) / len(visible)


def is_contents(block: str) -> bool:
    """A table of contents: most of its lines end in dot leaders and a page number."""
    lines = [line for line in block.splitlines() if line.strip()]
    leaders = sum(bool(_CONTENTS_LINE.search(line)) for line in lines)
    return leaders >= 2 and leaders >= 0.5 * len(lines)


def repeated_ngram_share(text: str, n: int = 5) -> float:
    """Share of the words that sit in a word n-gram occurring more than once: text that says the same thing over
    and over (extraction loops, generated filler). The measure of the Gopher rules."""
    tokens = words(text)
    if len(tokens) < n * 2:
        return 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(tokens)
    for start, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[start : start + n] = [True] * n
    return sum(covered) / len(tokens)


@cache
def _identifier():
    # Imported when first needed: loading langid's model takes a second, and only runs that filter by language do.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) by langid's bundled model: offline, no download."""
    code, probability = _identifier().classify(strip_markup(text)[:20_000])
    return code, float(probability)
