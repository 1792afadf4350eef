"""The routed compute of one MoE layer's experts, for inference and training alike.

Each (token, slot) pair goes to its chosen expert only. The pairs are sorted by expert once (`Routing`), so each
expert's tokens are one contiguous slice of a [pairs, in] matrix, and each projection of every expert is one grouped
matrix product over those slices (`grouped_mm`), or, where that kernel is missing or slower, one matmul per expert
over its slice (`loop`). The gates are applied in the combine, which sums each token's k outputs in fp32.

LoRA on the experts (`LoraFactors`) runs beside the base projection, as two more grouped products through the rank-r
factors: the update `B @ A` is never formed, neither as a delta nor merged into the weights, so its cost is
r * (in + out) per pair instead of in * out per expert.

Int8 experts (Grok-1's release format) are dequantised one routed expert at a time, and again in the backward
instead of being kept for it (`dequantized_linear`); a decode step with a few tokens per expert uses the device's
int8 weight-only matmul where it has one, which reads the int8 weights and never writes a float copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .int8 import dequantized_linear

Implementation = Literal["auto", "grouped_mm", "loop"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("auto", "grouped_mm", "loop")

# With at most this many rows (x scale blocks) per expert, an int8 projection is a matrix-vector product bound by
# reading the weights: the int8 kernel reads 1 byte per weight, dequantising writes and reads 2 more. Past it the
# kernel's own arithmetic dominates on a CPU (8 rows cost 4x one row at hidden 4096), and dequantising wins.
INT8_KERNEL_MAX_ROWS = 16
INT8_KERNEL_WIDTH = 16


@dataclass(frozen=True)
class Routing:
    """Where each (token, slot) pair goes, sorted by expert."""

    order: torch.Tensor  # [pairs]: flattened [tokens, k] pair indices, grouped by expert
    token_index: torch.Tensor  # [pairs]: the token of each sorted pair
    counts: list[int]  # pairs per expert, on the host: the loop's slice sizes
    offsets: torch.Tensor  # [experts] int32: where each expert's slice ends, grouped_mm's group bounds
    top_k: int

    @classmethod
    def from_top_k(cls, top_k_index: torch.Tensor, num_experts: int) -> Routing:
        top_k = top_k_index.shape[-1]
        flat = top_k_index.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=num_experts)
        # The one host sync of the layer: the loop needs the slice sizes as ints; grouped_mm reads `offsets` on device.
        return cls(order, order // top_k, counts.tolist(), counts.cumsum(0).to(torch.int32), top_k)

    def combine(self, expert_out: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        """[pairs, hidden] in sorted order, weighted by the gates and summed per token -> [tokens, hidden]."""
        tokens, hidden = top_k_weights.shape[0], expert_out.shape[-1]
        # Back to [tokens, k] order (a permutation: deterministic, unlike a scatter-add), then the gated sum in fp32.
        pairs = torch.empty_like(expert_out).index_copy(0, self.order, expert_out).view(tokens, self.top_k, hidden)
        compute = torch.promote_types(expert_out.dtype, torch.float32)
        return (pairs.to(compute) * top_k_weights.to(compute)[..., None]).sum(1).to(expert_out.dtype)


@dataclass(frozen=True)
class LoraFactors:
    """One LoRA update of a fused expert parameter [experts, out, in]: expert e's delta is scale * b[e] @ a[e]."""

    a: torch.Tensor  # [experts, rank, in]
    b: torch.Tensor  # [experts, out, rank]
    scale: float


def project(
    x: torch.Tensor,
    weight: torch.Tensor,
    routing: Routing,
    *,
    weight_scale: torch.Tensor | None = None,
    lora: Sequence[LoraFactors] = (),
    implementation: Implementation = "auto",
) -> torch.Tensor:
    """Sorted pairs x [pairs, in] through their experts' weight [experts, out, in] (+ LoRA) -> [pairs, out].

    `weight` is float, or int8 with `weight_scale` [experts, out, blocks] (see int8.py).
    """
    if weight.dtype == torch.int8:
        if weight_scale is None:
            raise ValueError("int8 expert weights need their scales (weight_scale)")
        out = _int8_loop(x, weight, weight_scale, routing)
    else:
        out = _float(x, weight, routing, implementation)
    for factors in lora:
        # Two thin grouped products through the factors, in the activations' dtype (fp32 LoRA weights on a bf16
        # base get their gradients through the cast).
        low_rank = _float(x, factors.a.to(x.dtype), routing, implementation)
        # In place: a second [pairs, out] tensor, and a pass over it, fewer (no product keeps `out` for its backward).
        out = out.add_(_float(low_rank, factors.b.to(x.dtype), routing, implementation), alpha=factors.scale)
    return out


def _float(x: torch.Tensor, weight: torch.Tensor, routing: Routing, implementation: Implementation) -> torch.Tensor:
    if implementation == "grouped_mm" or (implementation == "auto" and grouped_mm_is_faster(x, weight)):
        # grouped_mm multiplies [pairs, in] by [experts, in, out]; a transposed view of the weight is what it wants.
        return _grouped_mm(x, weight.transpose(-2, -1), offs=routing.offsets)
    return _ExpertLoop.apply(x, weight, routing.counts)


