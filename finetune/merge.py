"""Merge an adapter into its base: a plain model directory that serves without PEFT (e.g. vLLM without --enable-lora)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from model import load_adapter

from .config import ConfigError, ModelSection
from .lora_model import check_adapter, load_base


def merge(adapter_dir: Path, out_dir: Path, base_dir: Path | None = None, dtype: str | None = None) -> Path:
    """Write base + adapter as full weights (and the tokenizer) to `out_dir`."""
    adapter = check_adapter(adapter_dir, base_dir)
    if adapter.base_config.get("quantization") == "int8":
        raise ConfigError(
            f"{adapter.base_dir} holds int8 weights, and merging a LoRA update into int8 would round it away: convert the "
            "release with `python -m model.grok1.convert --dtype bfloat16` and merge onto that (the adapter fits it)"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: merge into a new directory")
    model, tokenizer = load_base(ModelSection(path=adapter.base_dir, dtype=dtype or adapter.dtype), for_training=False)
    merged = load_adapter(model, adapter_dir).merge_and_unload()
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with torch.no_grad():
        merged.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if out_dir.exists():
        out_dir.rmdir()
    partial.rename(out_dir)  # a crash mid-write never leaves a directory that looks like a complete model
    return out_dir
