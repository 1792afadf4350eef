"""Fine-tuning runs as the portal shows them, read from the files `finetune train` writes (never by importing it).

The layout is model/run_layout.py's. log.jsonl has one line per step (step, loss, lr, grad_norm, tokens,
tokens_per_s, sometimes eval_loss; then a final eval_loss / eval_perplexity line); eval.json, when present, is what
`finetune eval` kept there (base_loss, adapted_loss): the base model's held-out loss to compare with.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from assistant.files import read_jsonl
from model.run_layout import ADAPTER_CONFIG, ADAPTER_DIR, CONFIG_FILE, EVAL_FILE, LOG_FILE, SERVES, TRAINING_INFO
from retrieval import ADMIN_GROUP

# The trainer writes a log line every step; a run whose log is older than this has stopped (or hangs).
RUNNING_WITHIN_S = 120


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str  # "finished" | "running" | "stopped"
    steps: int
    max_steps: int | None
    last_loss: float | None
    eval_loss: float | None
    base_eval_loss: float | None
    adapter: Path | None

    @property
    def eval_file(self) -> Path:
        """Where `finetune eval` keeps the base model's held-out figures for this run."""
        return self.path / EVAL_FILE


def list_runs(root: Path) -> list[RunInfo]:
    """Every run under root, by name; a missing root holds none."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        _run_info(path)
        for path in sorted(root.iterdir())
        if path.is_dir() and ((path / LOG_FILE).is_file() or (path / CONFIG_FILE).is_file())
    ]


def adapters(root: Path | None) -> list[Path]:
    """The adapters of the finished runs under root, one directory each."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(config.parent for config in Path(root).glob(f"*/{ADAPTER_DIR}/{ADAPTER_CONFIG}"))


def adapter_audience(adapter: Path) -> tuple[str, ...]:
    """The groups whose members may be answered with `adapter`: those that may read everything it learned.

    `finetune prepare --group` records them and `finetune train` copies them into training.json ("serves"). An
    adapter that records none (trained on files no store vouched for, or before this was recorded) serves
    administrators only: what it learned may be anything.
    """
    serves = _json(Path(adapter) / TRAINING_INFO).get(SERVES)
    if isinstance(serves, list) and serves and all(isinstance(group, str) and group for group in serves):
        return tuple(serves)
    return (ADMIN_GROUP,)


def read_log(run: RunInfo | Path) -> list[dict]:
    """The run's log lines; a line the trainer is writing right now (torn) is left out."""
    path = run.path if isinstance(run, RunInfo) else Path(run)
    if path.is_dir():
        path = path / LOG_FILE
    return read_jsonl(path)


def _run_info(path: Path) -> RunInfo:
    log = read_log(path)
    adapter = path / ADAPTER_DIR
    finished = (adapter / ADAPTER_CONFIG).is_file()
    training = _json(adapter / TRAINING_INFO) if finished else {}
    steps_logged = [record for record in log if "loss" in record]
    evaluated = [record["eval_loss"] for record in log if record.get("eval_loss") is not None]
    train = _json(path / CONFIG_FILE).get("train")
    max_steps = train.get("max_steps") if isinstance(train, dict) else None
    return RunInfo(
        name=path.name,
        path=path,
        status="finished" if finished else "running" if _recently_written(path / LOG_FILE) else "stopped",
        steps=int(steps_logged[-1].get("step", 0)) if steps_logged else int(training.get("steps") or 0),
        max_steps=max_steps if isinstance(max_steps, int) and not isinstance(max_steps, bool) else None,
        last_loss=_number(steps_logged[-1]["loss"]) if steps_logged else None,
        eval_loss=_number(evaluated[-1]) if evaluated else _number(training.get("eval_loss")),
        base_eval_loss=_number(_json(path / EVAL_FILE).get("base_loss")),
        adapter=adapter if finished else None,
    )


def _recently_written(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < RUNNING_WITHIN_S
    except FileNotFoundError:
        return False


def _json(path: Path) -> dict:
    # A file the trainer is writing may be read half-written: it counts as absent until it is whole.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
