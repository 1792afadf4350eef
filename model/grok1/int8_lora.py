"""LoRA on Grok-1's int8 attention projections, so the base stays in the release's int8 (+ bf16 scales) in memory.

PEFT knows nn.Linear and the bitsandbytes layers, not `model.grok1.int8.Int8Linear`; its custom-module hook lets
its own LoRA linear wrap ours: the forward (`base(x) + B(A(x)) * scale`) only calls the base layer, which
dequantises just in time. Merging into int8 would need a requantisation that loses the update, so it is refused:
merge onto the same model converted to bf16, which the adapter fits unchanged (same module names and shapes).
"""

from __future__ import annotations

from peft.tuners.lora.layer import Linear as LoraLinear

from .int8 import Int8Linear


class LoraInt8Linear(LoraLinear):
    def merge(self, *args, **kwargs) -> None:
        raise ValueError(
            "cannot merge a LoRA adapter into int8 weights: merge onto the model converted with "
            "`python -m model.grok1.convert --dtype bfloat16`, which this adapter fits unchanged"
        )


def register_int8_layers(peft_config) -> None:
    """Let `peft_config` wrap Int8Linear layers (a no-op for models without them)."""
    # PEFT's documented hook for layer types it does not know; the leading underscore is PEFT's naming.
    peft_config._register_custom_module({Int8Linear: LoraInt8Linear})
