import argparse
import json

import pytest

from finetune.plan import BUILTIN, ModelSpec, PlanError, add_arguments, plan, run, spec_for, suggest

# A tiny Grok-1 written out by hand; every expected figure below is computed from these with the formulas spelled out.
V, H, F, L, HEADS, KV, E, K = 100, 16, 24, 2, 4, 2, 4, 2
HD = H // HEADS  # head_dim null in the config: hidden / heads
TINY = {
    "model_type": "grok-1",
    "vocab_size": V,
    "hidden_size": H,
    "intermediate_size": F,
    "num_hidden_layers": L,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV,
    "head_dim": None,
    "num_experts": E,
    "num_experts_per_tok": K,
    "max_position_embeddings": 256,
}

ATTENTION = H * HEADS * HD + 2 * H * KV * HD + HEADS * HD * H  # q, k, v, o
EXPERTS = E * (2 * F * H + H * F)  # gate_up [E, 2F, H] + down [E, H, F]
ROUTER = E * H
NORMS = 4 * H  # Grok-1 norms before and after attention and MoE
LAYER = ATTENTION + EXPERTS + ROUTER + NORMS
PARAMS = V * H + L * LAYER + H  # tied embedding, final norm


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_tiny_config_arithmetic_by_hand():
    spec = ModelSpec.from_config(TINY)
    assert spec.head_dim == HD and spec.tied_embeddings and spec.max_positions == 256
    assert spec.params == PARAMS == 12624

    r = 2
    lora_attention = r * (H + HEADS * HD) + 2 * r * (H + KV * HD) + r * (HEADS * HD + H)
    lora_experts = r * E * (H + 2 * F) + r * E * (F + H)  # PEFT: A [r*E, in], B [out, r*E]
    lora = L * (lora_attention + lora_experts)
    assert spec.lora_params(r) == lora

    gpus, b, s = 2, 3, 32
    p = plan(spec, gpus, 1.0, s, "lora", r, b)
    expected = {
        "weights": PARAMS * 2 / gpus,
        "gathered_layer": LAYER * 2,
        "expert_working_set": 0,  # LoRA runs beside the routed experts: no merged W+BA, no gradient of one
        "lora": lora * 16 / gpus,
        "layer_inputs": L * b * s * H * 2,
        "attention": b * HEADS * s * s * (4 + 4 + 2),  # fp32 capped logits, fp32 softmax, bf16 probabilities
        "moe": b * s * K * (3 * F + 2 * H) * 2,  # per routed pair: gate/up out, gelu(gate)*up, routed in and out
        "logits": b * s * V * 4 * 2,
    }
    subtotal = sum(expected.values())
    expected["allowance"] = 2e9 + 0.1 * subtotal
    assert {item.key: item.bytes for item in p.items} == pytest.approx(expected, rel=1e-9)
    assert p.total_bytes == pytest.approx(subtotal + expected["allowance"], rel=1e-9)
    assert p.headroom_bytes == pytest.approx(1e9 - p.total_bytes, rel=1e-9) and not p.fits

    # int8: attention and experts in int8 + a bf16 scale per row (8 blocks for o/down); LoRA on both, as for bf16.
    int8_matrices = L * (ATTENTION + EXPERTS)
    scales = L * (HEADS * HD + 2 * KV * HD + 8 * H + E * 2 * F + 8 * E * H)
    int8 = plan(spec, gpus, 1.0, s, "int8-lora", r, b)
    int8_weights = int8_matrices * 1 + scales * 2 + (PARAMS - int8_matrices) * 2
    assert int8.item("weights").bytes == pytest.approx(int8_weights / gpus, rel=1e-9)
    assert spec.lora_params(r, "int8-lora") == lora
    assert int8.item("lora").bytes == pytest.approx(lora * 16 / gpus, rel=1e-9)
    assert int8.item("expert_working_set").bytes == 3 * H * F * 2  # one expert dequantised at a time, not kept

    # qlora: bitsandbytes puts only the attention projections (nn.Linear) in NF4; the fused experts stay bf16.
    qlora = plan(spec, gpus, 1.0, s, "qlora", r, b)
    nf4 = L * ATTENTION * (0.5 + 4 / 64)
    assert qlora.item("weights").bytes == pytest.approx((nf4 + (PARAMS - L * ATTENTION) * 2) / gpus, rel=1e-9)
    assert qlora.item("gathered_layer").bytes == pytest.approx(
        ATTENTION * (0.5 + 4 / 64) + (EXPERTS + ROUTER + NORMS) * 2, rel=1e-9
    )
    assert qlora.item("lora").bytes == p.item("lora").bytes

    rendered = p.render()
    assert f"{PARAMS:g} params x 2 B / 2 GPUs" in rendered
    assert "does not fit" in rendered and "GB = 1e9 bytes" in rendered


