"""The short training run the finetune tests share: a tiny model, 8 steps of 4 sequences, a checkpoint every 3."""

from __future__ import annotations

from pathlib import Path

from finetune.config import TrainConfig, load_config


def run_settings(base: Path, data: Path, out: Path, *overrides: str) -> list[str]:
    """`--set` items for the run; later items win."""
    return [
        f"model.path={base}",
        "model.dtype=float32",
        f"data={data}",
        f"output_dir={out}",
        "train.max_steps=8",
        "train.micro_batch=4",
        "train.checkpoint_every=3",
        "optim.lr=1e-2",
        *overrides,
    ]


def config_for(base: Path, data: Path, out: Path, *overrides: str) -> TrainConfig:
    return load_config(None, run_settings(base, data, out, *overrides))
