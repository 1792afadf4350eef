"""An answer made only of the sources' own sentences, for when no generative model is configured.

It never writes a word of its own beyond a label: each line is a sentence from a source the
user may read, followed by that source's marker [n].
"""

import itertools
import re
from collections.abc import Callable

import numpy as np

from assistant.types import Source
from retrieval.tables import records

LABEL = "Extracted from your documents (no generative model is configured; these are the documents' own words):"
NO_ANSWER = "None of the documents you can read answers this question."
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


def sentences(text: str) -> list[str]:
    """Sentences of a passage: each line (bullets) split at sentence ends; a table's rows each with its column
    names ("Level: L4; Title: Senior engineer; Salary band: EUR 65,000 - 80,000"), so a quoted figure says
    what it is."""
    if rows := records(text):
        return rows
    found = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        for piece in _SENTENCE_END.split(line):
            piece = piece.strip()
            if len(piece.split()) >= 4:  # shorter bits are headings or fragments, not statements
                found.append(piece)
    return found


# Added to a sentence's similarity for each two-word phrase of the question it repeats. Meaning alone cannot tell
# table rows apart that differ in one name ("Senior pilot, software engineer" against "Lead pilot, senior
# engineer" for "the band of a senior engineer"); the row that says the question's phrase is the answer.
PHRASE_WEIGHT = 0.1
_WORD = re.compile(r"[^\W_]+")
# Words that join phrases without saying what they are about.
_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "for",
        "to",
        "in",
        "on",
        "at",
        "by",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "what",
        "which",
        "who",
        "how",
        "when",
        "where",
        "why",
        "my",
        "our",
        "your",
        "their",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "we",
        "you",
        "it",
        "with",
        "from",
        "as",
    ]
)


def _phrases(question: str, text: str) -> int:
    """How many of the question's two-word phrases (filler words dropped) the text repeats."""
    words = [w for w in _WORD.findall(question.lower()) if w not in _FILLER]
    pairs = {f"{a} {b}" for a, b in itertools.pairwise(words)}
    flat = " ".join(_WORD.findall(text.lower()))
    return sum(1 for pair in pairs if f" {pair} " in f" {flat} ")


def compose(
    question_vector: list[float],
    sources: list[Source],
    embed: Callable[[list[str]], list[list[float]]],
    max_sentences: int = 3,
    min_similarity: float = 0.25,  # the embedding model's own scale: LocalEmbedding.answer_similarity
    question: str = "",
) -> str:
    """``question``: its words, where given, lift the sentences that repeat its phrases (see PHRASE_WEIGHT)."""
    candidates = [(number, s) for number, source in enumerate(sources, 1) for s in sentences(source.text)]
    if not candidates:
        return NO_ANSWER
    # The question's vector is the one the search already made; the embedder returns unit vectors.
    similarity = np.asarray(embed([text for _, text in candidates])) @ np.asarray(question_vector)
    similarity = similarity + PHRASE_WEIGHT * np.asarray([_phrases(question, text) for _, text in candidates])
    chosen, seen = [], set()
    for index in np.argsort(-similarity):
        number, text = candidates[index]
        if similarity[index] < min_similarity or len(chosen) == max_sentences:
            break
        if text.lower() not in seen:
            seen.add(text.lower())
            chosen.append(f"- {text} [{number}]")
    if not chosen:
        return NO_ANSWER
    return LABEL + "\n\n" + "\n".join(chosen)
