"""What one question's search (and answer) scored, and the figures over a run.

Per question, over the k passages found: hit (a passage from an expected document), share (the part of the passages
from expected documents), rank (of the first such passage; MRR averages 1/rank, 0 when none), answer (the expected
figure or phrase in a passage's text) and page (a passage of the first expected document on the expected page). Where the
assistant also answered: answered (the phrase in the answer's text) and cited (a citation [n] in the answer points
to an expected document). A figure is averaged over the questions it applies to, and says how many those were.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, computed_field

from assistant.evaluation.questions import Question
from assistant.types import Source

# In the order a report shows them.
METRICS = ("hit", "share", "answer", "page", "mrr", "answered", "cited")
_AT_K = {"hit", "share", "answer", "page", "mrr"}
_OUTCOME_OF = {"answer": "answer_found", "page": "page_found"}  # the figures named apart from the field they average
PASSAGE_CHARS = 300  # what a run keeps of each passage found: enough to see what it was, not a copy of the store
REPLY_CHARS = 2_000
# [1], [2, 3], [1][4]: how the prompt asks the model to cite, and how the extractive answer marks its sentences.
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def label(metric: str, k: int) -> str:
    """How a report names a figure: hit@5, MRR@5, answered."""
    shown = "MRR" if metric == "mrr" else metric
    return f"{shown}@{k}" if metric in _AT_K else shown


class Passage(BaseModel):
    doc_id: str
    path: str
    page: int | None = None
    heading: str | None = None
    score: float
    expected: bool
    text: str


class Measured(BaseModel):
    value: float | None  # None: no question it applies to
    n: int


class QuestionResult(BaseModel):
    line: int
    question: str
    expected: tuple[str, ...]
    answer: str | None = None
    page: int | None = None
    kind: tuple[str, ...] = ()
    asked_as: tuple[str, ...]  # the groups the question was asked with
    found: list[Passage]
    latency_ms: float
    answer_found: bool | None = None  # None: the question names no answer
    page_found: bool | None = None  # None: the question names no page
    reply: str | None = None  # the assistant's answer, where answers were checked
    answered: bool | None = None
    cited: bool | None = None
    note: str | None = None  # why the answer was not checked, where it was not

    @computed_field
    @property
    def rank(self) -> int | None:
        return next((number for number, passage in enumerate(self.found, 1) if passage.expected), None)

    @computed_field
    @property
    def hit(self) -> bool:
        return self.rank is not None

    @computed_field
    @property
    def share(self) -> float:
        return sum(passage.expected for passage in self.found) / len(self.found) if self.found else 0.0

    def value(self, metric: str) -> float | None:
        """This question's contribution to `metric`, or None where the metric does not apply to it."""
        if metric == "mrr":
            return 1.0 / self.rank if self.rank else 0.0
        outcome = getattr(self, _OUTCOME_OF.get(metric, metric))
        return None if outcome is None else float(outcome)


def score(
    question: Question,
    asked_as: Sequence[str],
    sources: Sequence[Source],
    latency_ms: float,
    reply: str | None = None,
    note: str | None = None,
) -> QuestionResult:
    found = [
        Passage(
            doc_id=source.doc_id,
            path=source.path,
            page=source.page,
            heading=source.heading,
            score=source.score,
            expected=question.expects(source.doc_id, source.path),
            text=source.text[:PASSAGE_CHARS],
        )
        for source in sources
    ]
    phrase = normal(question.answer) if question.answer else None
    cited = [sources[number - 1] for number in cited_numbers(reply or "") if 0 < number <= len(sources)]
    return QuestionResult(
        line=question.line,
        question=question.question,
        expected=question.expected,
        answer=question.answer,
        page=question.page,
        kind=question.kind,
        asked_as=tuple(asked_as),
        found=found,
        latency_ms=round(latency_ms, 2),
        answer_found=None if phrase is None else any(phrase in normal(source.text) for source in sources),
        page_found=None if question.page is None else any(question.on_page(s.doc_id, s.path, s.page) for s in sources),
        reply=None if reply is None else reply[:REPLY_CHARS],
        answered=None if reply is None or phrase is None else phrase in normal(reply),
        cited=None if reply is None else any(question.expects(source.doc_id, source.path) for source in cited),
        note=note,
    )


def summarise(results: Sequence[QuestionResult]) -> dict[str, Measured]:
    figures = {}
    for metric in METRICS:
        values = [value for value in (result.value(metric) for result in results) if value is not None]
        figures[metric] = Measured(value=statistics.fmean(values) if values else None, n=len(values))
    return figures


def by_kind(results: Sequence[QuestionResult]) -> dict[str, dict[str, Measured]]:
    kinds = sorted({kind for result in results for kind in result.kind})
    return {kind: summarise([result for result in results if kind in result.kind]) for kind in kinds}


def latency(results: Sequence[QuestionResult]) -> dict[str, float]:
    """Search latency percentiles in ms (linear interpolation between the measured latencies)."""
    times = [result.latency_ms for result in results]
    if not times:
        return {}
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


def cited_numbers(text: str) -> list[int]:
    return [int(number) for group in _CITATION.findall(text) for number in group.split(",")]


def normal(text: str) -> str:
    # NFKC: PDF text carries ligatures (ﬁ) and non-breaking spaces that the question file's author did not type.
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())
