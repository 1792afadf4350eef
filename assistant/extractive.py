"""An answer made only of the sources' own sentences, for when no generative model is configured.

It never writes a word of its own beyond a label: each line is a sentence from a source the
user may read, followed by that source's marker [n].
"""

import re
from collections.abc import Callable

import numpy as np

from assistant.types import Source

LABEL = "Extracted from your documents (no generative model is configured; these are the documents' own words):"
NO_ANSWER = "None of the documents you can read answers this question."
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


def sentences(text: str) -> list[str]:
    """Sentences of a passage: each line (bullets, table rows) split at sentence ends."""
    found = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        for piece in _SENTENCE_END.split(line):
            piece = piece.strip()
            if len(piece.split()) >= 4:  # shorter bits are headings or fragments, not statements
                found.append(piece)
    return found


def compose(
    question_vector: list[float],
    sources: list[Source],
    embed: Callable[[list[str]], list[list[float]]],
    max_sentences: int = 3,
    min_similarity: float = 0.25,
) -> str:
    candidates = [(number, s) for number, source in enumerate(sources, 1) for s in sentences(source.text)]
    if not candidates:
        return NO_ANSWER
    # The question's vector is the one the search already made; the embedder returns unit vectors.
    similarity = np.asarray(embed([text for _, text in candidates])) @ np.asarray(question_vector)
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