class _ExpertLoop(torch.autograd.Function):
    """[pairs, in] sorted by expert through weight [experts, out, in]: one matmul per expert, each written into its
    rows of one output. Autograd over per-expert F.linear calls costs more than the matmuls' memory traffic: the
    pieces are joined with a copy of the whole output, and indexing `weight[e]` has a backward that fills a zero
    tensor the size of all the experts' weights, once per expert (40% of a layer's forward + backward at hidden
    1024). Here each gradient is also written in place, and only the ones asked for."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
        out = x.new_empty((x.shape[0], weight.shape[1]))
        for expert, (rows, out_rows) in enumerate(zip(x.split(counts), out.split(counts), strict=True)):
            if rows.shape[0]:
                torch.mm(rows, weight[expert].t(), out=out_rows)
        ctx.save_for_backward(x, weight)
        ctx.counts = counts
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        counts = ctx.counts
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            for expert, (grad_rows, out_rows) in enumerate(zip(grad_out.split(counts), grad_x.split(counts))):
                if grad_rows.shape[0]:
                    torch.mm(grad_rows, weight[expert], out=out_rows)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            for expert, (grad_rows, rows) in enumerate(zip(grad_out.split(counts), x.split(counts))):
                if grad_rows.shape[0]:
                    torch.mm(grad_rows.t(), rows, out=grad_weight[expert])
                else:
                    grad_weight[expert].zero_()  # routed no token: no gradient
        return grad_x, grad_weight, None


def _grouped_mm(x: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    grouped = getattr(F, "grouped_mm", None) or torch._grouped_mm  # public from torch 2.10 on
    return grouped(x, weight, offs=offs)


def grouped_mm_is_faster(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `auto` takes the grouped kernel: on CUDA GPUs that have it (Ampere and later) in bf16 / fp16, with
    the 16-byte aligned rows it needs. On a CPU the per-expert loop over MKL matmuls is as fast (benchmarks/moe.py)
    and its backward skips experts that received nothing."""
    if x.device.type != "cuda" or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    if not (hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")):
        return False
    aligned = all(size % 8 == 0 for size in weight.shape[-2:])
    return aligned and torch.cuda.get_device_capability(x.device) >= (8, 0)


def _int8_loop(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, routing: Routing) -> torch.Tensor:
    """One expert at a time, only those routed to: dequantising the whole stack for one grouped product would hold
    every expert in float at once (9.7 GB per Grok-1 layer in bf16)."""
    outs = []
    for expert, piece in enumerate(x.split(routing.counts)):
        if piece.shape[0] == 0:
            outs.append(piece.new_empty((0, weight.shape[1])))
        elif _int8_kernel_applies(piece, weight, scale):
            outs.append(int8_weight_only_mm(piece, weight[expert], scale[expert]))
        else:
            outs.append(dequantized_linear(piece, weight[expert], scale[expert]))
    return torch.cat(outs)


def _int8_kernel_applies(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> bool:
    if x.requires_grad or x.dtype not in (torch.bfloat16, torch.float16):
        # The kernel has no backward, and in fp32 it is slower than dequantising (no fp32 fast path on CPUs).
        return False
    blocks = scale.shape[-1]
    if x.shape[0] * blocks > INT8_KERNEL_MAX_ROWS:
        return False
    # The CPU kernel reads its rows 16 values at a time: other widths give wrong sums, or crash.
    if (weight.shape[-1] // blocks) % INT8_KERNEL_WIDTH:
        return False
    return _has_int8_kernel(x.device.type)


def _has_int8_kernel(device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("aten::_weight_int8pack_mm", key)


def int8_weight_only_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [rows, in] @ dequantize(weight [out, in] int8, scale [out, blocks]).T, without a float copy of the weight.

    The kernel takes one scale per output row. With several scale blocks along the input axis, the weight is seen,
    without a copy, as [out * blocks, in / blocks] (row n * blocks + b is block b of row n) and each row of x as its
    blocks; of the [rows * blocks, out * blocks] products only those pairing a block of x with the same block of the
    weight are kept, then scaled and summed in fp32. The weight is still read once.
    """
    out_dim, in_dim = weight.shape
    blocks = scale.shape[-1]
    if blocks == 1:
        return torch._weight_int8pack_mm(x.contiguous(), weight, scale[:, 0].to(x.dtype))
    rows = x.shape[0]
    ones = torch.ones(out_dim * blocks, dtype=x.dtype, device=x.device)
    partial = torch._weight_int8pack_mm(
        x.reshape(rows * blocks, in_dim // blocks), weight.view(out_dim * blocks, in_dim // blocks), ones
    )
    same_block = partial.view(rows, blocks, out_dim, blocks).diagonal(dim1=1, dim2=3)  # [rows, out, blocks]
    return (same_block.float() * scale.float()).sum(-1).to(x.dtype)


__all__ = [
    "IMPLEMENTATIONS",
    "Implementation",
    "LoraFactors",
    "Routing",
    "grouped_mm_is_faster",
    "int8_weight_only_mm",
    "project",
]
