"""An independent float64 Grok-1 forward, written from the architecture facts, and tiny random models to check
the PyTorch port against it (used by the tests and by benchmarks/grok1_parity.py)."""

import math

import torch

from model.grok1 import Grok1Config, Grok1ForCausalLM

TINY = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 64,
    "eos_token_id": None,  # greedy runs always produce max_new_tokens, so batch and single runs line up
}
TOL = {"rtol": 0, "atol": 1e-4}  # fp32 against fp32 or float64: rounding only


def tiny_model(seed: int = 0, std: float = 0.3, dtype=torch.float32, **overrides) -> Grok1ForCausalLM:
    """A tiny Grok-1 with large random weights, so the soft-cap saturates and the routing is far from uniform."""
    torch.manual_seed(seed)
    model = Grok1ForCausalLM(Grok1Config(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                param.normal_(0.0, 3 * std)  # attention logits well past max_attn_value: the tanh saturates
            else:
                param.normal_(0.0, std)
    return model.to(dtype)


def reference_moe(w: dict, prefix: str, h: torch.Tensor, cfg: Grok1Config, renormalise_gates: bool = False):
    """Grok-1's MoE on [..., hidden] float64 input: every expert on every token, then the top-k gates applied."""

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    inter = cfg.intermediate_size
    probs = (h @ w[prefix + "router.weight"].T).softmax(-1)  # [..., experts]
    gate_up, down = w[prefix + "experts.gate_up_proj"], w[prefix + "experts.down_proj"]
    every_expert = torch.stack(
        [(gelu_tanh(h @ gate_up[e, :inter].T) * (h @ gate_up[e, inter:].T)) @ down[e].T for e in range(len(down))]
    )  # [experts, ..., hidden]
    top_p, top_i = probs.topk(cfg.num_experts_per_tok, dim=-1)
    if renormalise_gates:
        top_p = top_p / top_p.sum(-1, keepdim=True)
    gates = torch.zeros_like(probs).scatter(-1, top_i, top_p)
    return torch.einsum("...e,e...h->...h", gates, every_expert)


def reference_forward(model: Grok1ForCausalLM, ids: torch.Tensor, renormalise_gates: bool = False):
    """Grok-1's forward written straight from the architecture, in float64, computing every expert for every token
    and selecting afterwards. Returns the logits and the pre-cap attention logits of every layer."""
    cfg = model.config
    w = {name: t.detach().to(torch.float64) for name, t in model.state_dict().items()}
    batch, seq = ids.shape
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def rms_norm(x, weight):
        return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    angles = torch.arange(seq, dtype=torch.float64)[:, None] / cfg.rope_theta ** (
        torch.arange(0, d, 2, dtype=torch.float64) / d
    )
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)

    def rope(x):  # [batch, heads, seq, d]
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    pre_cap = []
    x = w["model.embed_tokens.weight"][ids] * cfg.embedding_multiplier_scale
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "pre_attn_norm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(batch, seq, heads, d).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(batch, seq, kv_heads, d).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(batch, seq, kv_heads, d).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(heads // kv_heads, dim=1)  # query head j reads kv head j // group
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) * cfg.attn_output_multiplier
        pre_cap.append(scores)
        scores = cfg.max_attn_value * torch.tanh(scores / cfg.max_attn_value)
        scores = scores.masked_fill(~causal, float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, heads * d)
        x = x + rms_norm(attn @ w[p + "self_attn.o_proj.weight"].T, w[p + "post_attn_norm.weight"])

        moe = reference_moe(w, p + "moe.", rms_norm(x, w[p + "pre_moe_norm.weight"]), cfg, renormalise_gates)
        x = x + rms_norm(moe, w[p + "post_moe_norm.weight"])
    x = rms_norm(x, w["model.norm.weight"])
    logits = x @ w["model.embed_tokens.weight"].T * cfg.output_multiplier_scale
    return logits, pre_cap
