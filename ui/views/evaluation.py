"""Evaluation (administrators): `assistant eval` runs, each figure over runs, every question's passages, and a run
started here on an uploaded question file (carried out in a thread: ui/evaluation_jobs.py says why)."""

from pathlib import PurePosixPath

import pandas as pd
import streamlit as st

from assistant import User
from assistant.evaluation.comparison import compare
from assistant.evaluation.report import found_instead
from assistant.evaluation.scoring import METRICS, label
from assistant.service import EVALUATION_READER, MAX_EVALUATION_K
from assistant.users import UserStore
from ui.components import assistant_or_stop, failures_shown, require_admin, short_time, show_error
from ui.evaluation_jobs import Jobs
from ui.safe_text import md, show_text

EACH_LINE, ACCOUNT, GROUPS = "each question's groups", "a portal account", "groups"
CHOSEN, FINISHED, FAILED = "evaluation:chosen", "evaluation:finished", "evaluation:failed"


def figures_row(run) -> dict:
    return {
        "run": run.id,
        "started": short_time(run.started),
        "questions file": run.questions_file,
        "questions": len(run.results),
        "asked as": run.reader,
        **{label(metric, run.k): run.figure(metric) for metric in METRICS},
        "search p50 ms": run.latency_ms.get("p50"),
        "search p95 ms": run.latency_ms.get("p95"),
    }


def start_a_run(assistant, admin) -> None:
    with st.expander("Run an evaluation", expanded=False):
        upload = st.file_uploader("Question file (JSON lines)", type=["jsonl"], key="evaluation:file")
        ask_as = st.radio("Ask each question as", [EACH_LINE, ACCOUNT, GROUPS], horizontal=True)
        account, groups = None, ""
        if ask_as == ACCOUNT:
            accounts = {user.name: user for user in UserStore(assistant.settings.users_file).users()}
            account = accounts.get(st.selectbox("Account", list(accounts)))
        elif ask_as == GROUPS:
            groups = st.text_input("Groups, separated by commas", key="evaluation:groups")
        k = st.number_input("Passages scored per question (k)", min_value=1, max_value=MAX_EVALUATION_K, value=5)
        answers = st.checkbox("Check the answers too", value=True)
        reader_chosen = {EACH_LINE: True, ACCOUNT: account is not None, GROUPS: bool(groups.strip())}[ask_as]
        if not st.button("Run evaluation", disabled=upload is None or not reader_chosen):
            return
        named = tuple(group.strip() for group in groups.split(",") if group.strip())
        with failures_shown(stop=False):  # a bad group name is said here; the kept runs still show below
            reader = account or (User(EVALUATION_READER, named) if named else None)
            options = {"reader": reader, "k": int(k), "answers": answers}
            evaluation_jobs().start(assistant, upload.getvalue(), upload.name, admin, **options)


@st.cache_resource
def evaluation_jobs() -> Jobs:
    return Jobs()


@st.fragment(run_every=1.0)
def job_progress(admin) -> None:
    """The admin's run in progress, redrawn every second until it ends; then the whole page, with the run in it."""
    jobs = evaluation_jobs()
    job = jobs.current(admin)
    if job is None:
        return
    if not job.finished.is_set():
        fraction = job.done / job.total if job.total else 0.0
        # Progress text is Markdown, images included: the uploaded file's name is escaped like any other.
        st.progress(fraction, text=f"{md(job.name)}: {job.done} of {job.total or '?'} questions")
        return
    jobs.forget(admin, job)
    if job.run is not None:
        st.session_state[CHOSEN] = job.run.id
        st.session_state[FINISHED] = job.run
    else:
        st.session_state[FAILED] = job.error
    st.rerun()


def finished_job() -> None:
    if (run := st.session_state.pop(FINISHED, None)) is not None:
        st.success(f"Run {run.id} kept: {len(run.results)} questions, {label('hit', run.k)} {run.figure('hit'):.3f}.")
    if (error := st.session_state.pop(FAILED, None)) is not None:
        show_error(error)