def test_mixtral_and_dbrx_configs():
    mixtral = dict(TINY, model_type="mixtral", num_local_experts=E, tie_word_embeddings=False)
    del mixtral["num_experts"]
    spec = ModelSpec.from_config(mixtral)
    assert spec.params == V * H * 2 + L * (ATTENTION + EXPERTS + ROUTER + 2 * H) + H  # untied head, 2 norms a layer
    # Mixtral's expert LoRA runs beside the routed experts as Grok-1's does (model/lora.py): no merged stack.
    assert plan(spec, 2, 1.0, 32, "lora", 2, 1).item("expert_working_set").bytes == 0

    dbrx = {
        "model_type": "dbrx",
        "vocab_size": V,
        "d_model": H,
        "n_heads": HEADS,
        "n_layers": L,
        "max_seq_len": 128,
        "attn_config": {"kv_n_heads": KV},
        "ffn_config": {"ffn_hidden_size": F, "moe_num_experts": E, "moe_top_k": K},
    }
    spec = ModelSpec.from_config(dbrx)
    assert spec.params == V * H * 2 + L * (ATTENTION + EXPERTS + ROUTER + 2 * H) + H
    # Wqkv, out_proj and the router carry LoRA; DBRX's fused 2-D experts do not.
    r = 2
    assert spec.lora_params(r) == L * r * ((H + HEADS * HD + 2 * KV * HD) + (HEADS * HD + H) + (H + E))
    assert spec.max_positions == 128


def test_builtin_parameter_counts():
    assert 314e9 <= BUILTIN["grok-1"].params <= 320e9
    assert 46e9 <= BUILTIN["mixtral-8x7b"].params <= 47.5e9
    assert 131e9 <= BUILTIN["dbrx"].params <= 133e9


def test_grok1_lora_does_not_fit_on_8x80_and_a_suggestion_does():
    grok = BUILTIN["grok-1"]
    lora = plan(grok, 8, 80, 4096, "lora")
    assert not lora.fits
    assert lora.item("weights").bytes > 78e9  # the weights alone fill the card

    int8 = plan(grok, 8, 80, 4096, "int8-lora")
    assert int8.item("weights").bytes == pytest.approx(lora.item("weights").bytes / 2, rel=0.01)
    assert not plan(grok, 8, 80, 4096, "qlora").fits  # bitsandbytes leaves the experts, 98% of Grok-1, in bf16

    suggestion = suggest(grok, 8, 80, 4096)
    assert suggestion is not None and suggestion.fits and not suggestion.offload
    assert suggestion.method != "lora" and suggestion.sharding == "zero3"
    # ColossalAI's public run needed CPU offload for bf16 LoRA; with it the plan fits too.
    assert plan(grok, 8, 80, 4096, "lora", sharding="zero3-offload").fits


def test_suggest_returns_none_when_nothing_fits():
    assert suggest(BUILTIN["grok-1"], 1, 80, 4096) is None


def test_config_path(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    assert spec_for(str(tmp_path)).params == PARAMS
    assert spec_for(str(tmp_path / "config.json")).params == PARAMS


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(TINY, model_type="llama"), "unsupported model_type 'llama'"),
        ({k: v for k, v in TINY.items() if k != "num_experts"}, "missing num_experts"),
        (dict(TINY, num_key_value_heads=3), "not a multiple of 3"),
    ],
)
def test_bad_configs(tmp_path, config, message):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PlanError, match=message):
        spec_for(str(tmp_path))


def test_bad_model_names(tmp_path):
    with pytest.raises(PlanError, match="unknown model 'grok-2'.*grok-1"):
        spec_for("grok-2")
    with pytest.raises(PlanError, match="has no config.json"):
        spec_for(str(tmp_path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "grok-1", "--gpus", "0"], "--gpus must be at least 1"),
        (["--model", "grok-1", "--gpu-memory", "0"], "--gpu-memory must be more than 0"),
        (["--model", "grok-1", "--seq-len", "0"], "--seq-len must be at least 1"),
        (["--model", "grok-1", "--seq-len", "16384"], "over grok-1's max_position_embeddings 8192"),
        (["--model", "mixtral-8x7b", "--seq-len", "65536"], "max_position_embeddings 32768"),
        (["--model", "dbrx", "--method", "int8-lora"], "int8-lora is not available for dbrx"),
    ],
)
def test_run_bad_input(capsys, argv, message):
    assert run(parse(*argv)) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""


def test_run_grok1_does_not_fit_and_prints_a_suggestion(capsys):
    assert run(parse("--model", "grok-1")) == 1
    out = capsys.readouterr().out
    assert "315.7e9 params x 2 B / 8 GPUs" in out and "does not fit" in out
    assert "Fits without offload: " in out and "fits:" in out


def test_run_fits_and_json(capsys):
    assert run(parse("--model", "dbrx", "--gpus", "8")) == 0
    assert "fits:" in capsys.readouterr().out

    assert run(parse("--model", "grok-1", "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is False and report["unit"] == "GB = 1e9 bytes"
    assert report["suggestion"]["fits"] and not report["suggestion"]["offload"]
    assert sum(item["bytes"] for item in report["items"]) == pytest.approx(report["total_bytes"])
