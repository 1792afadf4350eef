"""Configuration of Grok-1 (xAI's 314B-parameter mixture-of-experts decoder).

Defaults are the released model. Field names follow the public Hugging Face ports of Grok-1, so a
`config.json` written for one of them loads here unchanged.
"""

from typing import ClassVar

from transformers.configuration_utils import PreTrainedConfig

from ..experts import IMPLEMENTATIONS


class Grok1Config(PreTrainedConfig):
    r"""
    Configuration for [`Grok1Model`] / [`Grok1ForCausalLM`].

    Args:
        vocab_size (`int`, defaults to 131072): size of the vocabulary.
        hidden_size (`int`, defaults to 6144): width of the residual stream.
        intermediate_size (`int`, defaults to 32768): hidden width of each expert's gated feed-forward.
        num_hidden_layers (`int`, defaults to 64): number of decoder layers.
        num_attention_heads (`int`, defaults to 48): query heads.
        num_key_value_heads (`int`, defaults to 8): key/value heads (grouped-query attention).
        head_dim (`int`, *optional*): width of one head; `hidden_size // num_attention_heads` (128) when unset.
        attn_output_multiplier (`float`, defaults to 0.08838834764831845): factor on the attention logits,
            used instead of `1 / sqrt(head_dim)`.
        max_attn_value (`float`, defaults to 30.0): attention logits are soft-capped to
            `max_attn_value * tanh(logits / max_attn_value)`.
        max_position_embeddings (`int`, defaults to 8192): context length the model was trained for.
        embedding_multiplier_scale (`float`, defaults to 78.38367176906169): factor on the input embeddings.
        output_multiplier_scale (`float`, defaults to 0.5773502691896257): factor on the output logits.
        rms_norm_eps (`float`, defaults to 1e-5): epsilon of every RMSNorm.
        num_experts (`int`, defaults to 8): experts per MoE layer.
        num_experts_per_tok (`int`, defaults to 2): experts each token is routed to.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embeddings.
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation of the matrices.
        use_cache (`bool`, defaults to `True`): whether the model returns its key/value cache.
        tie_word_embeddings (`bool`, defaults to `True`): the output projection is the input embedding matrix.
        quantization (`str`, *optional*): `"int8"` when the checkpoint keeps the release's int8 matrices (attention
            projections and experts) with bf16 scales, dequantised in forward; None for float weights.
        quantization_blocks (`dict`, *optional*): with int8, the number of scale blocks along the input axis of
            each matrix kind (`q_proj`, ..., `gate_up_proj`, `down_proj`); the release's when unset.
        moe_implementation (`str`, defaults to `"auto"`): how the experts' grouped products run: `"grouped_mm"`
            (one kernel per projection over all experts), `"loop"` (one matmul per expert over its tokens), or
            `"auto"`: grouped_mm on CUDA GPUs that have it, the loop elsewhere (see model/experts.py).
    """

    model_type = "grok-1"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    vocab_size: int = 131072
    hidden_size: int = 6144
    intermediate_size: int = 32768
    num_hidden_layers: int = 64
    num_attention_heads: int = 48
    num_key_value_heads: int = 8
    head_dim: int | None = None
    attn_output_multiplier: float = 0.08838834764831845
    max_attn_value: float = 30.0
    max_position_embeddings: int = 8192
    embedding_multiplier_scale: float = 78.38367176906169
    output_multiplier_scale: float = 0.5773502691896257
    rms_norm_eps: float = 1e-5
    num_experts: int = 8
    num_experts_per_tok: int = 2
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    quantization: str | None = None
    quantization_blocks: dict | None = None
    moe_implementation: str = "auto"

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ValueError(f"num_experts_per_tok must be in 1..{self.num_experts}, got {self.num_experts_per_tok}")
        if self.moe_implementation not in IMPLEMENTATIONS:
            raise ValueError(f"moe_implementation must be one of {IMPLEMENTATIONS}, got {self.moe_implementation!r}")
        super().__post_init__(**kwargs)


__all__ = ["Grok1Config"]
