"""What a Grok-1 serving directory holds: the config keys and tensor names vLLM's Grok-1 model reads.

Read against vLLM's `vllm/model_executor/models/grok1.py` and `registry.py` at commit 048a32c74781 (the version that
serves Grok-1 and Grok-2 from one file):

* `architectures: ["Grok1ModelForCausalLM"]`: the name every vLLM release with Grok-1 has registered (later ones
  also take "Grok1ForCausalLM", which older ones do not). It dispatches to Grok-2 when the config has
  `moe_intermediate_size` or `residual_moe`, so neither is written.
* Grok-1's numerics where vLLM reads a key for them, and vLLM's defaults otherwise differ from the release:
  `router_logit_softcapping: 0` (default 30: a tanh cap on router logits the release does not have),
  `moe_router_renormalize: false` (default true: top-2 gates rescaled to sum to one; the release keeps the
  softmax probabilities), `attn_logit_softcapping: 30` (the release's cap). vLLM scales attention logits by
  1/sqrt(head_dim) and multiplies the attention output by `attn_output_multiplier`; the release scales the logits by
  its `attn_output_multiplier`, which for Grok-1 is 1/sqrt(128): so 1.0 is written, and a model whose multiplier
  is not 1/sqrt(head_dim) is refused (vLLM cannot compute it).
* The one difference no key controls: vLLM's fused MoE runs exact (erf) GELU, the release tanh-approximated
  GELU; `hidden_act` records the release's, and README "Serving Grok-1 with vLLM" gives the measured effect.
* Tensors under the hpcai-tech names its `load_weights` maps (`attn.{q,k,v,o}_proj`, `moe_block.gate`,
  `moe_block.experts.{e}.linear|linear_v|linear_1`, four norms per layer); no `lm_head.weight`, since the output
  projection is tied to the embedding and vLLM skips it then.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from ..names import hpcai_tensors

MODEL_TYPE = "grok-1-serving"
ARCHITECTURE = "Grok1ModelForCausalLM"
CONFIG_FILE = "configuration_grok1.py"
MODELING_FILE = "modeling_grok1.py"
AUTO_MAP = {
    "AutoConfig": "configuration_grok1.Grok1ServingConfig",
    "AutoModelForCausalLM": "modeling_grok1.Grok1ModelForCausalLM",
}
# The project's config fields carried over unchanged.
_SAME = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "num_experts",
    "num_experts_per_tok",
    "rope_theta",
    "embedding_multiplier_scale",
    "output_multiplier_scale",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
)
_RELEASE_ATTN_MULTIPLIER = 0.08838834764831845
_RELEASE_ATTN_CAP = 30.0


class ServingLayoutError(ValueError):
    """A model the serving layout cannot express: the message says which field and why."""


def serving_config(config: dict, dtype: str = "bfloat16", quantization: dict | None = None) -> dict:
    """The serving directory's config.json, from the project's Grok-1 config (as config.json holds it).

    `quantization`: the `quantization_config` of 8-bit weights (packed_int8.py), whose other tensors are `dtype`.
    """
    if config.get("model_type") != "grok-1":
        raise ServingLayoutError(
            f"the model is of type {config.get('model_type')!r}, not 'grok-1': export a directory written by "
            "`python -m model.grok1.convert` or `finetune merge`"
        )
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        raise ServingLayoutError(
            f"head_dim {head_dim} x {heads} heads is not hidden_size {hidden}: vLLM's Grok-1 derives the head width "
            "as hidden_size / num_attention_heads, so it would load this model with the wrong shapes"
        )
    multiplier = config.get("attn_output_multiplier", _RELEASE_ATTN_MULTIPLIER)
    if not math.isclose(multiplier, head_dim**-0.5, rel_tol=1e-6):
        raise ServingLayoutError(
            f"attn_output_multiplier is {multiplier}, but vLLM's Grok-1 scales attention logits by 1/sqrt(head_dim) "
            f"= {head_dim**-0.5:.6g} and has no setting for another factor; Grok-1's own is 1/sqrt(128)"
        )
    serving = {key: config[key] for key in _SAME if key in config}
    serving.update(
        architectures=[ARCHITECTURE],
        model_type=MODEL_TYPE,
        auto_map=dict(AUTO_MAP),
        head_dim=head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": config.get("rope_theta", 10000.0)},
        attn_output_multiplier=1.0,
        attn_logit_softcapping=config.get("max_attn_value", _RELEASE_ATTN_CAP),
        router_logit_softcapping=0.0,
        moe_router_renormalize=False,
        hidden_act="gelu_pytorch_tanh",
        torch_dtype=dtype,
    )
    if quantization is not None:
        serving["quantization_config"] = quantization
    return serving


def serving_tensors(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """One of the project's tensors under the names vLLM loads; the tied output projection is not written."""
    if name == "lm_head.weight":
        return
    yield from hpcai_tensors(name, tensor)
