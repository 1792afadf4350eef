"""Which weights LoRA adapts, per architecture, and the PEFT config that says so.

Fine-tuning frameworks commonly adapt only the attention of an MoE model, because its experts are fused 3-D
parameters that `target_modules` cannot reach: most of the model's capacity then never moves. Here the experts are
adapted through PEFT's `target_parameters` wherever PEFT can wrap them, and where it cannot (DBRX) the log says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .config import ConfigError, LoraSection

log = logging.getLogger(__name__)

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Targets:
    modules: list[str]
    expert_parameters: list[str]
    note: str = ""  # why some weights are left alone, for the log


_DEFAULTS: dict[str, Targets] = {
    "grok-1": Targets(ATTENTION, ["moe.experts.gate_up_proj", "moe.experts.down_proj"]),
    "mixtral": Targets(ATTENTION, ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
    "dbrx": Targets(
        ["Wqkv", "out_proj", "router.layer"],
        [],
        note="DBRX's experts are fused 2-D parameters that PEFT's target_parameters cannot wrap; only attention "
        "and the router are adapted",
    ),
}
# Dense decoders (Llama, SmolLM2, Qwen, Mistral...): attention and the gated MLP.
_DENSE = Targets([*ATTENTION, "gate_proj", "up_proj", "down_proj"], [])


def default_targets(model_type: str) -> Targets:
    return _DEFAULTS.get(model_type, _DENSE)


def resolve(lora: LoraSection, base_config: dict) -> Targets:
    """The modules and expert parameters a run adapts: the config's, or the architecture's defaults."""
    model_type = base_config.get("model_type", "")
    # Grok-1's int8 experts are adapted like float ones: the LoRA runs beside them (model/lora.py), so their
    # int8 values are never touched.
    defaults = default_targets(model_type)
    modules = defaults.modules if lora.modules == "auto" else list(lora.modules)
    experts = defaults.expert_parameters if lora.expert_parameters == "auto" else list(lora.expert_parameters)
    if model_type == "dbrx" and experts:
        raise ConfigError(f"{defaults.note}: set lora.expert_parameters to [] for DBRX")
    if not modules and not experts:
        raise ConfigError("LoRA adapts nothing: lora.modules and lora.expert_parameters are both empty")
    if experts and lora.dropout:
        raise ConfigError(
            f"lora.dropout={lora.dropout}: PEFT cannot apply dropout inside a fused expert stack; set lora.dropout "
            "to 0, or lora.expert_parameters to [] to adapt attention only"
        )
    note = defaults.note if lora.expert_parameters == "auto" else ""
    return Targets(modules, experts, note)


def peft_config(lora: LoraSection, targets: Targets):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets.modules or None,
        target_parameters=targets.expert_parameters or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
