"""Configuration of a Grok-1 serving directory (the layout vLLM's Grok-1 loader reads).

This file travels inside the model directory and is loaded by `AutoConfig.from_pretrained(..., trust_remote_code=True)`,
so it imports nothing but transformers. The field names and their meaning are those vLLM's Grok-1 model reads:

* attention logits are scaled by `1 / sqrt(head_dim)` and soft-capped to `attn_logit_softcapping * tanh(x / cap)`;
  the attention output is multiplied by `attn_output_multiplier` (1.0 here: Grok-1's own logit factor, 1 / sqrt(128),
  is the `1 / sqrt(head_dim)` above);
* router logits are soft-capped to `router_logit_softcapping` (0: not at all, as in Grok-1), and the top-k gate
  probabilities are renormalised to sum to one only if `moe_router_renormalize` (false: Grok-1 uses them as they are);
* each expert is `linear_1(act(linear(x)) * linear_v(x))` with `hidden_act` ("gelu_pytorch_tanh" for Grok-1);
* input embeddings are multiplied by `embedding_multiplier_scale`, output logits by `output_multiplier_scale`, and the
  output projection is the input embedding matrix (`tie_word_embeddings`).
"""

from transformers import PretrainedConfig


class Grok1ServingConfig(PretrainedConfig):
    model_type = "grok-1-serving"
    keys_to_ignore_at_inference = ["past_key_values"]  # noqa: RUF012 - transformers reads a plain class attribute

    def __init__(
        self,
        vocab_size=131072,
        hidden_size=6144,
        intermediate_size=32768,
        num_hidden_layers=64,
        num_attention_heads=48,
        num_key_value_heads=8,
        head_dim=None,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_parameters=None,
        num_experts=8,
        num_experts_per_tok=2,
        attn_output_multiplier=1.0,
        attn_logit_softcapping=30.0,
        router_logit_softcapping=0.0,
        moe_router_renormalize=False,
        hidden_act="gelu_pytorch_tanh",
        embedding_multiplier_scale=78.38367176906169,
        output_multiplier_scale=0.5773502691896257,
        initializer_range=0.02,
        use_cache=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        # vLLM derives the head width from hidden_size / num_attention_heads; a config that says otherwise would
        # load there with the wrong shapes.
        derived = hidden_size // num_attention_heads
        if head_dim not in (None, derived):
            raise ValueError(f"head_dim {head_dim} must be hidden_size / num_attention_heads = {derived}")
        self.head_dim = derived
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_parameters = rope_parameters or {"rope_type": "default", "rope_theta": rope_theta}
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.attn_output_multiplier = attn_output_multiplier
        self.attn_logit_softcapping = attn_logit_softcapping
        self.router_logit_softcapping = router_logit_softcapping
        self.moe_router_renormalize = moe_router_renormalize
        self.hidden_act = hidden_act
        self.embedding_multiplier_scale = embedding_multiplier_scale
        self.output_multiplier_scale = output_multiplier_scale
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