def chart(runs) -> None:
    if len(runs) < 2:
        return
    frame = pd.DataFrame(
        [{"run": run.id, **{metric: run.figure(metric) for metric in METRICS}} for run in runs]
    ).set_index("run")
    st.caption("Each figure over runs (oldest first)")
    st.line_chart(frame.dropna(axis="columns", how="all"))


def run_details(run, runs) -> None:
    st.subheader(f"Run {md(run.id)}")
    st.caption(
        f"{md(run.questions_file)}, top {run.k}, asked as {md(run.reader)}, by {md(run.by)}, {md(run.started)} "
        f"({run.seconds:.1f} s)"
    )
    earlier = [other for other in runs if other.id < run.id and other.questions_file == run.questions_file]
    baseline = earlier[-1] if earlier else None
    shown = [metric for metric in METRICS if run.figure(metric) is not None]
    for column, metric in zip(st.columns(len(shown)), shown, strict=True):
        before = baseline.figure(metric) if baseline else None
        column.metric(
            label(metric, run.k),
            f"{run.figure(metric):.3f}",
            delta=f"{run.figure(metric) - before:+.3f}" if before is not None else None,
        )
    if baseline is not None:
        changed = compare(run, baseline)
        st.caption(f"Against run {md(baseline.id)}: {len(changed.questions)} question(s) changed")
        if changed.questions:
            with st.expander("Questions whose outcome changed"):
                st.dataframe(
                    [
                        {"question": q.question, "verdict": q.verdict, "what": "; ".join(q.changes)}
                        for q in changed.questions
                    ],
                    hide_index=True,
                )
        if changed.settings:
            st.dataframe(
                [{"setting": name, "before": str(b), "after": str(a)} for name, (b, a) in changed.settings.items()],
                hide_index=True,
            )
    for problem in run.problems:
        st.warning(f"Line {problem.line} was not asked: {md(problem.reason)}")
    with st.expander("Settings and documents of this run"):
        st.dataframe([{"setting": name, "value": str(value)} for name, value in run.snapshot.items()], hide_index=True)
    rows = []
    for result in run.results:
        row = {
            "line": result.line,
            "question": result.question,
            "rank": result.rank,
            "hit": result.hit,
            "answer found": result.answer_found,
            "page found": result.page_found,
        }
        if run.answers:
            row |= {"answered": result.answered, "cited": result.cited}
        rows.append(row | {"found instead": found_instead(result)})
    st.dataframe(rows, hide_index=True, column_config={"question": st.column_config.TextColumn(width="large")})

    by_line = {f"line {result.line}: {result.question}": result for result in run.results}
    result = by_line[st.selectbox("Question", list(by_line), key=f"evaluation:question:{run.id}")]
    for number, passage in enumerate(result.found, 1):
        where = f", p. {passage.page}" if passage.page is not None else ""
        mark = "expected" if passage.expected else "not expected"
        with st.expander(md(f"[{number}] {PurePosixPath(passage.path).name}{where} · {mark} · {passage.score:.3f}")):
            show_text(passage.text)
    if result.reply is not None:
        st.caption("The assistant's answer")
        show_text(result.reply)
    if result.note:
        st.caption(md(result.note))


admin = require_admin()
assistant = assistant_or_stop()
st.title("Evaluation")
st.caption(
    "Whether the right documents are found for the organisation's own questions, run by run: the same as "
    "`assistant eval QUESTIONS.jsonl` (README: Evaluating the assistant)."
)
start_a_run(assistant, admin)
if evaluation_jobs().current(admin) is not None:
    job_progress(admin)
finished_job()

with failures_shown():
    runs = assistant.evaluation_runs(admin)
if not runs:
    st.info("No run yet: upload a question file above, or run `assistant eval QUESTIONS.jsonl` on the server.")
    st.stop()

st.dataframe([figures_row(run) for run in reversed(runs)], hide_index=True)
chart(runs)
ids = [run.id for run in reversed(runs)]
chosen = st.session_state.get(CHOSEN)
picked = st.selectbox("Run", ids, index=ids.index(chosen) if chosen in ids else 0)
with failures_shown():
    run_details(next(run for run in runs if run.id == picked), runs)
