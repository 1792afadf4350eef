"""Fine-tuning (administrators): the LoRA runs under the runs directory, their loss curves and held-out perplexity."""

import math

import pandas as pd
import streamlit as st

from assistant.runs import list_runs, read_log
from ui.components import assistant_or_stop, failures_shown, require_admin
from ui.safe_text import md


def perplexity(loss: float | None) -> float | None:
    return math.exp(loss) if loss is not None else None


def runs_table(runs) -> None:
    rows = [
        {
            "run": run.name,
            "status": run.status,
            "steps": f"{run.steps} / {run.max_steps}" if run.max_steps else str(run.steps),
            "last loss": run.last_loss,
            "held-out perplexity before": perplexity(run.base_eval_loss),
            "held-out perplexity after": perplexity(run.eval_loss),
            "adapter": str(run.adapter) if run.adapter else "",
        }
        for run in runs
    ]
    two_places = st.column_config.NumberColumn(format="%.2f")
    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            "last loss": st.column_config.NumberColumn(format="%.4f"),
            "held-out perplexity before": two_places,
            "held-out perplexity after": two_places,
        },
    )


def run_details(run) -> None:
    st.subheader(md(run.name))  # a folder name: anyone who may write under the runs directory chose it
    before, after = perplexity(run.base_eval_loss), perplexity(run.eval_loss)
    left, right = st.columns(2)
    left.metric("Held-out perplexity, base model", f"{before:.2f}" if before is not None else "not measured")
    right.metric(
        "Held-out perplexity, with the adapter",
        f"{after:.2f}" if after is not None else "not measured yet",
        delta=f"{after - before:+.2f}" if before is not None and after is not None else None,
        delta_color="inverse",  # lower perplexity is better
    )
    if before is None and run.adapter is not None:
        # The command as a code block: plain text, whatever characters the adapter's path holds.
        eval_file = md(run.eval_file)
        st.caption(f"The base model's figure comes from this command, which keeps its result in {eval_file}:")
        st.code(f"finetune eval --adapter {run.adapter} --data DATA", language="bash")
    log = read_log(run)
    steps = pd.DataFrame([line for line in log if "loss" in line], columns=["step", "loss"])
    if steps.empty:
        st.info("No training step logged yet.")
        return
    st.caption("Training loss by step")
    st.line_chart(steps.set_index("step")["loss"])
    evals = pd.DataFrame([line for line in log if "eval_loss" in line], columns=["step", "eval_loss"])
    if len(evals) > 1:
        st.caption("Held-out loss by step")
        st.line_chart(evals.set_index("step")["eval_loss"])


require_admin()
settings = assistant_or_stop().settings
st.title("Fine-tuning runs")
st.caption(f"Runs under {md(settings.runs_dir)}: each is the output_dir of a `finetune train --config RUN.yaml`.")

with failures_shown():
    runs = list_runs(settings.runs_dir)

if not runs:
    st.info(
        f"No run yet. Set output_dir under {md(settings.runs_dir)} in a training config (see finetune/configs/) and "
        "start it with `finetune train --config RUN.yaml`."
    )
    st.stop()

runs_table(runs)
by_name = {run.name: run for run in runs}
chosen = st.selectbox("Run", list(by_name))
with failures_shown():
    run_details(by_name[chosen])
