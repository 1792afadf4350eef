"""PEFT's LoRA on Grok-1's own layer types: the int8 attention projections and the fused experts.

PEFT knows nn.Linear and nn.Parameter, not `Int8Linear` or `Grok1Experts`; its custom-module hook lets a subclass
of its own layer take them, so adapters keep PEFT's format (save, load, vLLM export) unchanged.

* `LoraInt8Linear`: PEFT's LoRA linear over an int8 base, which dequantises just in time.
* `LoraGrok1Experts`: PEFT's wrapper of a fused expert parameter (`target_parameters`). PEFT's own wrapper adds the
  update to the whole expert stack on every forward (`W + B @ A`, a second tensor the size of all the experts, and
  in the backward the full-size gradient of it); this one hands the factors to the routed compute instead
  (experts.py), which runs each pair through its expert's A and B: r * (in + out) work per pair, no delta, and the
  same on int8 experts, whose values are never touched.

Merging into int8 would need a requantisation that loses the update, so it is refused: merge onto the same model
converted to bf16, which the adapter fits unchanged (same module names and shapes).
"""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import ParamWrapper

from .experts import LoraFactors
from .int8 import Int8Linear
from .modeling import Grok1Experts

INT8_MERGE_REFUSED = (
    "cannot merge a LoRA adapter into int8 weights: merge onto the model converted with "
    "`python -m model.grok1.convert --dtype bfloat16`, which this adapter fits unchanged"
)


class LoraInt8Linear(LoraLinear):
    def merge(self, *args, **kwargs) -> None:
        raise ValueError(INT8_MERGE_REFUSED)


class LoraGrok1Experts(ParamWrapper):
    """LoRA on one fused expert parameter of a `Grok1Experts`, applied inside its routed compute.

    PEFT nests one wrapper per targeted parameter (gate_up_proj's around down_proj's around the experts); only the
    outermost one's forward runs, and it gathers the active, unmerged updates of the whole nest.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
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
        return self.get_base_layer()(x, *args, lora=lora, **kwargs)

    def merge(self, *args, **kwargs) -> None:
        if self.get_param().dtype == torch.int8:
            raise ValueError(INT8_MERGE_REFUSED)
        super().merge(*args, **kwargs)


# PEFT recognises its parameter wrappers by class name (to dodge a circular import), and refuses to nest a second one
# around any other tuner layer; this is one, so it answers to the name. Pickling goes by __qualname__, left as is.
LoraGrok1Experts.__name__ = "ParamWrapper"


def expert_factors(wrapper: ParamWrapper, adapter: str) -> LoraFactors:
    """PEFT's fused factors as per-expert ones: A [r * E, in] holds expert e's rows at e * r.., B [out, r * E] its
    columns at e, e + E, ... (the (rank, experts) split of PEFT's layout; finetune/export.py unfuses the same way)."""
    if not wrapper._did_swap_in_out_features:
        raise ValueError(f"{wrapper.parameter_name}: expected a fused [experts, out, in] parameter")
    experts = wrapper.num_experts
    a = wrapper.lora_A[adapter].weight
    b = wrapper.lora_B[adapter].weight
    a = a.reshape(experts, -1, a.shape[-1])  # [E, r, in]
    b = b.reshape(b.shape[0], -1, experts).permute(2, 0, 1).contiguous()  # [E, out, r]
    return LoraFactors(a, b, wrapper.scaling[adapter])


def register_lora_layers(peft_config) -> None:
    """Let `peft_config` put LoRA on Grok-1's int8 linears and fused experts (a no-op for models without them)."""
    # PEFT's documented hook for layer types it does not know; the leading underscore is PEFT's naming.
    peft_config._register_custom_module({Int8Linear: LoraInt8Linear, Grok1Experts: LoraGrok1Experts})
