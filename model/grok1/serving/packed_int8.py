"""The release's int8 weights in a quantisation format vLLM loads: compressed-tensors, 8-bit weights with bf16
scales in groups of 128 input columns ("W8A16"), packed four to an int32 ("pack-quantized").

Why this format: Grok-1 in bf16 is about 631 GB and does not fit 8 x 80 GB; its own int8 weights are. vLLM reads
int8 weight-only checkpoints through compressed-tensors' pack-quantized format, for linear layers and for fused MoE
experts alike (`CompressedTensorsWNA16MoEMethod` / its Marlin variant, which take 8 bits, group or channel
scales, and only this format), read at vLLM commit 13436117c52e. The re-expression is exact: a release matrix is
int8 values `q` with one bf16 scale per block of input rows (one block for query/key/value and the experts' gate
and up, eight for the attention output and the experts' down), every block a multiple of 128 rows, so each block's
scale is repeated over its 128-column groups and `q` is stored as `q + 128` (compressed-tensors' symmetric offset):
dequantised, every weight is `q * scale`, the release's value. FP8 would need a requantisation that rounds.

Per matrix `X.weight` this writes `X.weight_packed` (int32 [out, in / 4]), `X.weight_scale` (bf16 [out, in / 128])
and `X.weight_shape` ([out, in]), compressed-tensors' names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch

from ..int8 import DEFAULT_SCALE_BLOCKS

GROUP_SIZE = 128
BITS = 8
FORMAT = "pack-quantized"


class PackingError(ValueError):
    """A matrix the format cannot hold exactly."""


def quantization_config(group_size: int = GROUP_SIZE) -> dict:
    """config.json's `quantization_config`: every Linear but the router and the (tied) output projection."""
    return {
        "quant_method": "compressed-tensors",
        "format": FORMAT,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": BITS,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": group_size,
                    "dynamic": False,
                    "actorder": None,
                },
                "input_activations": None,
                "output_activations": None,
                "format": FORMAT,
            }
        },
        # vLLM never quantises the router (it builds it without a quantisation config); transformers would.
        "ignore": ["lm_head", "re:.*moe_block\\.gate$"],
        "kv_cache_scheme": None,
    }


def group_size_for(config: dict) -> int:
    """128, vLLM's kernels' group, where every scale block of the model is a multiple of it (Grok-1's are); else the
    largest power of two dividing them all (tiny test models: exact, though vLLM's kernels want 32, 64 or 128)."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    inputs = {
        "q_proj": hidden,
        "k_proj": hidden,
        "v_proj": hidden,
        "o_proj": config["num_attention_heads"] * head_dim,
        "gate_up_proj": hidden,
        "down_proj": inter,
    }
    blocks = {**DEFAULT_SCALE_BLOCKS, **(config.get("quantization_blocks") or {})}
    widths = [inputs[kind] // blocks[kind] for kind in inputs]
    group = GROUP_SIZE
    while group > 1 and any(width % group for width in widths):
        group //= 2
    return group


def packed(name: str, weight: torch.Tensor, scale: torch.Tensor, group_size: int) -> Iterator[tuple[str, torch.Tensor]]:
    """One int8 matrix `name` ("....weight", [out, in]) with its block scales [out, blocks] in compressed-tensors'
    tensors."""
    if weight.dtype != torch.int8 or weight.ndim != 2:
        raise PackingError(f"{name}: expected a 2-D int8 matrix, got {weight.dtype} {tuple(weight.shape)}")
    out_dim, in_dim = weight.shape
    blocks = scale.shape[-1]
    if scale.shape != (out_dim, blocks) or in_dim % blocks or (in_dim // blocks) % group_size or in_dim % 4:
        raise PackingError(
            f"{name}: scales {tuple(scale.shape)} over {in_dim} input columns do not split into groups of {group_size}"
        )
    base = name.removesuffix(".weight")
    yield f"{base}.weight_packed", pack(weight)
    yield f"{base}.weight_scale", scale.to(torch.bfloat16).repeat_interleave(in_dim // blocks // group_size, dim=-1)
    yield f"{base}.weight_shape", torch.tensor([out_dim, in_dim], dtype=torch.int64)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """int8 [out, in] -> int32 [out, in / 4]: value j of each word at bits 8j..8j+7, offset by 128 (unsigned)."""
    if sys.byteorder != "little":
        raise PackingError("packing reads the int32 words' bytes in little-endian order; this machine is big-endian")
    unsigned = (weight.to(torch.int16) + 128).to(torch.uint8).contiguous()
    return unsigned.view(torch.int32)


def unpack(words: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack`."""
    return (words.contiguous().view(torch.uint8).to(torch.int16) - 128).to(torch.int8)
