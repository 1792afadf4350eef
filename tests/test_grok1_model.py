"""Grok-1 (model/grok1): parity with an independent float64 reference, KV cache, generate, save/load, routing."""

import importlib
import json

import pytest
import torch
from grok1_reference import TINY, TOL, reference_forward, reference_moe, tiny_model
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

from model.grok1 import Grok1Config, Grok1ForCausalLM, Grok1Model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(3, TINY["vocab_size"], (2, 12))


def test_config_defaults_are_the_released_model():
    cfg = Grok1Config()
    assert cfg.model_type == "grok-1"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (131072, 6144, 32768, 64)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (48, 8, 128)
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.max_position_embeddings) == (8, 2, 8192)
    assert cfg.attn_output_multiplier == pytest.approx(128**-0.5) and cfg.max_attn_value == 30.0
    assert cfg.embedding_multiplier_scale == pytest.approx(78.38367176906169)
    assert cfg.output_multiplier_scale == pytest.approx(3**-0.5)
    assert cfg.rms_norm_eps == 1e-5 and cfg.rope_theta == 10000.0 and cfg.tie_word_embeddings
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 1, 2)
    # The full architecture on the meta device: Grok-1 is the 314B-parameter model.
    with torch.device("meta"):
        full = Grok1ForCausalLM(cfg)
    n_params = sum(p.numel() for p in full.parameters())  # tied lm_head counted once
    assert 314e9 < n_params < 317e9, n_params


def test_parameter_names_and_tied_head(tiny):
    cfg = tiny.config
    shapes = {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    h, f, e = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts
    hd = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    expected = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        expected.update(
            {
                p + "pre_attn_norm.weight": (h,),
                p + "self_attn.q_proj.weight": (hd, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, hd),
                p + "post_attn_norm.weight": (h,),
                p + "pre_moe_norm.weight": (h,),
                p + "moe.router.weight": (e, h),
                p + "moe.experts.gate_up_proj": (e, 2 * f, h),
                p + "moe.experts.down_proj": (e, h, f),
                p + "post_moe_norm.weight": (h,),
            }
        )
    shapes.pop("lm_head.weight", None)
    assert shapes == expected
    assert tiny.lm_head.weight is tiny.model.embed_tokens.weight
    assert isinstance(tiny.model, Grok1Model)


def test_logits_match_float64_reference_and_soft_cap_bites(tiny, ids):
    ref, pre_cap = reference_forward(tiny, ids)
    # The random weights are large enough that the cap is really exercised, not a near-identity.
    beyond_cap = torch.cat([(s.abs() > tiny.config.max_attn_value).flatten() for s in pre_cap])
    assert beyond_cap.float().mean() > 0.05, beyond_cap.float().mean()
    with torch.no_grad():
        out = tiny(ids, use_cache=False).logits
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4)
    # Same weights in float64 agree to float64 precision: the fp32 tolerance above is only rounding.
    with torch.no_grad():
        out64 = tiny_model(dtype=torch.float64)(ids, use_cache=False).logits
    torch.testing.assert_close(out64, ref, rtol=0, atol=1e-9)


def test_gates_are_not_renormalised(tiny):
    # Checked at the MoE block itself: renormalising scales a token's MoE output by one factor, which the
    # post-MoE RMSNorm then divides out again (up to eps), so the model's logits barely notice.
    cfg = tiny.config
    weights = {name: t.detach().double() for name, t in tiny.state_dict().items()}
    torch.manual_seed(3)
    h = torch.randn(2, 7, cfg.hidden_size)
    with torch.no_grad():
        out, _ = tiny.model.layers[1].moe(h)
    plain = reference_moe(weights, "model.layers.1.moe.", h.double(), cfg)
    renormalised = reference_moe(weights, "model.layers.1.moe.", h.double(), cfg, renormalise_gates=True)
    torch.testing.assert_close(out.double(), plain, rtol=0, atol=1e-4)
    assert (out.double() - renormalised).abs().max() > 0.1 * renormalised.abs().max()
    # The gates kept for a token are raw softmax probabilities over all experts: they sum to less than one.
    probs = torch.softmax(tiny.model.layers[1].moe.router(h), -1)
    assert (probs.topk(cfg.num_experts_per_tok, -1).values.sum(-1) < 1 - 1e-3).all()


