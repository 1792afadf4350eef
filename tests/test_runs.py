import json
import os
import time
from pathlib import Path

import pytest

from assistant.runs import RunInfo, list_runs, read_log


def write_run(
    root: Path,
    name: str,
    steps: int,
    max_steps: int = 10,
    finished: bool = False,
    age_s: float = 0,
    eval_every: int | None = None,
) -> Path:
    """A run directory as `finetune train` leaves it (log.jsonl, config.json, checkpoints/, adapter/)."""
    run = root / name
    (run / "checkpoints" / f"step-{steps:08d}").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"output_dir": str(run), "train": {"max_steps": max_steps}}))
    lines = []
    for step in range(1, steps + 1):
        line = {"step": step, "loss": 3.0 - step / 10, "lr": 1e-4, "grad_norm": 1.0, "tokens": 64 * step}
        line["tokens_per_s"] = 100.0
        if eval_every and step % eval_every == 0:
            line["eval_loss"] = 2.9 - step / 10
        lines.append(line)
    if finished:
        lines.append({"step": max_steps, "eval_loss": 2.0, "eval_perplexity": 7.39})
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
        (run / "adapter" / "training.json").write_text(json.dumps({"base_model": "tiny", "steps": max_steps}))
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if age_s:
        then = time.time() - age_s
        os.utime(run / "log.jsonl", (then, then))
    return run


def test_statuses_steps_and_losses(tmp_path):
    finished = write_run(tmp_path, "a-finished", steps=10, finished=True, age_s=3600)
    (finished / "eval.json").write_text(json.dumps({"tokens": 100, "base_loss": 2.5, "adapted_loss": 2.0}))
    write_run(tmp_path, "b-running", steps=4, eval_every=2)
    write_run(tmp_path, "c-stopped", steps=3, age_s=600)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("")

    runs = {run.name: run for run in list_runs(tmp_path)}

    assert list(runs) == ["a-finished", "b-running", "c-stopped"]
    assert runs["a-finished"] == RunInfo(
        name="a-finished",
        path=finished,
        status="finished",
        steps=10,
        max_steps=10,
        last_loss=2.0,
        eval_loss=2.0,
        base_eval_loss=2.5,
        adapter=finished / "adapter",
    )
    running = runs["b-running"]
    assert (running.status, running.steps, running.max_steps, running.adapter) == ("running", 4, 10, None)
    assert running.last_loss == 2.6 and running.eval_loss == 2.5 and running.base_eval_loss is None
    stopped = runs["c-stopped"]
    assert (stopped.status, stopped.steps, stopped.eval_loss) == ("stopped", 3, None)


def test_eval_loss_comes_from_training_json_without_a_final_log_line(tmp_path):
    run = write_run(tmp_path, "run", steps=10, finished=True)
    (run / "log.jsonl").write_text("".join(line + "\n" for line in (run / "log.jsonl").read_text().splitlines()[:-1]))
    (run / "adapter" / "training.json").write_text(json.dumps({"steps": 10, "eval_loss": 1.75}))
    [info] = list_runs(tmp_path)
    assert info.status == "finished" and info.eval_loss == 1.75


def test_a_run_with_only_a_config_is_listed_and_half_written_files_do_not_break_the_list(tmp_path):
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.json").write_text('{"train": {"max_st')
    [info] = list_runs(tmp_path)
    assert (info.name, info.status, info.steps, info.max_steps, info.last_loss) == ("fresh", "stopped", 0, None, None)


def test_read_log_skips_a_torn_last_line(tmp_path):
    run = write_run(tmp_path, "run", steps=3)
    with (run / "log.jsonl").open("a") as file:
        file.write('{"step": 4, "lo')
    [info] = list_runs(tmp_path)
    assert [line["step"] for line in read_log(info)] == [1, 2, 3] == [line["step"] for line in read_log(run)]
    assert info.steps == 3


def test_a_missing_root_holds_no_runs(tmp_path):
    assert list_runs(tmp_path / "nope") == [] and read_log(tmp_path / "nope") == []


# --- adapters the Assistant offers ------------------------------------------------------------------------------


def test_adapters_are_the_finished_runs_adapters(make_assistant, tmp_path):
    assistant = make_assistant()
    assert assistant.settings.runs_dir == tmp_path / "data" / "runs" and assistant.adapters() == []

    runs = tmp_path / "data" / "runs"
    write_run(runs, "b-hr", steps=10, finished=True)
    write_run(runs, "a-legal", steps=10, finished=True)
    write_run(runs, "c-unfinished", steps=3)
    assert assistant.adapters() == [runs / "a-legal" / "adapter", runs / "b-hr" / "adapter"]


def test_use_adapter_switches_and_drops_the_loaded_generator(make_assistant, tmp_path):
    class Loaded:
        closed = False

        def close(self):
            self.closed = True

    assistant = make_assistant(generator="local", model_path=tmp_path)  # never loaded: the generator is replaced
    adapter = write_run(tmp_path / "data" / "runs", "hr", steps=10, finished=True) / "adapter"
    loaded = assistant._generator = Loaded()

    assistant.use_adapter(adapter)
    assert assistant.settings.adapter == adapter and assistant._generator is None and loaded.closed

    assistant.use_adapter(None)
    assert assistant.settings.adapter is None


def test_use_adapter_refuses_what_is_not_an_adapter(make_assistant, tmp_path):
    with pytest.raises(ValueError, match="only for the in-process model"):
        make_assistant().use_adapter(None)
    assistant = make_assistant(generator="local", model_path=tmp_path)
    unfinished = write_run(tmp_path / "runs", "unfinished", steps=3)
    (tmp_path / "file.txt").write_text("")
    for path, reason in (
        (tmp_path / "nope", "not a directory"),
        (tmp_path / "file.txt", "not a directory"),
        (unfinished, "no adapter_config.json"),
    ):
        with pytest.raises(ValueError, match=reason):
            assistant.use_adapter(path)
    assert assistant.settings.adapter is None


def test_a_runs_file_layout_is_named_in_one_place():
    """finetune writes a run and the assistant reads it by the same names (model/run_layout.py): a file name spelled
    out anywhere else could drift from it, and the portal would stop finding logs or an adapter's audience."""
    import ast

    from conftest import ROOT

    from model import run_layout

    names = {value for key, value in vars(run_layout).items() if key.isupper()}
    spelled = []
    for package in ("assistant", "finetune", "model", "ui"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "run_layout.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names - {"config.json", "adapter", "serves"}:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert spelled == []
