"""PEFT's LoRA on the layers PEFT does not know how to do well: Grok-1's int8 projections, and the fused experts of
Grok-1 and Mixtral.

PEFT's custom-module hook lets a subclass of its own layer take them, so adapters keep PEFT's format (save, load,
merge, vLLM export) unchanged.

* `LoraInt8Linear`: PEFT's LoRA linear over an int8 base, which dequantises just in time.
* `LoraRoutedExperts`: PEFT's wrapper of a fused expert parameter (`target_parameters`). PEFT's own wrapper adds the
  update to the whole expert stack on every forward (`W + B @ A`, a second tensor the size of all the experts, and
  in the backward the full-size gradient of it); this one hands the factors to the routed compute instead
  (model/experts.py), which runs each pair through its expert's A and B: r * (in + out) work per pair, no delta, and
  the same on int8 experts, whose values are never touched.

Merging into int8 would need a requantisation that loses the update, so it is refused: merge onto the same model
converted to bf16, which the adapter fits unchanged (same module names and shapes).
"""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import ParamWrapper
from torch import nn
from transformers.models.mixtral.modeling_mixtral import MixtralExperts

from .experts import ACTIVATIONS, ExpertMatrix, LoraFactors, routed_experts
from .grok1.int8 import Int8Linear
from .grok1.modeling import Grok1Experts

INT8_MERGE_REFUSED = (
    "cannot merge a LoRA adapter into int8 weights: merge onto the model converted with "
    "`python -m model.grok1.convert --dtype bfloat16`, which this adapter fits unchanged"
)


class LoraInt8Linear(LoraLinear):
    def merge(self, *args, **kwargs) -> None:
        raise ValueError(INT8_MERGE_REFUSED)


class LoraRoutedExperts(ParamWrapper):
    """LoRA on one fused expert parameter of Grok-1's or Mixtral's experts, applied inside the routed compute.

    PEFT nests one wrapper per targeted parameter (gate_up_proj's around down_proj's around the experts); only the
    outermost one's forward runs, and it gathers the active, unmerged updates of the whole nest. Experts whose
    activation the routed compute does not have (a Mixtral variant with another `hidden_act`) keep PEFT's way.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        experts = self.get_base_layer()
        if isinstance(experts, MixtralExperts) and experts.config.hidden_act not in ACTIVATIONS:
            return super().forward(x, *args, **kwargs)
        self._check_forward_args(x, *args, **kwargs)
        kwargs.pop("adapter_names", None)
        lora: dict[str, list[LoraFactors]] = {}
        wrapper = self
        while isinstance(wrapper, ParamWrapper):
            if wrapper.disable_adapters and wrapper.merged:
                wrapper.unmerge()
            if not wrapper.disable_adapters and not wrapper.merged:
                factors = [expert_factors(wrapper, a) for a in wrapper.active_adapters if a in wrapper.lora_A]
                if factors:
                    lora[wrapper.parameter_name] = factors
            wrapper = wrapper.base_layer
        if isinstance(experts, Grok1Experts):
            return experts(x, *args, lora=lora, **kwargs)
        return _mixtral_experts(experts, x, *args, lora=lora)

    def merge(self, *args, **kwargs) -> None:
        if self.get_param().dtype == torch.int8:
            raise ValueError(INT8_MERGE_REFUSED)
        super().merge(*args, **kwargs)


# PEFT recognises its parameter wrappers by class name (to dodge a circular import), and refuses to nest a second one
# around any other tuner layer; this is one, so it answers to the name. Pickling goes by __qualname__, left as is.
LoraRoutedExperts.__name__ = "ParamWrapper"


def _mixtral_experts(experts: MixtralExperts, hidden_states, top_k_index, top_k_weights, lora) -> torch.Tensor:
    """transformers' MixtralExperts.forward, through the routed compute (same fused layout, SiLU by default)."""
    gate_up, down = (ExpertMatrix(getattr(experts, n), None, lora.get(n, ())) for n in ("gate_up_proj", "down_proj"))
    activation = ACTIVATIONS[experts.config.hidden_act]
    return routed_experts(hidden_states, top_k_index, top_k_weights, gate_up, down, activation=activation)


def per_expert(a: torch.Tensor, b: torch.Tensor, experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's fused LoRA of an expert stack as per-expert factors: A [r * E, in] holds expert e's rows at e * r..,
    B [out, r * E] its columns at e, e + E, ... (the (rank, experts) split of PEFT's layout) -> A [E, r, in],
    B [E, out, r]."""
    return a.reshape(experts, -1, a.shape[-1]), b.reshape(b.shape[0], -1, experts).permute(2, 0, 1)


def expert_factors(wrapper: ParamWrapper, adapter: str) -> LoraFactors:
    """The LoRA update of one adapter on one fused expert parameter, per expert."""
    if not wrapper._did_swap_in_out_features:
        raise ValueError(f"{wrapper.parameter_name}: expected a fused [experts, out, in] parameter")
    a, b = per_expert(wrapper.lora_A[adapter].weight, wrapper.lora_B[adapter].weight, wrapper.num_experts)
    return LoraFactors(a, b.contiguous(), wrapper.scaling[adapter])


def register_lora_layers(peft_config) -> None:
    """Let `peft_config` put LoRA on Grok-1's int8 linears and on Grok-1's and Mixtral's fused experts (a no-op for
    models without them)."""
    layers: dict[type[nn.Module], type[nn.Module]] = {
        Int8Linear: LoraInt8Linear,
        Grok1Experts: LoraRoutedExperts,
        MixtralExperts: LoraRoutedExperts,
    }
    # PEFT's documented hook for layer types it does not know; the leading underscore is PEFT's naming.
    peft_config._register_custom_module(layers)