def test_kv_cache_decode_matches_full_forward(tiny, ids):
    ref, _ = reference_forward(tiny, ids)
    with torch.no_grad():
        full = tiny(ids, use_cache=False).logits
        half = ids.shape[1] // 2
        out = tiny(ids[:, :half], use_cache=True)
        torch.testing.assert_close(out.logits, full[:, :half], rtol=0, atol=1e-4)
        cache = out.past_key_values
        for t in range(half, ids.shape[1]):
            out = tiny(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            torch.testing.assert_close(out.logits[:, 0], full[:, t], rtol=0, atol=1e-4)
            torch.testing.assert_close(out.logits[:, 0].double(), ref[:, t], rtol=0, atol=1e-4)
    assert cache.get_seq_length() == ids.shape[1]


def test_generate_with_and_without_cache(tiny, ids):
    with torch.no_grad():
        cached = tiny.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
        uncached = tiny.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.shape == (ids.shape[0], ids.shape[1] + 8)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_generates_as_each_prompt_alone(tiny):
    torch.manual_seed(2)
    long_prompt = torch.randint(3, TINY["vocab_size"], (1, 9))
    short_prompt = torch.randint(3, TINY["vocab_size"], (1, 5))
    pad = tiny.config.pad_token_id
    batch = torch.full((2, 9), pad)
    batch[0] = long_prompt[0]
    batch[1, 4:] = short_prompt[0]
    mask = (torch.arange(9) >= torch.tensor([[0], [4]])).long()
    greedy = {"max_new_tokens": 8, "do_sample": False, "output_scores": True, "return_dict_in_generate": True}
    with torch.no_grad():
        together = tiny.generate(batch, attention_mask=mask, **greedy)
        alone_long = tiny.generate(long_prompt, **greedy)
        alone_short = tiny.generate(short_prompt, **greedy)
        # The prompt forward itself: the padded row's real positions see exactly what the lone prompt sees.
        padded_logits = tiny(batch, attention_mask=mask, use_cache=False).logits
        torch.testing.assert_close(padded_logits[1, 4:], tiny(short_prompt, use_cache=False).logits[0], **TOL)
    assert torch.equal(together.sequences[0, 9:], alone_long.sequences[0, 9:])
    assert torch.equal(together.sequences[1, 9:], alone_short.sequences[0, 5:])
    # Not only the argmax: every decoding step's scores agree, through the cache and the padding mask.
    for step, (batched, long_, short) in enumerate(zip(together.scores, alone_long.scores, alone_short.scores)):
        torch.testing.assert_close(batched[0], long_[0], **TOL, msg=f"long prompt, step {step}")
        torch.testing.assert_close(batched[1], short[0], **TOL, msg=f"short prompt, step {step}")


def test_save_and_load_through_auto_classes(tiny, ids, tmp_path):
    tiny.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "grok-1"
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys

    importlib.import_module("model")  # the package import is what registers Grok-1
    assert isinstance(AutoConfig.from_pretrained(tmp_path), Grok1Config)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, Grok1ForCausalLM)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, tiny(ids).logits, rtol=0, atol=0)


def test_moe_routes_each_token_only_to_its_chosen_experts(tiny, ids, monkeypatch):
    cfg = tiny.config
    expert_rows, expert_calls = [], 0
    real_mm = torch.mm

    def counting_mm(x, weight, *args, **kwargs):
        nonlocal expert_calls
        if tuple(weight.shape) == (cfg.hidden_size, cfg.intermediate_size):  # one expert's gate or up, transposed
            expert_rows.append(x.shape[0])
            expert_calls += 1
        return real_mm(x, weight, *args, **kwargs)

    monkeypatch.setattr(torch, "mm", counting_mm)
    with torch.no_grad():
        tiny(ids, use_cache=False)
    tokens = ids.numel()
    # Every token reaches exactly top_k experts per layer, in at most one gate and one up matmul per expert per layer.
    assert sum(expert_rows) == 2 * tokens * cfg.num_experts_per_tok * cfg.num_hidden_layers
    assert sum(expert_rows) < 2 * tokens * cfg.num_experts * cfg.num_hidden_layers
    assert expert_calls <= 2 * cfg.num_experts * cfg.num_hidden_layers
