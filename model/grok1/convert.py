"""Convert xAI's Grok-1 release checkpoint into a transformers model directory.

    python -m model.grok1.convert --checkpoint PATH/ckpt-0 --tokenizer PATH/tokenizer.model --out DIR \\
        [--config config.json] [--dtype bfloat16|float32|int8] [--shard-size 5GB] [--layout project|vllm]

Writes `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json`, `config.json` and the tokenizer. Tensors
are read, dequantised and written one at a time, and each shard is written as soon as it fills, so memory stays at
about one shard plus one layer's experts (never the whole 314B model).

With `--dtype int8` the attention and expert matrices are written as the release's own int8 weights plus bf16
scales (see model/grok1/int8.py; no dequantisation, a quarter of float32's size) and config.json says
`"quantization": "int8"`; the norms, router and embeddings are written as bfloat16.

With `--layout vllm` the directory is the one vLLM serves instead (model/grok1/serving: its names, config and remote
code); the default layout is what this project's model, fine-tuning and merge read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from .names import Target, release_to_ours, stack_gate_up, to_our_layout
from .release import (
    CheckpointFormatError,
    QuantizedWeight8bit,
    UnsafeCheckpointError,
    dequantize,
    num_layers_for_file_count,
    read_tensor,
    release_param_paths,
    tensor_filename,
)
from .shards import DEFAULT_SHARD_SIZE, ShardWriter, parse_size

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
INT8 = "int8"
LAYOUTS = ("project", "vllm")

# The released model (xai-org/grok-1 run.py); used when model.grok1.configuration is not importable.
RELEASE_CONFIG = {
    "vocab_size": 131072,
    "hidden_size": 6144,
    "intermediate_size": 32768,
    "num_hidden_layers": 64,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "attn_output_multiplier": 0.08838834764831845,
    "max_attn_value": 30.0,
    "max_position_embeddings": 8192,
    "embedding_multiplier_scale": 78.38367176906169,
    "output_multiplier_scale": 0.5773502691896257,
    "rms_norm_eps": 1e-5,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "rope_theta": 10000.0,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
}
# Fields the checkpoint's shapes determine; the rest (heads, multipliers, ...) only the config can give.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_experts")


class ConversionError(RuntimeError):
    """A user-facing conversion failure (bad arguments or inconsistent config)."""


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint inspection and config


def count_layers(checkpoint_dir: Path) -> int:
    """Number of layers in `checkpoint_dir`, after checking every file of that many layers is there."""
    if not checkpoint_dir.is_dir():
        raise CheckpointFormatError(
            f"checkpoint directory {checkpoint_dir} does not exist; pass the release's ckpt-0 folder"
        )
    indices = [int(m.group(1)) for p in checkpoint_dir.iterdir() if (m := re.fullmatch(r"tensor(\d{5})_000", p.name))]
    if not indices:
        raise CheckpointFormatError(f"{checkpoint_dir} holds no tensor00000_000-style files; is it ckpt-0?")
    # Round up so a missing last file is reported as missing, not as a smaller model.
    layers = max(1, -(-(max(indices) + 1 - 2) // 12))
    expected = len(release_param_paths(layers))
    present = set(indices)
    for index in range(expected):
        if index not in present:
            raise CheckpointFormatError(
                f"missing checkpoint file {checkpoint_dir / tensor_filename(index)} "
                f"(a {layers}-layer checkpoint has {expected} files); re-download the checkpoint"
            )
    return num_layers_for_file_count(expected)


def default_config() -> dict:
    """Release defaults, from Grok1Config when it is importable (so its defaults stay the single source)."""
    try:
        from .configuration import Grok1Config
    except ImportError:
        return dict(RELEASE_CONFIG)
    config = Grok1Config().to_dict()
    return {key: config.get(key, value) for key, value in RELEASE_CONFIG.items()}


def infer_shape_fields(checkpoint_dir: Path, num_layers: int) -> dict:
    """Sizes the checkpoint fixes, read from the embedding and the first layer's gate experts."""
    paths = release_param_paths(num_layers)
    embed = read_tensor(checkpoint_dir, paths.index("language_model/in_out_embed/embeddings"))
    gate = read_tensor(checkpoint_dir, paths.index("transformer/decoder_layer_0/moe/linear/w"))
    if len(embed.shape) != 2 or len(gate.shape) != 3:
        raise CheckpointFormatError(
            f"unexpected shapes: embeddings {tuple(embed.shape)} (want [vocab, hidden]), "
            f"expert gate {tuple(gate.shape)} (want [experts, hidden, intermediate])"
        )
    vocab, hidden = embed.shape
    experts, _, intermediate = gate.shape
    return {
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "intermediate_size": int(intermediate),
        "num_hidden_layers": num_layers,
        "num_experts": int(experts),
    }


