"""The routed compute of one MoE layer's experts, for inference and training alike.

Each expert is `down(act(gate(x)) * up(x))`, act being tanh GELU (Grok-1) or SiLU (Mixtral); both models keep their
experts fused as gate_up [experts, 2 * FFN, hidden] (gate rows, then up rows) and down [experts, hidden, FFN].
Each (token, slot) pair goes to its chosen expert only: the pairs
are sorted by expert once (`Routing`), so each expert's tokens are one contiguous slice of a [pairs, hidden] matrix.
Then either
* `grouped_mm`: one grouped matrix product per projection over all the slices (`_grouped_mlp`, which reads as the
  formula above); the way on GPUs that have the kernel; or
* `loop`: one pass over the experts that computes each expert's whole MLP on its slice (`_ExpertLoop`): its
  temporaries are one expert's rows, not all pairs' (on a CPU, elementwise work on a fresh [pairs, FFN] tensor costs
  more in page faults than in arithmetic), the backward keeps only the gate and up outputs, and each gradient is
  written in place.
The gates are applied in the combine, which sums each token's k outputs in fp32.

LoRA on the experts (`LoraFactors`) runs beside the base projections, through the rank-r factors: the update `B @ A`
is never formed, neither as a delta nor merged into the weights, so it costs r * (in + out) per pair instead of
in * out per expert.

Int8 experts (Grok-1's release format) go through the loop, each routed expert dequantised just in time, and again in
the backward instead of being kept for it; a decode step with a few tokens per expert uses the device's int8
weight-only matmul where it has one, which reads the int8 weights and never writes a float copy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .grok1.int8 import dequantize_int8

Implementation = Literal["auto", "grouped_mm", "loop"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("auto", "grouped_mm", "loop")


@dataclass(frozen=True)
class Activation:
    """The experts' activation and its derivative (the loop's backward is written by hand)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (grad of the output, input) -> grad of input


# By transformers' `hidden_act` names.
ACTIVATIONS = {
    "gelu_pytorch_tanh": Activation(
        lambda x: F.gelu(x, approximate="tanh"),
        lambda grad, x: torch.ops.aten.gelu_backward(grad, x, approximate="tanh"),
    ),
    "silu": Activation(F.silu, torch.ops.aten.silu_backward),
}
GELU_TANH = ACTIVATIONS["gelu_pytorch_tanh"]

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


@dataclass(frozen=True)
class ExpertMatrix:
    """One fused projection of all the experts: weight [experts, out, in], float, or int8 with its scale [experts,
    out, blocks]; and the LoRA updates on it."""

    weight: torch.Tensor
    scale: torch.Tensor | None = None
    lora: Sequence[LoraFactors] = ()

    def factors(self, dtype: torch.dtype) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """(scale, a, b) of each update in the activations' dtype (fp32 LoRA weights on a bf16 base get their
        gradients through the cast)."""
        return [(f.scale, f.a.to(dtype), f.b.to(dtype)) for f in self.lora]


def routed_experts(
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up: ExpertMatrix,
    down: ExpertMatrix,
    implementation: Implementation = "auto",
    activation: Activation = GELU_TANH,
) -> torch.Tensor:
    """One MoE layer's experts: hidden_states [tokens, hidden], the router's choice top_k_index and gates
    top_k_weights [tokens, k] -> [tokens, hidden]."""
    routing = Routing.from_top_k(top_k_index, gate_up.weight.shape[0])
    pairs = hidden_states[routing.token_index]
    return routing.combine(expert_mlp(pairs, gate_up, down, routing, implementation, activation), top_k_weights)


