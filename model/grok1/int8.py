"""Grok-1's own int8 weights, kept int8 in memory and dequantised just in time.

The release stores every attention and expert matrix as int8 with bf16 scales that split the input axis into
`blocks` contiguous groups (1 for column-parallel matrices, 8 for row-parallel ones). In our [out, in] layout a
quantised matrix `X` is stored as `X` int8 [..., out, in] plus `X_scale` [..., out, blocks], and its value is
`X.view(..., out, blocks, in / blocks) * X_scale[..., None]`. The router, norms and embeddings stay float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INT8 = "int8"
# Scale blocks along the input axis of each quantised matrix, as in the release (query/key/value and expert
# gate/up: one scale per output column; attention output and expert down: 8 blocks of input rows).
DEFAULT_SCALE_BLOCKS = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 8, "gate_up_proj": 1, "down_proj": 8}


def scale_blocks(config, name: str) -> int:
    blocks = dict(DEFAULT_SCALE_BLOCKS)
    blocks.update(getattr(config, "quantization_blocks", None) or {})
    return int(blocks[name])


def is_int8(config) -> bool:
    quantization = getattr(config, "quantization", None)
    if quantization not in (None, INT8):
        raise ValueError(f"unsupported quantization {quantization!r}; only {INT8!r} (or none) is known")
    return quantization == INT8


def frozen(shape: tuple[int, ...], dtype: torch.dtype) -> nn.Parameter:
    """A non-trainable parameter (int8 tensors cannot require grad); saved and loaded like any other."""
    return nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)


def dequantize_int8(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 [..., out, in] * scale [..., out, blocks] -> [..., out, in] in `dtype`."""
    *lead, out_dim, in_dim = weight.shape
    blocks = scale.shape[-1]
    grouped = weight.to(dtype).view(*lead, out_dim, blocks, in_dim // blocks)
    return (grouped * scale.to(dtype)[..., None]).view(weight.shape)


class _DequantizedLinear(torch.autograd.Function):
    """x @ dequantize(weight).T whose backward dequantises again instead of keeping the float copy from the forward:
    autograd would hold every dequantised matrix until its backward (Grok-1's attention: 176 MB a layer in bf16).
    The int8 weights are frozen, so only the input has a gradient. (The experts do the same in experts.py.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, scale)
        return F.linear(x, dequantize_int8(weight, scale, x.dtype))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        weight, scale = ctx.saved_tensors
        return grad_output @ dequantize_int8(weight, scale, grad_output.dtype), None, None


def dequantized_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [..., in] through an int8 weight [out, in] with scales [out, blocks], dequantised just in time."""
    return _DequantizedLinear.apply(x, weight, scale)


class Int8Linear(nn.Module):
    """Bias-free linear layer over an int8 weight [out, in] and its scales [out, blocks]."""

    def __init__(self, in_features: int, out_features: int, blocks: int = 1):
        super().__init__()
        if in_features % blocks:
            raise ValueError(f"in_features={in_features} does not split into {blocks} scale blocks")
        self.in_features, self.out_features = in_features, out_features
        self.weight = frozen((out_features, in_features), torch.int8)
        self.weight_scale = frozen((out_features, blocks), torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantized_linear(x, self.weight, self.weight_scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, blocks={self.weight_scale.shape[-1]}"


def make_linear(config, name: str, in_features: int, out_features: int) -> nn.Module:
    """nn.Linear, or Int8Linear when the config says the checkpoint holds int8 matrices."""
    if is_int8(config):
        return Int8Linear(in_features, out_features, scale_blocks(config, name))
    return nn.Linear(in_features, out_features, bias=False)


__all__ = [
    "DEFAULT_SCALE_BLOCKS",
    "INT8",
    "Int8Linear",
    "dequantize_int8",
    "dequantized_linear",
    "is_int8",
    "make_linear",
    "scale_blocks",
]
