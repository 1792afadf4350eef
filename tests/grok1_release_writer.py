"""Test helper: write a tiny Grok-1 checkpoint exactly in the release's on-disk format.

One pickle per parameter, `tensor{index:05d}_000`, in the order of JAX's flattening of the Haiku params (sorted
module paths, so decoder_layer_10 precedes decoder_layer_2). Matrices are `QuantizedWeight8bit` pickled from
`__main__` (int8 weight, bf16 scales) with both scale groupings the release uses: one scale row per output column
(`[1, out]`, `[E, 1, out]`: query/key/value, expert gate/up) and one row per contiguous block of input rows
(`[G, out]`, `[E, G, out]`: attention output, expert down). Norms, router and embeddings are float32 arrays.

Layer i's values are offset so that a tensor put in the wrong layer cannot pass a comparison.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

from model.grok1.release import release_param_paths, tensor_filename

TINY = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "intermediate_size": 48,
    "num_hidden_layers": 11,
    "num_experts": 8,
    "vocab_size": 256,
}
ROW_GROUPS = 8  # the release splits the input rows of row-parallel scales into 8 blocks (its model axis)


@dataclass
class QuantizedWeight8bit:
    weight: np.ndarray
    scales: np.ndarray


# The release pickled its class from `__main__` (checkpoint.py registers it there); pickles must name it so.
QuantizedWeight8bit.__module__ = "__main__"


@contextlib.contextmanager
def _class_in_main():
    main = sys.modules["__main__"]
    had, old = hasattr(main, "QuantizedWeight8bit"), getattr(main, "QuantizedWeight8bit", None)
    main.QuantizedWeight8bit = QuantizedWeight8bit  # pickle checks the class is reachable where it says
    try:
        yield
    finally:
        if had:
            main.QuantizedWeight8bit = old
        else:
            del main.QuantizedWeight8bit


def _release_shape(path: str, c: dict) -> tuple[int, ...]:
    h, f, e = c["hidden_size"], c["intermediate_size"], c["num_experts"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    table = {
        "in_out_embed/embeddings": (c["vocab_size"], h),
        "query/w": (h, q),
        "key/w": (h, kv),
        "value/w": (h, kv),
        "attention/linear/w": (q, h),
        "router/w": (h, e),
        "moe/linear/w": (e, h, f),
        "moe/linear_v/w": (e, h, f),
        "moe/linear_1/w": (e, f, h),
    }
    for suffix, shape in table.items():
        if path.endswith(suffix):
            return shape
    return (h,)  # the rms norms


def _layer_of(path: str) -> int:
    parts = path.split("/")
    return int(parts[1].rsplit("_", 1)[1]) if path.startswith("transformer/") else -1


def _quantized(rng, shape, layer: int, groups: int) -> QuantizedWeight8bit:
    *lead, _rows, cols = shape
    weight = rng.integers(-127, 128, size=shape, dtype=np.int8)
    # Positive, layer-dependent scales: different per output column, per block and per layer.
    scales = (rng.uniform(0.5, 1.5, size=(*lead, groups, cols)) * 0.01 * (layer + 2)).astype(ml_dtypes.bfloat16)
    return QuantizedWeight8bit(weight=weight, scales=scales)


def make_release_tensors(config: dict | None = None, seed: int = 0) -> dict[str, np.ndarray | QuantizedWeight8bit]:
    """Release path -> the object the release would pickle for it."""
    c = dict(TINY, **(config or {}))
    rng = np.random.default_rng(seed)
    tensors = {}
    for path in release_param_paths(c["num_hidden_layers"]):
        layer, shape = _layer_of(path), _release_shape(path, c)
        if "multi_head_attention/linear/" in path or "moe/linear_1/" in path:
            tensors[path] = _quantized(rng, shape, layer, ROW_GROUPS)  # row-parallel: blocked scales
        elif path.endswith("/w") and "router" not in path:
            tensors[path] = _quantized(rng, shape, layer, 1)  # column-parallel: one scale per column
        else:
            tensors[path] = (rng.standard_normal(shape) + 10 * (layer + 2)).astype(np.float32)
    return tensors


def dequantized(obj) -> np.ndarray:
    """Float32 value of a release object, computed independently of the converter."""
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float32)
    w, s = obj.weight.astype(np.float32), obj.scales.astype(np.float32)
    rows, groups = w.shape[-2], s.shape[-2]
    s = np.repeat(s, rows // groups, axis=-2)  # each scale row covers its block of input rows
    return w * s


def expected_state_dict(tensors: dict) -> dict[str, torch.Tensor]:
    """Our names and layout ([out, in], gate_up stacked), float32, written out longhand for the tests."""
    out = {}
    for path, obj in tensors.items():
        value = torch.from_numpy(dequantized(obj))
        if path == "language_model/in_out_embed/embeddings":
            out["model.embed_tokens.weight"] = value
            continue
        if path == "language_model/rms_norm/scale":
            out["model.norm.weight"] = value
            continue
        prefix = f"model.layers.{_layer_of(path)}."
        rest = path.split("/", 2)[2]
        simple = {
            "rms_norm/scale": "pre_attn_norm.weight",
            "rms_norm_1/scale": "post_attn_norm.weight",
            "rms_norm_2/scale": "pre_moe_norm.weight",
            "rms_norm_3/scale": "post_moe_norm.weight",
        }
        linear = {
            "multi_head_attention/query/w": "self_attn.q_proj.weight",
            "multi_head_attention/key/w": "self_attn.k_proj.weight",
            "multi_head_attention/value/w": "self_attn.v_proj.weight",
            "multi_head_attention/linear/w": "self_attn.o_proj.weight",
            "router/w": "moe.router.weight",
        }
        if rest in simple:
            out[prefix + simple[rest]] = value
        elif rest in linear:
            out[prefix + linear[rest]] = value.T.contiguous()
        elif rest == "moe/linear_1/w":
            out[prefix + "moe.experts.down_proj"] = value.transpose(1, 2).contiguous()
        elif rest == "moe/linear/w":
            gate = value.transpose(1, 2)
            up = torch.from_numpy(dequantized(tensors[path.replace("moe/linear/w", "moe/linear_v/w")])).transpose(1, 2)
            out[prefix + "moe.experts.gate_up_proj"] = torch.cat([gate, up], dim=1).contiguous()
    return out


def write_release_checkpoint(ckpt_dir: str | Path, config: dict | None = None, seed: int = 0) -> dict:
    """Write the tiny checkpoint into `ckpt_dir`; return our expected float32 state dict."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = make_release_tensors(config, seed)
    with _class_in_main():
        for index, obj in enumerate(tensors.values()):
            with (ckpt_dir / tensor_filename(index)).open("wb") as f:
                pickle.dump(obj, f, protocol=4)  # the release's Python 3.10 default
    return expected_state_dict(tensors)


def train_sentencepiece(out_dir: str | Path, vocab_size: int = 200) -> Path:
    """Train a tiny byte-fallback BPE SentencePiece model on generated text; returns the .model path."""
    import random

    import sentencepiece

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = ["grok", "expert", "layer", "token", "model", "the", "of", "and", "answer", "universe", "mixture"]
    lines = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(300)]
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    prefix = out_dir / "tokenizer"
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size + 256,  # byte fallback adds 256 <0xNN> pieces on top of the learned ones
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")