def expert_mlp(
    x: torch.Tensor,
    gate_up: ExpertMatrix,
    down: ExpertMatrix,
    routing: Routing,
    implementation: Implementation = "auto",
    activation: Activation = GELU_TANH,
) -> torch.Tensor:
    """Sorted pairs x [pairs, hidden] through their experts -> [pairs, hidden], in the same order."""
    quantized = gate_up.scale is not None or down.scale is not None
    if not quantized and _takes_grouped_mm(implementation, x, gate_up, down):
        return _grouped_mlp(x, gate_up, down, routing, activation)
    gate_up_lora, down_lora = gate_up.factors(x.dtype), down.factors(x.dtype)
    tensors = [t for _, a, b in (*gate_up_lora, *down_lora) for t in (a, b)]
    # Whether a backward will follow: inside autograd.Function.forward grad mode is always off.
    backward = torch.is_grad_enabled() and any(t.requires_grad for t in (x, gate_up.weight, down.weight, *tensors))
    plan = _LoopPlan(
        bounds=list(itertools.accumulate(routing.counts, initial=0)),
        gate_up_scale=gate_up.scale,
        down_scale=down.scale,
        gate_up_lora=[scale for scale, _, _ in gate_up_lora],
        down_lora=[scale for scale, _, _ in down_lora],
        backward=backward,
        activation=activation,
    )
    return _ExpertLoop.apply(x, plan, gate_up.weight, down.weight, *tensors)


def _grouped_mlp(
    x: torch.Tensor, gate_up: ExpertMatrix, down: ExpertMatrix, routing: Routing, activation: Activation
) -> torch.Tensor:
    gate, up = _grouped_product(x, gate_up, routing).chunk(2, dim=-1)
    return _grouped_product(activation.forward(gate) * up, down, routing)


def _grouped_product(x: torch.Tensor, matrix: ExpertMatrix, routing: Routing) -> torch.Tensor:
    # grouped_mm multiplies [pairs, in] by [experts, in, out]; a transposed view of the weight is what it wants.
    out = _grouped_mm(x, matrix.weight.mT, routing.offsets)
    for scale, a, b in matrix.factors(x.dtype):
        update = _grouped_mm(_grouped_mm(x, a.mT, routing.offsets), b.mT, routing.offsets)
        # In place: a second [pairs, out] tensor, and a pass over it, fewer (no product keeps `out` for its backward).
        out = out.add_(update, alpha=scale)
    return out


def _takes_grouped_mm(implementation: Implementation, x: torch.Tensor, *matrices: ExpertMatrix) -> bool:
    weights = [m.weight for m in matrices] + [t for m in matrices for f in m.lora for t in (f.a, f.b)]
    if implementation == "auto":
        return all(grouped_mm_is_faster(x, w) for w in weights)
    if implementation == "grouped_mm":
        misaligned = sorted({size for w in weights for size in w.shape[-2:] if size * x.element_size() % 16})
        if misaligned:
            raise ValueError(
                f"moe_implementation='grouped_mm' needs every expert and LoRA dimension to span a multiple of 16 "
                f"bytes, and {misaligned} do not in {x.dtype}: use 'auto' (or a LoRA rank that is a multiple of 8)"
            )
    return implementation == "grouped_mm"


@dataclass(frozen=True)
class _LoopPlan:
    bounds: list[int]  # expert e's pairs are rows bounds[e]:bounds[e + 1]
    gate_up_scale: torch.Tensor | None  # int8 scales, frozen
    down_scale: torch.Tensor | None
    gate_up_lora: list[float]  # the scale of each LoRA update, in the order of the factor tensors
    down_lora: list[float]
    backward: bool  # keep what the backward needs; without it, nothing outlives one expert's turn
    activation: Activation


def _scale(scale: torch.Tensor | None, expert: int) -> torch.Tensor | None:
    """Expert `expert`'s int8 scales, or None for float experts."""
    return None if scale is None else scale[expert]


def _weight(weight: torch.Tensor, scale: torch.Tensor | None, expert: int, dtype: torch.dtype) -> torch.Tensor:
    """Expert `expert`'s [out, in] matrix in `dtype`: dequantised when int8, for this use only."""
    expert_scale = _scale(scale, expert)
    return weight[expert] if expert_scale is None else dequantize_int8(weight[expert], expert_scale, dtype)


