"""Export an adapter in the layout vLLM's `--enable-lora` reads.

vLLM loads an adapter by the module names of the checkpoint it serves, with one LoRA pair per Linear. Our models
keep each MoE layer's experts fused in one 3-D parameter, and PEFT's `target_parameters` keeps their LoRA fused the
same way: A [rank * experts, in], B [out, rank * experts], expert e's pair being rows/columns e of the
(experts, rank) split. Export unfuses them into per-expert Linears under the serving checkpoint's names:

* Grok-1: hpcai-tech/grok-1 names (`attn.*_proj`, `moe_block.gate`, `moe_block.experts.{e}.linear|linear_v|linear_1`
  for gate, up and down);
* Mixtral: the original Mixtral names (`block_sparse_moe.gate`, `block_sparse_moe.experts.{e}.w1|w3|w2`);
* any other model: PEFT's layout unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.run_layout import ADAPTER_CONFIG, TRAINING_INFO

from .config import ConfigError
from .lora_model import check_adapter

WEIGHTS = "adapter_model.safetensors"

# model_type -> (renames of whole-module paths, expert prefix, names of gate / up / down per expert)
_LAYOUTS = {
    "grok-1": (
        ((".self_attn.", ".attn."), (".moe.router.", ".moe_block.gate.")),
        ".moe.experts.",
        ".moe_block.experts.{e}.",
        ("linear", "linear_v", "linear_1"),
    ),
    "mixtral": (
        ((".mlp.gate.", ".block_sparse_moe.gate."),),
        ".mlp.experts.",
        ".block_sparse_moe.experts.{e}.",
        ("w1", "w3", "w2"),
    ),
}
# PEFT names the wrapper of a second parameter on the same module `...experts.base_layer.lora_X`.
_EXPERT_KEY = re.compile(r"^(?P<prefix>.*)\.experts\.(?:base_layer\.)*lora_(?P<ab>[AB])\.weight$")


def export(adapter_dir: Path, out_dir: Path, base_dir: Path | None = None) -> Path:
    base_config = check_adapter(adapter_dir, base_dir).base_config
    model_type = base_config.get("model_type", "")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: export into a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    weights = load_file(Path(adapter_dir) / WEIGHTS)
    if model_type in _LAYOUTS:
        weights, modules = _unfuse(weights, config, base_config, _LAYOUTS[model_type])
        config["target_modules"] = sorted(modules)
        config["target_parameters"] = None
    save_file({k: v.contiguous() for k, v in weights.items()}, out_dir / WEIGHTS)
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if (Path(adapter_dir) / TRAINING_INFO).is_file():
        shutil.copy(Path(adapter_dir) / TRAINING_INFO, out_dir / TRAINING_INFO)
    return out_dir


def _unfuse(weights: dict, config: dict, base_config: dict, layout) -> tuple[dict, set[str]]:
    from model.lora import per_expert as per_expert_factors  # peft and transformers load only for an export

    renames, expert_prefix, per_expert, (gate_name, up_name, down_name) = layout
    experts = int(base_config.get("num_experts") or base_config.get("num_local_experts"))
    hidden = int(base_config["hidden_size"])
    intermediate = int(base_config["intermediate_size"])
    out: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    # (layer prefix, wrapper) -> {"A": ..., "B": ...}; one wrapper per fused parameter of the layer's experts
    fused: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = _EXPERT_KEY.match(key)
        if match and expert_prefix in key:
            layer = key[: key.index(expert_prefix)]
            fused.setdefault((layer, key.rsplit(".lora_", 1)[0]), {})[match.group("ab")] = tensor
            continue
        for ours, theirs in renames:
            key = key.replace(ours, theirs)
        out[key] = tensor
        modules.add(key.rsplit(".lora_", 1)[0].rsplit(".", 1)[-1])
    for (layer, _), pair in fused.items():
        a, b = pair["A"], pair["B"]
        # gate_up maps H -> 2F (gate rows first), down maps F -> H: A's columns and B's rows tell them apart.
        is_down = not (a.shape[1] == hidden and b.shape[0] == 2 * intermediate)
        a_experts, b_experts = per_expert_factors(a, b, experts)  # expert e: A [rank, in], B [out, rank]
        for e in range(experts):
            base = layer + per_expert.format(e=e)
            a_e, b_e = a_experts[e], b_experts[e]
            if is_down:
                parts = {down_name: b_e}
            else:
                gate, up = b_e.chunk(2, dim=0)
                parts = {gate_name: gate, up_name: up}
            for name, b_part in parts.items():
                out[f"{base}{name}.lora_A.weight"] = a_e.clone()
                out[f"{base}{name}.lora_B.weight"] = b_part.clone()
                modules.add(name)
    return out, modules
