"""Grok-1 for transformers, over a serving directory's tensors (the names vLLM's Grok-1 loader reads).

This file travels inside the model directory (`auto_map`) and imports only torch and transformers (5.x): a serving
directory loads with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` where this project is not
installed, to check it before a GPU fleet is booked for it, or to serve it without vLLM. It computes what
configuration_grok1.py describes, in plain eager torch: the soft-capped attention has no fused kernel here.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_grok1 import Grok1ServingConfig

_ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
}


def _wide(dtype: torch.dtype) -> torch.dtype:
    """fp32, or the input's dtype where wider: norms, soft-caps and softmaxes never run in bf16."""
    return torch.promote_types(dtype, torch.float32)


class Grok1RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(_wide(x.dtype))
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.to(wide.dtype) * wide).to(x.dtype)


def _rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embeddings over the whole head width, rotate-half layout; x is [batch, heads, seq, head_dim]."""
    dim = x.shape[-1]
    dtype = _wide(x.dtype)
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=x.device, dtype=dtype) / dim)
    angles = positions[..., None].to(dtype) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # [batch, 1, seq, dim]
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
    return x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)


class Grok1Attention(nn.Module):
    def __init__(self, config: Grok1ServingConfig, index: int):
        super().__init__()
        self.index = index
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        self.theta = config.rope_parameters.get("rope_theta", config.rope_theta)
        self.cap = config.attn_logit_softcapping
        self.output_multiplier = config.attn_output_multiplier
        width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)

    def forward(self, x, positions, allowed, cache):
        batch, length, _ = x.shape
        q, k, v = (
            proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = _rotary(q, positions, self.theta), _rotary(k, positions, self.theta)
        if cache is not None:
            k, v = cache.update(k, v, self.index)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        wide = _wide(q.dtype)
        logits = torch.matmul(q.to(wide), k.to(wide).transpose(2, 3)) * self.head_dim**-0.5
        if self.cap > 0:
            logits = self.cap * torch.tanh(logits / self.cap)
        logits = logits.masked_fill(~allowed, torch.finfo(wide).min)
        weights = torch.softmax(logits, dim=-1).to(v.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, length, -1)
        return self.o_proj(out) * self.output_multiplier


class Grok1Expert(nn.Module):
    def __init__(self, config: Grok1ServingConfig):
        super().__init__()
        self.linear = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # gate
        self.linear_v = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # up
        self.linear_1 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)  # down
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_1(self.act(self.linear(x)) * self.linear_v(x))


class Grok1MoE(nn.Module):
    def __init__(self, config: Grok1ServingConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.cap = config.router_logit_softcapping
        self.renormalize = config.moe_router_renormalize
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(Grok1Expert(config) for _ in range(config.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        logits = self.gate(flat).to(_wide(flat.dtype))
        if self.cap > 0:
            logits = self.cap * torch.tanh(logits / self.cap)
        weights, chosen = torch.topk(torch.softmax(logits, dim=-1), self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        for number, expert in enumerate(self.experts):
            tokens, slot = torch.nonzero(chosen == number, as_tuple=True)
            if tokens.numel():
                gated = expert(flat[tokens]) * weights[tokens, slot, None].to(flat.dtype)
                out.index_add_(0, tokens, gated)
        return out.reshape(x.shape)


class Grok1DecoderLayer(nn.Module):
    def __init__(self, config: Grok1ServingConfig, index: int):
        super().__init__()
        eps = config.rms_norm_eps
        self.pre_attn_norm, self.post_attn_norm = (
            Grok1RMSNorm(config.hidden_size, eps),
            Grok1RMSNorm(config.hidden_size, eps),
        )
        self.pre_moe_norm, self.post_moe_norm = (
            Grok1RMSNorm(config.hidden_size, eps),
            Grok1RMSNorm(config.hidden_size, eps),
        )
        self.attn = Grok1Attention(config, index)
        self.moe_block = Grok1MoE(config)

    def forward(self, x, positions, allowed, cache):
        x = x + self.post_attn_norm(self.attn(self.pre_attn_norm(x), positions, allowed, cache))
        return x + self.post_moe_norm(self.moe_block(self.pre_moe_norm(x)))


class Grok1PreTrainedModel(PreTrainedModel):
    config_class = Grok1ServingConfig
    base_model_prefix = "model"
    _no_split_modules = ["Grok1DecoderLayer"]  # noqa: RUF012 - transformers reads a plain class attribute

    @torch.no_grad()
    def _init_weights(self, module):
        # Weights come from the directory's files; this only gives a freshly built model sane values.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, self.config.initializer_range)
        elif isinstance(module, Grok1RMSNorm):
            module.weight.fill_(1.0)


class Grok1Model(Grok1PreTrainedModel):
    def __init__(self, config: Grok1ServingConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(Grok1DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Grok1RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, **kwargs):  # fmt: skip
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        x = inputs_embeds * self.config.embedding_multiplier_scale
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        batch, length = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=x.device)[None].expand(batch, -1)
        # Query i (at position past + i) sees keys 0..past + i, less any the padding mask hides.
        keys = torch.arange(past + length, device=x.device)
        allowed = (keys[None, :] <= (past + torch.arange(length, device=x.device))[:, None])[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -(past + length) :].bool()
        for layer in self.layers:
            x = layer(x, position_ids, allowed, past_key_values)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), past_key_values=past_key_values)


class Grok1ModelForCausalLM(Grok1PreTrainedModel, GenerationMixin):
    # Grok-1's output projection is its input embedding: the directory stores it once, under the embedding's name.
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # noqa: RUF012

    def __init__(self, config: Grok1ServingConfig):
        super().__init__(config)
        self.model = Grok1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):  # fmt: skip
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache)
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :]) * self.config.output_multiplier_scale
        loss = self.loss_function(logits, labels, self.config.vocab_size, **kwargs) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)