def _rows_times(rows: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, out, kernel: bool):
    """rows @ W.T for one expert matrix W [out, in] (int8 with `scale`, or float), into `out` where given."""
    if scale is None:
        return torch.mm(rows, weight.t(), out=out)
    if kernel and _int8_kernel_applies(rows, weight, scale):
        product = int8_weight_only_mm(rows, weight, scale)
        return product if out is None else out.copy_(product)
    return torch.mm(rows, dequantize_int8(weight, scale, rows.dtype).t(), out=out)


class _ExpertLoop(torch.autograd.Function):
    """Each expert's whole MLP on its rows, expert after expert, forward and backward by hand.

    Forward, for expert e with rows x_e: g, u = x_e Wg^T, x_e Wu^T (+ LoRA); a = act(g) * u; y_e = a Wd^T (+ LoRA),
    written into y's rows. The backward keeps g and u ([pairs, 2 * FFN], half of what autograd would keep: it also
    keeps act(g) and a) and recomputes the rest per expert. LoRA adds scale * (x_e A_e^T) B_e^T to each output while
    its rows are hot.
    """

    @staticmethod
    def forward(ctx, x, plan: _LoopPlan, gate_up, down, *lora):
        gate_up_lora, down_lora = _lora_pairs(plan, lora)
        ffn = gate_up.shape[1] // 2
        out = x.new_empty((x.shape[0], down.shape[1]))
        kept = x.new_empty((2, x.shape[0], ffn)) if plan.backward else None  # g and u of every pair
        kernel = not plan.backward  # the int8 decode kernel has no backward
        for expert, (start, end) in enumerate(itertools.pairwise(plan.bounds)):
            if start == end:
                continue
            rows = x[start:end]
            gate_up_scale = _scale(plan.gate_up_scale, expert)
            gate_up_scales = (None, None) if gate_up_scale is None else gate_up_scale.chunk(2)
            parts = []
            for part, (w, s) in enumerate(zip(gate_up[expert].chunk(2), gate_up_scales, strict=True)):
                parts.append(_rows_times(rows, w, s, kept[part, start:end] if kept is not None else None, kernel))
            for scale, (a, b) in zip(plan.gate_up_lora, gate_up_lora, strict=True):
                low_rank = torch.mm(rows, a[expert].t())
                for product, b_part in zip(parts, b[expert].chunk(2), strict=True):
                    product.addmm_(low_rank, b_part.t(), alpha=scale)
            gate, up = parts
            act = plan.activation.forward(gate).mul_(up)
            out_rows = _rows_times(act, down[expert], _scale(plan.down_scale, expert), out[start:end], kernel)
            for scale, (a, b) in zip(plan.down_lora, down_lora, strict=True):
                out_rows.addmm_(torch.mm(act, a[expert].t()), b[expert].t(), alpha=scale)
        if plan.backward:
            ctx.save_for_backward(x, gate_up, down, kept, *lora)
            ctx.plan = plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, gate_up, down, kept, *lora = ctx.saved_tensors
        plan: _LoopPlan = ctx.plan
        gate_up_lora, down_lora = _lora_pairs(plan, lora)
        needs = ctx.needs_input_grad  # (x, plan, gate_up, down, *lora)
        grad_x = torch.empty_like(x) if needs[0] else None
        grad_gate_up = torch.empty_like(gate_up) if needs[2] else None
        grad_down = torch.empty_like(down) if needs[3] else None
        grad_lora = [torch.empty_like(t) if need else None for t, need in zip(lora, needs[4:], strict=True)]
        grad_gate_up_lora, grad_down_lora = _lora_pairs(plan, grad_lora)
        per_expert = [g for g in (grad_gate_up, grad_down, *grad_lora) if g is not None]
        for expert, (start, end) in enumerate(itertools.pairwise(plan.bounds)):
            if start == end:
                for grad in per_expert:  # routed no token: no gradient
                    grad[expert].zero_()
                continue
            rows, grad_rows = x[start:end], grad_out[start:end]
            gate, up = kept[0, start:end], kept[1, start:end]
            activated = plan.activation.forward(gate)
            act = activated * up if grad_down is not None or down_lora else None

            # down: y = act Wd^T + scale * (act Ad^T) Bd^T
            grad_act = torch.mm(grad_rows, _weight(down, plan.down_scale, expert, x.dtype))
            if grad_down is not None:
                torch.mm(grad_rows.t(), act, out=grad_down[expert])
            for scale, (a, b), (grad_a, grad_b) in zip(plan.down_lora, down_lora, grad_down_lora, strict=True):
                grad_low = torch.mm(grad_rows, b[expert]).mul_(scale)
                grad_act.addmm_(grad_low, a[expert])
                if grad_a is not None:
                    torch.mm(grad_low.t(), act, out=grad_a[expert])
                if grad_b is not None:
                    torch.mm(grad_rows.t(), torch.mm(act, a[expert].t()), out=grad_b[expert]).mul_(scale)

            # act = activation(gate) * up
            grad_up = grad_act * activated
            grad_gate = plan.activation.backward(grad_act.mul_(up), gate)

            # gate, up = x Wg^T, x Wu^T (+ LoRA)
            w_gate, w_up = _weight(gate_up, plan.gate_up_scale, expert, x.dtype).chunk(2)
            if grad_x is not None:
                torch.mm(grad_gate, w_gate, out=grad_x[start:end]).addmm_(grad_up, w_up)
            if grad_gate_up is not None:
                grad_w_gate, grad_w_up = grad_gate_up[expert].chunk(2)
                torch.mm(grad_gate.t(), rows, out=grad_w_gate)
                torch.mm(grad_up.t(), rows, out=grad_w_up)
            for scale, (a, b), (grad_a, grad_b) in zip(plan.gate_up_lora, gate_up_lora, grad_gate_up_lora, strict=True):
                b_gate, b_up = b[expert].chunk(2)
                grad_low = torch.mm(grad_gate, b_gate).addmm_(grad_up, b_up).mul_(scale)
                if grad_x is not None:
                    grad_x[start:end].addmm_(grad_low, a[expert])
                if grad_a is not None:
                    torch.mm(grad_low.t(), rows, out=grad_a[expert])
                if grad_b is not None:
                    low_rank = torch.mm(rows, a[expert].t())
                    grad_b_gate, grad_b_up = grad_b[expert].chunk(2)
                    torch.mm(grad_gate.t(), low_rank, out=grad_b_gate).mul_(scale)
                    torch.mm(grad_up.t(), low_rank, out=grad_b_up).mul_(scale)
        return grad_x, None, grad_gate_up, grad_down, *grad_lora


