"""Merge an adapter into its base: a plain model directory that serves without PEFT (e.g. vLLM without --enable-lora),
in this project's layout or, for a Grok-1 base, in the one vLLM serves (model/grok1/serving)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from model import load_adapter

from .config import ConfigError, ModelSection
from .lora_model import check_adapter, load_base


def merge(
    adapter_dir: Path, out_dir: Path, base_dir: Path | None = None, dtype: str | None = None, layout: str = "project"
) -> Path:
    """Write base + adapter as full weights (and the tokenizer) to `out_dir`; `layout` "vllm" writes a Grok-1 serving
    directory (the merged weights in the training dtype: an update merged into int8 would be rounded away)."""
    if layout not in ("project", "vllm"):
        raise ConfigError(f"unknown layout {layout!r}: project or vllm")
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
    # For vLLM the merged model is a step on the way: the export builds its own `.partial` beside out_dir.
    partial = out_dir.with_name(out_dir.name + (".merged" if layout == "vllm" else ".partial"))
    shutil.rmtree(partial, ignore_errors=True)
    with torch.no_grad():
        merged.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if layout == "vllm":
        _export_for_serving(partial, out_dir, dtype or adapter.dtype)
        return out_dir
    if out_dir.exists():
        out_dir.rmdir()
    partial.rename(out_dir)  # a crash mid-write never leaves a directory that looks like a complete model
    return out_dir


def _export_for_serving(merged: Path, out_dir: Path, dtype: str) -> None:
    from model.grok1.serving import ServingLayoutError, export

    try:
        export(merged, out_dir, dtype=dtype)
    except ServingLayoutError as error:
        raise ConfigError(f"the merged model cannot be written for vLLM: {error}") from error
    finally:
        shutil.rmtree(merged, ignore_errors=True)
