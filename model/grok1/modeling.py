"""Grok-1 in PyTorch, as a transformers model.

A port of the architecture of xAI's public JAX reference (xai-org/grok-1), written from its description:

* input embeddings are multiplied by `embedding_multiplier_scale`, output logits by `output_multiplier_scale`,
  and the output projection is the (tied) input embedding matrix;
* every decoder layer is `h = h + post_attn_norm(attn(pre_attn_norm(h)))` then
  `h = h + post_moe_norm(moe(pre_moe_norm(h)))`: RMSNorm both before and after each sub-block;
* attention is grouped-query with rotary embeddings on the full head dim; its logits are scaled by
  `attn_output_multiplier` and soft-capped to `max_attn_value * tanh(x / max_attn_value)` in fp32;
* the MoE router is a softmax over all experts followed by top-k, and the k gate probabilities are used as
  they are (not renormalised to sum to one); each expert is `down(gelu_tanh(gate(x)) * up(x))`.
"""

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from ..experts import ExpertMatrix, LoraFactors, routed_experts
from .configuration import Grok1Config
from .int8 import Int8Linear, frozen, is_int8, make_linear, scale_blocks


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or the input's dtype where that is wider (float64 in tests): the numerically touchy parts
    (norms, soft-cap, softmaxes) never run in bf16/fp16."""
    return torch.promote_types(dtype, torch.float32)


class Grok1RMSNorm(nn.Module):
    """RMSNorm computed in fp32; the weight multiplies the normalised input directly (no `1 + weight`)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        x = hidden_states.to(_compute_dtype(input_dtype))
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        # As in the reference, the scale is applied before casting back to the activation dtype.
        return (self.weight.to(x.dtype) * x).to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class Grok1RotaryEmbedding(nn.Module):
    """cos/sin tables of the rotary embeddings over the full head dim, base `rope_theta`.

    The inverse frequencies are recomputed on each call (a few hundred flops) rather than kept in a buffer, so
    nothing depends on how a (meta-device) loader treats non-persistent buffers.
    """

    def __init__(self, config: Grok1Config):
        super().__init__()
        self.dim = config.head_dim
        self.base = config.rope_theta

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = _compute_dtype(x.dtype)
        exponents = torch.arange(0, self.dim, 2, device=x.device, dtype=dtype) / self.dim
        inv_freq = 1.0 / (self.base**exponents)
        freqs = position_ids[..., None].to(dtype) * inv_freq  # [batch, seq, dim/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # rotate-half layout: both halves share a frequency
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    """Rotate queries and keys, [batch, heads, seq, head_dim], by the [batch, seq, head_dim] tables."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[batch, kv_heads, seq, d] -> [batch, kv_heads * n_rep, seq, d]: each kv head serves n_rep query heads."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq, dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq, dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq, dim)


class Grok1Attention(nn.Module):
    """Grouped-query attention with Grok-1's scaled, tanh soft-capped logits (eager, plain torch)."""

    def __init__(self, config: Grok1Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.multiplier = config.attn_output_multiplier
        self.max_attn_value = config.max_attn_value
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        self.q_proj = make_linear(config, "q_proj", config.hidden_size, q_dim)
        self.k_proj = make_linear(config, "k_proj", config.hidden_size, kv_dim)
        self.v_proj = make_linear(config, "v_proj", config.hidden_size, kv_dim)
        self.o_proj = make_linear(config, "o_proj", q_dim, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        batch, q_len, _ = hidden_states.shape
        shape = (batch, q_len, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)

        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)

        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        key = repeat_kv(key, self.num_key_value_groups)
        value = repeat_kv(value, self.num_key_value_groups)

        # Logits in fp32: the soft-cap's tanh and the softmax are where low precision would hurt.
        compute_dtype = _compute_dtype(query.dtype)
        logits = torch.matmul(query.to(compute_dtype), key.to(compute_dtype).transpose(2, 3)) * self.multiplier
        logits = self.max_attn_value * torch.tanh(logits / self.max_attn_value)
        # The mask comes after the cap, as in the reference, so masked positions stay far below any capped logit.
        logits = logits + self._additive_mask(attention_mask, q_len, key.shape[-2], logits)
        weights = torch.softmax(logits, dim=-1).to(value.dtype)

        output = torch.matmul(weights, value).transpose(1, 2).reshape(batch, q_len, -1)
        return self.o_proj(output)

    @staticmethod
    def _additive_mask(mask: torch.Tensor | None, q_len: int, kv_len: int, logits: torch.Tensor) -> torch.Tensor:
        """0 where a query may attend, dtype-min where not, broadcastable to the logits.

        transformers' mask helpers give an additive float mask for eager attention, but may also give a boolean
        one (True = attend) or None for a plain causal mask; all three are accepted.
        """
        minimum = torch.finfo(logits.dtype).min
        if mask is None:
            # Queries are the last q_len of the kv_len positions.
            q_pos = torch.arange(kv_len - q_len, kv_len, device=logits.device)[:, None]
            allowed = torch.arange(kv_len, device=logits.device)[None, :] <= q_pos
            mask = allowed
        mask = mask[..., -kv_len:]
        if mask.dtype == torch.bool:
            zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
            return torch.where(mask, zero, torch.full_like(zero, minimum))
        return mask.to(logits.dtype).clamp(min=minimum)


class Grok1Experts(nn.Module):
    """The experts of one MoE layer, stored fused as two 3-D parameters.

    `gate_up_proj` is [num_experts, 2 * intermediate, hidden] (rows 0..F-1 gate, F..2F-1 up) and `down_proj` is
    [num_experts, hidden, intermediate], the layout of transformers' `MixtralExperts`, so PEFT's
    `target_parameters` can put LoRA on them (model/lora.py routes that LoRA through the same compute).

    Computation is routed (model/experts.py): each (token, slot) pair goes only to its chosen expert, the pairs sorted by
    expert, in one grouped product per projection (GPUs) or one pass over the experts' slices (CPUs, int8); nothing
    is computed for an expert a token was not routed to, and the gates weigh the outputs as they are summed per
    token.
    """

    def __init__(self, config: Grok1Config):
        super().__init__()
        self.num_experts = config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.intermediate_size
        self.implementation = config.moe_implementation
        gate_up_shape = (self.num_experts, 2 * self.intermediate_dim, self.hidden_dim)
        down_shape = (self.num_experts, self.hidden_dim, self.intermediate_dim)
        # With config.quantization == "int8" the matrices stay Grok-1's int8 (+ bf16 scales, see int8.py) and each
        # routed expert's are dequantised just in time.
        self.quantized = is_int8(config)
        if self.quantized:
            gate_up_blocks, down_blocks = scale_blocks(config, "gate_up_proj"), scale_blocks(config, "down_proj")
            self.gate_up_proj = frozen(gate_up_shape, torch.int8)
            self.gate_up_proj_scale = frozen((*gate_up_shape[:2], gate_up_blocks), torch.bfloat16)
            self.down_proj = frozen(down_shape, torch.int8)
            self.down_proj_scale = frozen((*down_shape[:2], down_blocks), torch.bfloat16)
        else:
            self.gate_up_proj = nn.Parameter(torch.empty(gate_up_shape))
            self.down_proj = nn.Parameter(torch.empty(down_shape))

    def forward(
        self,
        hidden_states: torch.Tensor,
        top_k_index: torch.Tensor,
        top_k_weights: torch.Tensor,
        lora: Mapping[str, Sequence[LoraFactors]] | None = None,
    ) -> torch.Tensor:
        """hidden_states [tokens, hidden]; top_k_index, top_k_weights [tokens, k] -> [tokens, hidden].

        `lora` maps "gate_up_proj" / "down_proj" to the LoRA updates to add to that projection.
        """
        lora = lora or {}
        # int8 experts have a `*_scale` beside each matrix; float ones have none.
        gate_up, down = (
            ExpertMatrix(getattr(self, name), getattr(self, f"{name}_scale", None), lora.get(name, ()))
            for name in ("gate_up_proj", "down_proj")
        )
        return routed_experts(hidden_states, top_k_index, top_k_weights, gate_up, down, self.implementation)


class Grok1MoE(nn.Module):
    """Router (softmax over all experts in fp32, top-k, gates NOT renormalised) followed by the routed experts."""

    def __init__(self, config: Grok1Config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = Grok1Experts(config)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = hidden_states.shape
        flat = hidden_states.reshape(-1, shape[-1])
        router_logits = self.router(flat)
        probs = torch.softmax(router_logits.to(_compute_dtype(router_logits.dtype)), dim=-1)
        # Grok-1 uses the top-k probabilities as they come out of the softmax over all experts: they sum to < 1.
        top_k_weights, top_k_index = torch.topk(probs, self.top_k, dim=-1)
        output = self.experts(flat, top_k_index, top_k_weights)
        return output.reshape(shape), router_logits


class Grok1DecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: Grok1Config, layer_idx: int):
        super().__init__()
        self.pre_attn_norm = Grok1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Grok1Attention(config, layer_idx)
        self.post_attn_norm = Grok1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.pre_moe_norm = Grok1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.moe = Grok1MoE(config)
        self.post_moe_norm = Grok1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_out = self.self_attn(
            self.pre_attn_norm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
        )
        hidden_states = hidden_states + self.post_attn_norm(attn_out)
        moe_out, _ = self.moe(self.pre_moe_norm(hidden_states))
        return hidden_states + self.post_moe_norm(moe_out)


class Grok1PreTrainedModel(PreTrainedModel):
    config_class = Grok1Config
    config: Grok1Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["Grok1DecoderLayer"]
    _skip_keys_device_placement: ClassVar[list[str]] = ["past_key_values"]
    # Only the eager soft-capped attention above is implemented (sdpa/flash cannot apply the tanh cap).
    _supports_sdpa = False
    _supports_flash_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, Int8Linear) or (isinstance(module, Grok1Experts) and module.quantized):
            return  # int8 weights only ever come from a checkpoint; nothing meaningful to initialise
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, Grok1Experts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, Grok1RMSNorm):
            init.ones_(module.weight)


class Grok1Model(Grok1PreTrainedModel):
    def __init__(self, config: Grok1Config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([Grok1DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Grok1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Grok1RotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden_states = inputs_embeds * self.config.embedding_multiplier_scale

        if position_ids is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(past_seen, past_seen + hidden_states.shape[1], device=hidden_states.device)
            position_ids = position_ids.unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(hidden_states, position_ids)

        all_hidden_states = () if output_hidden_states else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=causal_mask,
                past_key_values=past_key_values,
            )
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden_states,
        )


class Grok1ForCausalLM(Grok1PreTrainedModel, GenerationMixin):
    # The output projection is the input embedding (Grok-1 ties them); saved once, under the embedding's name.
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: Grok1Config):
        super().__init__(config)
        self.model = Grok1Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        # logits_to_keep=0 keeps every position; generate() asks for the last one only.
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :]) * self.config.output_multiplier_scale

        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
        )


__all__ = ["Grok1ForCausalLM", "Grok1Model", "Grok1PreTrainedModel"]
