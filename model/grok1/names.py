"""Parameter-name maps for Grok-1: release (JAX) paths -> ours, and ours <-> the hpcai-tech/grok-1 HF naming.

Our layout (PyTorch, Linear weights [out, in]); `gate_up_proj` stacks the gate ("linear") over the up ("linear_v")
projection of every expert, as transformers' fused MoE experts do:

    model.embed_tokens.weight, model.norm.weight,
    model.layers.{i}.{pre_attn_norm,post_attn_norm,pre_moe_norm,post_moe_norm}.weight,
    model.layers.{i}.self_attn.{q,k,v,o}_proj.weight,
    model.layers.{i}.moe.router.weight, model.layers.{i}.moe.experts.{gate_up_proj,down_proj}

The hpcai-tech naming is what ColossalAI's and vLLM's Grok-1 loaders read (`attn.*_proj`, `moe_block.gate`,
one `moe_block.experts.{e}.linear/linear_v/linear_1` Linear per expert, an explicit `lm_head.weight`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

# Release path (within decoder_layer_{i}) -> (our name within model.layers.{i}, how to lay it out).
_LAYER_MAP = {
    "multi_head_attention/query/w": ("self_attn.q_proj.weight", "linear"),
    "multi_head_attention/key/w": ("self_attn.k_proj.weight", "linear"),
    "multi_head_attention/value/w": ("self_attn.v_proj.weight", "linear"),
    "multi_head_attention/linear/w": ("self_attn.o_proj.weight", "linear"),
    # Order of the four norms as DecoderLayer calls layer_norm (Haiku numbers same-named modules by creation).
    "rms_norm/scale": ("pre_attn_norm.weight", "vector"),
    "rms_norm_1/scale": ("post_attn_norm.weight", "vector"),
    "rms_norm_2/scale": ("pre_moe_norm.weight", "vector"),
    "rms_norm_3/scale": ("post_moe_norm.weight", "vector"),
    "router/w": ("moe.router.weight", "linear"),
    "moe/linear/w": ("moe.experts.gate_up_proj", "gate"),
    "moe/linear_v/w": ("moe.experts.gate_up_proj", "up"),
    "moe/linear_1/w": ("moe.experts.down_proj", "experts"),
}
_TOP_MAP = {
    "language_model/in_out_embed/embeddings": ("model.embed_tokens.weight", "embedding"),
    "language_model/rms_norm/scale": ("model.norm.weight", "vector"),
}
_LAYER_PATH = re.compile(r"^transformer/decoder_layer_(\d+)/(.+)$")


@dataclass(frozen=True)
class Target:
    """Where a release tensor goes: our parameter `name`, and `kind`, one of
    "vector" / "embedding" (copied as is), "linear" ([in, out] -> [out, in]), "experts" ([E, in, out] -> [E, out, in]),
    "gate" / "up" (like "experts", then the first / second half of `gate_up_proj` along dim 1)."""

    name: str
    kind: str
    layer: int | None = None


def release_to_ours(path: str) -> Target:
    """Map a release parameter path to our parameter; raises KeyError for a path the release does not have."""
    if path in _TOP_MAP:
        return Target(*_TOP_MAP[path])
    match = _LAYER_PATH.match(path)
    if match and match.group(2) in _LAYER_MAP:
        layer = int(match.group(1))
        name, kind = _LAYER_MAP[match.group(2)]
        return Target(f"model.layers.{layer}.{name}", kind, layer)
    raise KeyError(f"not a Grok-1 release parameter path: {path}")


def to_our_layout(array: torch.Tensor, kind: str) -> torch.Tensor:
    """Re-lay a release tensor ([in, out] matrices) in ours ([out, in]); "gate"/"up" halves stay separate."""
    if kind in ("vector", "embedding"):
        return array
    if kind == "linear":
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D [in, out] weight, got shape {tuple(array.shape)}")
        return array.t().contiguous()
    if kind in ("experts", "gate", "up"):
        if array.ndim != 3:
            raise ValueError(f"expected a 3-D [experts, in, out] weight, got shape {tuple(array.shape)}")
        return array.transpose(1, 2).contiguous()
    raise ValueError(f"unknown layout kind {kind!r}")


def stack_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """[E, F, H] gate and up (our layout) -> gate_up_proj [E, 2F, H], gate rows first."""
    return torch.cat([gate, up], dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Ours <-> hpcai-tech/grok-1

_OURS_TO_HPCAI_RENAMES = (
    (".self_attn.", ".attn."),
    (".moe.router.", ".moe_block.gate."),
)
_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.moe\.experts\.(gate_up_proj|down_proj)$")
_HPCAI_EXPERT = re.compile(r"^model\.layers\.(\d+)\.moe_block\.experts\.(\d+)\.(linear|linear_v|linear_1)\.weight$")


def hpcai_tensors(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """One of our tensors under hpcai-tech naming: fused experts split into one Linear per expert."""
    match = _EXPERTS.match(name)
    if not match:
        for ours, theirs in _OURS_TO_HPCAI_RENAMES:
            name = name.replace(ours, theirs)
        yield name, tensor
        return
    layer, which = match.groups()
    prefix = f"model.layers.{layer}.moe_block.experts"
    for e in range(tensor.shape[0]):
        if which == "gate_up_proj":
            gate, up = tensor[e].chunk(2, dim=0)
            yield f"{prefix}.{e}.linear.weight", gate.clone()
            yield f"{prefix}.{e}.linear_v.weight", up.clone()
        else:
            yield f"{prefix}.{e}.linear_1.weight", tensor[e].clone()


def to_hpcai(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> hpcai-tech naming: per-expert Linears, `attn.`, `moe_block.gate`, explicit lm_head."""
    out = dict(pair for name, tensor in state_dict.items() for pair in hpcai_tensors(name, tensor))
    if "lm_head.weight" not in out and "model.embed_tokens.weight" in out:
        # hpcai's checkpoints store the (tied) output projection separately.
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def from_hpcai(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """hpcai-tech naming -> ours: experts stacked into gate_up_proj / down_proj, lm_head dropped (it is tied)."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        match = _HPCAI_EXPERT.match(name)
        if match:
            layer, expert, which = int(match.group(1)), int(match.group(2)), match.group(3)
            experts.setdefault((layer, which), {})[expert] = tensor
            continue
        if name == "lm_head.weight":
            embed = state_dict.get("model.embed_tokens.weight")
            if embed is not None and not torch.equal(embed, tensor):
                raise ValueError(
                    "lm_head.weight differs from model.embed_tokens.weight, but Grok-1 ties them; "
                    "this checkpoint cannot be represented without losing the output projection"
                )
            continue
        for ours, theirs in _OURS_TO_HPCAI_RENAMES:
            name = name.replace(theirs, ours)
        out[name] = tensor

    def stacked(layer: int, which: str) -> torch.Tensor:
        per_expert = experts.get((layer, which), {})
        if sorted(per_expert) != list(range(len(per_expert))) or not per_expert:
            raise ValueError(f"layer {layer}: experts of {which} are not numbered 0..E-1: {sorted(per_expert)}")
        return torch.stack([per_expert[e] for e in range(len(per_expert))])

    for layer in sorted({layer for layer, _ in experts}):
        prefix = f"model.layers.{layer}.moe.experts"
        gate_up = torch.cat([stacked(layer, "linear"), stacked(layer, "linear_v")], dim=1)
        out[f"{prefix}.gate_up_proj"] = gate_up
        out[f"{prefix}.down_proj"] = stacked(layer, "linear_1")
    return out
