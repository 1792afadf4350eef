"""Write a Grok-1 serving directory (vLLM's names and config, with remote code) from a project model directory.

    python -m model.grok1.serving.export --model MODELS/grok-1-int8 --out MODELS/grok-1-vllm-int8 --dtype int8
    python -m model.grok1.serving.export --model MODELS/grok-1-hf --out MODELS/grok-1-vllm [--dtype bfloat16]

The source is what `python -m model.grok1.convert` or `finetune merge` wrote. `--dtype int8` keeps the release's
int8 weights, re-expressed losslessly in a format vLLM reads (packed_int8.py; about 320 GB: 8 x 80 GB GPUs), and
needs an int8 source; a float dtype writes float weights (int8 sources dequantised; bf16 Grok-1 is about 631 GB:
8 x 141 GB GPUs). Tensors stream one at a time, so memory stays at about one shard. `convert --layout vllm` writes
the same directory straight from the release. layout.py says what the directory holds and why.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open

from ..int8 import INT8, dequantize_int8
from ..shards import DEFAULT_SHARD_SIZE, ShardWriter, parse_size
from .layout import CONFIG_FILE, MODELING_FILE, ServingLayoutError, serving_config, serving_tensors
from .packed_int8 import group_size_for, packed, quantization_config

FLOAT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DTYPES = (*FLOAT_DTYPES, INT8)
# A tensor of the project's layout: its name, its value, and for an int8 matrix its block scales (else None).
Tensor = tuple[str, torch.Tensor, torch.Tensor | None]
# What a model directory holds besides weights and config that serving reads: the tokenizer and generation defaults.
_BESIDE_WEIGHTS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
)


def write_serving_directory(
    out_dir: Path,
    config: dict,
    tensors: Iterable[Tensor],
    *,
    dtype: str = "bfloat16",
    shard_size: str | int = DEFAULT_SHARD_SIZE,
    add_tokenizer: Callable[[Path], object] | None = None,
) -> dict:
    """Write `tensors` (the project's names) as a serving directory at `out_dir`; returns the shard index.

    With `dtype` "int8" every int8 matrix is written in the 8-bit format and the rest in bfloat16.

    The directory is built beside `out_dir` and renamed into place at the end, so an interrupted export never leaves
    something that looks like a complete model.
    """
    if dtype not in DTYPES:
        raise ServingLayoutError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    group = group_size_for(config) if dtype == INT8 else None
    if dtype == INT8:
        serving = serving_config(config, "bfloat16", quantization_config(group))
    else:
        serving = serving_config(config, dtype)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ServingLayoutError(f"{out_dir} is not empty: export into a new directory")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        writer = ShardWriter(partial, parse_size(shard_size))
        for name, tensor, scale in tensors:
            for served, part in _served(name, tensor, scale, dtype, group):
                writer.add(served, part)
        index = writer.finish()
        (partial / "config.json").write_text(json.dumps(serving, indent=2, sort_keys=True) + "\n")
        code = resources.files(__package__) / "remote"
        for name in (CONFIG_FILE, MODELING_FILE):
            (partial / name).write_text(code.joinpath(name).read_text())
        if add_tokenizer is not None:
            add_tokenizer(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # half a model is worse than none
        raise
    if out_dir.exists():
        out_dir.rmdir()
    partial.rename(out_dir)
    return index


def _served(name: str, tensor: torch.Tensor, scale: torch.Tensor | None, dtype: str, group: int | None):
    if scale is None:
        if dtype == INT8 and (".self_attn." in name or ".moe.experts." in name):  # the release's int8 matrices
            raise ServingLayoutError(
                f"{name} is {tensor.dtype}, not int8: the 8-bit format holds the release's own int8 weights without "
                "rounding them again; export an int8 directory (`python -m model.grok1.convert --dtype int8`), or "
                "this one with --dtype bfloat16"
            )
        float_dtype = torch.bfloat16 if dtype == INT8 else FLOAT_DTYPES[dtype]
        for served, part in serving_tensors(name, tensor):
            yield served, part.to(float_dtype)
    elif dtype == INT8:
        # The scales follow their matrix through the same renaming and per-expert split.
        for (served, weight), (_, scales) in zip(serving_tensors(name, tensor), serving_tensors(name, scale)):
            yield from packed(served, weight, scales, group)
    else:
        for served, part in serving_tensors(name, dequantize_int8(tensor, scale, torch.float32)):
            yield served, part.to(FLOAT_DTYPES[dtype])


def export(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    shard_size: str | int = DEFAULT_SHARD_SIZE,
) -> dict:
    """The project model directory `model_dir` as a serving directory at `out_dir`, its weights in `dtype`."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ServingLayoutError(f"{model_dir} has no config.json: give a directory written by model.grok1.convert")
    config = json.loads(config_file.read_text())
    return write_serving_directory(
        Path(out_dir),
        config,
        source_tensors(model_dir),
        dtype=dtype,
        shard_size=shard_size,
        add_tokenizer=lambda directory: _copy_beside_weights(model_dir, directory),
    )


def source_tensors(model_dir: Path) -> Iterator[Tensor]:
    """The directory's tensors one at a time, in shard order, each int8 matrix with its `_scale` companion."""
    index_file = model_dir / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text())["weight_map"]
    elif (model_dir / "model.safetensors").is_file():
        with safe_open(model_dir / "model.safetensors", "pt") as handle:
            weight_map = dict.fromkeys(handle.keys(), "model.safetensors")
    else:
        raise ServingLayoutError(f"{model_dir} has no model.safetensors or model.safetensors.index.json")

    def read(name: str) -> torch.Tensor:
        with safe_open(model_dir / weight_map[name], "pt") as handle:
            return handle.get_tensor(name)

    for name in sorted(weight_map, key=lambda key: (weight_map[key], key)):
        if name.endswith("_scale") and name.removesuffix("_scale") in weight_map:
            continue
        tensor = read(name)
        if tensor.dtype != torch.int8:
            yield name, tensor, None
        elif f"{name}_scale" in weight_map:
            yield name, tensor, read(f"{name}_scale")
        else:
            raise ServingLayoutError(f"{name} is int8 but {model_dir} has no {name}_scale beside it")


def with_scales(tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterator[Tensor]:
    """(name, tensor) pairs where each int8 matrix is followed by its `_scale` (model.grok1.convert's stream) as
    triples."""
    held: tuple[str, torch.Tensor] | None = None
    for name, tensor in tensors:
        if held is not None:
            if name != f"{held[0]}_scale":
                raise ServingLayoutError(f"{held[0]} is int8 but {name}, not its scale, follows it")
            yield held[0], held[1], tensor
            held = None
        elif tensor.dtype == torch.int8:
            held = (name, tensor)
        else:
            yield name, tensor, None
    if held is not None:
        raise ServingLayoutError(f"{held[0]} is int8 but no scale follows it")


def _copy_beside_weights(source: Path, target: Path) -> None:
    for name in _BESIDE_WEIGHTS:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.grok1.serving.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Grok-1 directory written by model.grok1.convert or merge")
    parser.add_argument("--out", required=True, help="the serving directory to write (new or empty)")
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=DTYPES,
        help="bfloat16 (default), float16, float32, or int8 (the release's int8 weights, from an int8 directory)",
    )
    parser.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, help="max bytes per shard, e.g. 5GB (default)")
    args = parser.parse_args(argv)
    try:
        index = export(args.model, args.out, dtype=args.dtype, shard_size=args.shard_size)
    except (ServingLayoutError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {len(index['weight_map'])} tensors to {args.out}: serve it with `vllm serve {args.out} --trust-remote-code`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