def build_config(checkpoint_dir: Path, num_layers: int, overrides: dict | None) -> dict:
    """Release defaults, overridden by `overrides` (the user's JSON), checked against the checkpoint's shapes."""
    overrides = dict(overrides or {})
    inferred = infer_shape_fields(checkpoint_dir, num_layers)
    for key in SHAPE_FIELDS:
        if key in overrides and overrides[key] != inferred[key]:
            raise ConversionError(
                f"config says {key}={overrides[key]} but the checkpoint has {inferred[key]}; "
                "fix the config (or leave the field out and it is taken from the checkpoint)"
            )
    config = default_config()
    config.update(inferred)
    config.update(overrides)
    if overrides.get("head_dim") is None:
        # A config in the HF ports' field names has no head_dim: it follows from its own sizes, as in Grok1Config,
        # never from the release's 128.
        config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    config["model_type"] = "grok-1"
    config["architectures"] = ["Grok1ForCausalLM"]
    return config


def expected_release_shape(path: str, config: dict) -> tuple[int, ...]:
    """Shape the release stores `path` with ([in, out] matrices, [experts, in, out] experts) under `config`."""
    h, f, e = config["hidden_size"], config["intermediate_size"], config["num_experts"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    suffix = path.split("/", 2)[-1] if path.startswith("transformer/") else path
    shapes = {
        "language_model/in_out_embed/embeddings": (config["vocab_size"], h),
        "language_model/rms_norm/scale": (h,),
        "multi_head_attention/query/w": (h, q),
        "multi_head_attention/key/w": (h, kv),
        "multi_head_attention/value/w": (h, kv),
        "multi_head_attention/linear/w": (q, h),
        "router/w": (h, e),
        "moe/linear/w": (e, h, f),
        "moe/linear_v/w": (e, h, f),
        "moe/linear_1/w": (e, f, h),
    }
    if suffix.startswith("rms_norm"):
        return (h,)
    return shapes[suffix]


def write_config(config: dict, out_dir: Path, dtype: str) -> None:
    config = dict(config, torch_dtype="bfloat16" if dtype == INT8 else dtype)
    try:
        from .configuration import Grok1Config
    except ImportError:
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return
    fields = {k: v for k, v in config.items() if k not in ("model_type", "torch_dtype")}
    Grok1Config(**fields).save_pretrained(out_dir)


# ---------------------------------------------------------------------------------------------------------------
# Streaming conversion


def _is_quantized_target(target: Target) -> bool:
    """Attention projections and experts stay int8 with --dtype int8; router, norms and embeddings do not."""
    return target.kind in ("experts", "gate", "up") or (target.kind == "linear" and ".moe.router." not in target.name)


def _matrix_kind(name: str) -> str:
    """'model.layers.3.self_attn.q_proj.weight' -> 'q_proj'; '...moe.experts.down_proj' -> 'down_proj'."""
    parts = name.split(".")
    return parts[-2] if parts[-1] == "weight" else parts[-1]


def _int8_in_our_layout(raw, path: str, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Release QuantizedWeight8bit -> (int8 weight, bf16 scale [..., out, blocks]) in our layout."""
    if not isinstance(raw, QuantizedWeight8bit) or raw.weight.dtype != np.int8:
        raise CheckpointFormatError(f"{path}: expected an int8 QuantizedWeight8bit for --dtype int8")
    weight, scales = raw.weight, raw.scales
    *lead, rows, cols = weight.shape
    if tuple(scales.shape[:-2]) != tuple(lead) or scales.shape[-1] != cols or rows % scales.shape[-2]:
        raise CheckpointFormatError(f"{path}: scales {scales.shape} do not fit weight {weight.shape}")
    w = to_our_layout(torch.from_numpy(np.ascontiguousarray(weight)), kind)
    s = to_our_layout(torch.from_numpy(scales.astype(np.float32)), kind).to(torch.bfloat16)
    return w, s


def _stack_scales(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Stack gate/up scales [E, F, blocks]; differing block counts are expanded to the finer (a multiple)."""
    blocks = max(gate.shape[-1], up.shape[-1])
    parts = []
    for part in (gate, up):
        if blocks % part.shape[-1]:
            raise CheckpointFormatError(f"gate/up scale blocks {gate.shape[-1]} and {up.shape[-1]} do not nest")
        parts.append(part.repeat_interleave(blocks // part.shape[-1], dim=-1))
    return stack_gate_up(*parts)


def iter_converted(checkpoint_dir: Path, config: dict, dtype: torch.dtype | str):
    """Yield (our name, tensor in our layout) for every release tensor, in file order; gate+up are stacked.

    With dtype "int8", each quantised matrix `X` yields `X` (int8) and then `X_scale` (bf16 [..., out, blocks]).
    """
    int8 = dtype == INT8
    float_dtype = torch.bfloat16 if int8 else dtype
    paths = release_param_paths(config["num_hidden_layers"])
    halves: dict[str, dict[str, tuple[torch.Tensor, ...]]] = {}
    for index, path in enumerate(paths):
        raw = read_tensor(checkpoint_dir, index)
        want = expected_release_shape(path, config)
        if tuple(raw.shape) != want:
            raise CheckpointFormatError(
                f"{checkpoint_dir / tensor_filename(index)} ({path}) has shape {tuple(raw.shape)}, expected {want} "
                "for this config; check --config against the checkpoint"
            )
        target: Target = release_to_ours(path)
        if int8 and _is_quantized_target(target):
            tensors = _int8_in_our_layout(raw, path, target.kind)
        else:
            tensors = (to_our_layout(torch.from_numpy(dequantize(raw, np.float32)), target.kind).to(float_dtype),)
        del raw
        if target.kind in ("gate", "up"):
            # gate ("linear") and up ("linear_v") are separate files; hold the first until its partner arrives.
            parts = halves.setdefault(target.name, {})
            parts[target.kind] = tensors
            if len(parts) == 2:
                yield target.name, stack_gate_up(parts["gate"][0], parts["up"][0])
                if int8:
                    yield target.name + "_scale", _stack_scales(parts["gate"][1], parts["up"][1])
                del halves[target.name]
            continue
        yield target.name, tensors[0]
        if len(tensors) == 2:
            yield target.name + "_scale", tensors[1]
    if halves:
        raise CheckpointFormatError(f"expert gate/up halves without a partner: {sorted(halves)}")


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    tokenizer: str | Path | None = None,
    config_overrides: dict | None = None,
    dtype: str = "bfloat16",
    shard_size: str | int = DEFAULT_SHARD_SIZE,
    layout: str = "project",
) -> dict:
    """Convert the release at `checkpoint` (its ckpt-0 folder) into `out_dir`; returns the index JSON.

    `layout` "project" writes the directory this project's model, fine-tuning and merge read; "vllm" the serving
    directory vLLM loads (model/grok1/serving).
    """
    if dtype not in (*DTYPES, INT8):
        raise ConversionError(f"unknown dtype {dtype!r}; choose one of {', '.join((*DTYPES, INT8))}")
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    num_layers = count_layers(checkpoint)
    config = build_config(checkpoint, num_layers, config_overrides)
    if layout == "vllm":
        return _convert_for_serving(checkpoint, out_dir, config, dtype, shard_size, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out_dir, parse_size(shard_size))
    blocks: dict[str, int] = {}
    for name, tensor in iter_converted(checkpoint, config, DTYPES.get(dtype, dtype)):
        if name.endswith("_scale"):
            kind = _matrix_kind(name.removesuffix("_scale"))
            if blocks.setdefault(kind, tensor.shape[-1]) != tensor.shape[-1]:
                raise CheckpointFormatError(
                    f"{name} has {tensor.shape[-1]} scale blocks but earlier {kind} matrices have {blocks[kind]}"
                )
        writer.add(name, tensor)
    index = writer.finish()
    if dtype == INT8:
        config = dict(config, quantization=INT8, quantization_blocks=dict(sorted(blocks.items())))
    write_config(config, out_dir, dtype)
    if tokenizer is not None:
        from .tokenizer import convert_tokenizer

        convert_tokenizer(tokenizer, out_dir)
    return index


def _convert_for_serving(checkpoint: Path, out_dir: Path, config: dict, dtype: str, shard_size, tokenizer) -> dict:
    from .serving.export import with_scales, write_serving_directory

    def add_tokenizer(directory: Path) -> None:
        if tokenizer is not None:
            from .tokenizer import convert_tokenizer

            convert_tokenizer(tokenizer, directory)

    return write_serving_directory(
        out_dir,
        config,
        with_scales(iter_converted(checkpoint, config, DTYPES.get(dtype, dtype))),
        dtype=dtype,
        shard_size=shard_size,
        add_tokenizer=add_tokenizer,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.grok1.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the release's ckpt-0 directory")
    parser.add_argument("--tokenizer", help="the release's tokenizer.model (SentencePiece)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--config", help="JSON whose fields override the release config")
    parser.add_argument(
        "--dtype", default="bfloat16", help="bfloat16 (default), float32, or int8 (the release's int8 + scales)"
    )
    parser.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, help="max bytes per shard, e.g. 5GB (default)")
    parser.add_argument(
        "--layout",
        default="project",
        choices=LAYOUTS,
        help="project (default: what this project's model and fine-tuning read) or vllm (a serving directory)",
    )
    args = parser.parse_args(argv)

    try:
        overrides = json.loads(Path(args.config).read_text()) if args.config else None
        if args.tokenizer and not Path(args.tokenizer).is_file():
            raise ConversionError(f"tokenizer model {args.tokenizer} not found; pass the release's tokenizer.model")
        index = convert_checkpoint(
            args.checkpoint,
            args.out,
            tokenizer=args.tokenizer,
            config_overrides=overrides,
            dtype=args.dtype,
            shard_size=args.shard_size,
            layout=args.layout,
        )
    except (CheckpointFormatError, UnsafeCheckpointError, ConversionError, OSError, ValueError) as exc:
        # ValueError covers ServingLayoutError: a config vLLM's Grok-1 cannot express.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shards = len(set(index["weight_map"].values()))
    print(f"wrote {len(index['weight_map'])} tensors in {shards} shard(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
