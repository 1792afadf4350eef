"""An evaluation run in words and tables, for a terminal (the portal draws its own from the same records)."""

from __future__ import annotations

from pathlib import PurePosixPath

from assistant.evaluation.comparison import Comparison
from assistant.evaluation.records import EvaluationRun
from assistant.evaluation.scoring import METRICS, QuestionResult, label

QUESTION_CHARS = 60
ALL_SHOWN = 50
INSTEAD_SHOWN = 3


def found_instead(result: QuestionResult) -> str:
    """What ranked above the first expected passage (everything found, for a miss): `name p.N`, distinct, best first."""
    above = result.found[: (result.rank or len(result.found) + 1) - 1]
    names: list[str] = []
    for passage in above:
        name = PurePosixPath(passage.path).name + (f" p.{passage.page}" if passage.page is not None else "")
        if name not in names:
            names.append(name)
    shown = "; ".join(names[:INSTEAD_SHOWN])
    return shown + (f" (+{len(names) - INSTEAD_SHOWN})" if len(names) > INSTEAD_SHOWN else "")


def summary(run: EvaluationRun) -> list[str]:
    lines = [
        f"run {run.id}: {len(run.results)} questions from {run.questions_file}, top {run.k}, asked as {run.reader}",
        f"{'figure':<10} {'value':>6} {'n':>6}",
    ]
    for metric in METRICS:
        measured = run.metrics.get(metric)
        if measured is None or measured.value is None:
            continue
        lines.append(f"{label(metric, run.k):<10} {measured.value:>6.3f} {measured.n:>6}")
    if run.latency_ms:
        lines.append(f"search latency p50 {run.latency_ms['p50']:.1f} ms, p95 {run.latency_ms['p95']:.1f} ms")
    for kind, figures in run.by_kind.items():
        shown = ", ".join(
            f"{label(metric, run.k)} {figures[metric].value:.2f}"
            for metric in ("hit", "answer", "page", "mrr")
            if figures[metric].value is not None
        )
        lines.append(f"  kind {kind} ({figures['hit'].n}): {shown}")
    for problem in run.problems:
        lines.append(f"not asked: line {problem.line}: {problem.reason}")
    for note in sorted({result.note for result in run.results if result.note}):
        lines.append(f"note: {note}")
    return lines


def question_table(run: EvaluationRun) -> list[str]:
    """Every question; past ALL_SHOWN of them, only those not perfect: hundreds of rows of "1 yes yes" would hide the
    ones to read."""
    answers = run.answers
    header = f"{'line':>5} {'rank':>4} {'answer':>6} {'page':>4}" + (f" {'reply':>5} {'cited':>5}" if answers else "")
    lines = [header + f"  {'question':<{QUESTION_CHARS}}  found instead"]
    shown = run.results if len(run.results) <= ALL_SHOWN else [r for r in run.results if not _perfect(r)]
    for result in shown:
        row = f"{result.line:>5} {result.rank or '-':>4} {_flag(result.answer_found):>6} {_flag(result.page_found):>4}"
        if answers:
            row += f" {_flag(result.answered):>5} {_flag(result.cited):>5}"
        lines.append(f"{row}  {_short(result.question):<{QUESTION_CHARS}}  {found_instead(result)}")
    if len(shown) < len(run.results):
        left_out = len(run.results) - len(shown)
        lines.append(f"({left_out} questions found first, with every check passed, are not listed: --json has them)")
    return lines


def _perfect(result: QuestionResult) -> bool:
    checks = (result.answer_found, result.page_found, result.answered, result.cited)
    return result.rank == 1 and all(check is not False for check in checks)


def comparison(result: Comparison, k: int) -> list[str]:
    lines = [f"compared with run {result.baseline}:"]
    for delta in result.deltas:
        before = "-" if delta.before is None else f"{delta.before:.3f}"
        after = "-" if delta.after is None else f"{delta.after:.3f}"
        change = "" if delta.change is None else f" ({delta.change:+.3f})"
        lines.append(f"  {label(delta.metric, k):<10} {before} -> {after}{change}")
    for name, (before, after) in result.latency_ms.items():
        ratio = f" (x{after / before:.2f})" if before else ""
        lines.append(f"  search {name:<6} {before:.1f} -> {after:.1f} ms{ratio}")
    if result.settings:
        lines.append("  settings that differ:")
        lines += [f"    {name}: {before} -> {after}" for name, (before, after) in result.settings.items()]
    else:
        lines.append("  settings and documents: the same")
    if result.questions:
        lines.append(f"  questions whose outcome changed ({len(result.questions)}):")
        for changed in result.questions:
            lines.append(f"    {changed.verdict:<6} {_short(changed.question)}: {'; '.join(changed.changes)}")
    else:
        lines.append("  no question's outcome changed")
    return lines


def _short(question: str) -> str:
    return question if len(question) <= QUESTION_CHARS else question[: QUESTION_CHARS - 1] + "…"


def _flag(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"
