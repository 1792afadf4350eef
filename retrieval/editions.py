"""Which edition of a document answers: the one of the period a question names, else the newest.

Yearly reports, versioned policies and amended protocols repeat most of their text from one edition to the
next, so the first stage scores their passages alike and which edition comes first is chance. A question
that names a year ("in FY 2016", "Q3 2023") lifts the documents that state that period; one that names none
(or asks for the latest) lowers every edition that a newer edition of the same document among the
candidates replaces. Editions of one document are told by their titles, which differ in little but dates.
"""

from __future__ import annotations

import re

from llama_index.core.schema import NodeWithScore

from retrieval.periods import Asked
from retrieval.scores import min_max

# Added to the min-max normalised score of a passage from a document of the period asked for. A third of
# the scale: enough to lift the right edition's passage over its twins, not over a passage that answers
# better from another document.
PERIOD_WEIGHT = 0.3
# Taken from a passage of an edition that a newer one among the candidates replaces.
SUPERSEDED_WEIGHT = 0.2
# Share of title words two documents must share to be editions of one document.
SAME_TITLE = 0.6
_MONTHS = {
    "january", "february", "march", "april", "june", "july", "august", "september", "october", "november",
    "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}  # fmt: skip


def prefer_period(found: list[NodeWithScore], asked: Asked) -> list[NodeWithScore]:
    dated = [hit for hit in found if hit.node.metadata.get("years")]
    if not dated:
        return found
    scores = min_max([hit.score or 0.0 for hit in found])
    if asked.years:
        adjust = [PERIOD_WEIGHT if asked.years & set(hit.node.metadata.get("years") or ()) else 0.0 for hit in found]
    else:
        superseded = _superseded(found)
        adjust = [-SUPERSEDED_WEIGHT if hit.node.metadata.get("doc_id") in superseded else 0.0 for hit in found]
    final = [score + change for score, change in zip(scores, adjust, strict=True)]
    order = sorted(range(len(found)), key=lambda i: final[i], reverse=True)
    return [NodeWithScore(node=found[i].node, score=final[i]) for i in order]


def _superseded(found: list[NodeWithScore]) -> set[str]:
    """Documents among the candidates of which a newer edition is also among them."""
    documents: dict[str, tuple[frozenset[str], tuple[int, str]]] = {}
    for hit in found:
        meta = hit.node.metadata
        if meta.get("years") and meta.get("doc_id") not in documents:
            order = (max(meta["years"]), meta.get("dated") or "")
            documents[meta["doc_id"]] = (_title_words(meta.get("title") or ""), order)
    replaced = set()
    for doc_id, (words, order) in documents.items():
        for other_id, (other_words, other_order) in documents.items():
            if other_id != doc_id and other_order > order and _overlap(words, other_words) >= SAME_TITLE:
                replaced.add(doc_id)
                break
    return replaced


def _title_words(title: str) -> frozenset[str]:
    return frozenset(word for word in re.findall(r"[a-z]{3,}", title.lower()) if word not in _MONTHS)


def _overlap(first: frozenset[str], second: frozenset[str]) -> float:
    if not first or not second:
        return 0.0
    return len(first & second) / len(first | second)
