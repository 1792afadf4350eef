"""Two runs side by side (the figures' deltas, the settings that differ, the questions whose outcome changed), and
the regression gates (`--fail-below hit@5=0.9`, `--max-drop mrr=0.02`, `--max-p95-ms 200`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from assistant.evaluation.records import EvaluationRun
from assistant.evaluation.scoring import METRICS, QuestionResult, label

# The outcomes of one question a change can move besides its rank, each better when True.
_OUTCOME_WORDS = {
    "answer_found": "the answer in the passages",
    "page_found": "the expected page",
    "answered": "the answer in the reply",
    "cited": "citing an expected document",
}
_NEVER = 1_000_000  # the rank of a document not found: below every rank there is


@dataclass(frozen=True)
class Delta:
    metric: str
    before: float | None
    after: float | None

    @property
    def change(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


@dataclass(frozen=True)
class ChangedQuestion:
    question: str
    verdict: str  # "better", "worse", "mixed", "new" (only in this run), "gone" (only in the baseline)
    changes: list[str]  # in words: "found at 1 (was 4)", "now the answer in the passages"


@dataclass
class Comparison:
    baseline: str
    deltas: list[Delta]
    latency_ms: dict[str, tuple] = field(default_factory=dict)  # p50 / p95 -> (before, after)
    settings: dict[str, tuple] = field(default_factory=dict)  # setting -> (before, after), where they differ
    questions: list[ChangedQuestion] = field(default_factory=list)

    def to_dict(self, k: int) -> dict:
        return {
            "baseline": self.baseline,
            "metrics": {
                label(d.metric, k): {"before": d.before, "after": d.after, "change": d.change} for d in self.deltas
            },
            "latency_ms": {name: {"before": b, "after": a} for name, (b, a) in self.latency_ms.items()},
            "settings": {name: {"before": b, "after": a} for name, (b, a) in self.settings.items()},
            "questions": [vars(changed) for changed in self.questions],
        }


def compare(run: EvaluationRun, baseline: EvaluationRun) -> Comparison:
    deltas = [Delta(metric, baseline.figure(metric), run.figure(metric)) for metric in METRICS]
    deltas = [delta for delta in deltas if delta.before is not None or delta.after is not None]
    names = sorted(set(run.snapshot) | set(baseline.snapshot))
    settings = {
        name: (baseline.snapshot.get(name), run.snapshot.get(name))
        for name in names
        if baseline.snapshot.get(name) != run.snapshot.get(name)
    }
    for name, before_value, after_value in (
        ("k", baseline.k, run.k),
        ("asked as", baseline.reader, run.reader),
        ("question file", baseline.questions_sha256[:12], run.questions_sha256[:12]),
        ("answers checked", baseline.answers, run.answers),
    ):
        if before_value != after_value:
            settings[name] = (before_value, after_value)
    before, after = _keyed(baseline.results), _keyed(run.results)
    changed = []
    for key, now in after.items():
        if key not in before:
            changed.append(ChangedQuestion(now.question, "new", ["not in the baseline"]))
        elif verdict := _changes(before[key], now):
            changed.append(ChangedQuestion(now.question, *verdict))
    changed += [
        ChangedQuestion(old.question, "gone", ["not in this run"]) for key, old in before.items() if key not in after
    ]
    latency = {
        name: (baseline.latency_ms[name], run.latency_ms[name])
        for name in ("p50", "p95")
        if name in baseline.latency_ms and name in run.latency_ms
    }
    return Comparison(baseline.id, deltas, latency, settings, changed)


def _keyed(results: list[QuestionResult]) -> dict[tuple[str, int], QuestionResult]:
    # The question's text identifies it across runs (lines move when a file is edited); a text asked twice is told
    # apart by its occurrence.
    seen: Counter[str] = Counter()
    keyed = {}
    for result in results:
        keyed[(result.question, seen[result.question])] = result
        seen[result.question] += 1
    return keyed


def _changes(before: QuestionResult, after: QuestionResult) -> tuple[str, list[str]] | None:
    words, gained, lost = [], [], []
    if before.rank != after.rank:
        if after.rank is None:
            words.append(f"no longer found (was at {before.rank})")
        elif before.rank is None:
            words.append(f"now found at {after.rank}")
        else:
            words.append(f"found at {after.rank} (was {before.rank})")
    for outcome, what in _OUTCOME_WORDS.items():
        was, now = getattr(before, outcome), getattr(after, outcome)
        if was is not None and now is not None and was != now:
            (gained if now else lost).append(what)
    words += [f"now {', '.join(gained)}"] if gained else []
    words += [f"no longer {', '.join(lost)}"] if lost else []
    if not words:
        return None
    better = bool(gained) or (after.rank or _NEVER) < (before.rank or _NEVER)
    worse = bool(lost) or (after.rank or _NEVER) > (before.rank or _NEVER)
    return ("better" if not worse else "worse" if not better else "mixed"), words


# --- the gates -------------------------------------------------------------------------------

_THRESHOLD = re.compile(r"\s*([A-Za-z_]+)(?:@(\d+))?\s*=\s*([0-9]*\.?[0-9]+)\s*")


@dataclass(frozen=True)
class Threshold:
    """`hit@5=0.9` as written on the command line: a figure, the k it was written for (if any), and a value."""

    metric: str
    value: float
    k: int | None = None

    def below(self, run: EvaluationRun) -> str | None:
        """Why the run's figure is under this floor (`--fail-below`), or None when it is not."""
        figure, unmeasured = self._figure(run)
        if unmeasured:
            return unmeasured
        if figure < self.value:
            return f"{label(self.metric, run.k)} is {figure:.3f}, below {self.value:g}"
        return None

    def dropped(self, run: EvaluationRun, baseline: EvaluationRun) -> str | None:
        """Why the run's figure fell further than this from the baseline's (`--max-drop`), or None."""
        figure, unmeasured = self._figure(run)
        before, before_unmeasured = self._figure(baseline)
        if unmeasured or before_unmeasured:
            return unmeasured or f"{before_unmeasured} in the run compared with"
        if before - figure > self.value + 1e-12:
            return (
                f"{label(self.metric, run.k)} fell by {before - figure:.3f} ({before:.3f} -> {figure:.3f}), "
                f"more than {self.value:g}"
            )
        return None

    def _figure(self, run: EvaluationRun) -> tuple[float, str | None]:
        if self.k is not None and self.k != run.k:
            return 0.0, f"{self.metric}@{self.k} was not measured: the run took the top {run.k} (--k {self.k})"
        value = run.figure(self.metric)
        if value is None:
            return 0.0, f"{label(self.metric, run.k)} was not measured: no question in the file {_needs(self.metric)}"
        return value, None


def parse_threshold(text: str) -> Threshold:
    """`hit@5=0.9`, `mrr=0.5`: a figure and a value."""
    match = _THRESHOLD.fullmatch(text)
    metric = match.group(1).lower() if match else None
    if match is None or metric not in METRICS:
        raise ValueError(
            f"a gate is METRIC=VALUE with METRIC one of {', '.join(METRICS)} (optionally @k, as in hit@5=0.9), "
            f"not {text!r}"
        )
    return Threshold(metric, float(match.group(3)), int(match.group(2)) if match.group(2) else None)


def slower(run: EvaluationRun, max_p95_ms: float) -> str | None:
    """Why the run's search is slower than allowed (`--max-p95-ms`), or None."""
    p95 = run.latency_ms.get("p95")
    return f"search p95 is {p95:.1f} ms, above {max_p95_ms:g} ms" if p95 is not None and p95 > max_p95_ms else None


def _needs(metric: str) -> str:
    return {
        "answer": "names an answer",
        "page": "names a page",
        "answered": "names an answer, or the answers were not checked (--no-answers)",
        "cited": "was answered (the answers were not checked: --no-answers)",
    }.get(metric, "was asked")