def _lora_pairs(plan: _LoopPlan, flat: Sequence) -> tuple[list, list]:
    """The flat (a, b, a, b, ...) tensors as gate_up's pairs and down's pairs."""
    pairs = [tuple(flat[i : i + 2]) for i in range(0, len(flat), 2)]
    return pairs[: len(plan.gate_up_lora)], pairs[len(plan.gate_up_lora) :]


def _grouped_mm(x: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    grouped = getattr(F, "grouped_mm", None) or torch._grouped_mm  # public from torch 2.10 on
    return grouped(x, weight, offs=offs)


def grouped_mm_is_faster(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `auto` takes the grouped kernel: on CUDA GPUs that have it (Ampere and later) in bf16 / fp16, with
    the 16-byte aligned rows it needs. On a CPU the loop is faster (benchmarks/moe.py: 0.92x of the dense bound
    forward against grouped_mm's 1.29x), for it keeps each expert's temporaries small."""
    if x.device.type != "cuda" or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    if not (hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")):
        return False
    aligned = all(size * x.element_size() % 16 == 0 for size in weight.shape[-2:])
    return aligned and torch.cuda.get_device_capability(x.device) >= (8, 0)


def _int8_kernel_applies(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> bool:
    if x.dtype not in (torch.bfloat16, torch.float16):
        return False  # in fp32 the kernel is slower than dequantising (no fp32 fast path on CPUs)
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
    "ACTIVATIONS",
    "IMPLEMENTATIONS",
    "Activation",
    "ExpertMatrix",
    "Implementation",
    "LoraFactors",
    "Routing",
    "expert_mlp",
    "grouped_mm_is_faster",
    "int8_weight_only_mm",
    "routed_experts",
]
